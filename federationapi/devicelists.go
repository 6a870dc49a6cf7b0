package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/httputil"
	"repeater/roomserver"
	"repeater/storage"
)

// Device lists over federation (Server-Server API, "Device Management";
// "End-to-End Encryption", m.signing_key_update).
//
// Outbound: each change of a local user's devices takes the user's next
// device-list stream ID and goes, as m.device_list_update with prev_id the
// ID before it, to every server sharing a room with the user, through the
// durable queue. user/devices answers with the current ID, so a server
// holding that snapshot can tell which later updates it still needs.
//
// Inbound: while one of our users shares a room with another server's
// user, we keep a copy of that user's device list (storage
// remote_device_lists): fetched (user/devices) when first needed, kept
// current by their server's EDUs, fetched afresh when an update shows a
// gap (a prev_id we never saw), marked stale when a fetch fails (and still
// served while their server is away), and dropped once no user of ours
// shares a room with them (updates stop coming then). keys/query for such
// users is answered from the copy; for anyone else, by asking their server.

// deviceLists serialises the device-list work of each remote user and
// tracks membership changes that may end our sharing a room with one.
type deviceLists struct {
	mu     sync.Mutex
	locks  map[string]*userLock
	queue  map[string][]listUpdate // per remote user; key present: a drainer runs
	notes  map[int64]memberNote    // membership events pending commit, by position
	notify map[string]bool         // remote users with a change notification due
	// failed holds servers a device-list fetch recently failed for: keys
	// queries do not wait on them again for a while (an EDU from one, which
	// shows it is back, clears it).
	failed map[string]time.Time
	closed bool
	wg     sync.WaitGroup
}

type userLock struct {
	mu sync.Mutex
	n  int
}

// listUpdate is an inbound m.device_list_update or m.signing_key_update.
type listUpdate struct {
	eduType string
	content gjson.Result
}

type memberNote struct{ roomID, userID string }

// fetchBackoff is how long keys queries skip fetching device lists from a
// server after a fetch from it failed.
const fetchBackoff = 30 * time.Second

// fetchFailed notes (failed) or clears (!failed) that server could not be
// reached for a device list.
func (d *deviceLists) fetchFailed(server string, failed bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !failed {
		delete(d.failed, server)
		return
	}
	if d.failed == nil || len(d.failed) > 10000 {
		d.failed = map[string]time.Time{}
	}
	d.failed[server] = time.Now()
}

// recentlyFailed reports whether a fetch from server failed lately.
func (d *deviceLists) recentlyFailed(server string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, ok := d.failed[server]
	return ok && time.Since(t) < fetchBackoff
}

// notifyNow tells our users sharing a room with a remote user that the
// user's device list changed.
func (a *API) notifyNow(userID string) {
	if a.edus != nil {
		a.edus.RemoteDeviceListChanged(userID)
	}
}

// notifyDelay is how long the notice that a fetch refreshed our copy of a
// remote user's device list waits, so that a burst of fetches (updates
// with gaps in a row) makes our users' clients query once more, not once
// per fetch.
const notifyDelay = 200 * time.Millisecond

// notifyChanged is notifyNow after notifyDelay, folding in further calls
// for the same user meanwhile.
func (a *API) notifyChanged(userID string) {
	if a.edus == nil {
		return
	}
	d := &a.dl
	d.mu.Lock()
	if d.notify[userID] {
		d.mu.Unlock()
		return // one is due: it covers this change too
	}
	if d.notify == nil {
		d.notify = map[string]bool{}
	}
	d.notify[userID] = true
	d.mu.Unlock()
	started := a.goBackground(func(ctx context.Context) {
		t := time.NewTimer(notifyDelay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		// Cleared first: a change from here on schedules another notice.
		d.mu.Lock()
		delete(d.notify, userID)
		d.mu.Unlock()
		if ctx.Err() == nil {
			a.edus.RemoteDeviceListChanged(userID)
		}
	})
	if !started {
		d.mu.Lock()
		delete(d.notify, userID)
		d.mu.Unlock()
	}
}

// maxQueuedUpdates bounds the EDUs waiting for one remote user; beyond it
// their list is fetched afresh instead.
const maxQueuedUpdates = 1000

// lockUser serialises work on one remote user's device list.
func (d *deviceLists) lockUser(userID string) (unlock func()) {
	d.mu.Lock()
	if d.locks == nil {
		d.locks = map[string]*userLock{}
	}
	l := d.locks[userID]
	if l == nil {
		l = &userLock{}
		d.locks[userID] = l
	}
	l.n++
	d.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		d.mu.Lock()
		if l.n--; l.n == 0 {
			delete(d.locks, userID)
		}
		d.mu.Unlock()
	}
}

// goBackground runs f on its own goroutine unless the API is shutting
// down; it reports whether f was started.
func (a *API) goBackground(f func(ctx context.Context)) bool {
	ctx := a.background()
	if ctx == nil {
		ctx = context.Background()
	}
	d := &a.dl
	d.mu.Lock()
	if d.closed || ctx.Err() != nil {
		d.mu.Unlock()
		return false
	}
	d.wg.Add(1)
	d.mu.Unlock()
	go func() {
		defer d.wg.Done()
		f(ctx)
	}()
	return true
}

// stopDeviceLists waits for background device-list work (at shutdown).
func (a *API) stopDeviceLists() {
	a.dl.mu.Lock()
	a.dl.closed = true
	a.dl.mu.Unlock()
	a.dl.wg.Wait()
}

// --- outbound ---

// DeviceListChanged tells the servers sharing a room with a local user
// that one of the user's devices was added, changed or deleted (EDU
// m.device_list_update, with the device's keys as now signed).
func (a *API) DeviceListChanged(ctx context.Context, userID, deviceID string, deleted bool) {
	ctx = context.WithoutCancel(ctx)
	dests := a.otherServers(a.serversSharing(ctx, userID))
	c := map[string]any{"user_id": userID, "device_id": deviceID, "deleted": deleted}
	if !deleted && len(dests) > 0 {
		if keys, err := a.signedDeviceKeys(ctx, userID); err == nil && keys[deviceID] != nil {
			c["keys"] = json.RawMessage(keys[deviceID])
		}
		if uid, err := spec.NewUserID(userID, true); err == nil {
			if dev, err := a.db.GetDevice(ctx, uid.Local(), deviceID); err == nil && dev.DisplayName != "" {
				c["device_display_name"] = dev.DisplayName
			}
		}
	}
	_, err := a.db.QueueDeviceListEDU(ctx, userID, dests, func(streamID, prevID int64) ([]byte, error) {
		c["stream_id"] = streamID
		c["prev_id"] = []int64{}
		if prevID > 0 {
			c["prev_id"] = []int64{prevID}
		}
		return json.Marshal(map[string]any{"edu_type": "m.device_list_update", "content": c})
	})
	if err != nil {
		a.log.Warn("queueing a device-list update", "user", userID, "err", err)
		return
	}
	if len(dests) > 0 {
		a.Sender.Queued(dests)
	}
}

// SigningKeysChanged tells the servers sharing a room with a local user
// of the user's master and self-signing keys (EDU m.signing_key_update;
// the user-signing key is the user's own business).
func (a *API) SigningKeysChanged(ctx context.Context, userID string) {
	master, self, err := a.publicCrossSigningKeys(ctx, userID)
	if err != nil || (master == nil && self == nil) {
		return
	}
	c := map[string]any{"user_id": userID}
	if master != nil {
		c["master_key"] = master
	}
	if self != nil {
		c["self_signing_key"] = self
	}
	a.queueEDU(ctx, "m.signing_key_update", c, a.serversSharing(ctx, userID))
}

func (a *API) otherServers(servers []string) []string {
	var out []string
	for _, s := range servers {
		if s != string(a.serverName) {
			out = append(out, s)
		}
	}
	return out
}

// signedDeviceKeys returns a local user's device keys with the signatures
// the user made of them (cross-signing), as other servers see them.
func (a *API) signedDeviceKeys(ctx context.Context, userID string) (map[string][]byte, error) {
	all, err := a.db.DeviceKeysOf(ctx, []string{userID})
	if err != nil {
		return nil, err
	}
	keys := all[userID]
	sigs, err := a.db.KeySignaturesOf(ctx, userID)
	if err != nil {
		return nil, err
	}
	own := func(signer string) bool { return signer == userID }
	for dev, js := range keys {
		keys[dev] = storage.AddKeySignatures(js, dev, sigs, own)
	}
	return keys, nil
}

// publicCrossSigningKeys returns a local user's master and self-signing
// keys (nil if none) with the user's own signatures of them.
func (a *API) publicCrossSigningKeys(ctx context.Context, userID string) (master, self json.RawMessage, err error) {
	keys, err := a.db.CrossSigningKeys(ctx, userID)
	if err != nil || len(keys) == 0 {
		return nil, nil, err
	}
	sigs, err := a.db.KeySignaturesOf(ctx, userID)
	if err != nil {
		return nil, nil, err
	}
	own := func(signer string) bool { return signer == userID }
	if js, ok := keys["master"]; ok {
		master = storage.AddKeySignatures(js, storage.CrossSigningPublicKey(js), sigs, own)
	}
	if js, ok := keys["self_signing"]; ok {
		self = storage.AddKeySignatures(js, storage.CrossSigningPublicKey(js), sigs, own)
	}
	return master, self, nil
}

// --- inbound ---

// receiveDeviceListEDU queues an m.device_list_update or
// m.signing_key_update about one of origin's users; each user's updates
// are applied in order, off the /send request.
func (a *API) receiveDeviceListEDU(origin spec.ServerName, eduType string, content gjson.Result) {
	userID := content.Get("user_id").Str
	if roomserver.ServerOf(userID) != string(origin) || origin == a.serverName {
		return
	}
	d := &a.dl
	d.fetchFailed(string(origin), false)
	d.mu.Lock()
	if d.queue == nil {
		d.queue = map[string][]listUpdate{}
	}
	q, running := d.queue[userID]
	if len(q) >= maxQueuedUpdates {
		// Too far behind to replay: the next update finds a gap and the
		// list is fetched afresh.
		q = q[:0]
	}
	d.queue[userID] = append(q, listUpdate{eduType: eduType, content: content})
	d.mu.Unlock()
	if running {
		return
	}
	started := a.goBackground(func(ctx context.Context) {
		for {
			d.mu.Lock()
			q := d.queue[userID]
			if len(q) == 0 || ctx.Err() != nil {
				delete(d.queue, userID)
				d.mu.Unlock()
				return
			}
			d.queue[userID] = nil
			d.mu.Unlock()
			for _, u := range q {
				a.applyListUpdate(ctx, userID, u)
			}
		}
	})
	if !started { // shutting down
		d.mu.Lock()
		delete(d.queue, userID)
		d.mu.Unlock()
	}
}

// applyListUpdate applies one queued EDU about a remote user.
func (a *API) applyListUpdate(ctx context.Context, userID string, u listUpdate) {
	// A copy is kept only while we share a room with the user (the
	// watcher drops it when that ends); without one, updates about users
	// nobody here shares a room with are ignored.
	if held, err := a.db.RemoteDeviceListsHeld(ctx, []string{userID}); err != nil || (len(held) == 0 && !a.sharesRoom(ctx, userID)) {
		return
	}
	switch u.eduType {
	case "m.device_list_update":
		a.applyDeviceListUpdate(ctx, userID, u.content)
	case "m.signing_key_update":
		if a.applySigningKeyUpdate(ctx, userID, u.content) {
			a.notifyNow(userID)
		}
	}
}

// applyDeviceListUpdate applies an m.device_list_update to our copy of the
// user's device list: directly when we hold every update it follows
// (prev_id), otherwise by fetching the list afresh. Our users are told at
// once; after a fetch (which may bring more than the update announced),
// once more when the copy is current.
func (a *API) applyDeviceListUpdate(ctx context.Context, userID string, c gjson.Result) {
	deviceID := c.Get("device_id").Str
	streamID := c.Get("stream_id").Int()
	if deviceID == "" || !c.Get("stream_id").Exists() {
		return
	}
	dev := storage.RemoteDevice{DeviceID: deviceID, DisplayName: c.Get("device_display_name").Str}
	if k := c.Get("keys"); k.IsObject() {
		dev.Keys = []byte(k.Raw)
	}
	deleted := c.Get("deleted").Bool()
	prev := c.Get("prev_id").Array()
	// follows reports whether a copy at held includes every update this one
	// builds on. Stream IDs of one user only grow, so any prev_id up to
	// held is in the copy.
	follows := func(held int64) bool {
		for _, p := range prev {
			if p.Int() > held {
				return false
			}
		}
		return true
	}
	unlock := a.dl.lockUser(userID)
	defer unlock()
	l, err := a.db.RemoteDeviceList(ctx, userID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		a.log.Warn("reading a remote device list", "user", userID, "err", err)
		return
	}
	if l != nil && !l.Stale {
		if streamID <= l.StreamID {
			return // already applied (or covered by a fetch)
		}
		if follows(l.StreamID) {
			// Told first: a query this prompts waits for the update (the
			// user's lock).
			a.notifyNow(userID)
			if _, err := a.db.UpdateRemoteDevice(ctx, userID, streamID, dev, deleted); err != nil {
				a.log.Warn("applying a device-list update", "user", userID, "err", err)
			}
			return
		}
	}
	// No copy, a stale one, or a gap: fetch the list. Queries wait for
	// the fetch (the user's lock).
	a.notifyNow(userID)
	fresh, err := a.resyncDeviceList(ctx, userID)
	if err != nil {
		a.log.Info("could not fetch a remote device list", "user", userID, "err", err)
		if l != nil {
			_ = a.db.MarkRemoteDeviceListStale(ctx, userID)
		}
		return
	}
	if streamID > fresh.StreamID && follows(fresh.StreamID) {
		_, _ = a.db.UpdateRemoteDevice(ctx, userID, streamID, dev, deleted)
	}
	a.notifyChanged(userID)
}

// applySigningKeyUpdate stores a remote user's new master and self-signing
// keys in our copy of their list (without a copy there is nothing to keep
// current: the keys come with the list when it is fetched).
func (a *API) applySigningKeyUpdate(ctx context.Context, userID string, c gjson.Result) bool {
	key := func(field string) []byte {
		k := c.Get(field)
		if !k.IsObject() || k.Get("user_id").Str != userID {
			return nil
		}
		return []byte(k.Raw)
	}
	master, self := key("master_key"), key("self_signing_key")
	if master == nil && self == nil {
		return false
	}
	unlock := a.dl.lockUser(userID)
	defer unlock()
	if _, err := a.db.SetRemoteCrossSigningKeys(ctx, userID, master, self); err != nil {
		a.log.Warn("storing remote cross-signing keys", "user", userID, "err", err)
	}
	return true
}

// maxRemoteDevices bounds the devices we keep of one remote user.
const maxRemoteDevices = 10000

// resyncDeviceList fetches a remote user's device list from their server
// (GET user/devices) and stores it as our copy. The caller holds the
// user's lock.
func (a *API) resyncDeviceList(ctx context.Context, userID string) (*storage.RemoteDeviceList, error) {
	srv := roomserver.ServerOf(userID)
	res, err := a.request(ctx, srv, http.MethodGet, "/_matrix/federation/v1/user/devices/"+url.PathEscape(userID), nil)
	// Only an unreachable server is one to stop waiting on; one that
	// answered with an error is up.
	var he gomatrix.HTTPError
	var me *httputil.Error
	a.dl.fetchFailed(srv, err != nil && !errors.As(err, &he) && !errors.As(err, &me))
	if err != nil {
		return nil, err
	}
	r := gjson.ParseBytes(res)
	if r.Get("user_id").Str != userID || !r.Get("devices").IsArray() {
		return nil, errors.New("user/devices: answer is not about the user asked for")
	}
	l := storage.RemoteDeviceList{UserID: userID, StreamID: r.Get("stream_id").Int()}
	for _, d := range r.Get("devices").Array() {
		id := d.Get("device_id").Str
		if id == "" {
			continue
		}
		if len(l.Devices) == maxRemoteDevices {
			break
		}
		dev := storage.RemoteDevice{DeviceID: id, DisplayName: d.Get("device_display_name").Str}
		if k := d.Get("keys"); k.IsObject() {
			dev.Keys = []byte(k.Raw)
		}
		l.Devices = append(l.Devices, dev)
	}
	for field, dst := range map[string]*[]byte{"master_key": &l.MasterKey, "self_signing_key": &l.SelfSigningKey} {
		if k := r.Get(field); k.IsObject() && k.Get("user_id").Str == userID {
			*dst = []byte(k.Raw)
		}
	}
	if err := a.db.ReplaceRemoteDeviceList(ctx, l); err != nil {
		return nil, err
	}
	return &l, nil
}

// cachedDeviceList returns our copy of a remote user's device list,
// fetching it first when we have none or ours is stale (unless a fetch
// from their server failed lately); nil when we keep no copy of the
// user's list (nobody here shares a room with them) or could not get one.
func (a *API) cachedDeviceList(ctx context.Context, userID string) *storage.RemoteDeviceList {
	if !a.sharesRoom(ctx, userID) {
		return nil
	}
	unlock := a.dl.lockUser(userID)
	l, err := a.db.RemoteDeviceList(ctx, userID)
	if err == nil && (!l.Stale || a.dl.recentlyFailed(roomserver.ServerOf(userID))) {
		unlock()
		return l
	}
	if a.dl.recentlyFailed(roomserver.ServerOf(userID)) {
		unlock()
		return nil
	}
	fresh, ferr := a.resyncDeviceList(ctx, userID)
	unlock()
	if ferr != nil {
		a.log.Info("could not fetch a remote device list", "user", userID, "err", ferr)
		if err == nil {
			return l // stale, but the best we have while their server is away
		}
		return nil
	}
	// Our users' clients learn that the list (as we see it) changed.
	a.notifyNow(userID)
	return fresh
}

// QueryKeys answers keys/query for users of another server: the answer's
// device_keys, master_keys and self_signing_keys (raw JSON object). Users
// whose device lists we keep are answered from our copy; the others are
// asked of their server. On a failure to reach it, what could be answered
// is returned with the error.
func (a *API) QueryKeys(ctx context.Context, server string, users map[string][]string) (json.RawMessage, error) {
	deviceKeys := map[string]json.RawMessage{}
	master := map[string]json.RawMessage{}
	self := map[string]json.RawMessage{}
	direct := map[string][]string{}
	for user, devs := range users {
		if roomserver.ServerOf(user) != server {
			continue
		}
		l := a.cachedDeviceList(ctx, user)
		if l == nil {
			direct[user] = devs
			continue
		}
		deviceKeys[user] = remoteDeviceKeys(l, devs)
		if l.MasterKey != nil {
			master[user] = l.MasterKey
		}
		if l.SelfSigningKey != nil {
			self[user] = l.SelfSigningKey
		}
	}
	var err error
	if len(direct) > 0 {
		var res json.RawMessage
		res, err = a.request(ctx, server, http.MethodPost, "/_matrix/federation/v1/user/keys/query", map[string]any{"device_keys": direct})
		if err == nil {
			for field, dst := range map[string]map[string]json.RawMessage{"device_keys": deviceKeys, "master_keys": master, "self_signing_keys": self} {
				gjson.GetBytes(res, field).ForEach(func(user, v gjson.Result) bool {
					if _, asked := direct[user.Str]; asked && v.IsObject() {
						dst[user.Str] = json.RawMessage(v.Raw)
					}
					return true
				})
			}
		}
	}
	out, merr := json.Marshal(map[string]any{"device_keys": deviceKeys, "master_keys": master, "self_signing_keys": self})
	if merr != nil {
		return nil, merr
	}
	return out, err
}

// remoteDeviceKeys is the keys/query answer for one user from our copy of
// their list: each device with keys (only those in only, if any), with its
// display name in unsigned.
func remoteDeviceKeys(l *storage.RemoteDeviceList, only []string) json.RawMessage {
	want := map[string]bool{}
	for _, d := range only {
		want[d] = true
	}
	m := map[string]json.RawMessage{}
	for _, d := range l.Devices {
		if d.Keys == nil || (len(want) > 0 && !want[d.DeviceID]) {
			continue
		}
		js := d.Keys
		if d.DisplayName != "" {
			var k map[string]json.RawMessage
			if json.Unmarshal(js, &k) == nil {
				var unsigned map[string]any
				if u, ok := k["unsigned"]; !ok || json.Unmarshal(u, &unsigned) != nil || unsigned == nil {
					unsigned = map[string]any{}
				}
				unsigned["device_display_name"] = d.DisplayName
				if b, err := json.Marshal(unsigned); err == nil {
					k["unsigned"] = b
					if b, err := json.Marshal(k); err == nil {
						js = b
					}
				}
			}
		}
		m[d.DeviceID] = js
	}
	out, _ := json.Marshal(m)
	return out
}

// sharesRoom reports whether one of our users is joined to a room that
// userID is joined to.
func (a *API) sharesRoom(ctx context.Context, userID string) bool {
	rooms, err := a.db.RoomsByMembership(ctx, userID, spec.Join)
	if err != nil {
		return false
	}
	for _, r := range rooms {
		members, err := a.rs.MembersWith(ctx, r, spec.Join)
		if err != nil {
			continue
		}
		for _, m := range members {
			if roomserver.ServerOf(m) == string(a.serverName) {
				return true
			}
		}
	}
	return false
}

// --- membership: when we stop sharing a room with someone ---

// DeviceListWatcher returns the roomserver listener that drops our copy of
// a remote user's device list once no user of ours shares a room with
// them: their server stops sending updates then, so the copy would go out
// of date unseen. Sharing again starts from a fresh fetch.
func (a *API) DeviceListWatcher() roomserver.Notifier { return watcher{a} }

type watcher struct{ a *API }

// OnRoomEventPending notes membership events (their commit follows).
func (w watcher) OnRoomEventPending(roomID string, pos int64, membershipOf string) {
	if membershipOf == "" {
		return
	}
	d := &w.a.dl
	d.mu.Lock()
	if d.notes == nil || len(d.notes) > 10000 {
		d.notes = map[int64]memberNote{} // notes of events that never committed
	}
	d.notes[pos] = memberNote{roomID, membershipOf}
	d.mu.Unlock()
}

// OnRoomEvent checks, after a membership event committed, whether we
// stopped sharing every room with someone whose device list we keep.
func (w watcher) OnRoomEvent(roomID string, pos int64, _ []string) {
	d := &w.a.dl
	d.mu.Lock()
	n, ok := d.notes[pos]
	delete(d.notes, pos)
	d.mu.Unlock()
	if !ok || n.roomID != roomID {
		return
	}
	w.a.goBackground(func(ctx context.Context) { w.a.membershipChanged(ctx, n.roomID, n.userID) })
}

func (a *API) membershipChanged(ctx context.Context, roomID, userID string) {
	if m, err := a.db.CurrentMembership(ctx, roomID, userID); err != nil || m == spec.Join {
		return
	}
	candidates := []string{userID}
	if roomserver.ServerOf(userID) == string(a.serverName) {
		// One of ours left: the room's other servers' users may now share
		// nothing with us.
		members, err := a.rs.MembersWith(ctx, roomID, spec.Join)
		if err != nil {
			return
		}
		candidates = candidates[:0]
		for _, m := range members {
			if roomserver.ServerOf(m) != string(a.serverName) {
				candidates = append(candidates, m)
			}
		}
	}
	held, err := a.db.RemoteDeviceListsHeld(ctx, candidates)
	if err != nil {
		return
	}
	for _, u := range held {
		if a.sharesRoom(ctx, u) {
			continue
		}
		unlock := a.dl.lockUser(u)
		if !a.sharesRoom(ctx, u) {
			if err := a.db.DropRemoteDeviceList(ctx, u); err != nil {
				a.log.Warn("dropping a remote device list", "user", u, "err", err)
			}
		}
		unlock()
	}
}
