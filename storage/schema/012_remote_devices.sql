-- Device lists over federation (Server-Server API, "Device Management").
--
-- Other servers' users' device lists, cached while one of our users shares
-- a room with them (their servers then send us m.device_list_update and
-- m.signing_key_update EDUs that keep the copy current). stream_id is the
-- owner's server's stream ID for the list as we hold it; stale marks a
-- copy to fetch afresh (user/devices) before it is trusted again.
CREATE TABLE remote_device_lists (
    user_id          TEXT PRIMARY KEY,
    stream_id        BIGINT NOT NULL,
    stale            INTEGER NOT NULL DEFAULT 0,
    master_key       TEXT,
    self_signing_key TEXT,
    updated_ts       BIGINT NOT NULL
);
CREATE TABLE remote_devices (
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    key_json     TEXT,
    PRIMARY KEY (user_id, device_id)
);
-- Our users' device-list stream IDs: each change of a user's devices sent
-- to other servers takes the next one (the EDU's stream_id; its prev_id is
-- the one before), and user/devices answers with the current one.
CREATE TABLE device_list_streams (
    user_id   TEXT PRIMARY KEY,
    stream_id BIGINT NOT NULL
);
-- A change only the user themself is told of (a new user-signing key).
ALTER TABLE device_list_changes ADD COLUMN self_pos BIGINT NOT NULL DEFAULT 0;
