package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// fakeRoom serves a room of a create event plus n messages "nonce<i>".
// /messages without `from` is rejected with 400 when rejectNoFrom, so the
// tool must start from the /sync timeline's prev_batch instead. Tokens
// are the index of the next event to return, going backwards.
func fakeRoom(t *testing.T, n, pageCap int, rejectNoFrom bool) *httptest.Server {
	events := []map[string]any{{"event_id": "$create", "type": "m.room.create"}}
	for i := 0; i < n; i++ {
		events = append(events, map[string]any{
			"event_id": fmt.Sprintf("$m%d", i), "type": "m.room.message",
			"content": map[string]any{"body": "nonce" + strconv.Itoa(i)},
		})
	}
	write := func(w http.ResponseWriter, code int, v any) {
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(v)
	}
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		switch {
		case strings.HasSuffix(r.URL.Path, "/sync"):
			last := len(events) - 1
			write(w, 200, map[string]any{"next_batch": "s1", "rooms": map[string]any{"join": map[string]any{
				"!r:x": map[string]any{"timeline": map[string]any{
					"events": events[last:], "prev_batch": strconv.Itoa(last - 1),
				}},
			}}})
		case strings.HasSuffix(r.URL.Path, "/messages"):
			from := len(events) - 1
			if q.Get("from") == "" {
				if rejectNoFrom {
					write(w, 400, map[string]any{"errcode": "M_MISSING_PARAM"})
					return
				}
			} else {
				from, _ = strconv.Atoi(q.Get("from"))
			}
			limit, _ := strconv.Atoi(q.Get("limit"))
			limit = min(limit, pageCap)
			var chunk []map[string]any
			i := from
			for ; i >= 0 && len(chunk) < limit; i-- {
				chunk = append(chunk, events[i])
			}
			resp := map[string]any{"chunk": chunk, "start": strconv.Itoa(from)}
			if i >= 0 {
				resp["end"] = strconv.Itoa(i)
			}
			write(w, 200, resp)
		default:
			t.Errorf("unexpected request %s", r.URL)
			write(w, 404, map[string]any{})
		}
	}))
}

func TestPaginate(t *testing.T) {
	for _, c := range []struct {
		name         string
		rejectNoFrom bool
	}{{"no-from", false}, {"sync-prev-batch fallback", true}} {
		t.Run(c.name, func(t *testing.T) {
			const n = 2345
			srv := fakeRoom(t, n, 100, c.rejectNoFrom)
			defer srv.Close()
			r := &runner{cfg: config{pageLimit: 1000}, c: newClient(srv.URL, 4)}
			p := r.paginate(context.Background(), user{Token: "t"}, "!r:x", "nonce", n)
			if p.err != nil {
				t.Fatal(p.err)
			}
			ids := make([]string, n)
			missing, dupMsgs, dupIDs, _ := p.check(ids)
			if len(missing) != 0 || dupMsgs != 0 || dupIDs != 0 || !p.createSeen {
				t.Errorf("missing=%d dupMsgs=%d dupIDs=%d create=%v", len(missing), dupMsgs, dupIDs, p.createSeen)
			}
			if p.total != n+1 || p.largest != 100 || p.viaSync != c.rejectNoFrom {
				t.Errorf("total=%d largest=%d viaSync=%v", p.total, p.largest, p.viaSync)
			}
		})
	}
}

func TestCheckLoopback(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:8008", "http://localhost:1", "http://[::1]:8008", "http://127.1.2.3"} {
		if err := checkLoopback(u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	for _, u := range []string{"http://10.0.0.1:8008", "http://example.org", "ftp://127.0.0.1", "http://192.168.1.1"} {
		if checkLoopback(u) == nil {
			t.Errorf("%s: accepted", u)
		}
	}
}
