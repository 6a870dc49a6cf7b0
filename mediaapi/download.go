package mediaapi

import (
	"context"
	"errors"
	"io/fs"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"repeater/internal/httputil"
	"repeater/storage"
)

// media is a file to serve: local or cached remote media.
type media struct {
	Origin      string // "" for ours
	MediaID     string
	SHA256      string
	ContentType string
	UploadName  string
	Size        int64
	CreatedTS   int64
}

// download serves GET download/{serverName}/{mediaId}[/{fileName}];
// authed is the /_matrix/client/v1 form.
func (m *API) download(authed bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v := httputil.Vars(r)
		md, err := m.resolve(r, v["serverName"], v["mediaId"])
		if err != nil {
			httputil.WriteError(w, r, m.log, err)
			return
		}
		name := md.UploadName
		if fn, ok := v["fileName"]; ok {
			name = fn
		}
		f, err := m.store.open(md.SHA256)
		if err != nil {
			httputil.WriteError(w, r, m.log, m.fileErr(md, err))
			return
		}
		defer f.Close()
		setMediaHeaders(w.Header(), md.ContentType, contentDisposition(md.ContentType, name), authed)
		w.Header().Set("ETag", `"`+md.SHA256+`"`)
		http.ServeContent(w, r, "", time.UnixMilli(md.CreatedTS), f)
	}
}

// fileErr is the error for a row whose file cannot be opened: a missing
// remote file drops the row, so that the next request fetches it again.
func (m *API) fileErr(md *media, err error) error {
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	m.log.Warn("media: file missing", "origin", md.Origin, "media_id", md.MediaID, "sha256", md.SHA256)
	if md.Origin != "" {
		if shas, err := m.db.DeleteRemoteMedia(context.Background(), md.Origin, md.MediaID); err == nil {
			m.store.collect(context.Background(), m.db, shas...)
		}
	}
	return httputil.NotFound("Media not found")
}

// resolve finds the media an mxc:// URI names, waiting (timeout_ms) for
// an asynchronous upload and fetching other servers' media (unless
// allow_remote=false).
func (m *API) resolve(r *http.Request, server, mediaID string) (*media, error) {
	if !validServerName(server) || !validMediaID(mediaID) {
		return nil, httputil.NotFound("Media not found")
	}
	q := r.URL.Query()
	wait := defaultWait
	if s := q.Get("timeout_ms"); s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ms < 0 {
			return nil, httputil.InvalidParam("timeout_ms must be a non-negative integer")
		}
		wait = min(time.Duration(ms)*time.Millisecond, maxWait)
	}
	if server == m.serverName {
		return m.resolveLocal(r.Context(), mediaID, wait)
	}
	rm, err := m.db.GetRemoteMedia(r.Context(), server, mediaID)
	if err == nil {
		if rm.Quarantined {
			return nil, httputil.NotFound("Media not found")
		}
		if now := nowMS(); now-rm.LastAccessTS > 60_000 {
			m.db.TouchRemoteMedia(server, mediaID, now)
		}
		return remoteToMedia(rm), nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if q.Get("allow_remote") == "false" || m.fed == nil {
		return nil, httputil.NotFound("Media not found")
	}
	return m.fetchRemote(r.Context(), server, mediaID, wait)
}

// resolveLocal finds our own media, waiting up to wait for a pending
// upload.
func (m *API) resolveLocal(ctx context.Context, mediaID string, wait time.Duration) (*media, error) {
	lm, err := m.db.GetMedia(ctx, mediaID)
	if err == nil && lm.Pending() {
		// Register before looking again, so an upload in between is seen.
		ch, done := m.wait(mediaID)
		defer done()
		if lm, err = m.db.GetMedia(ctx, mediaID); err == nil && lm.Pending() {
			if lm.ExpiresTS < nowMS() {
				return nil, httputil.NotFound("Media not found")
			}
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case <-ch:
				lm, err = m.db.GetMedia(ctx, mediaID)
			case <-t.C:
				return nil, errNotYetUploaded
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.NotFound("Media not found")
	}
	if err != nil {
		return nil, err
	}
	if lm.Pending() {
		return nil, errNotYetUploaded
	}
	if lm.Quarantined {
		return nil, httputil.NotFound("Media not found")
	}
	return &media{MediaID: lm.MediaID, SHA256: lm.SHA256, ContentType: lm.ContentType, UploadName: lm.UploadName, Size: lm.Size, CreatedTS: lm.CreatedTS}, nil
}

func remoteToMedia(rm *storage.RemoteMedia) *media {
	return &media{Origin: rm.Origin, MediaID: rm.MediaID, SHA256: rm.SHA256, ContentType: rm.ContentType, UploadName: rm.UploadName,
		Size: rm.Size, CreatedTS: rm.CreatedTS}
}

// contentSecurityPolicy is the spec's recommended policy for served media.
const contentSecurityPolicy = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';"

// setMediaHeaders sets the headers that make served content safe to open
// in a browser (spec: "Serving inline content", Content-Security-Policy,
// Cross-Origin-Resource-Policy). Content is immutable; authenticated
// responses may only be cached privately.
func setMediaHeaders(h http.Header, contentType, disposition string, authed bool) {
	h.Set("Content-Type", contentType)
	h.Set("Content-Disposition", disposition)
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	if authed {
		h.Set("Cache-Control", "private, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	}
}

// inlineTypes may be served inline (spec: "Serving inline content");
// everything else is an attachment.
var inlineTypes = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true, "application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true, "image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true, "audio/ogg": true,
	"audio/wave": true, "audio/wav": true, "audio/x-wav": true, "audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

// contentDisposition is the Content-Disposition for content of a type,
// with the file name (if any) per RFC 6266: a plain quoted filename when
// it is printable ASCII, otherwise filename*=utf-8” with percent-encoding
// (RFC 8187).
func contentDisposition(contentType, name string) string {
	d := "attachment"
	if mt, _, err := mime.ParseMediaType(contentType); err == nil && inlineTypes[mt] {
		d = "inline"
	}
	if name == "" {
		return d
	}
	if plainFilename(name) {
		return d + `; filename="` + name + `"`
	}
	return d + "; filename*=utf-8''" + encodeRFC8187(name)
}

// plainFilename: printable ASCII with nothing that needs escaping in a
// quoted-string (or that a browser might unescape).
func plainFilename(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '%' {
			return false
		}
	}
	return true
}

// encodeRFC8187 percent-encodes every byte that is not an attr-char.
func encodeRFC8187(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAttrChar(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func isAttrChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$&+-.^_`|~", c) >= 0
}
