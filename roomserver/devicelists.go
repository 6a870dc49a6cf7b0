package roomserver

import (
	"context"
	"sort"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// DeviceListDelta works out, from the membership changes in rooms between
// two stream positions, whose device lists userID must fetch afresh and
// whose it may stop tracking (Client-Server API, "Tracking the device list
// for a user": users who start sharing a room appear in changed, users who
// no longer share any appear in left). Users newly invited to (or knocking
// on) one of the rooms count as changed too, so that a client can encrypt
// for them before they join. sharing is everyone sharing a room with
// userID now.
func (s *Server) DeviceListDelta(ctx context.Context, userID string, rooms []string, from, to int64, sharing []string) (changed, left []string, err error) {
	changes, err := s.db.MembershipChanges(ctx, rooms, from, to)
	if err != nil || len(changes) == 0 {
		return nil, nil, err
	}
	joined, gone, pending := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, c := range changes {
		in := c.Membership == spec.Join
		asking := c.Membership == spec.Invite || c.Membership == spec.Knock
		out := c.Membership == spec.Leave || c.Membership == spec.Ban
		if !in && !asking && !out {
			continue
		}
		targets := []string{c.UserID}
		if c.UserID == userID {
			if asking {
				continue // our own invite: we share nothing yet
			}
			// We joined or left: everyone in the room counts.
			targets, _ = s.MembersWith(ctx, c.RoomID, spec.Join)
		}
		for _, u := range targets {
			if u == userID {
				continue
			}
			switch {
			case in:
				joined[u], gone[u], pending[u] = true, false, false
			case asking:
				pending[u], gone[u] = true, false
			default:
				gone[u], pending[u] = true, false
			}
		}
	}
	share := make(map[string]bool, len(sharing))
	for _, u := range sharing {
		share[u] = true
	}
	for u := range joined {
		if share[u] && !pending[u] {
			changed = append(changed, u)
		}
	}
	for u, p := range pending {
		if p {
			changed = append(changed, u)
		}
	}
	for u, g := range gone {
		if g && !share[u] {
			left = append(left, u)
		}
	}
	sort.Strings(changed)
	sort.Strings(left)
	return changed, left, nil
}
