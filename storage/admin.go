package storage

// Administration (the admin API and the console commands): listing
// accounts and rooms, device last-seen records, room blocks, deleting a
// room's data, purging old history, server notice rooms and event reports.

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"
)

// AccountInfo is an account with what administrators see of it.
type AccountInfo struct {
	Account
	CreatedTS int64
	Erased    bool
}

// AccountQuery selects a page of accounts.
type AccountQuery struct {
	Offset, Limit int
	// Name keeps accounts whose localpart or display name contains it
	// (case-insensitively).
	Name string
	// Guests includes guest accounts; Deactivated includes deactivated
	// ones.
	Guests, Deactivated bool
	// OrderBy: "name" (default), "displayname", "creation_ts", "admin",
	// "deactivated", "is_guest" or "avatar_url"; Backwards reverses it.
	OrderBy   string
	Backwards bool
}

var accountOrder = map[string]string{
	"name": "localpart", "displayname": "COALESCE(displayname, '')", "creation_ts": "created_ts", "admin": "is_admin",
	"deactivated": "deactivated", "is_guest": "is_guest", "avatar_url": "COALESCE(avatar_url, '')",
}

const accountInfoCols = `localpart, is_admin, is_guest, deactivated, displayname, avatar_url, created_ts, erased`

func scanAccountInfo(sc interface{ Scan(...any) error }) (*AccountInfo, error) {
	var a AccountInfo
	var admin, guest, deact, erased int
	var dn, av sql.NullString
	if err := sc.Scan(&a.Localpart, &admin, &guest, &deact, &dn, &av, &a.CreatedTS, &erased); err != nil {
		return nil, scanErr(err)
	}
	a.IsAdmin, a.IsGuest, a.Deactivated, a.Erased = admin != 0, guest != 0, deact != 0, erased != 0
	a.DisplayName, a.AvatarURL = dn.String, av.String
	return &a, nil
}

// ListAccounts returns a page of accounts and how many match in all.
func (db *DB) ListAccounts(ctx context.Context, q AccountQuery) ([]AccountInfo, int, error) {
	var where []string
	var args []any
	if !q.Guests {
		where = append(where, "is_guest = 0")
	}
	if !q.Deactivated {
		where = append(where, "deactivated = 0")
	}
	if q.Name != "" {
		args = append(args, "%"+EscapeLike(strings.ToLower(q.Name))+"%")
		n := strconv.Itoa(len(args))
		where = append(where, `(LOWER(localpart) LIKE $`+n+` ESCAPE '\' OR LOWER(COALESCE(displayname, '')) LIKE $`+n+` ESCAPE '\')`)
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	var total int
	if err := db.R().QueryRowContext(ctx, `SELECT COUNT(*) FROM accounts`+cond, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	order, ok := accountOrder[q.OrderBy]
	if !ok {
		order = "localpart"
	}
	dir := " ASC"
	if q.Backwards {
		dir = " DESC"
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	args = append(args, q.Limit, max(q.Offset, 0))
	out, err := scanAll(deref(scanAccountInfo))(db.R().QueryContext(ctx, `SELECT `+accountInfoCols+` FROM accounts`+cond+` ORDER BY `+order+dir+`, localpart`+dir+
		` LIMIT $`+strconv.Itoa(len(args)-1)+` OFFSET $`+strconv.Itoa(len(args)), args...))
	return out, total, err
}

// AccountDetails returns one account with its administrative details.
func (db *DB) AccountDetails(ctx context.Context, localpart string) (*AccountInfo, error) {
	return scanAccountInfo(db.R().QueryRowContext(ctx, `SELECT `+accountInfoCols+` FROM accounts WHERE localpart = $1`, localpart))
}

// ActiveLocalparts returns every account that is neither a guest nor
// deactivated.
func (db *DB) ActiveLocalparts(ctx context.Context) ([]string, error) {
	return queryStrings(ctx, db.R(), `SELECT localpart FROM accounts WHERE is_guest = 0 AND deactivated = 0 ORDER BY localpart`)
}

// updateAccount runs an UPDATE of one account; ErrNotFound if none.
func (db *DB) updateAccount(ctx context.Context, query string, args ...any) error {
	return db.Write(ctx, func(tx *Tx) error {
		res, err := tx.ExecContext(ctx, query, args...)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// SetAdmin grants or removes server administrator rights.
func (db *DB) SetAdmin(ctx context.Context, localpart string, admin bool) error {
	return db.updateAccount(ctx, `UPDATE accounts SET is_admin = $1 WHERE localpart = $2`, b2i(admin), localpart)
}

// ReactivateAccount undoes a deactivation, with a new password hash.
func (db *DB) ReactivateAccount(ctx context.Context, localpart, passwordHash string) error {
	return db.updateAccount(ctx, `UPDATE accounts SET deactivated = 0, erased = 0, password_hash = $1 WHERE localpart = $2`, passwordHash, localpart)
}

// EraseAccount marks an account erased and removes its profile.
func (db *DB) EraseAccount(ctx context.Context, localpart string) error {
	return db.updateAccount(ctx, `UPDATE accounts SET erased = 1, displayname = NULL, avatar_url = NULL WHERE localpart = $1`, localpart)
}

// DeleteAllPushers removes every pusher of an account.
func (db *DB) DeleteAllPushers(ctx context.Context, localpart string) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM pushers WHERE localpart = $1`, localpart)
		return err
	})
}

// Device last-seen records.

// SeenDevice is a device with the client it was last seen with.
type SeenDevice struct {
	Device
	CreatedTS int64
	UserAgent string
}

// SeenDevices lists an account's devices with their last-seen details.
func (db *DB) SeenDevices(ctx context.Context, localpart string) ([]SeenDevice, error) {
	rows, err := db.R().QueryContext(ctx, `SELECT device_id, display_name, last_seen_ts, last_seen_ip, last_seen_user_agent, created_ts
		FROM devices WHERE localpart = $1 ORDER BY device_id`, localpart)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []SeenDevice
	for rows.Next() {
		d := SeenDevice{Device: Device{Localpart: localpart}}
		var dn sql.NullString
		if err := rows.Scan(&d.DeviceID, &dn, &d.LastSeenTS, &d.LastSeenIP, &d.UserAgent, &d.CreatedTS); err != nil {
			return nil, err
		}
		d.DisplayName = dn.String
		out = append(out, d)
	}
	return out, rows.Err()
}

// seenInterval is how often a device's last-seen record is written at
// most.
const seenInterval = 60 // seconds

// SeenRecorder keeps devices' last-seen time, address and client up to
// date cheaply: the access-token check asks Due on every request (a map
// read under a read lock, no allocation), and only when a minute has
// passed since the device's last write does it call Record, which queues
// the update on the write path without waiting for it.
type SeenRecorder struct {
	db   *DB
	mu   sync.RWMutex
	last map[seenKey]int64 // device -> unix seconds of its last write
}

type seenKey struct{ localpart, deviceID string }

// maxSeen bounds the recorder's memory; past it, it starts afresh (at
// worst one extra write per device).
const maxSeen = 100000

// NewSeenRecorder returns a recorder writing to db.
func NewSeenRecorder(db *DB) *SeenRecorder {
	return &SeenRecorder{db: db, last: map[seenKey]int64{}}
}

// Due reports whether the device's last-seen record should be written now,
// and if so counts it as written: one caller a minute gets true.
func (s *SeenRecorder) Due(localpart, deviceID string) bool {
	now := time.Now().Unix()
	k := seenKey{localpart, deviceID}
	s.mu.RLock()
	t, ok := s.last[k]
	s.mu.RUnlock()
	if ok && now-t < seenInterval {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.last[k]; ok && now-t < seenInterval {
		return false
	}
	if len(s.last) >= maxSeen {
		clear(s.last)
	}
	s.last[k] = now
	return true
}

// Record queues the write of a device's last-seen record and returns at
// once (errors are dropped: the record is advisory).
func (s *SeenRecorder) Record(localpart, deviceID, ip, userAgent string) {
	if len(userAgent) > 512 {
		userAgent = strings.ToValidUTF8(userAgent[:512], "")
	}
	now := nowMS()
	s.db.Submit(0, func(tx *Tx) error {
		_, err := tx.ExecContext(context.Background(), `UPDATE devices SET last_seen_ts = $1, last_seen_ip = $2, last_seen_user_agent = $3 WHERE localpart = $4 AND device_id = $5`,
			now, ip, userAgent, localpart, deviceID)
		return err
	}, nil)
}

// Rooms.

// RoomSummary is what administrators see of a room: its row and the
// content of its main state events.
type RoomSummary struct {
	RoomID, Version   string
	Published         bool
	CreatedTS         int64
	Name, Topic       string
	Avatar            string
	CanonicalAlias    string
	Creator           string
	Encryption        string
	JoinRules         string
	GuestAccess       string
	HistoryVisibility string
	RoomType          string
	Federatable       bool
	JoinedMembers     int
	// JoinedLocalMembers counts joined users of serverName.
	JoinedLocalMembers int
	StateEvents        int
}

// RoomSummaries returns every room (or, with roomID set, that room) this
// server holds; serverName decides which members are local.
func (db *DB) RoomSummaries(ctx context.Context, serverName, roomID string) ([]*RoomSummary, error) {
	filter := func(col string, n int) string {
		if roomID == "" {
			return ""
		}
		return " AND " + col + " = $" + strconv.Itoa(n)
	}
	var one []any
	if roomID != "" {
		one = []any{roomID}
	}
	rows, err := db.R().QueryContext(ctx, `SELECT room_id, room_version, published, created_ts FROM rooms WHERE 1 = 1`+filter("room_id", 1)+` ORDER BY room_id`, one...)
	if err != nil {
		return nil, err
	}
	byID := map[string]*RoomSummary{}
	var out []*RoomSummary
	for rows.Next() {
		s := &RoomSummary{Federatable: true}
		var pub int
		if err := rows.Scan(&s.RoomID, &s.Version, &pub, &s.CreatedTS); err != nil {
			rows.Close()
			return nil, err
		}
		s.Published = pub != 0
		byID[s.RoomID] = s
		out = append(out, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(out) == 0 {
		return out, err
	}
	rows, err = db.R().QueryContext(ctx, `SELECT room_id, COUNT(*) FROM current_state WHERE 1 = 1`+filter("room_id", 1)+` GROUP BY room_id`, one...)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			rows.Close()
			return nil, err
		}
		if s := byID[id]; s != nil {
			s.StateEvents = n
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	local := "%:" + EscapeLike(serverName)
	rows, err = db.R().QueryContext(ctx, `SELECT room_id, COUNT(*), SUM(CASE WHEN state_key LIKE $1 ESCAPE '\' THEN 1 ELSE 0 END) FROM current_state
		WHERE type = 'm.room.member' AND membership = 'join'`+filter("room_id", 2)+` GROUP BY room_id`, append([]any{local}, one...)...)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var id string
		var n, l int
		if err := rows.Scan(&id, &n, &l); err != nil {
			rows.Close()
			return nil, err
		}
		if s := byID[id]; s != nil {
			s.JoinedMembers, s.JoinedLocalMembers = n, l
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = db.R().QueryContext(ctx, `SELECT cs.room_id, cs.type, e.json FROM current_state cs JOIN events e ON e.stream_pos = cs.event_nid
		WHERE cs.state_key = '' AND cs.type IN ('m.room.create', 'm.room.name', 'm.room.topic', 'm.room.avatar', 'm.room.canonical_alias',
			'm.room.encryption', 'm.room.join_rules', 'm.room.guest_access', 'm.room.history_visibility')`+filter("cs.room_id", 1), one...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id, typ, js string
		if err := rows.Scan(&id, &typ, &js); err != nil {
			return nil, err
		}
		s := byID[id]
		if s == nil {
			continue
		}
		c := gjson.Get(js, "content")
		str := func(k string) string {
			if v := c.Get(k); v.Type == gjson.String {
				return v.Str
			}
			return ""
		}
		switch typ {
		case "m.room.create":
			s.Creator = gjson.Get(js, "sender").Str
			s.RoomType = str("type")
			if f := c.Get("m\\.federate"); f.Exists() {
				s.Federatable = f.Type != gjson.False
			}
		case "m.room.name":
			s.Name = str("name")
		case "m.room.topic":
			s.Topic = str("topic")
		case "m.room.avatar":
			s.Avatar = str("url")
		case "m.room.canonical_alias":
			s.CanonicalAlias = str("alias")
		case "m.room.encryption":
			s.Encryption = str("algorithm")
		case "m.room.join_rules":
			s.JoinRules = str("join_rule")
		case "m.room.guest_access":
			s.GuestAccess = str("guest_access")
		case "m.room.history_visibility":
			s.HistoryVisibility = str("history_visibility")
		}
	}
	return out, rows.Err()
}

// SetRoomBlocked blocks (by is the administrator) or unblocks a room.
func (db *DB) SetRoomBlocked(ctx context.Context, roomID, by string, blocked bool) error {
	return db.Write(ctx, func(tx *Tx) error {
		if !blocked {
			_, err := tx.ExecContext(ctx, `DELETE FROM blocked_rooms WHERE room_id = $1`, roomID)
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO blocked_rooms (room_id, blocked_by, blocked_ts) VALUES ($1, $2, $3)
			ON CONFLICT (room_id) DO UPDATE SET blocked_by = excluded.blocked_by, blocked_ts = excluded.blocked_ts`, roomID, by, nowMS())
		return err
	})
}

// RoomBlocked reports whether a room is blocked, and by whom.
func (db *DB) RoomBlocked(ctx context.Context, roomID string) (by string, blocked bool, err error) {
	err = db.R().QueryRowContext(ctx, `SELECT blocked_by FROM blocked_rooms WHERE room_id = $1`, roomID).Scan(&by)
	if err == sql.ErrNoRows {
		return "", false, nil
	}
	return by, err == nil, err
}

// searchCol is event_search's event NID column in this dialect.
func (db *DB) searchCol() string {
	if db.dialect == dialectPostgres {
		return "event_nid"
	}
	return "docid"
}

// PurgeRoom deletes everything this server holds about a room: its events,
// state, aliases, receipts, relations, search entries, notifications,
// per-room account data, queued federation PDUs and its directory entry.
// Blocks and reports are kept (they are administrators' records).
func (db *DB) PurgeRoom(ctx context.Context, roomID string) error {
	return db.Write(ctx, func(tx *Tx) error {
		stmts := []string{
			`DELETE FROM event_search WHERE ` + db.searchCol() + ` IN (SELECT stream_pos FROM events WHERE room_id = $1)`,
			`DELETE FROM federation_outbox WHERE event_nid IN (SELECT stream_pos FROM events WHERE room_id = $1)`,
			`DELETE FROM state_snapshot_entries WHERE snapshot_id IN (SELECT snapshot_id FROM state_snapshots WHERE room_id = $1)`,
			`DELETE FROM state_snapshots WHERE room_id = $1`,
			`DELETE FROM event_relations WHERE room_id = $1`,
			`DELETE FROM event_relays WHERE room_id = $1`,
			`DELETE FROM threads WHERE room_id = $1`,
			`DELETE FROM events WHERE room_id = $1`,
			`DELETE FROM current_state WHERE room_id = $1`,
			`DELETE FROM receipts WHERE room_id = $1`,
			`DELETE FROM room_aliases WHERE room_id = $1`,
			`DELETE FROM room_forgotten WHERE room_id = $1`,
			`DELETE FROM remote_invites WHERE room_id = $1`,
			`DELETE FROM room_gaps WHERE room_id = $1`,
			`DELETE FROM room_publicity WHERE room_id = $1`,
			`DELETE FROM appservice_room_lists WHERE room_id = $1`,
			`DELETE FROM notifications WHERE room_id = $1`,
			`DELETE FROM account_data WHERE room_id = $1`,
			`DELETE FROM room_history_purges WHERE room_id = $1`,
			`DELETE FROM server_notice_rooms WHERE room_id = $1`,
			`DELETE FROM rooms WHERE room_id = $1`,
		}
		for _, s := range stmts {
			if _, err := tx.ExecContext(ctx, s, roomID); err != nil {
				return fmt.Errorf("purge room: %w", err)
			}
		}
		return nil
	})
}

// OutboxPending counts the queued federation deliveries of the given
// events (NIDs) not yet made.
func (db *DB) OutboxPending(ctx context.Context, nids []int64) (int, error) {
	if len(nids) == 0 {
		return 0, nil
	}
	args := make([]any, len(nids))
	for i, n := range nids {
		args[i] = n
	}
	var n int
	err := db.R().QueryRowContext(ctx, `SELECT COUNT(*) FROM federation_outbox WHERE event_nid IN (`+inList(1, len(nids))+`)`, args...).Scan(&n)
	return n, err
}

// PurgeDepthBefore returns the depth of the room's latest timeline event
// sent before ts (origin_server_ts, milliseconds): a history purge up to
// ts deletes the events below it. ErrNotFound if none is that old.
func (db *DB) PurgeDepthBefore(ctx context.Context, roomID string, ts int64) (int64, error) {
	var d int64
	err := db.R().QueryRowContext(ctx, `SELECT depth FROM events WHERE room_id = $1 AND origin_ts < $2 AND rejected = 0 AND outlier = 0
		ORDER BY origin_ts DESC, stream_pos DESC LIMIT 1`, roomID, ts).Scan(&d)
	return d, scanErr(err)
}

// purgeBatch is how many events one write of a history purge deletes.
const purgeBatch = 500

// PurgeHistory deletes a room's message (non-state) events of depth below
// beforeDepth, except those sent by users of keepServer when it is set,
// with their relations, search entries, notifications and queued
// federation PDUs. State events below the boundary are kept as outliers:
// they still make up the room's state and auth chains, but no longer
// appear in the timeline. The boundary is recorded so that the purged
// history is not backfilled again. It works in batches (one write each)
// and returns the number of events deleted.
func (db *DB) PurgeHistory(ctx context.Context, roomID string, beforeDepth int64, keepServer string) (int, error) {
	err := db.Write(ctx, func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO room_history_purges (room_id, before_depth, purged_ts) VALUES ($1, $2, $3)
			ON CONFLICT (room_id) DO UPDATE SET purged_ts = excluded.purged_ts,
			before_depth = CASE WHEN excluded.before_depth > room_history_purges.before_depth THEN excluded.before_depth ELSE room_history_purges.before_depth END`,
			roomID, beforeDepth, nowMS()); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM room_gaps WHERE room_id = $1 AND depth <= $2`, roomID, beforeDepth)
		return err
	})
	if err != nil {
		return 0, err
	}
	suffix := ""
	if keepServer != "" {
		suffix = ":" + keepServer
	}
	deleted := 0
	cursor := int64(-1 << 62)
	for {
		if err := ctx.Err(); err != nil {
			return deleted, err
		}
		rows, err := db.R().QueryContext(ctx, `SELECT stream_pos, event_id, sender FROM events
			WHERE room_id = $1 AND depth < $2 AND state_key IS NULL AND stream_pos > $3 ORDER BY stream_pos LIMIT $4`,
			roomID, beforeDepth, cursor, purgeBatch)
		if err != nil {
			return deleted, err
		}
		var nids []any
		var ids []any
		n := 0
		for rows.Next() {
			var nid int64
			var id, sender string
			if err := rows.Scan(&nid, &id, &sender); err != nil {
				rows.Close()
				return deleted, err
			}
			n++
			cursor = nid
			if suffix != "" && strings.HasSuffix(sender, suffix) {
				continue
			}
			nids, ids = append(nids, nid), append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return deleted, err
		}
		if len(nids) > 0 {
			if err := db.Write(ctx, func(tx *Tx) error { return tx.purgeEvents(ctx, roomID, nids, ids) }); err != nil {
				return deleted, err
			}
			deleted += len(nids)
		}
		if n < purgeBatch {
			break
		}
	}
	// State events below the boundary leave the timeline.
	err = db.Write(ctx, func(tx *Tx) error {
		ids, err := queryStrings(ctx, tx, `SELECT event_id FROM events WHERE room_id = $1 AND depth < $2 AND state_key IS NOT NULL AND outlier = 0`, roomID, beforeDepth)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if err := tx.unindexRelation(ctx, id); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `UPDATE events SET outlier = 1 WHERE room_id = $1 AND depth < $2 AND state_key IS NOT NULL AND outlier = 0`, roomID, beforeDepth)
		return err
	})
	return deleted, err
}

// purgeEvents deletes message events (by NID and ID, in the same order)
// with what refers to them.
func (tx *Tx) purgeEvents(ctx context.Context, roomID string, nids, ids []any) error {
	for _, id := range ids {
		if err := tx.unindexRelation(ctx, id.(string)); err != nil { // relations.go: keeps thread summaries right
			return err
		}
	}
	in := inList(2, len(ids))
	stmts := []struct {
		q    string
		args []any
	}{
		{`DELETE FROM threads WHERE room_id = $1 AND root_id IN (` + in + `)`, ids},
		{`DELETE FROM notifications WHERE room_id = $1 AND event_id IN (` + in + `)`, ids},
		{`DELETE FROM event_relays WHERE room_id = $1 AND event_id IN (` + in + `)`, ids},
		{`DELETE FROM event_search WHERE ` + tx.db.searchCol() + ` IN (` + inList(1, len(nids)) + `)`, nil},
		{`DELETE FROM federation_outbox WHERE event_nid IN (` + inList(1, len(nids)) + `)`, nil},
		{`DELETE FROM events WHERE stream_pos IN (` + inList(1, len(nids)) + `)`, nil},
	}
	for _, s := range stmts {
		args := nids
		if s.args != nil {
			args = append([]any{roomID}, s.args...)
		}
		if _, err := tx.ExecContext(ctx, s.q, args...); err != nil {
			return fmt.Errorf("purge history: %w", err)
		}
	}
	return nil
}

// HistoryPurgedBelow returns the depth below which a room's history was
// purged (0 if it never was).
func (db *DB) HistoryPurgedBelow(ctx context.Context, roomID string) (int64, error) {
	var d int64
	err := db.R().QueryRowContext(ctx, `SELECT before_depth FROM room_history_purges WHERE room_id = $1`, roomID).Scan(&d)
	if err == sql.ErrNoRows {
		return 0, nil
	}
	return d, err
}

// Server notices.

// ServerNoticeRoom returns a user's server notices room; ErrNotFound if
// none was made.
func (db *DB) ServerNoticeRoom(ctx context.Context, localpart string) (string, error) {
	var id string
	err := db.R().QueryRowContext(ctx, `SELECT room_id FROM server_notice_rooms WHERE localpart = $1`, localpart).Scan(&id)
	return id, scanErr(err)
}

// SetServerNoticeRoom records a user's server notices room.
func (db *DB) SetServerNoticeRoom(ctx context.Context, localpart, roomID string) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO server_notice_rooms (localpart, room_id) VALUES ($1, $2)
			ON CONFLICT (localpart) DO UPDATE SET room_id = excluded.room_id`, localpart, roomID)
		return err
	})
}

// IsServerNoticeRoom reports whether roomID is the user's server notices
// room.
func (db *DB) IsServerNoticeRoom(ctx context.Context, localpart, roomID string) (bool, error) {
	var n int
	err := db.R().QueryRowContext(ctx, `SELECT COUNT(*) FROM server_notice_rooms WHERE localpart = $1 AND room_id = $2`, localpart, roomID).Scan(&n)
	return n > 0, err
}

// Event reports.

const reportCols = `id, kind, reporter, room_id, event_id, target_user_id, reason, score, received_ts`

func scanReport(sc interface{ Scan(...any) error }) (*Report, error) {
	var r Report
	var room, ev, target sql.NullString
	var score sql.NullInt64
	if err := sc.Scan(&r.ID, &r.Kind, &r.Reporter, &room, &ev, &target, &r.Reason, &score, &r.ReceivedTS); err != nil {
		return nil, scanErr(err)
	}
	r.RoomID, r.EventID, r.TargetUserID = room.String, ev.String, target.String
	if score.Valid {
		s := score.Int64
		r.Score = &s
	}
	return &r, nil
}

// EventReports returns a page of event reports, newest first (oldest first
// when forwards), and how many there are.
func (db *DB) EventReports(ctx context.Context, offset, limit int, forwards bool) ([]Report, int, error) {
	var total int
	if err := db.R().QueryRowContext(ctx, `SELECT COUNT(*) FROM reports WHERE kind = 'event'`).Scan(&total); err != nil {
		return nil, 0, err
	}
	dir := "DESC"
	if forwards {
		dir = "ASC"
	}
	out, err := scanAll(deref(scanReport))(db.R().QueryContext(ctx, `SELECT `+reportCols+` FROM reports WHERE kind = 'event' ORDER BY id `+dir+` LIMIT $1 OFFSET $2`, limit, max(offset, 0)))
	return out, total, err
}

// GetReport returns one report.
func (db *DB) GetReport(ctx context.Context, id int64) (*Report, error) {
	return scanReport(db.R().QueryRowContext(ctx, `SELECT `+reportCols+` FROM reports WHERE id = $1`, id))
}
