package main

import (
	"net/url"
	"strings"
	"testing"

	"repeater/internal/config"
)

// TestBadInput sends malformed and hostile requests: each gets a Matrix
// error with the right status and errcode, never a 500, and the room is
// unharmed afterwards.
func TestBadInput(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice := ts.register("alice")
		roomID := alice.must("POST", "/_matrix/client/v3/createRoom", map[string]any{}).Get("room_id").Str
		r := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID)
		anon := &client{t: t, base: ts.base}
		huge := `{"body":"` + strings.Repeat("x", 70000) + `"}`
		cases := []struct {
			c            *client
			method, path string
			body         any
			status       int
			errcode      string
		}{
			{alice, "POST", "/_matrix/client/v3/createRoom", "{not json", 400, "M_NOT_JSON"},
			{alice, "POST", "/_matrix/client/v3/createRoom", `[1,2]`, 400, "M_BAD_JSON"},
			{alice, "POST", "/_matrix/client/v3/createRoom", `{"name": 5}`, 400, "M_BAD_JSON"},
			{alice, "POST", "/_matrix/client/v3/createRoom", `{"invite": "notalist"}`, 400, "M_BAD_JSON"},
			{alice, "POST", "/_matrix/client/v3/createRoom", `{"room_version": "999"}`, 400, "M_UNSUPPORTED_ROOM_VERSION"},
			{alice, "POST", "/_matrix/client/v3/createRoom", `{"preset": "nonsense"}`, 400, "M_BAD_JSON"},
			{alice, "POST", "/_matrix/client/v3/createRoom", `{"invite": ["not-a-user"]}`, 400, "M_INVALID_PARAM"},
			{alice, "PUT", r + "/send/m.room.message/big", huge, 413, "M_TOO_LARGE"},
			{alice, "PUT", r + "/send/m.room.message/nj", "nope", 400, "M_NOT_JSON"},
			{alice, "PUT", "/_matrix/client/v3/rooms/!nope:test.local/send/m.room.message/1", `{}`, 404, "M_NOT_FOUND"},
			{alice, "PUT", "/_matrix/client/v3/rooms/garbage/send/m.room.message/1", `{}`, 404, "M_NOT_FOUND"},
			{alice, "GET", r + "/event/$nope", nil, 404, "M_NOT_FOUND"},
			{alice, "GET", r + "/messages?dir=x", nil, 400, "M_INVALID_PARAM"},
			{alice, "GET", r + "/messages?dir=b&from=zzz", nil, 400, "M_INVALID_PARAM"},
			{alice, "GET", r + "/messages?dir=b&limit=-4", nil, 400, "M_INVALID_PARAM"},
			{alice, "GET", "/_matrix/client/v3/sync?since=garbage", nil, 400, "M_INVALID_PARAM"},
			{alice, "GET", "/_matrix/client/v3/sync?filter={bad", nil, 400, "M_BAD_JSON"},
			{alice, "GET", "/_matrix/client/v3/sync?timeout=-1", nil, 400, "M_INVALID_PARAM"},
			{alice, "POST", r + "/invite", `{"user_id": 7}`, 400, "M_BAD_JSON"},
			{alice, "POST", r + "/invite", `{"user_id": "bad"}`, 400, "M_INVALID_PARAM"},
			{alice, "PUT", r + "/state/m.room.member/notauser", `{"membership":"join"}`, 400, "M_BAD_JSON"},
			{alice, "PUT", r + "/state/m.room.power_levels", `{"users": "x"}`, 403, "M_FORBIDDEN"},
			{alice, "PUT", r + "/typing/" + url.PathEscape(alice.userID), `{"typing": "yes"}`, 400, "M_BAD_JSON"},
			{alice, "PUT", "/_matrix/client/v3/profile/" + url.PathEscape(alice.userID) + "/displayname", `{"displayname": {}}`, 400, "M_BAD_JSON"},
			{alice, "POST", "/_matrix/client/v3/join/nonsense", `{}`, 400, "M_INVALID_PARAM"},
			{alice, "POST", "/_matrix/client/v3/join/" + url.PathEscape("#nope:test.local"), `{}`, 404, "M_NOT_FOUND"},
			{alice, "GET", "/_matrix/client/v3/user/" + url.PathEscape(alice.userID) + "/filter/abc", nil, 404, "M_NOT_FOUND"},
			{alice, "POST", "/_matrix/client/v3/register", `{"username":"Bad Name!","password":"x","auth":{"type":"m.login.dummy"}}`, 400, "M_INVALID_USERNAME"},
			{alice, "POST", "/_matrix/client/v3/register", `{"username":"alice","password":"x","auth":{"type":"m.login.dummy"}}`, 400, "M_USER_IN_USE"},
			{anon, "GET", "/_matrix/client/v3/sync", nil, 401, "M_MISSING_TOKEN"},
			{&client{t: t, base: ts.base, token: "bogus"}, "GET", "/_matrix/client/v3/sync", nil, 401, "M_UNKNOWN_TOKEN"},
			{anon, "POST", "/_matrix/client/v3/login", `{"type":"m.login.password","user":"alice","password":"wrong"}`, 403, "M_FORBIDDEN"},
			{anon, "GET", "/_matrix/client/v3/no/such/endpoint", nil, 404, "M_UNRECOGNIZED"},
			{anon, "DELETE", "/_matrix/client/v3/login", nil, 405, "M_UNRECOGNIZED"},
		}
		for _, tc := range cases {
			st, res := tc.c.do(tc.method, tc.path, tc.body)
			if st != tc.status || res.Get("errcode").Str != tc.errcode {
				t.Errorf("%s %s: got %d %s, want %d %s", tc.method, tc.path, st, res.Raw, tc.status, tc.errcode)
			}
		}
		// The room still works.
		alice.send(roomID, "still fine")
	})
}
