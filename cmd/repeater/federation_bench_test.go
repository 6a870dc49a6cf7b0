package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"
)

// Federation benchmarks: several servers in this process on loopback, as
// in the federation tests. Run with
//
//	go test ./cmd/repeater -run x -bench Federation -benchtime 1x
//
// and see docs/PERFORMANCE.md for recorded figures. They report their
// measurements as custom metrics; nothing here asserts a speed.

func benchRoom(b *testing.B, n int) ([]*testServer, *client, string) {
	srv := fedNet(b, n)
	alice := srv[0].register("alice")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Get("room_id").Str
	return srv, alice, roomID
}

// sendMany sends n messages from senders goroutines, returning the time taken.
func sendMany(c *client, roomID string, n, senders int) time.Duration {
	start := time.Now()
	var wg sync.WaitGroup
	per := n / senders
	for s := range senders {
		wg.Add(1)
		go func(s int) {
			defer wg.Done()
			for i := range per {
				c.send(roomID, fmt.Sprintf("m%d", s*per+i))
			}
		}(s)
	}
	wg.Wait()
	return time.Since(start)
}

// BenchmarkFederationDelivery measures how long a message sent on one
// server takes to reach a long-polling /sync on another.
func BenchmarkFederationDelivery(b *testing.B) {
	srv, alice, roomID := benchRoom(b, 2)
	bob := srv[1].register("bob")
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=s0.test", map[string]any{})
	since := bob.must("GET", "/_matrix/client/v3/sync", nil).Get("next_batch").Str
	const rounds = 200
	var lat []time.Duration
	b.ResetTimer()
	for range b.N {
		for i := range rounds {
			body := fmt.Sprintf("d%d", i)
			got := make(chan time.Time, 1)
			go func() {
				for {
					s := bob.must("GET", "/_matrix/client/v3/sync?timeout=10000&since="+url.QueryEscape(since), nil)
					since = s.Get("next_batch").Str
					for _, e := range s.Get("rooms.join." + gjson.Escape(roomID) + ".timeline.events").Array() {
						if e.Get("content.body").Str == body {
							got <- time.Now()
							return
						}
					}
				}
			}()
			time.Sleep(5 * time.Millisecond) // let the long-poll start
			start := time.Now()
			alice.send(roomID, body)
			lat = append(lat, (<-got).Sub(start))
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkFederationIngest measures messages/s arriving on a second server
// while 10 clients send 2,000 messages on the first (send, /send transaction
// and input on the receiver, end to end).
func BenchmarkFederationIngest(b *testing.B) {
	srv, alice, roomID := benchRoom(b, 2)
	bob := srv[1].register("bob")
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=s0.test", map[string]any{})
	const n = 2000
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		before, _ := srv[1].srv.db.StreamPos(context.Background())
		sent := sendMany(alice, roomID, n, 10)
		for {
			pos, _ := srv[1].srv.db.StreamPos(context.Background())
			if pos-before >= n {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		all := time.Since(start)
		b.ReportMetric(float64(n)/sent.Seconds(), "sent/s")
		b.ReportMetric(float64(n)/all.Seconds(), "received/s")
	}
}

// BenchmarkFederationLateJoiner measures, for a room of 10,000 messages,
// the time to join from another server and the time until the joiner
// holds the complete history: paged on demand by a client, and fetched in
// the background (federation.backfill: full).
func BenchmarkFederationLateJoiner(b *testing.B) {
	srv, alice, roomID := benchRoom(b, 3)
	const n = 10000
	sendMany(alice, roomID, n, 10)
	b.ResetTimer()
	for range b.N {
		bob := srv[1].register("bob")
		start := time.Now()
		bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=s0.test", map[string]any{})
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "join-ms")
		start = time.Now()
		evs := paginateAll(b, bob, roomID, 1000)
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "on-demand-history-ms")
		if len(evs) < n {
			b.Fatalf("history incomplete: %d events", len(evs))
		}

		srv[2].srv.cfg.Federation.Backfill = "full"
		carol := srv[2].register("carol")
		start = time.Now()
		carol.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=s0.test", map[string]any{})
		for {
			gaps, err := srv[2].srv.rs.Gaps(context.Background(), roomID)
			if err == nil && len(gaps) == 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "full-backfill-ms")
	}
}

// BenchmarkFederationCatchUp measures how long a server that was down
// while 1,000 messages were sent takes, after restarting, to hold them all.
func BenchmarkFederationCatchUp(b *testing.B) {
	srv, alice, roomID := benchRoom(b, 2)
	bob := srv[1].register("bob")
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=s0.test", map[string]any{})
	b.ResetTimer()
	for range b.N {
		cfg := srv[1].cfg
		srv[1].stop()
		sendMany(alice, roomID, 1000, 10)
		time.Sleep(3 * time.Second)
		srv[1] = startTestServer(b, cfg)
		bob.base = srv[1].base
		http.DefaultClient.CloseIdleConnections()
		start := time.Now()
		for {
			res := bob.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=1", nil)
			if n := len(paginateAll(b, bob, roomID, 1000)); n >= 1000 && res.Get("chunk.0").Exists() {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "catch-up-ms")
	}
}

// BenchmarkFederationJoinBigRoom measures joining, from another server, a
// room of 1,000 members and 10,000 messages (the send_join response carries
// the whole state and its auth chain).
func BenchmarkFederationJoinBigRoom(b *testing.B) {
	srv, alice, roomID := benchRoom(b, 2)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range 999 {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			u := srv[0].register(fmt.Sprintf("member%d", i))
			u.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{})
		}(i)
	}
	wg.Wait()
	sendMany(alice, roomID, 10000, 10)
	b.ResetTimer()
	for i := range b.N {
		bob := srv[1].register(fmt.Sprintf("bob%d", i))
		start := time.Now()
		bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=s0.test", map[string]any{})
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "join-ms")
		start = time.Now()
		bob.must("GET", "/_matrix/client/v3/sync", nil)
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "first-sync-ms")
		if n := len(bob.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/joined_members", nil).Get("joined").Map()); n != 1001 {
			b.Fatalf("joined members on the joining server: %d", n)
		}
	}
}
