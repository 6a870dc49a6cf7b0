package syncapi

import (
	"sync"
)

// Notifier wakes long-polling /sync requests. Each user has a channel that
// is closed (and replaced) when something for them happens; a request takes
// the channel before it looks for data, so nothing committed in between is
// missed.
type Notifier struct {
	mu    sync.Mutex
	users map[string]chan struct{}
	idx   *changeIndex
}

// NewNotifier returns a notifier; startPos is the stream position at
// start-up (see changeIndex).
func NewNotifier(startPos int64) *Notifier {
	return &Notifier{users: map[string]chan struct{}{}, idx: newChangeIndex(startPos)}
}

// Listen returns the channel that is closed on the user's next wake-up.
func (n *Notifier) Listen(userID string) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	ch, ok := n.users[userID]
	if !ok {
		ch = make(chan struct{})
		n.users[userID] = ch
	}
	return ch
}

// Wake wakes the given users.
func (n *Notifier) Wake(users ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, u := range users {
		if ch, ok := n.users[u]; ok {
			close(ch)
			delete(n.users, u)
		}
	}
}

// OnRoomEventPending implements roomserver.Notifier: an event will commit
// at pos (membershipOf: whose membership it changes, if anyone's).
func (n *Notifier) OnRoomEventPending(roomID string, pos int64, membershipOf string) {
	n.idx.room(roomID, pos, membershipOf)
}

// OnRoomEvent implements roomserver.Notifier: the event committed.
func (n *Notifier) OnRoomEvent(roomID string, pos int64, users []string) { n.Wake(users...) }

// OnUserDataPending implements clientapi.UserNotifier: the user's account
// data is about to change.
func (n *Notifier) OnUserDataPending(userID string) { n.idx.pendingUser(userID) }

// OnUserEvent implements clientapi.UserNotifier: the change committed at pos
// (or failed, pos 0).
func (n *Notifier) OnUserEvent(userID string, pos int64) {
	n.idx.settleUser(userID, pos)
	n.Wake(userID)
}
