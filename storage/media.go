package storage

import (
	"context"
	"errors"
)

// Media repository metadata. The files themselves are on disk, named by
// their SHA-256; several rows may share one file.

var (
	// ErrMediaUserQuota: storing the media would take its uploader over
	// their quota.
	ErrMediaUserQuota = errors.New("storage: the user's media quota is used up")
	// ErrMediaTotalQuota: storing the media would take all local media
	// over the server's quota.
	ErrMediaTotalQuota = errors.New("storage: the server's media quota is used up")
	// ErrMediaPendingLimit: the user already has the maximum number of
	// created but not yet uploaded media IDs.
	ErrMediaPendingLimit = errors.New("storage: too many pending media uploads")
)

// LocalMedia is media uploaded to this server.
type LocalMedia struct {
	MediaID     string
	Uploader    string // user ID
	ContentType string
	UploadName  string
	Size        int64
	SHA256      string // hex; "" while pending
	CreatedTS   int64
	ExpiresTS   int64 // pending: when the reserved ID lapses
	Quarantined bool
}

// Pending reports whether the media ID was created (POST /create) but its
// content has not been uploaded.
func (m *LocalMedia) Pending() bool { return m.SHA256 == "" }

// MediaQuota limits local uploads, in bytes; 0 is unlimited.
type MediaQuota struct {
	User  int64 // per uploader
	Total int64 // all local media
}

func checkMediaQuota(ctx context.Context, q Querier, uploader string, size int64, quota MediaQuota) error {
	if quota.User > 0 {
		var used int64
		if err := q.QueryRowContext(ctx, `SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM media WHERE uploader = $1`, uploader).Scan(&used); err != nil {
			return err
		}
		if used+size > quota.User {
			return ErrMediaUserQuota
		}
	}
	if quota.Total > 0 {
		var used int64
		if err := q.QueryRowContext(ctx, `SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM media`).Scan(&used); err != nil {
			return err
		}
		if used+size > quota.Total {
			return ErrMediaTotalQuota
		}
	}
	return nil
}

// MediaUsage returns the bytes uploaded by a user and by everyone.
func (db *DB) MediaUsage(ctx context.Context, uploader string) (user, total int64, err error) {
	err = db.R().QueryRowContext(ctx, `SELECT CAST(COALESCE(SUM(CASE WHEN uploader = $1 THEN size ELSE 0 END), 0) AS BIGINT),
		CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM media`, uploader).Scan(&user, &total)
	return user, total, err
}

// StoreMedia records an upload. The quota is checked in the same
// transaction, so concurrent uploads cannot together exceed it.
func (db *DB) StoreMedia(ctx context.Context, m LocalMedia, quota MediaQuota) error {
	return db.Write(ctx, func(tx *Tx) error {
		if err := checkMediaQuota(ctx, tx, m.Uploader, m.Size, quota); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO media (media_id, uploader, content_type, upload_name, size, sha256, created_ts, expires_ts)
			VALUES ($1, $2, $3, $4, $5, $6, $7, 0)`, m.MediaID, m.Uploader, m.ContentType, m.UploadName, m.Size, m.SHA256, m.CreatedTS)
		return err
	})
}

// CreatePendingMedia reserves a media ID for a later upload (m's MediaID,
// Uploader, CreatedTS and ExpiresTS). The uploader's lapsed reservations
// are dropped; ErrMediaPendingLimit if maxPending are still open.
func (db *DB) CreatePendingMedia(ctx context.Context, m LocalMedia, maxPending int) error {
	return db.Write(ctx, func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM media WHERE uploader = $1 AND sha256 = '' AND expires_ts < $2`, m.Uploader, m.CreatedTS); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM media WHERE uploader = $1 AND sha256 = ''`, m.Uploader).Scan(&n); err != nil {
			return err
		}
		if n >= maxPending {
			return ErrMediaPendingLimit
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO media (media_id, uploader, created_ts, expires_ts) VALUES ($1, $2, $3, $4)`,
			m.MediaID, m.Uploader, m.CreatedTS, m.ExpiresTS)
		return err
	})
}

// CompletePendingMedia fills in a reserved media ID with its upload (m's
// MediaID and Uploader select it). ErrNotFound if no such reservation
// exists (or it lapsed and was dropped), ErrConflict if it has content
// already.
func (db *DB) CompletePendingMedia(ctx context.Context, m LocalMedia, quota MediaQuota) error {
	return db.Write(ctx, func(tx *Tx) error {
		if err := checkMediaQuota(ctx, tx, m.Uploader, m.Size, quota); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE media SET content_type = $3, upload_name = $4, size = $5, sha256 = $6
			WHERE media_id = $1 AND uploader = $2 AND sha256 = ''`, m.MediaID, m.Uploader, m.ContentType, m.UploadName, m.Size, m.SHA256)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		var sha string
		if err := tx.QueryRowContext(ctx, `SELECT sha256 FROM media WHERE media_id = $1 AND uploader = $2`, m.MediaID, m.Uploader).Scan(&sha); err != nil {
			return scanErr(err)
		}
		return ErrConflict
	})
}

// GetMedia returns local media by ID.
func (db *DB) GetMedia(ctx context.Context, mediaID string) (*LocalMedia, error) {
	var m LocalMedia
	var q int
	err := db.R().QueryRowContext(ctx, `SELECT media_id, uploader, content_type, upload_name, size, sha256, created_ts, expires_ts, quarantined
		FROM media WHERE media_id = $1`, mediaID).Scan(&m.MediaID, &m.Uploader, &m.ContentType, &m.UploadName, &m.Size, &m.SHA256, &m.CreatedTS, &m.ExpiresTS, &q)
	if err != nil {
		return nil, scanErr(err)
	}
	m.Quarantined = q != 0
	return &m, nil
}

// RemoteMedia is another server's media held in our cache.
type RemoteMedia struct {
	Origin       string
	MediaID      string
	SHA256       string
	ContentType  string
	UploadName   string
	Size         int64
	CreatedTS    int64 // when we fetched it
	LastAccessTS int64
	Quarantined  bool
}

// PutRemoteMedia records (or replaces) a fetched remote file.
func (db *DB) PutRemoteMedia(ctx context.Context, m RemoteMedia) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO remote_media (origin, media_id, sha256, content_type, upload_name, size, created_ts, last_access_ts)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
			ON CONFLICT (origin, media_id) DO UPDATE SET sha256 = excluded.sha256, content_type = excluded.content_type,
				upload_name = excluded.upload_name, size = excluded.size, created_ts = excluded.created_ts, last_access_ts = excluded.last_access_ts`,
			m.Origin, m.MediaID, m.SHA256, m.ContentType, m.UploadName, m.Size, m.CreatedTS, m.LastAccessTS)
		return err
	})
}

// GetRemoteMedia returns cached remote media.
func (db *DB) GetRemoteMedia(ctx context.Context, origin, mediaID string) (*RemoteMedia, error) {
	var m RemoteMedia
	var q int
	err := db.R().QueryRowContext(ctx, `SELECT origin, media_id, sha256, content_type, upload_name, size, created_ts, last_access_ts, quarantined
		FROM remote_media WHERE origin = $1 AND media_id = $2`, origin, mediaID).Scan(&m.Origin, &m.MediaID, &m.SHA256, &m.ContentType, &m.UploadName, &m.Size, &m.CreatedTS, &m.LastAccessTS, &q)
	if err != nil {
		return nil, scanErr(err)
	}
	m.Quarantined = q != 0
	return &m, nil
}

// TouchRemoteMedia records an access to cached remote media (for LRU
// eviction). It does not wait for the write.
func (db *DB) TouchRemoteMedia(origin, mediaID string, ts int64) {
	db.Submit(0, func(tx *Tx) error {
		_, err := tx.ExecContext(context.Background(), `UPDATE remote_media SET last_access_ts = $3 WHERE origin = $1 AND media_id = $2 AND last_access_ts < $3`,
			origin, mediaID, ts)
		return err
	}, nil)
}

// DeleteRemoteMedia forgets cached remote media and its thumbnails; it
// returns the files they used (which may now be unreferenced).
func (db *DB) DeleteRemoteMedia(ctx context.Context, origin, mediaID string) ([]string, error) {
	var shas []string
	err := db.Write(ctx, func(tx *Tx) error {
		var err error
		shas, err = deleteRemoteMedia(ctx, tx, origin, mediaID)
		return err
	})
	return shas, err
}

func deleteRemoteMedia(ctx context.Context, tx *Tx, origin, mediaID string) ([]string, error) {
	shas, err := queryStrings(ctx, tx, `SELECT sha256 FROM remote_media WHERE origin = $1 AND media_id = $2
		UNION SELECT sha256 FROM media_thumbnails WHERE origin = $1 AND media_id = $2`, origin, mediaID)
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM media_thumbnails WHERE origin = $1 AND media_id = $2`, origin, mediaID); err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM remote_media WHERE origin = $1 AND media_id = $2`, origin, mediaID); err != nil {
		return nil, err
	}
	return shas, nil
}

// RemoteMediaCacheUsage is the bytes of cached remote media and their
// thumbnails.
func (db *DB) RemoteMediaCacheUsage(ctx context.Context) (int64, error) {
	return remoteCacheUsage(ctx, db.R())
}

func remoteCacheUsage(ctx context.Context, q Querier) (int64, error) {
	var a, b int64
	if err := q.QueryRowContext(ctx, `SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM remote_media`).Scan(&a); err != nil {
		return 0, err
	}
	if err := q.QueryRowContext(ctx, `SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM media_thumbnails WHERE origin <> ''`).Scan(&b); err != nil {
		return 0, err
	}
	return a + b, nil
}

// EvictRemoteMedia drops the least recently used remote media (with their
// thumbnails) until the cache holds at most limit bytes, never dropping
// keepOrigin/keepID. It returns the files the dropped rows used.
func (db *DB) EvictRemoteMedia(ctx context.Context, limit int64, keepOrigin, keepID string) ([]string, error) {
	var shas []string
	err := db.Write(ctx, func(tx *Tx) error {
		shas = nil
		used, err := remoteCacheUsage(ctx, tx)
		if err != nil {
			return err
		}
		for used > limit {
			type victim struct {
				origin, id string
				size       int64
			}
			rows, err := tx.QueryContext(ctx, `SELECT r.origin, r.media_id, r.size + CAST(COALESCE((SELECT SUM(t.size) FROM media_thumbnails t
				WHERE t.origin = r.origin AND t.media_id = r.media_id), 0) AS BIGINT)
				FROM remote_media r WHERE NOT (r.origin = $1 AND r.media_id = $2)
				ORDER BY r.last_access_ts, r.origin, r.media_id LIMIT 64`, keepOrigin, keepID)
			if err != nil {
				return err
			}
			var vs []victim
			for rows.Next() {
				var v victim
				if err := rows.Scan(&v.origin, &v.id, &v.size); err != nil {
					rows.Close()
					return err
				}
				vs = append(vs, v)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if len(vs) == 0 {
				break
			}
			for _, v := range vs {
				if used <= limit {
					break
				}
				s, err := deleteRemoteMedia(ctx, tx, v.origin, v.id)
				if err != nil {
					return err
				}
				shas = append(shas, s...)
				used -= v.size
			}
		}
		return nil
	})
	return shas, err
}

// MediaThumbnail is a stored thumbnail of local (Origin "") or remote
// media, made for a size class: the box Width x Height and Method.
type MediaThumbnail struct {
	Origin      string
	MediaID     string
	Width       int
	Height      int
	Method      string
	ContentType string
	SHA256      string
	Size        int64
	CreatedTS   int64
}

// GetMediaThumbnail returns a stored thumbnail.
func (db *DB) GetMediaThumbnail(ctx context.Context, origin, mediaID string, width, height int, method string) (*MediaThumbnail, error) {
	t := MediaThumbnail{Origin: origin, MediaID: mediaID, Width: width, Height: height, Method: method}
	err := db.R().QueryRowContext(ctx, `SELECT content_type, sha256, size, created_ts FROM media_thumbnails
		WHERE origin = $1 AND media_id = $2 AND width = $3 AND height = $4 AND method = $5`, origin, mediaID, width, height, method).
		Scan(&t.ContentType, &t.SHA256, &t.Size, &t.CreatedTS)
	if err != nil {
		return nil, scanErr(err)
	}
	return &t, nil
}

// PutMediaThumbnail records a thumbnail (replacing one of the same size
// class).
func (db *DB) PutMediaThumbnail(ctx context.Context, t MediaThumbnail) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO media_thumbnails (origin, media_id, width, height, method, content_type, sha256, size, created_ts)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
			ON CONFLICT (origin, media_id, width, height, method) DO UPDATE SET content_type = excluded.content_type,
				sha256 = excluded.sha256, size = excluded.size, created_ts = excluded.created_ts`,
			t.Origin, t.MediaID, t.Width, t.Height, t.Method, t.ContentType, t.SHA256, t.Size, t.CreatedTS)
		return err
	})
}

// MediaFileReferenced reports whether any media, remote media or
// thumbnail row uses the file with this SHA-256.
func (db *DB) MediaFileReferenced(ctx context.Context, sha256 string) (bool, error) {
	var n int
	err := db.R().QueryRowContext(ctx, `SELECT CASE WHEN EXISTS (SELECT 1 FROM media WHERE sha256 = $1)
		OR EXISTS (SELECT 1 FROM remote_media WHERE sha256 = $1)
		OR EXISTS (SELECT 1 FROM media_thumbnails WHERE sha256 = $1) THEN 1 ELSE 0 END`, sha256).Scan(&n)
	return n == 1, err
}

// SetMediaQuarantined marks media (origin "" for local) as quarantined
// (never served) or releases it.
func (db *DB) SetMediaQuarantined(ctx context.Context, origin, mediaID string, quarantined bool) error {
	q := 0
	if quarantined {
		q = 1
	}
	return db.Write(ctx, func(tx *Tx) error {
		var res interface{ RowsAffected() (int64, error) }
		var err error
		if origin == "" {
			res, err = tx.ExecContext(ctx, `UPDATE media SET quarantined = $2 WHERE media_id = $1`, mediaID, q)
		} else {
			res, err = tx.ExecContext(ctx, `UPDATE remote_media SET quarantined = $3 WHERE origin = $1 AND media_id = $2`, origin, mediaID, q)
		}
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			if err == nil {
				err = ErrNotFound
			}
			return err
		}
		return nil
	})
}
