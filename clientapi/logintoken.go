package clientapi

import (
	"errors"
	"net/http"
	"time"

	"github.com/tidwall/gjson"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/storage"
)

// Signing in with an existing session (spec: "POST
// /_matrix/client/v1/login/get_token" and the m.login.token login type): a
// signed-in user, re-entering their password every time, makes a
// single-use token that logs a new client in within two minutes.

// loginTokenLifetime is the spec's recommended default.
const loginTokenLifetime = 2 * time.Minute

// getLoginToken handles POST /_matrix/client/v1/login/get_token.
func (a *API) getLoginToken(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	if !a.cfg.LoginToken.Enabled || d.IsGuest {
		return nil, httputil.Err(400, "M_UNKNOWN", "Login tokens are not available")
	}
	body, err := httputil.ReadBody(r, httputil.MaxBody, true)
	if err != nil {
		return nil, err
	}
	// User-interactive auth on every call: no session is remembered as
	// authenticated, so each token needs the password again.
	if err := a.checkPasswordAuth(r, body, d); err != nil {
		return nil, err
	}
	if err := a.limiter.Allow(d.RateLimitKey("get_token:" + d.UserID)); err != nil {
		return nil, err
	}
	tok := auth.NewToken()
	if err := a.db.CreateLoginToken(r.Context(), auth.HashToken(tok), d.Localpart, time.Now().Add(loginTokenLifetime).UnixMilli()); err != nil {
		return nil, err
	}
	return map[string]any{"login_token": tok, "expires_in_ms": loginTokenLifetime.Milliseconds()}, nil
}

// loginWithToken is POST /login with type m.login.token.
func (a *API) loginWithToken(r *http.Request, body []byte) (any, error) {
	tok := gjson.GetBytes(body, "token")
	if tok.Type != gjson.String || tok.Str == "" {
		return nil, httputil.BadJSON("Missing token")
	}
	if err := a.limiter.Allow("login:" + clientIP(r)); err != nil {
		return nil, err
	}
	lp, err := a.db.UseLoginToken(r.Context(), auth.HashToken(tok.Str))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.Forbidden("Invalid or expired login token")
	}
	if err != nil {
		return nil, err
	}
	acct, err := a.db.GetAccount(r.Context(), lp)
	if err != nil || acct.Deactivated {
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		return nil, httputil.Forbidden("Invalid or expired login token")
	}
	deviceID := gjson.GetBytes(body, "device_id").Str
	accessToken, deviceID, err := a.newDevice(r, lp, deviceID, gjson.GetBytes(body, "initial_device_display_name").Str)
	if err != nil {
		return nil, err
	}
	return map[string]any{"user_id": "@" + lp + ":" + a.serverName, "access_token": accessToken, "device_id": deviceID, "home_server": a.serverName}, nil
}
