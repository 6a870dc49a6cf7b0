package roomserver

// Administration: deleting a room's data, purging old history, blocked
// rooms and server notice rooms.

import (
	"context"
	"errors"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"repeater/internal/httputil"
	"repeater/storage"
)

// ErrRoomBlocked refuses joins to a room an administrator blocked.
var ErrRoomBlocked = httputil.Forbidden("This room has been blocked on this server")

// checkBlocked refuses a join to a blocked room by a user not already in it.
func (s *Server) checkBlocked(ctx context.Context, roomID, userID string) error {
	_, blocked, err := s.db.RoomBlocked(ctx, roomID)
	if err != nil || !blocked {
		return err
	}
	if m, err := s.db.CurrentMembership(ctx, roomID, userID); err == nil && m == spec.Join {
		return nil // a profile update re-sends the join
	}
	return ErrRoomBlocked
}

// PurgeRoom deletes everything this server holds about a room (see
// storage.PurgeRoom) and forgets its in-memory head. Callers make the
// local members leave first.
func (s *Server) PurgeRoom(ctx context.Context, roomID string) error {
	r, err := s.lockRoom(ctx, roomID)
	if err != nil && !errors.Is(err, ErrUnknownRoom) {
		return err
	}
	if r != nil {
		defer r.mu.Unlock()
	}
	// Holding the room's lock, no event of it can be built; every event
	// already built is ahead of this write on the write path.
	if err := s.db.PurgeRoom(ctx, roomID); err != nil {
		return err
	}
	if r != nil {
		r.gen.Add(1)
		r.loaded = false
		s.mu.Lock()
		if s.rooms[roomID] == r {
			delete(s.rooms, roomID)
		}
		s.mu.Unlock()
	}
	s.events.RemoveIf(func(e *storage.Event) bool { return e.RoomID == roomID })
	return nil
}

// PurgeHistory deletes a room's message events below depth beforeDepth
// (those of local senders too when deleteLocal), keeping every state event
// (see storage.PurgeHistory). It returns how many events were deleted.
func (s *Server) PurgeHistory(ctx context.Context, roomID string, beforeDepth int64, deleteLocal bool) (int, error) {
	if _, err := s.RoomVersion(ctx, roomID); err != nil {
		return 0, err
	}
	keep := string(s.cfg.ServerName)
	if deleteLocal {
		keep = ""
	}
	n, err := s.db.PurgeHistory(ctx, roomID, beforeDepth, keep)
	// Cached copies of deleted events, or of state events now outliers.
	s.events.RemoveIf(func(e *storage.Event) bool { return e.RoomID == roomID && e.Depth < beforeDepth })
	return n, err
}

// ErrCannotLeaveNotices refuses to reject the invite to a server notices
// room (Client-Server API, "Server Notices").
var ErrCannotLeaveNotices = httputil.Err(403, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM", "You cannot reject this invite")

// CheckSelfLeave refuses a local user's leave that would reject the invite
// to their server notices room.
func (s *Server) CheckSelfLeave(ctx context.Context, roomID, userID string) error {
	if ServerOf(userID) != string(s.cfg.ServerName) {
		return nil
	}
	ok, err := s.db.IsServerNoticeRoom(ctx, localpartOf(userID), roomID)
	if err != nil || !ok {
		return err
	}
	if m, err := s.db.CurrentMembership(ctx, roomID, userID); err == nil && m == spec.Invite {
		return ErrCannotLeaveNotices
	}
	return nil
}
