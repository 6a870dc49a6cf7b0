package storage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"testing"

	"repeater/storage"
	"repeater/storage/storagetest"
)

// searchFixture writes events and memberships straight into storage.
type searchFixture struct {
	t     *testing.T
	db    *storage.DB
	n     int
	depth int64
}

func (f *searchFixture) event(roomID, sender, typ string, stateKey *string, content map[string]any, mod func(e *storage.Event)) *storage.Event {
	f.t.Helper()
	f.n++
	f.depth++
	ev := map[string]any{"type": typ, "room_id": roomID, "sender": sender, "content": content, "origin_server_ts": 1000 + f.n}
	if stateKey != nil {
		ev["state_key"] = *stateKey
	}
	js, _ := json.Marshal(ev)
	e := &storage.Event{EventID: fmt.Sprintf("$e%d", f.n), RoomID: roomID, Type: typ, StateKey: stateKey, Sender: sender,
		Depth: f.depth, OriginTS: int64(1000 + f.n), JSON: js}
	if mod != nil {
		mod(e)
	}
	ctx := context.Background()
	_, err := f.db.WritePos(ctx, 1, func(tx *storage.Tx) error {
		e.StreamPos = tx.Positions()[0]
		if e.Outlier {
			e.StreamPos = -e.StreamPos
		}
		if err := tx.InsertEvent(ctx, e); err != nil {
			return err
		}
		if stateKey != nil && !e.Rejected && !e.Outlier {
			m := ""
			if typ == "m.room.member" {
				m, _ = content["membership"].(string)
			}
			return tx.SetCurrentState(ctx, roomID, storage.StateKey{Type: typ, StateKey: *stateKey}, e.NID, m, e.StreamPos)
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return e
}

func (f *searchFixture) msg(roomID, sender, body string) *storage.Event {
	return f.event(roomID, sender, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": body}, nil)
}

func (f *searchFixture) member(roomID, user, membership, name string) {
	content := map[string]any{"membership": membership}
	if name != "" {
		content["displayname"] = name
	}
	f.event(roomID, user, "m.room.member", &user, content, nil)
}

func (f *searchFixture) state(roomID, sender, typ string, content map[string]any) *storage.Event {
	empty := ""
	return f.event(roomID, sender, typ, &empty, content, nil)
}

func (f *searchFixture) search(s storage.EventSearch, term string) []int64 {
	f.t.Helper()
	s.Query = storage.ParseSearchTerm(term)
	if s.Types == nil {
		s.Types = []string{"m.room.message", "m.room.name", "m.room.topic"}
	}
	if s.Limit == 0 {
		s.Limit = 100
	}
	hits, err := f.db.SearchEvents(context.Background(), s)
	if err != nil {
		f.t.Fatalf("search %q: %v", term, err)
	}
	out := []int64{}
	for _, h := range hits {
		out = append(out, h.NID)
	}
	n, err := f.db.CountSearchEvents(context.Background(), s)
	if err != nil {
		f.t.Fatalf("count %q: %v", term, err)
	}
	if s.Before == 0 && len(hits) < s.Limit && n != len(hits) {
		f.t.Errorf("count %q = %d, want %d", term, n, len(hits))
	}
	return out
}

func nids(evs ...*storage.Event) []int64 {
	out := []int64{}
	for _, e := range evs {
		out = append(out, e.NID)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] > out[j] })
	return out
}

func TestSearchEvents(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := &searchFixture{t: t, db: db}
		alice, bob := "@alice:x", "@bob:x"
		f.member("!a:x", alice, "join", "")
		f.member("!a:x", bob, "join", "")
		f.member("!b:x", alice, "join", "")
		f.member("!c:x", bob, "join", "")

		m1 := f.msg("!a:x", alice, "The Martians are coming")
		m2 := f.msg("!a:x", bob, "men from mars, martian men")
		m3 := f.msg("!b:x", alice, "Martian chronicles: martian martian")
		f.msg("!c:x", bob, "martians in a room alice is not in")
		name := f.state("!b:x", alice, "m.room.name", map[string]any{"name": "Martian book club"})
		topic := f.state("!a:x", alice, "m.room.topic", map[string]any{"topic": "all about mars",
			"m.topic": map[string]any{"m.text": []any{map[string]any{"body": "<b>ignored</b>", "mimetype": "text/html"}, map[string]any{"body": "red planet talk"}}}})
		f.event("!a:x", bob, "m.room.message", nil, map[string]any{"body": "martian rejected"}, func(e *storage.Event) { e.Rejected = true })
		outlier := f.event("!a:x", bob, "m.room.message", nil, map[string]any{"body": "martian outlier"}, func(e *storage.Event) { e.Outlier = true })
		f.event("!a:x", bob, "m.room.message", nil, map[string]any{"body": 42}, nil) // not a string: not indexed
		nul := f.msg("!a:x", bob, "zork\x00nul \xff bad utf-8")                      // stored as given; indexed cleaned

		as := storage.EventSearch{UserID: alice}
		if got, want := f.search(as, "martian"), nids(m1, m2, m3, name); !reflect.DeepEqual(got, want) {
			t.Fatalf("martian: got %v, want %v", got, want)
		}
		bs := storage.EventSearch{UserID: bob}
		if got := f.search(bs, "martian"); len(got) != 3 { // m1, m2 and room C's
			t.Fatalf("bob: %v", got)
		}
		// Ranking: more occurrences rank higher.
		hits, err := db.SearchEvents(ctx, storage.EventSearch{UserID: alice, Query: storage.ParseSearchTerm("martian"), Types: []string{"m.room.message"}, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		best := hits[0]
		for _, h := range hits {
			if h.Rank <= 0 {
				t.Errorf("hit %d rank %v", h.NID, h.Rank)
			}
			if h.Rank > best.Rank {
				best = h
			}
		}
		if best.NID != m3.NID || best.RoomID != "!b:x" || best.Sender != alice {
			t.Errorf("best hit %+v, want %d", best, m3.NID)
		}
		// Syntax.
		for term, want := range map[string][]int64{
			`"men from mars"`:       nids(m2),
			`"mars men"`:            {},
			`martian -men`:          nids(m1, m3, name),
			`chronicles OR coming`:  nids(m1, m3),
			`red planet`:            nids(topic),
			`ignored`:               {},
			`mars`:                  nids(m2, topic),
			`nothing-matches-this!`: {},
			`zork nul`:              nids(nul),
		} {
			if got := f.search(as, term); !reflect.DeepEqual(got, want) {
				t.Errorf("%q: got %v, want %v", term, got, want)
			}
		}
		// Filters.
		for what, c := range map[string]struct {
			s    storage.EventSearch
			want []int64
		}{
			"types":       {storage.EventSearch{Types: []string{"m.room.name"}}, nids(name)},
			"no types":    {storage.EventSearch{Types: []string{}}, nil},
			"rooms":       {storage.EventSearch{Rooms: []string{"!b:x"}}, nids(m3, name)},
			"other rooms": {storage.EventSearch{Rooms: []string{"!c:x"}}, nil},
			"not rooms":   {storage.EventSearch{NotRooms: []string{"!b:x"}}, nids(m1, m2)},
			"senders":     {storage.EventSearch{Senders: []string{bob}}, nids(m2)},
			"not senders": {storage.EventSearch{NotSenders: []string{bob}}, nids(m1, m3, name)},
			"before":      {storage.EventSearch{Before: m3.NID}, nids(m1, m2)},
			"limit":       {storage.EventSearch{Limit: 2}, nids(m3, name)},
		} {
			c.s.UserID = alice
			if c.s.Types == nil {
				c.s.Types = []string{"m.room.message", "m.room.name"}
			}
			got := f.search(c.s, "martian")
			if c.want == nil {
				c.want = []int64{}
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("%s: got %v, want %v", what, got, c.want)
			}
		}

		// An outlier joins the index when promoted.
		if err := db.Write(ctx, func(tx *storage.Tx) error { return tx.PromoteOutlier(ctx, outlier.EventID) }); err != nil {
			t.Fatal(err)
		}
		if got := f.search(as, "outlier"); !reflect.DeepEqual(got, nids(outlier)) {
			t.Fatalf("promoted outlier: %v", got)
		}
		// Redaction removes the entry.
		if err := db.Write(ctx, func(tx *storage.Tx) error { return tx.MarkRedacted(ctx, m3.EventID, "$redaction") }); err != nil {
			t.Fatal(err)
		}
		if got := f.search(as, "chronicles"); len(got) != 0 {
			t.Fatalf("redacted event found: %v", got)
		}
		// Left rooms stay searchable (visibility is checked above storage);
		// forgotten ones do not.
		f.member("!b:x", alice, "leave", "")
		if got := f.search(as, "book"); !reflect.DeepEqual(got, nids(name)) {
			t.Fatalf("left room: %v", got)
		}
		if err := db.ForgetRoom(ctx, "alice", "!b:x"); err != nil {
			t.Fatal(err)
		}
		if got := f.search(as, "book"); len(got) != 0 {
			t.Fatalf("forgotten room: %v", got)
		}
	})
}

func TestUserDirectory(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := &searchFixture{t: t, db: db}
		find := func(searcher, term string, limit int) []string {
			t.Helper()
			users, more, err := db.SearchUserDirectory(ctx, searcher, "x", storage.ParseDirectoryTerm(term), limit)
			if err != nil {
				t.Fatalf("%s searching %q: %v", searcher, term, err)
			}
			out := []string{}
			for _, u := range users {
				out = append(out, u.UserID+"="+u.DisplayName)
			}
			if more {
				out = append(out, "...")
			}
			return out
		}
		check := func(searcher, term string, want ...string) {
			t.Helper()
			if want == nil {
				want = []string{}
			}
			if got := find(searcher, term, 10); !reflect.DeepEqual(got, want) {
				t.Errorf("%s searching %q: got %v, want %v", searcher, term, got, want)
			}
		}
		// A private room shared by alice and bob.
		f.state("!priv:x", "@alice:x", "m.room.join_rules", map[string]any{"join_rule": "invite"})
		f.member("!priv:x", "@alice:x", "join", "Alice Liddell")
		f.member("!priv:x", "@bob:x", "join", "Bobby Tables")
		// A public room with carol and a remote user.
		f.state("!pub:x", "@carol:x", "m.room.join_rules", map[string]any{"join_rule": "public"})
		f.member("!pub:x", "@carol:x", "join", "Carol Alicia")
		f.member("!pub:x", "@remote.alicorn:y", "join", "")
		// dave is in a private room with nobody else.
		f.member("!dave:x", "@dave:x", "join", "Dave Alison")

		check("@bob:x", "ali", "@alice:x=Alice Liddell", "@carol:x=Carol Alicia", "@remote.alicorn:y=")
		check("@bob:x", "LIDDELL", "@alice:x=Alice Liddell")
		check("@bob:x", "alice lid", "@alice:x=Alice Liddell")
		check("@bob:x", "@alice:x", "@alice:x=Alice Liddell")
		check("@bob:x", "alicorn", "@remote.alicorn:y=")
		check("@bob:x", "dave")
		check("@bob:x", "bob") // himself: only through a public room
		check("@dave:x", "ali", "@carol:x=Carol Alicia", "@remote.alicorn:y=")
		if got := find("@bob:x", "ali", 2); !reflect.DeepEqual(got, []string{"@alice:x=Alice Liddell", "@carol:x=Carol Alicia", "..."}) {
			t.Errorf("limit: %v", got)
		}

		// A name change replaces the old name.
		f.member("!priv:x", "@alice:x", "join", "Alys")
		check("@bob:x", "liddell")
		check("@bob:x", "alys", "@alice:x=Alys")
		// Leaving the shared room hides alice from bob.
		f.member("!priv:x", "@bob:x", "leave", "")
		check("@bob:x", "alys")
		// World-readable history makes a room public too.
		f.state("!dave:x", "@dave:x", "m.room.history_visibility", map[string]any{"history_visibility": "world_readable"})
		check("@bob:x", "dave", "@dave:x=Dave Alison")
		// A public room none of our users is in any more hides its remote members.
		f.member("!pub:x", "@carol:x", "leave", "")
		check("@bob:x", "alicorn")
	})
}

// TestSearchBackfill reruns migration 9 over existing rows: the indexes
// are filled from events and current state.
func TestSearchBackfill(t *testing.T) {
	for name, dsn := range storagetest.Dialects(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			db, err := storage.Open(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			f := &searchFixture{t: t, db: db}
			f.state("!pub:x", "@carol:x", "m.room.join_rules", map[string]any{"join_rule": "public"})
			f.member("!pub:x", "@carol:x", "join", "Carol Anne")
			f.member("!pub:x", "@bob:x", "join", "")
			m := f.msg("!pub:x", "@carol:x", "Backfilled martians, example.com")
			red := f.msg("!pub:x", "@carol:x", "redacted martians")
			f.msg("!pub:x", "@carol:x", "zork\x00nul") // jsonb refuses \u0000: PostgreSQL's backfill skips it
			nm := f.state("!pub:x", "@carol:x", "m.room.name", map[string]any{"name": "Martian Room"})
			if err := db.Write(ctx, func(tx *storage.Tx) error { return tx.MarkRedacted(ctx, red.EventID, "$r") }); err != nil {
				t.Fatal(err)
			}
			drop := []string{`DROP TABLE event_search`, `DROP TABLE room_publicity`, `DROP TABLE user_directory`}
			if name == "sqlite" {
				drop = append(drop, `DROP TABLE user_directory_search`)
			}
			drop = append(drop, `DELETE FROM schema_migrations WHERE version = 9`)
			if err := db.Write(ctx, func(tx *storage.Tx) error {
				for _, s := range drop {
					if _, err := tx.ExecContext(ctx, s); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			db.Close()
			if db, err = storage.Open(ctx, dsn); err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			f.db = db
			for term, want := range map[string][]int64{"martian": nids(m, nm), "example.com": nids(m), "room": nids(nm)} {
				if got := f.search(storage.EventSearch{UserID: "@bob:x"}, term); !reflect.DeepEqual(got, want) {
					t.Errorf("%q after backfill: got %v, want %v", term, got, want)
				}
			}
			f.search(storage.EventSearch{UserID: "@bob:x"}, "zork")
			users, _, err := db.SearchUserDirectory(ctx, "@bob:x", "x", storage.ParseDirectoryTerm("anne"), 10)
			if err != nil || len(users) != 1 || users[0].UserID != "@carol:x" || users[0].DisplayName != "Carol Anne" {
				t.Fatalf("directory after backfill: %+v %v", users, err)
			}
			// And the live path still works on the backfilled tables.
			f.member("!pub:x", "@carol:x", "join", "Caroline")
			if users, _, _ := db.SearchUserDirectory(ctx, "@bob:x", "x", storage.ParseDirectoryTerm("caroline"), 10); len(users) != 1 {
				t.Fatalf("rename after backfill: %+v", users)
			}
		})
	}
}
