package main

import (
	"net/url"
	"testing"
)

// A room upgraded on another server: when a user here joins the
// replacement, this server's own alias for the old room and its public
// directory entry move to the new room, and the user's rules and tags for
// the old room carry over.
func TestFederationFollowsRoomUpgrade(t *testing.T) {
	srv := fedNet(t, 2)
	alice := srv[0].register("alice")
	bob := srv[1].register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Get("room_id").Str
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=s0.test", map[string]any{})
	bob.must("PUT", "/_matrix/client/v3/directory/room/"+url.PathEscape("#bobs:s1.test"), map[string]any{"room_id": roomID})
	bob.must("PUT", "/_matrix/client/v3/directory/list/room/"+url.PathEscape(roomID), map[string]any{"visibility": "public"})
	bob.must("PUT", rulesPath+"global/room/"+url.PathEscape(roomID), map[string]any{"actions": []any{}})
	tags := func(room string) string {
		return "/_matrix/client/v3/user/" + url.PathEscape(bob.userID) + "/rooms/" + url.PathEscape(room) + "/tags"
	}
	bob.must("PUT", tags(roomID)+"/u.work", map[string]any{"order": 0.5})

	newRoom := alice.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/upgrade", map[string]any{"new_version": "10"}).Get("replacement_room").Str
	eventually(t, "the tombstone on bob's server", func() bool {
		st, _ := bob.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.tombstone", nil)
		return st == 200
	})
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(newRoom)+"?server_name=s0.test", map[string]any{})

	if got := bob.must("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#bobs:s1.test"), nil).Get("room_id").Str; got != newRoom {
		t.Fatalf("bob's server's alias points at %s, want the new room %s", got, newRoom)
	}
	pub := bob.must("GET", "/_matrix/client/v3/publicRooms", nil).Get("chunk.#.room_id").Array()
	if len(pub) != 1 || pub[0].Str != newRoom {
		t.Fatalf("bob's server's directory: %v, want only %s", pub, newRoom)
	}
	if r := bob.must("GET", rulesPath+"global/room/"+url.PathEscape(newRoom), nil); r.Get("rule_id").Str != newRoom {
		t.Fatalf("room rule not carried over: %s", r.Raw)
	}
	if tg := bob.must("GET", tags(newRoom), nil); tg.Get(`tags.u\.work.order`).Float() != 0.5 {
		t.Fatalf("tags not carried over: %s", tg.Raw)
	}
}
