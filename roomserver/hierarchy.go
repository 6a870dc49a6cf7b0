package roomserver

import (
	"context"
	"encoding/json"
	"sort"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/httputil"
	"repeater/storage"
)

// SpaceChild is an m.space.child of a space: the child room and the
// servers to reach it through.
type SpaceChild struct {
	RoomID    string
	Via       []string
	Suggested bool
}

// SpaceSummary describes a room for the space hierarchy (spec: "Spaces",
// GET /hierarchy) to a viewer: a user ID, or a server name for a
// federation request (then any of its users counts). It fails with
// M_FORBIDDEN if the viewer may not see the room: they must be in it or
// invited, or the room must be public, knockable or world-readable.
func (s *Server) SpaceSummary(ctx context.Context, roomID, viewer string) (map[string]any, []SpaceChild, error) {
	r, err := s.lockRoom(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	defer r.mu.Unlock()
	content := func(typ string) gjson.Result {
		if nid, ok := r.state[storage.StateKey{Type: typ}]; ok {
			return gjson.ParseBytes(r.pdus[nid].Content())
		}
		return gjson.Result{}
	}
	joinRule := content(spec.MRoomJoinRules).Get("join_rule").Str
	if joinRule == "" {
		joinRule = "invite"
	}
	worldReadable := content(spec.MRoomHistoryVisibility).Get("history_visibility").Str == "world_readable"
	allowed := worldReadable || joinRule == "public" || joinRule == "knock" || joinRule == "knock_restricted"
	joined := 0
	for u, m := range r.members {
		if m == spec.Join {
			joined++
		}
		if !allowed && (u == viewer || ServerOf(u) == viewer) && (m == spec.Join || m == spec.Invite) {
			allowed = true
		}
	}
	if !allowed {
		return nil, nil, httputil.Forbidden("You may not see this room")
	}
	sum := map[string]any{"room_id": r.id, "num_joined_members": joined, "world_readable": worldReadable,
		"guest_can_join": content("m.room.guest_access").Get("guest_access").Str == "can_join", "join_rule": joinRule}
	if v := content(spec.MRoomName).Get("name"); v.Type == gjson.String {
		sum["name"] = v.Str
	}
	if v := content(spec.MRoomTopic).Get("topic"); v.Type == gjson.String {
		sum["topic"] = v.Str
	}
	if v := content(spec.MRoomCanonicalAlias).Get("alias"); v.Type == gjson.String {
		sum["canonical_alias"] = v.Str
	}
	if v := content(spec.MRoomAvatar).Get("url"); v.Type == gjson.String {
		sum["avatar_url"] = v.Str
	}
	if v := content(spec.MRoomCreate).Get("type"); v.Type == gjson.String {
		sum["room_type"] = v.Str
	}
	childState := []json.RawMessage{}
	var children []SpaceChild
	for k, nid := range r.state {
		if k.Type != "m.space.child" {
			continue
		}
		p := r.pdus[nid]
		c := gjson.ParseBytes(p.Content())
		var via []string
		for _, v := range c.Get("via").Array() {
			if v.Type == gjson.String {
				via = append(via, v.Str)
			}
		}
		if len(via) == 0 {
			continue // a removed child
		}
		children = append(children, SpaceChild{RoomID: k.StateKey, Via: via, Suggested: c.Get("suggested").Bool()})
		st, _ := json.Marshal(map[string]any{"type": p.Type(), "state_key": k.StateKey, "sender": string(p.SenderID()),
			"content": json.RawMessage(p.Content()), "origin_server_ts": int64(p.OriginServerTS())})
		childState = append(childState, st)
	}
	// Ordered by the child's "order", then room ID (spec: "Ordering of
	// children within a space", simplified: no timestamp tie-break).
	order := map[string]string{}
	for _, c := range children {
		if nid, ok := r.state[storage.StateKey{Type: "m.space.child", StateKey: c.RoomID}]; ok {
			order[c.RoomID] = gjson.GetBytes(r.pdus[nid].Content(), "order").Str
		}
	}
	sort.Slice(children, func(i, j int) bool {
		oi, oj := order[children[i].RoomID], order[children[j].RoomID]
		if (oi == "") != (oj == "") {
			return oi != ""
		}
		if oi != oj {
			return oi < oj
		}
		return children[i].RoomID < children[j].RoomID
	})
	sum["children_state"] = childState
	return sum, children, nil
}
