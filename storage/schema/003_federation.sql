-- Federation (Server-Server API).

-- Outliers: events held for their state or auth chains (from a join, state
-- or auth-chain response) but not part of the room's timeline. They and
-- backfilled history get negative stream positions (counter row 2), so they
-- never appear in a sync range.
ALTER TABLE events ADD COLUMN outlier INTEGER NOT NULL DEFAULT 0;
INSERT INTO stream_counter (id, pos) VALUES (2, 0);

-- Other servers' signing keys (key ring cache). valid_until_ts for current
-- keys; expired_ts for old_verify_keys (0 when current).
CREATE TABLE server_keys (
    server_name    TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    public_key     TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts     BIGINT NOT NULL,
    fetched_ts     BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

-- The outbound queue: PDUs (by event NID) and EDUs (JSON) per destination,
-- written in the same transaction as the event, deleted once delivered.
-- IDs are never reused: they name outbound transactions.
CREATE TABLE federation_outbox (
    id          {{SERIAL}},
    destination TEXT NOT NULL,
    event_nid   BIGINT NOT NULL DEFAULT 0,
    edu         TEXT,
    created_ts  BIGINT NOT NULL
);
CREATE INDEX federation_outbox_dest ON federation_outbox (destination, id);

-- Inbound transactions already processed, per origin (idempotent /send).
CREATE TABLE federation_inbound_txns (
    origin     TEXT NOT NULL,
    txn_id     TEXT NOT NULL,
    response   TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);

-- Invites from other servers to rooms this server is not in: the stripped
-- state the inviting server sent (spec: "Inviting to a room"), shown to the
-- invited user until they join or reject.
CREATE TABLE remote_invites (
    room_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    event_nid    BIGINT NOT NULL,
    room_version TEXT NOT NULL,
    stripped     TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- Backward extremities: events referenced as prev_events that this server
-- does not hold in its timeline (history before a late join, or a gap),
-- with the depth of the event referring to them. Backfill fills them.
CREATE TABLE room_gaps (
    room_id  TEXT NOT NULL,
    event_id TEXT NOT NULL,
    depth    BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- OpenID tokens a user requested to prove their identity to a third party
-- (spec: "OpenID"); the third party checks them through federation.
CREATE TABLE openid_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);

-- Other servers' key responses as they signed them, per key ID (the
-- notary serves them with its own signature added).
CREATE TABLE server_key_responses (
    server_name    TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    response       TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
