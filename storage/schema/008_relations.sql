-- Relations between events (spec: Client-Server API, "Forming relationships
-- between events"): one row per accepted, non-outlier event whose
-- content.m.relates_to names a parent (rel_type and event_id). Written in
-- the same transaction as the event (Tx.InsertEvent); removed when the
-- child is redacted (redaction strips content). The parent may not be held
-- (yet); readers join on it. depth/stream_pos order children
-- topologically, as /messages does.
CREATE TABLE event_relations (
    event_id        TEXT PRIMARY KEY,
    stream_pos      BIGINT NOT NULL,
    room_id         TEXT NOT NULL,
    relates_to      TEXT NOT NULL,
    rel_type        TEXT NOT NULL,
    type            TEXT NOT NULL,
    sender          TEXT NOT NULL,
    depth           BIGINT NOT NULL,
    origin_ts       BIGINT NOT NULL,
    -- content.m.relates_to.key of an annotation (reaction), else NULL
    aggregation_key TEXT
);
CREATE INDEX event_relations_parent ON event_relations (relates_to, depth, stream_pos);
CREATE INDEX event_relations_parent_type ON event_relations (relates_to, rel_type, depth, stream_pos);
CREATE INDEX event_relations_sender ON event_relations (sender, rel_type, relates_to);
CREATE INDEX event_relations_room ON event_relations (room_id);

-- Thread summaries (spec: "Threading"): per thread root, the number of
-- m.thread children and the topologically latest one. Kept up to date
-- with event_relations; /threads pages through a room's threads by their
-- latest event, and bundled m.thread aggregations read from here.
CREATE TABLE threads (
    room_id         TEXT NOT NULL,
    root_id         TEXT NOT NULL,
    reply_count     BIGINT NOT NULL,
    latest_event_id TEXT NOT NULL,
    latest_depth    BIGINT NOT NULL,
    latest_pos      BIGINT NOT NULL,
    PRIMARY KEY (room_id, root_id)
);
CREATE INDEX threads_root ON threads (root_id);
CREATE INDEX threads_latest ON threads (room_id, latest_depth, latest_pos);
