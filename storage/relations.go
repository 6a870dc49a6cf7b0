package storage

import (
	"bytes"
	"context"
	"database/sql"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/tidwall/gjson"
)

// Relations (spec: Client-Server API, "Forming relationships between
// events"). Every accepted, non-outlier event whose content.m.relates_to
// carries a rel_type and an event_id gets a row in event_relations, in the
// transaction that stores it (InsertEvent, PromoteOutlier); m.thread
// children also update the thread's summary row. Redacting a child
// removes its row (MarkRedacted): redaction strips content, and with it
// the relation.

// Relationship types with server-side behaviour.
const (
	RelThread     = "m.thread"
	RelReplace    = "m.replace"
	RelAnnotation = "m.annotation"
	RelReference  = "m.reference"
)

// RelatesTo reads content.m.relates_to of an event's JSON: the parent's
// event ID, the rel_type, and the key of an annotation. ok is false when
// the event does not form a relationship (no m.relates_to, or one missing
// rel_type or event_id, as with a plain rich reply).
func RelatesTo(js []byte) (parent, relType, key string, ok bool) {
	if !bytes.Contains(js, []byte("m.relates_to")) {
		return "", "", "", false
	}
	rel := gjson.GetBytes(js, `content.m\.relates_to`)
	if !rel.IsObject() {
		return "", "", "", false
	}
	rt, id := rel.Get("rel_type"), rel.Get("event_id")
	if rt.Type != gjson.String || id.Type != gjson.String || rt.Str == "" || len(rt.Str) > 255 ||
		len(id.Str) < 2 || id.Str[0] != '$' || len(id.Str) > 255 {
		return "", "", "", false
	}
	if k := rel.Get("key"); k.Type == gjson.String {
		key = k.Str
	}
	return id.Str, rt.Str, key, true
}

// execQuerier is what indexing a relation needs: our write transaction, or
// the migration's (wrapped in migTx).
type execQuerier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// indexRelation records e's relationship, if it forms one. The caller has
// checked that e is accepted and not an outlier.
func (db *DB) indexRelation(ctx context.Context, q execQuerier, e *Event) error {
	parent, relType, key, ok := RelatesTo(e.JSON)
	if !ok || parent == e.EventID {
		return nil
	}
	// State events cannot replace (spec: "Validity of replacement events").
	if relType == RelReplace && e.StateKey != nil {
		return nil
	}
	res, err := q.ExecContext(ctx, `INSERT INTO event_relations (event_id, stream_pos, room_id, relates_to, rel_type, type, sender, depth, origin_ts, aggregation_key)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING`,
		e.EventID, e.StreamPos, e.RoomID, parent, relType, e.Type, e.Sender, e.Depth, e.OriginTS, nullStr(key))
	if err != nil {
		return err
	}
	db.rel.set(e.RoomID)
	if n, err := res.RowsAffected(); err != nil || n == 0 || relType != RelThread {
		return err
	}
	_, err = q.ExecContext(ctx, `INSERT INTO threads (room_id, root_id, reply_count, latest_event_id, latest_depth, latest_pos) VALUES ($1, $2, 1, $3, $4, $5)
		ON CONFLICT (room_id, root_id) DO UPDATE SET reply_count = threads.reply_count + 1,
		latest_event_id = CASE WHEN `+newer+` THEN excluded.latest_event_id ELSE threads.latest_event_id END,
		latest_depth = CASE WHEN `+newer+` THEN excluded.latest_depth ELSE threads.latest_depth END,
		latest_pos = CASE WHEN `+newer+` THEN excluded.latest_pos ELSE threads.latest_pos END`,
		e.RoomID, parent, e.EventID, e.Depth, e.StreamPos)
	return err
}

// newer: the inserted thread event is topologically after the summary's latest.
const newer = `(excluded.latest_depth > threads.latest_depth OR (excluded.latest_depth = threads.latest_depth AND excluded.latest_pos > threads.latest_pos))`

// unindexRelation removes the relation of a redacted event, updating its
// thread's summary.
func (tx *Tx) unindexRelation(ctx context.Context, eventID string) error {
	var roomID, parent, relType string
	err := tx.QueryRowContext(ctx, `DELETE FROM event_relations WHERE event_id = $1 RETURNING room_id, relates_to, rel_type`, eventID).Scan(&roomID, &parent, &relType)
	if err == sql.ErrNoRows {
		return nil
	}
	if err != nil || relType != RelThread {
		return err
	}
	var n int64
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM event_relations WHERE relates_to = $1 AND rel_type = 'm.thread' AND room_id = $2`,
		parent, roomID).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		_, err := tx.ExecContext(ctx, `DELETE FROM threads WHERE room_id = $1 AND root_id = $2`, roomID, parent)
		return err
	}
	var latest string
	var depth, pos int64
	if err := tx.QueryRowContext(ctx, `SELECT event_id, depth, stream_pos FROM event_relations WHERE relates_to = $1 AND rel_type = 'm.thread' AND room_id = $2
		ORDER BY depth DESC, stream_pos DESC LIMIT 1`, parent, roomID).Scan(&latest, &depth, &pos); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE threads SET reply_count = $1, latest_event_id = $2, latest_depth = $3, latest_pos = $4 WHERE room_id = $5 AND root_id = $6`,
		n, latest, depth, pos, roomID, parent)
	return err
}

// relCache remembers which rooms have (or may have) relations, so that
// reading a timeline in a room without any skips the aggregation query.
// A room is marked as soon as a relation is written, before commit: a
// false positive costs one query, a false negative would hide bundles.
type relCache struct {
	mu    sync.Mutex
	rooms map[string]bool
}

func (c *relCache) set(roomID string) {
	c.mu.Lock()
	if c.rooms == nil {
		c.rooms = map[string]bool{}
	}
	c.rooms[roomID] = true
	c.mu.Unlock()
}

// RoomHasRelations reports whether any event in the room relates to
// another (it may say true for a room whose only relation was redacted).
func (db *DB) RoomHasRelations(ctx context.Context, roomID string) (bool, error) {
	db.rel.mu.Lock()
	has, known := db.rel.rooms[roomID]
	db.rel.mu.Unlock()
	if known {
		return has, nil
	}
	var n int
	err := db.R().QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM event_relations WHERE room_id = $1 LIMIT 1) x`, roomID).Scan(&n)
	if err != nil {
		return true, err
	}
	db.rel.mu.Lock()
	if db.rel.rooms == nil {
		db.rel.rooms = map[string]bool{}
	}
	if _, ok := db.rel.rooms[roomID]; !ok { // a writer may have marked it meanwhile
		db.rel.rooms[roomID] = n > 0
	}
	has = db.rel.rooms[roomID]
	db.rel.mu.Unlock()
	return has, nil
}

// RelationsQuery selects the children of one parent event.
type RelationsQuery struct {
	RoomID, Parent string
	RelType        string // "" for any
	EventType      string // "" for any; only with RelType
	// Recurse includes children of children, down to MaxRelationDepth.
	Recurse   bool
	From      *TopoPos // nil: the newest (backwards) or oldest (forwards)
	To        *TopoPos // nil: no bound
	Backwards bool
	Limit     int
}

// MaxRelationDepth is how many levels of relations recursion follows.
const MaxRelationDepth = 3

// prefixed is eventCols qualified with the alias e.
var prefixed = "e." + strings.ReplaceAll(eventCols, ", ", ", e.")

// Relations returns a page of the children of q.Parent in topological order
// (newest first when backwards), with the same position semantics as
// RoomEventsTopo: backwards from pos means at or before it, forwards
// means after it. To bounds the other end (exclusive backwards,
// inclusive forwards, like /messages).
func (db *DB) Relations(ctx context.Context, q RelationsQuery) ([]*Event, error) {
	args := []any{q.Parent, q.RoomID}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	var b strings.Builder
	if q.Recurse {
		b.WriteString(`WITH RECURSIVE tree(event_id, lvl) AS (
			SELECT event_id, 1 FROM event_relations WHERE relates_to = $1 AND room_id = $2
			UNION
			SELECT c.event_id, tree.lvl + 1 FROM event_relations c JOIN tree ON c.relates_to = tree.event_id
			WHERE tree.lvl < ` + strconv.Itoa(MaxRelationDepth) + ` AND c.room_id = $2)
		SELECT ` + prefixed + ` FROM event_relations r JOIN events e ON e.stream_pos = r.stream_pos
		WHERE r.event_id IN (SELECT event_id FROM tree) AND r.room_id = $2`)
	} else {
		b.WriteString(`SELECT ` + prefixed + ` FROM event_relations r JOIN events e ON e.stream_pos = r.stream_pos
		WHERE r.relates_to = $1 AND r.room_id = $2`)
	}
	if q.RelType != "" {
		b.WriteString(` AND r.rel_type = ` + arg(q.RelType))
		if q.EventType != "" {
			b.WriteString(` AND r.type = ` + arg(q.EventType))
		}
	}
	if q.Backwards {
		if q.From != nil {
			d := arg(q.From.Depth)
			b.WriteString(` AND (r.depth < ` + d + ` OR (r.depth = ` + d + ` AND r.stream_pos <= ` + arg(q.From.Stream) + `))`)
		}
		if q.To != nil {
			d := arg(q.To.Depth)
			b.WriteString(` AND (r.depth > ` + d + ` OR (r.depth = ` + d + ` AND r.stream_pos > ` + arg(q.To.Stream) + `))`)
		}
		b.WriteString(` ORDER BY r.depth DESC, r.stream_pos DESC`)
	} else {
		if q.From != nil {
			d := arg(q.From.Depth)
			b.WriteString(` AND (r.depth > ` + d + ` OR (r.depth = ` + d + ` AND r.stream_pos > ` + arg(q.From.Stream) + `))`)
		}
		if q.To != nil {
			d := arg(q.To.Depth)
			b.WriteString(` AND (r.depth < ` + d + ` OR (r.depth = ` + d + ` AND r.stream_pos <= ` + arg(q.To.Stream) + `))`)
		}
		b.WriteString(` ORDER BY r.depth ASC, r.stream_pos ASC`)
	}
	b.WriteString(` LIMIT ` + arg(q.Limit))
	return scanEvents(db.R().QueryContext(ctx, b.String(), args...))
}

// Replacement is a candidate m.replace child of an event.
type Replacement struct {
	EventID, Sender, Type string
	OriginTS              int64
}

// Thread is the summary of a thread: its root, its number of m.thread
// children and the topologically latest of them.
type Thread struct {
	RoomID, RootID string
	Count          int64
	LatestEventID  string
	LatestDepth    int64
	LatestPos      int64
}

// RelationSummary is what bundled aggregations need to know of one parent.
type RelationSummary struct {
	// Replacements are the m.replace children in the parent's room, most
	// recent first (origin_server_ts, then event ID; spec: "Server-side
	// aggregation of m.replace relationships"). Validity is the caller's.
	Replacements []Replacement
	References   []string // m.reference children, oldest first
	Thread       *Thread
	Participated bool // the viewer sent an m.thread child
}

// RelationSummaries returns, for those of the given events (event ID ->
// room ID) that have children, what bundled aggregations need. One query
// per 300 parents.
func (db *DB) RelationSummaries(ctx context.Context, viewer string, parents map[string]string) (map[string]*RelationSummary, error) {
	ids := make([]string, 0, len(parents))
	for id := range parents {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := map[string]*RelationSummary{}
	get := func(id string) *RelationSummary {
		s := out[id]
		if s == nil {
			s = &RelationSummary{}
			out[id] = s
		}
		return s
	}
	for len(ids) > 0 {
		n := min(len(ids), 300)
		args := make([]any, 0, n+1)
		args = append(args, viewer)
		for _, id := range ids[:n] {
			args = append(args, id)
		}
		in := inList(2, n)
		rows, err := db.R().QueryContext(ctx, `SELECT relates_to, rel_type, event_id, room_id, sender, type, origin_ts, stream_pos, 0 FROM event_relations
				WHERE relates_to IN (`+in+`) AND rel_type IN ('m.replace', 'm.reference')
			UNION ALL
			SELECT root_id, 'm.thread', latest_event_id, room_id, '', '', latest_depth, latest_pos, reply_count FROM threads WHERE root_id IN (`+in+`)
			UNION ALL
			SELECT t.root_id, 'participated', '', t.room_id, '', '', 0, 0, 0 FROM threads t WHERE t.root_id IN (`+in+`)
				AND EXISTS (SELECT 1 FROM event_relations p WHERE p.sender = $1 AND p.rel_type = 'm.thread' AND p.relates_to = t.root_id AND p.room_id = t.room_id)`,
			args...)
		if err != nil {
			return nil, err
		}
		type ref struct {
			id  string
			pos int64
		}
		refs := map[string][]ref{}
		for rows.Next() {
			var parent, relType, eventID, roomID, sender, typ string
			var a, b, c int64
			if err := rows.Scan(&parent, &relType, &eventID, &roomID, &sender, &typ, &a, &b, &c); err != nil {
				rows.Close()
				return nil, err
			}
			if parents[parent] != roomID {
				continue // a "relation" from another room is no relation
			}
			switch relType {
			case RelReplace:
				s := get(parent)
				s.Replacements = append(s.Replacements, Replacement{EventID: eventID, Sender: sender, Type: typ, OriginTS: a})
			case RelReference:
				refs[parent] = append(refs[parent], ref{eventID, b})
			case RelThread:
				get(parent).Thread = &Thread{RoomID: roomID, RootID: parent, Count: c, LatestEventID: eventID, LatestDepth: a, LatestPos: b}
			case "participated":
				get(parent).Participated = true
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		for parent, rs := range refs {
			sort.Slice(rs, func(i, j int) bool { return rs[i].pos < rs[j].pos })
			s := get(parent)
			for _, r := range rs {
				s.References = append(s.References, r.id)
			}
		}
		ids = ids[n:]
	}
	for _, s := range out {
		sort.Slice(s.Replacements, func(i, j int) bool {
			a, b := s.Replacements[i], s.Replacements[j]
			if a.OriginTS != b.OriginTS {
				return a.OriginTS > b.OriginTS
			}
			return a.EventID > b.EventID
		})
	}
	return out, nil
}

// ThreadRoot is one entry of a room's thread list.
type ThreadRoot struct {
	Root                   *Event
	LatestDepth, LatestPos int64
}

// Threads returns a page of a room's threads whose root is held, ordered
// by their latest event, newest first, starting before `before` (nil: the
// newest). With participant set, only threads that user started or
// replied in.
func (db *DB) Threads(ctx context.Context, roomID, participant string, before *TopoPos, limit int) ([]ThreadRoot, error) {
	args := []any{roomID}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	query := `SELECT ` + prefixed + `, t.latest_depth, t.latest_pos FROM threads t JOIN events e ON e.event_id = t.root_id
		WHERE t.room_id = $1 AND e.room_id = $1 AND e.rejected = 0`
	if before != nil {
		d := arg(before.Depth)
		query += ` AND (t.latest_depth < ` + d + ` OR (t.latest_depth = ` + d + ` AND t.latest_pos < ` + arg(before.Stream) + `))`
	}
	if participant != "" {
		u := arg(participant)
		query += ` AND (e.sender = ` + u + ` OR EXISTS (SELECT 1 FROM event_relations p WHERE p.sender = ` + u +
			` AND p.rel_type = 'm.thread' AND p.relates_to = t.root_id AND p.room_id = t.room_id))`
	}
	query += ` ORDER BY t.latest_depth DESC, t.latest_pos DESC LIMIT ` + arg(limit)
	rows, err := db.R().QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ThreadRoot
	for rows.Next() {
		var tr ThreadRoot
		var sk, red, txn, txd sql.NullString
		var rej, outl int
		var js string
		var e Event
		if err := rows.Scan(&e.NID, &e.EventID, &e.RoomID, &e.Type, &sk, &e.Sender, &e.Depth, &e.OriginTS,
			&e.BeforeSnapshot, &e.AfterSnapshot, &e.ReplacesNID, &rej, &red, &txn, &txd, &js, &outl,
			&tr.LatestDepth, &tr.LatestPos); err != nil {
			return nil, err
		}
		if sk.Valid {
			s := sk.String
			e.StateKey = &s
		}
		e.StreamPos = e.NID
		e.Outlier = outl != 0
		e.Rejected, e.RedactedBy, e.TxnID, e.TxnDevice, e.JSON = rej != 0, red.String, txn.String, txd.String, []byte(js)
		tr.Root = &e
		out = append(out, tr)
	}
	return out, rows.Err()
}

// HasAnnotation reports whether sender already annotated parent with an
// event of type evType and the given key (spec: "Avoiding duplicate
// annotations"). Redacted annotations no longer count.
func (db *DB) HasAnnotation(ctx context.Context, roomID, parent, sender, evType, key string) (bool, error) {
	var n int
	err := db.R().QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM event_relations WHERE relates_to = $1 AND rel_type = 'm.annotation'
		AND room_id = $2 AND sender = $3 AND type = $4 AND aggregation_key = $5 LIMIT 1) x`, parent, roomID, sender, evType, key).Scan(&n)
	return n > 0, err
}

// migTx runs a migration transaction's statements through the dialect.
type migTx struct {
	db *DB
	tx *sql.Tx
}

func (m migTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return m.tx.ExecContext(ctx, m.db.q(query), args...)
}
func (m migTx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return m.tx.QueryRowContext(ctx, m.db.q(query), args...)
}

// backfillRelations indexes the relations of events stored before the
// relations table existed (migration 008).
func backfillRelations(ctx context.Context, db *DB, tx *sql.Tx) error {
	q := migTx{db, tx}
	var after int64 = -1 << 62
	for {
		rows, err := tx.QueryContext(ctx, db.q(`SELECT `+eventCols+` FROM events WHERE stream_pos > $1 AND rejected = 0 AND outlier = 0
			AND redacted_by IS NULL AND json LIKE '%m.relates_to%' ORDER BY stream_pos LIMIT 500`), after)
		evs, err := scanEvents(rows, err)
		if err != nil {
			return err
		}
		for _, e := range evs {
			if err := db.indexRelation(ctx, q, e); err != nil {
				return err
			}
			after = e.StreamPos
		}
		if len(evs) < 500 {
			return nil
		}
	}
}
