package clientapi

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/internal/part97"
	"repeater/storage"
)

// Localparts allowed for new users (spec: "User Identifiers"; historical
// characters are accepted for existing users but not for registration).
var localpartRE = regexp.MustCompile(`^[a-z0-9._=\-/+]+$`)

func (a *API) validateLocalpart(lp string) error {
	if err := a.localpartSyntax(lp); err != nil {
		return err
	}
	return a.policy.CheckUsername(lp)
}

// localpartSyntax checks a new user name's characters and length (the
// amateur-radio mode's callsign rule aside: an application service's
// users, such as a bridge's, are not stations).
func (a *API) localpartSyntax(lp string) error {
	if lp == "" || !localpartRE.MatchString(lp) {
		return httputil.Err(400, "M_INVALID_USERNAME", "User ID may only contain a-z, 0-9, and ._=-/+")
	}
	if len("@"+lp+":"+a.serverName) > 255 {
		return httputil.Err(400, "M_INVALID_USERNAME", "User ID too long")
	}
	return nil
}

// uiaSessions tracks user-interactive auth sessions (spec: "User-Interactive
// Authentication API"): the parameters of the request that started each
// one, and for registrations the account it created, so that a session is
// used consistently and a repeated request is idempotent.
type uiaSessions struct {
	mu sync.Mutex
	m  map[string]*uiaSession
}

type uiaSession struct {
	created time.Time
	params  []byte // the first request's body
	result  string // localpart registered through this session
	op      string // for authenticated operations: user, method and path
}

// newFor starts a session for an operation by a signed-in user; the session
// may only complete that same operation ("the client must ... make the same
// request", spec: "User-interactive authentication API").
func (u *uiaSessions) newFor(op string) string {
	id := u.newWith(nil)
	u.mu.Lock()
	u.m[id].op = op
	u.mu.Unlock()
	return id
}

// op returns the operation a session was started for.
func (u *uiaSessions) op(id string) (string, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	s, ok := u.m[id]
	if !ok {
		return "", false
	}
	return s.op, true
}

func (u *uiaSessions) newWith(params []byte) string {
	id := auth.NewID(24)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[string]*uiaSession{}
	}
	for k, s := range u.m {
		if time.Since(s.created) > time.Hour {
			delete(u.m, k)
		}
	}
	u.m[id] = &uiaSession{created: time.Now(), params: params}
	return id
}

func (u *uiaSessions) get(id string) (params []byte, result string, ok bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	s, ok := u.m[id]
	if !ok {
		return nil, "", false
	}
	return s.params, s.result, true
}

func (u *uiaSessions) setResult(id, localpart string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if s, ok := u.m[id]; ok {
		s.result = localpart
	}
}

func uiaChallenge(session string, stage string) *httputil.Error {
	return &httputil.Error{Status: 401, Code: "M_FORBIDDEN", Message: "Additional authentication required",
		Extra: map[string]any{"flows": []any{map[string]any{"stages": []string{stage}}}, "params": map[string]any{}, "session": session, "completed": []string{}}}
}

// uiaChallengeBody is a 401 UIA response without an error (first round).
func uiaFirst(session, stage string) httputil.Response {
	return httputil.Response{Status: 401, Body: map[string]any{
		"flows": []any{map[string]any{"stages": []string{stage}}}, "params": map[string]any{}, "session": session, "completed": []string{}}}
}

// register handles POST /register (spec: "Account registration").
func (a *API) register(r *http.Request) (any, error) {
	body, err := httputil.ReadBody(r, httputil.MaxBody, true)
	if err != nil {
		return nil, err
	}
	kind := r.URL.Query().Get("kind")
	if kind == "guest" {
		return a.registerGuest(r, body)
	}
	if kind != "" && kind != "user" {
		return nil, httputil.InvalidParam("Unknown kind")
	}
	if gjson.GetBytes(body, "type").Str == loginTypeAppService {
		return a.registerAppServiceUser(r, strings.ToLower(gjson.GetBytes(body, "username").Str), body)
	}
	if !a.cfg.Registration.Open {
		return nil, httputil.Forbidden("Registration is not enabled on this server")
	}
	if err := checkTypes(body, map[string]gjson.Type{"username": gjson.String, "password": gjson.String, "device_id": gjson.String, "initial_device_display_name": gjson.String}); err != nil {
		return nil, err
	}
	session := gjson.GetBytes(body, "auth.session").Str
	if session != "" {
		params, done, ok := a.uia.get(session)
		if !ok {
			return nil, httputil.Forbidden("Unknown session")
		}
		// The session remembers what its first request asked for.
		body = mergeParams(params, body)
		if done != "" {
			// Registration already completed in this session: idempotent.
			tok, deviceID, err := a.newDevice(r, done, gjson.GetBytes(body, "device_id").Str, gjson.GetBytes(body, "initial_device_display_name").Str)
			if err != nil {
				return nil, err
			}
			resp := map[string]any{"user_id": "@" + done + ":" + a.serverName, "home_server": a.serverName}
			if !gjson.GetBytes(body, "inhibit_login").Bool() {
				resp["access_token"], resp["device_id"] = tok, deviceID
			}
			return resp, nil
		}
	}
	username := strings.ToLower(gjson.GetBytes(body, "username").Str)
	password := gjson.GetBytes(body, "password").Str
	if username != "" {
		if err := a.validateLocalpart(username); err != nil {
			return nil, err
		}
		if err := a.exclusiveToAppService(username); err != nil {
			return nil, err
		}
		if _, err := a.db.GetAccount(r.Context(), username); err == nil {
			return nil, httputil.Err(400, "M_USER_IN_USE", "User ID already taken")
		}
	}
	authType := gjson.GetBytes(body, "auth.type").Str
	if authType == "" {
		return uiaFirst(a.uia.newWith(body), "m.login.dummy"), nil
	}
	if authType != "m.login.dummy" {
		return nil, uiaChallenge(gjson.GetBytes(body, "auth.session").Str, "m.login.dummy")
	}
	if password == "" {
		return nil, httputil.MissingParam("Missing password")
	}
	if len(password) > 512 {
		return nil, httputil.Err(400, "M_WEAK_PASSWORD", "Password too long")
	}
	if username == "" {
		if err := a.policy.CheckUsername(""); err != nil {
			return nil, err // a callsign is required: no generated names
		}
		username = strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	if err := a.limiter.Allow("register:" + clientIP(r)); err != nil {
		return nil, err
	}
	resp, err := a.createAccountAndLogin(r, username, password, false, body)
	if err == nil && session != "" {
		a.uia.setResult(session, username)
	}
	return resp, err
}

// mergeParams returns body with the top-level keys of first that body lacks.
func mergeParams(first, body []byte) []byte {
	if len(first) == 0 {
		return body
	}
	var a, b map[string]json.RawMessage
	if json.Unmarshal(first, &a) != nil || json.Unmarshal(body, &b) != nil {
		return body
	}
	for k, v := range a {
		if _, ok := b[k]; !ok && k != "auth" {
			b[k] = v
		}
	}
	out, err := json.Marshal(b)
	if err != nil {
		return body
	}
	return out
}

func (a *API) createAccountAndLogin(r *http.Request, username, password string, admin bool, body []byte) (any, error) {
	// Hash before the write transaction: bcrypt is the slow part. No
	// password (an application service's user): no hash, no password login.
	hash := ""
	if password != "" {
		h, err := auth.HashPassword(password, a.cfg.BcryptCost)
		if err != nil {
			return nil, err
		}
		hash = h
	}
	displayName := username
	if a.policy.On() && part97.ValidCallsign(username) {
		displayName = strings.ToUpper(username) // callsigns are written in capitals
	}
	err := a.db.CreateAccount(r.Context(), storage.Account{Localpart: username, PasswordHash: hash, IsAdmin: admin, DisplayName: displayName})
	if errors.Is(err, storage.ErrConflict) {
		return nil, httputil.Err(400, "M_USER_IN_USE", "User ID already taken")
	}
	if err != nil {
		return nil, err
	}
	userID := "@" + username + ":" + a.serverName
	resp := map[string]any{"user_id": userID, "home_server": a.serverName}
	if gjson.GetBytes(body, "inhibit_login").Bool() {
		a.autoJoin(r.Context(), username, displayName, body)
		return resp, nil
	}
	deviceID := gjson.GetBytes(body, "device_id").Str
	tok, deviceID, err := a.newDevice(r, username, deviceID, gjson.GetBytes(body, "initial_device_display_name").Str)
	if err != nil {
		return nil, err
	}
	resp["access_token"], resp["device_id"] = tok, deviceID
	a.autoJoin(r.Context(), username, displayName, body)
	return resp, nil
}

func (a *API) newDevice(r *http.Request, localpart, deviceID, displayName string) (string, string, error) {
	if deviceID == "" {
		deviceID = auth.NewID(10)
	}
	tok := auth.NewToken()
	if err := a.db.CreateDevice(r.Context(), localpart, deviceID, displayName, auth.HashToken(tok), clientIP(r)); err != nil {
		return "", "", err
	}
	a.deviceAdded(r.Context(), "@"+localpart+":"+a.serverName, deviceID)
	return tok, deviceID, nil
}

// registerAvailable handles GET /register/available.
func (a *API) registerAvailable(r *http.Request) (any, error) {
	lp := r.URL.Query().Get("username")
	if err := a.validateLocalpart(lp); err != nil {
		return nil, err
	}
	if err := a.exclusiveToAppService(lp); err != nil {
		return nil, err
	}
	if _, err := a.db.GetAccount(r.Context(), lp); err == nil {
		return nil, httputil.Err(400, "M_USER_IN_USE", "User ID already taken")
	}
	return map[string]any{"available": true}, nil
}

// Shared-secret registration (Synapse admin API, used by test suites and
// admin tools): GET returns a nonce, POST registers with an HMAC.
type nonces struct {
	mu sync.Mutex
	m  map[string]time.Time
}

func (a *API) adminRegisterNonce(r *http.Request) (any, error) {
	if a.cfg.Registration.SharedSecret == "" {
		return nil, httputil.Err(400, "M_UNKNOWN", "Shared secret registration is not enabled")
	}
	n := auth.NewID(32)
	a.nonces.mu.Lock()
	if a.nonces.m == nil {
		a.nonces.m = map[string]time.Time{}
	}
	for k, t := range a.nonces.m {
		if time.Since(t) > 5*time.Minute {
			delete(a.nonces.m, k)
		}
	}
	a.nonces.m[n] = time.Now()
	a.nonces.mu.Unlock()
	return map[string]any{"nonce": n}, nil
}

func (a *API) adminRegister(r *http.Request) (any, error) {
	if a.cfg.Registration.SharedSecret == "" {
		return nil, httputil.Err(400, "M_UNKNOWN", "Shared secret registration is not enabled")
	}
	body, err := httputil.ReadBody(r, httputil.MaxBody, false)
	if err != nil {
		return nil, err
	}
	nonce := gjson.GetBytes(body, "nonce").Str
	a.nonces.mu.Lock()
	_, ok := a.nonces.m[nonce]
	delete(a.nonces.m, nonce)
	a.nonces.mu.Unlock()
	if !ok {
		return nil, httputil.Err(400, "M_UNKNOWN", "Unrecognised nonce")
	}
	username := strings.ToLower(gjson.GetBytes(body, "username").Str)
	password := gjson.GetBytes(body, "password").Str
	admin := gjson.GetBytes(body, "admin").Bool()
	mac := hmac.New(sha1.New, []byte(a.cfg.Registration.SharedSecret))
	mac.Write([]byte(nonce + "\x00" + gjson.GetBytes(body, "username").Str + "\x00" + password + "\x00"))
	if admin {
		mac.Write([]byte("admin"))
	} else {
		mac.Write([]byte("notadmin"))
	}
	want := hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(gjson.GetBytes(body, "mac").Str))) {
		return nil, httputil.Forbidden("HMAC incorrect")
	}
	if err := a.validateLocalpart(username); err != nil {
		return nil, err
	}
	if password == "" {
		return nil, httputil.MissingParam("Missing password")
	}
	return a.createAccountAndLogin(r, username, password, admin, body)
}

// loginFlows handles GET /login.
func (a *API) loginFlows(r *http.Request) (any, error) {
	flows := []any{map[string]any{"type": "m.login.password"}, map[string]any{"type": loginTypeAppService}}
	if a.cfg.LoginToken.Enabled {
		// Tokens come from POST /login/get_token (logintoken.go).
		flows = append(flows, map[string]any{"type": "m.login.token", "get_login_token": true})
	}
	return map[string]any{"flows": flows}, nil
}

// login handles POST /login (spec: "Login").
func (a *API) login(r *http.Request) (any, error) {
	body, err := httputil.ReadBody(r, httputil.MaxBody, false)
	if err != nil {
		return nil, err
	}
	if t := gjson.GetBytes(body, "type").Str; t == "m.login.token" && a.cfg.LoginToken.Enabled {
		return a.loginWithToken(r, body)
	} else if t == loginTypeAppService {
		return a.loginAppServiceUser(r, body)
	} else if t != "m.login.password" {
		return nil, httputil.Err(400, "M_UNKNOWN", "Unknown login type")
	}
	user := gjson.GetBytes(body, "identifier.user").Str
	if user == "" {
		user = gjson.GetBytes(body, "user").Str
	}
	if idType := gjson.GetBytes(body, "identifier.type").Str; idType != "" && idType != "m.id.user" {
		return nil, httputil.Err(400, "M_UNKNOWN", "Unsupported identifier type")
	}
	if user == "" {
		return nil, httputil.BadJSON("Missing user identifier")
	}
	if err := a.limiter.Allow("login:" + clientIP(r)); err != nil {
		return nil, err
	}
	lp, err := a.localpartFromUser(user)
	if err != nil {
		return nil, httputil.Forbidden("Invalid username or password")
	}
	acct, err := a.db.GetAccount(r.Context(), lp)
	if err != nil || acct.Deactivated || !auth.CheckPassword(acct.PasswordHash, gjson.GetBytes(body, "password").Str) {
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		return nil, httputil.Forbidden("Invalid username or password")
	}
	tok, deviceID, err := a.newDevice(r, lp, gjson.GetBytes(body, "device_id").Str, gjson.GetBytes(body, "initial_device_display_name").Str)
	if err != nil {
		return nil, err
	}
	return map[string]any{"user_id": "@" + lp + ":" + a.serverName, "access_token": tok, "device_id": deviceID, "home_server": a.serverName}, nil
}

// localpartFromUser accepts a localpart or a full user ID on this server.
func (a *API) localpartFromUser(user string) (string, error) {
	if strings.HasPrefix(user, "@") {
		uid, err := spec.NewUserID(user, true)
		if err != nil || string(uid.Domain()) != a.serverName {
			return "", httputil.Forbidden("Not a local user")
		}
		return strings.ToLower(uid.Local()), nil
	}
	return strings.ToLower(user), nil
}

func (a *API) logout(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	return struct{}{}, a.removeDevices(r, d, []string{d.DeviceID}, "")
}

func (a *API) logoutAll(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	return struct{}{}, a.removeDevices(r, d, nil, "")
}

func (a *API) whoami(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	return map[string]any{"user_id": d.UserID, "device_id": d.DeviceID, "is_guest": false}, nil
}

// checkPasswordAuth runs the m.login.password UIA stage for sensitive
// operations; it returns a UIA challenge when auth is missing or wrong.
func (a *API) checkPasswordAuth(r *http.Request, body []byte, d *auth.Device) error {
	if d.AppServiceID != "" {
		// An application service acting for its user: its token is the
		// authentication (its users have no password).
		return nil
	}
	authObj := gjson.GetBytes(body, "auth")
	op := d.UserID + " " + r.Method + " " + r.URL.Path
	if !authObj.Exists() {
		s := a.uia.newFor(op)
		return &httputil.Error{Status: 401, Code: "", Message: "", Extra: map[string]any{
			"flows": []any{map[string]any{"stages": []string{"m.login.password"}}}, "params": map[string]any{}, "session": s, "completed": []string{}}}
	}
	if sess := authObj.Get("session").Str; sess != "" {
		if started, ok := a.uia.op(sess); ok && started != "" && started != op {
			return httputil.Forbidden("This session was started for a different request")
		}
	}
	if authObj.Get("type").Str != "m.login.password" {
		return uiaChallenge(authObj.Get("session").Str, "m.login.password")
	}
	user := authObj.Get("identifier.user").Str
	if user == "" {
		user = authObj.Get("user").Str
	}
	if user != "" {
		lp, err := a.localpartFromUser(user)
		if err != nil || lp != d.Localpart {
			return httputil.Forbidden("Cannot authenticate as another user")
		}
	}
	acct, err := a.db.GetAccount(r.Context(), d.Localpart)
	if err != nil {
		return err
	}
	if !auth.CheckPassword(acct.PasswordHash, authObj.Get("password").Str) {
		e := uiaChallenge(authObj.Get("session").Str, "m.login.password")
		e.Message = "Invalid password"
		return e
	}
	return nil
}

// changePassword handles POST /account/password.
func (a *API) changePassword(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	body, err := httputil.ReadBody(r, httputil.MaxBody, false)
	if err != nil {
		return nil, err
	}
	if err := a.checkPasswordAuth(r, body, d); err != nil {
		return nil, err
	}
	pw := gjson.GetBytes(body, "new_password")
	if pw.Type != gjson.String || pw.Str == "" {
		return nil, httputil.MissingParam("Missing new_password")
	}
	hash, err := auth.HashPassword(pw.Str, a.cfg.BcryptCost)
	if err != nil {
		return nil, err
	}
	if err := a.db.SetPassword(r.Context(), d.Localpart, hash); err != nil {
		return nil, err
	}
	// Other sessions' pushers stop, even when the sessions stay: whoever
	// had the old password may have set them (as Synapse does).
	if err := a.db.DeleteOtherPushers(r.Context(), d.Localpart, d.DeviceID); err != nil {
		return nil, err
	}
	if lo := gjson.GetBytes(body, "logout_devices"); !lo.Exists() || lo.Bool() {
		if err := a.removeDevices(r, d, nil, d.DeviceID); err != nil {
			return nil, err
		}
	}
	return struct{}{}, nil
}

// deactivate handles POST /account/deactivate: the user leaves every room.
func (a *API) deactivate(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	body, err := httputil.ReadBody(r, httputil.MaxBody, true)
	if err != nil {
		return nil, err
	}
	if err := a.checkPasswordAuth(r, body, d); err != nil {
		return nil, err
	}
	if err := a.DeactivateAccount(r.Context(), d.Localpart); err != nil {
		return nil, err
	}
	return map[string]any{"id_server_unbind_result": "no-support"}, nil
}

// DeactivateAccount deactivates a local account: the user leaves every
// room they are in, invited to or knocking on, their devices go (with
// their keys, pushers and to-device messages) and the account can no
// longer log in. Also used by the admin API (adminapi.Accounts).
func (a *API) DeactivateAccount(ctx context.Context, localpart string) error {
	userID := "@" + localpart + ":" + a.serverName
	for _, m := range []string{spec.Join, spec.Invite, spec.Knock} {
		rooms, err := a.db.RoomsByMembership(ctx, userID, m)
		if err != nil {
			return err
		}
		for _, room := range rooms {
			if _, err := a.rs.ChangeMembership(ctx, room, userID, userID, spec.Leave, "", nil); err != nil {
				a.log.Warn("deactivate: leave failed", "room", room, "err", err)
			}
		}
	}
	if err := a.RemoveDevices(ctx, localpart, nil, ""); err != nil {
		return err
	}
	if err := a.db.DeleteAllPushers(ctx, localpart); err != nil {
		return err
	}
	return a.db.DeactivateAccount(ctx, localpart)
}

// checkTypes rejects bodies where known fields have the wrong JSON type.
func checkTypes(body []byte, want map[string]gjson.Type) error {
	for f, t := range want {
		v := gjson.GetBytes(body, f)
		if v.Exists() && v.Type != t && v.Type != gjson.Null {
			return httputil.BadJSON(f + " has the wrong type")
		}
	}
	return nil
}

func clientIP(r *http.Request) string {
	host := r.RemoteAddr
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	return host
}

// registerGuest handles POST /register?kind=guest (spec: "Guest access").
func (a *API) registerGuest(r *http.Request, body []byte) (any, error) {
	if !a.cfg.Registration.Guests {
		return nil, httputil.Err(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is not enabled")
	}
	if err := a.limiter.Allow("register:" + clientIP(r)); err != nil {
		return nil, err
	}
	lp := strconv.FormatInt(time.Now().UnixNano(), 10)
	if err := a.db.CreateAccount(r.Context(), storage.Account{Localpart: lp, IsGuest: true}); err != nil {
		return nil, err
	}
	tok, deviceID, err := a.newDevice(r, lp, "", gjson.GetBytes(body, "initial_device_display_name").Str)
	if err != nil {
		return nil, err
	}
	return map[string]any{"user_id": "@" + lp + ":" + a.serverName, "access_token": tok, "device_id": deviceID, "home_server": a.serverName}, nil
}

// openIDToken handles POST /user/{userId}/openid/request_token (spec:
// "OpenID"): a short-lived token a third party can exchange, through our
// federation API, for the user's ID.
func (a *API) openIDToken(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	if vars(r)["userId"] != d.UserID {
		return nil, httputil.Forbidden("You may only request tokens for yourself")
	}
	if _, err := httputil.ReadBody(r, httputil.MaxBody, true); err != nil {
		return nil, err
	}
	tok := auth.NewToken()
	const lifetime = 3600
	if err := a.db.PutOpenIDToken(r.Context(), auth.HashToken(tok), d.UserID, time.Now().Add(lifetime*time.Second).UnixMilli()); err != nil {
		return nil, err
	}
	return map[string]any{"access_token": tok, "token_type": "Bearer", "matrix_server_name": a.serverName, "expires_in": lifetime}, nil
}

// removeDevices removes devices (all but keep when ids is nil) with their
// encryption keys and pending to-device messages; users sharing a room see
// the device-list change.
func (a *API) removeDevices(r *http.Request, d *auth.Device, ids []string, keep string) error {
	return a.RemoveDevices(r.Context(), d.Localpart, ids, keep)
}

// RemoveDevices is removeDevices for any local account (the admin API's
// too, through adminapi.Accounts).
func (a *API) RemoveDevices(ctx context.Context, localpart string, ids []string, keep string) error {
	d := &auth.Device{Localpart: localpart, UserID: "@" + localpart + ":" + a.serverName}
	gone := ids
	if gone == nil {
		devs, err := a.db.Devices(ctx, d.Localpart)
		if err != nil {
			return err
		}
		for _, x := range devs {
			if x.DeviceID != keep {
				gone = append(gone, x.DeviceID)
			}
		}
	}
	if err := a.db.DeleteDevices(ctx, d.Localpart, ids, keep); err != nil {
		return err
	}
	if len(gone) == 0 {
		return nil
	}
	// Pushers go with the sessions that set them.
	if err := a.db.DeleteDevicePushers(ctx, d.Localpart, gone); err != nil {
		return err
	}
	a.notify.OnUserDataPending(d.UserID)
	pos, err := a.db.ForgetDeviceKeys(ctx, d.UserID, gone)
	a.notify.OnUserEvent(d.UserID, pos)
	if err == nil {
		a.deviceListChanged(ctx, d.UserID, pos)
		if a.remote != nil {
			for _, id := range gone {
				a.remote.DeviceListChanged(ctx, d.UserID, id, true)
			}
		}
	}
	return err
}
