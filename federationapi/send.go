package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/httputil"
	"repeater/roomserver"
)

// Transaction limits (spec: "Transactions").
const (
	maxTxnPDUs = 50
	maxTxnEDUs = 100
	// maxMissing bounds how many missing prev events one PDU may pull in
	// through get_missing_events.
	maxMissing = 50
)

// send handles PUT /send/{txnId} (spec: "Transactions"): each PDU is
// checked and input on its own; the answer reports per-PDU errors. A
// transaction ID seen before from the same origin gets the same answer.
func (a *API) send(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
	txnID := httputil.Vars(r)["txnId"]
	if prev, err := a.db.InboundTxn(r.Context(), string(origin), txnID); err == nil {
		return json.RawMessage(prev), nil
	}
	if !gjson.ValidBytes(body) {
		return nil, httputil.NotJSON("Body is not JSON")
	}
	pdus := gjson.GetBytes(body, "pdus").Array()
	edus := gjson.GetBytes(body, "edus").Array()
	if len(pdus) > maxTxnPDUs || len(edus) > maxTxnEDUs {
		return nil, httputil.BadJSON("Too many PDUs or EDUs in one transaction")
	}
	// Process the transaction even if the sender hangs up: it will retry
	// with the same ID and expects the work done.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Minute)
	defer cancel()
	results := map[string]fclient.PDUResult{}
	for _, raw := range pdus {
		id, err := a.receivePDU(ctx, origin, []byte(raw.Raw))
		if id == "" {
			// Unparseable or for a room we are not in: there is no
			// event ID to report against.
			a.log.Info("PDU dropped", "origin", origin, "err", err)
			continue
		}
		res := fclient.PDUResult{}
		if err != nil {
			res.Error = err.Error()
			a.log.Info("PDU not accepted", "origin", origin, "event", id, "err", err)
		}
		results[id] = res
	}
	for _, edu := range edus {
		a.receiveEDU(origin, edu)
	}
	resp, _ := json.Marshal(map[string]any{"pdus": results})
	if err := a.db.RecordInboundTxn(ctx, string(origin), txnID, resp); err != nil {
		a.log.Warn("recording inbound transaction", "err", err)
	}
	return json.RawMessage(resp), nil
}

// receivePDU checks and inputs one PDU; it returns the event ID (empty if
// the PDU could not be parsed) and why it was not accepted.
func (a *API) receivePDU(ctx context.Context, origin spec.ServerName, raw []byte) (string, error) {
	roomID := gjson.GetBytes(raw, "room_id").Str
	ver, err := a.rs.RoomVersion(ctx, roomID)
	if err != nil {
		return "", err // a room we are not in: nothing to report against
	}
	pdu, err := a.parseAndVerify(ctx, ver, raw)
	if err != nil {
		if pdu != nil {
			return pdu.EventID(), err
		}
		return "", err
	}
	if err := a.checkACL(ctx, roomID, origin); err != nil {
		return pdu.EventID(), err
	}
	res, err := a.rs.InputRemote(ctx, pdu)
	if errors.Is(err, roomserver.ErrMissingPrev) {
		if ferr := a.fillGap(ctx, origin, ver, pdu); ferr != nil {
			a.log.Info("could not fill gap before event", "event", pdu.EventID(), "origin", origin, "err", ferr)
			a.holdPending(ctx, roomID, pdu.EventID(), origin, raw)
			return pdu.EventID(), err
		}
		res, err = a.rs.InputRemote(ctx, pdu)
	}
	if err != nil {
		return pdu.EventID(), err
	}
	if res.Rejected != nil {
		// Stored as rejected (or soft-failed): processed, so not an error
		// for the sender (as other servers answer too).
		a.log.Info("PDU rejected", "origin", origin, "event", pdu.EventID(), "type", pdu.Type(), "sender", pdu.SenderID(), "why", res.Rejected)
	} else if !res.Existed && pdu.Type() == spec.MRoomMember && pdu.StateKey() != nil {
		// A user of another server joined: their server learns our users'
		// presence in the room.
		if m, _ := pdu.Membership(); m == spec.Join && roomserver.ServerOf(*pdu.StateKey()) != string(a.serverName) {
			a.presenceFor(ctx, roomID, []string{roomserver.ServerOf(*pdu.StateKey())})
		}
	}
	return pdu.EventID(), nil
}

// parseAndVerify parses a PDU for its room version and checks its
// signatures (spec: "Checks performed on receipt of a PDU", steps 1-3; a
// content hash mismatch yields the event redacted, as the spec requires).
func (a *API) parseAndVerify(ctx context.Context, ver gomatrixserverlib.RoomVersion, raw []byte) (gomatrixserverlib.PDU, error) {
	impl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return nil, err
	}
	pdu, err := impl.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, err
	}
	// Amateur-radio mode: what would be refused from a local client is
	// refused from a peer (nothing encrypted is stored or relayed).
	if err := a.policy.CheckEvent(pdu.Type(), pdu.Content()); err != nil {
		return pdu, err
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, pdu, a.verifier, roomserver.UserIDForSender); err != nil {
		return pdu, err
	}
	return pdu, nil
}

// fetchMissing fills the gap before pdu (spec: "Checks performed on receipt
// of a PDU"): it asks origin for the events between what we hold and pdu
// (get_missing_events), checks and inputs them oldest first; where a gap
// remains it fetches the state at the missing event (state_ids, then the
// events it lacks) so that what follows can be authorised. pdu itself is
// input by the caller.
func (a *API) fetchMissing(ctx context.Context, origin spec.ServerName, ver gomatrixserverlib.RoomVersion, pdu gomatrixserverlib.PDU) error {
	roomID := pdu.RoomID().String()
	latest, err := a.rs.Extremities(ctx, roomID)
	if err != nil {
		return err
	}
	res, err := a.client.LookupMissingEvents(ctx, a.serverName, origin, roomID, fclient.MissingEvents{
		Limit: maxMissing, EarliestEvents: latest, LatestEvents: []string{pdu.EventID()},
		MinDepth: int(max(pdu.Depth()-maxMissing, 0)),
	}, ver)
	var evs []gomatrixserverlib.PDU
	if err == nil {
		for _, raw := range res.Events {
			p, err := a.parseAndVerify(ctx, ver, raw)
			if err != nil || p.RoomID().String() != roomID || p.EventID() == pdu.EventID() {
				continue
			}
			evs = append(evs, p)
		}
	}
	if len(evs) == 0 {
		if err != nil {
			return fmt.Errorf("get_missing_events for %s: %w", pdu.EventID(), err)
		}
		// The sender could not (or would not) fill the gap: drop the
		// event rather than guess at the state before it, unless its prev
		// events are all held here without their state (backfilled
		// events): then the state at them is fetched below.
		held, herr := a.rs.EventsByIDs(ctx, pdu.PrevEventIDs())
		if herr != nil || len(held) != len(pdu.PrevEventIDs()) {
			return fmt.Errorf("no missing events returned for %s", pdu.EventID())
		}
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Depth() < evs[j].Depth() })
	// The sender may return events we hold already (it does not know where
	// our history starts): those are skipped; one that fails is logged and
	// the rest still tried.
	ids := make([]string, len(evs))
	for i, p := range evs {
		ids[i] = p.EventID()
	}
	have, err := a.rs.EventsByIDs(ctx, ids)
	if err != nil {
		return err
	}
	held := map[string]bool{}
	var outliers []string
	for _, e := range have {
		held[e.EventID] = true
		if e.Outlier {
			// Held only as state so far (from a join or a gap), but it
			// lies between our history and the new event: it belongs in
			// the timeline.
			outliers = append(outliers, e.EventID)
		}
	}
	if err := a.rs.PromoteOutliers(ctx, roomID, outliers); err != nil {
		return err
	}
	for _, p := range evs {
		if held[p.EventID()] || len(p.PrevEventIDs()) == 0 {
			continue
		}
		if err := a.inputFillingGaps(ctx, origin, ver, p); err != nil {
			a.log.Info("could not take a missing event", "event", p.EventID(), "err", err)
		}
	}
	// Whatever pdu still lacks is a gap we cannot walk: take the state there.
	_, err = a.rs.InputRemoteCheckPrevs(ctx, pdu)
	var mp *roomserver.MissingPrevError
	if errors.As(err, &mp) {
		for _, id := range mp.IDs {
			if err := a.stateAtGap(ctx, origin, ver, roomID, id); err != nil {
				return err
			}
		}
		return nil
	}
	return err
}

// inputFillingGaps inputs an event, fetching the state at any prev event
// that is still missing.
func (a *API) inputFillingGaps(ctx context.Context, origin spec.ServerName, ver gomatrixserverlib.RoomVersion, p gomatrixserverlib.PDU) error {
	_, err := a.rs.InputRemote(ctx, p)
	var mp *roomserver.MissingPrevError
	if !errors.As(err, &mp) {
		return err
	}
	for _, id := range mp.IDs {
		if err := a.stateAtGap(ctx, origin, ver, p.RoomID().String(), id); err != nil {
			return err
		}
	}
	_, err = a.rs.InputRemote(ctx, p)
	return err
}

// stateAtGap fetches an event we lack and the room state before it from
// origin (state_ids, then /state or /event for what we do not hold), checks
// signatures, and stores them so that events after it can be authorised.
func (a *API) stateAtGap(ctx context.Context, origin spec.ServerName, ver gomatrixserverlib.RoomVersion, roomID, eventID string) error {
	ids, err := a.client.LookupStateIDs(ctx, a.serverName, origin, roomID, eventID)
	if err != nil {
		return fmt.Errorf("state_ids: %w", err)
	}
	want := append(append([]string{eventID}, ids.StateEventIDs...), ids.AuthEventIDs...)
	have, err := a.rs.EventsByIDs(ctx, want)
	if err != nil {
		return err
	}
	held := map[string]bool{}
	for _, e := range have {
		held[e.EventID] = true
	}
	var missing []string
	for _, id := range want {
		if !held[id] {
			missing = append(missing, id)
		}
	}
	var fetched []gomatrixserverlib.PDU
	var ev gomatrixserverlib.PDU
	if len(missing) > 20 {
		// Many: one /state request instead of many /event requests.
		if st, err := a.client.LookupState(ctx, a.serverName, origin, roomID, eventID, ver); err == nil {
			for _, raw := range append(append(gomatrixserverlib.EventJSONs{}, st.StateEvents...), st.AuthEvents...) {
				if p, err := a.parseAndVerify(ctx, ver, raw); err == nil {
					fetched = append(fetched, p)
				}
			}
		}
	}
	got := map[string]bool{}
	for _, p := range fetched {
		got[p.EventID()] = true
	}
	for _, id := range missing {
		if got[id] {
			continue
		}
		txn, err := a.client.GetEvent(ctx, a.serverName, origin, id)
		if err != nil || len(txn.PDUs) == 0 {
			continue
		}
		p, err := a.parseAndVerify(ctx, ver, txn.PDUs[0])
		if err != nil || p.EventID() != id {
			continue
		}
		fetched = append(fetched, p)
	}
	for _, p := range fetched {
		if p.EventID() == eventID {
			ev = p
		}
	}
	if ev == nil {
		evs, err := a.rs.EventsByIDs(ctx, []string{eventID})
		if err != nil || len(evs) == 0 {
			return fmt.Errorf("could not fetch %s", eventID)
		}
		if ev, err = gomatrixserverlib.MustGetRoomVersion(ver).NewEventFromTrustedJSONWithEventID(eventID, evs[0].JSON, false); err != nil {
			return err
		}
	}
	return a.rs.StoreStateAtGap(ctx, ev, ids.StateEventIDs, fetched)
}

// checkACL applies the room's m.room.server_acl to the sending server.
func (a *API) checkACL(ctx context.Context, roomID string, origin spec.ServerName) error {
	acl, err := a.rs.CurrentStateEvent(ctx, roomID, "m.room.server_acl", "")
	if err != nil || acl == nil {
		return nil
	}
	if !aclAllows(gjson.GetBytes(acl.JSON, "content"), string(origin)) {
		return httputil.Forbidden("Server is banned from this room by its ACL")
	}
	return nil
}

// receiveEDU takes one EDU. Only EDUs about the origin's own users are
// accepted.
func (a *API) receiveEDU(origin spec.ServerName, edu gjson.Result) {
	if a.edus == nil {
		return
	}
	content := edu.Get("content")
	fromOrigin := func(userID string) bool { return roomserver.ServerOf(userID) == string(origin) }
	switch edu.Get("edu_type").Str {
	case "m.typing":
		u := content.Get("user_id").Str
		if fromOrigin(u) {
			a.edus.RemoteTyping(content.Get("room_id").Str, u, content.Get("typing").Bool(), 30*time.Second)
		}
	case "m.receipt":
		content.ForEach(func(room, types gjson.Result) bool {
			types.ForEach(func(typ, users gjson.Result) bool {
				users.ForEach(func(user, rcpt gjson.Result) bool {
					if !fromOrigin(user.Str) {
						return true
					}
					for _, ev := range rcpt.Get("event_ids").Array() {
						a.edus.RemoteReceipt(room.Str, typ.Str, user.Str, ev.Str, []byte(rcpt.Get("data").Raw))
					}
					return true
				})
				return true
			})
			return true
		})
	case "m.direct_to_device":
		sender := content.Get("sender").Str
		if !fromOrigin(sender) || a.policy.CheckToDevice(content.Get("type").Str) != nil {
			return
		}
		content.Get("messages").ForEach(func(user, devs gjson.Result) bool {
			if roomserver.ServerOf(user.Str) == string(a.serverName) {
				devs.ForEach(func(dev, c gjson.Result) bool {
					a.edus.RemoteToDevice(sender, content.Get("type").Str, user.Str, dev.Str, []byte(c.Raw))
					return true
				})
			}
			return true
		})
	case "m.device_list_update", "m.signing_key_update":
		a.receiveDeviceListEDU(origin, edu.Get("edu_type").Str, content)
	case "m.presence":
		for _, p := range content.Get("push").Array() {
			u := p.Get("user_id").Str
			if fromOrigin(u) {
				a.edus.RemotePresence(u, p.Get("presence").Str, p.Get("status_msg").Str, p.Get("last_active_ago").Int(), p.Get("currently_active").Bool())
			}
		}
	}
}
