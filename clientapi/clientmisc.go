package clientapi

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/roomserver"
	"repeater/storage"
)

// miscRoutes registers, on a /_matrix/client/{v3,r0,unstable} router, key
// backup, VoIP, third-party lookup, reporting, room upgrades and the
// third-party identifier endpoints we answer without an identity server.
func (a *API) miscRoutes(c *mux.Router, authn *auth.Authenticator) {
	j := func(h httputil.Handler) http.Handler { return httputil.JSON(a.log, h) }
	authed := func(h httputil.Handler) http.Handler { return authn.Require(j(h)) }
	guestOK := func(h httputil.Handler) http.Handler { return authn.AllowGuests(j(h)) }

	// Key backup holds only encrypted room keys: in the amateur-radio mode
	// there is none to read (404, so clients see "no backup") and none may
	// be made or filled (403).
	backup := func(h httputil.Handler, write bool) http.Handler {
		return authed(func(r *http.Request) (any, error) {
			if err := a.policy.CheckKeyBackup(); err != nil {
				if !write {
					return nil, httputil.NotFound("No key backup: this amateur-radio node carries no encrypted messages (FCC Part 97)")
				}
				return nil, err
			}
			return h(r)
		})
	}
	c.Handle("/room_keys/version", backup(a.createBackup, true)).Methods("POST")
	c.Handle("/room_keys/version", backup(a.getBackup, false)).Methods("GET")
	c.Handle("/room_keys/version/{version}", backup(a.getBackup, false)).Methods("GET")
	c.Handle("/room_keys/version/{version}", backup(a.putBackup, true)).Methods("PUT")
	c.Handle("/room_keys/version/{version}", backup(a.deleteBackup, true)).Methods("DELETE")
	for _, p := range []string{"/room_keys/keys", "/room_keys/keys/{roomId}", "/room_keys/keys/{roomId}/{sessionId}"} {
		c.Handle(p, backup(a.getBackupKeys, false)).Methods("GET")
		c.Handle(p, backup(a.putBackupKeys, true)).Methods("PUT")
		c.Handle(p, backup(a.deleteBackupKeys, true)).Methods("DELETE")
	}

	c.Handle("/voip/turnServer", guestOK(a.turnServer)).Methods("GET")

	c.Handle("/thirdparty/protocols", authed(a.thirdPartyProtocols)).Methods("GET")
	c.Handle("/thirdparty/protocol/{protocol}", authed(a.thirdPartyProtocol)).Methods("GET")
	for _, p := range []string{"/thirdparty/location", "/thirdparty/location/{protocol}", "/thirdparty/user", "/thirdparty/user/{protocol}"} {
		c.Handle(p, authed(a.thirdPartyLookup)).Methods("GET")
	}

	c.Handle("/rooms/{roomId}/report/{eventId}", authed(a.reportEvent)).Methods("POST")
	c.Handle("/rooms/{roomId}/report", authed(a.reportRoom)).Methods("POST")
	c.Handle("/users/{userId}/report", authed(a.reportUser)).Methods("POST")

	c.Handle("/rooms/{roomId}/upgrade", authed(a.upgradeRoom)).Methods("POST")

	c.Handle("/account/3pid", authed(a.threepidDenied)).Methods("POST") // deprecated form of /add
	c.Handle("/account/3pid/add", authed(a.threepidDenied)).Methods("POST")
	c.Handle("/account/3pid/bind", authed(a.threepidBind)).Methods("POST")
	c.Handle("/account/3pid/delete", authed(a.threepidUnbind)).Methods("POST")
	c.Handle("/account/3pid/unbind", authed(a.threepidUnbind)).Methods("POST")
	c.Handle("/account/3pid/{medium:email|msisdn}/requestToken", j(a.threepidRequestToken)).Methods("POST")
}

// miscV1Routes registers the /_matrix/client/v1 endpoints of this file's
// features.
func (a *API) miscV1Routes(c *mux.Router, authn *auth.Authenticator) {
	j := func(h httputil.Handler) http.Handler { return httputil.JSON(a.log, h) }
	c.Handle("/rooms/{roomId}/timestamp_to_event", authn.Require(j(a.timestampToEvent))).Methods("GET")
	c.Handle("/login/get_token", authn.Require(j(a.getLoginToken))).Methods("POST")
}

// turnServer handles GET /voip/turnServer (spec: "Voice over IP"). With a
// shared secret the credentials are those of the TURN REST scheme
// (coturn's use-auth-secret): username "<expiry>:<user ID>" and password
// base64(HMAC-SHA1(secret, username)), valid for ttl seconds. Without a
// TURN server the answer is {}, which clients read as "no TURN".
func (a *API) turnServer(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	t := a.cfg.TURN
	if d.IsGuest && !t.AllowGuests {
		return nil, httputil.Forbidden("Guests may not use the TURN server")
	}
	if len(t.URIs) == 0 {
		return struct{}{}, nil
	}
	resp := map[string]any{"uris": t.URIs, "ttl": t.TTL}
	switch {
	case t.SharedSecret != "":
		user, pass := turnCredentials(t.SharedSecret, d.UserID, time.Now().Add(time.Duration(t.TTL)*time.Second))
		resp["username"], resp["password"] = user, pass
	case t.Username != "" && t.Password != "":
		resp["username"], resp["password"] = t.Username, t.Password
	default:
		return struct{}{}, nil
	}
	return resp, nil
}

// turnCredentials computes time-limited TURN credentials for a user.
func turnCredentials(secret, userID string, expiry time.Time) (username, password string) {
	username = strconv.FormatInt(expiry.Unix(), 10) + ":" + userID
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// appServiceProtocols are the third-party protocols (spec: "Third-party
// networks") that application services bridge to, by name, as their
// protocol metadata. Application services are not supported yet, so there
// are none; when they are, their registrations' protocols and each
// service's /_matrix/app/v1/thirdparty/protocol/{protocol} answers go here,
// and thirdPartyLookup asks the services that serve a protocol.
func (a *API) appServiceProtocols(r *http.Request) map[string]json.RawMessage {
	return map[string]json.RawMessage{}
}

// thirdPartyProtocols handles GET /thirdparty/protocols.
func (a *API) thirdPartyProtocols(r *http.Request) (any, error) {
	return a.appServiceProtocols(r), nil
}

// thirdPartyProtocol handles GET /thirdparty/protocol/{protocol}.
func (a *API) thirdPartyProtocol(r *http.Request) (any, error) {
	if p, ok := a.appServiceProtocols(r)[vars(r)["protocol"]]; ok {
		return p, nil
	}
	return nil, httputil.NotFound("Unknown protocol")
}

// thirdPartyLookup handles GET /thirdparty/{location,user}[/{protocol}]:
// with no application service to ask, nothing is found.
func (a *API) thirdPartyLookup(r *http.Request) (any, error) {
	return []any{}, nil
}

// Reporting content (spec: "Reporting content"). Reports are stored for
// the server's administrators.

func reportReason(body []byte, required bool) (string, error) {
	reason := gjson.GetBytes(body, "reason")
	if !reason.Exists() && required {
		return "", httputil.MissingParam("Missing reason")
	}
	if reason.Exists() && reason.Type != gjson.String {
		return "", httputil.BadJSON("reason must be a string")
	}
	if len(reason.Str) > 4096 {
		return "", httputil.Err(400, "M_TOO_LARGE", "reason is too long")
	}
	return reason.Str, nil
}

// reportEvent handles POST /rooms/{roomId}/report/{eventId}. The reporter
// must be joined to the room (spec v1.8) and able to see the event;
// otherwise, as for an unknown event, the answer is 404.
func (a *API) reportEvent(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	v := vars(r)
	body, err := httputil.ReadBody(r, httputil.MaxBody, true)
	if err != nil {
		return nil, err
	}
	reason, err := reportReason(body, false)
	if err != nil {
		return nil, err
	}
	var score *int64
	if s := gjson.GetBytes(body, "score"); s.Exists() {
		if s.Type != gjson.Number || s.Num != float64(s.Int()) || s.Int() < -100 || s.Int() > 0 {
			return nil, httputil.BadJSON("score must be an integer between -100 and 0")
		}
		n := s.Int()
		score = &n
	}
	notFound := httputil.NotFound("The event was not found or you are not joined to the room")
	e, err := a.db.EventByID(r.Context(), v["eventId"])
	if err != nil || e.RoomID != v["roomId"] || e.Rejected || e.Outlier {
		return nil, notFound
	}
	if m, err := a.rs.Membership(r.Context(), e.RoomID, d.UserID); err != nil || m != spec.Join {
		return nil, notFound
	}
	if ok, err := a.rs.CanSeeEvent(r.Context(), d.UserID, e); err != nil {
		return nil, err
	} else if !ok {
		return nil, notFound
	}
	return struct{}{}, a.fileReport(r, d, storage.Report{Kind: "event", Reporter: d.UserID, RoomID: e.RoomID, EventID: e.EventID,
		Reason: reason, Score: score})
}

// reportRoom handles POST /rooms/{roomId}/report (spec v1.13): any room
// this server knows, whether or not the reporter is in it.
func (a *API) reportRoom(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	roomID := vars(r)["roomId"]
	body, err := httputil.ReadBody(r, httputil.MaxBody, false)
	if err != nil {
		return nil, err
	}
	reason, err := reportReason(body, true)
	if err != nil {
		return nil, err
	}
	if _, err := a.rs.RoomVersion(r.Context(), roomID); err != nil {
		if errors.Is(err, roomserver.ErrUnknownRoom) {
			return nil, httputil.NotFound("The room was not found")
		}
		return nil, err
	}
	return struct{}{}, a.fileReport(r, d, storage.Report{Kind: "room", Reporter: d.UserID, RoomID: roomID, Reason: reason})
}

// reportUser handles POST /users/{userId}/report (spec v1.14). A local user
// must exist; other servers' users are taken on trust.
func (a *API) reportUser(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	target := vars(r)["userId"]
	body, err := httputil.ReadBody(r, httputil.MaxBody, false)
	if err != nil {
		return nil, err
	}
	reason, err := reportReason(body, true)
	if err != nil {
		return nil, err
	}
	uid, err := spec.NewUserID(target, true)
	if err != nil {
		return nil, httputil.InvalidParam("Invalid user ID")
	}
	if string(uid.Domain()) == a.serverName {
		if _, err := a.db.GetAccount(r.Context(), uid.Local()); err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				return nil, httputil.NotFound("The user was not found")
			}
			return nil, err
		}
	}
	return struct{}{}, a.fileReport(r, d, storage.Report{Kind: "user", Reporter: d.UserID, TargetUserID: target, Reason: reason})
}

// timestampToEvent handles GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event
// (spec v1.6): the first event at or after ts (dir=f) or at or before it
// (dir=b), by origin_server_ts, that the user may see. Only the history
// this server holds is searched; other servers are not asked to fill gaps.
func (a *API) timestampToEvent(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	roomID := vars(r)["roomId"]
	ts, forward, err := parseTimestampQuery(r)
	if err != nil {
		return nil, err
	}
	if _, err := a.rs.RoomVersion(r.Context(), roomID); err != nil {
		return nil, err
	}
	e, err := a.rs.EventNearTS(r.Context(), roomID, ts, forward, func(evs []*storage.Event) ([]*storage.Event, error) {
		return a.rs.VisibleEvents(r.Context(), d.UserID, evs)
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"event_id": e.EventID, "origin_server_ts": e.OriginTS}, nil
}

// parseTimestampQuery reads ?ts= and ?dir= of timestamp_to_event.
func parseTimestampQuery(r *http.Request) (ts int64, forward bool, err error) {
	q := r.URL.Query()
	if q.Get("ts") == "" || q.Get("dir") == "" {
		return 0, false, httputil.MissingParam("ts and dir are required")
	}
	ts, perr := strconv.ParseInt(q.Get("ts"), 10, 64)
	if perr != nil {
		return 0, false, httputil.InvalidParam("ts must be an integer")
	}
	switch q.Get("dir") {
	case "f":
		return ts, true, nil
	case "b":
		return ts, false, nil
	}
	return 0, false, httputil.InvalidParam("dir must be f or b")
}

// upgradeRoom handles POST /rooms/{roomId}/upgrade (spec: "Room
// Upgrades"); the roomserver does the work. The upgrader's direct-chat
// and tag account data follow the room.
func (a *API) upgradeRoom(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	roomID := vars(r)["roomId"]
	body, err := httputil.ReadBody(r, httputil.MaxBody, false)
	if err != nil {
		return nil, err
	}
	nv := gjson.GetBytes(body, "new_version")
	if !nv.Exists() {
		return nil, httputil.MissingParam("Missing new_version")
	}
	if nv.Type != gjson.String {
		return nil, httputil.BadJSON("new_version must be a string")
	}
	var creators []string
	if ac := gjson.GetBytes(body, "additional_creators"); ac.Exists() {
		if !isStringList(ac) {
			return nil, httputil.BadJSON("additional_creators must be a list of user IDs")
		}
		for _, c := range ac.Array() {
			if _, err := spec.NewUserID(c.Str, true); err != nil {
				return nil, httputil.InvalidParam("Invalid user ID in additional_creators: " + c.Str)
			}
			creators = append(creators, c.Str)
		}
	}
	if err := a.limiter.Allow(d.RateLimitKey("send:" + d.UserID)); err != nil {
		return nil, err
	}
	newID, err := a.rs.UpgradeRoom(r.Context(), roomID, d.UserID, nv.Str, a.profileOf(r, d.Localpart), creators)
	if err != nil {
		return nil, err
	}
	a.copyPushRules(r, d, roomID, newID)
	a.carryAccountData(r, d, roomID, newID)
	return map[string]any{"replacement_room": newID}, nil
}

// carryAccountData points the user's m.direct entries for an upgraded room
// at its replacement too, and copies the room's tags unless the new room
// has some already.
func (a *API) carryAccountData(r *http.Request, d *auth.Device, oldRoom, newRoom string) {
	if b, err := a.db.GetAccountData(r.Context(), d.Localpart, "", "m.direct"); err == nil {
		var direct map[string][]string
		if json.Unmarshal(b, &direct) == nil {
			changed := false
			for u, rooms := range direct {
				if slices.Contains(rooms, newRoom) {
					continue
				}
				for _, room := range rooms {
					if room == oldRoom {
						direct[u] = append(rooms, newRoom)
						changed = true
						break
					}
				}
			}
			if changed {
				if js, err := json.Marshal(direct); err == nil {
					if err := a.putAccountDataNotify(r, d, "", "m.direct", js); err != nil {
						a.log.Warn("upgrade: m.direct not updated", "err", err)
					}
				}
			}
		}
	}
	if _, err := a.db.GetAccountData(r.Context(), d.Localpart, newRoom, "m.tag"); err == nil {
		return
	}
	if b, err := a.db.GetAccountData(r.Context(), d.Localpart, oldRoom, "m.tag"); err == nil && len(b) > 0 {
		if err := a.putAccountDataNotify(r, d, newRoom, "m.tag", b); err != nil {
			a.log.Warn("upgrade: tags not copied", "err", err)
		}
	}
}

// checkTombstone refuses a tombstone that points at its own room.
func checkTombstone(roomID, evType string, content []byte) error {
	if evType == "m.room.tombstone" && gjson.GetBytes(content, "replacement_room").Str == roomID {
		return httputil.BadJSON("A tombstone cannot point to the room it is in")
	}
	return nil
}

// Third-party identifiers (spec: "Adding Account Administrative Contact
// Information"). Without an email or SMS sender and without an identity
// server, none can be added or bound (the m.3pid_changes capability says
// so); removing one that was never there succeeds with "no-support".

func (a *API) threepidDenied(r *http.Request) (any, error) {
	return nil, httputil.Err(403, "M_THREEPID_DENIED", "Third-party identifiers cannot be added on this server")
}

func (a *API) threepidBind(r *http.Request) (any, error) {
	return nil, httputil.Err(400, "M_SERVER_NOT_TRUSTED", "This server does not use identity servers")
}

// threepidUnbind handles POST /account/3pid/delete and /account/3pid/unbind.
func (a *API) threepidUnbind(r *http.Request) (any, error) {
	body, err := httputil.ReadBody(r, httputil.MaxBody, false)
	if err != nil {
		return nil, err
	}
	for _, f := range []string{"medium", "address"} {
		v := gjson.GetBytes(body, f)
		if !v.Exists() {
			return nil, httputil.MissingParam("Missing " + f)
		}
		if v.Type != gjson.String {
			return nil, httputil.BadJSON(f + " must be a string")
		}
	}
	return map[string]any{"id_server_unbind_result": "no-support"}, nil
}

// threepidRequestToken handles POST /account/3pid/{email,msisdn}/requestToken.
func (a *API) threepidRequestToken(r *http.Request) (any, error) {
	what := "email addresses"
	if vars(r)["medium"] == "msisdn" {
		what = "phone numbers"
	}
	return nil, httputil.Err(400, "M_THREEPID_MEDIUM_NOT_SUPPORTED", "This server does not support adding "+what)
}

// fileReport stores a report, rate-limited per reporter.
func (a *API) fileReport(r *http.Request, d *auth.Device, rep storage.Report) error {
	if err := a.limiter.Allow(d.RateLimitKey("report:" + d.UserID)); err != nil {
		return err
	}
	_, err := a.db.AddReport(r.Context(), rep)
	return err
}
