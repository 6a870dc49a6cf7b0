package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"repeater/internal/config"
)

const rulesPath = "/_matrix/client/v3/pushrules/"

// Push rules: the defaults are served and come down /sync as account data;
// rules can be added (first by default, or before/after another), changed,
// disabled and deleted, with the changes in the user's next sync; bad paths
// and bodies are 400s and unknown rules 404s.
func TestPushRules(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		bob := ts.register("bob")
		rules := bob.must("GET", rulesPath, nil)
		if rules.Get(`global.override.#(rule_id==".m.rule.master").enabled`).Bool() || !rules.Get(`global.underride.#(rule_id==".m.rule.message")`).Exists() {
			t.Fatalf("defaults: %s", rules.Raw)
		}
		s := bob.must("GET", "/_matrix/client/v3/sync", nil)
		if !s.Get(`account_data.events.#(type=="m.push_rules").content.global.override`).IsArray() {
			t.Fatalf("no m.push_rules in the first sync: %s", s.Get("account_data").Raw)
		}
		since := s.Get("next_batch").Str

		bob.must("PUT", rulesPath+"global/content/lunch", map[string]any{"pattern": "lunch", "actions": []any{"notify", map[string]any{"set_tweak": "highlight"}}})
		bob.must("PUT", rulesPath+"global/content/tea", map[string]any{"pattern": "tea", "actions": []any{"notify"}})
		bob.must("PUT", rulesPath+"global/content/cake?after=lunch", map[string]any{"pattern": "cake", "actions": []any{"notify"}})
		var order []string
		for _, r := range bob.must("GET", rulesPath+"global/content/", nil).Array() {
			order = append(order, r.Get("rule_id").Str)
		}
		if len(order) != 4 || order[0] != "tea" || order[1] != "lunch" || order[2] != "cake" || order[3] != ".m.rule.contains_user_name" {
			t.Fatalf("content rule order: %v", order)
		}
		inc := bob.must("GET", "/_matrix/client/v3/sync?timeout=5000&since="+url.QueryEscape(since), nil)
		if n := len(inc.Get(`account_data.events.#(type=="m.push_rules").content.global.content`).Array()); n != 4 {
			t.Fatalf("rule changes not in the next sync: %s", inc.Get("account_data").Raw)
		}

		bob.must("PUT", rulesPath+"global/override/.m.rule.master/enabled", map[string]any{"enabled": true})
		if !bob.must("GET", rulesPath+"global/override/.m.rule.master/enabled", nil).Get("enabled").Bool() {
			t.Fatal("master rule not enabled")
		}
		bob.must("PUT", rulesPath+"global/underride/.m.rule.message/actions", map[string]any{"actions": []any{}})
		if a := bob.must("GET", rulesPath+"global/underride/.m.rule.message/actions", nil).Get("actions"); !a.IsArray() || len(a.Array()) != 0 {
			t.Fatalf("actions: %s", a.Raw)
		}
		bob.must("DELETE", rulesPath+"global/content/tea", nil)
		if st, _ := bob.do("GET", rulesPath+"global/content/tea", nil); st != 404 {
			t.Fatalf("deleted rule: %d", st)
		}
		r := bob.must("GET", rulesPath+"global/content/lunch", nil)
		if r.Get("pattern").Str != "lunch" || r.Get("default").Bool() || !r.Get("enabled").Bool() || r.Get("conditions").Exists() {
			t.Fatalf("rule: %s", r.Raw)
		}

		for _, c := range []struct {
			method, path string
			body         any
			status       int
		}{
			{"GET", "/_matrix/client/v3/pushrules", nil, 404},
			{"GET", rulesPath + "global", nil, 400},
			{"GET", rulesPath + "not_a_scope/", nil, 400},
			{"GET", rulesPath + "global/not_a_kind/", nil, 400},
			{"GET", rulesPath + "global/override/.m.rule.master/not_an_attr", nil, 400},
			{"GET", rulesPath + "global/override/nope", nil, 404},
			{"PUT", rulesPath + "global/override/mine", map[string]any{"actions": []any{"notify"}}, 400},
			{"PUT", rulesPath + "global/content/mine", map[string]any{"actions": []any{"notify"}}, 400},
			{"PUT", rulesPath + "global/room/!r:x", map[string]any{"actions": []any{"not_an_action"}}, 400},
			{"PUT", rulesPath + "global/underride/mine", map[string]any{"actions": []any{"notify"}, "conditions": []any{map[string]any{}}}, 400},
			{"PUT", rulesPath + "global/override/.m.rule.master/enabled", map[string]any{"enabled": "yes"}, 400},
			{"PUT", rulesPath + "global/override/.m.rule.nope/actions", map[string]any{"actions": []any{}}, 404},
			{"PUT", rulesPath + "global/content/x?before=nope", map[string]any{"pattern": "x", "actions": []any{}}, 404},
			{"PUT", rulesPath + "global/content/.mine", map[string]any{"pattern": "x", "actions": []any{}}, 400},
			{"DELETE", rulesPath + "global/override/.m.rule.master", nil, 403},
			{"PUT", rulesPath + "global/room/x", "not json", 400},
		} {
			if st, res := bob.do(c.method, c.path, c.body); st != c.status {
				t.Errorf("%s %s: %d %s, want %d", c.method, c.path, st, res.Raw, c.status)
			}
		}
	})
}

// Unread counts follow the user's own rules: a muted room counts nothing,
// a keyword highlights.
func TestUnreadCountsFollowRules(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice, bob := ts.register("alice"), ts.register("bob")
		roomID := sharedRoom(alice, bob)
		counts := func() gjson.Result {
			return bob.must("GET", "/_matrix/client/v3/sync", nil).Get("rooms.join." + gjson.Escape(roomID) + ".unread_notifications")
		}
		bob.must("PUT", rulesPath+"global/content/lunch", map[string]any{"pattern": "lun*", "actions": []any{"notify", map[string]any{"set_tweak": "highlight"}}})
		alice.send(roomID, "anyone for Lunch?")
		alice.send(roomID, "hello")
		if u := counts(); u.Get("notification_count").Int() != 2 || u.Get("highlight_count").Int() != 1 {
			t.Fatalf("with a keyword rule: %s", u.Raw)
		}
		bob.must("PUT", rulesPath+"global/room/"+url.PathEscape(roomID), map[string]any{"actions": []any{}})
		if u := counts(); u.Get("notification_count").Int() != 1 || u.Get("highlight_count").Int() != 1 {
			// The override-less keyword (content) still outranks the room rule.
			t.Fatalf("after muting the room: %s", u.Raw)
		}
		bob.must("DELETE", rulesPath+"global/content/lunch", nil)
		if u := counts(); u.Get("notification_count").Int() != 0 || u.Get("highlight_count").Int() != 0 {
			t.Fatalf("muted room without keyword: %s", u.Raw)
		}
	})
}

// gateway is a push gateway on loopback that records notifications and
// can be told to fail.
type gateway struct {
	mu     sync.Mutex
	fail   bool
	got    []gjson.Result
	badges []gjson.Result
	reject string
	srv    *http.Server
	url    string
}

func startGateway(t *testing.T) *gateway {
	g := &gateway{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.url = "http://" + l.Addr().String() + "/_matrix/push/v1/notify"
	g.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.fail || r.URL.Path != "/_matrix/push/v1/notify" {
			http.Error(w, "down", 503)
			return
		}
		if n := gjson.ParseBytes(b); n.Get("notification.event_id").Exists() {
			g.got = append(g.got, n)
		} else {
			g.badges = append(g.badges, n) // counts only: the unread badge changed
		}
		rej := []string{}
		if g.reject != "" {
			rej = append(rej, g.reject)
		}
		json.NewEncoder(w).Encode(map[string]any{"rejected": rej})
	})}
	go g.srv.Serve(l)
	t.Cleanup(func() { g.srv.Close() })
	return g
}

func (g *gateway) setFail(f bool) { g.mu.Lock(); g.fail = f; g.mu.Unlock() }

// waitFor waits until the gateway holds n notifications and returns them.
func (g *gateway) waitFor(t *testing.T, n int) []gjson.Result {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		g.mu.Lock()
		got := append([]gjson.Result(nil), g.got...)
		g.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway got %d notifications, want %d: %v", len(got), n, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An HTTP pusher: bob's phone gets a notification for alice's message with
// what the Push Gateway API carries; while the gateway is down
// notifications wait, are retried and arrive in order, also across a
// restart of the server; /notifications lists them with their read state;
// a push key the gateway rejects removes the pusher.
func TestHTTPPusher(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice, bob := ts.register("alice"), ts.register("bob")
		roomID := sharedRoom(alice, bob)
		alice.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.name", map[string]any{"name": "Lunch club"})
		gw := startGateway(t)
		pusher := map[string]any{"kind": "http", "app_id": "org.example.app", "pushkey": "phone-1", "app_display_name": "App",
			"device_display_name": "Phone", "lang": "en", "data": map[string]any{"url": gw.url, "extra": "x"}}
		bob.must("POST", "/_matrix/client/v3/pushers/set", pusher)
		if p := bob.must("GET", "/_matrix/client/v3/pushers", nil).Get("pushers.0"); p.Get("pushkey").Str != "phone-1" || p.Get("data.url").Str != gw.url {
			t.Fatalf("pushers: %s", p.Raw)
		}
		first := alice.send(roomID, "first")
		n := gw.waitFor(t, 1)[0].Get("notification")
		if n.Get("event_id").Str != first || n.Get("room_id").Str != roomID || n.Get("type").Str != "m.room.message" ||
			n.Get("sender").Str != alice.userID || n.Get("content.body").Str != "first" || n.Get("room_name").Str != "Lunch club" ||
			n.Get("counts.unread").Int() != 1 || n.Get("devices.0.pushkey").Str != "phone-1" || n.Get("devices.0.data.extra").Str != "x" ||
			n.Get("devices.0.data.url").Exists() || n.Get("prio").Str != "high" {
			t.Fatalf("notification: %s", n.Raw)
		}

		// Gateway down: two messages wait; the server restarts meanwhile.
		gw.setFail(true)
		second := alice.send(roomID, "second")
		third := alice.send(roomID, "third")
		time.Sleep(300 * time.Millisecond)
		ts.stop()
		ts = startTestServer(t, cfg)
		alice.base, bob.base = ts.base, ts.base
		gw.setFail(false)
		got := gw.waitFor(t, 3)
		if got[1].Get("notification.event_id").Str != second || got[2].Get("notification.event_id").Str != third {
			t.Fatalf("after the outage: %v", got)
		}

		// /notifications: newest first, read once the receipt passes them.
		bob.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/receipt/m.read/"+url.PathEscape(second), map[string]any{})
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			gw.mu.Lock()
			var last gjson.Result
			if len(gw.badges) > 0 {
				last = gw.badges[len(gw.badges)-1]
			}
			gw.mu.Unlock()
			if last.Get("notification.counts.unread").Exists() && last.Get("notification.counts.unread").Int() == 1 {
				break // one unread left: "third"
			}
			if time.Now().After(deadline) {
				t.Fatalf("no badge update after the receipt: %s", last.Raw)
			}
		}
		ns := bob.must("GET", "/_matrix/client/v3/notifications", nil).Get("notifications").Array()
		if len(ns) != 3 || ns[0].Get("event.event_id").Str != third || ns[0].Get("read").Bool() || !ns[1].Get("read").Bool() ||
			ns[2].Get("event.content.body").Str != "first" || ns[0].Get("actions.0").Str != "notify" || ns[0].Get("room_id").Str != roomID {
			t.Fatalf("notifications: %v", ns)
		}
		page := bob.must("GET", "/_matrix/client/v3/notifications?limit=2", nil)
		rest := bob.must("GET", "/_matrix/client/v3/notifications?from="+page.Get("next_token").Str, nil).Get("notifications").Array()
		if len(rest) != 1 || rest[0].Get("event.event_id").Str != first {
			t.Fatalf("second page: %v", rest)
		}
		alice.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/mention", map[string]any{"msgtype": "m.text",
			"body": "hey Bob", "m.mentions": map[string]any{"user_ids": []string{bob.userID}}})
		gw.waitFor(t, 4)
		if hl := bob.must("GET", "/_matrix/client/v3/notifications?only=highlight", nil).Get("notifications").Array(); len(hl) != 1 {
			t.Fatalf("highlights: %v", hl)
		}

		// The gateway forgets the push key: the pusher goes.
		gw.mu.Lock()
		gw.reject = "phone-1"
		gw.mu.Unlock()
		alice.send(roomID, "anyone?")
		deadline := time.Now().Add(10 * time.Second)
		for len(bob.must("GET", "/_matrix/client/v3/pushers", nil).Get("pushers").Array()) != 0 {
			if time.Now().After(deadline) {
				t.Fatal("rejected pusher not removed")
			}
			time.Sleep(20 * time.Millisecond)
		}

		// Bad pushers are refused; kind null deletes.
		for _, bad := range []map[string]any{
			{"kind": "http", "app_id": "a", "pushkey": "k", "app_display_name": "A", "device_display_name": "D", "lang": "en", "data": map[string]any{"url": "http://127.0.0.1:1/elsewhere"}},
			{"kind": "carrier-pigeon", "app_id": "a", "pushkey": "k", "app_display_name": "A", "device_display_name": "D", "lang": "en", "data": map[string]any{}},
			{"kind": "http", "pushkey": "k"},
		} {
			if st, res := bob.do("POST", "/_matrix/client/v3/pushers/set", bad); st != 400 {
				t.Errorf("bad pusher %v: %d %s", bad, st, res.Raw)
			}
		}
		bob.must("POST", "/_matrix/client/v3/pushers/set", pusher)
		bob.must("POST", "/_matrix/client/v3/pushers/set", map[string]any{"kind": nil, "app_id": "org.example.app", "pushkey": "phone-1"})
		if n := len(bob.must("GET", "/_matrix/client/v3/pushers", nil).Get("pushers").Array()); n != 0 {
			t.Fatalf("%d pushers after delete", n)
		}

		// A pusher goes with the session that set it.
		phone := &client{t: t, base: ts.base}
		res := phone.must("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "bob"}, "password": "pw-bob"})
		phone.token, phone.userID = res.Get("access_token").Str, res.Get("user_id").Str
		phone.must("POST", "/_matrix/client/v3/pushers/set", pusher)
		phone.must("POST", "/_matrix/client/v3/logout", map[string]any{})
		if n := len(bob.must("GET", "/_matrix/client/v3/pushers", nil).Get("pushers").Array()); n != 0 {
			t.Fatalf("%d pushers after the session that set it logged out", n)
		}
	})
}

// Per-thread counts for clients that ask for them: replies in a thread
// count for the thread, the root and other messages for the main timeline;
// a thread's receipt clears only that thread, an unthreaded one all.
func TestThreadNotificationCounts(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice, bob := ts.register("alice"), ts.register("bob")
		roomID := sharedRoom(alice, bob)
		room := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID)
		root := alice.send(roomID, "what's for lunch?")
		reply := func(txn, body string) string {
			return alice.must("PUT", room+"/send/m.room.message/"+txn, map[string]any{"msgtype": "m.text", "body": body,
				"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}}).Get("event_id").Str
		}
		r1 := reply("r1", "soup")
		reply("r2", "salad")
		filter := url.QueryEscape(`{"room":{"timeline":{"unread_thread_notifications":true}}}`)
		counts := func() (gjson.Result, gjson.Result) {
			res := bob.must("GET", "/_matrix/client/v3/sync?filter="+filter, nil).Get("rooms.join." + gjson.Escape(roomID))
			return res.Get("unread_notifications"), res.Get("unread_thread_notifications." + gjson.Escape(root))
		}
		main, thread := counts()
		if main.Get("notification_count").Int() != 1 || thread.Get("notification_count").Int() != 2 {
			t.Fatalf("before reading: main %s, thread %s", main.Raw, thread.Raw)
		}
		// Without the filter option, one count for everything.
		all := bob.must("GET", "/_matrix/client/v3/sync", nil).Get("rooms.join." + gjson.Escape(roomID))
		if all.Get("unread_notifications.notification_count").Int() != 3 || all.Get("unread_thread_notifications").Exists() {
			t.Fatalf("unthreaded counts: %s", all.Raw)
		}
		bob.must("POST", room+"/receipt/m.read/"+url.PathEscape(r1), map[string]any{"thread_id": root})
		if main, thread = counts(); main.Get("notification_count").Int() != 1 || thread.Get("notification_count").Int() != 1 {
			t.Fatalf("after reading the thread's first reply: main %s, thread %s", main.Raw, thread.Raw)
		}
		bob.must("POST", room+"/receipt/m.read/"+url.PathEscape(root), map[string]any{"thread_id": "main"})
		if main, thread = counts(); main.Get("notification_count").Int() != 0 || thread.Get("notification_count").Int() != 1 {
			t.Fatalf("after reading the main timeline: main %s, thread %s", main.Raw, thread.Raw)
		}
		last := alice.send(roomID, "done")
		bob.must("POST", room+"/receipt/m.read/"+url.PathEscape(last), map[string]any{})
		if main, thread = counts(); main.Get("notification_count").Int() != 0 || thread.Exists() && thread.Get("notification_count").Int() != 0 {
			t.Fatalf("after an unthreaded receipt: main %s, thread %s", main.Raw, thread.Raw)
		}
	})
}

// Joining the room that replaced an upgraded one carries the user's rules
// for the old room over: a muted room stays muted.
func TestPushRulesFollowRoomUpgrade(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice, bob := ts.register("alice"), ts.register("bob")
		roomID := sharedRoom(alice, bob)
		bob.must("PUT", rulesPath+"global/room/"+url.PathEscape(roomID), map[string]any{"actions": []any{}})
		newRoom := alice.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/upgrade", map[string]any{"new_version": "10"}).Get("replacement_room").Str
		bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(newRoom), nil)
		if r := bob.must("GET", rulesPath+"global/room/"+url.PathEscape(newRoom), nil); r.Get("rule_id").Str != newRoom || len(r.Get("actions").Array()) != 0 {
			t.Fatalf("rule for the new room: %s", r.Raw)
		}
		alice.send(newRoom, "hello")
		u := bob.must("GET", "/_matrix/client/v3/sync", nil).Get("rooms.join." + gjson.Escape(newRoom) + ".unread_notifications")
		if u.Get("notification_count").Int() != 0 {
			t.Fatalf("the new room is not muted: %s", u.Raw)
		}
	})
}
