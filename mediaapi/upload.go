package mediaapi

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/storage"
)

// Quotas answer 403 M_FORBIDDEN, as the spec's upload endpoints specify
// for "the user has reached a quota for uploaded content"; the message
// says which quota.
var (
	errUserQuota  = httputil.Forbidden("Media quota exceeded: you have used up your upload allowance")
	errTotalQuota = httputil.Forbidden("Media quota exceeded: this server's storage for uploads is full")
)

// upload handles POST /upload?filename= (spec: "POST /_matrix/media/v3/upload").
func (m *API) upload(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	if err := m.limiter.Allow(d.RateLimitKey("media:" + d.UserID)); err != nil {
		return nil, err
	}
	ct, name, err := m.precheck(r, d.UserID)
	if err != nil {
		return nil, err
	}
	id := newMediaID()
	err = m.storeUpload(r.Context(), r.Body, func(sha string, size int64) error {
		return m.db.StoreMedia(r.Context(), storage.LocalMedia{MediaID: id, Uploader: d.UserID, ContentType: ct, UploadName: name,
			Size: size, SHA256: sha, CreatedTS: nowMS()}, m.quota)
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"content_uri": "mxc://" + m.serverName + "/" + id}, nil
}

// create handles POST /_matrix/media/v1/create: a media ID now, its
// content later (spec: "POST /_matrix/media/v1/create").
func (m *API) create(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	if err := m.limiter.Allow(d.RateLimitKey("media:" + d.UserID)); err != nil {
		return nil, err
	}
	id := newMediaID()
	now := time.Now()
	expires := now.Add(unusedExpiry).UnixMilli()
	err := m.db.CreatePendingMedia(r.Context(), storage.LocalMedia{MediaID: id, Uploader: d.UserID, CreatedTS: now.UnixMilli(), ExpiresTS: expires}, maxPendingUploads)
	if errors.Is(err, storage.ErrMediaPendingLimit) {
		e := httputil.LimitExceeded(60000)
		e.Message = "Too many media IDs are waiting for their upload"
		return nil, e
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"content_uri": "mxc://" + m.serverName + "/" + id, "unused_expires_at": expires}, nil
}

// uploadTo handles PUT /upload/{serverName}/{mediaId}: the content of a
// media ID made by POST /create.
func (m *API) uploadTo(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	v := httputil.Vars(r)
	if err := m.limiter.Allow(d.RateLimitKey("media:" + d.UserID)); err != nil {
		return nil, err
	}
	if v["serverName"] != m.serverName || !validMediaID(v["mediaId"]) {
		return nil, httputil.NotFound("Unknown media ID")
	}
	id := v["mediaId"]
	cur, err := m.db.GetMedia(r.Context(), id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.NotFound("Unknown media ID")
	}
	if err != nil {
		return nil, err
	}
	if cur.Uploader != d.UserID {
		return nil, httputil.Forbidden("This media ID was created by another user")
	}
	if !cur.Pending() {
		return nil, httputil.Err(http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
	}
	if cur.ExpiresTS < nowMS() {
		return nil, httputil.NotFound("This media ID has expired")
	}
	ct, name, err := m.precheck(r, d.UserID)
	if err != nil {
		return nil, err
	}
	err = m.storeUpload(r.Context(), r.Body, func(sha string, size int64) error {
		return m.db.CompletePendingMedia(r.Context(), storage.LocalMedia{MediaID: id, Uploader: d.UserID, ContentType: ct, UploadName: name,
			Size: size, SHA256: sha}, m.quota)
	})
	switch {
	case errors.Is(err, storage.ErrConflict):
		return nil, httputil.Err(http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
	case errors.Is(err, storage.ErrNotFound):
		return nil, httputil.NotFound("This media ID has expired")
	case err != nil:
		return nil, err
	}
	m.uploaded(id)
	return struct{}{}, nil
}

// precheck reads an upload's content type and file name, and refuses an
// upload whose declared length is over the size limit or a quota before
// reading any of it. (The limits are enforced again on what actually
// arrives.)
func (m *API) precheck(r *http.Request, userID string) (contentType, name string, err error) {
	contentType = cleanContentType(r.Header.Get("Content-Type"))
	if name, err = cleanFilename(r.URL.Query().Get("filename")); err != nil {
		return "", "", err
	}
	return contentType, name, m.checkLimits(r, userID)
}

// checkLimits is precheck's size and quota part.
func (m *API) checkLimits(r *http.Request, userID string) error {
	n := r.ContentLength
	if n > m.maxUpload {
		return errTooLarge(m.maxUpload)
	}
	if n <= 0 || (m.quota.User == 0 && m.quota.Total == 0) {
		return nil
	}
	user, total, err := m.db.MediaUsage(r.Context(), userID)
	if err != nil {
		return err
	}
	if m.quota.User > 0 && user+n > m.quota.User {
		return errUserQuota
	}
	if m.quota.Total > 0 && total+n > m.quota.Total {
		return errTotalQuota
	}
	return nil
}

// storeUpload writes body into the file store and runs record (which
// commits the row naming the file); a file no row names afterwards is
// removed again.
func (m *API) storeUpload(ctx context.Context, body io.Reader, record func(sha string, size int64) error) error {
	m.store.gcMu.RLock()
	sha, size, err := m.store.put(body, m.maxUpload)
	if err == nil {
		err = record(sha, size)
	}
	m.store.gcMu.RUnlock()
	if err != nil && sha != "" {
		if cerr := m.store.collect(context.WithoutCancel(ctx), m.db, sha); cerr != nil {
			m.log.Warn("media: removing an unused file", "sha256", sha, "err", cerr)
		}
	}
	var re *readError
	switch {
	case errors.Is(err, errBodyTooLarge):
		return errTooLarge(m.maxUpload)
	case errors.As(err, &re):
		return httputil.Err(http.StatusBadRequest, "M_UNKNOWN", "Could not read the uploaded content")
	case errors.Is(err, storage.ErrMediaUserQuota):
		return errUserQuota
	case errors.Is(err, storage.ErrMediaTotalQuota):
		return errTotalQuota
	}
	return err
}

// uploaded wakes the downloads waiting for a media ID's content.
func (m *API) uploaded(id string) {
	m.wmu.Lock()
	if w, ok := m.waiters[id]; ok {
		close(w.ch)
		delete(m.waiters, id)
	}
	m.wmu.Unlock()
}

// waiter is the requests waiting for one media ID's upload.
type waiter struct {
	ch chan struct{}
	n  int
}

// wait registers a request waiting for id's content: the channel is
// closed when it is uploaded; done must be called when the request stops
// waiting.
func (m *API) wait(id string) (ch <-chan struct{}, done func()) {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	w, ok := m.waiters[id]
	if !ok {
		w = &waiter{ch: make(chan struct{})}
		m.waiters[id] = w
	}
	w.n++
	return w.ch, func() {
		m.wmu.Lock()
		defer m.wmu.Unlock()
		if w.n--; w.n == 0 && m.waiters[id] == w {
			delete(m.waiters, id)
		}
	}
}

// cleanContentType normalises an upload's Content-Type; anything that is
// not a well-formed media type is stored as application/octet-stream.
func cleanContentType(ct string) string {
	const fallback = "application/octet-stream"
	if ct == "" {
		return fallback
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || strings.Count(mt, "/") != 1 || strings.HasPrefix(mt, "/") || strings.HasSuffix(mt, "/") {
		return fallback
	}
	s := mime.FormatMediaType(mt, params)
	if s == "" || len(s) > 255 {
		s = mime.FormatMediaType(mt, nil)
	}
	if s == "" || len(s) > 255 {
		return fallback
	}
	return s
}

// cleanFilename checks an upload's file name: UTF-8, control characters
// dropped, at most 255 bytes.
func cleanFilename(name string) (string, error) {
	if !utf8.ValidString(name) {
		return "", httputil.InvalidParam("filename is not valid UTF-8")
	}
	name = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, name)
	for len(name) > 255 {
		_, size := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-size]
	}
	return name, nil
}
