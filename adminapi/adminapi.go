// Package adminapi serves the server administration API under
// /_synapse/admin, with Synapse's paths and shapes so that its tools
// (synapse-admin, synadm) work: users, devices, rooms, room deletion,
// history purges, server notices and event reports. Every route needs the
// access token of a server admin. The operations are also exported for
// the console commands (cmd/repeater), which run them on the database
// without a running server.
package adminapi

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"repeater/internal/auth"
	"repeater/internal/config"
	"repeater/internal/httputil"
	"repeater/roomserver"
	"repeater/storage"
)

// Accounts is what the admin API needs from the client API: account
// deactivation and device removal, done exactly as the client's own
// requests do them (keys, pushers, device-list updates).
type Accounts interface {
	DeactivateAccount(ctx context.Context, localpart string) error
	RemoveDevices(ctx context.Context, localpart string, ids []string, keep string) error
}

// UserNotifier is told when a user's account data is about to change and
// when the change committed (the sync notifier).
type UserNotifier interface {
	OnUserDataPending(userID string)
	OnUserEvent(userID string, pos int64)
}

// Deps are the admin API's dependencies.
type Deps struct {
	Config   *config.Config
	DB       *storage.DB
	Rooms    *roomserver.Server
	Accounts Accounts
	Notify   UserNotifier // may be nil
	Log      *slog.Logger
	Version  string
	// Federation says a federation sender runs in this process: a room
	// deletion then gives other servers a few seconds to hear of the local
	// users' leaves before the room is purged.
	Federation bool
}

// API is the admin API.
type API struct {
	cfg        *config.Config
	serverName string
	db         *storage.DB
	rs         *roomserver.Server
	accounts   Accounts
	notify     UserNotifier
	log        *slog.Logger
	version    string
	federation bool

	noticeMu sync.Mutex // one server notice at a time (room creation)
	jobs     jobs
}

// New constructs the admin API.
func New(d Deps) *API {
	a := &API{cfg: d.Config, serverName: d.Config.ServerName, db: d.DB, rs: d.Rooms, accounts: d.Accounts,
		notify: d.Notify, log: d.Log, version: d.Version, federation: d.Federation}
	a.jobs.init(d.Log)
	return a
}

// Close stops background jobs (history purges, room deletions) and waits
// for them.
func (a *API) Close() { a.jobs.close() }

// Routes registers /_synapse/admin on the root router.
func (a *API) Routes(root *mux.Router, authn *auth.Authenticator) {
	h := func(path string, fn httputil.Handler, methods ...string) {
		root.Handle("/_synapse/admin"+path, a.adminOnly(authn, fn)).Methods(methods...)
	}
	h("/v1/server_version", a.serverVersion, "GET")

	h("/v2/users", a.listUsers, "GET")
	h("/v2/users/{userId}", a.getUser, "GET")
	h("/v2/users/{userId}", a.putUser, "PUT")
	h("/v1/users/{userId}/admin", a.getAdmin, "GET")
	h("/v1/users/{userId}/admin", a.putAdmin, "PUT")
	h("/v1/users/{userId}/joined_rooms", a.userJoinedRooms, "GET")
	h("/v1/deactivate/{userId}", a.deactivate, "POST")
	h("/v1/reset_password/{userId}", a.resetPassword, "POST")
	h("/v2/users/{userId}/devices", a.listDevices, "GET")
	h("/v2/users/{userId}/devices/{deviceId}", a.getDevice, "GET")
	h("/v2/users/{userId}/devices/{deviceId}", a.deleteDevice, "DELETE")
	h("/v2/users/{userId}/delete_devices", a.deleteDevices, "POST")
	h("/v1/whois/{userId}", a.whois, "GET")

	h("/v1/rooms", a.listRooms, "GET")
	h("/v1/rooms/{roomId}", a.getRoom, "GET")
	h("/v1/rooms/{roomId}/members", a.roomMembers, "GET")
	h("/v1/rooms/{roomId}/state", a.roomState, "GET")
	h("/v1/rooms/{roomId}", a.deleteRoom, "DELETE")
	h("/v2/rooms/{roomId}", a.deleteRoomAsync, "DELETE")
	h("/v2/rooms/{roomId}/delete_status", a.roomDeleteStatus, "GET")
	h("/v2/rooms/delete_status/{deleteId}", a.deleteStatus, "GET")
	h("/v1/rooms/{roomId}/block", a.getBlock, "GET")
	h("/v1/rooms/{roomId}/block", a.putBlock, "PUT")

	h("/v1/send_server_notice", a.sendServerNotice, "POST")
	h("/v1/send_server_notice/{txnId}", a.sendServerNotice, "PUT")

	h("/v1/purge_history/{roomId}", a.purgeHistory, "POST")
	h("/v1/purge_history/{roomId}/{eventId}", a.purgeHistory, "POST")
	h("/v1/purge_history_status/{purgeId}", a.purgeStatus, "GET")

	h("/v1/event_reports", a.eventReports, "GET")
	h("/v1/event_reports/{reportId}", a.eventReport, "GET")

	// Repeater's own: how received events reached this server (recorded in
	// the amateur-radio mode, FCC §97.219).
	rh := func(path string, fn httputil.Handler) {
		root.Handle("/_repeater/admin"+path, a.adminOnly(authn, fn)).Methods("GET")
	}
	rh("/v1/event_relays/{eventId}", a.eventRelay)
	rh("/v1/rooms/{roomId}/event_relays", a.roomRelays)
}

// ClientRoutes registers the client API's admin endpoint on a
// /_matrix/client/{v3,r0} router: GET /admin/whois/{userId}, for server
// admins and the user themself (Client-Server API, "Server
// administration").
func (a *API) ClientRoutes(c *mux.Router, authn *auth.Authenticator) {
	c.Handle("/admin/whois/{userId}", authn.Require(httputil.JSON(a.log, a.clientWhois))).Methods("GET")
}

// adminOnly runs h for server admins only.
// (Guests get past the token check to be refused like other non-admins.)
func (a *API) adminOnly(authn *auth.Authenticator, h httputil.Handler) http.Handler {
	return authn.AllowGuests(httputil.JSON(a.log, func(r *http.Request) (any, error) {
		if err := a.requireAdmin(r.Context(), auth.FromContext(r.Context())); err != nil {
			return nil, err
		}
		return h(r)
	}))
}

func (a *API) requireAdmin(ctx context.Context, d *auth.Device) error {
	acct, err := a.db.GetAccount(ctx, d.Localpart)
	if err != nil {
		return err
	}
	if !acct.IsAdmin || acct.Deactivated {
		return httputil.Forbidden("You are not a server admin")
	}
	return nil
}

// serverVersion handles GET /v1/server_version.
func (a *API) serverVersion(r *http.Request) (any, error) {
	return map[string]any{"server_version": "Repeater/" + a.version}, nil
}

// localpart returns the localpart of a local user ID.
func (a *API) localpart(userID string) (string, error) {
	uid, err := spec.NewUserID(userID, true)
	if err != nil || uid.Local() == "" {
		return "", httputil.InvalidParam("Invalid user ID")
	}
	if string(uid.Domain()) != a.serverName {
		return "", httputil.InvalidParam("Can only manage local users")
	}
	return uid.Local(), nil
}

// account returns a local user's account; 404 M_NOT_FOUND if none.
func (a *API) account(ctx context.Context, userID string) (*storage.AccountInfo, error) {
	lp, err := a.localpart(userID)
	if err != nil {
		return nil, err
	}
	acct, err := a.db.AccountDetails(ctx, lp)
	if err != nil {
		if err == storage.ErrNotFound {
			return nil, httputil.NotFound("User not found")
		}
		return nil, err
	}
	return acct, nil
}

func (a *API) userID(localpart string) string { return "@" + localpart + ":" + a.serverName }

// page reads from (an offset) and limit query parameters.
func page(r *http.Request, defLimit int) (offset, limit int, err error) {
	q := r.URL.Query()
	limit = defLimit
	if s := q.Get("from"); s != "" {
		if offset, err = strconv.Atoi(s); err != nil || offset < 0 {
			return 0, 0, httputil.InvalidParam("from must be a non-negative integer")
		}
	}
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 0 {
			return 0, 0, httputil.InvalidParam("limit must be a non-negative integer")
		}
	}
	return offset, min(limit, 1000), nil
}

// boolParam reads a true/false query parameter.
func boolParam(r *http.Request, name string, def bool) (bool, error) {
	switch strings.ToLower(r.URL.Query().Get(name)) {
	case "":
		return def, nil
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, httputil.InvalidParam(name + " must be true or false")
}

// dirParam reads dir (f or b); it reports whether it is b.
func dirParam(r *http.Request) (bool, error) {
	switch r.URL.Query().Get("dir") {
	case "", "f":
		return false, nil
	case "b":
		return true, nil
	}
	return false, httputil.InvalidParam("dir must be f or b")
}

// nullable is s, or JSON null when empty.
func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}
