package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/httputil"
	"repeater/internal/part97"
	"repeater/roomserver"
	"repeater/storage"
)

// makeMembership handles GET /make_join, /make_leave and /make_knock
// (spec: "Joining Rooms", "Leaving Rooms", "Knocking").
func (a *API) makeMembership(membership string) fedHandler {
	return func(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
		v := httputil.Vars(r)
		roomID, userID := v["roomId"], v["userId"]
		if _, err := spec.NewUserID(userID, true); err != nil {
			return nil, httputil.BadJSON("Invalid user ID")
		}
		if roomserver.ServerOf(userID) != string(origin) {
			return nil, httputil.Forbidden("The user is not from the requesting server")
		}
		ver, err := a.rs.RoomVersion(r.Context(), roomID)
		if err != nil {
			return nil, httputil.NotFound("Unknown room")
		}
		if err := a.checkACL(r.Context(), roomID, origin); err != nil {
			return nil, err
		}
		// We can only vouch for a room we are still in.
		if servers, _ := a.rs.JoinedServers(r.Context(), roomID); !contains(servers, string(a.serverName)) {
			return nil, httputil.NotFound("No user of this server is in the room")
		}
		if membership != spec.Leave {
			// The joining server must support the room's version; without
			// ?ver= it is assumed to support only version 1.
			supported := r.URL.Query()["ver"]
			if len(supported) == 0 {
				supported = []string{"1"}
			}
			ok := false
			for _, s := range supported {
				ok = ok || s == string(ver)
			}
			if !ok {
				return nil, &httputil.Error{Status: 400, Code: "M_INCOMPATIBLE_ROOM_VERSION",
					Message: "Your server does not support this room's version", Extra: map[string]any{"room_version": string(ver)}}
			}
		}
		ver, tmpl, err := a.rs.MembershipTemplate(r.Context(), roomID, userID, membership)
		if err != nil {
			return nil, err
		}
		return map[string]any{"event": tmpl, "room_version": string(ver)}, nil
	}
}

// sendMembership handles PUT /v1 and /v2 send_join, send_leave and
// send_knock: the remote server's signed event enters the room.
func (a *API) sendMembership(membership string, v1 bool) fedHandler {
	return func(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
		v := httputil.Vars(r)
		roomID, eventID := v["roomId"], v["eventId"]
		ver, err := a.rs.RoomVersion(r.Context(), roomID)
		if err != nil {
			return nil, httputil.NotFound("Unknown room")
		}
		if err := a.checkACL(r.Context(), roomID, origin); err != nil {
			return nil, err
		}
		impl, err := gomatrixserverlib.GetRoomVersion(ver)
		if err != nil {
			return nil, err
		}
		pdu, err := impl.NewEventFromUntrustedJSON(body)
		if err != nil {
			return nil, httputil.BadJSON("Bad event: " + err.Error())
		}
		m, _ := pdu.Membership()
		switch {
		case pdu.EventID() != eventID:
			return nil, httputil.BadJSON("Event ID does not match the request")
		case pdu.RoomID().String() != roomID:
			return nil, httputil.BadJSON("Room ID does not match the request")
		case pdu.Type() != spec.MRoomMember || pdu.StateKey() == nil || m != membership:
			return nil, httputil.BadJSON("Not a " + membership + " event")
		case *pdu.StateKey() != string(pdu.SenderID()):
			return nil, httputil.BadJSON("state_key must be the sender")
		case roomserver.ServerOf(string(pdu.SenderID())) != string(origin):
			return nil, httputil.Forbidden("The sender is not from the requesting server")
		}
		if err := gomatrixserverlib.VerifyEventSignatures(r.Context(), pdu, a.verifier, roomserver.UserIDForSender); err != nil {
			return nil, httputil.Forbidden("Bad signature: " + err.Error())
		}
		res, err := a.rs.InputRemote(r.Context(), pdu)
		if errors.Is(err, roomserver.ErrMissingPrev) {
			return nil, httputil.BadJSON("The event's prev_events are unknown here; ask make_" + membership + " again")
		}
		if err != nil {
			return nil, err
		}
		if res.Rejected != nil {
			return nil, httputil.Forbidden("Not allowed: " + res.Rejected.Error())
		}
		// The other servers in the room learn of the new membership from us
		// (the joining server does not know them yet).
		if !res.Existed {
			a.passOn(r.Context(), roomID, res.Event, origin)
			if membership == spec.Join {
				a.presenceFor(r.Context(), roomID, []string{string(origin)})
			}
		}
		if membership == spec.Knock {
			// The knocking server learns enough to show the room.
			stripped, _ := a.rs.StrippedState(r.Context(), roomID)
			if stripped == nil {
				stripped = []map[string]any{}
			}
			return map[string]any{"knock_room_state": stripped}, nil
		}
		if membership != spec.Join {
			if v1 {
				return []any{200, struct{}{}}, nil
			}
			return struct{}{}, nil
		}
		state, chain, err := a.rs.StateAtEvent(r.Context(), roomID, pdu.EventID())
		if err != nil {
			return nil, err
		}
		servers, _ := a.rs.JoinedServers(r.Context(), roomID)
		resp := map[string]any{
			"origin": string(a.serverName), "state": rawEvents(state), "auth_chain": rawEvents(chain),
			"event": json.RawMessage(res.Event.JSON), "members_omitted": false, "servers_in_room": servers,
		}
		if v1 {
			return []any{200, resp}, nil
		}
		return resp, nil
	}
}

// rawEvents renders stored events as a JSON array of their PDUs.
func rawEvents(evs []*storage.Event) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.JSON)
	}
	return out
}

// JoinRemote joins a local user to a room through other servers (spec:
// "Joining Rooms"): make_join, sign, send_join, check the returned state
// and auth chain, and record the room. Servers are tried in order until one
// succeeds.
func (a *API) JoinRemote(ctx context.Context, roomID, userID string, servers []string, content map[string]any) (string, error) {
	// The join outlives the client's request if it has begun.
	ctx, cancel := a.deadline(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	var lastErr error = httputil.NotFound("No server to join the room through")
	tried := map[string]bool{}
	for _, srv := range servers {
		if srv == "" || srv == string(a.serverName) || tried[srv] {
			continue
		}
		tried[srv] = true
		ev, err := a.joinVia(ctx, spec.ServerName(srv), roomID, userID, content)
		if err == nil {
			// The room's servers learn our new member's presence.
			if a.edus != nil {
				a.Presence(ctx, userID, a.edus.PresenceOf(userID))
			}
			return ev.RoomID, nil
		}
		a.log.Warn("remote join failed", "room", roomID, "via", srv, "err", err)
		lastErr = err
	}
	var he *httputil.Error
	if errors.As(lastErr, &he) {
		return "", he
	}
	return "", httputil.Err(502, "M_UNKNOWN", "Could not join through any server: "+lastErr.Error())
}

func (a *API) joinVia(ctx context.Context, srv spec.ServerName, roomID, userID string, content map[string]any) (*storage.Event, error) {
	ctx = a.from(ctx, srv)
	mj, err := a.client.MakeJoin(ctx, a.serverName, srv, roomID, userID)
	if err != nil {
		return nil, remoteErr("make_join", err)
	}
	ver := mj.RoomVersion
	if ver == "" {
		// No room_version: version 1 by the spec, unless the template's
		// references are plain event IDs, which only later versions use.
		ver = gomatrixserverlib.RoomVersionV1
		if refs, ok := mj.JoinEvent.PrevEvents.([]any); ok && len(refs) > 0 {
			if _, isString := refs[0].(string); isString {
				ver = gomatrixserverlib.RoomVersionV4
			}
		}
	}
	if !roomserver.IsSupportedVersion(ver) {
		return nil, httputil.Err(400, "M_UNSUPPORTED_ROOM_VERSION", "Room version "+string(ver)+" is not supported here")
	}
	impl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return nil, err
	}
	pe := mj.JoinEvent
	if pe.Type != spec.MRoomMember || pe.StateKey == nil || *pe.StateKey != userID || pe.SenderID != userID || pe.RoomID != roomID {
		return nil, fmt.Errorf("make_join from %s returned a bad template", srv)
	}
	c := map[string]any{}
	for k, v := range content {
		c[k] = v
	}
	c["membership"] = spec.Join
	raw, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	pe.Content = raw
	pe.Version = impl
	join, err := a.build(impl, &pe)
	if err != nil {
		return nil, fmt.Errorf("building join: %w", err)
	}
	sj, err := a.client.SendJoin(ctx, a.serverName, srv, join)
	if err != nil {
		return nil, remoteErr("send_join", err)
	}
	// The resident server may have countersigned the event.
	if len(sj.Event) > 0 {
		if signed, err := impl.NewEventFromUntrustedJSON(sj.Event); err == nil && signed.EventID() == join.EventID() {
			join = signed
		}
	}
	if sj.MembersOmitted {
		return nil, fmt.Errorf("send_join from %s returned partial state", srv)
	}
	checked, err := gomatrixserverlib.CheckSendJoinResponse(ctx, ver, &sj, a.verifier, join, a.missingAuth(ctx, srv, roomID), roomserver.UserIDForSender)
	if err != nil {
		return nil, fmt.Errorf("send_join response from %s: %w", srv, err)
	}
	state := checked.GetStateEvents().TrustedEvents(ver, false)
	chain := checked.GetAuthEvents().TrustedEvents(ver, false)
	// The room is what its create event says it is; an amateur-radio
	// station does not join an encrypted room.
	for _, p := range state {
		if err := a.policy.CheckEvent(p.Type(), p.Content()); err != nil {
			return nil, err
		}
		if p.Type() == spec.MRoomCreate && p.StateKey() != nil && *p.StateKey() == "" {
			cv := gjson.GetBytes(p.Content(), "room_version").Str
			if cv == "" {
				cv = "1"
			}
			if cv != string(ver) {
				return nil, httputil.Err(400, "M_UNSUPPORTED_ROOM_VERSION", fmt.Sprintf("The room's create event says version %q, not %q", cv, ver))
			}
		}
	}
	ev, err := a.rs.ImportJoin(ctx, ver, join, state, chain)
	if err == nil && a.cfg.Federation.Backfill == "full" {
		if a.background() != nil {
			a.goBackground(func(ctx context.Context) { a.backfillAll(ctx, roomID) })
		}
	}
	return ev, err
}

// missingAuth fetches auth events a response lacks from the server that sent it.
func (a *API) missingAuth(ctx context.Context, srv spec.ServerName, roomID string) gomatrixserverlib.EventProvider {
	if r := part97.RelayFrom(ctx); r == nil || r.Server != string(srv) {
		ctx = a.from(ctx, srv)
	}
	return func(ver gomatrixserverlib.RoomVersion, ids []string) ([]gomatrixserverlib.PDU, error) {
		impl, err := gomatrixserverlib.GetRoomVersion(ver)
		if err != nil {
			return nil, err
		}
		var out []gomatrixserverlib.PDU
		for _, id := range ids {
			txn, err := a.client.GetEvent(ctx, a.serverName, srv, id)
			if err != nil || len(txn.PDUs) == 0 {
				continue
			}
			pdu, err := impl.NewEventFromUntrustedJSON(txn.PDUs[0])
			if err != nil || pdu.EventID() != id || pdu.RoomID().String() != roomID {
				continue
			}
			if err := gomatrixserverlib.VerifyEventSignatures(ctx, pdu, a.verifier, roomserver.UserIDForSender); err != nil {
				continue
			}
			out = append(out, pdu)
		}
		return out, nil
	}
}

// remoteErr passes a remote server's Matrix error on (e.g. M_FORBIDDEN from
// make_join) and wraps anything else.
func remoteErr(what string, err error) error {
	var he gomatrix.HTTPError
	if errors.As(err, &he) {
		if code := gjson.GetBytes(he.Contents, "errcode").Str; code != "" && he.Code >= 400 && he.Code < 500 {
			e := &httputil.Error{Status: he.Code, Code: code, Message: gjson.GetBytes(he.Contents, "error").Str}
			// Keep extra fields (e.g. room_version with M_INCOMPATIBLE_ROOM_VERSION).
			gjson.ParseBytes(he.Contents).ForEach(func(k, v gjson.Result) bool {
				if k.Str != "errcode" && k.Str != "error" {
					if e.Extra == nil {
						e.Extra = map[string]any{}
					}
					e.Extra[k.Str] = v.Value()
				}
				return true
			})
			return e
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// ResolveAlias asks the alias's server for its room (spec: "Querying
// directory information", GET /query/directory).
func (a *API) ResolveAlias(ctx context.Context, alias string) (string, []string, error) {
	_, srv, ok := cutServer(alias)
	if !ok {
		return "", nil, httputil.BadJSON("Invalid room alias")
	}
	res, err := a.client.LookupRoomAlias(ctx, a.serverName, spec.ServerName(srv), alias)
	if err != nil {
		return "", nil, remoteErr("query/directory", err)
	}
	servers := make([]string, 0, len(res.Servers))
	for _, s := range res.Servers {
		servers = append(servers, string(s))
	}
	return res.RoomID, servers, nil
}

func cutServer(id string) (string, string, bool) {
	for i := 0; i < len(id); i++ {
		if id[i] == ':' {
			return id[:i], id[i+1:], i+1 < len(id)
		}
	}
	return "", "", false
}

// KnockRemote knocks on a room hosted elsewhere for a local user (spec:
// "Knocking upon a room"): make_knock, sign, send_knock, and keep the
// knock with the room's stripped state so the user's /sync shows it.
func (a *API) KnockRemote(ctx context.Context, roomID, userID string, servers []string, reason string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	var versions []gomatrixserverlib.RoomVersion
	for v := range gomatrixserverlib.StableRoomVersions() {
		if roomserver.IsSupportedVersion(v) {
			versions = append(versions, v)
		}
	}
	var lastErr error = httputil.NotFound("No server to knock through")
	for _, srv := range servers {
		if srv == "" || srv == string(a.serverName) {
			continue
		}
		mk, err := a.client.MakeKnock(ctx, a.serverName, spec.ServerName(srv), roomID, userID, versions)
		if err != nil {
			lastErr = remoteErr("make_knock", err)
			continue
		}
		impl, err := gomatrixserverlib.GetRoomVersion(mk.RoomVersion)
		if err != nil {
			lastErr = err
			continue
		}
		pe := mk.KnockEvent
		if pe.Type != spec.MRoomMember || pe.StateKey == nil || *pe.StateKey != userID || pe.SenderID != userID {
			lastErr = fmt.Errorf("make_knock from %s returned a bad template", srv)
			continue
		}
		c := map[string]any{"membership": spec.Knock}
		if reason != "" {
			c["reason"] = reason
		}
		pe.Content, _ = json.Marshal(c)
		pe.Version = impl
		knock, err := a.build(impl, &pe)
		if err != nil {
			lastErr = err
			continue
		}
		res, err := a.client.SendKnock(ctx, a.serverName, spec.ServerName(srv), knock)
		if err != nil {
			lastErr = remoteErr("send_knock", err)
			continue
		}
		stripped, _ := json.Marshal(res.KnockRoomState)
		if res.KnockRoomState == nil {
			stripped = []byte("[]")
		}
		_, err = a.rs.RemoteMembership(ctx, mk.RoomVersion, knock, stripped)
		return err
	}
	var he *httputil.Error
	if errors.As(lastErr, &he) {
		return he
	}
	return httputil.Err(502, "M_UNKNOWN", "Could not knock through any server: "+lastErr.Error())
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// passOn queues another server's event, accepted here, for every other
// server in the room except its origin.
func (a *API) passOn(ctx context.Context, roomID string, e *storage.Event, origin spec.ServerName) {
	servers, err := a.rs.JoinedServers(ctx, roomID)
	if err != nil {
		return
	}
	var dests []string
	for _, s := range servers {
		if s != string(a.serverName) && s != string(origin) {
			dests = append(dests, s)
		}
	}
	if len(dests) == 0 {
		return
	}
	if err := a.db.QueuePDU(context.WithoutCancel(ctx), dests, e.NID); err != nil {
		a.log.Warn("queueing a passed-on event", "event", e.EventID, "err", err)
		return
	}
	a.Sender.Queued(dests)
}
