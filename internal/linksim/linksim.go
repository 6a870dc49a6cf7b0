// Package linksim simulates thin radio links between homeservers running on
// loopback, for integration tests of Repeater's amateur-radio mode.
//
// A Link is a TCP proxy: it listens on 127.0.0.1 on a port of its own and
// forwards every accepted connection to a target address on loopback, while
//
//   - limiting throughput (Options.Bandwidth, bytes per second in each
//     direction, shared by all the connections of the Link, as a radio
//     channel is shared),
//   - delaying data (Options.Delay, one way: a byte read at t is written at
//     t+Delay at the earliest, in order, without limiting throughput),
//   - cutting connections on demand (SetDown for a partition, DropAll for a
//     flap, SetLoss for random connection-level loss), and
//   - counting and optionally capturing every byte that crossed, so a test
//     can assert what did not cross (a TLS handshake, "m.room.encrypted",
//     a "signatures" key, an "X-Matrix" header).
//
// The proxy works on bytes, not on HTTP: it neither parses nor changes what
// crosses it. Half-closes are forwarded (after the delay), so a peer that
// shuts down its sending side is seen to do so on the other side.
//
// A Mesh holds one Link per ordered pair of named nodes, so that node A's
// outbound requests to node B go through Mesh.Link(A, B), and partitions can
// be expressed between groups of nodes.
//
// Every address involved is on loopback: New refuses a target that is not a
// loopback IP address (or "localhost", taken as 127.0.0.1).
package linksim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the zero values of Options.
const (
	// DefaultCaptureLimit is the capture cap used when Options.CaptureLimit
	// is zero.
	DefaultCaptureLimit = 64 << 20
	// DefaultLossMaxBytes is the largest amount of data a lossy connection
	// carries before it is cut, when Options.LossMaxBytes is zero.
	DefaultLossMaxBytes = 4096
	// DefaultDialTimeout bounds the dial to the target when
	// Options.DialTimeout is zero.
	DefaultDialTimeout = 5 * time.Second
)

const (
	// readSize is the largest read from a socket.
	readSize = 32 << 10
	// queueLen is the number of chunks in flight per direction per
	// connection; with readSize it bounds the memory held for data that is
	// "on the air".
	queueLen = 64
	// quantum is the airtime of the largest piece paced at once: the
	// granularity of the pacing, and so of the fair sharing of a Link
	// between its connections.
	quantum = 10 * time.Millisecond
	// burst is the airtime a direction may catch up with after sleeping
	// too long; it keeps timer lateness from lowering the throughput.
	burst = 10 * time.Millisecond
)

// Options configure a Link. The zero value is a transparent proxy: no
// shaping, no delay, no capture.
type Options struct {
	// Bandwidth is the throughput in bytes per second in each direction,
	// shared by all the connections of the Link. 0 means unlimited.
	// 256 kbit/s is 32000.
	Bandwidth int
	// Delay is the one-way latency added to data in each direction: a
	// chunk that finishes its transmission at t is delivered at t+Delay.
	// Chunks are pipelined, so the delay does not limit throughput.
	Delay time.Duration
	// Capture keeps a copy of every byte delivered, in both directions;
	// see Link.Captured.
	Capture bool
	// CaptureLimit caps the bytes kept by Capture, over all connections;
	// 0 means DefaultCaptureLimit. Beyond it nothing more is kept and
	// Link.CaptureTruncated reports true.
	CaptureLimit int
	// Seed seeds the random source of the loss decisions (SetLoss). The
	// same Seed gives the same decisions for the same sequence of accepted
	// connections; 0 is a seed like any other.
	Seed int64
	// Loss is the initial connection loss probability; see SetLoss.
	Loss float64
	// LossMaxBytes is the upper bound of the amount of data (both
	// directions together) after which a lossy connection is cut; the
	// amount is drawn uniformly from [0, LossMaxBytes]. 0 means
	// DefaultLossMaxBytes.
	LossMaxBytes int
	// DialTimeout bounds the dial to the target; 0 means
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// Handshake simulates the cost of opening a TCP connection over the
	// link: no data of a new connection leaves, in either direction,
	// before one round trip (2×Delay, with the Delay at accept time) has
	// passed since it was accepted. Without it a new connection is ready
	// at once, and only its data is delayed.
	Handshake bool
}

// direction names a direction of traffic through a Link.
type direction int

const (
	up   direction = iota // client → target
	down                  // target → client
)

// Link is a simulated radio link: a TCP proxy from its own loopback address
// to a target on loopback. All its methods are safe for concurrent use.
type Link struct {
	ln          net.Listener
	ctx         context.Context
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	dialTimeout time.Duration
	lossMax     int64
	capture     bool
	captureMax  int
	handshake   bool

	target    atomic.Pointer[string]
	bandwidth atomic.Int64
	delay     atomic.Int64 // time.Duration
	isDown    atomic.Bool

	pacers [2]pacer

	bytes [2]atomic.Int64
	conns atomic.Int64

	mu     sync.Mutex
	closed bool
	active map[*conn]struct{}
	nextID uint64
	rng    *rand.Rand
	loss   float64

	capMu     sync.Mutex
	capStream map[streamKey][]byte
	capOrder  []streamKey
	capTotal  int
	capTrunc  bool

	closeOnce sync.Once
	closeErr  error
}

type streamKey struct {
	id  uint64
	dir direction
}

// New starts a Link listening on 127.0.0.1:0 that forwards each accepted
// connection to target, a host:port on loopback. The target is dialled once
// per accepted connection, so a target that restarts on the same address is
// reached again by the next connection, and a target that is down makes the
// accepted connection close at once.
func New(target string, opts Options) (*Link, error) {
	t, err := loopbackAddr(target)
	if err != nil {
		return nil, err
	}
	if opts.Bandwidth < 0 || opts.Delay < 0 || opts.CaptureLimit < 0 || opts.LossMaxBytes < 0 || opts.DialTimeout < 0 {
		return nil, errors.New("linksim: negative option")
	}
	if opts.Loss < 0 || opts.Loss > 1 {
		return nil, fmt.Errorf("linksim: loss %v not in [0, 1]", opts.Loss)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("linksim: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Link{
		ln:          ln,
		ctx:         ctx,
		cancel:      cancel,
		dialTimeout: opts.DialTimeout,
		lossMax:     int64(opts.LossMaxBytes),
		capture:     opts.Capture,
		handshake:   opts.Handshake,
		captureMax:  opts.CaptureLimit,
		active:      make(map[*conn]struct{}),
		rng:         rand.New(rand.NewPCG(uint64(opts.Seed), 0x6c696e6b73696d)),
		loss:        opts.Loss,
		capStream:   make(map[streamKey][]byte),
	}
	if l.dialTimeout == 0 {
		l.dialTimeout = DefaultDialTimeout
	}
	if l.lossMax == 0 {
		l.lossMax = DefaultLossMaxBytes
	}
	if l.captureMax == 0 {
		l.captureMax = DefaultCaptureLimit
	}
	l.target.Store(&t)
	l.bandwidth.Store(int64(opts.Bandwidth))
	l.delay.Store(int64(opts.Delay))
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

// loopbackAddr checks that hostport names a loopback address, and returns
// it with "localhost" replaced by 127.0.0.1.
func loopbackAddr(hostport string) (string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", fmt.Errorf("linksim: target %q: %w", hostport, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return "", fmt.Errorf("linksim: target %q: bad port", hostport)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return "", fmt.Errorf("linksim: target %q is not a loopback address", hostport)
	}
	return net.JoinHostPort(ip.String(), port), nil
}

// Addr returns the host:port the Link listens on.
func (l *Link) Addr() string { return l.ln.Addr().String() }

// URL returns "http://" + Addr(), the base URL to give a homeserver for the
// peer behind this Link.
func (l *Link) URL() string { return "http://" + l.Addr() }

// Target returns the host:port connections are forwarded to.
func (l *Link) Target() string { return *l.target.Load() }

// SetTarget changes the address that later connections are forwarded to;
// open connections are left alone. It fails if target is not on loopback.
func (l *Link) SetTarget(target string) error {
	t, err := loopbackAddr(target)
	if err != nil {
		return err
	}
	l.target.Store(&t)
	return nil
}

// SetDown puts the link down (true) or up (false). Going down is a
// partition: every open connection is cut, and while down each new
// connection is accepted and closed at once.
func (l *Link) SetDown(down bool) {
	l.mu.Lock()
	l.isDown.Store(down)
	l.mu.Unlock()
	if down {
		l.DropAll()
	}
}

// Down reports whether the link is down.
func (l *Link) Down() bool { return l.isDown.Load() }

// DropAll cuts every open connection once (a flap); the link stays up and
// new connections go through.
func (l *Link) DropAll() {
	l.mu.Lock()
	cs := make([]*conn, 0, len(l.active))
	for c := range l.active {
		cs = append(cs, c)
	}
	l.mu.Unlock()
	for _, c := range cs {
		c.cut()
	}
}

// SetLoss sets the probability, in [0, 1], that a newly accepted connection
// is lossy: a lossy connection is cut after an amount of data (both
// directions together) drawn uniformly from [0, Options.LossMaxBytes]. The
// data up to that amount is delivered, then both sides are closed. A lossy
// connection that carries less than its amount is not cut. Values out of
// range are clamped.
func (l *Link) SetLoss(p float64) {
	p = max(0, min(1, p))
	l.mu.Lock()
	l.loss = p
	l.mu.Unlock()
}

// SetBandwidth sets the throughput in bytes per second in each direction
// (0 = unlimited); it applies to data read from now on.
func (l *Link) SetBandwidth(bytesPerSecond int) {
	l.bandwidth.Store(int64(max(0, bytesPerSecond)))
}

// SetDelay sets the one-way delay; it applies to data read from now on.
// Data stays in order, so lowering the delay lets queued data out no
// earlier than the data before it.
func (l *Link) SetDelay(d time.Duration) {
	l.delay.Store(int64(max(0, d)))
}

// Bytes returns the bytes delivered since the last ResetCounters: up is
// client → target, down is target → client.
func (l *Link) Bytes() (up, down int64) {
	return l.bytes[0].Load(), l.bytes[1].Load()
}

// Conns returns the number of connections accepted since the last
// ResetCounters, including those closed at once because the link was down
// or the target unreachable.
func (l *Link) Conns() int64 { return l.conns.Load() }

// ResetCounters zeroes Bytes and Conns and discards what was captured.
func (l *Link) ResetCounters() {
	l.bytes[0].Store(0)
	l.bytes[1].Store(0)
	l.conns.Store(0)
	l.capMu.Lock()
	l.capStream = make(map[streamKey][]byte)
	l.capOrder = nil
	l.capTotal = 0
	l.capTrunc = false
	l.capMu.Unlock()
}

// Captured returns a copy of every byte delivered through the link since
// the last ResetCounters (nil unless Options.Capture). The data of each
// connection and direction is kept as one contiguous stream, so a string
// split over several reads is still found whole; the streams are then
// concatenated in the order they started.
func (l *Link) Captured() []byte {
	l.capMu.Lock()
	defer l.capMu.Unlock()
	if l.capTotal == 0 {
		return nil
	}
	out := make([]byte, 0, l.capTotal)
	for _, k := range l.capOrder {
		out = append(out, l.capStream[k]...)
	}
	return out
}

// CaptureContains reports whether sub occurs in one of the captured
// streams (a connection in one direction).
func (l *Link) CaptureContains(sub []byte) bool {
	l.capMu.Lock()
	defer l.capMu.Unlock()
	for _, k := range l.capOrder {
		if bytes.Contains(l.capStream[k], sub) {
			return true
		}
	}
	return false
}

// CaptureTruncated reports whether data was left out of the capture because
// Options.CaptureLimit was reached; an assertion that something did not
// cross is then not conclusive.
func (l *Link) CaptureTruncated() bool {
	l.capMu.Lock()
	defer l.capMu.Unlock()
	return l.capTrunc
}

func (l *Link) record(k streamKey, p []byte) {
	if !l.capture || len(p) == 0 {
		return
	}
	l.capMu.Lock()
	defer l.capMu.Unlock()
	room := l.captureMax - l.capTotal
	if room <= 0 {
		l.capTrunc = true
		return
	}
	if len(p) > room {
		p = p[:room]
		l.capTrunc = true
	}
	s, ok := l.capStream[k]
	if !ok {
		l.capOrder = append(l.capOrder, k)
	}
	l.capStream[k] = append(s, p...)
	l.capTotal += len(p)
}

// Close stops listening, cuts every connection and waits for all the
// Link's goroutines to end. It is safe to call more than once.
func (l *Link) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		l.closeErr = l.ln.Close()
		l.cancel()
		l.DropAll()
		l.wg.Wait()
	})
	return l.closeErr
}

func (l *Link) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if l.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient failure (such as running out of file
			// descriptors): wait a little, as net/http does.
			t := time.NewTimer(5 * time.Millisecond)
			select {
			case <-t.C:
			case <-l.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		l.conns.Add(1)
		// The loss decision is drawn here, in accept order, so that a
		// fixed seed gives reproducible decisions for sequential clients.
		budget := int64(-1)
		l.mu.Lock()
		if l.loss > 0 && l.rng.Float64() < l.loss {
			budget = l.rng.Int64N(l.lossMax + 1)
		}
		l.mu.Unlock()
		var ready time.Time
		if l.handshake {
			ready = time.Now().Add(2 * time.Duration(l.delay.Load()))
		}
		l.wg.Add(1)
		go l.handle(c, budget, ready)
	}
}

// handle dials the target for an accepted connection and runs it.
func (l *Link) handle(client net.Conn, budget int64, ready time.Time) {
	defer l.wg.Done()
	if l.isDown.Load() {
		client.Close()
		return
	}
	d := net.Dialer{Timeout: l.dialTimeout}
	server, err := d.DialContext(l.ctx, "tcp", l.Target())
	if err != nil {
		client.Close()
		return
	}
	c := &conn{client: client, server: server, done: make(chan struct{}), budget: budget, ready: ready}
	l.mu.Lock()
	if l.closed || l.isDown.Load() {
		l.mu.Unlock()
		c.cut()
		return
	}
	l.nextID++
	c.id = l.nextID
	l.active[c] = struct{}{}
	l.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.pipe(c, up, client, server) }()
	go func() { defer wg.Done(); l.pipe(c, down, server, client) }()
	wg.Wait()
	c.cut()

	l.mu.Lock()
	delete(l.active, c)
	l.mu.Unlock()
}

// conn is one proxied connection.
type conn struct {
	id             uint64
	client, server net.Conn
	done           chan struct{}
	once           sync.Once
	halves         atomic.Int32
	ready          time.Time // no data leaves before (Options.Handshake)

	mu     sync.Mutex
	budget int64 // bytes left before a cut; < 0: not lossy
}

// cut closes both sides of the connection and stops its goroutines.
func (c *conn) cut() {
	c.once.Do(func() {
		close(c.done)
		c.client.Close()
		c.server.Close()
	})
}

// take spends n bytes of the loss budget: it returns how many of them may
// be delivered, and whether the connection is to be cut after them.
func (c *conn) take(n int) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.budget < 0 {
		return n, false
	}
	if int64(n) < c.budget {
		c.budget -= int64(n)
		return n, false
	}
	allowed := int(c.budget)
	c.budget = 0
	return allowed, true
}

// sleepUntil waits until t or until the connection is cut; it reports
// whether the connection is still open.
func (c *conn) sleepUntil(t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		select {
		case <-c.done:
			return false
		default:
			return true
		}
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-c.done:
		return false
	}
}

// chunk is data on the air: written to the destination at at.
type chunk struct {
	data []byte
	at   time.Time
	eof  bool // the source half-closed: shut down the destination's writing
	cut  bool // loss: cut the connection after data
}

// pipe runs one direction of a connection: it reads src, paces the data on
// the shared pacer of the direction, and hands it to a writer goroutine that
// delivers it to dst after the delay.
func (l *Link) pipe(c *conn, dir direction, src, dst net.Conn) {
	q := make(chan chunk, queueLen)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		l.deliver(c, dir, dst, q)
	}()
	defer wg.Wait()

	send := func(ch chunk) bool {
		select {
		case q <- ch:
			return true
		case <-c.done:
			return false
		}
	}
	buf := make([]byte, readSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !c.sleepUntil(c.ready) {
				return
			}
			allowed, cutAfter := c.take(n)
			data := buf[:allowed]
			for len(data) > 0 || cutAfter {
				bw := int(l.bandwidth.Load())
				size := len(data)
				if bw > 0 {
					size = min(size, max(1, int(int64(bw)*int64(quantum)/int64(time.Second))))
				}
				piece := data[:size]
				data = data[size:]
				end := l.pacers[dir].reserve(size, bw)
				if !c.sleepUntil(end) {
					return
				}
				last := cutAfter && len(data) == 0
				ch := chunk{
					data: append([]byte(nil), piece...),
					at:   time.Now().Add(time.Duration(l.delay.Load())),
					cut:  last,
				}
				if !send(ch) {
					return
				}
				if last {
					return
				}
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				send(chunk{eof: true, at: time.Now().Add(time.Duration(l.delay.Load()))})
			} else {
				c.cut()
			}
			return
		}
	}
}

// deliver writes the chunks of q to dst, each at its time.
func (l *Link) deliver(c *conn, dir direction, dst net.Conn, q <-chan chunk) {
	for {
		var ch chunk
		select {
		case ch = <-q:
		case <-c.done:
			return
		}
		if !c.sleepUntil(ch.at) {
			return
		}
		if len(ch.data) > 0 {
			n, err := dst.Write(ch.data)
			if n > 0 {
				l.bytes[dir].Add(int64(n))
				l.record(streamKey{c.id, dir}, ch.data[:n])
			}
			if err != nil {
				c.cut()
				return
			}
		}
		if ch.cut {
			c.cut()
			return
		}
		if ch.eof {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
			if c.halves.Add(1) == 2 {
				c.cut()
			}
			return
		}
	}
}

// pacer spaces the transmissions of one direction of a Link, for all its
// connections: the channel is busy until next.
type pacer struct {
	mu   sync.Mutex
	next time.Time
}

// reserve books the airtime of n bytes at bw bytes per second and returns
// when their transmission ends.
func (p *pacer) reserve(n, bw int) time.Time {
	now := time.Now()
	if bw <= 0 {
		return now
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if floor := now.Add(-burst); p.next.Before(floor) {
		p.next = floor
	}
	p.next = p.next.Add(time.Duration(n) * time.Second / time.Duration(bw))
	return p.next
}

// Streams returns a copy of each captured stream (one connection in one
// direction), in the order they started.
func (l *Link) Streams() [][]byte {
	l.capMu.Lock()
	defer l.capMu.Unlock()
	out := make([][]byte, 0, len(l.capOrder))
	for _, k := range l.capOrder {
		out = append(out, append([]byte(nil), l.capStream[k]...))
	}
	return out
}
