package syncapi

import (
	"sync"
)

// changeIndex remembers, since the process started, the last stream
// position at which each room got events or receipts and each user got a
// membership change or account data. An incremental sync whose `since` is
// at or after the start position asks it instead of the database whether
// anything can have changed, and skips the queries when nothing did.
//
// It is updated before a write commits (when its position is reserved), so
// it never lags what a reader can see; a write that then fails leaves an
// entry that only costs a query finding nothing.
type changeIndex struct {
	mu        sync.Mutex
	start     int64
	roomPos   map[string]int64
	rcptPos   map[string]int64
	userPos   map[string]int64
	memberPos map[string]int64 // room -> last membership change
	pending   map[string]int   // user ID, or "!"+room ID for receipts -> writes whose position is not known yet
	ignoreSet map[string]ignoreEntry
}

type ignoreEntry struct {
	pos     int64
	ignored map[string]bool
}

func newChangeIndex(start int64) *changeIndex {
	return &changeIndex{start: start, roomPos: map[string]int64{}, rcptPos: map[string]int64{},
		userPos: map[string]int64{}, memberPos: map[string]int64{}, pending: map[string]int{}, ignoreSet: map[string]ignoreEntry{}}
}

func bump(m map[string]int64, k string, pos int64) {
	if pos > m[k] {
		m[k] = pos
	}
}

// room records an event at pos in a room; membershipOf names the user
// whose membership it changes ("" if none).
func (x *changeIndex) room(roomID string, pos int64, membershipOf string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	bump(x.roomPos, roomID, pos)
	if membershipOf != "" {
		bump(x.userPos, membershipOf, pos)
		bump(x.memberPos, roomID, pos)
	}
}

// membersChanged reports whether a room's membership may have changed
// after since (true when the index cannot tell).
func (x *changeIndex) membersChanged(roomID string, since int64) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return since < x.start || x.memberPos[roomID] > since
}

// pendingReceipt and settleReceipt bracket a receipt write, as
// pendingUser and settleUser do for account data.
func (x *changeIndex) pendingReceipt(roomID string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.pending["!"+roomID]++
}

func (x *changeIndex) settleReceipt(roomID string, pos int64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.pending["!"+roomID]--; x.pending["!"+roomID] <= 0 {
		delete(x.pending, "!"+roomID)
	}
	bump(x.rcptPos, roomID, pos)
}

// pendingUser marks a user's data as about to change at a position not yet
// known: until settleUser, every sync of the user queries.
func (x *changeIndex) pendingUser(userID string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.pending[userID]++
}

// settleUser ends a pending write; pos is where it committed (0 if it failed).
func (x *changeIndex) settleUser(userID string, pos int64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.pending[userID]--; x.pending[userID] <= 0 {
		delete(x.pending, userID)
	}
	bump(x.userPos, userID, pos)
}

func (x *changeIndex) known(since int64) bool { return since >= x.start }

// roomChanged reports whether a room may have events after since.
func (x *changeIndex) roomChanged(roomID string, since int64) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return !x.known(since) || x.roomPos[roomID] > since
}

// receiptsChanged reports whether a room may have receipts after since.
func (x *changeIndex) receiptsChanged(roomID string, since int64) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return !x.known(since) || x.pending["!"+roomID] > 0 || x.rcptPos[roomID] > since
}

// userChanged reports whether a user may have memberships or account data
// after since.
func (x *changeIndex) userChanged(userID string, since int64) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return !x.known(since) || x.pending[userID] > 0 || x.userPos[userID] > since
}

// ignored returns the cached ignored-user set if the user's data has not
// changed since it was cached.
func (x *changeIndex) ignored(userID string) (map[string]bool, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	e, ok := x.ignoreSet[userID]
	if !ok || x.userPos[userID] > e.pos || x.pending[userID] > 0 {
		return nil, false
	}
	return e.ignored, true
}

func (x *changeIndex) setIgnored(userID string, asOf int64, set map[string]bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.ignoreSet[userID] = ignoreEntry{pos: asOf, ignored: set}
}
