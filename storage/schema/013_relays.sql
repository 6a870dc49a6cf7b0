-- Amateur-radio mode (FCC Part 97, §97.219: a station that forwards
-- messages is accountable for what it relays): for each event received
-- from another server, the peer that relayed it (the server that pushed it,
-- or the one we fetched it from) and that peer's network address. Shown by
-- the admin API (/_repeater/admin/v1/event_relays). Written only in the mode.
CREATE TABLE event_relays (
    event_id    TEXT PRIMARY KEY,
    room_id     TEXT NOT NULL,
    server      TEXT NOT NULL,
    addr        TEXT NOT NULL,
    received_ts BIGINT NOT NULL
);
CREATE INDEX event_relays_room ON event_relays (room_id, received_ts);
