package main

import (
	"fmt"
	"net/url"
	"testing"

	"repeater/internal/config"
)

// TestPublicRoomDirectory publishes rooms, pages through /publicRooms and
// sees each exactly once, busiest first; aliases resolve and delete.
func TestPublicRoomDirectory(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice, bob := ts.register("alice"), ts.register("bob")
		var busy string
		for i := 0; i < 7; i++ {
			id := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"visibility": "public", "name": fmt.Sprintf("room %d", i),
				"room_alias_name": fmt.Sprintf("r%d", i)}).Get("room_id").Str
			if i == 3 {
				busy = id
				bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(id), nil)
			}
		}
		alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"visibility": "private"})

		seen := map[string]int{}
		since := ""
		for page := 0; page < 10; page++ {
			body := map[string]any{"limit": 3}
			if since != "" {
				body["since"] = since
			}
			res := bob.must("POST", "/_matrix/client/v3/publicRooms", body)
			chunk := res.Get("chunk").Array()
			if len(chunk) > 3 {
				t.Fatalf("page of %d rooms with limit 3", len(chunk))
			}
			if page == 0 && chunk[0].Get("room_id").Str != busy {
				t.Fatalf("busiest room should come first, got %s", chunk[0].Raw)
			}
			for _, r := range chunk {
				seen[r.Get("room_id").Str]++
			}
			since = res.Get("next_batch").Str
			if since == "" {
				break
			}
		}
		if len(seen) != 7 {
			t.Fatalf("saw %d public rooms, want 7", len(seen))
		}
		for id, n := range seen {
			if n != 1 {
				t.Errorf("room %s seen %d times", id, n)
			}
		}
		res := bob.must("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#r3:test.local"), nil)
		if res.Get("room_id").Str != busy {
			t.Fatalf("alias resolves to %s", res.Raw)
		}
		if st, _ := bob.do("DELETE", "/_matrix/client/v3/directory/room/"+url.PathEscape("#r3:test.local"), nil); st != 403 {
			t.Fatalf("bob deleted alice's alias: %d", st)
		}
		alice.must("DELETE", "/_matrix/client/v3/directory/room/"+url.PathEscape("#r3:test.local"), nil)
		if st, _ := bob.do("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#r3:test.local"), nil); st != 404 {
			t.Fatalf("deleted alias still resolves: %d", st)
		}
		ca := alice.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(busy)+"/state/m.room.canonical_alias", nil)
		if ca.Get("alias").Exists() {
			t.Fatalf("canonical alias still names the deleted alias: %s", ca.Raw)
		}
	})
}
