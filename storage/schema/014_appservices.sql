-- Application services (Application Service API, "Pushing events"): events
-- each service is to receive, queued in the event's own write and deleted
-- once the service accepted the transaction carrying them, so that neither
-- a restart nor a service that is down loses any.
CREATE TABLE appservice_outbox (
    id         {{SERIAL}},
    service_id TEXT NOT NULL,
    event_nid  BIGINT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX appservice_outbox_service ON appservice_outbox (service_id, id);
