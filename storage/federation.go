package storage

import (
	"context"
	"database/sql"
)

// NegativeNIDs reserves n event NIDs below every stream position, for
// outliers and backfilled history (they never fall in a sync range).
func (tx *Tx) NegativeNIDs(ctx context.Context, n int) ([]int64, error) {
	var low int64
	if err := tx.QueryRowContext(ctx, `UPDATE stream_counter SET pos = pos - $1 WHERE id = 2 RETURNING pos`, n).Scan(&low); err != nil {
		return nil, err
	}
	out := make([]int64, n)
	for i := range out {
		out[i] = low + int64(n-1-i) // first reserved is the highest
	}
	return out, nil
}

// EventNIDsByIDs maps the event IDs this server holds to their NIDs
// (timelineOnly: leaving out outliers).
func (db *DB) EventNIDsByIDs(ctx context.Context, q Querier, ids []string, timelineOnly bool) (map[string]int64, error) {
	extra := ""
	if timelineOnly {
		extra = " AND outlier = 0"
	}
	out := map[string]int64{}
	for len(ids) > 0 {
		n := min(len(ids), 500)
		args := make([]any, n)
		for i := range n {
			args[i] = ids[i]
		}
		rows, err := q.QueryContext(ctx, `SELECT event_id, stream_pos FROM events WHERE event_id IN (`+inList(1, n)+`)`+extra, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var id string
			var nid int64
			if err := rows.Scan(&id, &nid); err != nil {
				rows.Close()
				return nil, err
			}
			out[id] = nid
		}
		rows.Close()
		ids = ids[n:]
	}
	return out, nil
}

// EventsByIDs returns the events this server holds among ids (any order).
func (db *DB) EventsByIDs(ctx context.Context, ids []string) ([]*Event, error) {
	return eventsWhereIn(ctx, db, "event_id", ids)
}

// ServerKey is another server's signing key as cached in the key ring.
type ServerKey struct {
	ServerName, KeyID, PublicKey string // public key in unpadded base64
	ValidUntilTS, ExpiredTS      int64
}

// ServerKeys returns cached keys of a server.
func (db *DB) ServerKeys(ctx context.Context, serverName string) ([]ServerKey, error) {
	rows, err := db.R().QueryContext(ctx, `SELECT server_name, key_id, public_key, valid_until_ts, expired_ts FROM server_keys WHERE server_name = $1`, serverName)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ServerKey
	for rows.Next() {
		var k ServerKey
		if err := rows.Scan(&k.ServerName, &k.KeyID, &k.PublicKey, &k.ValidUntilTS, &k.ExpiredTS); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// StoreServerKeys caches keys, keeping the later validity of old and new.
func (db *DB) StoreServerKeys(ctx context.Context, keys []ServerKey) error {
	return db.Write(ctx, func(tx *Tx) error {
		for _, k := range keys {
			if _, err := tx.ExecContext(ctx, `INSERT INTO server_keys (server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts)
				VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (server_name, key_id) DO UPDATE SET public_key = excluded.public_key,
				valid_until_ts = CASE WHEN excluded.valid_until_ts > server_keys.valid_until_ts THEN excluded.valid_until_ts ELSE server_keys.valid_until_ts END,
				expired_ts = excluded.expired_ts, fetched_ts = excluded.fetched_ts`,
				k.ServerName, k.KeyID, k.PublicKey, k.ValidUntilTS, k.ExpiredTS, nowMS()); err != nil {
				return err
			}
		}
		return nil
	})
}

// EnqueuePDU queues an event for each destination, in the event's write.
func (tx *Tx) EnqueuePDU(ctx context.Context, destinations []string, nid int64) error {
	for _, d := range destinations {
		if _, err := tx.ExecContext(ctx, `INSERT INTO federation_outbox (destination, event_nid, created_ts) VALUES ($1, $2, $3)`, d, nid, nowMS()); err != nil {
			return err
		}
	}
	return nil
}

// EnqueueEDU queues an EDU (its JSON) for each destination.
func (db *DB) EnqueueEDU(ctx context.Context, destinations []string, edu []byte) error {
	return db.Write(ctx, func(tx *Tx) error {
		for _, d := range destinations {
			if _, err := tx.ExecContext(ctx, `INSERT INTO federation_outbox (destination, edu, created_ts) VALUES ($1, $2, $3)`, d, string(edu), nowMS()); err != nil {
				return err
			}
		}
		return nil
	})
}

// OutboxItem is one queued PDU (EventNID) or EDU for a destination.
type OutboxItem struct {
	ID       int64
	EventNID int64
	EDU      []byte
}

// Outbox returns the oldest queued items for a destination.
func (db *DB) Outbox(ctx context.Context, destination string, limit int) ([]OutboxItem, error) {
	rows, err := db.R().QueryContext(ctx, `SELECT id, event_nid, edu FROM federation_outbox WHERE destination = $1 ORDER BY id LIMIT $2`, destination, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []OutboxItem
	for rows.Next() {
		var it OutboxItem
		var edu sql.NullString
		if err := rows.Scan(&it.ID, &it.EventNID, &edu); err != nil {
			return nil, err
		}
		if edu.Valid {
			it.EDU = []byte(edu.String)
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

// OutboxDestinations lists destinations with queued items.
func (db *DB) OutboxDestinations(ctx context.Context) ([]string, error) {
	return queryStrings(ctx, db.R(), `SELECT DISTINCT destination FROM federation_outbox`)
}

// DeleteOutbox removes delivered items of a destination up to and including id.
func (db *DB) DeleteOutbox(ctx context.Context, destination string, upTo int64) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM federation_outbox WHERE destination = $1 AND id <= $2`, destination, upTo)
		return err
	})
}

// InboundTxn returns the stored response to a transaction already processed.
func (db *DB) InboundTxn(ctx context.Context, origin, txnID string) ([]byte, error) {
	var resp string
	err := db.R().QueryRowContext(ctx, `SELECT response FROM federation_inbound_txns WHERE origin = $1 AND txn_id = $2`, origin, txnID).Scan(&resp)
	return []byte(resp), scanErr(err)
}

// RecordInboundTxn stores the response to a processed transaction.
func (db *DB) RecordInboundTxn(ctx context.Context, origin, txnID string, response []byte) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO federation_inbound_txns (origin, txn_id, response, created_ts) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
			origin, txnID, string(response), nowMS())
		return err
	})
}

// RemoteInvite is an invite to a room this server is not in.
type RemoteInvite struct {
	RoomID, UserID, RoomVersion string
	EventNID                    int64
	Stripped                    []byte // JSON array of stripped state events
}

// StoreRemoteInvite records a membership event (invite, or the leave that
// rejects one) about a local user in a room this server is not in, at a new
// stream position, with the room's stripped state for an invite.
func (db *DB) StoreRemoteInvite(ctx context.Context, e *Event, version string, stripped []byte, membership string, pending func(pos int64)) error {
	pos, done := db.Submit(1, func(tx *Tx) error {
		ev := *e
		ev.StreamPos = tx.Positions()[0]
		if err := tx.InsertEvent(ctx, &ev); err != nil {
			return err
		}
		k := StateKey{Type: "m.room.member", StateKey: *e.StateKey}
		if err := tx.SetCurrentState(ctx, e.RoomID, k, ev.NID, membership, ev.StreamPos); err != nil {
			return err
		}
		if membership != "invite" && membership != "knock" {
			_, err := tx.ExecContext(ctx, `DELETE FROM remote_invites WHERE room_id = $1 AND user_id = $2`, e.RoomID, *e.StateKey)
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO remote_invites (room_id, user_id, event_nid, room_version, stripped) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (room_id, user_id) DO UPDATE SET event_nid = excluded.event_nid, room_version = excluded.room_version, stripped = excluded.stripped`,
			e.RoomID, *e.StateKey, ev.NID, version, string(stripped))
		return err
	}, nil)
	if pos == nil {
		return <-done
	}
	if pending != nil {
		pending(pos[0])
	}
	if err := <-done; err != nil {
		return err
	}
	e.StreamPos, e.NID = pos[0], pos[0]
	return nil
}

// GetRemoteInvite returns a pending invite to a room this server is not in.
func (db *DB) GetRemoteInvite(ctx context.Context, roomID, userID string) (*RemoteInvite, error) {
	var ri RemoteInvite
	var stripped string
	err := db.R().QueryRowContext(ctx, `SELECT room_id, user_id, event_nid, room_version, stripped FROM remote_invites WHERE room_id = $1 AND user_id = $2`,
		roomID, userID).Scan(&ri.RoomID, &ri.UserID, &ri.EventNID, &ri.RoomVersion, &stripped)
	if err != nil {
		return nil, scanErr(err)
	}
	ri.Stripped = []byte(stripped)
	return &ri, nil
}

// DeleteRemoteInvite forgets a remote invite (the user joined the room).
func (tx *Tx) DeleteRemoteInvite(ctx context.Context, roomID, userID string) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM remote_invites WHERE room_id = $1 AND user_id = $2`, roomID, userID)
	return err
}

// Gap is a prev event this server lacks, and the depth of the event after it.
type Gap struct {
	EventID string
	Depth   int64
}

// AddGaps records missing prev events of a room (ignoring known ones).
func (tx *Tx) AddGaps(ctx context.Context, roomID string, gaps []Gap) error {
	for _, g := range gaps {
		if _, err := tx.ExecContext(ctx, `INSERT INTO room_gaps (room_id, event_id, depth) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, roomID, g.EventID, g.Depth); err != nil {
			return err
		}
	}
	return nil
}

// FillGap forgets a gap: the event is now held.
func (tx *Tx) FillGap(ctx context.Context, roomID, eventID string) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM room_gaps WHERE room_id = $1 AND event_id = $2`, roomID, eventID)
	return err
}

// Gaps returns a room's gaps, deepest first. Gaps at or below a history
// purge's boundary (storage/admin.go) are left out: that history was
// deleted on purpose and is not fetched again.
func (db *DB) Gaps(ctx context.Context, roomID string) ([]Gap, error) {
	rows, err := db.R().QueryContext(ctx, `SELECT event_id, depth FROM room_gaps WHERE room_id = $1
		AND depth > COALESCE((SELECT before_depth FROM room_history_purges WHERE room_id = $1), -1)
		ORDER BY depth DESC, event_id`, roomID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Gap
	for rows.Next() {
		var g Gap
		if err := rows.Scan(&g.EventID, &g.Depth); err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

// PromoteOutlier makes an event held as an outlier part of the timeline
// (it arrived again through backfill).
func (tx *Tx) PromoteOutlier(ctx context.Context, eventID string) error {
	_, err := tx.ExecContext(ctx, `UPDATE events SET outlier = 0 WHERE event_id = $1`, eventID)
	if err != nil {
		return err
	}
	// Now in the timeline, its relation counts (relations.go).
	e, err := scanEvent(tx.QueryRowContext(ctx, `SELECT `+eventCols+` FROM events WHERE event_id = $1`, eventID))
	if err != nil || e.Rejected || e.RedactedBy != "" {
		return nil
	}
	if err := tx.indexSearch(ctx, e, true); err != nil { // search.go
		return err
	}
	return tx.db.indexRelation(ctx, tx, e)
}

// JoinedServers returns every server with a user joined to any room this
// server holds (ours included; callers filter).
func (db *DB) JoinedServers(ctx context.Context) ([]string, error) {
	users, err := queryStrings(ctx, db.R(), `SELECT DISTINCT state_key FROM current_state WHERE type = 'm.room.member' AND membership = 'join'`)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, u := range users {
		for i := 0; i < len(u); i++ {
			if u[i] == ':' {
				if s := u[i+1:]; !seen[s] {
					seen[s] = true
					out = append(out, s)
				}
				break
			}
		}
	}
	return out, nil
}

// QueuePDU queues a stored event for destinations (outside the event's own
// write: for events of other servers that we pass on, such as a join we
// accepted through send_join).
func (db *DB) QueuePDU(ctx context.Context, destinations []string, nid int64) error {
	return db.Write(ctx, func(tx *Tx) error { return tx.EnqueuePDU(ctx, destinations, nid) })
}

// PutOpenIDToken stores an OpenID token (by hash) for a user until expires.
func (db *DB) PutOpenIDToken(ctx context.Context, hash, userID string, expiresTS int64) error {
	return db.Write(ctx, func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM openid_tokens WHERE expires_ts < $1`, nowMS()); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`, hash, userID, expiresTS)
		return err
	})
}

// OpenIDUser returns the user an unexpired OpenID token (by hash) belongs to.
func (db *DB) OpenIDUser(ctx context.Context, hash string) (string, error) {
	var user string
	err := db.R().QueryRowContext(ctx, `SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts > $2`, hash, nowMS()).Scan(&user)
	return user, scanErr(err)
}

// KeyResponse is a server's key response (as it signed it) that holds a
// key, with the response's validity.
type KeyResponse struct {
	KeyID        string
	Response     []byte
	ValidUntilTS int64
}

// StoreKeyResponse keeps a server's signed key response under each key ID
// it lists.
func (db *DB) StoreKeyResponse(ctx context.Context, serverName string, keyIDs []string, response []byte, validUntil int64) error {
	return db.Write(ctx, func(tx *Tx) error {
		for _, id := range keyIDs {
			if _, err := tx.ExecContext(ctx, `INSERT INTO server_key_responses (server_name, key_id, response, valid_until_ts) VALUES ($1, $2, $3, $4)
				ON CONFLICT (server_name, key_id) DO UPDATE SET response = excluded.response, valid_until_ts = excluded.valid_until_ts`,
				serverName, id, string(response), validUntil); err != nil {
				return err
			}
		}
		return nil
	})
}

// KeyResponses returns the stored key responses of a server.
func (db *DB) KeyResponses(ctx context.Context, serverName string) ([]KeyResponse, error) {
	rows, err := db.R().QueryContext(ctx, `SELECT key_id, response, valid_until_ts FROM server_key_responses WHERE server_name = $1`, serverName)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []KeyResponse
	for rows.Next() {
		var k KeyResponse
		var resp string
		if err := rows.Scan(&k.KeyID, &resp, &k.ValidUntilTS); err != nil {
			return nil, err
		}
		k.Response = []byte(resp)
		out = append(out, k)
	}
	return out, rows.Err()
}
