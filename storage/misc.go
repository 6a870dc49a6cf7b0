package storage

import (
	"context"
)

// AccountData is one account-data entry ("" room for global).
type AccountData struct {
	RoomID    string
	Type      string
	Content   []byte
	StreamPos int64
}

// PutAccountData stores account data and returns its stream position.
func (db *DB) PutAccountData(ctx context.Context, localpart, roomID, typ string, content []byte) (int64, error) {
	pp, err := db.WritePos(ctx, 1, func(tx *Tx) error {
		p := tx.Positions()[0]
		_, err := tx.ExecContext(ctx, `INSERT INTO account_data (localpart, room_id, type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (localpart, room_id, type) DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos`,
			localpart, roomID, typ, string(content), p)
		return err
	})
	if typ == PushRulesType && roomID == "" {
		db.forgetPushRules(localpart)
	}
	if err != nil {
		return 0, err
	}
	return pp[0], nil
}

// GetAccountData returns one entry's content.
func (db *DB) GetAccountData(ctx context.Context, localpart, roomID, typ string) ([]byte, error) {
	var s string
	err := db.R().QueryRowContext(ctx, `SELECT content FROM account_data WHERE localpart = $1 AND room_id = $2 AND type = $3`, localpart, roomID, typ).Scan(&s)
	return []byte(s), scanErr(err)
}

// AccountDataSince returns entries changed in (from, to].
func (db *DB) AccountDataSince(ctx context.Context, localpart string, from, to int64) ([]AccountData, error) {
	rows, err := db.R().QueryContext(ctx, `SELECT room_id, type, content, stream_pos FROM account_data WHERE localpart = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos`, localpart, from, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []AccountData
	for rows.Next() {
		var a AccountData
		var c string
		if err := rows.Scan(&a.RoomID, &a.Type, &c, &a.StreamPos); err != nil {
			return nil, err
		}
		a.Content = []byte(c)
		out = append(out, a)
	}
	return out, rows.Err()
}

// CreateFilter stores a filter and returns its ID.
func (db *DB) CreateFilter(ctx context.Context, localpart string, filterJSON []byte) (int64, error) {
	var id int64
	err := db.Write(ctx, func(tx *Tx) error {
		return tx.QueryRowContext(ctx, `INSERT INTO filters (localpart, json) VALUES ($1, $2) RETURNING filter_id`, localpart, string(filterJSON)).Scan(&id)
	})
	return id, err
}

// GetFilter returns a stored filter.
func (db *DB) GetFilter(ctx context.Context, localpart string, id int64) ([]byte, error) {
	var s string
	err := db.R().QueryRowContext(ctx, `SELECT json FROM filters WHERE localpart = $1 AND filter_id = $2`, localpart, id).Scan(&s)
	return []byte(s), scanErr(err)
}

// CreateAlias maps an alias to a room; ErrConflict if it exists.
func (db *DB) CreateAlias(ctx context.Context, alias, roomID, creator string) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)`, alias, roomID, creator)
		return err
	})
}

// ResolveAlias returns the room and creator of an alias.
func (db *DB) ResolveAlias(ctx context.Context, alias string) (roomID, creator string, err error) {
	err = db.R().QueryRowContext(ctx, `SELECT room_id, creator FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID, &creator)
	return roomID, creator, scanErr(err)
}

// DeleteAlias removes an alias.
func (db *DB) DeleteAlias(ctx context.Context, alias string) error {
	return db.Write(ctx, func(tx *Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM room_aliases WHERE alias = $1`, alias)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// RoomAliases lists a room's local aliases.
func (db *DB) RoomAliases(ctx context.Context, roomID string) ([]string, error) {
	return queryStrings(ctx, db.R(), `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, roomID)
}

// Receipt is a read receipt.
type Receipt struct {
	RoomID, UserID, Type, ThreadID, EventID string
	TS, StreamPos                           int64
}

// PutReceipt stores a receipt, returning its stream position.
func (db *DB) PutReceipt(ctx context.Context, r Receipt) (int64, error) {
	pp, err := db.WritePos(ctx, 1, func(tx *Tx) error {
		p := tx.Positions()[0]
		_, err := tx.ExecContext(ctx, `INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, stream_pos) VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts, stream_pos = excluded.stream_pos`,
			r.RoomID, r.UserID, r.Type, r.ThreadID, r.EventID, r.TS, p)
		return err
	})
	if err != nil {
		return 0, err
	}
	return pp[0], nil
}

// ReceiptsSince returns a room's receipts changed in (from, to].
func (db *DB) ReceiptsSince(ctx context.Context, roomID string, from, to int64) ([]Receipt, error) {
	rows, err := db.R().QueryContext(ctx, `SELECT room_id, user_id, receipt_type, thread_id, event_id, ts, stream_pos FROM receipts
		WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos`, roomID, from, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Receipt
	for rows.Next() {
		var r Receipt
		if err := rows.Scan(&r.RoomID, &r.UserID, &r.Type, &r.ThreadID, &r.EventID, &r.TS, &r.StreamPos); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// ForgetRoom records that a user forgot a room.
func (db *DB) ForgetRoom(ctx context.Context, localpart, roomID string) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO room_forgotten (localpart, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, localpart, roomID)
		return err
	})
}

// UnforgetRoom clears a forgotten flag (on a new membership).
func (tx *Tx) UnforgetRoom(ctx context.Context, localpart, roomID string) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM room_forgotten WHERE localpart = $1 AND room_id = $2`, localpart, roomID)
	return err
}

// IsForgotten reports whether the user forgot the room.
func (db *DB) IsForgotten(ctx context.Context, localpart, roomID string) (bool, error) {
	var n int
	err := db.R().QueryRowContext(ctx, `SELECT COUNT(*) FROM room_forgotten WHERE localpart = $1 AND room_id = $2`, localpart, roomID).Scan(&n)
	return n > 0, err
}
