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

// QueryKeys asks another server for its users' device keys; the answer's
// device_keys object, as sent.
func (a *API) QueryKeys(ctx context.Context, server string, users map[string][]string) (json.RawMessage, error) {
	res, err := a.request(ctx, server, http.MethodPost, "/_matrix/federation/v1/user/keys/query", map[string]any{"device_keys": users})
	if err != nil {
		return nil, err
	}
	return json.RawMessage(gjson.GetBytes(res, "device_keys").Raw), nil
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

// DeviceListChanged tells the servers sharing a room with a local user that
// their devices changed (EDU m.device_list_update); deleted names a
// removed device.
func (a *API) DeviceListChanged(ctx context.Context, userID, deviceID string, streamID int64, deleted bool, keys json.RawMessage) {
	servers := a.serversSharing(ctx, userID)
	c := map[string]any{"user_id": userID, "device_id": deviceID, "stream_id": streamID, "prev_id": []int64{}, "deleted": deleted}
	if len(keys) > 0 {
		c["keys"] = keys
	}
	a.queueEDU(ctx, "m.device_list_update", c, servers)
}

// userKeysQuery handles POST /user/keys/query for our users.
func (a *API) userKeysQuery(r *http.Request, _ spec.ServerName, body []byte) (any, error) {
	want := gjson.GetBytes(body, "device_keys")
	if !want.IsObject() {
		return nil, httputil.BadJSON("device_keys must be an object")
	}
	out := map[string]any{}
	var err error
	want.ForEach(func(user, devs gjson.Result) bool {
		if roomserver.ServerOf(user.Str) != string(a.serverName) {
			return true
		}
		var keys map[string]map[string][]byte
		if keys, err = a.db.DeviceKeysOf(r.Context(), []string{user.Str}); err != nil {
			return false
		}
		only := map[string]bool{}
		for _, d := range devs.Array() {
			only[d.Str] = true
		}
		m := map[string]json.RawMessage{}
		for dev, js := range keys[user.Str] {
			if len(only) == 0 || only[dev] {
				m[dev] = js
			}
		}
		out[user.Str] = m
		return true
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"device_keys": out}, nil
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
		out[user.Str] = m
		return err == nil
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"one_time_keys": out}, nil
}

// userDevices handles GET /user/devices/{userId}.
func (a *API) userDevices(r *http.Request, _ spec.ServerName, _ []byte) (any, error) {
	userID := httputil.Vars(r)["userId"]
	uid, err := spec.NewUserID(userID, true)
	if err != nil || uid.Domain() != a.serverName {
		return nil, httputil.NotFound("Unknown user")
	}
	keys, err := a.db.DeviceKeysOf(r.Context(), []string{userID})
	if err != nil {
		return nil, err
	}
	names := map[string]string{}
	if ds, err := a.db.Devices(r.Context(), uid.Local()); err == nil {
		for _, d := range ds {
			names[d.DeviceID] = d.DisplayName
		}
	}
	devices := []map[string]any{}
	for dev, js := range keys[userID] {
		d := map[string]any{"device_id": dev, "keys": json.RawMessage(js)}
		if n := names[dev]; n != "" {
			d["device_display_name"] = n
		}
		devices = append(devices, d)
	}
	pos, _ := a.db.StreamPos(r.Context())
	return map[string]any{"user_id": userID, "stream_id": pos, "devices": devices}, nil
}
