package clientapi

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/part97"
	"repeater/roomserver"
	"repeater/storage"
)

// autoJoin joins a new account to the auto_join_rooms and, in the
// amateur-radio mode, the mesh rooms. Rooms this server holds are joined
// before registration answers; others (over federation, perhaps over a
// slow radio link) in the background. A mesh room not held yet is left to
// the station (federationapi.KeepReplicas), which joins local users once
// it holds the room. A room that cannot be joined is logged and skipped:
// registration does not fail for it.
func (a *API) autoJoin(ctx context.Context, localpart, displayName string, body []byte) {
	if gjson.GetBytes(body, "type").Str == loginTypeAppService {
		return // an application service's user (a bridge's ghost): not a person joining the server
	}
	rooms := a.cfg.AutoJoinRooms
	mesh := map[string]bool{}
	if a.policy.On() {
		rooms = append(append([]string(nil), rooms...), a.cfg.Part97.MeshRooms...)
		for _, r := range a.cfg.Part97.MeshRooms {
			mesh[r] = true
		}
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
			if err != nil && mesh[room] {
				id, err = a.meshRoomID(ctx, room)
			}
			if err != nil {
				if !mesh[room] {
					remote = append(remote, room) // another server's alias
				}
				continue
			}
			roomID = id
		}
		_, err := a.rs.Join(ctx, roomID, userID, profile, nil)
		if errors.Is(err, roomserver.ErrUnknownRoom) {
			if !mesh[room] {
				remote = append(remote, room)
			}
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

// meshRoomID is the room a mesh room alias of another server named when
// the station joined it (the station's account data, kept by
// federationapi.KeepReplicas).
func (a *API) meshRoomID(ctx context.Context, alias string) (string, error) {
	raw, err := a.db.GetAccountData(ctx, part97.StationLocalpart, "", part97.MeshRoomMap)
	if err != nil {
		return "", err
	}
	id := gjson.GetBytes(raw, gjson.Escape(alias)).Str
	if id == "" {
		return "", storage.ErrNotFound
	}
	return id, nil
}
