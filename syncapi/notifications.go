package syncapi

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/internal/pushrules"
)

// notificationScan bounds the events one GET /notifications evaluates; when
// it is reached, next_token lets the client go on.
const notificationScan = 2000

// notifications handles GET /notifications (Client-Server API, "Listing
// Notifications"): the events in the user's rooms that their push rules
// notify for, newest first, evaluated when asked (the push worker keeps
// notifications only for users with pushers); "read" when the user's read
// receipt in the room is at or after the event. Tokens are stream
// positions: the page continues below them.
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
	before := int64(1 << 62)
	if v := q.Get("from"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return nil, httputil.InvalidParam("Unknown from token")
		}
		before = n
	}
	onlyHighlight := q.Get("only") == "highlight"
	rooms, err := s.db.RoomsByMembership(ctx, d.UserID, spec.Join)
	if err != nil {
		return nil, err
	}
	doc, err := s.db.PushRules(ctx, d.Localpart)
	if err != nil {
		return nil, err
	}
	rules := s.rules.Get(d.UserID, doc)
	envs := map[string]pushrules.Env{}
	receipts := map[string]int64{}
	out := []any{}
	scanned, last, exhausted := 0, before, false
	for len(out) < limit && scanned < notificationScan && !exhausted {
		evs, err := s.db.EventsFromOthersBefore(ctx, rooms, d.UserID, last, 200)
		if err != nil {
			return nil, err
		}
		exhausted = len(evs) < 200
		for _, e := range evs {
			scanned++
			last = e.StreamPos
			env, ok := envs[e.RoomID]
			if !ok {
				env = s.rs.PushEnv(ctx, e.RoomID, d.UserID)
				envs[e.RoomID] = env
			}
			res := rules.Evaluate(e.JSON, env)
			if !res.Notify || (onlyHighlight && !res.Highlight) {
				continue
			}
			if ok, err := s.rs.CanSeeEvent(ctx, d.UserID, e); err != nil || !ok {
				continue
			}
			rp, ok := receipts[e.RoomID]
			if !ok {
				if rp, err = s.db.ReadReceiptPos(ctx, e.RoomID, d.UserID); err != nil {
					return nil, err
				}
				receipts[e.RoomID] = rp
			}
			actions := res.Actions
			if actions == nil {
				actions = []json.RawMessage{}
			}
			out = append(out, map[string]any{"actions": actions, "event": s.rs.ClientEvent(ctx, e, d.UserID, d.DeviceID),
				"read": e.StreamPos <= rp, "room_id": e.RoomID, "ts": e.OriginTS, "profile_tag": ""})
			if len(out) == limit {
				break
			}
		}
	}
	resp := map[string]any{"notifications": out}
	if !exhausted || len(out) == limit {
		resp["next_token"] = strconv.FormatInt(last, 10)
	}
	return resp, nil
}
