package mediaapi

import (
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
	"time"

	"repeater/internal/httputil"
)

// Our media for other servers (spec: Server-Server API "Content
// Repository"): only media uploaded here; the answer is multipart/mixed,
// a JSON metadata part (an empty object) then the bytes.

func (m *API) federationMedia(w http.ResponseWriter, r *http.Request) (*media, bool) {
	id := httputil.Vars(r)["mediaId"]
	if !validMediaID(id) {
		httputil.WriteError(w, r, m.log, httputil.NotFound("Media not found"))
		return nil, false
	}
	wait := defaultWait
	if s := r.URL.Query().Get("timeout_ms"); s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ms < 0 {
			httputil.WriteError(w, r, m.log, httputil.InvalidParam("timeout_ms must be a non-negative integer"))
			return nil, false
		}
		wait = min(time.Duration(ms)*time.Millisecond, maxWait)
	}
	md, err := m.resolveLocal(r.Context(), id, wait)
	if err != nil {
		httputil.WriteError(w, r, m.log, err)
		return nil, false
	}
	return md, true
}

// federationDownload handles GET /_matrix/federation/v1/media/download/{mediaId}.
func (m *API) federationDownload(w http.ResponseWriter, r *http.Request, origin string) {
	md, ok := m.federationMedia(w, r)
	if !ok {
		return
	}
	m.writeMultipart(w, r, md, md.SHA256, md.ContentType, contentDisposition(md.ContentType, md.UploadName))
}

// federationThumbnail handles GET /_matrix/federation/v1/media/thumbnail/{mediaId}.
func (m *API) federationThumbnail(w http.ResponseWriter, r *http.Request, origin string) {
	req, err := parseThumbRequest(r.URL.Query())
	if err != nil {
		httputil.WriteError(w, r, m.log, err)
		return
	}
	md, ok := m.federationMedia(w, r)
	if !ok {
		return
	}
	res, err := m.thumb(r.Context(), md, req)
	if err != nil {
		httputil.WriteError(w, r, m.log, err)
		return
	}
	m.writeMultipart(w, r, md, res.SHA256, res.ContentType, thumbDisposition(res.ContentType))
}

func (m *API) writeMultipart(w http.ResponseWriter, r *http.Request, md *media, sha, contentType, disposition string) {
	f, err := m.store.open(sha)
	if err != nil {
		httputil.WriteError(w, r, m.log, m.fileErr(md, err))
		return
	}
	defer f.Close()
	mw := multipart.NewWriter(w)
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	w.WriteHeader(http.StatusOK)
	meta, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	if err != nil {
		return
	}
	io.WriteString(meta, "{}")
	part, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {contentType}, "Content-Disposition": {disposition}})
	if err != nil {
		return
	}
	if _, err := io.Copy(part, f); err != nil {
		return
	}
	mw.Close()
}
