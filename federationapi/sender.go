package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"repeater/storage"
)

// Sender delivers the outbound queue (table federation_outbox) to each
// destination in transactions of up to 50 PDUs and 100 EDUs, in order.
// Items are written in the same database transaction as the event they
// carry and deleted only once the destination accepted the transaction, so
// a restart of either side loses nothing: a server that was away receives
// everything it missed when it comes back. Failures back off exponentially
// up to maxBackoff; any request from the destination wakes its queue at
// once.
type Sender struct {
	a          *API
	maxBackoff time.Duration
	ctx        context.Context
	mu         sync.Mutex
	dest       map[string]*destination
	wg         sync.WaitGroup
}

type destination struct {
	name    string
	running bool
	poke    chan struct{}
	backoff time.Duration
	// refusals counts how often the destination refused the transaction
	// at the head of its queue (an HTTP error status, as opposed to being
	// unreachable).
	refusals int
	headID   int64
}

// A transaction the destination keeps refusing is dropped after this many
// attempts (4xx: it will not change its mind) or 5xx ones (a bug there
// must not hold back everything after it forever); what it carried can
// still be fetched by the destination (get_missing_events, backfill).
const (
	maxClientErrorRefusals = 3
	maxServerErrorRefusals = 12
)

const (
	minBackoff = 2 * time.Second
	maxBackoff = 5 * time.Minute
	// meshMaxBackoff caps retries on an amateur-radio mesh: few peers,
	// links that come and go, and a returning link must bring its missed
	// events within a minute. A failed try costs one TCP connect.
	meshMaxBackoff = 20 * time.Second
)

func newSender(a *API) *Sender {
	s := &Sender{a: a, dest: map[string]*destination{}, maxBackoff: maxBackoff}
	if a.policy.On() {
		s.maxBackoff = meshMaxBackoff
	}
	return s
}

// run starts a worker for every destination with queued items and keeps
// delivering until ctx ends.
func (s *Sender) run(ctx context.Context) {
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()
	if dests, err := s.a.db.OutboxDestinations(ctx); err == nil {
		s.Queued(dests)
	}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.announce(ctx) }()
	<-ctx.Done()
	s.wg.Wait()
}

// Queued implements roomserver.Outbound: items were queued for these
// destinations.
func (s *Sender) Queued(destinations []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil || s.ctx.Err() != nil {
		return // started by run
	}
	for _, name := range destinations {
		d := s.dest[name]
		if d == nil {
			d = &destination{name: name, poke: make(chan struct{}, 1)}
			s.dest[name] = d
		}
		if !d.running {
			d.running = true
			s.wg.Add(1)
			go s.worker(s.ctx, d)
		}
		select {
		case d.poke <- struct{}{}:
		default:
		}
	}
}

// wake retries a destination at once (traffic arrived from it).
func (s *Sender) wake(name string) {
	s.mu.Lock()
	d := s.dest[name]
	s.mu.Unlock()
	if d == nil {
		return
	}
	select {
	case d.poke <- struct{}{}:
	default:
	}
}

func (s *Sender) worker(ctx context.Context, d *destination) {
	defer s.wg.Done()
	for ctx.Err() == nil {
		items, err := s.a.db.Outbox(ctx, d.name, maxTxnPDUs+maxTxnEDUs)
		if err == nil && len(items) == 0 {
			s.mu.Lock()
			// Re-check under the lock: Queued may have just added items.
			select {
			case <-d.poke:
				s.mu.Unlock()
				continue
			default:
			}
			d.running = false
			s.mu.Unlock()
			return
		}
		var last int64
		if err == nil {
			last, err = s.deliver(ctx, d.name, items)
		}
		if err == nil {
			d.backoff, d.refusals = 0, 0
			continue
		}
		var he gomatrix.HTTPError
		if errors.As(err, &he) && he.Code != 429 && len(items) > 0 {
			if items[0].ID != d.headID {
				d.headID, d.refusals = items[0].ID, 0
			}
			d.refusals++
			limit := maxServerErrorRefusals
			if he.Code >= 400 && he.Code < 500 {
				limit = maxClientErrorRefusals
			}
			if d.refusals >= limit && last > 0 {
				s.a.log.Warn("dropping a transaction the destination keeps refusing", "destination", d.name, "status", he.Code, "attempts", d.refusals, "err", err)
				if derr := s.a.db.DeleteOutbox(ctx, d.name, last); derr == nil {
					d.refusals = 0
					continue
				}
			}
		}
		d.backoff = min(max(d.backoff*2, minBackoff), s.maxBackoff)
		wait := d.backoff/2 + time.Duration(rand.Int64N(int64(d.backoff/2)+1))
		s.a.log.Info("federation delivery failed; will retry", "destination", d.name, "retry_in", wait.Round(time.Millisecond), "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-d.poke:
			t.Stop()
			d.backoff = 0
		case <-t.C:
		}
	}
}

// deliver sends one transaction built from the oldest queued items.
func (s *Sender) deliver(ctx context.Context, dest string, items []storage.OutboxItem) (int64, error) {
	var nids []int64
	var edus []gomatrixserverlib.EDU
	var last int64
	for _, it := range items {
		if it.EDU != nil {
			if len(edus) == maxTxnEDUs {
				break
			}
			var e gomatrixserverlib.EDU
			if json.Unmarshal(it.EDU, &e) == nil {
				e.Origin, e.Destination = string(s.a.serverName), dest
				edus = append(edus, e)
			}
		} else {
			if len(nids) == maxTxnPDUs {
				break
			}
			nids = append(nids, it.EventNID)
		}
		last = it.ID
	}
	evs, err := s.a.rs.Events(ctx, nids)
	if err != nil {
		return 0, err
	}
	byNID := map[int64][]byte{}
	for _, e := range evs {
		byNID[e.NID] = e.JSON
	}
	pdus := make([]json.RawMessage, 0, len(nids))
	for _, nid := range nids {
		if js, ok := byNID[nid]; ok {
			pdus = append(pdus, js)
		}
	}
	// The ID names the queue items it carries, so a retry (even after a
	// restart) of the same items is the same transaction to the receiver.
	txn := gomatrixserverlib.Transaction{
		TransactionID:  gomatrixserverlib.TransactionID(fmt.Sprintf("rpt%d-%d", items[0].ID, last)),
		Origin:         s.a.serverName,
		Destination:    spec.ServerName(dest),
		OriginServerTS: spec.AsTimestamp(time.Now()),
		PDUs:           pdus,
		EDUs:           edus,
	}
	tctx, cancel := s.a.deadline(ctx, 60*time.Second)
	defer cancel()
	if _, err := s.a.client.SendTransaction(tctx, txn); err != nil {
		return last, err
	}
	return last, s.a.db.DeleteOutbox(ctx, dest, last)
}

// announce sends an empty transaction to every server we share a room
// with, once at start-up. Servers wake their queue for a server that
// contacts them, so one that held events for us while we were away
// delivers them now instead of after its backoff.
func (s *Sender) announce(ctx context.Context) {
	servers, err := s.a.db.JoinedServers(ctx)
	if err != nil {
		return
	}
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, srv := range servers {
		if srv == string(s.a.serverName) {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(srv string) {
			defer wg.Done()
			defer func() { <-sem }()
			tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			txn := gomatrixserverlib.Transaction{
				TransactionID:  gomatrixserverlib.TransactionID(fmt.Sprintf("rpt-hello-%d", time.Now().UnixNano())),
				Origin:         s.a.serverName,
				Destination:    spec.ServerName(srv),
				OriginServerTS: spec.AsTimestamp(time.Now()),
				PDUs:           []json.RawMessage{},
			}
			_, _ = s.a.client.SendTransaction(tctx, txn)
		}(srv)
	}
	wg.Wait()
}
