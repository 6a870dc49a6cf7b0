package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

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

const replicaInterval = 15 * time.Second

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
		for _, room := range rooms {
			if ctx.Err() != nil {
				return
			}
			if err := a.keepReplica(ctx, room, station, displayName); err != nil {
				a.log.Info("mesh room not (yet) held", "room", room, "err", err)
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
	a.retryPending(ctx, roomID)
	if m, err := a.rs.Membership(ctx, roomID, station); err != nil || m != spec.Join {
		if errors.Is(err, roomserver.ErrUnknownRoom) || err == nil {
			content := roomserver.MemberContent(spec.Join, roomserver.CreatorProfile{DisplayName: displayName})
			if _, err := a.JoinRemote(ctx, roomID, station, via, content); err != nil {
				return err
			}
			a.log.Info("mesh room joined", "room", room, "room_id", roomID)
			a.joinLocalUsers(ctx, roomID)
		} else {
			return err
		}
	}
	a.shareTips(ctx, roomID)
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
	if raw, err := a.db.GetAccountData(ctx, part97.StationLocalpart, "", part97.MeshRoomMap); err == nil {
		_ = json.Unmarshal(raw, &known)
	}
	if id := known[room]; id != "" {
		// Resolved before: no query over the radio every round, and the
		// room stays known while the alias's server is away.
		return id, append([]string{srv}, peers...), nil
	}
	roomID, via, err := a.ResolveAlias(ctx, room)
	if err != nil {
		return "", nil, err
	}
	known[room] = roomID
	if raw, err := json.Marshal(known); err == nil {
		_, _ = a.db.PutAccountData(ctx, part97.StationLocalpart, "", part97.MeshRoomMap, raw)
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
	a.joinLocalUsers(ctx, roomID)
	return roomID, nil, nil
}

// joinLocalUsers joins to a mesh room the node now holds every local user
// who has never been in it (those who registered while it was not yet
// held; later ones are joined on sign-up). Users who left stay out.
func (a *API) joinLocalUsers(ctx context.Context, roomID string) {
	accts, _, err := a.db.ListAccounts(ctx, storage.AccountQuery{Limit: 100000})
	if err != nil {
		a.log.Warn("mesh room: cannot list local users", "err", err)
		return
	}
	for _, acct := range accts {
		if acct.Localpart == part97.StationLocalpart || acct.IsGuest {
			continue
		}
		userID := "@" + acct.Localpart + ":" + string(a.serverName)
		if m, err := a.rs.Membership(ctx, roomID, userID); err != nil || m != "" {
			continue
		}
		profile := roomserver.CreatorProfile{DisplayName: acct.DisplayName, AvatarURL: acct.AvatarURL}
		if _, err := a.rs.Join(ctx, roomID, userID, profile, nil); err != nil {
			a.log.Warn("mesh room: local user not joined", "user", userID, "room_id", roomID, "err", err)
		}
	}
}

// fillGap fetches what comes before pdu (fetchMissing) from origin; on a
// mesh, when origin cannot help (unreachable, or not yet known as a peer),
// from every other server in the room in turn: any node holding the room
// holds the same history.
func (a *API) fillGap(ctx context.Context, origin spec.ServerName, ver gomatrixserverlib.RoomVersion, pdu gomatrixserverlib.PDU) error {
	err := a.fetchMissing(ctx, origin, ver, pdu)
	if err == nil || !a.policy.On() {
		return err
	}
	servers, jerr := a.rs.JoinedServers(ctx, pdu.RoomID().String())
	if jerr != nil {
		return err
	}
	for _, srv := range servers {
		if srv == string(origin) || srv == string(a.serverName) {
			continue
		}
		if ferr := a.fetchMissing(a.from(ctx, spec.ServerName(srv)), spec.ServerName(srv), ver, pdu); ferr == nil {
			return nil
		}
	}
	return err
}

// pendingPDU is an event from a peer that could not be taken in for want
// of what came before it; the mesh room keeper tries it again.
type pendingPDU struct {
	origin spec.ServerName
	addr   string // the relay's address, for the trust check
	raw    []byte
	depth  int64
}

// maxPending bounds the events held for another try, per room.
const maxPending = 2000

// holdPending keeps an event whose gap could not be filled, on a mesh,
// for the next round of KeepReplicas (a peer found meanwhile, or a link
// back, fills it then).
func (a *API) holdPending(ctx context.Context, roomID, eventID string, origin spec.ServerName, raw []byte) {
	if !a.policy.On() {
		return
	}
	addr := ""
	if rel := part97.RelayFrom(ctx); rel != nil {
		addr = rel.Addr()
	}
	a.pendingMu.Lock()
	defer a.pendingMu.Unlock()
	if a.pending == nil {
		a.pending = map[string]map[string]pendingPDU{}
	}
	m := a.pending[roomID]
	if m == nil {
		m = map[string]pendingPDU{}
		a.pending[roomID] = m
	}
	if len(m) < maxPending {
		m[eventID] = pendingPDU{origin: origin, addr: addr, raw: append([]byte(nil), raw...), depth: gjson.GetBytes(raw, "depth").Int()}
	}
}

// retryPending tries a room's held events again, oldest first.
func (a *API) retryPending(ctx context.Context, roomID string) {
	a.pendingMu.Lock()
	m := a.pending[roomID]
	delete(a.pending, roomID)
	a.pendingMu.Unlock()
	type item struct {
		id string
		p  pendingPDU
	}
	items := make([]item, 0, len(m))
	for id, p := range m {
		items = append(items, item{id, p})
	}
	sort.Slice(items, func(i, j int) bool { return items[i].p.depth < items[j].p.depth })
	for _, it := range items {
		if e, err := a.rs.EventsByIDs(ctx, []string{it.id}); err == nil && len(e) == 1 && !e[0].Outlier {
			continue // arrived meanwhile
		}
		// receivePDU holds it again if its gap still cannot be filled.
		if _, err := a.receivePDU(part97.WithRelay(ctx, string(it.p.origin), it.p.addr), it.p.origin, it.p.raw); err != nil {
			a.log.Debug("held event still not taken", "event", it.id, "err", err)
		}
	}
}

// shareTips sends the room's newest events (its forward extremities) to
// every other server in it that has not been sent these yet: a node that
// missed events (it was not yet known to be in the room when they were
// sent, or a link was down and the sender has since moved on) sees events
// it lacks the ancestors of and fetches them (get_missing_events), so the
// mesh converges on one complete history even when nobody speaks again.
// Tips are queued like any outbound event (durable, batched, retried); a
// server that already holds them answers at once.
func (a *API) shareTips(ctx context.Context, roomID string) {
	tips, err := a.rs.Extremities(ctx, roomID)
	if err != nil || len(tips) == 0 {
		return
	}
	sort.Strings(tips)
	key := strings.Join(tips, ",")
	servers, err := a.rs.JoinedServers(ctx, roomID)
	if err != nil {
		return
	}
	var dests []string
	a.pendingMu.Lock()
	if a.told == nil {
		a.told = map[string]string{}
	}
	for _, srv := range servers {
		if srv != string(a.serverName) && a.told[srv+"|"+roomID] != key {
			a.told[srv+"|"+roomID] = key
			dests = append(dests, srv)
		}
	}
	a.pendingMu.Unlock()
	if len(dests) == 0 {
		return
	}
	evs, err := a.rs.EventsByIDs(ctx, tips)
	if err != nil {
		return
	}
	for _, e := range evs {
		if err := a.db.QueuePDU(ctx, dests, e.NID); err != nil {
			a.log.Warn("mesh room: tips not queued", "room_id", roomID, "err", err)
			return
		}
	}
	a.Sender.Queued(dests)
}
