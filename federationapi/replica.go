package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"repeater/internal/httputil"
	"repeater/internal/part97"
	"repeater/roomserver"
	"repeater/storage"
)

// Mesh rooms (the amateur-radio mode's part97.mesh_rooms): every node keeps
// a complete copy of each, as MeshChat users expect of its channels. The
// node's station account joins each room through whichever peer it can
// reach that is in it, history is fetched in full (backfill of every gap),
// and this is checked again every replicaInterval and whenever a peer is
// found, so a node that was away, or a room that was not reachable at
// start-up, catches up by itself.

const replicaInterval = 30 * time.Second

// meshRoomMap is the station's account data remembering which room each
// mesh room alias named, so that a room stays known while the alias's
// server is unreachable.
const meshRoomMap = "io.repeater.part97.mesh_rooms"

// KeepReplicas joins and fills the mesh rooms until ctx ends. displayName
// is the station account's.
func (a *API) KeepReplicas(ctx context.Context, rooms []string, displayName string) {
	if len(rooms) == 0 {
		return
	}
	station := "@" + part97.StationLocalpart + ":" + string(a.serverName)
	if err := a.db.CreateAccount(ctx, storage.Account{Localpart: part97.StationLocalpart, DisplayName: displayName}); err != nil && !errors.Is(err, storage.ErrConflict) {
		a.log.Error("mesh rooms: cannot make the station account", "err", err)
		return
	}
	t := time.NewTicker(replicaInterval)
	defer t.Stop()
	for {
		for _, spec := range rooms {
			if ctx.Err() != nil {
				return
			}
			if err := a.keepReplica(ctx, spec, station, displayName); err != nil {
				a.log.Info("mesh room not (yet) held", "room", spec, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.replicaPoke:
		}
	}
}

// pokeReplicas asks KeepReplicas for a round now (a peer was found).
func (a *API) pokeReplicas() {
	select {
	case a.replicaPoke <- struct{}{}:
	default:
	}
}

// keepReplica makes sure the station is in one mesh room and holds its
// whole history.
func (a *API) keepReplica(ctx context.Context, room, station, displayName string) error {
	roomID, via, err := a.meshRoom(ctx, room, station, displayName)
	if err != nil || roomID == "" {
		return err
	}
	if m, err := a.rs.Membership(ctx, roomID, station); err != nil || m != spec.Join {
		if errors.Is(err, roomserver.ErrUnknownRoom) || err == nil {
			content := roomserver.MemberContent(spec.Join, roomserver.CreatorProfile{DisplayName: displayName})
			if _, err := a.JoinRemote(ctx, roomID, station, via, content); err != nil {
				return err
			}
			a.log.Info("mesh room joined", "room", room, "room_id", roomID)
		} else {
			return err
		}
	}
	// Every gap filled: the room's history is complete here.
	for i := 0; i < 1000 && ctx.Err() == nil; i++ {
		gaps, err := a.rs.Gaps(ctx, roomID)
		if err != nil || len(gaps) == 0 {
			return err
		}
		n, err := a.Backfill(ctx, roomID, gaps[0].Depth, 500)
		if err != nil || n == 0 {
			return err
		}
	}
	return nil
}

// meshRoom resolves a mesh room to its ID and the servers to join it
// through: the alias's or room ID's server first, then every peer. A room
// alias of our own that does not exist yet is made: this node hosts that
// room.
func (a *API) meshRoom(ctx context.Context, room, station, displayName string) (string, []string, error) {
	peers := a.tr.peerNames()
	if strings.HasPrefix(room, "!") {
		via := peers
		if _, srv, ok := strings.Cut(room, ":"); ok {
			via = append([]string{srv}, peers...)
		}
		return room, via, nil
	}
	_, srv, ok := strings.Cut(room, ":")
	if !ok {
		return "", nil, httputil.BadJSON("Invalid room alias " + room)
	}
	if srv == string(a.serverName) {
		roomID, _, err := a.db.ResolveAlias(ctx, room)
		if err == nil {
			return roomID, nil, nil
		}
		if !errors.Is(err, storage.ErrNotFound) {
			return "", nil, err
		}
		return a.hostMeshRoom(ctx, room, station, displayName)
	}
	known := map[string]string{}
	if raw, err := a.db.GetAccountData(ctx, part97.StationLocalpart, "", meshRoomMap); err == nil {
		_ = json.Unmarshal(raw, &known)
	}
	roomID, via, err := a.ResolveAlias(ctx, room)
	if err != nil {
		if known[room] == "" {
			return "", nil, err
		}
		roomID = known[room] // the alias's server is away: the room is not
	} else if known[room] != roomID {
		known[room] = roomID
		if raw, err := json.Marshal(known); err == nil {
			_, _ = a.db.PutAccountData(ctx, part97.StationLocalpart, "", meshRoomMap, raw)
		}
	}
	return roomID, append(append(via, srv), peers...), nil
}

// hostMeshRoom makes a mesh room whose alias is ours: public, published in
// the room directory, with the station as its creator.
func (a *API) hostMeshRoom(ctx context.Context, alias, station, displayName string) (string, []string, error) {
	local, _, _ := strings.Cut(strings.TrimPrefix(alias, "#"), ":")
	name := local
	roomID, err := a.rs.CreateRoom(ctx, station, roomserver.CreatorProfile{DisplayName: displayName},
		&roomserver.CreateRoomRequest{Preset: "public_chat", Visibility: "public", Name: &name, RoomAliasName: local}, alias)
	if err != nil {
		return "", nil, err
	}
	if err := a.db.CreateAlias(ctx, alias, roomID, station); err != nil {
		return "", nil, err
	}
	a.log.Info("mesh room created", "alias", alias, "room_id", roomID)
	return roomID, nil, nil
}
