package storage

import (
	"context"
	"database/sql"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// Device lists over federation (Server-Server API, "Device Management"):
// the cache of other servers' users' device lists and our users'
// device-list stream IDs. Table family: 012_remote_devices.sql.

// RemoteDevice is one device of another server's user as we cache it.
type RemoteDevice struct {
	DeviceID    string
	DisplayName string
	Keys        []byte // device keys JSON as the owner signed it; nil: none
}

// RemoteDeviceList is our copy of another server's user's device list.
type RemoteDeviceList struct {
	UserID   string
	StreamID int64
	Stale    bool
	// Cross-signing keys (JSON as signed; nil: none).
	MasterKey, SelfSigningKey []byte
	Devices                   []RemoteDevice
}

// RemoteDeviceList returns our copy of a remote user's device list, or
// ErrNotFound.
func (db *DB) RemoteDeviceList(ctx context.Context, userID string) (*RemoteDeviceList, error) {
	l := &RemoteDeviceList{UserID: userID}
	var stale int
	var master, self sql.NullString
	err := db.R().QueryRowContext(ctx, `SELECT stream_id, stale, master_key, self_signing_key FROM remote_device_lists WHERE user_id = $1`, userID).
		Scan(&l.StreamID, &stale, &master, &self)
	if err != nil {
		return nil, mapErr(err)
	}
	l.Stale = stale != 0
	if master.Valid {
		l.MasterKey = []byte(master.String)
	}
	if self.Valid {
		l.SelfSigningKey = []byte(self.String)
	}
	rows, err := db.R().QueryContext(ctx, `SELECT device_id, display_name, key_json FROM remote_devices WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var d RemoteDevice
		var js sql.NullString
		if err := rows.Scan(&d.DeviceID, &d.DisplayName, &js); err != nil {
			return nil, err
		}
		if js.Valid {
			d.Keys = []byte(js.String)
		}
		l.Devices = append(l.Devices, d)
	}
	return l, rows.Err()
}

// RemoteDeviceListsHeld returns which of users we hold a device list copy of.
func (db *DB) RemoteDeviceListsHeld(ctx context.Context, userIDs []string) ([]string, error) {
	var out []string
	for len(userIDs) > 0 {
		n := min(len(userIDs), 400)
		args := make([]any, n)
		for i, u := range userIDs[:n] {
			args[i] = u
		}
		got, err := queryStrings(ctx, db.R(), `SELECT user_id FROM remote_device_lists WHERE user_id IN (`+inList(1, n)+`)`, args...)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
		userIDs = userIDs[n:]
	}
	return out, nil
}

func nullBytes(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// ReplaceRemoteDeviceList stores a fresh copy of a remote user's device
// list (a resync), replacing what we held.
func (db *DB) ReplaceRemoteDeviceList(ctx context.Context, l RemoteDeviceList) error {
	return db.Write(ctx, func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM remote_devices WHERE user_id = $1`, l.UserID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO remote_device_lists (user_id, stream_id, stale, master_key, self_signing_key, updated_ts) VALUES ($1, $2, 0, $3, $4, $5)
			ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id, stale = 0, master_key = excluded.master_key,
			self_signing_key = excluded.self_signing_key, updated_ts = excluded.updated_ts`,
			l.UserID, l.StreamID, nullBytes(l.MasterKey), nullBytes(l.SelfSigningKey), nowMS()); err != nil {
			return err
		}
		for _, d := range l.Devices {
			if _, err := tx.ExecContext(ctx, `INSERT INTO remote_devices (user_id, device_id, display_name, key_json) VALUES ($1, $2, $3, $4)
				ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = excluded.display_name, key_json = excluded.key_json`,
				l.UserID, d.DeviceID, d.DisplayName, nullBytes(d.Keys)); err != nil {
				return err
			}
		}
		return nil
	})
}

// UpdateRemoteDevice applies one m.device_list_update to our copy of a
// remote user's list: the device is added or replaced (or removed, if
// deleted) and the list moves to streamID. It reports false, changing
// nothing, when we hold no copy or ours is not older than streamID.
func (db *DB) UpdateRemoteDevice(ctx context.Context, userID string, streamID int64, d RemoteDevice, deleted bool) (bool, error) {
	applied := false
	err := db.Write(ctx, func(tx *Tx) error {
		applied = false
		res, err := tx.ExecContext(ctx, `UPDATE remote_device_lists SET stream_id = $1, updated_ts = $2 WHERE user_id = $3 AND stream_id < $1`, streamID, nowMS(), userID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		applied = true
		if deleted {
			_, err = tx.ExecContext(ctx, `DELETE FROM remote_devices WHERE user_id = $1 AND device_id = $2`, userID, d.DeviceID)
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO remote_devices (user_id, device_id, display_name, key_json) VALUES ($1, $2, $3, $4)
			ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = excluded.display_name, key_json = excluded.key_json`,
			userID, d.DeviceID, d.DisplayName, nullBytes(d.Keys))
		return err
	})
	return applied, err
}

// SetRemoteCrossSigningKeys replaces the cross-signing keys in our copy of
// a remote user's device list (m.signing_key_update); a nil key is left as
// it is. It reports false when we hold no copy.
func (db *DB) SetRemoteCrossSigningKeys(ctx context.Context, userID string, master, selfSigning []byte) (bool, error) {
	applied := false
	err := db.Write(ctx, func(tx *Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE remote_device_lists SET master_key = COALESCE($1, master_key), self_signing_key = COALESCE($2, self_signing_key), updated_ts = $3
			WHERE user_id = $4`, nullBytes(master), nullBytes(selfSigning), nowMS(), userID)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		applied = n > 0
		return err
	})
	return applied, err
}

// MarkRemoteDeviceListStale marks our copy of a remote user's device list
// as needing a resync (an update went missing and fetching the list
// failed). The copy is still served while the user's server is away.
func (db *DB) MarkRemoteDeviceListStale(ctx context.Context, userID string) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE remote_device_lists SET stale = 1 WHERE user_id = $1`, userID)
		return err
	})
}

// DropRemoteDeviceList forgets our copy of a remote user's device list (no
// user of ours shares a room with them any more, so updates stop coming).
func (db *DB) DropRemoteDeviceList(ctx context.Context, userID string) error {
	return db.Write(ctx, func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM remote_devices WHERE user_id = $1`, userID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM remote_device_lists WHERE user_id = $1`, userID)
		return err
	})
}

// DeviceListStreamID returns a local user's current device-list stream ID
// (0 before any change).
func (db *DB) DeviceListStreamID(ctx context.Context, userID string) (int64, error) {
	var id int64
	err := db.R().QueryRowContext(ctx, `SELECT stream_id FROM device_list_streams WHERE user_id = $1`, userID).Scan(&id)
	if mapErr(err) == ErrNotFound {
		return 0, nil
	}
	return id, err
}

// QueueDeviceListEDU takes a local user's next device-list stream ID and,
// in the same transaction, queues the EDU that build makes of it (and of
// the previous ID, 0 if none) for destinations, so the EDUs of one user
// leave in stream order.
func (db *DB) QueueDeviceListEDU(ctx context.Context, userID string, destinations []string, build func(streamID, prevID int64) ([]byte, error)) (int64, error) {
	var id int64
	err := db.Write(ctx, func(tx *Tx) error {
		if err := tx.QueryRowContext(ctx, `INSERT INTO device_list_streams (user_id, stream_id) VALUES ($1, 1)
			ON CONFLICT (user_id) DO UPDATE SET stream_id = device_list_streams.stream_id + 1 RETURNING stream_id`, userID).Scan(&id); err != nil {
			return err
		}
		if len(destinations) == 0 {
			return nil
		}
		edu, err := build(id, id-1)
		if err != nil {
			return err
		}
		for _, d := range destinations {
			if _, err := tx.ExecContext(ctx, `INSERT INTO federation_outbox (destination, edu, created_ts) VALUES ($1, $2, $3)`, d, string(edu), nowMS()); err != nil {
				return err
			}
		}
		return nil
	})
	return id, err
}

// markOwnDeviceListChange records a change of a user's keys that only the
// user is told of (a new user-signing key: Client-Server API,
// "Cross-signing").
func markOwnDeviceListChange(ctx context.Context, tx *Tx, userID string, pos int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO device_list_changes (user_id, stream_pos, self_pos) VALUES ($1, 0, $2)
		ON CONFLICT (user_id) DO UPDATE SET self_pos = excluded.self_pos`, userID, pos)
	return err
}

// DeviceListChangesFor is DeviceListChanges as self sees them: changes
// only the user is told of count for self alone.
func (db *DB) DeviceListChangesFor(ctx context.Context, self string, userIDs []string, from, to int64) ([]string, error) {
	var out []string
	for len(userIDs) > 0 {
		n := min(len(userIDs), 400)
		args := []any{from, to, self}
		for _, u := range userIDs[:n] {
			args = append(args, u)
		}
		got, err := queryStrings(ctx, db.R(), `SELECT user_id FROM device_list_changes WHERE user_id IN (`+inList(4, n)+`)
			AND ((stream_pos > $1 AND stream_pos <= $2) OR (user_id = $3 AND self_pos > $1 AND self_pos <= $2))`, args...)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
		userIDs = userIDs[n:]
	}
	return out, nil
}

// AddKeySignatures adds to a key's JSON the stored signatures made of it
// (keyID: a device ID, or a cross-signing key's public key) by the signers
// visible admits.
func AddKeySignatures(js []byte, keyID string, sigs []KeySignature, visible func(signer string) bool) []byte {
	for _, s := range sigs {
		if s.TargetKey != keyID || !visible(s.SignerUser) {
			continue
		}
		if out, err := sjson.SetBytes(js, "signatures."+gjson.Escape(s.SignerUser)+"."+gjson.Escape(s.SignerKeyID), s.Signature); err == nil {
			js = out
		}
	}
	return js
}

// CrossSigningPublicKey is the public key of a cross-signing key's JSON
// (the ID its signatures are stored under).
func CrossSigningPublicKey(js []byte) string {
	var pub string
	gjson.GetBytes(js, "keys").ForEach(func(_, v gjson.Result) bool { pub = v.Str; return false })
	return pub
}
