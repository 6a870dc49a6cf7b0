package syncapi

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/storage"
)

// typing handles PUT /rooms/{roomId}/typing/{userId}.
func (s *Sync) typing(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	v := httputil.Vars(r)
	if v["userId"] != d.UserID {
		return nil, httputil.Forbidden("You may only set your own typing state")
	}
	body, err := httputil.ReadBody(r, httputil.MaxBody, false)
	if err != nil {
		return nil, err
	}
	t := gjson.GetBytes(body, "typing")
	if t.Type != gjson.True && t.Type != gjson.False {
		return nil, httputil.BadJSON("typing must be a boolean")
	}
	roomID := v["roomId"]
	if m, err := s.rs.Membership(r.Context(), roomID, d.UserID); err != nil {
		return nil, err
	} else if m != spec.Join {
		return nil, httputil.Forbidden("You are not in this room")
	}
	timeout := time.Duration(gjson.GetBytes(body, "timeout").Int()) * time.Millisecond
	if timeout <= 0 || timeout > 2*time.Minute {
		timeout = 30 * time.Second
	}
	if s.eph.setTyping(roomID, d.UserID, t.Bool(), timeout) {
		s.wakeRoom(r, roomID)
	}
	if s.fed != nil {
		s.fed.Typing(r.Context(), roomID, d.UserID, t.Bool(), timeout)
	}
	return struct{}{}, nil
}

func (s *Sync) wakeRoom(r *http.Request, roomID string) {
	members, err := s.rs.MembersWith(r.Context(), roomID, spec.Join)
	if err == nil {
		s.notifier.Wake(members...)
	}
}

// receipt handles POST /rooms/{roomId}/receipt/{receiptType}/{eventId}.
func (s *Sync) receipt(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	v := httputil.Vars(r)
	body, err := httputil.ReadBody(r, httputil.MaxBody, true)
	if err != nil {
		return nil, err
	}
	typ := v["receiptType"]
	switch typ {
	case "m.read", "m.read.private":
	case "m.fully_read":
		if err := s.setFullyRead(r, d, v["roomId"], v["eventId"]); err != nil {
			return nil, err
		}
		return struct{}{}, nil
	default:
		return nil, httputil.InvalidParam("Unknown receipt type")
	}
	thread := gjson.GetBytes(body, "thread_id")
	if thread.Exists() && (thread.Type != gjson.String || thread.Str == "") {
		return nil, httputil.InvalidParam("thread_id must be a non-empty string")
	}
	return struct{}{}, s.putReceipt(r, d, v["roomId"], typ, v["eventId"], thread.Str)
}

func (s *Sync) putReceipt(r *http.Request, d *auth.Device, roomID, typ, eventID, thread string) error {
	if m, err := s.rs.Membership(r.Context(), roomID, d.UserID); err != nil {
		return err
	} else if m != spec.Join {
		return httputil.Forbidden("You are not in this room")
	}
	e, err := s.db.EventByID(r.Context(), eventID)
	if err != nil || e.RoomID != roomID {
		return httputil.NotFound("Event not found")
	}
	s.notifier.idx.pendingReceipt(roomID)
	pos, err := s.db.PutReceipt(r.Context(), storage.Receipt{RoomID: roomID, UserID: d.UserID, Type: typ, ThreadID: thread, EventID: eventID, TS: time.Now().UnixMilli()})
	s.notifier.idx.settleReceipt(roomID, pos)
	if err != nil {
		return err
	}
	if s.badges != nil {
		s.badges.ReadReceiptMoved(d.Localpart)
	}
	if typ == "m.read.private" {
		s.notifier.Wake(d.UserID)
	} else {
		s.wakeRoom(r, roomID)
		if s.fed != nil && thread == "" {
			s.fed.Receipt(r.Context(), roomID, typ, d.UserID, eventID, time.Now().UnixMilli())
		}
	}
	return nil
}

func (s *Sync) setFullyRead(r *http.Request, d *auth.Device, roomID, eventID string) error {
	if m, err := s.rs.Membership(r.Context(), roomID, d.UserID); err != nil {
		return err
	} else if m != spec.Join {
		return httputil.Forbidden("You are not in this room")
	}
	if e, err := s.db.EventByID(r.Context(), eventID); err != nil || e.RoomID != roomID {
		return httputil.NotFound("Event not found")
	}
	content := []byte(`{"event_id":` + quote(eventID) + `}`)
	s.notifier.OnUserDataPending(d.UserID)
	pos, err := s.db.PutAccountData(r.Context(), d.Localpart, roomID, "m.fully_read", content)
	s.notifier.OnUserEvent(d.UserID, pos)
	return err
}

// readMarkers handles POST /rooms/{roomId}/read_markers.
func (s *Sync) readMarkers(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	roomID := httputil.Vars(r)["roomId"]
	body, err := httputil.ReadBody(r, httputil.MaxBody, true)
	if err != nil {
		return nil, err
	}
	if fr := gjson.GetBytes(body, "m\\.fully_read"); fr.Type == gjson.String {
		if err := s.setFullyRead(r, d, roomID, fr.Str); err != nil {
			return nil, err
		}
	}
	for _, typ := range []string{"m.read", "m.read.private"} {
		if ev := gjson.GetBytes(body, gjson.Escape(typ)); ev.Type == gjson.String {
			if err := s.putReceipt(r, d, roomID, typ, ev.Str, ""); err != nil {
				return nil, err
			}
		}
	}
	return struct{}{}, nil
}

// getPresence handles GET /presence/{userId}/status.
func (s *Sync) getPresence(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	target := httputil.Vars(r)["userId"]
	if _, err := spec.NewUserID(target, true); err != nil {
		return nil, httputil.InvalidParam("Invalid user ID")
	}
	if target != d.UserID {
		shares, err := s.db.SharesRoom(r.Context(), d.UserID, target)
		if err != nil {
			return nil, err
		}
		if !shares {
			return nil, httputil.Forbidden("You do not share a room with this user")
		}
	}
	c, _ := s.eph.presenceOf(target)
	return c, nil
}

// putPresence handles PUT /presence/{userId}/status.
func (s *Sync) putPresence(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	if httputil.Vars(r)["userId"] != d.UserID {
		return nil, httputil.Forbidden("You may only set your own presence")
	}
	body, err := httputil.ReadBody(r, httputil.MaxBody, false)
	if err != nil {
		return nil, err
	}
	state := gjson.GetBytes(body, "presence").Str
	if state != "online" && state != "offline" && state != "unavailable" {
		return nil, httputil.InvalidParam("presence must be online, unavailable or offline")
	}
	var msg *string
	if m := gjson.GetBytes(body, "status_msg"); m.Exists() {
		if m.Type != gjson.String && m.Type != gjson.Null {
			return nil, httputil.BadJSON("status_msg must be a string")
		}
		str := m.Str
		msg = &str
	}
	if !s.presenceOn {
		return struct{}{}, nil
	}
	changed := s.eph.setPresence(d.UserID, state, msg, state == "online")
	s.eph.setExplicit(d.UserID, state != "online")
	if changed {
		s.wakeSharing(r.Context(), d.UserID)
	}
	return struct{}{}, nil
}

func quote(s string) string {
	b, _ := jsonMarshal(s)
	return string(b)
}

// The federationapi.EDUReceiver side: ephemeral events from other servers.

// RemoteTyping records a remote user's typing state.
func (s *Sync) RemoteTyping(roomID, userID string, typing bool, timeout time.Duration) {
	ctx := context.Background()
	if m, err := s.rs.Membership(ctx, roomID, userID); err != nil || m != spec.Join {
		return
	}
	if s.eph.setTyping(roomID, userID, typing, timeout) {
		if members, err := s.rs.MembersWith(ctx, roomID, spec.Join); err == nil {
			s.notifier.Wake(members...)
		}
	}
}

// RemoteReceipt records a remote user's public read receipt.
func (s *Sync) RemoteReceipt(roomID, receiptType, userID, eventID string, data []byte) {
	if receiptType != "m.read" {
		return
	}
	ctx := context.Background()
	if m, err := s.rs.Membership(ctx, roomID, userID); err != nil || m != spec.Join {
		return
	}
	if e, err := s.db.EventByID(ctx, eventID); err != nil || e.RoomID != roomID {
		return
	}
	ts := gjson.GetBytes(data, "ts").Int()
	if ts <= 0 {
		ts = time.Now().UnixMilli()
	}
	s.notifier.idx.pendingReceipt(roomID)
	pos, err := s.db.PutReceipt(ctx, storage.Receipt{RoomID: roomID, UserID: userID, Type: receiptType, EventID: eventID, TS: ts})
	s.notifier.idx.settleReceipt(roomID, pos)
	if err == nil {
		if members, err := s.rs.MembersWith(ctx, roomID, spec.Join); err == nil {
			s.notifier.Wake(members...)
		}
	}
}

// RemotePresence records a remote user's presence.
func (s *Sync) RemotePresence(userID, presence, statusMsg string, lastActiveAgo int64, currentlyActive bool) {
	if !s.presenceOn || (presence != "online" && presence != "unavailable" && presence != "offline") {
		return
	}
	var msg *string
	if statusMsg != "" {
		msg = &statusMsg
	}
	if s.eph.setRemotePresence(userID, presence, msg, time.Now().Add(-time.Duration(lastActiveAgo)*time.Millisecond)) {
		s.wakeSharing(context.Background(), userID)
	}
}

// PresenceOf returns a user's presence content (for federation).
func (s *Sync) PresenceOf(userID string) map[string]any {
	c, _ := s.eph.presenceOf(userID)
	return c
}

// RemoteToDevice stores a to-device message from another server for a
// local device ("*": every device of the user) and wakes its sync.
func (s *Sync) RemoteToDevice(sender, evType, userID, deviceID string, content []byte) {
	ctx := context.Background()
	ids := []string{deviceID}
	if deviceID == "*" {
		ids = nil
		lp, _, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
		if ds, err := s.db.Devices(ctx, lp); err == nil {
			for _, d := range ds {
				ids = append(ids, d.DeviceID)
			}
		}
	}
	var msgs []storage.ToDeviceMessage
	for _, id := range ids {
		msgs = append(msgs, storage.ToDeviceMessage{UserID: userID, DeviceID: id, Sender: sender, Type: evType, Content: content})
	}
	if len(msgs) == 0 {
		return
	}
	s.notifier.OnUserDataPending(userID)
	pos, err := s.db.PutToDevice(ctx, msgs)
	if err != nil {
		pos = 0
	}
	s.notifier.OnUserEvent(userID, pos)
}

// RemoteDeviceListChanged records a remote user's device change and wakes
// the local users who share a room with them.
func (s *Sync) RemoteDeviceListChanged(userID string) {
	ctx := context.Background()
	users, err := s.rs.SharingUsers(ctx, userID)
	if err != nil {
		return
	}
	var locals []string
	for _, m := range users {
		if s.isLocal(m) {
			locals = append(locals, m)
		}
	}
	for _, u := range locals {
		s.notifier.OnUserDataPending(u)
	}
	pos, err := s.db.MarkDeviceListChange(ctx, userID)
	if err != nil {
		pos = 0
	}
	for _, u := range locals {
		s.notifier.OnUserEvent(u, pos)
	}
}
