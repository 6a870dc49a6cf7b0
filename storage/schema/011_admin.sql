-- Administration: the Synapse-compatible admin API (/_synapse/admin) and
-- the console commands. Accounts already carry is_admin (001).

-- Erased accounts (deactivated with erase: true): their profile is gone.
ALTER TABLE accounts ADD COLUMN erased INTEGER NOT NULL DEFAULT 0;

-- The client a device was last seen with (last_seen_ts and last_seen_ip
-- are in 001). Written at most once a minute per device, off the request
-- path (storage/admin.go, SeenRecorder).
ALTER TABLE devices ADD COLUMN last_seen_user_agent TEXT NOT NULL DEFAULT '';

-- Rooms an administrator blocked: local users may not join them (again).
-- A room may be blocked before this server knows it.
CREATE TABLE blocked_rooms (
    room_id    TEXT PRIMARY KEY,
    blocked_by TEXT NOT NULL,
    blocked_ts BIGINT NOT NULL
);

-- History purges: timeline events below before_depth were deleted (state
-- events kept, as outliers). Gaps at or below the boundary are not
-- backfilled again (storage.Gaps), so the purged history stays purged.
CREATE TABLE room_history_purges (
    room_id      TEXT PRIMARY KEY,
    before_depth BIGINT NOT NULL,
    purged_ts    BIGINT NOT NULL
);

-- Each local user's server notices room (Client-Server API, "Server
-- Notices": exactly one per user).
CREATE TABLE server_notice_rooms (
    localpart TEXT PRIMARY KEY,
    room_id   TEXT NOT NULL
);
CREATE INDEX server_notice_rooms_room ON server_notice_rooms (room_id);
