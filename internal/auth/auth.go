// Package auth authenticates client requests by access token and hashes
// passwords and tokens.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"repeater/internal/httputil"
)

// Device is the authenticated caller of a client request.
type Device struct {
	UserID    string // @localpart:server
	Localpart string
	DeviceID  string
	IsGuest   bool
	// AppServiceID is set when an application service made the request
	// with its as_token (acting as UserID: its sender or, with ?user_id=,
	// a user of its namespace).
	AppServiceID string
	// Unlimited: not rate-limited (a service registered with
	// rate_limited: false).
	Unlimited bool
}

// RateLimitKey is key, or "" when the device is not rate-limited (callers
// skip the limiter for "").
func (d *Device) RateLimitKey(key string) string {
	if d != nil && d.Unlimited {
		return ""
	}
	return key
}

// AppService is an application service as authentication sees it.
type AppService interface {
	ServiceID() string
	Sender() string
	OwnsUser(userID string) bool
	ExemptFromRateLimits() bool
}

// LookupFunc finds the device owning an access-token hash. It returns an
// error wrapping fs.ErrNotExist when no device has it.
type LookupFunc func(ctx context.Context, tokenHash string) (localpart, deviceID string, guest bool, err error)

type ctxKey struct{}

// FromContext returns the authenticated device of a request.
func FromContext(ctx context.Context) *Device {
	d, _ := ctx.Value(ctxKey{}).(*Device)
	return d
}

// WithDevice attaches a device to a context (tests, internal callers).
func WithDevice(ctx context.Context, d *Device) context.Context {
	return context.WithValue(ctx, ctxKey{}, d)
}

// Authenticator is the access-token middleware.
type Authenticator struct {
	ServerName string
	Lookup     LookupFunc
	Log        *slog.Logger
	// Seen, if set, is told of every authenticated request (for devices'
	// last-seen records). It runs on every request: it must be cheap and
	// must not block.
	Seen func(r *http.Request, d *Device)
	// AppService, if set, finds the application service whose as_token a
	// request carries (nil if none); UserExists reports whether a local
	// account exists (a service may only act as users it registered).
	AppService func(token string) AppService
	UserExists func(ctx context.Context, localpart string) bool
}

// TokenFromRequest returns the access token of a request, from the
// Authorization header or the deprecated access_token query parameter.
func TokenFromRequest(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if tok, ok := strings.CutPrefix(h, "Bearer "); ok {
			return strings.TrimSpace(tok)
		}
		return ""
	}
	return r.URL.Query().Get("access_token")
}

// Require wraps h so that it only runs for a valid access token of a full
// (non-guest) account.
func (a *Authenticator) Require(h http.Handler) http.Handler { return a.require(h, false) }

// AllowGuests is Require that also admits guest accounts, for the endpoints
// the spec opens to guests ("Guest access").
func (a *Authenticator) AllowGuests(h http.Handler) http.Handler { return a.require(h, true) }

func (a *Authenticator) require(h http.Handler, guests bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dev, err := a.Authenticate(r)
		if err != nil {
			httputil.WriteError(w, r, a.Log, err)
			return
		}
		if dev.IsGuest && !guests {
			httputil.WriteError(w, r, a.Log, httputil.Err(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is not allowed here"))
			return
		}
		if a.Seen != nil {
			a.Seen(r, dev)
		}
		h.ServeHTTP(w, r.WithContext(WithDevice(r.Context(), dev)))
	})
}

// Authenticate resolves the request's access token.
func (a *Authenticator) Authenticate(r *http.Request) (*Device, error) {
	tok := TokenFromRequest(r)
	if tok == "" {
		return nil, httputil.Err(401, "M_MISSING_TOKEN", "Missing access token")
	}
	if a.AppService != nil {
		if as := a.AppService(tok); as != nil {
			return a.appServiceDevice(r, as)
		}
	}
	lp, dev, guest, err := a.Lookup(r.Context(), HashToken(tok))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &httputil.Error{Status: 401, Code: "M_UNKNOWN_TOKEN", Message: "Unknown access token", Extra: map[string]any{"soft_logout": false}}
	}
	if err != nil {
		return nil, err
	}
	return &Device{UserID: "@" + lp + ":" + a.ServerName, Localpart: lp, DeviceID: dev, IsGuest: guest}, nil
}

// appServiceDevice is the caller of an application service's request
// (spec: Application Service API, "Identity assertion"): its sender, or
// the user named by ?user_id=, which must be in its namespace and
// registered; ?device_id= (MSC3202) names the device.
func (a *Authenticator) appServiceDevice(r *http.Request, as AppService) (*Device, error) {
	userID := r.URL.Query().Get("user_id")
	if userID == "" {
		userID = as.Sender()
	}
	lp, server, ok := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	if !strings.HasPrefix(userID, "@") || !ok || server != a.ServerName || !as.OwnsUser(userID) {
		return nil, httputil.Forbidden("Application service cannot act as " + userID)
	}
	if userID != as.Sender() && a.UserExists != nil && !a.UserExists(r.Context(), lp) {
		return nil, httputil.Forbidden("Application service has not registered " + userID)
	}
	return &Device{UserID: userID, Localpart: lp, DeviceID: r.URL.Query().Get("device_id"), AppServiceID: as.ServiceID(),
		Unlimited: as.ExemptFromRateLimits()}, nil
}

// NewToken returns a new random access token (256 bits).
func NewToken() string {
	var b [32]byte
	rand.Read(b[:])
	return "rpt_" + base64.RawURLEncoding.EncodeToString(b[:])
}

// NewID returns a random identifier of n upper-case letters (device IDs,
// UIA sessions).
func NewID(n int) string { return RandomString(n, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") }

// RandomString returns n characters drawn uniformly from alphabet (at most
// 256 characters) by a cryptographic random source.
func RandomString(n int, alphabet string) string {
	b := make([]byte, n)
	limit := 256 - 256%len(alphabet) // reject bytes that would bias the draw
	for i := 0; i < n; {
		var c [1]byte
		rand.Read(c[:])
		if int(c[0]) < limit {
			b[i] = alphabet[int(c[0])%len(alphabet)]
			i++
		}
	}
	return string(b)
}

// HashToken is how access tokens are stored: only their SHA-256.
func HashToken(tok string) string {
	s := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(s[:])
}

// HashPassword hashes a password with bcrypt at the given cost.
func HashPassword(pw string, cost int) (string, error) {
	if len(pw) > 72 {
		// bcrypt only uses 72 bytes; pre-hash longer passwords so that all
		// of the password counts.
		s := sha256.Sum256([]byte(pw))
		pw = base64.StdEncoding.EncodeToString(s[:])
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), cost)
	return string(h), err
}

// CheckPassword reports whether pw matches hash.
func CheckPassword(hash, pw string) bool {
	if hash == "" {
		return false
	}
	if len(pw) > 72 {
		s := sha256.Sum256([]byte(pw))
		pw = base64.StdEncoding.EncodeToString(s[:])
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)) == nil
}
