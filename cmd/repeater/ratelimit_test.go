package main

import (
	"testing"

	"repeater/storage/storagetest"
)

func TestRateLimits(t *testing.T) {
	cfg := newTestConfig(t, storagetest.Dialects(t)["sqlite"])
	cfg.RateLimits.Enabled, cfg.RateLimits.PerSecond, cfg.RateLimits.Burst = true, 0.1, 3
	ts := startTestServer(t, cfg)
	alice := ts.register("alice")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{}).Get("room_id").Str
	limited := false
	for i := 0; i < 5 && !limited; i++ {
		st, res := alice.do("PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/rl"+string(rune('a'+i)), map[string]any{"body": "x"})
		if st == 429 {
			if res.Get("errcode").Str != "M_LIMIT_EXCEEDED" || res.Get("retry_after_ms").Int() <= 0 {
				t.Fatalf("429 body: %s", res.Raw)
			}
			limited = true
		}
	}
	if !limited {
		t.Fatal("sending was never rate limited")
	}
	anon := &client{t: t, base: ts.base}
	limited = false
	for i := 0; i < 5 && !limited; i++ {
		st, _ := anon.do("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "alice", "password": "wrong"})
		limited = st == 429
	}
	if !limited {
		t.Fatal("login was never rate limited")
	}
}
