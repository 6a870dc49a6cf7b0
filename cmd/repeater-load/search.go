package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"strconv"
	"strings"
	"time"
)

// searchResp is the part of a POST /search response the scenario reads.
type searchResp struct {
	SearchCategories struct {
		RoomEvents struct {
			Count     int               `json:"count"`
			Results   []json.RawMessage `json:"results"`
			NextBatch string            `json:"next_batch"`
		} `json:"room_events"`
	} `json:"search_categories"`
}

// scenarioSearch fills a room with cfg.searchMessages messages whose words
// come from a vocabulary of 100 words with Zipf-distributed frequencies
// (so terms match many, some or few messages), then runs
// cfg.searchQueries POST /search requests one at a time, alternating rank
// and recent order, and reports their latency per order. A server that
// does not implement /search (404, 405, 501) is reported, not failed.
func (r *runner) scenarioSearch(ctx context.Context) error {
	const s = "search"
	users, err := r.take(ctx, r.cfg.fillSenders)
	if err != nil {
		return err
	}
	room, err := r.c.createRoom(ctx, users[0], "repeater-load search "+r.prefix)
	if err != nil {
		return err
	}
	if err := r.joinAll(ctx, users[1:], room); err != nil {
		return err
	}
	n := r.cfg.searchMessages
	if n < 1 {
		return fmt.Errorf("--search-messages must be >= 1")
	}
	nonce := "srch" + randomHex(4)
	rng := rand.New(rand.NewSource(1))
	zipf := rand.NewZipf(rng, 1.1, 1, 99)
	bodies := make([]string, n)
	for i := range bodies {
		words := []string{nonce}
		for j := 0; j < 8; j++ {
			words = append(words, "w"+strconv.FormatUint(zipf.Uint64(), 10))
		}
		bodies[i] = strings.Join(words, " ")
	}
	t0 := time.Now()
	errs, first := forEach(ctx, len(users), n, func(ctx context.Context, w, i int) error {
		_, err := r.c.sendText(ctx, users[w], room, fmt.Sprintf("s%d", i), bodies[i])
		return err
	})
	r.add(s, "fill: messages sent", float64(n-errs), "")
	r.add(s, "fill rate", rate(n-errs, time.Since(t0)), "/s")
	if errs > 0 {
		return fmt.Errorf("filling: %d sends failed, first: %w", errs, first)
	}
	r.settle(s, "for idle server before searching")

	// Common, middling and rare words, two words, a prefix of eleven
	// words, a word in no message, and the nonce (in every message).
	terms := []string{"w0", "w5", "w60", "w1 w2", "w1", "nowhere", nonce}
	byOrder := map[string]*samples{"rank": {}, "recent": {}}
	u := users[0]
	nonceCount := -1
	for i := 0; i < r.cfg.searchQueries && ctx.Err() == nil; i++ {
		term := terms[i%len(terms)]
		order := "rank"
		if (i/len(terms))%2 == 1 {
			order = "recent"
		}
		body := map[string]any{"search_categories": map[string]any{"room_events": map[string]any{
			"search_term": term, "order_by": order, "filter": map[string]any{"rooms": []string{room}, "limit": 10}}}}
		var resp searchResp
		q0 := time.Now()
		_, err := r.c.do(ctx, "POST", "/_matrix/client/v3/search", u.Token, body, &resp)
		if err != nil {
			var he *httpError
			if errors.As(err, &he) && (he.Status == 404 || he.Status == 405 || he.Status == 501) {
				r.add(s, "server implements /search", 0, "bool")
				return nil
			}
			return fmt.Errorf("query %d (%q, %s): %w", i, term, order, err)
		}
		byOrder[order].add(ms(time.Since(q0)))
		if term == nonce {
			nonceCount = resp.SearchCategories.RoomEvents.Count
			if len(resp.SearchCategories.RoomEvents.Results) == 0 {
				return fmt.Errorf("searching for a word in every message found nothing")
			}
		}
	}
	r.addSummary(s, "search (order_by rank)", byOrder["rank"].summary())
	r.addSummary(s, "search (order_by recent)", byOrder["recent"].summary())
	if nonceCount >= 0 {
		r.add(s, "check: count for a word in every message", float64(nonceCount), "")
	}
	return nil
}
