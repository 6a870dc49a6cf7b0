package roomserver

import (
	"context"
	"fmt"

	"repeater/internal/httputil"
	"repeater/storage"
)

// EventNearTS finds a room's event closest to ts by origin_server_ts: the
// first at or after it (forward) or at or before it (backward) among those
// visible keeps (spec: "GET /rooms/{roomId}/timestamp_to_event" and its
// federation twin). It looks at a bounded number of events, and only at
// the history this server holds; M_NOT_FOUND if none qualifies.
func (s *Server) EventNearTS(ctx context.Context, roomID string, ts int64, forward bool, visible func([]*storage.Event) ([]*storage.Event, error)) (*storage.Event, error) {
	pos := storage.TSStart(ts, forward)
	for page := 0; page < 20; page++ {
		evs, err := s.db.RoomEventsByTS(ctx, roomID, pos, forward, 100)
		if err != nil {
			return nil, err
		}
		if len(evs) == 0 {
			break
		}
		seen, err := visible(evs)
		if err != nil {
			return nil, err
		}
		if len(seen) > 0 {
			return seen[0], nil
		}
		last := evs[len(evs)-1]
		pos = storage.TSPos{TS: last.OriginTS, Stream: last.StreamPos}
	}
	dir := "forward"
	if !forward {
		dir = "backward"
	}
	return nil, httputil.NotFound(fmt.Sprintf("Unable to find event from %d in %s direction", ts, dir))
}
