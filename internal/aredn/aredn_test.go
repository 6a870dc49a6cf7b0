package aredn

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// realisticSysinfo follows the sample in the AREDN developer documentation
// (note the escaped slashes produced by the older Lua implementation).
const realisticSysinfo = `{
  "api_version": "1.11",
  "lat": "33.101010",
  "lon": "-101.101010",
  "grid_square": "DM22xx",
  "node": "CALLSIGN-NODE-22",
  "sysinfo": {"uptime": "5 days, 6:22:30", "loads": [0.05003, 0.05003, 0]},
  "node_details": {
    "description": "CALLSIGN-NODE-22 information here...",
    "mesh_gateway": "0",
    "model": "MikroTik RouterBOARD 952Ui-5ac2nD ",
    "board_id": "0x0000",
    "firmware_mfg": "AREDN",
    "firmware_version": "1101-ad0caaf"
  },
  "hosts": [{"name": "CALLSIGN-NODE-22", "ip": "10.22.22.22"}],
  "services": [
    {"name": "IperfSpeed", "protocol": "tcp", "link": "http:\/\/MYCALL-NODE-81\/iperfspeed"},
    {"name": "EtherPad", "protocol": "tcp", "link": "http:\/\/MYCALL-RPI:9001\/"},
    {"name": "MeshChat [chat]", "protocol": "tcp", "link": "http:\/\/MYCALL-RPI\/meshchat"},
    {"name": "Matrix", "protocol": "tcp", "link": "https:\/\/KX0ABC-secure.local.mesh:8448\/"},
    {"name": "Matrix [chat]", "protocol": "tcp", "link": "http:\/\/KX0ABC-matrix.local.mesh:8008\/", "extra": {"x": 1}},
    {"name": "Phone KX0ABC", "protocol": "tcp", "link": ""}
  ]
}`

func TestParseServices(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    []Service
		wantErr bool
	}{
		{
			name: "realistic",
			body: realisticSysinfo,
			want: []Service{
				{Name: "IperfSpeed", Protocol: "tcp", Link: "http://MYCALL-NODE-81/iperfspeed"},
				{Name: "EtherPad", Protocol: "tcp", Link: "http://MYCALL-RPI:9001/"},
				{Name: "MeshChat [chat]", Protocol: "tcp", Link: "http://MYCALL-RPI/meshchat"},
				{Name: "Matrix", Protocol: "tcp", Link: "https://KX0ABC-secure.local.mesh:8448/"},
				{Name: "Matrix [chat]", Protocol: "tcp", Link: "http://KX0ABC-matrix.local.mesh:8008/"},
			},
		},
		{
			name: "missing and malformed fields skipped",
			body: `{"services": [
				{"protocol": "tcp", "link": "http://a/"},
				{"name": "NoLink", "protocol": "tcp"},
				{"name": 42, "link": "http://b/"},
				{"name": "X", "link": ["http://c/"]},
				"just a string",
				null,
				{"name": "  Spaced  ", "link": " http://d:8008/ "},
				{"name": "NoProto", "link": "http://e/", "protocol": 7}
			]}`,
			want: []Service{
				{Name: "Spaced", Link: "http://d:8008/"},
				{Name: "NoProto", Link: "http://e/"},
			},
		},
		{name: "services absent", body: `{"node": "N0CALL", "api_version": "1.14"}`, want: []Service{}},
		{name: "services not an array", body: `{"services": {"name": "x"}}`, want: []Service{}},
		{name: "services null", body: `{"services": null}`, want: []Service{}},
		{name: "empty services", body: `{"services": []}`, want: []Service{}},
		{name: "html", body: `<html><body>Bad Gateway</body></html>`, wantErr: true},
		{name: "truncated", body: `{"services": [{"name": "Matrix", "link": "http://a/"`, wantErr: true},
		{name: "empty body", body: ``, wantErr: true},
		{name: "top-level array", body: `[{"name": "Matrix", "link": "http://a/"}]`, wantErr: true},
		{name: "top-level string", body: `"hello"`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseServices([]byte(tt.body))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("want error, got %v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestParseServicesRealisticMatches(t *testing.T) {
	svcs, err := ParseServices([]byte(realisticSysinfo))
	if err != nil {
		t.Fatal(err)
	}
	var matched []string
	for _, s := range svcs {
		if Matches(s, "Matrix") {
			matched = append(matched, s.Link)
		}
	}
	want := []string{"http://KX0ABC-matrix.local.mesh:8008/"}
	if !reflect.DeepEqual(matched, want) {
		t.Fatalf("matched %v, want %v", matched, want)
	}
}

func TestBaseName(t *testing.T) {
	tests := map[string]string{
		"Matrix":             "Matrix",
		"Matrix [chat]":      "Matrix",
		"  Matrix [chat]  ":  "Matrix",
		"Matrix[chat]":       "Matrix",
		"My Matrix [server]": "My Matrix",
		"[chat]":             "[chat]",
		"Matrix [a] [b]":     "Matrix [a]",
		"Matrix [":           "Matrix [",
		"":                   "",
	}
	for in, want := range tests {
		if got := BaseName(in); got != want {
			t.Errorf("BaseName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMatches(t *testing.T) {
	tests := []struct {
		name string
		svc  Service
		want string // service name searched for
		ok   bool
	}{
		{"exact", Service{Name: "Matrix", Link: "http://a.local.mesh:8008/"}, "Matrix", true},
		{"case-insensitive", Service{Name: "MATRIX", Link: "http://a:8008/"}, "matrix", true},
		{"type decoration", Service{Name: "Matrix [chat]", Link: "http://a:8008/"}, "Matrix", true},
		{"decorated wanted name", Service{Name: "Matrix", Link: "http://a:8008/"}, "Matrix [chat]", true},
		{"uppercase scheme", Service{Name: "Matrix", Link: "HTTP://a:8008/"}, "Matrix", true},
		{"configured name", Service{Name: "KX0ABC Chat", Link: "http://a:8008/"}, "kx0abc chat", true},
		{"https refused", Service{Name: "Matrix", Link: "https://a:8448/"}, "Matrix", false},
		{"other scheme", Service{Name: "Matrix", Link: "matrix://a/"}, "Matrix", false},
		{"no scheme", Service{Name: "Matrix", Link: "a.local.mesh:8008"}, "Matrix", false},
		{"no host", Service{Name: "Matrix", Link: "http:///path"}, "Matrix", false},
		{"bad port", Service{Name: "Matrix", Link: "http://a:99999/"}, "Matrix", false},
		{"garbage link", Service{Name: "Matrix", Link: "http://[::1"}, "Matrix", false},
		{"prefix only", Service{Name: "Matrix2", Link: "http://a:8008/"}, "Matrix", false},
		{"substring", Service{Name: "My Matrix", Link: "http://a:8008/"}, "Matrix", false},
		{"other service", Service{Name: "MeshChat", Link: "http://a/meshchat"}, "Matrix", false},
		{"empty wanted", Service{Name: "", Link: "http://a/"}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Matches(tt.svc, tt.want); got != tt.ok {
				t.Fatalf("Matches(%+v, %q) = %v, want %v", tt.svc, tt.want, got, tt.ok)
			}
		})
	}
}

func TestLinkBase(t *testing.T) {
	tests := []struct {
		link, want string
		ok         bool
	}{
		{"http://KX0ABC-matrix.local.mesh:8008/", "http://KX0ABC-matrix.local.mesh:8008", true},
		{"http://host/", "http://host", true},
		{"http://host", "http://host", true},
		{"http://host:8008/matrix/", "http://host:8008/matrix", true},
		{"http://host:8008/matrix///?q=1#frag", "http://host:8008/matrix", true},
		{"http://user:pw@host:8008/", "http://host:8008", true},
		{"Http://10.1.2.3:8008/", "http://10.1.2.3:8008", true},
		{"http://[fe80::1]:8008/", "http://[fe80::1]:8008", true},
		{"https://host/", "", false},
		{"ftp://host/", "", false},
		{"//host/", "", false},
		{"", "", false},
		{"http://host:0/", "", false},
		{"http://host:abc/", "", false},
	}
	for _, tt := range tests {
		got, err := LinkBase(tt.link)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("LinkBase(%q) = %q, %v; want %q, ok=%v", tt.link, got, err, tt.want, tt.ok)
		}
	}
}

func TestServiceLine(t *testing.T) {
	tests := []struct {
		name, host string
		port       int
		want       string
	}{
		{"Matrix", "KX0ABC-matrix", 8008, "Matrix|1|http|KX0ABC-matrix|8008|"},
		{"Matrix", "KX0ABC-matrix.local.mesh", 8008, "Matrix|1|http|KX0ABC-matrix|8008|"},
		{"Matrix", "KX0ABC-matrix.LOCAL.MESH", 8008, "Matrix|1|http|KX0ABC-matrix|8008|"},
		{" KX0ABC <Matrix> | \"chat\"\n", "h", 80, "KX0ABC Matrix  chat|1|http|h|80|"},
	}
	for _, tt := range tests {
		if got := ServiceLine(tt.name, tt.host, tt.port); got != tt.want {
			t.Errorf("ServiceLine(%q, %q, %d) = %q, want %q", tt.name, tt.host, tt.port, got, tt.want)
		}
	}
	// The line has exactly the six fields the firmware expects.
	if n := strings.Count(ServiceLine("Matrix", "h", 8008), "|"); n != 5 {
		t.Fatalf("want 6 fields, got %d separators", n)
	}
}

func TestValidServerName(t *testing.T) {
	good := []string{"example.org", "kx0abc-matrix.local.mesh:8008", "127.0.0.1:1234", "[::1]:8008", "[::1]", "localhost"}
	bad := []string{"", "a b", "a/b", "host:", "host:0", "host:123456", "host:12a", "[::1", "[notip]", "[::1]x", "[::1]:", "é.org", strings.Repeat("a", 256)}
	for _, s := range good {
		if !ValidServerName(s) {
			t.Errorf("ValidServerName(%q) = false", s)
		}
	}
	for _, s := range bad {
		if ValidServerName(s) {
			t.Errorf("ValidServerName(%q) = true", s)
		}
	}
}

// matrixServer is a loopback stand-in for a Repeater homeserver.
type matrixServer struct {
	srv       *httptest.Server
	keyHits   atomic.Int64
	wkHits    atomic.Int64
	mu        sync.Mutex
	name      string // server_name on the key endpoint; "" = 404
	wellKnown string // m.server on the well-known endpoint; "" = 404
	failKeys  int    // number of key requests to answer with 500 first
}

func newMatrixServer(t *testing.T, name, wellKnown string) *matrixServer {
	t.Helper()
	m := &matrixServer{name: name, wellKnown: wellKnown}
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		name, wk := m.name, m.wellKnown
		// Accept any path prefix, so links with a path work too.
		path := r.URL.Path
		for _, suffix := range []string{"/_matrix/key/v2/server", "/.well-known/matrix/server"} {
			if strings.HasSuffix(path, suffix) {
				path = suffix
			}
		}
		fail := m.failKeys > 0 && path == "/_matrix/key/v2/server"
		if fail {
			m.failKeys--
		}
		m.mu.Unlock()
		switch path {
		case "/_matrix/key/v2/server":
			m.keyHits.Add(1)
			if fail {
				http.Error(w, "boom", http.StatusInternalServerError)
				return
			}
			if name == "" {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"server_name":%q,"valid_until_ts":1893456000000,"verify_keys":{"ed25519:a_AbCd":{"key":"aGVsbG8"}},"old_verify_keys":{},"signatures":{}}`, name)
		case "/.well-known/matrix/server":
			m.wkHits.Add(1)
			if wk == "" {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"m.server":%q}`, wk)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(m.srv.Close)
	return m
}

func (m *matrixServer) hostPort() string { return strings.TrimPrefix(m.srv.URL, "http://") }

type recorder struct {
	mu    sync.Mutex
	calls []Peer
}

func (r *recorder) onPeer(name, base string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, Peer{ServerName: name, BaseURL: base})
}

func (r *recorder) get() []Peer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Peer(nil), r.calls...)
}

func deadURL(t *testing.T) string {
	t.Helper()
	s := httptest.NewServer(http.NotFoundHandler())
	u := s.URL
	s.Close()
	return u
}

func TestPollOnce(t *testing.T) {
	a := newMatrixServer(t, "kx0abc-matrix.local.mesh:8008", "")
	b := newMatrixServer(t, "", "delegated.local.mesh:8008") // only .well-known
	c := newMatrixServer(t, "", "")                          // not a Matrix server
	dead := deadURL(t)

	node := NewFakeNode()
	defer node.Close()
	node.SetServices([]Service{
		{Name: "MeshChat [chat]", Protocol: "tcp", Link: "http://MYCALL-RPI/meshchat"},
		{Name: "Matrix [chat]", Protocol: "tcp", Link: a.srv.URL + "/"},
		{Name: "matrix", Protocol: "tcp", Link: b.srv.URL},
		{Name: "Matrix", Protocol: "tcp", Link: "https://127.0.0.1:1/"},
		{Name: "Matrix", Protocol: "tcp", Link: a.srv.URL + "/"}, // duplicate
		{Name: "Matrix", Protocol: "tcp", Link: c.srv.URL + "/"},
		{Name: "Matrix", Protocol: "tcp", Link: dead + "/"},
		{Name: "EtherPad", Protocol: "tcp", Link: "http://MYCALL-RPI:9001/"},
	})

	rec := &recorder{}
	p := &Poller{Node: node.URL(), ServiceName: "Matrix", OnPeer: rec.onPeer, RequestTimeout: 5 * time.Second}
	ctx := context.Background()

	want := []Peer{
		{ServerName: "kx0abc-matrix.local.mesh:8008", BaseURL: a.srv.URL},
		{ServerName: b.hostPort(), BaseURL: b.srv.URL},
	}
	got, err := p.PollOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("peers = %+v, want %+v", got, want)
	}
	if !reflect.DeepEqual(rec.get(), want) {
		t.Fatalf("OnPeer calls = %+v, want %+v", rec.get(), want)
	}
	if node.Polls() != 1 {
		t.Fatalf("node polls = %d, want 1", node.Polls())
	}
	if a.keyHits.Load() != 1 || a.wkHits.Load() != 0 {
		t.Fatalf("server a hits: key=%d wk=%d", a.keyHits.Load(), a.wkHits.Load())
	}
	if b.keyHits.Load() != 1 || b.wkHits.Load() != 1 {
		t.Fatalf("server b hits: key=%d wk=%d", b.keyHits.Load(), b.wkHits.Load())
	}

	// Second poll: cached names, no Matrix requests for known links, no new
	// OnPeer calls. The unidentified link c is retried.
	got, err = p.PollOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("second poll peers = %+v, want %+v", got, want)
	}
	if a.keyHits.Load() != 1 || b.keyHits.Load() != 1 || b.wkHits.Load() != 1 {
		t.Fatalf("cached links were re-fetched: a=%d b=%d/%d", a.keyHits.Load(), b.keyHits.Load(), b.wkHits.Load())
	}
	if c.keyHits.Load() != 2 || c.wkHits.Load() != 2 {
		t.Fatalf("failed link not retried: key=%d wk=%d", c.keyHits.Load(), c.wkHits.Load())
	}
	if n := len(rec.get()); n != 2 {
		t.Fatalf("OnPeer called %d times, want 2", n)
	}
	if node.Polls() != 2 {
		t.Fatalf("node polls = %d, want 2", node.Polls())
	}

	// c becomes a Matrix server and a moves to a new path: both are new
	// (name, url) pairs and get reported; b stays silent.
	c.mu.Lock()
	c.name = "kx0xyz.local.mesh"
	c.mu.Unlock()
	node.SetServices([]Service{
		{Name: "Matrix", Protocol: "tcp", Link: a.srv.URL + "/hs/"},
		{Name: "Matrix", Protocol: "tcp", Link: b.srv.URL + "/"},
		{Name: "Matrix", Protocol: "tcp", Link: c.srv.URL + "/"},
	})
	got, err = p.PollOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want3 := []Peer{
		{ServerName: "kx0abc-matrix.local.mesh:8008", BaseURL: a.srv.URL + "/hs"},
		{ServerName: b.hostPort(), BaseURL: b.srv.URL},
		{ServerName: "kx0xyz.local.mesh", BaseURL: c.srv.URL},
	}
	if !reflect.DeepEqual(got, want3) {
		t.Fatalf("third poll peers = %+v, want %+v", got, want3)
	}
	calls := rec.get()
	if !reflect.DeepEqual(calls[2:], []Peer{want3[0], want3[2]}) {
		t.Fatalf("new OnPeer calls = %+v", calls[2:])
	}

	// Peers that disappear are not reported again and cause no requests.
	node.SetServices(nil)
	got, err = p.PollOnce(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty mesh: peers=%v err=%v", got, err)
	}
	if len(rec.get()) != 4 {
		t.Fatalf("OnPeer called for vanished peers: %+v", rec.get())
	}
}

func TestPollOnceRetriesFailedLookup(t *testing.T) {
	a := newMatrixServer(t, "a.local.mesh", "")
	a.failKeys = 1 // first key request fails; no well-known either
	node := NewFakeNode()
	defer node.Close()
	node.SetServices([]Service{{Name: "Matrix", Protocol: "tcp", Link: a.srv.URL + "/"}})
	rec := &recorder{}
	p := &Poller{Node: node.URL(), OnPeer: rec.onPeer}

	got, err := p.PollOnce(context.Background())
	if err != nil || len(got) != 0 || len(rec.get()) != 0 {
		t.Fatalf("first poll: peers=%v calls=%v err=%v", got, rec.get(), err)
	}
	got, err = p.PollOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []Peer{{ServerName: "a.local.mesh", BaseURL: a.srv.URL}}
	if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(rec.get(), want) {
		t.Fatalf("second poll: peers=%v calls=%v", got, rec.get())
	}
	if a.keyHits.Load() != 2 {
		t.Fatalf("key hits = %d, want 2", a.keyHits.Load())
	}
}

func TestPollOnceSysinfoPaths(t *testing.T) {
	a := newMatrixServer(t, "a.local.mesh", "")
	for _, mode := range []string{"legacy", "redirect", "no-legacy"} {
		t.Run(mode, func(t *testing.T) {
			node := NewFakeNode()
			defer node.Close()
			switch mode {
			case "redirect":
				node.Redirect = true
			case "no-legacy":
				node.NoLegacy = true
			}
			node.SetServices([]Service{{Name: "Matrix", Protocol: "tcp", Link: a.srv.URL + "/"}})
			p := &Poller{Node: node.URL() + "/"} // trailing slash tolerated
			got, err := p.PollOnce(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].ServerName != "a.local.mesh" {
				t.Fatalf("peers = %+v", got)
			}
			if node.Polls() != 1 {
				t.Fatalf("polls = %d", node.Polls())
			}
		})
	}
}

func TestFakeNodeServicesOnlyOnRequest(t *testing.T) {
	node := NewFakeNode()
	defer node.Close()
	node.SetServices([]Service{{Name: "Matrix", Protocol: "tcp", Link: "http://a/"}})
	for _, q := range []string{"", "?services=1"} {
		resp, err := http.Get(node.URL() + "/cgi-bin/sysinfo.json" + q)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		svcs, err := ParseServices(body)
		if err != nil {
			t.Fatalf("query %q: %v", q, err)
		}
		if wantN := map[string]int{"": 0, "?services=1": 1}[q]; len(svcs) != wantN {
			t.Fatalf("query %q: %d services, want %d", q, len(svcs), wantN)
		}
	}
}

func TestPollOnceBadNode(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   []byte
	}{
		{"500", http.StatusInternalServerError, []byte("internal error")},
		{"garbage", http.StatusOK, []byte("\x00\xff<html>not json")},
		{"truncated json", http.StatusOK, []byte(`{"services": [{"name": "Matrix"`)},
		{"json array", http.StatusOK, []byte(`[]`)},
		{"too large", http.StatusOK, []byte(`{"pad":"` + strings.Repeat("x", maxSysinfoBytes) + `"}`)},
		{"403", http.StatusForbidden, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node := NewFakeNode()
			defer node.Close()
			node.SetFailure(tt.status, tt.body)
			rec := &recorder{}
			p := &Poller{Node: node.URL(), OnPeer: rec.onPeer}
			got, err := p.PollOnce(context.Background())
			if err == nil {
				t.Fatalf("want error, got peers %v", got)
			}
			if len(rec.get()) != 0 {
				t.Fatalf("OnPeer called: %v", rec.get())
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		p := &Poller{Node: deadURL(t)}
		if _, err := p.PollOnce(context.Background()); err == nil {
			t.Fatal("want error")
		}
	})
	t.Run("bad node url", func(t *testing.T) {
		p := &Poller{Node: "http://[::1"}
		if _, err := p.PollOnce(context.Background()); err == nil {
			t.Fatal("want error")
		}
	})
}

func TestPollOnceBadMatrixResponses(t *testing.T) {
	bodies := []string{
		`not json`,
		`{"server_name": 42}`,
		`{"server_name": "has space"}`,
		`{"server_name": ""}`,
		`[]`,
	}
	node := NewFakeNode()
	defer node.Close()
	var svcs []Service
	for _, body := range bodies {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/.well-known/matrix/server" {
				_, _ = w.Write([]byte(`{"m.server": "bad value/"}`))
				return
			}
			_, _ = w.Write([]byte(body))
		}))
		defer s.Close()
		svcs = append(svcs, Service{Name: "Matrix", Protocol: "tcp", Link: s.URL + "/"})
	}
	node.SetServices(svcs)
	p := &Poller{Node: node.URL()}
	got, err := p.PollOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("bad servers identified: %+v", got)
	}
}

func TestPollOnceRequestTimeout(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	p := &Poller{Node: slow.URL, RequestTimeout: 50 * time.Millisecond}
	start := time.Now()
	if _, err := p.PollOnce(context.Background()); err == nil {
		t.Fatal("want timeout error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("timeout not applied: took %v", d)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	a := newMatrixServer(t, "a.local.mesh", "")
	node := NewFakeNode()
	defer node.Close()
	node.SetServices([]Service{{Name: "Matrix", Protocol: "tcp", Link: a.srv.URL + "/"}})

	found := make(chan Peer, 1)
	p := &Poller{
		Node:     node.URL(),
		Interval: 5 * time.Millisecond,
		OnPeer: func(name, base string) {
			select {
			case found <- Peer{name, base}:
			default:
			}
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		p.Run(ctx)
		close(done)
	}()

	select {
	case got := <-found:
		if got.ServerName != "a.local.mesh" || got.BaseURL != a.srv.URL {
			t.Fatalf("found %+v", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not report the peer")
	}
	// Wait (bounded) for at least one more poll to show the loop repeats.
	deadline := time.Now().Add(10 * time.Second)
	for node.Polls() < 2 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	if node.Polls() < 2 {
		t.Fatalf("Run polled %d times", node.Polls())
	}
	if a.keyHits.Load() != 1 {
		t.Fatalf("key endpoint fetched %d times across polls, want 1", a.keyHits.Load())
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop after cancel")
	}
}

func TestRunCancelledBeforeStart(t *testing.T) {
	node := NewFakeNode()
	defer node.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	(&Poller{Node: node.URL(), Interval: time.Hour}).Run(ctx)
	if node.Polls() != 0 {
		t.Fatalf("polled %d times after cancel", node.Polls())
	}
}
