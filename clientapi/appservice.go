package clientapi

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/tidwall/gjson"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/storage"
)

// AppServices are the configured application services (spec: Application
// Service API), as the client API sees them.
type AppServices interface {
	// ForToken is the service whose as_token this is, or nil.
	ForToken(tok string) auth.AppService
	// HoldsUser reports whether a service holds the user ID exclusively.
	HoldsUser(userID string) bool
	// AliasHolder is the ID of the service holding a room alias
	// exclusively, or "".
	AliasHolder(alias string) string
	// QueryAlias and QueryUser ask the services whose namespaces include
	// an unknown alias or user to make it (spec: "Querying"); they report
	// whether one did.
	QueryAlias(ctx context.Context, alias string) bool
	QueryUser(ctx context.Context, userID string) bool
}

// localAlias resolves an alias of this server, asking the application
// services about one that is unknown.
func (a *API) localAlias(ctx context.Context, alias string) (string, error) {
	roomID, _, err := a.db.ResolveAlias(ctx, alias)
	if errors.Is(err, storage.ErrNotFound) && a.as != nil && a.as.QueryAlias(ctx, alias) {
		roomID, _, err = a.db.ResolveAlias(ctx, alias)
	}
	return roomID, err
}

// loginTypeAppService is the registration and login type of application
// services ("Server admin style permissions", m.login.application_service).
const loginTypeAppService = "m.login.application_service"

// callingAppService is the application service whose as_token the request
// carries; 401 if it carries none that is one.
func (a *API) callingAppService(r *http.Request) (auth.AppService, error) {
	tok := auth.TokenFromRequest(r)
	if tok == "" {
		return nil, httputil.Err(401, "M_MISSING_TOKEN", "An application service's as_token is required")
	}
	if a.as != nil {
		if as := a.as.ForToken(tok); as != nil {
			return as, nil
		}
	}
	return nil, httputil.Err(401, "M_UNKNOWN_TOKEN", "Unknown application service token")
}

// registerAppServiceUser handles POST /register with type
// m.login.application_service: a user of the service's namespace, made
// without a password or user-interactive authentication.
func (a *API) registerAppServiceUser(r *http.Request, username string, body []byte) (any, error) {
	as, err := a.callingAppService(r)
	if err != nil {
		return nil, err
	}
	if username == "" {
		return nil, httputil.MissingParam("username is required")
	}
	if err := a.localpartSyntax(username); err != nil {
		return nil, err
	}
	if !as.OwnsUser("@" + username + ":" + a.serverName) {
		return nil, httputil.Err(400, "M_EXCLUSIVE", "The user name is not in the application service's namespace")
	}
	return a.createAccountAndLogin(r, username, "", false, body)
}

// loginAppServiceUser handles POST /login with type
// m.login.application_service: a token for a user of the service's
// namespace.
func (a *API) loginAppServiceUser(r *http.Request, body []byte) (any, error) {
	as, err := a.callingAppService(r)
	if err != nil {
		return nil, err
	}
	user := gjson.GetBytes(body, "identifier.user").Str
	if user == "" {
		user = gjson.GetBytes(body, "user").Str
	}
	lp, err := a.localpartFromUser(user)
	if err != nil || lp == "" {
		return nil, httputil.Forbidden("Not a local user")
	}
	if !as.OwnsUser("@" + lp + ":" + a.serverName) {
		return nil, httputil.Forbidden("The user is not in the application service's namespace")
	}
	if acct, err := a.db.GetAccount(r.Context(), lp); err != nil || acct.Deactivated {
		return nil, httputil.Forbidden("Unknown or deactivated user")
	}
	tok, deviceID, err := a.newDevice(r, lp, gjson.GetBytes(body, "device_id").Str, gjson.GetBytes(body, "initial_device_display_name").Str)
	if err != nil {
		return nil, err
	}
	return map[string]any{"user_id": "@" + lp + ":" + a.serverName, "access_token": tok, "device_id": deviceID, "home_server": a.serverName}, nil
}

// exclusiveToAppService refuses an ordinary registration of a user name an
// application service holds exclusively.
func (a *API) exclusiveToAppService(username string) error {
	if a.as != nil && a.as.HoldsUser("@"+username+":"+a.serverName) {
		return httputil.Err(400, "M_EXCLUSIVE", "This user name is reserved by an application service")
	}
	return nil
}

// askAppServicesForUser lets the application services make a local user
// that is invited before it exists (spec: "Querying": a bridge creates
// its ghost users on demand).
func (a *API) askAppServicesForUser(ctx context.Context, userID string) {
	if a.as == nil || !strings.HasSuffix(userID, ":"+a.serverName) {
		return
	}
	lp, err := a.localpartFromUser(userID)
	if err != nil {
		return
	}
	if _, err := a.db.GetAccount(ctx, lp); errors.Is(err, storage.ErrNotFound) {
		a.as.QueryUser(ctx, userID)
	}
}

// putNetworkListing handles PUT and DELETE
// /directory/list/appservice/{networkId}/{roomId}: an application service
// publishes a room in (or removes it from) its network's own public room
// list.
func (a *API) putNetworkListing(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	if d.AppServiceID == "" {
		return nil, httputil.Forbidden("Only application services have network room lists")
	}
	v := vars(r)
	if _, err := a.rs.RoomVersion(r.Context(), v["roomId"]); err != nil {
		return nil, err
	}
	listed := false
	if r.Method == http.MethodPut {
		body, err := httputil.ReadBody(r, httputil.MaxBody, false)
		if err != nil {
			return nil, err
		}
		switch gjson.GetBytes(body, "visibility").Str {
		case "public":
			listed = true
		case "private":
		default:
			return nil, httputil.InvalidParam("visibility must be public or private")
		}
	}
	return struct{}{}, a.db.SetNetworkListing(r.Context(), d.AppServiceID, v["networkId"], v["roomId"], listed)
}
