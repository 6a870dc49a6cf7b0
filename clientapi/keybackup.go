package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/tidwall/gjson"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/storage"
)

// Server-side key backups (spec: Client-Server API, "Server-side key
// backups"): /room_keys/version[/{version}] and /room_keys/keys[/...].
// Versions are numbers, sent as strings; auth_data and session_data are
// opaque JSON kept as given.

// backupVersion parses a version string; anything else matches no version.
func backupVersion(s string) int64 {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 {
		return -1
	}
	return v
}

func errUnknownBackup() error { return httputil.NotFound("Unknown backup version") }

// backupInfo renders a version for GET /room_keys/version[/{version}].
func backupInfo(b *storage.KeyBackup) map[string]any {
	return map[string]any{"algorithm": b.Algorithm, "auth_data": json.RawMessage(b.AuthData),
		"version": strconv.FormatInt(b.Version, 10), "etag": strconv.FormatInt(b.Etag, 10), "count": b.Count}
}

// readBackupVersionBody checks a POST or PUT /room_keys/version body:
// algorithm a string, auth_data present.
func readBackupVersionBody(r *http.Request) ([]byte, string, []byte, error) {
	body, err := httputil.ReadBody(r, httputil.MaxBody, false)
	if err != nil {
		return nil, "", nil, err
	}
	alg := gjson.GetBytes(body, "algorithm")
	if !alg.Exists() {
		return nil, "", nil, httputil.MissingParam("Missing algorithm")
	}
	if alg.Type != gjson.String || alg.Str == "" {
		return nil, "", nil, httputil.BadJSON("algorithm must be a string")
	}
	authData := gjson.GetBytes(body, "auth_data")
	if !authData.Exists() || authData.Type == gjson.Null {
		return nil, "", nil, httputil.MissingParam("Missing auth_data")
	}
	return body, alg.Str, []byte(authData.Raw), nil
}

// createBackup handles POST /room_keys/version.
func (a *API) createBackup(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	_, alg, authData, err := readBackupVersionBody(r)
	if err != nil {
		return nil, err
	}
	v, err := a.db.CreateKeyBackup(r.Context(), d.UserID, alg, authData)
	if err != nil {
		return nil, err
	}
	return map[string]any{"version": strconv.FormatInt(v, 10)}, nil
}

// getBackup handles GET /room_keys/version and /room_keys/version/{version}.
func (a *API) getBackup(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	var version int64 // the current one
	if s, ok := vars(r)["version"]; ok {
		version = backupVersion(s)
	}
	b, err := a.db.KeyBackupVersion(r.Context(), d.UserID, version)
	if errors.Is(err, storage.ErrNotFound) {
		if version == 0 {
			return nil, httputil.NotFound("No current backup version")
		}
		return nil, errUnknownBackup()
	}
	if err != nil {
		return nil, err
	}
	return backupInfo(b), nil
}

// putBackup handles PUT /room_keys/version/{version}: only auth_data changes.
func (a *API) putBackup(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	s := vars(r)["version"]
	body, alg, authData, err := readBackupVersionBody(r)
	if err != nil {
		return nil, err
	}
	// The body may repeat the version: a string per the spec, though some
	// clients (sytest among them) send it as a number.
	if v := gjson.GetBytes(body, "version"); v.Exists() && !((v.Type == gjson.String && v.Str == s) || (v.Type == gjson.Number && v.Raw == s)) {
		return nil, httputil.InvalidParam("version does not match the version in the path")
	}
	b, err := a.db.KeyBackupVersion(r.Context(), d.UserID, backupVersion(s))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errUnknownBackup()
	}
	if err != nil {
		return nil, err
	}
	if alg != b.Algorithm {
		return nil, httputil.InvalidParam("Algorithm does not match")
	}
	if err := a.db.UpdateKeyBackup(r.Context(), d.UserID, b.Version, authData); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil, errUnknownBackup()
		}
		return nil, err
	}
	return struct{}{}, nil
}

// deleteBackup handles DELETE /room_keys/version/{version}.
func (a *API) deleteBackup(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	err := a.db.DeleteKeyBackup(r.Context(), d.UserID, backupVersion(vars(r)["version"]))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errUnknownBackup()
	}
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// backupQueryVersion is the required ?version= of /room_keys/keys.
func backupQueryVersion(r *http.Request) (string, error) {
	s := r.URL.Query().Get("version")
	if s == "" {
		return "", httputil.MissingParam("Missing version")
	}
	return s, nil
}

// parseBackupKey checks one session's key data.
func parseBackupKey(roomID, sessionID string, v gjson.Result) (storage.BackupKey, error) {
	k := storage.BackupKey{RoomID: roomID, SessionID: sessionID}
	if !v.IsObject() {
		return k, httputil.BadJSON("Key data must be an object")
	}
	fmi, fc, ver, data := v.Get("first_message_index"), v.Get("forwarded_count"), v.Get("is_verified"), v.Get("session_data")
	if fmi.Type != gjson.Number || fc.Type != gjson.Number || !ver.IsBool() || !data.Exists() || data.Type == gjson.Null {
		return k, httputil.BadJSON("Key data needs first_message_index, forwarded_count, is_verified and session_data")
	}
	if fmi.Num != float64(fmi.Int()) || fc.Num != float64(fc.Int()) || fmi.Int() < 0 || fc.Int() < 0 {
		return k, httputil.BadJSON("first_message_index and forwarded_count must be non-negative integers")
	}
	k.FirstMessageIndex, k.ForwardedCount, k.IsVerified, k.SessionData = fmi.Int(), fc.Int(), ver.Bool(), []byte(data.Raw)
	return k, nil
}

// putBackupKeys handles PUT /room_keys/keys[/{roomId}[/{sessionId}]].
func (a *API) putBackupKeys(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	s, err := backupQueryVersion(r)
	if err != nil {
		return nil, err
	}
	body, err := httputil.ReadBody(r, 16*httputil.MaxBody, false)
	if err != nil {
		return nil, err
	}
	v := vars(r)
	var keys []storage.BackupKey
	sessions := func(roomID string, sess gjson.Result) error {
		if !sess.IsObject() {
			return httputil.BadJSON("sessions must be an object")
		}
		var perr error
		sess.ForEach(func(id, data gjson.Result) bool {
			k, err := parseBackupKey(roomID, id.Str, data)
			if err != nil {
				perr = err
				return false
			}
			keys = append(keys, k)
			return true
		})
		return perr
	}
	root := gjson.ParseBytes(body)
	switch {
	case v["sessionId"] != "":
		k, err := parseBackupKey(v["roomId"], v["sessionId"], root)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	case v["roomId"] != "":
		if err := sessions(v["roomId"], root.Get("sessions")); err != nil {
			return nil, err
		}
	default:
		rooms := root.Get("rooms")
		if !rooms.IsObject() {
			return nil, httputil.BadJSON("rooms must be an object")
		}
		var perr error
		rooms.ForEach(func(room, rk gjson.Result) bool {
			perr = sessions(room.Str, rk.Get("sessions"))
			return perr == nil
		})
		if perr != nil {
			return nil, perr
		}
	}
	etag, count, err := a.db.PutBackupKeys(r.Context(), d.UserID, backupVersion(s), keys)
	var wrong *storage.WrongBackupVersionError
	switch {
	case errors.As(err, &wrong):
		return nil, &httputil.Error{Status: 403, Code: "M_WRONG_ROOM_KEYS_VERSION", Message: "Wrong backup version.",
			Extra: map[string]any{"current_version": strconv.FormatInt(wrong.Current, 10)}}
	case errors.Is(err, storage.ErrNotFound):
		return nil, errUnknownBackup()
	case err != nil:
		return nil, err
	}
	return map[string]any{"etag": strconv.FormatInt(etag, 10), "count": count}, nil
}

// getBackupKeys handles GET /room_keys/keys[/{roomId}[/{sessionId}]].
func (a *API) getBackupKeys(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	s, err := backupQueryVersion(r)
	if err != nil {
		return nil, err
	}
	v := vars(r)
	keys, err := a.db.BackupKeys(r.Context(), d.UserID, backupVersion(s), v["roomId"], v["sessionId"])
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errUnknownBackup()
	}
	if err != nil {
		return nil, err
	}
	render := func(k storage.BackupKey) map[string]any {
		return map[string]any{"first_message_index": k.FirstMessageIndex, "forwarded_count": k.ForwardedCount,
			"is_verified": k.IsVerified, "session_data": json.RawMessage(k.SessionData)}
	}
	if v["sessionId"] != "" {
		if len(keys) == 0 {
			return nil, httputil.NotFound("Key not found")
		}
		return render(keys[0]), nil
	}
	rooms := map[string]map[string]any{}
	for _, k := range keys {
		if rooms[k.RoomID] == nil {
			rooms[k.RoomID] = map[string]any{}
		}
		rooms[k.RoomID][k.SessionID] = render(k)
	}
	if v["roomId"] != "" {
		sessions := rooms[v["roomId"]]
		if sessions == nil {
			sessions = map[string]any{}
		}
		return map[string]any{"sessions": sessions}, nil
	}
	out := map[string]any{}
	for room, sessions := range rooms {
		out[room] = map[string]any{"sessions": sessions}
	}
	return map[string]any{"rooms": out}, nil
}

// deleteBackupKeys handles DELETE /room_keys/keys[/{roomId}[/{sessionId}]].
func (a *API) deleteBackupKeys(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	s, err := backupQueryVersion(r)
	if err != nil {
		return nil, err
	}
	v := vars(r)
	etag, count, err := a.db.DeleteBackupKeys(r.Context(), d.UserID, backupVersion(s), v["roomId"], v["sessionId"])
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errUnknownBackup()
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"etag": strconv.FormatInt(etag, 10), "count": count}, nil
}
