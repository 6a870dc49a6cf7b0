package appservice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
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
