package clientapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"sort"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/roomserver"
	"repeater/storage"
)

// Server-side search (spec: Client-Server API, "Server Side Search"). The
// full-text index and its query syntax are in storage/search.go; this file
// pages through the matches in the requested order, keeps those the user
// may see (history visibility at each event, roomserver.VisibleEvents),
// and adds context, state and groups.

const (
	// maxRankCandidates bounds the matches ordered by rank: the newest
	// this many are ranked (recent order pages through all of them).
	maxRankCandidates = 5000
	maxSearchLimit    = 100
	maxContextLimit   = 50
	// maxRecentRounds bounds the batches read for one page in recent
	// order when most matches are not visible to the user.
	maxRecentRounds = 20
)

type roomEventsCriteria struct {
	SearchTerm   *string            `json:"search_term"`
	Keys         []string           `json:"keys"`
	Filter       searchFilter       `json:"filter"`
	OrderBy      string             `json:"order_by"`
	EventContext *searchContextSpec `json:"event_context"`
	IncludeState bool               `json:"include_state"`
	Groupings    struct {
		GroupBy []struct {
			Key string `json:"key"`
		} `json:"group_by"`
	} `json:"groupings"`
}

// searchFilter is the part of a RoomEventFilter search applies.
type searchFilter struct {
	Limit      *int     `json:"limit"`
	Types      []string `json:"types"`
	NotTypes   []string `json:"not_types"`
	Rooms      []string `json:"rooms"`
	NotRooms   []string `json:"not_rooms"`
	Senders    []string `json:"senders"`
	NotSenders []string `json:"not_senders"`
}

type searchContextSpec struct {
	BeforeLimit    *int `json:"before_limit"`
	AfterLimit     *int `json:"after_limit"`
	IncludeProfile bool `json:"include_profile"`
}

// searchToken is a next_batch: the position of the last match a page
// consumed in its order, and the group it is confined to, if any. Ranks
// are recomputed per request, so when new events shift the term
// statistics between pages a rank-ordered page boundary may repeat or
// skip a match.
type searchToken struct {
	Order    string  `json:"o"`
	Rank     float64 `json:"r,omitempty"`
	NID      int64   `json:"n"`
	GroupKey string  `json:"k,omitempty"`
	GroupVal string  `json:"v,omitempty"`
}

func (t searchToken) encode() string {
	b, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeSearchToken(s string) (searchToken, error) {
	var t searchToken
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(b, &t) != nil || (t.Order != "rank" && t.Order != "recent") ||
		(t.GroupKey != "" && t.GroupKey != "room_id" && t.GroupKey != "sender") {
		return t, httputil.InvalidParam("Invalid next_batch")
	}
	return t, nil
}

// search handles POST /search.
func (a *API) search(r *http.Request) (any, error) {
	var body struct {
		SearchCategories *struct {
			RoomEvents *roomEventsCriteria `json:"room_events"`
		} `json:"search_categories"`
	}
	if _, err := httputil.DecodeBody(r, &body); err != nil {
		return nil, err
	}
	if body.SearchCategories == nil {
		return nil, httputil.MissingParam("search_categories is required")
	}
	out := map[string]any{}
	if c := body.SearchCategories.RoomEvents; c != nil {
		res, err := a.searchRoomEvents(r, c, r.URL.Query().Get("next_batch"))
		if err != nil {
			return nil, err
		}
		out["room_events"] = res
	}
	return map[string]any{"search_categories": out}, nil
}

// searchResult is a visible match.
type searchResult struct {
	hit storage.SearchHit
	ev  *storage.Event
}

func (a *API) searchRoomEvents(r *http.Request, c *roomEventsCriteria, nextBatch string) (map[string]any, error) {
	ctx := r.Context()
	d := auth.FromContext(ctx)
	if c.SearchTerm == nil {
		return nil, httputil.MissingParam("search_term is required")
	}
	keys := c.Keys
	if keys == nil {
		keys = []string{"content.body", "content.name", "content.topic"}
	}
	for _, k := range keys {
		if _, ok := storage.SearchKeyTypes[k]; !ok {
			return nil, httputil.InvalidParam("Unknown search key " + k)
		}
	}
	order := c.OrderBy
	switch order {
	case "":
		order = "rank"
	case "rank", "recent":
	default:
		return nil, httputil.InvalidParam("order_by must be rank or recent")
	}
	var groupKeys []string
	for _, g := range c.Groupings.GroupBy {
		if g.Key != "room_id" && g.Key != "sender" {
			return nil, httputil.InvalidParam("Unknown group key " + g.Key)
		}
		if !contains(groupKeys, g.Key) {
			groupKeys = append(groupKeys, g.Key)
		}
	}
	limit := 10
	if c.Filter.Limit != nil && *c.Filter.Limit > 0 {
		limit = min(*c.Filter.Limit, maxSearchLimit)
	}
	var tok searchToken
	if nextBatch != "" {
		var err error
		if tok, err = decodeSearchToken(nextBatch); err != nil {
			return nil, err
		}
		if tok.Order != order {
			return nil, httputil.InvalidParam("next_batch is for another order_by")
		}
	}

	q := storage.ParseSearchTerm(*c.SearchTerm)
	es := storage.EventSearch{Query: q, UserID: d.UserID, Types: searchTypes(keys, c.Filter.Types, c.Filter.NotTypes),
		Rooms: c.Filter.Rooms, NotRooms: c.Filter.NotRooms, Senders: c.Filter.Senders, NotSenders: c.Filter.NotSenders}
	switch tok.GroupKey {
	case "room_id":
		es.Rooms = confine(es.Rooms, tok.GroupVal)
	case "sender":
		es.Senders = confine(es.Senders, tok.GroupVal)
	}

	// Candidates, in the page's order.
	var cands []storage.SearchHit
	count := 0
	exhausted := true // nothing matches beyond cands
	var err error
	if order == "rank" {
		es.Limit = maxRankCandidates
		if cands, err = a.db.SearchEvents(ctx, es); err != nil {
			return nil, err
		}
		count = len(cands)
		if count == maxRankCandidates {
			if count, err = a.db.CountSearchEvents(ctx, es); err != nil {
				return nil, err
			}
		}
		sort.SliceStable(cands, func(i, j int) bool {
			if cands[i].Rank != cands[j].Rank {
				return cands[i].Rank > cands[j].Rank
			}
			return cands[i].NID > cands[j].NID
		})
		if nextBatch != "" {
			cands = cands[sort.Search(len(cands), func(i int) bool {
				h := cands[i]
				return h.Rank < tok.Rank || (h.Rank == tok.Rank && h.NID < tok.NID)
			}):]
		}
	} else {
		es.Limit = max(2*limit, 50)
		es.Before = tok.NID
		if cands, err = a.db.SearchEvents(ctx, es); err != nil {
			return nil, err
		}
		exhausted = len(cands) < es.Limit
		if nextBatch == "" && exhausted {
			count = len(cands)
		} else {
			all := es
			all.Before = 0
			if count, err = a.db.CountSearchEvents(ctx, all); err != nil {
				return nil, err
			}
		}
	}

	// Walk the candidates, keeping the visible ones.
	var results []searchResult
	var last *storage.SearchHit
	i := 0
	for rounds := 0; len(results) < limit; {
		if i == len(cands) {
			if exhausted || rounds >= maxRecentRounds || len(cands) == 0 {
				break
			}
			es.Before = cands[len(cands)-1].NID
			if cands, err = a.db.SearchEvents(ctx, es); err != nil {
				return nil, err
			}
			exhausted, i = len(cands) < es.Limit, 0
			rounds++
			continue
		}
		chunk := cands[i:min(len(cands), i+2*(limit-len(results))+8)]
		ids := make([]int64, len(chunk))
		for j, h := range chunk {
			ids[j] = h.NID
		}
		evs, err := a.rs.Events(ctx, ids)
		if err != nil {
			return nil, err
		}
		ok := evs[:0]
		for _, e := range evs {
			if !e.Rejected && !e.Outlier && e.RedactedBy == "" {
				ok = append(ok, e)
			}
		}
		vis, err := a.rs.VisibleEvents(ctx, d.UserID, ok)
		if err != nil {
			return nil, err
		}
		visible := make(map[int64]*storage.Event, len(vis))
		for _, e := range vis {
			visible[e.NID] = e
		}
		for _, h := range chunk {
			i++
			last = &h
			if e := visible[h.NID]; e != nil {
				results = append(results, searchResult{h, e})
				if len(results) == limit {
					break
				}
			}
		}
	}
	more := i < len(cands) || !exhausted

	// The response.
	out := map[string]any{"count": count}
	items := make([]map[string]any, 0, len(results))
	texts := make([]string, 0, len(results))
	for _, res := range results {
		item := map[string]any{"rank": res.hit.Rank, "result": a.rs.ClientEvent(ctx, res.ev, d.UserID, d.DeviceID)}
		if c.EventContext != nil {
			cx, err := a.searchContext(ctx, d, res.ev, c.EventContext)
			if err != nil {
				return nil, err
			}
			item["context"] = cx
		}
		items = append(items, item)
		texts = append(texts, storage.SearchText(res.ev))
	}
	out["results"] = items
	out["highlights"] = q.Highlights(texts)
	if more && last != nil {
		out["next_batch"] = searchToken{Order: order, Rank: last.Rank, NID: last.NID, GroupKey: tok.GroupKey, GroupVal: tok.GroupVal}.encode()
	}
	if c.IncludeState {
		state := map[string][]json.RawMessage{}
		for _, res := range results {
			if _, done := state[res.ev.RoomID]; done {
				continue
			}
			evs, err := a.stateView(r, res.ev.RoomID, d.UserID)
			if err != nil {
				continue
			}
			list := make([]json.RawMessage, 0, len(evs))
			for _, e := range evs {
				list = append(list, a.rs.ClientEvent(ctx, e, d.UserID, d.DeviceID))
			}
			state[res.ev.RoomID] = list
		}
		out["state"] = state
	}
	if len(groupKeys) > 0 {
		groups := map[string]any{}
		for _, key := range groupKeys {
			valueOf := func(roomID, sender string) string {
				if key == "room_id" {
					return roomID
				}
				return sender
			}
			g := map[string]map[string]any{}
			for _, res := range results {
				v := valueOf(res.ev.RoomID, res.ev.Sender)
				e, ok := g[v]
				if !ok {
					e = map[string]any{"results": []string{}, "order": len(g) + 1}
					g[v] = e
				}
				e["results"] = append(e["results"].([]string), res.ev.EventID)
			}
			// A group may have more if a later candidate belongs to it, or
			// (recent order) if candidates remain unread.
			for v, e := range g {
				has := !exhausted
				for _, h := range cands[i:] {
					has = has || valueOf(h.RoomID, h.Sender) == v
				}
				if has && last != nil {
					e["next_batch"] = searchToken{Order: order, Rank: last.Rank, NID: last.NID, GroupKey: key, GroupVal: v}.encode()
				}
			}
			groups[key] = g
		}
		out["groups"] = groups
	}
	return out, nil
}

// searchContext returns the events around a result (as /context does)
// and, when asked, the senders' profiles at the result.
func (a *API) searchContext(ctx context.Context, d *auth.Device, e *storage.Event, cs *searchContextSpec) (map[string]any, error) {
	before, after := 5, 5
	if cs.BeforeLimit != nil {
		before = min(max(*cs.BeforeLimit, 0), maxContextLimit)
	}
	if cs.AfterLimit != nil {
		after = min(max(*cs.AfterLimit, 0), maxContextLimit)
	}
	var evBefore, evAfter []*storage.Event
	var err error
	if before > 0 {
		if evBefore, err = a.db.RoomEventsTopo(ctx, e.RoomID, storage.TopoPos{Depth: e.Depth, Stream: e.StreamPos - 1}, true, before); err != nil {
			return nil, err
		}
		if evBefore, err = a.rs.VisibleEvents(ctx, d.UserID, evBefore); err != nil {
			return nil, err
		}
	}
	if after > 0 {
		if evAfter, err = a.db.RoomEventsTopo(ctx, e.RoomID, storage.TopoPos{Depth: e.Depth, Stream: e.StreamPos}, false, after); err != nil {
			return nil, err
		}
		if evAfter, err = a.rs.VisibleEvents(ctx, d.UserID, evAfter); err != nil {
			return nil, err
		}
	}
	render := func(evs []*storage.Event) []json.RawMessage {
		out := make([]json.RawMessage, 0, len(evs))
		for _, x := range evs {
			out = append(out, a.rs.ClientEvent(ctx, x, d.UserID, d.DeviceID))
		}
		return out
	}
	start, end := roomserver.ContextTokens(e, evBefore, evAfter)
	out := map[string]any{"events_before": render(evBefore), "events_after": render(evAfter), "start": start, "end": end}
	if cs.IncludeProfile {
		// Profiles as they were: the senders' member events in the state
		// at the result.
		state, err := a.rs.Snapshot(ctx, e.AfterSnapshot)
		if err != nil {
			return nil, err
		}
		var nids []int64
		seen := map[string]bool{}
		for _, x := range append(append([]*storage.Event{e}, evBefore...), evAfter...) {
			if seen[x.Sender] {
				continue
			}
			seen[x.Sender] = true
			if nid, ok := state[storage.StateKey{Type: spec.MRoomMember, StateKey: x.Sender}]; ok {
				nids = append(nids, nid)
			}
		}
		members, err := a.rs.Events(ctx, nids)
		if err != nil {
			return nil, err
		}
		info := map[string]any{}
		for _, m := range members {
			if m.StateKey == nil {
				continue
			}
			p := map[string]any{}
			content := gjson.GetBytes(a.rs.ClientJSON(ctx, m), "content")
			if v := content.Get("displayname"); v.Type == gjson.String {
				p["displayname"] = v.Str
			}
			if v := content.Get("avatar_url"); v.Type == gjson.String {
				p["avatar_url"] = v.Str
			}
			info[*m.StateKey] = p
		}
		out["profile_info"] = info
	}
	return out, nil
}

// searchTypes returns the event types the keys search, narrowed by a
// filter's types and not_types ('*' wildcards).
func searchTypes(keys, types, notTypes []string) []string {
	out := []string{}
	for _, k := range keys {
		t := storage.SearchKeyTypes[k]
		if (types != nil && !anyGlob(types, t)) || anyGlob(notTypes, t) || contains(out, t) {
			continue
		}
		out = append(out, t)
	}
	return out
}

func anyGlob(patterns []string, s string) bool {
	for _, p := range patterns {
		if glob(p, s) {
			return true
		}
	}
	return false
}

// glob matches s against a pattern in which '*' matches any run.
func glob(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		j := strings.Index(s, p)
		if j < 0 {
			return false
		}
		s = s[j+len(p):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// confine narrows a filter list (nil: anything) to the one value v.
func confine(list []string, v string) []string {
	if list == nil || contains(list, v) {
		return []string{v}
	}
	return []string{}
}
