package mediaapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"repeater/internal/config"
	"repeater/internal/httputil"
	"repeater/storage"
)

// fakeFed answers the media API's federation requests from handlers.
type fakeFed struct {
	mu    sync.Mutex
	calls []string
	n     atomic.Int64
	serve func(w http.ResponseWriter, server, path string, signed bool)
	web   func(w http.ResponseWriter, url string)
}

func (f *fakeFed) MediaGet(ctx context.Context, server, path string, signed bool) (*http.Response, error) {
	f.n.Add(1)
	f.mu.Lock()
	sig := "unsigned"
	if signed {
		sig = "signed"
	}
	f.calls = append(f.calls, sig+" "+server+path)
	f.mu.Unlock()
	rec := httptest.NewRecorder()
	f.serve(rec, server, path, signed)
	return rec.Result(), nil
}

func (f *fakeFed) MediaGetURL(ctx context.Context, url string) (*http.Response, error) {
	f.mu.Lock()
	f.calls = append(f.calls, "url "+url)
	f.mu.Unlock()
	rec := httptest.NewRecorder()
	f.web(rec, url)
	return rec.Result(), nil
}

func newTestAPI(t *testing.T, fed Federation, tweak func(*config.Config)) *API {
	t.Helper()
	cfg := config.Defaults()
	cfg.ServerName = "local.test"
	cfg.Media.Path = t.TempDir()
	if tweak != nil {
		tweak(cfg)
	}
	db, err := storage.Open(context.Background(), filepath.Join(t.TempDir(), "test.db"))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	m, err := New(Deps{Config: cfg, DB: db, Federation: fed, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); db.Close() })
	return m
}

// writeMultipartAnswer writes a federation media answer; a second part
// with a Location when loc is set, else the content.
func writeMultipartAnswer(w http.ResponseWriter, contentType, disposition string, content []byte, loc string) {
	mw := multipart.NewWriter(w)
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	p, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	p.Write([]byte("{}"))
	if loc != "" {
		mw.CreatePart(textproto.MIMEHeader{"Location": {loc}})
	} else {
		p, _ = mw.CreatePart(textproto.MIMEHeader{"Content-Type": {contentType}, "Content-Disposition": {disposition}})
		p.Write(content)
	}
	mw.Close()
}

func TestParseMultipartMedia(t *testing.T) {
	content := []byte("\r\n--not-the-boundary\r\nbinary\x00bytes\r\n")
	rec := httptest.NewRecorder()
	writeMultipartAnswer(rec, "application/pdf", `attachment; filename="a.pdf"`, content, "")
	_, boundary, _ := strings.Cut(rec.Header().Get("Content-Type"), "boundary=")
	mm, err := parseMultipartMedia(rec.Body, boundary)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(mm.Body)
	if !bytes.Equal(got, content) || mm.ContentType != "application/pdf" || dispositionFilename(mm.Disposition) != "a.pdf" {
		t.Fatalf("parsed %q %q %q", got, mm.ContentType, mm.Disposition)
	}

	rec = httptest.NewRecorder()
	writeMultipartAnswer(rec, "", "", nil, "https://cdn.example/m/1")
	_, boundary, _ = strings.Cut(rec.Header().Get("Content-Type"), "boundary=")
	mm, err = parseMultipartMedia(rec.Body, boundary)
	if err != nil || mm.Location != "https://cdn.example/m/1" {
		t.Fatalf("location: %+v %v", mm, err)
	}

	for name, body := range map[string]string{
		"no parts":           "garbage",
		"metadata not json":  "--b\r\nContent-Type: application/json\r\n\r\n{oops\r\n--b\r\n\r\nx\r\n--b--\r\n",
		"metadata not first": "--b\r\nContent-Type: image/png\r\n\r\nx\r\n--b--\r\n",
		"one part only":      "--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b--\r\n",
	} {
		if _, err := parseMultipartMedia(strings.NewReader(body), "b"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestRemoteFetchCoalescedAndCached(t *testing.T) {
	content := bytes.Repeat([]byte("remote!"), 1000)
	release := make(chan struct{})
	fed := &fakeFed{serve: func(w http.ResponseWriter, server, path string, signed bool) {
		<-release
		writeMultipartAnswer(w, "image/png", "inline; filename*=utf-8''%E2%82%AC.png", content, "")
	}}
	m := newTestAPI(t, fed, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			md, err := m.fetchRemote(context.Background(), "remote.test", "abc", time.Second)
			if err == nil && (md.Size != int64(len(content)) || md.UploadName != "€.png" || md.ContentType != "image/png") {
				err = errors.New("wrong metadata")
			}
			errs <- err
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := fed.n.Load(); n != 1 {
		t.Fatalf("%d fetches for 20 concurrent requests", n)
	}
	if fed.calls[0] != "signed remote.test/_matrix/federation/v1/media/download/abc?timeout_ms=1000" {
		t.Fatalf("request %q", fed.calls[0])
	}
	rm, err := m.db.GetRemoteMedia(context.Background(), "remote.test", "abc")
	if err != nil {
		t.Fatal(err)
	}
	f, err := m.store.open(rm.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, content) {
		t.Fatal("stored bytes differ")
	}
}

func TestRemoteFetchRedirectAndFallback(t *testing.T) {
	fed := &fakeFed{}
	fed.serve = func(w http.ResponseWriter, server, path string, signed bool) {
		switch {
		case strings.Contains(path, "/federation/v1/media/download/redir"):
			writeMultipartAnswer(w, "", "", nil, "https://cdn.remote.test/blob")
		case strings.Contains(path, "/federation/"):
			httputil.WriteJSON(w, 404, map[string]string{"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})
		case strings.Contains(path, "/_matrix/media/v3/download/remote.test/old"):
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Disposition", `attachment; filename="old.txt"`)
			w.Write([]byte("legacy"))
		case strings.Contains(path, "/_matrix/media/v3/download/remote.test/moved"):
			w.Header().Set("Location", "https://cdn.remote.test/moved")
			w.WriteHeader(http.StatusTemporaryRedirect)
		default:
			httputil.WriteJSON(w, 404, map[string]string{"errcode": "M_NOT_FOUND", "error": "nope"})
		}
	}
	fed.web = func(w http.ResponseWriter, url string) {
		w.Header().Set("Content-Type", "image/gif")
		w.Write([]byte("from " + url))
	}
	m := newTestAPI(t, fed, nil)
	ctx := context.Background()

	md, err := m.fetchRemote(ctx, "remote.test", "redir", time.Second)
	if err != nil || md.ContentType != "image/gif" || md.Size != int64(len("from https://cdn.remote.test/blob")) {
		t.Fatalf("redirect: %+v %v", md, err)
	}
	md, err = m.fetchRemote(ctx, "remote.test", "old", time.Second)
	if err != nil || md.UploadName != "old.txt" || md.Size != 6 {
		t.Fatalf("fallback: %+v %v", md, err)
	}
	last := fed.calls[len(fed.calls)-1]
	if !strings.HasPrefix(last, "unsigned remote.test/_matrix/media/v3/download/remote.test/old?allow_remote=false") {
		t.Fatalf("legacy request %q", last)
	}
	if md, err = m.fetchRemote(ctx, "remote.test", "moved", time.Second); err != nil || md.Size != int64(len("from https://cdn.remote.test/moved")) {
		t.Fatalf("legacy redirect: %+v %v", md, err)
	}
	_, err = m.fetchRemote(ctx, "remote.test", "gone", time.Second)
	var he *httputil.Error
	if !errors.As(err, &he) || he.Status != 404 || he.Code != "M_NOT_FOUND" {
		t.Fatalf("missing remote media: %v", err)
	}
}

func TestRemoteFetchErrors(t *testing.T) {
	fed := &fakeFed{serve: func(w http.ResponseWriter, server, path string, signed bool) {
		switch {
		case strings.Contains(path, "/big"):
			writeMultipartAnswer(w, "application/octet-stream", "", make([]byte, 2000), "")
		case strings.Contains(path, "/pending"):
			httputil.WriteJSON(w, 504, map[string]string{"errcode": "M_NOT_YET_UPLOADED", "error": "later"})
		case strings.Contains(path, "/garbled"):
			w.Header().Set("Content-Type", "multipart/mixed; boundary=zz")
			w.Write([]byte("this is not multipart"))
		case strings.Contains(path, "/plain"):
			w.Header().Set("Content-Type", "image/png")
			w.Write([]byte("not multipart"))
		default:
			httputil.WriteJSON(w, 500, map[string]string{"errcode": "M_UNKNOWN", "error": "oops"})
		}
	}}
	m := newTestAPI(t, fed, func(c *config.Config) { c.Media.MaxUploadSize = 1000 })
	for id, want := range map[string]string{"big": "502 M_TOO_LARGE", "pending": "504 M_NOT_YET_UPLOADED", "garbled": "502 M_UNKNOWN",
		"plain": "502 M_UNKNOWN", "broken": "502 M_UNKNOWN"} {
		_, err := m.fetchRemote(context.Background(), "remote.test", id, time.Second)
		var he *httputil.Error
		if !errors.As(err, &he) || itoa(int64(he.Status))+" "+he.Code != want {
			t.Errorf("%s: %v, want %s", id, err, want)
		}
	}
	if n, _ := m.store.count(); n != 0 {
		t.Fatalf("%d files left behind by failed fetches", n)
	}
}

func TestRemoteCacheEviction(t *testing.T) {
	fed := &fakeFed{serve: func(w http.ResponseWriter, server, path string, signed bool) {
		id := path[strings.LastIndexByte(path, '/')+1 : strings.IndexByte(path, '?')]
		writeMultipartAnswer(w, "text/plain", "", bytes.Repeat([]byte(id), 50), "")
	}}
	m := newTestAPI(t, fed, func(c *config.Config) { c.Media.RemoteCacheSize = 250 })
	ctx := context.Background()
	for _, id := range []string{"a1", "b2", "c3"} {
		if _, err := m.fetchRemote(ctx, "remote.test", id, time.Second); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // distinct access times
	}
	if _, err := m.db.GetRemoteMedia(ctx, "remote.test", "a1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("least recently used media not evicted: %v", err)
	}
	if n, _ := m.store.count(); n != 2 {
		t.Fatalf("%d files on disk, want 2", n)
	}
	if used, _ := m.db.RemoteMediaCacheUsage(ctx); used > 250 {
		t.Fatalf("cache holds %d bytes", used)
	}
}

func TestFileStoreDedupAndCollect(t *testing.T) {
	m := newTestAPI(t, nil, nil)
	ctx := context.Background()
	put := func(s string) string {
		m.store.gcMu.RLock()
		defer m.store.gcMu.RUnlock()
		sha, n, err := m.store.put(strings.NewReader(s), 100)
		if err != nil || n != int64(len(s)) {
			t.Fatalf("put: %v", err)
		}
		return sha
	}
	a, b := put("same"), put("same")
	if a != b {
		t.Fatal("same content, different hashes")
	}
	if n, _ := m.store.count(); n != 1 {
		t.Fatalf("%d files for one content", n)
	}
	if _, _, err := m.store.put(strings.NewReader(strings.Repeat("x", 101)), 100); !errors.Is(err, errBodyTooLarge) {
		t.Fatalf("over the limit: %v", err)
	}
	if err := m.db.StoreMedia(ctx, storage.LocalMedia{MediaID: "x", Uploader: "@a:x", Size: 4, SHA256: a}, storage.MediaQuota{}); err != nil {
		t.Fatal(err)
	}
	other := put("other")
	if err := m.store.collect(ctx, m.db, a, other); err != nil {
		t.Fatal(err)
	}
	if !m.store.has(a) || m.store.has(other) {
		t.Fatalf("collect: referenced kept %v, unreferenced removed %v", m.store.has(a), !m.store.has(other))
	}
	if n, _ := m.store.count(); n != 1 {
		t.Fatalf("%d files left (temporary files?)", n)
	}
}
