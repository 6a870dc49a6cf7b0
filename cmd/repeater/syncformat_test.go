package main

import (
	"net/url"
	"testing"

	"github.com/tidwall/gjson"

	"repeater/internal/config"
)

// A filter with event_format "federation" returns events as PDUs (hashes,
// signatures, prev_events, auth_events, depth) and still names them by
// event_id, which room versions 3+ leave out of the PDU itself.
func TestSyncFederationFormat(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice := ts.register("alice")
		roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{}).Get("room_id").Str
		eventID := alice.send(roomID, "as a PDU")
		filterID := alice.must("POST", "/_matrix/client/v3/user/"+url.PathEscape(alice.userID)+"/filter",
			map[string]any{"event_format": "federation", "room": map[string]any{"timeline": map[string]any{"limit": 1}}}).Get("filter_id").Str
		res := alice.must("GET", "/_matrix/client/v3/sync?filter="+filterID, nil)
		ev := res.Get("rooms.join." + gjson.Escape(roomID) + ".timeline.events.0")
		for _, k := range []string{"event_id", "content", "room_id", "sender", "origin_server_ts", "type", "prev_events", "auth_events", "depth", "hashes", "signatures"} {
			if !ev.Get(k).Exists() {
				t.Errorf("federation-format event lacks %q: %s", k, ev.Raw)
			}
		}
		if ev.Get("event_id").Str != eventID || ev.Get("content.body").Str != "as a PDU" {
			t.Fatalf("wrong event: %s", ev.Raw)
		}
	})
}
