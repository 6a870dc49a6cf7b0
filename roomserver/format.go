package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/tidwall/gjson"

	"repeater/storage"
)

// ClientEvent renders e in the client event format (spec: Client-Server API,
// "Room event format"): the fields clients read, with unsigned data computed
// for the viewer — age, transaction_id for the sending device, prev_content
// for replaced state, redacted_because.
func (s *Server) ClientEvent(ctx context.Context, e *storage.Event, viewerID, viewerDevice string) json.RawMessage {
	js := s.ClientJSON(ctx, e)
	buf := make([]byte, 0, len(js)+128)
	buf = append(buf, `{"type":`...)
	buf = strconv.AppendQuote(buf, e.Type)
	buf = append(buf, `,"event_id":`...)
	buf = strconv.AppendQuote(buf, e.EventID)
	buf = append(buf, `,"room_id":`...)
	buf = strconv.AppendQuote(buf, e.RoomID)
	buf = append(buf, `,"sender":`...)
	buf = strconv.AppendQuote(buf, e.Sender)
	buf = append(buf, `,"origin_server_ts":`...)
	buf = strconv.AppendInt(buf, e.OriginTS, 10)
	if e.StateKey != nil {
		buf = append(buf, `,"state_key":`...)
		buf = strconv.AppendQuote(buf, *e.StateKey)
	}
	content := gjson.GetBytes(js, "content")
	buf = append(buf, `,"content":`...)
	if content.IsObject() {
		buf = append(buf, content.Raw...)
	} else {
		buf = append(buf, `{}`...)
	}
	if red := gjson.GetBytes(js, "redacts"); red.Type == gjson.String {
		buf = append(buf, `,"redacts":`...)
		buf = append(buf, red.Raw...)
	}
	buf = append(buf, `,"unsigned":{"age":`...)
	buf = strconv.AppendInt(buf, max(0, time.Now().UnixMilli()-e.OriginTS), 10)
	if e.TxnID != "" && e.Sender == viewerID && e.TxnDevice == viewerDevice {
		buf = append(buf, `,"transaction_id":`...)
		buf = strconv.AppendQuote(buf, e.TxnID)
	}
	if e.ReplacesNID != 0 {
		if prev, err := s.Event(ctx, e.ReplacesNID); err == nil {
			pc := gjson.GetBytes(s.ClientJSON(ctx, prev), "content")
			if pc.IsObject() {
				buf = append(buf, `,"prev_content":`...)
				buf = append(buf, pc.Raw...)
				buf = append(buf, `,"replaces_state":`...)
				buf = strconv.AppendQuote(buf, prev.EventID)
				buf = append(buf, `,"prev_sender":`...)
				buf = strconv.AppendQuote(buf, prev.Sender)
			}
		}
	}
	if rb := gjson.GetBytes(js, "unsigned.redacted_because"); rb.Exists() {
		buf = append(buf, `,"redacted_because":`...)
		buf = append(buf, rb.Raw...)
	}
	if e.RedactedBy != "" {
		buf = append(buf, `,"redacted_by":`...)
		buf = strconv.AppendQuote(buf, e.RedactedBy)
	}
	if irs := gjson.GetBytes(e.JSON, "unsigned.invite_room_state"); irs.Exists() {
		buf = append(buf, `,"invite_room_state":`...)
		buf = append(buf, irs.Raw...)
	}
	buf = append(buf, `}}`...)
	return buf
}

// TopoToken is a pagination token in topological order, as /messages,
// /context and /search hand them out: "t<depth>_<stream position>".
func TopoToken(depth, stream int64) string { return fmt.Sprintf("t%d_%d", depth, stream) }

// ContextTokens are the start and end tokens of an event's context (the
// events before it, newest first, and after it, oldest first): paging
// back from start or forward from end continues past the context
// (Client-Server API, "GET /rooms/{roomId}/context/{eventId}").
func ContextTokens(e *storage.Event, before, after []*storage.Event) (start, end string) {
	start, end = TopoToken(e.Depth, e.StreamPos-1), TopoToken(e.Depth, e.StreamPos)
	if len(before) > 0 {
		l := before[len(before)-1]
		start = TopoToken(l.Depth, l.StreamPos-1)
	}
	if len(after) > 0 {
		l := after[len(after)-1]
		end = TopoToken(l.Depth, l.StreamPos)
	}
	return start, end
}
