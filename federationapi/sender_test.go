package federationapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"repeater/roomserver"
)

// A destination that keeps refusing a transaction (HTTP 400) does not hold
// back the queue forever: after a few attempts the transaction is dropped
// and the next one goes out.
func TestSenderDropsRefusedTransaction(t *testing.T) {
	var sends atomic.Int64
	refuse := atomic.Bool{}
	refuse.Store(true)
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/send/") {
			sends.Add(1)
			w.Header().Set("Content-Type", "application/json")
			if refuse.Load() {
				w.WriteHeader(400)
				w.Write([]byte(`{"errcode":"M_BAD_JSON","error":"no"}`))
				return
			}
			w.Write([]byte(`{"pdus":{}}`))
		}
	}))
	defer bad.Close()
	a, roomID := fuzzAPI(t)
	a.cfg.Federation.Peers = map[string]string{"bad.test": bad.URL}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A federation API whose client knows bad.test.
	b, err := New(Deps{Config: a.cfg, KeyID: a.keyID, PrivateKey: a.privateKey, DB: a.db, Log: a.log})
	if err != nil {
		t.Fatal(err)
	}
	b.Attach(a.rs, nil)
	go b.Run(ctx)
	ev, err := a.rs.Send(ctx, roomID, "@alice:test.local", "m.room.message", nil, map[string]any{"body": "x"}, roomserver.SendOpts{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.db.QueuePDU(ctx, []string{"bad.test"}, ev.NID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let Run start
	b.Sender.Queued([]string{"bad.test"})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if items, _ := a.db.Outbox(ctx, "bad.test", 10); len(items) == 0 {
			break
		}
		b.Sender.wake("bad.test") // skip the backoff
		time.Sleep(20 * time.Millisecond)
	}
	if items, _ := a.db.Outbox(ctx, "bad.test", 10); len(items) != 0 {
		t.Fatalf("the refused transaction is still queued after %d attempts", sends.Load())
	}
	if n := sends.Load(); n != maxClientErrorRefusals {
		t.Fatalf("%d attempts, want %d", n, maxClientErrorRefusals)
	}
	// The queue moves on.
	refuse.Store(false)
	ev2, _ := a.rs.Send(ctx, roomID, "@alice:test.local", "m.room.message", nil, map[string]any{"body": "y"}, roomserver.SendOpts{})
	_ = a.db.QueuePDU(ctx, []string{"bad.test"}, ev2.NID)
	b.Sender.Queued([]string{"bad.test"})
	for time.Now().Before(deadline) {
		if items, _ := a.db.Outbox(ctx, "bad.test", 10); len(items) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the next transaction was not delivered")
}
