package adminapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/tidwall/gjson"

	"repeater/internal/httputil"
	"repeater/storage"
)

// History purges (Synapse's purge history API): a room's message events
// before a point are deleted; state events stay (as outliers, out of the
// timeline), so the room's state and auth chains are whole and /messages
// ends at the purge point.

// PurgePoint returns the depth below which a purge up to eventID (which
// is kept, with every event at its depth) or, if eventID is empty, up to
// the timestamp ts (milliseconds; the latest event sent before it is
// kept) deletes.
func (a *API) PurgePoint(ctx context.Context, roomID, eventID string, ts int64) (int64, error) {
	if _, err := a.rs.RoomVersion(ctx, roomID); err != nil {
		return 0, err
	}
	if eventID != "" {
		e, err := a.db.EventByID(ctx, eventID)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && e.RoomID != roomID) {
			return 0, httputil.NotFound("Event not found in this room")
		}
		if err != nil {
			return 0, err
		}
		return e.Depth, nil
	}
	d, err := a.db.PurgeDepthBefore(ctx, roomID, ts)
	if errors.Is(err, storage.ErrNotFound) {
		return 0, httputil.Err(400, "M_UNKNOWN", "There is no event to be purged")
	}
	return d, err
}

// PurgeHistory deletes a room's message events below depth beforeDepth
// (see PurgePoint); local users' events too when deleteLocal. It returns
// how many were deleted.
func (a *API) PurgeHistory(ctx context.Context, roomID string, beforeDepth int64, deleteLocal bool) (int, error) {
	n, err := a.rs.PurgeHistory(ctx, roomID, beforeDepth, deleteLocal)
	if err == nil {
		a.log.Info("purged history", "room", roomID, "before_depth", beforeDepth, "events", n)
	}
	return n, err
}

// purgeHistory handles POST /v1/purge_history/{roomId}[/{eventId}]
// {delete_local_events, purge_up_to_event_id, purge_up_to_ts}: the purge
// runs in the background.
func (a *API) purgeHistory(r *http.Request) (any, error) {
	body, err := httputil.ReadBody(r, httputil.MaxBody, true)
	if err != nil {
		return nil, err
	}
	v := httputil.Vars(r)
	roomID, eventID := v["roomId"], v["eventId"]
	if eventID == "" {
		eventID = gjson.GetBytes(body, "purge_up_to_event_id").Str
	}
	var ts int64
	if eventID == "" {
		t := gjson.GetBytes(body, "purge_up_to_ts")
		if t.Type != gjson.Number {
			return nil, httputil.MissingParam("Give purge_up_to_event_id or purge_up_to_ts")
		}
		ts = t.Int()
	}
	del := gjson.GetBytes(body, "delete_local_events")
	if del.Exists() && del.Type != gjson.True && del.Type != gjson.False {
		return nil, httputil.BadJSON("delete_local_events must be a boolean")
	}
	depth, err := a.PurgePoint(r.Context(), roomID, eventID, ts)
	if err != nil {
		return nil, err
	}
	id := a.jobs.start("purge", roomID, func(ctx context.Context, _ *job) error {
		_, err := a.PurgeHistory(ctx, roomID, depth, del.Bool())
		return err
	})
	return map[string]any{"purge_id": id}, nil
}

// purgeStatus handles GET /v1/purge_history_status/{purgeId}.
func (a *API) purgeStatus(r *http.Request) (any, error) {
	j, ok := a.jobs.get(httputil.Vars(r)["purgeId"])
	if !ok || j.kind != "purge" {
		return nil, httputil.NotFound("Purge not found")
	}
	out := map[string]any{"status": j.status}
	if j.err != "" {
		out["error"] = j.err
	}
	return out, nil
}

// eventReports handles GET /v1/event_reports (from, limit, dir): reports
// of events, newest first.
func (a *API) eventReports(r *http.Request) (any, error) {
	offset, limit, err := page(r, 100)
	if err != nil {
		return nil, err
	}
	backwards := r.URL.Query().Get("dir") != "f"
	reports, total, err := a.db.EventReports(r.Context(), offset, limit, !backwards)
	if err != nil {
		return nil, err
	}
	out := make([]any, 0, len(reports))
	for i := range reports {
		out = append(out, a.reportJSON(r.Context(), &reports[i], false))
	}
	resp := map[string]any{"event_reports": out, "total": total}
	if offset+len(reports) < total {
		resp["next_token"] = offset + len(reports)
	}
	return resp, nil
}

// eventReport handles GET /v1/event_reports/{reportId}.
func (a *API) eventReport(r *http.Request) (any, error) {
	id, err := strconv.ParseInt(httputil.Vars(r)["reportId"], 10, 64)
	if err != nil {
		return nil, httputil.InvalidParam("Invalid report ID")
	}
	rep, err := a.db.GetReport(r.Context(), id)
	if err != nil || rep.Kind != "event" {
		if err == nil || errors.Is(err, storage.ErrNotFound) {
			return nil, httputil.NotFound("Report not found")
		}
		return nil, err
	}
	return a.reportJSON(r.Context(), rep, true), nil
}

// reportJSON is an event report as Synapse shows it, with the room's name
// and alias and the event's sender (and, for one report, the event).
func (a *API) reportJSON(ctx context.Context, rep *storage.Report, withEvent bool) map[string]any {
	out := map[string]any{"id": rep.ID, "received_ts": rep.ReceivedTS, "room_id": rep.RoomID, "event_id": rep.EventID,
		"user_id": rep.Reporter, "reason": nullable(rep.Reason), "score": rep.Score, "sender": nil, "name": nil, "canonical_alias": nil}
	if rep.RoomID == "" {
		// not a room's event
	} else if rooms, err := a.db.RoomSummaries(ctx, a.serverName, rep.RoomID); err == nil && len(rooms) == 1 {
		out["name"], out["canonical_alias"] = nullable(rooms[0].Name), nullable(rooms[0].CanonicalAlias)
	}
	if e, err := a.db.EventByID(ctx, rep.EventID); err == nil {
		out["sender"] = e.Sender
		if withEvent {
			out["event_json"] = rawJSON(e.JSON)
		}
	}
	return out
}
