package roomserver

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/storage"
)

func randomID(n int) string {
	return auth.RandomString(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
}

func localpartOf(userID string) string {
	lp, _, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	return lp
}

// Join joins a local user to a room this server knows.
func (s *Server) Join(ctx context.Context, roomID, userID string, profile CreatorProfile, extra map[string]any) (*storage.Event, error) {
	if err := s.checkBlocked(ctx, roomID, userID); err != nil { // admin.go
		return nil, err
	}
	r, err := s.lockRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	content := MemberContent(spec.Join, profile)
	for k, v := range extra {
		if _, ok := content[k]; !ok && k != "membership" {
			content[k] = v
		}
	}
	// Joining again with the same content changes nothing: no new event.
	if nid, ok := r.state[storage.StateKey{Type: spec.MRoomMember, StateKey: userID}]; ok && r.members[userID] == spec.Join {
		if sameContent(r.pdus[nid].Content(), content) {
			r.mu.Unlock()
			return s.Event(ctx, nid)
		}
	}
	return s.storeUnlocked(s.buildAndStore(ctx, r, userID, spec.MRoomMember, &userID, content, SendOpts{Localpart: localpartOf(userID)}))(r)
}

// ChangeMembership sends a membership event by sender about target
// (invite, leave/kick, ban, unban).
func (s *Server) ChangeMembership(ctx context.Context, roomID, sender, target, membership, reason string, extra map[string]any) (*storage.Event, error) {
	if _, err := spec.NewUserID(target, true); err != nil {
		return nil, httputil.InvalidParam("Invalid user ID")
	}
	r, err := s.lockRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	ev, err := s.changeMembershipLocked(ctx, r, sender, target, membership, reason, extra)
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return ev()
}

func (s *Server) changeMembershipLocked(ctx context.Context, r *room, sender, target, membership, reason string, extra map[string]any) (func() (*storage.Event, error), error) {
	current := r.members[target]
	switch membership {
	case "unban":
		if current != spec.Ban {
			return nil, httputil.Forbidden("The user is not banned")
		}
		membership = spec.Leave
	case spec.Leave:
		if sender == target && current == "" {
			return nil, httputil.Forbidden("You are not in this room")
		}
		if sender != target && current == spec.Ban {
			return nil, httputil.Forbidden("The user is banned; unban them instead")
		}
	case spec.Invite:
		if current == spec.Join {
			return nil, httputil.Forbidden("The user is already in the room")
		}
		if current == spec.Ban {
			return nil, httputil.Forbidden("The user is banned from the room")
		}
	}
	content := map[string]any{"membership": membership}
	for k, v := range extra {
		if k != "membership" {
			content[k] = v
		}
	}
	if reason != "" {
		content["reason"] = reason
	}
	// Keep the target's profile on their member event where we know it.
	if nid, ok := r.state[storage.StateKey{Type: spec.MRoomMember, StateKey: target}]; ok && membership != spec.Leave && membership != spec.Ban {
		prev := r.pdus[nid].Content()
		for _, f := range []string{"displayname", "avatar_url"} {
			if v := gjson.GetBytes(prev, f); v.Exists() {
				if _, set := content[f]; !set {
					content[f] = v.Value()
				}
			}
		}
	}
	e, wait, err := s.buildAndStore(ctx, r, sender, spec.MRoomMember, &target, content, SendOpts{Localpart: localpartOf(sender)})
	if err != nil {
		return nil, err
	}
	return func() (*storage.Event, error) {
		if err := wait(); err != nil {
			return nil, err
		}
		return e, nil
	}, nil
}

// InviteStrippedState returns the stripped state clients get with an invite
// (spec: "Stripped state").
func (s *Server) StrippedState(ctx context.Context, roomID string) ([]map[string]any, error) {
	r, err := s.lockRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	defer r.mu.Unlock()
	return r.strippedState(), nil
}

// strippedState is the room's stripped state (spec: "Stripped state"); r
// must be locked.
func (r *room) strippedState() []map[string]any {
	var out []map[string]any
	for _, t := range []string{spec.MRoomCreate, spec.MRoomJoinRules, spec.MRoomName, spec.MRoomAvatar, spec.MRoomTopic, spec.MRoomCanonicalAlias, spec.MRoomEncryption} {
		if nid, ok := r.state[storage.StateKey{Type: t}]; ok {
			p := r.pdus[nid]
			out = append(out, map[string]any{
				"type": p.Type(), "state_key": *p.StateKey(), "sender": string(p.SenderID()),
				"content": spec.RawJSON(p.Content()),
			})
		}
	}
	return out
}

// sameContent compares event content with new content, canonically.
func sameContent(have []byte, want any) bool {
	b, err := json.Marshal(want)
	if err != nil {
		return false
	}
	x, err1 := gomatrixserverlib.CanonicalJSON(have)
	y, err2 := gomatrixserverlib.CanonicalJSON(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}
