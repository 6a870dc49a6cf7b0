package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/config"
	"repeater/storage/storagetest"
)

// evilServer is a federation peer under the test's control: it publishes
// its signing key and signs whatever it is told to.
type evilServer struct {
	name string
	key  ed25519.PrivateKey
	id   gomatrixserverlib.KeyID
	http *httptest.Server
}

func newEvilServer(t *testing.T, name string) *evilServer {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	e := &evilServer{name: name, key: key, id: "ed25519:evil"}
	e.http = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/_matrix/key/v2/server") {
			fields := gomatrixserverlib.ServerKeyFields{ServerName: spec.ServerName(name),
				VerifyKeys:   map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{e.id: {Key: spec.Base64Bytes(key.Public().(ed25519.PublicKey))}},
				ValidUntilTS: spec.AsTimestamp(time.Now().Add(time.Hour))}
			raw, _ := json.Marshal(fields)
			signed, _ := gomatrixserverlib.SignJSON(name, e.id, key, raw)
			w.Header().Set("Content-Type", "application/json")
			w.Write(signed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"pdus":{}}`))
	}))
	t.Cleanup(e.http.Close)
	return e
}

// request sends a federation request from the evil server to ts, signed
// with key (its own unless overridden) and addressed to dest.
func (e *evilServer) request(t *testing.T, ts *testServer, dest, method, path string, content any, key ed25519.PrivateKey) (int, gjson.Result) {
	t.Helper()
	fr := fclient.NewFederationRequest(method, spec.ServerName(e.name), spec.ServerName(dest), path)
	if content != nil {
		if err := fr.SetContent(content); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.Sign(spec.ServerName(e.name), e.id, key); err != nil {
		t.Fatal(err)
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(ts.base)
	req.URL.Scheme, req.URL.Host = u.Scheme, u.Host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, gjson.ParseBytes(b)
}

// evilPeerConfig is the config of a server named name on loopback that
// knows the evil server as a static peer.
func evilPeerConfig(t *testing.T, name string, evil *evilServer) *config.Config {
	t.Helper()
	var dsn string
	for _, d := range storagetest.Dialects(t) {
		dsn = d
		break
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := newTestConfig(t, dsn)
	cfg.ServerName, cfg.Listen = name, addr
	cfg.Federation.Peers = map[string]string{"evil.test": evil.http.URL}
	return cfg
}

// build makes an event in a room as the evil server would: its own
// signature, prev/auth events chosen by the caller.
func (e *evilServer) build(t *testing.T, ver gomatrixserverlib.RoomVersion, roomID, sender, typ string, stateKey *string, content string, prev, authEvents []string, depth int64) gomatrixserverlib.PDU {
	t.Helper()
	impl := gomatrixserverlib.MustGetRoomVersion(ver)
	pe := gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: roomID, Type: typ, StateKey: stateKey,
		PrevEvents: prev, AuthEvents: authEvents, Depth: depth, Content: []byte(content)}
	ev, err := impl.NewEventBuilderFromProtoEvent(&pe).Build(time.Now(), spec.ServerName(e.name), e.id, e.key)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// Hostile input over federation is refused without harming the room:
// missing or bad request signatures, wrong destination, forged events for
// another server's users, events that fail auth, malformed and oversized
// bodies, and too many PDUs.
func TestFederationHostileInput(t *testing.T) {
	evil := newEvilServer(t, "evil.test")
	cfg := evilPeerConfig(t, "s0.test", evil)
	ts := startTestServer(t, cfg)
	alice := ts.register("alice")
	roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "Original"}).Get("room_id").Str
	alice.send(roomID, "hello")

	// No X-Matrix header.
	resp, err := http.Get(ts.base + "/_matrix/federation/v1/event/$x")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 401 {
		t.Fatalf("unsigned request: %d", resp.StatusCode)
	}
	resp.Body.Close()
	// Signed with a key that is not the evil server's.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	if st, res := evil.request(t, ts, "s0.test", "GET", "/_matrix/federation/v1/state_ids/"+url.PathEscape(roomID)+"?event_id=x", nil, other); st != 401 {
		t.Fatalf("bad signature: %d %s", st, res.Raw)
	}
	// Addressed to another server.
	if st, _ := evil.request(t, ts, "elsewhere.test", "GET", "/_matrix/federation/v1/state_ids/"+url.PathEscape(roomID)+"?event_id=x", nil, evil.key); st == 200 {
		t.Fatal("request for another destination accepted")
	}

	// The evil server is in no room: it may not read this one's state.
	ver := gomatrixserverlib.RoomVersion(cfg.DefaultRoomVersion)
	ex := alice.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=1", nil).Get("chunk.0.event_id").Str
	if st, _ := evil.request(t, ts, "s0.test", "GET", "/_matrix/federation/v1/state_ids/"+url.PathEscape(roomID)+"?event_id="+url.QueryEscape(ex), nil, evil.key); st != 403 {
		t.Fatalf("state of a room the server is not in: %d", st)
	}

	// Auth events of the room, to build plausible events from.
	state := alice.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state", nil)
	var create, pl, aliceMember string
	for _, e := range state.Array() {
		switch {
		case e.Get("type").Str == "m.room.create":
			create = e.Get("event_id").Str
		case e.Get("type").Str == "m.room.power_levels":
			pl = e.Get("event_id").Str
		case e.Get("type").Str == "m.room.member" && e.Get("state_key").Str == alice.userID:
			aliceMember = e.Get("event_id").Str
		}
	}
	empty := ""
	// A forged event: sent as alice (a user of s0.test) but signed only by evil.test.
	forged := evil.build(t, ver, roomID, alice.userID, "m.room.name", &empty, `{"name":"Forged"}`, []string{ex}, []string{create, pl, aliceMember}, 100)
	// An event failing auth: evil's user is not in the room.
	intruder := "@mallory:evil.test"
	noAuth := evil.build(t, ver, roomID, intruder, "m.room.name", &empty, `{"name":"Hijacked"}`, []string{ex}, []string{create, pl}, 100)
	// A message from a non-member.
	msg := evil.build(t, ver, roomID, intruder, "m.room.message", nil, `{"body":"spam","msgtype":"m.text"}`, []string{ex}, []string{create, pl}, 100)
	st, res := evil.request(t, ts, "s0.test", "PUT", "/_matrix/federation/v1/send/t1", map[string]any{
		"origin": "evil.test", "origin_server_ts": time.Now().UnixMilli(),
		"pdus": []json.RawMessage{forged.JSON(), noAuth.JSON(), msg.JSON(), json.RawMessage(`{"room_id":"` + roomID + `","type":"garbage"}`)},
	}, evil.key)
	if st != 200 {
		t.Fatalf("send: %d %s", st, res.Raw)
	}
	// The forged event fails its signature check and is reported; events
	// failing auth are stored as rejected (reported as processed) and
	// change nothing, as checked below.
	if res.Get("pdus."+gjson.Escape(forged.EventID())+".error").Str == "" {
		t.Errorf("forged event accepted: %s", res.Raw)
	}
	if name := alice.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.name", nil).Get("name").Str; name != "Original" {
		t.Fatalf("room name changed to %q", name)
	}
	for _, b := range timelineBodies(alice, roomID) {
		if b == "spam" {
			t.Fatal("a non-member's message reached the timeline")
		}
	}

	// Malformed and oversized bodies, and too many PDUs: refused, never 500.
	base := ts.base + "/_matrix/federation/v1/send/"
	for name, body := range map[string]string{
		"not json":  "{nope",
		"oversized": `{"pdus":["` + strings.Repeat("x", 17<<20) + `"]}`,
	} {
		req, _ := http.NewRequest("PUT", base+"bad", bytes.NewReader([]byte(body)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", `X-Matrix origin="evil.test",key="ed25519:evil",sig="AAAA"`)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("%s body: status %d", name, resp.StatusCode)
		}
	}
	many := make([]json.RawMessage, 51)
	for i := range many {
		many[i] = msg.JSON()
	}
	if st, _ := evil.request(t, ts, "s0.test", "PUT", "/_matrix/federation/v1/send/t2", map[string]any{"origin": "evil.test", "pdus": many}, evil.key); st != 400 {
		t.Fatalf("51 PDUs: %d", st)
	}
	// A server banned by the room's ACL may not join.
	if st, _ := evil.request(t, ts, "s0.test", "GET", "/_matrix/federation/v1/make_join/"+url.PathEscape(roomID)+"/"+url.PathEscape(intruder)+"?ver="+string(ver), nil, evil.key); st != 200 {
		t.Fatalf("make_join before the ACL: %d", st)
	}
	alice.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.server_acl", map[string]any{"allow": []string{"*"}, "deny": []string{"evil.test"}})
	if st, res := evil.request(t, ts, "s0.test", "GET", "/_matrix/federation/v1/make_join/"+url.PathEscape(roomID)+"/"+url.PathEscape(intruder)+"?ver="+string(ver), nil, evil.key); st != 403 {
		t.Fatalf("make_join from a server the ACL denies: %d %s", st, res.Raw)
	}
	// The room still works for its members.
	alice.send(roomID, "still fine")
}
