package main

import (
	"context"
	"errors"
	"slices"

	"repeater/appservice"
	"repeater/internal/config"
	"repeater/roomserver"
	"repeater/storage"
)

// appServices loads the application service registrations (a bad file
// stops start-up, naming it) and makes each service's sender account.
func appServices(ctx context.Context, cfg *config.Config, db *storage.DB) (*appservice.Set, error) {
	paths := make([]string, len(cfg.AppServiceConfigFiles))
	for i, p := range cfg.AppServiceConfigFiles {
		paths[i] = cfg.Path(p)
	}
	set, err := appservice.Load(paths, cfg.ServerName)
	if err != nil {
		return nil, err
	}
	for _, r := range set.All() {
		// No password: the sender acts only through the service's token.
		err := db.CreateAccount(ctx, storage.Account{Localpart: r.SenderLocalpart, DisplayName: r.SenderLocalpart})
		if err != nil && !errors.Is(err, storage.ErrConflict) {
			return nil, err
		}
	}
	return set, nil
}

// appServiceRouter gives the roomserver the services' interest in events
// and tells the pusher (made after the roomserver it reads from) of new
// ones.
type appServiceRouter struct {
	set             *appservice.Set
	db              *storage.DB
	aliasNamespaces bool
	pusher          *appservice.Pusher
}

// orNil is the router, or no router at all when no service is configured
// (the roomserver then skips the work).
func (r *appServiceRouter) orNil() roomserver.AppServiceRouter {
	if len(r.set.All()) == 0 {
		return nil
	}
	return r
}

func (r *appServiceRouter) Interested(roomID, sender string, stateKey *string, members map[string]string) []string {
	ids := r.set.Interested(roomID, sender, stateKey, members)
	if r.aliasNamespaces {
		// A room with an alias in a service's namespace is that service's
		// to see: one indexed lookup per event, only when some service has
		// alias namespaces.
		if aliases, err := r.db.RoomAliases(context.Background(), roomID); err == nil && len(aliases) > 0 {
			for _, id := range r.set.InterestedInAliases(aliases) {
				if !slices.Contains(ids, id) {
					ids = append(ids, id)
				}
			}
		}
	}
	return ids
}

func (r *appServiceRouter) Queued(services []string) {
	if r.pusher != nil {
		r.pusher.Queued(services)
	}
}
