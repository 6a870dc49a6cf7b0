package main

import (
	"net/url"
	"sort"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"repeater/internal/config"
)

// searchPath is POST /search, with a next_batch when given.
func searchPath(nextBatch string) string {
	if nextBatch == "" {
		return "/_matrix/client/v3/search"
	}
	return "/_matrix/client/v3/search?next_batch=" + url.QueryEscape(nextBatch)
}

// roomEvents runs a search with the given room_events criteria.
func (c *client) roomEvents(criteria map[string]any, nextBatch string) gjson.Result {
	c.t.Helper()
	return c.must("POST", searchPath(nextBatch), map[string]any{"search_categories": map[string]any{"room_events": criteria}}).
		Get("search_categories.room_events")
}

func resultIDs(res gjson.Result) []string {
	out := []string{}
	for _, r := range res.Get("results").Array() {
		out = append(out, r.Get("result.event_id").Str)
	}
	return out
}

func (c *client) setState(roomID, typ string, content map[string]any) {
	c.t.Helper()
	c.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/"+typ, content)
}

func (c *client) setName(name string) {
	c.t.Helper()
	c.must("PUT", "/_matrix/client/v3/profile/"+url.PathEscape(c.userID)+"/displayname", map[string]any{"displayname": name})
}

func TestSearch(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice, bob, carol := ts.register("alice"), ts.register("bob"), ts.register("carol")
		alice.setName("Alice Liddell")
		bob.setName("Bobby")

		room1 := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "Red Embassy"}).Get("room_id").Str
		bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(room1), nil)
		a1 := alice.send(room1, "The Martians are coming")
		b1 := bob.send(room1, "martian martian martian everywhere")
		alice.send(room1, "nothing to see here")
		// carol's private room: history is visible to members only from
		// their join.
		room2 := carol.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat"}).Get("room_id").Str
		carol.setState(room2, "m.room.history_visibility", map[string]any{"history_visibility": "joined"})
		carol.send(room2, "martian secret from before bob")
		carol.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room2)+"/invite", map[string]any{"user_id": bob.userID})
		bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(room2), nil)
		c1 := carol.send(room2, "a martian after bob joined")
		// A room bob is not in.
		room3 := carol.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Get("room_id").Str
		carol.send(room3, "martian in a room bob never joined")

		// Recent order: newest first; only what bob may see.
		res := bob.roomEvents(map[string]any{"search_term": "martian", "order_by": "recent"}, "")
		if got, want := resultIDs(res), []string{c1, b1, a1}; !equalStrings(got, want) {
			t.Fatalf("recent: got %v, want %v (%s)", got, want, res.Raw)
		}
		if res.Get("count").Int() < 3 || res.Get("next_batch").Exists() {
			t.Errorf("count/next_batch: %s", res.Raw)
		}
		hl := []string{}
		for _, h := range res.Get("highlights").Array() {
			hl = append(hl, h.Str)
		}
		sort.Strings(hl)
		if !equalStrings(hl, []string{"martian", "martians"}) {
			t.Errorf("highlights %v", hl)
		}
		r0 := res.Get("results.0")
		if r0.Get("result.room_id").Str != room2 || r0.Get("result.content.body").Str != "a martian after bob joined" ||
			r0.Get("result.sender").Str != carol.userID || !r0.Get("rank").Exists() || r0.Get("context").Exists() {
			t.Errorf("result format: %s", r0.Raw)
		}
		// Rank order (the default): the most martian message first.
		res = bob.roomEvents(map[string]any{"search_term": "martian"}, "")
		if ids := resultIDs(res); len(ids) != 3 || ids[0] != b1 {
			t.Fatalf("rank: %v", ids)
		}
		ranks := res.Get("results.#.rank").Array()
		for i := 1; i < len(ranks); i++ {
			if ranks[i].Float() > ranks[i-1].Float() {
				t.Errorf("ranks not descending: %s", res.Get("results.#.rank").Raw)
			}
		}
		// Phrases, keys and filters.
		for name, c := range map[string]struct {
			criteria map[string]any
			want     []string
		}{
			"phrase":      {map[string]any{"search_term": `"martians are"`}, []string{a1}},
			"no match":    {map[string]any{"search_term": "zebra"}, []string{}},
			"rooms":       {map[string]any{"search_term": "martian", "filter": map[string]any{"rooms": []string{room1}}}, []string{b1, a1}},
			"not_rooms":   {map[string]any{"search_term": "martian", "filter": map[string]any{"not_rooms": []string{room1}}}, []string{c1}},
			"senders":     {map[string]any{"search_term": "martian", "filter": map[string]any{"senders": []string{alice.userID}}}, []string{a1}},
			"not_senders": {map[string]any{"search_term": "martian", "filter": map[string]any{"not_senders": []string{alice.userID, carol.userID}}}, []string{b1}},
			"not_types":   {map[string]any{"search_term": "embassy", "filter": map[string]any{"not_types": []string{"m.room.message"}}}, nil},
			"name key":    {map[string]any{"search_term": "embassy", "keys": []string{"content.name"}}, nil},
			"body key":    {map[string]any{"search_term": "embassy", "keys": []string{"content.body"}}, []string{}},
			"wildcard":    {map[string]any{"search_term": "embassy", "filter": map[string]any{"types": []string{"m.room.n*"}}}, nil},
		} {
			c.criteria["order_by"] = "recent"
			res := bob.roomEvents(c.criteria, "")
			got := resultIDs(res)
			if c.want == nil { // the room name event
				if len(got) != 1 || res.Get("results.0.result.type").Str != "m.room.name" {
					t.Errorf("%s: %s", name, res.Raw)
				}
				continue
			}
			if !equalStrings(got, c.want) {
				t.Errorf("%s: got %v, want %v", name, got, c.want)
			}
		}

		// Pagination: one result a page, in both orders, sees each once.
		for _, order := range []string{"recent", "rank"} {
			var all []string
			next := ""
			for page := 0; page < 10; page++ {
				res := bob.roomEvents(map[string]any{"search_term": "martian", "order_by": order, "filter": map[string]any{"limit": 1}}, next)
				all = append(all, resultIDs(res)...)
				if next = res.Get("next_batch").Str; next == "" {
					break
				}
			}
			sort.Strings(all)
			want := []string{a1, b1, c1}
			sort.Strings(want)
			if !equalStrings(all, want) {
				t.Errorf("%s pages: got %v, want %v", order, all, want)
			}
		}

		// Context with profiles, and state.
		res = bob.roomEvents(map[string]any{"search_term": "everywhere", "include_state": true,
			"event_context": map[string]any{"before_limit": 1, "after_limit": 1, "include_profile": true}}, "")
		cx := res.Get("results.0.context")
		if len(cx.Get("events_before").Array()) != 1 || cx.Get("events_before.0.event_id").Str != a1 ||
			cx.Get("events_after.0.content.body").Str != "nothing to see here" {
			t.Fatalf("context: %s", cx.Raw)
		}
		if cx.Get("profile_info."+gjsonKey(bob.userID)+".displayname").Str != "Bobby" ||
			cx.Get("profile_info."+gjsonKey(alice.userID)+".displayname").Str != "Alice Liddell" {
			t.Errorf("profile_info: %s", cx.Get("profile_info").Raw)
		}
		for _, tok := range []string{cx.Get("start").Str, cx.Get("end").Str} {
			bob.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room1)+"/messages?dir=b&limit=1&from="+url.QueryEscape(tok), nil)
		}
		state := res.Get("state." + gjsonKey(room1))
		if !strings.Contains(state.Raw, `"m.room.create"`) {
			t.Errorf("include_state: %s", res.Get("state").Raw)
		}

		// Groups, and paging inside one group.
		res = bob.roomEvents(map[string]any{"search_term": "martian", "order_by": "recent", "filter": map[string]any{"limit": 2},
			"groupings": map[string]any{"group_by": []any{map[string]any{"key": "room_id"}, map[string]any{"key": "sender"}}}}, "")
		g1 := res.Get("groups.room_id." + gjsonKey(room1))
		g2 := res.Get("groups.room_id." + gjsonKey(room2))
		if g2.Get("order").Int() != 1 || g1.Get("order").Int() != 2 || g2.Get("results.0").Str != c1 || g1.Get("results.0").Str != b1 {
			t.Fatalf("groups: %s", res.Get("groups").Raw)
		}
		if g2.Get("next_batch").Exists() || !g1.Get("next_batch").Exists() {
			t.Fatalf("group next_batch: %s", res.Get("groups").Raw)
		}
		if s := res.Get("groups.sender." + gjsonKey(bob.userID) + ".results.0").Str; s != b1 {
			t.Errorf("sender group: %s", res.Get("groups.sender").Raw)
		}
		res = bob.roomEvents(map[string]any{"search_term": "martian", "order_by": "recent", "filter": map[string]any{"limit": 2},
			"groupings": map[string]any{"group_by": []any{map[string]any{"key": "room_id"}}}}, g1.Get("next_batch").Str)
		if got := resultIDs(res); !equalStrings(got, []string{a1}) || res.Get("next_batch").Exists() {
			t.Fatalf("group page: %v %s", got, res.Raw)
		}

		// A redacted event is not found.
		alice.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room1)+"/redact/"+url.PathEscape(a1)+"/r1", map[string]any{})
		if got := resultIDs(bob.roomEvents(map[string]any{"search_term": "coming"}, "")); len(got) != 0 {
			t.Fatalf("redacted event found: %v", got)
		}
		// After leaving, bob still finds what he saw, but not what came later.
		bob.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room1)+"/leave", map[string]any{})
		alice.send(room1, "martian news after bob left")
		if got := resultIDs(bob.roomEvents(map[string]any{"search_term": "martian", "order_by": "recent"}, "")); !equalStrings(got, []string{c1, b1}) {
			t.Fatalf("after leaving: %v", got)
		}
		// alice sees her room's messages, not carol's private room.
		if got := resultIDs(alice.roomEvents(map[string]any{"search_term": "martian", "order_by": "recent"}, "")); len(got) != 2 {
			t.Fatalf("alice: %v", got)
		}

		// Bad requests.
		for _, body := range []any{
			map[string]any{},
			map[string]any{"search_categories": map[string]any{"room_events": map[string]any{}}},
			map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x", "order_by": "best"}}},
			map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x", "keys": []string{"content.url"}}}},
			map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": 5}}},
		} {
			if st, res := bob.do("POST", searchPath(""), body); st != 400 {
				t.Errorf("%v: status %d %s", body, st, res.Raw)
			}
		}
		if st, _ := bob.do("POST", searchPath("garbage!"), map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x"}}}); st != 400 {
			t.Errorf("bad next_batch: %d", st)
		}
		if st, _ := (&client{t: t, base: ts.base}).do("POST", searchPath(""), map[string]any{}); st != 401 {
			t.Errorf("no token: %d", st)
		}
	})
}

func TestUserDirectory(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice, bob, carol, dave := ts.register("alice"), ts.register("bob"), ts.register("carol"), ts.register("dave")
		alice.setName("Alice Liddell")
		bob.setName("Bobby Tables")
		carol.setName("Carol Alicia")
		dave.setName("Dave Alison")
		find := func(c *client, term string, limit int) []string {
			t.Helper()
			body := map[string]any{"search_term": term}
			if limit > 0 {
				body["limit"] = limit
			}
			res := c.must("POST", "/_matrix/client/v3/user_directory/search", body)
			out := []string{}
			for _, r := range res.Get("results").Array() {
				out = append(out, r.Get("user_id").Str+"="+r.Get("display_name").Str)
			}
			if res.Get("limited").Bool() {
				out = append(out, "...")
			}
			return out
		}
		check := func(c *client, term string, want ...string) {
			t.Helper()
			if want == nil {
				want = []string{}
			}
			if got := find(c, term, 0); !equalStrings(got, want) {
				t.Errorf("%s searching %q: got %v, want %v", c.userID, term, got, want)
			}
		}
		// alice and bob share a private room; carol is alone in a public
		// room; dave alone in a private one.
		priv := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat"}).Get("room_id").Str
		alice.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(priv)+"/invite", map[string]any{"user_id": bob.userID})
		bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(priv), nil)
		carol.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})
		daves := dave.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat"}).Get("room_id").Str

		check(bob, "ali", "@alice:test.local=Alice Liddell", "@carol:test.local=Carol Alicia")
		check(bob, "LIDDELL", "@alice:test.local=Alice Liddell")
		check(bob, "alice", "@alice:test.local=Alice Liddell") // by localpart
		check(bob, "@alice:test.local", "@alice:test.local=Alice Liddell")
		check(bob, "dave")
		check(bob, "bobby") // himself: he is in no public room
		check(dave, "bob")
		check(dave, "carol", "@carol:test.local=Carol Alicia")
		if got := find(bob, "ali", 1); !equalStrings(got, []string{"@alice:test.local=Alice Liddell", "..."}) {
			t.Errorf("limit 1: %v", got)
		}
		if st, _ := bob.do("POST", "/_matrix/client/v3/user_directory/search", map[string]any{"limit": 3}); st != 400 {
			t.Errorf("no search_term: %d", st)
		}

		// A new display name is found; the old one no longer.
		alice.setName("Alys")
		check(bob, "alys", "@alice:test.local=Alys")
		check(bob, "liddell")
		// A room made public shows its members.
		dave.setState(daves, "m.room.join_rules", map[string]any{"join_rule": "public"})
		check(bob, "dave", "@dave:test.local=Dave Alison")
		dave.setState(daves, "m.room.join_rules", map[string]any{"join_rule": "invite"})
		check(bob, "dave")
		// Leaving the shared room hides alice from bob.
		bob.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(priv)+"/leave", map[string]any{})
		check(bob, "alys")
	})
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// gjsonKey escapes a map key for a gjson path.
func gjsonKey(k string) string {
	r := strings.NewReplacer(".", `\.`, "*", `\*`, "?", `\?`, "|", `\|`, "#", `\#`, "@", `\@`, ":", `\:`)
	return r.Replace(k)
}
