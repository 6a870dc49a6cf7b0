package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/roomserver"
	"repeater/storage"
)

// End-to-end encryption endpoints (spec: "End-to-End Encryption", "Send-to-
// Device messaging"). The server stores and relays keys; it decrypts
// nothing.

// keysUpload handles POST /keys/upload.
func (a *API) keysUpload(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	body, err := httputil.ReadBody(r, httputil.MaxBody, true)
	if err != nil {
		return nil, err
	}
	var up storage.KeyUpload
	if dk := gjson.GetBytes(body, "device_keys"); dk.Exists() {
		if !dk.IsObject() || dk.Get("user_id").Str != d.UserID || dk.Get("device_id").Str != d.DeviceID {
			return nil, httputil.BadJSON("device_keys must be an object for this user and device")
		}
		up.DeviceKeys = []byte(dk.Raw)
	}
	for field, dst := range map[string]*map[string][]byte{"one_time_keys": &up.OneTimeKeys, "fallback_keys": &up.FallbackKeys} {
		v := gjson.GetBytes(body, field)
		if !v.Exists() {
			continue
		}
		if !v.IsObject() {
			return nil, httputil.BadJSON(field + " must be an object")
		}
		*dst = map[string][]byte{}
		v.ForEach(func(id, key gjson.Result) bool {
			(*dst)[id.Str] = []byte(key.Raw)
			return true
		})
	}
	if up.DeviceKeys != nil {
		a.notify.OnUserDataPending(d.UserID)
	}
	pos, err := a.db.UploadKeys(r.Context(), d.UserID, d.DeviceID, up)
	if up.DeviceKeys != nil {
		a.notify.OnUserEvent(d.UserID, pos)
		if err == nil {
			a.deviceListChanged(r.Context(), d.UserID, pos)
			if a.remote != nil {
				a.remote.DeviceListChanged(r.Context(), d.UserID, d.DeviceID, pos, false, up.DeviceKeys)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	counts, err := a.db.OneTimeKeyCounts(r.Context(), d.UserID, d.DeviceID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"one_time_key_counts": counts}, nil
}

// deviceAdded records a new or renamed device as a device-list change
// (Client-Server API, "Tracking the device list for a user": a new login or
// a changed display name is a change), waking the user, everyone sharing a
// room with them, and telling other servers. Best effort: the device itself
// is already stored.
func (a *API) deviceAdded(ctx context.Context, userID, deviceID string) {
	a.notify.OnUserDataPending(userID)
	pos, err := a.db.MarkDeviceListChange(ctx, userID)
	a.notify.OnUserEvent(userID, pos)
	if err != nil {
		a.log.Warn("recording a device-list change", "user", userID, "err", err)
		return
	}
	a.deviceListChanged(ctx, userID, pos)
	if a.remote != nil {
		var keys json.RawMessage
		if all, err := a.db.DeviceKeysOf(ctx, []string{userID}); err == nil {
			keys = all[userID][deviceID]
		}
		a.remote.DeviceListChanged(ctx, userID, deviceID, pos, false, keys)
	}
}

// deviceListChanged wakes everyone sharing a room with userID, whose next
// sync lists the change.
func (a *API) deviceListChanged(ctx context.Context, userID string, pos int64) {
	users, err := a.sharingUsers(ctx, userID)
	if err != nil {
		return
	}
	for _, m := range users {
		if m != userID && roomserver.ServerOf(m) == a.serverName {
			a.notify.OnUserEvent(m, pos)
		}
	}
}

// keysQuery handles POST /keys/query: our users' device keys, with the
// devices' display names.
func (a *API) keysQuery(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	resp := map[string]any{}
	body, err := httputil.ReadBody(r, httputil.MaxBody, false)
	if err != nil {
		return nil, err
	}
	want := gjson.GetBytes(body, "device_keys")
	if !want.IsObject() {
		return nil, httputil.BadJSON("device_keys must be an object")
	}
	out := map[string]any{}
	failures := map[string]any{}
	remote := map[string]map[string][]string{} // server -> user -> devices
	want.ForEach(func(user, devs gjson.Result) bool {
		uid, err := spec.NewUserID(user.Str, true)
		if err != nil {
			return true
		}
		if string(uid.Domain()) != a.serverName {
			var devices []string
			for _, d := range devs.Array() {
				devices = append(devices, d.Str)
			}
			if devices == nil {
				devices = []string{}
			}
			if remote[string(uid.Domain())] == nil {
				remote[string(uid.Domain())] = map[string][]string{}
			}
			remote[string(uid.Domain())][user.Str] = devices
			return true
		}
		keys, err := a.db.DeviceKeysOf(r.Context(), []string{user.Str})
		if err != nil {
			return true
		}
		only := map[string]bool{}
		for _, d := range devs.Array() {
			only[d.Str] = true
		}
		names := map[string]string{}
		if ds, err := a.db.Devices(r.Context(), uid.Local()); err == nil {
			for _, d := range ds {
				names[d.DeviceID] = d.DisplayName
			}
		}
		sigs, _ := a.db.KeySignaturesOf(r.Context(), user.Str)
		a.crossSigningFor(r.Context(), user.Str, d.UserID, resp)
		m := map[string]any{}
		for dev, js := range keys[user.Str] {
			if len(only) > 0 && !only[dev] {
				continue
			}
			js = withSignatures(js, dev, sigs)
			var k map[string]any
			if json.Unmarshal(js, &k) != nil {
				continue
			}
			unsigned, _ := k["unsigned"].(map[string]any)
			if unsigned == nil {
				unsigned = map[string]any{}
			}
			if n := names[dev]; n != "" {
				unsigned["device_display_name"] = n
			}
			k["unsigned"] = unsigned
			m[dev] = k
		}
		out[user.Str] = m
		return true
	})
	// Other servers' users: asked of their servers, keys passed on as signed.
	for srv, users := range remote {
		if a.remote != nil {
			res, err := a.remote.QueryKeys(r.Context(), srv, users)
			mergeRemoteKeys(out, failures, srv, res, err)
		}
	}
	resp["device_keys"], resp["failures"] = out, failures
	return resp, nil
}

// mergeRemoteKeys adds another server's answer (user -> keys, raw, as
// signed) to a keys/query or keys/claim answer, or notes its failure.
func mergeRemoteKeys(out, failures map[string]any, srv string, res json.RawMessage, err error) {
	if err != nil {
		failures[srv] = map[string]any{"status": 503, "message": err.Error()}
		return
	}
	gjson.ParseBytes(res).ForEach(func(user, keys gjson.Result) bool {
		if roomserver.ServerOf(user.Str) == srv {
			out[user.Str] = json.RawMessage(keys.Raw)
		}
		return true
	})
}

// keysClaim handles POST /keys/claim: one one-time key (or the fallback
// key) per device asked for.
func (a *API) keysClaim(r *http.Request) (any, error) {
	body, err := httputil.ReadBody(r, httputil.MaxBody, false)
	if err != nil {
		return nil, err
	}
	want := gjson.GetBytes(body, "one_time_keys")
	if !want.IsObject() {
		return nil, httputil.BadJSON("one_time_keys must be an object")
	}
	out := map[string]any{}
	failures := map[string]any{}
	remote := map[string]map[string]map[string]string{}
	var err2 error
	want.ForEach(func(user, devs gjson.Result) bool {
		if srv := roomserver.ServerOf(user.Str); srv != a.serverName {
			if remote[srv] == nil {
				remote[srv] = map[string]map[string]string{}
			}
			m := map[string]string{}
			devs.ForEach(func(dev, alg gjson.Result) bool { m[dev.Str] = alg.Str; return true })
			remote[srv][user.Str] = m
			return true
		}
		m := map[string]any{}
		devs.ForEach(func(dev, alg gjson.Result) bool {
			id, key, err := a.db.ClaimKey(r.Context(), user.Str, dev.Str, alg.Str)
			if err != nil {
				err2 = err
				return false
			}
			if id != "" {
				m[dev.Str] = map[string]any{id: json.RawMessage(key)}
			}
			return true
		})
		if len(m) > 0 {
			out[user.Str] = m
		}
		return err2 == nil
	})
	if err2 != nil {
		return nil, err2
	}
	for srv, want := range remote {
		if a.remote != nil {
			res, err := a.remote.ClaimKeys(r.Context(), srv, want)
			mergeRemoteKeys(out, failures, srv, res, err)
		}
	}
	return map[string]any{"one_time_keys": out, "failures": failures}, nil
}

// keysChanges handles GET /keys/changes?from=&to=: users sharing a room
// with us whose device lists changed between two sync tokens.
func (a *API) keysChanges(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	from, ok1 := parseStreamToken(r.URL.Query().Get("from"))
	to, ok2 := parseStreamToken(r.URL.Query().Get("to"))
	if !ok1 || !ok2 {
		return nil, httputil.InvalidParam("from and to must be sync tokens")
	}
	users, err := a.sharingUsers(r.Context(), d.UserID)
	if err != nil {
		return nil, err
	}
	changed, err := a.db.DeviceListChanges(r.Context(), users, from, to)
	if err != nil {
		return nil, err
	}
	// Users who started or stopped sharing a room with us in the range.
	var rooms []string
	for _, m := range []string{spec.Join, spec.Leave, spec.Ban} {
		rs, err := a.db.RoomsByMembership(r.Context(), d.UserID, m)
		if err != nil {
			return nil, err
		}
		rooms = append(rooms, rs...)
	}
	joined, left, err := a.rs.DeviceListDelta(r.Context(), d.UserID, rooms, from, to, users)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	out := []string{}
	for _, u := range append(changed, joined...) {
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	sort.Strings(out)
	if left == nil {
		left = []string{}
	}
	return map[string]any{"changed": out, "left": left}, nil
}

// sharingUsers lists the user and everyone sharing a joined room with them.
func (a *API) sharingUsers(ctx context.Context, userID string) ([]string, error) {
	return a.rs.SharingUsers(ctx, userID)
}

// parseStreamToken reads the stream position of a sync token "s<pos>_<epos>".
func parseStreamToken(s string) (int64, bool) {
	if len(s) < 2 || s[0] != 's' {
		return 0, false
	}
	var pos int64
	for i := 1; i < len(s) && s[i] != '_'; i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		pos = pos*10 + int64(s[i]-'0')
	}
	return pos, true
}

// sendToDevice handles PUT /sendToDevice/{eventType}/{txnId} for our users'
// devices ("*" means all of a user's devices).
func (a *API) sendToDevice(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	v := vars(r)
	body, err := httputil.ReadBody(r, httputil.MaxBody, false)
	if err != nil {
		return nil, err
	}
	// Idempotent per device and transaction ID, like room sends.
	txnKey := "todevice:" + v["txnId"]
	if _, err := a.db.TxnEventID(r.Context(), d.Localpart, d.DeviceID, txnKey); err == nil {
		return struct{}{}, nil
	}
	msgs := gjson.GetBytes(body, "messages")
	if !msgs.IsObject() {
		return nil, httputil.BadJSON("messages must be an object")
	}
	var out []storage.ToDeviceMessage
	targets := map[string]bool{}
	remote := map[string]map[string]map[string]json.RawMessage{} // server -> user -> device -> content
	msgs.ForEach(func(user, devs gjson.Result) bool {
		uid, err := spec.NewUserID(user.Str, true)
		if err != nil {
			return true
		}
		if srv := string(uid.Domain()); srv != a.serverName {
			if remote[srv] == nil {
				remote[srv] = map[string]map[string]json.RawMessage{}
			}
			m := map[string]json.RawMessage{}
			devs.ForEach(func(dev, content gjson.Result) bool { m[dev.Str] = json.RawMessage(content.Raw); return true })
			remote[srv][user.Str] = m
			return true
		}
		devs.ForEach(func(dev, content gjson.Result) bool {
			ids := []string{dev.Str}
			if dev.Str == "*" {
				ids = nil
				if ds, err := a.db.Devices(r.Context(), uid.Local()); err == nil {
					for _, x := range ds {
						ids = append(ids, x.DeviceID)
					}
				}
			}
			for _, id := range ids {
				out = append(out, storage.ToDeviceMessage{UserID: user.Str, DeviceID: id, Sender: d.UserID, Type: v["eventType"], Content: []byte(content.Raw)})
				targets[user.Str] = true
			}
			return true
		})
		return true
	})
	for u := range targets {
		a.notify.OnUserDataPending(u)
	}
	pos, err := a.db.PutToDevice(r.Context(), out)
	for u := range targets {
		a.notify.OnUserEvent(u, pos)
	}
	if err != nil {
		return nil, err
	}
	for srv, msgs := range remote {
		if a.remote != nil {
			a.remote.SendToDevice(r.Context(), srv, d.UserID, v["eventType"], d.DeviceID+"_"+v["txnId"], msgs)
		}
	}
	_ = a.db.RecordTxnID(r.Context(), d.Localpart, d.DeviceID, txnKey)
	return struct{}{}, nil
}

// deviceSigningUpload handles POST /keys/device_signing/upload (spec:
// "Cross-signing"): a user's master, self-signing and user-signing keys.
// Replacing existing keys needs the user's password (UIA); the first
// upload does not.
func (a *API) deviceSigningUpload(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	body, err := httputil.ReadBody(r, httputil.MaxBody, true)
	if err != nil {
		return nil, err
	}
	have, err := a.db.CrossSigningKeys(r.Context(), d.UserID)
	if err != nil {
		return nil, err
	}
	if len(have) > 0 {
		if err := a.checkPasswordAuth(r, body, d); err != nil {
			return nil, err
		}
	}
	keys := map[string][]byte{}
	for _, typ := range []string{"master", "self_signing", "user_signing"} {
		k := gjson.GetBytes(body, typ+"_key")
		if !k.Exists() {
			continue
		}
		if !k.IsObject() || k.Get("user_id").Str != d.UserID || !k.Get("keys").IsObject() {
			return nil, httputil.Err(400, "M_INVALID_PARAM", typ+"_key must be this user's key object")
		}
		keys[typ] = []byte(k.Raw)
	}
	if len(keys) == 0 {
		return struct{}{}, nil
	}
	a.notify.OnUserDataPending(d.UserID)
	pos, err := a.db.PutCrossSigningKeys(r.Context(), d.UserID, keys)
	a.notify.OnUserEvent(d.UserID, pos)
	if err != nil {
		return nil, err
	}
	a.deviceListChanged(r.Context(), d.UserID, pos)
	return struct{}{}, nil
}

// signaturesUpload handles POST /keys/signatures/upload: signatures the
// user made of keys (their devices, their master key, others' master keys).
func (a *API) signaturesUpload(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	body, err := httputil.ReadBody(r, httputil.MaxBody, false)
	if err != nil {
		return nil, err
	}
	if !gjson.ValidBytes(body) || !gjson.ParseBytes(body).IsObject() {
		return nil, httputil.BadJSON("Body must be an object")
	}
	var sigs []storage.KeySignature
	gjson.ParseBytes(body).ForEach(func(user, keys gjson.Result) bool {
		keys.ForEach(func(keyID, obj gjson.Result) bool {
			obj.Get("signatures." + gjson.Escape(d.UserID)).ForEach(func(signerKey, sig gjson.Result) bool {
				sigs = append(sigs, storage.KeySignature{TargetUser: user.Str, TargetKey: keyID.Str, SignerUser: d.UserID, SignerKeyID: signerKey.Str, Signature: sig.Str})
				return true
			})
			return true
		})
		return true
	})
	if len(sigs) > 0 {
		pos, err := a.db.PutKeySignatures(r.Context(), sigs)
		if err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		for _, s := range sigs {
			if !seen[s.TargetUser] && roomserver.ServerOf(s.TargetUser) == a.serverName {
				seen[s.TargetUser] = true
				a.notify.OnUserEvent(s.TargetUser, pos)
				a.deviceListChanged(r.Context(), s.TargetUser, pos)
			}
		}
	}
	return map[string]any{"failures": map[string]any{}}, nil
}

// withSignatures adds stored signatures made for a key to its JSON.
func withSignatures(js []byte, keyID string, sigs []storage.KeySignature) []byte {
	for _, s := range sigs {
		if s.TargetKey != keyID {
			continue
		}
		if out, err := sjson.SetBytes(js, "signatures."+gjson.Escape(s.SignerUser)+"."+gjson.Escape(s.SignerKeyID), s.Signature); err == nil {
			js = out
		}
	}
	return js
}

// crossSigningFor adds a local user's cross-signing keys to a keys/query
// answer (the user-signing key only for its owner).
func (a *API) crossSigningFor(ctx context.Context, userID, viewer string, resp map[string]any) {
	keys, err := a.db.CrossSigningKeys(ctx, userID)
	if err != nil || len(keys) == 0 {
		return
	}
	sigs, _ := a.db.KeySignaturesOf(ctx, userID)
	for typ, field := range map[string]string{"master": "master_keys", "self_signing": "self_signing_keys", "user_signing": "user_signing_keys"} {
		js, ok := keys[typ]
		if !ok || (typ == "user_signing" && userID != viewer) {
			continue
		}
		gjson.GetBytes(js, "keys").ForEach(func(_, pub gjson.Result) bool {
			js = withSignatures(js, pub.Str, sigs)
			return false
		})
		m, _ := resp[field].(map[string]any)
		if m == nil {
			m = map[string]any{}
			resp[field] = m
		}
		m[userID] = json.RawMessage(js)
	}
}
