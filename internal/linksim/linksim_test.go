package linksim

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// server is a TCP server on loopback for the tests, whose Close closes
// every connection and waits for its goroutines.
type server struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	once  sync.Once
}

// startServer serves handle on addr ("127.0.0.1:0" for any port); it is
// closed at the end of the test.
func startServer(t *testing.T, addr string, handle func(net.Conn)) *server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					c.Close()
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
				}()
				handle(c)
			}()
		}
	}()
	t.Cleanup(s.Close)
	return s
}

func (s *server) Addr() string { return s.ln.Addr().String() }

func (s *server) Close() {
	s.once.Do(func() {
		s.ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
}

// echo copies a connection back to itself until EOF.
func echo(c net.Conn) { io.Copy(c, c) }

func startEcho(t *testing.T) *server { return startServer(t, "127.0.0.1:0", echo) }

func newLink(t *testing.T, target string, opts Options) *Link {
	t.Helper()
	l, err := New(target, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

// roundTrip sends msg on c and reads the echo back.
func roundTrip(c net.Conn, msg []byte) error {
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo differs")
	}
	return nil
}

// expectCut checks that c was closed by the link: a read ends with EOF or
// a reset, well before the deadline.
func expectCut(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection not cut: %v", err)
	}
}

func TestIntegrity(t *testing.T) {
	e := startEcho(t)
	l := newLink(t, e.Addr(), Options{})
	c := dial(t, l.Addr())

	msg := make([]byte, 1<<20)
	rand.Read(msg)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c) // ends when the echo closes after our half-close
	if err != nil {
		t.Fatal(err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("got %d bytes, not identical to the %d sent", len(got), len(msg))
	}
	up, down := l.Bytes()
	if up != int64(len(msg)) || down != int64(len(msg)) {
		t.Errorf("Bytes() = %d, %d; want %d both", up, down, len(msg))
	}
	if n := l.Conns(); n != 1 {
		t.Errorf("Conns() = %d, want 1", n)
	}
	l.ResetCounters()
	if up, down := l.Bytes(); up != 0 || down != 0 || l.Conns() != 0 {
		t.Errorf("after ResetCounters: %d, %d, %d", up, down, l.Conns())
	}
	if !strings.HasPrefix(l.URL(), "http://127.0.0.1:") {
		t.Errorf("URL() = %q", l.URL())
	}
}

// TestIntegrityShaped sends data both ways at once through a shaped and
// delayed link.
func TestIntegrityShaped(t *testing.T) {
	e := startEcho(t)
	l := newLink(t, e.Addr(), Options{Bandwidth: 2 << 20, Delay: 5 * time.Millisecond})
	c := dial(t, l.Addr())
	msg := make([]byte, 256<<10)
	rand.Read(msg)
	go func() {
		c.Write(msg)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("got %d bytes, not identical to the %d sent", len(got), len(msg))
	}
}

// sink counts what it reads and reports the total on EOF.
func startSink(t *testing.T, done chan<- int) *server {
	return startServer(t, "127.0.0.1:0", func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		done <- int(n)
	})
}

func TestBandwidth(t *testing.T) {
	done := make(chan int, 1)
	s := startSink(t, done)
	const bw = 256 << 10
	l := newLink(t, s.Addr(), Options{Bandwidth: bw})
	c := dial(t, l.Addr())
	start := time.Now()
	if _, err := c.Write(make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	n := <-done
	took := time.Since(start)
	t.Logf("64 KiB at 256 KiB/s took %v (ideal 250ms)", took)
	if n != 64<<10 {
		t.Fatalf("sink got %d bytes", n)
	}
	if took < 200*time.Millisecond {
		t.Errorf("64 KiB at 256 KiB/s took %v, want ≥ 200ms", took)
	}
}

// TestBandwidthShared checks that the connections of a link share its
// bandwidth.
func TestBandwidthShared(t *testing.T) {
	done := make(chan int, 2)
	s := startSink(t, done)
	l := newLink(t, s.Addr(), Options{Bandwidth: 256 << 10})
	c1, c2 := dial(t, l.Addr()), dial(t, l.Addr())
	start := time.Now()
	for _, c := range []*net.TCPConn{c1, c2} {
		go func() {
			c.Write(make([]byte, 32<<10))
			c.CloseWrite()
		}()
	}
	total := <-done + <-done
	took := time.Since(start)
	t.Logf("2×32 KiB at 256 KiB/s took %v (ideal 250ms)", took)
	if total != 64<<10 {
		t.Fatalf("sink got %d bytes", total)
	}
	if took < 200*time.Millisecond {
		t.Errorf("2×32 KiB on one 256 KiB/s link took %v, want ≥ 200ms", took)
	}
}

// TestRealistic measures an HTTP download of 100 KB over a 256 kbit/s link
// with 100 ms of one-way delay and the handshake simulated: about 3.125 s
// of transmission plus 0.4 s of round trips.
func TestRealistic(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 3.5 s")
	}
	body := bytes.Repeat([]byte("z"), 100_000)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(body)
	}))
	defer hs.Close()
	l := newLink(t, strings.TrimPrefix(hs.URL, "http://"), Options{Bandwidth: 32000, Delay: 100 * time.Millisecond, Handshake: true})
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	start := time.Now()
	resp, err := client.Get(l.URL() + "/")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("got %d bytes, err %v", len(got), err)
	}
	t.Logf("100 KB at 256 kbit/s, 100 ms delay, handshake: %v (ideal ≈ 3.53 s)", took)
	if took < 3200*time.Millisecond {
		t.Errorf("took %v, want ≥ 3.2 s", took)
	}
}

func TestHandshake(t *testing.T) {
	e := startEcho(t)
	const delay = 30 * time.Millisecond
	l := newLink(t, e.Addr(), Options{Delay: delay, Handshake: true})
	start := time.Now()
	c := dial(t, l.Addr())
	if err := roundTrip(c, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt < 4*delay {
		t.Errorf("first round trip on a new connection took %v, want ≥ %v", rtt, 4*delay)
	}
}

func TestDelay(t *testing.T) {
	e := startEcho(t)
	const delay = 50 * time.Millisecond
	l := newLink(t, e.Addr(), Options{Delay: delay})
	c := dial(t, l.Addr())
	for range 3 {
		start := time.Now()
		if err := roundTrip(c, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		if rtt := time.Since(start); rtt < 2*delay {
			t.Errorf("round trip took %v, want ≥ %v", rtt, 2*delay)
		}
	}
	l.SetDelay(0)
	if err := roundTrip(c, []byte("ping")); err != nil {
		t.Fatal(err)
	}
}

func TestSetDown(t *testing.T) {
	e := startEcho(t)
	l := newLink(t, e.Addr(), Options{})
	c := dial(t, l.Addr())
	if err := roundTrip(c, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	l.SetDown(true)
	if !l.Down() {
		t.Fatal("Down() = false after SetDown(true)")
	}
	expectCut(t, c)

	// New connections are accepted and closed at once.
	c2 := dial(t, l.Addr())
	c2.Write([]byte("hello"))
	expectCut(t, c2)

	l.SetDown(false)
	c3 := dial(t, l.Addr())
	if err := roundTrip(c3, []byte("again")); err != nil {
		t.Fatalf("after SetDown(false): %v", err)
	}
}

func TestDropAll(t *testing.T) {
	e := startEcho(t)
	l := newLink(t, e.Addr(), Options{Delay: time.Millisecond})
	c1, c2 := dial(t, l.Addr()), dial(t, l.Addr())
	for _, c := range []net.Conn{c1, c2} {
		if err := roundTrip(c, []byte("hello")); err != nil {
			t.Fatal(err)
		}
	}
	l.DropAll()
	expectCut(t, c1)
	expectCut(t, c2)
	c3 := dial(t, l.Addr())
	if err := roundTrip(c3, []byte("again")); err != nil {
		t.Fatalf("after DropAll: %v", err)
	}
	if n := l.Conns(); n != 3 {
		t.Errorf("Conns() = %d, want 3", n)
	}
}

// lossRun makes n sequential connections that each echo 4 KiB and returns
// how many were cut.
func lossRun(t *testing.T, l *Link, n int) int {
	t.Helper()
	msg := bytes.Repeat([]byte("x"), 4096)
	cut := 0
	for range n {
		c, err := net.Dial("tcp", l.Addr())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		err = roundTrip(c, msg)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.Close()
			t.Fatalf("connection hung: %v", err)
		}
		if err != nil {
			cut++
		}
		c.Close()
	}
	return cut
}

func TestLoss(t *testing.T) {
	e := startEcho(t)
	l := newLink(t, e.Addr(), Options{Seed: 1, Loss: 0.5, LossMaxBytes: 1024})
	const n = 20
	cut := lossRun(t, l, n)
	t.Logf("loss 0.5: %d of %d connections cut", cut, n)
	if cut == 0 || cut == n {
		t.Errorf("loss 0.5 with seed 1 cut %d of %d connections", cut, n)
	}

	// The same seed gives the same decisions.
	l2 := newLink(t, e.Addr(), Options{Seed: 1, Loss: 0.5, LossMaxBytes: 1024})
	if cut2 := lossRun(t, l2, n); cut2 != cut {
		t.Errorf("same seed cut %d then %d", cut, cut2)
	}

	l.SetLoss(1)
	if cut := lossRun(t, l, 5); cut != 5 {
		t.Errorf("loss 1 cut %d of 5", cut)
	}
	l.SetLoss(0)
	if cut := lossRun(t, l, 5); cut != 0 {
		t.Errorf("loss 0 cut %d of 5", cut)
	}
}

// TestLossPartial checks that a lossy connection delivers data up to its
// amount before the cut.
func TestLossPartial(t *testing.T) {
	e := startEcho(t)
	l := newLink(t, e.Addr(), Options{Loss: 1, LossMaxBytes: 1000, Capture: true})
	c := dial(t, l.Addr())
	c.Write(bytes.Repeat([]byte("y"), 4000))
	got, _ := io.ReadAll(c)
	up, down := l.Bytes()
	if up+down > 1000 || int64(len(got)) > down {
		t.Errorf("cut after up %d + down %d bytes (client got %d), want ≤ 1000 in all", up, down, len(got))
	}
	if int64(len(l.Captured())) != up+down {
		t.Errorf("captured %d bytes, delivered %d", len(l.Captured()), up+down)
	}
}

func TestCaptureHTTP(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello-from-target auth=%s", r.Header.Get("Authorization"))
	}))
	defer hs.Close()
	target := strings.TrimPrefix(hs.URL, "http://")
	l := newLink(t, target, Options{Capture: true, Delay: 2 * time.Millisecond, Bandwidth: 1 << 20})

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	for range 3 {
		req, _ := http.NewRequest("GET", l.URL()+"/_matrix/federation/v1/version", nil)
		req.Header.Set("Authorization", `X-Matrix origin="a",key="ed25519:1",sig="s"`)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasPrefix(string(body), "hello-from-target") {
			t.Fatalf("body %q", body)
		}
	}
	if n := l.Conns(); n != 1 {
		t.Errorf("Conns() = %d, want 1 (keep-alive)", n)
	}
	for _, s := range []string{"GET /_matrix/federation/v1/version HTTP/1.1", "X-Matrix", "hello-from-target"} {
		if !l.CaptureContains([]byte(s)) {
			t.Errorf("capture lacks %q", s)
		}
		if !bytes.Contains(l.Captured(), []byte(s)) {
			t.Errorf("Captured() lacks %q", s)
		}
	}
	if l.CaptureContains([]byte("m.room.encrypted")) {
		t.Error("capture contains what was never sent")
	}
	if l.CaptureTruncated() {
		t.Error("capture truncated")
	}
	l.ResetCounters()
	if len(l.Captured()) != 0 || l.CaptureContains([]byte("X-Matrix")) {
		t.Error("capture not cleared by ResetCounters")
	}
}

// TestCaptureSplit checks that a string written in pieces, while the other
// direction carries data, is still found whole.
func TestCaptureSplit(t *testing.T) {
	e := startEcho(t)
	l := newLink(t, e.Addr(), Options{Capture: true})
	c := dial(t, l.Addr())
	for _, p := range []string{"sig", "nat", "ures"} {
		if err := roundTrip(c, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if !l.CaptureContains([]byte("signatures")) {
		t.Errorf("capture %q lacks %q", l.Captured(), "signatures")
	}
}

func TestCaptureLimit(t *testing.T) {
	e := startEcho(t)
	l := newLink(t, e.Addr(), Options{Capture: true, CaptureLimit: 10})
	c := dial(t, l.Addr())
	if err := roundTrip(c, []byte("0123456789abcdef")); err != nil {
		t.Fatal(err)
	}
	if got := l.Captured(); string(got) != "0123456789" {
		t.Errorf("Captured() = %q", got)
	}
	if !l.CaptureTruncated() {
		t.Error("CaptureTruncated() = false")
	}
	// Without Capture nothing is kept.
	l2 := newLink(t, e.Addr(), Options{})
	c2 := dial(t, l2.Addr())
	if err := roundTrip(c2, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if got := l2.Captured(); got != nil {
		t.Errorf("Captured() without Capture = %q", got)
	}
}

// freeAddr returns a loopback address with no listener.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestTargetRestart checks that a target that is down closes the accepted
// connection, and that a target coming back on the same address is
// reached.
func TestTargetRestart(t *testing.T) {
	addr := freeAddr(t)
	l := newLink(t, addr, Options{})
	c := dial(t, l.Addr())
	expectCut(t, c)

	s := startServer(t, addr, echo)
	c2 := dial(t, l.Addr())
	if err := roundTrip(c2, []byte("up")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	expectCut(t, c2)

	e := startEcho(t)
	if err := l.SetTarget(e.Addr()); err != nil {
		t.Fatal(err)
	}
	c3 := dial(t, l.Addr())
	if err := roundTrip(c3, []byte("moved")); err != nil {
		t.Fatal(err)
	}
}

func TestLoopbackOnly(t *testing.T) {
	for _, target := range []string{"10.0.0.1:80", "example.com:80", "0.0.0.0:80", "127.0.0.1", "127.0.0.1:0", ":80"} {
		if l, err := New(target, Options{}); err == nil {
			l.Close()
			t.Errorf("New(%q) succeeded", target)
		}
	}
	l := newLink(t, "localhost:1", Options{})
	if l.Target() != "127.0.0.1:1" {
		t.Errorf("Target() = %q", l.Target())
	}
	if err := l.SetTarget("192.0.2.1:80"); err == nil {
		t.Error("SetTarget to a non-loopback address succeeded")
	}
}

// startNamed serves a node that greets with its name, then echoes.
func startNamed(t *testing.T, name string) *server {
	return startServer(t, "127.0.0.1:0", func(c net.Conn) {
		fmt.Fprintf(c, "%s\n", name)
		io.Copy(c, c)
	})
}

// reach reports whether from reaches to through the mesh, and checks that
// it is to that answers.
func reach(t *testing.T, m *Mesh, from, to string) bool {
	t.Helper()
	c, err := net.Dial("tcp", m.Link(from, to).Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s→%s hung", from, to)
	}
	if err != nil {
		return false
	}
	if line != to+"\n" {
		t.Fatalf("%s→%s answered by %q", from, to, line)
	}
	return true
}

func checkReach(t *testing.T, m *Mesh, want map[[2]string]bool) {
	t.Helper()
	for _, from := range m.Names() {
		for _, to := range m.Names() {
			if from == to {
				continue
			}
			w, ok := want[[2]string{from, to}]
			if !ok {
				w = true
			}
			if got := reach(t, m, from, to); got != w {
				t.Errorf("%s→%s reachable = %v, want %v", from, to, got, w)
			}
		}
	}
}

func TestMesh(t *testing.T) {
	names := []string{"a", "b", "c"}
	targets := map[string]string{}
	for _, n := range names {
		targets[n] = startNamed(t, n).Addr()
	}
	m, err := NewMesh(names, targets, Options{Capture: true, Delay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got := m.URL("a", "b"); got != m.Link("a", "b").URL() || !strings.HasPrefix(got, "http://127.0.0.1:") {
		t.Errorf("URL(a, b) = %q", got)
	}

	checkReach(t, m, nil)
	if m.TotalBytes() == 0 || m.TotalConns() != 6 {
		t.Errorf("TotalBytes() = %d, TotalConns() = %d", m.TotalBytes(), m.TotalConns())
	}
	if !m.CaptureContains([]byte("b\n")) || !bytes.Contains(m.Captured(), []byte("c\n")) {
		t.Error("mesh capture lacks the greetings")
	}

	// A long-lived connection across the partition is cut.
	c := dial(t, m.Link("a", "c").Addr())
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	m.Partition([]string{"a"}, []string{"b", "c"})
	expectCut(t, c)
	checkReach(t, m, map[[2]string]bool{
		{"a", "b"}: false, {"b", "a"}: false,
		{"a", "c"}: false, {"c", "a"}: false,
	})

	m.Heal()
	checkReach(t, m, nil)

	m.Isolate("c")
	checkReach(t, m, map[[2]string]bool{
		{"a", "c"}: false, {"c", "a"}: false,
		{"b", "c"}: false, {"c", "b"}: false,
	})
	m.Heal()

	m.ResetCounters()
	if m.TotalBytes() != 0 || m.TotalConns() != 0 || len(m.Captured()) != 0 {
		t.Error("ResetCounters left counts or capture")
	}

	// A node restarting elsewhere.
	moved := startNamed(t, "c")
	if err := m.SetTarget("c", moved.Addr()); err != nil {
		t.Fatal(err)
	}
	if m.Link("a", "c").Target() != moved.Addr() || m.Link("b", "c").Target() != moved.Addr() {
		t.Error("SetTarget did not move the links to c")
	}
	checkReach(t, m, nil)

	if err := m.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestMeshErrors(t *testing.T) {
	if _, err := NewMesh([]string{"a", "b"}, map[string]string{"a": "127.0.0.1:1"}, Options{}); err == nil {
		t.Error("NewMesh without a target for b succeeded")
	}
	if _, err := NewMesh([]string{"a", "a"}, map[string]string{"a": "127.0.0.1:1"}, Options{}); err == nil {
		t.Error("NewMesh with a duplicate name succeeded")
	}
	if _, err := NewMesh([]string{"a", "b"}, map[string]string{"a": "127.0.0.1:1", "b": "10.1.1.1:1"}, Options{}); err == nil {
		t.Error("NewMesh with a non-loopback target succeeded")
	}
	m, err := NewMesh([]string{"a", "b"}, map[string]string{"a": "127.0.0.1:1", "b": "127.0.0.1:2"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	defer func() {
		if recover() == nil {
			t.Error("Link(a, a) did not panic")
		}
	}()
	m.Link("a", "a")
}

// TestCloseNoLeak checks that Close ends every goroutine of a link, even
// with connections open and data on the air.
func TestCloseNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		e := startEcho(t)
		l, err := New(e.Addr(), Options{Bandwidth: 32 << 10, Delay: 200 * time.Millisecond, Capture: true})
		if err != nil {
			t.Fatal(err)
		}
		var cs []net.Conn
		for range 3 {
			c, err := net.Dial("tcp", l.Addr())
			if err != nil {
				t.Fatal(err)
			}
			cs = append(cs, c)
			go c.Write(make([]byte, 64<<10)) // ends when c is closed
		}
		time.Sleep(50 * time.Millisecond)
		start := time.Now()
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("Close took %v", took)
		}
		if err := l.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := net.Dial("tcp", l.Addr()); err == nil {
			t.Error("link still listening after Close")
		}
		for _, c := range cs {
			expectCut(t, c)
			c.Close()
		}
		e.Close()
	}()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		os.Stderr.Write(buf)
		t.Errorf("%d goroutines after Close, %d before", n, before)
	}
}
