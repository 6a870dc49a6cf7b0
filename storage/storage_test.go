package storage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"repeater/storage"
	"repeater/storage/storagetest"
)

func eachDB(t *testing.T, fn func(t *testing.T, db *storage.DB)) {
	for name, dsn := range storagetest.Dialects(t) {
		t.Run(name, func(t *testing.T) {
			db, err := storage.Open(context.Background(), dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			fn(t, db)
		})
	}
}

func TestAccountsAndDevices(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if err := db.CreateAccount(ctx, storage.Account{Localpart: "alice", PasswordHash: "h"}); err != nil {
			t.Fatal(err)
		}
		if err := db.CreateAccount(ctx, storage.Account{Localpart: "alice", PasswordHash: "h"}); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("duplicate account: got %v, want ErrConflict", err)
		}
		if _, err := db.GetAccount(ctx, "nobody"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("missing account: got %v, want ErrNotFound", err)
		}
		if err := db.CreateDevice(ctx, "alice", "D1", "phone", "hash1", "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
		d, err := db.DeviceByTokenHash(ctx, "hash1")
		if err != nil || d.DeviceID != "D1" || d.DisplayName != "phone" {
			t.Fatalf("device by token: %+v %v", d, err)
		}
		// Re-login on the same device replaces the token but keeps the name.
		if err := db.CreateDevice(ctx, "alice", "D1", "", "hash2", "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.DeviceByTokenHash(ctx, "hash1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("old token still valid: %v", err)
		}
		if d, _ := db.GetDevice(ctx, "alice", "D1"); d == nil || d.DisplayName != "phone" {
			t.Fatalf("display name lost: %+v", d)
		}
		if _, err := db.DeviceByTokenHash(ctx, "hash2"); err != nil { // now cached
			t.Fatal(err)
		}
		if err := db.DeleteDevices(ctx, "alice", nil, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := db.DeviceByTokenHash(ctx, "hash2"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("token of a deleted device still valid: %v", err)
		}
		if devs, _ := db.Devices(ctx, "alice"); len(devs) != 0 {
			t.Fatalf("devices left: %v", devs)
		}
	})
}

func TestSnapshotsAreDeltas(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		full := storage.StateMap{}
		var snaps []int64
		var parent int64
		// 40 state changes: chains are flattened every so often, and every
		// snapshot still reads back as the full state at that point.
		for i := 0; i < 40; i++ {
			k := storage.StateKey{Type: "m.room.member", StateKey: fmt.Sprintf("@u%d:x", i%7)}
			full[k] = int64(i + 1)
			cp := storage.StateMap{}
			for a, b := range full {
				cp[a] = b
			}
			pos, err := db.WritePos(ctx, 1, func(tx *storage.Tx) error {
				return tx.NewSnapshot(ctx, tx.Positions()[0], "!r:x", parent, cp, storage.StateMap{k: int64(i + 1)})
			})
			if err == nil {
				parent = pos[0]
			}
			if err != nil {
				t.Fatal(err)
			}
			snaps = append(snaps, parent)
			got, err := db.Snapshot(ctx, parent)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(cp) {
				t.Fatalf("snapshot %d: %d entries, want %d", i, len(got), len(cp))
			}
			for a, b := range cp {
				if got[a] != b {
					t.Fatalf("snapshot %d: %v = %d, want %d", i, a, got[a], b)
				}
			}
		}
		var entries int
		if err := db.R().QueryRowContext(ctx, `SELECT COUNT(*) FROM state_snapshot_entries`).Scan(&entries); err != nil {
			t.Fatal(err)
		}
		if entries >= 40*7/2 {
			t.Fatalf("%d snapshot entries for 40 changes: snapshots are not deduplicated", entries)
		}
	})
}

func TestStreamPositionsAndAccountData(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		p1, err := db.PutAccountData(ctx, "alice", "", "m.direct", []byte(`{"a":1}`))
		if err != nil {
			t.Fatal(err)
		}
		p2, err := db.PutAccountData(ctx, "alice", "!r:x", "tag", []byte(`{"b":2}`))
		if err != nil {
			t.Fatal(err)
		}
		if p2 != p1+1 {
			t.Fatalf("positions %d then %d", p1, p2)
		}
		if _, err := db.PutAccountData(ctx, "alice", "", "m.direct", []byte(`{"a":3}`)); err != nil {
			t.Fatal(err)
		}
		now, _ := db.StreamPos(ctx)
		got, err := db.AccountDataSince(ctx, "alice", p1, now)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || string(got[1].Content) != `{"a":3}` {
			t.Fatalf("account data since %d: %+v", p1, got)
		}
	})
}

func TestBadInputDoesNotCorrupt(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		// A failing write rolls back entirely, and the writes around it in
		// the same batch are unaffected.
		_, d1 := db.Submit(1, func(tx *storage.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO filters (localpart, json) VALUES ('a', '{}')`)
			return err
		}, nil)
		failed := false
		_, d2 := db.Submit(1, func(tx *storage.Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO filters (localpart, json) VALUES ('b', '{}')`); err != nil {
				return err
			}
			return errors.New("boom")
		}, func() { failed = true })
		if err := <-d1; err != nil {
			t.Fatal(err)
		}
		if err := <-d2; err == nil || !failed {
			t.Fatalf("failing write: err %v, onFail called %v", err, failed)
		}
		var n int
		db.R().QueryRowContext(ctx, `SELECT COUNT(*) FROM filters WHERE localpart = 'b'`).Scan(&n)
		if n != 0 {
			t.Fatal("a failed write left rows behind")
		}
		db.R().QueryRowContext(ctx, `SELECT COUNT(*) FROM filters WHERE localpart = 'a'`).Scan(&n)
		if n != 1 {
			t.Fatal("a good write in the same batch was lost")
		}
		// Odd strings are stored as given.
		name := "it's a \"test\" -- ; DROP TABLE accounts; \x01 é"
		if err := db.CreateAccount(ctx, storage.Account{Localpart: "bob", PasswordHash: "h", DisplayName: name}); err != nil {
			t.Fatal(err)
		}
		a, err := db.GetAccount(ctx, "bob")
		if err != nil || a.DisplayName != name {
			t.Fatalf("got %+v %v", a, err)
		}
	})
}
