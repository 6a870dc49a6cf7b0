package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// runner holds the state shared by the scenarios of one run.
type runner struct {
	cfg      config
	c        *client
	prefix   string // random per run, so reruns never collide
	password string

	pool     []user // registered users; scenarios take fresh ones in order
	next     int    // index of the next unused user in pool
	regCount atomic.Int64

	results []result
}

func newRunner(cfg config) *runner {
	// Enough idle connections for every concurrent actor of any scenario.
	conns := 16 + cfg.concurrency + cfg.senders + cfg.receivers + cfg.fillSenders
	return &runner{
		cfg:      cfg,
		c:        newClient(cfg.url, conns),
		prefix:   "rl" + randomHex(4),
		password: "pw-" + randomHex(8),
	}
}

func (r *runner) add(scenario, metric string, v float64, unit string) {
	r.results = append(r.results, result{Scenario: scenario, Metric: metric, Value: v, Unit: unit})
	fmt.Printf("   %-40s %12s %s\n", metric, formatValue(v), unit)
}

func (r *runner) addSummary(scenario, what string, s summary) {
	r.add(scenario, what+" p50", s.P50, "ms")
	r.add(scenario, what+" p95", s.P95, "ms")
	r.add(scenario, what+" p99", s.P99, "ms")
	r.add(scenario, what+" max", s.Max, "ms")
}

// settle lets the server finish background work left by earlier load
// (asynchronous servers keep processing after they answered): with --pid
// it waits until the server is idle, at most --settle; without it, it
// sleeps min(2 s, --settle). It records the wait under the scenario.
func (r *runner) settle(scenario, what string) {
	var waited time.Duration
	if r.cfg.pid > 0 {
		waited = waitIdle(r.cfg.pid, r.cfg.settle)
	} else {
		waited = min(2*time.Second, r.cfg.settle)
		time.Sleep(waited)
	}
	r.add(scenario, "settle: waited "+what, waited.Seconds(), "s")
}

func (r *runner) run(ctx context.Context, name string) error {
	switch name {
	case "register":
		return r.scenarioRegister(ctx)
	case "messages":
		return r.scenarioMessages(ctx)
	case "latency":
		return r.scenarioLatency(ctx)
	case "sync":
		return r.scenarioInitialSync(ctx)
	case "history":
		return r.scenarioHistory(ctx)
	case "search":
		return r.scenarioSearch(ctx) // search.go
	case "media":
		return r.scenarioMedia(ctx) // media.go
	}
	return fmt.Errorf("unknown scenario %q", name)
}

// registerUsers registers n new users with cfg.concurrency workers and
// returns them in order. lat, if not nil, receives per-request latencies.
func (r *runner) registerUsers(ctx context.Context, n int, lat *samples) ([]user, error) {
	users := make([]user, n)
	errs, first := forEach(ctx, r.cfg.concurrency, n, func(ctx context.Context, _, i int) error {
		name := fmt.Sprintf("%s-%d", r.prefix, r.regCount.Add(1))
		t0 := time.Now()
		var u user
		var err error
		if r.cfg.sharedSecret != "" {
			u, err = r.c.registerShared(ctx, r.cfg.sharedSecret, name, r.password)
		} else {
			u, err = r.c.register(ctx, name, r.password)
		}
		if err != nil {
			return err
		}
		if lat != nil {
			lat.add(ms(time.Since(t0)))
		}
		users[i] = u
		return nil
	})
	if errs > 0 {
		return nil, fmt.Errorf("%d of %d registrations failed, first: %w", errs, n, first)
	}
	return users, nil
}

// take returns n users not used by an earlier scenario, registering more
// (untimed) when the pool runs out.
func (r *runner) take(ctx context.Context, n int) ([]user, error) {
	if missing := r.next + n - len(r.pool); missing > 0 {
		us, err := r.registerUsers(ctx, missing, nil)
		if err != nil {
			return nil, fmt.Errorf("registering setup users: %w", err)
		}
		r.pool = append(r.pool, us...)
	}
	us := r.pool[r.next : r.next+n]
	r.next += n
	return us, nil
}

// joinAll makes every user join the room, concurrently.
func (r *runner) joinAll(ctx context.Context, users []user, roomID string) error {
	errs, first := forEach(ctx, r.cfg.concurrency, len(users), func(ctx context.Context, _, i int) error {
		return r.c.join(ctx, users[i], roomID)
	})
	if errs > 0 {
		return fmt.Errorf("%d joins failed, first: %w", errs, first)
	}
	return nil
}

// forEach runs fn for items 0..count-1 on `workers` goroutines; each call
// gets its worker number (0..workers-1) and item index. It returns the
// number of failed items and the first error. It stops handing out items
// once ctx is done.
func forEach(ctx context.Context, workers, count int, fn func(ctx context.Context, worker, item int) error) (int, error) {
	var next atomic.Int64
	var nerr atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	workers = min(workers, count)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= count {
					return
				}
				err := ctx.Err()
				if err == nil {
					err = fn(ctx, w, i)
				}
				if err != nil {
					nerr.Add(1)
					once.Do(func() { first = err })
				}
			}
		}(w)
	}
	wg.Wait()
	return int(nerr.Load()), first
}
