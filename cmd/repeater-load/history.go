package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// scenarioHistory fills one room with cfg.history messages from
// cfg.fillSenders concurrent senders, then pages it backwards with
// /messages?dir=b&limit=cfg.pageLimit from the latest event until the
// server has nothing more, and checks that every sent message was seen
// exactly once and that m.room.create was reached. If the check fails and
// cfg.recheckAfter > 0, it waits that long and pages once more, to tell
// a server that is merely lagging from one that loses events.
func (r *runner) scenarioHistory(ctx context.Context) error {
	const s = "history"
	users, err := r.take(ctx, r.cfg.fillSenders)
	if err != nil {
		return err
	}
	room, err := r.c.createRoom(ctx, users[0], "repeater-load history "+r.prefix)
	if err != nil {
		return err
	}
	if err := r.joinAll(ctx, users[1:], room); err != nil {
		return err
	}

	n := r.cfg.history
	nonce := "hist-" + randomHex(6) + "-"
	t0 := time.Now()
	eventIDs := make([]string, n)
	errs, first := forEach(ctx, len(users), n, func(ctx context.Context, w, i int) error {
		id, err := r.c.sendText(ctx, users[w], room, fmt.Sprintf("h%d", i), nonce+strconv.Itoa(i))
		eventIDs[i] = id
		return err
	})
	fill := time.Since(t0)
	r.add(s, "fill: messages sent", float64(n-errs), "")
	r.add(s, fmt.Sprintf("fill rate (%d senders)", len(users)), rate(n-errs, fill), "/s")
	if errs > 0 {
		return fmt.Errorf("filling: %d sends failed, first: %w", errs, first)
	}

	u := users[0]
	r.settle(s, "for idle server before paging")
	p := r.paginate(ctx, u, room, nonce, n)
	if p.viaSync {
		r.add(s, "paged from /sync prev_batch (no-from rejected)", 1, "")
	}
	r.add(s, "pagination: events returned", float64(p.total), "")
	r.add(s, fmt.Sprintf("pagination: pages (limit %d requested)", r.cfg.pageLimit), float64(p.pages), "")
	r.add(s, "pagination: largest page", float64(p.largest), "events")
	r.add(s, "pagination time", ms(p.elapsed), "ms")
	r.add(s, "pagination events/s", rate(p.total, p.elapsed), "/s")
	if p.err != nil {
		return p.err
	}
	missing, dupMsgs, dupIDs, dupTypes := p.check(eventIDs)
	r.add(s, "check: messages missing", float64(len(missing)), "")
	r.add(s, "check: messages seen more than once", float64(dupMsgs), "")
	r.add(s, "check: duplicate event IDs", float64(dupIDs), "")
	r.add(s, "check: m.room.create reached", b2f(p.createSeen), "bool")
	if len(missing) > 0 {
		// Tell "stored but skipped by pagination" from "never stored".
		sample := missing[:min(len(missing), 10)]
		found := 0
		for _, id := range sample {
			if r.c.getEvent(ctx, u, room, id) == nil {
				found++
			}
		}
		r.add(s, fmt.Sprintf("check: of %d missing sampled, fetchable by /event", len(sample)), float64(found), "")
	}
	ok := len(missing) == 0 && dupMsgs == 0 && dupIDs == 0 && p.createSeen
	if !ok && r.cfg.recheckAfter > 0 && ctx.Err() == nil {
		time.Sleep(r.cfg.recheckAfter)
		p2 := r.paginate(ctx, u, room, nonce, n)
		m2, d2, id2, _ := p2.check(eventIDs)
		after := r.cfg.recheckAfter.String()
		r.add(s, "recheck after "+after+": messages missing", float64(len(m2)), "")
		r.add(s, "recheck after "+after+": duplicates (messages+IDs)", float64(d2+id2), "")
		if p2.err != nil {
			return fmt.Errorf("recheck: %w", p2.err)
		}
	}
	if !ok {
		return fmt.Errorf("pagination check failed: %d missing, %d duplicated messages, %d duplicate IDs %v, create reached=%v",
			len(missing), dupMsgs, dupIDs, dupTypes, p.createSeen)
	}
	return nil
}

// pageResult is what one full backward pagination saw.
type pageResult struct {
	count      []int          // count[i]: times message i was seen
	ids        map[string]int // event ID -> times seen
	types      map[string]string
	createSeen bool
	viaSync    bool // started from /sync prev_batch because no-from was rejected
	total      int
	pages      int
	largest    int
	elapsed    time.Duration
	err        error // a paging failure; the fields still hold what was seen
}

// paginate pages the room backwards from the latest event until the
// server returns an empty chunk or no end token. It prefers no `from`
// (allowed since spec v1.3); if the server rejects that with 400, it
// starts from the prev_batch of a limit-1 /sync timeline.
func (r *runner) paginate(ctx context.Context, u user, room, nonce string, n int) *pageResult {
	p := &pageResult{count: make([]int, n), ids: map[string]int{}, types: map[string]string{}}
	tally := func(evs []clientEvent) {
		for _, ev := range evs {
			p.total++
			p.ids[ev.EventID]++
			p.types[ev.EventID] = ev.Type
			if ev.Type == "m.room.create" {
				p.createSeen = true
			}
			if rest, ok := strings.CutPrefix(ev.Content.Body, nonce); ok && ev.Type == "m.room.message" {
				if i, err := strconv.Atoi(rest); err == nil && i >= 0 && i < n {
					p.count[i]++
				}
			}
		}
	}

	t0 := time.Now()
	defer func() { p.elapsed = time.Since(t0) }()
	from := ""
	page, err := r.c.messages(ctx, u, room, "", r.cfg.pageLimit)
	var he *httpError
	if errors.As(err, &he) && he.Status == 400 {
		p.viaSync = true
		filter := fmt.Sprintf(`{"room":{"rooms":[%q],"timeline":{"limit":1}}}`, room)
		sr, _, serr := r.c.sync(ctx, u, "", filter, 0)
		if serr != nil {
			p.err = fmt.Errorf("/messages without from: %v; /sync: %w", err, serr)
			return p
		}
		tl := sr.Rooms.Join[room].Timeline
		tally(tl.Events)
		if tl.PrevBatch == "" {
			p.err = fmt.Errorf("/messages without from: %v; /sync gave no prev_batch", err)
			return p
		}
		from = tl.PrevBatch
		page, err = r.c.messages(ctx, u, room, from, r.cfg.pageLimit)
	}
	// Bounded: servers may cap the page size (Dendrite uses 100), so allow
	// one page per event, and stop if far more events come back than exist.
	maxPages, maxEvents := n+100, 2*n+1000
	for {
		if err != nil {
			p.err = fmt.Errorf("page %d: %w", p.pages+1, err)
			return p
		}
		p.pages++
		p.largest = max(p.largest, len(page.Chunk))
		tally(page.Chunk)
		if len(page.Chunk) == 0 || page.End == "" {
			return p
		}
		if page.End == from {
			p.err = fmt.Errorf("page %d: end token %q did not advance", p.pages, page.End)
			return p
		}
		if p.pages >= maxPages || p.total >= maxEvents {
			p.err = fmt.Errorf("gave up after %d pages (%d events)", p.pages, p.total)
			return p
		}
		from = page.End
		page, err = r.c.messages(ctx, u, room, from, r.cfg.pageLimit)
	}
}

// check returns the event IDs of sent messages never seen, the number of
// messages seen more than once, the number of event IDs seen more than
// once and a few "type xN" descriptions of those.
func (p *pageResult) check(eventIDs []string) (missing []string, dupMsgs, dupIDs int, dupTypes []string) {
	for i, c := range p.count {
		if c == 0 {
			missing = append(missing, eventIDs[i])
		} else if c > 1 {
			dupMsgs++
		}
	}
	for id, c := range p.ids {
		if c > 1 {
			dupIDs++
			if len(dupTypes) < 5 {
				dupTypes = append(dupTypes, fmt.Sprintf("%s x%d", p.types[id], c))
			}
		}
	}
	return missing, dupMsgs, dupIDs, dupTypes
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
