package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/httputil"
	"repeater/roomserver"
	"repeater/storage"
)

// Server notices (Client-Server API, "Server Notices"): each local user
// has one notices room, made by the system user (server_notices in the
// config) and tagged m.server_notice for them. The user is invited, not
// joined; rejecting that invite is refused (roomserver.CheckSelfLeave).
// If they leave after joining, the next notice invites them back.

// noticeTag is the room tag clients recognise the notices room by.
const noticeTag = "m.server_notice"

// SendServerNotice sends a notice (an m.room.message content) to a local
// user and returns its event ID.
func (a *API) SendServerNotice(ctx context.Context, userID string, content json.RawMessage) (string, error) {
	if !gjson.ValidBytes(content) || !gjson.ParseBytes(content).IsObject() {
		return "", httputil.BadJSON("content must be an object")
	}
	acct, err := a.account(ctx, userID)
	if err != nil {
		return "", err
	}
	sysLP := a.cfg.ServerNotices.SystemUser
	if acct.Localpart == sysLP {
		return "", httputil.InvalidParam("Cannot send server notices to the server notices user")
	}
	if acct.Deactivated || acct.IsGuest {
		return "", httputil.InvalidParam("User is deactivated or a guest")
	}
	a.noticeMu.Lock()
	defer a.noticeMu.Unlock()
	sys := a.userID(sysLP)
	if err := a.ensureSystemUser(ctx); err != nil {
		return "", err
	}
	roomID, err := a.noticeRoom(ctx, acct.Localpart, userID, sys)
	if err != nil {
		return "", err
	}
	ev, err := a.rs.Send(ctx, roomID, sys, "m.room.message", nil, content, roomserver.SendOpts{Localpart: sysLP})
	if err != nil {
		return "", err
	}
	return ev.EventID, nil
}

// ensureSystemUser makes the system user's account (no password: it
// cannot log in) if it is missing.
func (a *API) ensureSystemUser(ctx context.Context) error {
	lp := a.cfg.ServerNotices.SystemUser
	acct, err := a.db.GetAccount(ctx, lp)
	if err == nil && (acct.PasswordHash != "" || acct.Deactivated) {
		// Someone's account: notices must not come from (or be
		// controlled by) a user.
		a.log.Error("server_notices.system_user names a user's account; configure another", "user", lp)
		return httputil.Err(500, "M_UNKNOWN", "Server notices are misconfigured")
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	err = a.db.CreateAccount(ctx, storage.Account{Localpart: lp, DisplayName: a.cfg.ServerNotices.DisplayName})
	if errors.Is(err, storage.ErrConflict) {
		return nil
	}
	return err
}

// noticeRoom returns the user's notices room with the user joined or
// invited: the existing one, or a new one.
func (a *API) noticeRoom(ctx context.Context, lp, userID, sys string) (string, error) {
	roomID, err := a.db.ServerNoticeRoom(ctx, lp)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return "", err
	}
	if err == nil {
		if m, err := a.rs.Membership(ctx, roomID, sys); err == nil && m == spec.Join {
			switch m, err := a.rs.Membership(ctx, roomID, userID); {
			case err != nil:
				return "", err
			case m == spec.Join || m == spec.Invite:
				return roomID, nil
			case m != spec.Ban:
				if _, err := a.rs.ChangeMembership(ctx, roomID, sys, userID, spec.Invite, "", nil); err != nil {
					return "", err
				}
				return roomID, a.tagNoticeRoom(ctx, lp, userID, roomID)
			}
		}
		// The room is gone (deleted) or unusable: make another.
	}
	name := a.cfg.ServerNotices.RoomName
	roomID, err = a.rs.CreateRoom(ctx, sys, roomserver.CreatorProfile{DisplayName: a.cfg.ServerNotices.DisplayName},
		&roomserver.CreateRoomRequest{
			Preset: "private_chat", Name: &name, Invite: []string{userID},
			// Only the system user speaks; users may read, and leave.
			PowerLevelContentOverride: json.RawMessage(`{"events_default":100,"invite":100}`),
		}, "")
	if err != nil {
		return "", err
	}
	if err := a.db.SetServerNoticeRoom(ctx, lp, roomID); err != nil {
		return "", err
	}
	return roomID, a.tagNoticeRoom(ctx, lp, userID, roomID)
}

// tagNoticeRoom adds the m.server_notice tag to the user's tags of the
// room.
func (a *API) tagNoticeRoom(ctx context.Context, lp, userID, roomID string) error {
	tags := map[string]json.RawMessage{}
	if b, err := a.db.GetAccountData(ctx, lp, roomID, "m.tag"); err == nil {
		var cur struct {
			Tags map[string]json.RawMessage `json:"tags"`
		}
		if json.Unmarshal(b, &cur) == nil && cur.Tags != nil {
			tags = cur.Tags
		}
	}
	if _, ok := tags[noticeTag]; ok {
		return nil
	}
	tags[noticeTag] = json.RawMessage(`{}`)
	content, err := json.Marshal(map[string]any{"tags": tags})
	if err != nil {
		return err
	}
	if a.notify != nil {
		a.notify.OnUserDataPending(userID)
	}
	pos, err := a.db.PutAccountData(ctx, lp, roomID, "m.tag", content)
	if a.notify != nil {
		a.notify.OnUserEvent(userID, pos)
	}
	return err
}

// sendServerNotice handles POST /v1/send_server_notice and PUT
// /v1/send_server_notice/{txnId} {user_id, content}.
func (a *API) sendServerNotice(r *http.Request) (any, error) {
	body, err := httputil.ReadBody(r, httputil.MaxBody, false)
	if err != nil {
		return nil, err
	}
	user := gjson.GetBytes(body, "user_id")
	if user.Type != gjson.String {
		return nil, httputil.MissingParam("Missing user_id")
	}
	content := gjson.GetBytes(body, "content")
	if !content.IsObject() {
		return nil, httputil.MissingParam("Missing content (an object)")
	}
	if t := gjson.GetBytes(body, "type"); t.Exists() && t.Str != "m.room.message" {
		return nil, httputil.InvalidParam("Only m.room.message notices are supported")
	}
	id, err := a.SendServerNotice(r.Context(), user.Str, json.RawMessage(content.Raw))
	if err != nil {
		return nil, err
	}
	return map[string]any{"event_id": id}, nil
}
