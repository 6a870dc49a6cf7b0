package syncapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/roomserver"
	"repeater/storage"
)

// parseTopo parses a pagination token: "t<depth>_<stream>" or a sync token
// "s<pos>_<epos>" (clients may page from a next_batch).
func (s *Sync) parseTopo(ctx context.Context, roomID, tok string) (storage.TopoPos, error) {
	if rest, ok := strings.CutPrefix(tok, "t"); ok {
		a, b, ok := strings.Cut(rest, "_")
		d, err1 := strconv.ParseInt(a, 10, 64)
		st, err2 := strconv.ParseInt(b, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			return storage.TopoPos{}, httputil.InvalidParam("Invalid pagination token")
		}
		return storage.TopoPos{Depth: d, Stream: st}, nil
	}
	t, err := parseToken(tok)
	if err != nil {
		return storage.TopoPos{}, httputil.InvalidParam("Invalid pagination token")
	}
	return s.db.TopoPosAtStream(ctx, roomID, t.Pos)
}

// checkRoomAccess refuses users who were never in a room that is not
// world-readable.
func (s *Sync) checkRoomAccess(ctx context.Context, roomID, userID string) error {
	m, err := s.rs.Membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if m != "" {
		return nil
	}
	hv, err := s.rs.CurrentStateEvent(ctx, roomID, spec.MRoomHistoryVisibility, "")
	if err == nil && hv != nil && gjson.GetBytes(hv.JSON, "content.history_visibility").Str == "world_readable" {
		return nil
	}
	return httputil.Forbidden("You are not in this room")
}

// messages handles GET /rooms/{roomId}/messages (spec: "Getting events
// for a room").
func (s *Sync) messages(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	ctx := r.Context()
	roomID := httputil.Vars(r)["roomId"]
	q := r.URL.Query()
	if err := s.checkRoomAccess(ctx, roomID, d.UserID); err != nil {
		return nil, err
	}
	backwards := true
	switch q.Get("dir") {
	case "b":
	case "f":
		backwards = false
	default:
		return nil, httputil.InvalidParam("dir must be b or f")
	}
	limit := 10
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return nil, httputil.InvalidParam("Invalid limit")
		}
		limit = min(n, 1000)
	}
	var f EventFilter
	if fs := q.Get("filter"); fs != "" {
		if err := json.Unmarshal([]byte(fs), &f); err != nil {
			return nil, httputil.BadJSON("Invalid filter")
		}
		if f.Limit != nil {
			limit = min(max(*f.Limit, 0), 1000)
		}
	}
	var from storage.TopoPos
	fromTok := q.Get("from")
	if fromTok == "" {
		if backwards {
			from = storage.TopoPos{Depth: 1 << 62, Stream: 1 << 62}
		}
	} else {
		var err error
		if from, err = s.parseTopo(ctx, roomID, fromTok); err != nil {
			return nil, err
		}
	}
	var to *storage.TopoPos
	if tt := q.Get("to"); tt != "" {
		tp, err := s.parseTopo(ctx, roomID, tt)
		if err != nil {
			return nil, err
		}
		to = &tp
	}

	chunk := []json.RawMessage{}
	var chunkEvs []*storage.Event // for bundled aggregations (relations.go)
	senders := map[string]bool{}
	pos := from
	done := false
	backfills := 0
	for rounds := 0; len(chunk) < limit && !done && rounds < 20; rounds++ {
		evs, err := s.db.RoomEventsTopo(ctx, roomID, pos, backwards, limit-len(chunk))
		if err != nil {
			return nil, err
		}
		if len(evs) < limit-len(chunk) {
			done = true
			// Past the oldest event held: ask other servers for the
			// history before it (spec: "Backfilling"), then read again.
			if backwards && s.fed != nil && backfills < 3 {
				backfills++
				depth := pos.Depth
				if len(evs) > 0 {
					depth = evs[len(evs)-1].Depth
				}
				if n, err := s.fed.Backfill(ctx, roomID, depth, max(limit, 100)); err == nil && n > 0 {
					done = false
					rounds--
					continue
				} else if err != nil {
					s.log.Info("backfill failed", "room", roomID, "err", err)
				}
			}
		}
		if len(evs) == 0 {
			break
		}
		last := evs[len(evs)-1]
		if backwards {
			pos = storage.TopoPos{Depth: last.Depth, Stream: last.StreamPos - 1}
		} else {
			pos = storage.TopoPos{Depth: last.Depth, Stream: last.StreamPos}
		}
		if to != nil {
			cut := evs[:0]
			for _, e := range evs {
				beyond := (backwards && (e.Depth < to.Depth || (e.Depth == to.Depth && e.StreamPos <= to.Stream))) ||
					(!backwards && (e.Depth > to.Depth || (e.Depth == to.Depth && e.StreamPos > to.Stream)))
				if beyond {
					done = true
					break
				}
				cut = append(cut, e)
			}
			evs = cut
		}
		vis, err := s.rs.VisibleEvents(ctx, d.UserID, evs)
		if err != nil {
			return nil, err
		}
		for _, e := range vis {
			if !f.Allows(e.Type, e.Sender, roomID) {
				continue
			}
			if f.ContainsURL != nil && gjson.GetBytes(e.JSON, "content.url").Exists() != *f.ContainsURL {
				continue
			}
			chunk = append(chunk, s.rs.ClientEvent(ctx, e, d.UserID, d.DeviceID))
			chunkEvs = append(chunkEvs, e)
			senders[e.Sender] = true
		}
	}
	start := fromTok
	if start == "" {
		if backwards {
			tp, err := s.db.TopoPosAtStream(ctx, roomID, 1<<62)
			if err != nil {
				return nil, err
			}
			start = topoToken(tp.Depth, tp.Stream)
		} else {
			start = topoToken(0, 0)
		}
	}
	s.bundle(ctx, d, chunkEvs, chunk)
	resp := map[string]any{"chunk": chunk, "start": start}
	// end is omitted when there is nothing further (spec); after a
	// non-empty chunk it is given (clients expect one), and the page after
	// the last one is empty, without end.
	if !done || len(chunk) > 0 {
		resp["end"] = topoToken(pos.Depth, pos.Stream)
	}
	if f.LazyLoadMembers {
		state := []json.RawMessage{}
		for u := range senders {
			if ev, err := s.rs.CurrentStateEvent(ctx, roomID, spec.MRoomMember, u); err == nil && ev != nil {
				state = append(state, s.rs.ClientEvent(ctx, ev, d.UserID, d.DeviceID))
			}
		}
		resp["state"] = state
	}
	return resp, nil
}

// eventContext handles GET /rooms/{roomId}/context/{eventId}.
func (s *Sync) eventContext(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	ctx := r.Context()
	v := httputil.Vars(r)
	roomID := v["roomId"]
	limit := 10
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return nil, httputil.InvalidParam("Invalid limit")
		}
		limit = min(n, 100)
	}
	var f EventFilter
	if fs := r.URL.Query().Get("filter"); fs != "" {
		if err := json.Unmarshal([]byte(fs), &f); err != nil {
			return nil, httputil.BadJSON("Invalid filter")
		}
	}
	if err := s.checkRoomAccess(ctx, roomID, d.UserID); err != nil {
		return nil, err
	}
	e, err := s.db.EventByID(ctx, v["eventId"])
	if err != nil || e.RoomID != roomID || e.Rejected {
		return nil, httputil.NotFound("Event not found")
	}
	if ok, err := s.rs.CanSeeEvent(ctx, d.UserID, e); err != nil {
		return nil, err
	} else if !ok {
		return nil, httputil.NotFound("Event not found")
	}
	before, err := s.db.RoomEventsTopo(ctx, roomID, storage.TopoPos{Depth: e.Depth, Stream: e.StreamPos - 1}, true, limit/2)
	if err != nil {
		return nil, err
	}
	after, err := s.db.RoomEventsTopo(ctx, roomID, storage.TopoPos{Depth: e.Depth, Stream: e.StreamPos}, false, limit-limit/2)
	if err != nil {
		return nil, err
	}
	if before, err = s.rs.VisibleEvents(ctx, d.UserID, before); err != nil {
		return nil, err
	}
	if after, err = s.rs.VisibleEvents(ctx, d.UserID, after); err != nil {
		return nil, err
	}
	// Bundled aggregations for the event and its neighbours (relations.go).
	bundles := s.bundles(ctx, d, append(append([]*storage.Event{e}, before...), after...))
	render := func(evs []*storage.Event) []json.RawMessage {
		out := make([]json.RawMessage, 0, len(evs))
		for _, x := range evs {
			out = append(out, roomserver.WithRelations(s.rs.ClientEvent(ctx, x, d.UserID, d.DeviceID), bundles[x.EventID]))
		}
		return out
	}
	start, end := roomserver.ContextTokens(e, before, after)
	state, err := s.rs.StateEventsAt(ctx, e.AfterSnapshot)
	if err != nil {
		return nil, err
	}
	if f.LazyLoadMembers {
		// Only the members who sent the returned events.
		senders := map[string]bool{e.Sender: true}
		for _, x := range before {
			senders[x.Sender] = true
		}
		for _, x := range after {
			senders[x.Sender] = true
		}
		kept := state[:0]
		for _, x := range state {
			if x.Type != spec.MRoomMember || x.StateKey == nil || senders[*x.StateKey] {
				kept = append(kept, x)
			}
		}
		state = kept
	}
	return map[string]any{
		"event": render([]*storage.Event{e})[0], "events_before": render(before), "events_after": render(after),
		"start": start, "end": end, "state": render(state),
	}, nil
}
