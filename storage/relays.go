package storage

import "context"

// Relay is the record of how a received event reached this server (the
// amateur-radio mode; 013_relays.sql).
type Relay struct {
	EventID    string `json:"event_id"`
	RoomID     string `json:"room_id"`
	Server     string `json:"relayed_by"`
	Addr       string `json:"relay_addr"`
	ReceivedTS int64  `json:"received_ts"`
}

// recordRelay notes the peer that relayed e; the first relay of an event
// is kept.
func (tx *Tx) recordRelay(ctx context.Context, e *Event) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO event_relays (event_id, room_id, server, addr, received_ts) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (event_id) DO NOTHING`, e.EventID, e.RoomID, e.RelayServer, e.RelayAddr, nowMS())
	return err
}

// EventRelay returns how one event reached us (ErrNotFound: it was made
// here, or received before the mode was on).
func (db *DB) EventRelay(ctx context.Context, eventID string) (*Relay, error) {
	return scanRelay(db.read.QueryRowContext(ctx, `SELECT `+relayCols+` FROM event_relays WHERE event_id = $1`, eventID))
}

const relayCols = `event_id, room_id, server, addr, received_ts`

func scanRelay(sc interface{ Scan(...any) error }) (*Relay, error) {
	var r Relay
	if err := sc.Scan(&r.EventID, &r.RoomID, &r.Server, &r.Addr, &r.ReceivedTS); err != nil {
		return nil, scanErr(err)
	}
	return &r, nil
}

// RoomRelays lists the relay records of a room, newest first, received
// before beforeTS (0: now), at most limit.
func (db *DB) RoomRelays(ctx context.Context, roomID string, beforeTS int64, limit int) ([]Relay, error) {
	if beforeTS <= 0 {
		beforeTS = 1 << 62
	}
	return scanAll(deref(scanRelay))(db.read.QueryContext(ctx, `SELECT `+relayCols+` FROM event_relays
		WHERE room_id = $1 AND received_ts < $2 ORDER BY received_ts DESC, event_id LIMIT $3`, roomID, beforeTS, limit))
}
