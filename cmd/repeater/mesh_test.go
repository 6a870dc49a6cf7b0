package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"testing"

	"github.com/tidwall/gjson"

	"repeater/internal/config"
	"repeater/internal/linksim"
	"repeater/storage/storagetest"
)

// meshNode describes one node of a test mesh.
type meshNode struct {
	name, callsign string
	unsigned       bool
	trusted        []string // part97.trusted_peers; default loopback
}

// startMesh starts amateur-radio nodes on loopback with a linksim link
// (shaping, failures, capture) between every ordered pair: node A reaches
// node X through Link(A, X). Nodes listen on ports of their own choosing;
// the links are pointed at them once they listen. configure adjusts each
// node's config before it starts.
func startMesh(t testing.TB, nodes []meshNode, opts linksim.Options, configure func(i int, cfg *config.Config, m *linksim.Mesh)) (*linksim.Mesh, []*testServer) {
	t.Helper()
	names := make([]string, len(nodes))
	placeholders := map[string]string{}
	for i, n := range nodes {
		names[i], placeholders[n.name] = n.name, "127.0.0.1:1" // until the node listens
	}
	m, err := linksim.NewMesh(names, placeholders, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	var out []*testServer
	for i, n := range nodes {
		var dsn string
		for _, d := range storagetest.Dialects(t) {
			dsn = d // each node its own database, of either dialect
			break
		}
		cfg := meshConfig(t, newTestConfig(t, dsn), n.callsign)
		cfg.ServerName = n.name
		cfg.Part97.UnsignedEvents = n.unsigned
		if n.trusted != nil {
			cfg.Part97.TrustedPeers = n.trusted
		}
		cfg.Federation.Backfill = "full"
		configure(i, cfg, m)
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		cfg.Part97.PollSeconds = 1 // below what operators may set: tests do not wait minutes
		out = append(out, startMeshNode(t, m, cfg))
	}
	return m, out
}

// startMeshNode starts (or restarts) a node and points the links to it at
// its address.
func startMeshNode(t testing.TB, m *linksim.Mesh, cfg *config.Config) *testServer {
	t.Helper()
	ts := startTestServer(t, cfg)
	if err := m.SetTarget(cfg.ServerName, ts.srv.addrs()[0]); err != nil {
		t.Fatal(err)
	}
	return ts
}

// meshNet is a mesh whose nodes know each other as static peers.
func meshNet(t testing.TB, nodes []meshNode, opts linksim.Options) (*linksim.Mesh, []*testServer) {
	t.Helper()
	return startMesh(t, nodes, opts, func(i int, cfg *config.Config, m *linksim.Mesh) {
		cfg.Federation.Peers = map[string]string{}
		for _, other := range nodes {
			if other.name != cfg.ServerName {
				cfg.Federation.Peers[other.name] = m.URL(cfg.ServerName, other.name)
			}
		}
	})
}

// storedJSON is an event as a node stores (and relays) it.
func storedJSON(t *testing.T, ts *testServer, eventID string) gjson.Result {
	t.Helper()
	e, err := ts.srv.db.EventByID(context.Background(), eventID)
	if err != nil {
		t.Fatalf("%s does not hold %s: %v", ts.cfg.ServerName, eventID, err)
	}
	return gjson.ParseBytes(e.JSON)
}

// checkCleanAir asserts that nothing encrypted, and (when unsigned) nothing
// signed, crossed the links: in the raw bytes no TLS, and in what the HTTP
// messages say (bodies decompressed) no encrypted event, no https link,
// and with unsigned events no signatures key and no X-Matrix header. It
// returns how many bodies crossed gzip-compressed.
func checkCleanAir(t *testing.T, m *linksim.Mesh, unsigned bool) int {
	t.Helper()
	if m.CaptureTruncated() {
		t.Fatal("capture truncated: cannot vouch for what crossed")
	}
	streams := m.Streams()
	if len(streams) == 0 {
		t.Fatal("nothing captured")
	}
	var said bytes.Buffer
	compressed := 0
	for _, s := range streams {
		// A TLS connection opens with a handshake record: 0x16 0x03 0x0X.
		if len(s) >= 3 && s[0] == 0x16 && s[1] == 0x03 {
			t.Errorf("a TLS handshake crossed a link")
		}
		text, n, err := linksim.HTTPText(s)
		if err != nil {
			t.Errorf("a stream is not plain HTTP: %v", err)
		}
		compressed += n
		said.Write(text)
		said.WriteByte('\n')
	}
	bad := []string{"m.room.encrypted", "m.megolm", "https://"}
	if unsigned {
		bad = append(bad, `"signatures"`, "X-Matrix")
	}
	for _, b := range bad {
		if bytes.Contains(said.Bytes(), []byte(b)) {
			t.Errorf("%s crossed a link", b)
		}
	}
	if !bytes.Contains(said.Bytes(), []byte("/_matrix/federation/")) {
		t.Error("the decoded capture holds no federation request: the check would see nothing")
	}
	return compressed
}

// A room shared by a node that signs and two that do not: joins through
// either kind, messages both ways, backfill of the whole history, and the
// record of who relayed each event (§97.219).
func TestPart97MixedSigning(t *testing.T) {
	m, srv := meshNet(t, []meshNode{
		{name: "k5dlq.local.mesh", callsign: "K5DLQ", unsigned: true},
		{name: "kn6plv.local.mesh", callsign: "KN6PLV"},
		{name: "w1aw.local.mesh", callsign: "W1AW", unsigned: true},
	}, linksim.Options{Capture: true})
	a, b, c := srv[0].register("k5dlq"), srv[1].register("kn6plv"), srv[2].register("w1aw")
	roomID := a.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "room_alias_name": "net"}).Get("room_id").Str
	for i := range 30 {
		a.send(roomID, fmt.Sprintf("m%d", i))
	}
	// The signing node joins through the unsigned one, by alias.
	b.must("POST", "/_matrix/client/v3/join/"+url.PathEscape("#net:k5dlq.local.mesh"), map[string]any{})
	for i := 30; i < 40; i++ {
		b.send(roomID, fmt.Sprintf("m%d", i))
	}
	// The second unsigned node joins through the signing one.
	c.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=kn6plv.local.mesh", map[string]any{})
	for i := 40; i < 50; i++ {
		c.send(roomID, fmt.Sprintf("m%d", i))
	}
	for i, u := range []*client{a, b, c} {
		eventually(t, fmt.Sprintf("node %d holds all 50 messages", i), func() bool {
			bodies := timelineBodies(u, roomID)
			return len(bodies) == 50 && bodies[49] == "m49"
		})
		checkCompleteHistory(t, u, roomID, 50)
	}

	// As stored (and relayed): the unsigned nodes' events carry no
	// signatures but keep their content hash; the signing node's are signed.
	evs := paginateAll(t, b, roomID, 100)
	var fromA, fromB, fromC string
	for _, e := range evs {
		if e.Get("type").Str != "m.room.message" {
			continue
		}
		switch e.Get("sender").Str {
		case a.userID:
			fromA = e.Get("event_id").Str
		case b.userID:
			fromB = e.Get("event_id").Str
		case c.userID:
			fromC = e.Get("event_id").Str
		}
	}
	for _, ts := range srv {
		for _, id := range []string{fromA, fromC} {
			js := storedJSON(t, ts, id)
			if js.Get("signatures").Exists() || !js.Get("hashes.sha256").Exists() {
				t.Errorf("%s holds unsigned node's %s as %s", ts.cfg.ServerName, id, js.Raw)
			}
		}
		if js := storedJSON(t, ts, fromB); !js.Get("signatures.kn6plv\\.local\\.mesh").Exists() {
			t.Errorf("%s holds the signing node's %s without its signature", ts.cfg.ServerName, fromB)
		}
	}

	// Who relayed what: the admin API of the signing node.
	adm := srv[1].admRegisterAdmin("kn6plv-1")
	rel := adm.must("GET", "/_repeater/admin/v1/event_relays/"+url.PathEscape(fromA), nil)
	if rel.Get("relayed_by").Str != "k5dlq.local.mesh" && rel.Get("relayed_by").Str != "w1aw.local.mesh" {
		t.Errorf("relay of %s: %s", fromA, rel.Raw)
	}
	if host, _, err := net.SplitHostPort(rel.Get("relay_addr").Str); err != nil || host != "127.0.0.1" {
		t.Errorf("relay address %q", rel.Get("relay_addr").Str)
	}
	if st, _ := adm.do("GET", "/_repeater/admin/v1/event_relays/"+url.PathEscape(fromB), nil); st != 404 {
		t.Errorf("an event made here has a relay record (status %d)", st)
	}
	list := adm.must("GET", "/_repeater/admin/v1/rooms/"+url.PathEscape(roomID)+"/event_relays?limit=1000", nil)
	if n := len(list.Get("relays").Array()); n < 40 {
		t.Errorf("room relay records: %d, want every received event", n)
	}
	if st, _ := b.do("GET", "/_repeater/admin/v1/event_relays/"+url.PathEscape(fromA), nil); st != 403 {
		t.Errorf("a non-admin read relay records (status %d)", st)
	}
	if checkCleanAir(t, m, false) == 0 {
		t.Error("no body crossed compressed")
	}
}

// With every node unsigned, no signature and no X-Matrix header crosses a
// link; an untrusted server's unsigned requests and events are refused.
func TestPart97UnsignedMesh(t *testing.T) {
	m, srv := meshNet(t, []meshNode{
		{name: "k5dlq.local.mesh", callsign: "K5DLQ", unsigned: true},
		{name: "kn6plv.local.mesh", callsign: "KN6PLV", unsigned: true},
	}, linksim.Options{Capture: true})
	a, b := srv[0].register("k5dlq"), srv[1].register("kn6plv")
	roomID := a.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Get("room_id").Str
	a.send(roomID, "m0")
	b.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=k5dlq.local.mesh", map[string]any{})
	b.send(roomID, "m1")
	// An invite to the other node: the invitee's server answers unsigned.
	a2 := srv[0].register("k5dlq-2")
	dm := a2.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "invite": []string{b.userID}}).Get("room_id").Str
	eventually(t, "the invite reaches kn6plv", func() bool {
		s := b.must("GET", "/_matrix/client/v3/sync?timeout=0", nil)
		return s.Get("rooms.invite." + gjson.Escape(dm)).Exists()
	})
	b.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(dm), map[string]any{})
	b.send(dm, "73")
	eventually(t, "both messages on both nodes", func() bool {
		x, y := timelineBodies(a, roomID), timelineBodies(b, roomID)
		return len(x) == 2 && len(y) == 2 && len(timelineBodies(a2, dm)) == 1
	})
	checkCleanAir(t, m, true)
}
