-- Client API odds and ends: server-side key backup, content reports,
-- m.login.token login tokens, and an index for timestamp_to_event.

-- Key backup versions (spec: "Server-side key backups"). Versions are
-- numbered per user from 1 and never reused: a deleted version keeps its
-- row (deleted = 1) so that deleting it again succeeds and a later backup
-- gets a new number. etag counts changes to the version's keys.
CREATE TABLE key_backup_versions (
    user_id   TEXT NOT NULL,
    version   BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag      BIGINT NOT NULL DEFAULT 0,
    deleted   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
);

-- The backed-up session keys of a version; session_data is opaque JSON.
CREATE TABLE key_backup_keys (
    user_id             TEXT NOT NULL,
    version             BIGINT NOT NULL,
    room_id             TEXT NOT NULL,
    session_id          TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count     BIGINT NOT NULL,
    is_verified         INTEGER NOT NULL,
    session_data        TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);

-- Reports of events, rooms and users (spec: "Reporting content"), kept for
-- the server's administrators. kind is 'event', 'room' or 'user'.
CREATE TABLE reports (
    id             {{SERIAL}},
    kind           TEXT NOT NULL,
    reporter       TEXT NOT NULL,
    room_id        TEXT,
    event_id       TEXT,
    target_user_id TEXT,
    reason         TEXT NOT NULL DEFAULT '',
    score          BIGINT,
    received_ts    BIGINT NOT NULL
);
CREATE INDEX reports_room ON reports (room_id);

-- Single-use login tokens (POST /login/get_token, m.login.token), by hash.
CREATE TABLE login_tokens (
    token_hash TEXT PRIMARY KEY,
    localpart  TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);

-- timestamp_to_event: a room's events in origin_server_ts order.
CREATE INDEX events_room_origin_ts ON events (room_id, origin_ts, stream_pos);
