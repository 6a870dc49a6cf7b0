package appservice

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"repeater/storage"
)

// Events are pushed to services (spec: Application Service API, "Pushing
// events"): each service with a url gets, in order, the events queued for
// it (storage.EnqueueAppService, in each event's own write) in
// transactions of up to maxTxnEvents, PUT to
// /_matrix/app/v1/transactions/{txnId} with its hs_token. A failed
// transaction is retried, exactly as it was, with backoff up to maxBackoff;
// a request from the service retries at once.

const (
	maxTxnEvents = 100
	minBackoff   = 2 * time.Second
	maxBackoff   = 2 * time.Minute
	// pollEvery catches items a wake-up missed (a write that failed after
	// queueing, say).
	pollEvery = 30 * time.Second
)

// Events are the room events the pusher formats for services.
type Events interface {
	Events(ctx context.Context, nids []int64) ([]*storage.Event, error)
	ClientEvent(ctx context.Context, e *storage.Event, viewerID, viewerDevice string) json.RawMessage
}

// Pusher delivers queued events to the services.
type Pusher struct {
	set    *Set
	db     *storage.DB
	events Events
	client *http.Client
	log    *slog.Logger
	poke   map[string]chan struct{}
	wg     sync.WaitGroup
}

// NewPusher makes the pusher; Run starts it. skipVerify does not check
// the services' certificates (test networks).
func NewPusher(set *Set, db *storage.DB, events Events, skipVerify bool, log *slog.Logger) *Pusher {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: skipVerify} // #nosec G402 -- test networks only, by config
	p := &Pusher{set: set, db: db, events: events, log: log, poke: map[string]chan struct{}{},
		client: &http.Client{Timeout: 60 * time.Second, Transport: tr}}
	for _, r := range set.All() {
		p.poke[r.ID] = make(chan struct{}, 1)
	}
	return p
}

// Run delivers until ctx ends.
func (p *Pusher) Run(ctx context.Context) {
	for _, r := range p.set.All() {
		if r.URL == nil || *r.URL == "" {
			continue
		}
		p.wg.Add(1)
		go func(r *Registration) { defer p.wg.Done(); p.worker(ctx, r) }(r)
	}
	p.wg.Wait()
}

// Queued is told that these services have new events.
func (p *Pusher) Queued(services []string) {
	for _, id := range services {
		p.Wake(id)
	}
}

// Wake retries a service at once (it made a request, or has new events).
func (p *Pusher) Wake(id string) {
	if ch := p.poke[id]; ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Interested lists the services (with a url) an event goes to: its sender
// or (member events) its target in a user namespace, its room in a room
// namespace, or a member of the room in a user namespace.
func (s *Set) Interested(roomID, sender string, stateKey *string, members map[string]string) []string {
	var out []string
	for _, r := range s.All() {
		if r.URL == nil || *r.URL == "" {
			continue
		}
		if r.OwnsUser(sender) || (stateKey != nil && strings.HasPrefix(*stateKey, "@") && r.OwnsUser(*stateKey)) ||
			matches(r.Namespaces.Rooms, roomID, false) || r.hasMember(members) {
			out = append(out, r.ID)
		}
	}
	return out
}

// HasAliasNamespaces reports whether any service with a url has alias
// namespaces (only then are a room's aliases worth looking up per event).
func (s *Set) HasAliasNamespaces() bool {
	for _, r := range s.All() {
		if r.URL != nil && *r.URL != "" && len(r.Namespaces.Aliases) > 0 {
			return true
		}
	}
	return false
}

// InterestedInAliases lists the services (with a url) whose alias
// namespaces include one of a room's aliases.
func (s *Set) InterestedInAliases(aliases []string) []string {
	var out []string
	for _, r := range s.All() {
		if r.URL == nil || *r.URL == "" {
			continue
		}
		for _, a := range aliases {
			if matches(r.Namespaces.Aliases, a, false) {
				out = append(out, r.ID)
				break
			}
		}
	}
	return out
}

func (r *Registration) hasMember(members map[string]string) bool {
	for u, m := range members {
		if m == "join" && r.OwnsUser(u) {
			return true
		}
	}
	return false
}

func (p *Pusher) worker(ctx context.Context, r *Registration) {
	backoff := time.Duration(0)
	var inflight int64 // last item of a transaction that failed: resent as it was
	for ctx.Err() == nil {
		items, err := p.db.AppServiceOutbox(ctx, r.ID, inflight, maxTxnEvents)
		if err == nil && len(items) > 0 {
			last := items[len(items)-1].ID
			if err = p.send(ctx, r, items); err == nil {
				err = p.db.DeleteAppServiceOutbox(ctx, r.ID, last)
			}
			if err == nil {
				backoff, inflight = 0, 0
				continue
			}
			inflight = last
			backoff = min(max(backoff*2, minBackoff), maxBackoff)
			p.log.Info("application service transaction failed; will retry", "service", r.ID, "retry_in", backoff, "err", err)
		}
		wait := pollEvery
		if backoff > 0 {
			wait = backoff/2 + time.Duration(rand.Int64N(int64(backoff/2)+1))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-p.poke[r.ID]:
			t.Stop()
			backoff = 0
		case <-t.C:
		}
	}
}

// send PUTs one transaction. Its ID is the last item's: the same items
// are retried under the same ID, so the service can drop a repeat.
func (p *Pusher) send(ctx context.Context, r *Registration, items []storage.AppServiceItem) error {
	nids := make([]int64, len(items))
	for i, it := range items {
		nids[i] = it.EventNID
	}
	evs, err := p.events.Events(ctx, nids)
	if err != nil {
		return err
	}
	byNID := map[int64]*storage.Event{}
	for _, e := range evs {
		byNID[e.NID] = e
	}
	out := make([]json.RawMessage, 0, len(items))
	for _, it := range items {
		if e := byNID[it.EventNID]; e != nil {
			out = append(out, p.events.ClientEvent(ctx, e, "", ""))
		}
	}
	body, err := json.Marshal(map[string]any{"events": out})
	if err != nil {
		return err
	}
	txnID := strconv.FormatInt(items[len(items)-1].ID, 10)
	u := trimSlash(*r.URL) + "/_matrix/app/v1/transactions/" + txnID
	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(tctx, http.MethodPut, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+r.HSToken)
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func trimSlash(u string) string { return strings.TrimSuffix(u, "/") }
