package main

import (
	"testing"

	"repeater/internal/config"
)

// A UIA session started for one operation cannot complete another (spec:
// "User-interactive authentication API"): a session begun by deleting
// device A, completed with the right password, does not delete device B.
func TestUIASessionBoundToOperation(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice := ts.register("alice")
		for _, dev := range []string{"A", "B"} {
			(&client{t: t, base: ts.base}).must("POST", "/_matrix/client/v3/login", map[string]any{
				"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"},
				"password": "pw-alice", "device_id": dev, "initial_device_display_name": "device " + dev})
		}
		st, res := alice.do("DELETE", "/_matrix/client/v3/devices/A", map[string]any{})
		session := res.Get("session").Str
		if st != 401 || session == "" || res.Get("flows.0.stages.0").Str != "m.login.password" {
			t.Fatalf("first round: %d %s", st, res.Raw)
		}
		pw := map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": alice.userID},
			"password": "pw-alice", "session": session}
		if st, res := alice.do("DELETE", "/_matrix/client/v3/devices/B", map[string]any{"auth": pw}); st != 403 {
			t.Fatalf("session for device A deleted device B: %d %s", st, res.Raw)
		}
		if got := alice.must("GET", "/_matrix/client/v3/devices/B", nil).Get("display_name").Str; got != "device B" {
			t.Fatalf("device B: %q", got)
		}
		// The same session completes the operation it was started for.
		alice.must("DELETE", "/_matrix/client/v3/devices/A", map[string]any{"auth": pw})
		if st, _ := alice.do("GET", "/_matrix/client/v3/devices/A", nil); st != 404 {
			t.Fatalf("device A still there: %d", st)
		}
		// A wrong password is refused with a fresh challenge, not a deletion.
		bad := map[string]any{"type": "m.login.password", "user": "alice", "password": "nope"}
		if st, res := alice.do("DELETE", "/_matrix/client/v3/devices/B", map[string]any{"auth": bad}); st != 401 || res.Get("errcode").Str != "M_FORBIDDEN" {
			t.Fatalf("wrong password: %d %s", st, res.Raw)
		}
	})
}

// Access tokens stop working the moment their session ends: logout,
// logout/all, a password change (other devices), device deletion and
// deactivation. Each token is used first, so a cached lookup must be
// invalidated, not merely absent.
func TestTokensEndWithSessions(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice := ts.register("alice")
		login := func(dev string) *client {
			c := &client{t: t, base: ts.base}
			res := c.must("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "alice", "password": "pw-alice", "device_id": dev})
			c.token, c.userID = res.Get("access_token").Str, res.Get("user_id").Str
			c.must("GET", "/_matrix/client/v3/account/whoami", nil)
			return c
		}
		dead := func(c *client, after string) {
			t.Helper()
			if st, res := c.do("GET", "/_matrix/client/v3/account/whoami", nil); st != 401 || res.Get("errcode").Str != "M_UNKNOWN_TOKEN" {
				t.Fatalf("token still valid after %s: %d %s", after, st, res.Raw)
			}
		}
		a := login("A")
		a.must("POST", "/_matrix/client/v3/logout", map[string]any{})
		dead(a, "logout")

		// Logging in again on a device replaces its token.
		b1 := login("B")
		b2 := login("B")
		dead(b1, "re-login on the same device")

		c := login("C")
		alice.must("POST", "/_matrix/client/v3/account/password", map[string]any{"new_password": "pw2",
			"auth": map[string]any{"type": "m.login.password", "user": "alice", "password": "pw-alice"}})
		dead(c, "password change")
		dead(b2, "password change")
		alice.must("GET", "/_matrix/client/v3/account/whoami", nil) // the changing device stays

		d := &client{t: t, base: ts.base}
		res := d.must("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "alice", "password": "pw2", "device_id": "D"})
		d.token = res.Get("access_token").Str
		d.must("GET", "/_matrix/client/v3/account/whoami", nil)
		alice.must("DELETE", "/_matrix/client/v3/devices/D", map[string]any{"auth": map[string]any{"type": "m.login.password", "user": "alice", "password": "pw2"}})
		dead(d, "device deletion")

		alice.must("POST", "/_matrix/client/v3/logout/all", map[string]any{})
		dead(alice, "logout/all")

		bob := ts.register("bob")
		bob.must("POST", "/_matrix/client/v3/account/deactivate", map[string]any{"auth": map[string]any{"type": "m.login.password", "user": "bob", "password": "pw-bob"}})
		dead(bob, "deactivation")
	})
}
