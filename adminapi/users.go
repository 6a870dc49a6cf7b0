package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/storage"
)

// userJSON is an account as Synapse's admin API shows it.
func (a *API) userJSON(acct *storage.AccountInfo) map[string]any {
	return map[string]any{
		"name": a.userID(acct.Localpart), "displayname": nullable(acct.DisplayName), "avatar_url": nullable(acct.AvatarURL),
		"admin": acct.IsAdmin, "deactivated": acct.Deactivated, "erased": acct.Erased, "is_guest": acct.IsGuest,
		"user_type": nil, "creation_ts": acct.CreatedTS, "shadow_banned": false, "locked": false, "approved": true,
		"appservice_id": nil,
	}
}

// userDetails adds what only the single-user endpoint shows.
func (a *API) userDetails(ctx context.Context, acct *storage.AccountInfo) (map[string]any, error) {
	u := a.userJSON(acct)
	u["threepids"] = []any{}
	u["external_ids"] = []any{}
	u["consent_version"], u["consent_server_notice_sent"], u["consent_ts"] = nil, nil, nil
	devs, err := a.db.SeenDevices(ctx, acct.Localpart)
	if err != nil {
		return nil, err
	}
	var last any
	for _, d := range devs {
		if v, ok := last.(int64); !ok || d.LastSeenTS > v {
			last = d.LastSeenTS
		}
	}
	u["last_seen_ts"] = last
	return u, nil
}

// listUsers handles GET /v2/users (from, limit, name or user_id, guests,
// deactivated, order_by, dir).
func (a *API) listUsers(r *http.Request) (any, error) {
	offset, limit, err := page(r, 100)
	if err != nil {
		return nil, err
	}
	q := storage.AccountQuery{Offset: offset, Limit: limit, OrderBy: r.URL.Query().Get("order_by")}
	q.Name = r.URL.Query().Get("name")
	if q.Name == "" {
		q.Name = r.URL.Query().Get("user_id")
	}
	if q.Guests, err = boolParam(r, "guests", true); err != nil {
		return nil, err
	}
	if q.Deactivated, err = boolParam(r, "deactivated", false); err != nil {
		return nil, err
	}
	if q.Backwards, err = dirParam(r); err != nil {
		return nil, err
	}
	if limit == 0 {
		return map[string]any{"users": []any{}, "total": 0}, nil
	}
	accts, total, err := a.db.ListAccounts(r.Context(), q)
	if err != nil {
		return nil, err
	}
	users := make([]any, 0, len(accts))
	for i := range accts {
		users = append(users, a.userJSON(&accts[i]))
	}
	resp := map[string]any{"users": users, "total": total}
	if offset+len(accts) < total {
		resp["next_token"] = strconv.Itoa(offset + len(accts))
	}
	return resp, nil
}

// getUser handles GET /v2/users/{userId}.
func (a *API) getUser(r *http.Request) (any, error) {
	acct, err := a.account(r.Context(), httputil.Vars(r)["userId"])
	if err != nil {
		return nil, err
	}
	return a.userDetails(r.Context(), acct)
}

// Localparts allowed for new users (spec: "User Identifiers"), as for
// registration.
var localpartRE = regexp.MustCompile(`^[a-z0-9._=\-/+]+$`)

// putUser handles PUT /v2/users/{userId}: creates the account (201) or
// changes it (200). Fields: password, logout_devices, displayname,
// avatar_url, admin, deactivated. A display name or avatar set here is
// the account's profile; member events in rooms are not rewritten.
func (a *API) putUser(r *http.Request) (any, error) {
	ctx := r.Context()
	body, err := httputil.ReadBody(r, httputil.MaxBody, true)
	if err != nil {
		return nil, err
	}
	for f, t := range map[string]gjson.Type{"password": gjson.String, "displayname": gjson.String, "avatar_url": gjson.String} {
		if v := gjson.GetBytes(body, f); v.Exists() && v.Type != t && v.Type != gjson.Null {
			return nil, httputil.BadJSON(f + " must be a string")
		}
	}
	for _, f := range []string{"admin", "deactivated", "logout_devices"} {
		if v := gjson.GetBytes(body, f); v.Exists() && v.Type != gjson.True && v.Type != gjson.False {
			return nil, httputil.BadJSON(f + " must be a boolean")
		}
	}
	userID := httputil.Vars(r)["userId"]
	lp, err := a.localpart(userID)
	if err != nil {
		return nil, err
	}
	password := gjson.GetBytes(body, "password")
	displayName, avatar := gjson.GetBytes(body, "displayname"), gjson.GetBytes(body, "avatar_url")
	admin, deactivated := gjson.GetBytes(body, "admin"), gjson.GetBytes(body, "deactivated")
	hashOf := func() (string, error) {
		if password.Str == "" {
			return "", nil
		}
		if len(password.Str) > 512 {
			return "", httputil.Err(400, "M_WEAK_PASSWORD", "Password too long")
		}
		return auth.HashPassword(password.Str, a.cfg.BcryptCost)
	}
	acct, err := a.db.AccountDetails(ctx, lp)
	if errors.Is(err, storage.ErrNotFound) {
		if !localpartRE.MatchString(lp) || len(userID) > 255 {
			return nil, httputil.Err(400, "M_INVALID_USERNAME", "User ID may only contain a-z, 0-9, and ._=-/+")
		}
		hash, err := hashOf()
		if err != nil {
			return nil, err
		}
		dn := lp
		if displayName.Str != "" {
			dn = displayName.Str
		}
		if err := a.db.CreateAccount(ctx, storage.Account{Localpart: lp, PasswordHash: hash, IsAdmin: admin.Bool(), DisplayName: dn}); err != nil {
			return nil, err
		}
		if avatar.Str != "" {
			if err := a.db.SetProfile(ctx, lp, nil, &avatar.Str); err != nil {
				return nil, err
			}
		}
		if deactivated.Bool() {
			if err := a.DeactivateUser(ctx, userID, false); err != nil {
				return nil, err
			}
		}
		acct, err := a.db.AccountDetails(ctx, lp)
		if err != nil {
			return nil, err
		}
		u, err := a.userDetails(ctx, acct)
		return httputil.Response{Status: 201, Body: u}, err
	}
	if err != nil {
		return nil, err
	}
	if admin.Exists() && !admin.Bool() && userID == auth.FromContext(ctx).UserID {
		return nil, httputil.Err(400, "M_UNKNOWN", "You may not demote yourself")
	}
	if deactivated.Exists() && !deactivated.Bool() && acct.Deactivated {
		if password.Str == "" {
			return nil, httputil.Err(400, "M_UNKNOWN", "Must provide a password to re-activate an account")
		}
		hash, err := hashOf()
		if err != nil {
			return nil, err
		}
		if err := a.db.ReactivateAccount(ctx, lp, hash); err != nil {
			return nil, err
		}
	} else if password.Str != "" && !deactivated.Bool() {
		logout := gjson.GetBytes(body, "logout_devices")
		if err := a.ResetPassword(ctx, userID, password.Str, !logout.Exists() || logout.Bool()); err != nil {
			return nil, err
		}
	}
	if displayName.Exists() || avatar.Exists() {
		var dn, av *string
		if displayName.Exists() {
			dn = &displayName.Str
		}
		if avatar.Exists() {
			av = &avatar.Str
		}
		if err := a.db.SetProfile(ctx, lp, dn, av); err != nil {
			return nil, err
		}
	}
	if admin.Exists() && admin.Bool() != acct.IsAdmin {
		if err := a.db.SetAdmin(ctx, lp, admin.Bool()); err != nil {
			return nil, err
		}
	}
	if deactivated.Bool() && !acct.Deactivated {
		if err := a.DeactivateUser(ctx, userID, false); err != nil {
			return nil, err
		}
	}
	if acct, err = a.db.AccountDetails(ctx, lp); err != nil {
		return nil, err
	}
	return a.userDetails(ctx, acct)
}

// getAdmin handles GET /v1/users/{userId}/admin.
func (a *API) getAdmin(r *http.Request) (any, error) {
	acct, err := a.account(r.Context(), httputil.Vars(r)["userId"])
	if err != nil {
		return nil, err
	}
	return map[string]any{"admin": acct.IsAdmin}, nil
}

// putAdmin handles PUT /v1/users/{userId}/admin {admin}.
func (a *API) putAdmin(r *http.Request) (any, error) {
	body, err := httputil.ReadBody(r, httputil.MaxBody, false)
	if err != nil {
		return nil, err
	}
	v := gjson.GetBytes(body, "admin")
	if v.Type != gjson.True && v.Type != gjson.False {
		return nil, httputil.MissingParam("Missing admin (a boolean)")
	}
	userID := httputil.Vars(r)["userId"]
	acct, err := a.account(r.Context(), userID)
	if err != nil {
		return nil, err
	}
	if !v.Bool() && userID == auth.FromContext(r.Context()).UserID {
		return nil, httputil.Err(400, "M_UNKNOWN", "You may not demote yourself")
	}
	return struct{}{}, a.db.SetAdmin(r.Context(), acct.Localpart, v.Bool())
}

// userJoinedRooms handles GET /v1/users/{userId}/joined_rooms.
func (a *API) userJoinedRooms(r *http.Request) (any, error) {
	userID := httputil.Vars(r)["userId"]
	if _, err := a.account(r.Context(), userID); err != nil {
		return nil, err
	}
	rooms, err := a.db.RoomsByMembership(r.Context(), userID, spec.Join)
	if err != nil {
		return nil, err
	}
	if rooms == nil {
		rooms = []string{}
	}
	return map[string]any{"joined_rooms": rooms, "total": len(rooms)}, nil
}

// DeactivateUser deactivates a local account as the client API's own
// deactivation does (leaves every room; devices, keys and pushers go);
// erase also removes the profile.
func (a *API) DeactivateUser(ctx context.Context, userID string, erase bool) error {
	acct, err := a.account(ctx, userID)
	if err != nil {
		return err
	}
	if err := a.accounts.DeactivateAccount(ctx, acct.Localpart); err != nil {
		return err
	}
	if erase {
		return a.db.EraseAccount(ctx, acct.Localpart)
	}
	return nil
}

// deactivate handles POST /v1/deactivate/{userId} {erase}.
func (a *API) deactivate(r *http.Request) (any, error) {
	body, err := httputil.ReadBody(r, httputil.MaxBody, true)
	if err != nil {
		return nil, err
	}
	if v := gjson.GetBytes(body, "erase"); v.Exists() && v.Type != gjson.True && v.Type != gjson.False {
		return nil, httputil.BadJSON("erase must be a boolean")
	}
	if err := a.DeactivateUser(r.Context(), httputil.Vars(r)["userId"], gjson.GetBytes(body, "erase").Bool()); err != nil {
		return nil, err
	}
	return map[string]any{"id_server_unbind_result": "success"}, nil
}

// ResetPassword sets a local user's password; with logout, every device
// is logged out (and its pushers removed).
func (a *API) ResetPassword(ctx context.Context, userID, password string, logout bool) error {
	acct, err := a.account(ctx, userID)
	if err != nil {
		return err
	}
	if password == "" {
		return httputil.MissingParam("Missing new_password")
	}
	if len(password) > 512 {
		return httputil.Err(400, "M_WEAK_PASSWORD", "Password too long")
	}
	hash, err := auth.HashPassword(password, a.cfg.BcryptCost)
	if err != nil {
		return err
	}
	if err := a.db.SetPassword(ctx, acct.Localpart, hash); err != nil {
		return err
	}
	if logout {
		return a.accounts.RemoveDevices(ctx, acct.Localpart, nil, "")
	}
	return nil
}

// resetPassword handles POST /v1/reset_password/{userId} {new_password,
// logout_devices}.
func (a *API) resetPassword(r *http.Request) (any, error) {
	body, err := httputil.ReadBody(r, httputil.MaxBody, false)
	if err != nil {
		return nil, err
	}
	pw := gjson.GetBytes(body, "new_password")
	if pw.Type != gjson.String || pw.Str == "" {
		return nil, httputil.MissingParam("Missing new_password")
	}
	lo := gjson.GetBytes(body, "logout_devices")
	if lo.Exists() && lo.Type != gjson.True && lo.Type != gjson.False {
		return nil, httputil.BadJSON("logout_devices must be a boolean")
	}
	if err := a.ResetPassword(r.Context(), httputil.Vars(r)["userId"], pw.Str, !lo.Exists() || lo.Bool()); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (a *API) deviceJSON(userID string, d *storage.SeenDevice) map[string]any {
	return map[string]any{"device_id": d.DeviceID, "display_name": nullable(d.DisplayName), "last_seen_ip": nullable(d.LastSeenIP),
		"last_seen_ts": d.LastSeenTS, "last_seen_user_agent": nullable(d.UserAgent), "user_id": userID}
}

// UserDevices returns a local user's devices with their last-seen records.
func (a *API) UserDevices(ctx context.Context, userID string) ([]storage.SeenDevice, error) {
	acct, err := a.account(ctx, userID)
	if err != nil {
		return nil, err
	}
	return a.db.SeenDevices(ctx, acct.Localpart)
}

// listDevices handles GET /v2/users/{userId}/devices.
func (a *API) listDevices(r *http.Request) (any, error) {
	userID := httputil.Vars(r)["userId"]
	devs, err := a.UserDevices(r.Context(), userID)
	if err != nil {
		return nil, err
	}
	out := make([]any, 0, len(devs))
	for i := range devs {
		out = append(out, a.deviceJSON(userID, &devs[i]))
	}
	return map[string]any{"devices": out, "total": len(out)}, nil
}

// getDevice handles GET /v2/users/{userId}/devices/{deviceId}.
func (a *API) getDevice(r *http.Request) (any, error) {
	v := httputil.Vars(r)
	devs, err := a.UserDevices(r.Context(), v["userId"])
	if err != nil {
		return nil, err
	}
	for i := range devs {
		if devs[i].DeviceID == v["deviceId"] {
			return a.deviceJSON(v["userId"], &devs[i]), nil
		}
	}
	return nil, httputil.NotFound("Device not found")
}

// deleteDevice handles DELETE /v2/users/{userId}/devices/{deviceId}.
func (a *API) deleteDevice(r *http.Request) (any, error) {
	v := httputil.Vars(r)
	acct, err := a.account(r.Context(), v["userId"])
	if err != nil {
		return nil, err
	}
	if _, err := a.db.GetDevice(r.Context(), acct.Localpart, v["deviceId"]); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil, httputil.NotFound("Device not found")
		}
		return nil, err
	}
	return struct{}{}, a.accounts.RemoveDevices(r.Context(), acct.Localpart, []string{v["deviceId"]}, "")
}

// deleteDevices handles POST /v2/users/{userId}/delete_devices {devices}.
func (a *API) deleteDevices(r *http.Request) (any, error) {
	var body struct {
		Devices []string `json:"devices"`
	}
	if _, err := httputil.DecodeBody(r, &body); err != nil {
		return nil, err
	}
	acct, err := a.account(r.Context(), httputil.Vars(r)["userId"])
	if err != nil {
		return nil, err
	}
	if len(body.Devices) == 0 {
		return struct{}{}, nil
	}
	return struct{}{}, a.accounts.RemoveDevices(r.Context(), acct.Localpart, body.Devices, "")
}

// whoisJSON is the whois answer (Client-Server API, "GET
// /admin/whois/{userId}"): per device, one session with its last-seen
// connection.
func (a *API) whoisJSON(ctx context.Context, userID string) (any, error) {
	devs, err := a.UserDevices(ctx, userID)
	if err != nil {
		return nil, err
	}
	devices := map[string]any{}
	for _, d := range devs {
		conn := map[string]any{"ip": d.LastSeenIP, "last_seen": d.LastSeenTS, "user_agent": d.UserAgent}
		devices[d.DeviceID] = map[string]any{"sessions": []any{map[string]any{"connections": []any{conn}}}}
	}
	return map[string]any{"user_id": userID, "devices": devices}, nil
}

// whois handles GET /_synapse/admin/v1/whois/{userId}.
func (a *API) whois(r *http.Request) (any, error) {
	return a.whoisJSON(r.Context(), httputil.Vars(r)["userId"])
}

// clientWhois handles GET /_matrix/client/v3/admin/whois/{userId}: server
// admins may ask about anyone, users about themselves.
func (a *API) clientWhois(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	userID := httputil.Vars(r)["userId"]
	if userID != d.UserID {
		if err := a.requireAdmin(r.Context(), d); err != nil {
			return nil, err
		}
	}
	return a.whoisJSON(r.Context(), userID)
}

// rawJSON is a small helper for stored JSON values in answers.
func rawJSON(b []byte) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("null")
	}
	return json.RawMessage(b)
}
