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
