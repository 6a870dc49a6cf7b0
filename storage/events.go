package storage

import (
	"context"
	"database/sql"
	"strings"
)

// Event is a stored room event: its JSON exactly as received or built,
// plus the columns queries need.
type Event struct {
	NID            int64
	EventID        string
	RoomID         string
	Type           string
	StateKey       *string
	Sender         string
	Depth          int64
	OriginTS       int64
	StreamPos      int64
	BeforeSnapshot int64
	AfterSnapshot  int64
	ReplacesNID    int64 // the state event this one replaced, 0 if none
	Rejected       bool
	Outlier        bool // held for state/auth only, not in the timeline
	RedactedBy     string
	TxnID          string
	TxnDevice      string
	JSON           []byte
	// RelayServer and RelayAddr are the peer that relayed a received
	// event, recorded in the amateur-radio mode (event_relays); empty
	// otherwise and when read back.
	RelayServer string
	RelayAddr   string
}

// IsState reports whether the event is a state event.
func (e *Event) IsState() bool { return e.StateKey != nil }

const eventCols = `stream_pos, event_id, room_id, type, state_key, sender, depth, origin_ts, before_snapshot, after_snapshot, replaces_nid, rejected, redacted_by, txn_id, txn_device, json, outlier`

func scanEvent(sc interface{ Scan(...any) error }) (*Event, error) {
	var e Event
	var sk, red, txn, txd sql.NullString
	var rej, out int
	var js string
	if err := sc.Scan(&e.NID, &e.EventID, &e.RoomID, &e.Type, &sk, &e.Sender, &e.Depth, &e.OriginTS,
		&e.BeforeSnapshot, &e.AfterSnapshot, &e.ReplacesNID, &rej, &red, &txn, &txd, &js, &out); err != nil {
		return nil, scanErr(err)
	}
	if sk.Valid {
		s := sk.String
		e.StateKey = &s
	}
	e.StreamPos = e.NID
	e.Outlier = out != 0
	e.Rejected, e.RedactedBy, e.TxnID, e.TxnDevice, e.JSON = rej != 0, red.String, txn.String, txd.String, []byte(js)
	return &e, nil
}

var scanEvents = scanAll(scanEvent)

// InsertEvent stores an event at e.StreamPos, which is also its NID.
// ErrConflict if already stored.
func (tx *Tx) InsertEvent(ctx context.Context, e *Event) error {
	var sk any
	if e.StateKey != nil {
		sk = *e.StateKey
	}
	e.NID = e.StreamPos
	_, err := tx.ExecContext(ctx, `INSERT INTO events (stream_pos, event_id, room_id, type, state_key, sender, depth, origin_ts, before_snapshot, after_snapshot, replaces_nid, rejected, txn_id, txn_device, json, outlier)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
		e.StreamPos, e.EventID, e.RoomID, e.Type, sk, e.Sender, e.Depth, e.OriginTS, e.BeforeSnapshot, e.AfterSnapshot,
		e.ReplacesNID, b2i(e.Rejected), nullStr(e.TxnID), nullStr(e.TxnDevice), string(e.JSON), b2i(e.Outlier))
	if err == nil && e.RelayServer != "" {
		err = tx.recordRelay(ctx, e)
	}
	if err != nil || e.Rejected || e.Outlier {
		return err
	}
	if err := tx.indexSearch(ctx, e, false); err != nil { // search.go
		return err
	}
	return tx.db.indexRelation(ctx, tx, e) // relations.go
}

// SetAfterSnapshot records the state after an event.
func (tx *Tx) SetAfterSnapshot(ctx context.Context, nid, snapshot int64) error {
	_, err := tx.ExecContext(ctx, `UPDATE events SET after_snapshot = $1 WHERE stream_pos = $2`, snapshot, nid)
	return err
}

// MarkRedacted records that an event was redacted by redactionID.
func (tx *Tx) MarkRedacted(ctx context.Context, eventID, redactionID string) error {
	_, err := tx.ExecContext(ctx, `UPDATE events SET redacted_by = $1 WHERE event_id = $2 AND redacted_by IS NULL`, redactionID, eventID)
	if err != nil {
		return err
	}
	if err := tx.unindexSearch(ctx, eventID); err != nil { // search.go
		return err
	}
	return tx.unindexRelation(ctx, eventID) // redaction strips m.relates_to
}

// EventByID returns one event.
func (db *DB) EventByID(ctx context.Context, eventID string) (*Event, error) {
	return scanEvent(db.R().QueryRowContext(ctx, `SELECT `+eventCols+` FROM events WHERE event_id = $1`, eventID))
}

// EventsByNIDs returns the events with the given NIDs (any order).
func (db *DB) EventsByNIDs(ctx context.Context, nids []int64) ([]*Event, error) {
	return eventsWhereIn(ctx, db, "stream_pos", nids)
}

// eventsWhereIn fetches events whose column is one of vals, in chunks.
func eventsWhereIn[T any](ctx context.Context, db *DB, column string, vals []T) ([]*Event, error) {
	var out []*Event
	for len(vals) > 0 {
		n := min(len(vals), 500)
		args := make([]any, n)
		for i := range args {
			args[i] = vals[i]
		}
		evs, err := scanEvents(db.R().QueryContext(ctx, `SELECT `+eventCols+` FROM events WHERE `+column+` IN (`+inList(1, n)+`)`, args...))
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
		vals = vals[n:]
	}
	return out, nil
}

// RoomEventsInRange returns up to limit of the latest accepted timeline
// events of a room with stream_pos in (from, to], oldest first, and whether
// more were in range. (Outliers have negative positions, except state
// events a history purge took out of the timeline.)
func (db *DB) RoomEventsInRange(ctx context.Context, roomID string, from, to int64, limit int) ([]*Event, bool, error) {
	evs, err := scanEvents(db.R().QueryContext(ctx, `SELECT `+eventCols+` FROM events
		WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3 AND rejected = 0 AND outlier = 0
		ORDER BY stream_pos DESC LIMIT $4`, roomID, from, to, limit+1))
	if err != nil {
		return nil, false, err
	}
	limited := len(evs) > limit
	if limited {
		evs = evs[:limit]
	}
	reverse(evs)
	return evs, limited, nil
}

// TopoPos is a position between events in a room's topological order:
// just after the event (Depth, Stream).
type TopoPos struct{ Depth, Stream int64 }

// RoomEventsTopo pages through a room's events in topological order.
// Backwards: events at or before pos, newest first. Forwards: events after
// pos, oldest first.
func (db *DB) RoomEventsTopo(ctx context.Context, roomID string, pos TopoPos, backwards bool, limit int) ([]*Event, error) {
	if backwards {
		return scanEvents(db.R().QueryContext(ctx, `SELECT `+eventCols+` FROM events
			WHERE room_id = $1 AND rejected = 0 AND outlier = 0 AND (depth < $2 OR (depth = $2 AND stream_pos <= $3))
			ORDER BY depth DESC, stream_pos DESC LIMIT $4`, roomID, pos.Depth, pos.Stream, limit))
	}
	return scanEvents(db.R().QueryContext(ctx, `SELECT `+eventCols+` FROM events
		WHERE room_id = $1 AND rejected = 0 AND outlier = 0 AND (depth > $2 OR (depth = $2 AND stream_pos > $3))
		ORDER BY depth ASC, stream_pos ASC LIMIT $4`, roomID, pos.Depth, pos.Stream, limit))
}

// TopoPosAtStream returns the topological position of the latest event of the
// room at or before stream position pos.
func (db *DB) TopoPosAtStream(ctx context.Context, roomID string, pos int64) (TopoPos, error) {
	var tp TopoPos
	err := db.R().QueryRowContext(ctx, `SELECT depth, stream_pos FROM events WHERE room_id = $1 AND stream_pos <= $2 AND rejected = 0 AND outlier = 0
		ORDER BY depth DESC, stream_pos DESC LIMIT 1`, roomID, pos).Scan(&tp.Depth, &tp.Stream)
	if err == sql.ErrNoRows {
		return TopoPos{}, nil
	}
	return tp, err
}

// LatestEventAtStream returns the newest event in the room with stream_pos <= pos.
func (db *DB) LatestEventAtStream(ctx context.Context, roomID string, pos int64) (*Event, error) {
	return scanEvent(db.R().QueryRowContext(ctx, `SELECT `+eventCols+` FROM events WHERE room_id = $1 AND stream_pos <= $2 AND rejected = 0 AND outlier = 0
		ORDER BY stream_pos DESC LIMIT 1`, roomID, pos))
}

// MembershipEvents returns m.room.member events about userID with stream
// position in (from, to], oldest first.
func (db *DB) MembershipEvents(ctx context.Context, userID string, from, to int64) ([]*Event, error) {
	return scanEvents(db.R().QueryContext(ctx, `SELECT `+eventCols+` FROM events
		WHERE type = 'm.room.member' AND state_key = $1 AND stream_pos > $2 AND stream_pos <= $3 AND rejected = 0
		ORDER BY stream_pos ASC`, userID, from, to))
}

// TxnEventID returns the event ID sent earlier under a transaction ID.
func (db *DB) TxnEventID(ctx context.Context, localpart, deviceID, txnID string) (string, error) {
	var id string
	err := db.R().QueryRowContext(ctx, `SELECT event_id FROM txn_ids WHERE localpart = $1 AND device_id = $2 AND txn_id = $3`, localpart, deviceID, txnID).Scan(&id)
	return id, scanErr(err)
}

// RecordTxn remembers the event sent under a transaction ID.
func (tx *Tx) RecordTxn(ctx context.Context, localpart, deviceID, txnID, eventID string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO txn_ids (localpart, device_id, txn_id, event_id, created_ts) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
		localpart, deviceID, txnID, eventID, nowMS())
	return err
}

func reverse[T any](s []T) {
	for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
		s[i], s[j] = s[j], s[i]
	}
}

// EscapeLike escapes a string for a LIKE pattern with ESCAPE '\'.
func EscapeLike(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s)
}

// RoomsWithEvents returns the rooms with events in (from, to]; for the
// short ranges of incremental syncs this is a small range scan.
func (db *DB) RoomsWithEvents(ctx context.Context, from, to int64) (map[string]bool, error) {
	rooms, err := queryStrings(ctx, db.R(), `SELECT DISTINCT room_id FROM events WHERE stream_pos > $1 AND stream_pos <= $2`, from, to)
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(rooms))
	for _, r := range rooms {
		out[r] = true
	}
	return out, nil
}

// ReadReceiptPos returns the stream position of the event the user's
// latest m.read or m.read.private receipt in a room points at (0 if none).
func (db *DB) ReadReceiptPos(ctx context.Context, roomID, userID string) (int64, error) {
	var pos int64
	err := db.R().QueryRowContext(ctx, `SELECT COALESCE(MAX(e.stream_pos), 0) FROM receipts r JOIN events e ON e.event_id = r.event_id
		WHERE r.room_id = $1 AND r.user_id = $2 AND r.receipt_type IN ('m.read', 'm.read.private')`, roomID, userID).Scan(&pos)
	return pos, err
}

// EventsFromOthers returns up to limit of the newest accepted events of a
// room in (after, to] not sent by userID, newest first.
func (db *DB) EventsFromOthers(ctx context.Context, roomID, userID string, after, to int64, limit int) ([]*Event, error) {
	return scanEvents(db.R().QueryContext(ctx, `SELECT `+eventCols+` FROM events
		WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3 AND rejected = 0 AND sender <> $4 ORDER BY stream_pos DESC LIMIT $5`,
		roomID, after, to, userID, limit))
}
