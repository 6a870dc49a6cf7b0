package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/httputil"
	"repeater/roomserver"
	"repeater/storage"
)

// invite handles PUT /v1 and /v2 invite/{roomId}/{eventId} (spec:
// "Inviting to a room"): a remote server invites one of our users. We sign
// the event and record it; the user sees it in /sync with the room's
// stripped state.
func (a *API) invite(v1 bool) fedHandler {
	return func(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
		v := httputil.Vars(r)
		roomID, eventID := v["roomId"], v["eventId"]
		evJSON, ver, stripped := body, gomatrixserverlib.RoomVersionV1, []byte("[]")
		if !v1 {
			evJSON = []byte(gjson.GetBytes(body, "event").Raw)
			ver = gomatrixserverlib.RoomVersion(gjson.GetBytes(body, "room_version").Str)
			if st := gjson.GetBytes(body, "invite_room_state"); st.IsArray() {
				stripped = []byte(st.Raw)
			}
		} else if st := gjson.GetBytes(body, "unsigned.invite_room_state"); st.IsArray() {
			stripped = []byte(st.Raw)
		}
		if !roomserver.IsSupportedVersion(ver) {
			return nil, &httputil.Error{Status: 400, Code: "M_INCOMPATIBLE_ROOM_VERSION",
				Message: "Room version not supported here", Extra: map[string]any{"room_version": string(ver)}}
		}
		impl, err := gomatrixserverlib.GetRoomVersion(ver)
		if err != nil {
			return nil, err
		}
		pdu, err := impl.NewEventFromUntrustedJSON(evJSON)
		if err != nil {
			return nil, httputil.BadJSON("Bad event: " + err.Error())
		}
		m, _ := pdu.Membership()
		switch {
		case pdu.EventID() != eventID || pdu.RoomID().String() != roomID:
			return nil, httputil.BadJSON("Event does not match the request")
		case pdu.Type() != spec.MRoomMember || pdu.StateKey() == nil || m != spec.Invite:
			return nil, httputil.BadJSON("Not an invite")
		case roomserver.ServerOf(*pdu.StateKey()) != string(a.serverName):
			return nil, httputil.BadJSON("The invited user is not on this server")
		case roomserver.ServerOf(string(pdu.SenderID())) != string(origin):
			return nil, httputil.Forbidden("The inviter is not on the requesting server")
		}
		if err := a.checkACL(r.Context(), roomID, origin); err != nil {
			return nil, err
		}
		uid, _ := spec.NewUserID(*pdu.StateKey(), true)
		if uid == nil {
			return nil, httputil.BadJSON("Bad state_key")
		}
		// A deactivated user takes no invites. (An unknown one is not
		// refused: the invite just never reaches anybody, as elsewhere.)
		if acct, err := a.db.GetAccount(r.Context(), uid.Local()); err == nil && acct.Deactivated {
			return nil, httputil.Forbidden("The user is deactivated")
		}
		// Signature checks of an invite require the invitee's server too
		// (ours): sign first, then verify all.
		signed := pdu
		if !a.policy.Unsigned() {
			signed = pdu.Sign(string(a.serverName), a.keyID, a.privateKey)
		}
		if err := gomatrixserverlib.VerifyEventSignatures(r.Context(), signed, a.verifier, roomserver.UserIDForSender); err != nil {
			return nil, httputil.Forbidden("Bad signature: " + err.Error())
		}
		// In the room already (another of our users is joined): the invite
		// enters the DAG like any event; otherwise it is kept aside.
		stored := false
		if _, err := a.rs.RoomVersion(r.Context(), roomID); err == nil {
			if res, err := a.rs.InputRemote(r.Context(), signed); err == nil && res.Rejected == nil {
				stored = true
			} else if err == nil {
				return nil, httputil.Forbidden("Invite not allowed: " + res.Rejected.Error())
			}
		}
		if !stored {
			if _, err := a.rs.RemoteMembership(r.Context(), ver, signed, stripped); err != nil && !errors.Is(err, storage.ErrConflict) {
				return nil, err
			}
		}
		if v1 {
			return []any{200, map[string]any{"event": json.RawMessage(signed.JSON())}}, nil
		}
		return map[string]any{"event": json.RawMessage(signed.JSON())}, nil
	}
}

// SendInvite implements roomserver.Inviter: before a local user's invite of
// a remote user is stored, the invitee's server signs it (spec: "Inviting
// to a room", v2).
func (a *API) SendInvite(ctx context.Context, pdu gomatrixserverlib.PDU, stripped []map[string]any) (gomatrixserverlib.PDU, error) {
	target := *pdu.StateKey()
	srv := spec.ServerName(roomserver.ServerOf(target))
	var st []gomatrixserverlib.InviteStrippedState
	if raw, err := json.Marshal(stripped); err == nil {
		_ = json.Unmarshal(raw, &st)
	}
	req, err := fclient.NewInviteV2Request(pdu, st)
	if err != nil {
		return nil, err
	}
	ctx, cancel := a.deadline(a.from(ctx, srv), 30*time.Second)
	defer cancel()
	res, err := a.client.SendInviteV2(ctx, a.serverName, srv, req)
	if err != nil {
		if he := httputil.AsError(remoteErr("invite", err)); he != nil {
			return nil, he
		}
		return nil, httputil.Err(502, "M_UNKNOWN", fmt.Sprintf("Could not deliver the invite to %s: %v", srv, err))
	}
	impl, err := gomatrixserverlib.GetRoomVersion(pdu.Version())
	if err != nil {
		return nil, err
	}
	// What comes back must be our event, valid for the room version, with
	// the invitee's server's signature; anything else refuses the invite.
	signed, err := impl.NewEventFromUntrustedJSON(res.Event)
	if err != nil {
		return nil, httputil.BadJSON(fmt.Sprintf("The invitee's server %s returned an invalid event: %v", srv, err))
	}
	if signed.EventID() != pdu.EventID() {
		return nil, httputil.BadJSON(fmt.Sprintf("The invitee's server %s returned a different event", srv))
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, signed, a.verifier, roomserver.UserIDForSender); err != nil {
		return nil, httputil.Forbidden(fmt.Sprintf("The invitee's server %s did not sign the invite: %v", srv, err))
	}
	return signed, nil
}

// RejectRemoteInvite leaves a room this server is not in, to decline an
// invite (spec: "Leaving Rooms (Rejecting Invites)"): make_leave and
// send_leave through the inviting server.
func (a *API) RejectRemoteInvite(ctx context.Context, roomID, userID string) error {
	ri, inv, err := a.rs.RemoteInvite(ctx, roomID, userID)
	if err != nil {
		return httputil.NotFound("No invite to this room")
	}
	ver := gomatrixserverlib.RoomVersion(ri.RoomVersion)
	impl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return err
	}
	servers := []spec.ServerName{spec.ServerName(roomserver.ServerOf(inv.Sender))}
	if _, srv, ok := cutServer(roomID); ok && srv != string(servers[0]) {
		servers = append(servers, spec.ServerName(srv))
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	var lastErr error
	for _, srv := range servers {
		ml, err := a.client.MakeLeave(ctx, a.serverName, srv, roomID, userID)
		if err != nil {
			lastErr = remoteErr("make_leave", err)
			continue
		}
		pe := ml.LeaveEvent
		if pe.Type != spec.MRoomMember || pe.StateKey == nil || *pe.StateKey != userID || pe.SenderID != userID {
			lastErr = fmt.Errorf("make_leave from %s returned a bad template", srv)
			continue
		}
		pe.Content = []byte(`{"membership":"leave"}`)
		pe.Version = impl
		leave, err := a.build(impl, &pe)
		if err != nil {
			lastErr = err
			continue
		}
		if err := a.client.SendLeave(ctx, a.serverName, srv, leave); err != nil {
			lastErr = remoteErr("send_leave", err)
			continue
		}
		_, err = a.rs.RemoteMembership(ctx, ver, leave, nil)
		return err
	}
	// The inviting server cannot be reached or refuses (e.g. everyone has
	// left the room): decline locally so the invite does not linger.
	a.log.Warn("rejecting invite locally", "room", roomID, "err", lastErr)
	return a.rejectLocally(ctx, ver, inv, userID)
}

func (a *API) rejectLocally(ctx context.Context, ver gomatrixserverlib.RoomVersion, inv *storage.Event, userID string) error {
	impl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return err
	}
	pe := gomatrixserverlib.ProtoEvent{SenderID: userID, RoomID: inv.RoomID, Type: spec.MRoomMember, StateKey: &userID,
		PrevEvents: []string{inv.EventID}, AuthEvents: []string{inv.EventID}, Depth: inv.Depth + 1, Content: []byte(`{"membership":"leave"}`)}
	leave, err := a.build(impl, &pe)
	if err != nil {
		return err
	}
	_, err = a.rs.RemoteMembership(ctx, ver, leave, nil)
	return err
}
