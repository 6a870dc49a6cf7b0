package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/roomserver"
	"repeater/storage"
)

func roomJSON(s *storage.RoomSummary) map[string]any {
	return map[string]any{
		"room_id": s.RoomID, "name": nullable(s.Name), "canonical_alias": nullable(s.CanonicalAlias),
		"joined_members": s.JoinedMembers, "joined_local_members": s.JoinedLocalMembers, "version": s.Version,
		"creator": s.Creator, "encryption": nullable(s.Encryption), "federatable": s.Federatable, "public": s.Published,
		"join_rules": nullable(s.JoinRules), "guest_access": nullable(s.GuestAccess),
		"history_visibility": nullable(s.HistoryVisibility), "state_events": s.StateEvents, "room_type": nullable(s.RoomType),
	}
}

// roomOrder compares two rooms for an order_by value; ok is false for an
// unknown one. The sizes sort largest first (as Synapse's do) unless
// dir=b.
func roomOrder(by string) (less func(x, y *storage.RoomSummary) bool, ok bool) {
	str := func(f func(*storage.RoomSummary) string) func(x, y *storage.RoomSummary) bool {
		return func(x, y *storage.RoomSummary) bool { return f(x) < f(y) }
	}
	num := func(f func(*storage.RoomSummary) int) func(x, y *storage.RoomSummary) bool {
		return func(x, y *storage.RoomSummary) bool { return f(x) > f(y) }
	}
	flag := func(f func(*storage.RoomSummary) bool) func(x, y *storage.RoomSummary) bool {
		return func(x, y *storage.RoomSummary) bool { return !f(x) && f(y) }
	}
	switch by {
	case "", "name", "alphabetical":
		return str(func(s *storage.RoomSummary) string { return strings.ToLower(s.Name) }), true
	case "canonical_alias":
		return str(func(s *storage.RoomSummary) string { return s.CanonicalAlias }), true
	case "size", "joined_members":
		return num(func(s *storage.RoomSummary) int { return s.JoinedMembers }), true
	case "joined_local_members":
		return num(func(s *storage.RoomSummary) int { return s.JoinedLocalMembers }), true
	case "state_events":
		return num(func(s *storage.RoomSummary) int { return s.StateEvents }), true
	case "version":
		return str(func(s *storage.RoomSummary) string { return s.Version }), true
	case "creator":
		return str(func(s *storage.RoomSummary) string { return s.Creator }), true
	case "encryption":
		return str(func(s *storage.RoomSummary) string { return s.Encryption }), true
	case "join_rules":
		return str(func(s *storage.RoomSummary) string { return s.JoinRules }), true
	case "guest_access":
		return str(func(s *storage.RoomSummary) string { return s.GuestAccess }), true
	case "history_visibility":
		return str(func(s *storage.RoomSummary) string { return s.HistoryVisibility }), true
	case "federatable":
		return flag(func(s *storage.RoomSummary) bool { return s.Federatable }), true
	case "public":
		return flag(func(s *storage.RoomSummary) bool { return s.Published }), true
	}
	return nil, false
}

// Rooms returns the rooms this server holds matching search (a substring
// of the name, canonical alias or room ID), sorted.
func (a *API) Rooms(ctx context.Context, orderBy string, backwards bool, search string) ([]*storage.RoomSummary, error) {
	less, ok := roomOrder(orderBy)
	if !ok {
		return nil, httputil.InvalidParam("Unknown order_by")
	}
	all, err := a.db.RoomSummaries(ctx, a.serverName, "")
	if err != nil {
		return nil, err
	}
	out := all[:0]
	search = strings.ToLower(search)
	for _, s := range all {
		if search == "" || strings.Contains(strings.ToLower(s.Name), search) || strings.Contains(strings.ToLower(s.CanonicalAlias), search) ||
			strings.Contains(strings.ToLower(s.RoomID), search) {
			out = append(out, s)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		x, y := out[i], out[j]
		if backwards {
			x, y = y, x
		}
		if less(x, y) {
			return true
		}
		if less(y, x) {
			return false
		}
		return x.RoomID < y.RoomID
	})
	return out, nil
}

// listRooms handles GET /v1/rooms (from, limit, order_by, dir,
// search_term).
func (a *API) listRooms(r *http.Request) (any, error) {
	offset, limit, err := page(r, 100)
	if err != nil {
		return nil, err
	}
	backwards, err := dirParam(r)
	if err != nil {
		return nil, err
	}
	rooms, err := a.Rooms(r.Context(), r.URL.Query().Get("order_by"), backwards, r.URL.Query().Get("search_term"))
	if err != nil {
		return nil, err
	}
	total := len(rooms)
	pageRooms := rooms[min(offset, total):min(offset+limit, total)]
	out := make([]any, 0, len(pageRooms))
	for _, s := range pageRooms {
		out = append(out, roomJSON(s))
	}
	resp := map[string]any{"rooms": out, "offset": offset, "total_rooms": total}
	if offset+len(pageRooms) < total {
		resp["next_batch"] = offset + len(pageRooms)
	}
	if offset > 0 {
		resp["prev_batch"] = max(0, offset-limit)
	}
	return resp, nil
}

// room returns one room's summary; 404 if unknown.
func (a *API) room(ctx context.Context, roomID string) (*storage.RoomSummary, error) {
	rooms, err := a.db.RoomSummaries(ctx, a.serverName, roomID)
	if err != nil {
		return nil, err
	}
	if len(rooms) == 0 {
		return nil, httputil.NotFound("Room not found")
	}
	return rooms[0], nil
}

// getRoom handles GET /v1/rooms/{roomId}.
func (a *API) getRoom(r *http.Request) (any, error) {
	s, err := a.room(r.Context(), httputil.Vars(r)["roomId"])
	if err != nil {
		return nil, err
	}
	out := roomJSON(s)
	out["avatar"], out["topic"] = nullable(s.Avatar), nullable(s.Topic)
	out["forgotten"] = false
	// Devices of the local joined members (end-to-end encryption reach).
	members, err := a.db.RoomMembers(r.Context(), s.RoomID, spec.Join)
	if err != nil {
		return nil, err
	}
	devices := 0
	for _, m := range members {
		if roomserver.ServerOf(m) == a.serverName {
			devs, err := a.db.Devices(r.Context(), strings.TrimPrefix(strings.TrimSuffix(m, ":"+a.serverName), "@"))
			if err != nil {
				return nil, err
			}
			devices += len(devs)
		}
	}
	out["joined_local_devices"] = devices
	return out, nil
}

// roomMembers handles GET /v1/rooms/{roomId}/members: the joined members.
func (a *API) roomMembers(r *http.Request) (any, error) {
	roomID := httputil.Vars(r)["roomId"]
	if _, err := a.room(r.Context(), roomID); err != nil {
		return nil, err
	}
	members, err := a.db.RoomMembers(r.Context(), roomID, spec.Join)
	if err != nil {
		return nil, err
	}
	if members == nil {
		members = []string{}
	}
	return map[string]any{"members": members, "total": len(members)}, nil
}

// roomState handles GET /v1/rooms/{roomId}/state.
func (a *API) roomState(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	evs, err := a.rs.CurrentState(r.Context(), httputil.Vars(r)["roomId"])
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(evs))
	for _, e := range evs {
		out = append(out, a.rs.ClientEvent(r.Context(), e, d.UserID, d.DeviceID))
	}
	return map[string]any{"state": out}, nil
}

// DeleteRoomRequest is the body of DELETE /v1/rooms/{roomId}.
type DeleteRoomRequest struct {
	// NewRoomUserID, if set, is a local user who makes a new room, which
	// the removed users join and where Message is posted.
	NewRoomUserID string `json:"new_room_user_id"`
	RoomName      string `json:"room_name"`
	Message       string `json:"message"`
	// Block keeps local users from joining the room again.
	Block bool `json:"block"`
	// Purge (default true) deletes the room from the database.
	Purge      *bool `json:"purge"`
	ForcePurge bool  `json:"force_purge"`
}

// DeleteRoomResult is what a room deletion did.
type DeleteRoomResult struct {
	KickedUsers       []string `json:"kicked_users"`
	FailedToKickUsers []string `json:"failed_to_kick_users"`
	LocalAliases      []string `json:"local_aliases"`
	NewRoomID         *string  `json:"new_room_id"`
}

const (
	defaultNewRoomName = "Content Violation Notification"
	defaultNewRoomText = "A room you were in was shut down by the administrators of this server."
)

// DeleteRoom shuts a room down: every local user leaves it (and, with a
// new room user, joins a new room with a message), its local aliases are
// removed (or moved to the new room), it leaves the room directory; with
// Block local users may not join it again, and with Purge (the default)
// this server forgets it entirely. by is the administrator.
func (a *API) DeleteRoom(ctx context.Context, roomID string, req DeleteRoomRequest, by string) (*DeleteRoomResult, error) {
	if !strings.HasPrefix(roomID, "!") {
		return nil, httputil.InvalidParam("Invalid room ID")
	}
	res := &DeleteRoomResult{KickedUsers: []string{}, FailedToKickUsers: []string{}, LocalAliases: []string{}}
	purge := req.Purge == nil || *req.Purge
	_, err := a.rs.RoomVersion(ctx, roomID)
	known := err == nil
	if err != nil && !errors.Is(err, roomserver.ErrUnknownRoom) {
		return nil, err
	}
	if !known && !req.Block {
		return nil, httputil.NotFound("Unknown room")
	}
	if req.Block {
		if err := a.db.SetRoomBlocked(ctx, roomID, by, true); err != nil {
			return nil, err
		}
	}
	if !known {
		if purge {
			return res, a.rs.PurgeRoom(ctx, roomID) // whatever is left of it (invites, aliases)
		}
		return res, nil
	}
	var newRoom, creator string
	if req.NewRoomUserID != "" {
		acct, err := a.account(ctx, req.NewRoomUserID)
		if err != nil {
			return nil, err
		}
		creator = req.NewRoomUserID
		name := req.RoomName
		if name == "" {
			name = defaultNewRoomName
		}
		newRoom, err = a.rs.CreateRoom(ctx, creator, roomserver.CreatorProfile{DisplayName: acct.DisplayName, AvatarURL: acct.AvatarURL},
			&roomserver.CreateRoomRequest{Preset: "private_chat", Name: &name, PowerLevelContentOverride: json.RawMessage(`{"events_default":100,"invite":100}`)}, "")
		if err != nil {
			return nil, err
		}
		res.NewRoomID = &newRoom
	}
	servers, err := a.rs.JoinedServers(ctx, roomID)
	if err != nil {
		return nil, err
	}
	remote := len(servers) > 1 || (len(servers) == 1 && servers[0] != a.serverName)
	var leaves []int64
	for _, m := range []string{spec.Join, spec.Invite, spec.Knock} {
		members, err := a.db.RoomMembers(ctx, roomID, m)
		if err != nil {
			return nil, err
		}
		for _, u := range members {
			if roomserver.ServerOf(u) != a.serverName {
				continue
			}
			ev, err := a.rs.ChangeMembership(ctx, roomID, u, u, spec.Leave, "", nil)
			if err != nil {
				a.log.Warn("delete room: leave failed", "room", roomID, "user", u, "err", err)
				res.FailedToKickUsers = append(res.FailedToKickUsers, u)
				continue
			}
			leaves = append(leaves, ev.NID)
			res.KickedUsers = append(res.KickedUsers, u)
			lp := strings.TrimPrefix(strings.TrimSuffix(u, ":"+a.serverName), "@")
			if err := a.db.ForgetRoom(ctx, lp, roomID); err != nil {
				return nil, err
			}
			if newRoom != "" && m == spec.Join && u != creator {
				if err := a.joinNewRoom(ctx, newRoom, creator, u, lp); err != nil {
					a.log.Warn("delete room: joining the new room failed", "room", newRoom, "user", u, "err", err)
				}
			}
		}
	}
	if newRoom != "" {
		text := req.Message
		if text == "" {
			text = defaultNewRoomText
		}
		if _, err := a.rs.Send(ctx, newRoom, creator, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": text},
			roomserver.SendOpts{Localpart: strings.TrimPrefix(strings.TrimSuffix(creator, ":"+a.serverName), "@")}); err != nil {
			return nil, err
		}
	}
	aliases, err := a.db.RoomAliases(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if newRoom != "" && len(aliases) > 0 {
		if _, err := a.db.MoveAliases(ctx, roomID, newRoom); err != nil {
			return nil, err
		}
	} else {
		for _, al := range aliases {
			if err := a.db.DeleteAlias(ctx, al); err != nil && !errors.Is(err, storage.ErrNotFound) {
				return nil, err
			}
		}
	}
	res.LocalAliases = append(res.LocalAliases, aliases...)
	if err := a.db.SetPublished(ctx, roomID, false); err != nil {
		return nil, err
	}
	if purge {
		if len(res.FailedToKickUsers) > 0 && !req.ForcePurge {
			return res, httputil.Err(400, "M_UNKNOWN", "Not every local user could be removed from the room; not purged (force_purge purges anyway)")
		}
		if remote {
			a.awaitDelivery(ctx, roomID, leaves)
		}
		if err := a.rs.PurgeRoom(ctx, roomID); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// awaitDelivery gives the federation sender up to ten seconds to deliver
// the local users' leaves before their room is purged (a purge drops what
// is still queued). Without a sender (the console) they are lost.
func (a *API) awaitDelivery(ctx context.Context, roomID string, nids []int64) {
	if !a.federation {
		a.log.Warn("delete room: other servers are not told that local users left", "room", roomID)
		return
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if n, err := a.db.OutboxPending(ctx, nids); err != nil || n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	a.log.Warn("delete room: leaves not yet delivered to every server; purging anyway", "room", roomID)
}

// joinNewRoom has the new room's creator invite u, and u join.
func (a *API) joinNewRoom(ctx context.Context, roomID, creator, u, lp string) error {
	if _, err := a.rs.ChangeMembership(ctx, roomID, creator, u, spec.Invite, "", nil); err != nil {
		return err
	}
	var p roomserver.CreatorProfile
	if acct, err := a.db.GetAccount(ctx, lp); err == nil {
		p = roomserver.CreatorProfile{DisplayName: acct.DisplayName, AvatarURL: acct.AvatarURL}
	}
	_, err := a.rs.Join(ctx, roomID, u, p, nil)
	return err
}

func readDeleteRequest(r *http.Request) (DeleteRoomRequest, error) {
	var req DeleteRoomRequest
	_, err := httputil.DecodeBody(r, &req)
	return req, err
}

// deleteRoom handles DELETE /v1/rooms/{roomId}.
func (a *API) deleteRoom(r *http.Request) (any, error) {
	req, err := readDeleteRequest(r)
	if err != nil {
		return nil, err
	}
	return a.DeleteRoom(r.Context(), httputil.Vars(r)["roomId"], req, auth.FromContext(r.Context()).UserID)
}

// deleteRoomAsync handles DELETE /v2/rooms/{roomId}: the deletion runs in
// the background; its status is at /v2/rooms/delete_status/{deleteId}.
func (a *API) deleteRoomAsync(r *http.Request) (any, error) {
	req, err := readDeleteRequest(r)
	if err != nil {
		return nil, err
	}
	roomID := httputil.Vars(r)["roomId"]
	if !strings.HasPrefix(roomID, "!") {
		return nil, httputil.InvalidParam("Invalid room ID")
	}
	if _, err := a.rs.RoomVersion(r.Context(), roomID); err != nil && !req.Block {
		return nil, err
	}
	by := auth.FromContext(r.Context()).UserID
	id := a.jobs.start("delete", roomID, func(ctx context.Context, j *job) error {
		res, err := a.DeleteRoom(ctx, roomID, req, by)
		a.jobs.mu.Lock()
		j.result = res
		a.jobs.mu.Unlock()
		return err
	})
	return map[string]any{"delete_id": id}, nil
}

func (a *API) deleteStatusJSON(id string, j *job) map[string]any {
	status := map[string]string{"active": "shutting_down"}[j.status]
	if status == "" {
		status = j.status
	}
	out := map[string]any{"delete_id": id, "status": status}
	if j.err != "" {
		out["error"] = j.err
	}
	res := j.result
	if res == nil {
		res = &DeleteRoomResult{KickedUsers: []string{}, FailedToKickUsers: []string{}, LocalAliases: []string{}}
	}
	out["shutdown_room"] = res
	return out
}

// roomDeleteStatus handles GET /v2/rooms/{roomId}/delete_status.
func (a *API) roomDeleteStatus(r *http.Request) (any, error) {
	roomID := httputil.Vars(r)["roomId"]
	a.jobs.mu.Lock()
	defer a.jobs.mu.Unlock()
	var results []any
	for _, id := range a.jobs.order {
		if j := a.jobs.m[id]; j != nil && j.kind == "delete" && j.roomID == roomID {
			results = append(results, a.deleteStatusJSON(id, j))
		}
	}
	if len(results) == 0 {
		return nil, httputil.NotFound("No delete task for room")
	}
	return map[string]any{"results": results}, nil
}

// deleteStatus handles GET /v2/rooms/delete_status/{deleteId}.
func (a *API) deleteStatus(r *http.Request) (any, error) {
	id := httputil.Vars(r)["deleteId"]
	a.jobs.mu.Lock()
	defer a.jobs.mu.Unlock()
	j := a.jobs.m[id]
	if j == nil || j.kind != "delete" {
		return nil, httputil.NotFound("Delete ID not found")
	}
	out := a.deleteStatusJSON(id, j)
	delete(out, "delete_id")
	return out, nil
}

// getBlock handles GET /v1/rooms/{roomId}/block.
func (a *API) getBlock(r *http.Request) (any, error) {
	by, blocked, err := a.db.RoomBlocked(r.Context(), httputil.Vars(r)["roomId"])
	if err != nil {
		return nil, err
	}
	out := map[string]any{"block": blocked}
	if blocked {
		out["user_id"] = by
	}
	return out, nil
}

// putBlock handles PUT /v1/rooms/{roomId}/block {block}.
func (a *API) putBlock(r *http.Request) (any, error) {
	var body struct {
		Block *bool `json:"block"`
	}
	if _, err := httputil.DecodeBody(r, &body); err != nil {
		return nil, err
	}
	if body.Block == nil {
		return nil, httputil.MissingParam("Missing block (a boolean)")
	}
	roomID := httputil.Vars(r)["roomId"]
	if !strings.HasPrefix(roomID, "!") {
		return nil, httputil.InvalidParam("Invalid room ID")
	}
	if err := a.db.SetRoomBlocked(r.Context(), roomID, auth.FromContext(r.Context()).UserID, *body.Block); err != nil {
		return nil, err
	}
	return map[string]any{"block": *body.Block}, nil
}
