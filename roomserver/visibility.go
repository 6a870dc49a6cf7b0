package roomserver

import (
	"context"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/storage"
)

// visRank orders history visibility settings from most to least restrictive.
var visRank = map[string]int{"joined": 1, "invited": 2, "shared": 3, "world_readable": 4}

// visAt is what history visibility needs from one snapshot.
type visAt struct {
	visibility string
	membership string
}

// VisibleEvents filters evs down to those userID may see, applying the
// spec's history visibility rules (Client-Server API, "History visibility")
// with the room state before each event.
func (s *Server) VisibleEvents(ctx context.Context, userID string, evs []*storage.Event) ([]*storage.Event, error) {
	if len(evs) == 0 {
		return evs, nil
	}
	cache := map[int64]visAt{}
	current := map[string]string{}
	out := make([]*storage.Event, 0, len(evs))
	for _, e := range evs {
		v, ok := cache[e.BeforeSnapshot]
		if !ok {
			var err error
			v, err = s.visibilityAt(ctx, e.BeforeSnapshot, userID)
			if err != nil {
				return nil, err
			}
			cache[e.BeforeSnapshot] = v
		}
		membership := v.membership
		// A user's own membership event counts with its new membership, so
		// people see their own join and invite.
		if e.Type == spec.MRoomMember && e.StateKey != nil && *e.StateKey == userID {
			if m := gjson.GetBytes(e.JSON, "content.membership").Str; m == spec.Join || m == spec.Invite {
				membership = m
			}
		}
		visibility := v.visibility
		if e.Type == spec.MRoomHistoryVisibility && e.StateKey != nil && *e.StateKey == "" {
			// A visibility change is shown under the more permissive of the
			// old and new settings, so members see the boundary.
			if nv := gjson.GetBytes(e.JSON, "content.history_visibility").Str; visRank[nv] > visRank[visibility] {
				visibility = nv
			}
		}
		visible := false
		switch visibility {
		case "world_readable":
			visible = true
		case "joined":
			visible = membership == spec.Join
		case "invited":
			visible = membership == spec.Join || membership == spec.Invite
		default: // "shared", and anything unknown is treated as shared
			if membership == spec.Join {
				visible = true
			} else {
				cm, ok := current[e.RoomID]
				if !ok {
					m, err := s.Membership(ctx, e.RoomID, userID)
					if err != nil {
						return nil, err
					}
					cm, current[e.RoomID] = m, m
				}
				// Shared history: members see what came before they joined,
				// but not what was sent after they left.
				visible = cm == spec.Join && membership != spec.Leave && membership != spec.Ban
			}
		}
		if visible {
			out = append(out, e)
		}
	}
	return out, nil
}

func (s *Server) visibilityAt(ctx context.Context, snapshot int64, userID string) (visAt, error) {
	v := visAt{visibility: "shared"}
	m, err := s.Snapshot(ctx, snapshot)
	if err != nil {
		return v, err
	}
	var nids []int64
	hv, hasHV := m[storage.StateKey{Type: spec.MRoomHistoryVisibility}]
	if hasHV {
		nids = append(nids, hv)
	}
	mem, hasMem := m[storage.StateKey{Type: spec.MRoomMember, StateKey: userID}]
	if hasMem {
		nids = append(nids, mem)
	}
	evs, err := s.Events(ctx, nids)
	if err != nil {
		return v, err
	}
	for _, e := range evs {
		if hasHV && e.NID == hv {
			if h := gjson.GetBytes(e.JSON, "content.history_visibility").Str; h != "" {
				v.visibility = h
			}
		}
		if hasMem && e.NID == mem {
			v.membership = gjson.GetBytes(e.JSON, "content.membership").Str
		}
	}
	return v, nil
}

// CanSeeEvent reports whether userID may see e.
func (s *Server) CanSeeEvent(ctx context.Context, userID string, e *storage.Event) (bool, error) {
	out, err := s.VisibleEvents(ctx, userID, []*storage.Event{e})
	return len(out) == 1, err
}
