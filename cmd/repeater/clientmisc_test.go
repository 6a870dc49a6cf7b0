package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/config"
)

const v3 = "/_matrix/client/v3"

// sqliteConfig is a test config on SQLite, for features whose storage is
// tested on every dialect elsewhere.
func sqliteConfig(t *testing.T) *config.Config {
	return newTestConfig(t, filepath.Join(t.TempDir(), "test.db"))
}

func wantErr(t *testing.T, what string, st int, res gjson.Result, status int, code string) {
	t.Helper()
	if st != status || res.Get("errcode").Str != code {
		t.Fatalf("%s: %d %s, want %d %s", what, st, res.Raw, status, code)
	}
}

// Server-side key backup: versions, keys, the replacement rule, etag and
// count, and writes refused for any but the current version.
func TestKeyBackup(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice := ts.register("alice")
		st, res := alice.do("GET", v3+"/room_keys/version", nil)
		wantErr(t, "no backup yet", st, res, 404, "M_NOT_FOUND")

		// auth_data is opaque: sytest sends a string.
		ver := alice.must("POST", v3+"/room_keys/version", map[string]any{"algorithm": "m.megolm_backup.v1", "auth_data": "anopaquestring"}).Get("version").Str
		if ver != "1" {
			t.Fatalf("first version %q", ver)
		}
		info := alice.must("GET", v3+"/room_keys/version", nil)
		if info.Get("version").Str != ver || info.Get("algorithm").Str != "m.megolm_backup.v1" || info.Get("auth_data").Str != "anopaquestring" ||
			info.Get("count").Int() != 0 || info.Get("etag").Type != gjson.String {
			t.Fatalf("backup info: %s", info.Raw)
		}
		alice.must("PUT", v3+"/room_keys/version/"+ver, map[string]any{"algorithm": "m.megolm_backup.v1", "auth_data": map[string]any{"public_key": "k"}, "version": ver})
		if got := alice.must("GET", v3+"/room_keys/version/"+ver, nil); got.Get("auth_data.public_key").Str != "k" {
			t.Fatalf("updated info: %s", got.Raw)
		}
		// The version repeated in the body as a number (as sytest sends it).
		alice.must("PUT", v3+"/room_keys/version/"+ver, map[string]any{"algorithm": "m.megolm_backup.v1", "auth_data": map[string]any{"public_key": "k"}, "version": json.Number(ver)})
		st, res = alice.do("PUT", v3+"/room_keys/version/"+ver, map[string]any{"algorithm": "other", "auth_data": map[string]any{}})
		wantErr(t, "changing the algorithm", st, res, 400, "M_INVALID_PARAM")
		st, res = alice.do("PUT", v3+"/room_keys/version/"+ver, map[string]any{"algorithm": "m.megolm_backup.v1", "auth_data": map[string]any{}, "version": "7"})
		wantErr(t, "version mismatch", st, res, 400, "M_INVALID_PARAM")

		// Empty answers, and unknown sessions and versions.
		if got := alice.must("GET", v3+"/room_keys/keys?version="+ver, nil); got.Raw != `{"rooms":{}}` {
			t.Fatalf("empty backup: %s", got.Raw)
		}
		if got := alice.must("GET", v3+"/room_keys/keys/!notaroom?version="+ver, nil); got.Raw != `{"sessions":{}}` {
			t.Fatalf("empty room: %s", got.Raw)
		}
		st, res = alice.do("GET", v3+"/room_keys/keys/!notaroom/notasession?version="+ver, nil)
		wantErr(t, "unknown session", st, res, 404, "M_NOT_FOUND")
		st, res = alice.do("GET", v3+"/room_keys/keys?version=bogusversion", nil)
		wantErr(t, "unknown version", st, res, 404, "M_NOT_FOUND")

		key := func(fmi, fc int, verified bool, data any) map[string]any {
			return map[string]any{"first_message_index": fmi, "forwarded_count": fc, "is_verified": verified, "session_data": data}
		}
		sess := v3 + "/room_keys/keys/" + url.PathEscape("!abcd:test.local") + "/1234?version=" + ver
		up := alice.must("PUT", sess, key(3, 0, false, "first"))
		if up.Get("count").Int() != 1 || up.Get("etag").Type != gjson.String {
			t.Fatalf("put key: %s", up.Raw)
		}
		etag := up.Get("etag").Str
		// A worse key (higher index) leaves the stored one and the etag.
		if up := alice.must("PUT", sess, key(4, 0, false, "worse")); up.Get("etag").Str != etag || up.Get("count").Int() != 1 {
			t.Fatalf("worse key changed the etag: %s", up.Raw)
		}
		if got := alice.must("GET", sess, nil); got.Get("session_data").Str != "first" || got.Get("first_message_index").Int() != 3 {
			t.Fatalf("worse key replaced the stored one: %s", got.Raw)
		}
		// A better key (lower index) replaces it; then a verified one wins
		// over a lower index.
		if up := alice.must("PUT", sess, key(1, 0, false, "better")); up.Get("etag").Str == etag {
			t.Fatalf("better key kept the etag: %s", up.Raw)
		}
		alice.must("PUT", sess, key(9, 2, true, "verified"))
		alice.must("PUT", sess, key(0, 0, false, "unverified"))
		if got := alice.must("GET", sess, nil); got.Get("session_data").Str != "verified" || !got.Get("is_verified").Bool() || got.Get("forwarded_count").Int() != 2 {
			t.Fatalf("after verified: %s", got.Raw)
		}
		st, res = alice.do("PUT", sess, map[string]any{"first_message_index": 1})
		wantErr(t, "incomplete key", st, res, 400, "M_BAD_JSON")

		// Many rooms at once, then the whole backup, one room, and the count
		// in the version's info.
		bulk := alice.must("PUT", v3+"/room_keys/keys?version="+ver, map[string]any{"rooms": map[string]any{
			"!r1:test.local": map[string]any{"sessions": map[string]any{"s1": key(0, 0, false, map[string]any{"ciphertext": "c1"}), "s2": key(0, 0, false, "x")}},
			"!r2:test.local": map[string]any{"sessions": map[string]any{"s3": key(0, 0, false, "y")}},
		}})
		if bulk.Get("count").Int() != 4 {
			t.Fatalf("bulk put: %s", bulk.Raw)
		}
		all := alice.must("GET", v3+"/room_keys/keys?version="+ver, nil)
		if all.Get(`rooms.!r1:test\.local.sessions.s1.session_data.ciphertext`).Str != "c1" || len(all.Get("rooms").Map()) != 3 {
			t.Fatalf("all keys: %s", all.Raw)
		}
		room := alice.must("GET", v3+"/room_keys/keys/"+url.PathEscape("!r1:test.local")+"?version="+ver, nil)
		if len(room.Get("sessions").Map()) != 2 {
			t.Fatalf("room keys: %s", room.Raw)
		}
		if got := alice.must("GET", v3+"/room_keys/version", nil); got.Get("count").Int() != 4 || got.Get("etag").Str != bulk.Get("etag").Str {
			t.Fatalf("info after bulk put: %s (put said %s)", got.Raw, bulk.Raw)
		}
		del := alice.must("DELETE", v3+"/room_keys/keys/"+url.PathEscape("!r1:test.local")+"?version="+ver, nil)
		if del.Get("count").Int() != 2 || del.Get("etag").Str == bulk.Get("etag").Str {
			t.Fatalf("delete room keys: %s", del.Raw)
		}

		// A new version becomes current: the old one takes no writes but
		// can still be read.
		ver2 := alice.must("POST", v3+"/room_keys/version", map[string]any{"algorithm": "m.megolm_backup.v1", "auth_data": map[string]any{}}).Get("version").Str
		if ver2 != "2" {
			t.Fatalf("second version %q", ver2)
		}
		st, res = alice.do("PUT", sess, key(0, 0, true, "late"))
		wantErr(t, "write to the old version", st, res, 403, "M_WRONG_ROOM_KEYS_VERSION")
		if res.Get("current_version").Str != ver2 {
			t.Fatalf("current_version: %s", res.Raw)
		}
		if got := alice.must("GET", v3+"/room_keys/version", nil); got.Get("version").Str != ver2 || got.Get("count").Int() != 0 {
			t.Fatalf("current version: %s", got.Raw)
		}
		alice.must("GET", sess, nil)

		// Deleting the current version makes the previous one current again;
		// deleting twice succeeds, an unknown version is 404, and the keys
		// of a deleted version are gone.
		alice.must("DELETE", v3+"/room_keys/version/"+ver2, nil)
		alice.must("DELETE", v3+"/room_keys/version/"+ver2, nil)
		st, res = alice.do("DELETE", v3+"/room_keys/version/99", nil)
		wantErr(t, "deleting an unknown version", st, res, 404, "M_NOT_FOUND")
		st, res = alice.do("GET", v3+"/room_keys/version/"+ver2, nil)
		wantErr(t, "deleted version", st, res, 404, "M_NOT_FOUND")
		if got := alice.must("GET", v3+"/room_keys/version", nil); got.Get("version").Str != ver {
			t.Fatalf("current after delete: %s", got.Raw)
		}
		alice.must("DELETE", v3+"/room_keys/version/"+ver, nil)
		st, res = alice.do("GET", sess, nil)
		wantErr(t, "keys of a deleted version", st, res, 404, "M_NOT_FOUND")
		ver3 := alice.must("POST", v3+"/room_keys/version", map[string]any{"algorithm": "m.megolm_backup.v1", "auth_data": map[string]any{}}).Get("version").Str
		if ver3 != "3" || alice.must("GET", v3+"/room_keys/keys?version="+ver3, nil).Raw != `{"rooms":{}}` {
			t.Fatalf("recreated backup %q is not new and empty", ver3)
		}
		// Backups are per user.
		bob := ts.register("bob")
		st, res = bob.do("GET", v3+"/room_keys/version", nil)
		wantErr(t, "another user's backup", st, res, 404, "M_NOT_FOUND")
	})
}

// GET /voip/turnServer: nothing configured, a shared secret (time-limited
// credentials checked against their HMAC), and fixed credentials.
func TestTurnServer(t *testing.T) {
	plain := startTestServer(t, sqliteConfig(t))
	if got := plain.register("alice").must("GET", v3+"/voip/turnServer", nil); got.Raw != "{}" {
		t.Fatalf("no TURN configured: %s", got.Raw)
	}

	cfg := sqliteConfig(t)
	cfg.TURN.URIs = []string{"turn:turn.test.local:3478?transport=udp", "turns:turn.test.local:5349?transport=tcp"}
	cfg.TURN.SharedSecret = "s3cret"
	cfg.TURN.TTL = 600
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ts := startTestServer(t, cfg)
	alice := ts.register("alice")
	before := time.Now().Unix()
	got := alice.must("GET", v3+"/voip/turnServer", nil)
	user, pass := got.Get("username").Str, got.Get("password").Str
	expiry, uid, ok := strings.Cut(user, ":")
	exp, _ := strconv.ParseInt(expiry, 10, 64)
	if !ok || uid != alice.userID || exp < before+600 || exp > time.Now().Unix()+600 {
		t.Fatalf("username %q", user)
	}
	mac := hmac.New(sha1.New, []byte("s3cret"))
	mac.Write([]byte(user))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); pass != want {
		t.Fatalf("password %q, want %q", pass, want)
	}
	if got.Get("ttl").Int() != 600 || len(got.Get("uris").Array()) != 2 || got.Get("uris.1").Str != cfg.TURN.URIs[1] {
		t.Fatalf("turnServer: %s", got.Raw)
	}

	cfg = sqliteConfig(t)
	cfg.TURN.URIs = []string{"turn:turn.test.local"}
	cfg.TURN.Username, cfg.TURN.Password = "u", "p"
	fixed := startTestServer(t, cfg)
	if got := fixed.register("alice").must("GET", v3+"/voip/turnServer", nil); got.Get("username").Str != "u" || got.Get("password").Str != "p" || got.Get("ttl").Int() != 86400 {
		t.Fatalf("fixed credentials: %s", got.Raw)
	}

	bad := sqliteConfig(t)
	bad.TURN.URIs = []string{"http://turn"}
	bad.TURN.SharedSecret, bad.TURN.Username = "s", "u"
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "turn.uris") || !strings.Contains(err.Error(), "not both") {
		t.Fatalf("bad TURN config: %v", err)
	}
}

// The third-party lookup endpoints answer, with nothing to offer until
// application services bridge to other networks.
func TestThirdParty(t *testing.T) {
	ts := startTestServer(t, sqliteConfig(t))
	alice := ts.register("alice")
	if got := alice.must("GET", v3+"/thirdparty/protocols", nil); got.Raw != "{}" {
		t.Fatalf("protocols: %s", got.Raw)
	}
	st, res := alice.do("GET", v3+"/thirdparty/protocol/irc", nil)
	wantErr(t, "unknown protocol", st, res, 404, "M_NOT_FOUND")
	for _, p := range []string{"/thirdparty/location?alias=%23a:test.local", "/thirdparty/user?userid=@a:test.local", "/thirdparty/location/irc?channel=x", "/thirdparty/user/irc"} {
		if got := alice.must("GET", v3+p, nil); got.Raw != "[]" {
			t.Fatalf("%s: %s", p, got.Raw)
		}
	}
	st, _ = (&client{t: t, base: ts.base}).do("GET", v3+"/thirdparty/protocols", nil)
	if st != 401 {
		t.Fatalf("protocols without a token: %d", st)
	}
}

// Reports of events, rooms and users are stored; a reporter who is not
// in the room, or an event that does not exist, gets 404.
func TestReports(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice, bob, carol := ts.register("alice"), ts.register("bob"), ts.register("carol")
		roomID := sharedRoom(alice, bob)
		ev := alice.send(roomID, "rude")
		report := func(c *client, room, event string, body any) (int, gjson.Result) {
			return c.do("POST", v3+"/rooms/"+url.PathEscape(room)+"/report/"+url.PathEscape(event), body)
		}
		bob.must("POST", v3+"/rooms/"+url.PathEscape(roomID)+"/report/"+url.PathEscape(ev), map[string]any{"reason": "rude", "score": -100})
		st, res := report(carol, roomID, ev, map[string]any{"reason": "x"})
		wantErr(t, "reporter not in the room", st, res, 404, "M_NOT_FOUND")
		st, res = report(bob, roomID, "$nope", map[string]any{})
		wantErr(t, "unknown event", st, res, 404, "M_NOT_FOUND")
		other := alice.must("POST", v3+"/createRoom", map[string]any{}).Get("room_id").Str
		st, res = report(bob, other, ev, map[string]any{})
		wantErr(t, "event of another room", st, res, 404, "M_NOT_FOUND")
		st, res = report(bob, roomID, ev, map[string]any{"score": 7})
		wantErr(t, "score out of range", st, res, 400, "M_BAD_JSON")

		carol.must("POST", v3+"/rooms/"+url.PathEscape(roomID)+"/report", map[string]any{"reason": "bad room"})
		st, res = carol.do("POST", v3+"/rooms/"+url.PathEscape("!nope:test.local")+"/report", map[string]any{"reason": "x"})
		wantErr(t, "unknown room", st, res, 404, "M_NOT_FOUND")
		st, res = carol.do("POST", v3+"/rooms/"+url.PathEscape(roomID)+"/report", map[string]any{})
		wantErr(t, "room report without reason", st, res, 400, "M_MISSING_PARAM")

		carol.must("POST", v3+"/users/"+url.PathEscape(alice.userID)+"/report", map[string]any{"reason": ""})
		carol.must("POST", v3+"/users/"+url.PathEscape("@someone:elsewhere.example")+"/report", map[string]any{"reason": "spam"})
		st, res = carol.do("POST", v3+"/users/"+url.PathEscape("@nobody:test.local")+"/report", map[string]any{"reason": "x"})
		wantErr(t, "unknown local user", st, res, 404, "M_NOT_FOUND")

		reports, err := ts.srv.db.Reports(context.Background(), 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		var kinds []string
		for _, r := range reports {
			kinds = append(kinds, r.Kind)
		}
		if fmt.Sprint(kinds) != "[user user room event]" {
			t.Fatalf("stored reports: %v", kinds)
		}
		evr := reports[3]
		if evr.Reporter != bob.userID || evr.EventID != ev || evr.RoomID != roomID || evr.Reason != "rude" || evr.Score == nil || *evr.Score != -100 {
			t.Fatalf("event report: %+v", evr)
		}
		if reports[0].TargetUserID != "@someone:elsewhere.example" || reports[2].Reason != "bad room" {
			t.Fatalf("reports: %+v", reports)
		}
	})
}

// eventTS returns an event's origin_server_ts as its sender sees it.
func eventTS(c *client, roomID, eventID string) int64 {
	c.t.Helper()
	return c.must("GET", v3+"/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(eventID), nil).Get("origin_server_ts").Int()
}

// timestampRoom makes a room with three messages at distinct timestamps.
func timestampRoom(t *testing.T, alice *client) (string, []string, []int64) {
	roomID := alice.must("POST", v3+"/createRoom", map[string]any{}).Get("room_id").Str
	var ids []string
	var tss []int64
	for i := range 3 {
		time.Sleep(5 * time.Millisecond)
		ids = append(ids, alice.send(roomID, fmt.Sprint("m", i)))
		tss = append(tss, eventTS(alice, roomID, ids[i]))
		time.Sleep(5 * time.Millisecond)
	}
	if !(tss[0] < tss[1] && tss[1] < tss[2]) {
		t.Fatalf("timestamps not increasing: %v", tss)
	}
	return roomID, ids, tss
}

// GET /v1/rooms/{roomId}/timestamp_to_event finds the closest event the
// user may see in either direction.
func TestTimestampToEvent(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice, carol := ts.register("alice"), ts.register("carol")
		roomID, ids, tss := timestampRoom(t, alice)
		find := func(c *client, ts int64, dir string) (int, gjson.Result) {
			return c.do("GET", fmt.Sprintf("/_matrix/client/v1/rooms/%s/timestamp_to_event?ts=%d&dir=%s", url.PathEscape(roomID), ts, dir), nil)
		}
		for _, c := range []struct {
			ts   int64
			dir  string
			want int
		}{
			{tss[1], "f", 1}, {tss[1], "b", 1}, {tss[1] + 1, "f", 2}, {tss[1] - 1, "b", 0}, {tss[2] + 1000, "b", 2},
		} {
			st, res := find(alice, c.ts, c.dir)
			if st != 200 || res.Get("event_id").Str != ids[c.want] || res.Get("origin_server_ts").Int() != tss[c.want] {
				t.Fatalf("ts %d dir %s: %d %s, want %s", c.ts, c.dir, st, res.Raw, ids[c.want])
			}
		}
		st, res := find(alice, tss[2]+1000, "f")
		wantErr(t, "nothing after the last event", st, res, 404, "M_NOT_FOUND")
		st, res = find(alice, 1, "b")
		wantErr(t, "nothing before the room", st, res, 404, "M_NOT_FOUND")
		st, res = find(carol, tss[1], "f")
		wantErr(t, "a user who may not see the room", st, res, 404, "M_NOT_FOUND")
		st, res = alice.do("GET", "/_matrix/client/v1/rooms/"+url.PathEscape(roomID)+"/timestamp_to_event?ts=1&dir=x", nil)
		wantErr(t, "bad dir", st, res, 400, "M_INVALID_PARAM")
		st, res = alice.do("GET", "/_matrix/client/v1/rooms/"+url.PathEscape(roomID)+"/timestamp_to_event?dir=f", nil)
		wantErr(t, "no ts", st, res, 400, "M_MISSING_PARAM")
	})
}

// The federation twin of timestamp_to_event answers servers in the room
// and refuses others.
func TestTimestampToEventFederation(t *testing.T) {
	servers := fedNet(t, 2)
	alice := servers[0].register("alice")
	bob := servers[1].register("bob")
	roomID, ids, tss := timestampRoom(t, alice)
	path := fmt.Sprintf("/_matrix/federation/v1/timestamp_to_event/%s?ts=%d&dir=f", url.PathEscape(roomID), tss[1])
	ask := func(from *testServer) (int, gjson.Result) {
		key, err := config.LoadSigningKey(from.cfg.Path(from.cfg.SigningKeyPath))
		if err != nil {
			t.Fatal(err)
		}
		fr := fclient.NewFederationRequest("GET", spec.ServerName(from.cfg.ServerName), spec.ServerName(servers[0].cfg.ServerName), path)
		if err := fr.Sign(spec.ServerName(from.cfg.ServerName), key.KeyID, key.PrivateKey); err != nil {
			t.Fatal(err)
		}
		req, err := fr.HTTPRequest()
		if err != nil {
			t.Fatal(err)
		}
		u, _ := url.Parse(servers[0].base)
		req.URL.Scheme, req.URL.Host = u.Scheme, u.Host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, gjson.ParseBytes(b)
	}
	if st, res := ask(servers[1]); st != 403 {
		t.Fatalf("server not in the room: %d %s", st, res.Raw)
	}
	alice.must("POST", v3+"/rooms/"+url.PathEscape(roomID)+"/invite", map[string]any{"user_id": bob.userID})
	eventually(t, "bob's invite", func() bool {
		st, _ := bob.do("POST", v3+"/join/"+url.PathEscape(roomID), map[string]any{})
		return st == 200
	})
	st, res := ask(servers[1])
	if st != 200 || res.Get("event_id").Str != ids[1] || res.Get("origin_server_ts").Int() != tss[1] {
		t.Fatalf("timestamp_to_event over federation: %d %s", st, res.Raw)
	}
}

// stateContent returns a state event's content as a Go value (nil if absent).
func stateContent(c *client, roomID, typ, stateKey string) any {
	c.t.Helper()
	st, res := c.do("GET", v3+"/rooms/"+url.PathEscape(roomID)+"/state/"+typ+"/"+url.PathEscape(stateKey), nil)
	if st == 404 {
		return nil
	}
	if st != 200 {
		c.t.Fatalf("state %s in %s: %d %s", typ, roomID, st, res.Raw)
	}
	var v any
	if err := json.Unmarshal([]byte(res.Raw), &v); err != nil {
		c.t.Fatal(err)
	}
	return v
}

// POST /rooms/{roomId}/upgrade: the replacement room is linked both ways,
// carries the old room's state, bans, power levels, aliases, directory
// entry and the upgrader's m.direct entry, and the old room is closed to
// ordinary members.
func TestRoomUpgrade(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice, bob := ts.register("alice"), ts.register("bob")
		// Someone outranks alice: she upgrades at the top level, then steps
		// back down to her own.
		old := alice.must("POST", v3+"/createRoom", map[string]any{"preset": "private_chat", "name": "Old room", "topic": "things",
			"room_alias_name": "upgr", "creation_content": map[string]any{"m.federate": false},
			"power_level_content_override": map[string]any{"users": map[string]any{alice.userID: 100, "@far:elsewhere.example": 120}}}).Get("room_id").Str
		oldPath := v3 + "/rooms/" + url.PathEscape(old)
		alice.must("POST", oldPath+"/invite", map[string]any{"user_id": bob.userID})
		bob.must("POST", v3+"/join/"+url.PathEscape(old), nil)
		alice.must("PUT", v3+"/directory/room/"+url.PathEscape("#upgr2:test.local"), map[string]any{"room_id": old})
		alice.must("PUT", oldPath+"/state/m.room.canonical_alias", map[string]any{"alias": "#upgr:test.local", "alt_aliases": []string{"#upgr2:test.local"}})
		for typ, content := range map[string]any{
			"m.room.avatar":             map[string]any{"url": "mxc://test.local/a"},
			"m.room.encryption":         map[string]any{"algorithm": "m.megolm.v1.aes-sha2"},
			"m.room.server_acl":         map[string]any{"allow": []string{"*"}, "allow_ip_literals": false, "deny": []string{"*.evil.example"}},
			"m.room.history_visibility": map[string]any{"history_visibility": "joined"},
			"m.room.guest_access":       map[string]any{"guest_access": "forbidden"},
			"org.example.custom":        map[string]any{"stays": true},
		} {
			alice.must("PUT", oldPath+"/state/"+typ, content)
		}
		pl := alice.must("GET", oldPath+"/state/m.room.power_levels", nil)
		var plContent map[string]any
		json.Unmarshal([]byte(pl.Raw), &plContent)
		plContent["users"].(map[string]any)[bob.userID] = 40
		alice.must("PUT", oldPath+"/state/m.room.power_levels", plContent)
		alice.must("POST", oldPath+"/ban", map[string]any{"user_id": "@spam:elsewhere.example", "reason": "spam"})
		alice.must("PUT", v3+"/directory/list/room/"+url.PathEscape(old), map[string]any{"visibility": "public"})
		alice.must("PUT", v3+"/user/"+url.PathEscape(alice.userID)+"/account_data/m.direct", map[string]any{bob.userID: []string{old}})
		alice.must("PUT", v3+"/user/"+url.PathEscape(alice.userID)+"/rooms/"+url.PathEscape(old)+"/tags/u.work", map[string]any{"order": 0.5})
		oldState := map[string]any{}
		for _, typ := range []string{"m.room.name", "m.room.topic", "m.room.avatar", "m.room.encryption", "m.room.server_acl",
			"m.room.history_visibility", "m.room.guest_access", "m.room.join_rules", "m.room.canonical_alias", "m.room.power_levels"} {
			oldState[typ] = stateContent(alice, old, typ, "")
		}

		st, res := bob.do("POST", oldPath+"/upgrade", map[string]any{"new_version": "11"})
		wantErr(t, "upgrade without the power to", st, res, 403, "M_FORBIDDEN")
		st, res = alice.do("POST", oldPath+"/upgrade", map[string]any{"new_version": "my_bad_version"})
		wantErr(t, "unknown version", st, res, 400, "M_UNSUPPORTED_ROOM_VERSION")
		st, res = alice.do("POST", v3+"/rooms/"+url.PathEscape("!fail:unknown")+"/upgrade", map[string]any{"new_version": "11"})
		wantErr(t, "unknown room", st, res, 404, "M_NOT_FOUND")
		st, res = alice.do("PUT", oldPath+"/state/m.room.tombstone", map[string]any{"replacement_room": old})
		if st != 400 {
			t.Fatalf("tombstone pointing at its own room: %d %s", st, res.Raw)
		}

		newID := alice.must("POST", oldPath+"/upgrade", map[string]any{"new_version": "11"}).Get("replacement_room").Str
		if newID == "" || newID == old {
			t.Fatalf("replacement room %q", newID)
		}
		tomb := alice.must("GET", oldPath+"/state/m.room.tombstone?format=event", nil)
		if tomb.Get("content.replacement_room").Str != newID {
			t.Fatalf("tombstone: %s", tomb.Raw)
		}
		create := alice.must("GET", v3+"/rooms/"+url.PathEscape(newID)+"/state/m.room.create", nil)
		if create.Get("room_version").Str != "11" || create.Get("predecessor.room_id").Str != old ||
			create.Get("predecessor.event_id").Str != tomb.Get("event_id").Str || create.Get(`m\.federate`).Raw != "false" {
			t.Fatalf("new room's create content: %s", create.Raw)
		}
		for typ, want := range oldState {
			if typ == "m.room.power_levels" {
				continue
			}
			if got := stateContent(alice, newID, typ, ""); !reflect.DeepEqual(got, want) {
				t.Errorf("%s in the new room: %v, want %v", typ, got, want)
			}
		}
		if got := stateContent(alice, newID, "m.room.power_levels", ""); !reflect.DeepEqual(got, oldState["m.room.power_levels"]) {
			t.Errorf("power levels in the new room: %v, want %v", got, oldState["m.room.power_levels"])
		}
		if got := stateContent(alice, newID, "org.example.custom", ""); got != nil {
			t.Errorf("custom state copied: %v", got)
		}
		if got := stateContent(alice, newID, "m.room.member", "@spam:elsewhere.example"); !reflect.DeepEqual(got, map[string]any{"membership": "ban", "reason": "spam"}) {
			t.Errorf("ban in the new room: %v", got)
		}
		if got := stateContent(alice, newID, "m.room.member", bob.userID); got != nil {
			t.Errorf("bob's membership copied: %v", got)
		}

		// Aliases and the directory entry moved; the old room's canonical
		// alias is cleared.
		for _, al := range []string{"#upgr:test.local", "#upgr2:test.local"} {
			if got := alice.must("GET", v3+"/directory/room/"+url.PathEscape(al), nil).Get("room_id").Str; got != newID {
				t.Errorf("%s points at %s", al, got)
			}
		}
		if got := stateContent(alice, old, "m.room.canonical_alias", ""); !reflect.DeepEqual(got, map[string]any{}) {
			t.Errorf("old room's canonical alias: %v", got)
		}
		if v := alice.must("GET", v3+"/directory/list/room/"+url.PathEscape(newID), nil).Get("visibility").Str; v != "public" {
			t.Errorf("new room's visibility %q", v)
		}
		if v := alice.must("GET", v3+"/directory/list/room/"+url.PathEscape(old), nil).Get("visibility").Str; v != "private" {
			t.Errorf("old room's visibility %q", v)
		}

		// The old room is closed to ordinary members.
		oldPL := alice.must("GET", oldPath+"/state/m.room.power_levels", nil)
		if oldPL.Get("events_default").Int() != 50 || oldPL.Get("invite").Int() != 50 || oldPL.Get("users_default").Int() != 0 {
			t.Errorf("old room's power levels: %s", oldPL.Raw)
		}
		if st, _ := bob.do("PUT", oldPath+"/send/m.room.message/late", map[string]any{"msgtype": "m.text", "body": "hi"}); st != 403 {
			t.Errorf("bob could still talk in the old room: %d", st)
		}

		// Alice's direct chat and tags follow the room.
		direct := alice.must("GET", v3+"/user/"+url.PathEscape(alice.userID)+"/account_data/m.direct", nil)
		if !strings.Contains(direct.Raw, newID) {
			t.Errorf("m.direct: %s", direct.Raw)
		}
		if tags := alice.must("GET", v3+"/user/"+url.PathEscape(alice.userID)+"/rooms/"+url.PathEscape(newID)+"/tags", nil); !tags.Get("tags.u\\.work").Exists() {
			t.Errorf("tags: %s", tags.Raw)
		}
		// Bob can follow: the new room is invite-only, as the old one was,
		// but alice can invite him.
		alice.must("POST", v3+"/rooms/"+url.PathEscape(newID)+"/invite", map[string]any{"user_id": bob.userID})
		bob.must("POST", v3+"/join/"+url.PathEscape(newID), nil)
		bob.send(newID, "moved")

		// Upgrading to room version 12: the upgrader is a creator, so leaves
		// the users map; the tombstone comes after the new room.
		v12 := alice.must("POST", v3+"/rooms/"+url.PathEscape(newID)+"/upgrade", map[string]any{"new_version": "12", "additional_creators": []string{bob.userID}}).Get("replacement_room").Str
		if strings.Contains(v12, ":") {
			t.Fatalf("room version 12 room ID %q", v12)
		}
		c12 := alice.must("GET", v3+"/rooms/"+url.PathEscape(v12)+"/state/m.room.create", nil)
		if c12.Get("predecessor.room_id").Str != newID || c12.Get("additional_creators.0").Str != bob.userID || c12.Get("room_version").Str != "12" {
			t.Fatalf("v12 create content: %s", c12.Raw)
		}
		if got := alice.must("GET", v3+"/rooms/"+url.PathEscape(newID)+"/state/m.room.tombstone", nil).Get("replacement_room").Str; got != v12 {
			t.Fatalf("tombstone to v12 room: %q", got)
		}
		pl12 := alice.must("GET", v3+"/rooms/"+url.PathEscape(v12)+"/state/m.room.power_levels", nil)
		if pl12.Get("users."+gjson.Escape(alice.userID)).Exists() || pl12.Get("users."+gjson.Escape(bob.userID)).Exists() ||
			pl12.Get(`users.@far:elsewhere\.example`).Int() != 120 {
			t.Fatalf("v12 power levels: %s", pl12.Raw)
		}
		if got := stateContent(alice, v12, "m.room.name", ""); !reflect.DeepEqual(got, oldState["m.room.name"]) {
			t.Fatalf("v12 name: %v", got)
		}
	})
}

// m.login.token: a signed-in user makes a single-use token, after
// re-entering their password, that signs a new client in.
func TestLoginToken(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice := ts.register("alice")
		anon := &client{t: t, base: ts.base}
		flows := anon.must("GET", v3+"/login", nil)
		if !strings.Contains(flows.Raw, `{"get_login_token":true,"type":"m.login.token"}`) {
			t.Fatalf("login flows: %s", flows.Raw)
		}
		if !alice.must("GET", v3+"/capabilities", nil).Get(`capabilities.m\.get_login_token.enabled`).Bool() {
			t.Fatal("m.get_login_token capability not enabled")
		}
		const getToken = "/_matrix/client/v1/login/get_token"
		st, res := alice.do("POST", getToken, map[string]any{})
		if st != 401 || res.Get("session").Str == "" || res.Get("flows.0.stages.0").Str != "m.login.password" {
			t.Fatalf("get_token without auth: %d %s", st, res.Raw)
		}
		session := res.Get("session").Str
		authBody := func(pw string) map[string]any {
			return map[string]any{"auth": map[string]any{"type": "m.login.password", "session": session,
				"identifier": map[string]any{"type": "m.id.user", "user": alice.userID}, "password": pw}}
		}
		st, res = alice.do("POST", getToken, authBody("wrong"))
		if st != 401 {
			t.Fatalf("get_token with a wrong password: %d %s", st, res.Raw)
		}
		tok := alice.must("POST", getToken, authBody("pw-alice"))
		if tok.Get("login_token").Str == "" || tok.Get("expires_in_ms").Int() != 120000 {
			t.Fatalf("get_token: %s", tok.Raw)
		}
		login := anon.must("POST", v3+"/login", map[string]any{"type": "m.login.token", "token": tok.Get("login_token").Str, "initial_device_display_name": "new phone"})
		if login.Get("user_id").Str != alice.userID || login.Get("access_token").Str == "" {
			t.Fatalf("login with token: %s", login.Raw)
		}
		newClient := &client{t: t, base: ts.base, token: login.Get("access_token").Str}
		if who := newClient.must("GET", v3+"/account/whoami", nil); who.Get("user_id").Str != alice.userID || who.Get("device_id").Str == "" {
			t.Fatalf("whoami with the new device: %s", who.Raw)
		}
		st, res = anon.do("POST", v3+"/login", map[string]any{"type": "m.login.token", "token": tok.Get("login_token").Str})
		wantErr(t, "token used twice", st, res, 403, "M_FORBIDDEN")
		st, res = anon.do("POST", v3+"/login", map[string]any{"type": "m.login.token", "token": "made-up"})
		wantErr(t, "made-up token", st, res, 403, "M_FORBIDDEN")
	})
}

// With login tokens turned off, nothing advertises or issues them.
func TestLoginTokenDisabled(t *testing.T) {
	cfg := sqliteConfig(t)
	cfg.LoginToken.Enabled = false
	ts := startTestServer(t, cfg)
	alice := ts.register("alice")
	if flows := alice.must("GET", v3+"/login", nil); strings.Contains(flows.Raw, "m.login.token") {
		t.Fatalf("login flows: %s", flows.Raw)
	}
	if alice.must("GET", v3+"/capabilities", nil).Get(`capabilities.m\.get_login_token.enabled`).Bool() {
		t.Fatal("m.get_login_token capability enabled")
	}
	st, res := alice.do("POST", "/_matrix/client/v1/login/get_token", map[string]any{})
	if st != 400 {
		t.Fatalf("get_token when disabled: %d %s", st, res.Raw)
	}
	st, res = alice.do("POST", v3+"/login", map[string]any{"type": "m.login.token", "token": "x"})
	wantErr(t, "m.login.token when disabled", st, res, 400, "M_UNKNOWN")
}

// The third-party identifier endpoints answer without an identity server.
func TestThirdPartyIdentifiers(t *testing.T) {
	ts := startTestServer(t, sqliteConfig(t))
	alice := ts.register("alice")
	if got := alice.must("GET", v3+"/account/3pid", nil); got.Raw != `{"threepids":[]}` {
		t.Fatalf("3pids: %s", got.Raw)
	}
	st, res := alice.do("POST", v3+"/account/3pid/add", map[string]any{"sid": "s", "client_secret": "c"})
	wantErr(t, "add", st, res, 403, "M_THREEPID_DENIED")
	st, res = alice.do("POST", v3+"/account/3pid", map[string]any{"three_pid_creds": map[string]any{}})
	wantErr(t, "deprecated add", st, res, 403, "M_THREEPID_DENIED")
	st, res = alice.do("POST", v3+"/account/3pid/bind", map[string]any{"sid": "s", "client_secret": "c", "id_server": "id.example", "id_access_token": "t"})
	wantErr(t, "bind", st, res, 400, "M_SERVER_NOT_TRUSTED")
	for _, p := range []string{"/account/3pid/delete", "/account/3pid/unbind"} {
		if got := alice.must("POST", v3+p, map[string]any{"medium": "email", "address": "a@example.org"}); got.Get("id_server_unbind_result").Str != "no-support" {
			t.Fatalf("%s: %s", p, got.Raw)
		}
		st, res = alice.do("POST", v3+p, map[string]any{"medium": "email"})
		wantErr(t, p+" without address", st, res, 400, "M_MISSING_PARAM")
	}
	st, res = (&client{t: t, base: ts.base}).do("POST", v3+"/account/3pid/email/requestToken", map[string]any{"client_secret": "c", "email": "a@example.org", "send_attempt": 1})
	wantErr(t, "requestToken", st, res, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED")
}
