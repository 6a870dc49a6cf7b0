package federationapi

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/httputil"
	"repeater/roomserver"
	"repeater/storage"
)

// serverMaySee reports whether a server may read an event (spec:
// Server-Server API, "Retrieving events": history visibility applies to
// servers as it does to their users). A server sees an event if the room's
// history is world_readable, or one of its users was joined at the event,
// or (shared history) is joined now.
func (a *API) serverMaySee(ctx context.Context, origin spec.ServerName, e *storage.Event) bool {
	if a.checkACL(ctx, e.RoomID, origin) != nil {
		return false
	}
	state, err := a.rs.Snapshot(ctx, e.AfterSnapshot)
	if err != nil {
		return false
	}
	vis := "shared"
	if nid, ok := state[storage.StateKey{Type: spec.MRoomHistoryVisibility, StateKey: ""}]; ok {
		if hv, err := a.rs.Event(ctx, nid); err == nil {
			if v := gjson.GetBytes(hv.JSON, "content.history_visibility").Str; v != "" {
				vis = v
			}
		}
	}
	if vis == "world_readable" {
		return true
	}
	var nids []int64
	for k, nid := range state {
		if k.Type == spec.MRoomMember && roomserver.ServerOf(k.StateKey) == string(origin) {
			nids = append(nids, nid)
		}
	}
	evs, err := a.rs.Events(ctx, nids)
	if err != nil {
		return false
	}
	for _, m := range evs {
		switch gjson.GetBytes(m.JSON, "content.membership").Str {
		case spec.Join:
			return true
		case spec.Invite:
			if vis == "invited" || vis == "shared" {
				return true
			}
		}
	}
	if vis == "shared" {
		servers, _ := a.rs.JoinedServers(ctx, e.RoomID)
		for _, s := range servers {
			if s == string(origin) {
				return true
			}
		}
	}
	return false
}

// inRoom checks that origin has a joined user in the room now.
func (a *API) inRoom(ctx context.Context, roomID string, origin spec.ServerName) error {
	if err := a.checkACL(ctx, roomID, origin); err != nil {
		return err
	}
	servers, err := a.rs.JoinedServers(ctx, roomID)
	if err != nil {
		return httputil.NotFound("Unknown room")
	}
	for _, s := range servers {
		if s == string(origin) {
			return nil
		}
	}
	return httputil.Forbidden("Your server is not in this room")
}

// getEvent handles GET /event/{eventId}.
func (a *API) getEvent(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	e, err := a.rs.EventByID(r.Context(), httputil.Vars(r)["eventId"])
	if err != nil || e.Rejected {
		return nil, httputil.NotFound("Unknown event")
	}
	if !e.Outlier && !a.serverMaySee(r.Context(), origin, e) {
		return nil, httputil.Forbidden("Your server may not see this event")
	}
	if e.Outlier {
		if err := a.inRoom(r.Context(), e.RoomID, origin); err != nil {
			return nil, err
		}
	}
	return a.txnBody([]json.RawMessage{a.rs.ClientJSON(r.Context(), e)}), nil
}

func (a *API) txnBody(pdus []json.RawMessage) map[string]any {
	return map[string]any{"origin": string(a.serverName), "origin_server_ts": time.Now().UnixMilli(), "pdus": pdus}
}

// stateAt handles GET /state/{roomId} and /state_ids/{roomId}?event_id=.
func (a *API) stateAt(idsOnly bool) fedHandler {
	return func(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
		roomID := httputil.Vars(r)["roomId"]
		eventID := r.URL.Query().Get("event_id")
		if eventID == "" {
			return nil, httputil.MissingParam("Missing event_id")
		}
		if err := a.checkACL(r.Context(), roomID, origin); err != nil {
			return nil, err
		}
		e, err := a.rs.EventByID(r.Context(), eventID)
		if err != nil || e.RoomID != roomID || e.Outlier || e.Rejected {
			return nil, httputil.NotFound("Unknown event")
		}
		if !a.serverMaySee(r.Context(), origin, e) {
			return nil, httputil.Forbidden("Your server may not see this event")
		}
		state, chain, err := a.rs.StateAtEvent(r.Context(), roomID, eventID)
		if err != nil {
			return nil, err
		}
		if idsOnly {
			return map[string]any{"pdu_ids": eventIDs(state), "auth_chain_ids": eventIDs(chain)}, nil
		}
		return map[string]any{"pdus": rawEvents(state), "auth_chain": rawEvents(chain)}, nil
	}
}

func eventIDs(evs []*storage.Event) []string {
	out := make([]string, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.EventID)
	}
	return out
}

// eventAuth handles GET /event_auth/{roomId}/{eventId}: the event's auth chain.
func (a *API) eventAuth(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	v := httputil.Vars(r)
	if err := a.checkACL(r.Context(), v["roomId"], origin); err != nil {
		return nil, err
	}
	e, err := a.rs.EventByID(r.Context(), v["eventId"])
	if err != nil || e.RoomID != v["roomId"] {
		return nil, httputil.NotFound("Unknown event")
	}
	if err := a.inRoom(r.Context(), e.RoomID, origin); err != nil && !a.serverMaySee(r.Context(), origin, e) {
		return nil, err
	}
	ver, err := a.rs.RoomVersion(r.Context(), e.RoomID)
	if err != nil {
		return nil, err
	}
	chain, err := a.rs.AuthChain(r.Context(), ver, []string{e.EventID})
	if err != nil {
		return nil, err
	}
	return map[string]any{"auth_chain": rawEvents(chain)}, nil
}

// walkBack collects events reachable backwards through prev_events from
// the given IDs (included), newest first by depth, up to limit, never
// passing the stop set.
func (a *API) walkBack(ctx context.Context, roomID string, from []string, stop map[string]bool, limit int, includeFrom bool) ([]*storage.Event, error) {
	seen := map[string]bool{}
	var out []*storage.Event
	frontier := append([]string(nil), from...)
	for _, id := range from {
		seen[id] = true
	}
	first := true
	for len(frontier) > 0 && len(out) < limit {
		evs, err := a.rs.EventsByIDs(ctx, frontier)
		if err != nil {
			return nil, err
		}
		frontier = nil
		sort.Slice(evs, func(i, j int) bool { return evs[i].Depth > evs[j].Depth })
		for _, e := range evs {
			if e.RoomID != roomID || e.Outlier {
				continue
			}
			if (!first || includeFrom) && !stop[e.EventID] {
				if len(out) >= limit {
					break
				}
				out = append(out, e)
			}
			if stop[e.EventID] {
				continue
			}
			for _, p := range gjson.GetBytes(e.JSON, "prev_events").Array() {
				id := p.Str
				if p.IsArray() {
					id = p.Get("0").Str
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

// backfill handles GET /backfill/{roomId}?v=...&limit= (spec: "Backfilling"):
// the given events and those before them, up to limit.
func (a *API) backfill(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	roomID := httputil.Vars(r)["roomId"]
	from := r.URL.Query()["v"]
	if len(from) == 0 {
		return nil, httputil.MissingParam("Missing v")
	}
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit <= 0 {
		return nil, httputil.MissingParam("Missing limit")
	}
	limit = min(limit, 1000)
	if _, err := a.rs.RoomVersion(r.Context(), roomID); err != nil {
		return nil, httputil.NotFound("Unknown room")
	}
	if err := a.checkACL(r.Context(), roomID, origin); err != nil {
		return nil, err
	}
	// The given events and those below them in depth order: one query per
	// page instead of a walk through prev_events one level at a time (the
	// spec asks for events "preceding" them; events on side branches at
	// lower depth are part of the room's history all the same).
	start, err := a.rs.EventsByIDs(r.Context(), from)
	if err != nil {
		return nil, err
	}
	var top *storage.Event
	for _, e := range start {
		if e.RoomID == roomID && !e.Outlier && (top == nil || e.Depth > top.Depth || (e.Depth == top.Depth && e.StreamPos > top.StreamPos)) {
			top = e
		}
	}
	if top == nil {
		return a.txnBody([]json.RawMessage{}), nil
	}
	evs, err := a.db.RoomEventsTopo(r.Context(), roomID, storage.TopoPos{Depth: top.Depth, Stream: top.StreamPos}, true, limit)
	if err != nil {
		return nil, err
	}
	pdus := make([]json.RawMessage, 0, len(evs))
	for _, e := range evs {
		if a.serverMaySee(r.Context(), origin, e) {
			pdus = append(pdus, a.rs.ClientJSON(r.Context(), e))
		}
	}
	return a.txnBody(pdus), nil
}

// missingEvents handles POST /get_missing_events/{roomId} (spec: "Retrieving
// missing events"): events before latest_events and after earliest_events,
// oldest first.
func (a *API) missingEvents(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
	roomID := httputil.Vars(r)["roomId"]
	if err := a.inRoom(r.Context(), roomID, origin); err != nil {
		return nil, err
	}
	limit := int(gjson.GetBytes(body, "limit").Int())
	if limit <= 0 {
		limit = 10
	}
	limit = min(limit, 100)
	minDepth := gjson.GetBytes(body, "min_depth").Int()
	stop := map[string]bool{}
	for _, id := range gjson.GetBytes(body, "earliest_events").Array() {
		stop[id.Str] = true
	}
	var latest []string
	for _, id := range gjson.GetBytes(body, "latest_events").Array() {
		latest = append(latest, id.Str)
	}
	evs, err := a.walkBack(r.Context(), roomID, latest, stop, limit, false)
	if err != nil {
		return nil, err
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].Depth < evs[j].Depth })
	pdus := []json.RawMessage{}
	for _, e := range evs {
		if e.Depth >= minDepth && a.serverMaySee(r.Context(), origin, e) {
			pdus = append(pdus, a.rs.ClientJSON(r.Context(), e))
		}
	}
	return map[string]any{"events": pdus}, nil
}
