package main

import (
	"net/url"

	"github.com/tidwall/gjson"
	"testing"

	"repeater/internal/config"
)

func TestGuestAccess(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		cfg.Registration.Guests = true
		ts := startTestServer(t, cfg)
		alice := ts.register("alice")
		guest := &client{t: t, base: ts.base}
		res := guest.must("POST", "/_matrix/client/v3/register?kind=guest", map[string]any{})
		guest.token, guest.userID = res.Get("access_token").Str, res.Get("user_id").Str

		if st, res := guest.do("POST", "/_matrix/client/v3/createRoom", map[string]any{}); st != 403 || res.Get("errcode").Str != "M_GUEST_ACCESS_FORBIDDEN" {
			t.Fatalf("guest createRoom: %d %s", st, res.Raw)
		}
		closed := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Get("room_id").Str
		if st, _ := guest.do("POST", "/_matrix/client/v3/join/"+url.PathEscape(closed), nil); st != 403 {
			t.Fatalf("guest joined a room without guest access: %d", st)
		}
		open := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat",
			"initial_state": []any{map[string]any{"type": "m.room.guest_access", "state_key": "", "content": map[string]any{"guest_access": "can_join"}}}}).Get("room_id").Str
		guest.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(open), nil)
		guest.send(open, "hello from a guest")
		if st, _ := guest.do("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(open)+"/state/m.room.topic", map[string]any{"topic": "x"}); st != 403 {
			t.Fatalf("guest set state: %d", st)
		}
		// Revoking guest access removes the guest.
		alice.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(open)+"/state/m.room.guest_access", map[string]any{"guest_access": "forbidden"})
		m := alice.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(open)+"/joined_members", nil)
		if !m.Get("joined."+gjson.Escape(alice.userID)).Exists() || m.Get("joined."+gjson.Escape(guest.userID)).Exists() {
			t.Fatalf("guest still joined after revocation: %s", m.Raw)
		}
	})
}
