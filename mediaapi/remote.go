package mediaapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/tidwall/gjson"

	"repeater/internal/httputil"
	"repeater/storage"
)

// Remote media: fetched from its origin over federation the first time a
// local client asks (spec: Server-Server API "Content Repository", GET
// /_matrix/federation/v1/media/download, falling back to the older
// unauthenticated /_matrix/media/v3/download for servers without it),
// then kept in the cache like local media and thumbnailed here.

// fetchRemote fetches origin's media into the cache; concurrent requests
// for the same media share one fetch.
func (m *API) fetchRemote(ctx context.Context, origin, mediaID string, wait time.Duration) (*media, error) {
	v, err := m.fetches.do(ctx, &m.bg, origin+"/"+mediaID, func() (any, error) { return m.downloadRemote(origin, mediaID, wait) })
	if err != nil {
		return nil, err
	}
	return v.(*media), nil
}

// remoteBody is the content of a remote answer.
type remoteBody struct {
	io.Reader
	closer      io.Closer
	ContentType string
	Disposition string
}

func (b *remoteBody) Close() error { return b.closer.Close() }

func (m *API) downloadRemote(origin, mediaID string, wait time.Duration) (*media, error) {
	ctx, cancel := context.WithTimeout(m.baseCtx, remoteFetchTimeout)
	defer cancel()
	body, err := m.openRemote(ctx, origin, mediaID, wait)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	now := nowMS()
	rm := storage.RemoteMedia{Origin: origin, MediaID: mediaID, ContentType: cleanContentType(body.ContentType), CreatedTS: now, LastAccessTS: now}
	rm.UploadName, _ = cleanFilename(dispositionFilename(body.Disposition))
	m.store.gcMu.RLock()
	rm.SHA256, rm.Size, err = m.store.put(body, m.maxUpload)
	if err == nil {
		err = m.db.PutRemoteMedia(ctx, rm)
	}
	m.store.gcMu.RUnlock()
	if err != nil {
		if rm.SHA256 != "" {
			m.store.collect(context.WithoutCancel(ctx), m.db, rm.SHA256)
		}
		var re *readError
		switch {
		case errors.Is(err, errBodyTooLarge):
			return nil, httputil.Err(http.StatusBadGateway, "M_TOO_LARGE", "Remote content is larger than the limit of "+formatBytes(m.maxUpload))
		case errors.As(err, &re):
			m.log.Info("media: remote fetch interrupted", "origin", origin, "media_id", mediaID, "err", err)
			return nil, errRemote(origin)
		}
		return nil, err
	}
	if m.cacheSize > 0 {
		m.evict(ctx, origin, mediaID)
	}
	return remoteToMedia(&rm), nil
}

// evict trims the remote media cache to its size, keeping the media just
// fetched.
func (m *API) evict(ctx context.Context, keepOrigin, keepID string) {
	shas, err := m.db.EvictRemoteMedia(ctx, m.cacheSize, keepOrigin, keepID)
	if err == nil && len(shas) > 0 {
		err = m.store.collect(ctx, m.db, shas...)
	}
	if err != nil {
		m.log.Warn("media: evicting remote media", "err", err)
	}
}

func errRemote(origin string) error {
	return httputil.Err(http.StatusBadGateway, "M_UNKNOWN", "Could not fetch the media from "+origin)
}

// openRemote asks origin for the media: the authenticated federation
// endpoint first, the legacy one if the server does not know it.
func (m *API) openRemote(ctx context.Context, origin, mediaID string, wait time.Duration) (*remoteBody, error) {
	ms := strconv.FormatInt(wait.Milliseconds(), 10)
	resp, err := m.fed.MediaGet(ctx, origin, "/_matrix/federation/v1/media/download/"+mediaID+"?timeout_ms="+ms, true)
	if err != nil {
		m.log.Info("media: remote fetch failed", "origin", origin, "media_id", mediaID, "err", err)
		return nil, errRemote(origin)
	}
	if resp.StatusCode == http.StatusOK {
		b, err := m.readMultipartAnswer(ctx, resp)
		if err != nil {
			m.log.Info("media: bad federation media answer", "origin", origin, "media_id", mediaID, "err", err)
			return nil, errRemote(origin)
		}
		return b, nil
	}
	status, code := errorOf(resp)
	if !unknownEndpoint(status, code) {
		return nil, remoteStatusErr(origin, status, code)
	}
	resp, err = m.fed.MediaGet(ctx, origin, "/_matrix/media/v3/download/"+origin+"/"+mediaID+"?allow_remote=false&allow_redirect=true&timeout_ms="+ms, false)
	if err != nil {
		m.log.Info("media: remote fetch failed", "origin", origin, "media_id", mediaID, "err", err)
		return nil, errRemote(origin)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return &remoteBody{Reader: resp.Body, closer: resp.Body, ContentType: resp.Header.Get("Content-Type"), Disposition: resp.Header.Get("Content-Disposition")}, nil
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		loc := resp.Header.Get("Location")
		resp.Body.Close()
		return m.followLocation(ctx, loc)
	}
	status, code = errorOf(resp)
	return nil, remoteStatusErr(origin, status, code)
}

// readMultipartAnswer reads the federation endpoint's multipart/mixed
// answer, following the second part's Location if it has one.
func (m *API) readMultipartAnswer(ctx context.Context, resp *http.Response) (*remoteBody, error) {
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		resp.Body.Close()
		return nil, fmt.Errorf("content type %q is not multipart/mixed", resp.Header.Get("Content-Type"))
	}
	part, err := parseMultipartMedia(resp.Body, params["boundary"])
	if err != nil {
		resp.Body.Close()
		return nil, err
	}
	if part.Location != "" {
		resp.Body.Close()
		return m.followLocation(ctx, part.Location)
	}
	return &remoteBody{Reader: part.Body, closer: resp.Body, ContentType: part.ContentType, Disposition: part.Disposition}, nil
}

// followLocation fetches media from where a server sent us.
func (m *API) followLocation(ctx context.Context, loc string) (*remoteBody, error) {
	u, err := url.Parse(loc)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("media: bad redirect %q", loc)
	}
	resp, err := m.fed.MediaGetURL(ctx, u.String())
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		status, code := errorOf(resp)
		return nil, remoteStatusErr(u.Host, status, code)
	}
	return &remoteBody{Reader: resp.Body, closer: resp.Body, ContentType: resp.Header.Get("Content-Type"), Disposition: resp.Header.Get("Content-Disposition")}, nil
}

// multipartMedia is the media part of a federation media answer: the
// bytes with their headers, or a Location to fetch them from.
type multipartMedia struct {
	Body        io.Reader
	ContentType string
	Disposition string
	Location    string
}

// parseMultipartMedia reads the two parts of a federation media answer
// (spec: GET /_matrix/federation/v1/media/download): JSON metadata, then
// the media or a Location header. The media part's body is read from r
// as the caller reads Body.
func parseMultipartMedia(r io.Reader, boundary string) (*multipartMedia, error) {
	mr := multipart.NewReader(r, boundary)
	meta, err := mr.NextPart()
	if err != nil {
		return nil, fmt.Errorf("media: reading metadata part: %w", err)
	}
	if mt, _, _ := mime.ParseMediaType(meta.Header.Get("Content-Type")); mt != "application/json" {
		return nil, fmt.Errorf("media: metadata part is %q, not JSON", meta.Header.Get("Content-Type"))
	}
	js, err := io.ReadAll(io.LimitReader(meta, 65536))
	if err != nil || !gjson.ValidBytes(js) {
		return nil, errors.New("media: metadata part is not valid JSON")
	}
	part, err := mr.NextPart()
	if err != nil {
		return nil, fmt.Errorf("media: reading media part: %w", err)
	}
	if loc := part.Header.Get("Location"); loc != "" {
		return &multipartMedia{Location: loc}, nil
	}
	return &multipartMedia{Body: part, ContentType: part.Header.Get("Content-Type"), Disposition: part.Header.Get("Content-Disposition")}, nil
}

// errorOf reads a failed answer's status and errcode (and closes it).
func errorOf(resp *http.Response) (int, string) {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 65536))
	return resp.StatusCode, gjson.GetBytes(b, "errcode").Str
}

// unknownEndpoint: the server does not serve the authenticated federation
// media endpoint (it predates Matrix 1.11).
func unknownEndpoint(status int, code string) bool {
	return code == "M_UNRECOGNIZED" || status == http.StatusMethodNotAllowed || status == http.StatusNotImplemented ||
		(status == http.StatusNotFound && code == "")
}

// remoteStatusErr is the error for our client when a server refused.
func remoteStatusErr(origin string, status int, code string) error {
	switch {
	case code == "M_NOT_YET_UPLOADED":
		return errNotYetUploaded
	case code == "M_TOO_LARGE" || status == http.StatusRequestEntityTooLarge:
		return httputil.Err(http.StatusBadGateway, "M_TOO_LARGE", "Remote content is too large")
	case status == http.StatusNotFound || code == "M_NOT_FOUND":
		return httputil.NotFound("Media not found")
	}
	return errRemote(origin)
}

// dispositionFilename is the file name of a Content-Disposition header
// (filename*= decoded).
func dispositionFilename(d string) string {
	if d == "" {
		return ""
	}
	_, params, err := mime.ParseMediaType(d)
	if err != nil {
		return ""
	}
	return params["filename"]
}
