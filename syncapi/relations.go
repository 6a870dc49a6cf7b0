package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/gorilla/mux"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/roomserver"
	"repeater/storage"
)

// V1Routes registers the sync API's endpoints on the /_matrix/client/v1
// router: relations and threads (spec: "Relationships", "Threading").
func (s *Sync) V1Routes(c *mux.Router, authn *auth.Authenticator) {
	authed := func(h httputil.Handler) http.Handler { return authn.AllowGuests(httputil.JSON(s.log, h)) }
	c.Handle("/rooms/{roomId}/relations/{eventId}", authed(s.relations)).Methods("GET")
	c.Handle("/rooms/{roomId}/relations/{eventId}/{relType}", authed(s.relations)).Methods("GET")
	c.Handle("/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}", authed(s.relations)).Methods("GET")
	c.Handle("/rooms/{roomId}/threads", authed(s.threads)).Methods("GET")
}

// pageLimit parses a limit parameter: def when absent, at least 1, at
// most max.
func pageLimit(v string, def, maxN int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, httputil.InvalidParam("Invalid limit")
	}
	return min(max(n, 1), maxN), nil
}

// relations handles GET /_matrix/client/v1/rooms/{roomId}/relations/
// {eventId}[/{relType}[/{eventType}]] (spec: "Relationships"): the
// children of an event the user can see, newest first by default,
// optionally with their descendants (recurse).
func (s *Sync) relations(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	ctx := r.Context()
	v := httputil.Vars(r)
	roomID := v["roomId"]
	q := r.URL.Query()
	rq := storage.RelationsQuery{RoomID: roomID, Parent: v["eventId"], RelType: v["relType"], EventType: v["eventType"], Backwards: true}
	switch q.Get("dir") {
	case "", "b":
	case "f":
		rq.Backwards = false
	default:
		return nil, httputil.InvalidParam("dir must be b or f")
	}
	limit, err := pageLimit(q.Get("limit"), 20, 1000)
	if err != nil {
		return nil, err
	}
	rq.Limit = limit + 1
	recurseGiven := q.Has("recurse")
	switch q.Get("recurse") {
	case "", "false":
	case "true":
		rq.Recurse = true
	default:
		return nil, httputil.InvalidParam("recurse must be true or false")
	}
	if err := s.checkRoomAccess(ctx, roomID, d.UserID); err != nil {
		return nil, err
	}
	parent, err := s.db.EventByID(ctx, rq.Parent)
	if err != nil || parent.RoomID != roomID || parent.Rejected {
		return nil, httputil.NotFound("Event not found")
	}
	if ok, err := s.rs.CanSeeEvent(ctx, d.UserID, parent); err != nil {
		return nil, err
	} else if !ok {
		return nil, httputil.NotFound("Event not found")
	}
	fromTok := q.Get("from")
	if fromTok != "" {
		tp, err := s.parseTopo(ctx, roomID, fromTok)
		if err != nil {
			return nil, err
		}
		rq.From = &tp
	}
	if toTok := q.Get("to"); toTok != "" {
		tp, err := s.parseTopo(ctx, roomID, toTok)
		if err != nil {
			return nil, err
		}
		rq.To = &tp
	}
	evs, err := s.db.Relations(ctx, rq)
	if err != nil {
		return nil, err
	}
	more := len(evs) > limit
	if more {
		evs = evs[:limit]
	}
	resp := map[string]any{}
	if more {
		last := evs[len(evs)-1]
		if rq.Backwards {
			resp["next_batch"] = topoToken(last.Depth, last.StreamPos-1)
		} else {
			resp["next_batch"] = topoToken(last.Depth, last.StreamPos)
		}
	}
	vis, err := s.rs.VisibleEvents(ctx, d.UserID, evs)
	if err != nil {
		return nil, err
	}
	resp["chunk"] = s.rs.ClientEvents(ctx, vis, d.UserID, d.DeviceID)
	if fromTok != "" {
		resp["prev_batch"] = fromTok
	}
	if recurseGiven {
		depth := 1
		if rq.Recurse {
			depth = storage.MaxRelationDepth
		}
		resp["recursion_depth"] = depth
	}
	return resp, nil
}

// threads handles GET /_matrix/client/v1/rooms/{roomId}/threads (spec:
// "Querying threads in a room"): the room's thread roots the user can
// see, by latest thread event, newest first.
func (s *Sync) threads(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	ctx := r.Context()
	roomID := httputil.Vars(r)["roomId"]
	q := r.URL.Query()
	participant := ""
	switch q.Get("include") {
	case "", "all":
	case "participated":
		participant = d.UserID
	default:
		return nil, httputil.InvalidParam("include must be all or participated")
	}
	limit, err := pageLimit(q.Get("limit"), 20, 100)
	if err != nil {
		return nil, err
	}
	var before *storage.TopoPos
	if f := q.Get("from"); f != "" {
		tp, ok := parseThreadToken(f)
		if !ok {
			return nil, httputil.InvalidParam("Unknown pagination token")
		}
		before = &tp
	}
	if err := s.checkRoomAccess(ctx, roomID, d.UserID); err != nil {
		if errors.Is(err, roomserver.ErrUnknownRoom) {
			return nil, httputil.Forbidden("You are not allowed to view this room")
		}
		return nil, err
	}
	list, err := s.db.Threads(ctx, roomID, participant, before, limit+1)
	if err != nil {
		return nil, err
	}
	resp := map[string]any{}
	if len(list) > limit {
		list = list[:limit]
		last := list[len(list)-1]
		resp["next_batch"] = threadToken(last.LatestDepth, last.LatestPos)
	}
	roots := make([]*storage.Event, 0, len(list))
	for _, t := range list {
		roots = append(roots, t.Root)
	}
	vis, err := s.rs.VisibleEvents(ctx, d.UserID, roots)
	if err != nil {
		return nil, err
	}
	resp["chunk"] = s.rs.ClientEvents(ctx, vis, d.UserID, d.DeviceID)
	return resp, nil
}

// Thread list tokens: "h<depth>_<pos>" of the latest event of the last
// thread returned.
func threadToken(depth, pos int64) string {
	return "h" + strconv.FormatInt(depth, 10) + "_" + strconv.FormatInt(pos, 10)
}

func parseThreadToken(s string) (storage.TopoPos, bool) {
	rest, ok := strings.CutPrefix(s, "h")
	if !ok {
		return storage.TopoPos{}, false
	}
	a, b, ok := strings.Cut(rest, "_")
	d, err1 := strconv.ParseInt(a, 10, 64)
	p, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return storage.TopoPos{}, false
	}
	return storage.TopoPos{Depth: d, Stream: p}, true
}

// bundles returns the bundled aggregations of evs for the device's user
// (a failure is logged: events are still served, without bundles).
func (s *Sync) bundles(ctx context.Context, d *auth.Device, evs []*storage.Event) map[string]json.RawMessage {
	b, err := s.rs.Bundles(ctx, evs, d.UserID, d.DeviceID)
	if err != nil {
		s.log.Warn("bundled aggregations", "err", err)
	}
	return b
}

// bundle adds bundled aggregations to rendered, the rendering of evs.
func (s *Sync) bundle(ctx context.Context, d *auth.Device, evs []*storage.Event, rendered []json.RawMessage) {
	b := s.bundles(ctx, d, evs)
	if len(b) == 0 {
		return
	}
	for i, e := range evs {
		rendered[i] = roomserver.WithRelations(rendered[i], b[e.EventID])
	}
}

// bundleSlot is a sync timeline whose rendered events get bundled
// aggregations once every room is built.
type bundleSlot struct {
	rendered []any // json.RawMessage of evs[i], in the response
	evs      []*storage.Event
}

// applyBundles adds bundled aggregations to the sync timelines collected
// in req.bundle: one batch for the whole response, and no query at all
// when none of the rooms has relations.
func (s *Sync) applyBundles(ctx context.Context, req *syncRequest) {
	if len(req.bundle) == 0 {
		return
	}
	var all []*storage.Event
	for _, sl := range req.bundle {
		all = append(all, sl.evs...)
	}
	b := s.bundles(ctx, req.dev, all)
	if len(b) == 0 {
		return
	}
	for _, sl := range req.bundle {
		for i, e := range sl.evs {
			if rel, ok := b[e.EventID]; ok {
				if js, ok := sl.rendered[i].(json.RawMessage); ok {
					sl.rendered[i] = roomserver.WithRelations(js, rel)
				}
			}
		}
	}
}
