package storage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"repeater/storage"
)

// relRoom writes events into a room for the relations tests.
type relRoom struct {
	t     *testing.T
	db    *storage.DB
	room  string
	depth int64
}

// add stores an event with the given content and returns its ID.
func (r *relRoom) add(sender, evType string, content map[string]any, mod func(e *storage.Event)) string {
	r.t.Helper()
	ctx := context.Background()
	r.depth++
	id := fmt.Sprintf("$e%d_%s", r.depth, r.room[1:])
	js, _ := json.Marshal(map[string]any{"type": evType, "sender": sender, "room_id": r.room, "content": content,
		"depth": r.depth, "origin_server_ts": 1000 + r.depth})
	e := &storage.Event{EventID: id, RoomID: r.room, Type: evType, Sender: sender, Depth: r.depth, OriginTS: 1000 + r.depth, JSON: js}
	if mod != nil {
		mod(e)
	}
	if _, err := r.db.WritePos(ctx, 1, func(tx *storage.Tx) error {
		if e.StreamPos == 0 {
			e.StreamPos = tx.Positions()[0]
		} else {
			nids, err := tx.NegativeNIDs(ctx, 1)
			if err != nil {
				return err
			}
			e.StreamPos = nids[0]
		}
		return tx.InsertEvent(ctx, e)
	}); err != nil {
		r.t.Fatal(err)
	}
	return id
}

func rel(relType, parent string, extra ...any) map[string]any {
	rt := map[string]any{"rel_type": relType, "event_id": parent}
	for i := 0; i+1 < len(extra); i += 2 {
		rt[extra[i].(string)] = extra[i+1]
	}
	return map[string]any{"body": "x", "m.relates_to": rt}
}

func ids(evs []*storage.Event) []string {
	out := []string{}
	for _, e := range evs {
		out = append(out, e.EventID)
	}
	return out
}

func sameIDs(t *testing.T, what string, got []*storage.Event, want ...string) {
	t.Helper()
	g := ids(got)
	if len(want) == 0 {
		want = []string{}
	}
	if fmt.Sprint(g) != fmt.Sprint(want) {
		t.Fatalf("%s: got %v, want %v", what, g, want)
	}
}

func TestRelations(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		r := &relRoom{t: t, db: db, room: "!r:x"}
		root := r.add("@alice:x", "m.room.message", map[string]any{"body": "root"}, nil)
		t1 := r.add("@bob:x", "m.room.message", rel("m.thread", root), nil)
		react := r.add("@bob:x", "m.reaction", rel("m.annotation", root, "key", "👍"), nil)
		edit := r.add("@alice:x", "m.room.message", map[string]any{"body": "* e", "m.new_content": map[string]any{"body": "e"},
			"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": root}}, nil)
		ref := r.add("@carol:x", "m.room.message", rel("m.reference", root), nil)
		t2 := r.add("@carol:x", "m.room.message", rel("m.thread", root), nil)
		reactOnT1 := r.add("@alice:x", "m.reaction", rel("m.annotation", t1, "key", "ok"), nil)
		// Not relations: rejected, outlier, a plain reply, a self-relation,
		// a malformed one, a state event replacing.
		r.add("@bob:x", "m.room.message", rel("m.thread", root), func(e *storage.Event) { e.Rejected = true })
		outlier := r.add("@bob:x", "m.room.message", rel("m.thread", root), func(e *storage.Event) { e.Outlier = true; e.StreamPos = -1 })
		r.add("@bob:x", "m.room.message", map[string]any{"body": "re", "m.relates_to": map[string]any{"m.in_reply_to": map[string]any{"event_id": root}}}, nil)
		r.add("@bob:x", "m.room.message", map[string]any{"m.relates_to": map[string]any{"rel_type": 5, "event_id": root}}, nil)
		sk := ""
		r.add("@alice:x", "m.room.topic", rel("m.replace", root), func(e *storage.Event) { e.StateKey = &sk })

		page := func(q storage.RelationsQuery) []*storage.Event {
			t.Helper()
			q.RoomID, q.Parent = "!r:x", root
			if q.Limit == 0 {
				q.Limit = 100
			}
			evs, err := db.Relations(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			return evs
		}
		sameIDs(t, "all, backwards", page(storage.RelationsQuery{Backwards: true}), t2, ref, edit, react, t1)
		sameIDs(t, "all, forwards", page(storage.RelationsQuery{}), t1, react, edit, ref, t2)
		sameIDs(t, "threads", page(storage.RelationsQuery{Backwards: true, RelType: "m.thread"}), t2, t1)
		sameIDs(t, "reactions", page(storage.RelationsQuery{Backwards: true, RelType: "m.annotation", EventType: "m.reaction"}), react)
		sameIDs(t, "annotations of another type", page(storage.RelationsQuery{Backwards: true, RelType: "m.annotation", EventType: "m.room.message"}))
		sameIDs(t, "recursive", page(storage.RelationsQuery{Backwards: true, Recurse: true}), reactOnT1, t2, ref, edit, react, t1)
		sameIDs(t, "recursive annotations", page(storage.RelationsQuery{Backwards: true, Recurse: true, RelType: "m.annotation"}), reactOnT1, react)
		// Paging: two at a time, backwards, resuming just before the last.
		first := page(storage.RelationsQuery{Backwards: true, Limit: 2})
		sameIDs(t, "page 1", first, t2, ref)
		last := first[1]
		second := page(storage.RelationsQuery{Backwards: true, Limit: 2, From: &storage.TopoPos{Depth: last.Depth, Stream: last.StreamPos - 1}})
		sameIDs(t, "page 2", second, edit, react)
		// To bounds the range (exclusive backwards).
		sameIDs(t, "bounded", page(storage.RelationsQuery{Backwards: true, To: &storage.TopoPos{Depth: second[1].Depth, Stream: second[1].StreamPos}}), t2, ref, edit)
		fwd := page(storage.RelationsQuery{Limit: 2})
		sameIDs(t, "forwards page 2", page(storage.RelationsQuery{Limit: 2, From: &storage.TopoPos{Depth: fwd[1].Depth, Stream: fwd[1].StreamPos}}), edit, ref)

		// Summaries for bundled aggregations.
		sums, err := db.RelationSummaries(ctx, "@bob:x", map[string]string{root: "!r:x", t1: "!r:x", react: "!r:x", "$nope": "!r:x"})
		if err != nil {
			t.Fatal(err)
		}
		s := sums[root]
		if s == nil || s.Thread == nil || s.Thread.Count != 2 || s.Thread.LatestEventID != t2 || !s.Participated {
			t.Fatalf("thread summary: %+v", s)
		}
		if len(s.Replacements) != 1 || s.Replacements[0].EventID != edit || len(s.References) != 1 || s.References[0] != ref {
			t.Fatalf("replace/reference summary: %+v", s)
		}
		if len(sums) != 1 {
			t.Fatalf("summaries for events without bundled children: %v", sums)
		}
		if sums, _ := db.RelationSummaries(ctx, "@dave:x", map[string]string{root: "!r:x"}); sums[root].Participated {
			t.Fatal("dave participated")
		}
		// The same event IDs claimed in another room count for nothing there.
		if sums, _ := db.RelationSummaries(ctx, "@bob:x", map[string]string{root: "!other:x"}); len(sums) != 0 {
			t.Fatalf("cross-room summary: %+v", sums)
		}

		// Thread list.
		r2root := r.add("@dave:x", "m.room.message", map[string]any{"body": "root 2"}, nil)
		r.add("@dave:x", "m.room.message", rel("m.thread", r2root), nil)
		list, err := db.Threads(ctx, "!r:x", "", nil, 10)
		if err != nil || len(list) != 2 || list[0].Root.EventID != r2root || list[1].Root.EventID != root {
			t.Fatalf("threads: %+v %v", list, err)
		}
		more, err := db.Threads(ctx, "!r:x", "", &storage.TopoPos{Depth: list[0].LatestDepth, Stream: list[0].LatestPos}, 10)
		if err != nil || len(more) != 1 || more[0].Root.EventID != root {
			t.Fatalf("threads page 2: %+v %v", more, err)
		}
		for user, want := range map[string]int{"@alice:x": 1, "@bob:x": 1, "@dave:x": 1, "@eve:x": 0} {
			if l, err := db.Threads(ctx, "!r:x", user, nil, 10); err != nil || len(l) != want {
				t.Fatalf("threads %s participated in: %d %v", user, len(l), err)
			}
		}

		// Annotations.
		if ok, _ := db.HasAnnotation(ctx, "!r:x", root, "@bob:x", "m.reaction", "👍"); !ok {
			t.Fatal("annotation not found")
		}
		if ok, _ := db.HasAnnotation(ctx, "!r:x", root, "@bob:x", "m.reaction", "👎"); ok {
			t.Fatal("wrong key found")
		}

		// Redacting children removes them; the thread summary follows.
		redact := func(id string) {
			if err := db.Write(ctx, func(tx *storage.Tx) error { return tx.MarkRedacted(ctx, id, "$red"+id) }); err != nil {
				t.Fatal(err)
			}
		}
		redact(t2)
		sums, _ = db.RelationSummaries(ctx, "@carol:x", map[string]string{root: "!r:x"})
		if th := sums[root].Thread; th == nil || th.Count != 1 || th.LatestEventID != t1 || sums[root].Participated {
			t.Fatalf("after redacting the latest reply: %+v", sums[root])
		}
		redact(t1)
		redact(react)
		sums, _ = db.RelationSummaries(ctx, "@carol:x", map[string]string{root: "!r:x"})
		if sums[root].Thread != nil {
			t.Fatalf("thread without replies: %+v", sums[root].Thread)
		}
		if ok, _ := db.HasAnnotation(ctx, "!r:x", root, "@bob:x", "m.reaction", "👍"); ok {
			t.Fatal("redacted annotation still counts")
		}
		sameIDs(t, "after redactions", page(storage.RelationsQuery{Backwards: true}), ref, edit)

		// An outlier brought into the timeline gets its relation.
		if err := db.Write(ctx, func(tx *storage.Tx) error { return tx.PromoteOutlier(ctx, outlier) }); err != nil {
			t.Fatal(err)
		}
		sameIDs(t, "promoted outlier", page(storage.RelationsQuery{Backwards: true, RelType: "m.thread"}), outlier)

		if has, err := db.RoomHasRelations(ctx, "!r:x"); err != nil || !has {
			t.Fatalf("room has relations: %v %v", has, err)
		}
		if has, err := db.RoomHasRelations(ctx, "!quiet:x"); err != nil || has {
			t.Fatalf("quiet room has relations: %v %v", has, err)
		}
		q := &relRoom{t: t, db: db, room: "!quiet:x"}
		qr := q.add("@a:x", "m.room.message", map[string]any{"body": "hi"}, nil)
		q.add("@a:x", "m.reaction", rel("m.annotation", qr, "key", "x"), nil)
		if has, _ := db.RoomHasRelations(ctx, "!quiet:x"); !has {
			t.Fatal("a room's first relation is not noticed")
		}
	})
}
