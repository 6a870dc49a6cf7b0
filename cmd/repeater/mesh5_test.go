package main

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"repeater/internal/aredn"
	"repeater/internal/config"
	"repeater/internal/linksim"
)

// meshNodes are the five stations of the mesh tests.
var meshNodes = []meshNode{
	{name: "k5dlq.local.mesh", callsign: "K5DLQ", unsigned: true},
	{name: "kn6plv.local.mesh", callsign: "KN6PLV", unsigned: true},
	{name: "w1aw.local.mesh", callsign: "W1AW", unsigned: true},
	{name: "ve3abc.local.mesh", callsign: "VE3ABC", unsigned: true},
	{name: "g4xyz.local.mesh", callsign: "G4XYZ", unsigned: true},
}

// discoveredMesh starts nodes that know no peers: each polls its own fake
// AREDN node, which advertises every other node's Matrix service at the
// address of the link between them (all on loopback), and keeps the mesh
// rooms. It returns the mesh, the servers and the fake AREDN nodes.
func discoveredMesh(t *testing.T, nodes []meshNode, meshRooms []string, opts linksim.Options) (*linksim.Mesh, []*testServer, []*aredn.FakeNode) {
	t.Helper()
	var fakes []*aredn.FakeNode
	m, srv := startMesh(t, nodes, opts, func(i int, cfg *config.Config, m *linksim.Mesh) {
		fake := aredn.NewFakeNode()
		t.Cleanup(fake.Close)
		var svcs []aredn.Service
		for _, other := range nodes {
			if other.name != cfg.ServerName {
				svcs = append(svcs, aredn.Service{Name: "Matrix", Protocol: "tcp", Link: m.URL(cfg.ServerName, other.name) + "/"})
			}
		}
		svcs = append(svcs, aredn.Service{Name: "MeshChat [chat]", Protocol: "tcp", Link: "http://127.0.0.1:9/meshchat"})
		fake.SetServices(svcs)
		fakes = append(fakes, fake)
		cfg.Part97.MeshRooms = meshRooms
		cfg.Part97.ArednNode = fake.URL()
	})
	return m, srv, fakes
}

// waitFor retries f for up to d.
func waitFor(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// joinedTo reports whether c's user is in roomID.
func joinedTo(c *client, roomID string) bool {
	for _, r := range c.must("GET", "/_matrix/client/v3/joined_rooms", nil).Get("joined_rooms").Array() {
		if r.Str == roomID {
			return true
		}
	}
	return false
}

// eventIDs is every event a user can page back through, oldest first.
func eventIDs(t *testing.T, c *client, roomID string) []string {
	var ids []string
	for _, e := range paginateAll(t, c, roomID, 200) {
		ids = append(ids, e.Get("event_id").Str)
	}
	return ids
}

// Five nodes find each other through their AREDN nodes, share the mesh
// room hosted by one of them, and talk while links are partitioned,
// flap and lose connections and a node restarts; at the end every node
// holds the same complete history, each event once, and nothing encrypted
// or signed crossed any link.
func TestPart97FiveNodeMesh(t *testing.T) {
	if testing.Short() {
		t.Skip("mesh soak")
	}
	const room = "#net:k5dlq.local.mesh"
	m, srv, fakes := discoveredMesh(t, meshNodes, []string{room},
		linksim.Options{Capture: true, Bandwidth: 64 << 10, Delay: 10 * time.Millisecond, Seed: 97})
	users := make([]*client, len(srv))
	for i := range srv {
		users[i] = srv[i].register(meshNodes[i].callsign + "-1")
	}
	// Discovery, then the station accounts replicate the room and the new
	// users are joined to it.
	var roomID string
	waitFor(t, 60*time.Second, "the mesh room on the hosting node", func() bool {
		st, res, err := (&client{t: t, base: srv[0].base}).try("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape(room), nil)
		roomID = res.Get("room_id").Str
		return err == nil && st == 200 && roomID != ""
	})
	for _, u := range users {
		waitFor(t, 60*time.Second, fmt.Sprintf("%s in the mesh room", u.userID), func() bool { return joinedTo(u, roomID) })
	}
	for _, f := range fakes {
		if f.Polls() == 0 {
			t.Fatal("a node never polled its AREDN node")
		}
	}
	sent := 0
	say := func(u *client) {
		u.send(roomID, fmt.Sprintf("m%d", sent))
		sent++
	}
	for range 2 {
		for _, u := range users {
			say(u)
		}
	}

	// A partition: {0,1} | {2,3,4}; both sides talk.
	group := func(idx ...int) []string {
		var out []string
		for _, i := range idx {
			out = append(out, meshNodes[i].name)
		}
		return out
	}
	m.Partition(group(0, 1), group(2, 3, 4))
	for range 3 {
		for _, u := range users {
			say(u)
		}
	}
	// A node restarts while the partition lasts; others talk meanwhile.
	cfg3 := srv[3].cfg
	srv[3].stop()
	for _, i := range []int{0, 2, 4} {
		say(users[i])
	}
	srv[3] = startMeshNode(t, m, cfg3)
	users[3].base = srv[3].base
	say(users[3])
	// Links flap and drop connections while the mesh heals.
	m.Heal()
	m.SetLoss(0.3)
	for range 2 {
		for _, u := range users {
			say(u)
		}
		m.DropAll()
	}
	m.SetLoss(0)
	for _, u := range users {
		say(u)
	}

	// Every node ends with the same complete history, each event once,
	// within a minute of the links coming back (the promise).
	healed := time.Now()
	for i, u := range users {
		deadline := healed.Add(60 * time.Second)
		for len(timelineBodies(u, roomID)) < sent {
			if time.Now().After(deadline) {
				explainMissing(t, srv, users, i, roomID)
				t.Fatalf("node %d does not hold all %d messages", i, sent)
			}
			time.Sleep(200 * time.Millisecond)
		}
		checkCompleteHistory(t, u, roomID, sent)
	}
	ref := map[string]string{}
	for _, e := range paginateAll(t, users[0], roomID, 200) {
		ref[e.Get("event_id").Str] = e.Get("type").Str + " " + e.Get("sender").Str
	}
	for i, u := range users[1:] {
		got := map[string]bool{}
		for _, id := range eventIDs(t, u, roomID) {
			got[id] = true
		}
		for id, what := range ref {
			if !got[id] {
				t.Errorf("node %d lacks %s (%s), which node 0 holds", i+1, id, what)
			}
		}
		for id := range got {
			if ref[id] == "" {
				t.Errorf("node %d holds %s, which node 0 lacks", i+1, id)
			}
		}
	}
	t.Logf("converged %v after the last message", time.Since(healed).Round(time.Millisecond))
	checkCleanAir(t, m, true)
	t.Logf("%d messages, %d bytes over all links, %d connections", sent, m.TotalBytes(), m.TotalConns())
}

// explainMissing logs, for messages node i lacks, how each node holds them.
func explainMissing(t *testing.T, srv []*testServer, users []*client, i int, roomID string) {
	have := map[string]bool{}
	for _, b := range timelineBodies(users[i], roomID) {
		have[b] = true
	}
	for j, u := range users {
		t.Logf("node %d shows %d messages; members: %s", j, len(timelineBodies(u, roomID)),
			u.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/joined_members", nil).Get("joined|@keys").Raw)
	}
	for j, u := range users {
		if j == i {
			continue
		}
		for _, e := range paginateAll(t, u, roomID, 200) {
			b := e.Get("content.body").Str
			if e.Get("type").Str != "m.room.message" || have[b] {
				continue
			}
			have[b] = true
			id := e.Get("event_id").Str
			st, err := srv[i].srv.db.EventByID(context.Background(), id)
			if err != nil {
				t.Logf("node %d lacks %s (%s, from %s, shown by node %d): not stored", i, b, id, e.Get("sender").Str, j)
				continue
			}
			t.Logf("node %d lacks %s (%s, shown by node %d): stored outlier=%v rejected=%v pos=%d after=%d", i, b, id, j, st.Outlier, st.Rejected, st.StreamPos, st.AfterSnapshot)
		}
	}
}

// Two nodes find each other through their AREDN nodes and share the mesh
// room; a node that then disappears from the AREDN list (mesh nodes come
// and go) is kept as a peer: the conversation goes on.
func TestPart97TwoNodeDiscovery(t *testing.T) {
	const room = "#net:k5dlq.local.mesh"
	_, srv, fakes := discoveredMesh(t, meshNodes[:2], []string{room}, linksim.Options{})
	a, b := srv[0].register("k5dlq-1"), srv[1].register("kn6plv-1")
	var roomID string
	waitFor(t, 30*time.Second, "the mesh room on both nodes", func() bool {
		rooms := b.must("GET", "/_matrix/client/v3/joined_rooms", nil).Get("joined_rooms").Array()
		if len(rooms) == 0 {
			return false
		}
		roomID = rooms[0].Str
		return joinedTo(a, roomID)
	})
	a.send(roomID, "m0")
	waitFor(t, 30*time.Second, "m0 on the other node", func() bool { return len(timelineBodies(b, roomID)) == 1 })
	// The peers vanish from each other's AREDN lists; both keep talking.
	polls := []int{fakes[0].Polls(), fakes[1].Polls()}
	for _, f := range fakes {
		f.SetServices(nil)
	}
	waitFor(t, 10*time.Second, "a poll of the emptied lists", func() bool {
		return fakes[0].Polls() > polls[0] && fakes[1].Polls() > polls[1]
	})
	b.send(roomID, "m1")
	a.send(roomID, "m2")
	for _, u := range []*client{a, b} {
		waitFor(t, 30*time.Second, u.userID+" holds m0-m2", func() bool { return len(timelineBodies(u, roomID)) == 3 })
		checkCompleteHistory(t, u, roomID, 3)
	}
}
