-- Push (spec: "Push Notifications"). A user's push rules are their
-- m.push_rules account data. Pushers are per user, keyed by app ID and
-- push key. notifications holds every event a local user's rules said to
-- notify for: the source of GET /notifications and of what HTTP pushers
-- deliver. push_progress records how far the push worker has evaluated the
-- event stream, and each pusher how far it has delivered, so a restart
-- loses nothing.
CREATE TABLE pushers (
    localpart           TEXT NOT NULL,
    app_id              TEXT NOT NULL,
    pushkey             TEXT NOT NULL,
    kind                TEXT NOT NULL,
    app_display_name    TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag         TEXT NOT NULL,
    lang                TEXT NOT NULL,
    data                TEXT NOT NULL,
    device_id           TEXT NOT NULL,
    pushkey_ts          BIGINT NOT NULL,
    delivered_id        BIGINT NOT NULL,
    start_pos           BIGINT NOT NULL,
    PRIMARY KEY (localpart, app_id, pushkey)
);
CREATE INDEX pushers_by_key ON pushers (app_id, pushkey);
CREATE TABLE notifications (
    id         {{SERIAL}},
    localpart  TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    ts         BIGINT NOT NULL,
    highlight  INTEGER NOT NULL,
    actions    TEXT NOT NULL
);
CREATE INDEX notifications_by_user ON notifications (localpart, id);
CREATE INDEX notifications_by_ts ON notifications (ts);
CREATE TABLE push_progress (
    name TEXT NOT NULL PRIMARY KEY,
    pos  BIGINT NOT NULL
);
