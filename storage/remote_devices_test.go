package storage_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"

	"github.com/tidwall/gjson"

	"repeater/storage"
)

// The cache of remote users' device lists: a resync replaces it, EDUs
// apply on top only when newer, signing-key updates need a copy, stale
// copies stay readable, and dropping forgets everything.
func TestRemoteDeviceLists(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		bob := "@bob:remote.test"
		if _, err := db.RemoteDeviceList(ctx, bob); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("no copy yet: %v", err)
		}
		if ok, err := db.UpdateRemoteDevice(ctx, bob, 5, storage.RemoteDevice{DeviceID: "D1", Keys: []byte(`{}`)}, false); ok || err != nil {
			t.Fatalf("update without a copy: %v %v", ok, err)
		}
		if ok, err := db.SetRemoteCrossSigningKeys(ctx, bob, []byte(`{"m":1}`), nil); ok || err != nil {
			t.Fatalf("signing keys without a copy: %v %v", ok, err)
		}
		if err := db.ReplaceRemoteDeviceList(ctx, storage.RemoteDeviceList{UserID: bob, StreamID: 3, MasterKey: []byte(`{"k":"m1"}`),
			Devices: []storage.RemoteDevice{{DeviceID: "D1", DisplayName: "phone", Keys: []byte(`{"k":1}`)}, {DeviceID: "D2"}}}); err != nil {
			t.Fatal(err)
		}
		l, err := db.RemoteDeviceList(ctx, bob)
		if err != nil || l.StreamID != 3 || l.Stale || string(l.MasterKey) != `{"k":"m1"}` || l.SelfSigningKey != nil || len(l.Devices) != 2 ||
			l.Devices[0].DisplayName != "phone" || string(l.Devices[0].Keys) != `{"k":1}` || l.Devices[1].Keys != nil {
			t.Fatalf("after resync: %+v %v", l, err)
		}
		// Not newer than the copy: ignored.
		if ok, _ := db.UpdateRemoteDevice(ctx, bob, 3, storage.RemoteDevice{DeviceID: "D3"}, false); ok {
			t.Fatal("an update at the copy's stream ID was applied")
		}
		if ok, err := db.UpdateRemoteDevice(ctx, bob, 4, storage.RemoteDevice{DeviceID: "D1", DisplayName: "new", Keys: []byte(`{"k":2}`)}, false); !ok || err != nil {
			t.Fatalf("newer update: %v %v", ok, err)
		}
		if ok, err := db.UpdateRemoteDevice(ctx, bob, 6, storage.RemoteDevice{DeviceID: "D2"}, true); !ok || err != nil {
			t.Fatalf("deletion: %v %v", ok, err)
		}
		if ok, err := db.SetRemoteCrossSigningKeys(ctx, bob, nil, []byte(`{"k":"s1"}`)); !ok || err != nil {
			t.Fatalf("signing keys: %v %v", ok, err)
		}
		if err := db.MarkRemoteDeviceListStale(ctx, bob); err != nil {
			t.Fatal(err)
		}
		l, err = db.RemoteDeviceList(ctx, bob)
		if err != nil || l.StreamID != 6 || !l.Stale || len(l.Devices) != 1 || l.Devices[0].DisplayName != "new" || string(l.Devices[0].Keys) != `{"k":2}` ||
			string(l.MasterKey) != `{"k":"m1"}` || string(l.SelfSigningKey) != `{"k":"s1"}` {
			t.Fatalf("after updates: %+v %v", l, err)
		}
		// A resync clears the stale mark and replaces the devices.
		if err := db.ReplaceRemoteDeviceList(ctx, storage.RemoteDeviceList{UserID: bob, StreamID: 9, Devices: []storage.RemoteDevice{{DeviceID: "D9"}}}); err != nil {
			t.Fatal(err)
		}
		if l, _ = db.RemoteDeviceList(ctx, bob); l.Stale || l.StreamID != 9 || len(l.Devices) != 1 || l.Devices[0].DeviceID != "D9" || l.MasterKey != nil {
			t.Fatalf("after second resync: %+v", l)
		}
		held, err := db.RemoteDeviceListsHeld(ctx, []string{"@x:remote.test", bob})
		if err != nil || !slices.Equal(held, []string{bob}) {
			t.Fatalf("held: %v %v", held, err)
		}
		if err := db.DropRemoteDeviceList(ctx, bob); err != nil {
			t.Fatal(err)
		}
		if _, err := db.RemoteDeviceList(ctx, bob); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("after drop: %v", err)
		}
	})
}

// Our users' device-list stream IDs: one per change, with the EDU queued
// in the same transaction for each destination.
func TestDeviceListStreamIDs(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		alice := "@alice:local.test"
		if id, err := db.DeviceListStreamID(ctx, alice); id != 0 || err != nil {
			t.Fatalf("before any change: %d %v", id, err)
		}
		var prevs []int64
		build := func(id, prev int64) ([]byte, error) {
			prevs = append(prevs, prev)
			return []byte(`{"edu_type":"m.device_list_update","content":{"stream_id":` + strconv.FormatInt(id, 10) + `}}`), nil
		}
		for want := int64(1); want <= 3; want++ {
			dests := []string{"a.test", "b.test"}
			if want == 2 {
				dests = nil // nobody to tell: the ID still moves on
			}
			id, err := db.QueueDeviceListEDU(ctx, alice, dests, build)
			if err != nil || id != want {
				t.Fatalf("change %d: id %d %v", want, id, err)
			}
		}
		if !slices.Equal(prevs, []int64{0, 2}) {
			t.Fatalf("prev IDs given to build: %v", prevs)
		}
		if id, _ := db.DeviceListStreamID(ctx, alice); id != 3 {
			t.Fatalf("current ID %d, want 3", id)
		}
		items, err := db.Outbox(ctx, "b.test", 10)
		if err != nil || len(items) != 2 || gjson.GetBytes(items[0].EDU, "content.stream_id").Int() != 1 || gjson.GetBytes(items[1].EDU, "content.stream_id").Int() != 3 {
			t.Fatalf("queued for b.test: %+v %v", items, err)
		}
		// Another user's IDs are their own.
		if id, _ := db.QueueDeviceListEDU(ctx, "@bob:local.test", nil, build); id != 1 {
			t.Fatalf("bob's first ID: %d", id)
		}
	})
}

// A new user-signing key is a device-list change for its owner only; a
// new master key is one for everyone.
func TestOwnDeviceListChanges(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		alice, bob := "@alice:local.test", "@bob:local.test"
		from, _ := db.StreamPos(ctx)
		to, err := db.PutCrossSigningKeys(ctx, alice, map[string][]byte{"user_signing": []byte(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		both := []string{alice, bob}
		if got, _ := db.DeviceListChangesFor(ctx, alice, both, from, to); !slices.Equal(got, []string{alice}) {
			t.Fatalf("alice's view after her user-signing key: %v", got)
		}
		if got, _ := db.DeviceListChangesFor(ctx, bob, both, from, to); len(got) != 0 {
			t.Fatalf("bob's view after alice's user-signing key: %v", got)
		}
		to2, err := db.PutCrossSigningKeys(ctx, alice, map[string][]byte{"master": []byte(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := db.DeviceListChangesFor(ctx, bob, both, to, to2); !slices.Equal(got, []string{alice}) {
			t.Fatalf("bob's view after alice's master key: %v", got)
		}
		// Both kinds of change are kept.
		if got, _ := db.DeviceListChangesFor(ctx, alice, both, from, to); !slices.Equal(got, []string{alice}) {
			t.Fatalf("alice's earlier own change lost: %v", got)
		}
	})
}
