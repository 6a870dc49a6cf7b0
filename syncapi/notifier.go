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
}

// NewNotifier returns a notifier.
func NewNotifier() *Notifier { return &Notifier{users: map[string]chan struct{}{}} }

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

// OnRoomEvent implements roomserver.Notifier.
func (n *Notifier) OnRoomEvent(roomID string, pos int64, users []string) { n.Wake(users...) }

// OnUserEvent implements clientapi.UserNotifier.
func (n *Notifier) OnUserEvent(userID string, pos int64) { n.Wake(userID) }
