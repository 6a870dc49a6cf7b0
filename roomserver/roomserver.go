// Package roomserver owns the room DAG: every event enters through it, is
// authorised against the state before it, stored with its state snapshot and
// given its stream position in one transaction. Everything else reads.
package roomserver

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"repeater/internal/httputil"
	"repeater/internal/lru"
	"repeater/internal/part97"
	"repeater/storage"
)

// Notifier is told about each room event twice: when its stream position
// is reserved (before it can be visible; membershipOf is the user whose
// membership it changes, if any) and once it is committed (users are the
// local users whose sync should wake).
type Notifier interface {
	OnRoomEventPending(roomID string, pos int64, membershipOf string)
	OnRoomEvent(roomID string, pos int64, users []string)
}

// Config is what the roomserver needs from the server configuration.
type Config struct {
	ServerName     spec.ServerName
	KeyID          gomatrixserverlib.KeyID
	PrivateKey     ed25519.PrivateKey
	DefaultVersion gomatrixserverlib.RoomVersion
	// Outbound, if set, is told when local events were queued for other
	// servers (in the event's own transaction; see storage.EnqueuePDU).
	Outbound Outbound
	// Inviter, if set, has a remote invitee's server sign an invite
	// before it is stored.
	Inviter Inviter
	// Policy is the amateur-radio mode (nil: off): events it refuses are
	// not built, and with its unsigned option ours carry no signatures.
	Policy *part97.Policy
	// AppServices, if set, picks the application services that receive
	// an event; it is queued for them in the event's own write.
	AppServices AppServiceRouter
}

// AppServiceRouter routes room events to application services.
type AppServiceRouter interface {
	// Interested lists the services that are to receive an event: by its
	// sender, its state key (a member event's target), its room, or the
	// room's joined members (members: user -> membership, after the
	// event).
	Interested(roomID, sender string, stateKey *string, members map[string]string) []string
	// Queued is told, after commit, which services have new events.
	Queued(services []string)
}

// appServicesFor lists the services an event goes to.
func (s *Server) appServicesFor(e *storage.Event, members map[string]string) []string {
	if s.cfg.AppServices == nil {
		return nil
	}
	return s.cfg.AppServices.Interested(e.RoomID, e.Sender, e.StateKey, members)
}

// Inviter sends an invite to the invitee's server and returns the event
// with that server's signature.
type Inviter interface {
	SendInvite(ctx context.Context, pdu gomatrixserverlib.PDU, stripped []map[string]any) (gomatrixserverlib.PDU, error)
}

// Outbound is the federation sender, as the roomserver sees it.
type Outbound interface {
	Queued(destinations []string)
}

// Server is the roomserver.
type Server struct {
	cfg    Config
	db     *storage.DB
	notify Notifier
	log    *slog.Logger

	mu    sync.Mutex
	rooms map[string]*room

	snapshots *lru.Cache[int64, storage.StateMap]
	events    *lru.Cache[int64, *storage.Event]
}

// room is the in-memory head of a room: guarded by mu, which also orders all
// writes to the room.
type room struct {
	mu          sync.Mutex
	loaded      bool
	id          string
	version     gomatrixserverlib.RoomVersion
	snapshot    int64
	maxDepth    int64
	extremities []string
	state       storage.StateMap
	pdus        map[int64]gomatrixserverlib.PDU // current state events
	members     map[string]string               // user -> membership
	// gen counts head resets; stale asks for a reload from the database
	// (set by the writer when a write built on this head failed).
	gen   atomic.Int64
	stale atomic.Bool
}

// New constructs a roomserver.
func New(cfg Config, db *storage.DB, notify Notifier, log *slog.Logger) *Server {
	return &Server{
		cfg: cfg, db: db, notify: notify, log: log,
		rooms:     map[string]*room{},
		snapshots: lru.New[int64, storage.StateMap](2048),
		events:    lru.New[int64, *storage.Event](8192),
	}
}

// UserIDForSender maps sender IDs to user IDs; they are the same in every
// room version we create.
func UserIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}

// ErrUnknownRoom is returned for rooms this server does not know.
var ErrUnknownRoom = httputil.NotFound("Unknown room")

// getRoom returns the room entry, locked, with its head loaded.
func (s *Server) lockRoom(ctx context.Context, roomID string) (*room, error) {
	s.mu.Lock()
	r, ok := s.rooms[roomID]
	if !ok {
		r = &room{id: roomID}
		s.rooms[roomID] = r
	}
	s.mu.Unlock()
	r.mu.Lock()
	if r.stale.Swap(false) {
		// Let every queued write settle before reading the head back.
		_ = s.db.Write(ctx, func(*storage.Tx) error { return nil })
		r.loaded = false
	}
	if r.loaded {
		return r, nil
	}
	if err := s.loadRoom(ctx, r); err != nil {
		r.mu.Unlock()
		if errors.Is(err, ErrUnknownRoom) {
			s.mu.Lock()
			if s.rooms[roomID] == r && !r.loaded {
				delete(s.rooms, roomID)
			}
			s.mu.Unlock()
		}
		return nil, err
	}
	return r, nil
}

func (s *Server) loadRoom(ctx context.Context, r *room) error {
	info, err := s.db.GetRoom(ctx, r.id)
	if errors.Is(err, storage.ErrNotFound) {
		return ErrUnknownRoom
	}
	if err != nil {
		return err
	}
	state, err := s.db.CurrentStateNIDs(ctx, r.id)
	if err != nil {
		return err
	}
	r.version = gomatrixserverlib.RoomVersion(info.Version)
	r.snapshot, r.maxDepth, r.extremities, r.state = info.CurrentSnapshot, info.MaxDepth, info.Extremities, state
	r.pdus = map[int64]gomatrixserverlib.PDU{}
	r.members = map[string]string{}
	nids := make([]int64, 0, len(state))
	for _, nid := range state {
		nids = append(nids, nid)
	}
	evs, err := s.db.EventsByNIDs(ctx, nids)
	if err != nil {
		return err
	}
	for _, e := range evs {
		pdu, err := s.toPDU(r.version, e)
		if err != nil {
			return err
		}
		r.pdus[e.NID] = pdu
		if e.Type == spec.MRoomMember && e.StateKey != nil {
			r.members[*e.StateKey] = gjson.GetBytes(e.JSON, "content.membership").Str
		}
	}
	r.loaded = true
	return nil
}

func (s *Server) toPDU(ver gomatrixserverlib.RoomVersion, e *storage.Event) (gomatrixserverlib.PDU, error) {
	impl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return nil, err
	}
	return impl.NewEventFromTrustedJSONWithEventID(e.EventID, e.JSON, false)
}

// authEventsFor returns the auth events provider for a proto event from the
// room's current state.
func (r *room) authEvents(needed gomatrixserverlib.StateNeeded) (*gomatrixserverlib.AuthEvents, error) {
	var pdus []gomatrixserverlib.PDU
	for _, t := range needed.Tuples() {
		if nid, ok := r.state[storage.StateKey{Type: t.EventType, StateKey: t.StateKey}]; ok {
			pdus = append(pdus, r.pdus[nid])
		}
	}
	return gomatrixserverlib.NewAuthEvents(pdus)
}

// SendOpts carries optional parts of a local event.
type SendOpts struct {
	Redacts   string
	TxnID     string
	TxnDevice string
	// Localpart is the sender's localpart, for transaction IDs.
	Localpart string
}

// buildAndStore builds, authorises, signs and stores a local event. r must be
// locked and loaded (or new, for a create event).
func (s *Server) buildAndStore(ctx context.Context, r *room, sender, evType string, stateKey *string, content any, opts SendOpts) (*storage.Event, func() error, error) {
	impl, err := gomatrixserverlib.GetRoomVersion(r.version)
	if err != nil {
		return nil, nil, err
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return nil, nil, httputil.BadJSON("Bad content")
	}
	// Events may not exceed 65536 bytes (spec: "Size limits"); leave room
	// for the envelope.
	if len(raw) > 65536-1024 {
		return nil, nil, httputil.Err(413, "M_TOO_LARGE", "Event too large")
	}
	if err := s.cfg.Policy.CheckEvent(evType, raw); err != nil {
		return nil, nil, err
	}
	prev := r.extremities
	if len(prev) > 20 {
		prev = prev[:20]
	}
	if prev == nil {
		prev = []string{}
	}
	pe := gomatrixserverlib.ProtoEvent{
		SenderID: sender, RoomID: r.id, Type: evType, StateKey: stateKey,
		PrevEvents: prev, Depth: r.maxDepth + 1, Content: raw, Redacts: opts.Redacts,
	}
	isCreate := evType == spec.MRoomCreate && stateKey != nil && *stateKey == ""
	if isCreate && impl.DomainlessRoomIDs() {
		pe.RoomID = ""
	}
	needed, err := gomatrixserverlib.StateNeededForProtoEvent(&pe)
	if err != nil {
		return nil, nil, httputil.BadJSON(err.Error())
	}
	ae, err := r.authEvents(needed)
	if err != nil {
		return nil, nil, err
	}
	eb := impl.NewEventBuilderFromProtoEvent(&pe)
	if err := eb.AddAuthEvents(ae); err != nil {
		return nil, nil, httputil.Forbidden(err.Error())
	}
	pdu, err := s.build(impl, &pe, eb, raw, opts.Redacts)
	if err != nil {
		return nil, nil, err
	}
	if isCreate {
		if impl.DomainlessRoomIDs() {
			r.id = "!" + pdu.EventID()[1:]
		}
		_ = ae.AddEvent(pdu)
	}
	if err := gomatrixserverlib.Allowed(pdu, ae, UserIDForSender); err != nil {
		return nil, nil, httputil.Forbidden(err.Error())
	}
	if evType == spec.MRoomMember && stateKey != nil && ServerOf(*stateKey) != string(s.cfg.ServerName) && s.cfg.Inviter != nil {
		if m, _ := pdu.Membership(); m == spec.Invite {
			signed, err := s.cfg.Inviter.SendInvite(ctx, pdu, r.strippedState())
			if err != nil {
				return nil, nil, err
			}
			pdu = signed
		}
	}
	return s.store(ctx, r, pdu, opts)
}

// build signs the event: on the fast path when it can take it (see
// fastbuild.go), otherwise with the library's builder.
func (s *Server) build(impl gomatrixserverlib.IRoomVersion, pe *gomatrixserverlib.ProtoEvent, eb *gomatrixserverlib.EventBuilder, content []byte, redacts string) (gomatrixserverlib.PDU, error) {
	now := time.Now()
	authIDs, isIDs := eb.AuthEvents.([]string)
	if isIDs && fastBuildable(impl, pe.Type, pe.StateKey, redacts) {
		canonical, err := gomatrixserverlib.EnforcedCanonicalJSON(content, impl.Version())
		if err != nil {
			return nil, httputil.BadJSON(err.Error())
		}
		key := s.cfg.PrivateKey
		if s.cfg.Policy.Unsigned() {
			key = nil // no signatures (part97 unsigned option)
		}
		if js, id, ok := fastBuild(impl, pe, authIDs, canonical, now, s.cfg.ServerName, s.cfg.KeyID, key); ok {
			pdu, err := impl.NewEventFromTrustedJSONWithEventID(id, js, false)
			if err == nil {
				err = gomatrixserverlib.CheckFields(pdu)
			}
			if err != nil {
				return nil, httputil.BadJSON(err.Error())
			}
			return pdu, nil
		}
	}
	pdu, err := eb.Build(now, s.cfg.ServerName, s.cfg.KeyID, s.cfg.PrivateKey)
	if err != nil {
		return nil, httputil.BadJSON(err.Error())
	}
	return s.cfg.Policy.Finish(pdu)
}

// errStaleHead fails writes built on an in-memory head that was discarded.
var errStaleHead = errors.New("roomserver: room head was reset; retry")

// store makes an authorised event the room's new head. The room's
// in-memory head moves at once, so the next event can be built while this
// one is being committed (writes are batched; see storage.DB.Submit); the
// returned wait blocks until the event is durable and then tells the
// notifier. r must be locked; call wait after unlocking it.
func (s *Server) store(ctx context.Context, r *room, pdu gomatrixserverlib.PDU, opts SendOpts) (*storage.Event, func() error, error) {
	e := &storage.Event{
		EventID: pdu.EventID(), RoomID: r.id, Type: pdu.Type(), StateKey: pdu.StateKey(),
		Sender: string(pdu.SenderID()), Depth: pdu.Depth(), OriginTS: int64(pdu.OriginServerTS()),
		BeforeSnapshot: r.snapshot, AfterSnapshot: r.snapshot, JSON: pdu.JSON(),
		TxnID: opts.TxnID, TxnDevice: opts.TxnDevice,
	}
	var key storage.StateKey
	isState := e.StateKey != nil
	if isState {
		key = storage.StateKey{Type: e.Type, StateKey: *e.StateKey}
		e.ReplacesNID = r.state[key]
	}
	membership := ""
	if e.Type == spec.MRoomMember {
		membership = gjson.GetBytes(e.JSON, "content.membership").Str
	}
	isCreate := e.Type == spec.MRoomCreate && isState && *e.StateKey == ""
	redactTarget := ""
	if e.Type == spec.MRoomRedaction {
		redactTarget = pdu.Redacts()
	}
	// What the write needs, captured now: r.state is never mutated in place.
	oldState, parentSnap, version, maxDepth := r.state, r.snapshot, r.version, max(r.maxDepth, e.Depth)
	// Other servers in the room get the event (spec: Server-Server API,
	// "Transactions"); a membership change also goes to its target's server.
	var destinations []string
	if s.cfg.Outbound != nil && ServerOf(e.Sender) == string(s.cfg.ServerName) {
		// A kicked or banned user's server hears of it; an invite reached
		// the invitee's server through /invite already.
		target := ""
		if membership == spec.Leave || membership == spec.Ban {
			target = *e.StateKey
		}
		destinations = s.serversIn(r.members, target)
	}
	services := s.appServicesFor(e, r.members)
	gen := r.gen.Load()
	n := 1
	if isState {
		n = 2 // the event's position and its new snapshot's ID
	}
	ev := *e
	write := func(tx *storage.Tx) error {
		if r.gen.Load() != gen {
			return errStaleHead
		}
		pos := tx.Positions()
		ev.StreamPos = pos[0]
		if isCreate {
			if err := tx.InsertRoom(ctx, ev.RoomID, string(version)); err != nil {
				return err
			}
		}
		if isState {
			ev.AfterSnapshot = pos[1]
			full := make(storage.StateMap, len(oldState)+1)
			for k, v := range oldState {
				full[k] = v
			}
			full[key] = pos[0]
			if err := tx.NewSnapshot(ctx, pos[1], ev.RoomID, parentSnap, full, storage.StateMap{key: pos[0]}); err != nil {
				return err
			}
		}
		if err := tx.InsertEvent(ctx, &ev); err != nil {
			return err
		}
		if isState {
			if err := tx.SetCurrentState(ctx, ev.RoomID, key, ev.NID, membership, ev.StreamPos); err != nil {
				return err
			}
			if membership != "" && opts.Localpart != "" {
				if err := tx.UnforgetRoom(ctx, opts.Localpart, ev.RoomID); err != nil {
					return err
				}
			}
		}
		if redactTarget != "" {
			if err := tx.MarkRedacted(ctx, redactTarget, ev.EventID); err != nil {
				return err
			}
		}
		if err := tx.UpdateRoomHead(ctx, ev.RoomID, ev.AfterSnapshot, maxDepth, []string{ev.EventID}); err != nil {
			return err
		}
		if opts.TxnID != "" {
			if err := tx.RecordTxn(ctx, opts.Localpart, opts.TxnDevice, opts.TxnID, ev.EventID); err != nil {
				return err
			}
		}
		if len(destinations) > 0 {
			if err := tx.EnqueuePDU(ctx, destinations, ev.NID); err != nil {
				return err
			}
		}
		if len(services) > 0 {
			if err := tx.EnqueueAppService(ctx, services, ev.NID); err != nil {
				return err
			}
		}
		return nil
	}
	// If this write does not commit, nothing built on it may commit either:
	// bump the generation and have the head reloaded from the database.
	onFail := func() {
		r.gen.Add(1)
		r.stale.Store(true)
	}
	pos, done := s.db.Submit(n, write, onFail)
	if pos == nil {
		return nil, nil, <-done
	}

	// Move the in-memory head.
	e.StreamPos, e.NID = pos[0], pos[0]
	if s.notify != nil {
		target := ""
		if membership != "" {
			target = *e.StateKey
		}
		s.notify.OnRoomEventPending(e.RoomID, e.StreamPos, target)
	}
	var newState storage.StateMap
	if isState {
		e.AfterSnapshot = pos[1]
		newState = make(storage.StateMap, len(r.state)+1)
		for k, v := range r.state {
			newState[k] = v
		}
		newState[key] = e.NID
	}
	r.extremities = []string{e.EventID}
	r.maxDepth = maxDepth
	r.snapshot = e.AfterSnapshot
	if isCreate {
		r.loaded = true
		s.mu.Lock()
		s.rooms[r.id] = r
		s.mu.Unlock()
	}
	if newState != nil {
		if old := e.ReplacesNID; old != 0 {
			delete(r.pdus, old)
		}
		r.state = newState
		r.pdus[e.NID] = pdu
		if membership != "" {
			r.members[*e.StateKey] = membership
		}
	}
	// Readers of the in-memory state find the event before it is durable.
	s.events.Put(e.NID, e)
	var wake []string
	if s.notify != nil {
		wake = make([]string, 0, len(r.members))
		for u, m := range r.members {
			if m == spec.Join || m == spec.Invite {
				wake = append(wake, u)
			}
		}
		if membership != "" && membership != spec.Join && membership != spec.Invite {
			wake = append(wake, *e.StateKey)
		}
	}
	wait := func() error {
		if err := <-done; err != nil {
			return err
		}
		if redactTarget != "" {
			// The target's cached copy no longer shows the redaction.
			s.events.RemoveIf(func(x *storage.Event) bool { return x.EventID == redactTarget })
		}
		if s.notify != nil {
			s.notify.OnRoomEvent(e.RoomID, e.StreamPos, wake)
		}
		if len(destinations) > 0 {
			s.cfg.Outbound.Queued(destinations)
		}
		if len(services) > 0 {
			s.cfg.AppServices.Queued(services)
		}
		return nil
	}
	return e, wait, nil
}

// Send builds and stores a local event in a room; it returns once the event
// is durable.
func (s *Server) Send(ctx context.Context, roomID, sender, evType string, stateKey *string, content any, opts SendOpts) (*storage.Event, error) {
	r, err := s.lockRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if evType == spec.MRoomRedaction {
		if err := s.checkRedaction(ctx, r, sender, opts.Redacts); err != nil {
			r.mu.Unlock()
			return nil, err
		}
	}
	// Setting state to what it already is, by the same sender, changes
	// nothing: answer with the current event instead of a new one.
	if stateKey != nil {
		if nid, ok := r.state[storage.StateKey{Type: evType, StateKey: *stateKey}]; ok {
			cur := r.pdus[nid]
			if string(cur.SenderID()) == sender && sameContent(cur.Content(), content) {
				r.mu.Unlock()
				return s.Event(ctx, nid)
			}
		}
	}
	return s.storeUnlocked(s.buildAndStore(ctx, r, sender, evType, stateKey, content, opts))(r)
}

// storeUnlocked unlocks the room, then waits for the write to be durable.
func (s *Server) storeUnlocked(e *storage.Event, wait func() error, err error) func(r *room) (*storage.Event, error) {
	return func(r *room) (*storage.Event, error) {
		r.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if err := wait(); err != nil {
			return nil, err
		}
		return e, nil
	}
}

// checkRedaction enforces who may redact what (for room versions 3+ the auth
// rules admit every redaction, and the server decides whether it applies;
// for local clients we refuse up front).
func (s *Server) checkRedaction(ctx context.Context, r *room, sender, target string) error {
	ev, err := s.db.EventByID(ctx, target)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	if err == nil && ev.RoomID != r.id {
		return httputil.InvalidParam("The event is in another room")
	}
	if err == nil && ev.Sender == sender {
		return nil
	}
	pl, perr := r.powerLevels()
	if perr != nil {
		return perr
	}
	if r.userLevel(pl, sender) >= pl.Redact {
		return nil
	}
	if err != nil {
		return httputil.NotFound("Event not found")
	}
	return httputil.Forbidden("You may not redact this event")
}

// powerLevels returns the room's current power levels content.
func (r *room) powerLevels() (*gomatrixserverlib.PowerLevelContent, error) {
	if nid, ok := r.state[storage.StateKey{Type: spec.MRoomPowerLevels}]; ok {
		return r.pdus[nid].PowerLevels()
	}
	// No power levels event: the creator has 100, everyone else 0.
	pl := &gomatrixserverlib.PowerLevelContent{}
	pl.Defaults()
	if nid, ok := r.state[storage.StateKey{Type: spec.MRoomCreate}]; ok {
		pl.Users = map[string]int64{string(r.pdus[nid].SenderID()): 100}
	}
	return pl, nil
}

// userLevel is a user's power level, counting v12 creators as unlimited.
func (r *room) userLevel(pl *gomatrixserverlib.PowerLevelContent, userID string) int64 {
	if impl, err := gomatrixserverlib.GetRoomVersion(r.version); err == nil && impl.PrivilegedCreators() {
		if nid, ok := r.state[storage.StateKey{Type: spec.MRoomCreate}]; ok {
			create := r.pdus[nid]
			if string(create.SenderID()) == userID {
				return 1 << 53
			}
			for _, c := range gjson.GetBytes(create.Content(), "additional_creators").Array() {
				if c.Str == userID {
					return 1 << 53
				}
			}
		}
	}
	return pl.UserLevel(spec.SenderID(userID))
}

// RoomVersion returns a known room's version.
func (s *Server) RoomVersion(ctx context.Context, roomID string) (gomatrixserverlib.RoomVersion, error) {
	r, err := s.lockRoom(ctx, roomID)
	if err != nil {
		return "", err
	}
	defer r.mu.Unlock()
	return r.version, nil
}

// Membership returns a user's current membership in a room ("" if none).
func (s *Server) Membership(ctx context.Context, roomID, userID string) (string, error) {
	r, err := s.lockRoom(ctx, roomID)
	if err != nil {
		return "", err
	}
	defer r.mu.Unlock()
	return r.members[userID], nil
}

// CurrentStateEvent returns the current state event for a key, or nil.
func (s *Server) CurrentStateEvent(ctx context.Context, roomID, evType, stateKey string) (*storage.Event, error) {
	r, err := s.lockRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	nid, ok := r.state[storage.StateKey{Type: evType, StateKey: stateKey}]
	r.mu.Unlock()
	if !ok {
		return nil, nil
	}
	return s.Event(ctx, nid)
}

// CurrentState returns the room's current state events.
func (s *Server) CurrentState(ctx context.Context, roomID string) ([]*storage.Event, error) {
	r, err := s.lockRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	nids := make([]int64, 0, len(r.state))
	for _, nid := range r.state {
		nids = append(nids, nid)
	}
	r.mu.Unlock()
	return s.Events(ctx, nids)
}

// Event returns a stored event by NID, through the cache.
func (s *Server) Event(ctx context.Context, nid int64) (*storage.Event, error) {
	evs, err := s.Events(ctx, []int64{nid})
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, storage.ErrNotFound
	}
	return evs[0], nil
}

// Events returns stored events by NID (in the given order), through the cache.
func (s *Server) Events(ctx context.Context, nids []int64) ([]*storage.Event, error) {
	out := make([]*storage.Event, len(nids))
	var missing []int64
	for i, nid := range nids {
		if e, ok := s.events.Get(nid); ok && e.RedactedBy == "" {
			out[i] = e
		} else {
			missing = append(missing, nid)
		}
	}
	if len(missing) > 0 {
		evs, err := s.db.EventsByNIDs(ctx, missing)
		if err != nil {
			return nil, err
		}
		byNID := make(map[int64]*storage.Event, len(evs))
		for _, e := range evs {
			byNID[e.NID] = e
			s.events.Put(e.NID, e)
		}
		for i, nid := range nids {
			if out[i] == nil {
				out[i] = byNID[nid]
			}
		}
	}
	res := out[:0]
	for _, e := range out {
		if e != nil {
			res = append(res, e)
		}
	}
	return res, nil
}

// Snapshot returns the state map of a snapshot, through the cache.
func (s *Server) Snapshot(ctx context.Context, id int64) (storage.StateMap, error) {
	if m, ok := s.snapshots.Get(id); ok {
		return m, nil
	}
	m, err := s.db.Snapshot(ctx, id)
	if err != nil {
		return nil, err
	}
	s.snapshots.Put(id, m)
	return m, nil
}

// StateEventsAt returns the state events of a snapshot.
func (s *Server) StateEventsAt(ctx context.Context, snapshot int64) ([]*storage.Event, error) {
	m, err := s.Snapshot(ctx, snapshot)
	if err != nil {
		return nil, err
	}
	nids := make([]int64, 0, len(m))
	for _, nid := range m {
		nids = append(nids, nid)
	}
	return s.Events(ctx, nids)
}

// RedactedJSON returns the JSON a client should see for e: redacted per the
// room version's algorithm when a redaction applies, with
// unsigned.redacted_because.
func (s *Server) ClientJSON(ctx context.Context, e *storage.Event) []byte {
	if e.RedactedBy == "" {
		return e.JSON
	}
	ver, err := s.RoomVersion(ctx, e.RoomID)
	if err != nil {
		return e.JSON
	}
	impl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return e.JSON
	}
	red, err := impl.RedactEventJSON(e.JSON)
	if err != nil {
		return e.JSON
	}
	if rev, err := s.db.EventByID(ctx, e.RedactedBy); err == nil {
		red, _ = setRaw(red, "unsigned.redacted_because", rev.JSON)
	}
	return red
}

func setRaw(js []byte, path string, raw []byte) ([]byte, error) {
	return sjson.SetRawBytes(js, path, raw)
}

// MembersWith returns the room's users whose current membership is m.
func (s *Server) MembersWith(ctx context.Context, roomID, m string) ([]string, error) {
	r, err := s.lockRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.members))
	for u, mm := range r.members {
		if mm == m {
			out = append(out, u)
		}
	}
	return out, nil
}

// SupportedVersions are the room versions Repeater creates and joins: the
// spec's stable versions 1 to 12. (gomatrixserverlib also lists some
// experimental versions as stable; we do not offer those.)
var SupportedVersions = []gomatrixserverlib.RoomVersion{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}

// IsSupportedVersion reports whether v is one of SupportedVersions.
func IsSupportedVersion(v gomatrixserverlib.RoomVersion) bool {
	for _, s := range SupportedVersions {
		if s == v {
			return true
		}
	}
	return false
}
