package storage

import (
	"context"
	"database/sql"
	"encoding/json"
)

// StateKey identifies a piece of room state.
type StateKey struct{ Type, StateKey string }

// StateMap maps state keys to event NIDs.
type StateMap map[StateKey]int64

// maxChain bounds how many deltas a snapshot may stack before it is stored
// as a full copy.
const maxChain = 16

// Room is a room's row.
type Room struct {
	RoomID          string
	Version         string
	Published       bool
	CurrentSnapshot int64
	MaxDepth        int64
	Extremities     []string
}

// InsertRoom records a new room.
func (tx *Tx) InsertRoom(ctx context.Context, roomID, version string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO rooms (room_id, room_version, created_ts) VALUES ($1, $2, $3)`, roomID, version, nowMS())
	return err
}

// UpdateRoomHead sets the room's current snapshot, maximum depth and
// forward extremities.
func (tx *Tx) UpdateRoomHead(ctx context.Context, roomID string, snapshot, maxDepth int64, extremities []string) error {
	ext, err := json.Marshal(extremities)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE rooms SET current_snapshot = $1, max_depth = $2, extremities = $3 WHERE room_id = $4`, snapshot, maxDepth, string(ext), roomID)
	return err
}

// SetPublished sets whether a room is in the public room directory.
func (db *DB) SetPublished(ctx context.Context, roomID string, published bool) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE rooms SET published = $1 WHERE room_id = $2`, b2i(published), roomID)
		return err
	})
}

// GetRoom returns a room; ErrNotFound if unknown.
func (db *DB) GetRoom(ctx context.Context, roomID string) (*Room, error) {
	var r Room
	var pub int
	var ext string
	err := db.R().QueryRowContext(ctx, `SELECT room_id, room_version, published, current_snapshot, max_depth, extremities FROM rooms WHERE room_id = $1`, roomID).
		Scan(&r.RoomID, &r.Version, &pub, &r.CurrentSnapshot, &r.MaxDepth, &ext)
	if err != nil {
		return nil, scanErr(err)
	}
	if err := json.Unmarshal([]byte(ext), &r.Extremities); err != nil {
		return nil, err
	}
	r.Published = pub != 0
	return &r, nil
}

// NewSnapshot stores snapshot id, the state after applying delta to the
// parent snapshot. full is the complete resulting state; it is written out
// instead of a delta when the parent's chain is long. IDs are stream
// positions reserved by the caller.
func (tx *Tx) NewSnapshot(ctx context.Context, id int64, roomID string, parent int64, full, delta StateMap) error {
	chain := 0
	if parent != 0 {
		if err := tx.QueryRowContext(ctx, `SELECT chain_len FROM state_snapshots WHERE snapshot_id = $1`, parent).Scan(&chain); err != nil {
			return scanErr(err)
		}
	}
	entries := delta
	if parent == 0 || chain+1 >= maxChain {
		parent, chain, entries = 0, -1, full
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO state_snapshots (snapshot_id, room_id, parent_id, chain_len) VALUES ($1, $2, $3, $4)`,
		id, roomID, parent, chain+1); err != nil {
		return err
	}
	for k, nid := range entries {
		if _, err := tx.ExecContext(ctx, `INSERT INTO state_snapshot_entries (snapshot_id, type, state_key, event_nid) VALUES ($1, $2, $3, $4)`,
			id, k.Type, k.StateKey, nid); err != nil {
			return err
		}
	}
	return nil
}

// Snapshot loads the full state of a snapshot.
func (db *DB) Snapshot(ctx context.Context, id int64) (StateMap, error) {
	out := StateMap{}
	if id == 0 {
		return out, nil
	}
	rows, err := db.R().QueryContext(ctx, `WITH RECURSIVE chain(id, parent_id, lvl) AS (
			SELECT snapshot_id, parent_id, 0 FROM state_snapshots WHERE snapshot_id = $1
			UNION ALL
			SELECT s.snapshot_id, s.parent_id, c.lvl + 1 FROM state_snapshots s JOIN chain c ON s.snapshot_id = c.parent_id
		)
		SELECT e.type, e.state_key, e.event_nid, c.lvl FROM chain c JOIN state_snapshot_entries e ON e.snapshot_id = c.id`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	level := map[StateKey]int{}
	for rows.Next() {
		var k StateKey
		var nid int64
		var lvl int
		if err := rows.Scan(&k.Type, &k.StateKey, &nid, &lvl); err != nil {
			return nil, err
		}
		if l, ok := level[k]; !ok || lvl < l {
			level[k] = lvl
			out[k] = nid
		}
	}
	return out, rows.Err()
}

// SetCurrentState records the current state event for a key.
func (tx *Tx) SetCurrentState(ctx context.Context, roomID string, k StateKey, nid int64, membership string, pos int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO current_state (room_id, type, state_key, event_nid, membership, stream_pos) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_nid = excluded.event_nid, membership = excluded.membership, stream_pos = excluded.stream_pos`,
		roomID, k.Type, k.StateKey, nid, nullStr(membership), pos)
	if err != nil {
		return err
	}
	return tx.noteDirectoryState(ctx, roomID, k, nid, membership) // search.go
}

// RoomsByMembership returns the rooms where userID's current membership is m.
func (db *DB) RoomsByMembership(ctx context.Context, userID, membership string) ([]string, error) {
	return queryStrings(ctx, db.R(), `SELECT room_id FROM current_state WHERE type = 'm.room.member' AND state_key = $1 AND membership = $2 ORDER BY room_id`, userID, membership)
}

// CurrentMembership returns a user's current membership in a room ("" if none).
func (db *DB) CurrentMembership(ctx context.Context, roomID, userID string) (string, error) {
	var m sql.NullString
	err := db.R().QueryRowContext(ctx, `SELECT membership FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2`, roomID, userID).Scan(&m)
	if err == sql.ErrNoRows {
		return "", nil
	}
	return m.String, err
}

// RoomMembers returns the users with the given current membership in a room.
func (db *DB) RoomMembers(ctx context.Context, roomID, membership string) ([]string, error) {
	return queryStrings(ctx, db.R(), `SELECT state_key FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND membership = $2 ORDER BY state_key`, roomID, membership)
}

// CurrentStateNIDs returns the room's current state.
func (db *DB) CurrentStateNIDs(ctx context.Context, roomID string) (StateMap, error) {
	rows, err := db.R().QueryContext(ctx, `SELECT type, state_key, event_nid FROM current_state WHERE room_id = $1`, roomID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := StateMap{}
	for rows.Next() {
		var k StateKey
		var nid int64
		if err := rows.Scan(&k.Type, &k.StateKey, &nid); err != nil {
			return nil, err
		}
		out[k] = nid
	}
	return out, rows.Err()
}

// SharesRoom reports whether two users currently share a joined room.
func (db *DB) SharesRoom(ctx context.Context, a, b string) (bool, error) {
	var n int
	err := db.R().QueryRowContext(ctx, `SELECT COUNT(*) FROM current_state x JOIN current_state y ON x.room_id = y.room_id
		WHERE x.type = 'm.room.member' AND x.state_key = $1 AND x.membership = 'join'
		AND y.type = 'm.room.member' AND y.state_key = $2 AND y.membership = 'join'`, a, b).Scan(&n)
	return n > 0, err
}

func queryStrings(ctx context.Context, q Querier, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// PublicRoomState is what the public room directory shows of one room.
type PublicRoomState struct {
	RoomID      string
	JoinedCount int
	// State holds the content of the directory-relevant state events, by type.
	State map[string][]byte
}

// RoomList picks a public room list: the server's own (zero value), one
// application service network's (ServiceID and NetworkID), or all of them.
type RoomList struct {
	ServiceID, NetworkID string
	All                  bool
}

func (l RoomList) where() (string, []any) {
	const inNetwork = `r.room_id IN (SELECT room_id FROM appservice_room_lists`
	switch {
	case l.All:
		return `(r.published = 1 OR ` + inNetwork + `))`, nil
	case l.ServiceID != "":
		return inNetwork + ` WHERE service_id = $1 AND network_id = $2)`, []any{l.ServiceID, l.NetworkID}
	}
	return `r.published = 1`, nil
}

// SetNetworkListing adds a room to, or removes it from, an application
// service network's public room list.
func (db *DB) SetNetworkListing(ctx context.Context, serviceID, networkID, roomID string, listed bool) error {
	return db.Write(ctx, func(tx *Tx) error {
		if !listed {
			_, err := tx.ExecContext(ctx, `DELETE FROM appservice_room_lists WHERE service_id = $1 AND network_id = $2 AND room_id = $3`, serviceID, networkID, roomID)
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO appservice_room_lists (service_id, network_id, room_id) VALUES ($1, $2, $3)
			ON CONFLICT (service_id, network_id, room_id) DO NOTHING`, serviceID, networkID, roomID)
		return err
	})
}

// PublishedRoomStates returns every published room with its joined member
// count and the current content of the state events the directory shows,
// in two queries.
func (db *DB) PublishedRoomStates(ctx context.Context, list RoomList) ([]*PublicRoomState, error) {
	where, args := list.where()
	rows, err := db.R().QueryContext(ctx, `SELECT r.room_id, COUNT(cs.state_key) FROM rooms r
		LEFT JOIN current_state cs ON cs.room_id = r.room_id AND cs.type = 'm.room.member' AND cs.membership = 'join'
		WHERE `+where+` GROUP BY r.room_id`, args...)
	if err != nil {
		return nil, err
	}
	byID := map[string]*PublicRoomState{}
	var out []*PublicRoomState
	for rows.Next() {
		p := &PublicRoomState{State: map[string][]byte{}}
		if err := rows.Scan(&p.RoomID, &p.JoinedCount); err != nil {
			rows.Close()
			return nil, err
		}
		byID[p.RoomID] = p
		out = append(out, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = db.R().QueryContext(ctx, `SELECT cs.room_id, cs.type, e.json FROM current_state cs
		JOIN rooms r ON r.room_id = cs.room_id AND `+where+`
		JOIN events e ON e.stream_pos = cs.event_nid
		WHERE cs.state_key = '' AND cs.type IN ('m.room.name', 'm.room.topic', 'm.room.canonical_alias', 'm.room.avatar',
			'm.room.history_visibility', 'm.room.guest_access', 'm.room.join_rules', 'm.room.create')`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var roomID, typ, js string
		if err := rows.Scan(&roomID, &typ, &js); err != nil {
			return nil, err
		}
		if p := byID[roomID]; p != nil {
			p.State[typ] = []byte(js)
		}
	}
	return out, rows.Err()
}
