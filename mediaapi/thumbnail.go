package mediaapi

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"repeater/internal/httputil"
	"repeater/storage"
)

// thumbRequest is what a client asks of GET thumbnail.
type thumbRequest struct {
	W, H     int
	Method   string
	Animated bool
}

func parseThumbRequest(q url.Values) (thumbRequest, error) {
	var t thumbRequest
	for _, p := range []struct {
		name string
		dst  *int
	}{{"width", &t.W}, {"height", &t.H}} {
		s := q.Get(p.name)
		if s == "" {
			return t, httputil.MissingParam("Missing " + p.name)
		}
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > 100000 {
			return t, httputil.InvalidParam(p.name + " must be a positive integer")
		}
		*p.dst = n
	}
	switch t.Method = q.Get("method"); t.Method {
	case "":
		t.Method = "scale"
	case "scale", "crop":
	default:
		return t, httputil.InvalidParam("method must be crop or scale")
	}
	t.Animated = q.Get("animated") == "true"
	return t, nil
}

// thumbResult is the file answering a thumbnail request.
type thumbResult struct {
	SHA256      string
	ContentType string
	CreatedTS   int64
}

// errCannotThumbnail is the spec's 400 for content without thumbnails.
var errCannotThumbnail = httputil.Err(http.StatusBadRequest, "M_UNKNOWN", "Cannot generate thumbnails for the requested content")

// thumbnail serves GET thumbnail/{serverName}/{mediaId}; authed is the
// /_matrix/client/v1 form.
func (m *API) thumbnail(authed bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v := httputil.Vars(r)
		req, err := parseThumbRequest(r.URL.Query())
		if err != nil {
			httputil.WriteError(w, r, m.log, err)
			return
		}
		md, err := m.resolve(r, v["serverName"], v["mediaId"])
		if err != nil {
			httputil.WriteError(w, r, m.log, err)
			return
		}
		res, err := m.thumb(r.Context(), md, req)
		if err != nil {
			httputil.WriteError(w, r, m.log, err)
			return
		}
		m.serveThumbnail(w, r, md, res, authed)
	}
}

func (m *API) serveThumbnail(w http.ResponseWriter, r *http.Request, md *media, res *thumbResult, authed bool) {
	f, err := m.store.open(res.SHA256)
	if err != nil {
		httputil.WriteError(w, r, m.log, m.fileErr(md, err))
		return
	}
	defer f.Close()
	setMediaHeaders(w.Header(), res.ContentType, thumbDisposition(res.ContentType), authed)
	w.Header().Set("ETag", `"`+res.SHA256+`"`)
	http.ServeContent(w, r, "", time.UnixMilli(res.CreatedTS), f)
}

// thumbDisposition: thumbnails are always inline (spec v1.12), named
// after their type.
func thumbDisposition(contentType string) string {
	ext := "png"
	switch contentType {
	case "image/jpeg":
		ext = "jpg"
	case "image/gif":
		ext = "gif"
	case "image/webp":
		ext = "webp"
	}
	return `inline; filename="thumbnail.` + ext + `"`
}

// thumb finds or makes the thumbnail answering req.
func (m *API) thumb(ctx context.Context, md *media, req thumbRequest) (*thumbResult, error) {
	info, err := m.probe(md)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, m.fileErr(md, err)
	}
	if err != nil {
		return nil, err
	}
	if int64(info.W)*int64(info.H) > maxPixels {
		status := http.StatusRequestEntityTooLarge
		if md.Origin != "" {
			status = http.StatusBadGateway
		}
		return nil, httputil.Err(status, "M_TOO_LARGE", "Content is too large to thumbnail")
	}
	original := &thumbResult{SHA256: md.SHA256, ContentType: info.contentType(), CreatedTS: md.CreatedTS}
	// We make still thumbnails only; an animation is answered with itself
	// when one is wanted and it is not too big.
	if info.Animated && req.Animated && md.Size <= maxAnimatedOriginal {
		return original, nil
	}
	size, orig := pickSize(info.W, info.H, req.W, req.H, req.Method)
	if orig && !info.Animated {
		return original, nil
	}
	t, err := m.db.GetMediaThumbnail(ctx, md.Origin, md.MediaID, size.W, size.H, size.Method)
	if err == nil && m.store.has(t.SHA256) {
		return &thumbResult{SHA256: t.SHA256, ContentType: t.ContentType, CreatedTS: t.CreatedTS}, nil
	}
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	key := md.Origin + "/" + md.MediaID + "/" + strconv.Itoa(size.W) + "x" + strconv.Itoa(size.H) + "/" + size.Method
	v, err := m.thumbs.do(ctx, &m.bg, key, func() (any, error) { return m.generate(md, info, size) })
	if err != nil {
		return nil, err
	}
	return v.(*thumbResult), nil
}

// probe reads (and caches, by content hash) an image's header.
func (m *API) probe(md *media) (imageInfo, error) {
	if info, ok := m.probes.Get(md.SHA256); ok {
		return info.info, info.err
	}
	f, err := m.store.open(md.SHA256)
	if err != nil {
		return imageInfo{}, err
	}
	defer f.Close()
	info, err := probeImage(f)
	if errors.Is(err, errNotImage) {
		m.probes.Put(md.SHA256, probed{err: errCannotThumbnail})
		return imageInfo{}, errCannotThumbnail
	}
	if err != nil {
		return imageInfo{}, err
	}
	m.probes.Put(md.SHA256, probed{info: info})
	return info, nil
}

type probed struct {
	info imageInfo
	err  error
}

// generate renders, stores and records one thumbnail (run once per size
// class at a time, detached from the requests waiting for it).
func (m *API) generate(md *media, info imageInfo, size thumbSize) (*thumbResult, error) {
	ctx, cancel := context.WithTimeout(m.baseCtx, 2*time.Minute)
	defer cancel()
	select {
	case m.thumbSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	f, err := m.store.open(md.SHA256)
	if err != nil {
		<-m.thumbSem
		return nil, err
	}
	data, ct, err := renderThumbnail(f, info, size)
	f.Close()
	<-m.thumbSem
	if errors.Is(err, errNotImage) {
		return nil, errCannotThumbnail
	}
	if err != nil {
		return nil, err
	}
	now := nowMS()
	m.store.gcMu.RLock()
	sha, n, err := m.store.put(bytes.NewReader(data), int64(len(data)))
	if err == nil {
		err = m.db.PutMediaThumbnail(ctx, storage.MediaThumbnail{Origin: md.Origin, MediaID: md.MediaID, Width: size.W, Height: size.H,
			Method: size.Method, ContentType: ct, SHA256: sha, Size: n, CreatedTS: now})
	}
	m.store.gcMu.RUnlock()
	if err != nil {
		return nil, err
	}
	return &thumbResult{SHA256: sha, ContentType: ct, CreatedTS: now}, nil
}
