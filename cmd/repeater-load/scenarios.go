package main

import (
	"context"
	"fmt"
	"time"
)

// scenarioRegister: cfg.users registrations with cfg.concurrency workers.
// The registered users go into the pool for the later scenarios.
func (r *runner) scenarioRegister(ctx context.Context) error {
	var lat samples
	t0 := time.Now()
	users, err := r.registerUsers(ctx, r.cfg.users, &lat)
	elapsed := time.Since(t0)
	if err != nil {
		return err
	}
	r.pool = append(r.pool, users...)
	const s = "register"
	r.add(s, "users registered", float64(len(users)), "")
	r.add(s, "registrations/s", rate(len(users), elapsed), "/s")
	sum := lat.summary()
	r.add(s, "request p50", sum.P50, "ms")
	r.add(s, "request p99", sum.P99, "ms")
	return nil
}

// scenarioMessages: one room created by a user, cfg.senders other users
// join it and send cfg.messages messages in total, concurrently.
func (r *runner) scenarioMessages(ctx context.Context) error {
	users, err := r.take(ctx, r.cfg.senders+1)
	if err != nil {
		return err
	}
	creator, senders := users[0], users[1:]
	room, err := r.c.createRoom(ctx, creator, "repeater-load messages "+r.prefix)
	if err != nil {
		return err
	}
	if err := r.joinAll(ctx, senders, room); err != nil {
		return err
	}
	var lat samples
	t0 := time.Now()
	errs, first := forEach(ctx, len(senders), r.cfg.messages, func(ctx context.Context, w, i int) error {
		s0 := time.Now()
		_, err := r.c.sendText(ctx, senders[w], room, fmt.Sprintf("m%d", i), fmt.Sprintf("msg %s %d", r.prefix, i))
		if err == nil {
			lat.add(ms(time.Since(s0)))
		}
		return err
	})
	elapsed := time.Since(t0)
	const s = "messages"
	sent := r.cfg.messages - errs
	r.add(s, "messages sent", float64(sent), "")
	r.add(s, "messages/s", rate(sent, elapsed), "/s")
	sum := lat.summary()
	r.add(s, "send p50", sum.P50, "ms")
	r.add(s, "send p99", sum.P99, "ms")
	if errs > 0 {
		r.add(s, "send errors", float64(errs), "")
		return fmt.Errorf("%d sends failed, first: %w", errs, first)
	}
	return nil
}

// scenarioInitialSync: a user in cfg.syncRooms rooms, each with
// cfg.syncRoomMsgs messages, does cfg.syncRuns initial syncs with a
// timeline limit of 20, one at a time.
func (r *runner) scenarioInitialSync(ctx context.Context) error {
	const limit = 20
	filter := fmt.Sprintf(`{"room":{"timeline":{"limit":%d}}}`, limit)
	users, err := r.take(ctx, 1)
	if err != nil {
		return err
	}
	u := users[0]
	rooms := make([]string, r.cfg.syncRooms)
	for i := range rooms {
		if rooms[i], err = r.c.createRoom(ctx, u, fmt.Sprintf("repeater-load sync %s %d", r.prefix, i)); err != nil {
			return err
		}
	}
	n := len(rooms) * r.cfg.syncRoomMsgs
	errs, first := forEach(ctx, r.cfg.concurrency, n, func(ctx context.Context, _, i int) error {
		_, err := r.c.sendText(ctx, u, rooms[i%len(rooms)], fmt.Sprintf("s%d", i), fmt.Sprintf("sync %s %d", r.prefix, i))
		return err
	})
	if errs > 0 {
		return fmt.Errorf("filling sync rooms: %d sends failed, first: %w", errs, first)
	}

	var lat samples
	var bytes int
	for run := 0; run < r.cfg.syncRuns; run++ {
		t0 := time.Now()
		resp, size, err := r.c.sync(ctx, u, "", filter, -1)
		d := time.Since(t0)
		if err != nil {
			return fmt.Errorf("run %d: %w", run, err)
		}
		for _, id := range rooms {
			jr, ok := resp.Rooms.Join[id]
			if !ok {
				return fmt.Errorf("run %d: room %s missing from initial sync", run, id)
			}
			got := len(jr.Timeline.Events)
			if got == 0 || got > limit || (r.cfg.syncRoomMsgs >= limit && got != limit) {
				return fmt.Errorf("run %d: room %s has %d timeline events, want %d", run, id, got, limit)
			}
		}
		lat.add(ms(d))
		bytes = size
	}
	const s = "sync"
	sum := lat.summary()
	r.add(s, fmt.Sprintf("initial sync (%d rooms, limit %d) runs", len(rooms), limit), float64(sum.N), "")
	r.add(s, "initial sync median", sum.P50, "ms")
	r.add(s, "initial sync p99", sum.P99, "ms")
	r.add(s, "response size", float64(bytes)/1024, "KiB")
	return nil
}
