package roomserver

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"repeater/internal/httputil"
	"repeater/storage"
)

// StateEvent is an event of initial_state.
type StateEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// CreateRoomRequest is the body of POST /createRoom (spec: Client-Server API,
// "Creation" under Rooms).
type CreateRoomRequest struct {
	Visibility                string          `json:"visibility"`
	RoomAliasName             string          `json:"room_alias_name"`
	Name                      *string         `json:"name"`
	Topic                     *string         `json:"topic"`
	Invite                    []string        `json:"invite"`
	RoomVersion               string          `json:"room_version"`
	CreationContent           json.RawMessage `json:"creation_content"`
	InitialState              []StateEvent    `json:"initial_state"`
	Preset                    string          `json:"preset"`
	IsDirect                  bool            `json:"is_direct"`
	PowerLevelContentOverride json.RawMessage `json:"power_level_content_override"`
}

// CreatorProfile is the creator's displayname and avatar for their join.
type CreatorProfile struct{ DisplayName, AvatarURL string }

// MemberContent builds m.room.member content with a profile.
func MemberContent(membership string, p CreatorProfile) map[string]any {
	c := map[string]any{"membership": membership}
	if p.DisplayName != "" {
		c["displayname"] = p.DisplayName
	}
	if p.AvatarURL != "" {
		c["avatar_url"] = p.AvatarURL
	}
	return c
}

// CreateRoom creates a room following the order of events the spec gives
// for /createRoom. alias, when non-empty, is the full alias to publish as
// m.room.canonical_alias (the caller reserves it). It returns the room ID.
func (s *Server) CreateRoom(ctx context.Context, creator string, profile CreatorProfile, req *CreateRoomRequest, alias string) (string, error) {
	ver := s.cfg.DefaultVersion
	if req.RoomVersion != "" {
		ver = gomatrixserverlib.RoomVersion(req.RoomVersion)
	}
	impl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil || !IsSupportedVersion(ver) {
		return "", httputil.Err(400, "M_UNSUPPORTED_ROOM_VERSION", "Unsupported room version "+string(ver))
	}
	preset := req.Preset
	if preset == "" {
		preset = "private_chat"
		if req.Visibility == "public" {
			preset = "public_chat"
		}
	}
	var joinRule, histVis, guest string
	switch preset {
	case "private_chat", "trusted_private_chat":
		joinRule, histVis, guest = spec.Invite, "shared", "can_join"
	case "public_chat":
		joinRule, histVis, guest = spec.Public, "shared", "forbidden"
	default:
		return "", httputil.BadJSON("Unknown preset " + preset)
	}

	// Create event content: creation_content, then the fields we own.
	createContent := map[string]any{}
	if len(req.CreationContent) > 0 && string(req.CreationContent) != "null" {
		if err := json.Unmarshal(req.CreationContent, &createContent); err != nil {
			return "", httputil.BadJSON("creation_content must be an object")
		}
	}
	createContent["room_version"] = string(ver)
	if !impl.PrivilegedCreators() && ver != gomatrixserverlib.RoomVersionV11 {
		createContent["creator"] = creator
	}

	// Power levels: defaults, then the override.
	users := map[string]any{}
	if !impl.PrivilegedCreators() {
		users[creator] = 100
	}
	if preset == "trusted_private_chat" {
		for _, u := range req.Invite {
			users[u] = 100
		}
	}
	pl := map[string]any{
		"users": users, "users_default": 0, "events_default": 0, "state_default": 50,
		"ban": 50, "kick": 50, "redact": 50, "invite": 0,
		"events": map[string]any{
			"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
			"m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
			"m.room.server_acl": 100, "m.room.encryption": 100,
		},
		"notifications": map[string]any{"room": 50},
	}
	if len(req.PowerLevelContentOverride) > 0 && string(req.PowerLevelContentOverride) != "null" {
		var override map[string]any
		if err := json.Unmarshal(req.PowerLevelContentOverride, &override); err != nil {
			return "", httputil.BadJSON("power_level_content_override must be an object")
		}
		for k, v := range override {
			pl[k] = v
		}
	}

	r := &room{id: "", version: ver, state: storage.StateMap{}, pdus: map[int64]gomatrixserverlib.PDU{}, members: map[string]string{}}
	if !impl.DomainlessRoomIDs() {
		r.id = "!" + randomID(18) + ":" + string(s.cfg.ServerName)
	}
	r.mu.Lock()
	locked := true
	defer func() {
		if locked {
			r.mu.Unlock()
		}
	}()

	empty := ""
	sk := func(k string) *string { return &k }
	var waits []func() error
	send := func(evType string, stateKey *string, content any) error {
		_, wait, err := s.buildAndStore(ctx, r, creator, evType, stateKey, content, SendOpts{Localpart: localpartOf(creator)})
		if err == nil {
			waits = append(waits, wait)
		}
		return err
	}
	// Every event is submitted under the room lock; the lock is released
	// before waiting for them to be durable.
	defer func() {
		for _, w := range waits {
			_ = w()
		}
	}()
	if err := send(spec.MRoomCreate, &empty, createContent); err != nil {
		return "", err
	}
	if err := send(spec.MRoomMember, sk(creator), MemberContent(spec.Join, profile)); err != nil {
		return "", err
	}
	if err := send(spec.MRoomPowerLevels, &empty, pl); err != nil {
		return "", err
	}
	if alias != "" {
		if err := send(spec.MRoomCanonicalAlias, &empty, map[string]any{"alias": alias}); err != nil {
			return "", err
		}
	}
	overridden := map[storage.StateKey]bool{}
	for _, ev := range req.InitialState {
		overridden[storage.StateKey{Type: ev.Type, StateKey: ev.StateKey}] = true
	}
	preStates := []struct {
		typ     string
		content map[string]any
	}{
		{spec.MRoomJoinRules, map[string]any{"join_rule": joinRule}},
		{spec.MRoomHistoryVisibility, map[string]any{"history_visibility": histVis}},
		{"m.room.guest_access", map[string]any{"guest_access": guest}},
	}
	for _, p := range preStates {
		if overridden[storage.StateKey{Type: p.typ}] {
			continue
		}
		if p.typ == "m.room.guest_access" && guest == "forbidden" {
			continue // forbidden is what no event means
		}
		if err := send(p.typ, &empty, p.content); err != nil {
			return "", err
		}
	}
	for _, ev := range req.InitialState {
		if ev.Type == spec.MRoomCreate || ev.Type == spec.MRoomMember {
			continue
		}
		var content any = ev.Content
		if len(ev.Content) == 0 {
			content = map[string]any{}
		}
		if err := send(ev.Type, sk(ev.StateKey), content); err != nil {
			return "", err
		}
	}
	if req.Name != nil {
		if err := send(spec.MRoomName, &empty, map[string]any{"name": *req.Name}); err != nil {
			return "", err
		}
	}
	if req.Topic != nil {
		if err := send(spec.MRoomTopic, &empty, map[string]any{"topic": *req.Topic}); err != nil {
			return "", err
		}
	}
	for _, u := range req.Invite {
		content := map[string]any{"membership": spec.Invite}
		if req.IsDirect {
			content["is_direct"] = true
		}
		if err := send(spec.MRoomMember, sk(u), content); err != nil {
			return "", err
		}
	}
	r.mu.Unlock()
	locked = false
	for _, w := range waits {
		if err := w(); err != nil {
			waits = nil
			return "", err
		}
	}
	waits = nil
	if req.Visibility == "public" {
		if err := s.db.SetPublished(ctx, r.id, true); err != nil {
			return "", err
		}
	}
	return r.id, nil
}
