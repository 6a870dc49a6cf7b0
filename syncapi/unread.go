package syncapi

import (
	"context"
	"strings"

	"github.com/tidwall/gjson"

	"repeater/storage"
)

// maxUnread caps the counts: past it clients show "99+" anyway, and the
// count must stay cheap on every sync.
const maxUnread = 100

// unreadCounts counts the events after the user's read receipt that the
// spec's default push rules notify for ("Predefined Rules"): messages and
// encrypted events from others, not notices or edits; highlights are
// mentions of the user (m.mentions, or their localpart or display name in
// the body) and @room mentions. Custom rules come with push support.
//
// Counts are kept per user and room with the position they were counted up
// to, so a sync only evaluates the events that arrived since; a moved read
// receipt starts the count afresh.
//
// fresh, when non-nil, holds every event of the room in (from, to]: the
// unfiltered, unlimited timeline of this sync, which saves the query when
// the cached count reaches up to from.
func (s *Sync) unreadCounts(ctx context.Context, roomID, userID, localpart string, from, to int64, fresh []*storage.Event) (notify, highlight int) {
	key := userID + "|" + roomID
	c, ok := s.unread.Get(key)
	receipt := c.receipt
	if !ok || s.notifier.idx.receiptsChanged(roomID, c.upto) {
		// The read receipt may have moved: look it up.
		var err error
		if receipt, err = s.db.ReadReceiptPos(ctx, roomID, userID); err != nil {
			return 0, 0
		}
	}
	if !ok || c.receipt != receipt || c.upto > to {
		c = unreadCount{receipt: receipt, upto: receipt}
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
		displayName := ""
		if me, err := s.rs.CurrentStateEvent(ctx, roomID, "m.room.member", userID); err == nil && me != nil {
			displayName = gjson.GetBytes(me.JSON, "content.displayname").Str
		}
		for _, e := range evs {
			n, h := notifies(e, userID, localpart, displayName)
			if n {
				c.notify++
			}
			if h {
				c.highlight++
			}
		}
		c.notify, c.highlight, c.upto = min(c.notify, maxUnread), min(c.highlight, maxUnread), to
		s.unread.Put(key, c)
	}
	return c.notify, c.highlight
}

// unreadCount is a cached count up to a stream position.
type unreadCount struct {
	receipt, upto     int64
	notify, highlight int
}

func notifies(e *storage.Event, userID, localpart, displayName string) (notify, highlight bool) {
	c := gjson.GetBytes(e.JSON, "content")
	switch e.Type {
	case "m.room.message":
		if c.Get("msgtype").Str == "m.notice" || c.Get(`m\.relates_to.rel_type`).Str == "m.replace" {
			return false, false
		}
	case "m.room.encrypted":
		return true, false
	case "m.room.member":
		return c.Get("membership").Str == "invite" && e.StateKey != nil && *e.StateKey == userID, false
	default:
		return false, false
	}
	if m := c.Get(`m\.mentions`); m.Exists() {
		for _, u := range m.Get("user_ids").Array() {
			if u.Str == userID {
				return true, true
			}
		}
		return true, m.Get("room").Bool()
	}
	body := strings.ToLower(c.Get("body").Str)
	if containsWord(body, strings.ToLower(localpart)) || (displayName != "" && containsWord(body, strings.ToLower(displayName))) {
		return true, true
	}
	return true, false
}

// containsWord reports whether word occurs in s with no letter or digit
// either side.
func containsWord(s, word string) bool {
	if word == "" {
		return false
	}
	for i := 0; ; {
		j := strings.Index(s[i:], word)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(word)
		if (start == 0 || !isWordByte(s[start-1])) && (end == len(s) || !isWordByte(s[end])) {
			return true
		}
		i = start + 1
	}
}

func isWordByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '_' || b >= 0x80
}
