package main

import (
	"net/url"
	"testing"

	"github.com/tidwall/gjson"

	"repeater/internal/config"
)

// The server side of end-to-end encryption: device keys published and
// queried, one-time and fallback keys claimed with counts in /sync,
// device-list changes in the syncs of users sharing a room, and to-device
// messages delivered to the right device once.
func TestE2EEKeysAndToDevice(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice := ts.register("alice")
		bob := ts.register("bob")
		sharedRoom(alice, bob)
		bobDev := bob.must("GET", "/_matrix/client/v3/account/whoami", nil).Get("device_id").Str
		since := alice.must("GET", "/_matrix/client/v3/sync", nil).Get("next_batch").Str

		up := bob.must("POST", "/_matrix/client/v3/keys/upload", map[string]any{
			"device_keys": map[string]any{"user_id": bob.userID, "device_id": bobDev, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
				"keys": map[string]any{"curve25519:" + bobDev: "c25519", "ed25519:" + bobDev: "ed"}},
			"one_time_keys": map[string]any{"signed_curve25519:AAAA": map[string]any{"key": "k1"}, "signed_curve25519:AAAB": map[string]any{"key": "k2"}},
			"fallback_keys": map[string]any{"signed_curve25519:FFFF": map[string]any{"key": "fb", "fallback": true}},
		})
		if up.Get("one_time_key_counts.signed_curve25519").Int() != 2 {
			t.Fatalf("upload: %s", up.Raw)
		}
		s := alice.must("GET", "/_matrix/client/v3/sync?timeout=5000&since="+url.QueryEscape(since), nil)
		found := false
		for _, u := range s.Get("device_lists.changed").Array() {
			found = found || u.Str == bob.userID
		}
		if !found {
			t.Fatalf("bob's new keys not in alice's device_lists.changed: %s", s.Get("device_lists").Raw)
		}
		q := alice.must("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{bob.userID: []string{}}})
		if q.Get("device_keys."+gjson.Escape(bob.userID)+"."+bobDev+".keys.ed25519:"+bobDev).Str != "ed" {
			t.Fatalf("query: %s", q.Raw)
		}
		claim := func() string {
			c := alice.must("POST", "/_matrix/client/v3/keys/claim", map[string]any{"one_time_keys": map[string]any{bob.userID: map[string]any{bobDev: "signed_curve25519"}}})
			var key string
			c.Get("one_time_keys." + gjson.Escape(bob.userID) + "." + bobDev).ForEach(func(_, v gjson.Result) bool { key = v.Get("key").Str; return false })
			return key
		}
		got := []string{claim(), claim(), claim()}
		if got[0] == got[1] || got[0] == "fb" || got[1] == "fb" || got[2] != "fb" {
			t.Fatalf("claimed %v: want the two one-time keys, then the fallback key", got)
		}
		bs := bob.must("GET", "/_matrix/client/v3/sync", nil)
		if bs.Get("device_one_time_keys_count.signed_curve25519").Int() != 0 || bs.Get("device_unused_fallback_key_types").IsArray() && len(bs.Get("device_unused_fallback_key_types").Array()) != 0 {
			t.Fatalf("bob's counts after claims: %s %s", bs.Get("device_one_time_keys_count").Raw, bs.Get("device_unused_fallback_key_types").Raw)
		}

		// To-device: alice to bob's device, delivered once.
		bobSince := bs.Get("next_batch").Str
		alice.must("PUT", "/_matrix/client/v3/sendToDevice/m.room_key_request/t1", map[string]any{"messages": map[string]any{bob.userID: map[string]any{bobDev: map[string]any{"hello": "bob"}}}})
		td := bob.must("GET", "/_matrix/client/v3/sync?timeout=5000&since="+url.QueryEscape(bobSince), nil)
		ev := td.Get("to_device.events.0")
		if ev.Get("sender").Str != alice.userID || ev.Get("type").Str != "m.room_key_request" || ev.Get("content.hello").Str != "bob" {
			t.Fatalf("to-device: %s", td.Get("to_device").Raw)
		}
		again := bob.must("GET", "/_matrix/client/v3/sync?since="+url.QueryEscape(td.Get("next_batch").Str), nil)
		if n := len(again.Get("to_device.events").Array()); n != 0 {
			t.Fatalf("to-device message delivered again: %s", again.Get("to_device").Raw)
		}
		// The same transaction ID is not delivered twice.
		alice.must("PUT", "/_matrix/client/v3/sendToDevice/m.room_key_request/t1", map[string]any{"messages": map[string]any{bob.userID: map[string]any{bobDev: map[string]any{"hello": "bob"}}}})
		if n := len(bob.must("GET", "/_matrix/client/v3/sync?since="+url.QueryEscape(again.Get("next_batch").Str), nil).Get("to_device.events").Array()); n != 0 {
			t.Fatal("a repeated transaction delivered again")
		}
	})
}

// Cross-signing keys and signatures are published through keys/query;
// replacing the keys needs the user's password.
func TestCrossSigning(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice := ts.register("alice")
		bob := ts.register("bob")
		sharedRoom(alice, bob)
		bobDev := bob.must("GET", "/_matrix/client/v3/account/whoami", nil).Get("device_id").Str
		bob.must("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": map[string]any{"user_id": bob.userID, "device_id": bobDev,
			"algorithms": []string{"m.olm.v1.curve25519-aes-sha2"}, "keys": map[string]any{"ed25519:" + bobDev: "dev"}}})
		keys := map[string]any{
			"master_key":       map[string]any{"user_id": bob.userID, "usage": []string{"master"}, "keys": map[string]any{"ed25519:MASTER": "MASTER"}},
			"self_signing_key": map[string]any{"user_id": bob.userID, "usage": []string{"self_signing"}, "keys": map[string]any{"ed25519:SELF": "SELF"}},
			"user_signing_key": map[string]any{"user_id": bob.userID, "usage": []string{"user_signing"}, "keys": map[string]any{"ed25519:USER": "USER"}},
		}
		bob.must("POST", "/_matrix/client/v3/keys/device_signing/upload", keys)
		if st, _ := bob.do("POST", "/_matrix/client/v3/keys/device_signing/upload", keys); st != 401 {
			t.Fatalf("replacing cross-signing keys without auth: %d", st)
		}
		bob.must("POST", "/_matrix/client/v3/keys/signatures/upload", map[string]any{bob.userID: map[string]any{
			bobDev: map[string]any{"user_id": bob.userID, "device_id": bobDev, "signatures": map[string]any{bob.userID: map[string]any{"ed25519:SELF": "devsig"}}}}})
		q := alice.must("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{bob.userID: []string{}}})
		if q.Get("master_keys."+gjson.Escape(bob.userID)+".keys.ed25519:MASTER").Str != "MASTER" ||
			q.Get("self_signing_keys."+gjson.Escape(bob.userID)+".keys.ed25519:SELF").Str != "SELF" {
			t.Fatalf("cross-signing keys in query: %s", q.Raw)
		}
		if q.Get("user_signing_keys." + gjson.Escape(bob.userID)).Exists() {
			t.Fatal("bob's user-signing key shown to alice")
		}
		if q.Get("device_keys."+gjson.Escape(bob.userID)+"."+bobDev+".signatures."+gjson.Escape(bob.userID)+".ed25519:SELF").Str != "devsig" {
			t.Fatalf("device signature in query: %s", q.Get("device_keys").Raw)
		}
	})
}
