package mediaapi

import (
	"mime"
	"net/http"
	"strings"
	"testing"
)

func TestContentDisposition(t *testing.T) {
	cases := []struct{ ct, name, want string }{
		{"image/png", "cat.png", `inline; filename="cat.png"`},
		{"image/png", "", "inline"},
		{"text/plain; charset=utf-8", "notes.txt", `inline; filename="notes.txt"`},
		{"text/html", "page.html", `attachment; filename="page.html"`},
		{"image/svg+xml", "x.svg", `attachment; filename="x.svg"`},
		{"application/octet-stream", "a b.bin", `attachment; filename="a b.bin"`},
		{"application/pdf", `quote".pdf`, `attachment; filename*=utf-8''quote%22.pdf`},
		{"image/jpeg", "Grüße €.jpg", `inline; filename*=utf-8''Gr%C3%BC%C3%9Fe%20%E2%82%AC.jpg`},
		{"video/mp4", "100%.mp4", `inline; filename*=utf-8''100%25.mp4`},
		{"text/plain", "a\\b;c", `inline; filename*=utf-8''a%5Cb%3Bc`},
		{"not a type", "x", `attachment; filename="x"`},
	}
	for _, c := range cases {
		got := contentDisposition(c.ct, c.name)
		if got != c.want {
			t.Errorf("%s %q: got %s, want %s", c.ct, c.name, got, c.want)
		}
		// Whatever we write, a standard parser reads the name back.
		if c.name != "" {
			_, params, err := mime.ParseMediaType(got)
			if err != nil || params["filename"] != c.name {
				t.Errorf("%s: parses back as %q (%v), want %q", got, params["filename"], err, c.name)
			}
		}
	}
}

func TestMediaHeaders(t *testing.T) {
	h := http.Header{}
	setMediaHeaders(h, "text/html", contentDisposition("text/html", "x.html"), true)
	for k, want := range map[string]string{
		"Content-Type":                 "text/html",
		"X-Content-Type-Options":       "nosniff",
		"Cross-Origin-Resource-Policy": "cross-origin",
		"Content-Disposition":          `attachment; filename="x.html"`,
	} {
		if h.Get(k) != want {
			t.Errorf("%s: %q, want %q", k, h.Get(k), want)
		}
	}
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "sandbox") || !strings.Contains(csp, "script-src 'none'") {
		t.Errorf("CSP %q", csp)
	}
	if cc := h.Get("Cache-Control"); !strings.Contains(cc, "private") || !strings.Contains(cc, "immutable") {
		t.Errorf("Cache-Control %q", cc)
	}
}

func TestCleanContentTypeAndFilename(t *testing.T) {
	for in, want := range map[string]string{
		"":                          "application/octet-stream",
		"image/PNG":                 "image/png",
		"text/plain; charset=UTF-8": "text/plain; charset=UTF-8",
		"garbage":                   "application/octet-stream",
		"a/b/c":                     "application/octet-stream",
		"/x":                        "application/octet-stream",
		"text/plain; charset":       "application/octet-stream",
	} {
		if got := cleanContentType(in); got != want {
			t.Errorf("content type %q: got %q, want %q", in, got, want)
		}
	}
	if n, err := cleanFilename("a\r\nb\x00.txt"); err != nil || n != "ab.txt" {
		t.Errorf("control characters: %q %v", n, err)
	}
	if _, err := cleanFilename("\xff.txt"); err == nil {
		t.Error("invalid UTF-8 accepted")
	}
	long := strings.Repeat("é", 200) // 400 bytes
	if n, err := cleanFilename(long); err != nil || len(n) > 255 || !strings.HasPrefix(long, n) || len(n)%2 != 0 {
		t.Errorf("long name cut to %d bytes: %v", len(n), err)
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{10: "10 bytes", 1024: "1 KiB", 50 << 20: "50 MiB", 1536: "1.5 KiB", 1 << 30: "1 GiB"} {
		if got := formatBytes(n); got != want {
			t.Errorf("%d: %q, want %q", n, got, want)
		}
	}
}
