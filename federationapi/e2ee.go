package federationapi

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/httputil"
	"repeater/roomserver"
)

// End-to-end encryption over federation (spec: Server-Server API, "End-to-
// End Encryption", "Send-to-device messaging", "Device Management"). Keys
// are passed on as their owners signed them: raw JSON, never re-encoded.

// request makes a signed federation request and returns the raw answer.
func (a *API) request(ctx context.Context, dest, method, path string, content any) (json.RawMessage, error) {
	fr := fclient.NewFederationRequest(method, a.serverName, spec.ServerName(dest), path)
	if content != nil {
		if err := fr.SetContent(content); err != nil {
			return nil, err
		}
	}
	if err := fr.Sign(a.serverName, a.keyID, a.privateKey); err != nil {
		return nil, err
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var out json.RawMessage
	if err := a.client.DoRequestAndParseResponse(ctx, req, &out); err != nil {
		return nil, remoteErr(path, err)
	}
	return out, nil
}

// ClaimKeys claims one-time keys of another server's users' devices; the
// answer's one_time_keys object, as sent.
func (a *API) ClaimKeys(ctx context.Context, server string, want map[string]map[string]string) (json.RawMessage, error) {
	res, err := a.request(ctx, server, http.MethodPost, "/_matrix/federation/v1/user/keys/claim", map[string]any{"one_time_keys": want})
	if err != nil {
		return nil, err
	}
	return json.RawMessage(gjson.GetBytes(res, "one_time_keys").Raw), nil
}

// SendToDevice queues to-device messages for another server's devices
// (EDU m.direct_to_device): messages is user -> device ("*") -> content.
func (a *API) SendToDevice(ctx context.Context, server, sender, evType, messageID string, messages map[string]map[string]json.RawMessage) {
	a.queueEDU(ctx, "m.direct_to_device", map[string]any{"sender": sender, "type": evType, "message_id": messageID, "messages": messages}, []string{server})
}

// userKeysQuery handles POST /user/keys/query for our users: their device
// keys and master and self-signing keys, with the signatures they made of
// them.
func (a *API) userKeysQuery(r *http.Request, _ spec.ServerName, body []byte) (any, error) {
	want := gjson.GetBytes(body, "device_keys")
	if !want.IsObject() {
		return nil, httputil.BadJSON("device_keys must be an object")
	}
	out := map[string]any{}
	masters := map[string]json.RawMessage{}
	selfs := map[string]json.RawMessage{}
	var err error
	want.ForEach(func(user, devs gjson.Result) bool {
		if roomserver.ServerOf(user.Str) != string(a.serverName) {
			return true
		}
		var keys map[string][]byte
		if keys, err = a.signedDeviceKeys(r.Context(), user.Str); err != nil {
			return false
		}
		only := map[string]bool{}
		for _, d := range devs.Array() {
			only[d.Str] = true
		}
		m := map[string]json.RawMessage{}
		for dev, js := range keys {
			if len(only) == 0 || only[dev] {
				m[dev] = js
			}
		}
		out[user.Str] = m
		var master, self json.RawMessage
		if master, self, err = a.publicCrossSigningKeys(r.Context(), user.Str); err != nil {
			return false
		}
		if master != nil {
			masters[user.Str] = master
		}
		if self != nil {
			selfs[user.Str] = self
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"device_keys": out, "master_keys": masters, "self_signing_keys": selfs}, nil
}

// userKeysClaim handles POST /user/keys/claim for our users' devices.
func (a *API) userKeysClaim(r *http.Request, _ spec.ServerName, body []byte) (any, error) {
	want := gjson.GetBytes(body, "one_time_keys")
	if !want.IsObject() {
		return nil, httputil.BadJSON("one_time_keys must be an object")
	}
	out := map[string]any{}
	var err error
	want.ForEach(func(user, devs gjson.Result) bool {
		if roomserver.ServerOf(user.Str) != string(a.serverName) {
			return true
		}
		m := map[string]any{}
		devs.ForEach(func(dev, alg gjson.Result) bool {
			var id string
			var key []byte
			if id, key, err = a.db.ClaimKey(r.Context(), user.Str, dev.Str, alg.Str); err != nil {
				return false
			}
			if id != "" {
				m[dev.Str] = map[string]json.RawMessage{id: key}
			}
			return true
		})
		if len(m) > 0 {
			out[user.Str] = m
		}
		return err == nil
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"one_time_keys": out}, nil
}

// userDevices handles GET /user/devices/{userId}: the user's devices
// (with their keys, as the user signed them), master and self-signing
// keys, and the device-list stream ID they are current to (read first: an
// update taken after it is then one the asking server applies on top).
func (a *API) userDevices(r *http.Request, _ spec.ServerName, _ []byte) (any, error) {
	userID := httputil.Vars(r)["userId"]
	uid, err := spec.NewUserID(userID, true)
	if err != nil || uid.Domain() != a.serverName {
		return nil, httputil.NotFound("Unknown user")
	}
	streamID, err := a.db.DeviceListStreamID(r.Context(), userID)
	if err != nil {
		return nil, err
	}
	keys, err := a.signedDeviceKeys(r.Context(), userID)
	if err != nil {
		return nil, err
	}
	ds, err := a.db.Devices(r.Context(), uid.Local())
	if err != nil {
		return nil, err
	}
	devices := []map[string]any{}
	for _, dev := range ds {
		d := map[string]any{"device_id": dev.DeviceID}
		if js, ok := keys[dev.DeviceID]; ok {
			d["keys"] = json.RawMessage(js)
		}
		if dev.DisplayName != "" {
			d["device_display_name"] = dev.DisplayName
		}
		devices = append(devices, d)
	}
	resp := map[string]any{"user_id": userID, "stream_id": streamID, "devices": devices}
	master, self, err := a.publicCrossSigningKeys(r.Context(), userID)
	if err != nil {
		return nil, err
	}
	if master != nil {
		resp["master_key"] = master
	}
	if self != nil {
		resp["self_signing_key"] = self
	}
	return resp, nil
}
