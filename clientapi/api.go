// Package clientapi serves the Client-Server API (/_matrix/client) except
// /sync and its streams (syncapi) and media (mediaapi).
package clientapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/tidwall/gjson"

	"repeater/internal/auth"
	"repeater/internal/config"
	"repeater/internal/httputil"
	"repeater/internal/part97"
	"repeater/roomserver"
	"repeater/storage"
)

// UserNotifier is told when a user's own stream data (account data) is
// about to change, and when the change has committed.
type UserNotifier interface {
	OnUserDataPending(userID string)
	OnUserEvent(userID string, pos int64)
}

// API is the client API.
type API struct {
	cfg        *config.Config
	serverName string
	db         *storage.DB
	rs         *roomserver.Server
	notify     UserNotifier
	log        *slog.Logger
	limiter    *httputil.Limiter
	uia        uiaSessions
	nonces     nonces
	remote     RemoteRooms
	pushers    PusherWaker
	pushMu     sync.Mutex // serialises push rule edits (read, change, write)
	policy     *part97.Policy
	as         AppServices
}

// PusherWaker is told when pushers are added or changed, so delivery
// starts without waiting for the next event.
type PusherWaker interface {
	PushersChanged()
}

// RemoteRooms joins rooms hosted on other servers (the federation API).
type RemoteRooms interface {
	ResolveAlias(ctx context.Context, alias string) (roomID string, servers []string, err error)
	JoinRemote(ctx context.Context, roomID, userID string, servers []string, content map[string]any) (string, error)
	RejectRemoteInvite(ctx context.Context, roomID, userID string) error
	QueryProfile(ctx context.Context, userID, field string) (map[string]any, error)
	PublicRooms(ctx context.Context, server string, limit int64, since, filter string) (any, error)
	KnockRemote(ctx context.Context, roomID, userID string, servers []string, reason string) error
	// QueryKeys answers keys/query for another server's users: an object
	// with device_keys, master_keys and self_signing_keys (on an error,
	// what could be answered, if anything).
	QueryKeys(ctx context.Context, server string, users map[string][]string) (json.RawMessage, error)
	ClaimKeys(ctx context.Context, server string, want map[string]map[string]string) (json.RawMessage, error)
	SendToDevice(ctx context.Context, server, sender, evType, messageID string, messages map[string]map[string]json.RawMessage)
	// DeviceListChanged tells other servers that a local user's device
	// was added, changed (keys, signatures, name) or deleted.
	DeviceListChanged(ctx context.Context, userID, deviceID string, deleted bool)
	// SigningKeysChanged tells other servers of a local user's new master
	// or self-signing key (or new signatures of them).
	SigningKeysChanged(ctx context.Context, userID string)
	Hierarchy(ctx context.Context, roomID string, servers []string, suggestedOnly bool) (map[string]any, []roomserver.SpaceChild, error)
}

// New constructs the client API.
// policy is the amateur-radio mode (nil: off); as the application services
// (nil: none).
func New(cfg *config.Config, db *storage.DB, rs *roomserver.Server, notify UserNotifier, remote RemoteRooms, pushers PusherWaker, policy *part97.Policy, as AppServices, log *slog.Logger) *API {
	return &API{cfg: cfg, serverName: cfg.ServerName, db: db, rs: rs, notify: notify, remote: remote, pushers: pushers, log: log, policy: policy, as: as,
		limiter: httputil.NewLimiter(cfg.RateLimits.Enabled, cfg.RateLimits.PerSecond, cfg.RateLimits.Burst)}
}

func parseInt(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// specVersions are the Client-Server API versions advertised by GET
// /versions. A version is listed when what it added that clients depend on
// (and gate on the version for) is served; optional modules a client
// discovers another way (SSO, refresh tokens, registration tokens: login
// and registration flows; third-party identifiers: capabilities) need not
// be. What each brought, and where it lives here:
//
//	r0.6.1  the /r0 API (served under /_matrix/client/r0 as well as /v3)
//	v1.1    key backup (clientapi/keybackup.go), cross-signing, knocking
//	v1.2    spaces and /v1/hierarchy, fallback keys (restricted join
//	        rules: joins through an authorising server are not done yet)
//	v1.3    knock_restricted join rule (room versions up to 12 supported)
//	v1.4    relations, threads and /threads, private read receipts,
//	        thread_id on receipts, room_type in /publicRooms (its
//	        room_types filter is not applied yet)
//	v1.5    m.reference relations
//	v1.6    /v1/rooms/{roomId}/timestamp_to_event (clientmisc.go)
//	v1.7    /v1/login/get_token (logintoken.go), async media uploads,
//	        m.annotation relations, new push conditions
//	v1.8    room version 11; event reports need the reporter joined
//	v1.9    m.rule.suppress_edits push rule
//	v1.10   recursive /relations
//	v1.11   authenticated media (/_matrix/client/v1/media)
//	v1.12   via on /join and /knock
//
// Not listed: v1.13 (its CORS method list) and later.
var specVersions = []string{"r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12"}

// versions handles GET /_matrix/client/versions.
func (a *API) versions(r *http.Request) (any, error) {
	// Flags clients that predate the stable versions above still look for:
	// cross-signing (v1.1) and private read receipts (v1.4).
	flags := map[string]bool{"org.matrix.e2e_cross_signing": true, "org.matrix.msc2285.stable": true}
	if a.policy.On() {
		// An amateur-radio station: no end-to-end encryption here.
		flags[part97.FeatureFlag] = true
	}
	return map[string]any{"versions": specVersions, "unstable_features": flags}, nil
}

// capabilities handles GET /capabilities.
func (a *API) capabilities(r *http.Request) (any, error) {
	avail := map[string]string{}
	for _, v := range roomserver.SupportedVersions {
		avail[string(v)] = "stable"
	}
	return map[string]any{"capabilities": map[string]any{
		"m.change_password": map[string]any{"enabled": true},
		"m.room_versions":   map[string]any{"default": a.cfg.DefaultRoomVersion, "available": avail},
		"m.set_displayname": map[string]any{"enabled": true},
		"m.set_avatar_url":  map[string]any{"enabled": true},
		"m.3pid_changes":    map[string]any{"enabled": false},
		"m.get_login_token": map[string]any{"enabled": a.cfg.LoginToken.Enabled && !auth.FromContext(r.Context()).IsGuest},
	}}, nil
}

// wellKnown handles GET /.well-known/matrix/client.
func (a *API) wellKnown(r *http.Request) (any, error) {
	base := a.cfg.PublicBaseURL
	if base == "" {
		base = "http://" + a.serverName
	}
	wk := map[string]any{"m.homeserver": map[string]any{"base_url": base}}
	if a.policy.On() {
		// Element's setting: new rooms unencrypted, and the option to
		// encrypt hidden (FCC Part 97 forbids encryption on the air).
		wk["io.element.e2ee"] = map[string]any{"default": false, "force_disable": true}
		wk[part97.FeatureFlag] = map[string]any{"callsign": a.policy.Callsign}
	}
	return wk, nil
}

// Account data.

func (a *API) checkOwnUser(r *http.Request) (*auth.Device, error) {
	d := auth.FromContext(r.Context())
	if vars(r)["userId"] != d.UserID {
		return nil, httputil.Forbidden("You may only access your own account data")
	}
	return d, nil
}

func (a *API) putAccountData(r *http.Request) (any, error) {
	d, err := a.checkOwnUser(r)
	if err != nil {
		return nil, err
	}
	body, err := httputil.ReadBody(r, 65536, false)
	if err != nil {
		return nil, err
	}
	typ := vars(r)["type"]
	if typ == "m.fully_read" || typ == "m.push_rules" {
		return nil, httputil.Err(400, "M_BAD_JSON", "Cannot set "+typ+" through this API")
	}
	if err := a.putAccountDataNotify(r, d, vars(r)["roomId"], typ, body); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (a *API) getAccountData(r *http.Request) (any, error) {
	d, err := a.checkOwnUser(r)
	if err != nil {
		return nil, err
	}
	if vars(r)["type"] == storage.PushRulesType && vars(r)["roomId"] == "" {
		rs, err := a.loadPushRules(r, d)
		if err != nil {
			return nil, err
		}
		return rs.Document(), nil
	}
	b, err := a.db.GetAccountData(r.Context(), d.Localpart, vars(r)["roomId"], vars(r)["type"])
	if err != nil {
		return nil, err
	}
	return json.RawMessage(b), nil
}

// Filters.

func (a *API) postFilter(r *http.Request) (any, error) {
	d, err := a.checkOwnUser(r)
	if err != nil {
		return nil, err
	}
	body, err := httputil.ReadBody(r, 65536, false)
	if err != nil {
		return nil, err
	}
	if err := validateFilter(body); err != nil {
		return nil, err
	}
	id, err := a.db.CreateFilter(r.Context(), d.Localpart, body)
	if err != nil {
		return nil, err
	}
	return map[string]any{"filter_id": itoa(id)}, nil
}

func (a *API) getFilter(r *http.Request) (any, error) {
	d, err := a.checkOwnUser(r)
	if err != nil {
		return nil, err
	}
	id, err := strconv.ParseInt(vars(r)["filterId"], 10, 64)
	if err != nil {
		return nil, httputil.NotFound("No such filter")
	}
	b, err := a.db.GetFilter(r.Context(), d.Localpart, id)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(b), nil
}

// Room tags (spec: "Room Tagging") live in the room's m.tag account data.

func (a *API) getTags(r *http.Request) (any, error) {
	d, err := a.checkOwnUser(r)
	if err != nil {
		return nil, err
	}
	b, err := a.db.GetAccountData(r.Context(), d.Localpart, vars(r)["roomId"], "m.tag")
	if err != nil || !gjson.GetBytes(b, "tags").IsObject() {
		return map[string]any{"tags": map[string]any{}}, nil
	}
	return json.RawMessage(b), nil
}

func (a *API) changeTag(put bool) httputil.Handler {
	return func(r *http.Request) (any, error) {
		d, err := a.checkOwnUser(r)
		if err != nil {
			return nil, err
		}
		v := vars(r)
		var body []byte
		if put {
			if body, err = httputil.ReadBody(r, 65536, false); err != nil {
				return nil, err
			}
			if o := gjson.GetBytes(body, "order"); o.Exists() && o.Type != gjson.Number {
				return nil, httputil.BadJSON("order must be a number")
			}
		}
		tags := map[string]json.RawMessage{}
		if b, err := a.db.GetAccountData(r.Context(), d.Localpart, v["roomId"], "m.tag"); err == nil {
			var cur struct {
				Tags map[string]json.RawMessage `json:"tags"`
			}
			if json.Unmarshal(b, &cur) == nil && cur.Tags != nil {
				tags = cur.Tags
			}
		}
		if put {
			tags[v["tag"]] = body
		} else {
			delete(tags, v["tag"])
		}
		content, err := json.Marshal(map[string]any{"tags": tags})
		if err != nil {
			return nil, err
		}
		if err := a.putAccountDataNotify(r, d, v["roomId"], "m.tag", content); err != nil {
			return nil, err
		}
		return struct{}{}, nil
	}
}

// validateFilter rejects filters whose fields have the wrong types
// (spec: "Filtering"): sections must be objects, lists must be lists of
// strings, room and sender lists must hold room and user IDs, lazy-loading
// flags must be booleans, limits numbers.
func validateFilter(body []byte) error {
	f := gjson.ParseBytes(body)
	if v := f.Get("event_fields"); v.Exists() && !isStringList(v) {
		return httputil.BadJSON("event_fields must be a list of strings")
	}
	if v := f.Get("event_format"); v.Exists() && v.Str != "client" && v.Str != "federation" {
		return httputil.BadJSON("event_format must be client or federation")
	}
	for _, sect := range []string{"presence", "account_data"} {
		if err := validateEventFilter(f.Get(sect), sect); err != nil {
			return err
		}
	}
	room := f.Get("room")
	if !room.Exists() {
		return nil
	}
	if !room.IsObject() {
		return httputil.BadJSON("room must be an object")
	}
	for _, k := range []string{"rooms", "not_rooms"} {
		if err := validateIDList(room.Get(k), "room."+k, "!"); err != nil {
			return err
		}
	}
	if v := room.Get("include_leave"); v.Exists() && !v.IsBool() {
		return httputil.BadJSON("room.include_leave must be a boolean")
	}
	for _, sect := range []string{"timeline", "state", "ephemeral", "account_data"} {
		if err := validateEventFilter(room.Get(sect), "room."+sect); err != nil {
			return err
		}
	}
	return nil
}

func validateEventFilter(v gjson.Result, name string) error {
	if !v.Exists() {
		return nil
	}
	if !v.IsObject() {
		return httputil.BadJSON(name + " must be an object")
	}
	if l := v.Get("limit"); l.Exists() && l.Type != gjson.Number {
		return httputil.BadJSON(name + ".limit must be a number")
	}
	for _, k := range []string{"types", "not_types"} {
		if x := v.Get(k); x.Exists() && !isStringList(x) {
			return httputil.BadJSON(name + "." + k + " must be a list of strings")
		}
	}
	for _, k := range []string{"rooms", "not_rooms"} {
		if err := validateIDList(v.Get(k), name+"."+k, "!"); err != nil {
			return err
		}
	}
	for _, k := range []string{"senders", "not_senders"} {
		if err := validateIDList(v.Get(k), name+"."+k, "@"); err != nil {
			return err
		}
	}
	for _, k := range []string{"lazy_load_members", "include_redundant_members", "contains_url", "unread_thread_notifications"} {
		if x := v.Get(k); x.Exists() && !x.IsBool() {
			return httputil.BadJSON(name + "." + k + " must be a boolean")
		}
	}
	return nil
}

func isStringList(v gjson.Result) bool {
	if !v.IsArray() {
		return false
	}
	for _, x := range v.Array() {
		if x.Type != gjson.String {
			return false
		}
	}
	return true
}

func validateIDList(v gjson.Result, name, sigil string) error {
	if !v.Exists() {
		return nil
	}
	if !isStringList(v) {
		return httputil.BadJSON(name + " must be a list of strings")
	}
	for _, x := range v.Array() {
		// Room IDs of room version 12 have no server part.
		if !strings.HasPrefix(x.Str, sigil) || (sigil == "@" && !strings.Contains(x.Str, ":")) || len(x.Str) < 2 {
			return httputil.BadJSON(name + " holds an invalid ID: " + x.Str)
		}
	}
	return nil
}

// threepids handles GET /account/3pid: no third-party identifiers are
// bound without an identity server or email sender.
func (a *API) threepids(r *http.Request) (any, error) {
	return map[string]any{"threepids": []any{}}, nil
}

// putAccountDataNotify stores account data, telling sync before and after.
func (a *API) putAccountDataNotify(r *http.Request, d *auth.Device, roomID, typ string, content []byte) error {
	if a.notify != nil {
		a.notify.OnUserDataPending(d.UserID)
	}
	pos, err := a.db.PutAccountData(r.Context(), d.Localpart, roomID, typ, content)
	if a.notify != nil {
		a.notify.OnUserEvent(d.UserID, pos)
	}
	return err
}
