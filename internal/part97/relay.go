package part97

import (
	"context"
	"sync"
)

// Relay is the peer an event or request came through: the server that
// pushed it to us, or the one we fetched it from, and its network address.
// Part 97 holds a station that forwards messages accountable for them
// (§97.219), so in the mode each received event is stored with its relay,
// and only a trusted relay may hand us events without signatures.
type Relay struct {
	Server string

	mu   sync.Mutex
	addr string
}

// Addr is the relay's address (host:port), once known.
func (r *Relay) Addr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.addr
}

// SetAddr records the address: for a request we make, the transport
// learns it when it connects.
func (r *Relay) SetAddr(a string) {
	r.mu.Lock()
	r.addr = a
	r.mu.Unlock()
}

type relayKey struct{}

// WithRelay returns a context carrying the relay of what is processed in it.
func WithRelay(ctx context.Context, server, addr string) context.Context {
	return context.WithValue(ctx, relayKey{}, &Relay{Server: server, addr: addr})
}

// RelayFrom returns the context's relay, or nil.
func RelayFrom(ctx context.Context) *Relay {
	r, _ := ctx.Value(relayKey{}).(*Relay)
	return r
}

// TrustedRelay reports whether the relay may hand us unsigned events and
// requests: it is a trusted peer by name, or its address is in a trusted
// range.
func (p *Policy) TrustedRelay(r *Relay) bool {
	if p == nil || r == nil {
		return false
	}
	return p.TrustedName(r.Server) || p.TrustedAddr(r.Addr())
}
