package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"

	"repeater/internal/config"
	"repeater/storage/storagetest"
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
				"keys": map[string]any{"curve25519:" + bobDev: "c25519", "ed25519:" + bobDev: "ed"}, "signatures": map[string]any{}},
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

// Device keys missing required fields, or another device's, are refused.
func TestE2EEInvalidDeviceKeys(t *testing.T) {
	ts := startTestServer(t, newTestConfig(t, storagetest.Dialects(t)["sqlite"]))
	bob := ts.register("bob")
	dev := bob.must("GET", "/_matrix/client/v3/account/whoami", nil).Get("device_id").Str
	good := func() map[string]any {
		return map[string]any{"user_id": bob.userID, "device_id": dev, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
			"keys": map[string]any{"ed25519:" + dev: "ed"}, "signatures": map[string]any{}}
	}
	for _, c := range []struct {
		name  string
		spoil func(m map[string]any)
	}{
		{"no algorithms", func(m map[string]any) { delete(m, "algorithms") }},
		{"no keys", func(m map[string]any) { delete(m, "keys") }},
		{"no signatures", func(m map[string]any) { delete(m, "signatures") }},
		{"keys not strings", func(m map[string]any) { m["keys"] = map[string]any{"ed25519:" + dev: 1} }},
		{"another device", func(m map[string]any) { m["device_id"] = "OTHER" }},
		{"another user", func(m map[string]any) { m["user_id"] = "@carol:test.local" }},
	} {
		dk := good()
		c.spoil(dk)
		if st, body := bob.do("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": dk}); st != 400 || body.Get("errcode").Str != "M_BAD_JSON" {
			t.Errorf("%s: %d %s", c.name, st, body.Raw)
		}
	}
	bob.must("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": good()})
}

// csKey is a cross-signing key pair for tests.
type csKey struct {
	pub  string
	priv ed25519.PrivateKey
}

func newCSKey(t testing.TB) csKey {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return csKey{pub: base64.RawStdEncoding.EncodeToString(pub), priv: priv}
}

// key is the key's JSON for userID, signed by signers (none: unsigned).
func (k csKey) key(t testing.TB, userID, usage string, signers ...csKey) map[string]any {
	return signAs(t, userID, map[string]any{"user_id": userID, "usage": []string{usage}, "keys": map[string]any{"ed25519:" + k.pub: k.pub}}, signers...)
}

// signAs signs obj as userID with each of keys.
func signAs(t testing.TB, userID string, obj map[string]any, keys ...csKey) map[string]any {
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if raw, err = gomatrixserverlib.SignJSON(userID, gomatrixserverlib.KeyID("ed25519:"+k.pub), k.priv, raw); err != nil {
			t.Fatal(err)
		}
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// inChanged syncs c from *since until user appears in device_lists.changed
// (advancing *since), or fails.
func inChanged(t *testing.T, c *client, since *string, user string) {
	t.Helper()
	eventually(t, user+" in "+c.userID+"'s device_lists.changed", func() bool {
		s := c.must("GET", "/_matrix/client/v3/sync?timeout=500&since="+url.QueryEscape(*since), nil)
		if nb := s.Get("next_batch").Str; nb != "" {
			*since = nb
		}
		for _, u := range s.Get("device_lists.changed").Array() {
			if u.Str == user {
				return true
			}
		}
		return false
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
			"algorithms": []string{"m.olm.v1.curve25519-aes-sha2"}, "keys": map[string]any{"ed25519:" + bobDev: "dev"}, "signatures": map[string]any{}}})
		master, self, usk := newCSKey(t), newCSKey(t), newCSKey(t)
		// Without a master key, a self-signing key cannot be checked.
		if st, body := bob.do("POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{"self_signing_key": self.key(t, bob.userID, "self_signing", master)}); st != 400 {
			t.Fatalf("self-signing key without a master key: %d %s", st, body.Raw)
		}
		// A self-signing key not signed by the master key is refused.
		if st, body := bob.do("POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{"master_key": master.key(t, bob.userID, "master"),
			"self_signing_key": self.key(t, bob.userID, "self_signing", usk)}); st != 400 {
			t.Fatalf("self-signing key signed by another key: %d %s", st, body.Raw)
		}
		keys := map[string]any{
			"master_key":       master.key(t, bob.userID, "master"),
			"self_signing_key": self.key(t, bob.userID, "self_signing", master),
		}
		bob.must("POST", "/_matrix/client/v3/keys/device_signing/upload", keys)
		if st, _ := bob.do("POST", "/_matrix/client/v3/keys/device_signing/upload", keys); st != 401 {
			t.Fatalf("replacing cross-signing keys without auth: %d", st)
		}
		devKey := "ed25519:" + self.pub
		bob.must("POST", "/_matrix/client/v3/keys/signatures/upload", map[string]any{bob.userID: map[string]any{
			bobDev: map[string]any{"user_id": bob.userID, "device_id": bobDev, "signatures": map[string]any{bob.userID: map[string]any{devKey: "devsig"}}}}})
		q := alice.must("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{bob.userID: []string{}}})
		if q.Get("master_keys."+gjson.Escape(bob.userID)+".keys.ed25519:"+gjson.Escape(master.pub)).Str != master.pub ||
			q.Get("self_signing_keys."+gjson.Escape(bob.userID)+".keys.ed25519:"+gjson.Escape(self.pub)).Str != self.pub {
			t.Fatalf("cross-signing keys in query: %s", q.Raw)
		}
		if q.Get("device_keys."+gjson.Escape(bob.userID)+"."+bobDev+".signatures."+gjson.Escape(bob.userID)+"."+gjson.Escape(devKey)).Str != "devsig" {
			t.Fatalf("device signature in query: %s", q.Get("device_keys").Raw)
		}

		// A new user-signing key is news for bob alone.
		aliceSince := alice.must("GET", "/_matrix/client/v3/sync", nil).Get("next_batch").Str
		bobSince := bob.must("GET", "/_matrix/client/v3/sync", nil).Get("next_batch").Str
		bob.must("POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{"user_signing_key": usk.key(t, bob.userID, "user_signing", master),
			"auth": map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": bob.userID}, "password": "pw-bob"}})
		inChanged(t, bob, &bobSince, bob.userID)
		if q := bob.must("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{bob.userID: []string{}}}); !q.Get("user_signing_keys." + gjson.Escape(bob.userID)).Exists() {
			t.Fatalf("bob's own user-signing key: %s", q.Raw)
		}
		q = alice.must("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{bob.userID: []string{}}})
		if q.Get("user_signing_keys." + gjson.Escape(bob.userID)).Exists() {
			t.Fatal("bob's user-signing key shown to alice")
		}
		// Bob signs alice's master key with it: only bob sees that signature.
		aliceMaster := newCSKey(t)
		alice.must("POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{"master_key": aliceMaster.key(t, alice.userID, "master")})
		s := alice.must("GET", "/_matrix/client/v3/sync?since="+url.QueryEscape(aliceSince), nil)
		for _, u := range s.Get("device_lists.changed").Array() {
			if u.Str == bob.userID {
				t.Fatalf("bob's user-signing key in alice's device_lists.changed: %s", s.Get("device_lists").Raw)
			}
		}
		signed := signAs(t, bob.userID, aliceMaster.key(t, alice.userID, "master"), usk)
		bob.must("POST", "/_matrix/client/v3/keys/signatures/upload", map[string]any{alice.userID: map[string]any{aliceMaster.pub: signed}})
		sigPath := "master_keys." + gjson.Escape(alice.userID) + ".signatures." + gjson.Escape(bob.userID)
		if q := bob.must("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{alice.userID: []string{}}}); !q.Get(sigPath).Exists() {
			t.Fatalf("bob's signature of alice's master key, as bob sees it: %s", q.Raw)
		}
		if q := alice.must("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{alice.userID: []string{}}}); q.Get(sigPath).Exists() {
			t.Fatalf("bob's signature of alice's master key shown to alice: %s", q.Raw)
		}
	})
}
