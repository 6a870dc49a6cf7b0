-- The media repository (spec: Client-Server API "Content repository"). The
-- bytes live on disk, content-addressed by SHA-256 (one file per distinct
-- content, whoever uploaded it); these tables say which media IDs point at
-- which file.

-- Media uploaded to this server. sha256 is '' while an asynchronous upload
-- (POST /create) has not arrived yet; expires_ts is then when the reserved
-- ID lapses.
CREATE TABLE media (
    media_id     TEXT NOT NULL PRIMARY KEY,
    uploader     TEXT NOT NULL,
    content_type TEXT NOT NULL DEFAULT '',
    upload_name  TEXT NOT NULL DEFAULT '',
    size         BIGINT NOT NULL DEFAULT 0,
    sha256       TEXT NOT NULL DEFAULT '',
    created_ts   BIGINT NOT NULL,
    expires_ts   BIGINT NOT NULL DEFAULT 0,
    quarantined  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX media_uploader ON media (uploader);
CREATE INDEX media_sha256 ON media (sha256);

-- Other servers' media fetched for our users: a cache, evicted least
-- recently used first.
CREATE TABLE remote_media (
    origin         TEXT NOT NULL,
    media_id       TEXT NOT NULL,
    sha256         TEXT NOT NULL,
    content_type   TEXT NOT NULL DEFAULT '',
    upload_name    TEXT NOT NULL DEFAULT '',
    size           BIGINT NOT NULL,
    created_ts     BIGINT NOT NULL,
    last_access_ts BIGINT NOT NULL,
    quarantined    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (origin, media_id)
);
CREATE INDEX remote_media_access ON remote_media (last_access_ts);
CREATE INDEX remote_media_sha256 ON remote_media (sha256);

-- Thumbnails, made on first request, per media (origin '' for ours) and
-- size class (the box and method they were made for).
CREATE TABLE media_thumbnails (
    origin       TEXT NOT NULL,
    media_id     TEXT NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    method       TEXT NOT NULL,
    content_type TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    size         BIGINT NOT NULL,
    created_ts   BIGINT NOT NULL,
    PRIMARY KEY (origin, media_id, width, height, method)
);
CREATE INDEX media_thumbnails_sha256 ON media_thumbnails (sha256);
