package syncapi

import (
	"encoding/json"
	"strings"
)

// EventFilter is the spec's Filter / RoomEventFilter (Client-Server API,
// "Filtering").
type EventFilter struct {
	Limit                   *int     `json:"limit"`
	Types                   []string `json:"types"`
	NotTypes                []string `json:"not_types"`
	Senders                 []string `json:"senders"`
	NotSenders              []string `json:"not_senders"`
	Rooms                   []string `json:"rooms"`
	NotRooms                []string `json:"not_rooms"`
	LazyLoadMembers         bool     `json:"lazy_load_members"`
	IncludeRedundantMembers bool     `json:"include_redundant_members"`
	ContainsURL             *bool    `json:"contains_url"`
	// UnreadThreadNotifications asks for notification counts per thread
	// (Client-Server API, "Receiving notifications").
	UnreadThreadNotifications bool `json:"unread_thread_notifications"`
}

// RoomFilter is the "room" part of a sync filter.
type RoomFilter struct {
	Rooms        []string    `json:"rooms"`
	NotRooms     []string    `json:"not_rooms"`
	IncludeLeave bool        `json:"include_leave"`
	Timeline     EventFilter `json:"timeline"`
	State        EventFilter `json:"state"`
	Ephemeral    EventFilter `json:"ephemeral"`
	AccountData  EventFilter `json:"account_data"`
}

// Filter is a whole sync filter.
type Filter struct {
	Room        RoomFilter  `json:"room"`
	Presence    EventFilter `json:"presence"`
	AccountData EventFilter `json:"account_data"`
	EventFields []string    `json:"event_fields"`
	EventFormat string      `json:"event_format"`
}

func parseFilter(b []byte) (*Filter, error) {
	f := &Filter{}
	if len(b) == 0 {
		return f, nil
	}
	if err := json.Unmarshal(b, f); err != nil {
		return nil, err
	}
	return f, nil
}

// typeMatches matches a type against a pattern with '*' wildcards.
func typeMatches(pattern, typ string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == typ
	}
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(typ, parts[0]) {
		return false
	}
	typ = typ[len(parts[0]):]
	for i, p := range parts[1:] {
		if i == len(parts)-2 {
			return strings.HasSuffix(typ, p)
		}
		j := strings.Index(typ, p)
		if j < 0 {
			return false
		}
		typ = typ[j+len(p):]
	}
	return true
}

func anyMatch(patterns []string, v string) bool {
	for _, p := range patterns {
		if typeMatches(p, v) {
			return true
		}
	}
	return false
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// Allows reports whether an event passes the filter's type/sender/room rules.
func (f *EventFilter) Allows(typ, sender, roomID string) bool {
	if f.Types != nil && !anyMatch(f.Types, typ) {
		return false
	}
	if anyMatch(f.NotTypes, typ) {
		return false
	}
	if f.Senders != nil && !contains(f.Senders, sender) {
		return false
	}
	if contains(f.NotSenders, sender) {
		return false
	}
	if f.Rooms != nil && !contains(f.Rooms, roomID) {
		return false
	}
	return !contains(f.NotRooms, roomID)
}

// LimitOr returns the filter's limit or def, bounded.
func (f *EventFilter) LimitOr(def, maxLimit int) int {
	if f.Limit == nil {
		return def
	}
	return max(0, min(*f.Limit, maxLimit))
}

// AllowsRoom applies the room filter's rooms/not_rooms.
func (f *RoomFilter) AllowsRoom(roomID string) bool {
	if f.Rooms != nil && !contains(f.Rooms, roomID) {
		return false
	}
	return !contains(f.NotRooms, roomID)
}
