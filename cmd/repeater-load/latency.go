package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// scenarioLatency measures send→/sync delivery: cfg.receivers users
// long-poll /sync in one room while one sender sends cfg.latencyMessages
// messages one at a time, cfg.latencyInterval apart. For every
// (message, receiver) pair it records the time from the start of the send
// request to the moment that receiver's sync response contained the event.
func (r *runner) scenarioLatency(ctx context.Context) error {
	users, err := r.take(ctx, r.cfg.receivers+1)
	if err != nil {
		return err
	}
	sender, receivers := users[0], users[1:]
	room, err := r.c.createRoom(ctx, sender, "repeater-load latency "+r.prefix)
	if err != nil {
		return err
	}
	if err := r.joinAll(ctx, receivers, room); err != nil {
		return err
	}

	n := r.cfg.latencyMessages
	nonce := "lat-" + randomHex(6) + "-"
	sendStart := make([]time.Time, n)
	seen := make([][]time.Time, len(receivers)) // seen[receiver][message]
	recvErrs := make([]error, len(receivers))

	// Initial syncs (timeline limit 1) give each receiver a since token.
	since := make([]string, len(receivers))
	errs, first := forEach(ctx, r.cfg.concurrency, len(receivers), func(ctx context.Context, _, k int) error {
		resp, _, err := r.c.sync(ctx, receivers[k], "", `{"room":{"timeline":{"limit":1}}}`, 0)
		if err == nil {
			since[k] = resp.NextBatch
		}
		return err
	})
	if errs > 0 {
		return fmt.Errorf("%d receivers' initial syncs failed, first: %w", errs, first)
	}

	rctx, stopReceivers := context.WithCancel(ctx)
	defer stopReceivers()
	var done sync.WaitGroup
	for k := range receivers {
		seen[k] = make([]time.Time, n)
		done.Add(1)
		go func(k int) {
			defer done.Done()
			recvErrs[k] = r.receive(rctx, receivers[k], room, since[k], nonce, seen[k])
		}(k)
	}
	// Give every receiver time to have its first long-poll in flight.
	time.Sleep(200 * time.Millisecond)

	var sendLat samples
	sendErrs := 0
	var firstSendErr error
	next := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		sendStart[i] = time.Now()
		next = sendStart[i].Add(r.cfg.latencyInterval)
		_, err := r.c.sendText(ctx, sender, room, fmt.Sprintf("l%d", i), nonce+strconv.Itoa(i))
		if err != nil {
			sendErrs++
			if firstSendErr == nil {
				firstSendErr = err
			}
			sendStart[i] = time.Time{}
			continue
		}
		sendLat.add(ms(time.Since(sendStart[i])))
	}

	// Wait for the receivers to see everything, at most 30 s more.
	allDone := make(chan struct{})
	go func() { done.Wait(); close(allDone) }()
	select {
	case <-allDone:
	case <-time.After(30 * time.Second):
		stopReceivers()
		<-allDone
	}

	var lat []float64
	missed := 0
	for k := range receivers {
		for i := 0; i < n; i++ {
			if sendStart[i].IsZero() {
				continue
			}
			if seen[k][i].IsZero() {
				missed++
				continue
			}
			lat = append(lat, ms(seen[k][i].Sub(sendStart[i])))
		}
	}
	const s = "latency"
	sum := summarize(lat)
	r.add(s, fmt.Sprintf("pairs measured (%d msgs x %d receivers)", n-sendErrs, len(receivers)), float64(sum.N), "")
	r.addSummary(s, "send→sync", sum)
	r.add(s, "send request p50", sendLat.summary().P50, "ms")
	if missed > 0 {
		r.add(s, "pairs never delivered", float64(missed), "")
	}
	if sendErrs > 0 {
		return fmt.Errorf("%d sends failed, first: %w", sendErrs, firstSendErr)
	}
	for k, e := range recvErrs {
		if e != nil {
			return fmt.Errorf("receiver %d: %w", k, e)
		}
	}
	if missed > 0 {
		return fmt.Errorf("%d (message, receiver) pairs were never delivered", missed)
	}
	return nil
}

// receive runs one receiver's long-poll sync loop from since until every
// message is seen or ctx is cancelled. seen[i] is set to the time the
// response holding message nonce+i arrived.
func (r *runner) receive(ctx context.Context, u user, room, since, nonce string, seen []time.Time) error {
	// A generous limit so a busy incremental sync is not "limited".
	const filter = `{"room":{"timeline":{"limit":100}}}`
	remaining := len(seen)
	failures := 0
	for remaining > 0 {
		resp, _, err := r.c.sync(ctx, u, since, filter, 30000)
		now := time.Now()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, context.Canceled) {
				return nil // stopped by the scenario
			}
			if failures++; failures > 20 {
				return err
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		since = resp.NextBatch
		for _, ev := range resp.Rooms.Join[room].Timeline.Events {
			rest, ok := strings.CutPrefix(ev.Content.Body, nonce)
			if !ok {
				continue
			}
			i, err := strconv.Atoi(rest)
			if err != nil || i < 0 || i >= len(seen) || !seen[i].IsZero() {
				continue
			}
			seen[i] = now
			remaining--
		}
	}
	return nil
}
