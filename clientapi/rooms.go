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
	"repeater/internal/part97"
	"repeater/roomserver"
	"repeater/storage"
)

// vars returns the unescaped path variables.
func vars(r *http.Request) map[string]string { return httputil.Vars(r) }

func (a *API) profileOf(r *http.Request, localpart string) roomserver.CreatorProfile {
	acct, err := a.db.GetAccount(r.Context(), localpart)
	if err != nil {
		return roomserver.CreatorProfile{}
	}
	return roomserver.CreatorProfile{DisplayName: acct.DisplayName, AvatarURL: acct.AvatarURL}
}

// createRoom handles POST /createRoom.
func (a *API) createRoom(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	var req roomserver.CreateRoomRequest
	body, err := httputil.DecodeBody(r, &req)
	if err != nil {
		return nil, err
	}
	if err := checkTypes(body, map[string]gjson.Type{"name": gjson.String, "topic": gjson.String, "room_alias_name": gjson.String}); err != nil {
		return nil, err
	}
	if v := req.Visibility; v != "" && v != "public" && v != "private" {
		return nil, httputil.BadJSON("visibility must be public or private")
	}
	for _, u := range req.Invite {
		if _, err := spec.NewUserID(u, true); err != nil {
			return nil, httputil.InvalidParam("Invalid user ID in invite: " + u)
		}
	}
	if err := a.limiter.Allow(d.RateLimitKey("send:" + d.UserID)); err != nil {
		return nil, err
	}
	alias := ""
	if req.RoomAliasName != "" {
		if strings.ContainsAny(req.RoomAliasName, ":# ") {
			return nil, httputil.Err(400, "M_INVALID_PARAM", "Invalid room_alias_name")
		}
		alias = "#" + req.RoomAliasName + ":" + a.serverName
		if _, _, err := a.db.ResolveAlias(r.Context(), alias); err == nil {
			return nil, httputil.Err(400, "M_ROOM_IN_USE", "Room alias already taken")
		}
	}
	// Amateur-radio mode: Element and Cinny ask for encryption in every
	// private room by default. The room is made without it (FCC Part 97,
	// §97.113(a)(4)), and the answer says so.
	encryptionRemoved := false
	if a.policy.On() {
		kept := req.InitialState[:0]
		for _, ev := range req.InitialState {
			if a.policy.CheckEvent(ev.Type, ev.Content) != nil {
				encryptionRemoved = true
				continue
			}
			kept = append(kept, ev)
		}
		req.InitialState = kept
	}
	roomID, err := a.rs.CreateRoom(r.Context(), d.UserID, a.profileOf(r, d.Localpart), &req, alias)
	if err != nil {
		return nil, err
	}
	if alias != "" {
		if err := a.db.CreateAlias(r.Context(), alias, roomID, d.UserID); err != nil {
			return nil, err
		}
	}
	resp := map[string]any{"room_id": roomID}
	if alias != "" {
		resp["room_alias"] = alias
	}
	if encryptionRemoved {
		resp[part97.FeatureFlag] = map[string]any{"encryption_removed": true,
			"reason": "This amateur-radio node carries no encrypted messages (FCC Part 97, §97.113(a)(4)): the room was created without encryption."}
	}
	return resp, nil
}

// resolveRoom turns a room ID or alias into a room ID.
func (a *API) resolveRoom(r *http.Request, idOrAlias string) (string, error) {
	if strings.HasPrefix(idOrAlias, "#") {
		roomID, err := a.localAlias(r.Context(), idOrAlias)
		if errors.Is(err, storage.ErrNotFound) {
			return "", httputil.NotFound("Room alias not found")
		}
		return roomID, err
	}
	if !strings.HasPrefix(idOrAlias, "!") {
		return "", httputil.Err(400, "M_INVALID_PARAM", "Not a room ID or alias")
	}
	return idOrAlias, nil
}

// join handles POST /join/{roomIdOrAlias} and /rooms/{roomId}/join.
func (a *API) join(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	body, err := httputil.ReadBody(r, httputil.MaxBody, true)
	if err != nil {
		return nil, err
	}
	roomID, via, err := a.roomAndVia(r, d.UserID)
	if err != nil {
		return nil, err
	}
	// Extra keys of the body go into the member event's content (sytest's
	// "can join a room with custom content"); third_party_signed does not.
	var extra map[string]any
	if err := json.Unmarshal(body, &extra); err != nil {
		return nil, httputil.BadJSON("Body must be an object")
	}
	delete(extra, "third_party_signed")
	if d.IsGuest {
		// Guests may only join rooms that allow them.
		ga, _ := a.rs.CurrentStateEvent(r.Context(), roomID, "m.room.guest_access", "")
		if ga == nil || gjson.GetBytes(ga.JSON, "content.guest_access").Str != "can_join" {
			return nil, httputil.Err(403, "M_GUEST_ACCESS_FORBIDDEN", "Guests may not join this room")
		}
	}
	profile := a.profileOf(r, d.Localpart)
	if _, err := a.rs.Join(r.Context(), roomID, d.UserID, profile, extra); err != nil {
		if !errors.Is(err, roomserver.ErrUnknownRoom) {
			return nil, err
		}
		if a.remote == nil || len(via) == 0 {
			return nil, httputil.NotFound("Unknown room")
		}
		content := roomserver.MemberContent(spec.Join, profile)
		for k, v := range extra {
			if _, ok := content[k]; !ok {
				content[k] = v
			}
		}
		if _, err := a.remote.JoinRemote(r.Context(), roomID, d.UserID, via, content); err != nil {
			return nil, err
		}
	}
	a.carryFromPredecessor(r, d, roomID)
	a.rs.FollowUpgrade(r.Context(), roomID)
	return map[string]any{"room_id": roomID}, nil
}

// roomAndVia resolves the {room} of a join or knock request to a room ID
// and the servers to go through if the room is on another server: those a
// remote alias names, an invite's sender's, ?server_name= and ?via= (spec:
// "POST /join/{roomIdOrAlias}"), and the room ID's own (versions 1-11).
func (a *API) roomAndVia(r *http.Request, userID string) (string, []string, error) {
	idOrAlias := vars(r)["room"]
	var via []string
	if strings.HasPrefix(idOrAlias, "#") && a.remote != nil && !strings.HasSuffix(idOrAlias, ":"+a.serverName) {
		roomID, servers, err := a.remote.ResolveAlias(r.Context(), idOrAlias)
		if err != nil {
			return "", nil, err
		}
		idOrAlias, via = roomID, servers
	}
	roomID, err := a.resolveRoom(r, idOrAlias)
	if err != nil {
		return "", nil, err
	}
	if _, inv, err := a.rs.RemoteInvite(r.Context(), roomID, userID); err == nil {
		via = append(via, roomserver.ServerOf(inv.Sender)) // the inviter's server is in the room
	}
	via = append(via, r.URL.Query()["server_name"]...)
	via = append(via, r.URL.Query()["via"]...)
	if _, srv, ok := strings.Cut(roomID, ":"); ok {
		via = append(via, srv)
	}
	return roomID, via, nil
}

// knock handles POST /knock/{roomIdOrAlias} (spec: "Knocking on rooms").
func (a *API) knock(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	body, err := httputil.ReadBody(r, httputil.MaxBody, true)
	if err != nil {
		return nil, err
	}
	reason := gjson.GetBytes(body, "reason").Str
	roomID, via, err := a.roomAndVia(r, d.UserID)
	if err != nil {
		return nil, err
	}
	_, err = a.rs.ChangeMembership(r.Context(), roomID, d.UserID, d.UserID, spec.Knock, reason, nil)
	if errors.Is(err, roomserver.ErrUnknownRoom) {
		if a.remote == nil || len(via) == 0 {
			return nil, httputil.NotFound("Unknown room")
		}
		err = a.remote.KnockRemote(r.Context(), roomID, d.UserID, via, reason)
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"room_id": roomID}, nil
}

// membership handles invite/leave/kick/ban/unban.
func (a *API) membership(action string) httputil.Handler {
	return func(r *http.Request) (any, error) {
		d := auth.FromContext(r.Context())
		body, err := httputil.ReadBody(r, httputil.MaxBody, true)
		if err != nil {
			return nil, err
		}
		roomID := vars(r)["roomId"]
		target := gjson.GetBytes(body, "user_id")
		reason := gjson.GetBytes(body, "reason").Str
		if action == "leave" {
			if err := a.rs.CheckSelfLeave(r.Context(), roomID, d.UserID); err != nil { // server notices invite
				return nil, err
			}
			_, err := a.rs.ChangeMembership(r.Context(), roomID, d.UserID, d.UserID, spec.Leave, reason, nil)
			if errors.Is(err, roomserver.ErrUnknownRoom) {
				// Declining an invite to a room on another server.
				if a.remote != nil {
					if _, _, ierr := a.rs.RemoteInvite(r.Context(), roomID, d.UserID); ierr == nil {
						return struct{}{}, a.remote.RejectRemoteInvite(r.Context(), roomID, d.UserID)
					}
				}
				return nil, httputil.NotFound("Unknown room")
			}
			return struct{}{}, err
		}
		if target.Type != gjson.String || target.Str == "" {
			return nil, httputil.BadJSON("Missing user_id")
		}
		m := map[string]string{"invite": spec.Invite, "kick": spec.Leave, "ban": spec.Ban, "unban": "unban"}[action]
		if action == "kick" {
			if cur, err := a.rs.Membership(r.Context(), roomID, target.Str); err == nil && cur != spec.Join && cur != spec.Invite && cur != spec.Knock {
				return nil, httputil.Forbidden("The user is not in the room")
			}
		}
		if action == "invite" {
			if mem, err := a.rs.Membership(r.Context(), roomID, d.UserID); err == nil && mem != spec.Join {
				return nil, httputil.Forbidden("You are not in this room")
			}
			a.askAppServicesForUser(r.Context(), target.Str)
		}
		var extra map[string]any
		if action == "invite" && gjson.GetBytes(body, "is_direct").Bool() {
			extra = map[string]any{"is_direct": true}
		}
		_, err = a.rs.ChangeMembership(r.Context(), roomID, d.UserID, target.Str, m, reason, extra)
		return struct{}{}, err
	}
}

// forget handles POST /rooms/{roomId}/forget.
func (a *API) forget(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	roomID := vars(r)["roomId"]
	m, err := a.rs.Membership(r.Context(), roomID, d.UserID)
	if err != nil {
		return nil, err
	}
	if m == spec.Join || m == spec.Invite {
		return nil, httputil.Err(400, "M_UNKNOWN", "You must leave the room before forgetting it")
	}
	return struct{}{}, a.db.ForgetRoom(r.Context(), d.Localpart, roomID)
}

// send handles PUT /rooms/{roomId}/send/{eventType}/{txnId}.
func (a *API) send(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	v := vars(r)
	if d.IsGuest && v["eventType"] != "m.room.message" {
		return nil, httputil.Err(403, "M_GUEST_ACCESS_FORBIDDEN", "Guests may only send messages")
	}
	txnID := v["txnId"] // empty for the older POST form, which is not idempotent
	if txnID != "" {
		if id, err := a.db.TxnEventID(r.Context(), d.Localpart, d.DeviceID, txnID); err == nil {
			return map[string]any{"event_id": id}, nil
		}
	}
	body, err := httputil.ReadBody(r, 65536, false)
	if err != nil {
		return nil, err
	}
	if err := a.limiter.Allow(d.RateLimitKey("send:" + d.UserID)); err != nil {
		return nil, err
	}
	// Threads off relations, duplicate annotations (roomserver/relations.go).
	if err := a.rs.CheckRelation(r.Context(), v["roomId"], d.UserID, v["eventType"], body); err != nil {
		return nil, err
	}
	if err := checkTombstone(v["roomId"], v["eventType"], body); err != nil {
		return nil, err
	}
	e, err := a.rs.Send(r.Context(), v["roomId"], d.UserID, v["eventType"], nil, json.RawMessage(body),
		roomserver.SendOpts{TxnID: txnID, TxnDevice: d.DeviceID, Localpart: d.Localpart})
	if errors.Is(err, storage.ErrConflict) {
		// A concurrent request with the same transaction ID won.
		if id, err := a.db.TxnEventID(r.Context(), d.Localpart, d.DeviceID, txnID); err == nil {
			return map[string]any{"event_id": id}, nil
		}
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"event_id": e.EventID}, nil
}

// redact handles PUT /rooms/{roomId}/redact/{eventId}/{txnId}.
func (a *API) redact(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	v := vars(r)
	txnID := v["txnId"] // empty for the old POST form
	if txnID != "" {
		if id, err := a.db.TxnEventID(r.Context(), d.Localpart, d.DeviceID, txnID); err == nil {
			return map[string]any{"event_id": id}, nil
		}
	}
	body, err := httputil.ReadBody(r, 65536, true)
	if err != nil {
		return nil, err
	}
	content := map[string]any{}
	if reason := gjson.GetBytes(body, "reason"); reason.Type == gjson.String {
		content["reason"] = reason.Str
	}
	ver, err := a.rs.RoomVersion(r.Context(), v["roomId"])
	if err != nil {
		return nil, err
	}
	if ver == "11" || ver == "12" {
		// From room version 11, redacts lives in content.
		content["redacts"] = v["eventId"]
	}
	e, err := a.rs.Send(r.Context(), v["roomId"], d.UserID, spec.MRoomRedaction, nil, content,
		roomserver.SendOpts{Redacts: v["eventId"], TxnID: txnID, TxnDevice: d.DeviceID, Localpart: d.Localpart})
	if err != nil {
		return nil, err
	}
	return map[string]any{"event_id": e.EventID}, nil
}

// putState handles PUT /rooms/{roomId}/state/{eventType}[/{stateKey}].
func (a *API) putState(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	v := vars(r)
	body, err := httputil.ReadBody(r, 65536, false)
	if err != nil {
		return nil, err
	}
	sk := v["stateKey"]
	evType := v["eventType"]
	if err := checkTombstone(v["roomId"], evType, body); err != nil {
		return nil, err
	}
	if evType == spec.MRoomCanonicalAlias {
		if err := a.checkCanonicalAlias(r, v["roomId"], body); err != nil {
			return nil, err
		}
	}
	if evType == spec.MRoomMember {
		if _, err := spec.NewUserID(sk, true); err != nil {
			return nil, httputil.BadJSON("Membership state keys must be user IDs")
		}
	}
	e, err := a.rs.Send(r.Context(), v["roomId"], d.UserID, evType, &sk, json.RawMessage(body), roomserver.SendOpts{Localpart: d.Localpart})
	if err != nil {
		return nil, err
	}
	if evType == "m.room.guest_access" && sk == "" && gjson.GetBytes(body, "guest_access").Str != "can_join" {
		a.kickGuests(r, v["roomId"], d.UserID)
	}
	return map[string]any{"event_id": e.EventID}, nil
}

// checkCanonicalAlias checks that published aliases point at the room.
func (a *API) checkCanonicalAlias(r *http.Request, roomID string, body []byte) error {
	var aliases []string
	if v := gjson.GetBytes(body, "alias"); v.Exists() {
		if v.Type != gjson.String {
			return httputil.BadJSON("alias must be a string")
		}
		if v.Str != "" {
			aliases = append(aliases, v.Str)
		}
	}
	if v := gjson.GetBytes(body, "alt_aliases"); v.Exists() {
		if !v.IsArray() {
			return httputil.BadJSON("alt_aliases must be an array")
		}
		for _, x := range v.Array() {
			if x.Type != gjson.String {
				return httputil.BadJSON("alt_aliases must be strings")
			}
			aliases = append(aliases, x.Str)
		}
	}
	for _, al := range aliases {
		if !strings.HasPrefix(al, "#") || !strings.Contains(al, ":") {
			return httputil.Err(400, "M_INVALID_PARAM", "Invalid alias "+al)
		}
		if !strings.HasSuffix(al, ":"+a.serverName) {
			continue
		}
		got, _, err := a.db.ResolveAlias(r.Context(), al)
		if err != nil || got != roomID {
			return httputil.Err(400, "M_BAD_ALIAS", "Alias "+al+" does not point to this room")
		}
	}
	return nil
}

// stateView is the room state a user may read: the current state when
// joined or the room is world readable, the state at their leave if they
// left; a banned user may read none.
func (a *API) stateView(r *http.Request, roomID, userID string) ([]*storage.Event, error) {
	m, err := a.rs.Membership(r.Context(), roomID, userID)
	if err != nil {
		return nil, err
	}
	if m == spec.Join {
		return a.rs.CurrentState(r.Context(), roomID)
	}
	if hv, err := a.rs.CurrentStateEvent(r.Context(), roomID, spec.MRoomHistoryVisibility, ""); err == nil && hv != nil &&
		gjson.GetBytes(hv.JSON, "content.history_visibility").Str == "world_readable" {
		return a.rs.CurrentState(r.Context(), roomID)
	}
	if m == spec.Leave {
		// The state as it was when they left (a banned user sees nothing).
		me, err := a.rs.CurrentStateEvent(r.Context(), roomID, spec.MRoomMember, userID)
		if err != nil || me == nil {
			return nil, httputil.Forbidden("You are not in this room")
		}
		return a.rs.StateEventsAt(r.Context(), me.AfterSnapshot)
	}
	return nil, httputil.Forbidden("You are not in this room")
}

// getState handles GET /rooms/{roomId}/state.
func (a *API) getState(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	evs, err := a.stateView(r, vars(r)["roomId"], d.UserID)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(evs))
	for _, e := range evs {
		out = append(out, a.clientEvent(r, e, d))
	}
	return out, nil
}

// getStateEvent handles GET /rooms/{roomId}/state/{eventType}[/{stateKey}].
func (a *API) getStateEvent(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	v := vars(r)
	evs, err := a.stateView(r, v["roomId"], d.UserID)
	if err != nil {
		return nil, err
	}
	for _, e := range evs {
		if e.Type == v["eventType"] && e.StateKey != nil && *e.StateKey == v["stateKey"] {
			if r.URL.Query().Get("format") == "event" {
				return a.clientEvent(r, e, d), nil
			}
			return json.RawMessage(gjson.GetBytes(a.rs.ClientJSON(r.Context(), e), "content").Raw), nil
		}
	}
	return nil, httputil.NotFound("State event not found")
}

// getEvent handles GET /rooms/{roomId}/event/{eventId}.
func (a *API) getEvent(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	v := vars(r)
	e, err := a.db.EventByID(r.Context(), v["eventId"])
	if err != nil || e.RoomID != v["roomId"] || e.Rejected {
		return nil, httputil.NotFound("Event not found")
	}
	ok, err := a.rs.CanSeeEvent(r.Context(), d.UserID, e)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, httputil.NotFound("Event not found")
	}
	// With its bundled aggregations (spec: "Aggregations of child events").
	return a.rs.ClientEvents(r.Context(), []*storage.Event{e}, d.UserID, d.DeviceID)[0], nil
}

// members handles GET /rooms/{roomId}/members.
func (a *API) members(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	evs, err := a.stateView(r, vars(r)["roomId"], d.UserID)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	chunk := []json.RawMessage{}
	for _, e := range evs {
		if e.Type != spec.MRoomMember {
			continue
		}
		m := gjson.GetBytes(e.JSON, "content.membership").Str
		if want := q.Get("membership"); want != "" && m != want {
			continue
		}
		if not := q.Get("not_membership"); not != "" && m == not {
			continue
		}
		chunk = append(chunk, a.clientEvent(r, e, d))
	}
	return map[string]any{"chunk": chunk}, nil
}

// joinedMembers handles GET /rooms/{roomId}/joined_members.
func (a *API) joinedMembers(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	roomID := vars(r)["roomId"]
	if m, err := a.rs.Membership(r.Context(), roomID, d.UserID); err != nil {
		return nil, err
	} else if m != spec.Join {
		return nil, httputil.Forbidden("You are not in this room")
	}
	evs, err := a.rs.CurrentState(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	joined := map[string]any{}
	for _, e := range evs {
		if e.Type == spec.MRoomMember && gjson.GetBytes(e.JSON, "content.membership").Str == spec.Join {
			p := map[string]any{"display_name": nil, "avatar_url": nil}
			if dn := gjson.GetBytes(e.JSON, "content.displayname"); dn.Type == gjson.String {
				p["display_name"] = dn.Str
			}
			if av := gjson.GetBytes(e.JSON, "content.avatar_url"); av.Type == gjson.String {
				p["avatar_url"] = av.Str
			}
			joined[*e.StateKey] = p
		}
	}
	return map[string]any{"joined": joined}, nil
}

// joinedRooms handles GET /joined_rooms.
func (a *API) joinedRooms(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	rooms, err := a.db.RoomsByMembership(r.Context(), d.UserID, spec.Join)
	if err != nil {
		return nil, err
	}
	if rooms == nil {
		rooms = []string{}
	}
	return map[string]any{"joined_rooms": rooms}, nil
}

// clientEvent renders a stored event in the client format (spec: "Client
// event format"): the stored JSON with server-only keys removed and
// unsigned data added.
func (a *API) clientEvent(r *http.Request, e *storage.Event, d *auth.Device) json.RawMessage {
	return a.rs.ClientEvent(r.Context(), e, d.UserID, d.DeviceID)
}

// kickGuests removes guest accounts from a room whose guest access was
// revoked (spec: "Guest access": servers should kick guests then).
func (a *API) kickGuests(r *http.Request, roomID, by string) {
	members, err := a.rs.MembersWith(r.Context(), roomID, spec.Join)
	if err != nil {
		return
	}
	for _, m := range members {
		uid, err := spec.NewUserID(m, true)
		if err != nil || string(uid.Domain()) != a.serverName {
			continue
		}
		if acct, err := a.db.GetAccount(r.Context(), uid.Local()); err == nil && acct.IsGuest {
			if _, err := a.rs.ChangeMembership(r.Context(), roomID, by, m, spec.Leave, "Guest access revoked", nil); err != nil {
				a.log.Warn("could not remove guest", "room", roomID, "user", m, "err", err)
			}
		}
	}
}
