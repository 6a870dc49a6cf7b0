package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"repeater/internal/config"
)

// asConfig adds an application service registration (users @irc_*,
// exclusive; sender @ircbot) to a test config.
func asConfig(t *testing.T, cfg *config.Config, extra ...string) *config.Config {
	t.Helper()
	p := filepath.Join(t.TempDir(), "irc.yaml")
	reg := "id: irc\nurl: null\nas_token: as-secret\nhs_token: hs-secret\nsender_localpart: ircbot\n" +
		"namespaces:\n  users:\n    - exclusive: true\n      regex: '@irc_.*'\n" + strings.Join(extra, "")
	if err := os.WriteFile(p, []byte(reg), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.AppServiceConfigFiles = []string{p}
	return cfg
}

// An application service registers its users, acts as them with its token
// (spec: Application Service API, "Identity assertion"), and logs them in;
// its exclusive namespace is closed to everyone else.
func TestAppServiceIdentity(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, asConfig(t, cfg))
		as := &client{t: t, base: ts.base, token: "as-secret"}
		anon := &client{t: t, base: ts.base}
		reg := func(c *client, user string) (int, string) {
			st, res := c.do("POST", "/_matrix/client/v3/register", map[string]any{"type": "m.login.application_service", "username": user})
			return st, res.Get("errcode").Str
		}

		// Registration of its own users, with no password or UIA.
		res := as.must("POST", "/_matrix/client/v3/register", map[string]any{"type": "m.login.application_service", "username": "irc_alice"})
		if res.Get("user_id").Str != "@irc_alice:test.local" || res.Get("access_token").Str == "" {
			t.Fatalf("register: %s", res.Raw)
		}
		if st, code := reg(as, "bob"); st != 400 || code != "M_EXCLUSIVE" {
			t.Errorf("a user outside the namespace: %d %s", st, code)
		}
		if st, code := reg(anon, "irc_carol"); st != 401 || code != "M_MISSING_TOKEN" {
			t.Errorf("no token: %d %s", st, code)
		}
		if st, code := reg(&client{t: t, base: ts.base, token: "wrong"}, "irc_carol"); st != 401 || code != "M_UNKNOWN_TOKEN" {
			t.Errorf("wrong token: %d %s", st, code)
		}
		// The namespace is exclusive: ordinary registration is refused.
		st, r := anon.do("POST", "/_matrix/client/v3/register", map[string]any{"username": "irc_mallory", "password": "pw", "auth": map[string]any{"type": "m.login.dummy"}})
		if st != 400 || r.Get("errcode").Str != "M_EXCLUSIVE" {
			t.Errorf("ordinary registration in the namespace: %d %s", st, r.Raw)
		}
		if st, r := anon.do("GET", "/_matrix/client/v3/register/available?username=irc_mallory", nil); st != 400 || r.Get("errcode").Str != "M_EXCLUSIVE" {
			t.Errorf("availability: %d %s", st, r.Raw)
		}

		// Identity assertion: the sender by default, ?user_id= in the
		// namespace, nobody else.
		if who := as.must("GET", "/_matrix/client/v3/account/whoami", nil).Get("user_id").Str; who != "@ircbot:test.local" {
			t.Errorf("whoami as the service: %q", who)
		}
		alice := "/_matrix/client/v3/account/whoami?user_id=" + url.QueryEscape("@irc_alice:test.local")
		if who := as.must("GET", alice, nil).Get("user_id").Str; who != "@irc_alice:test.local" {
			t.Errorf("whoami as irc_alice: %q", who)
		}
		for _, u := range []string{"@bob:test.local", "@irc_nobody:test.local", "@irc_alice:elsewhere.test"} {
			if st, r := as.do("GET", "/_matrix/client/v3/account/whoami?user_id="+url.QueryEscape(u), nil); st != 403 || r.Get("errcode").Str != "M_FORBIDDEN" {
				t.Errorf("acting as %s: %d %s", u, st, r.Raw)
			}
		}
		// Acting as a user: a room and a message that are irc_alice's.
		q := "?user_id=" + url.QueryEscape("@irc_alice:test.local")
		roomID := as.must("POST", "/_matrix/client/v3/createRoom"+q, map[string]any{"preset": "public_chat"}).Get("room_id").Str
		as.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/t1"+q, map[string]any{"msgtype": "m.text", "body": "hi from IRC"})
		human := ts.register("dave")
		human.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), nil)
		evs := paginateAll(t, human, roomID, 50)
		if last := evs[len(evs)-1]; last.Get("sender").Str != "@dave:test.local" || evs[len(evs)-2].Get("sender").Str != "@irc_alice:test.local" {
			t.Errorf("timeline senders: %s / %s", evs[len(evs)-2].Raw, last.Raw)
		}

		// Login as a namespaced user; never by password (it has none).
		lr := as.must("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.application_service", "identifier": map[string]any{"type": "m.id.user", "user": "irc_alice"}})
		if lr.Get("user_id").Str != "@irc_alice:test.local" || lr.Get("access_token").Str == "" {
			t.Fatalf("login: %s", lr.Raw)
		}
		if st, _ := anon.do("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "irc_alice"}, "password": ""}); st != 403 {
			t.Errorf("password login of an appservice user: %d", st)
		}
		if st, _ := as.do("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.application_service", "identifier": map[string]any{"type": "m.id.user", "user": "dave"}}); st != 403 {
			t.Errorf("appservice login outside the namespace: %d", st)
		}
		flows := anon.must("GET", "/_matrix/client/v3/login", nil).Get("flows.#.type").Raw
		if !strings.Contains(flows, "m.login.application_service") {
			t.Errorf("login flows: %s", flows)
		}
	})
}

// A registration file with a bad regular expression stops start-up,
// naming the file.
func TestAppServiceBadRegistration(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		p := filepath.Join(t.TempDir(), "bad.yaml")
		os.WriteFile(p, []byte("id: x\nas_token: a\nhs_token: h\nsender_localpart: x\nnamespaces:\n  users:\n    - regex: '@x_(('\n"), 0o600)
		cfg.AppServiceConfigFiles = []string{p}
		srv, err := newServer(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err == nil {
			srv.shutdown(context.Background())
			t.Fatal("started with a bad registration")
		}
		if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "regular expression") {
			t.Errorf("error: %v", err)
		}
	})
}

// rate_limited: false exempts a service's users (a bridge relays many
// people); everyone else is still limited.
func TestAppServiceRateLimited(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		cfg = asConfig(t, cfg, "rate_limited: false\n")
		cfg.RateLimits.Enabled, cfg.RateLimits.PerSecond, cfg.RateLimits.Burst = true, 0.1, 3
		ts := startTestServer(t, cfg)
		as := &client{t: t, base: ts.base, token: "as-secret"}
		as.must("POST", "/_matrix/client/v3/register", map[string]any{"type": "m.login.application_service", "username": "irc_bob"})
		q := "?user_id=" + url.QueryEscape("@irc_bob:test.local")
		roomID := as.must("POST", "/_matrix/client/v3/createRoom"+q, map[string]any{"preset": "public_chat"}).Get("room_id").Str
		for i := range 20 {
			as.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/b"+strconv.Itoa(i)+q, map[string]any{"msgtype": "m.text", "body": "relayed"})
		}
		human := ts.register("dave")
		limited := false
		for i := 0; i < 20 && !limited; i++ {
			st, res := human.do("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/d"+strconv.Itoa(i), map[string]any{"msgtype": "m.text", "body": "x"})
			limited = st == 429 && res.Get("errcode").Str == "M_LIMIT_EXCEEDED"
		}
		if !limited {
			t.Error("an ordinary user was not rate-limited")
		}
	})
}

// fakeAppService is an application service on loopback that records the
// transactions it accepts; while failing is set it answers 500.
type fakeAppService struct {
	mu      sync.Mutex
	failing bool
	txns    []string
	bodies  []string
	auth    []string
	pings   []string
	queries []string
	// onQuery answers user and alias queries (true: it made the thing).
	onQuery func(path string) bool
	srv     *httptest.Server
}

func newFakeAppService(t *testing.T) *fakeAppService {
	f := &fakeAppService{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.failing {
			w.WriteHeader(500)
			return
		}
		b, _ := io.ReadAll(r.Body)
		if f.onQuery != nil && (strings.HasPrefix(r.URL.Path, "/_matrix/app/v1/users/") || strings.HasPrefix(r.URL.Path, "/_matrix/app/v1/rooms/")) {
			f.queries = append(f.queries, r.URL.Path)
			if f.onQuery(r.URL.Path) {
				w.Write([]byte(`{}`))
			} else {
				w.WriteHeader(404)
			}
			return
		}
		if r.URL.Path == "/_matrix/app/v1/ping" {
			f.pings = append(f.pings, gjson.GetBytes(b, "transaction_id").Str+" "+r.Header.Get("Authorization"))
			w.Write([]byte(`{}`))
			return
		}
		txn := strings.TrimPrefix(r.URL.Path, "/_matrix/app/v1/transactions/")
		for _, seen := range f.txns {
			if seen == txn { // a repeat: already taken
				w.Write([]byte(`{}`))
				return
			}
		}
		f.txns, f.bodies, f.auth = append(f.txns, txn), append(f.bodies, string(b)), append(f.auth, r.Header.Get("Authorization"))
		w.Write([]byte(`{}`))
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// bodies are the message bodies pushed so far, in order.
func (f *fakeAppService) messages() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, b := range f.bodies {
		for _, e := range gjson.Get(b, "events").Array() {
			if e.Get("type").Str == "m.room.message" {
				out = append(out, e.Get("content.body").Str)
			}
		}
	}
	return out
}

// Events in rooms with a namespaced member are pushed to the service in
// order (spec: "Pushing events"), with its hs_token; while the service
// is down they wait in the database, across a restart of the homeserver,
// and nothing is lost or repeated.
func TestAppServicePush(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		fake := newFakeAppService(t)
		cfg = asConfig(t, cfg)
		withURL(t, cfg, fake.srv.URL)
		ts := startTestServer(t, cfg)
		as := &client{t: t, base: ts.base, token: "as-secret"}
		as.must("POST", "/_matrix/client/v3/register", map[string]any{"type": "m.login.application_service", "username": "irc_alice"})
		human := ts.register("dave")
		roomID := human.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Get("room_id").Str
		human.send(roomID, "before the ghost") // no namespaced member yet: not pushed
		as.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?user_id="+url.QueryEscape("@irc_alice:test.local"), nil)
		human.send(roomID, "m0")
		waitFor(t, 15*time.Second, "m0 pushed", func() bool { return len(fake.messages()) == 1 })
		fake.mu.Lock()
		if fake.auth[0] != "Bearer hs-secret" {
			t.Errorf("authorization %q", fake.auth[0])
		}
		fake.mu.Unlock()

		// The service is down; then the homeserver restarts.
		fake.mu.Lock()
		fake.failing = true
		fake.mu.Unlock()
		for i := 1; i <= 5; i++ {
			human.send(roomID, "m"+strconv.Itoa(i))
		}
		time.Sleep(300 * time.Millisecond)
		ts.stop()
		ts = startTestServer(t, cfg)
		human.base = ts.base
		human.send(roomID, "m6")
		fake.mu.Lock()
		fake.failing = false
		fake.mu.Unlock()
		// Any request from the service retries at once.
		(&client{t: t, base: ts.base, token: "as-secret"}).must("GET", "/_matrix/client/v3/account/whoami", nil)
		want := "[m0 m1 m2 m3 m4 m5 m6]"
		waitFor(t, 20*time.Second, "every message pushed once, in order", func() bool { return fmt.Sprint(fake.messages()) == want })
		time.Sleep(200 * time.Millisecond)
		if got := fmt.Sprint(fake.messages()); got != want {
			t.Fatalf("pushed %s, want %s", got, want)
		}
	})
}

// withURL points the test registration at a fake service.
func withURL(t *testing.T, cfg *config.Config, u string) {
	b, err := os.ReadFile(cfg.AppServiceConfigFiles[0])
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(cfg.AppServiceConfigFiles[0], []byte(strings.Replace(string(b), "url: null", "url: "+u, 1)), 0o600)
}

// A service asks the homeserver to ping it (spec v1.7, "Pinging"); only
// the service itself may, and failures say what went wrong.
func TestAppServicePing(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		noURL := startTestServer(t, asConfig(t, newTestConfig(t, cfg.Database)))
		as := &client{t: t, base: noURL.base, token: "as-secret"}
		if st, r := as.do("POST", "/_matrix/client/v1/appservice/irc/ping", map[string]any{}); st != 400 || r.Get("errcode").Str != "M_URL_NOT_SET" {
			t.Errorf("no url: %d %s", st, r.Raw)
		}
		noURL.stop()

		fake := newFakeAppService(t)
		cfg = asConfig(t, cfg)
		withURL(t, cfg, fake.srv.URL)
		ts := startTestServer(t, cfg)
		as = &client{t: t, base: ts.base, token: "as-secret"}
		r := as.must("POST", "/_matrix/client/v1/appservice/irc/ping", map[string]any{"transaction_id": "p1"})
		if !r.Get("duration_ms").Exists() {
			t.Errorf("ping: %s", r.Raw)
		}
		fake.mu.Lock()
		if len(fake.pings) != 1 || fake.pings[0] != "p1 Bearer hs-secret" {
			t.Errorf("pings the service saw: %q", fake.pings)
		}
		fake.failing = true
		fake.mu.Unlock()
		if st, r := as.do("POST", "/_matrix/client/v1/appservice/irc/ping", map[string]any{}); st != 502 || r.Get("errcode").Str != "M_BAD_STATUS" || r.Get("status").Int() != 500 {
			t.Errorf("failing service: %d %s", st, r.Raw)
		}
		human := ts.register("dave")
		if st, _ := human.do("POST", "/_matrix/client/v1/appservice/irc/ping", map[string]any{}); st != 403 {
			t.Errorf("a user pinged the service: %d", st)
		}
	})
}

// A bridge makes its ghosts and portal rooms on demand (spec: "Querying"):
// inviting an unknown namespaced user, or joining an unknown namespaced
// alias, asks the service, which makes them; then the request succeeds.
func TestAppServiceQueries(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		fake := newFakeAppService(t)
		cfg = asConfig(t, cfg, "  aliases:\n    - exclusive: true\n      regex: '#irc_.*'\n")
		withURL(t, cfg, fake.srv.URL)
		ts := startTestServer(t, cfg)
		as := &client{t: t, base: ts.base, token: "as-secret"}
		fake.onQuery = func(path string) bool {
			switch {
			case strings.HasSuffix(path, "/@irc_ghost:test.local"):
				as.must("POST", "/_matrix/client/v3/register", map[string]any{"type": "m.login.application_service", "username": "irc_ghost"})
				return true
			case strings.HasSuffix(path, "/#irc_portal:test.local"): // the path as decoded
				room := as.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Get("room_id").Str
				as.must("PUT", "/_matrix/client/v3/directory/room/"+url.PathEscape("#irc_portal:test.local"), map[string]any{"room_id": room})
				return true
			}
			return false
		}
		human := ts.register("dave")
		roomID := human.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat"}).Get("room_id").Str
		human.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/invite", map[string]any{"user_id": "@irc_ghost:test.local"})
		if m := human.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.member/"+url.PathEscape("@irc_ghost:test.local"), nil).Get("membership").Str; m != "invite" {
			t.Errorf("ghost membership %q", m)
		}
		portal := human.must("POST", "/_matrix/client/v3/join/"+url.PathEscape("#irc_portal:test.local"), nil).Get("room_id").Str
		if portal == "" {
			t.Fatal("no portal room")
		}
		// The portal's events reach the service through its alias.
		human.send(portal, "hello portal")
		waitFor(t, 15*time.Second, "the portal message pushed", func() bool { return slices.Contains(fake.messages(), "hello portal") })
		if st, _ := human.do("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#irc_nothing:test.local"), nil); st != 404 {
			t.Errorf("an alias the service does not make: %d", st)
		}
		fake.mu.Lock()
		defer fake.mu.Unlock()
		if len(fake.queries) != 3 {
			t.Errorf("queries: %q", fake.queries)
		}
	})
}

// A bridge publishes its portal rooms in its network's own list, apart
// from the server's main list (third_party_instance_id "<id>|<network>").
func TestAppServiceRoomLists(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, asConfig(t, cfg))
		as := &client{t: t, base: ts.base, token: "as-secret"}
		human := ts.register("dave")
		roomID := human.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "visibility": "private"}).Get("room_id").Str
		listing := "/_matrix/client/v3/directory/list/appservice/libera/" + url.PathEscape(roomID)
		if st, _ := human.do("PUT", listing, map[string]any{"visibility": "public"}); st != 403 {
			t.Errorf("a user published in a network list: %d", st)
		}
		as.must("PUT", listing, map[string]any{"visibility": "public"})
		listed := func(body map[string]any) bool {
			for _, r := range human.must("POST", "/_matrix/client/v3/publicRooms", body).Get("chunk").Array() {
				if r.Get("room_id").Str == roomID {
					return true
				}
			}
			return false
		}
		if listed(map[string]any{}) || !listed(map[string]any{"third_party_instance_id": "irc|libera"}) ||
			!listed(map[string]any{"include_all_networks": true}) || listed(map[string]any{"third_party_instance_id": "irc|oftc"}) {
			t.Error("the network list is not apart from the main list")
		}
		as.must("DELETE", listing, nil)
		if listed(map[string]any{"third_party_instance_id": "irc|libera"}) {
			t.Error("still listed after DELETE")
		}
	})
}
