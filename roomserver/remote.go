package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/httputil"
	"repeater/internal/part97"
	"repeater/storage"
)

// This file is the input path for events built by other servers (spec:
// Server-Server API, "Checks performed on receipt of a PDU"). Signatures
// and hashes are checked by the caller (federationapi) before an event gets
// here; the roomserver checks authorisation and computes state.

// ErrMissingPrev is returned for an event whose prev_events this server
// does not hold; the caller fetches them (get_missing_events) or the state
// at the gap first.
var ErrMissingPrev = errors.New("roomserver: missing prev_events")

// MissingPrevError names the prev_events that are not held.
type MissingPrevError struct{ IDs []string }

func (e *MissingPrevError) Error() string {
	return ErrMissingPrev.Error() + ": " + strings.Join(e.IDs, ", ")
}

func (e *MissingPrevError) Unwrap() error { return ErrMissingPrev }

// ServerOf returns the server name part of a user ID.
func ServerOf(userID string) string {
	_, srv, _ := strings.Cut(userID, ":")
	return srv
}

// serversIn returns the other servers with a joined member, sorted.
func (s *Server) serversIn(members map[string]string, extra ...string) []string {
	seen := map[string]bool{}
	for u, m := range members {
		if m == spec.Join {
			seen[ServerOf(u)] = true
		}
	}
	for _, u := range extra {
		if u != "" {
			seen[ServerOf(u)] = true
		}
	}
	delete(seen, string(s.cfg.ServerName))
	delete(seen, "")
	out := make([]string, 0, len(seen))
	for srv := range seen {
		out = append(out, srv)
	}
	sort.Strings(out)
	return out
}

// JoinedServers returns the servers (ours included) with a joined member.
func (s *Server) JoinedServers(ctx context.Context, roomID string) ([]string, error) {
	r, err := s.lockRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	defer r.mu.Unlock()
	servers := s.serversIn(r.members)
	for u, m := range r.members {
		if m == spec.Join && ServerOf(u) == string(s.cfg.ServerName) {
			servers = append(servers, string(s.cfg.ServerName))
			break
		}
	}
	return servers, nil
}

// storedPDUs loads events by ID as PDUs of a room version, skipping those
// not held.
func (s *Server) storedPDUs(ctx context.Context, ver gomatrixserverlib.RoomVersion, ids []string) (map[string]gomatrixserverlib.PDU, map[string]*storage.Event, error) {
	evs, err := s.db.EventsByIDs(ctx, ids)
	if err != nil {
		return nil, nil, err
	}
	pdus := make(map[string]gomatrixserverlib.PDU, len(evs))
	byID := make(map[string]*storage.Event, len(evs))
	for _, e := range evs {
		pdu, err := s.toPDU(ver, e)
		if err != nil {
			return nil, nil, err
		}
		pdus[e.EventID], byID[e.EventID] = pdu, e
	}
	return pdus, byID, nil
}

// stateAfter returns the state after a stored event.
func (s *Server) stateAfter(ctx context.Context, e *storage.Event) (storage.StateMap, error) {
	return s.Snapshot(ctx, e.AfterSnapshot)
}

// AuthChain returns the auth chain of the given events (the events in
// their auth_events, recursively), as stored events.
func (s *Server) AuthChain(ctx context.Context, ver gomatrixserverlib.RoomVersion, ids []string) ([]*storage.Event, error) {
	seen := map[string]bool{}
	var out []*storage.Event
	frontier := ids
	first := true
	for len(frontier) > 0 {
		evs, err := s.db.EventsByIDs(ctx, frontier)
		if err != nil {
			return nil, err
		}
		frontier = nil
		for _, e := range evs {
			if !first {
				out = append(out, e)
			}
			for _, a := range gjson.GetBytes(e.JSON, "auth_events").Array() {
				id := a.Str
				if a.IsArray() { // room versions 1 and 2: [id, hashes]
					id = a.Get("0").Str
				}
				if id != "" && !seen[id] {
					seen[id] = true
					frontier = append(frontier, id)
				}
			}
		}
		first = false
	}
	return out, nil
}

// resolve merges state maps with the room version's state resolution
// algorithm (spec: room versions, "State resolution"). Identical maps need
// none.
func (s *Server) resolve(ctx context.Context, ver gomatrixserverlib.RoomVersion, maps []storage.StateMap) (storage.StateMap, error) {
	distinct := maps[:0:0]
	for _, m := range maps {
		dup := false
		for _, d := range distinct {
			if sameState(d, m) {
				dup = true
				break
			}
		}
		if !dup {
			distinct = append(distinct, m)
		}
	}
	if len(distinct) == 1 {
		return distinct[0], nil
	}
	nidSet := map[int64]bool{}
	for _, m := range distinct {
		for _, nid := range m {
			nidSet[nid] = true
		}
	}
	nids := make([]int64, 0, len(nidSet))
	for nid := range nidSet {
		nids = append(nids, nid)
	}
	evs, err := s.Events(ctx, nids)
	if err != nil {
		return nil, err
	}
	byNID := map[int64]gomatrixserverlib.PDU{}
	idToNID := map[string]int64{}
	var ids []string
	for _, e := range evs {
		pdu, err := s.toPDU(ver, e)
		if err != nil {
			return nil, err
		}
		byNID[e.NID] = pdu
		idToNID[e.EventID] = e.NID
		ids = append(ids, e.EventID)
	}
	chain, err := s.AuthChain(ctx, ver, ids)
	if err != nil {
		return nil, err
	}
	var authPDUs []gomatrixserverlib.PDU
	rejected := map[string]bool{}
	for _, e := range chain {
		pdu, err := s.toPDU(ver, e)
		if err != nil {
			return nil, err
		}
		authPDUs = append(authPDUs, pdu)
		idToNID[e.EventID] = e.NID
		if e.Rejected {
			rejected[e.EventID] = true
		}
	}
	// The state events themselves go in with their auth chains: room
	// version 12 leaves the create event out of auth_events (the room ID is
	// its hash) but state resolution needs it, and gomatrixserverlib's v2.1
	// conflicted-subgraph walk looks conflicted events up among the auth
	// events (it panics on one it cannot find).
	inAuth := map[string]bool{}
	for _, ap := range authPDUs {
		inAuth[ap.EventID()] = true
	}
	for _, p := range byNID {
		if !inAuth[p.EventID()] {
			inAuth[p.EventID()] = true
			authPDUs = append(authPDUs, p)
		}
	}
	sets := make([][]gomatrixserverlib.PDU, len(distinct))
	for i, m := range distinct {
		for _, nid := range m {
			if p := byNID[nid]; p != nil {
				sets[i] = append(sets[i], p)
			}
		}
	}
	isRejected := func(id string) bool { return rejected[id] }
	impl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return nil, err
	}
	var resolved []gomatrixserverlib.PDU
	if impl.StateResAlgorithm() == gomatrixserverlib.StateResV1 {
		if resolved, err = gomatrixserverlib.ResolveConflictsNew(ver, sets, authPDUs, UserIDForSender, isRejected); err != nil {
			return nil, err
		}
	} else if resolved, err = resolveState(impl, sets, authPDUs, isRejected); err != nil {
		// Ours (see stateres.go): v2 for room versions 2-11, v2.1 for 12.
		return nil, err
	}
	out := storage.StateMap{}
	for _, p := range resolved {
		if p.StateKey() == nil {
			continue
		}
		if nid, ok := idToNID[p.EventID()]; ok {
			out[storage.StateKey{Type: p.Type(), StateKey: *p.StateKey()}] = nid
		}
	}
	return out, nil
}

func sameState(a, b storage.StateMap) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// authProvider builds an auth event provider from a state map for an event.
func (s *Server) authProvider(ctx context.Context, ver gomatrixserverlib.RoomVersion, state storage.StateMap, pdu gomatrixserverlib.PDU) (*gomatrixserverlib.AuthEvents, error) {
	needed := gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{pdu})
	var nids []int64
	for _, t := range needed.Tuples() {
		if nid, ok := state[storage.StateKey{Type: t.EventType, StateKey: t.StateKey}]; ok {
			nids = append(nids, nid)
		}
	}
	evs, err := s.Events(ctx, nids)
	if err != nil {
		return nil, err
	}
	pdus := make([]gomatrixserverlib.PDU, 0, len(evs))
	for _, e := range evs {
		p, err := s.toPDU(ver, e)
		if err != nil {
			return nil, err
		}
		pdus = append(pdus, p)
	}
	return gomatrixserverlib.NewAuthEvents(pdus)
}

// InputResult says what became of a received event.
type InputResult struct {
	Event    *storage.Event
	Rejected error // why the event was rejected (stored, but not part of the room)
	Existed  bool
}

// InputRemote authorises and stores an event received from another server
// whose signatures the caller has verified (spec: "Checks performed on
// receipt of a PDU", steps 4-6). All of its prev_events must be held
// (ErrMissingPrev otherwise). A rejected event is stored as rejected and
// reported in the result, not as an error.
func (s *Server) InputRemote(ctx context.Context, pdu gomatrixserverlib.PDU) (*InputResult, error) {
	roomID := pdu.RoomID().String()
	r, err := s.lockRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	defer r.mu.Unlock()
	if pdu.Version() != r.version {
		return nil, httputil.BadJSON("event room version does not match the room")
	}
	if e, err := s.db.EventByID(ctx, pdu.EventID()); err == nil && !e.Outlier {
		return &InputResult{Event: e, Existed: true}, nil
	}
	prevIDs := pdu.PrevEventIDs()
	_, prevByID, err := s.storedPDUs(ctx, r.version, prevIDs)
	if err != nil {
		return nil, err
	}
	var before []storage.StateMap
	var missing []string
	for _, id := range prevIDs {
		// A prev event must be held with the state after it: an outlier
		// whose state was fetched at a gap will do; a backfilled event
		// (held without state) will not until its state is fetched.
		if pe := prevByID[id]; pe == nil || pe.AfterSnapshot == 0 {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return nil, &MissingPrevError{IDs: missing}
	}
	for _, id := range prevIDs {
		pe := prevByID[id]
		m, err := s.stateAfter(ctx, pe)
		if err != nil {
			return nil, err
		}
		before = append(before, m)
	}
	if len(before) == 0 {
		return nil, httputil.BadJSON("event has no prev_events")
	}
	stateBefore, err := s.resolve(ctx, r.version, before)
	if err != nil {
		return nil, err
	}
	// Step 4: the event must be allowed by its own auth events.
	var rejectErr error
	authPDUs, authEvs, err := s.storedPDUs(ctx, r.version, pdu.AuthEventIDs())
	if err != nil {
		return nil, err
	}
	for _, ae := range authEvs {
		if ae.Rejected {
			rejectErr = errors.New("an auth event was rejected")
		}
		if ae.RoomID != r.id {
			rejectErr = errors.New("an auth event is in another room")
		}
	}
	switch {
	case rejectErr != nil:
	case len(authPDUs) != len(pdu.AuthEventIDs()):
		rejectErr = errors.New("auth events not held")
	default:
		list := make([]gomatrixserverlib.PDU, 0, len(authPDUs))
		for _, p := range authPDUs {
			list = append(list, p)
		}
		ae, err := gomatrixserverlib.NewAuthEvents(list)
		if err != nil {
			rejectErr = err
		} else if err := gomatrixserverlib.Allowed(pdu, ae, UserIDForSender); err != nil {
			rejectErr = fmt.Errorf("not allowed by its auth events: %w", err)
		}
	}
	// A redaction of an event in another room is not part of this room.
	if rejectErr == nil && pdu.Type() == spec.MRoomRedaction {
		if te, err := s.db.EventByID(ctx, pdu.Redacts()); err == nil && te.RoomID != r.id {
			rejectErr = errors.New("redacts an event in another room")
		}
	}
	// Step 5: and by the state before it.
	if rejectErr == nil {
		ae, err := s.authProvider(ctx, r.version, stateBefore, pdu)
		if err != nil {
			return nil, err
		}
		if err := gomatrixserverlib.Allowed(pdu, ae, UserIDForSender); err != nil {
			rejectErr = fmt.Errorf("not allowed by the state before it: %w", err)
		}
	}
	// Step 6 (soft fail): an event that the current state would not allow
	// is kept in the DAG but not shown or made current. The current state
	// is that of the room's forward extremities together with the state
	// before the event: an event on a branch we had not taken in yet
	// (its sender's join came by way of a gap, say) is judged by the room
	// as it will be once the branch is merged, not by a state that merely
	// lags behind it.
	if rejectErr == nil {
		current := r.state
		if !sameSet(r.extremities, prevIDs) {
			if merged, err := s.resolve(ctx, r.version, []storage.StateMap{r.state, stateBefore}); err == nil {
				current = merged
			}
		}
		ae, err := s.authProvider(ctx, r.version, current, pdu)
		if err != nil {
			return nil, err
		}
		if err := gomatrixserverlib.Allowed(pdu, ae, UserIDForSender); err != nil {
			rejectErr = fmt.Errorf("soft-failed against current state: %w", err)
		}
	}
	return s.storeRemote(ctx, r, pdu, prevByID, stateBefore, rejectErr)
}

// storeRemote writes a received event with the state before it, and makes
// it part of the room's head unless it was rejected. r is locked. Remote
// input is ordered by the room lock and written synchronously: the
// in-memory head moves only once the event is durable.
func (s *Server) storeRemote(ctx context.Context, r *room, pdu gomatrixserverlib.PDU, prevByID map[string]*storage.Event, stateBefore storage.StateMap, rejectErr error) (*InputResult, error) {
	if rejectErr != nil {
		s.log.Info("received event rejected", "event", pdu.EventID(), "type", pdu.Type(), "sender", pdu.SenderID(), "why", rejectErr)
	}
	e := received(ctx, pdu, r.id)
	e.Rejected = rejectErr != nil
	// With one prev event the state before is its snapshot.
	var parentSnap int64
	if len(prevByID) == 1 {
		for _, pe := range prevByID {
			parentSnap = pe.AfterSnapshot
		}
	}
	inLine := rejectErr == nil
	isState := e.StateKey != nil && inLine
	var key storage.StateKey
	stateAfter := stateBefore
	if isState {
		key = storage.StateKey{Type: e.Type, StateKey: *e.StateKey}
		stateAfter = make(storage.StateMap, len(stateBefore)+1)
		for k, v := range stateBefore {
			stateAfter[k] = v
		}
		e.ReplacesNID = stateBefore[key]
	}
	membership := ""
	if e.Type == spec.MRoomMember && e.StateKey != nil {
		membership = gjson.GetBytes(e.JSON, "content.membership").Str
	}
	// A redaction applies to its target if the target is in this room and
	// was sent from the redacter's server, or the redacter has the power
	// to redact (spec: room versions 3+, "Redactions"; the auth rules admit
	// every redaction, the server decides whether it applies).
	redactTarget := ""
	if e.Type == spec.MRoomRedaction && rejectErr == nil {
		if t := pdu.Redacts(); t != "" {
			if te, err := s.db.EventByID(ctx, t); err == nil && te.RoomID == r.id {
				ok := ServerOf(te.Sender) == ServerOf(e.Sender)
				if !ok {
					if pl, err := r.powerLevels(); err == nil {
						ok = r.userLevel(pl, e.Sender) >= pl.Redact
					}
				}
				if ok {
					redactTarget = t
				}
			}
		}
	}
	// New forward extremities: the event replaces the ones it refers to.
	newExtrem := r.extremities
	forked := false
	if inLine {
		newExtrem = []string{e.EventID}
		for _, x := range r.extremities {
			// An extremity the event descends from through events that
			// were not shown (soft-failed ones, say) is no longer one.
			if prevByID[x] == nil && !s.descendsFrom(ctx, pdu.PrevEventIDs(), x) {
				newExtrem = append(newExtrem, x)
				forked = true
			}
		}
	}
	maxDepth := max(r.maxDepth, e.Depth)
	n := 1
	if parentSnap == 0 {
		n++
	}
	if isState {
		n++
	}
	setCurrent := func(tx *storage.Tx, current storage.StateMap, pos int64, pending *storage.Event) error {
		for k, nid := range current {
			if r.state[k] == nid {
				continue
			}
			m := ""
			if k.Type == spec.MRoomMember {
				if pending != nil && nid == pending.NID {
					m = membership
				} else if ce, err := s.Event(ctx, nid); err == nil {
					m = gjson.GetBytes(ce.JSON, "content.membership").Str
				}
			}
			if err := tx.SetCurrentState(ctx, r.id, k, nid, m, pos); err != nil {
				return err
			}
		}
		return nil
	}
	var services []string
	if inLine {
		services = s.appServicesFor(e, r.members)
	}
	ps, done := s.db.Submit(n, func(tx *storage.Tx) error {
		p := tx.Positions()
		i := 1
		ev := *e
		ev.StreamPos = p[0]
		ev.BeforeSnapshot = parentSnap
		if parentSnap == 0 {
			if err := tx.NewSnapshot(ctx, p[i], r.id, 0, stateBefore, stateBefore); err != nil {
				return err
			}
			ev.BeforeSnapshot = p[i]
			i++
		}
		ev.AfterSnapshot = ev.BeforeSnapshot
		after := stateAfter
		if isState {
			after = make(storage.StateMap, len(stateAfter))
			for k, v := range stateAfter {
				after[k] = v
			}
			after[key] = p[0]
			if err := tx.NewSnapshot(ctx, p[i], r.id, ev.BeforeSnapshot, after, storage.StateMap{key: p[0]}); err != nil {
				return err
			}
			ev.AfterSnapshot = p[i]
		}
		if err := tx.InsertEvent(ctx, &ev); err != nil {
			return err
		}
		if len(services) > 0 {
			if err := tx.EnqueueAppService(ctx, services, ev.NID); err != nil {
				return err
			}
		}
		if redactTarget != "" {
			if err := tx.MarkRedacted(ctx, redactTarget, ev.EventID); err != nil {
				return err
			}
		}
		if !inLine || forked {
			return nil
		}
		if err := setCurrent(tx, after, ev.StreamPos, &ev); err != nil {
			return err
		}
		return tx.UpdateRoomHead(ctx, r.id, ev.AfterSnapshot, maxDepth, newExtrem)
	}, nil)
	if ps == nil {
		return nil, <-done
	}
	// Sync must learn of the room's change before the position is visible.
	if s.notify != nil {
		target := ""
		if membership != "" && inLine {
			target = *e.StateKey
		}
		s.notify.OnRoomEventPending(r.id, ps[0], target)
	}
	if err := <-done; err != nil {
		return nil, err
	}
	e.NID, e.StreamPos = ps[0], ps[0]
	e.BeforeSnapshot = parentSnap
	i := 1
	if parentSnap == 0 {
		e.BeforeSnapshot = ps[i]
		i++
	}
	e.AfterSnapshot = e.BeforeSnapshot
	if isState {
		stateAfter[key] = e.NID
		e.AfterSnapshot = ps[i]
	}
	s.events.Put(e.NID, e)
	if redactTarget != "" {
		s.events.RemoveIf(func(x *storage.Event) bool { return x.EventID == redactTarget })
	}
	if inLine {
		current, currentSnap := stateAfter, e.AfterSnapshot
		if forked {
			// The room's current state is the resolution of its forward
			// extremities' states: ours so far and the new branch's.
			var err error
			if current, err = s.resolve(ctx, r.version, []storage.StateMap{r.state, stateAfter}); err != nil {
				// The event is stored; keep the state we have rather than
				// fail it (and log: the room may now differ from others').
				s.log.Warn("state resolution failed; keeping current state", "room", r.id, "event", e.EventID, "err", err)
				current = r.state
			}
			ps2, err := s.db.WritePos(ctx, 1, func(tx *storage.Tx) error {
				p := tx.Positions()
				if err := tx.NewSnapshot(ctx, p[0], r.id, 0, current, current); err != nil {
					return err
				}
				if err := setCurrent(tx, current, e.StreamPos, e); err != nil {
					return err
				}
				return tx.UpdateRoomHead(ctx, r.id, p[0], maxDepth, newExtrem)
			})
			if err != nil {
				return nil, err
			}
			currentSnap = ps2[0]
		}
		if err := s.setHead(ctx, r, current, currentSnap, newExtrem, maxDepth); err != nil {
			return nil, err
		}
	}
	if s.notify != nil {
		var wake []string
		for u, m := range r.members {
			if m == spec.Join || m == spec.Invite {
				wake = append(wake, u)
			}
		}
		if membership != "" && membership != spec.Join && membership != spec.Invite {
			wake = append(wake, *e.StateKey)
		}
		s.notify.OnRoomEvent(r.id, e.StreamPos, wake)
	}
	if len(services) > 0 {
		s.cfg.AppServices.Queued(services)
	}
	return &InputResult{Event: e, Rejected: rejectErr}, nil
}

// setHead replaces the room's in-memory head with new current state.
func (s *Server) setHead(ctx context.Context, r *room, state storage.StateMap, snap int64, extremities []string, maxDepth int64) error {
	var missing []int64
	for _, nid := range state {
		if _, ok := r.pdus[nid]; !ok {
			missing = append(missing, nid)
		}
	}
	evs, err := s.Events(ctx, missing)
	if err != nil {
		return err
	}
	pdus := make(map[int64]gomatrixserverlib.PDU, len(state))
	for _, nid := range state {
		if p, ok := r.pdus[nid]; ok {
			pdus[nid] = p
		}
	}
	for _, e := range evs {
		p, err := s.toPDU(r.version, e)
		if err != nil {
			return err
		}
		pdus[e.NID] = p
	}
	members := make(map[string]string, len(r.members))
	for k, nid := range state {
		if k.Type == spec.MRoomMember {
			if p := pdus[nid]; p != nil {
				m, _ := p.Membership()
				members[k.StateKey] = m
			}
		}
	}
	r.state, r.pdus, r.members = state, pdus, members
	r.snapshot, r.extremities, r.maxDepth = snap, extremities, maxDepth
	r.gen.Add(1)
	return nil
}

// ImportJoin records a room joined through another server (spec: "Joining
// rooms", send_join): the state and auth chain it returned are stored as
// outliers, the room's state before the join is that state, and the join
// event is the room's first timeline event here. The caller has checked
// the response (signatures and auth: gomatrixserverlib.CheckSendJoinResponse).
func (s *Server) ImportJoin(ctx context.Context, ver gomatrixserverlib.RoomVersion, join gomatrixserverlib.PDU, state, authChain []gomatrixserverlib.PDU) (*storage.Event, error) {
	roomID := join.RoomID().String()
	if join.StateKey() == nil {
		return nil, httputil.BadJSON("join event has no state_key")
	}
	s.mu.Lock()
	r, ok := s.rooms[roomID]
	if !ok {
		r = &room{id: roomID}
		s.rooms[roomID] = r
	}
	s.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	known := r.loaded || r.stale.Load()
	if !known {
		_, err := s.db.GetRoom(ctx, roomID)
		known = err == nil
	}
	if known {
		// A room we hold (e.g. rejoining): the join is input like any event.
		r.mu.Unlock()
		res, err := s.InputRemote(ctx, join)
		r.mu.Lock()
		if err != nil {
			return nil, err
		}
		if res.Rejected != nil {
			return nil, httputil.Forbidden(res.Rejected.Error())
		}
		return res.Event, nil
	}
	// Outliers: everything in the state and auth chain not yet held.
	all := map[string]gomatrixserverlib.PDU{}
	for _, p := range authChain {
		all[p.EventID()] = p
	}
	for _, p := range state {
		all[p.EventID()] = p
	}
	ids := make([]string, 0, len(all))
	for id := range all {
		ids = append(ids, id)
	}
	held, err := s.db.EventNIDsByIDs(ctx, s.db.R(), ids, false)
	if err != nil {
		return nil, err
	}
	var fresh []gomatrixserverlib.PDU
	for _, id := range ids {
		if _, ok := held[id]; !ok {
			fresh = append(fresh, all[id])
		}
	}
	sort.Slice(fresh, func(i, j int) bool { return fresh[i].Depth() < fresh[j].Depth() })
	membership, _ := join.Membership()
	userID := *join.StateKey()
	maxDepth := join.Depth()
	for _, p := range all {
		maxDepth = max(maxDepth, p.Depth())
	}
	var joinEv storage.Event
	pos, done := s.db.Submit(3, func(tx *storage.Tx) error {
		p := tx.Positions()
		nids, err := tx.NegativeNIDs(ctx, max(len(fresh), 1))
		if err != nil {
			return err
		}
		idToNID := map[string]int64{}
		for id, nid := range held {
			idToNID[id] = nid
		}
		for i, pdu := range fresh {
			oe := received(ctx, pdu, roomID)
			oe.Outlier, oe.StreamPos = true, nids[i]
			if err := tx.InsertEvent(ctx, oe); err != nil {
				return err
			}
			idToNID[pdu.EventID()] = nids[i]
		}
		if err := tx.InsertRoom(ctx, roomID, string(ver)); err != nil {
			return err
		}
		before := storage.StateMap{}
		for _, pdu := range state {
			if pdu.StateKey() != nil {
				before[storage.StateKey{Type: pdu.Type(), StateKey: *pdu.StateKey()}] = idToNID[pdu.EventID()]
			}
		}
		if err := tx.NewSnapshot(ctx, p[1], roomID, 0, before, before); err != nil {
			return err
		}
		key := storage.StateKey{Type: spec.MRoomMember, StateKey: userID}
		after := make(storage.StateMap, len(before)+1)
		for k, v := range before {
			after[k] = v
		}
		after[key] = p[0]
		if err := tx.NewSnapshot(ctx, p[2], roomID, p[1], after, storage.StateMap{key: p[0]}); err != nil {
			return err
		}
		joinEv = *received(ctx, join, roomID)
		joinEv.StreamPos, joinEv.BeforeSnapshot, joinEv.AfterSnapshot, joinEv.ReplacesNID = p[0], p[1], p[2], before[key]
		if err := tx.InsertEvent(ctx, &joinEv); err != nil {
			return err
		}
		for _, pdu := range state {
			if pdu.StateKey() == nil {
				continue
			}
			m := ""
			if pdu.Type() == spec.MRoomMember {
				m, _ = pdu.Membership()
			}
			k := storage.StateKey{Type: pdu.Type(), StateKey: *pdu.StateKey()}
			if k == key {
				continue
			}
			if err := tx.SetCurrentState(ctx, roomID, k, idToNID[pdu.EventID()], m, p[0]); err != nil {
				return err
			}
		}
		if err := tx.SetCurrentState(ctx, roomID, key, p[0], membership, p[0]); err != nil {
			return err
		}
		if err := tx.UnforgetRoom(ctx, localpartOf(userID), roomID); err != nil {
			return err
		}
		if err := tx.DeleteRemoteInvite(ctx, roomID, userID); err != nil {
			return err
		}
		// The history before the join is not held yet: backfill fills it.
		var gaps []storage.Gap
		for _, id := range join.PrevEventIDs() {
			gaps = append(gaps, storage.Gap{EventID: id, Depth: join.Depth()})
		}
		if err := tx.AddGaps(ctx, roomID, gaps); err != nil {
			return err
		}
		return tx.UpdateRoomHead(ctx, roomID, p[2], maxDepth, []string{join.EventID()})
	}, nil)
	if pos == nil {
		return nil, <-done
	}
	if s.notify != nil {
		s.notify.OnRoomEventPending(roomID, pos[0], userID)
	}
	if err := <-done; err != nil {
		return nil, err
	}
	if err := s.loadRoom(ctx, r); err != nil {
		return nil, err
	}
	if s.notify != nil {
		s.notify.OnRoomEvent(roomID, pos[0], []string{userID})
	}
	return &joinEv, nil
}

// StateAtEvent returns the room state before an event (spec: federation
// /state and /state_ids take the state "at" the event, i.e. before it... the
// spec text says "the state of the room at the given event", which servers
// implement as the state before it), and that state's auth chain.
func (s *Server) StateAtEvent(ctx context.Context, roomID, eventID string) (state, authChain []*storage.Event, err error) {
	e, err := s.db.EventByID(ctx, eventID)
	if err != nil || e.RoomID != roomID || e.Outlier {
		return nil, nil, httputil.NotFound("Unknown event")
	}
	if e.BeforeSnapshot == 0 && e.Type != spec.MRoomCreate {
		// Held without its state (a backfilled event): an empty answer
		// would pass for "no state at all" and poison the asker's room.
		return nil, nil, httputil.NotFound("The state at this event is not known here")
	}
	m, err := s.Snapshot(ctx, e.BeforeSnapshot)
	if err != nil {
		return nil, nil, err
	}
	nids := make([]int64, 0, len(m))
	for _, nid := range m {
		nids = append(nids, nid)
	}
	state, err = s.Events(ctx, nids)
	if err != nil {
		return nil, nil, err
	}
	ver, err := s.RoomVersion(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	ids := make([]string, len(state))
	for i, e := range state {
		ids[i] = e.EventID
	}
	authChain, err = s.AuthChain(ctx, ver, ids)
	return state, authChain, err
}

// EventByID returns a stored event (outliers included).
func (s *Server) EventByID(ctx context.Context, eventID string) (*storage.Event, error) {
	return s.db.EventByID(ctx, eventID)
}

// MembershipTemplate builds the event template for a remote user's join,
// leave or knock (spec: make_join, make_leave, make_knock): prev_events,
// auth_events and depth from the current head, unsigned. It fails with
// M_FORBIDDEN if the current state would not allow the event.
func (s *Server) MembershipTemplate(ctx context.Context, roomID, userID, membership string) (gomatrixserverlib.RoomVersion, map[string]any, error) {
	r, err := s.lockRoom(ctx, roomID)
	if err != nil {
		return "", nil, err
	}
	defer r.mu.Unlock()
	impl, err := gomatrixserverlib.GetRoomVersion(r.version)
	if err != nil {
		return "", nil, err
	}
	content := []byte(`{"membership":"` + membership + `"}`)
	prev := r.extremities
	if len(prev) > 20 {
		prev = prev[:20]
	}
	pe := gomatrixserverlib.ProtoEvent{SenderID: userID, RoomID: r.id, Type: spec.MRoomMember, StateKey: &userID,
		PrevEvents: prev, Depth: r.maxDepth + 1, Content: content}
	needed, err := gomatrixserverlib.StateNeededForProtoEvent(&pe)
	if err != nil {
		return "", nil, httputil.BadJSON(err.Error())
	}
	ae, err := r.authEvents(needed)
	if err != nil {
		return "", nil, err
	}
	eb := impl.NewEventBuilderFromProtoEvent(&pe)
	if err := eb.AddAuthEvents(ae); err != nil {
		return "", nil, httputil.Forbidden(err.Error())
	}
	// Build it (signed by us, only to check it) against the current state.
	probe, err := eb.Build(time.Now(), s.cfg.ServerName, s.cfg.KeyID, s.cfg.PrivateKey)
	if err != nil {
		return "", nil, httputil.BadJSON(err.Error())
	}
	if err := gomatrixserverlib.Allowed(probe, ae, UserIDForSender); err != nil {
		return "", nil, httputil.Forbidden(err.Error())
	}
	// prev_events and auth_events as the room version writes them (room
	// versions 1 and 2: [event ID, hashes] pairs).
	tmpl := map[string]any{
		"type": spec.MRoomMember, "room_id": r.id, "sender": userID, "state_key": userID,
		"content":     map[string]any{"membership": membership},
		"prev_events": json.RawMessage(gjson.GetBytes(probe.JSON(), "prev_events").Raw),
		"auth_events": json.RawMessage(gjson.GetBytes(probe.JSON(), "auth_events").Raw),
		"depth":       eb.Depth, "origin": ServerOf(userID),
		"origin_server_ts": time.Now().UnixMilli(),
	}
	return r.version, tmpl, nil
}

// EventsByIDs returns the stored events among ids (outliers included).
func (s *Server) EventsByIDs(ctx context.Context, ids []string) ([]*storage.Event, error) {
	return s.db.EventsByIDs(ctx, ids)
}

// Extremities returns the room's forward extremities.
func (s *Server) Extremities(ctx context.Context, roomID string) ([]string, error) {
	r, err := s.lockRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	defer r.mu.Unlock()
	return append([]string(nil), r.extremities...), nil
}

// RemoteMembership records an invite (or its rejection) for a local user to
// a room this server is not in; stripped is the room's stripped state as
// the inviting server sent it (JSON array).
func (s *Server) RemoteMembership(ctx context.Context, ver gomatrixserverlib.RoomVersion, pdu gomatrixserverlib.PDU, stripped []byte) (*storage.Event, error) {
	m, _ := pdu.Membership()
	e := received(ctx, pdu, pdu.RoomID().String())
	target := *pdu.StateKey()
	err := s.db.StoreRemoteInvite(ctx, e, string(ver), stripped, m, func(pos int64) {
		if s.notify != nil {
			s.notify.OnRoomEventPending(e.RoomID, pos, target)
		}
	})
	if err != nil {
		return nil, err
	}
	if s.notify != nil {
		s.notify.OnRoomEvent(e.RoomID, e.StreamPos, []string{target})
	}
	return e, nil
}

// RemoteInvite returns a local user's pending invite to a room this server
// is not in.
func (s *Server) RemoteInvite(ctx context.Context, roomID, userID string) (*storage.RemoteInvite, *storage.Event, error) {
	ri, err := s.db.GetRemoteInvite(ctx, roomID, userID)
	if err != nil {
		return nil, nil, err
	}
	e, err := s.Event(ctx, ri.EventNID)
	if err != nil {
		return nil, nil, err
	}
	return ri, e, nil
}

// Gaps returns the room's backward extremities (see storage.Gap).
func (s *Server) Gaps(ctx context.Context, roomID string) ([]storage.Gap, error) {
	return s.db.Gaps(ctx, roomID)
}

// StoreBackfilled stores history fetched from other servers (spec:
// "Backfilling"): events whose signatures the caller checked, each
// authorised against its own auth events (held, in the batch, or fetched
// with fetchAuth and stored as outliers). They join the timeline at their
// depth, below every sync position, and never change current state. It
// returns how many events were added to the timeline.
func (s *Server) StoreBackfilled(ctx context.Context, roomID string, pdus []gomatrixserverlib.PDU, fetchAuth func(ids []string) []gomatrixserverlib.PDU) (int, error) {
	r, err := s.lockRoom(ctx, roomID)
	if err != nil {
		return 0, err
	}
	defer r.mu.Unlock()
	ids := make([]string, 0, len(pdus))
	batch := map[string]gomatrixserverlib.PDU{}
	for _, p := range pdus {
		if p.RoomID().String() != roomID || p.Version() != r.version {
			continue
		}
		if _, dup := batch[p.EventID()]; !dup {
			batch[p.EventID()] = p
			ids = append(ids, p.EventID())
		}
	}
	heldEvs, err := s.db.EventsByIDs(ctx, ids)
	if err != nil {
		return 0, err
	}
	held := map[string]*storage.Event{}
	for _, e := range heldEvs {
		held[e.EventID] = e
	}
	// Auth events: those neither held nor in the batch are fetched.
	var authIDs []string
	seenAuth := map[string]bool{}
	for _, p := range batch {
		for _, a := range p.AuthEventIDs() {
			if batch[a] == nil && !seenAuth[a] {
				seenAuth[a] = true
				authIDs = append(authIDs, a)
			}
		}
	}
	authPDUs, _, err := s.storedPDUs(ctx, r.version, authIDs)
	if err != nil {
		return 0, err
	}
	var fetched []gomatrixserverlib.PDU
	var missing []string
	for _, a := range authIDs {
		if authPDUs[a] == nil {
			missing = append(missing, a)
		}
	}
	if len(missing) > 0 && fetchAuth != nil {
		for _, p := range fetchAuth(missing) {
			if p.RoomID().String() == roomID && authPDUs[p.EventID()] == nil {
				authPDUs[p.EventID()] = p
				fetched = append(fetched, p)
			}
		}
	}
	lookup := func(id string) gomatrixserverlib.PDU {
		if p := batch[id]; p != nil {
			return p
		}
		return authPDUs[id]
	}
	type item struct {
		pdu      gomatrixserverlib.PDU
		rejected bool
		promote  bool
	}
	var items []item
	for _, id := range ids {
		p := batch[id]
		if h := held[id]; h != nil && !h.Outlier {
			continue
		}
		var list []gomatrixserverlib.PDU
		ok := true
		for _, a := range p.AuthEventIDs() {
			ap := lookup(a)
			if ap == nil {
				ok = false
				break
			}
			list = append(list, ap)
		}
		if !ok {
			// An auth event that could not be fetched is no reason to
			// reject: the event is left for the next backfill (its gap
			// stays).
			continue
		}
		ae, err := gomatrixserverlib.NewAuthEvents(list)
		rejected := err != nil || gomatrixserverlib.Allowed(p, ae, UserIDForSender) != nil
		items = append(items, item{pdu: p, rejected: rejected, promote: held[id] != nil})
	}
	sort.Slice(items, func(i, j int) bool { return items[i].pdu.Depth() < items[j].pdu.Depth() })
	added := 0
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		nids, err := tx.NegativeNIDs(ctx, len(items)+len(fetched)+1)
		if err != nil {
			return err
		}
		n := 0
		for _, p := range fetched {
			oe := received(ctx, p, roomID)
			oe.Outlier, oe.StreamPos = true, nids[n]
			n++
			if err := tx.InsertEvent(ctx, oe); err != nil {
				return err
			}
		}
		inBatch := map[string]bool{}
		for _, it := range items {
			inBatch[it.pdu.EventID()] = true
		}
		var gaps []storage.Gap
		for _, it := range items {
			p := it.pdu
			if err := tx.FillGap(ctx, roomID, p.EventID()); err != nil {
				return err
			}
			if it.promote {
				if err := tx.PromoteOutlier(ctx, p.EventID()); err != nil {
					return err
				}
			} else {
				e := received(ctx, p, roomID)
				e.Rejected, e.StreamPos = it.rejected, nids[n]
				n++
				if err := tx.InsertEvent(ctx, e); err != nil {
					return err
				}
			}
			if !it.rejected {
				added++
			}
			for _, prev := range p.PrevEventIDs() {
				if !inBatch[prev] {
					gaps = append(gaps, storage.Gap{EventID: prev, Depth: p.Depth()})
				}
			}
		}
		// A referenced prev already in the timeline is no gap.
		var gapIDs []string
		for _, g := range gaps {
			gapIDs = append(gapIDs, g.EventID)
		}
		have, err := s.db.EventNIDsByIDs(ctx, tx, gapIDs, true)
		if err != nil {
			return err
		}
		var real []storage.Gap
		for _, g := range gaps {
			if _, ok := have[g.EventID]; !ok {
				real = append(real, g)
			}
		}
		return tx.AddGaps(ctx, roomID, real)
	})
	if err != nil {
		return 0, err
	}
	// Cached copies of promoted outliers are stale.
	s.events.RemoveIf(func(e *storage.Event) bool { return e.RoomID == roomID && e.Outlier })
	return added, nil
}

// StoreStateAtGap records an event this server lacks the history of,
// together with the state before it as another server reported it (spec:
// "Checks performed on receipt of a PDU": when prev_events are missing,
// fetch the state at the gap). fetched are the events of that state and
// its auth chain not yet held (signatures checked by the caller); all are
// stored as outliers, ev with its state so that later events can build
// on it.
func (s *Server) StoreStateAtGap(ctx context.Context, ev gomatrixserverlib.PDU, stateIDs []string, fetched []gomatrixserverlib.PDU) error {
	roomID := ev.RoomID().String()
	r, err := s.lockRoom(ctx, roomID)
	if err != nil {
		return err
	}
	defer r.mu.Unlock()
	ids := append([]string{ev.EventID()}, stateIDs...)
	for _, p := range fetched {
		ids = append(ids, p.EventID())
	}
	held, err := s.db.EventNIDsByIDs(ctx, s.db.R(), ids, false)
	if err != nil {
		return err
	}
	if e, err := s.db.EventByID(ctx, ev.EventID()); err == nil && e.AfterSnapshot != 0 {
		return nil // already known with its state
	}
	var fresh []gomatrixserverlib.PDU
	seen := map[string]bool{}
	for _, p := range fetched {
		if _, ok := held[p.EventID()]; !ok && !seen[p.EventID()] && p.RoomID().String() == roomID && p.EventID() != ev.EventID() {
			seen[p.EventID()] = true
			fresh = append(fresh, p)
		}
	}
	sort.Slice(fresh, func(i, j int) bool { return fresh[i].Depth() < fresh[j].Depth() })
	byID := map[string]gomatrixserverlib.PDU{}
	for _, p := range fetched {
		byID[p.EventID()] = p
	}
	// Every fetched event must be allowed by its own auth events (spec:
	// "Checks performed on receipt of a PDU", step 4); one that is not is
	// stored rejected and left out of the state (a server cannot slip in,
	// say, a power-levels event that its auth events do not allow).
	heldPDUs, heldEvs, err := s.storedPDUs(ctx, r.version, ids)
	if err != nil {
		return err
	}
	rejected := map[string]bool{}
	for id, e := range heldEvs {
		if e.Rejected {
			rejected[id] = true
		}
	}
	lookup := func(id string) gomatrixserverlib.PDU {
		if p := byID[id]; p != nil {
			return p
		}
		if p := heldPDUs[id]; p != nil {
			return p
		}
		if ps, _, err := s.storedPDUs(ctx, r.version, []string{id}); err == nil {
			return ps[id]
		}
		return nil
	}
	// An auth event that could not be fetched (a link dropped, say) is no
	// reason to reject: nothing is stored and the gap is tried again.
	var unfetched error
	allowedByAuthEvents := func(p gomatrixserverlib.PDU) bool {
		var list []gomatrixserverlib.PDU
		for _, a := range p.AuthEventIDs() {
			if rejected[a] {
				return false
			}
			ap := lookup(a)
			if ap == nil {
				unfetched = fmt.Errorf("auth event %s of %s not fetched", a, p.EventID())
				return false
			}
			list = append(list, ap)
		}
		ae, err := gomatrixserverlib.NewAuthEvents(list)
		return err == nil && gomatrixserverlib.Allowed(p, ae, UserIDForSender) == nil
	}
	for _, f := range fresh {
		if !allowedByAuthEvents(f) {
			rejected[f.EventID()] = true
		}
	}
	evRejected := !allowedByAuthEvents(ev)
	if unfetched != nil {
		return unfetched
	}
	_, evHeld := held[ev.EventID()]
	pos, done := s.db.Submit(2, func(tx *storage.Tx) error {
		p := tx.Positions()
		nids, err := tx.NegativeNIDs(ctx, len(fresh)+1)
		if err != nil {
			return err
		}
		idToNID := map[string]int64{}
		for id, nid := range held {
			idToNID[id] = nid
		}
		for i, f := range fresh {
			oe := received(ctx, f, roomID)
			oe.Outlier, oe.StreamPos, oe.Rejected = true, nids[i], rejected[f.EventID()]
			if err := tx.InsertEvent(ctx, oe); err != nil {
				return err
			}
			idToNID[f.EventID()] = nids[i]
		}
		before := storage.StateMap{}
		for _, id := range stateIDs {
			if rejected[id] {
				continue
			}
			nid, ok := idToNID[id]
			if !ok {
				return fmt.Errorf("state event %s not held", id)
			}
			var sp gomatrixserverlib.PDU = byID[id]
			var k storage.StateKey
			if sp != nil && sp.StateKey() != nil {
				k = storage.StateKey{Type: sp.Type(), StateKey: *sp.StateKey()}
			} else {
				e, err := s.Events(ctx, []int64{nid})
				if err != nil || len(e) != 1 || e[0].StateKey == nil {
					continue
				}
				k = storage.StateKey{Type: e[0].Type, StateKey: *e[0].StateKey}
			}
			before[k] = nid
		}
		if _, ok := before[storage.StateKey{Type: spec.MRoomCreate}]; !ok && ev.Type() != spec.MRoomCreate {
			return fmt.Errorf("the state at %s has no create event", ev.EventID())
		}
		if err := tx.NewSnapshot(ctx, p[0], roomID, 0, before, before); err != nil {
			return err
		}
		after := before
		evNID := nids[len(fresh)]
		if evHeld {
			evNID = held[ev.EventID()]
		}
		if ev.StateKey() != nil && !evRejected {
			k := storage.StateKey{Type: ev.Type(), StateKey: *ev.StateKey()}
			after = make(storage.StateMap, len(before)+1)
			for kk, v := range before {
				after[kk] = v
			}
			after[k] = evNID
			if err := tx.NewSnapshot(ctx, p[1], roomID, p[0], after, storage.StateMap{k: evNID}); err != nil {
				return err
			}
		}
		afterSnap := p[0]
		if ev.StateKey() != nil && !evRejected {
			afterSnap = p[1]
		}
		if evHeld {
			if err := tx.SetAfterSnapshot(ctx, evNID, afterSnap); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `UPDATE events SET before_snapshot = $1 WHERE stream_pos = $2`, p[0], evNID)
			return err
		}
		// The event itself is not in the timeline yet: backfill fills it
		// (and what came before) when a client pages down to it.
		if err := tx.AddGaps(ctx, roomID, []storage.Gap{{EventID: ev.EventID(), Depth: ev.Depth() + 1}}); err != nil {
			return err
		}
		e := received(ctx, ev, roomID)
		e.Outlier, e.Rejected, e.StreamPos, e.BeforeSnapshot, e.AfterSnapshot = true, evRejected, evNID, p[0], afterSnap
		return tx.InsertEvent(ctx, e)
	}, nil)
	if pos == nil {
		return <-done
	}
	if err := <-done; err != nil {
		return err
	}
	// Cached copies of the event (now with its state) and of outliers are
	// stale.
	s.events.RemoveIf(func(e *storage.Event) bool {
		return e.RoomID == roomID && (e.Outlier || e.EventID == ev.EventID())
	})
	return nil
}

// InputRemoteCheckPrevs reports (as a *MissingPrevError) which of an
// event's prev_events are not held with their state, without storing it.
func (s *Server) InputRemoteCheckPrevs(ctx context.Context, pdu gomatrixserverlib.PDU) (bool, error) {
	evs, err := s.db.EventsByIDs(ctx, pdu.PrevEventIDs())
	if err != nil {
		return false, err
	}
	have := map[string]*storage.Event{}
	for _, e := range evs {
		have[e.EventID] = e
	}
	var missing []string
	for _, id := range pdu.PrevEventIDs() {
		if pe := have[id]; pe == nil || pe.AfterSnapshot == 0 {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return false, &MissingPrevError{IDs: missing}
	}
	return true, nil
}

// descendsFrom reports whether ancestor is reachable backwards through
// prev_events from the given events, looking no further back than its
// depth (and a bounded number of steps).
func (s *Server) descendsFrom(ctx context.Context, from []string, ancestor string) bool {
	anc, err := s.db.EventByID(ctx, ancestor)
	if err != nil {
		return false
	}
	seen := map[string]bool{}
	frontier := from
	for steps := 0; len(frontier) > 0 && steps < 64; steps++ {
		evs, err := s.db.EventsByIDs(ctx, frontier)
		if err != nil {
			return false
		}
		frontier = nil
		for _, e := range evs {
			if e.EventID == ancestor {
				return true
			}
			if e.Depth <= anc.Depth {
				continue
			}
			for _, p := range gjson.GetBytes(e.JSON, "prev_events").Array() {
				id := p.Str
				if p.IsArray() {
					id = p.Get("0").Str
				}
				if id == ancestor {
					return true
				}
				if id != "" && !seen[id] {
					seen[id] = true
					frontier = append(frontier, id)
				}
			}
		}
	}
	return false
}

// SharingUsers returns the user and everyone joined to a room the user is
// joined to (the audience of their presence and device changes).
func (s *Server) SharingUsers(ctx context.Context, userID string) ([]string, error) {
	rooms, err := s.db.RoomsByMembership(ctx, userID, spec.Join)
	if err != nil {
		return nil, err
	}
	return s.membersOf(ctx, userID, rooms), nil
}

// membersOf returns userID and the joined members of rooms, each once.
func (s *Server) membersOf(ctx context.Context, userID string, rooms []string) []string {
	seen := map[string]bool{userID: true}
	out := []string{userID}
	for _, room := range rooms {
		members, _ := s.MembersWith(ctx, room, spec.Join)
		for _, m := range members {
			if !seen[m] {
				seen[m] = true
				out = append(out, m)
			}
		}
	}
	return out
}

// MembersOfRooms is membersOf for callers that already hold the user's
// joined rooms (a sync).
func (s *Server) MembersOfRooms(ctx context.Context, userID string, rooms []string) []string {
	return s.membersOf(ctx, userID, rooms)
}

// received is the stored form of an event from another server, with the
// peer that relayed it when the context names one (the amateur-radio mode
// records it: FCC §97.219).
func received(ctx context.Context, p gomatrixserverlib.PDU, roomID string) *storage.Event {
	e := &storage.Event{EventID: p.EventID(), RoomID: roomID, Type: p.Type(), StateKey: p.StateKey(),
		Sender: string(p.SenderID()), Depth: p.Depth(), OriginTS: int64(p.OriginServerTS()), JSON: p.JSON()}
	if rel := part97.RelayFrom(ctx); rel != nil {
		e.RelayServer, e.RelayAddr = rel.Server, rel.Addr()
	}
	return e
}

// sameSet reports whether a and b hold the same strings.
func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	in := make(map[string]bool, len(a))
	for _, x := range a {
		in[x] = true
	}
	for _, x := range b {
		if !in[x] {
			return false
		}
	}
	return true
}

// PromoteOutliers puts events held only as state (outliers) into the
// room's timeline where they stand in the DAG, as backfill does: they are
// history, below every sync position, shown by /messages.
func (s *Server) PromoteOutliers(ctx context.Context, roomID string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	r, err := s.lockRoom(ctx, roomID)
	if err != nil {
		return err
	}
	defer r.mu.Unlock()
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		for _, id := range ids {
			if err := tx.PromoteOutlier(ctx, id); err != nil {
				return err
			}
		}
		return nil
	})
	s.events.RemoveIf(func(e *storage.Event) bool { return e.RoomID == roomID && e.Outlier })
	return err
}
