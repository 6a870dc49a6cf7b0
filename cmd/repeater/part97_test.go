package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"repeater/internal/config"
	"repeater/storage/storagetest"
)

// meshConfig turns a test config into an amateur-radio node for callsign:
// loopback trusted (the tests' mesh), no AREDN node to poll unless a test
// sets one (nothing may leave loopback).
func meshConfig(t testing.TB, cfg *config.Config, callsign string) *config.Config {
	t.Helper()
	cfg.Part97.Enabled = true
	cfg.Part97.Callsign = callsign
	cfg.Part97.RequireCallsign = true
	cfg.Part97.TrustedPeers = []string{"127.0.0.0/8"}
	cfg.Part97.ArednNode = ""
	cfg.Part97.MeshDNS = false // names not known as peers are never looked up
	cfg.TLSListen, cfg.TLSCert, cfg.TLSKey = "", "", ""
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// wantPart97Refusal checks a 403 M_FORBIDDEN whose text names Part 97.
func wantPart97Refusal(t *testing.T, what string, st int, res gjson.Result) {
	t.Helper()
	if st != 403 || res.Get("errcode").Str != "M_FORBIDDEN" || !strings.Contains(res.Get("error").Str, "Part 97") {
		t.Errorf("%s: status %d %s, want 403 M_FORBIDDEN naming Part 97", what, st, res.Raw)
	}
}

// What an Element or Cinny user meets on a mesh node: callsign sign-up,
// encryption off however the client asks for it.
func TestPart97ClientRules(t *testing.T) {
	for name, dsn := range storagetest.Dialects(t) {
		t.Run(name, func(t *testing.T) {
			ts := startTestServer(t, meshConfig(t, newTestConfig(t, dsn), "K5DLQ"))
			anon := &client{t: t, base: ts.base}

			// Clients are told encryption is off.
			wk := anon.must("GET", "/.well-known/matrix/client", nil)
			if !wk.Get("io\\.element\\.e2ee.force_disable").Bool() || wk.Get("io\\.element\\.e2ee.default").Bool() || !wk.Get("io\\.element\\.e2ee").Exists() {
				t.Errorf("well-known: %s", wk.Raw)
			}
			if v := anon.must("GET", "/_matrix/client/versions", nil); !v.Get("unstable_features.io\\.repeater\\.part97").Bool() {
				t.Errorf("versions: %s", v.Raw)
			}

			// Callsigns only (§97.119), display name in capitals.
			st, res := anon.do("POST", "/_matrix/client/v3/register", map[string]any{"username": "alice", "password": "pw", "auth": map[string]any{"type": "m.login.dummy"}})
			if st != 400 || res.Get("errcode").Str != "M_INVALID_USERNAME" || !strings.Contains(res.Get("error").Str, "callsign") {
				t.Errorf("non-callsign registration: %d %s", st, res.Raw)
			}
			st, res = anon.do("GET", "/_matrix/client/v3/register/available?username=alice", nil)
			if st != 400 || res.Get("errcode").Str != "M_INVALID_USERNAME" {
				t.Errorf("availability of a non-callsign: %d %s", st, res.Raw)
			}
			st, res = anon.do("POST", "/_matrix/client/v3/register", map[string]any{"password": "pw", "auth": map[string]any{"type": "m.login.dummy"}})
			if st != 400 || res.Get("errcode").Str != "M_INVALID_USERNAME" {
				t.Errorf("registration without a user name: %d %s", st, res.Raw)
			}
			op := ts.register("KN6PLV-2")
			if op.userID != "@kn6plv-2:test.local" {
				t.Fatalf("user ID %q", op.userID)
			}
			if dn := op.must("GET", "/_matrix/client/v3/profile/"+url.PathEscape(op.userID)+"/displayname", nil).Get("displayname").Str; dn != "KN6PLV-2" {
				t.Errorf("display name %q", dn)
			}

			// Element's private room: encryption in initial_state. The room
			// is made without it, and the answer says so.
			res = op.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "name": "Net",
				"initial_state": []any{
					map[string]any{"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}},
					map[string]any{"type": "m.room.topic", "state_key": "", "content": map[string]any{"topic": "Tuesday net"}},
				}})
			roomID := res.Get("room_id").Str
			if !res.Get("io\\.repeater\\.part97.encryption_removed").Bool() {
				t.Errorf("createRoom answer does not say encryption was removed: %s", res.Raw)
			}
			rooms := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID)
			if st, _ := op.do("GET", rooms+"/state/m.room.encryption/", nil); st != 404 {
				t.Errorf("room has m.room.encryption (status %d)", st)
			}
			if topic := op.must("GET", rooms+"/state/m.room.topic/", nil).Get("topic").Str; topic != "Tuesday net" {
				t.Errorf("the rest of initial_state was lost: topic %q", topic)
			}
			if res := op.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}); res.Get("io\\.repeater\\.part97").Exists() {
				t.Errorf("a room that asked for no encryption reports removal: %s", res.Raw)
			}

			// Every way in for encryption is refused.
			st, res = op.do("PUT", rooms+"/state/m.room.encryption/", map[string]any{"algorithm": "m.megolm.v1.aes-sha2"})
			wantPart97Refusal(t, "PUT m.room.encryption", st, res)
			st, res = op.do("PUT", rooms+"/send/m.room.encrypted/t1", map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "session_id": "s", "sender_key": "k", "device_id": "D"})
			wantPart97Refusal(t, "m.room.encrypted", st, res)
			st, res = op.do("PUT", rooms+"/send/m.room.message/t2", map[string]any{"msgtype": "m.file", "body": "log.txt",
				"file": map[string]any{"url": "mxc://test.local/x", "key": map[string]any{"k": "x"}, "iv": "x", "hashes": map[string]any{}, "v": "v2"}})
			wantPart97Refusal(t, "encrypted attachment", st, res)
			st, res = op.do("PUT", "/_matrix/client/v3/sendToDevice/m.room.encrypted/t3", map[string]any{"messages": map[string]any{op.userID: map[string]any{"*": map[string]any{"ciphertext": "x"}}}})
			wantPart97Refusal(t, "encrypted to-device", st, res)
			st, res = op.do("POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{"public_key": "x"}})
			wantPart97Refusal(t, "key backup", st, res)
			if st, res := op.do("GET", "/_matrix/client/v3/room_keys/version", nil); st != 404 || res.Get("errcode").Str != "M_NOT_FOUND" {
				t.Errorf("GET key backup: %d %s (clients expect 404: no backup)", st, res.Raw)
			}

			// Plain messages and plain to-device messages go as usual.
			op.send(roomID, "CQ CQ de KN6PLV")
			op.must("PUT", "/_matrix/client/v3/sendToDevice/m.room_key_request/t4", map[string]any{"messages": map[string]any{}})
			if got := timelineBodies(op, roomID); len(got) != 1 || got[0] != "CQ CQ de KN6PLV" {
				t.Errorf("timeline %v", got)
			}
		})
	}
}

// A server that is not a trusted peer gets nothing in unsigned: its
// unsigned requests are refused, and unsigned events in its signed
// requests are refused and not stored (an event that is merely not allowed
// would be stored as rejected). A trusted peer's unsigned request passes.
func TestPart97UntrustedPeer(t *testing.T) {
	evil := newEvilServer(t, "evil.test")
	cfg := meshConfig(t, evilPeerConfig(t, "k5dlq.local.mesh", evil), "K5DLQ")
	cfg.Part97.UnsignedEvents = true
	cfg.Part97.TrustedPeers = []string{"kn6plv.local.mesh"} // by name only: loopback is not trusted here
	ts := startTestServer(t, cfg)
	op := ts.register("k5dlq")
	roomID := op.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Get("room_id").Str
	op.send(roomID, "QST")

	unsignedReq := func(origin, path, body string) int {
		req, _ := http.NewRequest("PUT", ts.base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Part97-Origin", origin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := unsignedReq("evil.test", "/_matrix/federation/v1/send/u1", `{"pdus":[],"edus":[]}`); st != 401 {
		t.Errorf("untrusted unsigned request: status %d", st)
	}
	if st := unsignedReq("kn6plv.local.mesh", "/_matrix/federation/v1/send/u2", `{"pdus":[],"edus":[]}`); st != 200 {
		t.Errorf("trusted unsigned request: status %d", st)
	}

	state := op.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state", nil)
	var create, pl string
	for _, e := range state.Array() {
		switch e.Get("type").Str {
		case "m.room.create":
			create = e.Get("event_id").Str
		case "m.room.power_levels":
			pl = e.Get("event_id").Str
		}
	}
	last := op.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=1", nil).Get("chunk.0.event_id").Str
	ver := gomatrixserverlib.RoomVersion(cfg.DefaultRoomVersion)
	signed := evil.build(t, ver, roomID, "@mallory:evil.test", "m.room.message", nil, `{"body":"signed","msgtype":"m.text"}`, []string{last}, []string{create, pl}, 50)
	plain := evil.build(t, ver, roomID, "@mallory:evil.test", "m.room.message", nil, `{"body":"unsigned","msgtype":"m.text"}`, []string{last}, []string{create, pl}, 50)
	stripped, _ := sjson.DeleteBytes(plain.JSON(), "signatures")
	st, res := evil.request(t, ts, "k5dlq.local.mesh", "PUT", "/_matrix/federation/v1/send/e1", map[string]any{
		"origin": "evil.test", "origin_server_ts": time.Now().UnixMilli(), "pdus": []json.RawMessage{stripped, signed.JSON()}}, evil.key)
	if st != 200 {
		t.Fatalf("send: %d %s", st, res.Raw)
	}
	if res.Get("pdus."+gjson.Escape(plain.EventID())+".error").Str == "" {
		t.Errorf("unsigned event from an untrusted peer accepted: %s", res.Raw)
	}
	if _, err := ts.srv.db.EventByID(context.Background(), plain.EventID()); err == nil {
		t.Error("the untrusted peer's unsigned event was stored")
	}
	// The control: its signed (but not allowed) event was processed and
	// stored as rejected, so the difference is the signature.
	if e, err := ts.srv.db.EventByID(context.Background(), signed.EventID()); err != nil || !e.Rejected {
		t.Errorf("signed event from a non-member: %v %+v", err, e)
	}
	for _, b := range timelineBodies(op, roomID) {
		if b != "QST" {
			t.Errorf("timeline shows %q", b)
		}
	}

	// What a local client may not send, a peer may not either: an
	// encrypted event, however well signed, is refused and not stored.
	enc := evil.build(t, ver, roomID, "@mallory:evil.test", "m.room.encrypted", nil, `{"algorithm":"m.megolm.v1.aes-sha2","ciphertext":"AwgA"}`, []string{last}, []string{create, pl}, 51)
	st, res = evil.request(t, ts, "k5dlq.local.mesh", "PUT", "/_matrix/federation/v1/send/e2", map[string]any{
		"origin": "evil.test", "origin_server_ts": time.Now().UnixMilli(), "pdus": []json.RawMessage{enc.JSON()}}, evil.key)
	if st != 200 || !strings.Contains(res.Get("pdus."+gjson.Escape(enc.EventID())+".error").Str, "Part 97") {
		t.Errorf("encrypted event over federation: %d %s", st, res.Raw)
	}
	if _, err := ts.srv.db.EventByID(context.Background(), enc.EventID()); err == nil {
		t.Error("an encrypted event from a peer was stored")
	}
}

// The one-switch set-up: the first run with --part97 --callsign, and
// generate-config --part97, write a config that validates as it is, in the
// mode; mesh-service prints the line to advertise; bad flags are refused.
// (The server is not started: its default AREDN node is a mesh name.)
func TestPart97Setup(t *testing.T) {
	t.Chdir(t.TempDir())
	var out, errb strings.Builder
	if err := firstRun("repeater.yaml", "k5dlq-pi.local.mesh", true, "k5dlq", &errb); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load("repeater.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("first-run mesh config: %v", err)
	}
	if !cfg.Part97.Enabled || cfg.Part97.Callsign != "K5DLQ" || cfg.ServerName != "k5dlq-pi.local.mesh" || cfg.TLSListen != "" {
		t.Fatalf("first-run mesh config: %+v", cfg.Part97)
	}
	if !strings.Contains(errb.String(), "mesh-service") {
		t.Errorf("first run does not point at mesh-service: %q", errb.String())
	}
	if code := run([]string{"mesh-service", "--config", "repeater.yaml"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "Matrix|1|http|k5dlq-pi|8008|") {
		t.Errorf("mesh-service: %d %q", code, out.String())
	}
	for _, args := range [][]string{
		{"generate-config", "--part97", "--dir", t.TempDir()},
		{"generate-config", "--part97", "--callsign", "alice", "--dir", t.TempDir()},
		{"--part97", "--callsign", "12345"},
	} {
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	dir := t.TempDir()
	if code := run([]string{"generate-config", "--part97", "--callsign", "W1AW", "--server-name", "w1aw.local.mesh", "--dir", dir}, &out, &errb); code != 0 {
		t.Fatalf("generate-config --part97: %d %s", code, errb.String())
	}
	gen, err := config.Load(dir + "/repeater.yaml")
	if err != nil || gen.Validate() != nil || !gen.Part97.Enabled || gen.Part97.Callsign != "W1AW" {
		t.Fatalf("generated: %v %+v", err, gen)
	}
	// tls_listen with the mode: refused at start-up, naming the rule.
	gen.TLSListen = ":8448"
	if err := gen.Validate(); err == nil || !strings.Contains(err.Error(), "97.113") {
		t.Errorf("tls_listen in the mode: %v", err)
	}
}
