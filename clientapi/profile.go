package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/roomserver"
	"repeater/storage"
)

func (a *API) localAccount(r *http.Request, userID string) (*storage.Account, error) {
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return nil, httputil.InvalidParam("Invalid user ID")
	}
	if string(uid.Domain()) != a.serverName {
		return nil, httputil.NotFound("Profile lookup over federation is not supported yet")
	}
	acct, err := a.db.GetAccount(r.Context(), uid.Local())
	if errors.Is(err, storage.ErrNotFound) || (err == nil && acct.Deactivated) {
		return nil, httputil.NotFound("User not found")
	}
	return acct, err
}

// getProfile handles GET /profile/{userId}[/{field}].
func (a *API) getProfile(r *http.Request) (any, error) {
	v := vars(r)
	if uid, err := spec.NewUserID(v["userId"], true); err == nil && string(uid.Domain()) != a.serverName && a.remote != nil {
		// Another server's user: ask it (spec: GET /query/profile).
		return a.remote.QueryProfile(r.Context(), v["userId"], v["field"])
	}
	acct, err := a.localAccount(r, v["userId"])
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	if acct.DisplayName != "" {
		out["displayname"] = acct.DisplayName
	}
	if acct.AvatarURL != "" {
		out["avatar_url"] = acct.AvatarURL
	}
	if f := v["field"]; f != "" {
		val, ok := out[f]
		if !ok {
			return map[string]any{}, nil
		}
		return map[string]any{f: val}, nil
	}
	return out, nil
}

// putProfile handles PUT /profile/{userId}/{displayname|avatar_url} and
// updates the user's member event in every joined room.
func (a *API) putProfile(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	v := vars(r)
	if v["userId"] != d.UserID {
		return nil, httputil.Forbidden("You may only change your own profile")
	}
	field := v["field"]
	body, err := httputil.ReadBody(r, httputil.MaxBody, false)
	if err != nil {
		return nil, err
	}
	val := gjson.GetBytes(body, field)
	if val.Exists() && val.Type != gjson.String && val.Type != gjson.Null {
		return nil, httputil.BadJSON(field + " must be a string")
	}
	if len(val.Str) > 1024 {
		return nil, httputil.BadJSON(field + " too long")
	}
	s := val.Str
	var dn, av *string
	if field == "displayname" {
		dn = &s
	} else {
		av = &s
	}
	if err := a.db.SetProfile(r.Context(), d.Localpart, dn, av); err != nil {
		return nil, err
	}
	rooms, err := a.db.RoomsByMembership(r.Context(), d.UserID, spec.Join)
	if err != nil {
		return nil, err
	}
	p := a.profileOf(r, d.Localpart)
	for _, room := range rooms {
		if _, err := a.rs.Join(r.Context(), room, d.UserID, p, nil); err != nil {
			a.log.Warn("profile: member event update failed", "room", room, "err", err)
		}
	}
	return struct{}{}, nil
}

// devices handles GET /devices.
func (a *API) devices(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	devs, err := a.db.Devices(r.Context(), d.Localpart)
	if err != nil {
		return nil, err
	}
	out := make([]map[string]any, 0, len(devs))
	for _, dv := range devs {
		out = append(out, deviceJSON(dv))
	}
	return map[string]any{"devices": out}, nil
}

func deviceJSON(dv storage.Device) map[string]any {
	m := map[string]any{"device_id": dv.DeviceID, "last_seen_ts": dv.LastSeenTS}
	if dv.DisplayName != "" {
		m["display_name"] = dv.DisplayName
	}
	if dv.LastSeenIP != "" {
		m["last_seen_ip"] = dv.LastSeenIP
	}
	return m
}

func (a *API) getDevice(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	dv, err := a.db.GetDevice(r.Context(), d.Localpart, vars(r)["deviceId"])
	if err != nil {
		return nil, err
	}
	return deviceJSON(*dv), nil
}

func (a *API) putDevice(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	body, err := httputil.ReadBody(r, httputil.MaxBody, true)
	if err != nil {
		return nil, err
	}
	name := gjson.GetBytes(body, "display_name")
	if name.Exists() && name.Type != gjson.String {
		return nil, httputil.BadJSON("display_name must be a string")
	}
	if err := a.db.SetDeviceName(r.Context(), d.Localpart, vars(r)["deviceId"], name.Str); err != nil {
		return nil, err
	}
	a.deviceAdded(r.Context(), d.UserID, vars(r)["deviceId"])
	return struct{}{}, nil
}

// deleteDevice handles DELETE /devices/{deviceId} (needs UIA).
func (a *API) deleteDevice(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	id := vars(r)["deviceId"]
	if _, err := a.db.GetDevice(r.Context(), d.Localpart, id); err != nil {
		return nil, err
	}
	body, err := httputil.ReadBody(r, httputil.MaxBody, true)
	if err != nil {
		return nil, err
	}
	if err := a.checkPasswordAuth(r, body, d); err != nil {
		return nil, err
	}
	return struct{}{}, a.removeDevices(r, d, []string{id}, "")
}

// deleteDevices handles POST /delete_devices (needs UIA).
func (a *API) deleteDevices(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	body, err := httputil.ReadBody(r, httputil.MaxBody, false)
	if err != nil {
		return nil, err
	}
	ids := gjson.GetBytes(body, "devices")
	if !ids.IsArray() {
		return nil, httputil.BadJSON("devices must be an array")
	}
	if err := a.checkPasswordAuth(r, body, d); err != nil {
		return nil, err
	}
	list := []string{}
	for _, x := range ids.Array() {
		list = append(list, x.Str)
	}
	return struct{}{}, a.removeDevices(r, d, list, "")
}

// Directory: aliases and the public room list.

func (a *API) getAlias(r *http.Request) (any, error) {
	alias := vars(r)["alias"]
	if a.remote != nil && strings.Contains(alias, ":") && !strings.HasSuffix(alias, ":"+a.serverName) {
		// Another server's alias: ask it (spec: GET /query/directory).
		roomID, servers, err := a.remote.ResolveAlias(r.Context(), alias)
		if err != nil {
			return nil, err
		}
		return map[string]any{"room_id": roomID, "servers": servers}, nil
	}
	roomID, err := a.localAlias(r.Context(), alias)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.NotFound("Room alias " + alias + " not found")
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"room_id": roomID, "servers": []string{a.serverName}}, nil
}

func (a *API) validAlias(alias string) error {
	if !strings.HasPrefix(alias, "#") || !strings.Contains(alias, ":") || strings.ContainsAny(alias, " \t") || len(alias) > 255 {
		return httputil.Err(400, "M_INVALID_PARAM", "Invalid alias")
	}
	if !strings.HasSuffix(alias, ":"+a.serverName) {
		return httputil.Err(400, "M_INVALID_PARAM", "Alias must be on this server")
	}
	return nil
}

func (a *API) putAlias(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	alias := vars(r)["alias"]
	if err := a.validAlias(alias); err != nil {
		return nil, err
	}
	body, err := httputil.ReadBody(r, httputil.MaxBody, false)
	if err != nil {
		return nil, err
	}
	roomID := gjson.GetBytes(body, "room_id")
	if roomID.Type != gjson.String {
		return nil, httputil.BadJSON("Missing room_id")
	}
	if _, err := a.rs.RoomVersion(r.Context(), roomID.Str); err != nil {
		return nil, err
	}
	if a.as != nil {
		if holder := a.as.AliasHolder(alias); holder != "" && holder != d.AppServiceID {
			return nil, httputil.Err(400, "M_EXCLUSIVE", "This alias is reserved by an application service")
		}
	}
	err = a.db.CreateAlias(r.Context(), alias, roomID.Str, d.UserID)
	if errors.Is(err, storage.ErrConflict) {
		return nil, httputil.Err(409, "M_UNKNOWN", "Room alias already exists")
	}
	return struct{}{}, err
}

func (a *API) deleteAlias(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	alias := vars(r)["alias"]
	roomID, creator, err := a.db.ResolveAlias(r.Context(), alias)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.NotFound("Room alias not found")
	}
	if err != nil {
		return nil, err
	}
	if creator != d.UserID {
		// Room moderators may remove aliases too (power to send canonical alias).
		ev, _ := a.rs.CurrentStateEvent(r.Context(), roomID, spec.MRoomPowerLevels, "")
		ok := false
		if ev != nil {
			lvl := gjson.GetBytes(ev.JSON, "content.users."+gjson.Escape(d.UserID)).Int()
			need := gjson.GetBytes(ev.JSON, "content.events.m\\.room\\.canonical_alias")
			stateDefault := gjson.GetBytes(ev.JSON, "content.state_default")
			n := int64(50)
			if need.Exists() {
				n = need.Int()
			} else if stateDefault.Exists() {
				n = stateDefault.Int()
			}
			ok = lvl >= n
		}
		if !ok {
			return nil, httputil.Forbidden("You may not delete this alias")
		}
	}
	if err := a.db.DeleteAlias(r.Context(), alias); err != nil {
		return nil, err
	}
	a.dropFromCanonicalAlias(r, roomID, alias, d.UserID)
	return struct{}{}, nil
}

// dropFromCanonicalAlias removes a deleted alias from the room's
// m.room.canonical_alias event, as the spec asks of servers.
func (a *API) dropFromCanonicalAlias(r *http.Request, roomID, alias, userID string) {
	ev, err := a.rs.CurrentStateEvent(r.Context(), roomID, spec.MRoomCanonicalAlias, "")
	if err != nil || ev == nil {
		return
	}
	var content map[string]any
	if json.Unmarshal([]byte(gjson.GetBytes(ev.JSON, "content").Raw), &content) != nil {
		return
	}
	changed := false
	if content["alias"] == alias {
		delete(content, "alias")
		changed = true
	}
	if alts, ok := content["alt_aliases"].([]any); ok {
		kept := []any{}
		for _, x := range alts {
			if x != alias {
				kept = append(kept, x)
			}
		}
		if len(kept) != len(alts) {
			content["alt_aliases"] = kept
			changed = true
		}
	}
	if !changed {
		return
	}
	empty := ""
	if _, err := a.rs.Send(r.Context(), roomID, userID, spec.MRoomCanonicalAlias, &empty, content, roomserver.SendOpts{}); err != nil {
		// The deleter may lack power; the alias is gone either way.
		a.log.Info("canonical alias not updated after alias deletion", "room", roomID, "err", err)
	}
}

func (a *API) roomAliases(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	roomID := vars(r)["roomId"]
	m, err := a.rs.Membership(r.Context(), roomID, d.UserID)
	if err != nil {
		return nil, err
	}
	if m != spec.Join {
		hv, _ := a.rs.CurrentStateEvent(r.Context(), roomID, spec.MRoomHistoryVisibility, "")
		if hv == nil || gjson.GetBytes(hv.JSON, "content.history_visibility").Str != "world_readable" {
			return nil, httputil.Forbidden("You are not in this room")
		}
	}
	aliases, err := a.db.RoomAliases(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	if aliases == nil {
		aliases = []string{}
	}
	return map[string]any{"aliases": aliases}, nil
}

func (a *API) getDirectoryVisibility(r *http.Request) (any, error) {
	room, err := a.db.GetRoom(r.Context(), vars(r)["roomId"])
	if err != nil {
		return nil, err
	}
	vis := "private"
	if room.Published {
		vis = "public"
	}
	return map[string]any{"visibility": vis}, nil
}

func (a *API) putDirectoryVisibility(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	roomID := vars(r)["roomId"]
	body, err := httputil.ReadBody(r, httputil.MaxBody, true)
	if err != nil {
		return nil, err
	}
	vis := gjson.GetBytes(body, "visibility").Str
	if vis != "public" && vis != "private" {
		return nil, httputil.BadJSON("visibility must be public or private")
	}
	if m, err := a.rs.Membership(r.Context(), roomID, d.UserID); err != nil {
		return nil, err
	} else if m != spec.Join {
		return nil, httputil.Forbidden("You are not in this room")
	}
	return struct{}{}, a.db.SetPublished(r.Context(), roomID, vis == "public")
}

// publicRooms handles GET and POST /publicRooms.
func (a *API) publicRooms(r *http.Request) (any, error) {
	limit, since, filter := int64(0), "", ""
	q := r.URL.Query()
	var body []byte
	if r.Method == http.MethodPost {
		var err error
		if body, err = httputil.ReadBody(r, httputil.MaxBody, true); err != nil {
			return nil, err
		}
		limit = gjson.GetBytes(body, "limit").Int()
		since = gjson.GetBytes(body, "since").String()
		filter = gjson.GetBytes(body, "filter.generic_search_term").Str
		// Application service networks' lists (their third-party
		// instance IDs are "<service id>|<network id>").
		if inst := gjson.GetBytes(body, "third_party_instance_id").Str; inst != "" {
			svc, network, _ := strings.Cut(inst, "|")
			return a.rs.PublicRoomList(r.Context(), storage.RoomList{ServiceID: svc, NetworkID: network}, limit, since, filter)
		}
		if gjson.GetBytes(body, "include_all_networks").Bool() {
			return a.rs.PublicRoomList(r.Context(), storage.RoomList{All: true}, limit, since, filter)
		}
	} else {
		limit = parseInt(q.Get("limit"))
		since = q.Get("since")
	}
	if srv := q.Get("server"); srv != "" && srv != a.serverName && a.remote != nil {
		// Another server's directory (spec: "GET /publicRooms", server).
		return a.remote.PublicRooms(r.Context(), srv, limit, since, filter)
	}
	return a.rs.PublicRooms(r.Context(), limit, since, filter)
}
