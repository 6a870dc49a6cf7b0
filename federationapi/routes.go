package federationapi

import (
	"net/http"

	"github.com/gorilla/mux"

	"repeater/internal/httputil"
)

// Routes registers /_matrix/key/* and /_matrix/federation/* on root.
func (a *API) Routes(root *mux.Router) {
	key := root.PathPrefix("/_matrix/key/v2").Subrouter()
	key.Handle("/server", httputil.JSON(a.log, a.serverKeys)).Methods(http.MethodGet)
	key.Handle("/server/{keyId}", httputil.JSON(a.log, a.serverKeys)).Methods(http.MethodGet)
	key.Handle("/query", httputil.JSON(a.log, a.keyQuery)).Methods(http.MethodPost)
	key.Handle("/query/{serverName}", httputil.JSON(a.log, a.keyQuery)).Methods(http.MethodGet)
	key.Handle("/query/{serverName}/{keyId}", httputil.JSON(a.log, a.keyQuery)).Methods(http.MethodGet)

	v1 := root.PathPrefix("/_matrix/federation/v1").Subrouter()
	v2 := root.PathPrefix("/_matrix/federation/v2").Subrouter()
	v1.Handle("/version", httputil.JSON(a.log, a.serverVersion)).Methods(http.MethodGet)
	v1.Handle("/openid/userinfo", httputil.JSON(a.log, a.openIDUserInfo)).Methods(http.MethodGet)
	v1.Handle("/send/{txnId}", a.authed(a.send)).Methods(http.MethodPut)
	v1.Handle("/make_join/{roomId}/{userId}", a.authed(a.makeMembership("join"))).Methods(http.MethodGet)
	v1.Handle("/make_leave/{roomId}/{userId}", a.authed(a.makeMembership("leave"))).Methods(http.MethodGet)
	v1.Handle("/make_knock/{roomId}/{userId}", a.authed(a.makeMembership("knock"))).Methods(http.MethodGet)
	v1.Handle("/send_knock/{roomId}/{eventId}", a.authed(a.sendMembership("knock", false))).Methods(http.MethodPut)
	v1.Handle("/send_join/{roomId}/{eventId}", a.authed(a.sendMembership("join", true))).Methods(http.MethodPut)
	v2.Handle("/send_join/{roomId}/{eventId}", a.authed(a.sendMembership("join", false))).Methods(http.MethodPut)
	v1.Handle("/send_leave/{roomId}/{eventId}", a.authed(a.sendMembership("leave", true))).Methods(http.MethodPut)
	v2.Handle("/send_leave/{roomId}/{eventId}", a.authed(a.sendMembership("leave", false))).Methods(http.MethodPut)
	v1.Handle("/invite/{roomId}/{eventId}", a.authed(a.invite(true))).Methods(http.MethodPut)
	v2.Handle("/invite/{roomId}/{eventId}", a.authed(a.invite(false))).Methods(http.MethodPut)
	v1.Handle("/event/{eventId}", a.authed(a.getEvent)).Methods(http.MethodGet)
	v1.Handle("/state/{roomId}", a.authed(a.stateAt(false))).Methods(http.MethodGet)
	v1.Handle("/state_ids/{roomId}", a.authed(a.stateAt(true))).Methods(http.MethodGet)
	v1.Handle("/event_auth/{roomId}/{eventId}", a.authed(a.eventAuth)).Methods(http.MethodGet)
	v1.Handle("/backfill/{roomId}", a.authed(a.backfill)).Methods(http.MethodGet)
	v1.Handle("/get_missing_events/{roomId}", a.authed(a.missingEvents)).Methods(http.MethodPost)
	v1.Handle("/timestamp_to_event/{roomId}", a.authed(a.timestampToEvent)).Methods(http.MethodGet)
	v1.Handle("/hierarchy/{roomId}", a.authed(a.hierarchy)).Methods(http.MethodGet)
	v1.Handle("/publicRooms", a.authed(a.publicRooms)).Methods(http.MethodGet, http.MethodPost)
	v1.Handle("/user/keys/query", a.authed(a.userKeysQuery)).Methods(http.MethodPost)
	v1.Handle("/user/keys/claim", a.authed(a.userKeysClaim)).Methods(http.MethodPost)
	v1.Handle("/user/devices/{userId}", a.authed(a.userDevices)).Methods(http.MethodGet)
	v1.Handle("/query/profile", a.authed(a.queryProfile)).Methods(http.MethodGet)
	v1.Handle("/query/directory", a.authed(a.queryDirectory)).Methods(http.MethodGet)
}
