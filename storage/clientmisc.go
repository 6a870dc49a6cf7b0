package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
)

// Server-side key backups (spec: Client-Server API, "Server-side key
// backups").

// KeyBackup is one version of a user's key backup.
type KeyBackup struct {
	Version   int64
	Algorithm string
	AuthData  []byte // JSON, as the client gave it
	Etag      int64
	Count     int64 // keys stored
}

// BackupKey is one backed-up megolm session key.
type BackupKey struct {
	RoomID            string
	SessionID         string
	FirstMessageIndex int64
	ForwardedCount    int64
	IsVerified        bool
	SessionData       []byte // JSON, opaque
}

// WrongBackupVersionError is returned when keys are written to a backup
// version that is not the user's current one.
type WrongBackupVersionError struct{ Current int64 }

func (e *WrongBackupVersionError) Error() string {
	return fmt.Sprintf("storage: backup version is not the current one (%d)", e.Current)
}

// betterBackupKey reports whether a key should replace the stored one (spec:
// a verified key wins, then the lower first_message_index, then the lower
// forwarded_count; on a tie the stored key stays).
func betterBackupKey(n, old BackupKey) bool {
	if n.IsVerified != old.IsVerified {
		return n.IsVerified
	}
	if n.FirstMessageIndex != old.FirstMessageIndex {
		return n.FirstMessageIndex < old.FirstMessageIndex
	}
	return n.ForwardedCount < old.ForwardedCount
}

// CreateKeyBackup creates a new backup version, which becomes the current
// one, and returns its number.
func (db *DB) CreateKeyBackup(ctx context.Context, userID, algorithm string, authData []byte) (int64, error) {
	var version int64
	err := db.Write(ctx, func(tx *Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM key_backup_versions WHERE user_id = $1`, userID).Scan(&version); err != nil {
			return err
		}
		version++
		_, err := tx.ExecContext(ctx, `INSERT INTO key_backup_versions (user_id, version, algorithm, auth_data) VALUES ($1, $2, $3, $4)`,
			userID, version, algorithm, string(authData))
		return err
	})
	return version, err
}

// KeyBackupVersion returns a backup version that has not been deleted, or
// the current (newest) one when version is 0; ErrNotFound if there is none.
func (db *DB) KeyBackupVersion(ctx context.Context, userID string, version int64) (*KeyBackup, error) {
	var b KeyBackup
	var auth string
	const cols = `SELECT v.version, v.algorithm, v.auth_data, v.etag,
		(SELECT COUNT(*) FROM key_backup_keys k WHERE k.user_id = v.user_id AND k.version = v.version)
		FROM key_backup_versions v WHERE v.user_id = $1 AND v.deleted = 0`
	var row *sql.Row
	if version == 0 {
		row = db.R().QueryRowContext(ctx, cols+` ORDER BY v.version DESC LIMIT 1`, userID)
	} else {
		row = db.R().QueryRowContext(ctx, cols+` AND v.version = $2`, userID, version)
	}
	err := row.Scan(&b.Version, &b.Algorithm, &auth, &b.Etag, &b.Count)
	if err != nil {
		return nil, scanErr(err)
	}
	b.AuthData = []byte(auth)
	return &b, nil
}

// UpdateKeyBackup replaces the auth_data of a backup version; ErrNotFound
// if it does not exist or was deleted.
func (db *DB) UpdateKeyBackup(ctx context.Context, userID string, version int64, authData []byte) error {
	return db.Write(ctx, func(tx *Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE key_backup_versions SET auth_data = $1 WHERE user_id = $2 AND version = $3 AND deleted = 0`,
			string(authData), userID, version)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// DeleteKeyBackup deletes a backup version and its keys. Deleting a deleted
// version again succeeds; ErrNotFound if it never existed.
func (db *DB) DeleteKeyBackup(ctx context.Context, userID string, version int64) error {
	return db.Write(ctx, func(tx *Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE key_backup_versions SET deleted = 1 WHERE user_id = $1 AND version = $2`, userID, version)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM key_backup_keys WHERE user_id = $1 AND version = $2`, userID, version)
		return err
	})
}

// PutBackupKeys stores keys in the user's current backup version, keeping
// a stored key where it is better than the new one (see betterBackupKey).
// It returns the version's etag and key count afterwards. ErrNotFound if the
// user has no backup; *WrongBackupVersionError if version is not current.
func (db *DB) PutBackupKeys(ctx context.Context, userID string, version int64, keys []BackupKey) (etag, count int64, err error) {
	err = db.Write(ctx, func(tx *Tx) error {
		var current int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM key_backup_versions WHERE user_id = $1 AND deleted = 0`, userID).Scan(&current); err != nil {
			return err
		}
		if current == 0 {
			return ErrNotFound
		}
		if current != version {
			return &WrongBackupVersionError{Current: current}
		}
		changed := false
		for _, k := range keys {
			var old BackupKey
			var verified int
			err := tx.QueryRowContext(ctx, `SELECT first_message_index, forwarded_count, is_verified FROM key_backup_keys
				WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4`, userID, version, k.RoomID, k.SessionID).
				Scan(&old.FirstMessageIndex, &old.ForwardedCount, &verified)
			switch {
			case err == nil:
				old.IsVerified = verified != 0
				if !betterBackupKey(k, old) {
					continue
				}
			case !errors.Is(err, sql.ErrNoRows):
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO key_backup_keys (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
				ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET first_message_index = excluded.first_message_index,
				forwarded_count = excluded.forwarded_count, is_verified = excluded.is_verified, session_data = excluded.session_data`,
				userID, version, k.RoomID, k.SessionID, k.FirstMessageIndex, k.ForwardedCount, b2i(k.IsVerified), string(k.SessionData)); err != nil {
				return err
			}
			changed = true
		}
		if changed {
			if _, err := tx.ExecContext(ctx, `UPDATE key_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2`, userID, version); err != nil {
				return err
			}
		}
		return backupEtagCount(ctx, tx, userID, version, &etag, &count)
	})
	return etag, count, err
}

func backupEtagCount(ctx context.Context, q Querier, userID string, version int64, etag, count *int64) error {
	return q.QueryRowContext(ctx, `SELECT v.etag, (SELECT COUNT(*) FROM key_backup_keys k WHERE k.user_id = v.user_id AND k.version = v.version)
		FROM key_backup_versions v WHERE v.user_id = $1 AND v.version = $2`, userID, version).Scan(etag, count)
}

// BackupKeys returns the keys of a backup version, all of them or those of
// one room ("" for all) or one session ("" for all). ErrNotFound if the
// version does not exist or was deleted.
func (db *DB) BackupKeys(ctx context.Context, userID string, version int64, roomID, sessionID string) ([]BackupKey, error) {
	if version <= 0 {
		return nil, ErrNotFound
	}
	if _, err := db.KeyBackupVersion(ctx, userID, version); err != nil {
		return nil, err
	}
	rows, err := db.R().QueryContext(ctx, `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data FROM key_backup_keys
		WHERE user_id = $1 AND version = $2 AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4)
		ORDER BY room_id, session_id`, userID, version, roomID, sessionID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []BackupKey
	for rows.Next() {
		var k BackupKey
		var verified int
		var data string
		if err := rows.Scan(&k.RoomID, &k.SessionID, &k.FirstMessageIndex, &k.ForwardedCount, &verified, &data); err != nil {
			return nil, err
		}
		k.IsVerified, k.SessionData = verified != 0, []byte(data)
		out = append(out, k)
	}
	return out, rows.Err()
}

// DeleteBackupKeys deletes keys of a backup version (all, one room's or one
// session's, as for BackupKeys) and returns its etag and count afterwards.
// ErrNotFound if the version does not exist or was deleted.
func (db *DB) DeleteBackupKeys(ctx context.Context, userID string, version int64, roomID, sessionID string) (etag, count int64, err error) {
	err = db.Write(ctx, func(tx *Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM key_backup_versions WHERE user_id = $1 AND version = $2 AND deleted = 0`, userID, version).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM key_backup_keys WHERE user_id = $1 AND version = $2 AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4)`,
			userID, version, roomID, sessionID)
		if err != nil {
			return err
		}
		if gone, _ := res.RowsAffected(); gone > 0 {
			if _, err := tx.ExecContext(ctx, `UPDATE key_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2`, userID, version); err != nil {
				return err
			}
		}
		return backupEtagCount(ctx, tx, userID, version, &etag, &count)
	})
	return etag, count, err
}

// Reports (spec: "Reporting content").

// Report is a user's report of an event, a room or another user.
type Report struct {
	ID           int64
	Kind         string // "event", "room" or "user"
	Reporter     string
	RoomID       string
	EventID      string
	TargetUserID string
	Reason       string
	Score        *int64 // events only; removed from the spec in v1.18
	ReceivedTS   int64
}

// AddReport stores a report and returns its ID.
func (db *DB) AddReport(ctx context.Context, r Report) (int64, error) {
	var id int64
	var score any
	if r.Score != nil {
		score = *r.Score
	}
	err := db.Write(ctx, func(tx *Tx) error {
		return tx.QueryRowContext(ctx, `INSERT INTO reports (kind, reporter, room_id, event_id, target_user_id, reason, score, received_ts)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id`,
			r.Kind, r.Reporter, nullStr(r.RoomID), nullStr(r.EventID), nullStr(r.TargetUserID), r.Reason, score, nowMS()).Scan(&id)
	})
	return id, err
}

// Reports lists reports newest first, those with an ID below before (0:
// from the newest), at most limit.
func (db *DB) Reports(ctx context.Context, before int64, limit int) ([]Report, error) {
	if before <= 0 {
		before = math.MaxInt64
	}
	rows, err := db.R().QueryContext(ctx, `SELECT id, kind, reporter, room_id, event_id, target_user_id, reason, score, received_ts FROM reports
		WHERE id < $1 ORDER BY id DESC LIMIT $2`, before, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Report
	for rows.Next() {
		var r Report
		var room, ev, target sql.NullString
		var score sql.NullInt64
		if err := rows.Scan(&r.ID, &r.Kind, &r.Reporter, &room, &ev, &target, &r.Reason, &score, &r.ReceivedTS); err != nil {
			return nil, err
		}
		r.RoomID, r.EventID, r.TargetUserID = room.String, ev.String, target.String
		if score.Valid {
			s := score.Int64
			r.Score = &s
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Login tokens (m.login.token).

// CreateLoginToken stores a login token's hash for an account until expiresTS.
func (db *DB) CreateLoginToken(ctx context.Context, tokenHash, localpart string, expiresTS int64) error {
	return db.Write(ctx, func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM login_tokens WHERE expires_ts < $1`, nowMS()); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO login_tokens (token_hash, localpart, expires_ts) VALUES ($1, $2, $3)`, tokenHash, localpart, expiresTS)
		return err
	})
}

// UseLoginToken consumes a login token: it returns the account it was made
// for and deletes it, so it works once. ErrNotFound if the token is unknown,
// used or expired.
func (db *DB) UseLoginToken(ctx context.Context, tokenHash string) (string, error) {
	var localpart string
	var expires int64
	err := db.Write(ctx, func(tx *Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT localpart, expires_ts FROM login_tokens WHERE token_hash = $1`, tokenHash).Scan(&localpart, &expires)
		if err != nil {
			return scanErr(err)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM login_tokens WHERE token_hash = $1`, tokenHash)
		return err
	})
	if err != nil {
		return "", err
	}
	if expires < nowMS() {
		return "", ErrNotFound
	}
	return localpart, nil
}

// Timestamps and aliases.

// TSPos is a position in a room's events ordered by (origin_server_ts,
// stream position).
type TSPos struct{ TS, Stream int64 }

// TSStart is the position to start a search from a timestamp: forwards
// it is before every event at ts, backwards after every event at ts.
func TSStart(ts int64, forward bool) TSPos {
	if forward {
		return TSPos{TS: ts, Stream: math.MinInt64}
	}
	return TSPos{TS: ts, Stream: math.MaxInt64}
}

// RoomEventsByTS returns up to limit accepted timeline events of a room
// strictly after pos (forward, oldest first) or strictly before it
// (backward, newest first) in (origin_server_ts, stream position) order.
func (db *DB) RoomEventsByTS(ctx context.Context, roomID string, pos TSPos, forward bool, limit int) ([]*Event, error) {
	if forward {
		return scanEvents(db.R().QueryContext(ctx, `SELECT `+eventCols+` FROM events
			WHERE room_id = $1 AND rejected = 0 AND outlier = 0 AND (origin_ts > $2 OR (origin_ts = $2 AND stream_pos > $3))
			ORDER BY origin_ts ASC, stream_pos ASC LIMIT $4`, roomID, pos.TS, pos.Stream, limit))
	}
	return scanEvents(db.R().QueryContext(ctx, `SELECT `+eventCols+` FROM events
		WHERE room_id = $1 AND rejected = 0 AND outlier = 0 AND (origin_ts < $2 OR (origin_ts = $2 AND stream_pos < $3))
		ORDER BY origin_ts DESC, stream_pos DESC LIMIT $4`, roomID, pos.TS, pos.Stream, limit))
}

// MoveAliases points every local alias of a room at another room and
// returns the aliases moved.
func (db *DB) MoveAliases(ctx context.Context, fromRoom, toRoom string) ([]string, error) {
	var moved []string
	err := db.Write(ctx, func(tx *Tx) error {
		var err error
		moved, err = queryStrings(ctx, tx, `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, fromRoom)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE room_aliases SET room_id = $1 WHERE room_id = $2`, toRoom, fromRoom)
		return err
	})
	return moved, err
}
