package main

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"repeater/internal/config"
)

// TestTwoUserStory is the whole first-day story: two users register, one
// creates a room and invites the other, who joins; 100 messages flow; both
// sync; history paginates back to m.room.create with every event exactly
// once; the server restarts and the old sync token still works.
func TestTwoUserStory(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice, bob := ts.register("alice"), ts.register("bob")

		roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"name": "Story", "preset": "private_chat"}).Get("room_id").Str
		alice.must("POST", "/_matrix/client/v3/rooms/"+roomID+"/invite", map[string]any{"user_id": bob.userID})

		// Bob sees the invite in his initial sync.
		s := bob.must("GET", "/_matrix/client/v3/sync", nil)
		if !s.Get("rooms.invite." + gjson.Escape(roomID)).Exists() {
			t.Fatalf("bob's sync has no invite: %s", s.Raw)
		}
		bobSince := s.Get("next_batch").Str
		bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{})

		sent := map[string]bool{}
		for i := 0; i < 100; i++ {
			c := alice
			if i%2 == 1 {
				c = bob
			}
			sent[c.send(roomID, fmt.Sprintf("message %d", i))] = true
		}

		// Bob's incremental sync shows the room as joined with a limited
		// timeline and a prev_batch that paginates.
		s = bob.must("GET", "/_matrix/client/v3/sync?since="+bobSince, nil)
		room := s.Get("rooms.join." + gjson.Escape(roomID))
		if !room.Exists() {
			t.Fatalf("bob's incremental sync lacks the joined room: %s", s.Raw)
		}
		if n := len(room.Get("timeline.events").Array()); n == 0 || n > 20 {
			t.Fatalf("timeline has %d events, want 1..20", n)
		}
		if !room.Get("timeline.limited").Bool() {
			t.Fatalf("timeline should be limited")
		}
		if room.Get(`state.events.#(type=="m.room.create")`).Raw == "" {
			t.Fatalf("newly joined room must carry full state, got %s", room.Get("state").Raw)
		}

		// Paginate all the way back from the timeline's prev_batch, plus
		// what the timeline held, and see every event exactly once.
		seen := map[string]int{}
		for _, e := range room.Get("timeline.events").Array() {
			seen[e.Get("event_id").Str]++
		}
		from := room.Get("timeline.prev_batch").Str
		reachedCreate := false
		for pages := 0; pages < 100; pages++ {
			page := bob.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=17&from="+url.QueryEscape(from), nil)
			for _, e := range page.Get("chunk").Array() {
				seen[e.Get("event_id").Str]++
				if e.Get("type").Str == "m.room.create" {
					reachedCreate = true
				}
			}
			if !page.Get("end").Exists() || len(page.Get("chunk").Array()) == 0 {
				break
			}
			from = page.Get("end").Str
		}
		if !reachedCreate {
			t.Fatalf("pagination did not reach m.room.create")
		}
		for id, n := range seen {
			if n != 1 {
				t.Errorf("event %s seen %d times", id, n)
			}
		}
		for id := range sent {
			if seen[id] != 1 {
				t.Errorf("sent event %s not seen in history", id)
			}
		}

		// Restart on the same database; the old token continues.
		next := s.Get("next_batch").Str
		ts.stop()
		ts2 := startTestServer(t, cfg)
		alice.base, bob.base = ts2.base, ts2.base
		after := alice.send(roomID, "after restart")
		s = bob.must("GET", "/_matrix/client/v3/sync?timeout=5000&since="+url.QueryEscape(next), nil)
		evs := s.Get("rooms.join." + gjson.Escape(roomID) + ".timeline.events").Array()
		if len(evs) != 1 || evs[0].Get("event_id").Str != after {
			t.Fatalf("after restart bob should see exactly the new message, got %s", s.Get("rooms.join").Raw)
		}
		// Idempotent send: the same transaction ID gives the same event.
		a1 := alice.must("PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/same", map[string]any{"msgtype": "m.text", "body": "x"}).Get("event_id").Str
		a2 := alice.must("PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/same", map[string]any{"msgtype": "m.text", "body": "x"}).Get("event_id").Str
		if a1 != a2 {
			t.Fatalf("same txn id gave %s and %s", a1, a2)
		}
	})
}

// TestLongPollWakes checks that a waiting /sync returns as soon as a message
// arrives, and that a kicked user is woken and sees the leave.
func TestLongPollWakes(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice, bob := ts.register("alice"), ts.register("bob")
		roomID := sharedRoom(alice, bob)
		since := bob.must("GET", "/_matrix/client/v3/sync", nil).Get("next_batch").Str

		done := make(chan gjson.Result, 1)
		go func() {
			_, res := bob.do("GET", "/_matrix/client/v3/sync?timeout=20000&since="+url.QueryEscape(since), nil)
			done <- res
		}()
		time.Sleep(100 * time.Millisecond)
		id := alice.send(roomID, "wake up")
		select {
		case res := <-done:
			evs := res.Get("rooms.join." + gjson.Escape(roomID) + ".timeline.events").Array()
			if len(evs) != 1 || evs[0].Get("event_id").Str != id {
				t.Fatalf("woken sync should carry the message, got %s", res.Raw)
			}
			since = res.Get("next_batch").Str
		case <-time.After(10 * time.Second):
			t.Fatal("long-poll was not woken by a new message")
		}

		go func() {
			_, res := bob.do("GET", "/_matrix/client/v3/sync?timeout=20000&since="+url.QueryEscape(since), nil)
			done <- res
		}()
		time.Sleep(100 * time.Millisecond)
		alice.must("POST", "/_matrix/client/v3/rooms/"+roomID+"/kick", map[string]any{"user_id": bob.userID, "reason": "test"})
		select {
		case res := <-done:
			leave := res.Get("rooms.leave." + gjson.Escape(roomID))
			if !leave.Exists() || leave.Get(`timeline.events.#(type=="m.room.member").content.membership`).Str != "leave" {
				t.Fatalf("kicked user should see the leave, got %s", res.Get("rooms").Raw)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("kicked user's long-poll was not woken")
		}
		// After the kick bob can no longer send.
		if st, _ := bob.do("PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/x1", map[string]any{"body": "no"}); st != 403 {
			t.Fatalf("kicked user send: status %d, want 403", st)
		}
	})
}

// TestStateChangeAppearsOnce: across a gap (limited timeline), a state
// change shows up exactly once — in state or in the timeline — and always
// with its latest value.
func TestStateChangeAppearsOnce(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice, bob := ts.register("alice"), ts.register("bob")
		roomID := sharedRoom(alice, bob)
		filter := url.QueryEscape(`{"room":{"timeline":{"limit":5}}}`)
		since := bob.must("GET", "/_matrix/client/v3/sync?filter="+filter, nil).Get("next_batch").Str
		for i := 0; i < 3; i++ {
			alice.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.topic", map[string]any{"topic": fmt.Sprintf("topic %d", i)})
		}
		for i := 0; i < 20; i++ {
			alice.send(roomID, fmt.Sprintf("filler %d", i))
		}
		res := bob.must("GET", "/_matrix/client/v3/sync?filter="+filter+"&since="+url.QueryEscape(since), nil)
		room := res.Get("rooms.join." + gjson.Escape(roomID))
		if !room.Get("timeline.limited").Bool() {
			t.Fatal("expected a gap")
		}
		var topics []string
		for _, sect := range []string{"state.events", "timeline.events"} {
			for _, e := range room.Get(sect).Array() {
				if e.Get("type").Str == "m.room.topic" {
					topics = append(topics, e.Get("content.topic").Str)
				}
			}
		}
		if len(topics) != 1 || topics[0] != "topic 2" {
			t.Fatalf("topic changes seen: %v (want exactly the latest once)", topics)
		}
		// And the next sync does not repeat it.
		res = bob.must("GET", "/_matrix/client/v3/sync?filter="+filter+"&since="+url.QueryEscape(res.Get("next_batch").Str), nil)
		if res.Get("rooms.join." + gjson.Escape(roomID)).Exists() {
			t.Fatalf("nothing changed, yet the room came again: %s", res.Get("rooms.join").Raw)
		}
	})
}
