package main

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"repeater/internal/linksim"
)

// BenchmarkMeshCatchUp measures a node returning to the mesh after 1,000
// messages were sent without it: the time until it holds all of them
// through a link shaped like a slow radio path (256 kbit/s, 200 ms round
// trip, a round trip per new connection), and the bytes that crossed the
// link per missed event, against the events' own JSON. Run with
//
//	go test -run '^$' -bench MeshCatchUp -benchtime 1x ./cmd/repeater
//
// Results: docs/PERFORMANCE.md, "Mesh".
func BenchmarkMeshCatchUp(b *testing.B) {
	for _, unsigned := range []bool{false, true} {
		name := "signed"
		if unsigned {
			name = "unsigned"
		}
		b.Run(name, func(b *testing.B) {
			for range b.N {
				meshCatchUp(b, unsigned, 1000)
			}
		})
	}
}

func meshCatchUp(b *testing.B, unsigned bool, n int) {
	m, srv := meshNet(b, []meshNode{
		{name: "k5dlq.local.mesh", callsign: "K5DLQ", unsigned: unsigned},
		{name: "kn6plv.local.mesh", callsign: "KN6PLV", unsigned: unsigned},
	}, linksim.Options{Handshake: true})
	a, bob := srv[0].register("k5dlq"), srv[1].register("kn6plv")
	roomID := a.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Get("room_id").Str
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=k5dlq.local.mesh", map[string]any{})
	deadline := time.Now().Add(30 * time.Second)
	for !a.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/joined_members", nil).Get("joined." + gjson.Escape(bob.userID)).Exists() {
		if time.Now().After(deadline) {
			b.Fatal("join did not reach the room's node")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cfg := srv[1].cfg
	srv[1].stop()
	var ids []string
	for i := range n {
		ids = append(ids, a.send(roomID, fmt.Sprintf("m%d", i)))
	}
	own := 0
	for _, id := range ids {
		e, err := srv[0].srv.db.EventByID(context.Background(), id)
		if err != nil {
			b.Fatal(err)
		}
		own += len(e.JSON)
	}
	// The radio path: 256 kbit/s each way, 100 ms each way.
	m.SetBandwidth(256_000 / 8)
	m.SetDelay(100 * time.Millisecond)
	m.ResetCounters()
	b.ResetTimer()
	start := time.Now()
	back := startMeshNode(b, m, cfg)
	bob.base = back.base
	last := fmt.Sprintf("m%d", n-1)
	for {
		bodies := timelineBodies(bob, roomID)
		if len(bodies) > 0 && bodies[len(bodies)-1] == last && len(bodies) >= n {
			break
		}
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("caught up %d of %d in 5 minutes", len(bodies), n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	took := time.Since(start)
	b.StopTimer()
	wire := m.TotalBytes()
	b.ReportMetric(took.Seconds(), "s-to-hold-all")
	b.ReportMetric(float64(wire)/float64(n), "wire-B/event")
	b.ReportMetric(float64(own)/float64(n), "json-B/event")
	b.ReportMetric(float64(wire)/float64(own), "wire/json")
}
