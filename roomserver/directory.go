package roomserver

import (
	"context"
	"sort"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/storage"
)

// PublicRooms returns a page of the public room directory (spec: "Listing
// rooms"; the same answer for clients and, over federation, other
// servers): most joined members first, filtered by a search term over
// name, topic and alias. since is a "p<offset>" token.
func (s *Server) PublicRooms(ctx context.Context, limit int64, since, filter string) (map[string]any, error) {
	return s.PublicRoomList(ctx, storage.RoomList{}, limit, since, filter)
}

// PublicRoomList is PublicRooms for one list: the server's own, an
// application service network's, or all (spec: third_party_instance_id,
// include_all_networks).
func (s *Server) PublicRoomList(ctx context.Context, list storage.RoomList, limit int64, since, filter string) (map[string]any, error) {
	offset := parseDirToken(since)
	filter = strings.ToLower(filter)
	rooms, err := s.db.PublishedRoomStates(ctx, list)
	if err != nil {
		return nil, err
	}
	sort.Slice(rooms, func(i, j int) bool {
		if rooms[i].JoinedCount != rooms[j].JoinedCount {
			return rooms[i].JoinedCount > rooms[j].JoinedCount
		}
		return rooms[i].RoomID < rooms[j].RoomID
	})
	chunk := []map[string]any{}
	for _, room := range rooms {
		entry := publicRoomEntry(room)
		if filter != "" {
			name, _ := entry["name"].(string)
			topic, _ := entry["topic"].(string)
			alias, _ := entry["canonical_alias"].(string)
			if !strings.Contains(strings.ToLower(name+" "+topic+" "+alias), filter) {
				continue
			}
		}
		chunk = append(chunk, entry)
	}
	total := len(chunk)
	if offset > 0 && int(offset) < len(chunk) {
		chunk = chunk[offset:]
	} else if offset > 0 {
		chunk = chunk[:0]
	}
	resp := map[string]any{"total_room_count_estimate": total}
	if limit > 0 && int(limit) < len(chunk) {
		chunk = chunk[:limit]
		resp["next_batch"] = "p" + strconv.FormatInt(offset+limit, 10)
	}
	if offset > 0 {
		resp["prev_batch"] = "p" + strconv.FormatInt(max(0, offset-max(limit, 1)), 10)
	}
	resp["chunk"] = chunk
	return resp, nil
}

func publicRoomEntry(room *storage.PublicRoomState) map[string]any {
	e := map[string]any{"room_id": room.RoomID, "world_readable": false, "guest_can_join": false,
		"num_joined_members": room.JoinedCount, "join_rule": "public"}
	for typ, js := range room.State {
		c := gjson.GetBytes(js, "content")
		switch typ {
		case spec.MRoomName:
			e["name"] = c.Get("name").Str
		case spec.MRoomTopic:
			e["topic"] = c.Get("topic").Str
		case spec.MRoomCanonicalAlias:
			if s := c.Get("alias").Str; s != "" {
				e["canonical_alias"] = s
			}
		case spec.MRoomAvatar:
			e["avatar_url"] = c.Get("url").Str
		case spec.MRoomHistoryVisibility:
			e["world_readable"] = c.Get("history_visibility").Str == "world_readable"
		case "m.room.guest_access":
			e["guest_can_join"] = c.Get("guest_access").Str == "can_join"
		case spec.MRoomJoinRules:
			e["join_rule"] = c.Get("join_rule").Str
		case spec.MRoomCreate:
			if t := c.Get("type"); t.Type == gjson.String {
				e["room_type"] = t.Str
			}
		}
	}
	return e
}

// Directory page tokens are "p<offset>" (never a bare "0", which some
// clients treat as no token); bare numbers are accepted too.
func parseDirToken(s string) int64 {
	n, _ := strconv.ParseInt(strings.TrimPrefix(s, "p"), 10, 64)
	return max(0, n)
}
