package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"repeater/internal/config"
	"repeater/storage"
)

const adminV = "/_synapse/admin"

// registerAdmin registers a server admin through shared-secret
// registration (which stores the admin flag).
func (ts *testServer) admRegisterAdmin(name string) *client {
	ts.t.Helper()
	c := &client{t: ts.t, base: ts.base}
	nonce := c.must("GET", adminV+"/v1/register", nil).Get("nonce").Str
	mac := hmac.New(sha1.New, []byte("secret"))
	mac.Write([]byte(nonce + "\x00" + name + "\x00pw-" + name + "\x00admin"))
	res := c.must("POST", adminV+"/v1/register", map[string]any{"nonce": nonce, "username": name, "password": "pw-" + name,
		"admin": true, "mac": hex.EncodeToString(mac.Sum(nil))})
	c.token, c.userID = res.Get("access_token").Str, res.Get("user_id").Str
	return c
}

// login logs a user in on a device; it returns the status and the client.
func (ts *testServer) admLogin(user, password, device string) (int, *client) {
	ts.t.Helper()
	c := &client{t: ts.t, base: ts.base}
	st, res := c.do("POST", v3+"/login", map[string]any{"type": "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": user}, "password": password, "device_id": device})
	c.token, c.userID = res.Get("access_token").Str, res.Get("user_id").Str
	return st, c
}

func admSync(c *client) gjson.Result {
	c.t.Helper()
	return c.must("GET", v3+"/sync?timeout=0", nil)
}

func admEsc(s string) string { return url.PathEscape(s) }

// waitFor polls cond for up to five seconds.
func admWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Only server admins get in: no token 401 M_MISSING_TOKEN, a bad one 401
// M_UNKNOWN_TOKEN, a user's 403 M_FORBIDDEN.
func TestAdminAccessControl(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		admin := ts.admRegisterAdmin("root")
		alice := ts.register("alice")
		anon := &client{t: t, base: ts.base}
		for _, path := range []string{"/v1/server_version", "/v2/users", "/v1/rooms", "/v1/event_reports", "/v2/users/" + admEsc(alice.userID)} {
			st, res := anon.do("GET", adminV+path, nil)
			wantErr(t, "no token "+path, st, res, 401, "M_MISSING_TOKEN")
			bad := &client{t: t, base: ts.base, token: "nope"}
			st, res = bad.do("GET", adminV+path, nil)
			wantErr(t, "bad token "+path, st, res, 401, "M_UNKNOWN_TOKEN")
			st, res = alice.do("GET", adminV+path, nil)
			wantErr(t, "user "+path, st, res, 403, "M_FORBIDDEN")
			admin.must("GET", adminV+path, nil)
		}
		st, res := alice.do("POST", adminV+"/v1/deactivate/"+admEsc(admin.userID), map[string]any{})
		wantErr(t, "user deactivating the admin", st, res, 403, "M_FORBIDDEN")
		if v := admin.must("GET", adminV+"/v1/server_version", nil).Get("server_version").Str; !strings.HasPrefix(v, "Repeater/") {
			t.Fatalf("server_version %q", v)
		}
		// Admin rights can be granted and taken.
		admin.must("PUT", adminV+"/v1/users/"+admEsc(alice.userID)+"/admin", map[string]any{"admin": true})
		alice.must("GET", adminV+"/v2/users", nil)
		if !admin.must("GET", adminV+"/v1/users/"+admEsc(alice.userID)+"/admin", nil).Get("admin").Bool() {
			t.Fatal("alice is no admin")
		}
		st, res = admin.do("PUT", adminV+"/v1/users/"+admEsc(admin.userID)+"/admin", map[string]any{"admin": false})
		wantErr(t, "self-demotion", st, res, 400, "M_UNKNOWN")
		admin.must("PUT", adminV+"/v1/users/"+admEsc(alice.userID)+"/admin", map[string]any{"admin": false})
		st, _ = alice.do("GET", adminV+"/v2/users", nil)
		if st != 403 {
			t.Fatalf("demoted alice: %d", st)
		}
	})
}

// Listing users pages with next_token and total, filters by name, guests
// and deactivation; one user's details; creating and changing users.
func TestAdminUsers(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		admin := ts.admRegisterAdmin("admin")
		for _, n := range []string{"u1", "u2", "u3", "u4"} {
			ts.register(n)
		}
		var names []string
		from := ""
		for pages := 0; ; pages++ {
			q := adminV + "/v2/users?limit=2"
			if from != "" {
				q += "&from=" + from
			}
			res := admin.must("GET", q, nil)
			if res.Get("total").Int() != 5 {
				t.Fatalf("total: %s", res.Raw)
			}
			for _, u := range res.Get("users").Array() {
				names = append(names, u.Get("name").Str)
				for _, f := range []string{"displayname", "avatar_url", "admin", "deactivated", "user_type", "is_guest", "creation_ts"} {
					if !u.Get(f).Exists() {
						t.Fatalf("user without %s: %s", f, u.Raw)
					}
				}
			}
			from = res.Get("next_token").Str
			if from == "" {
				if pages != 2 {
					t.Fatalf("%d pages", pages+1)
				}
				break
			}
		}
		if fmt.Sprint(names) != "[@admin:test.local @u1:test.local @u2:test.local @u3:test.local @u4:test.local]" {
			t.Fatalf("users: %v", names)
		}
		res := admin.must("GET", adminV+"/v2/users?name=U3", nil)
		if res.Get("total").Int() != 1 || res.Get("users.0.name").Str != "@u3:test.local" {
			t.Fatalf("name filter: %s", res.Raw)
		}
		u1 := admin.must("GET", adminV+"/v2/users/@u1:test.local", nil)
		if u1.Get("name").Str != "@u1:test.local" || u1.Get("displayname").Str != "u1" || u1.Get("admin").Bool() || !u1.Get("threepids").IsArray() ||
			!u1.Get("external_ids").IsArray() || u1.Get("creation_ts").Int() < time.Now().Add(-time.Hour).UnixMilli() {
			t.Fatalf("u1: %s", u1.Raw)
		}
		st, r := admin.do("GET", adminV+"/v2/users/@nobody:test.local", nil)
		wantErr(t, "unknown user", st, r, 404, "M_NOT_FOUND")
		st, r = admin.do("GET", adminV+"/v2/users/@u1:elsewhere", nil)
		wantErr(t, "remote user", st, r, 400, "M_INVALID_PARAM")

		// PUT creates (201) ...
		st, r = admin.do("PUT", adminV+"/v2/users/@newbie:test.local", map[string]any{"password": "pw-newbie", "displayname": "Newbie"})
		if st != 201 || r.Get("displayname").Str != "Newbie" || r.Get("admin").Bool() {
			t.Fatalf("create: %d %s", st, r.Raw)
		}
		if st, _ := ts.admLogin("newbie", "pw-newbie", "N1"); st != 200 {
			t.Fatalf("newbie cannot log in: %d", st)
		}
		// ... and changes (200).
		r = admin.must("PUT", adminV+"/v2/users/@newbie:test.local", map[string]any{"admin": true, "displayname": "Newer"})
		if !r.Get("admin").Bool() || r.Get("displayname").Str != "Newer" {
			t.Fatalf("change: %s", r.Raw)
		}
		_, newbie := ts.admLogin("newbie", "pw-newbie", "N2")
		admin.must("PUT", adminV+"/v2/users/@newbie:test.local", map[string]any{"password": "pw2"})
		if st, _ := newbie.do("GET", v3+"/account/whoami", nil); st != 401 {
			t.Fatalf("a new password did not log newbie out: %d", st)
		}
		if st, _ := ts.admLogin("newbie", "pw2", "N3"); st != 200 {
			t.Fatalf("new password: %d", st)
		}
		r = admin.must("PUT", adminV+"/v2/users/@newbie:test.local", map[string]any{"deactivated": true})
		if !r.Get("deactivated").Bool() {
			t.Fatalf("deactivate by PUT: %s", r.Raw)
		}
		st, r = admin.do("PUT", adminV+"/v2/users/@newbie:test.local", map[string]any{"deactivated": false})
		wantErr(t, "reactivation without a password", st, r, 400, "M_UNKNOWN")
		admin.must("PUT", adminV+"/v2/users/@newbie:test.local", map[string]any{"deactivated": false, "password": "pw3"})
		if st, _ := ts.admLogin("newbie", "pw3", "N4"); st != 200 {
			t.Fatalf("reactivated newbie cannot log in: %d", st)
		}
		st, r = admin.do("PUT", adminV+"/v2/users/@Bad!Name:test.local", map[string]any{"password": "x"})
		wantErr(t, "bad localpart", st, r, 400, "M_INVALID_USERNAME")
	})
}

// Deactivation leaves every room, ends the sessions and login; the list
// shows the account only when asked for deactivated ones.
func TestAdminDeactivate(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		admin := ts.admRegisterAdmin("admin")
		alice, bob := ts.register("alice"), ts.register("bob")
		room := sharedRoom(alice, bob)
		invited := alice.must("POST", v3+"/createRoom", map[string]any{"invite": []string{bob.userID}}).Get("room_id").Str
		res := admin.must("POST", adminV+"/v1/deactivate/"+admEsc(bob.userID), map[string]any{"erase": true})
		if res.Get("id_server_unbind_result").Str != "success" {
			t.Fatalf("deactivate: %s", res.Raw)
		}
		joined := alice.must("GET", v3+"/rooms/"+admEsc(room)+"/joined_members", nil).Get("joined")
		if joined.Get(strings.ReplaceAll(bob.userID, ".", `\.`)).Exists() || !joined.Get(strings.ReplaceAll(alice.userID, ".", `\.`)).Exists() {
			t.Fatalf("joined members after deactivation: %s", joined.Raw)
		}
		if m := alice.must("GET", v3+"/rooms/"+admEsc(invited)+"/state/m.room.member/"+admEsc(bob.userID), nil); m.Get("membership").Str != "leave" {
			t.Fatalf("bob's invite is still pending: %s", m.Raw)
		}
		if st, r := bob.do("GET", v3+"/account/whoami", nil); st != 401 {
			t.Fatalf("bob's token after deactivation: %d %s", st, r.Raw)
		}
		if st, _ := ts.admLogin("bob", "pw-bob", "B2"); st != 403 {
			t.Fatalf("deactivated bob logs in: %d", st)
		}
		list := admin.must("GET", adminV+"/v2/users", nil)
		if strings.Contains(list.Raw, "@bob:") {
			t.Fatalf("deactivated bob listed: %s", list.Raw)
		}
		list = admin.must("GET", adminV+"/v2/users?deactivated=true", nil)
		found := false
		for _, u := range list.Get("users").Array() {
			if u.Get("name").Str == bob.userID {
				found = u.Get("deactivated").Bool() && u.Get("erased").Bool() && u.Get("displayname").Type == gjson.Null
			}
		}
		if !found {
			t.Fatalf("deactivated=true: %s", list.Raw)
		}
	})
}

// Resetting a password logs the sessions out unless told not to.
func TestAdminResetPassword(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		admin := ts.admRegisterAdmin("admin")
		alice := ts.register("alice")
		admin.must("POST", adminV+"/v1/reset_password/"+admEsc(alice.userID), map[string]any{"new_password": "pw2", "logout_devices": false})
		alice.must("GET", v3+"/account/whoami", nil)
		admin.must("POST", adminV+"/v1/reset_password/"+admEsc(alice.userID), map[string]any{"new_password": "pw3"})
		if st, _ := alice.do("GET", v3+"/account/whoami", nil); st != 401 {
			t.Fatalf("old session after reset: %d", st)
		}
		if st, _ := ts.admLogin("alice", "pw-alice", "A2"); st != 403 {
			t.Fatalf("old password: %d", st)
		}
		if st, _ := ts.admLogin("alice", "pw3", "A3"); st != 200 {
			t.Fatalf("new password: %d", st)
		}
		st, r := admin.do("POST", adminV+"/v1/reset_password/"+admEsc(alice.userID), map[string]any{})
		wantErr(t, "no password", st, r, 400, "M_MISSING_PARAM")
	})
}

// Devices: listed with their last-seen details (recorded by the token
// check), one deleted ends its session.
func TestAdminDevices(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		admin := ts.admRegisterAdmin("admin")
		ts.register("alice")
		_, phone := ts.admLogin("alice", "pw-alice", "PHONE")
		_, laptop := ts.admLogin("alice", "pw-alice", "LAPTOP")
		phone.must("GET", v3+"/account/whoami", nil)
		laptop.must("GET", v3+"/account/whoami", nil)
		path := adminV + "/v2/users/" + admEsc(phone.userID) + "/devices"
		var res gjson.Result
		admWaitFor(t, "last-seen user agents", func() bool {
			res = admin.must("GET", path, nil)
			return strings.Count(res.Raw, "Go-http-client") == 2
		})
		if res.Get("total").Int() != 3 {
			t.Fatalf("devices: %s", res.Raw)
		}
		for _, d := range res.Get("devices").Array() {
			if d.Get("user_id").Str != phone.userID || !d.Get("last_seen_ts").Exists() || !d.Get("display_name").Exists() {
				t.Fatalf("device: %s", d.Raw)
			}
			if id := d.Get("device_id").Str; id == "PHONE" && d.Get("last_seen_ip").Str != "127.0.0.1" {
				t.Fatalf("phone: %s", d.Raw)
			}
		}
		if got := admin.must("GET", path+"/PHONE", nil); got.Get("device_id").Str != "PHONE" {
			t.Fatalf("one device: %s", got.Raw)
		}
		admin.must("DELETE", path+"/PHONE", nil)
		if st, _ := phone.do("GET", v3+"/account/whoami", nil); st != 401 {
			t.Fatalf("deleted device's token: %d", st)
		}
		laptop.must("GET", v3+"/account/whoami", nil)
		st, r := admin.do("DELETE", path+"/PHONE", nil)
		wantErr(t, "deleting again", st, r, 404, "M_NOT_FOUND")
		admin.must("POST", adminV+"/v2/users/"+admEsc(phone.userID)+"/delete_devices", map[string]any{"devices": []string{"LAPTOP"}})
		if st, _ := laptop.do("GET", v3+"/account/whoami", nil); st != 401 {
			t.Fatalf("laptop's token: %d", st)
		}
		if n := admin.must("GET", path, nil).Get("total").Int(); n != 1 {
			t.Fatalf("%d devices left", n)
		}
	})
}

// whois, on the admin API and the client API (admins, or the user
// themself).
func TestWhois(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		admin := ts.admRegisterAdmin("admin")
		alice, bob := ts.register("alice"), ts.register("bob")
		alice.must("GET", v3+"/account/whoami", nil)
		check := func(res gjson.Result) {
			t.Helper()
			if res.Get("user_id").Str != alice.userID {
				t.Fatalf("whois: %s", res.Raw)
			}
			devs := res.Get("devices").Map()
			if len(devs) != 1 {
				t.Fatalf("whois devices: %s", res.Raw)
			}
			for _, d := range devs {
				c := d.Get("sessions.0.connections.0")
				if c.Get("ip").Str != "127.0.0.1" || c.Get("last_seen").Int() == 0 || !c.Get("user_agent").Exists() {
					t.Fatalf("connection: %s", res.Raw)
				}
			}
		}
		check(admin.must("GET", adminV+"/v1/whois/"+admEsc(alice.userID), nil))
		check(admin.must("GET", v3+"/admin/whois/"+admEsc(alice.userID), nil))
		check(alice.must("GET", v3+"/admin/whois/"+admEsc(alice.userID), nil))
		st, res := bob.do("GET", v3+"/admin/whois/"+admEsc(alice.userID), nil)
		wantErr(t, "bob asking about alice", st, res, 403, "M_FORBIDDEN")
		st, res = bob.do("GET", adminV+"/v1/whois/"+admEsc(alice.userID), nil)
		wantErr(t, "bob on the admin API", st, res, 403, "M_FORBIDDEN")
	})
}

// Rooms: listed (paged, ordered, searched) with Synapse's fields, one
// room's details and members.
func TestAdminRooms(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		admin := ts.admRegisterAdmin("admin")
		alice, bob := ts.register("alice"), ts.register("bob")
		big := alice.must("POST", v3+"/createRoom", map[string]any{"preset": "public_chat", "name": "Bravo", "room_alias_name": "bravo", "visibility": "public"}).Get("room_id").Str
		bob.must("POST", v3+"/join/"+admEsc(big), nil)
		alice.must("POST", v3+"/createRoom", map[string]any{"name": "Alpha"})
		bob.must("POST", v3+"/createRoom", map[string]any{"name": "Charlie"})

		res := admin.must("GET", adminV+"/v1/rooms", nil)
		if res.Get("total_rooms").Int() != 3 || res.Get("offset").Int() != 0 || res.Get("next_batch").Exists() {
			t.Fatalf("rooms: %s", res.Raw)
		}
		var order []string
		for _, r := range res.Get("rooms").Array() {
			order = append(order, r.Get("name").Str)
		}
		if fmt.Sprint(order) != "[Alpha Bravo Charlie]" {
			t.Fatalf("by name: %v", order)
		}
		b := res.Get("rooms.1")
		if b.Get("room_id").Str != big || b.Get("canonical_alias").Str != "#bravo:test.local" || b.Get("joined_members").Int() != 2 ||
			b.Get("joined_local_members").Int() != 2 || b.Get("creator").Str != alice.userID || !b.Get("public").Bool() ||
			b.Get("join_rules").Str != "public" || !b.Get("federatable").Bool() || b.Get("version").Str != cfg.DefaultRoomVersion ||
			b.Get("state_events").Int() < 6 || b.Get("history_visibility").Str != "shared" || !b.Get("encryption").Exists() || !b.Get("room_type").Exists() {
			t.Fatalf("room: %s", b.Raw)
		}
		res = admin.must("GET", adminV+"/v1/rooms?order_by=joined_members&limit=1", nil)
		if res.Get("rooms.0.room_id").Str != big || res.Get("next_batch").Int() != 1 || res.Get("total_rooms").Int() != 3 {
			t.Fatalf("by size, paged: %s", res.Raw)
		}
		res = admin.must("GET", adminV+"/v1/rooms?order_by=name&dir=b&from=1&limit=5", nil)
		if res.Get("rooms.#").Int() != 2 || res.Get("rooms.0.name").Str != "Bravo" || res.Get("prev_batch").Int() != 0 {
			t.Fatalf("backwards from 1: %s", res.Raw)
		}
		res = admin.must("GET", adminV+"/v1/rooms?search_term=brav", nil)
		if res.Get("total_rooms").Int() != 1 || res.Get("rooms.0.room_id").Str != big {
			t.Fatalf("search: %s", res.Raw)
		}
		d := admin.must("GET", adminV+"/v1/rooms/"+admEsc(big), nil)
		if d.Get("name").Str != "Bravo" || d.Get("joined_local_devices").Int() != 2 || !d.Get("topic").Exists() {
			t.Fatalf("details: %s", d.Raw)
		}
		m := admin.must("GET", adminV+"/v1/rooms/"+admEsc(big)+"/members", nil)
		if m.Get("total").Int() != 2 || !strings.Contains(m.Get("members").Raw, bob.userID) {
			t.Fatalf("members: %s", m.Raw)
		}
		if n := len(admin.must("GET", adminV+"/v1/rooms/"+admEsc(big)+"/state", nil).Get("state").Array()); n < 6 {
			t.Fatalf("state: %d events", n)
		}
		st, r := admin.do("GET", adminV+"/v1/rooms/"+admEsc("!nope:test.local"), nil)
		wantErr(t, "unknown room", st, r, 404, "M_NOT_FOUND")
		st, r = admin.do("GET", adminV+"/v1/rooms?order_by=nonsense", nil)
		wantErr(t, "bad order", st, r, 400, "M_INVALID_PARAM")
	})
}

// Deleting a room with purge and block: the local members leave, its
// alias and directory entry go, the database forgets it, members' syncs
// no longer show it and joining again is refused.
func TestAdminDeleteRoom(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		admin := ts.admRegisterAdmin("admin")
		alice, bob := ts.register("alice"), ts.register("bob")
		room := alice.must("POST", v3+"/createRoom", map[string]any{"preset": "public_chat", "room_alias_name": "doomed", "visibility": "public"}).Get("room_id").Str
		bob.must("POST", v3+"/join/"+admEsc(room), nil)
		alice.send(room, "hello")
		alice.must("PUT", v3+"/user/"+admEsc(alice.userID)+"/rooms/"+admEsc(room)+"/tags/u.fav", map[string]any{})
		res := admin.must("DELETE", adminV+"/v1/rooms/"+admEsc(room), map[string]any{"purge": true, "block": true,
			"new_room_user_id": admin.userID, "message": "Moved", "room_name": "Notice"})
		kicked := res.Get("kicked_users").Raw
		if !strings.Contains(kicked, alice.userID) || !strings.Contains(kicked, bob.userID) || res.Get("local_aliases.0").Str != "#doomed:test.local" ||
			res.Get("failed_to_kick_users.#").Int() != 0 || res.Get("new_room_id").Str == "" {
			t.Fatalf("delete: %s", res.Raw)
		}
		newRoom := res.Get("new_room_id").Str
		db := ts.srv.db
		ctx := context.Background()
		if _, err := db.GetRoom(ctx, room); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("room row: %v", err)
		}
		for _, table := range []string{"events", "current_state", "state_snapshots", "receipts", "account_data"} {
			var n int
			if err := db.R().QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table+` WHERE room_id = $1`, room).Scan(&n); err != nil || n != 0 {
				t.Fatalf("%s: %d rows (%v)", table, n, err)
			}
		}
		for _, c := range []*client{alice, bob} {
			s := admSync(c)
			for _, section := range []string{"join", "invite", "leave"} {
				if s.Get("rooms." + section + "." + strings.ReplaceAll(room, ".", `\.`)).Exists() {
					t.Fatalf("%s's sync still shows the room in %s", c.userID, section)
				}
			}
			// They were moved to the new room, with the message.
			if !strings.Contains(s.Get("rooms.join."+strings.ReplaceAll(newRoom, ".", `\.`)+".timeline").Raw, "Moved") {
				t.Fatalf("%s's sync lacks the new room: %s", c.userID, s.Get("rooms").Raw)
			}
		}
		st, r := bob.do("POST", v3+"/join/"+admEsc(room), nil)
		wantErr(t, "joining a blocked room", st, r, 403, "M_FORBIDDEN")
		st, r = bob.do("GET", v3+"/directory/room/"+admEsc("#doomed:test.local"), nil)
		if st == 200 && r.Get("room_id").Str == room {
			t.Fatalf("alias still points at the room: %s", r.Raw)
		}
		if b := admin.must("GET", adminV+"/v1/rooms/"+admEsc(room)+"/block", nil); !b.Get("block").Bool() || b.Get("user_id").Str != admin.userID {
			t.Fatalf("block: %s", b.Raw)
		}
		st, r = admin.do("GET", adminV+"/v1/rooms/"+admEsc(room), nil)
		wantErr(t, "deleted room", st, r, 404, "M_NOT_FOUND")

		// Without purge the room stays, empty of local users; unblocked,
		// users may come back.
		other := alice.must("POST", v3+"/createRoom", map[string]any{"preset": "public_chat"}).Get("room_id").Str
		bob.must("POST", v3+"/join/"+admEsc(other), nil)
		admin.must("DELETE", adminV+"/v1/rooms/"+admEsc(other), map[string]any{"purge": false, "block": true})
		if got := admin.must("GET", adminV+"/v1/rooms/"+admEsc(other), nil); got.Get("joined_members").Int() != 0 || got.Get("public").Bool() {
			t.Fatalf("shut down room: %s", got.Raw)
		}
		st, r = bob.do("POST", v3+"/join/"+admEsc(other), nil)
		wantErr(t, "joining a blocked room", st, r, 403, "M_FORBIDDEN")
		admin.must("PUT", adminV+"/v1/rooms/"+admEsc(other)+"/block", map[string]any{"block": false})
		bob.must("POST", v3+"/join/"+admEsc(other), nil)

		// The v2 form runs in the background.
		third := alice.must("POST", v3+"/createRoom", map[string]any{}).Get("room_id").Str
		id := admin.must("DELETE", adminV+"/v2/rooms/"+admEsc(third), map[string]any{}).Get("delete_id").Str
		admWaitFor(t, "the deletion", func() bool {
			return admin.must("GET", adminV+"/v2/rooms/delete_status/"+id, nil).Get("status").Str == "complete"
		})
		if r := admin.must("GET", adminV+"/v2/rooms/"+admEsc(third)+"/delete_status", nil); r.Get("results.0.delete_id").Str != id ||
			!strings.Contains(r.Get("results.0.shutdown_room.kicked_users").Raw, alice.userID) {
			t.Fatalf("room delete status: %s", r.Raw)
		}
		if st, _ := admin.do("GET", adminV+"/v1/rooms/"+admEsc(third), nil); st != 404 {
			t.Fatalf("v2-deleted room: %d", st)
		}
	})
}

// Server notices: the user is invited (and cannot reject) to a room of
// the system user tagged m.server_notice; later notices use the same
// room, even after the user left it.
func TestServerNotice(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		admin := ts.admRegisterAdmin("admin")
		alice := ts.register("alice")
		notice := func(body string) string {
			t.Helper()
			return admin.must("POST", adminV+"/v1/send_server_notice", map[string]any{"user_id": alice.userID,
				"content": map[string]any{"msgtype": "m.text", "body": body}}).Get("event_id").Str
		}
		first := notice("Maintenance tonight")
		if first == "" {
			t.Fatal("no event ID")
		}
		s := admSync(alice)
		var room string
		for id, r := range s.Get("rooms.invite").Map() {
			room = id
			if !strings.Contains(r.Raw, "@server:test.local") || !strings.Contains(r.Raw, "Server Notices") {
				t.Fatalf("invite: %s", r.Raw)
			}
		}
		if room == "" {
			t.Fatalf("no invite: %s", s.Get("rooms").Raw)
		}
		st, r := alice.do("POST", v3+"/rooms/"+admEsc(room)+"/leave", map[string]any{})
		wantErr(t, "rejecting the notices invite", st, r, 403, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM")
		alice.must("POST", v3+"/join/"+admEsc(room), nil)
		s = admSync(alice)
		jr := s.Get("rooms.join." + strings.ReplaceAll(room, ".", `\.`))
		if !strings.Contains(jr.Get("timeline").Raw, "Maintenance tonight") {
			t.Fatalf("notice not in the timeline: %s", jr.Raw)
		}
		tagged := false
		for _, ev := range jr.Get("account_data.events").Array() {
			if ev.Get("type").Str == "m.tag" && ev.Get("content.tags.m\\.server_notice").Exists() {
				tagged = true
			}
		}
		if !tagged {
			t.Fatalf("room not tagged m.server_notice: %s", jr.Get("account_data").Raw)
		}
		// Users cannot write there.
		if st, _, _ := alice.try("PUT", v3+"/rooms/"+admEsc(room)+"/send/m.room.message/x1", map[string]any{"msgtype": "m.text", "body": "hi"}); st != 403 {
			t.Fatalf("alice wrote in the notices room: %d", st)
		}
		second := notice("Done")
		if got := alice.must("GET", v3+"/rooms/"+admEsc(room)+"/event/"+admEsc(second), nil); got.Get("room_id").Str != room {
			t.Fatalf("second notice in another room: %s", got.Raw)
		}
		// Having left, the user is invited back to the same room.
		alice.must("POST", v3+"/rooms/"+admEsc(room)+"/leave", map[string]any{})
		notice("Again")
		if !admSync(alice).Get("rooms.invite." + strings.ReplaceAll(room, ".", `\.`)).Exists() {
			t.Fatal("not invited back to the notices room")
		}
		st, r = admin.do("POST", adminV+"/v1/send_server_notice", map[string]any{"user_id": "@nobody:test.local", "content": map[string]any{"body": "x"}})
		wantErr(t, "unknown user", st, r, 404, "M_NOT_FOUND")
		// The system user cannot log in.
		if st, _ := ts.admLogin("server", "", "S"); st == 200 {
			t.Fatal("the system user logged in")
		}
	})
}

func admBodies(evs []gjson.Result) []string {
	var out []string
	for _, e := range evs {
		if e.Get("type").Str == "m.room.message" {
			out = append(out, e.Get("content.body").Str)
		}
	}
	return out
}

// Purging history: older messages go, the room's state stays whole, and
// /messages pages back to the purge point and stops there.
func TestPurgeHistory(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		admin := ts.admRegisterAdmin("admin")
		alice, bob := ts.register("alice"), ts.register("bob")
		room := alice.must("POST", v3+"/createRoom", map[string]any{"preset": "public_chat", "name": "History"}).Get("room_id").Str
		bob.must("POST", v3+"/join/"+admEsc(room), nil)
		var ids []string
		for i := 1; i <= 8; i++ {
			ids = append(ids, alice.send(room, fmt.Sprintf("m%d", i)))
			time.Sleep(2 * time.Millisecond)
		}
		upTo := eventTS(alice, room, ids[4]) + 1 // m5 is the latest before: it stays
		purge := func(body map[string]any) {
			t.Helper()
			id := admin.must("POST", adminV+"/v1/purge_history/"+admEsc(room), body).Get("purge_id").Str
			admWaitFor(t, "the purge", func() bool {
				st := admin.must("GET", adminV+"/v1/purge_history_status/"+id, nil).Get("status").Str
				if st == "failed" {
					t.Fatal("purge failed")
				}
				return st == "complete"
			})
		}
		// By default local users' messages are kept.
		purge(map[string]any{"purge_up_to_ts": upTo})
		if got := admBodies(paginateAll(t, bob, room, 3)); len(got) != 8 {
			t.Fatalf("local messages purged without delete_local_events: %v", got)
		}
		purge(map[string]any{"purge_up_to_ts": upTo, "delete_local_events": true})
		all := paginateAll(t, bob, room, 3)
		if got := fmt.Sprint(admBodies(all)); got != "[m5 m6 m7 m8]" {
			t.Fatalf("after purge: %v", got)
		}
		for _, e := range all {
			if e.Get("type").Str != "m.room.message" {
				t.Fatalf("state from before the purge point in the timeline: %s", e.Raw)
			}
		}
		if st, _ := bob.do("GET", v3+"/rooms/"+admEsc(room)+"/event/"+admEsc(ids[1]), nil); st != 404 {
			t.Fatalf("purged event still served: %d", st)
		}
		// Current state intact; the room works.
		for _, k := range [][2]string{{"m.room.create", ""}, {"m.room.power_levels", ""}, {"m.room.join_rules", ""}, {"m.room.name", ""},
			{"m.room.member", alice.userID}, {"m.room.member", bob.userID}} {
			bob.must("GET", v3+"/rooms/"+admEsc(room)+"/state/"+k[0]+"/"+admEsc(k[1]), nil)
		}
		bob.send(room, "after")
		s := admSync(bob).Get("rooms.join." + strings.ReplaceAll(room, ".", `\.`))
		if tl := fmt.Sprint(admBodies(s.Get("timeline.events").Array())); strings.Contains(tl, "m1") || !strings.Contains(tl, "after") {
			t.Fatalf("sync timeline after purge: %s", tl)
		}
		for _, e := range s.Get("timeline.events").Array() {
			if e.Get("type").Str != "m.room.message" {
				t.Fatalf("state from before the purge point in the sync timeline: %s", e.Raw)
			}
		}
		// Paging from the sync's prev_batch ends at the purge point too.
		from := s.Get("timeline.prev_batch").Str
		res := bob.must("GET", v3+"/rooms/"+admEsc(room)+"/messages?dir=b&limit=50&from="+url.QueryEscape(from), nil)
		if got := admBodies(res.Get("chunk").Array()); len(got) > 0 && got[len(got)-1] == "m4" {
			t.Fatalf("paged past the purge point: %v", got)
		}
		if res.Get("end").Exists() {
			res = bob.must("GET", v3+"/rooms/"+admEsc(room)+"/messages?dir=b&limit=50&from="+url.QueryEscape(res.Get("end").Str), nil)
			if res.Get("chunk.#").Int() != 0 || res.Get("end").Exists() {
				t.Fatalf("page after the last: %s", res.Raw)
			}
		}
		// Up to an event: it stays.
		purge(map[string]any{"purge_up_to_event_id": ids[6], "delete_local_events": true})
		if got := fmt.Sprint(admBodies(paginateAll(t, bob, room, 2))); got != "[m7 m8 after]" {
			t.Fatalf("after the second purge: %v", got)
		}
		st, r := admin.do("GET", adminV+"/v1/purge_history_status/nope", nil)
		wantErr(t, "unknown purge", st, r, 404, "M_NOT_FOUND")
		st, r = admin.do("POST", adminV+"/v1/purge_history/"+admEsc(room), map[string]any{"purge_up_to_ts": 1})
		wantErr(t, "nothing to purge", st, r, 400, "M_UNKNOWN")
	})
}

// Event reports are listed newest first with the room's and event's
// details.
func TestAdminEventReports(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		admin := ts.admRegisterAdmin("admin")
		alice, bob := ts.register("alice"), ts.register("bob")
		room := alice.must("POST", v3+"/createRoom", map[string]any{"preset": "public_chat", "name": "Reports"}).Get("room_id").Str
		bob.must("POST", v3+"/join/"+admEsc(room), nil)
		var evs []string
		for i := 0; i < 3; i++ {
			evs = append(evs, alice.send(room, fmt.Sprintf("spam %d", i)))
			bob.must("POST", v3+"/rooms/"+admEsc(room)+"/report/"+admEsc(evs[i]), map[string]any{"reason": fmt.Sprintf("r%d", i), "score": -100})
		}
		res := admin.must("GET", adminV+"/v1/event_reports?limit=2", nil)
		if res.Get("total").Int() != 3 || res.Get("next_token").Int() != 2 || res.Get("event_reports.#").Int() != 2 {
			t.Fatalf("reports: %s", res.Raw)
		}
		r := res.Get("event_reports.0")
		if r.Get("event_id").Str != evs[2] || r.Get("user_id").Str != bob.userID || r.Get("sender").Str != alice.userID ||
			r.Get("name").Str != "Reports" || r.Get("reason").Str != "r2" || r.Get("score").Int() != -100 || r.Get("room_id").Str != room {
			t.Fatalf("report: %s", r.Raw)
		}
		res = admin.must("GET", adminV+"/v1/event_reports?from=2", nil)
		if res.Get("event_reports.#").Int() != 1 || res.Get("next_token").Exists() {
			t.Fatalf("last page: %s", res.Raw)
		}
		one := admin.must("GET", adminV+"/v1/event_reports/"+res.Get("event_reports.0.id").String(), nil)
		if one.Get("event_json.content.body").Str != "spam 0" {
			t.Fatalf("one report: %s", one.Raw)
		}
	})
}

// cliConfig writes cfg where the console commands can read it.
func admCLIConfig(t *testing.T, cfg *config.Config) string {
	t.Helper()
	b, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(cfg.Dir, "cli.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// cli runs a repeater subcommand and returns its exit code and output.
func admCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String() + errb.String()
}

func admMustCLI(t *testing.T, args ...string) string {
	t.Helper()
	code, out := admCLI(t, args...)
	if code != 0 {
		t.Fatalf("repeater %s: exit %d: %s", strings.Join(args, " "), code, out)
	}
	return out
}

// The console commands, on the database of a stopped server.
func TestAdminCLI(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		path := admCLIConfig(t, cfg)
		ts := startTestServer(t, cfg)
		alice, bob, carol := ts.register("alice"), ts.register("bob"), ts.register("carol")
		room := sharedRoom(alice, bob)
		carol.must("POST", v3+"/join/"+admEsc(room), nil)
		var old []string
		for i := 0; i < 3; i++ {
			old = append(old, alice.send(room, fmt.Sprintf("old %d", i)))
		}
		cutoff := eventTS(alice, room, old[2]) + 1
		time.Sleep(5 * time.Millisecond)
		alice.send(room, "new")
		doomed := alice.must("POST", v3+"/createRoom", map[string]any{"preset": "public_chat", "name": "Doomed"}).Get("room_id").Str
		bob.must("POST", v3+"/join/"+admEsc(doomed), nil)

		// Mutating commands refuse while the server holds its address.
		busy := *cfg
		busy.Listen = ts.srv.addrs()[0]
		if code, out := admCLI(t, "users", "deactivate", "--config", admCLIConfig(t, &busy), carol.userID); code != 1 || !strings.Contains(out, "seems to be running") {
			t.Fatalf("deactivate next to a running server: %d %s", code, out)
		}
		admCLIConfig(t, cfg)
		ts.stop()

		admMustCLI(t, "create-account", "--config", path, "--username", "root", "--password", "pw-root", "--admin")
		admMustCLI(t, "set-admin", "--config", path, "--username", "alice")
		admMustCLI(t, "set-admin", "--config", path, "--username", "@alice:test.local", "--off")
		admMustCLI(t, "set-admin", "--config", path, "--username", "bob")
		if code, out := admCLI(t, "set-admin", "--config", path, "--username", "nobody"); code != 1 || !strings.Contains(out, "no user") {
			t.Fatalf("set-admin nobody: %d %s", code, out)
		}
		out := admMustCLI(t, "users", "list", "--config", path)
		for _, want := range []string{"@alice:test.local", "@bob:test.local", "@root:test.local"} {
			if !strings.Contains(out, want) {
				t.Fatalf("users list lacks %s: %s", want, out)
			}
		}
		if out := admMustCLI(t, "users", "devices", "--config", path, "alice"); !strings.Contains(out, "127.0.0.1") {
			t.Fatalf("devices: %s", out)
		}
		admMustCLI(t, "users", "reset-password", "--config", path, "--username", "alice", "--password", "newpw")
		admMustCLI(t, "users", "deactivate", carol.userID, "--config", path)
		if out := admMustCLI(t, "rooms", "list", "--config", path); !strings.Contains(out, room) || !strings.Contains(out, "Doomed") {
			t.Fatalf("rooms list: %s", out)
		}
		if out := admMustCLI(t, "purge-history", "--config", path, "--before", fmt.Sprint(cutoff), room); !strings.Contains(out, "purged 2 events") {
			t.Fatalf("purge-history: %s", out)
		}
		if code, out := admCLI(t, "purge-history", "--config", path, "--before", "yesterday", room); code != 1 || !strings.Contains(out, "not a date") {
			t.Fatalf("bad date: %d %s", code, out)
		}
		admMustCLI(t, "rooms", "delete", "--config", path, "--purge", "--block", doomed)
		if out := admMustCLI(t, "server-notice", "--config", path, "--user", "bob", "Hello", "Bob"); !strings.Contains(out, "sent $") {
			t.Fatalf("server-notice: %s", out)
		}
		if out := admMustCLI(t, "server-notice", "--config", path, "--all", "To everyone"); !strings.Contains(out, "sent to 3 users (0 failed)") {
			t.Fatalf("broadcast: %s", out) // alice, bob, root (carol is deactivated)
		}
		if code, _ := admCLI(t, "users", "frobnicate", "--config", path); code != 2 {
			t.Fatalf("unknown users subcommand: %d", code)
		}

		// A new server on the same database sees it all.
		ts = startTestServer(t, cfg)
		if st, _ := ts.admLogin("alice", "pw-alice", "A9"); st != 403 {
			t.Fatalf("alice's old password: %d", st)
		}
		st, alice2 := ts.admLogin("alice", "newpw", "A9")
		if st != 200 {
			t.Fatalf("alice's new password: %d", st)
		}
		if st, _ := alice2.do("GET", adminV+"/v2/users", nil); st != 403 {
			t.Fatalf("alice's admin rights were not removed: %d", st)
		}
		_, root := ts.admLogin("root", "pw-root", "R")
		root.must("GET", adminV+"/v2/users", nil)
		_, bob2 := ts.admLogin("bob", "pw-bob", "B9")
		bob2.must("GET", adminV+"/v1/rooms", nil) // bob was made an admin
		if st, _ := ts.admLogin("carol", "pw-carol", "C9"); st != 403 {
			t.Fatalf("deactivated carol logs in: %d", st)
		}
		if got := fmt.Sprint(admBodies(paginateAll(t, alice2, room, 5))); got != "[old 2 new]" {
			t.Fatalf("history after purge-history: %s", got)
		}
		st, r := bob2.do("POST", v3+"/join/"+admEsc(doomed), nil)
		wantErr(t, "joining the deleted room", st, r, 403, "M_FORBIDDEN")
		s := admSync(bob2)
		invites := s.Get("rooms.invite").Map()
		if len(invites) != 1 {
			t.Fatalf("bob's notice invites: %s", s.Get("rooms").Raw)
		}
		for id := range invites {
			bob2.must("POST", v3+"/join/"+admEsc(id), nil)
			tl := admSync(bob2).Get("rooms.join." + strings.ReplaceAll(id, ".", `\.`) + ".timeline").Raw
			if !strings.Contains(tl, "Hello Bob") || !strings.Contains(tl, "To everyone") {
				t.Fatalf("bob's notices: %s", tl)
			}
		}
	})
}

// Deleting a room other servers are in: they hear that the local users
// left before this server forgets the room.
func TestAdminDeleteFederatedRoom(t *testing.T) {
	servers := fedNet(t, 2)
	admin := servers[0].admRegisterAdmin("admin")
	alice, bob := servers[0].register("alice"), servers[1].register("bob")
	room := alice.must("POST", v3+"/createRoom", map[string]any{"preset": "public_chat"}).Get("room_id").Str
	bob.must("POST", v3+"/join/"+admEsc(room)+"?server_name=s0.test", map[string]any{})
	res := admin.must("DELETE", adminV+"/v1/rooms/"+admEsc(room), map[string]any{"purge": true})
	if !strings.Contains(res.Get("kicked_users").Raw, alice.userID) {
		t.Fatalf("delete: %s", res.Raw)
	}
	eventually(t, "alice's leave on s1", func() bool {
		st, m := bob.do("GET", v3+"/rooms/"+admEsc(room)+"/state/m.room.member/"+admEsc(alice.userID), nil)
		return st == 200 && m.Get("membership").Str == "leave"
	})
	if _, err := servers[0].srv.db.GetRoom(context.Background(), room); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("room still on s0: %v", err)
	}
}
