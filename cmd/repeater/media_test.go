package main

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/tidwall/gjson"

	"repeater/internal/config"
	"repeater/storage/storagetest"
)

// mediaResp is a raw answer of a media endpoint.
type mediaResp struct {
	status int
	header http.Header
	body   []byte
}

func (r mediaResp) json() gjson.Result { return gjson.ParseBytes(r.body) }

// raw sends a request with a raw body; withToken sends c's access token.
func (c *client) raw(method, path string, body []byte, contentType string, withToken bool, hdr ...string) mediaResp {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if withToken && c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return mediaResp{status: resp.StatusCode, header: resp.Header, body: b}
}

// uploadMedia uploads content and returns its mxc:// URI's server and ID.
func (c *client) uploadMedia(content []byte, contentType, filename string) (string, string) {
	c.t.Helper()
	path := "/_matrix/media/v3/upload"
	if filename != "" {
		path += "?filename=" + url.QueryEscape(filename)
	}
	r := c.raw("POST", path, content, contentType, true)
	if r.status != 200 {
		c.t.Fatalf("upload: %d %s", r.status, r.body)
	}
	uri := r.json().Get("content_uri").Str
	server, id, ok := strings.Cut(strings.TrimPrefix(uri, "mxc://"), "/")
	if !ok || !strings.HasPrefix(uri, "mxc://") {
		c.t.Fatalf("content_uri %q", uri)
	}
	return server, id
}

func wantMediaErr(t *testing.T, what string, r mediaResp, status int, code string) {
	t.Helper()
	if r.status != status || r.json().Get("errcode").Str != code {
		t.Fatalf("%s: %d %s, want %d %s", what, r.status, r.body, status, code)
	}
}

// mediaFiles counts the files in a server's media store.
func mediaFiles(t *testing.T, cfg *config.Config) int {
	t.Helper()
	n := 0
	root := cfg.MediaPath()
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p == filepath.Join(root, "tmp") {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mediaJPEG(t testing.TB, w, h int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{R: uint8(x), G: uint8(y), B: 128, A: 255})
		}
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func mediaPNG(t testing.TB, w, h int) []byte {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = uint8(i)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// Upload, download with safe headers, file names, deduplication, the
// authenticated endpoints.
func TestMediaUploadDownload(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice := ts.register("alice")
		anon := &client{t: t, base: ts.base}
		pic := mediaPNG(t, 20, 10)
		server, id := alice.uploadMedia(pic, "image/png", "cat picture.png")
		if server != "test.local" {
			t.Fatalf("server %q", server)
		}
		for _, p := range []string{"/_matrix/media/v3/download/", "/_matrix/media/r0/download/"} {
			r := anon.raw("GET", p+server+"/"+id, nil, "", false)
			if r.status != 200 || !bytes.Equal(r.body, pic) {
				t.Fatalf("%s: %d, %d bytes", p, r.status, len(r.body))
			}
			for k, want := range map[string]string{
				"Content-Type":                 "image/png",
				"Content-Disposition":          `inline; filename="cat picture.png"`,
				"X-Content-Type-Options":       "nosniff",
				"Cross-Origin-Resource-Policy": "cross-origin",
			} {
				if got := r.header.Get(k); got != want {
					t.Fatalf("%s: %q, want %q", k, got, want)
				}
			}
			if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "sandbox") || !strings.Contains(csp, "default-src 'none'") {
				t.Fatalf("CSP %q", csp)
			}
			if cc := r.header.Get("Cache-Control"); !strings.Contains(cc, "immutable") {
				t.Fatalf("Cache-Control %q", cc)
			}
		}
		// The file name in the path overrides; non-ASCII names use RFC 8187.
		r := anon.raw("GET", "/_matrix/media/v3/download/"+server+"/"+id+"/"+url.PathEscape("Grüße.png"), nil, "", false)
		if r.status != 200 || r.header.Get("Content-Disposition") != "inline; filename*=utf-8''Gr%C3%BC%C3%9Fe.png" {
			t.Fatalf("file name override: %d %q", r.status, r.header.Get("Content-Disposition"))
		}
		// Ranges and HEAD.
		r = anon.raw("GET", "/_matrix/media/v3/download/"+server+"/"+id, nil, "", false, "Range", "bytes=0-3")
		if r.status != 206 || !bytes.Equal(r.body, pic[:4]) {
			t.Fatalf("range: %d %q", r.status, r.body)
		}
		r = anon.raw("HEAD", "/_matrix/media/v3/download/"+server+"/"+id, nil, "", false)
		if r.status != 200 || len(r.body) != 0 || r.header.Get("Content-Length") != strconv.Itoa(len(pic)) {
			t.Fatalf("HEAD: %d %v", r.status, r.header)
		}

		// Authenticated media (v1.11) needs an access token.
		v1 := "/_matrix/client/v1/media/download/" + server + "/" + id
		wantMediaErr(t, "v1 without token", anon.raw("GET", v1, nil, "", false), 401, "M_MISSING_TOKEN")
		bad := &client{t: t, base: ts.base, token: "nope"}
		wantMediaErr(t, "v1 with a bad token", bad.raw("GET", v1, nil, "", true), 401, "M_UNKNOWN_TOKEN")
		r = alice.raw("GET", v1, nil, "", true)
		if r.status != 200 || !bytes.Equal(r.body, pic) || !strings.Contains(r.header.Get("Cache-Control"), "private") {
			t.Fatalf("v1 download: %d %v", r.status, r.header)
		}
		wantMediaErr(t, "v1 thumbnail without token", anon.raw("GET", "/_matrix/client/v1/media/thumbnail/"+server+"/"+id+"?width=32&height=32", nil, "", false), 401, "M_MISSING_TOKEN")
		wantMediaErr(t, "upload without token", anon.raw("POST", "/_matrix/media/v3/upload", pic, "image/png", false), 401, "M_MISSING_TOKEN")
		for _, p := range []string{"/_matrix/client/v1/media/config", "/_matrix/media/v3/config"} {
			if c := alice.must("GET", p, nil); c.Get(`m\.upload\.size`).Int() != cfg.Media.MaxUploadSize {
				t.Fatalf("%s: %s", p, c.Raw)
			}
		}
		if p := alice.must("GET", "/_matrix/client/v1/media/preview_url?url="+url.QueryEscape("https://example.org/"), nil); p.Raw != "{}" {
			t.Fatalf("preview_url: %s", p.Raw)
		}
		wantMediaErr(t, "preview without url", alice.raw("GET", "/_matrix/client/v1/media/preview_url", nil, "", true), 400, "M_MISSING_PARAM")

		// HTML is served as an attachment; no type at all is octet-stream.
		_, htmlID := alice.uploadMedia([]byte("<script>alert(1)</script>"), "text/html", "x.html")
		r = anon.raw("GET", "/_matrix/media/v3/download/"+server+"/"+htmlID, nil, "", false)
		if r.header.Get("Content-Disposition") != `attachment; filename="x.html"` || r.header.Get("Content-Type") != "text/html" {
			t.Fatalf("html: %v", r.header)
		}
		_, rawID := alice.uploadMedia([]byte("??"), "", "")
		r = anon.raw("GET", "/_matrix/media/v3/download/"+server+"/"+rawID, nil, "", false)
		if r.header.Get("Content-Type") != "application/octet-stream" || r.header.Get("Content-Disposition") != "attachment" {
			t.Fatalf("untyped: %v", r.header)
		}

		// Unknown and malformed IDs.
		wantMediaErr(t, "unknown media", anon.raw("GET", "/_matrix/media/v3/download/"+server+"/nonexistent", nil, "", false), 404, "M_NOT_FOUND")
		wantMediaErr(t, "bad media ID", anon.raw("GET", "/_matrix/media/v3/download/"+server+"/..%2F..%2Fetc", nil, "", false), 404, "M_NOT_FOUND")
		wantMediaErr(t, "bad server", anon.raw("GET", "/_matrix/media/v3/download/bad%20server/abc", nil, "", false), 404, "M_NOT_FOUND")
		wantMediaErr(t, "remote, not allowed", anon.raw("GET", "/_matrix/media/v3/download/elsewhere.test/abc?allow_remote=false", nil, "", false), 404, "M_NOT_FOUND")

		// Identical content is stored once.
		before := mediaFiles(t, cfg)
		bob := ts.register("bob")
		_, id2 := bob.uploadMedia(pic, "image/png", "same.png")
		if id2 == id {
			t.Fatal("second upload got the same media ID")
		}
		if after := mediaFiles(t, cfg); after != before {
			t.Fatalf("%d files after uploading the same bytes again, was %d", after, before)
		}
		if r := anon.raw("GET", "/_matrix/media/v3/download/"+server+"/"+id2, nil, "", false); !bytes.Equal(r.body, pic) ||
			r.header.Get("Content-Disposition") != `inline; filename="same.png"` {
			t.Fatalf("deduplicated download: %v", r.header)
		}
	})
}

func TestMediaThumbnails(t *testing.T) {
	ts := startTestServer(t, newTestConfig(t, filepath.Join(t.TempDir(), "test.db")))
	alice := ts.register("alice")
	photo := mediaJPEG(t, 1000, 750)
	server, id := alice.uploadMedia(photo, "image/jpeg", "photo.jpg")
	thumb := func(q string) mediaResp {
		return alice.raw("GET", "/_matrix/client/v1/media/thumbnail/"+server+"/"+id+"?"+q, nil, "", true)
	}
	dims := func(r mediaResp) (string, int, int) {
		cfg, format, err := image.DecodeConfig(bytes.NewReader(r.body))
		if err != nil {
			t.Fatalf("thumbnail does not decode: %v (%d %s)", err, r.status, r.body)
		}
		return format, cfg.Width, cfg.Height
	}
	for _, c := range []struct {
		q    string
		w, h int
	}{
		{"width=32&height=32&method=crop", 32, 32},
		{"width=96&height=96&method=crop", 96, 96},
		{"width=50&height=50&method=crop", 96, 96},
		{"width=320&height=240&method=scale", 320, 240},
		{"width=100&height=100", 320, 240},
		{"width=640&height=480&method=scale", 640, 480},
		{"width=800&height=600&method=scale", 800, 600},
		{"width=2000&height=2000&method=scale", 1000, 750}, // the original
	} {
		r := thumb(c.q)
		if r.status != 200 || r.header.Get("Content-Type") != "image/jpeg" || !strings.HasPrefix(r.header.Get("Content-Disposition"), "inline") {
			t.Fatalf("%s: %d %v %s", c.q, r.status, r.header, r.body)
		}
		if format, w, h := dims(r); format != "jpeg" || w != c.w || h != c.h {
			t.Fatalf("%s: %s %dx%d, want %dx%d", c.q, format, w, h, c.w, c.h)
		}
	}
	// Thumbnails are made once: asking again makes no new file.
	files := mediaFiles(t, ts.cfg)
	a, b := thumb("width=32&height=32&method=crop"), thumb("width=32&height=32&method=crop")
	if !bytes.Equal(a.body, b.body) || mediaFiles(t, ts.cfg) != files {
		t.Fatal("thumbnail made again")
	}
	// Concurrent first requests of another image agree.
	_, id2 := alice.uploadMedia(mediaPNG(t, 600, 600), "image/png", "")
	var wg sync.WaitGroup
	results := make([][]byte, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = alice.raw("GET", "/_matrix/media/v3/thumbnail/"+server+"/"+id2+"?width=96&height=96&method=crop", nil, "", false).body
		}()
	}
	wg.Wait()
	for _, r := range results[1:] {
		if !bytes.Equal(r, results[0]) {
			t.Fatal("concurrent thumbnails differ")
		}
	}
	if format, w, h := dims(mediaResp{body: results[0]}); format != "png" || w != 96 || h != 96 {
		t.Fatalf("png thumbnail: %s %dx%d", format, w, h)
	}
	// An image smaller than asked is answered with itself.
	small := mediaPNG(t, 20, 20)
	_, smallID := alice.uploadMedia(small, "image/png", "")
	if r := thumb("width=96&height=96&method=crop"); r.status != 200 {
		t.Fatal(r.status)
	}
	if r := alice.raw("GET", "/_matrix/media/v3/thumbnail/"+server+"/"+smallID+"?width=96&height=96&method=crop", nil, "", false); !bytes.Equal(r.body, small) {
		t.Fatal("small image not answered with itself")
	}
	// Not an image, bad parameters.
	_, textID := alice.uploadMedia([]byte("hello"), "text/plain", "")
	wantMediaErr(t, "thumbnail of text", alice.raw("GET", "/_matrix/media/v3/thumbnail/"+server+"/"+textID+"?width=32&height=32", nil, "", false), 400, "M_UNKNOWN")
	wantMediaErr(t, "image/png that is not", alice.raw("GET", "/_matrix/media/v3/thumbnail/"+server+"/"+alice.mustUploadID([]byte("fake"), "image/png")+"?width=32&height=32", nil, "", false), 400, "M_UNKNOWN")
	wantMediaErr(t, "no width", thumb("height=32"), 400, "M_MISSING_PARAM")
	wantMediaErr(t, "negative width", thumb("width=-1&height=32"), 400, "M_INVALID_PARAM")
	wantMediaErr(t, "bad method", thumb("width=32&height=32&method=zoom"), 400, "M_INVALID_PARAM")
	wantMediaErr(t, "unknown media", alice.raw("GET", "/_matrix/media/v3/thumbnail/"+server+"/nope?width=32&height=32", nil, "", false), 404, "M_NOT_FOUND")
}

func (c *client) mustUploadID(content []byte, ct string) string {
	_, id := c.uploadMedia(content, ct, "")
	return id
}

func TestMediaLimitsAndQuotas(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		cfg.Media.MaxUploadSize = 1000
		cfg.Media.UserQuota = 2500
		cfg.Media.TotalQuota = 4000
		ts := startTestServer(t, cfg)
		alice := ts.register("alice")
		bob := ts.register("bob")
		carol := ts.register("carol")
		wantMediaErr(t, "oversize", alice.raw("POST", "/_matrix/media/v3/upload", make([]byte, 1001), "application/octet-stream", true), 413, "M_TOO_LARGE")
		// Without a Content-Length the limit applies to what arrives.
		req, _ := http.NewRequest("POST", ts.base+"/_matrix/media/v3/upload", io.MultiReader(bytes.NewReader(make([]byte, 600)), bytes.NewReader(make([]byte, 600))))
		req.Header.Set("Authorization", "Bearer "+alice.token)
		req.ContentLength = -1
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantMediaErr(t, "oversize, chunked", mediaResp{status: resp.StatusCode, body: b}, 413, "M_TOO_LARGE")
		if n := mediaFiles(t, cfg); n != 0 {
			t.Fatalf("%d files after refused uploads", n)
		}

		for i := 0; i < 2; i++ {
			alice.uploadMedia(bytes.Repeat([]byte{byte(i)}, 1000), "application/octet-stream", "")
		}
		r := alice.raw("POST", "/_matrix/media/v3/upload", make([]byte, 600), "application/octet-stream", true)
		wantMediaErr(t, "over the user quota", r, 403, "M_FORBIDDEN")
		if !strings.Contains(r.json().Get("error").Str, "quota") {
			t.Fatalf("quota message: %s", r.body)
		}
		alice.uploadMedia(make([]byte, 500), "application/octet-stream", "") // exactly the quota
		bob.uploadMedia(make([]byte, 1000), "application/octet-stream", "")
		// 3500 of 4000 used: the server's quota stops carol.
		wantMediaErr(t, "over the total quota", carol.raw("POST", "/_matrix/media/v3/upload", make([]byte, 600), "application/octet-stream", true), 403, "M_FORBIDDEN")
		carol.uploadMedia(make([]byte, 400), "application/octet-stream", "")
	})
}

// POST /create, then download waiting for the upload, then PUT.
func TestMediaAsyncUpload(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice := ts.register("alice")
		bob := ts.register("bob")
		c := alice.must("POST", "/_matrix/media/v1/create", map[string]any{})
		uri := c.Get("content_uri").Str
		if exp := c.Get("unused_expires_at").Int(); exp < time.Now().Add(time.Hour).UnixMilli() {
			t.Fatalf("create: %s", c.Raw)
		}
		server, id, _ := strings.Cut(strings.TrimPrefix(uri, "mxc://"), "/")
		dl := "/_matrix/client/v1/media/download/" + server + "/" + id
		wantMediaErr(t, "not yet uploaded", alice.raw("GET", dl+"?timeout_ms=100", nil, "", true), 504, "M_NOT_YET_UPLOADED")

		done := make(chan mediaResp)
		go func() { done <- bob.raw("GET", dl+"?timeout_ms=10000", nil, "", true) }()
		time.Sleep(200 * time.Millisecond)
		put := "/_matrix/media/v3/upload/" + server + "/" + id + "?filename=late.txt"
		wantMediaErr(t, "someone else's media ID", bob.raw("PUT", put, []byte("mine"), "text/plain", true), 403, "M_FORBIDDEN")
		if r := alice.raw("PUT", put, []byte("here it is"), "text/plain", true); r.status != 200 || r.json().Raw != "{}" {
			t.Fatalf("PUT: %d %s", r.status, r.body)
		}
		select {
		case r := <-done:
			if r.status != 200 || string(r.body) != "here it is" || r.header.Get("Content-Disposition") != `inline; filename="late.txt"` {
				t.Fatalf("waiting download: %d %q %v", r.status, r.body, r.header)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the waiting download was not woken by the upload")
		}
		wantMediaErr(t, "second PUT", alice.raw("PUT", put, []byte("again"), "text/plain", true), 409, "M_CANNOT_OVERWRITE_MEDIA")
		wantMediaErr(t, "PUT to an unknown ID", alice.raw("PUT", "/_matrix/media/v3/upload/"+server+"/unknownid", []byte("x"), "text/plain", true), 404, "M_NOT_FOUND")
		wantMediaErr(t, "PUT to another server", alice.raw("PUT", "/_matrix/media/v3/upload/other.test/"+id, []byte("x"), "text/plain", true), 404, "M_NOT_FOUND")
		// A user may only hold so many unused media IDs.
		var st int
		for i := 0; i < 30 && st != 429; i++ {
			st, _ = alice.do("POST", "/_matrix/media/v1/create", map[string]any{})
		}
		if st != 429 {
			t.Fatal("no limit on pending uploads")
		}
	})
}

// A user on s1 downloads and thumbnails media uploaded on s0; s0 serves
// it over the authenticated federation media endpoint.
func TestMediaFederation(t *testing.T) {
	srv := fedNet(t, 2)
	alice := srv[0].register("alice")
	bob := srv[1].register("bob")
	photo := mediaJPEG(t, 640, 480)
	server, id := alice.uploadMedia(photo, "image/jpeg", "holiday.jpg")
	_, other := alice.uploadMedia([]byte("second"), "text/plain", "")

	wantMediaErr(t, "not cached, remote not allowed", bob.raw("GET", "/_matrix/media/v3/download/"+server+"/"+other+"?allow_remote=false", nil, "", false), 404, "M_NOT_FOUND")
	r := bob.raw("GET", "/_matrix/client/v1/media/download/"+server+"/"+id, nil, "", true)
	if r.status != 200 || !bytes.Equal(r.body, photo) || r.header.Get("Content-Type") != "image/jpeg" ||
		r.header.Get("Content-Disposition") != `inline; filename="holiday.jpg"` {
		t.Fatalf("remote download: %d %v %s", r.status, r.header, r.body)
	}
	th := bob.raw("GET", "/_matrix/client/v1/media/thumbnail/"+server+"/"+id+"?width=96&height=96&method=crop", nil, "", true)
	if cfg, _, err := image.DecodeConfig(bytes.NewReader(th.body)); err != nil || cfg.Width != 96 || cfg.Height != 96 {
		t.Fatalf("remote thumbnail: %d %v %v", th.status, cfg, err)
	}
	// Now cached on s1: served even with allow_remote=false.
	if r := bob.raw("GET", "/_matrix/media/v3/download/"+server+"/"+id+"?allow_remote=false", nil, "", false); !bytes.Equal(r.body, photo) {
		t.Fatalf("cached remote media: %d", r.status)
	}
	wantMediaErr(t, "remote media that does not exist", bob.raw("GET", "/_matrix/client/v1/media/download/"+server+"/doesnotexist", nil, "", true), 404, "M_NOT_FOUND")

	// The federation endpoint itself: signed requests only, multipart.
	fed := "/_matrix/federation/v1/media/download/" + id
	anon := &client{t: t, base: srv[0].base}
	if r := anon.raw("GET", fed, nil, "", false); r.status != 401 {
		t.Fatalf("unsigned federation media request: %d", r.status)
	}
	signedGet := func(path string) *http.Response {
		key, err := config.LoadSigningKey(srv[1].cfg.Path(srv[1].cfg.SigningKeyPath))
		if err != nil {
			t.Fatal(err)
		}
		fr := fclient.NewFederationRequest("GET", "s1.test", "s0.test", path)
		if err := fr.Sign("s1.test", key.KeyID, key.PrivateKey); err != nil {
			t.Fatal(err)
		}
		req, err := fr.HTTPRequest()
		if err != nil {
			t.Fatal(err)
		}
		u, _ := url.Parse(srv[0].base)
		req.URL.Scheme, req.URL.Host = u.Scheme, u.Host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for _, c := range []struct {
		path, ct string
		check    func([]byte) bool
	}{
		{fed, "image/jpeg", func(b []byte) bool { return bytes.Equal(b, photo) }},
		{"/_matrix/federation/v1/media/thumbnail/" + id + "?width=32&height=32&method=crop", "image/jpeg", func(b []byte) bool {
			cfg, _, err := image.DecodeConfig(bytes.NewReader(b))
			return err == nil && cfg.Width == 32 && cfg.Height == 32
		}},
	} {
		resp := signedGet(c.path)
		mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if resp.StatusCode != 200 || err != nil || mt != "multipart/mixed" {
			t.Fatalf("%s: %d %q", c.path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		mr := multipart.NewReader(resp.Body, params["boundary"])
		meta, err := mr.NextPart()
		if err != nil || meta.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s: metadata part: %v", c.path, err)
		}
		if js, _ := io.ReadAll(meta); string(js) != "{}" {
			t.Fatalf("metadata %q", js)
		}
		part, err := mr.NextPart()
		if err != nil || part.Header.Get("Content-Type") != c.ct {
			t.Fatalf("%s: media part: %v %v", c.path, err, part.Header)
		}
		b, _ := io.ReadAll(part)
		if !c.check(b) {
			t.Fatalf("%s: wrong content (%d bytes)", c.path, len(b))
		}
		resp.Body.Close()
	}
	resp := signedGet("/_matrix/federation/v1/media/download/nosuchmedia")
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("unknown media over federation: %d", resp.StatusCode)
	}
}

// Link previews: off by default ({}); on, a page's OpenGraph tags come back
// with its image stored as media; loopback pages are refused unless
// allowed.
func TestURLPreview(t *testing.T) {
	png := func() []byte {
		img := image.NewRGBA(image.Rect(0, 0, 40, 30))
		var b bytes.Buffer
		if err := png.Encode(&b, img); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}()
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/page.html":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Write([]byte(`<html><head><title>x</title><meta property="og:title" content="The Rock"><meta property="og:image" content="/pic.png"></head></html>`))
		case "/pic.png":
			w.Header().Set("Content-Type", "image/png")
			w.Write(png)
		default:
			http.NotFound(w, r)
		}
	}))
	defer site.Close()
	preview := "/_matrix/client/v1/media/preview_url?url=" + url.QueryEscape(site.URL+"/page.html")
	for _, c := range []struct {
		name            string
		enabled, anyNet bool
	}{{"off", false, false}, {"public only", true, false}, {"on", true, true}} {
		t.Run(c.name, func(t *testing.T) {
			cfg := newTestConfig(t, firstDialect(t))
			cfg.Media.URLPreview.Enabled, cfg.Media.URLPreview.AllowPrivate = c.enabled, c.anyNet
			ts := startTestServer(t, cfg)
			alice := ts.register("alice")
			st, res := alice.do("GET", preview, nil)
			switch {
			case !c.enabled:
				if st != 200 || res.Raw != "{}" {
					t.Fatalf("disabled: %d %s", st, res.Raw)
				}
			case !c.anyNet:
				if st != 502 {
					t.Fatalf("a loopback page was fetched: %d %s", st, res.Raw)
				}
			default:
				if st != 200 || res.Get("og:title").Str != "The Rock" || !strings.HasPrefix(res.Get("og:image").Str, "mxc://") ||
					res.Get("og:image:width").Int() != 40 || res.Get("og:image:height").Int() != 30 || res.Get("matrix:image:size").Int() != int64(len(png)) {
					t.Fatalf("preview: %d %s", st, res.Raw)
				}
			}
		})
	}
}

func firstDialect(t *testing.T) string {
	for _, dsn := range storagetest.Dialects(t) {
		return dsn
	}
	return ""
}
