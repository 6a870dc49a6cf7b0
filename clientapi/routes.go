package clientapi

import (
	"net/http"

	"github.com/gorilla/mux"

	"repeater/internal/auth"
	"repeater/internal/httputil"
)

// RootRoutes registers the endpoints outside /_matrix/client/{v3,r0}.
func (a *API) RootRoutes(root *mux.Router) {
	j := func(h httputil.Handler) http.Handler { return httputil.JSON(a.log, h) }
	root.Handle("/_matrix/client/versions", j(a.versions)).Methods("GET")
	root.Handle("/.well-known/matrix/client", j(a.wellKnown)).Methods("GET")
	root.Handle("/_synapse/admin/v1/register", j(a.adminRegisterNonce)).Methods("GET")
	root.Handle("/_synapse/admin/v1/register", j(a.adminRegister)).Methods("POST")
}

// Routes registers the client API on a /_matrix/client/{v3,r0} router.
func (a *API) Routes(c *mux.Router, authn *auth.Authenticator) {
	j := func(h httputil.Handler) http.Handler { return httputil.JSON(a.log, h) }
	authed := func(h httputil.Handler) http.Handler { return authn.Require(j(h)) }
	guestOK := func(h httputil.Handler) http.Handler { return authn.AllowGuests(j(h)) }
	{
		c.Handle("/register", j(a.register)).Methods("POST")
		c.Handle("/register/available", j(a.registerAvailable)).Methods("GET")
		c.Handle("/login", j(a.loginFlows)).Methods("GET")
		c.Handle("/login", j(a.login)).Methods("POST")
		c.Handle("/logout", guestOK(a.logout)).Methods("POST")
		c.Handle("/logout/all", authed(a.logoutAll)).Methods("POST")
		c.Handle("/account/whoami", guestOK(a.whoami)).Methods("GET")
		c.Handle("/account/password", authed(a.changePassword)).Methods("POST")
		c.Handle("/account/deactivate", authed(a.deactivate)).Methods("POST")
		c.Handle("/capabilities", guestOK(a.capabilities)).Methods("GET")

		c.Handle("/devices", authed(a.devices)).Methods("GET")
		c.Handle("/devices/{deviceId}", authed(a.getDevice)).Methods("GET")
		c.Handle("/devices/{deviceId}", authed(a.putDevice)).Methods("PUT")
		c.Handle("/devices/{deviceId}", authed(a.deleteDevice)).Methods("DELETE")
		c.Handle("/delete_devices", authed(a.deleteDevices)).Methods("POST")

		c.Handle("/profile/{userId}", j(a.getProfile)).Methods("GET")
		c.Handle("/profile/{userId}/{field:displayname|avatar_url}", j(a.getProfile)).Methods("GET")
		c.Handle("/profile/{userId}/{field:displayname|avatar_url}", guestOK(a.putProfile)).Methods("PUT")

		c.Handle("/createRoom", authed(a.createRoom)).Methods("POST")
		c.Handle("/join/{room}", guestOK(a.join)).Methods("POST")
		c.Handle("/knock/{room}", authed(a.knock)).Methods("POST")
		c.Handle("/rooms/{room}/join", guestOK(a.join)).Methods("POST")
		for _, action := range []string{"invite", "kick", "ban", "unban"} {
			c.Handle("/rooms/{roomId}/"+action, authed(a.membership(action))).Methods("POST")
		}
		c.Handle("/rooms/{roomId}/leave", guestOK(a.membership("leave"))).Methods("POST")
		c.Handle("/rooms/{roomId}/forget", authed(a.forget)).Methods("POST")
		c.Handle("/rooms/{roomId}/send/{eventType}/{txnId}", guestOK(a.send)).Methods("PUT")
		c.Handle("/rooms/{roomId}/send/{eventType}", guestOK(a.send)).Methods("POST")
		c.Handle("/rooms/{roomId}/redact/{eventId}/{txnId}", authed(a.redact)).Methods("PUT")
		c.Handle("/rooms/{roomId}/redact/{eventId}", authed(a.redact)).Methods("POST") // r0 form, no txnId
		c.Handle("/rooms/{roomId}/state", guestOK(a.getState)).Methods("GET")
		c.Handle("/rooms/{roomId}/state/{eventType}", guestOK(a.getStateEvent)).Methods("GET")
		c.Handle("/rooms/{roomId}/state/{eventType}/{stateKey:.*}", guestOK(a.getStateEvent)).Methods("GET")
		c.Handle("/rooms/{roomId}/state/{eventType}", authed(a.putState)).Methods("PUT")
		c.Handle("/rooms/{roomId}/state/{eventType}/{stateKey:.*}", authed(a.putState)).Methods("PUT")
		c.Handle("/rooms/{roomId}/event/{eventId}", guestOK(a.getEvent)).Methods("GET")
		c.Handle("/rooms/{roomId}/members", guestOK(a.members)).Methods("GET")
		c.Handle("/rooms/{roomId}/joined_members", guestOK(a.joinedMembers)).Methods("GET")
		c.Handle("/rooms/{roomId}/aliases", authed(a.roomAliases)).Methods("GET")
		c.Handle("/joined_rooms", guestOK(a.joinedRooms)).Methods("GET")

		c.Handle("/directory/room/{alias}", j(a.getAlias)).Methods("GET")
		c.Handle("/directory/room/{alias}", authed(a.putAlias)).Methods("PUT")
		c.Handle("/directory/room/{alias}", authed(a.deleteAlias)).Methods("DELETE")
		c.Handle("/directory/list/room/{roomId}", j(a.getDirectoryVisibility)).Methods("GET")
		c.Handle("/directory/list/room/{roomId}", authed(a.putDirectoryVisibility)).Methods("PUT")
		c.Handle("/directory/list/appservice/{networkId}/{roomId}", authed(a.putNetworkListing)).Methods("PUT", "DELETE") // appservice.go
		c.Handle("/publicRooms", j(a.publicRooms)).Methods("GET", "POST")
		c.Handle("/search", authed(a.search)).Methods("POST")                             // search.go
		c.Handle("/user_directory/search", authed(a.userDirectorySearch)).Methods("POST") // userdir.go

		c.Handle("/user/{userId}/filter", guestOK(a.postFilter)).Methods("POST")
		c.Handle("/user/{userId}/openid/request_token", authed(a.openIDToken)).Methods("POST")
		c.Handle("/keys/upload", authed(a.keysUpload)).Methods("POST")
		c.Handle("/keys/query", authed(a.keysQuery)).Methods("POST")
		c.Handle("/keys/claim", authed(a.keysClaim)).Methods("POST")
		c.Handle("/keys/changes", authed(a.keysChanges)).Methods("GET")
		c.Handle("/keys/device_signing/upload", authed(a.deviceSigningUpload)).Methods("POST")
		c.Handle("/keys/signatures/upload", authed(a.signaturesUpload)).Methods("POST")
		c.Handle("/sendToDevice/{eventType}/{txnId}", authed(a.sendToDevice)).Methods("PUT")
		c.Handle("/user/{userId}/filter/{filterId}", guestOK(a.getFilter)).Methods("GET")
		c.Handle("/user/{userId}/rooms/{roomId}/tags", authed(a.getTags)).Methods("GET")
		c.Handle("/user/{userId}/rooms/{roomId}/tags/{tag}", authed(a.changeTag(true))).Methods("PUT")
		c.Handle("/user/{userId}/rooms/{roomId}/tags/{tag}", authed(a.changeTag(false))).Methods("DELETE")
		c.Handle("/account/3pid", authed(a.threepids)).Methods("GET")
		c.Handle("/pushrules/{rest:.*}", authed(a.getPushRules)).Methods("GET")
		c.Handle("/pushrules/{rest:.*}", authed(a.changePushRules)).Methods("PUT", "DELETE")
		c.Handle("/pushers", authed(a.getPushers)).Methods("GET")
		c.Handle("/pushers/set", authed(a.setPusher)).Methods("POST")
		c.Handle("/user/{userId}/account_data/{type}", guestOK(a.putAccountData)).Methods("PUT")
		c.Handle("/user/{userId}/account_data/{type}", guestOK(a.getAccountData)).Methods("GET")
		c.Handle("/user/{userId}/rooms/{roomId}/account_data/{type}", guestOK(a.putAccountData)).Methods("PUT")
		c.Handle("/user/{userId}/rooms/{roomId}/account_data/{type}", guestOK(a.getAccountData)).Methods("GET")
	}
	a.miscRoutes(c, authn) // clientmisc.go: key backup, VoIP, third party, reports, upgrades, 3PIDs
}

// V1Routes registers the /_matrix/client/v1 endpoints.
func (a *API) V1Routes(c *mux.Router, authn *auth.Authenticator) {
	c.Handle("/rooms/{roomId}/hierarchy", authn.AllowGuests(httputil.JSON(a.log, a.hierarchy))).Methods("GET")
	a.miscV1Routes(c, authn) // clientmisc.go: timestamp_to_event, login/get_token
}
