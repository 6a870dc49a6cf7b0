package storage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"repeater/storage"
)

func TestAdminAccounts(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		for _, a := range []storage.Account{
			{Localpart: "alice", IsAdmin: true, DisplayName: "Alice Liddell"},
			{Localpart: "bob", DisplayName: "Bob"},
			{Localpart: "carol", DisplayName: "Carol"},
			{Localpart: "dave", DisplayName: "Dave"},
			{Localpart: "12345", IsGuest: true},
		} {
			if err := db.CreateAccount(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.DeactivateAccount(ctx, "dave"); err != nil {
			t.Fatal(err)
		}
		names := func(as []storage.AccountInfo) string {
			var s []string
			for _, a := range as {
				s = append(s, a.Localpart)
			}
			return fmt.Sprint(s)
		}
		// Pages, by localpart; guests in, deactivated out by default flags.
		got, total, err := db.ListAccounts(ctx, storage.AccountQuery{Limit: 2, Guests: true})
		if err != nil || names(got) != "[12345 alice]" || total != 4 {
			t.Fatalf("page 1: %s %d %v", names(got), total, err)
		}
		got, _, _ = db.ListAccounts(ctx, storage.AccountQuery{Offset: 2, Limit: 2, Guests: true})
		if names(got) != "[bob carol]" {
			t.Fatalf("page 2: %s", names(got))
		}
		got, total, _ = db.ListAccounts(ctx, storage.AccountQuery{Limit: 10, Deactivated: true})
		if names(got) != "[alice bob carol dave]" || total != 4 {
			t.Fatalf("with deactivated, no guests: %s %d", names(got), total)
		}
		// The name filter matches localparts and display names, case-insensitively.
		got, total, _ = db.ListAccounts(ctx, storage.AccountQuery{Limit: 10, Name: "LIDDELL"})
		if names(got) != "[alice]" || total != 1 {
			t.Fatalf("name filter: %s %d", names(got), total)
		}
		got, _, _ = db.ListAccounts(ctx, storage.AccountQuery{Limit: 10, Name: "%"})
		if len(got) != 0 {
			t.Fatalf("%% is not a wildcard: %s", names(got))
		}
		got, _, _ = db.ListAccounts(ctx, storage.AccountQuery{Limit: 10, OrderBy: "admin", Backwards: true})
		if len(got) == 0 || got[0].Localpart != "alice" || !got[0].IsAdmin {
			t.Fatalf("admins first: %s", names(got))
		}
		if err := db.SetAdmin(ctx, "bob", true); err != nil {
			t.Fatal(err)
		}
		if err := db.SetAdmin(ctx, "nobody", true); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("set-admin of nobody: %v", err)
		}
		b, err := db.AccountDetails(ctx, "bob")
		if err != nil || !b.IsAdmin || b.CreatedTS == 0 || b.DisplayName != "Bob" {
			t.Fatalf("bob: %+v %v", b, err)
		}
		if err := db.EraseAccount(ctx, "dave"); err != nil {
			t.Fatal(err)
		}
		if err := db.ReactivateAccount(ctx, "dave", "hash"); err != nil {
			t.Fatal(err)
		}
		d, _ := db.AccountDetails(ctx, "dave")
		if acct, _ := db.GetAccount(ctx, "dave"); d.Deactivated || d.Erased || d.DisplayName != "" || acct.PasswordHash != "hash" {
			t.Fatalf("reactivated dave: %+v %+v", d, acct)
		}
		lps, err := db.ActiveLocalparts(ctx)
		if err != nil || fmt.Sprint(lps) != "[alice bob carol dave]" {
			t.Fatalf("active: %v %v", lps, err)
		}
	})
}

func TestSeenRecorder(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if err := db.CreateAccount(ctx, storage.Account{Localpart: "alice"}); err != nil {
			t.Fatal(err)
		}
		if err := db.CreateDevice(ctx, "alice", "D1", "phone", "h1", "10.0.0.1"); err != nil {
			t.Fatal(err)
		}
		rec := storage.NewSeenRecorder(db)
		if !rec.Due("alice", "D1") {
			t.Fatal("first request of a device is not due")
		}
		if rec.Due("alice", "D1") {
			t.Fatal("second request within the minute is due")
		}
		if !rec.Due("alice", "D2") {
			t.Fatal("another device is not due")
		}
		rec.Record("alice", "D1", "10.0.0.2", "TestClient/1.0")
		// Writes commit in order: this one lands after the record.
		if err := db.Write(ctx, func(*storage.Tx) error { return nil }); err != nil {
			t.Fatal(err)
		}
		devs, err := db.SeenDevices(ctx, "alice")
		if err != nil || len(devs) != 1 || devs[0].LastSeenIP != "10.0.0.2" || devs[0].UserAgent != "TestClient/1.0" || devs[0].DisplayName != "phone" {
			t.Fatalf("seen devices: %+v %v", devs, err)
		}
	})
}

func BenchmarkSeenRecorderDue(b *testing.B) {
	db, err := storage.Open(context.Background(), b.TempDir()+"/b.db")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	rec := storage.NewSeenRecorder(db)
	rec.Due("alice", "DEVICE")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rec.Due("alice", "DEVICE")
		}
	})
}

func TestRoomBlocks(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, blocked, err := db.RoomBlocked(ctx, "!r:x"); blocked || err != nil {
			t.Fatalf("blocked before: %v %v", blocked, err)
		}
		if err := db.SetRoomBlocked(ctx, "!r:x", "@admin:x", true); err != nil {
			t.Fatal(err)
		}
		if err := db.SetRoomBlocked(ctx, "!r:x", "@other:x", true); err != nil { // again: updates
			t.Fatal(err)
		}
		if by, blocked, err := db.RoomBlocked(ctx, "!r:x"); !blocked || by != "@other:x" || err != nil {
			t.Fatalf("blocked: %v %q %v", blocked, by, err)
		}
		if err := db.SetRoomBlocked(ctx, "!r:x", "", false); err != nil {
			t.Fatal(err)
		}
		if _, blocked, _ := db.RoomBlocked(ctx, "!r:x"); blocked {
			t.Fatal("still blocked")
		}
	})
}

// admCount returns the rows of a table matching a condition on $1.
func admCount(t *testing.T, db *storage.DB, query string, arg any) int {
	t.Helper()
	var n int
	if err := db.R().QueryRowContext(context.Background(), query, arg).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPurgeHistoryAndRoom(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const room = "!purge:x"
		if err := db.Write(ctx, func(tx *storage.Tx) error { return tx.InsertRoom(ctx, room, "10") }); err != nil {
			t.Fatal(err)
		}
		r := &relRoom{t: t, db: db, room: room}
		state := func(typ, key string, content map[string]any) string {
			var nid int64
			id := r.add("@alice:x", typ, content, func(e *storage.Event) { e.StateKey = &key })
			e, err := db.EventByID(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			nid = e.NID
			if err := db.Write(ctx, func(tx *storage.Tx) error {
				return tx.SetCurrentState(ctx, room, storage.StateKey{Type: typ, StateKey: key}, nid, "", nid)
			}); err != nil {
				t.Fatal(err)
			}
			return id
		}
		create := state("m.room.create", "", map[string]any{"room_version": "10"})
		state("m.room.member", "@alice:x", map[string]any{"membership": "join"})
		root := r.add("@alice:x", "m.room.message", map[string]any{"body": "thread root"}, nil) // depth 3
		r.add("@alice:x", "m.room.message", rel("m.thread", root), nil)                         // 4
		r.add("@bob:y", "m.room.message", map[string]any{"body": "remote old"}, nil)            // 5
		name := state("m.room.name", "", map[string]any{"name": "Old name"})                    // 6
		keep := r.add("@alice:x", "m.room.message", map[string]any{"body": "kept"}, nil)        // 7
		reply := r.add("@alice:x", "m.room.message", rel("m.thread", root), nil)                // 8
		if err := db.Write(ctx, func(tx *storage.Tx) error {
			return tx.AddGaps(ctx, room, []storage.Gap{{EventID: "$old", Depth: 2}, {EventID: "$new", Depth: 9}})
		}); err != nil {
			t.Fatal(err)
		}

		// Keeping local senders' events: only the remote message goes.
		n, err := db.PurgeHistory(ctx, room, 7, "x")
		if err != nil || n != 1 {
			t.Fatalf("purge keeping local: %d %v", n, err)
		}
		if _, err := db.EventByID(ctx, root); err != nil {
			t.Fatalf("local event purged: %v", err)
		}
		// Everything below depth 7 now.
		if n, err = db.PurgeHistory(ctx, room, 7, ""); err != nil || n != 2 {
			t.Fatalf("purge: %d %v", n, err)
		}
		if _, err := db.EventByID(ctx, root); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("root still held: %v", err)
		}
		// State stays, out of the timeline.
		for _, id := range []string{create, name} {
			e, err := db.EventByID(ctx, id)
			if err != nil || !e.Outlier {
				t.Fatalf("state event %s: %+v %v", id, e, err)
			}
		}
		tl, err := db.RoomEventsTopo(ctx, room, storage.TopoPos{Depth: 1 << 40, Stream: 1 << 40}, true, 100)
		if err != nil {
			t.Fatal(err)
		}
		sameIDs(t, "timeline after purge", tl, reply, keep)
		pos, _ := db.StreamPos(ctx)
		inRange, _, err := db.RoomEventsInRange(ctx, room, 0, pos, 100)
		if err != nil {
			t.Fatal(err)
		}
		sameIDs(t, "sync range after purge", inRange, keep, reply)
		// The thread's root is gone, and its summary with it.
		if n := admCount(t, db, `SELECT COUNT(*) FROM threads WHERE room_id = $1`, room); n != 0 {
			t.Fatalf("%d thread summaries left", n)
		}
		// Gaps below the boundary are not asked for again.
		gaps, err := db.Gaps(ctx, room)
		if err != nil || len(gaps) != 1 || gaps[0].EventID != "$new" {
			t.Fatalf("gaps: %+v %v", gaps, err)
		}
		if err := db.Write(ctx, func(tx *storage.Tx) error {
			return tx.AddGaps(ctx, room, []storage.Gap{{EventID: "$older", Depth: 7}})
		}); err != nil {
			t.Fatal(err)
		}
		if gaps, _ := db.Gaps(ctx, room); len(gaps) != 1 {
			t.Fatalf("a gap at the boundary is offered: %+v", gaps)
		}
		if d, _ := db.HistoryPurgedBelow(ctx, room); d != 7 {
			t.Fatalf("boundary %d", d)
		}
		if d, err := db.PurgeDepthBefore(ctx, room, 1000+8); err != nil || d != 7 {
			t.Fatalf("depth before ts: %d %v", d, err)
		}
		if _, err := db.PurgeDepthBefore(ctx, room, 0); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("nothing before ts 0: %v", err)
		}

		// Deleting the room leaves nothing of it.
		if err := db.CreateAlias(ctx, "#a:x", room, "@alice:x"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.PutAccountData(ctx, "alice", room, "m.tag", []byte(`{"tags":{}}`)); err != nil {
			t.Fatal(err)
		}
		if err := db.SetServerNoticeRoom(ctx, "alice", room); err != nil {
			t.Fatal(err)
		}
		if err := db.PurgeRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		for _, table := range []string{"rooms", "events", "current_state", "room_aliases", "account_data", "room_gaps", "event_relations",
			"threads", "room_history_purges", "server_notice_rooms", "state_snapshots"} {
			if n := admCount(t, db, `SELECT COUNT(*) FROM `+table+` WHERE room_id = $1`, room); n != 0 {
				t.Errorf("%s: %d rows left", table, n)
			}
		}
		if _, err := db.GetRoom(ctx, room); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("room still there: %v", err)
		}
	})
}

func TestServerNoticeRooms(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, err := db.ServerNoticeRoom(ctx, "alice"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("no room yet: %v", err)
		}
		for _, r := range []string{"!a:x", "!b:x"} {
			if err := db.SetServerNoticeRoom(ctx, "alice", r); err != nil {
				t.Fatal(err)
			}
		}
		if r, err := db.ServerNoticeRoom(ctx, "alice"); r != "!b:x" || err != nil {
			t.Fatalf("room: %q %v", r, err)
		}
		if ok, _ := db.IsServerNoticeRoom(ctx, "alice", "!b:x"); !ok {
			t.Fatal("not the notices room")
		}
		if ok, _ := db.IsServerNoticeRoom(ctx, "bob", "!b:x"); ok {
			t.Fatal("bob's notices room")
		}
	})
}

func TestEventReportsPage(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		for i := 0; i < 5; i++ {
			kind := "event"
			if i == 2 {
				kind = "room"
			}
			if _, err := db.AddReport(ctx, storage.Report{Kind: kind, Reporter: "@a:x", RoomID: "!r:x", EventID: fmt.Sprintf("$e%d", i), Reason: "spam"}); err != nil {
				t.Fatal(err)
			}
		}
		reps, total, err := db.EventReports(ctx, 0, 2, false)
		if err != nil || total != 4 || len(reps) != 2 || reps[0].EventID != "$e4" || reps[1].EventID != "$e3" {
			t.Fatalf("page 1: %+v %d %v", reps, total, err)
		}
		reps, _, _ = db.EventReports(ctx, 2, 2, false)
		if len(reps) != 2 || reps[0].EventID != "$e1" || reps[1].EventID != "$e0" {
			t.Fatalf("page 2: %+v", reps)
		}
		r, err := db.GetReport(ctx, reps[0].ID)
		if err != nil || r.EventID != "$e1" {
			t.Fatalf("get: %+v %v", r, err)
		}
	})
}
