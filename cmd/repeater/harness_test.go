package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"repeater/internal/config"
	"repeater/storage/storagetest"
)

// testServer is a real Repeater listening on 127.0.0.1:0.
type testServer struct {
	t    testing.TB
	cfg  *config.Config
	srv  *server
	base string
}

// newTestConfig writes a config for a test server using database dsn.
func newTestConfig(t testing.TB, dsn string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	path, err := config.Generate(config.GenerateOptions{Dir: dir, ServerName: "test.local", Listen: "127.0.0.1:0",
		OpenRegistration: true, SharedSecret: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database = dsn
	cfg.RateLimits.Enabled = false
	cfg.BcryptCost = 4
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func startTestServer(t testing.TB, cfg *config.Config) *testServer {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("srv", cfg.ServerName)
	}
	srv, err := newServer(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.listen(); err != nil {
		t.Fatal(err)
	}
	ts := &testServer{t: t, cfg: cfg, srv: srv, base: "http://" + srv.addrs()[0]}
	t.Cleanup(func() { ts.stop() })
	return ts
}

func (ts *testServer) stop() {
	if ts.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.srv.shutdown(ctx); err != nil {
		ts.t.Errorf("shutdown: %v", err)
	}
	ts.srv = nil
}

// eachDialect runs fn against a fresh server on SQLite and, when
// configured, PostgreSQL.
func eachDialect(t *testing.T, fn func(t *testing.T, cfg *config.Config)) {
	for name, dsn := range storagetest.Dialects(t) {
		t.Run(name, func(t *testing.T) { fn(t, newTestConfig(t, dsn)) })
	}
}

type client struct {
	t      testing.TB
	base   string
	token  string
	userID string
	txn    atomic.Int64
}

// do sends a request and returns the status and parsed body.
func (c *client) do(method, path string, body any) (int, gjson.Result) {
	c.t.Helper()
	st, res, err := c.try(method, path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	return st, res
}

// try is do that returns transport errors instead of failing.
func (c *client) try(method, path string, body any) (int, gjson.Result, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return 0, gjson.Result{}, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, gjson.Result{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, gjson.Result{}, err
	}
	if !gjson.ValidBytes(b) {
		return 0, gjson.Result{}, fmt.Errorf("%s %s: status %d, body is not JSON: %q", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, gjson.ParseBytes(b), nil
}

// must sends a request and fails the test unless it returns 200.
func (c *client) must(method, path string, body any) gjson.Result {
	c.t.Helper()
	st, res := c.do(method, path, body)
	if st != 200 {
		c.t.Fatalf("%s %s: status %d: %s", method, path, st, res.Raw)
	}
	return res
}

func (ts *testServer) register(name string) *client {
	ts.t.Helper()
	c := &client{t: ts.t, base: ts.base}
	res := c.must("POST", "/_matrix/client/v3/register", map[string]any{"username": name, "password": "pw-" + name, "auth": map[string]any{"type": "m.login.dummy"}})
	c.token, c.userID = res.Get("access_token").Str, res.Get("user_id").Str
	return c
}

func (c *client) send(roomID, body string) string {
	c.t.Helper()
	txn := c.txn.Add(1)
	return c.must("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/t%d", roomID, txn),
		map[string]any{"msgtype": "m.text", "body": body}).Get("event_id").Str
}

// sharedRoom has a create a public room and b join it; it returns the room ID.
func sharedRoom(a, b *client) string {
	a.t.Helper()
	roomID := a.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Get("room_id").Str
	b.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), nil)
	return roomID
}
