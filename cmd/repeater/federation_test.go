package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"repeater/storage/storagetest"
)

// fedNet starts n servers named s0.test, s1.test, ... on loopback, each
// knowing the others' addresses as static peers.
func fedNet(t testing.TB, n int) []*testServer {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = l.Addr().String()
		l.Close()
	}
	peers := map[string]string{}
	for i, a := range addrs {
		peers[fmt.Sprintf("s%d.test", i)] = "http://" + a
	}
	var out []*testServer
	for i := range n {
		var dsn string
		for _, d := range storagetest.Dialects(t) {
			dsn = d // any one dialect; federation logic is not SQL-specific
			break
		}
		cfg := newTestConfig(t, dsn)
		cfg.ServerName = fmt.Sprintf("s%d.test", i)
		cfg.Listen = addrs[i]
		cfg.Federation.Peers = peers
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		out = append(out, startTestServer(t, cfg))
	}
	return out
}

// eventually retries f until it returns true or the deadline passes.
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if f() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// timelineBodies returns the message bodies in a user's room timeline,
// paginating /messages back from the latest event.
func timelineBodies(c *client, roomID string) []string {
	res := c.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=1000", nil)
	var out []string
	chunk := res.Get("chunk").Array()
	for i := len(chunk) - 1; i >= 0; i-- {
		if chunk[i].Get("type").Str == "m.room.message" {
			out = append(out, chunk[i].Get("content.body").Str)
		}
	}
	return out
}

func TestFederationJoinAndMessages(t *testing.T) {
	srv := fedNet(t, 2)
	alice := srv[0].register("alice")
	bob := srv[1].register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "room_alias_name": "hall", "name": "The Hall", "visibility": "public"}).Get("room_id").Str
	alice.send(roomID, "before bob")

	// Bob finds it in alice's server's public room directory.
	dir := bob.must("GET", "/_matrix/client/v3/publicRooms?server=s0.test", nil)
	if dir.Get("chunk.0.room_id").Str != roomID || dir.Get("chunk.0.name").Str != "The Hall" {
		t.Fatalf("remote public rooms: %s", dir.Raw)
	}
	alice.must("PUT", "/_matrix/client/v3/profile/"+url.PathEscape(alice.userID)+"/displayname", map[string]any{"displayname": "Alice A"})
	if p := bob.must("GET", "/_matrix/client/v3/profile/"+url.PathEscape(alice.userID), nil); p.Get("displayname").Str != "Alice A" {
		t.Fatalf("remote profile: %s", p.Raw)
	}

	// Bob joins through the alias on alice's server.
	res := bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape("#hall:s0.test"), map[string]any{})
	if res.Get("room_id").Str != roomID {
		t.Fatalf("joined %s, want %s", res.Get("room_id").Str, roomID)
	}
	sync := bob.must("GET", "/_matrix/client/v3/sync", nil)
	room := sync.Get("rooms.join." + gjson.Escape(roomID))
	if !room.Exists() {
		t.Fatalf("bob's sync lacks the room: %s", sync.Raw)
	}
	name := bob.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.name", nil)
	if name.Get("name").Str != "The Hall" {
		t.Fatalf("room name on bob's server: %s", name.Raw)
	}
	// Alice's server sees bob joined.
	eventually(t, "bob joined on alice's server", func() bool {
		m := alice.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/joined_members", nil)
		return m.Get("joined." + gjson.Escape(bob.userID)).Exists()
	})

	// Messages flow both ways.
	alice.send(roomID, "hello bob")
	eventually(t, "alice's message on bob's server", func() bool {
		b := timelineBodies(bob, roomID)
		return len(b) > 0 && b[len(b)-1] == "hello bob"
	})
	oops := bob.send(roomID, "hello alice")
	eventually(t, "bob's message on alice's server", func() bool {
		b := timelineBodies(alice, roomID)
		return len(b) > 0 && b[len(b)-1] == "hello alice"
	})
	// A redaction from the sender's server applies on the other server.
	red := bob.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/redact/"+url.PathEscape(oops)+"/r1", map[string]any{}).Get("event_id").Str
	eventually(t, "bob's redaction applied on alice's server", func() bool {
		st, ev := alice.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(oops), nil)
		return st == 200 && ev.Get("unsigned.redacted_by").Str == red && !ev.Get("content.body").Exists()
	})
	// Bob's incremental sync delivers alice's next message.
	since := bob.must("GET", "/_matrix/client/v3/sync", nil).Get("next_batch").Str
	alice.send(roomID, "are you there?")
	eventually(t, "alice's message in bob's incremental sync", func() bool {
		s := bob.must("GET", "/_matrix/client/v3/sync?timeout=1000&since="+since, nil)
		for _, ev := range s.Get("rooms.join." + gjson.Escape(roomID) + ".timeline.events").Array() {
			if ev.Get("content.body").Str == "are you there?" {
				return true
			}
		}
		if nb := s.Get("next_batch").Str; nb != "" {
			since = nb
		}
		return false
	})
}

// Typing, read receipts and presence cross servers (EDUs).
func TestFederationEDUs(t *testing.T) {
	srv := fedNet(t, 2)
	alice := srv[0].register("alice")
	bob := srv[1].register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Get("room_id").Str
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=s0.test", map[string]any{})
	eventID := alice.send(roomID, "read me")
	eventually(t, "message on bob's server", func() bool { return len(timelineBodies(bob, roomID)) == 1 })

	room := "rooms.join." + gjson.Escape(roomID)
	alice.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/typing/"+url.PathEscape(alice.userID), map[string]any{"typing": true, "timeout": 10000})
	eventually(t, "alice typing on bob's server", func() bool {
		s := bob.must("GET", "/_matrix/client/v3/sync", nil)
		for _, e := range s.Get(room + ".ephemeral.events").Array() {
			if e.Get("type").Str == "m.typing" && e.Get("content.user_ids.0").Str == alice.userID {
				return true
			}
		}
		return false
	})
	bob.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/receipt/m.read/"+url.PathEscape(eventID), map[string]any{})
	eventually(t, "bob's receipt on alice's server", func() bool {
		s := alice.must("GET", "/_matrix/client/v3/sync", nil)
		for _, e := range s.Get(room + ".ephemeral.events").Array() {
			if e.Get("type").Str == "m.receipt" && e.Get("content."+gjson.Escape(eventID)+".m\\.read."+gjson.Escape(bob.userID)).Exists() {
				return true
			}
		}
		return false
	})
	bob.must("PUT", "/_matrix/client/v3/presence/"+url.PathEscape(bob.userID)+"/status", map[string]any{"presence": "online", "status_msg": "on the air"})
	eventually(t, "bob's presence on alice's server", func() bool {
		st, p := alice.do("GET", "/_matrix/client/v3/presence/"+url.PathEscape(bob.userID)+"/status", nil)
		return st == 200 && p.Get("presence").Str == "online" && p.Get("status_msg").Str == "on the air"
	})
}

// Invites to users on another server: accept (join through the inviter's
// server) and reject (send_leave through it).
func TestFederationInvites(t *testing.T) {
	srv := fedNet(t, 2)
	alice := srv[0].register("alice")
	bob := srv[1].register("bob")
	carol := srv[1].register("carol")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "name": "Secret"}).Get("room_id").Str
	path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID)
	bobSince := bob.must("GET", "/_matrix/client/v3/sync", nil).Get("next_batch").Str
	alice.must("POST", path+"/invite", map[string]any{"user_id": bob.userID})
	// The invite reaches bob's incremental sync (woken at once).
	incr := bob.must("GET", "/_matrix/client/v3/sync?timeout=5000&since="+url.QueryEscape(bobSince), nil)
	if !incr.Get("rooms.invite." + gjson.Escape(roomID)).Exists() {
		t.Fatalf("invite not in bob's incremental sync: %s", incr.Get("rooms").Raw)
	}
	alice.must("POST", path+"/invite", map[string]any{"user_id": carol.userID})

	inv := bob.must("GET", "/_matrix/client/v3/sync", nil).Get("rooms.invite." + gjson.Escape(roomID) + ".invite_state.events")
	sawName, sawInvite := false, false
	for _, e := range inv.Array() {
		sawName = sawName || (e.Get("type").Str == "m.room.name" && e.Get("content.name").Str == "Secret")
		sawInvite = sawInvite || (e.Get("type").Str == "m.room.member" && e.Get("state_key").Str == bob.userID && e.Get("content.membership").Str == "invite")
	}
	if !sawName || !sawInvite {
		t.Fatalf("bob's invite state: %s", inv.Raw)
	}
	// The room is private: bob joins through the invite.
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{})
	// His first sync of the room carries its state, though the invite came
	// before his server held any (a client must see m.room.encryption, say).
	joined := bob.must("GET", "/_matrix/client/v3/sync", nil).Get("rooms.join." + gjson.Escape(roomID))
	types := map[string]bool{}
	for _, e := range append(joined.Get("state.events").Array(), joined.Get("timeline.events").Array()...) {
		types[e.Get("type").Str] = true
	}
	if !types["m.room.create"] || !types["m.room.name"] || !types["m.room.power_levels"] {
		t.Fatalf("bob's first sync of the room lacks its state: %s", joined.Raw)
	}
	alice.send(roomID, "welcome")
	eventually(t, "alice's message on bob's server", func() bool {
		b := timelineBodies(bob, roomID)
		return len(b) > 0 && b[len(b)-1] == "welcome"
	})

	// Carol declines.
	since := carol.must("GET", "/_matrix/client/v3/sync", nil).Get("next_batch").Str
	carol.must("POST", path+"/leave", map[string]any{})
	eventually(t, "carol's rejection on alice's server", func() bool {
		st, ev := alice.do("GET", path+"/state/m.room.member/"+url.PathEscape(carol.userID), nil)
		return st == 200 && ev.Get("membership").Str == "leave"
	})
	s := carol.must("GET", "/_matrix/client/v3/sync?since="+since, nil)
	if !s.Get("rooms.leave."+gjson.Escape(roomID)).Exists() || s.Get("rooms.invite."+gjson.Escape(roomID)).Exists() {
		t.Fatalf("carol's sync after declining: %s", s.Get("rooms").Raw)
	}
}

// paginateAll pages /messages backwards from the latest event to the start
// of the room, returning every event in order (oldest first).
func paginateAll(t testing.TB, c *client, roomID string, limit int) []gjson.Result {
	t.Helper()
	var all []gjson.Result
	from := ""
	for i := 0; i < 1000; i++ {
		q := fmt.Sprintf("/_matrix/client/v3/rooms/%s/messages?dir=b&limit=%d", url.PathEscape(roomID), limit)
		if from != "" {
			q += "&from=" + url.QueryEscape(from)
		}
		res := c.must("GET", q, nil)
		chunk := res.Get("chunk").Array()
		for _, e := range chunk {
			all = append([]gjson.Result{e}, all...)
		}
		end := res.Get("end").Str
		if len(chunk) == 0 || end == "" {
			return all
		}
		from = end
	}
	t.Fatal("pagination did not end")
	return nil
}

// checkCompleteHistory asserts a user sees msgs messages, each once, and
// the room's create event.
func checkCompleteHistory(t *testing.T, c *client, roomID string, msgs int) {
	t.Helper()
	evs := paginateAll(t, c, roomID, 100)
	seen := map[string]int{}
	bodies := map[string]bool{}
	creates := 0
	for _, e := range evs {
		seen[e.Get("event_id").Str]++
		if e.Get("type").Str == "m.room.create" {
			creates++
		}
		if e.Get("type").Str == "m.room.message" {
			bodies[e.Get("content.body").Str] = true
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s seen %d times", id, n)
		}
	}
	if creates != 1 {
		t.Errorf("m.room.create seen %d times", creates)
	}
	for i := range msgs {
		if !bodies[fmt.Sprintf("m%d", i)] {
			t.Fatalf("message m%d missing from %s's history (%d events seen)", i, c.userID, len(evs))
		}
	}
}

// A server that joins late gets the whole history by backfill: on demand
// as its user paginates, or in the background in full mode.
func TestFederationBackfill(t *testing.T) {
	srv := fedNet(t, 3)
	alice := srv[0].register("alice")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Get("room_id").Str
	const n = 250
	for i := range n {
		alice.send(roomID, fmt.Sprintf("m%d", i))
	}
	// On demand.
	bob := srv[1].register("bob")
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=s0.test", map[string]any{})
	checkCompleteHistory(t, bob, roomID, n)

	// Full: the history arrives without any client paging.
	srv[2].srv.cfg.Federation.Backfill = "full"
	carol := srv[2].register("carol")
	carol.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=s0.test", map[string]any{})
	eventually(t, "full backfill", func() bool {
		gaps, err := srv[2].srv.rs.Gaps(context.Background(), roomID)
		return err == nil && len(gaps) == 0
	})
	checkCompleteHistory(t, carol, roomID, n)
}

// A server that is down while 1,000 messages are sent catches up with no
// gaps once it is back, without waiting out its peer's backoff.
func TestFederationCatchUpAfterOutage(t *testing.T) {
	srv := fedNet(t, 2)
	alice := srv[0].register("alice")
	bob := srv[1].register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Get("room_id").Str
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=s0.test", map[string]any{})
	eventually(t, "bob joined on alice's server", func() bool {
		m := alice.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/joined_members", nil)
		return m.Get("joined." + gjson.Escape(bob.userID)).Exists()
	})

	cfg := srv[1].cfg
	srv[1].stop()
	const n = 1000
	for i := range n {
		alice.send(roomID, fmt.Sprintf("m%d", i))
	}
	// Let alice's server fail a few times and back off.
	time.Sleep(3 * time.Second)
	back := startTestServer(t, cfg)
	bob.base = back.base
	http.DefaultClient.CloseIdleConnections()
	start := time.Now()
	deadline := start.Add(60 * time.Second)
	for {
		b := timelineBodies(bob, roomID)
		if len(b) > 0 && b[len(b)-1] == fmt.Sprintf("m%d", n-1) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob's server did not catch up within 60 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("caught up %d messages in %v", n, time.Since(start).Round(time.Millisecond))
	checkCompleteHistory(t, bob, roomID, n)
}

// Knocking on a room hosted on another server, then being let in.
func TestFederationKnock(t *testing.T) {
	srv := fedNet(t, 2)
	alice := srv[0].register("alice")
	bob := srv[1].register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "name": "Knock Knock",
		"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}}}).Get("room_id").Str
	path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID)
	bob.must("POST", "/_matrix/client/v3/knock/"+url.PathEscape(roomID)+"?server_name=s0.test", map[string]any{"reason": "let me in"})
	ks := bob.must("GET", "/_matrix/client/v3/sync", nil).Get("rooms.knock." + gjson.Escape(roomID) + ".knock_state.events")
	sawName := false
	for _, e := range ks.Array() {
		sawName = sawName || e.Get("content.name").Str == "Knock Knock"
	}
	if !sawName {
		t.Fatalf("bob's knock state: %s", ks.Raw)
	}
	m := alice.must("GET", path+"/state/m.room.member/"+url.PathEscape(bob.userID), nil)
	if m.Get("membership").Str != "knock" || m.Get("reason").Str != "let me in" {
		t.Fatalf("bob's membership on alice's server: %s", m.Raw)
	}
	alice.must("POST", path+"/invite", map[string]any{"user_id": bob.userID})
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=s0.test", map[string]any{})
	alice.send(roomID, "come in")
	eventually(t, "message after knock", func() bool {
		b := timelineBodies(bob, roomID)
		return len(b) > 0 && b[len(b)-1] == "come in"
	})
}

// Users who come to share a room across servers learn each other's
// presence at once, without waiting for it to change.
func TestFederationPresenceOnJoin(t *testing.T) {
	srv := fedNet(t, 2)
	alice := srv[0].register("alice")
	bob := srv[1].register("bob")
	alice.must("PUT", "/_matrix/client/v3/presence/"+url.PathEscape(alice.userID)+"/status", map[string]any{"presence": "online", "status_msg": "alice here"})
	bob.must("PUT", "/_matrix/client/v3/presence/"+url.PathEscape(bob.userID)+"/status", map[string]any{"presence": "unavailable", "status_msg": "bob away"})
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Get("room_id").Str
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=s0.test", map[string]any{})
	see := func(viewer *client, user, state, msg string) {
		t.Helper()
		eventually(t, viewer.userID+" sees "+user+"'s presence", func() bool {
			st, p := viewer.do("GET", "/_matrix/client/v3/presence/"+url.PathEscape(user)+"/status", nil)
			return st == 200 && p.Get("presence").Str == state && p.Get("status_msg").Str == msg && p.Get("last_active_ago").Exists()
		})
	}
	see(bob, alice.userID, "online", "alice here")
	see(alice, bob.userID, "unavailable", "bob away")
}

// A space's hierarchy includes child rooms held locally and, through
// federation, child rooms only another server is in.
func TestFederationSpaceHierarchy(t *testing.T) {
	srv := fedNet(t, 2)
	alice := srv[0].register("alice")
	bob := srv[1].register("bob")
	space := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "Space",
		"creation_content": map[string]any{"type": "m.space"}}).Get("room_id").Str
	local := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "Local child"}).Get("room_id").Str
	remote := bob.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "Remote child"}).Get("room_id").Str
	hidden := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "name": "Private"}).Get("room_id").Str
	for child, via := range map[string]string{local: "s0.test", remote: "s1.test", hidden: "s0.test"} {
		alice.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(space)+"/state/m.space.child/"+url.PathEscape(child), map[string]any{"via": []string{via}})
	}
	// Bob's server is not in the space: it asks alice's.
	h := bob.must("GET", "/_matrix/client/v1/rooms/"+url.PathEscape(space)+"/hierarchy", nil)
	names := map[string]bool{}
	for _, r := range h.Get("rooms").Array() {
		names[r.Get("name").Str] = true
	}
	if !names["Space"] || !names["Local child"] || !names["Remote child"] || names["Private"] {
		t.Fatalf("bob's view of the hierarchy: %s", h.Raw)
	}
	h = alice.must("GET", "/_matrix/client/v1/rooms/"+url.PathEscape(space)+"/hierarchy?limit=2", nil)
	if len(h.Get("rooms").Array()) != 2 || h.Get("next_batch").Str == "" || h.Get("rooms.0.room_type").Str != "m.space" {
		t.Fatalf("first page: %s", h.Raw)
	}
	h2 := alice.must("GET", "/_matrix/client/v1/rooms/"+url.PathEscape(space)+"/hierarchy?limit=2&from="+h.Get("next_batch").Str, nil)
	if n := len(h2.Get("rooms").Array()); n != 2 { // alice sees the private room she is in
		t.Fatalf("second page: %s", h2.Raw)
	}
}

// A server acts as a notary for another's keys: the answer is the other
// server's own signed response with the notary's signature added, and it
// is still served when the other server cannot be reached.
func TestFederationNotary(t *testing.T) {
	srv := fedNet(t, 2)
	anon := &client{t: t, base: srv[0].base}
	check := func() {
		t.Helper()
		res := anon.must("GET", "/_matrix/key/v2/query/s1.test", nil)
		k := res.Get("server_keys.0")
		if k.Get("server_name").Str != "s1.test" || !k.Get("signatures.s1\\.test").Exists() || !k.Get("signatures.s0\\.test").Exists() {
			t.Fatalf("notary answer: %s", res.Raw)
		}
	}
	check()
	srv[1].stop()
	check()
}

// End-to-end encryption between two servers: device-list changes, key
// queries and claims, and to-device messages cross over federation, the
// keys exactly as their owner signed them.
func TestFederationE2EE(t *testing.T) {
	srv := fedNet(t, 2)
	alice := srv[0].register("alice")
	bob := srv[1].register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Get("room_id").Str
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=s0.test", map[string]any{})
	bobDev := bob.must("GET", "/_matrix/client/v3/account/whoami", nil).Get("device_id").Str
	since := alice.must("GET", "/_matrix/client/v3/sync", nil).Get("next_batch").Str
	deviceKeys := map[string]any{"user_id": bob.userID, "device_id": bobDev, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
		"keys": map[string]any{"ed25519:" + bobDev: "edkey"}, "signatures": map[string]any{bob.userID: map[string]any{"ed25519:" + bobDev: "sig"}}}
	bob.must("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": deviceKeys,
		"one_time_keys": map[string]any{"signed_curve25519:AAAA": map[string]any{"key": "otk"}}})
	eventually(t, "bob's device change in alice's sync", func() bool {
		s := alice.must("GET", "/_matrix/client/v3/sync?timeout=1000&since="+url.QueryEscape(since), nil)
		for _, u := range s.Get("device_lists.changed").Array() {
			if u.Str == bob.userID {
				return true
			}
		}
		if nb := s.Get("next_batch").Str; nb != "" {
			since = nb
		}
		return false
	})
	q := alice.must("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{bob.userID: []string{}}})
	k := q.Get("device_keys." + gjson.Escape(bob.userID) + "." + bobDev)
	if k.Get("keys.ed25519:"+bobDev).Str != "edkey" || k.Get("signatures."+gjson.Escape(bob.userID)+".ed25519:"+bobDev).Str != "sig" {
		t.Fatalf("remote key query: %s", q.Raw)
	}
	c := alice.must("POST", "/_matrix/client/v3/keys/claim", map[string]any{"one_time_keys": map[string]any{bob.userID: map[string]any{bobDev: "signed_curve25519"}}})
	if c.Get("one_time_keys."+gjson.Escape(bob.userID)+"."+bobDev+".signed_curve25519:AAAA.key").Str != "otk" {
		t.Fatalf("remote key claim: %s", c.Raw)
	}
	bobSince := bob.must("GET", "/_matrix/client/v3/sync", nil).Get("next_batch").Str
	alice.must("PUT", "/_matrix/client/v3/sendToDevice/m.room.encrypted/x1", map[string]any{"messages": map[string]any{bob.userID: map[string]any{bobDev: map[string]any{"ciphertext": "secret"}}}})
	eventually(t, "alice's to-device message on bob's device", func() bool {
		s := bob.must("GET", "/_matrix/client/v3/sync?timeout=1000&since="+url.QueryEscape(bobSince), nil)
		for _, e := range s.Get("to_device.events").Array() {
			if e.Get("sender").Str == alice.userID && e.Get("content.ciphertext").Str == "secret" {
				return true
			}
		}
		return false
	})
}
