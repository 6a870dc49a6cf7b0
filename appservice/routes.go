package appservice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/gorilla/mux"
	"github.com/tidwall/gjson"

	"repeater/internal/auth"
	"repeater/internal/httputil"
)

// V1Routes registers the application service endpoints of the
// Client-Server API on a /_matrix/client/v1 router.
func (p *Pusher) V1Routes(c *mux.Router, authn *auth.Authenticator) {
	c.Handle("/appservice/{appserviceId}/ping", authn.Require(httputil.JSON(p.log, p.ping))).Methods(http.MethodPost)
}

// ping handles POST /_matrix/client/v1/appservice/{appserviceId}/ping
// (spec v1.7, "Pinging"): the homeserver POSTs /_matrix/app/v1/ping to the
// service and reports how long the answer took.
func (p *Pusher) ping(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	id := httputil.Vars(r)["appserviceId"]
	var reg *Registration
	for _, x := range p.set.All() {
		if x.ID == id {
			reg = x
		}
	}
	if reg == nil || d.AppServiceID != id {
		return nil, httputil.Forbidden("Only the application service itself may ping it")
	}
	if reg.URL == nil || *reg.URL == "" {
		return nil, httputil.Err(400, "M_URL_NOT_SET", "The application service has no URL")
	}
	body, err := httputil.ReadBody(r, httputil.MaxBody, true)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	if t := gjson.GetBytes(body, "transaction_id"); t.Exists() {
		out["transaction_id"] = t.Str
	}
	payload, _ := json.Marshal(out)
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, trimSlash(*reg.URL)+"/_matrix/app/v1/ping", bytes.NewReader(payload))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+reg.HSToken)
	start := time.Now()
	resp, err := p.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, httputil.Err(504, "M_CONNECTION_TIMEOUT", "The application service did not answer in time")
		}
		return nil, httputil.Err(502, "M_CONNECTION_FAILED", "Could not reach the application service")
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return nil, &httputil.Error{Status: 502, Code: "M_BAD_STATUS", Message: "The application service answered with an error",
			Extra: map[string]any{"status": resp.StatusCode, "body": string(rb)}}
	}
	p.Wake(id)
	return map[string]any{"duration_ms": time.Since(start).Milliseconds()}, nil
}

// QueryAlias asks the services whose alias namespaces include alias
// whether it exists (spec: "Querying", GET /_matrix/app/v1/rooms/{alias});
// a service that answers 200 has made it. It reports whether one did.
func (p *Pusher) QueryAlias(ctx context.Context, alias string) bool {
	return p.query(ctx, func(r *Registration) bool { return matches(r.Namespaces.Aliases, alias, false) }, "/_matrix/app/v1/rooms/"+url.PathEscape(alias))
}

// QueryUser asks the services whose user namespaces include userID whether
// the user exists (GET /_matrix/app/v1/users/{userId}); a service that
// answers 200 has registered it.
func (p *Pusher) QueryUser(ctx context.Context, userID string) bool {
	return p.query(ctx, func(r *Registration) bool { return matches(r.Namespaces.Users, userID, false) }, "/_matrix/app/v1/users/"+url.PathEscape(userID))
}

func (p *Pusher) query(ctx context.Context, interested func(*Registration) bool, path string) bool {
	for _, r := range p.set.All() {
		if r.URL == nil || *r.URL == "" || !interested(r) {
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		req, err := http.NewRequestWithContext(qctx, http.MethodGet, trimSlash(*r.URL)+path, nil)
		if err != nil {
			cancel()
			continue
		}
		req.Header.Set("Authorization", "Bearer "+r.HSToken)
		resp, err := p.client.Do(req)
		cancel()
		if err != nil {
			p.log.Info("application service query failed", "service", r.ID, "path", path, "err", err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			return true
		}
	}
	return false
}

// ForToken, HoldsUser and AliasHolder are the Set's (the client API takes
// the pusher as its view of the services).
func (p *Pusher) ForToken(tok string) auth.AppService { return p.set.ForToken(tok) }
func (p *Pusher) HoldsUser(userID string) bool        { return p.set.HoldsUser(userID) }
func (p *Pusher) AliasHolder(alias string) string     { return p.set.AliasHolder(alias) }
