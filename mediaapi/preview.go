package mediaapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"html"
	"image"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/storage"
)

// Link previews (Client-Server API, "GET /_matrix/client/v1/media/
// preview_url"): the server fetches a page, reads its OpenGraph tags
// (falling back to <title> and the description), stores the og:image as
// media and answers with the tags, the image's mxc URI, size and
// dimensions. Off unless media.url_preview.enabled; private addresses are
// refused at connection time (after DNS, so a name cannot point inside)
// unless allow_private.

const (
	previewPageMax  = 1 << 20  // bytes of HTML read
	previewImageMax = 10 << 20 // bytes of og:image fetched
	previewTTL      = time.Hour
	previewEntries  = 1000
)

type previewer struct {
	enabled bool
	client  *http.Client
	mu      sync.Mutex
	cache   map[string]previewEntry
}

type previewEntry struct {
	body    map[string]any
	expires time.Time
}

func newPreviewer(enabled, allowPrivate, skipTLSVerify bool) *previewer {
	dialer := &net.Dialer{Timeout: 10 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return err
		}
		ip := net.ParseIP(host)
		if ip == nil {
			return fmt.Errorf("preview: bad address %q", address)
		}
		if !allowPrivate && (ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
			ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast()) {
			return fmt.Errorf("preview: %s is not a public address", ip)
		}
		return nil
	}}
	tr := &http.Transport{DialContext: dialer.DialContext, TLSHandshakeTimeout: 10 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second, MaxIdleConns: 4, IdleConnTimeout: 30 * time.Second}
	if skipTLSVerify {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	client := &http.Client{Transport: tr, Timeout: 20 * time.Second, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return errors.New("preview: too many redirects")
		}
		if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
			return errors.New("preview: redirect to a non-web URL")
		}
		return nil
	}}
	return &previewer{enabled: enabled, client: client, cache: map[string]previewEntry{}}
}

// previewURL handles GET preview_url.
func (m *API) previewURL(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	raw := r.URL.Query().Get("url")
	if raw == "" {
		return nil, httputil.MissingParam("Missing url")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(raw) > 2048 {
		return nil, httputil.InvalidParam("url must be an http(s) URL")
	}
	p := m.preview
	if !p.enabled {
		return map[string]any{}, nil // the spec's "no preview"
	}
	u.Fragment = ""
	key := u.String()
	p.mu.Lock()
	if e, ok := p.cache[key]; ok && time.Now().Before(e.expires) {
		p.mu.Unlock()
		return e.body, nil
	}
	p.mu.Unlock()
	if err := m.limiter.Allow(d.RateLimitKey("preview:" + d.UserID)); err != nil {
		return nil, err
	}
	body, err := m.fetchPreview(r.Context(), u, d.UserID)
	if err != nil {
		return nil, httputil.Err(http.StatusBadGateway, "M_UNKNOWN", "Could not preview the URL")
	}
	p.mu.Lock()
	if len(p.cache) >= previewEntries {
		p.cache = map[string]previewEntry{}
	}
	p.cache[key] = previewEntry{body: body, expires: time.Now().Add(previewTTL)}
	p.mu.Unlock()
	return body, nil
}

func (m *API) fetchPreview(ctx context.Context, u *url.URL, userID string) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	data, ctype, final, err := m.preview.get(ctx, u.String(), previewPageMax)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	if strings.HasPrefix(ctype, "image/") {
		// A link straight to an image previews as that image.
		if err := m.previewImage(ctx, data, ctype, userID, out); err != nil {
			return nil, err
		}
		return out, nil
	}
	if !strings.HasPrefix(ctype, "text/html") && !strings.HasPrefix(ctype, "application/xhtml") {
		return out, nil
	}
	og := parseOpenGraph(data)
	for k, v := range og {
		out[k] = v
	}
	if img, ok := og["og:image"]; ok {
		delete(out, "og:image")
		if ref, err := final.Parse(img); err == nil && (ref.Scheme == "http" || ref.Scheme == "https") {
			if idata, ictype, _, err := m.preview.get(ctx, ref.String(), previewImageMax); err == nil && strings.HasPrefix(ictype, "image/") {
				_ = m.previewImage(ctx, idata, ictype, userID, out) // a page without its image still previews
			}
		}
	}
	return out, nil
}

// previewImage stores an image as the user's media and describes it.
func (m *API) previewImage(ctx context.Context, data []byte, ctype, userID string, out map[string]any) error {
	id := newMediaID()
	err := m.storeUpload(ctx, bytes.NewReader(data), func(sha string, size int64) error {
		return m.db.StoreMedia(ctx, storage.LocalMedia{MediaID: id, Uploader: userID, ContentType: ctype, Size: size, SHA256: sha,
			CreatedTS: nowMS()}, m.quota)
	})
	if err != nil {
		return err
	}
	out["og:image"] = "mxc://" + m.serverName + "/" + id
	out["og:image:type"] = ctype
	out["matrix:image:size"] = len(data)
	if cfg, _, err := image.DecodeConfig(bytes.NewReader(data)); err == nil {
		out["og:image:width"], out["og:image:height"] = cfg.Width, cfg.Height
	}
	return nil
}

// get fetches a URL, reading at most max bytes of the body.
func (p *previewer) get(ctx context.Context, u string, max int64) ([]byte, string, *url.URL, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", nil, err
	}
	req.Header.Set("User-Agent", "Repeater link preview")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, "", nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, "", nil, fmt.Errorf("preview: %s answered %d", u, resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, max))
	if err != nil {
		return nil, "", nil, err
	}
	ctype := strings.ToLower(strings.TrimSpace(strings.Split(resp.Header.Get("Content-Type"), ";")[0]))
	return data, ctype, resp.Request.URL, nil
}

var (
	metaTagRE = regexp.MustCompile(`(?is)<meta\s[^>]*>`)
	attrRE    = regexp.MustCompile(`(?is)([a-z:_-]+)\s*=\s*("([^"]*)"|'([^']*)'|([^\s>"']+))`)
	titleRE   = regexp.MustCompile(`(?is)<title[^>]*>(.*?)</title>`)
)

// parseOpenGraph reads og:* meta tags, and falls back to <title> and the
// description meta tag for og:title and og:description.
func parseOpenGraph(page []byte) map[string]string {
	head := page
	if i := bytes.Index(bytes.ToLower(page), []byte("</head>")); i >= 0 {
		head = page[:i]
	}
	og := map[string]string{}
	var description string
	for _, tag := range metaTagRE.FindAll(head, 200) {
		attrs := map[string]string{}
		for _, a := range attrRE.FindAllSubmatch(tag, -1) {
			v := string(a[3]) + string(a[4]) + string(a[5])
			attrs[strings.ToLower(string(a[1]))] = html.UnescapeString(v)
		}
		key := attrs["property"]
		if key == "" {
			key = attrs["name"]
		}
		content, ok := attrs["content"]
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(key, "og:") && len(key) < 64:
			if _, dup := og[key]; !dup {
				og[key] = truncate(content, 1000)
			}
		case strings.EqualFold(key, "description"):
			description = content
		}
	}
	if _, ok := og["og:title"]; !ok {
		if t := titleRE.FindSubmatch(head); t != nil {
			if s := strings.TrimSpace(html.UnescapeString(string(t[1]))); s != "" {
				og["og:title"] = truncate(s, 1000)
			}
		}
	}
	if _, ok := og["og:description"]; !ok && description != "" {
		og["og:description"] = truncate(description, 1000)
	}
	return og
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
