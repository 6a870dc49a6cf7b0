package adminapi

import (
	"net/http"
	"strconv"

	"repeater/internal/httputil"
)

// eventRelay handles GET /_repeater/admin/v1/event_relays/{eventId}: the
// peer (server name and address) that relayed a received event.
func (a *API) eventRelay(r *http.Request) (any, error) {
	rel, err := a.db.EventRelay(r.Context(), httputil.Vars(r)["eventId"])
	if err != nil {
		return nil, err
	}
	return rel, nil
}

// roomRelays handles GET /_repeater/admin/v1/rooms/{roomId}/event_relays
// (?limit=, ?from= a received_ts to page below): the room's relay
// records, newest first.
func (a *API) roomRelays(r *http.Request) (any, error) {
	q := r.URL.Query()
	limit, _ := strconv.Atoi(q.Get("limit"))
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	from, _ := strconv.ParseInt(q.Get("from"), 10, 64)
	rels, err := a.db.RoomRelays(r.Context(), httputil.Vars(r)["roomId"], from, limit)
	if err != nil {
		return nil, err
	}
	resp := map[string]any{"relays": rels}
	if len(rels) == limit {
		resp["next_batch"] = strconv.FormatInt(rels[len(rels)-1].ReceivedTS, 10)
	}
	if rels == nil {
		resp["relays"] = []any{}
	}
	return resp, nil
}
