package main

import (
	"net/url"
	"testing"

	"github.com/tidwall/gjson"

	"repeater/internal/config"
)

// TestUnreadCounts: messages from others count as notifications, a
// mention of the user highlights, notices do not count, and a read receipt
// clears them.
func TestUnreadCounts(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice, bob := ts.register("alice"), ts.register("bob")
		roomID := sharedRoom(alice, bob)
		bob.send(roomID, "my own message does not count")
		alice.send(roomID, "one")
		alice.send(roomID, "hey bob, look")
		last := alice.send(roomID, "three")
		alice.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/n1", map[string]any{"msgtype": "m.notice", "body": "a bot notice"})
		counts := func() gjson.Result {
			res := bob.must("GET", "/_matrix/client/v3/sync", nil)
			return res.Get("rooms.join." + gjson.Escape(roomID) + ".unread_notifications")
		}
		u := counts()
		if u.Get("notification_count").Int() != 3 || u.Get("highlight_count").Int() != 1 {
			t.Fatalf("unread before reading: %s (want 3 notifications, 1 highlight)", u.Raw)
		}
		bob.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/receipt/m.read/"+url.PathEscape(last), map[string]any{})
		if u := counts(); u.Get("notification_count").Int() != 0 || u.Get("highlight_count").Int() != 0 {
			t.Fatalf("unread after reading: %s", u.Raw)
		}
	})
}
