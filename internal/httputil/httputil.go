// Package httputil is the HTTP plumbing shared by the API packages: Matrix
// JSON errors, JSON request bodies with size limits, CORS and the adapter
// that turns handler results into responses.
package httputil

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"

	"github.com/gorilla/mux"
	"strconv"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
)

// Error is a Matrix error with its HTTP status.
type Error struct {
	Status  int
	Code    string
	Message string
	Extra   map[string]any
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// MarshalJSON renders the standard error body.
func (e *Error) MarshalJSON() ([]byte, error) {
	m := map[string]any{}
	if e.Code != "" {
		m["errcode"], m["error"] = e.Code, e.Message
	}
	for k, v := range e.Extra {
		m[k] = v
	}
	return json.Marshal(m)
}

// Err builds an Error.
func Err(status int, code, msg string) *Error {
	return &Error{Status: status, Code: code, Message: msg}
}

// Common errors.
func BadJSON(msg string) *Error      { return Err(400, "M_BAD_JSON", msg) }
func NotJSON(msg string) *Error      { return Err(400, "M_NOT_JSON", msg) }
func Forbidden(msg string) *Error    { return Err(403, "M_FORBIDDEN", msg) }
func NotFound(msg string) *Error     { return Err(404, "M_NOT_FOUND", msg) }
func InvalidParam(msg string) *Error { return Err(400, "M_INVALID_PARAM", msg) }
func MissingParam(msg string) *Error { return Err(400, "M_MISSING_PARAM", msg) }
func Unrecognized(msg string) *Error { return Err(404, "M_UNRECOGNIZED", msg) }

// LimitExceeded is 429 with retry_after_ms.
func LimitExceeded(retryAfterMS int64) *Error {
	return &Error{Status: 429, Code: "M_LIMIT_EXCEEDED", Message: "Too many requests", Extra: map[string]any{"retry_after_ms": retryAfterMS}}
}

// statusFor maps spec error codes to HTTP statuses.
var statusFor = map[spec.MatrixErrorCode]int{
	spec.ErrorForbidden: 403, spec.ErrorNotFound: 404, spec.ErrorMissingToken: 401, spec.ErrorUnknownToken: 401,
	spec.ErrorUnrecognized: 404, spec.ErrorLimitExceeded: 429, spec.ErrorUserInUse: 400, spec.ErrorRoomInUse: 400,
	spec.ErrorGuestAccessForbidden: 403, spec.ErrorUnsupportedRoomVersion: 400, spec.ErrorIncompatibleRoomVersion: 400,
}

// AsError converts any error into a Matrix error; unknown errors become 500
// M_UNKNOWN (details are logged by the caller, never sent).
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var me spec.MatrixError
	if errors.As(err, &me) {
		st, ok := statusFor[me.ErrCode]
		if !ok {
			st = 400
		}
		return Err(st, string(me.ErrCode), me.Err)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return NotFound("Not found")
	}
	return nil
}

// Response lets a handler choose the status code.
type Response struct {
	Status int
	Body   any
}

// Handler is a JSON endpoint: it returns a body (or Response) or an error.
type Handler func(r *http.Request) (any, error)

// JSON adapts a Handler to net/http.
func JSON(log *slog.Logger, h Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := h(r)
		if err != nil {
			WriteError(w, r, log, err)
			return
		}
		status := 200
		if resp, ok := body.(Response); ok {
			status, body = resp.Status, resp.Body
		}
		WriteJSON(w, status, body)
	})
}

// WriteError writes err as a Matrix error response.
func WriteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	e := AsError(err)
	if e == nil && errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away; nobody reads this answer.
		e = Err(499, "M_UNKNOWN", "Request cancelled")
	}
	if e == nil {
		log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		e = Err(500, "M_UNKNOWN", "Internal server error")
	}
	if e.Code == "M_LIMIT_EXCEEDED" {
		if ms, ok := e.Extra["retry_after_ms"].(int64); ok {
			w.Header().Set("Retry-After", strconv.FormatInt((ms+999)/1000, 10))
		}
	}
	WriteJSON(w, e.Status, e)
}

// WriteJSON writes a JSON body.
func WriteJSON(w http.ResponseWriter, status int, body any) {
	var b []byte
	switch v := body.(type) {
	case json.RawMessage:
		b = v
	case []byte:
		b = v
	default:
		var err error
		b, err = json.Marshal(body)
		if err != nil {
			status, b = 500, []byte(`{"errcode":"M_UNKNOWN","error":"Internal server error"}`)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// MaxBody is the default request body limit for JSON endpoints.
const MaxBody = 1 << 20

// ReadBody reads a JSON object body of at most limit bytes and checks it is
// valid JSON. An empty body reads as "{}" when allowEmpty.
func ReadBody(r *http.Request, limit int64, allowEmpty bool) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, BadJSON("Could not read request body")
	}
	if int64(len(b)) > limit {
		return nil, Err(413, "M_TOO_LARGE", "Request body too large")
	}
	if len(b) == 0 && allowEmpty {
		return []byte("{}"), nil
	}
	if !gjson.ValidBytes(b) || !utf8.Valid(b) {
		return nil, NotJSON("Request body is not valid JSON")
	}
	if !gjson.ParseBytes(b).IsObject() {
		return nil, BadJSON("Request body must be a JSON object")
	}
	return b, nil
}

// DecodeBody reads and decodes a JSON object into v; type mismatches are
// M_BAD_JSON.
func DecodeBody(r *http.Request, v any) ([]byte, error) {
	b, err := ReadBody(r, MaxBody, true)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return nil, BadJSON("Malformed JSON: " + err.Error())
	}
	return b, nil
}

// CORS adds the CORS headers browser clients need and answers preflights.
func CORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Origin, X-Requested-With, Content-Type, Accept, Authorization")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusOK)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Recover turns a panic in a handler into a 500 Matrix error.
func Recover(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.Error("panic in handler", "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
				WriteJSON(w, 500, Err(500, "M_UNKNOWN", "Internal server error"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// NotFoundHandler answers requests no route took: 405 when the path exists
// with another method, otherwise 404, both M_UNRECOGNIZED (spec: "Common
// error codes"). gorilla/mux's own method-mismatch detection does not
// survive several subrouters sharing a prefix.
func NotFoundHandler(router *mux.Router) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
			if m == r.Method {
				continue
			}
			r2 := r.Clone(r.Context())
			r2.Method = m
			var rm mux.RouteMatch
			if router.Match(r2, &rm) && rm.MatchErr == nil {
				WriteJSON(w, 405, Err(405, "M_UNRECOGNIZED", "Unrecognized request method"))
				return
			}
		}
		WriteJSON(w, 404, Unrecognized("Unrecognized request"))
	})
}

// Vars returns gorilla/mux's path variables, unescaped. Routers match on the
// encoded path (UseEncodedPath), because room version 3 event IDs may
// contain '/'.
func Vars(r *http.Request) map[string]string {
	v := mux.Vars(r)
	out := make(map[string]string, len(v))
	for k, x := range v {
		if u, err := url.PathUnescape(x); err == nil {
			x = u
		}
		out[k] = x
	}
	return out
}
