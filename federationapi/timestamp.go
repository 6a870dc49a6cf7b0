package federationapi

import (
	"net/http"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"repeater/internal/httputil"
	"repeater/storage"
)

// timestampToEvent handles GET /_matrix/federation/v1/timestamp_to_event/{roomId}
// (spec: Server-Server API, "Timestamp to event"): the event closest to ts
// in direction dir that the asking server, which must be in the room, may
// see.
func (a *API) timestampToEvent(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	roomID := httputil.Vars(r)["roomId"]
	q := r.URL.Query()
	if q.Get("ts") == "" || q.Get("dir") == "" {
		return nil, httputil.MissingParam("ts and dir are required")
	}
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil {
		return nil, httputil.InvalidParam("ts must be an integer")
	}
	dir := q.Get("dir")
	if dir != "f" && dir != "b" {
		return nil, httputil.InvalidParam("dir must be f or b")
	}
	if err := a.inRoom(r.Context(), roomID, origin); err != nil {
		return nil, err
	}
	e, err := a.rs.EventNearTS(r.Context(), roomID, ts, dir == "f", func(evs []*storage.Event) ([]*storage.Event, error) {
		var out []*storage.Event
		for _, e := range evs {
			if a.serverMaySee(r.Context(), origin, e) {
				out = append(out, e)
				break
			}
		}
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"event_id": e.EventID, "origin_server_ts": e.OriginTS}, nil
}
