-- Server-side search (spec: Client-Server API, "Server Side Search") and
-- the user directory (spec: "User directory"). The full-text machinery
-- differs by dialect, so this file uses the "-- sqlite-only" and
-- "-- postgres-only" statement markers (storage/migrate.go). See
-- storage/search.go for why SQLite uses FTS4 and PostgreSQL uses the
-- 'simple' text search configuration.

-- event_search: the searchable text of m.room.message (content.body),
-- m.room.name (content.name) and m.room.topic (content.topic) events, keyed
-- by the event's NID (its stream position). Written in the transaction that
-- stores the event (Tx.InsertEvent, Tx.PromoteOutlier); deleted when the
-- event is redacted (Tx.MarkRedacted). Readers join events and check
-- rejected/outlier/redacted_by again.

-- sqlite-only
CREATE VIRTUAL TABLE event_search USING fts4(body, tokenize=unicode61);
-- sqlite-only
INSERT INTO event_search (docid, body)
SELECT stream_pos, json_extract(json, CASE type WHEN 'm.room.message' THEN '$.content.body' WHEN 'm.room.name' THEN '$.content.name' ELSE '$.content.topic' END)
FROM events
WHERE rejected = 0 AND outlier = 0 AND redacted_by IS NULL
  AND ((type = 'm.room.message') OR (type IN ('m.room.name', 'm.room.topic') AND state_key = ''))
  AND json_type(json, CASE type WHEN 'm.room.message' THEN '$.content.body' WHEN 'm.room.name' THEN '$.content.name' ELSE '$.content.topic' END) = 'text';

-- postgres-only
CREATE TABLE event_search (
    event_nid BIGINT PRIMARY KEY,
    vector    TSVECTOR NOT NULL
);
-- postgres-only
CREATE INDEX event_search_vector ON event_search USING GIN (vector);
-- Live rows get their text normalised in Go (searchNormalize: anything but
-- letters, digits and marks becomes a space) before to_tsvector; the
-- backfill approximates that with a regular expression. Events whose JSON
-- holds \u0000 (which jsonb refuses) are left out of the backfill.
-- postgres-only
INSERT INTO event_search (event_nid, vector)
SELECT stream_pos, to_tsvector('simple', regexp_replace(t, '[[:punct:][:space:]]+', ' ', 'g'))
FROM (
    SELECT stream_pos, CASE WHEN jsonb_typeof(j #> p) = 'string' THEN j #>> p END AS t
    FROM (
        SELECT stream_pos, json::jsonb AS j,
            CASE type WHEN 'm.room.message' THEN '{content,body}'::text[] WHEN 'm.room.name' THEN '{content,name}'::text[] ELSE '{content,topic}'::text[] END AS p
        FROM events
        WHERE rejected = 0 AND outlier = 0 AND redacted_by IS NULL
          AND ((type = 'm.room.message') OR (type IN ('m.room.name', 'm.room.topic') AND state_key = ''))
          AND json NOT LIKE '%\\u0000%'
    ) ev
) x
WHERE t IS NOT NULL AND t <> '';

-- room_publicity: each room's current join rule and history visibility,
-- kept by Tx.SetCurrentState. The user directory shows the members of
-- rooms that are public (join_rule public or history world_readable).
CREATE TABLE room_publicity (
    room_id            TEXT PRIMARY KEY,
    join_rule          TEXT NOT NULL DEFAULT '',
    history_visibility TEXT NOT NULL DEFAULT ''
);

-- user_directory: one row per user who is or was joined to a room we hold,
-- with the display name and avatar of their latest current join event
-- (Tx.SetCurrentState). Which users a searcher may find is decided at
-- query time from current_state and room_publicity.
CREATE TABLE user_directory (
    id           {{PK}},
    user_id      TEXT NOT NULL UNIQUE,
    display_name TEXT,
    avatar_url   TEXT
);

-- sqlite-only
CREATE VIRTUAL TABLE user_directory_search USING fts4(words, tokenize=unicode61);
-- postgres-only
ALTER TABLE user_directory ADD COLUMN words TSVECTOR NOT NULL DEFAULT '';
-- postgres-only
CREATE INDEX user_directory_words ON user_directory USING GIN (words);

-- sqlite-only
INSERT INTO room_publicity (room_id, join_rule, history_visibility)
SELECT r.room_id,
    COALESCE((SELECT json_extract(e.json, '$.content.join_rule') FROM current_state c JOIN events e ON e.stream_pos = c.event_nid
        WHERE c.room_id = r.room_id AND c.type = 'm.room.join_rules' AND c.state_key = '' AND json_type(e.json, '$.content.join_rule') = 'text'), ''),
    COALESCE((SELECT json_extract(e.json, '$.content.history_visibility') FROM current_state c JOIN events e ON e.stream_pos = c.event_nid
        WHERE c.room_id = r.room_id AND c.type = 'm.room.history_visibility' AND c.state_key = '' AND json_type(e.json, '$.content.history_visibility') = 'text'), '')
FROM rooms r;
-- postgres-only
INSERT INTO room_publicity (room_id, join_rule, history_visibility)
SELECT r.room_id,
    COALESCE((SELECT e.json::jsonb #>> '{content,join_rule}' FROM current_state c JOIN events e ON e.stream_pos = c.event_nid
        WHERE c.room_id = r.room_id AND c.type = 'm.room.join_rules' AND c.state_key = '' AND e.json NOT LIKE '%\\u0000%'), ''),
    COALESCE((SELECT e.json::jsonb #>> '{content,history_visibility}' FROM current_state c JOIN events e ON e.stream_pos = c.event_nid
        WHERE c.room_id = r.room_id AND c.type = 'm.room.history_visibility' AND c.state_key = '' AND e.json NOT LIKE '%\\u0000%'), '')
FROM rooms r;

-- sqlite-only
INSERT INTO user_directory (user_id, display_name, avatar_url)
SELECT c.state_key,
    CASE WHEN json_type(e.json, '$.content.displayname') = 'text' THEN json_extract(e.json, '$.content.displayname') END,
    CASE WHEN json_type(e.json, '$.content.avatar_url') = 'text' THEN json_extract(e.json, '$.content.avatar_url') END
FROM current_state c JOIN events e ON e.stream_pos = c.event_nid
WHERE c.type = 'm.room.member' AND c.membership = 'join'
  AND c.stream_pos = (SELECT MAX(c2.stream_pos) FROM current_state c2 WHERE c2.type = 'm.room.member' AND c2.state_key = c.state_key AND c2.membership = 'join')
ON CONFLICT (user_id) DO NOTHING;
-- sqlite-only
INSERT INTO user_directory_search (docid, words)
SELECT id, substr(user_id, 2, instr(user_id, ':') - 2) || ' ' || COALESCE(display_name, '') FROM user_directory;
-- postgres-only
INSERT INTO user_directory (user_id, display_name, avatar_url)
SELECT c.state_key,
    CASE WHEN jsonb_typeof(e.json::jsonb #> '{content,displayname}') = 'string' THEN e.json::jsonb #>> '{content,displayname}' END,
    CASE WHEN jsonb_typeof(e.json::jsonb #> '{content,avatar_url}') = 'string' THEN e.json::jsonb #>> '{content,avatar_url}' END
FROM current_state c JOIN events e ON e.stream_pos = c.event_nid
WHERE c.type = 'm.room.member' AND c.membership = 'join' AND e.json NOT LIKE '%\\u0000%'
  AND c.stream_pos = (SELECT MAX(c2.stream_pos) FROM current_state c2 WHERE c2.type = 'm.room.member' AND c2.state_key = c.state_key AND c2.membership = 'join')
ON CONFLICT (user_id) DO NOTHING;
-- postgres-only
UPDATE user_directory SET words = to_tsvector('simple',
    regexp_replace(split_part(substr(user_id, 2), ':', 1) || ' ' || COALESCE(display_name, ''), '[[:punct:][:space:]]+', ' ', 'g'));
