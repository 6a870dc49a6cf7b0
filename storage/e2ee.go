package storage

import (
	"context"
	"strings"

	"github.com/tidwall/gjson"
)

// KeyUpload is what one device uploads to keys/upload.
type KeyUpload struct {
	DeviceKeys   []byte            // nil: unchanged
	OneTimeKeys  map[string][]byte // "algorithm:id" -> key JSON
	FallbackKeys map[string][]byte // "algorithm:id" -> key JSON
}

// UploadKeys stores a device's keys; a change to its device keys is a
// device-list change of the user (returned position, 0 if none).
func (db *DB) UploadKeys(ctx context.Context, userID, deviceID string, up KeyUpload) (int64, error) {
	defer db.bumpKeyCounts(userID, deviceID)
	n := 0
	if up.DeviceKeys != nil {
		n = 1
	}
	pos, err := db.WritePos(ctx, n, func(tx *Tx) error {
		if up.DeviceKeys != nil {
			if _, err := tx.ExecContext(ctx, `INSERT INTO device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)
				ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json`, userID, deviceID, string(up.DeviceKeys)); err != nil {
				return err
			}
			if err := markDeviceListChange(ctx, tx, userID, tx.Positions()[0]); err != nil {
				return err
			}
		}
		for id, js := range up.OneTimeKeys {
			alg, _, _ := strings.Cut(id, ":")
			if _, err := tx.ExecContext(ctx, `INSERT INTO one_time_keys (user_id, device_id, key_id, algorithm, key_json) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT DO NOTHING`, userID, deviceID, id, alg, string(js)); err != nil {
				return err
			}
		}
		for id, js := range up.FallbackKeys {
			alg, _, _ := strings.Cut(id, ":")
			if _, err := tx.ExecContext(ctx, `INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) VALUES ($1, $2, $3, $4, $5, 0)
				ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json, used = 0`,
				userID, deviceID, alg, id, string(js)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || n == 0 {
		return 0, err
	}
	return pos[0], nil
}

func markDeviceListChange(ctx context.Context, tx *Tx, userID string, pos int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO device_list_changes (user_id, stream_pos) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET stream_pos = excluded.stream_pos`, userID, pos)
	return err
}

// keyCounts caches, per device, its one-time key counts and unused
// fallback key types (every sync reports them); writes drop the entry.
type keyCounts struct {
	counts   map[string]int
	fallback []string
}

// DeviceKeyCounts returns a device's one-time key counts by algorithm and
// its unused fallback key types, from a cache kept current by every write.
func (db *DB) DeviceKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, []string, error) {
	k := userID + "|" + deviceID
	db.kcMu.Lock()
	c, ok := db.kc[k]
	gen := db.kcGen
	db.kcMu.Unlock()
	if ok {
		return c.counts, c.fallback, nil
	}
	counts, err := db.OneTimeKeyCounts(ctx, userID, deviceID)
	if err != nil {
		return nil, nil, err
	}
	fb, err := db.UnusedFallbackKeyTypes(ctx, userID, deviceID)
	if err != nil {
		return nil, nil, err
	}
	if fb == nil {
		fb = []string{}
	}
	db.kcMu.Lock()
	if db.kcGen == gen { // no write raced the reads
		if db.kc == nil || len(db.kc) > 50000 {
			db.kc = map[string]keyCounts{}
		}
		db.kc[k] = keyCounts{counts: counts, fallback: fb}
	}
	db.kcMu.Unlock()
	return counts, fb, nil
}

func (db *DB) bumpKeyCounts(userID, deviceID string) {
	db.kcMu.Lock()
	db.kcGen++
	delete(db.kc, userID+"|"+deviceID)
	db.kcMu.Unlock()
}

// OneTimeKeyCounts counts a device's unclaimed one-time keys by algorithm.
func (db *DB) OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, error) {
	rows, err := db.R().QueryContext(ctx, `SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm`, userID, deviceID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return nil, err
		}
		out[alg] = n
	}
	return out, rows.Err()
}

// UnusedFallbackKeyTypes lists the algorithms of a device's unused fallback keys.
func (db *DB) UnusedFallbackKeyTypes(ctx context.Context, userID, deviceID string) ([]string, error) {
	return queryStrings(ctx, db.R(), `SELECT algorithm FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = 0 ORDER BY algorithm`, userID, deviceID)
}

// DeviceKeysOf returns the uploaded device keys of users' devices:
// user -> device -> key JSON.
func (db *DB) DeviceKeysOf(ctx context.Context, userIDs []string) (map[string]map[string][]byte, error) {
	out := map[string]map[string][]byte{}
	for _, u := range userIDs {
		rows, err := db.R().QueryContext(ctx, `SELECT device_id, key_json FROM device_keys WHERE user_id = $1`, u)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var dev, js string
			if err := rows.Scan(&dev, &js); err != nil {
				rows.Close()
				return nil, err
			}
			if out[u] == nil {
				out[u] = map[string][]byte{}
			}
			out[u][dev] = []byte(js)
		}
		rows.Close()
	}
	return out, nil
}

// ClaimKey takes one one-time key of an algorithm from a device, or its
// fallback key (which stays, marked used) when none is left.
func (db *DB) ClaimKey(ctx context.Context, userID, deviceID, algorithm string) (keyID string, key []byte, err error) {
	defer db.bumpKeyCounts(userID, deviceID)
	err = db.Write(ctx, func(tx *Tx) error {
		var js string
		e := tx.QueryRowContext(ctx, `SELECT key_id, key_json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 ORDER BY key_id LIMIT 1`,
			userID, deviceID, algorithm).Scan(&keyID, &js)
		if e == nil {
			key = []byte(js)
			_, e = tx.ExecContext(ctx, `DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND key_id = $3`, userID, deviceID, keyID)
			return e
		}
		if mapErr(e) != ErrNotFound {
			return e
		}
		e = tx.QueryRowContext(ctx, `SELECT key_id, key_json FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3`,
			userID, deviceID, algorithm).Scan(&keyID, &js)
		if e != nil {
			keyID = ""
			return nil // nothing to claim
		}
		key = []byte(js)
		_, e = tx.ExecContext(ctx, `UPDATE fallback_keys SET used = 1 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3`, userID, deviceID, algorithm)
		return e
	})
	return keyID, key, err
}

// ToDeviceMessage is a message for one device.
type ToDeviceMessage struct {
	StreamPos                int64
	UserID, DeviceID, Sender string
	Type                     string
	Content                  []byte
}

// PutToDevice stores messages for devices, each at its own stream position.
func (db *DB) PutToDevice(ctx context.Context, msgs []ToDeviceMessage) (int64, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	db.kcMu.Lock()
	if db.tdPending == nil {
		db.tdPending = map[string]bool{}
	}
	for _, m := range msgs {
		db.tdPending[m.UserID+"|"+m.DeviceID] = true
	}
	db.kcMu.Unlock()
	pos, err := db.WritePos(ctx, len(msgs), func(tx *Tx) error {
		for i, m := range msgs {
			if _, err := tx.ExecContext(ctx, `INSERT INTO to_device (stream_pos, user_id, device_id, sender, type, content) VALUES ($1, $2, $3, $4, $5, $6)`,
				tx.Positions()[i], m.UserID, m.DeviceID, m.Sender, m.Type, string(m.Content)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return pos[len(pos)-1], nil
}

// ToDeviceSince returns a device's messages in (from, to], oldest first.
func (db *DB) ToDeviceSince(ctx context.Context, userID, deviceID string, from, to int64, limit int) ([]ToDeviceMessage, error) {
	rows, err := db.R().QueryContext(ctx, `SELECT stream_pos, sender, type, content FROM to_device WHERE user_id = $1 AND device_id = $2 AND stream_pos > $3 AND stream_pos <= $4
		ORDER BY stream_pos LIMIT $5`, userID, deviceID, from, to, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ToDeviceMessage
	for rows.Next() {
		m := ToDeviceMessage{UserID: userID, DeviceID: deviceID}
		var c string
		if err := rows.Scan(&m.StreamPos, &m.Sender, &m.Type, &c); err != nil {
			return nil, err
		}
		m.Content = []byte(c)
		out = append(out, m)
	}
	return out, rows.Err()
}

// AckToDevice deletes a device's messages up to pos (its sync moved past
// them). Devices known to hold no messages cost nothing: every sync acks.
func (db *DB) AckToDevice(ctx context.Context, userID, deviceID string, pos int64) error {
	k := userID + "|" + deviceID
	db.kcMu.Lock()
	pending, known := db.tdPending[k]
	db.kcMu.Unlock()
	if known && !pending {
		return nil
	}
	var left bool
	err := db.Write(ctx, func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM to_device WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3`, userID, deviceID, pos); err != nil {
			return err
		}
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM to_device WHERE user_id = $1 AND device_id = $2 LIMIT 1`, userID, deviceID).Scan(&one)
		left = err == nil
		if mapErr(err) == ErrNotFound {
			return nil
		}
		return err
	})
	if err == nil {
		db.kcMu.Lock()
		if db.tdPending == nil || len(db.tdPending) > 100000 {
			db.tdPending = map[string]bool{}
		}
		if !left && db.tdPending[k] == pending { // no message arrived meanwhile
			db.tdPending[k] = false
		}
		db.kcMu.Unlock()
	}
	return err
}

// ForgetDeviceKeys removes a deleted device's keys and messages and records
// the device-list change.
func (db *DB) ForgetDeviceKeys(ctx context.Context, userID string, deviceIDs []string) (int64, error) {
	defer func() {
		for _, d := range deviceIDs {
			db.bumpKeyCounts(userID, d)
		}
	}()
	pos, err := db.WritePos(ctx, 1, func(tx *Tx) error {
		for _, d := range deviceIDs {
			for _, t := range []string{"device_keys", "one_time_keys", "fallback_keys", "to_device"} {
				if _, err := tx.ExecContext(ctx, `DELETE FROM `+t+` WHERE user_id = $1 AND device_id = $2`, userID, d); err != nil {
					return err
				}
			}
		}
		return markDeviceListChange(ctx, tx, userID, tx.Positions()[0])
	})
	if err != nil {
		return 0, err
	}
	return pos[0], nil
}

// RecordTxnID remembers that a transaction ID was used (no event).
func (db *DB) RecordTxnID(ctx context.Context, localpart, deviceID, txnID string) error {
	return db.Write(ctx, func(tx *Tx) error { return tx.RecordTxn(ctx, localpart, deviceID, txnID, "") })
}

// MarkDeviceListChange records that a (remote) user's devices changed.
func (db *DB) MarkDeviceListChange(ctx context.Context, userID string) (int64, error) {
	pos, err := db.WritePos(ctx, 1, func(tx *Tx) error { return markDeviceListChange(ctx, tx, userID, tx.Positions()[0]) })
	if err != nil {
		return 0, err
	}
	return pos[0], nil
}

// PutCrossSigningKeys stores a user's cross-signing keys (type -> JSON) and
// records a device-list change: one only the user is told of when just
// the user-signing key changed (others never see that key).
func (db *DB) PutCrossSigningKeys(ctx context.Context, userID string, keys map[string][]byte) (int64, error) {
	pos, err := db.WritePos(ctx, 1, func(tx *Tx) error {
		public := false
		for typ, js := range keys {
			if _, err := tx.ExecContext(ctx, `INSERT INTO cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3)
				ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json`, userID, typ, string(js)); err != nil {
				return err
			}
			public = public || typ != "user_signing"
		}
		if !public {
			return markOwnDeviceListChange(ctx, tx, userID, tx.Positions()[0])
		}
		return markDeviceListChange(ctx, tx, userID, tx.Positions()[0])
	})
	if err != nil {
		return 0, err
	}
	return pos[0], nil
}

// CrossSigningKeys returns a user's cross-signing keys by type.
func (db *DB) CrossSigningKeys(ctx context.Context, userID string) (map[string][]byte, error) {
	rows, err := db.R().QueryContext(ctx, `SELECT key_type, key_json FROM cross_signing_keys WHERE user_id = $1`, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var t, js string
		if err := rows.Scan(&t, &js); err != nil {
			return nil, err
		}
		out[t] = []byte(js)
	}
	return out, rows.Err()
}

// KeySignature is one signature of a key by a signer's key.
type KeySignature struct {
	TargetUser, TargetKey, SignerUser, SignerKeyID, Signature string
}

// PutKeySignatures stores signatures and records a device-list change of
// each target user.
func (db *DB) PutKeySignatures(ctx context.Context, sigs []KeySignature) (int64, error) {
	pos, err := db.WritePos(ctx, 1, func(tx *Tx) error {
		users := map[string]bool{}
		for _, s := range sigs {
			if _, err := tx.ExecContext(ctx, `INSERT INTO key_signatures (target_user, target_key, signer_user, signer_key_id, signature) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (target_user, target_key, signer_user, signer_key_id) DO UPDATE SET signature = excluded.signature`,
				s.TargetUser, s.TargetKey, s.SignerUser, s.SignerKeyID, s.Signature); err != nil {
				return err
			}
			users[s.TargetUser] = true
		}
		for u := range users {
			if err := markDeviceListChange(ctx, tx, u, tx.Positions()[0]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return pos[0], nil
}

// KeySignaturesOf returns the stored signatures of a user's keys.
func (db *DB) KeySignaturesOf(ctx context.Context, userID string) ([]KeySignature, error) {
	rows, err := db.R().QueryContext(ctx, `SELECT target_user, target_key, signer_user, signer_key_id, signature FROM key_signatures WHERE target_user = $1`, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []KeySignature
	for rows.Next() {
		var s KeySignature
		if err := rows.Scan(&s.TargetUser, &s.TargetKey, &s.SignerUser, &s.SignerKeyID, &s.Signature); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// MembershipChange is one membership event: its room, target and
// membership.
type MembershipChange struct{ RoomID, UserID, Membership string }

// MembershipChanges returns the accepted membership events of the rooms in
// (from, to], in stream order.
func (db *DB) MembershipChanges(ctx context.Context, rooms []string, from, to int64) ([]MembershipChange, error) {
	var out []MembershipChange
	for len(rooms) > 0 {
		n := min(len(rooms), 400)
		args := []any{from, to}
		for _, r := range rooms[:n] {
			args = append(args, r)
		}
		rows, err := db.R().QueryContext(ctx, `SELECT room_id, state_key, json FROM events WHERE type = 'm.room.member' AND rejected = 0
			AND stream_pos > $1 AND stream_pos <= $2 AND room_id IN (`+inList(3, n)+`) ORDER BY stream_pos`, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var c MembershipChange
			var js string
			if err := rows.Scan(&c.RoomID, &c.UserID, &js); err != nil {
				rows.Close()
				return nil, err
			}
			c.Membership = gjson.Get(js, "content.membership").Str
			out = append(out, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		rooms = rooms[n:]
	}
	return out, nil
}
