package storage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"repeater/storage"
)

func TestKeyBackupStorage(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const u = "@alice:x"
		if _, err := db.KeyBackupVersion(ctx, u, 0); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("no backup yet: %v", err)
		}
		if _, _, err := db.PutBackupKeys(ctx, u, 1, nil); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("keys without a backup: %v", err)
		}
		v1, err := db.CreateKeyBackup(ctx, u, "alg", []byte(`{"public_key":"a"}`))
		if err != nil || v1 != 1 {
			t.Fatalf("create: %d %v", v1, err)
		}
		key := func(room, sess string, fmi, fc int64, verified bool, data string) storage.BackupKey {
			return storage.BackupKey{RoomID: room, SessionID: sess, FirstMessageIndex: fmi, ForwardedCount: fc, IsVerified: verified, SessionData: []byte(data)}
		}
		etag, count, err := db.PutBackupKeys(ctx, u, v1, []storage.BackupKey{key("!a:x", "s1", 3, 1, false, `"first"`), key("!b:x", "s2", 0, 0, false, `{}`)})
		if err != nil || etag != 1 || count != 2 {
			t.Fatalf("put: etag %d count %d %v", etag, count, err)
		}
		// The replacement rule: verified beats unverified, then the lower
		// first_message_index, then the lower forwarded_count; ties keep
		// the stored key and leave the etag alone.
		steps := []struct {
			k        storage.BackupKey
			replaced bool
		}{
			{key("!a:x", "s1", 3, 1, false, `"tie"`), false},
			{key("!a:x", "s1", 4, 0, false, `"worse index"`), false},
			{key("!a:x", "s1", 3, 0, false, `"fewer forwards"`), true},
			{key("!a:x", "s1", 2, 5, false, `"lower index"`), true},
			{key("!a:x", "s1", 9, 9, true, `"verified"`), true},
			{key("!a:x", "s1", 0, 0, false, `"unverified"`), false},
			{key("!a:x", "s1", 8, 9, true, `"verified lower"`), true},
		}
		want := `"first"`
		for i, s := range steps {
			before := etag
			etag, count, err = db.PutBackupKeys(ctx, u, v1, []storage.BackupKey{s.k})
			if err != nil || count != 2 {
				t.Fatalf("step %d: %d %v", i, count, err)
			}
			if s.replaced {
				want = string(s.k.SessionData)
			}
			if (etag != before) != s.replaced {
				t.Fatalf("step %d: etag %d -> %d, replaced %v", i, before, etag, s.replaced)
			}
			got, err := db.BackupKeys(ctx, u, v1, "!a:x", "s1")
			if err != nil || len(got) != 1 || string(got[0].SessionData) != want {
				t.Fatalf("step %d: got %+v %v, want %s", i, got, err, want)
			}
		}
		// A new version becomes current; the old one refuses writes.
		v2, err := db.CreateKeyBackup(ctx, u, "alg", []byte(`{}`))
		if err != nil || v2 != 2 {
			t.Fatalf("second version: %d %v", v2, err)
		}
		var wrong *storage.WrongBackupVersionError
		if _, _, err := db.PutBackupKeys(ctx, u, v1, []storage.BackupKey{key("!a:x", "s9", 0, 0, false, `{}`)}); !errors.As(err, &wrong) || wrong.Current != v2 {
			t.Fatalf("write to old version: %v", err)
		}
		if b, err := db.KeyBackupVersion(ctx, u, 0); err != nil || b.Version != v2 || b.Count != 0 {
			t.Fatalf("current: %+v %v", b, err)
		}
		if b, err := db.KeyBackupVersion(ctx, u, v1); err != nil || b.Count != 2 || b.Etag != etag {
			t.Fatalf("old version: %+v %v", b, err)
		}
		if err := db.UpdateKeyBackup(ctx, u, v1, []byte(`{"x":1}`)); err != nil {
			t.Fatal(err)
		}
		// Deleting keys by room, then the version with the rest.
		if e, c, err := db.DeleteBackupKeys(ctx, u, v1, "!b:x", ""); err != nil || c != 1 || e != etag+1 {
			t.Fatalf("delete room keys: %d %d %v", e, c, err)
		}
		if err := db.DeleteKeyBackup(ctx, u, v2); err != nil {
			t.Fatal(err)
		}
		if err := db.DeleteKeyBackup(ctx, u, v2); err != nil {
			t.Fatalf("deleting a deleted version again: %v", err)
		}
		if err := db.DeleteKeyBackup(ctx, u, 99); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("deleting an unknown version: %v", err)
		}
		if b, err := db.KeyBackupVersion(ctx, u, 0); err != nil || b.Version != v1 || string(b.AuthData) != `{"x":1}` {
			t.Fatalf("current after deleting v2: %+v %v", b, err)
		}
		if _, err := db.BackupKeys(ctx, u, v2, "", ""); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("keys of a deleted version: %v", err)
		}
		// Numbers are never reused, and a new version starts empty.
		v3, _ := db.CreateKeyBackup(ctx, u, "alg", []byte(`{}`))
		if v3 != 3 {
			t.Fatalf("third version numbered %d", v3)
		}
		if keys, err := db.BackupKeys(ctx, u, v3, "", ""); err != nil || len(keys) != 0 {
			t.Fatalf("new version keys: %v %v", keys, err)
		}
		// Other users have their own numbering.
		if v, _ := db.CreateKeyBackup(ctx, "@bob:x", "alg", []byte(`{}`)); v != 1 {
			t.Fatalf("bob's first version is %d", v)
		}
	})
}

func TestReportsLoginTokensAliases(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		score := int64(-100)
		id1, err := db.AddReport(ctx, storage.Report{Kind: "event", Reporter: "@a:x", RoomID: "!r:x", EventID: "$e", Reason: "spam", Score: &score})
		if err != nil {
			t.Fatal(err)
		}
		id2, err := db.AddReport(ctx, storage.Report{Kind: "user", Reporter: "@a:x", TargetUserID: "@b:x"})
		if err != nil || id2 <= id1 {
			t.Fatalf("second report %d after %d: %v", id2, id1, err)
		}
		rs, err := db.Reports(ctx, 0, 10)
		if err != nil || len(rs) != 2 || rs[0].ID != id2 || rs[1].Score == nil || *rs[1].Score != -100 || rs[1].EventID != "$e" || rs[0].TargetUserID != "@b:x" {
			t.Fatalf("reports: %+v %v", rs, err)
		}
		if rs, _ := db.Reports(ctx, id2, 10); len(rs) != 1 || rs[0].ID != id1 {
			t.Fatalf("reports before %d: %+v", id2, rs)
		}

		if err := db.CreateLoginToken(ctx, "h1", "alice", 1<<62); err != nil {
			t.Fatal(err)
		}
		if err := db.CreateLoginToken(ctx, "h2", "alice", 1); err != nil {
			t.Fatal(err)
		}
		if lp, err := db.UseLoginToken(ctx, "h1"); err != nil || lp != "alice" {
			t.Fatalf("use: %q %v", lp, err)
		}
		if _, err := db.UseLoginToken(ctx, "h1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("token used twice: %v", err)
		}
		if _, err := db.UseLoginToken(ctx, "h2"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("expired token: %v", err)
		}

		for _, al := range []string{"#a:x", "#b:x"} {
			if err := db.CreateAlias(ctx, al, "!old:x", "@a:x"); err != nil {
				t.Fatal(err)
			}
		}
		moved, err := db.MoveAliases(ctx, "!old:x", "!new:x")
		if err != nil || len(moved) != 2 {
			t.Fatalf("moved %v %v", moved, err)
		}
		if room, _, _ := db.ResolveAlias(ctx, "#b:x"); room != "!new:x" {
			t.Fatalf("alias points at %s", room)
		}
	})
}

func TestRoomEventsByTS(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		// Events at ts 100, 200, 200 and 50: the last is older than its
		// stream position suggests, as backfilled history is.
		tss := []int64{100, 200, 200, 50}
		_, err := db.WritePos(ctx, len(tss), func(tx *storage.Tx) error {
			for i, ts := range tss {
				e := &storage.Event{EventID: fmt.Sprintf("$e%d", i), RoomID: "!r:x", Type: "m.room.message", Sender: "@a:x",
					Depth: int64(i + 1), OriginTS: ts, StreamPos: tx.Positions()[i], JSON: []byte(`{}`)}
				if err := tx.InsertEvent(ctx, e); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		ids := func(evs []*storage.Event, err error) string {
			if err != nil {
				t.Fatal(err)
			}
			s := ""
			for _, e := range evs {
				s += e.EventID + " "
			}
			return s
		}
		if got := ids(db.RoomEventsByTS(ctx, "!r:x", storage.TSStart(150, true), true, 10)); got != "$e1 $e2 " {
			t.Fatalf("forward from 150: %s", got)
		}
		if got := ids(db.RoomEventsByTS(ctx, "!r:x", storage.TSStart(200, false), false, 10)); got != "$e2 $e1 $e0 $e3 " {
			t.Fatalf("backward from 200: %s", got)
		}
		if got := ids(db.RoomEventsByTS(ctx, "!r:x", storage.TSStart(200, true), true, 1)); got != "$e1 " {
			t.Fatalf("forward from 200, one: %s", got)
		}
		evs, _ := db.RoomEventsByTS(ctx, "!r:x", storage.TSStart(200, true), true, 1)
		if got := ids(db.RoomEventsByTS(ctx, "!r:x", storage.TSPos{TS: evs[0].OriginTS, Stream: evs[0].StreamPos}, true, 10)); got != "$e2 " {
			t.Fatalf("forward after $e1: %s", got)
		}
		if got := ids(db.RoomEventsByTS(ctx, "!r:x", storage.TSStart(301, true), true, 10)); got != "" {
			t.Fatalf("forward past the end: %s", got)
		}
	})
}
