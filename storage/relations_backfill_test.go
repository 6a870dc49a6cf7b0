package storage

import (
	"context"
	"testing"

	"repeater/storage/storagetest"
)

// Migration 008 indexes the relations of events stored before it.
func TestRelationsBackfill(t *testing.T) {
	for name, dsn := range storagetest.Dialects(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			db, err := Open(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			add := func(id string, depth int64, js string, redacted bool) {
				if _, err := db.WritePos(ctx, 1, func(tx *Tx) error {
					e := &Event{EventID: id, RoomID: "!r:x", Type: "m.room.message", Sender: "@a:x", Depth: depth, JSON: []byte(js), StreamPos: tx.Positions()[0]}
					if err := tx.InsertEvent(ctx, e); err != nil {
						return err
					}
					if redacted {
						return tx.MarkRedacted(ctx, id, "$red")
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			add("$root", 1, `{"content":{"body":"root"}}`, false)
			add("$t1", 2, `{"content":{"m.relates_to":{"rel_type":"m.thread","event_id":"$root"}}}`, false)
			add("$t2", 3, `{"content":{"m.relates_to":{"rel_type":"m.thread","event_id":"$root"}}}`, false)
			add("$t3", 4, `{"content":{"m.relates_to":{"rel_type":"m.thread","event_id":"$root"}}}`, true)
			// As before the migration: no relation rows.
			for _, q := range []string{`DELETE FROM event_relations`, `DELETE FROM threads`} {
				if _, err := db.write.ExecContext(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			tx, err := db.write.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := backfillRelations(ctx, db, tx); err != nil {
				tx.Rollback()
				t.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			sums, err := db.RelationSummaries(ctx, "@a:x", map[string]string{"$root": "!r:x"})
			if err != nil {
				t.Fatal(err)
			}
			if th := sums["$root"].Thread; th == nil || th.Count != 2 || th.LatestEventID != "$t2" || !sums["$root"].Participated {
				t.Fatalf("backfilled thread: %+v", sums["$root"])
			}
		})
	}
}
