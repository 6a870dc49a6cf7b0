package syncapi

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Ephemeral data (typing, presence) lives in memory and has its own stream
// position. The position starts at the start time in milliseconds, so a
// token from before a restart is always older than anything after it, and
// the client is sent the whole current ephemeral state.
type ephemeral struct {
	pos atomic.Int64

	mu       sync.Mutex
	typing   map[string]*roomTyping // room -> typing users
	presence map[string]*presence   // user -> presence
}

type roomTyping struct {
	users map[string]time.Time // user -> expiry
	pos   int64
}

type presence struct {
	state string // online, unavailable, offline
	// explicit: the user set state (unavailable or offline) with PUT
	// /presence; their clients' own syncs, which ask for "online" by
	// default, do not undo it (clients sync continuously while the user
	// acts). It lasts until they set another state or stop syncing.
	explicit   bool
	statusMsg  *string
	lastActive time.Time
	lastSync   time.Time
	pos        int64
}

func newEphemeral() *ephemeral {
	e := &ephemeral{typing: map[string]*roomTyping{}, presence: map[string]*presence{}}
	e.pos.Store(time.Now().UnixMilli())
	return e
}

// setTyping records a typing change and returns whether it changed anything.
func (e *ephemeral) setTyping(roomID, userID string, typing bool, timeout time.Duration) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	rt, ok := e.typing[roomID]
	if !ok {
		rt = &roomTyping{users: map[string]time.Time{}}
		e.typing[roomID] = rt
	}
	_, was := rt.users[userID]
	if typing {
		rt.users[userID] = time.Now().Add(timeout)
	} else {
		delete(rt.users, userID)
	}
	if was == typing && typing {
		return false // only the expiry moved
	}
	if was == typing {
		return false
	}
	rt.pos = e.pos.Add(1)
	return true
}

// expireTyping removes expired typing notifications, returning the rooms
// that changed.
func (e *ephemeral) expireTyping(now time.Time) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var changed []string
	for room, rt := range e.typing {
		n := len(rt.users)
		for u, exp := range rt.users {
			if now.After(exp) {
				delete(rt.users, u)
			}
		}
		if len(rt.users) != n {
			rt.pos = e.pos.Add(1)
			changed = append(changed, room)
		}
		if len(rt.users) == 0 && rt.pos < e.pos.Load()-100000 {
			delete(e.typing, room)
		}
	}
	return changed
}

// typingSince returns the typing users of a room if they changed after pos.
func (e *ephemeral) typingSince(roomID string, pos int64) ([]string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	rt, ok := e.typing[roomID]
	if !ok || rt.pos <= pos {
		return nil, false
	}
	users := make([]string, 0, len(rt.users))
	for u := range rt.users {
		users = append(users, u)
	}
	sort.Strings(users)
	return users, true
}

// Presence timeouts: an online user who stops syncing becomes unavailable,
// then offline.
const (
	idleToUnavailable = 5 * time.Minute
	syncToOffline     = 2 * time.Minute
	currentlyActive   = time.Minute
)

// setPresence sets a user's presence; activity marks them active now.
// It returns whether others should be told.
func (e *ephemeral) setPresence(userID, state string, statusMsg *string, active bool) bool {
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	p, ok := e.presence[userID]
	if !ok {
		p = &presence{state: "offline"}
		e.presence[userID] = p
	}
	changed := p.state != state
	if statusMsg != nil && (p.statusMsg == nil || *p.statusMsg != *statusMsg) {
		changed = true
		p.statusMsg = statusMsg
	}
	wasActive := now.Sub(p.lastActive) < currentlyActive
	p.state = state
	if active || p.lastActive.IsZero() {
		p.lastActive = now
		if !wasActive {
			changed = true
		}
	}
	if changed {
		p.pos = e.pos.Add(1)
	}
	return changed
}

// setRemotePresence sets another server's user's presence as reported;
// such users are not decayed by sync timeouts (their server does that).
func (e *ephemeral) setRemotePresence(userID, state string, statusMsg *string, lastActive time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	p, ok := e.presence[userID]
	if !ok {
		p = &presence{state: "offline"}
		e.presence[userID] = p
	}
	// A new last-active time alone (every EDU carries one) is news only
	// when it moves by more than the currently-active window.
	moved := lastActive.Sub(p.lastActive)
	if moved < 0 {
		moved = -moved
	}
	changed := p.state != state || (p.statusMsg == nil) != (statusMsg == nil) ||
		(statusMsg != nil && *p.statusMsg != *statusMsg) || p.lastActive.IsZero() || moved > currentlyActive
	p.state, p.statusMsg, p.lastActive = state, statusMsg, lastActive
	if changed {
		p.pos = e.pos.Add(1)
	}
	return changed
}

// setExplicit records whether the user's state was set explicitly (not
// online), so that their own syncs keep it.
func (e *ephemeral) setExplicit(userID string, explicit bool) {
	e.mu.Lock()
	if p, ok := e.presence[userID]; ok {
		p.explicit = explicit
	}
	e.mu.Unlock()
}

// syncing notes that a user is syncing with set_presence (default online).
func (e *ephemeral) syncing(userID, setPresence string) bool {
	if setPresence == "" {
		setPresence = "online"
	}
	e.mu.Lock()
	p, ok := e.presence[userID]
	if ok {
		p.lastSync = time.Now()
	}
	e.mu.Unlock()
	if setPresence == "offline" {
		return false
	}
	if ok && (p.state == setPresence || (p.explicit && setPresence == "online")) {
		// Keep the user active without a new position on every sync.
		e.mu.Lock()
		p.lastActive = time.Now()
		e.mu.Unlock()
		return false
	}
	changed := e.setPresence(userID, setPresence, nil, setPresence == "online")
	e.mu.Lock()
	e.presence[userID].lastSync = time.Now()
	e.mu.Unlock()
	return changed
}

// decayPresence applies the timeouts, returning users whose state changed.
func (e *ephemeral) decayPresence(now time.Time) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var changed []string
	for u, p := range e.presence {
		next := p.state
		if p.state == "online" && now.Sub(p.lastActive) > idleToUnavailable {
			next = "unavailable"
		}
		if p.state != "offline" && !p.lastSync.IsZero() && now.Sub(p.lastSync) > syncToOffline {
			next = "offline"
			p.explicit = false // a new session starts online
		}
		if next != p.state {
			p.state = next
			p.pos = e.pos.Add(1)
			changed = append(changed, u)
		}
	}
	return changed
}

// presenceOf returns a user's presence content.
func (e *ephemeral) presenceOf(userID string) (map[string]any, int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p, ok := e.presence[userID]
	if !ok {
		return map[string]any{"presence": "offline"}, 0
	}
	return p.content(), p.pos
}

func (p *presence) content() map[string]any {
	c := map[string]any{"presence": p.state}
	if !p.lastActive.IsZero() {
		ago := time.Since(p.lastActive)
		c["last_active_ago"] = ago.Milliseconds()
		c["currently_active"] = p.state == "online" && ago < currentlyActive
	}
	if p.statusMsg != nil {
		c["status_msg"] = *p.statusMsg
	}
	return c
}

// presenceSince returns presence contents of the given users changed after pos.
func (e *ephemeral) presenceSince(users map[string]bool, pos int64) map[string]map[string]any {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]map[string]any{}
	for u := range users {
		if p, ok := e.presence[u]; ok && p.pos > pos {
			out[u] = p.content()
		}
	}
	return out
}
