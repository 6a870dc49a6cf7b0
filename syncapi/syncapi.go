// Package syncapi serves /sync, /messages, /context, typing, receipts and
// presence, and wakes long-polling clients when something arrives.
package syncapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/internal/lru"
	"repeater/internal/pushrules"
	"repeater/roomserver"
	"repeater/storage"
)

// Sync is the sync API.
type Sync struct {
	db         *storage.DB
	rs         *roomserver.Server
	notifier   *Notifier
	eph        *ephemeral
	log        *slog.Logger
	presenceOn bool
	stopping   chan struct{}
	// sentMembers remembers, per user|device|room, which member events a
	// device was sent, so lazy-loading syncs can leave out redundant ones.
	sentMembers *lru.Cache[string, map[string]string]
	filters     *lru.Cache[string, *Filter]        // localpart|filter ID -> parsed filter
	unread      *lru.Cache[string, unreadCount]    // user|room -> counts
	threaded    *lru.Cache[string, threadedUnread] // user|room|t -> per-thread counts
	rules       pushrules.Cache
	stopOnce    sync.Once
	fed         Federation
	badges      BadgeUpdater
	serverName  string
}

// Federation is what sync needs of the federation API (nil: none): sending
// our users' ephemeral events to the other servers concerned, and fetching
// room history this server lacks.
type Federation interface {
	Backfill(ctx context.Context, roomID string, beforeDepth int64, limit int) (int, error)
	Typing(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration)
	Receipt(ctx context.Context, roomID, receiptType, userID, eventID string, ts int64)
	Presence(ctx context.Context, userID string, content map[string]any)
}

// BadgeUpdater is told when a user's read receipt moved, so their phones'
// unread badges can be updated (the push worker; nil: none).
type BadgeUpdater interface {
	ReadReceiptMoved(localpart string)
}

// Stop makes waiting long-polls return at once (used at shutdown).
func (s *Sync) Stop() { s.stopOnce.Do(func() { close(s.stopping) }) }

// New constructs the sync API.
func New(db *storage.DB, rs *roomserver.Server, notifier *Notifier, presence bool, fed Federation, badges BadgeUpdater, serverName string, log *slog.Logger) *Sync {
	return &Sync{db: db, rs: rs, notifier: notifier, eph: newEphemeral(), log: log, presenceOn: presence, stopping: make(chan struct{}),
		fed: fed, badges: badges, serverName: serverName,
		sentMembers: lru.New[string, map[string]string](4096), filters: lru.New[string, *Filter](1024),
		unread: lru.New[string, unreadCount](8192), threaded: lru.New[string, threadedUnread](8192)}
}

// Run expires typing notifications and decays presence until ctx ends.
func (s *Sync) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, room := range s.eph.expireTyping(now) {
				if members, err := s.rs.MembersWith(ctx, room, spec.Join); err == nil {
					s.notifier.Wake(members...)
				}
			}
			n++
			if n%15 == 0 && s.presenceOn {
				for _, u := range s.eph.decayPresence(now) {
					s.wakeSharing(ctx, u)
				}
			}
		}
	}
}

// isLocal reports whether a user is on this server.
func (s *Sync) isLocal(userID string) bool { return roomserver.ServerOf(userID) == s.serverName }

// wakeSharing wakes everyone who shares a room with userID (and them), and
// tells other servers sharing a room when userID is ours.
func (s *Sync) wakeSharing(ctx context.Context, userID string) {
	if s.fed != nil && s.isLocal(userID) {
		c, _ := s.eph.presenceOf(userID)
		s.fed.Presence(ctx, userID, c)
	}
	users, err := s.rs.SharingUsers(ctx, userID)
	if err != nil {
		return
	}
	s.notifier.Wake(users...)
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// Routes registers the sync API on a /_matrix/client/{v3,r0} router.
func (s *Sync) Routes(c *mux.Router, authn *auth.Authenticator) {
	// Every sync endpoint is open to guests (spec: "Guest access").
	authed := func(h httputil.Handler) http.Handler { return authn.AllowGuests(httputil.JSON(s.log, h)) }
	{
		c.Handle("/sync", authed(s.sync)).Methods("GET")
		c.Handle("/notifications", authed(s.notifications)).Methods("GET")
		c.Handle("/events", authed(s.events)).Methods("GET")
		c.Handle("/rooms/{roomId}/messages", authed(s.messages)).Methods("GET")
		c.Handle("/rooms/{roomId}/context/{eventId}", authed(s.eventContext)).Methods("GET")
		c.Handle("/rooms/{roomId}/typing/{userId}", authed(s.typing)).Methods("PUT")
		c.Handle("/rooms/{roomId}/receipt/{receiptType}/{eventId}", authed(s.receipt)).Methods("POST")
		c.Handle("/rooms/{roomId}/read_markers", authed(s.readMarkers)).Methods("POST")
		c.Handle("/presence/{userId}/status", authed(s.getPresence)).Methods("GET")
		c.Handle("/presence/{userId}/status", authed(s.putPresence)).Methods("PUT")
	}
}
