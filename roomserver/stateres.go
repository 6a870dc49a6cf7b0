package roomserver

import (
	"errors"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
)

// State resolution v2 and v2.1, written from the spec (room versions 2-11:
// "State resolution v2"; room version 12: v2.1, MSC4297). v2.1 differs in
// two places: the full conflicted set also holds the conflicted state
// subgraph, and the iterative auth checks of power events start from an
// empty state instead of the unconflicted state. Room version 12 events
// do not list the create event in auth_events (the room ID is its hash),
// so it is added to every auth check here.
//
// gomatrixserverlib's entry point for v2.1 is marked untested and drops
// or panics on room version 12 state; this one is ours.

type stateResolver struct {
	v21        bool
	privileged bool                             // room version 12: creators outrank everyone
	events     map[string]gomatrixserverlib.PDU // every event involved, by ID
	rejected   func(string) bool
	create     gomatrixserverlib.PDU
	chains     map[string]map[string]bool // memoised auth chains
}

type stateKey struct{ typ, key string }

func keyOf(p gomatrixserverlib.PDU) stateKey { return stateKey{p.Type(), *p.StateKey()} }

// resolveState resolves state sets (each a list of state events) with
// authEvents holding every event of their auth chains.
func resolveState(impl gomatrixserverlib.IRoomVersion, sets [][]gomatrixserverlib.PDU, authEvents []gomatrixserverlib.PDU, rejected func(string) bool) ([]gomatrixserverlib.PDU, error) {
	r := &stateResolver{
		v21:        impl.StateResAlgorithm() == gomatrixserverlib.StateResV2_1,
		privileged: impl.PrivilegedCreators(),
		events:     map[string]gomatrixserverlib.PDU{},
		rejected:   rejected,
		chains:     map[string]map[string]bool{},
	}
	for _, p := range authEvents {
		r.events[p.EventID()] = p
	}
	for _, set := range sets {
		for _, p := range set {
			r.events[p.EventID()] = p
		}
	}
	for _, p := range r.events {
		if p.Type() == spec.MRoomCreate && p.StateKey() != nil && *p.StateKey() == "" {
			r.create = p
		}
	}
	if r.create == nil {
		return nil, errors.New("state resolution: no create event")
	}

	// 1. Unconflicted and conflicted state.
	maps := make([]map[stateKey]string, len(sets))
	keys := map[stateKey]bool{}
	for i, set := range sets {
		maps[i] = map[stateKey]string{}
		for _, p := range set {
			if p.StateKey() != nil {
				maps[i][keyOf(p)] = p.EventID()
				keys[keyOf(p)] = true
			}
		}
	}
	unconflicted := map[stateKey]string{}
	conflicted := map[string]bool{}
	for k := range keys {
		first, same := maps[0][k], true
		for _, m := range maps[1:] {
			if id, ok := m[k]; !ok || id != first {
				same = false
			}
		}
		if same && first != "" {
			unconflicted[k] = first
			continue
		}
		for _, m := range maps {
			if id, ok := m[k]; ok {
				conflicted[id] = true
			}
		}
	}

	// 2. The full conflicted set: conflicted events, the auth difference
	// and (v2.1) the conflicted state subgraph.
	full := map[string]bool{}
	for id := range conflicted {
		full[id] = true
	}
	var chains []map[string]bool
	for _, set := range sets {
		c := map[string]bool{}
		for _, p := range set {
			for id := range r.authChain(p.EventID()) {
				c[id] = true
			}
		}
		chains = append(chains, c)
	}
	for _, c := range chains {
		for id := range c {
			inAll := true
			for _, o := range chains {
				inAll = inAll && o[id]
			}
			if !inAll {
				full[id] = true
			}
		}
	}
	if r.v21 {
		for id := range r.conflictedSubgraph(conflicted) {
			full[id] = true
		}
	}
	for id := range full {
		if r.events[id] == nil || r.rejected(id) {
			delete(full, id)
		}
	}

	// 3. Power events and their auth ancestors within the full set, in
	// reverse topological power order, checked from the unconflicted state
	// (v2) or from nothing (v2.1).
	power := map[string]bool{}
	for id := range full {
		if isPowerEvent(r.events[id]) {
			power[id] = true
			for a := range r.authChain(id) {
				if full[a] {
					power[a] = true
				}
			}
		}
	}
	partial := map[stateKey]gomatrixserverlib.PDU{}
	if !r.v21 {
		for k, id := range unconflicted {
			if p := r.events[id]; p != nil {
				partial[k] = p
			}
		}
	}
	r.authAndApply(partial, r.powerOrder(power))

	// 4. The rest of the full set in mainline order, checked on top.
	others := map[string]bool{}
	for id := range full {
		if !power[id] {
			others[id] = true
		}
	}
	r.authAndApply(partial, r.mainlineOrder(others, partial[stateKey{spec.MRoomPowerLevels, ""}]))

	// 5. The unconflicted state wins over anything resolved.
	for k, id := range unconflicted {
		if p := r.events[id]; p != nil {
			partial[k] = p
		}
	}
	out := make([]gomatrixserverlib.PDU, 0, len(partial))
	for _, p := range partial {
		out = append(out, p)
	}
	return out, nil
}

// authIDs lists an event's auth events, with the create event in room
// version 12.
func (r *stateResolver) authIDs(p gomatrixserverlib.PDU) []string {
	ids := p.AuthEventIDs()
	if r.privileged && p.EventID() != r.create.EventID() {
		ids = append(ids[:len(ids):len(ids)], r.create.EventID())
	}
	return ids
}

// authChain is the set of an event's auth ancestors (not itself).
func (r *stateResolver) authChain(id string) map[string]bool {
	if c, ok := r.chains[id]; ok {
		return c
	}
	c := map[string]bool{}
	r.chains[id] = c // cycles cannot recurse forever
	p := r.events[id]
	if p == nil {
		return c
	}
	for _, a := range r.authIDs(p) {
		c[a] = true
		for x := range r.authChain(a) {
			c[x] = true
		}
	}
	return c
}

// conflictedSubgraph returns the events on auth paths between conflicted
// events: ancestors of a conflicted event that have a conflicted event
// among their own ancestors (or are conflicted).
func (r *stateResolver) conflictedSubgraph(conflicted map[string]bool) map[string]bool {
	reaches := map[string]int8{} // 0 unknown, 1 yes, 2 no
	var reach func(id string) bool
	reach = func(id string) bool {
		switch reaches[id] {
		case 1:
			return true
		case 2:
			return false
		}
		reaches[id] = 2
		p := r.events[id]
		if p == nil {
			return false
		}
		for _, a := range r.authIDs(p) {
			if conflicted[a] || reach(a) {
				reaches[id] = 1
				return true
			}
		}
		return false
	}
	out := map[string]bool{}
	for c := range conflicted {
		for a := range r.authChain(c) {
			if conflicted[a] || reach(a) {
				out[a] = true
			}
		}
	}
	return out
}

func isPowerEvent(p gomatrixserverlib.PDU) bool {
	if p.StateKey() == nil {
		return false
	}
	switch p.Type() {
	case spec.MRoomPowerLevels, spec.MRoomJoinRules:
		return *p.StateKey() == ""
	case spec.MRoomMember:
		m := gjson.GetBytes(p.Content(), "membership").Str
		return (m == spec.Leave || m == spec.Ban) && string(p.SenderID()) != *p.StateKey()
	}
	return false
}

// senderPower is the sender's power level by the event's own auth events
// (creators: unlimited in room version 12, 100 without a power-levels
// event before).
func (r *stateResolver) senderPower(p gomatrixserverlib.PDU) int64 {
	sender := string(p.SenderID())
	if r.privileged {
		for _, c := range gomatrixserverlib.CreatorsFromCreateEvent(r.create) {
			if c == sender {
				return gomatrixserverlib.CreatorPowerLevel
			}
		}
	}
	for _, a := range p.AuthEventIDs() {
		ae := r.events[a]
		if ae == nil || ae.Type() != spec.MRoomPowerLevels || ae.StateKey() == nil || *ae.StateKey() != "" {
			continue
		}
		pl, err := gomatrixserverlib.NewPowerLevelContentFromEvent(ae)
		if err != nil {
			return 0
		}
		return pl.UserLevel(p.SenderID())
	}
	if string(r.create.SenderID()) == sender {
		return 100
	}
	return 0
}

// powerOrder sorts events by reverse topological power ordering: auth
// ancestors first; among the rest, higher sender power, then earlier
// origin_server_ts, then smaller event ID (Kahn's algorithm).
func (r *stateResolver) powerOrder(set map[string]bool) []gomatrixserverlib.PDU {
	type node struct {
		p     gomatrixserverlib.PDU
		power int64
		deps  int
	}
	nodes := map[string]*node{}
	for id := range set {
		nodes[id] = &node{p: r.events[id], power: r.senderPower(r.events[id])}
	}
	children := map[string][]string{}
	for id, n := range nodes {
		for _, a := range r.authIDs(n.p) {
			if _, ok := nodes[a]; ok {
				n.deps++
				children[a] = append(children[a], id)
			}
		}
	}
	less := func(a, b *node) bool {
		if a.power != b.power {
			return a.power > b.power
		}
		if a.p.OriginServerTS() != b.p.OriginServerTS() {
			return a.p.OriginServerTS() < b.p.OriginServerTS()
		}
		return a.p.EventID() < b.p.EventID()
	}
	var ready []*node
	for _, n := range nodes {
		if n.deps == 0 {
			ready = append(ready, n)
		}
	}
	out := make([]gomatrixserverlib.PDU, 0, len(nodes))
	for len(ready) > 0 {
		sort.Slice(ready, func(i, j int) bool { return less(ready[i], ready[j]) })
		n := ready[0]
		ready = ready[1:]
		out = append(out, n.p)
		for _, c := range children[n.p.EventID()] {
			if nodes[c].deps--; nodes[c].deps == 0 {
				ready = append(ready, nodes[c])
			}
		}
	}
	return out
}

// mainlineOrder sorts events by their position on the mainline of the
// resolved power-levels event, then origin_server_ts, then event ID.
func (r *stateResolver) mainlineOrder(set map[string]bool, pl gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	// The mainline: the resolved power levels and its power-levels auth
	// ancestors, oldest position 1.
	var mainline []string
	for p := pl; p != nil; p = r.plParent(p) {
		mainline = append(mainline, p.EventID())
	}
	pos := map[string]int{}
	for i, id := range mainline {
		pos[id] = len(mainline) - i
	}
	depthOf := func(p gomatrixserverlib.PDU) int {
		for cur := p; cur != nil; cur = r.plParent(cur) {
			if d, ok := pos[cur.EventID()]; ok {
				return d
			}
		}
		return 0
	}
	type item struct {
		p     gomatrixserverlib.PDU
		depth int
	}
	items := make([]item, 0, len(set))
	for id := range set {
		items = append(items, item{r.events[id], depthOf(r.events[id])})
	}
	sort.Slice(items, func(i, j int) bool {
		a, b := items[i], items[j]
		if a.depth != b.depth {
			return a.depth < b.depth
		}
		if a.p.OriginServerTS() != b.p.OriginServerTS() {
			return a.p.OriginServerTS() < b.p.OriginServerTS()
		}
		return a.p.EventID() < b.p.EventID()
	})
	out := make([]gomatrixserverlib.PDU, len(items))
	for i, it := range items {
		out[i] = it.p
	}
	return out
}

// plParent is the power-levels event among an event's auth events.
func (r *stateResolver) plParent(p gomatrixserverlib.PDU) gomatrixserverlib.PDU {
	for _, a := range p.AuthEventIDs() {
		if ae := r.events[a]; ae != nil && ae.Type() == spec.MRoomPowerLevels && ae.StateKey() != nil && *ae.StateKey() == "" {
			return ae
		}
	}
	return nil
}

// authAndApply runs the iterative auth checks: each event is checked
// against its auth events, overridden by the partial state for the same
// type and state key, and added to the partial state if allowed.
func (r *stateResolver) authAndApply(partial map[stateKey]gomatrixserverlib.PDU, evs []gomatrixserverlib.PDU) {
	for _, p := range evs {
		if p.StateKey() == nil || r.rejected(p.EventID()) {
			continue
		}
		byKey := map[stateKey]gomatrixserverlib.PDU{}
		for _, a := range r.authIDs(p) {
			if ae := r.events[a]; ae != nil && ae.StateKey() != nil && !r.rejected(a) {
				byKey[keyOf(ae)] = ae
			}
		}
		for _, t := range gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{p}).Tuples() {
			if s, ok := partial[stateKey{t.EventType, t.StateKey}]; ok {
				byKey[stateKey{t.EventType, t.StateKey}] = s
			}
		}
		list := make([]gomatrixserverlib.PDU, 0, len(byKey))
		for _, ae := range byKey {
			list = append(list, ae)
		}
		provider, err := gomatrixserverlib.NewAuthEvents(list)
		if err != nil {
			continue
		}
		if gomatrixserverlib.Allowed(p, provider, UserIDForSender) == nil {
			partial[keyOf(p)] = p
		}
	}
}
