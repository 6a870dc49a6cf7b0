package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/roomserver"
	"repeater/storage"
)

// version handles GET /_matrix/federation/v1/version.
func (a *API) serverVersion(r *http.Request) (any, error) {
	return map[string]any{"server": map[string]any{"name": "Repeater", "version": a.version}}, nil
}

// queryProfile handles GET /query/profile?user_id=&field= (spec: "Querying
// profile information").
func (a *API) queryProfile(r *http.Request, _ spec.ServerName, _ []byte) (any, error) {
	userID := r.URL.Query().Get("user_id")
	field := r.URL.Query().Get("field")
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return nil, httputil.InvalidParam("Invalid user_id")
	}
	if uid.Domain() != a.serverName {
		return nil, httputil.InvalidParam("User is not on this server")
	}
	acct, err := a.db.GetAccount(r.Context(), uid.Local())
	if errors.Is(err, storage.ErrNotFound) || (err == nil && acct.Deactivated) {
		return nil, httputil.NotFound("Unknown user")
	}
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	if acct.DisplayName != "" && (field == "" || field == "displayname") {
		out["displayname"] = acct.DisplayName
	}
	if acct.AvatarURL != "" && (field == "" || field == "avatar_url") {
		out["avatar_url"] = acct.AvatarURL
	}
	return out, nil
}

// queryDirectory handles GET /query/directory?room_alias= (spec: "Querying
// directory information").
func (a *API) queryDirectory(r *http.Request, _ spec.ServerName, _ []byte) (any, error) {
	alias := r.URL.Query().Get("room_alias")
	if _, srv, ok := cutServer(alias); !ok || srv != string(a.serverName) {
		return nil, httputil.NotFound("Room alias not found")
	}
	roomID, _, err := a.db.ResolveAlias(r.Context(), alias)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.NotFound("Room alias not found")
	}
	if err != nil {
		return nil, err
	}
	servers, _ := a.rs.JoinedServers(r.Context(), roomID)
	if len(servers) == 0 {
		servers = []string{string(a.serverName)}
	}
	// Our own name first: we can certainly answer make_join.
	ordered := []string{string(a.serverName)}
	for _, s := range servers {
		if s != string(a.serverName) {
			ordered = append(ordered, s)
		}
	}
	return map[string]any{"room_id": roomID, "servers": ordered}, nil
}

// QueryProfile asks a user's server for their profile (spec: "Querying
// profile information"); field is "" for the whole profile.
func (a *API) QueryProfile(ctx context.Context, userID, field string) (map[string]any, error) {
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return nil, httputil.InvalidParam("Invalid user ID")
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	res, err := a.client.LookupProfile(ctx, a.serverName, uid.Domain(), userID, field)
	if err != nil {
		return nil, remoteErr("query/profile", err)
	}
	out := map[string]any{}
	if res.DisplayName != "" && (field == "" || field == "displayname") {
		out["displayname"] = res.DisplayName
	}
	if res.AvatarURL != "" && (field == "" || field == "avatar_url") {
		out["avatar_url"] = res.AvatarURL
	}
	return out, nil
}

// publicRooms handles GET and POST /publicRooms (spec: "Public Room
// Directory" over federation).
func (a *API) publicRooms(r *http.Request, _ spec.ServerName, body []byte) (any, error) {
	q := r.URL.Query()
	if r.Method == http.MethodPost {
		return a.rs.PublicRooms(r.Context(), gjson.GetBytes(body, "limit").Int(), gjson.GetBytes(body, "since").String(),
			gjson.GetBytes(body, "filter.generic_search_term").Str)
	}
	limit, _ := strconv.ParseInt(q.Get("limit"), 10, 64)
	return a.rs.PublicRooms(r.Context(), limit, q.Get("since"), "")
}

// PublicRooms asks another server for its public room directory.
func (a *API) PublicRooms(ctx context.Context, server string, limit int64, since, filter string) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var res fclient.RespPublicRooms
	var err error
	if filter != "" {
		res, err = a.client.GetPublicRoomsFiltered(ctx, a.serverName, spec.ServerName(server), int(limit), since, filter, false, "")
	} else {
		res, err = a.client.GetPublicRooms(ctx, a.serverName, spec.ServerName(server), int(limit), since, false, "")
	}
	if err != nil {
		return nil, remoteErr("publicRooms", err)
	}
	return res, nil
}

// openIDUserInfo handles GET /openid/userinfo?access_token= (spec:
// "OpenID"): not signed by a server; the token itself is the credential.
func (a *API) openIDUserInfo(r *http.Request) (any, error) {
	tok := r.URL.Query().Get("access_token")
	if tok == "" {
		return nil, httputil.Err(401, "M_UNKNOWN_TOKEN", "Missing access token")
	}
	user, err := a.db.OpenIDUser(r.Context(), auth.HashToken(tok))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.Err(401, "M_UNKNOWN_TOKEN", "Unknown or expired token")
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"sub": user}, nil
}

// hierarchy handles GET /hierarchy/{roomId} (spec: "Spaces" over
// federation): the room's summary and those of its children we hold.
func (a *API) hierarchy(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	roomID := httputil.Vars(r)["roomId"]
	if err := a.checkACL(r.Context(), roomID, origin); err != nil {
		return nil, err
	}
	suggestedOnly := r.URL.Query().Get("suggested_only") == "true"
	sum, children, err := a.rs.SpaceSummary(r.Context(), roomID, string(origin))
	if errors.Is(err, roomserver.ErrUnknownRoom) {
		return nil, httputil.NotFound("Unknown room")
	}
	if err != nil {
		return nil, err
	}
	out := []map[string]any{}
	inaccessible := []string{}
	for _, c := range children {
		if suggestedOnly && !c.Suggested {
			continue
		}
		cs, _, err := a.rs.SpaceSummary(r.Context(), c.RoomID, string(origin))
		if errors.Is(err, roomserver.ErrUnknownRoom) {
			continue
		}
		if err != nil {
			inaccessible = append(inaccessible, c.RoomID)
			continue
		}
		out = append(out, cs)
	}
	return map[string]any{"room": sum, "children": out, "inaccessible_children": inaccessible}, nil
}

// Hierarchy asks servers in a room we are not in for its space summary.
func (a *API) Hierarchy(ctx context.Context, roomID string, servers []string, suggestedOnly bool) (map[string]any, []roomserver.SpaceChild, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var lastErr error = httputil.NotFound("No server to ask")
	for _, srv := range servers {
		if srv == string(a.serverName) {
			continue
		}
		res, err := a.client.RoomHierarchy(ctx, a.serverName, spec.ServerName(srv), roomID, suggestedOnly)
		if err != nil {
			lastErr = remoteErr("hierarchy", err)
			continue
		}
		raw, err := json.Marshal(res.Room)
		if err != nil {
			return nil, nil, err
		}
		var sum map[string]any
		if err := json.Unmarshal(raw, &sum); err != nil {
			return nil, nil, err
		}
		var children []roomserver.SpaceChild
		for _, st := range gjson.GetBytes(raw, "children_state").Array() {
			var via []string
			for _, v := range st.Get("content.via").Array() {
				via = append(via, v.Str)
			}
			if len(via) > 0 {
				children = append(children, roomserver.SpaceChild{RoomID: st.Get("state_key").Str, Via: via, Suggested: st.Get("content.suggested").Bool()})
			}
		}
		return sum, children, nil
	}
	return nil, nil, lastErr
}
