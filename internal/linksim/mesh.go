package linksim

import (
	"errors"
	"fmt"
	"time"
)

// pair is an ordered pair of node names: traffic from → to.
type pair struct{ from, to string }

// Mesh is a full mesh of Links between named nodes: one Link per ordered
// pair (from, to), from != to, forwarding to the real listener of to.
//
// Node A's outbound requests to node X go through Link(A, X), so A's
// configuration maps X's server name to URL(A, X). The responses come back
// on the same connections, so they are counted (down) on Link(A, X) too.
//
// All methods are safe for concurrent use. Link and URL panic on a pair of
// names the Mesh does not hold, so a typo in a test fails loudly.
type Mesh struct {
	names []string
	links map[pair]*Link
	order []pair // creation order
}

// NewMesh creates the Links of a mesh of the given nodes. targets maps each
// name to the host:port, on loopback, of that node's real listener; every
// name must have one. Each Link gets opts, with Seed offset by the index of
// the Link (so links draw different loss decisions); the order is that of
// names, from-major.
func NewMesh(names []string, targets map[string]string, opts Options) (*Mesh, error) {
	m := &Mesh{
		names: append([]string(nil), names...),
		links: make(map[pair]*Link),
	}
	seen := make(map[string]bool)
	for _, n := range names {
		if seen[n] {
			return nil, fmt.Errorf("linksim: duplicate node name %q", n)
		}
		seen[n] = true
		if _, ok := targets[n]; !ok {
			return nil, fmt.Errorf("linksim: no target for node %q", n)
		}
	}
	seed := opts.Seed
	for _, from := range names {
		for _, to := range names {
			if from == to {
				continue
			}
			o := opts
			o.Seed = seed
			seed++
			l, err := New(targets[to], o)
			if err != nil {
				m.Close()
				return nil, fmt.Errorf("linksim: link %s→%s: %w", from, to, err)
			}
			p := pair{from, to}
			m.links[p] = l
			m.order = append(m.order, p)
		}
	}
	return m, nil
}

// Names returns the node names, in the order given to NewMesh.
func (m *Mesh) Names() []string { return append([]string(nil), m.names...) }

// Link returns the link carrying from's connections to to. It panics if
// there is none.
func (m *Mesh) Link(from, to string) *Link {
	l, ok := m.links[pair{from, to}]
	if !ok {
		panic(fmt.Sprintf("linksim: no link from %q to %q", from, to))
	}
	return l
}

// URL returns the base URL by which from reaches to: Link(from, to).URL().
func (m *Mesh) URL(from, to string) string { return m.Link(from, to).URL() }

// Partition puts down every link between groupA and groupB, in both
// directions, cutting their open connections. Links within a group are
// left alone; names in both groups are skipped for the pairs with
// themselves.
func (m *Mesh) Partition(groupA, groupB []string) {
	for _, a := range groupA {
		for _, b := range groupB {
			if a == b {
				continue
			}
			m.Link(a, b).SetDown(true)
			m.Link(b, a).SetDown(true)
		}
	}
}

// Heal brings every link up.
func (m *Mesh) Heal() {
	for _, p := range m.order {
		m.links[p].SetDown(false)
	}
}

// Isolate puts down every link to and from name.
func (m *Mesh) Isolate(name string) {
	for _, p := range m.order {
		if p.from == name || p.to == name {
			m.links[p].SetDown(true)
		}
	}
}

// SetTarget changes the address of node name's real listener, for the
// later connections of every link to it.
func (m *Mesh) SetTarget(name, target string) error {
	if _, err := loopbackAddr(target); err != nil {
		return err
	}
	found := false
	for _, p := range m.order {
		if p.to == name {
			found = true
			if err := m.links[p].SetTarget(target); err != nil {
				return err
			}
		}
	}
	if !found {
		return fmt.Errorf("linksim: no node %q", name)
	}
	return nil
}

// DropAll cuts every open connection of every link (a flap of the whole
// mesh).
func (m *Mesh) DropAll() {
	for _, p := range m.order {
		m.links[p].DropAll()
	}
}

// SetBandwidth sets the bandwidth of every link; see Link.SetBandwidth.
func (m *Mesh) SetBandwidth(bytesPerSecond int) {
	for _, p := range m.order {
		m.links[p].SetBandwidth(bytesPerSecond)
	}
}

// SetDelay sets the delay of every link; see Link.SetDelay.
func (m *Mesh) SetDelay(d time.Duration) {
	for _, p := range m.order {
		m.links[p].SetDelay(d)
	}
}

// SetLoss sets the connection loss probability of every link; see
// Link.SetLoss.
func (m *Mesh) SetLoss(p float64) {
	for _, q := range m.order {
		m.links[q].SetLoss(p)
	}
}

// TotalBytes returns the bytes delivered through all links, both
// directions, since the last ResetCounters.
func (m *Mesh) TotalBytes() int64 {
	var n int64
	for _, p := range m.order {
		u, d := m.links[p].Bytes()
		n += u + d
	}
	return n
}

// TotalConns returns the connections accepted by all links since the last
// ResetCounters.
func (m *Mesh) TotalConns() int64 {
	var n int64
	for _, p := range m.order {
		n += m.links[p].Conns()
	}
	return n
}

// Captured returns what every link captured (see Link.Captured),
// concatenated in link order.
func (m *Mesh) Captured() []byte {
	var out []byte
	for _, p := range m.order {
		out = append(out, m.links[p].Captured()...)
	}
	return out
}

// CaptureContains reports whether sub occurs in a captured stream of any
// link.
func (m *Mesh) CaptureContains(sub []byte) bool {
	for _, p := range m.order {
		if m.links[p].CaptureContains(sub) {
			return true
		}
	}
	return false
}

// CaptureTruncated reports whether any link's capture hit its limit.
func (m *Mesh) CaptureTruncated() bool {
	for _, p := range m.order {
		if m.links[p].CaptureTruncated() {
			return true
		}
	}
	return false
}

// ResetCounters resets the counters and captures of every link.
func (m *Mesh) ResetCounters() {
	for _, p := range m.order {
		m.links[p].ResetCounters()
	}
}

// Close closes every link and waits for their goroutines; it returns the
// errors joined.
func (m *Mesh) Close() error {
	var errs []error
	for _, p := range m.order {
		if err := m.links[p].Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Streams returns every captured stream of every link.
func (m *Mesh) Streams() [][]byte {
	var out [][]byte
	for _, p := range m.order {
		out = append(out, m.links[p].Streams()...)
	}
	return out
}
