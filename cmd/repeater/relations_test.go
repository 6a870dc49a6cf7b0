package main

import (
	"fmt"
	"net/url"
	"testing"

	"github.com/tidwall/gjson"

	"repeater/internal/config"
)

// sendEvent sends an event of any type and returns its ID.
func (c *client) sendEvent(roomID, evType string, content map[string]any) string {
	c.t.Helper()
	txn := c.txn.Add(1)
	return c.must("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/%s/r%d", url.PathEscape(roomID), evType, txn), content).Get("event_id").Str
}

func relContent(relType, parent string, extra map[string]any) map[string]any {
	rel := map[string]any{"rel_type": relType, "event_id": parent}
	for k, v := range extra {
		rel[k] = v
	}
	return map[string]any{"msgtype": "m.text", "body": relType, "m.relates_to": rel}
}

func reaction(parent, key string) map[string]any {
	return map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": parent, "key": key}}
}

func edit(parent, body string) map[string]any {
	return map[string]any{"msgtype": "m.text", "body": "* " + body, "m.new_content": map[string]any{"msgtype": "m.text", "body": body},
		"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": parent}}
}

func threadReply(root, body string) map[string]any {
	return map[string]any{"msgtype": "m.text", "body": body, "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}}
}

func chunkIDs(res gjson.Result) []string {
	out := []string{}
	for _, e := range res.Get("chunk").Array() {
		out = append(out, e.Get("event_id").Str)
	}
	return out
}

func wantIDs(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

// findEvent returns the event with the given ID in a list of events.
func findEvent(evs gjson.Result, id string) gjson.Result {
	for _, e := range evs.Array() {
		if e.Get("event_id").Str == id {
			return e
		}
	}
	return gjson.Result{}
}

func relPath(roomID, eventID string, rest ...string) string {
	p := "/_matrix/client/v1/rooms/" + url.PathEscape(roomID) + "/relations/" + url.PathEscape(eventID)
	for _, r := range rest {
		p += "/" + url.PathEscape(r)
	}
	return p
}

// Reactions and edits through /relations (filters, pagination, bad
// input) and the bundled m.replace / m.reference aggregations.
func TestRelationsReactionsAndEdits(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice, bob, carol := ts.register("alice"), ts.register("bob"), ts.register("carol")
		roomID := sharedRoom(alice, bob)
		root := alice.send(roomID, "root")
		r1 := bob.sendEvent(roomID, "m.reaction", reaction(root, "👍"))
		r2 := alice.sendEvent(roomID, "m.reaction", reaction(root, "👍"))
		r3 := bob.sendEvent(roomID, "m.reaction", reaction(root, "🎉"))
		e1 := alice.sendEvent(roomID, "m.room.message", edit(root, "first edit"))
		e2 := alice.sendEvent(roomID, "m.room.message", edit(root, "second edit"))
		eBob := bob.sendEvent(roomID, "m.room.message", edit(root, "not yours"))
		ref := bob.sendEvent(roomID, "m.room.message", relContent("m.reference", root, nil))
		alice.send(roomID, "unrelated")

		// The same annotation twice is refused; another key is fine.
		st, res := bob.do("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.reaction/dup", url.PathEscape(roomID)), reaction(root, "👍"))
		if st != 400 || res.Get("errcode").Str != "M_DUPLICATE_ANNOTATION" {
			t.Fatalf("duplicate annotation: %d %s", st, res.Raw)
		}

		all := alice.must("GET", relPath(roomID, root), nil)
		wantIDs(t, "all children", chunkIDs(all), ref, eBob, e2, e1, r3, r2, r1)
		if all.Get("next_batch").Exists() || all.Get("prev_batch").Exists() || all.Get("recursion_depth").Exists() {
			t.Fatalf("single page has tokens: %s", all.Raw)
		}
		wantIDs(t, "annotations", chunkIDs(alice.must("GET", relPath(roomID, root, "m.annotation"), nil)), r3, r2, r1)
		wantIDs(t, "reactions", chunkIDs(alice.must("GET", relPath(roomID, root, "m.annotation", "m.reaction"), nil)), r3, r2, r1)
		wantIDs(t, "annotations of another type", chunkIDs(alice.must("GET", relPath(roomID, root, "m.annotation", "m.room.message"), nil)))
		wantIDs(t, "edits", chunkIDs(alice.must("GET", relPath(roomID, root, "m.replace"), nil)), eBob, e2, e1)
		wantIDs(t, "forwards", chunkIDs(alice.must("GET", relPath(roomID, root)+"?dir=f", nil)), r1, r2, r3, e1, e2, eBob, ref)

		// Paging two at a time visits every child once, in order.
		for _, dir := range []string{"b", "f"} {
			var got []string
			from := ""
			for pages := 0; ; pages++ {
				if pages > 10 {
					t.Fatal("pagination does not end")
				}
				q := "?limit=2&dir=" + dir
				if from != "" {
					q += "&from=" + url.QueryEscape(from)
				}
				page := alice.must("GET", relPath(roomID, root)+q, nil)
				if from != "" && page.Get("prev_batch").Str != from {
					t.Fatalf("prev_batch %q, want %q", page.Get("prev_batch").Str, from)
				}
				got = append(got, chunkIDs(page)...)
				from = page.Get("next_batch").Str
				if from == "" {
					break
				}
			}
			want := chunkIDs(alice.must("GET", relPath(roomID, root)+"?dir="+dir, nil))
			wantIDs(t, "paged "+dir, got, want...)
		}
		// to bounds a backwards page: from page 1's start to page 2's end.
		p1 := alice.must("GET", relPath(roomID, root)+"?limit=2", nil)
		p2 := alice.must("GET", relPath(roomID, root)+"?limit=2&from="+url.QueryEscape(p1.Get("next_batch").Str), nil)
		bounded := alice.must("GET", relPath(roomID, root)+"?to="+url.QueryEscape(p2.Get("next_batch").Str), nil)
		wantIDs(t, "bounded by to", chunkIDs(bounded), ref, eBob, e2, e1)
		// A /messages token works as from.
		msgs := alice.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=3", nil)
		wantIDs(t, "from a /messages token", chunkIDs(alice.must("GET", relPath(roomID, root)+"?from="+url.QueryEscape(msgs.Get("end").Str), nil)), e2, e1, r3, r2, r1)

		// Bad input and access.
		otherRoom := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{}).Get("room_id").Str
		other := alice.send(otherRoom, "elsewhere")
		for _, c := range []struct {
			who    *client
			path   string
			status int
			code   string
		}{
			{alice, relPath(roomID, root) + "?dir=x", 400, "M_INVALID_PARAM"},
			{alice, relPath(roomID, root) + "?limit=abc", 400, "M_INVALID_PARAM"},
			{alice, relPath(roomID, root) + "?limit=-1", 400, "M_INVALID_PARAM"},
			{alice, relPath(roomID, root) + "?recurse=maybe", 400, "M_INVALID_PARAM"},
			{alice, relPath(roomID, root) + "?from=garbage", 400, "M_INVALID_PARAM"},
			{alice, relPath(roomID, root) + "?to=t1_x", 400, "M_INVALID_PARAM"},
			{alice, relPath(roomID, "$nope"), 404, "M_NOT_FOUND"},
			{alice, relPath(roomID, other), 404, "M_NOT_FOUND"},
			{alice, relPath("!nope:test.local", root), 404, "M_NOT_FOUND"},
			{carol, relPath(roomID, root), 403, "M_FORBIDDEN"},
			{bob, relPath(otherRoom, other), 403, "M_FORBIDDEN"},
		} {
			st, res := c.who.do("GET", c.path, nil)
			if st != c.status || res.Get("errcode").Str != c.code {
				t.Errorf("GET %s: %d %s, want %d %s", c.path, st, res.Raw, c.status, c.code)
			}
		}

		// Bundles: the latest valid edit (not bob's), the reference, no
		// annotations; the original content is left as it is.
		checkBundle := func(where string, ev gjson.Result) {
			t.Helper()
			rel := ev.Get(`unsigned.m\.relations`)
			if rel.Get(`m\.replace.event_id`).Str != e2 || rel.Get(`m\.replace.content.m\.new_content.body`).Str != "second edit" {
				t.Fatalf("%s: m.replace bundle: %s", where, ev.Raw)
			}
			if rel.Get(`m\.reference.chunk.#`).Int() != 1 || rel.Get(`m\.reference.chunk.0.event_id`).Str != ref {
				t.Fatalf("%s: m.reference bundle: %s", where, ev.Raw)
			}
			if rel.Get(`m\.annotation`).Exists() || rel.Get(`m\.thread`).Exists() {
				t.Fatalf("%s: unexpected aggregations: %s", where, rel.Raw)
			}
			if ev.Get("content.body").Str != "root" {
				t.Fatalf("%s: original content replaced: %s", where, ev.Raw)
			}
		}
		checkBundle("/event", bob.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(root), nil))
		msgs = bob.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=50", nil)
		checkBundle("/messages", findEvent(msgs.Get("chunk"), root))
		if findEvent(msgs.Get("chunk"), r1).Get(`unsigned.m\.relations`).Exists() {
			t.Fatal("a reaction without children has a bundle")
		}
		ctxRes := bob.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/context/"+url.PathEscape(root)+"?limit=4", nil)
		checkBundle("/context", ctxRes.Get("event"))

		// Redacting the latest edit falls back to the one before; the
		// redacted edit leaves the relations.
		alice.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/redact/"+url.PathEscape(e2)+"/red1", map[string]any{})
		ev := bob.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(root), nil)
		if ev.Get(`unsigned.m\.relations.m\.replace.event_id`).Str != e1 {
			t.Fatalf("after redacting the latest edit: %s", ev.Raw)
		}
		wantIDs(t, "edits after redaction", chunkIDs(alice.must("GET", relPath(roomID, root, "m.replace"), nil)), eBob, e1)
		// A redacted original gets no m.replace bundle.
		alice.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/redact/"+url.PathEscape(root)+"/red2", map[string]any{})
		ev = bob.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(root), nil)
		if ev.Get(`unsigned.m\.relations.m\.replace`).Exists() {
			t.Fatalf("redacted original with an edit bundled: %s", ev.Raw)
		}

		// Only edits by someone else: no replacement.
		root2 := alice.send(roomID, "mine")
		bob.sendEvent(roomID, "m.room.message", edit(root2, "hijacked"))
		ev = alice.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(root2), nil)
		if ev.Get(`unsigned.m\.relations`).Exists() {
			t.Fatalf("another user's edit used as replacement: %s", ev.Raw)
		}
	})
}

// A thread with replies: /threads, /relations of the thread, bundled
// m.thread in /messages, /event, /context and /sync.
func TestThreads(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice, bob, carol := ts.register("alice"), ts.register("bob"), ts.register("carol")
		roomID := sharedRoom(alice, bob)
		carol.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), nil)
		room := url.PathEscape(roomID)
		threadsPath := "/_matrix/client/v1/rooms/" + room + "/threads"

		root1 := alice.send(roomID, "thread one")
		t1 := bob.sendEvent(roomID, "m.room.message", threadReply(root1, "reply 1"))
		root2 := carol.send(roomID, "thread two")
		t2 := bob.sendEvent(roomID, "m.room.message", threadReply(root1, "reply 2"))
		t3 := carol.sendEvent(roomID, "m.room.message", threadReply(root2, "reply 3"))
		react := alice.sendEvent(roomID, "m.reaction", reaction(t1, "👀"))
		t2edit := bob.sendEvent(roomID, "m.room.message", edit(t2, "reply 2, edited"))

		// A thread cannot start from an event that is itself a relation.
		st, res := alice.do("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/bad", room), threadReply(t1, "nested"))
		if st != 400 || res.Get("errcode").Str != "M_UNKNOWN" {
			t.Fatalf("thread off a thread event: %d %s", st, res.Raw)
		}

		list := alice.must("GET", threadsPath, nil)
		wantIDs(t, "threads", chunkIDs(list), root2, root1)
		th := list.Get(`chunk.1.unsigned.m\.relations.m\.thread`)
		if th.Get("count").Int() != 2 || th.Get("latest_event.event_id").Str != t2 || !th.Get("current_user_participated").Bool() {
			t.Fatalf("thread one's summary for alice: %s", th.Raw)
		}
		// The latest event carries its own bundle (its edit).
		if th.Get(`latest_event.unsigned.m\.relations.m\.replace.event_id`).Str != t2edit {
			t.Fatalf("latest event's own bundle: %s", th.Raw)
		}
		if list.Get(`chunk.0.unsigned.m\.relations.m\.thread.current_user_participated`).Bool() {
			t.Fatalf("alice participated in thread two: %s", list.Raw)
		}
		wantIDs(t, "bob's threads", chunkIDs(bob.must("GET", threadsPath+"?include=participated", nil)), root1)
		wantIDs(t, "alice's threads", chunkIDs(alice.must("GET", threadsPath+"?include=participated", nil)), root1)
		wantIDs(t, "carol's threads", chunkIDs(carol.must("GET", threadsPath+"?include=participated", nil)), root2)
		page := alice.must("GET", threadsPath+"?limit=1", nil)
		wantIDs(t, "threads page 1", chunkIDs(page), root2)
		page = alice.must("GET", threadsPath+"?limit=1&from="+url.QueryEscape(page.Get("next_batch").Str), nil)
		wantIDs(t, "threads page 2", chunkIDs(page), root1)
		if page.Get("next_batch").Exists() {
			t.Fatalf("last page has next_batch: %s", page.Raw)
		}
		for _, q := range []string{"?include=some", "?limit=x", "?from=bogus"} {
			if st, res := alice.do("GET", threadsPath+q, nil); st != 400 || res.Get("errcode").Str != "M_INVALID_PARAM" {
				t.Errorf("threads%s: %d %s", q, st, res.Raw)
			}
		}
		outsider := ts.register("dave")
		if st, res := outsider.do("GET", threadsPath, nil); st != 403 || res.Get("errcode").Str != "M_FORBIDDEN" {
			t.Errorf("threads for an outsider: %d %s", st, res.Raw)
		}
		if st, res := alice.do("GET", "/_matrix/client/v1/rooms/"+url.PathEscape("!nope:test.local")+"/threads", nil); st != 403 {
			t.Errorf("threads of an unknown room: %d %s", st, res.Raw)
		}

		// The thread's events through /relations; recursion reaches the
		// reaction on a reply.
		wantIDs(t, "thread events", chunkIDs(alice.must("GET", relPath(roomID, root1, "m.thread"), nil)), t2, t1)
		rec := alice.must("GET", relPath(roomID, root1)+"?recurse=true", nil)
		wantIDs(t, "recursive", chunkIDs(rec), t2edit, react, t2, t1)
		if rec.Get("recursion_depth").Int() != 3 {
			t.Fatalf("recursion_depth: %s", rec.Raw)
		}
		if d := alice.must("GET", relPath(roomID, root1)+"?recurse=false", nil).Get("recursion_depth"); d.Int() != 1 {
			t.Fatalf("recursion_depth without recursion: %s", d.Raw)
		}
		wantIDs(t, "recursive annotations", chunkIDs(alice.must("GET", relPath(roomID, root1, "m.annotation")+"?recurse=true", nil)), react)

		checkThread := func(where string, ev gjson.Result, count int64, latest string, participated bool) {
			t.Helper()
			th := ev.Get(`unsigned.m\.relations.m\.thread`)
			if th.Get("count").Int() != count || th.Get("latest_event.event_id").Str != latest || th.Get("current_user_participated").Bool() != participated {
				t.Fatalf("%s: m.thread bundle %s, want count %d latest %s participated %v", where, ev.Raw, count, latest, participated)
			}
		}
		msgs := carol.must("GET", "/_matrix/client/v3/rooms/"+room+"/messages?dir=b&limit=50", nil)
		checkThread("/messages root1", findEvent(msgs.Get("chunk"), root1), 2, t2, false)
		checkThread("/messages root2", findEvent(msgs.Get("chunk"), root2), 1, t3, true)
		checkThread("/event", bob.must("GET", "/_matrix/client/v3/rooms/"+room+"/event/"+url.PathEscape(root1), nil), 2, t2, true)
		ctxRes := bob.must("GET", "/_matrix/client/v3/rooms/"+room+"/context/"+url.PathEscape(t1)+"?limit=10", nil)
		checkThread("/context", findEvent(ctxRes.Get("events_before"), root1), 2, t2, true)
		if rel := alice.must("GET", relPath(roomID, root1, "m.thread"), nil); findEvent(rel.Get("chunk"), t1).Get(`unsigned.m\.relations`).Exists() {
			// t1 has only a reaction: nothing to bundle.
			t.Fatalf("reaction bundled: %s", rel.Raw)
		}

		// /sync bundles in a limited timeline.
		root3 := alice.send(roomID, "thread three")
		t4 := carol.sendEvent(roomID, "m.room.message", threadReply(root3, "reply 4"))
		filter := url.QueryEscape(`{"room":{"timeline":{"limit":2}}}`)
		s := bob.must("GET", "/_matrix/client/v3/sync?filter="+filter, nil)
		tl := s.Get("rooms.join." + gjson.Escape(roomID) + ".timeline")
		if !tl.Get("limited").Bool() {
			t.Fatalf("timeline not limited: %s", tl.Raw)
		}
		checkThread("/sync", findEvent(tl.Get("events"), root3), 1, t4, false)

		// Redacting the latest reply: the summary goes back to the one before.
		bob.must("PUT", "/_matrix/client/v3/rooms/"+room+"/redact/"+url.PathEscape(t2)+"/red1", map[string]any{})
		checkThread("after redaction", alice.must("GET", "/_matrix/client/v3/rooms/"+room+"/event/"+url.PathEscape(root1), nil), 1, t1, true)
		wantIDs(t, "thread events after redaction", chunkIDs(alice.must("GET", relPath(roomID, root1, "m.thread"), nil)), t1)
	})
}

// History visibility applies to parents and children.
func TestRelationsVisibility(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice, bob := ts.register("alice"), ts.register("bob")
		roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat",
			"initial_state": []any{map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}}}}).Get("room_id").Str
		root := alice.send(roomID, "before bob")
		early := alice.sendEvent(roomID, "m.room.message", threadReply(root, "also before bob"))
		bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), nil)
		late := alice.sendEvent(roomID, "m.room.message", threadReply(root, "after bob joined"))
		// Bob cannot see the root: 404.
		if st, res := bob.do("GET", relPath(roomID, root), nil); st != 404 || res.Get("errcode").Str != "M_NOT_FOUND" {
			t.Fatalf("relations of an invisible parent: %d %s", st, res.Raw)
		}
		wantIDs(t, "alice sees both", chunkIDs(alice.must("GET", relPath(roomID, root), nil)), late, early)
		// /threads lists only roots he can see.
		wantIDs(t, "bob's thread list", chunkIDs(bob.must("GET", "/_matrix/client/v1/rooms/"+url.PathEscape(roomID)+"/threads", nil)))
		// A child he may not see (sent after he left) is left out of a
		// visible parent's page.
		root2 := alice.sendEvent(roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "visible root"})
		reply := bob.sendEvent(roomID, "m.room.message", threadReply(root2, "bob replies"))
		bob.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/leave", map[string]any{})
		after := alice.sendEvent(roomID, "m.room.message", threadReply(root2, "after bob left"))
		wantIDs(t, "alice's children", chunkIDs(alice.must("GET", relPath(roomID, root2), nil)), after, reply)
		wantIDs(t, "bob's children", chunkIDs(bob.must("GET", relPath(roomID, root2), nil)), reply)
		// His bundle does not show the reply he cannot see as the latest.
		ev := bob.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(root2), nil)
		if ev.Get(`unsigned.m\.relations.m\.thread.latest_event.event_id`).Str == after {
			t.Fatalf("invisible latest event bundled: %s", ev.Raw)
		}
	})
}

// A user on another server replies in a thread; the origin server's
// /relations, /threads and bundles show it.
func TestRelationsFederated(t *testing.T) {
	srv := fedNet(t, 2)
	alice := srv[0].register("alice")
	bob := srv[1].register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Get("room_id").Str
	root := alice.send(roomID, "root on A")
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=s0.test", map[string]any{})
	eventually(t, "bob joined on alice's server", func() bool {
		m := alice.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/joined_members", nil)
		return m.Get("joined." + gjson.Escape(bob.userID)).Exists()
	})
	reply := bob.sendEvent(roomID, "m.room.message", threadReply(root, "reply from B"))
	eventually(t, "bob's reply in alice's relations", func() bool {
		return fmt.Sprint(chunkIDs(alice.must("GET", relPath(roomID, root, "m.thread"), nil))) == fmt.Sprint([]string{reply})
	})
	list := alice.must("GET", "/_matrix/client/v1/rooms/"+url.PathEscape(roomID)+"/threads", nil)
	wantIDs(t, "alice's threads", chunkIDs(list), root)
	th := list.Get(`chunk.0.unsigned.m\.relations.m\.thread`)
	if th.Get("count").Int() != 1 || th.Get("latest_event.event_id").Str != reply || th.Get("latest_event.sender").Str != bob.userID {
		t.Fatalf("thread summary on A: %s", list.Raw)
	}
	// Bob's server knows the thread too, once it has the root (backfilled
	// through /messages) and its own reply.
	eventually(t, "root backfilled on bob's server", func() bool {
		b := timelineBodies(bob, roomID)
		return len(b) > 0 && b[0] == "root on A"
	})
	ev := bob.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(root), nil)
	if ev.Get(`unsigned.m\.relations.m\.thread.latest_event.event_id`).Str != reply || !ev.Get(`unsigned.m\.relations.m\.thread.current_user_participated`).Bool() {
		t.Fatalf("thread bundle on B: %s", ev.Raw)
	}
	// A reaction from A reaches B's /relations.
	r := alice.sendEvent(roomID, "m.reaction", reaction(reply, "👍"))
	eventually(t, "alice's reaction on bob's server", func() bool {
		return fmt.Sprint(chunkIDs(bob.must("GET", relPath(roomID, reply, "m.annotation"), nil))) == fmt.Sprint([]string{r})
	})
}
