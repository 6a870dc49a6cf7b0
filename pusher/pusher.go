// Package pusher evaluates every new room event against the push rules of
// the room's local users who have HTTP pushers, stores the resulting
// notifications, and delivers them to those pushers through their push
// gateways (Push Gateway API, POST /_matrix/push/v1/notify). Users without
// pushers cost nothing here: their unread counts and GET /notifications
// are evaluated when asked for (syncapi).
//
// Both halves are driven by positions kept in the database: how far the
// event stream has been evaluated (push_progress, moved in the same
// transaction as the notifications it produced) and, per pusher, the last
// notification delivered. A restart resumes from both, so nothing is lost
// and nothing evaluated twice; a gateway that is down is retried with
// backoff, in order.
package pusher

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"

	"repeater/internal/pushrules"
	"repeater/roomserver"
	"repeater/storage"
)

const progressName = "events"

// gather is how long the evaluator lets new events accumulate after being
// woken.
const gather = 200 * time.Millisecond

// retention is how long notifications are kept.
const retention = 30 * 24 * time.Hour

// Worker is the push worker.
type Worker struct {
	db         *storage.DB
	rs         *roomserver.Server
	serverName string
	log        *slog.Logger
	client     *http.Client
	rules      pushrules.Cache

	wake  chan struct{} // new events
	pwake chan struct{} // new notifications or pushers

	mu       sync.Mutex
	backoff  map[string]pusherBackoff // localpart|app_id|pushkey
	inflight map[string]bool          // pushers being delivered to
	badging  map[string]int           // users with a badge update in flight (2: and one more to send)
	wg       sync.WaitGroup           // delivery goroutines
}

type pusherBackoff struct {
	until time.Time
	delay time.Duration
}

// New makes a worker; Run starts it. skipTLSVerify turns off certificate
// checks on gateways (test networks).
func New(db *storage.DB, rs *roomserver.Server, serverName string, skipTLSVerify bool, log *slog.Logger) *Worker {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if skipTLSVerify {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	return &Worker{db: db, rs: rs, serverName: serverName, log: log,
		client:  &http.Client{Timeout: 15 * time.Second, Transport: tr},
		wake:    make(chan struct{}, 1),
		pwake:   make(chan struct{}, 1),
		backoff: map[string]pusherBackoff{}, inflight: map[string]bool{}, badging: map[string]int{}}
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// OnRoomEventPending is part of roomserver.Notifier; nothing to do before
// the commit.
func (w *Worker) OnRoomEventPending(string, int64, string) {}

// OnRoomEvent wakes the evaluator after an event has committed.
func (w *Worker) OnRoomEvent(string, int64, []string) { poke(w.wake) }

// ReadReceiptMoved sends the user's HTTP pushers their new unread count
// (a notification with only counts: Push Gateway API), so that phones
// clear their badge when the user reads elsewhere. Best effort: one try,
// in the background.
func (w *Worker) ReadReceiptMoved(localpart string) {
	// One update in flight per user, and at most one more after it: a
	// burst of receipts (or a hung gateway) must not pile up goroutines,
	// and the last receipt's count is always sent.
	w.mu.Lock()
	if n := w.badging[localpart]; n > 0 {
		w.badging[localpart] = 2
		w.mu.Unlock()
		return
	}
	w.badging[localpart] = 1
	w.mu.Unlock()
	go func() {
		for {
			w.sendBadge(localpart)
			w.mu.Lock()
			again := w.badging[localpart] == 2
			if again {
				w.badging[localpart] = 1
			} else {
				delete(w.badging, localpart)
			}
			w.mu.Unlock()
			if !again {
				return
			}
		}
	}()
}

// sendBadge sends a user's pushers their unread count.
func (w *Worker) sendBadge(localpart string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ps, err := w.db.Pushers(ctx, localpart)
	if err != nil || len(ps) == 0 {
		return
	}
	unread, err := w.db.UnreadNotificationCount(ctx, localpart, "@"+localpart+":"+w.serverName)
	if err != nil {
		return
	}
	for _, p := range ps {
		if p.Kind != "http" {
			continue
		}
		note := map[string]any{"id": "", "counts": map[string]any{"unread": unread}, "prio": "low", "devices": []any{w.device(p, nil)}}
		body, _ := json.Marshal(map[string]any{"notification": note})
		if _, err := w.post(ctx, p, body); err != nil {
			w.log.Debug("push: badge update failed", "user", localpart, "err", err)
		}
	}
}

// PushersChanged wakes delivery after a pusher was added or changed.
func (w *Worker) PushersChanged() { poke(w.pwake) }

// Run evaluates and delivers until ctx ends.
func (w *Worker) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.deliverLoop(ctx) }()
	w.evaluateLoop(ctx)
	wg.Wait()
	w.wg.Wait()
}

func (w *Worker) evaluateLoop(ctx context.Context) {
	pos, err := w.db.PushProgress(ctx, progressName)
	if err == nil && pos == 0 {
		// First run: start at the present, not with years of history.
		if pos, err = w.db.StreamPos(ctx); err == nil {
			err = w.db.AddNotifications(ctx, progressName, pos, nil)
		}
	}
	var known map[string]int64
	if err == nil {
		known, err = w.pusherUsers(ctx)
	}
	if err != nil {
		if ctx.Err() == nil {
			w.log.Error("push: reading progress", "err", err)
		}
		return
	}
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	saved := time.Now()
	for {
		next, n, err := pos, 0, error(nil)
		users, uerr := w.pusherUsers(ctx)
		if uerr != nil {
			err = uerr
		} else {
			// A pusher that appeared while events were being evaluated
			// without its user: evaluate them for that user alone.
			for lp, start := range users {
				if _, ok := known[lp]; !ok && start < pos && err == nil {
					err = w.catchUp(ctx, lp, start, pos)
				}
			}
			known = users
		}
		switch {
		case err != nil:
		case len(users) == 0:
			// Nobody to push to: nothing to evaluate. Keep up with the
			// stream, recording it now and then.
			var cur int64
			if cur, err = w.db.StreamPos(ctx); err == nil && cur > pos {
				next = cur
				if time.Since(saved) > 10*time.Second {
					err, saved = w.db.AddNotifications(ctx, progressName, cur, nil), time.Now()
				}
			}
		default:
			next, n, err = w.evaluate(ctx, pos, 1<<62, users, true)
			saved = time.Now()
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.log.Warn("push: evaluating events", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
			continue
		}
		pos = next
		if n > 0 {
			continue // more may be waiting
		}
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
			// Let a burst of events gather: one evaluation pass and one
			// write for many events, not one per commit, keeps the single
			// writer free for the events themselves. Pushes wait at most
			// this long.
			select {
			case <-ctx.Done():
				return
			case <-time.After(gather):
			}
		case <-prune.C:
			if err := w.db.PruneNotifications(ctx, time.Now().Add(-retention).UnixMilli()); err != nil && ctx.Err() == nil {
				w.log.Warn("push: pruning notifications", "err", err)
			}
		case <-time.After(30 * time.Second):
		}
	}
}

// pusherUsers returns the local users with an HTTP pusher, each with the
// earliest stream position their pushers want notifications after.
func (w *Worker) pusherUsers(ctx context.Context) (map[string]int64, error) {
	ps, err := w.db.AllPushers(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, p := range ps {
		if p.Kind != "http" {
			continue
		}
		if cur, ok := out[p.Localpart]; !ok || p.StartPos < cur {
			out[p.Localpart] = p.StartPos
		}
	}
	return out, nil
}

// catchUp evaluates the events in (from, to] for one user only.
func (w *Worker) catchUp(ctx context.Context, localpart string, from, to int64) error {
	for from < to {
		next, n, err := w.evaluate(ctx, from, to, map[string]int64{localpart: from}, false)
		if err != nil || n == 0 {
			return err
		}
		from = next
	}
	return nil
}

// evaluate takes the next batch of events in (pos, to], stores the
// notifications they cause for the given users (localparts: only users with
// a pusher are notified; GET /notifications evaluates for itself) and
// returns the new position and the number of events read. save moves the
// worker's recorded progress with them.
func (w *Worker) evaluate(ctx context.Context, pos, to int64, users map[string]int64, save bool) (int64, int, error) {
	evs, err := w.db.EventsInStream(ctx, pos, to, 200)
	if err != nil || len(evs) == 0 {
		return pos, 0, err
	}
	var ns []storage.Notification
	envs := map[string]pushrules.Env{} // room|user
	for _, e := range evs {
		candidates, joined := w.candidates(ctx, e)
		pe := pushrules.NewEvent(e.JSON) // read once for all the users
		for _, userID := range candidates {
			localpart := strings.TrimPrefix(strings.TrimSuffix(userID, ":"+w.serverName), "@")
			if _, ok := users[localpart]; !ok {
				continue
			}
			doc, err := w.db.PushRules(ctx, localpart)
			if err != nil {
				return pos, 0, err
			}
			env, ok := envs[e.RoomID+"|"+userID]
			if !ok {
				env = w.rs.PushEnv(ctx, e.RoomID, userID)
				// The members were just listed: count them once, not once
				// per user (large rooms).
				env.MemberCount = func() int { return joined }
				envs[e.RoomID+"|"+userID] = env
			}
			res := w.rules.Get(userID, doc).EvaluateEvent(pe, env)
			if !res.Notify {
				continue
			}
			actions, _ := json.Marshal(res.Actions)
			ns = append(ns, storage.Notification{Localpart: localpart, RoomID: e.RoomID, EventID: e.EventID,
				StreamPos: e.StreamPos, TS: e.OriginTS, Highlight: res.Highlight, Actions: actions})
		}
	}
	last := evs[len(evs)-1].StreamPos
	name := progressName
	if !save {
		name = ""
	}
	if err := w.db.AddNotifications(ctx, name, last, ns); err != nil {
		return pos, 0, err
	}
	if len(ns) > 0 {
		poke(w.pwake)
	}
	return last, len(evs), nil
}

// candidates are the local users an event may notify: the room's joined
// members other than the sender, and the target of an invite; and the
// number of joined members.
func (w *Worker) candidates(ctx context.Context, e *storage.Event) ([]string, int) {
	suffix := ":" + w.serverName
	// A room we are not in (an invite over federation) has no members here.
	members, _ := w.rs.MembersWith(ctx, e.RoomID, "join")
	var out []string
	for _, u := range members {
		if u != e.Sender && strings.HasSuffix(u, suffix) {
			out = append(out, u)
		}
	}
	if e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey != e.Sender && strings.HasSuffix(*e.StateKey, suffix) &&
		gjson.GetBytes(e.JSON, "content.membership").Str == "invite" {
		out = append(out, *e.StateKey)
	}
	return out, len(members)
}

func (w *Worker) deliverLoop(ctx context.Context) {
	for {
		next := w.deliverAll(ctx)
		wait := 30 * time.Second
		if !next.IsZero() {
			wait = min(wait, max(time.Until(next), 50*time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return
		case <-w.pwake:
		case <-time.After(wait):
		}
	}
}

// deliverAll starts delivery for every pusher with nothing in flight and
// not backing off, each in its own goroutine so that a slow gateway delays
// only its own pushers. It returns when the earliest backed-off pusher may
// try again (zero: none waiting).
func (w *Worker) deliverAll(ctx context.Context) time.Time {
	ps, err := w.db.AllPushers(ctx)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("push: listing pushers", "err", err)
		}
		return time.Now().Add(5 * time.Second)
	}
	var next time.Time
	for _, p := range ps {
		if p.Kind != "http" {
			continue
		}
		key := p.Localpart + "|" + p.AppID + "|" + p.PushKey
		w.mu.Lock()
		b, busy := w.backoff[key], w.inflight[key]
		if busy || time.Now().Before(b.until) {
			w.mu.Unlock()
			if !busy && (next.IsZero() || b.until.Before(next)) {
				next = b.until
			}
			continue
		}
		w.inflight[key] = true
		w.mu.Unlock()
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			err := w.deliver(ctx, p)
			w.mu.Lock()
			delete(w.inflight, key)
			if err != nil && ctx.Err() == nil {
				b.delay = min(max(2*b.delay, time.Second), 10*time.Minute)
				b.until = time.Now().Add(b.delay)
				w.backoff[key] = b
				w.log.Info("push: gateway failed, will retry", "user", p.Localpart, "app_id", p.AppID, "retry_in", b.delay, "err", err)
			} else {
				delete(w.backoff, key)
			}
			w.mu.Unlock()
			poke(w.pwake) // more may have arrived meanwhile; or a retry to plan
		}()
	}
	return next
}

// deliver sends a pusher its undelivered notifications, oldest first, one
// request each, recording progress after each success.
func (w *Worker) deliver(ctx context.Context, p storage.Pusher) error {
	for {
		ns, err := w.db.NotificationsAfter(ctx, p.Localpart, p.DeliveredID, p.StartPos, 50)
		if err != nil || len(ns) == 0 {
			return err
		}
		for _, n := range ns {
			rejected, err := w.send(ctx, p, n)
			if err != nil {
				return err
			}
			if rejected {
				// The gateway no longer knows this push key.
				w.log.Info("push: gateway rejected push key, removing pusher", "user", p.Localpart, "app_id", p.AppID)
				return w.db.DeletePusher(ctx, p.Localpart, p.AppID, p.PushKey)
			}
			if err := w.db.SetPusherDelivered(ctx, p.Localpart, p.AppID, p.PushKey, n.ID); err != nil {
				return err
			}
			p.DeliveredID = n.ID
		}
	}
}

// send makes one notify request (Push Gateway API, "POST
// /_matrix/push/v1/notify"). It reports whether the gateway rejected the
// pusher's push key.
func (w *Worker) send(ctx context.Context, p storage.Pusher, n storage.Notification) (bool, error) {
	body, err := w.payload(ctx, p, n)
	if err != nil {
		return false, err
	}
	if body == nil {
		return false, nil // the event is gone: nothing to say
	}
	return w.post(ctx, p, body)
}

// post sends a notify request; it reports whether the gateway rejected the
// pusher's push key.
func (w *Worker) post(ctx context.Context, p storage.Pusher, body []byte) (bool, error) {
	u := gjson.GetBytes(p.Data, "url").Str
	req, err := http.NewRequestWithContext(ctx, "POST", u, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 65536))
	if resp.StatusCode/100 != 2 {
		return false, fmt.Errorf("gateway answered %d", resp.StatusCode)
	}
	for _, k := range gjson.GetBytes(rb, "rejected").Array() {
		if k.Str == p.PushKey {
			return true, nil
		}
	}
	return false, nil
}

// device is a pusher as the gateway sees it: its data without the URL,
// and the tweaks of the notification's actions.
func (w *Worker) device(p storage.Pusher, actions []json.RawMessage) map[string]any {
	var data map[string]any
	_ = json.Unmarshal(p.Data, &data)
	delete(data, "url")
	return map[string]any{"app_id": p.AppID, "pushkey": p.PushKey, "pushkey_ts": p.PushKeyTS / 1000, "data": data,
		"tweaks": pushrules.Result{Actions: actions}.Tweaks()}
}

func (w *Worker) payload(ctx context.Context, p storage.Pusher, n storage.Notification) ([]byte, error) {
	ev, err := w.db.EventByID(ctx, n.EventID)
	if err == storage.ErrNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	userID := "@" + p.Localpart + ":" + w.serverName
	unread, err := w.db.UnreadNotificationCount(ctx, p.Localpart, userID)
	if err != nil {
		return nil, err
	}
	var actions []json.RawMessage
	_ = json.Unmarshal(n.Actions, &actions)
	device := w.device(p, actions)
	prio := "low"
	if ev.Type == "m.room.message" || ev.Type == "m.room.encrypted" || ev.Type == "m.call.invite" || n.Highlight ||
		(ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == userID) {
		prio = "high"
	}
	// "id" repeats the event ID, as Synapse sends and sytest expects.
	note := map[string]any{"id": ev.EventID, "event_id": ev.EventID, "room_id": ev.RoomID, "counts": map[string]any{"unread": unread},
		"prio": prio, "devices": []any{device}}
	if gjson.GetBytes(p.Data, "format").Str != "event_id_only" {
		note["type"] = ev.Type
		note["sender"] = ev.Sender
		if c := gjson.GetBytes(ev.JSON, "content"); c.IsObject() && ev.RedactedBy == "" {
			note["content"] = json.RawMessage(c.Raw)
		}
		if ev.StateKey != nil {
			note["user_is_target"] = *ev.StateKey == userID
		}
		if ev.Type == "m.room.member" {
			// Top-level membership, as Synapse sends and sytest expects.
			note["membership"] = gjson.GetBytes(ev.JSON, "content.membership").Str
		}
		if m, err := w.rs.CurrentStateEvent(ctx, ev.RoomID, "m.room.member", ev.Sender); err == nil && m != nil {
			if dn := gjson.GetBytes(m.JSON, "content.displayname").Str; dn != "" {
				note["sender_display_name"] = dn
			}
		}
		if ri, _, err := w.rs.RemoteInvite(ctx, ev.RoomID, userID); err == nil && ev.Type == "m.room.member" {
			// Invited to a room on another server: its name comes from the
			// stripped state the invite carried.
			for _, st := range gjson.ParseBytes(ri.Stripped).Array() {
				switch st.Get("type").Str {
				case "m.room.name":
					note["room_name"] = st.Get("content.name").Str
				case "m.room.canonical_alias":
					note["room_alias"] = st.Get("content.alias").Str
				}
			}
		}
		if name, err := w.rs.CurrentStateEvent(ctx, ev.RoomID, "m.room.name", ""); err == nil && name != nil {
			if s := gjson.GetBytes(name.JSON, "content.name").Str; s != "" {
				note["room_name"] = s
			}
		}
		if alias, err := w.rs.CurrentStateEvent(ctx, ev.RoomID, "m.room.canonical_alias", ""); err == nil && alias != nil {
			if s := gjson.GetBytes(alias.JSON, "content.alias").Str; s != "" {
				note["room_alias"] = s
				if note["room_name"] == nil {
					note["room_name"] = s // what clients would call the room
				}
			}
		}
	}
	return json.Marshal(map[string]any{"notification": note})
}
