package main

import (
	"net/url"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"repeater/internal/config"
)

// TestTypingReceiptsPresence: what one user does shows up in the other's
// sync, waking a waiting long-poll.
func TestTypingReceiptsPresence(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice, bob := ts.register("alice"), ts.register("bob")
		roomID := sharedRoom(alice, bob)
		since := bob.must("GET", "/_matrix/client/v3/sync", nil).Get("next_batch").Str
		r := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID)
		room := "rooms.join." + gjson.Escape(roomID)

		// Typing wakes a long-poll.
		done := make(chan gjson.Result, 1)
		go func() {
			_, res := bob.do("GET", "/_matrix/client/v3/sync?timeout=10000&since="+url.QueryEscape(since), nil)
			done <- res
		}()
		time.Sleep(50 * time.Millisecond)
		alice.must("PUT", r+"/typing/"+url.PathEscape(alice.userID), map[string]any{"typing": true, "timeout": 10000})
		var res gjson.Result
		select {
		case res = <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("typing did not wake the long-poll")
		}
		typing := res.Get(room + `.ephemeral.events.#(type=="m.typing").content.user_ids`).Array()
		if len(typing) != 1 || typing[0].Str != alice.userID {
			t.Fatalf("typing users: %s", res.Get(room).Raw)
		}
		since = res.Get("next_batch").Str

		// Stop typing, send a read receipt.
		alice.must("PUT", r+"/typing/"+url.PathEscape(alice.userID), map[string]any{"typing": false})
		ev := alice.send(roomID, "read me")
		bob.must("POST", r+"/receipt/m.read/"+url.PathEscape(ev), map[string]any{})
		res = alice.must("GET", "/_matrix/client/v3/sync", nil)
		rcpt := res.Get(room + `.ephemeral.events.#(type=="m.receipt").content`)
		if !rcpt.Get(gjson.Escape(ev) + ".m\\.read." + gjson.Escape(bob.userID) + ".ts").Exists() {
			t.Fatalf("receipt missing: %s", res.Get(room+".ephemeral").Raw)
		}
		res = bob.must("GET", "/_matrix/client/v3/sync?since="+url.QueryEscape(since), nil)
		if n := res.Get(room + `.ephemeral.events.#(type=="m.typing").content.user_ids.#`).Int(); n != 0 {
			t.Fatalf("alice still typing: %s", res.Get(room).Raw)
		}

		// Presence: alice sets a status; bob (who shares a room) sees it,
		// a stranger may not read it.
		alice.must("PUT", "/_matrix/client/v3/presence/"+url.PathEscape(alice.userID)+"/status", map[string]any{"presence": "unavailable", "status_msg": "lunch"})
		p := bob.must("GET", "/_matrix/client/v3/presence/"+url.PathEscape(alice.userID)+"/status", nil)
		if p.Get("presence").Str != "unavailable" || p.Get("status_msg").Str != "lunch" {
			t.Fatalf("presence: %s", p.Raw)
		}
		res = bob.must("GET", "/_matrix/client/v3/sync?since="+url.QueryEscape(res.Get("next_batch").Str), nil)
		if res.Get(`presence.events.#(sender=="`+alice.userID+`").content.status_msg`).Str != "lunch" {
			t.Fatalf("presence not in sync: %s", res.Get("presence").Raw)
		}
		carol := ts.register("carol")
		if st, _ := carol.do("GET", "/_matrix/client/v3/presence/"+url.PathEscape(alice.userID)+"/status", nil); st != 403 {
			t.Fatalf("stranger read presence: %d", st)
		}
	})
}

// An explicit presence change survives the client's own syncing: clients
// keep syncing (set_presence defaulting to online) while the user acts, and
// a user who marked themselves away stays away until they say otherwise.
func TestExplicitPresenceSurvivesSync(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice, bob := ts.register("alice"), ts.register("bob")
		sharedRoom(alice, bob)
		presence := func() string {
			return bob.must("GET", "/_matrix/client/v3/presence/"+url.PathEscape(alice.userID)+"/status", nil).Get("presence").Str
		}
		alice.must("GET", "/_matrix/client/v3/sync?timeout=0", nil)
		if p := presence(); p != "online" {
			t.Fatalf("syncing user is %q", p)
		}
		for _, away := range []string{"unavailable", "offline"} {
			alice.must("PUT", "/_matrix/client/v3/presence/"+url.PathEscape(alice.userID)+"/status", map[string]any{"presence": away})
			// The client syncs on, as Element does, with and without
			// an explicit set_presence=online.
			for _, q := range []string{"", "&set_presence=online", ""} {
				alice.must("GET", "/_matrix/client/v3/sync?timeout=0"+q, nil)
				if p := presence(); p != away {
					t.Fatalf("after PUT %s and a sync (%q), alice is %q", away, q, p)
				}
			}
		}
		// Saying "online" again ends it; so does a sync that asks for
		// unavailable explicitly (an idle client).
		alice.must("PUT", "/_matrix/client/v3/presence/"+url.PathEscape(alice.userID)+"/status", map[string]any{"presence": "online"})
		alice.must("GET", "/_matrix/client/v3/sync?timeout=0", nil)
		if p := presence(); p != "online" {
			t.Fatalf("after PUT online, alice is %q", p)
		}
		alice.must("GET", "/_matrix/client/v3/sync?timeout=0&set_presence=unavailable", nil)
		if p := presence(); p != "unavailable" {
			t.Fatalf("after an idle sync, alice is %q", p)
		}
	})
}
