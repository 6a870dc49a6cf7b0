package httputil

import (
	"sync"
	"time"
)

// Limiter is a per-key token bucket. A nil *Limiter allows everything.
type Limiter struct {
	mu      sync.Mutex
	rate    float64 // tokens per second
	burst   float64
	buckets map[string]*bucket
	last    time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

// NewLimiter returns a limiter, or nil when disabled.
func NewLimiter(enabled bool, perSecond float64, burst int) *Limiter {
	if !enabled {
		return nil
	}
	return &Limiter{rate: perSecond, burst: float64(burst), buckets: map[string]*bucket{}}
}

// Allow takes a token for key or returns M_LIMIT_EXCEEDED.
// An empty key is never limited (see auth.Device.RateLimitKey).
func (l *Limiter) Allow(key string) error {
	if l == nil || key == "" {
		return nil
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.last) > time.Minute {
		// Forget full buckets so the map stays small.
		for k, b := range l.buckets {
			if b.tokens+now.Sub(b.at).Seconds()*l.rate >= l.burst {
				delete(l.buckets, k)
			}
		}
		l.last = now
	}
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
	b.at = now
	if b.tokens < 1 {
		wait := int64((1 - b.tokens) / l.rate * 1000)
		return LimitExceeded(wait)
	}
	b.tokens--
	return nil
}
