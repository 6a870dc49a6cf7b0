package storage

import "context"

// EnqueueAppService queues an event for each application service, in the
// event's write.
func (tx *Tx) EnqueueAppService(ctx context.Context, services []string, nid int64) error {
	for _, s := range services {
		if _, err := tx.ExecContext(ctx, `INSERT INTO appservice_outbox (service_id, event_nid, created_ts) VALUES ($1, $2, $3)`, s, nid, nowMS()); err != nil {
			return err
		}
	}
	return nil
}

// AppServiceItem is one queued event for a service.
type AppServiceItem struct {
	ID       int64
	EventNID int64
}

func scanAppServiceItem(sc interface{ Scan(...any) error }) (AppServiceItem, error) {
	var it AppServiceItem
	return it, sc.Scan(&it.ID, &it.EventNID)
}

// AppServiceOutbox returns a service's oldest queued events, up to upTo
// (0: any) and at most limit.
func (db *DB) AppServiceOutbox(ctx context.Context, service string, upTo int64, limit int) ([]AppServiceItem, error) {
	if upTo <= 0 {
		upTo = 1 << 62
	}
	return scanAll(scanAppServiceItem)(db.R().QueryContext(ctx, `SELECT id, event_nid FROM appservice_outbox
		WHERE service_id = $1 AND id <= $2 ORDER BY id LIMIT $3`, service, upTo, limit))
}

// DeleteAppServiceOutbox drops a service's items up to and including upTo.
func (db *DB) DeleteAppServiceOutbox(ctx context.Context, service string, upTo int64) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM appservice_outbox WHERE service_id = $1 AND id <= $2`, service, upTo)
		return err
	})
}
