package mediaapi

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
)

// flightGroup runs one piece of work per key at a time: a caller arriving
// while the work for its key is under way waits for that result instead
// of starting it again.
type flightGroup struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	done chan struct{}
	val  any
	err  error
}

// do returns the result of fn for key, running fn (in its own goroutine,
// so that a caller giving up does not abort it for the others) unless a
// run is already under way. wg tracks the goroutine.
func (g *flightGroup) do(ctx context.Context, wg *sync.WaitGroup, key string, fn func() (any, error)) (any, error) {
	g.mu.Lock()
	if g.m == nil {
		g.m = map[string]*flight{}
	}
	f, ok := g.m[key]
	if !ok {
		f = &flight{done: make(chan struct{})}
		g.m[key] = f
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.val, f.err = safely(fn)
			g.mu.Lock()
			delete(g.m, key)
			g.mu.Unlock()
			close(f.done)
		}()
	}
	g.mu.Unlock()
	select {
	case <-f.done:
		return f.val, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// safely runs fn, turning a panic (a decoder meeting a hostile file) into
// an error.
func safely(fn func() (any, error)) (v any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("media: panic: %v\n%s", p, debug.Stack())
		}
	}()
	return fn()
}
