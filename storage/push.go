package storage

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// PushRulesType is the account-data type holding a user's push rules.
const PushRulesType = "m.push_rules"

// PushRules returns the user's stored m.push_rules document, nil when the
// user never changed a rule. Cached: /sync and the push worker ask for
// every event, writes go through PutAccountData, which invalidates.
func (db *DB) PushRules(ctx context.Context, localpart string) ([]byte, error) {
	db.prMu.Lock()
	doc, ok := db.pr[localpart]
	gen := db.prGen
	db.prMu.Unlock()
	if ok {
		return doc, nil
	}
	doc, err := db.GetAccountData(ctx, localpart, "", PushRulesType)
	if err == ErrNotFound {
		doc, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	db.prMu.Lock()
	if db.prGen == gen {
		if db.pr == nil || len(db.pr) > 50000 {
			db.pr = map[string][]byte{}
		}
		db.pr[localpart] = doc
	}
	db.prMu.Unlock()
	return doc, nil
}

func (db *DB) forgetPushRules(localpart string) {
	db.prMu.Lock()
	db.prGen++
	delete(db.pr, localpart)
	db.prMu.Unlock()
}

// Pusher is one registered pusher (spec: "POST /pushers/set").
type Pusher struct {
	Localpart, AppID, PushKey, Kind               string
	AppDisplayName, DeviceDisplayName, ProfileTag string
	Lang, DeviceID                                string
	Data                                          []byte // the data object, JSON
	PushKeyTS, DeliveredID                        int64
	// StartPos is the stream position when the pusher was set: it is sent
	// notifications for later events only.
	StartPos int64
}

const pusherCols = `localpart, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, device_id, pushkey_ts, delivered_id, start_pos`

var scanPushers = scanAll(func(sc interface{ Scan(...any) error }) (Pusher, error) {
	var p Pusher
	var data string
	err := sc.Scan(&p.Localpart, &p.AppID, &p.PushKey, &p.Kind, &p.AppDisplayName, &p.DeviceDisplayName, &p.ProfileTag,
		&p.Lang, &data, &p.DeviceID, &p.PushKeyTS, &p.DeliveredID, &p.StartPos)
	p.Data = []byte(data)
	return p, err
})

// SetPusher adds or updates a pusher. Unless appending, pushers of other
// users with the same app ID and push key are removed (the device moved to
// another account). A new pusher is sent notifications for events after
// the present only, however far behind the push worker is.
func (db *DB) SetPusher(ctx context.Context, p Pusher, appendOnly bool) error {
	return db.Write(ctx, func(tx *Tx) error {
		if !appendOnly {
			if _, err := tx.ExecContext(ctx, `DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND localpart <> $3`, p.AppID, p.PushKey, p.Localpart); err != nil {
				return err
			}
		}
		var last, pos int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM notifications WHERE localpart = $1`, p.Localpart).Scan(&last); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM events`).Scan(&pos); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO pushers (`+pusherCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
			ON CONFLICT (localpart, app_id, pushkey) DO UPDATE SET kind = excluded.kind, app_display_name = excluded.app_display_name,
			device_display_name = excluded.device_display_name, profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data,
			device_id = excluded.device_id, pushkey_ts = excluded.pushkey_ts`,
			p.Localpart, p.AppID, p.PushKey, p.Kind, p.AppDisplayName, p.DeviceDisplayName, p.ProfileTag, p.Lang, string(p.Data), p.DeviceID, nowMS(), last, pos)
		return err
	})
}

// DeletePusher removes a user's pusher (no error when there is none).
func (db *DB) DeletePusher(ctx context.Context, localpart, appID, pushKey string) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM pushers WHERE localpart = $1 AND app_id = $2 AND pushkey = $3`, localpart, appID, pushKey)
		return err
	})
}

// DeleteDevicePushers removes the pushers registered from devices that are
// gone (logout, device deletion).
func (db *DB) DeleteDevicePushers(ctx context.Context, localpart string, deviceIDs []string) error {
	if len(deviceIDs) == 0 {
		return nil
	}
	return db.Write(ctx, func(tx *Tx) error {
		for _, d := range deviceIDs {
			if _, err := tx.ExecContext(ctx, `DELETE FROM pushers WHERE localpart = $1 AND device_id = $2`, localpart, d); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteOtherPushers removes a user's pushers set from devices other than
// keep.
func (db *DB) DeleteOtherPushers(ctx context.Context, localpart, keep string) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM pushers WHERE localpart = $1 AND device_id <> $2`, localpart, keep)
		return err
	})
}

// Pushers returns a user's pushers.
func (db *DB) Pushers(ctx context.Context, localpart string) ([]Pusher, error) {
	return scanPushers(db.R().QueryContext(ctx, `SELECT `+pusherCols+` FROM pushers WHERE localpart = $1 ORDER BY app_id, pushkey`, localpart))
}

// AllPushers returns every pusher on the server.
func (db *DB) AllPushers(ctx context.Context) ([]Pusher, error) {
	return scanPushers(db.R().QueryContext(ctx, `SELECT `+pusherCols+` FROM pushers ORDER BY localpart, app_id, pushkey`))
}

// SetPusherDelivered records that a pusher has delivered every
// notification up to id.
func (db *DB) SetPusherDelivered(ctx context.Context, localpart, appID, pushKey string, id int64) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE pushers SET delivered_id = $1 WHERE localpart = $2 AND app_id = $3 AND pushkey = $4 AND delivered_id < $1`,
			id, localpart, appID, pushKey)
		return err
	})
}

// Notification is an event a user's push rules said to notify for.
type Notification struct {
	ID        int64
	Localpart string
	RoomID    string
	EventID   string
	StreamPos int64
	TS        int64
	Highlight bool
	Actions   []byte // JSON array
}

// PushProgress returns how far the named push worker has evaluated the
// event stream (0 when it never ran).
func (db *DB) PushProgress(ctx context.Context, name string) (int64, error) {
	var pos int64
	err := db.R().QueryRowContext(ctx, `SELECT pos FROM push_progress WHERE name = $1`, name).Scan(&pos)
	if err == sql.ErrNoRows {
		return 0, nil
	}
	return pos, err
}

// AddNotifications stores notifications and moves the worker's progress
// (named name; "" for none) to pos in the same transaction: each event is
// evaluated exactly once.
func (db *DB) AddNotifications(ctx context.Context, name string, pos int64, ns []Notification) error {
	return db.Write(ctx, func(tx *Tx) error {
		// Many rows to a statement: one event notifies each member of a
		// room, and per-statement cost dominates on the single writer.
		const per = 50
		for len(ns) > 0 {
			n := min(len(ns), per)
			var q strings.Builder
			q.WriteString(`INSERT INTO notifications (localpart, room_id, event_id, stream_pos, ts, highlight, actions) VALUES `)
			args := make([]any, 0, 7*n)
			for i, x := range ns[:n] {
				if i > 0 {
					q.WriteString(", ")
				}
				b := 7 * i
				fmt.Fprintf(&q, "($%d, $%d, $%d, $%d, $%d, $%d, $%d)", b+1, b+2, b+3, b+4, b+5, b+6, b+7)
				args = append(args, x.Localpart, x.RoomID, x.EventID, x.StreamPos, x.TS, b2i(x.Highlight), string(x.Actions))
			}
			if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
				return err
			}
			ns = ns[n:]
		}
		if name == "" {
			return nil // a catch-up for one user: progress stays
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO push_progress (name, pos) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET pos = excluded.pos`, name, pos)
		return err
	})
}

var scanNotifications = scanAll(func(sc interface{ Scan(...any) error }) (Notification, error) {
	var n Notification
	var hl int
	var actions string
	err := sc.Scan(&n.ID, &n.Localpart, &n.RoomID, &n.EventID, &n.StreamPos, &n.TS, &hl, &actions)
	n.Highlight, n.Actions = hl != 0, []byte(actions)
	return n, err
})

const notificationCols = `id, localpart, room_id, event_id, stream_pos, ts, highlight, actions`

// NotificationsAfter returns a user's notifications with IDs above after,
// for events after stream position since, oldest first: what a pusher has
// still to deliver.
func (db *DB) NotificationsAfter(ctx context.Context, localpart string, after, since int64, limit int) ([]Notification, error) {
	return scanNotifications(db.R().QueryContext(ctx, `SELECT `+notificationCols+` FROM notifications
		WHERE localpart = $1 AND id > $2 AND stream_pos > $3 ORDER BY id LIMIT $4`, localpart, after, since, limit))
}

// PruneNotifications deletes notifications older than ts (milliseconds).
func (db *DB) PruneNotifications(ctx context.Context, ts int64) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM notifications WHERE ts < $1`, ts)
		return err
	})
}

// EventsInStream returns up to limit accepted timeline events of every
// room in (from, to], in stream order.
func (db *DB) EventsInStream(ctx context.Context, from, to int64, limit int) ([]*Event, error) {
	return scanEvents(db.R().QueryContext(ctx, `SELECT `+eventCols+` FROM events
		WHERE stream_pos > $1 AND stream_pos <= $2 AND rejected = 0 AND outlier = 0 ORDER BY stream_pos LIMIT $3`, from, to, limit))
}

// UnreadNotificationCount counts a user's stored notifications for events
// after their read receipt in each room: the badge a push gateway shows.
func (db *DB) UnreadNotificationCount(ctx context.Context, localpart, userID string) (int64, error) {
	var n int64
	err := db.R().QueryRowContext(ctx, `SELECT COUNT(*) FROM notifications n WHERE n.localpart = $1 AND n.stream_pos >
		COALESCE((SELECT MAX(e.stream_pos) FROM receipts r JOIN events e ON e.event_id = r.event_id
			WHERE r.room_id = n.room_id AND r.user_id = $2 AND r.receipt_type IN ('m.read', 'm.read.private')), 0)`, localpart, userID).Scan(&n)
	return n, err
}

// ReadReceiptPositions returns, per thread ("" for unthreaded receipts,
// "main" for the main timeline, else the thread root's event ID), the
// stream position of the event the user's latest m.read or m.read.private
// receipt in a room points at.
func (db *DB) ReadReceiptPositions(ctx context.Context, roomID, userID string) (map[string]int64, error) {
	rows, err := db.R().QueryContext(ctx, `SELECT r.thread_id, MAX(e.stream_pos) FROM receipts r JOIN events e ON e.event_id = r.event_id
		WHERE r.room_id = $1 AND r.user_id = $2 AND r.receipt_type IN ('m.read', 'm.read.private') GROUP BY r.thread_id`, roomID, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var thread string
		var pos int64
		if err := rows.Scan(&thread, &pos); err != nil {
			return nil, err
		}
		out[thread] = pos
	}
	return out, rows.Err()
}

// EventsFromOthersBefore returns up to limit accepted timeline events of
// the rooms, sent by others, with stream positions below before, newest
// first: what GET /notifications evaluates.
func (db *DB) EventsFromOthersBefore(ctx context.Context, rooms []string, userID string, before int64, limit int) ([]*Event, error) {
	if len(rooms) == 0 {
		return nil, nil
	}
	args := []any{before, userID, limit}
	for _, r := range rooms {
		args = append(args, r)
	}
	return scanEvents(db.R().QueryContext(ctx, `SELECT `+eventCols+` FROM events WHERE stream_pos < $1 AND stream_pos > 0 AND sender <> $2
		AND rejected = 0 AND outlier = 0 AND room_id IN (`+inList(4, len(rooms))+`) ORDER BY stream_pos DESC LIMIT $3`, args...))
}
