package roomserver

import (
	"context"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"

	"repeater/internal/pushrules"
)

// PushEnv returns what evaluating push rules for userID needs to know
// about a room (Client-Server API, "Push Rules": room_member_count,
// sender_notification_permission, contains_display_name), read from the
// room's current state when a condition asks. Member count, display name
// and power levels are read once per Env: callers make one per room and
// batch of events. An Env is not safe for concurrent use.
func (s *Server) PushEnv(ctx context.Context, roomID, userID string) pushrules.Env {
	count, name := -1, (*string)(nil)
	var pl *gomatrixserverlib.PowerLevelContent // parsed once per Env
	mayNotify := map[string]bool{}
	return pushrules.Env{
		UserID: userID,
		MemberCount: func() int {
			if count < 0 {
				count = 0
				if r, err := s.lockRoom(ctx, roomID); err == nil {
					for _, m := range r.members {
						if m == "join" {
							count++
						}
					}
					r.mu.Unlock()
				}
			}
			return count
		},
		DisplayName: func() string {
			if name == nil {
				n := ""
				if me, err := s.CurrentStateEvent(ctx, roomID, "m.room.member", userID); err == nil && me != nil {
					n = gjson.GetBytes(me.JSON, "content.displayname").Str
				}
				name = &n
			}
			return *name
		},
		SenderMayNotify: func(sender, key string) bool {
			k := sender + "\x00" + key
			if ok, seen := mayNotify[k]; seen {
				return ok
			}
			r, err := s.lockRoom(ctx, roomID)
			if err != nil {
				return false
			}
			defer r.mu.Unlock()
			if pl == nil {
				if pl, err = r.powerLevels(); err != nil {
					return false
				}
			}
			ok := r.userLevel(pl, sender) >= pl.NotificationLevel(key)
			mayNotify[k] = ok
			return ok
		},
	}
}
