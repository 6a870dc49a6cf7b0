package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/roomserver"
	"repeater/storage"
)

// Token is a sync position: the database stream position and the ephemeral
// (typing, presence) position. Rendered "s<pos>_<epos>".
type Token struct{ Pos, EPos int64 }

func (t Token) String() string { return fmt.Sprintf("s%d_%d", t.Pos, t.EPos) }

func parseToken(s string) (Token, error) {
	var t Token
	rest, ok := strings.CutPrefix(s, "s")
	if !ok {
		return t, fmt.Errorf("bad token")
	}
	a, b, ok := strings.Cut(rest, "_")
	var err error
	if t.Pos, err = strconv.ParseInt(a, 10, 64); err != nil || t.Pos < 0 {
		return t, fmt.Errorf("bad token")
	}
	if ok {
		if t.EPos, err = strconv.ParseInt(b, 10, 64); err != nil {
			return t, fmt.Errorf("bad token")
		}
	}
	return t, nil
}

type syncRequest struct {
	newMembers []string        // users who joined a shared room in this sync's range
	active     map[string]bool // rooms with events in (since, to]; nil: unknown
	ignored    map[string]bool // senders the user ignores (m.ignored_user_list)
	dev        *auth.Device
	since      *Token
	to         Token
	filter     *Filter
	fullState  bool
	bundle     []bundleSlot // timelines awaiting bundled aggregations (relations.go)
}

type roomResp map[string]any

type syncResponse struct {
	NextBatch   string         `json:"next_batch"`
	Rooms       map[string]any `json:"rooms"`
	AccountData map[string]any `json:"account_data"`
	Presence    map[string]any `json:"presence"`
	ToDevice    map[string]any `json:"to_device"`
	DeviceLists map[string]any `json:"device_lists"`
	OTKCounts   map[string]int `json:"device_one_time_keys_count"`
	Fallback    []string       `json:"device_unused_fallback_key_types"`
	empty       bool
}

// sync handles GET /sync (spec: Client-Server API, "Syncing").
func (s *Sync) sync(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	q := r.URL.Query()
	req := &syncRequest{dev: d, fullState: q.Get("full_state") == "true"}
	if since := q.Get("since"); since != "" {
		t, err := parseToken(since)
		if err != nil {
			return nil, httputil.InvalidParam("Invalid since token")
		}
		req.since = &t
	}
	timeout := time.Duration(0)
	if ts := q.Get("timeout"); ts != "" {
		ms, err := strconv.ParseInt(ts, 10, 64)
		if err != nil || ms < 0 {
			return nil, httputil.InvalidParam("Invalid timeout")
		}
		timeout = min(time.Duration(ms)*time.Millisecond, 5*time.Minute)
	}
	f, err := s.loadFilter(r.Context(), d, q.Get("filter"))
	if err != nil {
		return nil, err
	}
	req.filter = f
	req.ignored = s.ignoredUsers(r.Context(), d)
	setPresence := q.Get("set_presence")
	if setPresence != "" && setPresence != "online" && setPresence != "offline" && setPresence != "unavailable" {
		return nil, httputil.InvalidParam("Invalid set_presence")
	}
	if s.presenceOn && s.eph.syncing(d.UserID, setPresence) {
		s.wakeSharing(r.Context(), d.UserID)
	}

	deadline := time.Now().Add(timeout)
	for {
		ch := s.notifier.Listen(d.UserID)
		pos, err := s.db.StreamPos(r.Context())
		if err != nil {
			return nil, err
		}
		req.to = Token{Pos: pos, EPos: s.eph.pos.Load()}
		if req.since != nil && req.since.Pos > req.to.Pos {
			// A token from the future (e.g. a restored database): start over.
			req.since = nil
		}
		resp, err := s.build(r.Context(), req)
		if err != nil {
			return nil, err
		}
		wait := time.Until(deadline)
		if !resp.empty || req.since == nil || req.fullState || wait <= 0 {
			return resp, nil
		}
		timer := time.NewTimer(wait)
		select {
		case <-ch:
			timer.Stop()
		case <-timer.C:
		case <-s.stopping:
			timer.Stop()
			return resp, nil
		case <-r.Context().Done():
			timer.Stop()
			return nil, r.Context().Err()
		}
	}
}

func (s *Sync) loadFilter(ctx context.Context, d *auth.Device, param string) (*Filter, error) {
	if param == "" {
		return &Filter{}, nil
	}
	var raw []byte
	if strings.HasPrefix(param, "{") {
		raw = []byte(param)
	} else {
		id, err := strconv.ParseInt(param, 10, 64)
		if err != nil {
			return nil, httputil.InvalidParam("Invalid filter ID")
		}
		// Stored filters never change: cache them.
		key := d.Localpart + "|" + param
		if f, ok := s.filters.Get(key); ok {
			return f, nil
		}
		raw, err = s.db.GetFilter(ctx, d.Localpart, id)
		if err != nil {
			return nil, httputil.InvalidParam("Unknown filter")
		}
		f, err := parseFilter(raw)
		if err != nil {
			return nil, httputil.BadJSON("Invalid filter: " + err.Error())
		}
		s.filters.Put(key, f)
		return f, nil
	}
	f, err := parseFilter(raw)
	if err != nil {
		return nil, httputil.BadJSON("Invalid filter: " + err.Error())
	}
	return f, nil
}

func (s *Sync) build(ctx context.Context, req *syncRequest) (*syncResponse, error) {
	userID := req.dev.UserID
	var since Token
	if req.since != nil {
		since = *req.since
	}
	resp := &syncResponse{
		NextBatch:   req.to.String(),
		AccountData: map[string]any{"events": []any{}},
		Presence:    map[string]any{"events": []any{}},
		ToDevice:    map[string]any{"events": []any{}},
		DeviceLists: map[string]any{"changed": []string{}, "left": []string{}},
		OTKCounts:   map[string]int{},
		empty:       true,
	}
	join, invite, leave, knock := map[string]any{}, map[string]any{}, map[string]any{}, map[string]any{}
	resp.Rooms = map[string]any{"join": join, "invite": invite, "leave": leave, "knock": knock}
	rf := &req.filter.Room
	req.bundle = nil

	// Membership changes in range decide which rooms are new, left or invited.
	// firstMembership's predecessor tells the membership at `since`.
	latestMembership := map[string]*storage.Event{}
	firstMembership := map[string]*storage.Event{}
	idx := s.notifier.idx
	if req.since != nil && idx.userChanged(userID, since.Pos) {
		evs, err := s.db.MembershipEvents(ctx, userID, since.Pos, req.to.Pos)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			latestMembership[e.RoomID] = e
			if firstMembership[e.RoomID] == nil {
				firstMembership[e.RoomID] = e
			}
		}
	}

	joinedRooms, err := s.db.RoomsByMembership(ctx, userID, spec.Join)
	if err != nil {
		return nil, err
	}
	req.active, req.newMembers = nil, nil
	if req.since != nil {
		if idx.known(since.Pos) {
			req.active = map[string]bool{}
			for _, roomID := range joinedRooms {
				if idx.roomChanged(roomID, since.Pos) {
					req.active[roomID] = true
				}
			}
		} else if req.active, err = s.db.RoomsWithEvents(ctx, since.Pos, req.to.Pos); err != nil {
			return nil, err
		}
		// Rooms we left or were invited to in range have events too.
		for roomID := range latestMembership {
			req.active[roomID] = true
		}
	}
	joinedSet := map[string]bool{}
	var newRooms []string
	for _, roomID := range joinedRooms {
		joinedSet[roomID] = true
		if !rf.AllowsRoom(roomID) {
			continue
		}
		me := latestMembership[roomID]
		if me != nil && gjson.GetBytes(me.JSON, "content.membership").Str != spec.Join {
			// Their membership in range was not join at the end; the current
			// join happened after req.to. Pick it up next time.
			continue
		}
		newlyJoined := req.since == nil || (me != nil && !s.wasJoinedBefore(ctx, firstMembership[roomID]))
		rr, nonEmpty, err := s.roomData(ctx, req, roomID, since, req.to.Pos, newlyJoined || req.fullState, spec.Join)
		if err != nil {
			return nil, err
		}
		if nonEmpty || newlyJoined {
			join[roomID] = rr
			resp.empty = false
		}
		if newlyJoined && req.since != nil {
			newRooms = append(newRooms, roomID)
		}
	}

	// Knocks waiting for an answer (spec: "Knocking on rooms").
	if req.since == nil {
		knocked, err := s.db.RoomsByMembership(ctx, userID, spec.Knock)
		if err != nil {
			return nil, err
		}
		for _, roomID := range knocked {
			if !rf.AllowsRoom(roomID) {
				continue
			}
			ev, err := s.rs.CurrentStateEvent(ctx, roomID, spec.MRoomMember, userID)
			if err != nil {
				_, ev, err = s.rs.RemoteInvite(ctx, roomID, userID)
			}
			if err == nil && ev != nil {
				knock[roomID] = s.knockData(ctx, ev, req.dev)
				resp.empty = false
			}
		}
	}

	// Invites.
	if req.since == nil {
		invited, err := s.db.RoomsByMembership(ctx, userID, spec.Invite)
		if err != nil {
			return nil, err
		}
		for _, roomID := range invited {
			if rf.AllowsRoom(roomID) {
				ev, err := s.rs.CurrentStateEvent(ctx, roomID, spec.MRoomMember, userID)
				if err != nil {
					// An invite to a room on another server that we are not in.
					_, ev, err = s.rs.RemoteInvite(ctx, roomID, userID)
				}
				if err != nil || ev == nil || req.ignored[ev.Sender] {
					continue
				}
				invite[roomID] = s.inviteData(ctx, ev, req.dev)
				resp.empty = false
			}
		}
	}
	for roomID, me := range latestMembership {
		if !rf.AllowsRoom(roomID) {
			continue
		}
		switch gjson.GetBytes(me.JSON, "content.membership").Str {
		case spec.Knock:
			if cur, _ := s.db.CurrentMembership(ctx, roomID, userID); cur == spec.Knock {
				knock[roomID] = s.knockData(ctx, me, req.dev)
				resp.empty = false
			}
		case spec.Invite:
			if cur, _ := s.db.CurrentMembership(ctx, roomID, userID); cur == spec.Invite && !req.ignored[me.Sender] {
				invite[roomID] = s.inviteData(ctx, me, req.dev)
				resp.empty = false
			}
		case spec.Leave, spec.Ban:
			if joinedSet[roomID] {
				continue
			}
			// A rejected invite or a leave from a room we never saw still
			// shows up, so clients can drop the invite.
			if _, err := s.rs.RoomVersion(ctx, roomID); err != nil {
				// A room on another server we were only invited to.
				leave[roomID] = map[string]any{"state": map[string]any{"events": []any{}}, "account_data": map[string]any{"events": []any{}},
					"timeline": map[string]any{"events": []any{s.rs.ClientEvent(ctx, me, req.dev.UserID, req.dev.DeviceID)}, "limited": false}}
				resp.empty = false
				continue
			}
			rr, _, err := s.roomData(ctx, req, roomID, since, me.StreamPos, req.fullState || !s.wasJoinedBefore(ctx, firstMembership[roomID]), "leave")
			if err != nil {
				return nil, err
			}
			leave[roomID] = rr
			resp.empty = false
		}
	}
	if req.since == nil && rf.IncludeLeave {
		for _, m := range []string{spec.Leave, spec.Ban} {
			rooms, err := s.db.RoomsByMembership(ctx, userID, m)
			if err != nil {
				return nil, err
			}
			for _, roomID := range rooms {
				if !rf.AllowsRoom(roomID) {
					continue
				}
				if forgotten, _ := s.db.IsForgotten(ctx, req.dev.Localpart, roomID); forgotten {
					continue
				}
				me, err := s.rs.CurrentStateEvent(ctx, roomID, spec.MRoomMember, userID)
				if err != nil || me == nil {
					continue
				}
				rr, _, err := s.roomData(ctx, req, roomID, since, me.StreamPos, true, "leave")
				if err != nil {
					return nil, err
				}
				leave[roomID] = rr
			}
		}
	}

	// Bundled aggregations of every room's timeline, in one batch.
	s.applyBundles(ctx, req)

	// Account data.
	var ads []storage.AccountData
	if req.since == nil || idx.userChanged(userID, since.Pos) {
		if ads, err = s.db.AccountDataSince(ctx, req.dev.Localpart, since.Pos, req.to.Pos); err != nil {
			return nil, err
		}
	}
	if req.since == nil {
		// Push rules are account data every client expects in its first
		// sync, changed or not (Client-Server API, "Push Rules").
		have := false
		for _, ad := range ads {
			have = have || (ad.RoomID == "" && ad.Type == storage.PushRulesType)
		}
		if !have {
			ads = append(ads, storage.AccountData{Type: storage.PushRulesType})
		}
	}
	global := []any{}
	for _, ad := range ads {
		ev := map[string]any{"type": ad.Type, "content": json.RawMessage(ad.Content)}
		if ad.RoomID == "" && ad.Type == storage.PushRulesType {
			// Stored rules are rendered over this version's defaults.
			ev["content"] = s.rules.Get(userID, ad.Content).Document()
		}
		if ad.RoomID == "" {
			if req.filter.AccountData.Allows(ad.Type, "", "") {
				global = append(global, ev)
			}
			continue
		}
		if !rf.AccountData.Allows(ad.Type, "", ad.RoomID) {
			continue
		}
		rr, ok := join[ad.RoomID].(roomResp)
		if !ok {
			if !joinedSet[ad.RoomID] || !rf.AllowsRoom(ad.RoomID) {
				continue
			}
			rr = s.emptyJoinedRoom()
			join[ad.RoomID] = rr
		}
		rad := rr["account_data"].(map[string]any)
		rad["events"] = append(rad["events"].([]any), ev)
		resp.empty = false
	}
	if lim := req.filter.AccountData.LimitOr(len(global), len(global)); lim < len(global) {
		global = global[:lim]
	}
	if len(global) > 0 {
		resp.AccountData["events"] = global
		resp.empty = false
	}

	// Presence of users who share a room with us.
	// Everyone sharing a room with us, found once for presence and
	// device lists.
	var sharing []string
	sharingUsers := func() []string {
		if sharing == nil {
			sharing = s.rs.MembersOfRooms(ctx, userID, joinedRooms)
		}
		return sharing
	}
	if s.presenceOn {
		users := map[string]bool{}
		for _, m := range sharingUsers() {
			users[m] = true
		}
		epos := since.EPos
		if req.since == nil {
			epos = 0
		}
		changed := s.eph.presenceSince(users, epos)
		// People who joined our rooms: their presence is new to us.
		for _, m := range req.newMembers {
			if _, ok := changed[m]; !ok {
				changed[m], _ = s.eph.presenceOf(m)
			}
		}
		// Members of rooms joined in this sync: likewise.
		for _, roomID := range newRooms {
			members, _ := s.rs.MembersWith(ctx, roomID, spec.Join)
			for _, m := range members {
				if _, ok := changed[m]; !ok {
					changed[m], _ = s.eph.presenceOf(m) // offline if never seen
				}
			}
		}
		// When others' presence comes, our own comes along, so a client
		// always has the whole picture of the people it sees.
		if _, ok := changed[userID]; !ok && len(changed) > 0 {
			changed[userID], _ = s.eph.presenceOf(userID)
		}
		if len(changed) > 0 {
			ids := make([]string, 0, len(changed))
			for u := range changed {
				ids = append(ids, u)
			}
			sort.Strings(ids)
			evs := []any{}
			for _, u := range ids {
				if req.filter.Presence.Allows("m.presence", u, "") {
					evs = append(evs, map[string]any{"type": "m.presence", "sender": u, "content": changed[u]})
				}
			}
			if lim := req.filter.Presence.LimitOr(len(evs), len(evs)); lim < len(evs) {
				evs = evs[:lim]
			}
			if len(evs) > 0 {
				resp.Presence["events"] = evs
				resp.empty = false
			}
		}
	}
	if err := s.e2ee(ctx, req, resp, since, sharingUsers); err != nil {
		return nil, err
	}
	return resp, nil
}

// e2ee fills the encryption parts of a sync (spec: "End-to-End Encryption"):
// to-device messages for this device (those before since are acknowledged
// and deleted), device-list changes of users sharing a room, one-time key
// counts and unused fallback key types.
func (s *Sync) e2ee(ctx context.Context, req *syncRequest, resp *syncResponse, since Token, sharingUsers func() []string) error {
	d := req.dev
	if req.since != nil && since.Pos > 0 {
		if err := s.db.AckToDevice(ctx, d.UserID, d.DeviceID, since.Pos); err != nil {
			return err
		}
	}
	if req.since == nil || s.notifier.idx.userChanged(d.UserID, since.Pos) {
		msgs, err := s.db.ToDeviceSince(ctx, d.UserID, d.DeviceID, since.Pos, req.to.Pos, 100000)
		if err != nil {
			return err
		}
		evs := make([]any, 0, len(msgs))
		for _, m := range msgs {
			evs = append(evs, map[string]any{"type": m.Type, "sender": m.Sender, "content": json.RawMessage(m.Content)})
		}
		if len(evs) > 0 {
			resp.ToDevice["events"] = evs
			resp.empty = false
		}
		if req.since != nil {
			changed, err := s.db.DeviceListChangesFor(ctx, d.UserID, sharingUsers(), since.Pos, req.to.Pos)
			if err != nil {
				return err
			}
			if len(changed) > 0 {
				sort.Strings(changed)
				resp.DeviceLists["changed"] = changed
				resp.empty = false
			}
		}
	}
	var rooms []string // rooms whose membership changed in range
	if req.since != nil {
		for r := range req.active {
			if s.notifier.idx.membersChanged(r, since.Pos) {
				rooms = append(rooms, r)
			}
		}
	}
	if len(rooms) > 0 {
		// Users who started or stopped sharing a room with us.
		joined, left, err := s.rs.DeviceListDelta(ctx, d.UserID, rooms, since.Pos, req.to.Pos, sharingUsers())
		if err != nil {
			return err
		}
		if len(joined) > 0 {
			have, _ := resp.DeviceLists["changed"].([]string)
			resp.DeviceLists["changed"] = mergeSorted(have, joined)
			resp.empty = false
		}
		if len(left) > 0 {
			resp.DeviceLists["left"] = left
			resp.empty = false
		}
	}
	counts, fb, err := s.db.DeviceKeyCounts(ctx, d.UserID, d.DeviceID)
	if err != nil {
		return err
	}
	resp.OTKCounts, resp.Fallback = counts, fb
	return nil
}

func (s *Sync) emptyJoinedRoom() roomResp {
	return roomResp{
		"timeline":             map[string]any{"events": []any{}, "limited": false},
		"state":                map[string]any{"events": []any{}},
		"ephemeral":            map[string]any{"events": []any{}},
		"account_data":         map[string]any{"events": []any{}},
		"unread_notifications": map[string]any{"notification_count": 0, "highlight_count": 0},
		"summary":              map[string]any{},
	}
}

// wasJoinedBefore reports whether the user was joined just before the
// membership event me.
func (s *Sync) wasJoinedBefore(ctx context.Context, me *storage.Event) bool {
	if me.ReplacesNID == 0 {
		return false
	}
	prev, err := s.rs.Event(ctx, me.ReplacesNID)
	if err != nil {
		return false
	}
	return gjson.GetBytes(prev.JSON, "content.membership").Str == spec.Join
}

// roomData builds one room's section: timeline of events in (since, to],
// state before the timeline (all of it when full), ephemeral data.
func (s *Sync) roomData(ctx context.Context, req *syncRequest, roomID string, since Token, to int64, full bool, kind string) (roomResp, bool, error) {
	userID := req.dev.UserID
	rf := &req.filter.Room
	rr := s.emptyJoinedRoom()
	if kind != spec.Join {
		delete(rr, "ephemeral")
		delete(rr, "unread_notifications")
		delete(rr, "summary")
	}
	nonEmpty := false
	limit := rf.Timeline.LimitOr(20, 1000)
	from := since.Pos
	if full {
		from = 0
	}
	var timeline []*storage.Event
	limited := false
	if limit > 0 && !full && req.active != nil && !req.active[roomID] {
		// Nothing new in this room: no timeline query.
	} else if limit > 0 {
		// Walk back from `to` until the filter has let `limit` events
		// through or the range is exhausted.
		upper := to
		batch := limit
		if rf.Timeline.Types != nil || rf.Timeline.NotTypes != nil || rf.Timeline.Senders != nil || rf.Timeline.NotSenders != nil || len(req.ignored) > 0 {
			batch = max(limit*2, 50) // the filter will drop some
		}
		for rounds := 0; rounds < 20 && len(timeline) < limit; rounds++ {
			evs, more, err := s.db.RoomEventsInRange(ctx, roomID, from, upper, batch)
			if err != nil {
				return nil, false, err
			}
			if len(evs) > 0 {
				upper = evs[0].StreamPos - 1
			}
			vis, err := s.visibleWithCurrentState(ctx, userID, evs)
			if err != nil {
				return nil, false, err
			}
			var kept []*storage.Event
			for _, e := range vis {
				if rf.Timeline.Allows(e.Type, e.Sender, roomID) && !req.ignored[e.Sender] {
					kept = append(kept, e)
				}
			}
			if n := len(timeline) + len(kept); n > limit {
				kept = kept[n-limit:]
				more = true
			}
			timeline = append(kept, timeline...)
			limited = more
			if !more {
				break
			}
		}
	} else {
		limited = true
	}
	tl := rr["timeline"].(map[string]any)
	tlEvents := make([]any, 0, len(timeline))
	senders := map[string]bool{}
	inTimeline := map[string]bool{}
	for _, e := range timeline {
		tlEvents = append(tlEvents, s.render(ctx, req, e))
		senders[e.Sender] = true
		inTimeline[e.EventID] = true
		if e.Type == spec.MRoomMember && e.StateKey != nil && *e.StateKey != userID && kind == spec.Join &&
			gjson.GetBytes(e.JSON, "content.membership").Str == spec.Join {
			req.newMembers = append(req.newMembers, *e.StateKey)
		}
	}
	tl["events"] = tlEvents
	if (limited || full) && len(timeline) > 0 && req.filter.EventFormat != "federation" {
		// Bundled aggregations, for gappy timelines only (spec:
		// "Aggregations of child events"); filled in by applyBundles.
		req.bundle = append(req.bundle, bundleSlot{rendered: tlEvents, evs: timeline})
	}
	// A room joined since the last sync is marked limited, so clients
	// start its timeline afresh.
	tl["limited"] = limited || (full && req.since != nil && kind == spec.Join)
	if len(timeline) > 0 {
		nonEmpty = true
		first := timeline[0]
		tl["prev_batch"] = topoToken(first.Depth, first.StreamPos-1)
		if first.Type == spec.MRoomCreate {
			// Nothing precedes the create event. Pointing just after it
			// (rather than at an empty page) lets clients that always page
			// once, sytest among them, find the room's beginning.
			tl["prev_batch"] = topoToken(first.Depth, first.StreamPos)
		}
	} else {
		// A stream token pages from the same place (see parseTopo) and
		// costs no query.
		tl["prev_batch"] = Token{Pos: to, EPos: req.to.EPos}.String()
	}

	// State: the state at the start of the timeline, or what changed
	// between since and the start of the timeline.
	var stateEvs []*storage.Event
	var startSnap int64
	if len(timeline) > 0 {
		startSnap = timeline[0].BeforeSnapshot
		// A membership event kept for a room this server was not yet in
		// (an invite over federation) has no state before it: the room's
		// state starts at the first event that has some (the join).
		for _, e := range timeline {
			if e.BeforeSnapshot != 0 || e.Type == spec.MRoomCreate {
				startSnap = e.BeforeSnapshot
				break
			}
		}
	} else if full || limited {
		last, err := s.db.LatestEventAtStream(ctx, roomID, to)
		if err == nil {
			startSnap = last.AfterSnapshot
		}
	}
	if full {
		evs, err := s.rs.StateEventsAt(ctx, startSnap)
		if err != nil {
			return nil, false, err
		}
		stateEvs = evs
	} else if limited {
		evs, err := s.stateDelta(ctx, roomID, since.Pos, startSnap)
		if err != nil {
			return nil, false, err
		}
		stateEvs = evs
	}
	// Lazy-loaded members (spec: "Lazy-loading room members"): a full state
	// carries only the members who sent timeline events (and the user);
	// an incremental one carries the members that changed plus the
	// timeline senders'. Unless include_redundant_members, member events
	// this device was already sent are left out.
	lazy := rf.State.LazyLoadMembers
	var sentKey string
	var sent map[string]string
	if lazy {
		sentKey = req.dev.UserID + "|" + req.dev.DeviceID + "|" + roomID
		sent = map[string]string{}
		if !full {
			if prev, ok := s.sentMembers.Get(sentKey); ok {
				for k, v := range prev {
					sent[k] = v
				}
			}
		}
		have := map[string]bool{}
		for _, e := range stateEvs {
			if e.Type == spec.MRoomMember && e.StateKey != nil {
				have[*e.StateKey] = true
			}
		}
		if len(timeline) > 0 && (!full || limited) {
			snap, err := s.rs.Snapshot(ctx, startSnap)
			if err != nil {
				return nil, false, err
			}
			var nids []int64
			for u := range senders {
				if nid, ok := snap[storage.StateKey{Type: spec.MRoomMember, StateKey: u}]; ok && !have[u] {
					nids = append(nids, nid)
				}
			}
			extra, err := s.rs.Events(ctx, nids)
			if err != nil {
				return nil, false, err
			}
			stateEvs = append(stateEvs, extra...)
		}
	}
	sort.Slice(stateEvs, func(i, j int) bool { return stateEvs[i].StreamPos < stateEvs[j].StreamPos })
	stEvents := []any{}
	for _, e := range stateEvs {
		if inTimeline[e.EventID] || !rf.State.Allows(e.Type, e.Sender, roomID) {
			continue
		}
		if lazy && e.Type == spec.MRoomMember && e.StateKey != nil {
			u := *e.StateKey
			if full && !senders[u] && u != userID {
				continue
			}
			if !rf.State.IncludeRedundantMembers && sent[u] == e.EventID {
				continue
			}
			sent[u] = e.EventID
		}
		stEvents = append(stEvents, s.render(ctx, req, e))
	}
	if lazy {
		for _, e := range timeline {
			if e.Type == spec.MRoomMember && e.StateKey != nil {
				sent[*e.StateKey] = e.EventID
			}
		}
		s.sentMembers.Put(sentKey, sent)
	}
	if len(stEvents) > 0 {
		nonEmpty = true
	}
	rr["state"].(map[string]any)["events"] = stEvents

	if kind == spec.Join {
		eph := []any{}
		epos := since.EPos
		if full {
			epos = 0
		}
		if users, changed := s.eph.typingSince(roomID, epos); changed || (full && len(users) > 0) {
			if users == nil {
				users = []string{}
			}
			if rf.Ephemeral.Allows("m.typing", "", roomID) {
				eph = append(eph, map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}})
			}
		}
		var rcpts []storage.Receipt
		if full || s.notifier.idx.receiptsChanged(roomID, from) {
			var err error
			if rcpts, err = s.db.ReceiptsSince(ctx, roomID, from, to); err != nil {
				return nil, false, err
			}
		}
		if ev := receiptEvent(rcpts, userID); ev != nil && rf.Ephemeral.Allows("m.receipt", "", roomID) {
			eph = append(eph, ev)
		}
		if len(eph) > 0 {
			rr["ephemeral"].(map[string]any)["events"] = eph
			nonEmpty = true
		}
	}
	if kind == spec.Join && (nonEmpty || full) {
		rr["summary"] = s.summary(ctx, roomID, userID)
		var fresh []*storage.Event
		tf := rf.Timeline
		if !full && !limited && tf.Types == nil && tf.NotTypes == nil && tf.Senders == nil && tf.NotSenders == nil && len(req.ignored) == 0 {
			fresh = timeline
			if fresh == nil {
				fresh = []*storage.Event{}
			}
		}
		if rf.Timeline.UnreadThreadNotifications {
			main, threads := s.threadedUnreadCounts(ctx, roomID, userID, req.dev.Localpart, to)
			rr["unread_notifications"] = map[string]any{"notification_count": main.notify, "highlight_count": main.highlight}
			if len(threads) > 0 {
				ut := map[string]any{}
				for root, c := range threads {
					ut[root] = map[string]any{"notification_count": c.notify, "highlight_count": c.highlight}
				}
				rr["unread_thread_notifications"] = ut
			}
		} else {
			n, h := s.unreadCounts(ctx, roomID, userID, req.dev.Localpart, from, to, fresh)
			rr["unread_notifications"] = map[string]any{"notification_count": n, "highlight_count": h}
		}
	}
	return rr, nonEmpty, nil
}

// stateDelta returns the state events in snapshot `to` that differ from
// the room's state at stream position since.
func (s *Sync) stateDelta(ctx context.Context, roomID string, since int64, toSnap int64) ([]*storage.Event, error) {
	var fromSnap int64
	if last, err := s.db.LatestEventAtStream(ctx, roomID, since); err == nil {
		fromSnap = last.AfterSnapshot
	}
	a, err := s.rs.Snapshot(ctx, fromSnap)
	if err != nil {
		return nil, err
	}
	b, err := s.rs.Snapshot(ctx, toSnap)
	if err != nil {
		return nil, err
	}
	var nids []int64
	for k, nid := range b {
		if a[k] != nid {
			nids = append(nids, nid)
		}
	}
	return s.rs.Events(ctx, nids)
}

func (s *Sync) inviteData(ctx context.Context, me *storage.Event, d *auth.Device) map[string]any {
	stripped, err := s.rs.StrippedState(ctx, me.RoomID)
	evs := make([]any, 0, len(stripped)+1)
	for _, st := range stripped {
		evs = append(evs, st)
	}
	if err != nil {
		// A room on another server: the stripped state its server sent.
		if ri, _, err := s.rs.RemoteInvite(ctx, me.RoomID, *me.StateKey); err == nil {
			for _, st := range gjson.ParseBytes(ri.Stripped).Array() {
				evs = append(evs, json.RawMessage(st.Raw))
			}
		}
	}
	evs = append(evs, s.rs.ClientEvent(ctx, me, d.UserID, d.DeviceID))
	return map[string]any{"invite_state": map[string]any{"events": evs}}
}

// knockData is a knocked room's entry: its stripped state and the knock.
func (s *Sync) knockData(ctx context.Context, me *storage.Event, d *auth.Device) map[string]any {
	inv := s.inviteData(ctx, me, d)
	return map[string]any{"knock_state": inv["invite_state"]}
}

// receiptEvent builds an m.receipt event; private receipts only for their owner.
func receiptEvent(rcpts []storage.Receipt, viewer string) map[string]any {
	content := map[string]any{}
	n := 0
	for _, r := range rcpts {
		if r.Type == "m.read.private" && r.UserID != viewer {
			continue
		}
		byType, ok := content[r.EventID].(map[string]any)
		if !ok {
			byType = map[string]any{}
			content[r.EventID] = byType
		}
		users, ok := byType[r.Type].(map[string]any)
		if !ok {
			users = map[string]any{}
			byType[r.Type] = users
		}
		data := map[string]any{"ts": r.TS}
		if r.ThreadID != "" {
			data["thread_id"] = r.ThreadID
		}
		users[r.UserID] = data
		n++
	}
	if n == 0 {
		return nil
	}
	return map[string]any{"type": "m.receipt", "content": content}
}

var topoToken = roomserver.TopoToken

// ignoredUsers reads the user's m.ignored_user_list account data.
func (s *Sync) ignoredUsers(ctx context.Context, d *auth.Device) map[string]bool {
	if set, ok := s.notifier.idx.ignored(d.UserID); ok {
		return set
	}
	asOf, _ := s.db.StreamPos(ctx)
	out := map[string]bool{}
	defer func() { s.notifier.idx.setIgnored(d.UserID, asOf, out) }()
	b, err := s.db.GetAccountData(ctx, d.Localpart, "", "m.ignored_user_list")
	if err != nil {
		return out
	}
	gjson.GetBytes(b, "ignored_users").ForEach(func(k, _ gjson.Result) bool {
		out[k.Str] = true
		return true
	})
	return out
}

// summary builds a joined room's summary (spec: "Room summary"): member
// counts and, for rooms without a name or alias, up to five heroes.
func (s *Sync) summary(ctx context.Context, roomID, userID string) map[string]any {
	joined, _ := s.rs.MembersWith(ctx, roomID, spec.Join)
	invited, _ := s.rs.MembersWith(ctx, roomID, spec.Invite)
	out := map[string]any{"m.joined_member_count": len(joined), "m.invited_member_count": len(invited)}
	name, _ := s.rs.CurrentStateEvent(ctx, roomID, spec.MRoomName, "")
	alias, _ := s.rs.CurrentStateEvent(ctx, roomID, spec.MRoomCanonicalAlias, "")
	if (name == nil || gjson.GetBytes(name.JSON, "content.name").Str == "") && (alias == nil || gjson.GetBytes(alias.JSON, "content.alias").Str == "") {
		var heroes []string
		for _, list := range [][]string{joined, invited} {
			sort.Strings(list)
			for _, u := range list {
				if u != userID && len(heroes) < 5 {
					heroes = append(heroes, u)
				}
			}
		}
		if heroes == nil {
			heroes = []string{}
		}
		out["m.heroes"] = heroes
	}
	return out
}

// visibleWithCurrentState is history visibility for a joined room's
// timeline, except that state events which are still the room's current
// state are kept: a member must learn the room's present state (e.g. who
// joined while they were away) even when history rules hide the moment it
// changed.
func (s *Sync) visibleWithCurrentState(ctx context.Context, userID string, evs []*storage.Event) ([]*storage.Event, error) {
	vis, err := s.rs.VisibleEvents(ctx, userID, evs)
	if err != nil || len(vis) == len(evs) {
		return vis, err
	}
	ok := make(map[int64]bool, len(vis))
	for _, e := range vis {
		ok[e.NID] = true
	}
	out := make([]*storage.Event, 0, len(evs))
	for _, e := range evs {
		if !ok[e.NID] && e.StateKey != nil {
			cur, err := s.rs.CurrentStateEvent(ctx, e.RoomID, e.Type, *e.StateKey)
			ok[e.NID] = err == nil && cur != nil && cur.NID == e.NID
		}
		if ok[e.NID] {
			out = append(out, e)
		}
	}
	return out, nil
}

// render formats an event for a sync response: the client format, or the
// event as stored when the filter asks for event_format "federation".
func (s *Sync) render(ctx context.Context, req *syncRequest, e *storage.Event) json.RawMessage {
	if req.filter.EventFormat == "federation" {
		js := s.rs.ClientJSON(ctx, e)
		// PDUs of room versions 3 and later carry no event_id; clients
		// asking for this format still need it to refer to the event
		// (sytest 31sync/13filtered_sync.pl expects it, as Synapse sends it).
		if !gjson.GetBytes(js, "event_id").Exists() {
			if withID, err := sjson.SetBytes(js, "event_id", e.EventID); err == nil {
				js = withID
			}
		}
		return js
	}
	return s.rs.ClientEvent(ctx, e, req.dev.UserID, req.dev.DeviceID)
}

// mergeSorted merges two sorted string lists without repeats.
func mergeSorted(a, b []string) []string {
	out := make([]string, 0, len(a)+len(b))
	for len(a) > 0 || len(b) > 0 {
		switch {
		case len(b) == 0 || (len(a) > 0 && a[0] < b[0]):
			out, a = append(out, a[0]), a[1:]
		case len(a) == 0 || b[0] < a[0]:
			out, b = append(out, b[0]), b[1:]
		default:
			out, a, b = append(out, a[0]), a[1:], b[1:]
		}
	}
	return out
}
