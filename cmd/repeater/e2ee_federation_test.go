package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/tidwall/gjson"

	"repeater/internal/config"
	"repeater/storage"
)

// Device lists over federation, between two servers.

// asServer is an evilServer speaking with a real test server's signing key,
// to inject EDUs as that server would send them.
func asServer(t *testing.T, ts *testServer) *evilServer {
	t.Helper()
	k, err := config.LoadSigningKey(ts.cfg.Path(ts.cfg.SigningKeyPath))
	if err != nil {
		t.Fatal(err)
	}
	return &evilServer{name: ts.cfg.ServerName, key: k.PrivateKey, id: k.KeyID}
}

var txnCounter atomic.Int64

// sendEDU delivers one EDU from e to ts in a transaction of its own.
func (e *evilServer) sendEDU(t *testing.T, ts *testServer, eduType string, content any) {
	t.Helper()
	txn := map[string]any{"origin": e.name, "origin_server_ts": 1, "pdus": []any{},
		"edus": []any{map[string]any{"edu_type": eduType, "content": content}}}
	path := fmt.Sprintf("/_matrix/federation/v1/send/inject-%d", txnCounter.Add(1))
	if st, body := e.request(t, ts, ts.cfg.ServerName, "PUT", path, txn, e.key); st != 200 {
		t.Fatalf("injecting %s: %d %s", eduType, st, body.Raw)
	}
}

func queryKeys(c *client, user string) gjson.Result {
	return c.must("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{user: []string{}}})
}

func deviceKey(q gjson.Result, user, dev string) gjson.Result {
	return q.Get("device_keys." + gjson.Escape(user) + "." + gjson.Escape(dev))
}

// A server keeps a copy of the device lists of the other server's users it
// shares a room with: fetched once, kept current by m.device_list_update,
// served while the other server is unreachable, fetched afresh when an
// update goes missing, and dropped when the room is no longer shared.
func TestDeviceListFederationCache(t *testing.T) {
	srv, links := fedNetLinked(t, 2)
	alice := srv[0].register("alice")
	bob := srv[1].register("bob")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Get("room_id").Str
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=s0.test", map[string]any{})
	bobDev := bob.must("GET", "/_matrix/client/v3/account/whoami", nil).Get("device_id").Str
	since := alice.must("GET", "/_matrix/client/v3/sync", nil).Get("next_batch").Str
	upload := func(ed string) {
		bob.must("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": map[string]any{"user_id": bob.userID, "device_id": bobDev,
			"algorithms": []string{"m.olm.v1.curve25519-aes-sha2"}, "keys": map[string]any{"ed25519:" + bobDev: ed}, "signatures": map[string]any{}}})
	}
	upload("ed1")
	inChanged(t, alice, &since, bob.userID)
	if k := deviceKey(queryKeys(alice, bob.userID), bob.userID, bobDev); k.Get("keys.ed25519:"+bobDev).Str != "ed1" {
		t.Fatalf("bob's keys on alice's server: %s", k.Raw)
	}
	if _, err := srv[0].srv.db.RemoteDeviceList(context.Background(), bob.userID); err != nil {
		t.Fatalf("alice's server keeps no copy of bob's device list: %v", err)
	}

	// Alice's server cannot reach bob's (bob's still reaches alice's): his
	// updates arrive as EDUs and are served from the copy.
	links[[2]int{0, 1}].setCut(true)
	bob.must("PUT", "/_matrix/client/v3/devices/"+url.PathEscape(bobDev), map[string]any{"display_name": "Bob's phone"})
	inChanged(t, alice, &since, bob.userID)
	upload("ed2")
	inChanged(t, alice, &since, bob.userID)
	eventually(t, "bob's new key and name on alice's server", func() bool {
		q := queryKeys(alice, bob.userID)
		k := deviceKey(q, bob.userID, bobDev)
		return k.Get("keys.ed25519:"+bobDev).Str == "ed2" && k.Get("unsigned.device_display_name").Str == "Bob's phone" &&
			len(q.Get("failures").Map()) == 0
	})

	// Bob's server goes away altogether: the copy is still served.
	links[[2]int{1, 0}].setCut(true)
	q := queryKeys(alice, bob.userID)
	if deviceKey(q, bob.userID, bobDev).Get("keys.ed25519:"+bobDev).Str != "ed2" || len(q.Get("failures").Map()) != 0 {
		t.Fatalf("bob's keys while his server is down: %s", q.Raw)
	}
	// An update after a gap cannot be filled in while bob's server is
	// away: the copy is marked stale, and still served.
	ctx := context.Background()
	s1 := asServer(t, srv[1])
	update := func(stream, prev int64, ed string) map[string]any {
		return map[string]any{"user_id": bob.userID, "device_id": bobDev, "stream_id": stream, "prev_id": []int64{prev},
			"keys": map[string]any{"user_id": bob.userID, "device_id": bobDev, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
				"keys": map[string]any{"ed25519:" + bobDev: ed}, "signatures": map[string]any{}}}
	}
	s1.sendEDU(t, srv[0], "m.device_list_update", update(1000, 999, "lost"))
	eventually(t, "the copy marked stale", func() bool {
		l, err := srv[0].srv.db.RemoteDeviceList(ctx, bob.userID)
		return err == nil && l.Stale
	})
	q = queryKeys(alice, bob.userID)
	if deviceKey(q, bob.userID, bobDev).Get("keys.ed25519:"+bobDev).Str != "ed2" || len(q.Get("failures").Map()) != 0 {
		t.Fatalf("bob's keys from a stale copy: %s", q.Raw)
	}
	// Back: bob's next update has alice's server fetch his list afresh.
	links[[2]int{1, 0}].setCut(false)
	links[[2]int{0, 1}].setCut(false)
	bob.must("PUT", "/_matrix/client/v3/devices/"+url.PathEscape(bobDev), map[string]any{"display_name": "Bob's phone 2"})
	eventually(t, "the copy fetched afresh", func() bool {
		l, err := srv[0].srv.db.RemoteDeviceList(ctx, bob.userID)
		return err == nil && !l.Stale && len(l.Devices) == 1 && l.Devices[0].DisplayName == "Bob's phone 2"
	})

	// Updates that follow the copy apply as they are; one after a gap
	// (a prev_id alice's server never saw) makes it fetch the list again.
	cur, err := srv[1].srv.db.DeviceListStreamID(ctx, bob.userID)
	if err != nil || cur == 0 {
		t.Fatalf("bob's device-list stream ID: %d %v", cur, err)
	}
	eventually(t, "alice's server up to date with bob's stream", func() bool {
		l, err := srv[0].srv.db.RemoteDeviceList(ctx, bob.userID)
		return err == nil && l.StreamID == cur
	})
	s1.sendEDU(t, srv[0], "m.device_list_update", update(cur+1, cur, "injected"))
	eventually(t, "an update following the copy applied", func() bool {
		return deviceKey(queryKeys(alice, bob.userID), bob.userID, bobDev).Get("keys.ed25519:"+bobDev).Str == "injected"
	})
	s1.sendEDU(t, srv[0], "m.device_list_update", update(cur+3, cur+2, "after a gap"))
	eventually(t, "the list fetched again after a gap", func() bool {
		l, err := srv[0].srv.db.RemoteDeviceList(ctx, bob.userID)
		return err == nil && l.StreamID == cur && len(l.Devices) == 1 && gjson.GetBytes(l.Devices[0].Keys, "keys.ed25519:"+bobDev).Str == "ed2"
	})
	if k := deviceKey(queryKeys(alice, bob.userID), bob.userID, bobDev); k.Get("keys.ed25519:"+bobDev).Str != "ed2" {
		t.Fatalf("bob's keys after the resync: %s", k.Raw)
	}
	// An update for a device list that is not shared with us is ignored.
	carol := srv[1].register("carol")
	s1.sendEDU(t, srv[0], "m.device_list_update", map[string]any{"user_id": carol.userID, "device_id": "X", "stream_id": 1, "prev_id": []int64{}})

	// Alice leaves: nobody here shares a room with bob, so the copy goes
	// (updates stop coming); sharing again starts from a fresh fetch.
	alice.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/leave", map[string]any{})
	eventually(t, "the copy of bob's list dropped", func() bool {
		_, err := srv[0].srv.db.RemoteDeviceList(ctx, bob.userID)
		return errors.Is(err, storage.ErrNotFound)
	})
	if _, err := srv[0].srv.db.RemoteDeviceList(ctx, carol.userID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("a copy of carol's list from an unsolicited update: %v", err)
	}
	upload("ed3") // not sent to alice's server: no room in common
	alice.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{})
	if k := deviceKey(queryKeys(alice, bob.userID), bob.userID, bobDev); k.Get("keys.ed25519:"+bobDev).Str != "ed3" {
		t.Fatalf("bob's keys after alice rejoined: %s", k.Raw)
	}
}

// Cross-signing keys over federation: fetched with the device list (or
// asked for directly when no room is shared), replaced through
// m.signing_key_update, and signatures of devices carried by
// m.device_list_update.
func TestCrossSigningFederation(t *testing.T) {
	srv, links := fedNetLinked(t, 2)
	alice := srv[0].register("alice")
	bob := srv[1].register("bob")
	dave := srv[1].register("dave")
	bobDev := bob.must("GET", "/_matrix/client/v3/account/whoami", nil).Get("device_id").Str
	device := map[string]any{"user_id": bob.userID, "device_id": bobDev, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
		"keys": map[string]any{"ed25519:" + bobDev: "dev"}, "signatures": map[string]any{}}
	bob.must("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": device})
	master, self := newCSKey(t), newCSKey(t)
	bob.must("POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{
		"master_key": master.key(t, bob.userID, "master"), "self_signing_key": self.key(t, bob.userID, "self_signing", master)})
	daveMaster := newCSKey(t)
	dave.must("POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{"master_key": daveMaster.key(t, dave.userID, "master")})

	masterOf := func(q gjson.Result, user string) string {
		var pub string
		q.Get("master_keys." + gjson.Escape(user) + ".keys").ForEach(func(_, v gjson.Result) bool { pub = v.Str; return false })
		return pub
	}
	// No room shared with dave: asked of his server.
	if q := queryKeys(alice, dave.userID); masterOf(q, dave.userID) != daveMaster.pub {
		t.Fatalf("dave's master key over federation: %s", q.Raw)
	}

	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Get("room_id").Str
	since := alice.must("GET", "/_matrix/client/v3/sync", nil).Get("next_batch").Str
	alice.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/invite", map[string]any{"user_id": bob.userID})
	inChanged(t, alice, &since, bob.userID) // invited: alice's client may encrypt for him
	bob.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name=s0.test", map[string]any{})
	inChanged(t, alice, &since, bob.userID)
	q := queryKeys(alice, bob.userID)
	if masterOf(q, bob.userID) != master.pub || !q.Get("self_signing_keys."+gjson.Escape(bob.userID)+".keys.ed25519:"+gjson.Escape(self.pub)).Exists() {
		t.Fatalf("bob's cross-signing keys on alice's server: %s", q.Raw)
	}

	// From here alice's server cannot ask bob's: what it learns comes in
	// EDUs.
	links[[2]int{0, 1}].setCut(true)
	master2, self2 := newCSKey(t), newCSKey(t)
	bob.must("POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{
		"master_key": master2.key(t, bob.userID, "master"), "self_signing_key": self2.key(t, bob.userID, "self_signing", master2),
		"auth": map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": bob.userID}, "password": "pw-bob"}})
	inChanged(t, alice, &since, bob.userID)
	eventually(t, "bob's new master key on alice's server", func() bool {
		q := queryKeys(alice, bob.userID)
		return masterOf(q, bob.userID) == master2.pub &&
			q.Get("self_signing_keys."+gjson.Escape(bob.userID)+".keys.ed25519:"+gjson.Escape(self2.pub)).Exists()
	})
	signed := signAs(t, bob.userID, device, self2)
	sig := gjson.Get(mustJSON(t, signed), "signatures."+gjson.Escape(bob.userID)+".ed25519:"+gjson.Escape(self2.pub)).Str
	bob.must("POST", "/_matrix/client/v3/keys/signatures/upload", map[string]any{bob.userID: map[string]any{bobDev: signed}})
	eventually(t, "bob's device signature on alice's server", func() bool {
		k := deviceKey(queryKeys(alice, bob.userID), bob.userID, bobDev)
		return sig != "" && k.Get("signatures."+gjson.Escape(bob.userID)+".ed25519:"+gjson.Escape(self2.pub)).Str == sig
	})
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
