-- Repeater schema, version 1. Dialect tokens: {{PK}} = auto-assigned 64-bit
-- primary key; {{INTPK}} = 64-bit primary key we assign. Timestamps are integer milliseconds. Booleans are INTEGER 0/1.

CREATE TABLE stream_counter (
    id  INTEGER PRIMARY KEY,
    pos BIGINT NOT NULL
);
INSERT INTO stream_counter (id, pos) VALUES (1, 0);

CREATE TABLE accounts (
    localpart     TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    is_admin      INTEGER NOT NULL DEFAULT 0,
    deactivated   INTEGER NOT NULL DEFAULT 0,
    created_ts    BIGINT NOT NULL,
    displayname   TEXT,
    avatar_url    TEXT
);

CREATE TABLE devices (
    localpart    TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    display_name TEXT,
    token_hash   TEXT NOT NULL UNIQUE,
    created_ts   BIGINT NOT NULL,
    last_seen_ts BIGINT NOT NULL,
    last_seen_ip TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (localpart, device_id)
);

CREATE TABLE rooms (
    room_id          TEXT PRIMARY KEY,
    room_version     TEXT NOT NULL,
    created_ts       BIGINT NOT NULL,
    published        INTEGER NOT NULL DEFAULT 0,
    current_snapshot BIGINT NOT NULL DEFAULT 0,
    max_depth        BIGINT NOT NULL DEFAULT 0,
    -- forward extremities: a JSON array of event IDs
    extremities      TEXT NOT NULL DEFAULT '[]'
);

-- Every event, stored once, byte-for-byte. stream_pos (also the event's
-- numeric ID, "nid", elsewhere) orders the sync stream; (depth, stream_pos)
-- orders pagination. before_snapshot/after_snapshot are the room state
-- before and after the event.
CREATE TABLE events (
    stream_pos      {{INTPK}},
    event_id        TEXT NOT NULL UNIQUE,
    room_id         TEXT NOT NULL,
    type            TEXT NOT NULL,
    state_key       TEXT,
    sender          TEXT NOT NULL,
    depth           BIGINT NOT NULL,
    origin_ts       BIGINT NOT NULL,
    before_snapshot BIGINT NOT NULL,
    after_snapshot  BIGINT NOT NULL,
    replaces_nid    BIGINT NOT NULL DEFAULT 0,
    rejected        INTEGER NOT NULL DEFAULT 0,
    redacted_by     TEXT,
    txn_id          TEXT,
    txn_device      TEXT,
    json            TEXT NOT NULL
);
CREATE INDEX events_room_stream ON events (room_id, stream_pos);
CREATE INDEX events_room_topo ON events (room_id, depth, stream_pos);
CREATE INDEX events_member ON events (state_key, stream_pos) WHERE type = 'm.room.member';

-- State snapshots are deltas on a parent snapshot; a chain is flattened into a
-- full copy when it gets long, so reading a snapshot is bounded.
CREATE TABLE state_snapshots (
    snapshot_id {{INTPK}},
    room_id     TEXT NOT NULL,
    parent_id   BIGINT NOT NULL,
    chain_len   INTEGER NOT NULL
);
CREATE TABLE state_snapshot_entries (
    snapshot_id BIGINT NOT NULL,
    type        TEXT NOT NULL,
    state_key   TEXT NOT NULL,
    event_nid   BIGINT NOT NULL,
    PRIMARY KEY (snapshot_id, type, state_key)
);

CREATE TABLE current_state (
    room_id    TEXT NOT NULL,
    type       TEXT NOT NULL,
    state_key  TEXT NOT NULL,
    event_nid  BIGINT NOT NULL,
    membership TEXT,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_members ON current_state (state_key, membership) WHERE type = 'm.room.member';

CREATE TABLE txn_ids (
    localpart  TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    txn_id     TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (localpart, device_id, txn_id)
);

CREATE TABLE account_data (
    localpart  TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    type       TEXT NOT NULL,
    content    TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (localpart, room_id, type)
);
CREATE INDEX account_data_stream ON account_data (localpart, stream_pos);

CREATE TABLE filters (
    filter_id {{PK}},
    localpart TEXT NOT NULL,
    json      TEXT NOT NULL
);

CREATE TABLE room_aliases (
    alias   TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

CREATE TABLE receipts (
    room_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    thread_id    TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    ts           BIGINT NOT NULL,
    stream_pos   BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_stream ON receipts (room_id, stream_pos);

CREATE TABLE room_forgotten (
    localpart TEXT NOT NULL,
    room_id   TEXT NOT NULL,
    PRIMARY KEY (localpart, room_id)
);
