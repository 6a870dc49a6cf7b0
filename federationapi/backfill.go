package federationapi

import (
	"context"
	"encoding/json"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// gapRetry is how long a gap that could not be filled is left alone before
// it is asked for again (so a page request does not re-ask every time).
const gapRetry = 30 * time.Second

// backfillState remembers when each gap was last asked for.
type backfillState struct {
	mu       sync.Mutex
	tried    map[string]time.Time // room|event -> last attempt
	stripped map[string]int       // event ID -> times seen without content
}

// Backfill fetches history older than depth beforeDepth in a room from
// the other servers in it (spec: "Backfilling"), and stores it. It returns
// how many events were added to the timeline.
func (a *API) Backfill(ctx context.Context, roomID string, beforeDepth int64, limit int) (int, error) {
	gaps, err := a.rs.Gaps(ctx, roomID)
	if err != nil || len(gaps) == 0 {
		return 0, err
	}
	now := time.Now()
	var from []string
	a.bf.mu.Lock()
	if a.bf.tried == nil {
		a.bf.tried = map[string]time.Time{}
	}
	// The caller has run out of held history below its page, so every gap
	// is a candidate (deepest-referenced first); beforeDepth is informative.
	_ = beforeDepth
	for _, g := range gaps {
		k := roomID + "|" + g.EventID
		if t, ok := a.bf.tried[k]; ok && now.Sub(t) < gapRetry {
			continue
		}
		a.bf.tried[k] = now
		from = append(from, g.EventID)
		if len(from) == 5 {
			break
		}
	}
	a.bf.mu.Unlock()
	if len(from) == 0 {
		return 0, nil
	}
	ver, err := a.rs.RoomVersion(ctx, roomID)
	if err != nil {
		return 0, err
	}
	servers, err := a.rs.JoinedServers(ctx, roomID)
	if err != nil {
		return 0, err
	}
	ctx, cancel := a.deadline(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	// A server that does not (yet) count us as in the room answers with
	// events stripped of their content (their hashes no longer match, so
	// they parse as redacted). Such an answer is kept only if no other
	// server gives a better one: stripped copies would hide the history
	// for good.
	var lastErr error
	var best []gomatrixserverlib.PDU
	bestSrv, bestStripped := "", -1
	bestCtx := ctx
	for _, srv := range servers {
		if srv == string(a.serverName) {
			continue
		}
		sctx := a.from(ctx, spec.ServerName(srv))
		txn, err := a.client.Backfill(sctx, a.serverName, spec.ServerName(srv), roomID, limit, from)
		if err != nil {
			lastErr = err
			continue
		}
		pdus := a.parseAndVerifyAll(sctx, ver, roomID, txn.PDUs)
		if len(pdus) == 0 {
			continue
		}
		stripped := 0
		for _, p := range pdus {
			if p.Redacted() {
				stripped++
			}
		}
		if bestStripped < 0 || stripped < bestStripped || (stripped == bestStripped && len(pdus) > len(best)) {
			best, bestSrv, bestStripped, bestCtx = pdus, srv, stripped, sctx
		}
		if stripped == 0 {
			break
		}
		a.log.Info("backfill answer had stripped events; trying another server", "room", roomID, "server", srv, "stripped", stripped)
	}
	if best != nil && bestStripped > 0 {
		// Keep stripped copies out the first time they are seen: most
		// likely the server has not yet taken in our join. They are asked
		// for again shortly; seen stripped again, they are taken as they
		// are (the events may really have been redacted).
		kept := best[:0:0]
		a.bf.mu.Lock()
		if a.bf.stripped == nil || len(a.bf.stripped) > 10000 {
			a.bf.stripped = map[string]int{}
		}
		for _, p := range best {
			if p.Redacted() && a.bf.stripped[p.EventID()] == 0 {
				a.bf.stripped[p.EventID()]++
				continue
			}
			kept = append(kept, p)
		}
		for _, id := range from {
			delete(a.bf.tried, roomID+"|"+id)
		}
		a.bf.mu.Unlock()
		best = kept
		if a.background() != nil {
			a.goBackground(func(bg context.Context) {
				select {
				case <-bg.Done():
				case <-time.After(2 * time.Second):
					_, _ = a.Backfill(bg, roomID, beforeDepth, limit)
				}
			})
		}
	}
	if len(best) > 0 {
		n, err := a.rs.StoreBackfilled(bestCtx, roomID, best, func(ids []string) []gomatrixserverlib.PDU {
			got, _ := a.missingAuth(bestCtx, spec.ServerName(bestSrv), roomID)(ver, ids)
			return got
		})
		if err != nil {
			return 0, err
		}
		// What was fetched is no longer a gap; new gaps may be asked at once.
		a.bf.mu.Lock()
		for _, id := range from {
			delete(a.bf.tried, roomID+"|"+id)
		}
		a.bf.mu.Unlock()
		return n, nil
	}
	return 0, lastErr
}

// backfillAll fetches a room's whole history in the background (the
// federation.backfill: full mode), page by page, until no gap is left or
// no server can fill the rest.
func (a *API) backfillAll(ctx context.Context, roomID string) {
	for ctx.Err() == nil {
		gaps, err := a.rs.Gaps(ctx, roomID)
		if err != nil || len(gaps) == 0 {
			return
		}
		n, err := a.Backfill(ctx, roomID, gaps[0].Depth, 500)
		if err != nil || n == 0 {
			// Let the retry interval pass, then try the remaining gaps once more.
			select {
			case <-ctx.Done():
				return
			case <-time.After(gapRetry):
			}
			if n2, _ := a.Backfill(ctx, roomID, gaps[0].Depth, 500); n2 == 0 {
				return
			}
		}
	}
}

// parseAndVerifyAll is parseAndVerify for a batch, on every core: checking
// signatures is most of the cost of taking in history. Events that fail, or
// are for another room, are left out.
func (a *API) parseAndVerifyAll(ctx context.Context, ver gomatrixserverlib.RoomVersion, roomID string, raws []json.RawMessage) []gomatrixserverlib.PDU {
	out := make([]gomatrixserverlib.PDU, len(raws))
	workers := min(runtime.GOMAXPROCS(0), len(raws))
	var wg sync.WaitGroup
	var next atomic.Int64
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(raws) {
					return
				}
				if p, err := a.parseAndVerify(ctx, ver, raws[i]); err == nil && p.RoomID().String() == roomID {
					out[i] = p
				}
			}
		}()
	}
	wg.Wait()
	kept := out[:0]
	for _, p := range out {
		if p != nil {
			kept = append(kept, p)
		}
	}
	return kept
}

// background is the context for work that outlives requests (nil before Run).
func (a *API) background() context.Context {
	a.Sender.mu.Lock()
	defer a.Sender.mu.Unlock()
	return a.runCtx
}
