package roomserver

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/httputil"
	"repeater/storage"
)

// Room upgrades (spec: Client-Server API, "Room Upgrades").

const mRoomTombstone = "m.room.tombstone"

// upgrading holds the IDs of rooms being upgraded (room IDs are unique
// across the servers a test process may run).
var upgrading sync.Map

// upgradeCopied are the state types copied into a replacement room, in
// the order they are sent (state key "" unless noted). Membership is not
// copied (we cannot act for other servers' users), except bans; neither
// are events outside the m. namespace, whose meaning may hang on who sent
// them.
var upgradeCopied = []string{
	spec.MRoomJoinRules, spec.MRoomHistoryVisibility, "m.room.guest_access",
	spec.MRoomName, spec.MRoomTopic, spec.MRoomAvatar, spec.MRoomEncryption, "m.room.server_acl",
}

// upgradeSpaceTypes are copied with every state key: a space keeps its
// children and a room its parents.
var upgradeSpaceTypes = map[string]bool{"m.space.child": true, "m.space.parent": true}

// upgradeSource is what an upgrade takes from the old room.
type upgradeSource struct {
	version     gomatrixserverlib.RoomVersion
	create      gjson.Result
	creators    map[string]bool // privileged creators (room version 12)
	powerLevels []byte          // content; nil without an event
	state       []copiedState
	alias       []byte // canonical alias content; nil if none
	bans        []copiedState
	lastEvent   string
}

type copiedState struct {
	typ, stateKey string
	content       json.RawMessage
}

// UpgradeRoom replaces a room with a new room of another room version and
// returns the new room's ID. The user needs the power to send
// m.room.tombstone in the old room. The new room's m.room.create names its
// predecessor; the tombstone in the old room names the replacement; the
// old room's important state, bans and power levels are copied (the
// upgrading user keeps their level); local aliases and the canonical alias
// move to the new room, as does a place in the public directory; finally
// the old room's power levels are raised so that ordinary users can no
// longer talk or invite there. additionalCreators apply to room versions
// with privileged creators (12).
func (s *Server) UpgradeRoom(ctx context.Context, roomID, userID, newVersion string, profile CreatorProfile, additionalCreators []string) (string, error) {
	ver := gomatrixserverlib.RoomVersion(newVersion)
	impl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil || !IsSupportedVersion(ver) {
		return "", httputil.Err(400, "M_UNSUPPORTED_ROOM_VERSION", "This server does not support room version "+newVersion)
	}
	// One upgrade of a room at a time: a repeated click must not make two
	// replacements.
	if _, busy := upgrading.LoadOrStore(roomID, struct{}{}); busy {
		return "", httputil.Err(400, "M_UNKNOWN", "This room is already being upgraded")
	}
	defer upgrading.Delete(roomID)
	src, err := s.upgradeSource(ctx, roomID, userID)
	if err != nil {
		return "", err
	}
	empty := ""
	opts := SendOpts{Localpart: localpartOf(userID)}
	tombstone := func(newID string) (*storage.Event, error) {
		return s.Send(ctx, roomID, userID, mRoomTombstone, &empty,
			map[string]any{"body": "This room has been replaced", "replacement_room": newID}, opts)
	}
	predecessor := map[string]any{"room_id": roomID}
	newID := ""
	if !impl.DomainlessRoomIDs() {
		// The replacement's ID is ours to choose, so the tombstone can go
		// first and the new room's predecessor can name it: the last event
		// of the old room.
		newID = "!" + randomID(18) + ":" + string(s.cfg.ServerName)
		ts, err := tombstone(newID)
		if err != nil {
			return "", err
		}
		predecessor["event_id"] = ts.EventID
	} else if src.lastEvent != "" {
		// The room ID comes from the create event, which the tombstone
		// must name: the predecessor names the last event before it.
		predecessor["event_id"] = src.lastEvent
	}
	newID, err = s.createReplacement(ctx, newID, ver, impl, userID, profile, additionalCreators, src, predecessor)
	if err != nil {
		if !impl.DomainlessRoomIDs() {
			// Withdraw the tombstone: one without a replacement room is
			// no tombstone to clients.
			if _, werr := s.Send(ctx, roomID, userID, mRoomTombstone, &empty, map[string]any{}, opts); werr != nil {
				s.log.Warn("upgrade: could not withdraw the tombstone", "room", roomID, "err", werr)
			}
		}
		return "", err
	}
	if impl.DomainlessRoomIDs() {
		if _, err := tombstone(newID); err != nil {
			return "", err
		}
	}

	// Aliases, the canonical alias and the directory entry move.
	if _, err := s.db.MoveAliases(ctx, roomID, newID); err != nil {
		return "", err
	}
	if src.alias != nil {
		if _, err := s.Send(ctx, roomID, userID, spec.MRoomCanonicalAlias, &empty, map[string]any{}, opts); err != nil {
			s.log.Warn("upgrade: could not clear the old room's canonical alias", "room", roomID, "err", err)
		}
	}
	if info, err := s.db.GetRoom(ctx, roomID); err == nil && info.Published {
		if err := s.db.SetPublished(ctx, newID, true); err != nil {
			return "", err
		}
		if err := s.db.SetPublished(ctx, roomID, false); err != nil {
			return "", err
		}
	}
	s.restrictUpgradedRoom(ctx, roomID, userID)
	return newID, nil
}

// upgradeSource checks that userID may upgrade the room and collects what
// the replacement takes from it.
func (s *Server) upgradeSource(ctx context.Context, roomID, userID string) (*upgradeSource, error) {
	r, err := s.lockRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	defer r.mu.Unlock()
	if r.members[userID] != spec.Join {
		return nil, httputil.Forbidden("You are not in this room")
	}
	pl, err := r.powerLevels()
	if err != nil {
		return nil, err
	}
	if r.userLevel(pl, userID) < pl.EventLevel(mRoomTombstone, true) {
		return nil, httputil.Forbidden("You may not upgrade this room")
	}
	src := &upgradeSource{version: r.version, creators: map[string]bool{}}
	get := func(typ, sk string) gomatrixserverlib.PDU {
		if nid, ok := r.state[storage.StateKey{Type: typ, StateKey: sk}]; ok {
			return r.pdus[nid]
		}
		return nil
	}
	if c := get(spec.MRoomCreate, ""); c != nil {
		src.create = gjson.ParseBytes(c.Content())
		if impl, err := gomatrixserverlib.GetRoomVersion(r.version); err == nil && impl.PrivilegedCreators() {
			src.creators[string(c.SenderID())] = true
			for _, a := range src.create.Get("additional_creators").Array() {
				src.creators[a.Str] = true
			}
		}
	}
	if p := get(spec.MRoomPowerLevels, ""); p != nil {
		src.powerLevels = p.Content()
	}
	for _, typ := range upgradeCopied {
		if p := get(typ, ""); p != nil {
			if s.cfg.Policy.CheckEvent(typ, p.Content()) != nil {
				continue // an encrypted room made before the amateur-radio mode: its replacement is not
			}
			src.state = append(src.state, copiedState{typ: typ, content: p.Content()})
		} else if typ == "m.room.guest_access" {
			// No event means forbidden; the new room says so explicitly
			// (clients and sytest look for the event after an upgrade).
			src.state = append(src.state, copiedState{typ: typ, content: []byte(`{"guest_access":"forbidden"}`)})
		}
	}
	for k, nid := range r.state {
		p := r.pdus[nid]
		switch {
		case upgradeSpaceTypes[k.Type] && len(bytes.TrimSpace(p.Content())) > 2: // {} is a removed link
			src.state = append(src.state, copiedState{typ: k.Type, stateKey: k.StateKey, content: p.Content()})
		case k.Type == spec.MRoomMember && r.members[k.StateKey] == spec.Ban:
			content := map[string]any{"membership": spec.Ban}
			if reason := gjson.GetBytes(p.Content(), "reason"); reason.Type == gjson.String {
				content["reason"] = reason.Str
			}
			js, _ := json.Marshal(content)
			src.bans = append(src.bans, copiedState{typ: spec.MRoomMember, stateKey: k.StateKey, content: js})
		}
	}
	if p := get(spec.MRoomCanonicalAlias, ""); p != nil {
		c := gjson.ParseBytes(p.Content())
		if c.Get("alias").Str != "" || len(c.Get("alt_aliases").Array()) > 0 {
			src.alias = p.Content()
		}
	}
	if len(r.extremities) > 0 {
		src.lastEvent = r.extremities[0]
	}
	return src, nil
}

// createReplacement creates the new room (with ID id, or, for room
// versions that derive it from the create event, "") and returns its ID.
func (s *Server) createReplacement(ctx context.Context, id string, ver gomatrixserverlib.RoomVersion, impl gomatrixserverlib.IRoomVersion,
	upgrader string, profile CreatorProfile, additionalCreators []string, src *upgradeSource, predecessor map[string]any) (string, error) {
	createContent := map[string]any{"room_version": string(ver), "predecessor": predecessor}
	if !impl.PrivilegedCreators() && ver != gomatrixserverlib.RoomVersionV11 {
		createContent["creator"] = upgrader
	}
	// The room type and whether it federates carry over (spec: "Room
	// Upgrades", server behaviour 2).
	for _, k := range []string{"type", "m.federate"} {
		if v := src.create.Get(gjson.Escape(k)); v.Exists() {
			createContent[k] = json.RawMessage(v.Raw)
		}
	}
	if impl.PrivilegedCreators() && len(additionalCreators) > 0 {
		createContent["additional_creators"] = additionalCreators
	}
	initialPL, finalPL := upgradedPowerLevels(src, upgrader, additionalCreators, impl.PrivilegedCreators())

	r := &room{id: id, version: ver, state: storage.StateMap{}, pdus: map[int64]gomatrixserverlib.PDU{}, members: map[string]string{}}
	r.mu.Lock()
	locked := true
	var waits []func() error
	defer func() {
		if locked {
			r.mu.Unlock()
		}
		for _, w := range waits {
			_ = w()
		}
	}()
	send := func(evType string, stateKey string, content any) error {
		_, wait, err := s.buildAndStore(ctx, r, upgrader, evType, &stateKey, content, SendOpts{Localpart: localpartOf(upgrader)})
		if err == nil {
			waits = append(waits, wait)
		}
		return err
	}
	if err := send(spec.MRoomCreate, "", createContent); err != nil {
		return "", err
	}
	if err := send(spec.MRoomMember, upgrader, MemberContent(spec.Join, profile)); err != nil {
		return "", err
	}
	if err := send(spec.MRoomPowerLevels, "", initialPL); err != nil {
		return "", err
	}
	// State the new room version or its auth rules do not take (a join
	// rule it lacks, say) is left behind rather than failing the upgrade.
	copies := append(append([]copiedState{}, src.state...), src.bans...)
	if src.alias != nil {
		copies = append(copies, copiedState{typ: spec.MRoomCanonicalAlias, content: src.alias})
	}
	for _, c := range copies {
		if c.typ == spec.MRoomMember && c.stateKey == upgrader {
			continue
		}
		if err := send(c.typ, c.stateKey, c.content); err != nil {
			s.log.Warn("upgrade: state not copied", "type", c.typ, "state_key", c.stateKey, "err", err)
		}
	}
	if !sameContent(mustJSON(initialPL), finalPL) {
		if err := send(spec.MRoomPowerLevels, "", finalPL); err != nil {
			return "", err
		}
	}
	r.mu.Unlock()
	locked = false
	ws := waits
	waits = nil
	for _, w := range ws {
		if err := w(); err != nil {
			return "", err
		}
	}
	return r.id, nil
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// upgradedPowerLevels returns the power levels the replacement room starts
// with and those it ends with. The final levels are the old room's; where
// the new version makes creators all-powerful, the creators leave the users
// map (as its auth rules require), and where the old version did but the
// new one does not, the old creators keep 100. The upgrader starts at the
// highest level in use (at least 100), so that they can send every copied
// event, then drops back to their own level.
func upgradedPowerLevels(src *upgradeSource, upgrader string, additionalCreators []string, privileged bool) (initial, final map[string]any) {
	final = map[string]any{}
	if src.powerLevels != nil {
		d := json.NewDecoder(bytes.NewReader(src.powerLevels))
		d.UseNumber()
		if d.Decode(&final) != nil || final == nil {
			final = map[string]any{}
		}
	}
	normalizeLevels(final)
	users, _ := final["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
		if src.powerLevels == nil && !privileged {
			// No power levels: the creator had 100.
			users[upgrader] = int64(100)
		}
		final["users"] = users
	}
	if privileged {
		delete(users, upgrader)
		for _, c := range additionalCreators {
			delete(users, c)
		}
		return final, final
	}
	for c := range src.creators {
		if _, ok := users[c]; !ok {
			users[c] = int64(100)
		}
	}
	top := int64(100)
	walkLevels(final, func(n int64) { top = max(top, n) })
	initial = map[string]any{}
	for k, v := range final {
		initial[k] = v
	}
	iu := map[string]any{}
	for k, v := range users {
		iu[k] = v
	}
	iu[upgrader] = top
	initial["users"] = iu
	return initial, final
}

// levelKeys are the power-level fields that hold a level.
var levelKeys = []string{"ban", "invite", "kick", "redact", "users_default", "events_default", "state_default"}

// normalizeLevels turns levels given as numeric strings (allowed before
// room version 10) into integers.
func normalizeLevels(pl map[string]any) {
	fix := func(v any) any {
		if n, ok := levelInt(v); ok {
			return n
		}
		return v
	}
	for _, k := range levelKeys {
		if v, ok := pl[k]; ok {
			pl[k] = fix(v)
		}
	}
	for _, k := range []string{"users", "events", "notifications"} {
		if m, ok := pl[k].(map[string]any); ok {
			for kk, v := range m {
				m[kk] = fix(v)
			}
		}
	}
}

// walkLevels calls fn with every level in power-levels content.
func walkLevels(pl map[string]any, fn func(int64)) {
	for _, k := range levelKeys {
		if n, ok := levelInt(pl[k]); ok {
			fn(n)
		}
	}
	for _, k := range []string{"users", "events", "notifications"} {
		if m, ok := pl[k].(map[string]any); ok {
			for _, v := range m {
				if n, ok := levelInt(v); ok {
					fn(n)
				}
			}
		}
	}
}

func levelInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case json.Number:
		n, err := x.Int64()
		return n, err == nil
	case string:
		n, err := strconv.ParseInt(x, 10, 64)
		return n, err == nil
	}
	return 0, false
}

// restrictUpgradedRoom raises the old room's events_default and invite
// levels to the greater of 50 and users_default + 1, so that ordinary
// members can no longer talk or invite there (spec: "Room Upgrades",
// server behaviour 6). Failing that (the upgrader may lack the power to
// change power levels) is not an error.
func (s *Server) restrictUpgradedRoom(ctx context.Context, roomID, userID string) {
	cur, err := s.CurrentStateEvent(ctx, roomID, spec.MRoomPowerLevels, "")
	if err != nil || cur == nil {
		return
	}
	pl := map[string]any{}
	d := json.NewDecoder(bytes.NewReader([]byte(gjson.GetBytes(cur.JSON, "content").Raw)))
	d.UseNumber()
	if d.Decode(&pl) != nil || pl == nil {
		return
	}
	usersDefault, _ := levelInt(pl["users_default"])
	restricted := max(50, usersDefault+1)
	changed := false
	for _, k := range []string{"events_default", "invite"} {
		if n, _ := levelInt(pl[k]); n < restricted {
			pl[k] = restricted
			changed = true
		}
	}
	if !changed {
		return
	}
	empty := ""
	if _, err := s.Send(ctx, roomID, userID, spec.MRoomPowerLevels, &empty, pl, SendOpts{Localpart: localpartOf(userID)}); err != nil {
		s.log.Info("upgrade: old room's power levels left as they were", "room", roomID, "err", err)
	}
}

// FollowUpgrade is called after a local user joined a room. If the room
// replaced one this server knows (its create event names a predecessor
// whose tombstone points back at it), this server's aliases and public
// directory entry for the old room move to the new one, as the upgrading
// server does for its own ("Room Upgrades"). The tombstone check keeps a
// room that merely claims a predecessor from taking its aliases.
// Idempotent; errors are logged.
func (s *Server) FollowUpgrade(ctx context.Context, roomID string) {
	create, err := s.CurrentStateEvent(ctx, roomID, spec.MRoomCreate, "")
	if err != nil || create == nil {
		return
	}
	old := gjson.GetBytes(create.JSON, "content.predecessor.room_id").Str
	if old == "" || old == roomID {
		return
	}
	ts, err := s.CurrentStateEvent(ctx, old, "m.room.tombstone", "")
	if err != nil || ts == nil || gjson.GetBytes(ts.JSON, "content.replacement_room").Str != roomID {
		return
	}
	if _, err := s.db.MoveAliases(ctx, old, roomID); err != nil {
		s.log.Warn("following an upgrade: moving aliases", "room", roomID, "err", err)
	}
	if info, err := s.db.GetRoom(ctx, old); err == nil && info.Published {
		if err := s.db.SetPublished(ctx, roomID, true); err == nil {
			err = s.db.SetPublished(ctx, old, false)
		}
		if err != nil {
			s.log.Warn("following an upgrade: directory", "room", roomID, "err", err)
		}
	}
}
