package clientapi

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"sort"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

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
		if err := checkDeviceKeys(dk, d.UserID, d.DeviceID); err != nil {
			return nil, err
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
				a.remote.DeviceListChanged(r.Context(), d.UserID, d.DeviceID, false)
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

// checkDeviceKeys checks uploaded device keys (spec: DeviceKeys): this
// user's and device's, with algorithms, keys and signatures.
func checkDeviceKeys(dk gjson.Result, userID, deviceID string) error {
	if !dk.IsObject() || dk.Get("user_id").Str != userID || dk.Get("device_id").Str != deviceID {
		return httputil.BadJSON("device_keys must be an object for this user and device")
	}
	algs := dk.Get("algorithms")
	if !algs.IsArray() {
		return httputil.BadJSON("device_keys.algorithms must be an array of strings")
	}
	for _, a := range algs.Array() {
		if a.Type != gjson.String {
			return httputil.BadJSON("device_keys.algorithms must be an array of strings")
		}
	}
	keys := dk.Get("keys")
	if !keys.IsObject() {
		return httputil.BadJSON("device_keys.keys must be an object")
	}
	ok := true
	keys.ForEach(func(_, v gjson.Result) bool { ok = v.Type == gjson.String; return ok })
	if !ok {
		return httputil.BadJSON("device_keys.keys values must be strings")
	}
	if !dk.Get("signatures").IsObject() {
		return httputil.BadJSON("device_keys.signatures must be an object")
	}
	return nil
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
		a.remote.DeviceListChanged(ctx, userID, deviceID, false)
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
			js = withSignatures(js, dev, sigs, user.Str, d.UserID)
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
	// Other servers' users: from our copies of their device lists or asked
	// of their servers; keys passed on as signed.
	for srv, users := range remote {
		if a.remote != nil {
			res, err := a.remote.QueryKeys(r.Context(), srv, users)
			mergeRemoteKeys(out, failures, srv, []byte(gjson.GetBytes(res, "device_keys").Raw), err, true)
			a.mergeRemoteCrossSigning(r.Context(), resp, srv, res, d.UserID)
		}
	}
	resp["device_keys"], resp["failures"] = out, failures
	return resp, nil
}

// mergeRemoteKeys adds another server's answer (user -> keys, raw, as
// signed) to a keys/query or keys/claim answer, and notes its failure. A
// user with nothing to report is left out unless keepEmpty (keys/query
// answers every user asked for; keys/claim only those with keys claimed).
func mergeRemoteKeys(out, failures map[string]any, srv string, res json.RawMessage, err error, keepEmpty bool) {
	if err != nil {
		failures[srv] = map[string]any{"status": 503, "message": err.Error()}
	}
	gjson.ParseBytes(res).ForEach(func(user, keys gjson.Result) bool {
		if roomserver.ServerOf(user.Str) == srv && keys.IsObject() {
			if !keepEmpty && len(keys.Map()) == 0 {
				return true
			}
			out[user.Str] = json.RawMessage(keys.Raw)
		}
		return true
	})
}

// mergeRemoteCrossSigning adds another server's users' master and
// self-signing keys to a keys/query answer, with the signatures the viewer
// made of them (their user-signing key's, which only they see).
func (a *API) mergeRemoteCrossSigning(ctx context.Context, resp map[string]any, srv string, res json.RawMessage, viewer string) {
	for _, field := range []string{"master_keys", "self_signing_keys"} {
		gjson.GetBytes(res, field).ForEach(func(user, key gjson.Result) bool {
			if roomserver.ServerOf(user.Str) != srv || !key.IsObject() {
				return true
			}
			js := []byte(key.Raw)
			if field == "master_keys" {
				if sigs, err := a.db.KeySignaturesOf(ctx, user.Str); err == nil && len(sigs) > 0 {
					js = storage.AddKeySignatures(js, storage.CrossSigningPublicKey(js), sigs, func(signer string) bool { return signer == viewer })
				}
			}
			m, _ := resp[field].(map[string]any)
			if m == nil {
				m = map[string]any{}
				resp[field] = m
			}
			m[user.Str] = json.RawMessage(js)
			return true
		})
	}
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
			mergeRemoteKeys(out, failures, srv, res, err, false)
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
	changed, err := a.db.DeviceListChangesFor(r.Context(), d.UserID, users, from, to)
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
	if err := a.policy.CheckToDevice(v["eventType"]); err != nil {
		return nil, err
	}
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
// upload does not. The self-signing and user-signing keys must be signed
// by the master key (the one uploaded with them, or the current one).
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
		if err := checkCrossSigningKey(k, d.UserID, typ); err != nil {
			return nil, err
		}
		keys[typ] = []byte(k.Raw)
	}
	if len(keys) == 0 {
		return struct{}{}, nil
	}
	master, ok := keys["master"]
	if !ok {
		master = have["master"]
	}
	for _, typ := range []string{"self_signing", "user_signing"} {
		js, ok := keys[typ]
		if !ok {
			continue
		}
		if master == nil {
			return nil, httputil.Err(400, "M_MISSING_PARAM", "A master key is needed to upload a "+typ+" key")
		}
		if !signedByKey(js, d.UserID, master) {
			return nil, httputil.Err(400, "M_INVALID_SIGNATURE", "The "+typ+" key is not signed by the master key")
		}
	}
	_, m := keys["master"]
	_, s := keys["self_signing"]
	public := m || s // the user-signing key is the user's own business
	a.notify.OnUserDataPending(d.UserID)
	pos, err := a.db.PutCrossSigningKeys(r.Context(), d.UserID, keys)
	a.notify.OnUserEvent(d.UserID, pos)
	if err != nil {
		return nil, err
	}
	if public {
		a.deviceListChanged(r.Context(), d.UserID, pos)
		if a.remote != nil {
			a.remote.SigningKeysChanged(r.Context(), d.UserID)
		}
	}
	return struct{}{}, nil
}

// checkCrossSigningKey checks an uploaded cross-signing key (spec:
// CrossSigningKey): this user's, for its usage, with one ed25519 key.
func checkCrossSigningKey(k gjson.Result, userID, typ string) error {
	bad := func(msg string) error { return httputil.Err(400, "M_INVALID_PARAM", typ+"_key "+msg) }
	if !k.IsObject() || k.Get("user_id").Str != userID {
		return bad("must be an object for this user")
	}
	usage := false
	for _, u := range k.Get("usage").Array() {
		usage = usage || u.Str == typ
	}
	if !usage {
		return bad("must have usage " + typ)
	}
	keys := k.Get("keys")
	if !keys.IsObject() || len(keys.Map()) != 1 {
		return bad("must have exactly one key")
	}
	ok := true
	keys.ForEach(func(id, pub gjson.Result) bool {
		ok = strings.HasPrefix(id.Str, "ed25519:") && pub.Type == gjson.String && id.Str == "ed25519:"+pub.Str
		return false
	})
	if !ok {
		return bad("must have an ed25519 key named by its public key")
	}
	return nil
}

// signedByKey reports whether a key's JSON carries a valid signature by
// the user with the cross-signing key in signer's JSON.
func signedByKey(js []byte, userID string, signer []byte) bool {
	pub := storage.CrossSigningPublicKey(signer)
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(pub, "="))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return false
	}
	return gomatrixserverlib.VerifyJSON(userID, gomatrixserverlib.KeyID("ed25519:"+pub), ed25519.PublicKey(b), js) == nil
}

// signaturesUpload handles POST /keys/signatures/upload: signatures the
// user made of keys (their devices, their master key, others' master keys).
// Signatures of the user's own keys are news for everyone sharing a room
// with them, here and on other servers.
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
	if len(sigs) == 0 {
		return map[string]any{"failures": map[string]any{}}, nil
	}
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
	if a.remote != nil {
		own, _ := a.db.CrossSigningKeys(r.Context(), d.UserID)
		masterPub := storage.CrossSigningPublicKey(own["master"])
		devices := map[string]bool{}
		masterSigned := false
		for _, s := range sigs {
			switch {
			case s.TargetUser != d.UserID:
			case masterPub != "" && s.TargetKey == masterPub:
				masterSigned = true
			case !devices[s.TargetKey]:
				devices[s.TargetKey] = true
				a.remote.DeviceListChanged(r.Context(), d.UserID, s.TargetKey, false)
			}
		}
		if masterSigned {
			a.remote.SigningKeysChanged(r.Context(), d.UserID)
		}
	}
	return map[string]any{"failures": map[string]any{}}, nil
}

// withSignatures adds to a key's JSON the stored signatures made of it
// that viewer may see: its owner's, and viewer's own.
func withSignatures(js []byte, keyID string, sigs []storage.KeySignature, owner, viewer string) []byte {
	return storage.AddKeySignatures(js, keyID, sigs, func(signer string) bool { return signer == owner || signer == viewer })
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
		js = withSignatures(js, storage.CrossSigningPublicKey(js), sigs, userID, viewer)
		m, _ := resp[field].(map[string]any)
		if m == nil {
			m = map[string]any{}
			resp[field] = m
		}
		m[userID] = json.RawMessage(js)
	}
}
