package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/config"
)

// The server publishes its key signed by itself, with retired keys as
// old_verify_keys, directly and through the notary endpoint.
func TestServerKeys(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		oldPub, _, _ := ed25519.GenerateKey(nil)
		cfg.Federation.OldVerifyKeys = []config.OldKey{{KeyID: "ed25519:old", PublicKey: base64.RawStdEncoding.EncodeToString(oldPub), ExpiredTS: 1700000000000}}
		ts := startTestServer(t, cfg)
		get := func(path string) []byte {
			resp, err := http.Get(ts.base + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 {
				t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
			}
			return b
		}
		raw := get("/_matrix/key/v2/server")
		var keys gomatrixserverlib.ServerKeys
		keys.Raw = raw
		if err := json.Unmarshal(raw, &keys.ServerKeyFields); err != nil {
			t.Fatal(err)
		}
		checks, _ := gomatrixserverlib.CheckKeys(spec.ServerName(cfg.ServerName), time.Now(), keys)
		if !checks.AllChecksOK {
			t.Fatalf("published keys fail the spec's checks: %+v\n%s", checks, raw)
		}
		if gjson.GetBytes(raw, `old_verify_keys.ed25519:old.key`).Str != base64.RawStdEncoding.EncodeToString(oldPub) ||
			gjson.GetBytes(raw, `old_verify_keys.ed25519:old.expired_ts`).Int() != 1700000000000 {
			t.Fatalf("old_verify_keys: %s", raw)
		}
		notary := get("/_matrix/key/v2/query/" + cfg.ServerName)
		if gjson.GetBytes(notary, "server_keys.0.server_name").Str != cfg.ServerName {
			t.Fatalf("notary answer: %s", notary)
		}
	})
}

// An OpenID token proves the user's identity to a third party that asks
// the user's server over federation, until it expires.
func TestOpenID(t *testing.T) {
	eachDialect(t, func(t *testing.T, cfg *config.Config) {
		ts := startTestServer(t, cfg)
		alice := ts.register("alice")
		tok := alice.must("POST", "/_matrix/client/v3/user/"+url.PathEscape(alice.userID)+"/openid/request_token", map[string]any{})
		if tok.Get("token_type").Str != "Bearer" || tok.Get("matrix_server_name").Str != cfg.ServerName || tok.Get("expires_in").Int() <= 0 {
			t.Fatalf("token: %s", tok.Raw)
		}
		anon := &client{t: t, base: ts.base}
		info := anon.must("GET", "/_matrix/federation/v1/openid/userinfo?access_token="+url.QueryEscape(tok.Get("access_token").Str), nil)
		if info.Get("sub").Str != alice.userID {
			t.Fatalf("userinfo: %s", info.Raw)
		}
		for _, q := range []string{"", "?access_token=nope"} {
			if st, res := anon.do("GET", "/_matrix/federation/v1/openid/userinfo"+q, nil); st != 401 || res.Get("errcode").Str != "M_UNKNOWN_TOKEN" {
				t.Fatalf("userinfo%s: %d %s", q, st, res.Raw)
			}
		}
	})
}
