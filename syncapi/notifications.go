package syncapi

import (
	"encoding/json"
	"net/http"
	"strconv"

	"repeater/internal/auth"
	"repeater/internal/httputil"
)

// notifications handles GET /notifications (Client-Server API, "Listing
// Notifications"): the events the user's push rules notified for, newest
// first, as stored by the push worker; "read" when the user's read receipt
// in the room is at or after the event. from is the ID to continue below.
func (s *Sync) notifications(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	ctx := r.Context()
	q := r.URL.Query()
	limit := 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, httputil.InvalidParam("limit must be a non-negative integer")
		}
		limit = min(max(n, 1), 100)
	}
	var from int64
	if v := q.Get("from"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, httputil.InvalidParam("Unknown from token")
		}
		from = n
	}
	ns, err := s.db.Notifications(ctx, d.Localpart, from, limit, q.Get("only") == "highlight")
	if err != nil {
		return nil, err
	}
	receipts := map[string]int64{}
	out := []any{}
	for _, n := range ns {
		e, err := s.rs.EventByID(ctx, n.EventID)
		if err != nil {
			continue // purged since
		}
		rp, ok := receipts[n.RoomID]
		if !ok {
			if rp, err = s.db.ReadReceiptPos(ctx, n.RoomID, d.UserID); err != nil {
				return nil, err
			}
			receipts[n.RoomID] = rp
		}
		out = append(out, map[string]any{"actions": json.RawMessage(n.Actions), "event": s.rs.ClientEvent(ctx, e, d.UserID, d.DeviceID),
			"read": n.StreamPos <= rp, "room_id": n.RoomID, "ts": n.TS, "profile_tag": ""})
	}
	resp := map[string]any{"notifications": out}
	if len(ns) == limit {
		resp["next_token"] = strconv.FormatInt(ns[len(ns)-1].ID, 10)
	}
	return resp, nil
}
