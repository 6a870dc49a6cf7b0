package main

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"

	"repeater/storage/storagetest"
)

// link is a TCP proxy carrying one server's federation traffic to another;
// cutting it partitions the pair in that direction.
type link struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	stall  bool // accept connections but never answer (a hung peer)
	conns  []net.Conn
}

func newLink(t testing.TB, target string) *link {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k := &link{l: l, target: target}
	go k.serve()
	t.Cleanup(func() { l.Close(); k.setCut(true) })
	return k
}

func (k *link) serve() {
	for {
		c, err := k.l.Accept()
		if err != nil {
			return
		}
		k.mu.Lock()
		if k.cut {
			k.mu.Unlock()
			c.Close()
			continue
		}
		k.conns = append(k.conns, c)
		stall := k.stall
		k.mu.Unlock()
		if stall {
			go io.Copy(io.Discard, c) // read the request, answer nothing
			continue
		}
		go func() {
			up, err := net.Dial("tcp", k.target)
			if err != nil {
				c.Close()
				return
			}
			k.mu.Lock()
			k.conns = append(k.conns, up)
			k.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			io.Copy(c, up)
			c.Close()
		}()
	}
}

// setCut cuts (closing open connections) or restores the link.
func (k *link) setCut(cut bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.cut = cut
	if cut {
		for _, c := range k.conns {
			c.Close()
		}
		k.conns = nil
	}
}

// fedNetLinked is fedNet with every server-to-server direction going
// through its own link, so tests can partition the network.
func fedNetLinked(t *testing.T, n int) ([]*testServer, map[[2]int]*link) {
	addrs := make([]string, n)
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = l.Addr().String()
		l.Close()
	}
	links := map[[2]int]*link{}
	var out []*testServer
	for i := range n {
		var dsn string
		for _, d := range storagetest.Dialects(t) { // a fresh database each
			dsn = d
			break
		}
		peers := map[string]string{}
		for j := range n {
			if j != i {
				k := newLink(t, addrs[j])
				links[[2]int{i, j}] = k
				peers[fmt.Sprintf("s%d.test", j)] = "http://" + k.l.Addr().String()
			}
		}
		cfg := newTestConfig(t, dsn)
		cfg.ServerName = fmt.Sprintf("s%d.test", i)
		cfg.Listen = addrs[i]
		cfg.Federation.Peers = peers
		out = append(out, startTestServer(t, cfg))
	}
	return out, links
}

// setStall makes the link hang (or work again), closing what is open.
func (k *link) setStall(stall bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stall = stall
	for _, c := range k.conns {
		c.Close()
	}
	k.conns = nil
}

// isolate cuts (or restores) every link to and from server i.
func isolate(links map[[2]int]*link, i int, cut bool) {
	for k, l := range links {
		if k[0] == i || k[1] == i {
			l.setCut(cut)
		}
	}
}

// A partition with conflicting state changes on both sides resolves to the
// same state on every server once it heals, and every server ends up with
// every message.
func TestFederationPartitionResolves(t *testing.T) {
	// State resolution v1 (room version 1), v2 (10) and v2.1 (12).
	for _, ver := range []string{"1", "10", "12"} {
		t.Run("v"+ver, func(t *testing.T) { testPartition(t, ver) })
	}
}

func testPartition(t *testing.T, ver string) {
	srv, links := fedNetLinked(t, 3)
	users := []*client{srv[0].register("alice"), srv[1].register("bob"), srv[2].register("carol")}
	roomID := users[0].must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "room_version": ver,
		"power_level_content_override": map[string]any{"users_default": 50, "state_default": 50}}).Get("room_id").Str
	path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID)
	for _, u := range users[1:] {
		u.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=s0.test&via=s0.test", map[string]any{})
	}
	for i, u := range users {
		eventually(t, fmt.Sprintf("everyone joined on server %d", i), func() bool {
			return len(u.must("GET", path+"/joined_members", nil).Get("joined").Map()) == 3
		})
	}

	// Bob's server is cut off; both sides change the same state.
	isolate(links, 1, true)
	users[0].must("PUT", path+"/state/m.room.name", map[string]any{"name": "Name from s0"})
	users[2].must("PUT", path+"/state/m.room.topic", map[string]any{"topic": "Topic from s2"})
	users[1].must("PUT", path+"/state/m.room.name", map[string]any{"name": "Name from s1"})
	users[1].must("PUT", path+"/state/m.room.topic", map[string]any{"topic": "Topic from s1"})
	users[0].send(roomID, "during partition, majority side")
	users[1].send(roomID, "during partition, isolated side")

	isolate(links, 1, false)
	// Traffic after healing merges the branches.
	for i, u := range users {
		u.send(roomID, fmt.Sprintf("after healing from s%d", i))
	}
	state := func(u *client) string {
		return u.must("GET", path+"/state/m.room.name", nil).Get("name").Str + " | " +
			u.must("GET", path+"/state/m.room.topic", nil).Get("topic").Str
	}
	eventually(t, "the same state on every server", func() bool {
		s0 := state(users[0])
		return s0 == state(users[1]) && s0 == state(users[2])
	})
	for i, u := range users {
		eventually(t, fmt.Sprintf("every message on server %d", i), func() bool {
			have := map[string]bool{}
			for _, b := range timelineBodies(u, roomID) {
				have[b] = true
			}
			for _, want := range []string{"during partition, majority side", "during partition, isolated side",
				"after healing from s0", "after healing from s1", "after healing from s2"} {
				if !have[want] {
					return false
				}
			}
			return true
		})
	}
	t.Logf("resolved state: %s", state(users[0]))
}

// A peer that accepts connections and never answers delays nobody else:
// messages still reach the other servers at once, and the hung peer gets
// everything once it answers again.
func TestFederationHungPeer(t *testing.T) {
	srv, links := fedNetLinked(t, 3)
	users := []*client{srv[0].register("alice"), srv[1].register("bob"), srv[2].register("carol")}
	roomID := users[0].must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Get("room_id").Str
	for _, u := range users[1:] {
		u.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=s0.test", map[string]any{})
	}
	eventually(t, "everyone joined on s0", func() bool {
		return len(users[0].must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/joined_members", nil).Get("joined").Map()) == 3
	})
	links[[2]int{0, 2}].setStall(true) // s0 -> s2 hangs
	for i := range 20 {
		users[0].send(roomID, fmt.Sprintf("while s2 hangs %d", i))
	}
	eventually(t, "messages on s1 despite the hung s2", func() bool {
		b := timelineBodies(users[1], roomID)
		return len(b) > 0 && b[len(b)-1] == "while s2 hangs 19"
	})
	links[[2]int{0, 2}].setStall(false)
	users[2].send(roomID, "carol is back") // traffic from s2 wakes s0's queue for it
	eventually(t, "s2 catches up", func() bool {
		have := map[string]bool{}
		for _, b := range timelineBodies(users[2], roomID) {
			have[b] = true
		}
		return have["while s2 hangs 0"] && have["while s2 hangs 19"]
	})
}
