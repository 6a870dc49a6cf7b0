package syncapi

import (
	"context"

	"github.com/tidwall/gjson"

	"repeater/internal/pushrules"
	"repeater/storage"
)

// maxUnread caps the counts: past it clients show "99+" anyway, and the
// count must stay cheap on every sync.
const maxUnread = 100

// unreadCounts counts the events after the user's read receipt that the
// user's push rules (Client-Server API, "Push Rules"; evaluated by
// internal/pushrules, as the push worker does for notifications) say to
// notify for, and of those the ones to highlight.
//
// Counts are kept per user and room with the position they were counted up
// to, so a sync only evaluates the events that arrived since; a moved read
// receipt or changed rules start the count afresh.
//
// fresh, when non-nil, holds every event of the room in (from, to]: the
// unfiltered, unlimited timeline of this sync, which saves the query when
// the cached count reaches up to from.
func (s *Sync) unreadCounts(ctx context.Context, roomID, userID, localpart string, from, to int64, fresh []*storage.Event) (notify, highlight int) {
	doc, err := s.db.PushRules(ctx, localpart)
	if err != nil {
		return 0, 0
	}
	rules := s.rules.Get(userID, doc)
	key := userID + "|" + roomID
	c, ok := s.unread.Get(key)
	receipt := c.receipt
	if !ok || s.notifier.idx.receiptsChanged(roomID, c.upto) {
		// The read receipt may have moved: look it up.
		if receipt, err = s.db.ReadReceiptPos(ctx, roomID, userID); err != nil {
			return 0, 0
		}
	}
	if !ok || c.receipt != receipt || c.upto > to || c.rules != rules {
		c = unreadCount{receipt: receipt, upto: receipt, rules: rules}
	}
	if c.upto < to {
		var evs []*storage.Event
		if fresh != nil && c.upto == from {
			for _, e := range fresh {
				if e.Sender != userID {
					evs = append(evs, e)
				}
			}
		} else {
			var err error
			if evs, err = s.db.EventsFromOthers(ctx, roomID, userID, c.upto, to, maxUnread); err != nil {
				return 0, 0
			}
		}
		if len(evs) > 0 {
			env := s.rs.PushEnv(ctx, roomID, userID)
			for _, e := range evs {
				res := rules.Evaluate(e.JSON, env)
				if res.Notify {
					c.notify++
				}
				if res.Highlight {
					c.highlight++
				}
			}
		}
		c.notify, c.highlight, c.upto = min(c.notify, maxUnread), min(c.highlight, maxUnread), to
		s.unread.Put(key, c)
	}
	return c.notify, c.highlight
}

// unreadCount is a cached count up to a stream position, under one set of
// push rules.
type unreadCount struct {
	receipt, upto     int64
	notify, highlight int
	rules             *pushrules.Ruleset
}

// counts is one notification and highlight count.
type counts struct{ notify, highlight int }

// threadedUnread is a cached per-thread count up to a stream position,
// under one set of receipts and rules.
type threadedUnread struct {
	receipts map[string]int64
	upto     int64
	rules    *pushrules.Ruleset
	main     counts
	threads  map[string]counts
}

// threadedUnreadCounts counts notifications separately for the main
// timeline and for each thread, for clients that asked for
// unread_thread_notifications (Client-Server API, "Receiving
// notifications", and "Threaded read receipts"): an event in a thread is
// read once an unthreaded receipt or that thread's receipt reaches it; any
// other event once an unthreaded or a "main" receipt does. A thread's root
// belongs to the main timeline.
func (s *Sync) threadedUnreadCounts(ctx context.Context, roomID, userID, localpart string, to int64) (counts, map[string]counts) {
	doc, err := s.db.PushRules(ctx, localpart)
	if err != nil {
		return counts{}, nil
	}
	rules := s.rules.Get(userID, doc)
	key := userID + "|" + roomID + "|t"
	c, ok := s.threaded.Get(key)
	receipts := c.receipts
	if !ok || s.notifier.idx.receiptsChanged(roomID, c.upto) {
		if receipts, err = s.db.ReadReceiptPositions(ctx, roomID, userID); err != nil {
			return counts{}, nil
		}
	}
	if !ok || !sameReceipts(c.receipts, receipts) || c.upto > to || c.rules != rules {
		c = threadedUnread{receipts: receipts, upto: receipts[""], rules: rules}
	}
	if c.upto < to {
		evs, err := s.db.EventsFromOthers(ctx, roomID, userID, c.upto, to, 1000)
		if err != nil {
			return counts{}, nil
		}
		threads := make(map[string]counts, len(c.threads))
		for k, v := range c.threads {
			threads[k] = v
		}
		c.threads = threads
		var env pushrules.Env
		for _, e := range evs {
			thread := "main"
			if rel := gjson.GetBytes(e.JSON, `content.m\.relates_to`); rel.Get("rel_type").Str == "m.thread" && rel.Get("event_id").Str != "" {
				thread = rel.Get("event_id").Str
			}
			if e.StreamPos <= max(receipts[""], receipts[thread]) {
				continue
			}
			if env.MemberCount == nil {
				env = s.rs.PushEnv(ctx, roomID, userID)
			}
			res := rules.Evaluate(e.JSON, env)
			if !res.Notify {
				continue
			}
			b := c.main
			if thread != "main" {
				b = c.threads[thread]
			}
			b.notify++
			if res.Highlight {
				b.highlight++
			}
			if thread == "main" {
				c.main = b
			} else {
				c.threads[thread] = b
			}
		}
		c.upto = to
		s.threaded.Put(key, c)
	}
	return c.main, c.threads
}

func sameReceipts(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
