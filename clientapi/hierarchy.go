package clientapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/roomserver"
)

// hierarchy handles GET /_matrix/client/v1/rooms/{roomId}/hierarchy (spec:
// "Spaces"): the space's rooms, breadth first, local ones from our state and
// others asked of the servers named in m.space.child.
func (a *API) hierarchy(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	q := r.URL.Query()
	rootID := vars(r)["roomId"]
	suggestedOnly := q.Get("suggested_only") == "true"
	limit, maxDepth := 50, 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			return nil, httputil.InvalidParam("Invalid limit")
		}
		limit = min(n, 1000)
	}
	if md := q.Get("max_depth"); md != "" {
		n, err := strconv.Atoi(md)
		if err != nil || n < 0 {
			return nil, httputil.InvalidParam("Invalid max_depth")
		}
		maxDepth = n
	}
	from := 0
	if f := q.Get("from"); f != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(f, "h"))
		if err != nil || n < 0 {
			return nil, httputil.InvalidParam("Invalid from token")
		}
		from = n
	}
	type item struct {
		roomID string
		via    []string
		depth  int
	}
	var rootVia []string
	if _, srv, ok := strings.Cut(rootID, ":"); ok {
		rootVia = []string{srv}
	}
	queue := []item{{roomID: rootID, via: rootVia}}
	seen := map[string]bool{rootID: true}
	var rooms []map[string]any
	for len(queue) > 0 && len(rooms) < from+limit+1 && len(rooms) < 2000 {
		it := queue[0]
		queue = queue[1:]
		sum, children, err := a.spaceRoom(r.Context(), it.roomID, d.UserID, it.via, suggestedOnly)
		if err != nil {
			if it.roomID == rootID {
				if errors.Is(err, roomserver.ErrUnknownRoom) {
					return nil, httputil.Forbidden("You may not see this room")
				}
				return nil, err
			}
			continue // an inaccessible child is left out
		}
		rooms = append(rooms, sum)
		if it.depth >= maxDepth {
			continue
		}
		for _, c := range children {
			if suggestedOnly && !c.Suggested {
				continue
			}
			if !seen[c.RoomID] {
				seen[c.RoomID] = true
				queue = append(queue, item{roomID: c.RoomID, via: c.Via, depth: it.depth + 1})
			}
		}
	}
	if from > len(rooms) {
		from = len(rooms)
	}
	page := rooms[from:]
	resp := map[string]any{}
	if len(page) > limit || len(queue) > 0 && len(rooms) >= from+limit {
		if len(page) > limit {
			page = page[:limit]
		}
		resp["next_batch"] = "h" + strconv.Itoa(from+len(page))
	}
	resp["rooms"] = page
	return resp, nil
}

// spaceRoom summarises one room of a hierarchy: from our own state when we
// are in it, otherwise from a server that is.
func (a *API) spaceRoom(ctx context.Context, roomID, userID string, via []string, suggestedOnly bool) (map[string]any, []roomserver.SpaceChild, error) {
	sum, children, err := a.rs.SpaceSummary(ctx, roomID, userID)
	if !errors.Is(err, roomserver.ErrUnknownRoom) || a.remote == nil || len(via) == 0 {
		return sum, children, err
	}
	return a.remote.Hierarchy(ctx, roomID, via, suggestedOnly)
}
