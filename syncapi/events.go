package syncapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"repeater/internal/auth"
	"repeater/internal/httputil"
)

// events handles the deprecated GET /events (spec r0.6: "Getting events for
// a room", the global event stream): room events in joined rooms, typing
// and presence after `from`, long-polling for `timeout`. Still used by
// older clients and by sytest's fixtures.
func (s *Sync) events(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	ctx := r.Context()
	q := r.URL.Query()
	var from Token
	if f := q.Get("from"); f != "" {
		t, err := parseToken(f)
		if err != nil {
			return nil, httputil.InvalidParam("Invalid from token")
		}
		from = t
	} else {
		pos, _ := s.db.StreamPos(ctx)
		from = Token{Pos: pos, EPos: s.eph.pos.Load()}
	}
	timeout := 30 * time.Second
	if ts := q.Get("timeout"); ts != "" {
		ms, err := strconv.ParseInt(ts, 10, 64)
		if err != nil || ms < 0 {
			return nil, httputil.InvalidParam("Invalid timeout")
		}
		timeout = min(time.Duration(ms)*time.Millisecond, 5*time.Minute)
	}
	deadline := time.Now().Add(timeout)
	for {
		ch := s.notifier.Listen(d.UserID)
		pos, _ := s.db.StreamPos(ctx)
		to := Token{Pos: pos, EPos: s.eph.pos.Load()}
		chunk := []any{}
		rooms, err := s.db.RoomsByMembership(ctx, d.UserID, spec.Join)
		if err != nil {
			return nil, err
		}
		mevs, err := s.db.MembershipEvents(ctx, d.UserID, from.Pos, to.Pos)
		if err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		for _, room := range rooms {
			seen[room] = true
		}
		for _, me := range mevs {
			if !seen[me.RoomID] {
				seen[me.RoomID] = true
				rooms = append(rooms, me.RoomID)
			}
		}
		users := map[string]bool{d.UserID: true}
		for _, room := range rooms {
			evs, _, err := s.db.RoomEventsInRange(ctx, room, from.Pos, to.Pos, 100)
			if err != nil {
				return nil, err
			}
			evs, err = s.rs.VisibleEvents(ctx, d.UserID, evs)
			if err != nil {
				return nil, err
			}
			for _, e := range evs {
				chunk = append(chunk, s.rs.ClientEvent(ctx, e, d.UserID, d.DeviceID))
			}
			if users2, changed := s.eph.typingSince(room, from.EPos); changed {
				if users2 == nil {
					users2 = []string{}
				}
				chunk = append(chunk, map[string]any{"type": "m.typing", "room_id": room, "content": map[string]any{"user_ids": users2}})
			}
			members, _ := s.rs.MembersWith(ctx, room, spec.Join)
			for _, m := range members {
				users[m] = true
			}
		}
		if s.presenceOn {
			for u, c := range s.eph.presenceSince(users, from.EPos) {
				chunk = append(chunk, map[string]any{"type": "m.presence", "sender": u, "content": c})
			}
		}
		wait := time.Until(deadline)
		if len(chunk) > 0 || wait <= 0 {
			return map[string]any{"chunk": chunk, "start": from.String(), "end": to.String()}, nil
		}
		timer := time.NewTimer(wait)
		select {
		case <-ch:
		case <-timer.C:
		case <-s.stopping:
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		}
		timer.Stop()
	}
}
