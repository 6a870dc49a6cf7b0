package main

import (
	"context"
	"errors"

	"repeater/appservice"
	"repeater/internal/config"
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
