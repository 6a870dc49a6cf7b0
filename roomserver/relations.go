package roomserver

import (
	"context"
	"encoding/json"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"repeater/internal/httputil"
	"repeater/storage"
)

// Bundled aggregations (spec: Client-Server API, "Aggregations of child
// events"): events served to clients carry unsigned["m.relations"] with
//   - m.replace: the most recent valid replacement, as a client event. As of
//     spec v1.7 the original's content is left as it is; clients apply
//     m.new_content themselves.
//   - m.thread: {latest_event, count, current_user_participated}.
//   - m.reference: {chunk: [{event_id}]}.
// Annotations (reactions) are not bundled (spec v1.7 removed them), nor
// are state events given bundles.

// ClientEvents renders evs for viewerID (see ClientEvent) with their
// bundled aggregations, computed with one batched query.
func (s *Server) ClientEvents(ctx context.Context, evs []*storage.Event, viewerID, viewerDevice string) []json.RawMessage {
	b, err := s.Bundles(ctx, evs, viewerID, viewerDevice)
	if err != nil && s.log != nil {
		s.log.Warn("bundled aggregations", "err", err)
	}
	out := make([]json.RawMessage, 0, len(evs))
	for _, e := range evs {
		out = append(out, WithRelations(s.ClientEvent(ctx, e, viewerID, viewerDevice), b[e.EventID]))
	}
	return out
}

// WithRelations puts a bundle under unsigned["m.relations"] of a rendered
// event (unchanged when rel is empty).
func WithRelations(ev, rel json.RawMessage) json.RawMessage {
	if len(rel) == 0 {
		return ev
	}
	out, err := sjson.SetRawBytes(ev, `unsigned.m\.relations`, rel)
	if err != nil {
		return ev
	}
	return out
}

// Bundles returns the bundled aggregations of those of evs that have any,
// keyed by event ID, as viewerID may see them. Rooms known to have no
// relations cost no query.
func (s *Server) Bundles(ctx context.Context, evs []*storage.Event, viewerID, viewerDevice string) (map[string]json.RawMessage, error) {
	return s.bundles(ctx, evs, viewerID, viewerDevice, true)
}

func (s *Server) bundles(ctx context.Context, evs []*storage.Event, viewerID, viewerDevice string, threads bool) (map[string]json.RawMessage, error) {
	parents := map[string]string{}
	byID := map[string]*storage.Event{}
	roomHas := map[string]bool{}
	for _, e := range evs {
		if e == nil || e.StateKey != nil || e.Rejected {
			continue
		}
		has, ok := roomHas[e.RoomID]
		if !ok {
			var err error
			if has, err = s.db.RoomHasRelations(ctx, e.RoomID); err != nil {
				return nil, err
			}
			roomHas[e.RoomID] = has
		}
		if has {
			parents[e.EventID] = e.RoomID
			byID[e.EventID] = e
		}
	}
	if len(parents) == 0 {
		return nil, nil
	}
	sums, err := s.db.RelationSummaries(ctx, viewerID, parents)
	if err != nil || len(sums) == 0 {
		return nil, err
	}
	// The child events the bundles show: replacement candidates (the few
	// most recent from the right sender) and each thread's latest event.
	var want []string
	for id, sm := range sums {
		p := byID[id]
		if replaceable(p) {
			n := 0
			for _, r := range sm.Replacements {
				if r.Sender == p.Sender && r.Type == p.Type && n < 5 {
					want = append(want, r.EventID)
					n++
				}
			}
		}
		if threads && sm.Thread != nil {
			want = append(want, sm.Thread.LatestEventID)
		}
	}
	children, err := s.db.EventsByIDs(ctx, want)
	if err != nil {
		return nil, err
	}
	children, err = s.VisibleEvents(ctx, viewerID, children)
	if err != nil {
		return nil, err
	}
	visible := make(map[string]*storage.Event, len(children))
	for _, c := range children {
		visible[c.EventID] = c
	}
	type agg struct {
		replace *storage.Event
		refs    []string
		latest  *storage.Event
		count   int64
		partic  bool
	}
	aggs := map[string]*agg{}
	var latest []*storage.Event
	for id, sm := range sums {
		p := byID[id]
		a := &agg{refs: sm.References}
		if replaceable(p) {
			for _, r := range sm.Replacements {
				if c := visible[r.EventID]; c != nil && validReplacement(p, c) {
					a.replace = c
					break
				}
			}
		}
		if threads && sm.Thread != nil {
			if c := visible[sm.Thread.LatestEventID]; c != nil {
				a.latest, a.count = c, sm.Thread.Count
				a.partic = sm.Participated || p.Sender == viewerID
				latest = append(latest, c)
			}
		}
		if a.replace != nil || len(a.refs) > 0 || a.latest != nil {
			aggs[id] = a
		}
	}
	// The latest event of a thread carries its own bundle (its edits);
	// thread events cannot be thread roots, so this goes one level only.
	var nested map[string]json.RawMessage
	if len(latest) > 0 {
		if nested, err = s.bundles(ctx, latest, viewerID, viewerDevice, false); err != nil {
			return nil, err
		}
	}
	out := make(map[string]json.RawMessage, len(aggs))
	for id, a := range aggs {
		m := map[string]any{}
		if a.replace != nil {
			m[storage.RelReplace] = s.ClientEvent(ctx, a.replace, viewerID, viewerDevice)
		}
		if len(a.refs) > 0 {
			chunk := make([]map[string]string, 0, len(a.refs))
			for _, r := range a.refs {
				chunk = append(chunk, map[string]string{"event_id": r})
			}
			m[storage.RelReference] = map[string]any{"chunk": chunk}
		}
		if a.latest != nil {
			m[storage.RelThread] = map[string]any{
				"latest_event":              WithRelations(s.ClientEvent(ctx, a.latest, viewerID, viewerDevice), nested[a.latest.EventID]),
				"count":                     a.count,
				"current_user_participated": a.partic,
			}
		}
		js, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		out[id] = js
	}
	return out, nil
}

// replaceable reports whether an event may show a replacement: not
// redacted (spec: a redacted original gets no m.replace bundle), not a
// state event, not itself a replacement.
func replaceable(p *storage.Event) bool {
	if p.RedactedBy != "" || p.StateKey != nil {
		return false
	}
	_, rt, _, ok := storage.RelatesTo(p.JSON)
	return !ok || rt != storage.RelReplace
}

// validReplacement applies the spec's "Validity of replacement events" to
// a replacement c of p (p already replaceable).
func validReplacement(p, c *storage.Event) bool {
	if c.Sender != p.Sender || c.Type != p.Type || c.StateKey != nil || c.RoomID != p.RoomID || c.RedactedBy != "" || c.Rejected {
		return false
	}
	// An encrypted replacement carries m.new_content inside its payload.
	return c.Type == "m.room.encrypted" || gjson.GetBytes(c.JSON, `content.m\.new_content`).IsObject()
}

// CheckRelation applies the server-side rules for sending an event that
// relates to another (content is the event's content): a thread cannot
// start from an event that is itself a relation (spec: "Validation of
// m.thread relationships"), and a user may not send the same annotation
// twice (spec: "Avoiding duplicate annotations").
func (s *Server) CheckRelation(ctx context.Context, roomID, sender, evType string, content []byte) error {
	rel := gjson.GetBytes(content, `m\.relates_to`)
	if !rel.IsObject() {
		return nil
	}
	relType, parent := rel.Get("rel_type").Str, rel.Get("event_id").Str
	switch relType {
	case storage.RelThread:
		p, err := s.db.EventByID(ctx, parent)
		if err != nil || p.RoomID != roomID {
			return nil
		}
		if gjson.GetBytes(p.JSON, `content.m\.relates_to.rel_type`).Exists() {
			return httputil.Err(400, "M_UNKNOWN", "Cannot start threads from an event with a relation")
		}
	case storage.RelAnnotation:
		key := rel.Get("key")
		if key.Type != gjson.String {
			return nil
		}
		dup, err := s.db.HasAnnotation(ctx, roomID, parent, sender, evType, key.Str)
		if err != nil {
			return err
		}
		if dup {
			return httputil.Err(400, "M_DUPLICATE_ANNOTATION", "Duplicate annotation")
		}
	}
	return nil
}
