package clientapi

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"repeater/roomserver"
)

// autoJoin joins a new account to the auto_join_rooms and, in the
// amateur-radio mode, the mesh rooms. Rooms this server holds are joined
// before registration answers; others (over federation, perhaps over a
// slow radio link) in the background. A room that cannot be joined is
// logged and skipped: registration does not fail for it.
func (a *API) autoJoin(ctx context.Context, localpart, displayName string) {
	rooms := a.cfg.AutoJoinRooms
	if a.policy.On() {
		rooms = append(append([]string(nil), rooms...), a.cfg.Part97.MeshRooms...)
	}
	if len(rooms) == 0 {
		return
	}
	userID := "@" + localpart + ":" + a.serverName
	profile := roomserver.CreatorProfile{DisplayName: displayName}
	var remote []string
	for _, room := range rooms {
		roomID := room
		if strings.HasPrefix(room, "#") {
			id, _, err := a.db.ResolveAlias(ctx, room)
			if err != nil {
				remote = append(remote, room) // another server's alias
				continue
			}
			roomID = id
		}
		_, err := a.rs.Join(ctx, roomID, userID, profile, nil)
		if errors.Is(err, roomserver.ErrUnknownRoom) {
			remote = append(remote, room)
		} else if err != nil {
			a.log.Warn("auto-join failed", "user", userID, "room", room, "err", err)
		}
	}
	if len(remote) == 0 || a.remote == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		for _, room := range remote {
			roomID, via := room, []string(nil)
			if strings.HasPrefix(room, "#") {
				id, servers, err := a.remote.ResolveAlias(ctx, room)
				if err != nil {
					a.log.Warn("auto-join: alias not resolved", "user", userID, "room", room, "err", err)
					continue
				}
				roomID, via = id, servers
			}
			if _, srv, ok := strings.Cut(room, ":"); ok {
				via = append(via, srv)
			}
			if _, err := a.remote.JoinRemote(ctx, roomID, userID, via, roomserver.MemberContent(spec.Join, profile)); err != nil {
				a.log.Warn("auto-join failed", "user", userID, "room", room, "err", err)
			}
		}
	}()
}
