package main

import (
	"math"
	"sync"
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	// 1..100: the p-th percentile by nearest rank is p itself.
	vals := make([]float64, 100)
	for i := range vals {
		vals[i] = float64(i + 1)
	}
	for _, c := range []struct{ p, want float64 }{
		{1, 1}, {50, 50}, {95, 95}, {99, 99}, {100, 100}, {0, 1}, {99.5, 100},
	} {
		if got := percentile(vals, c.p); got != c.want {
			t.Errorf("percentile(1..100, %v) = %v, want %v", c.p, got, c.want)
		}
	}
}

func TestPercentileSmall(t *testing.T) {
	s := []float64{15, 20, 35, 40, 50}
	for _, c := range []struct{ p, want float64 }{
		{5, 15}, {30, 20}, {40, 20}, {50, 35}, {99, 50}, {100, 50},
	} {
		if got := percentile(s, c.p); got != c.want {
			t.Errorf("percentile(%v, %v) = %v, want %v", s, c.p, got, c.want)
		}
	}
	if got := percentile([]float64{7}, 99); got != 7 {
		t.Errorf("single value: got %v", got)
	}
	if got := percentile(nil, 50); !math.IsNaN(got) {
		t.Errorf("empty: got %v, want NaN", got)
	}
}

func TestSummarize(t *testing.T) {
	in := []float64{5, 1, 4, 2, 3}
	s := summarize(in)
	if s.N != 5 || s.Min != 1 || s.Max != 5 || s.Mean != 3 || s.P50 != 3 || s.P99 != 5 {
		t.Errorf("summarize = %+v", s)
	}
	if in[0] != 5 {
		t.Errorf("summarize modified its input: %v", in)
	}
	if (summarize(nil) != summary{}) {
		t.Errorf("empty summary should be zero")
	}
}

func TestSamplesConcurrent(t *testing.T) {
	var s samples
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; i <= 100; i++ {
				s.add(float64(i))
			}
		}()
	}
	wg.Wait()
	sum := s.summary()
	if sum.N != 800 || sum.P50 != 50 || sum.Max != 100 {
		t.Errorf("summary = %+v", sum)
	}
}

func TestRateAndMS(t *testing.T) {
	if r := rate(500, 2*time.Second); r != 250 {
		t.Errorf("rate = %v", r)
	}
	if r := rate(5, 0); r != 0 {
		t.Errorf("rate with zero duration = %v", r)
	}
	if m := ms(1500 * time.Microsecond); m != 1.5 {
		t.Errorf("ms = %v", m)
	}
}

func TestSharedSecretMAC(t *testing.T) {
	// Reference value computed with Python:
	// hmac.new(b"secret", b"abc\x00alice\x00pw\x00notadmin", hashlib.sha1).hexdigest()
	got := sharedSecretMAC("secret", "abc", "alice", "pw")
	const want = "42e32623fe124933c326f9d2d67ff7c617915a10"
	if got != want {
		t.Errorf("mac = %s, want %s", got, want)
	}
}
