package federationapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/httputil"
	"repeater/storage"
)

// keyValidity is how long our published key response is valid for.
const keyValidity = 7 * 24 * time.Hour

// serverKeys handles GET /_matrix/key/v2/server (spec: "Publishing Keys"):
// our current verify key, signed by itself.
func (a *API) serverKeys(r *http.Request) (any, error) {
	return json.RawMessage(a.ownKeys(time.Now())), nil
}

func (a *API) ownKeys(now time.Time) []byte {
	fields := gomatrixserverlib.ServerKeyFields{
		ServerName:    a.serverName,
		VerifyKeys:    map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{a.keyID: {Key: spec.Base64Bytes(a.publicKey)}},
		ValidUntilTS:  spec.AsTimestamp(now.Add(keyValidity)),
		OldVerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{},
	}
	for id, old := range a.oldKeys {
		fields.OldVerifyKeys[id] = old
	}
	raw, _ := json.Marshal(fields)
	signed, err := gomatrixserverlib.SignJSON(string(a.serverName), a.keyID, a.privateKey, raw)
	if err != nil {
		return raw
	}
	return signed
}

// keyQuery handles POST /_matrix/key/v2/query and GET
// /_matrix/key/v2/query/{serverName} (spec: "Querying Keys Through Another
// Server"): the keys we hold or can fetch, each response as its server
// signed it, countersigned by us.
func (a *API) keyQuery(r *http.Request) (any, error) {
	want := map[spec.ServerName]map[gomatrixserverlib.KeyID]spec.Timestamp{}
	if name := httputil.Vars(r)["serverName"]; name != "" {
		want[spec.ServerName(name)] = nil
	} else {
		body, err := httputil.ReadBody(r, httputil.MaxBody, false)
		if err != nil {
			return nil, err
		}
		sk := gjson.GetBytes(body, "server_keys")
		if !sk.IsObject() {
			return nil, httputil.BadJSON("server_keys must be an object")
		}
		sk.ForEach(func(srv, ids gjson.Result) bool {
			m := map[gomatrixserverlib.KeyID]spec.Timestamp{}
			ids.ForEach(func(id, crit gjson.Result) bool {
				m[gomatrixserverlib.KeyID(id.Str)] = spec.Timestamp(crit.Get("minimum_valid_until_ts").Int())
				return true
			})
			want[spec.ServerName(srv.Str)] = m
			return true
		})
	}
	out := []json.RawMessage{}
	for srv, ids := range want {
		if srv == a.serverName {
			out = append(out, a.ownKeys(time.Now()))
			continue
		}
		// Fetch what we lack through the key ring, then answer from the
		// cache (a response we re-sign: spec allows a notary to sign the
		// keys it vouches for).
		if len(ids) > 0 {
			reqs := map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{}
			for id, ts := range ids {
				reqs[gomatrixserverlib.PublicKeyLookupRequest{ServerName: srv, KeyID: id}] = max(ts, spec.AsTimestamp(time.Now()))
			}
			ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
			_, _ = a.keyRing.KeyDatabase.FetchKeys(ctx, reqs)
			for _, f := range a.keyRing.KeyFetchers {
				if res, err := f.FetchKeys(ctx, reqs); err == nil && len(res) > 0 {
					_ = a.keyRing.KeyDatabase.StoreKeys(ctx, res)
					break
				}
			}
			cancel()
		}
		keys, err := a.db.ServerKeys(r.Context(), string(srv))
		if err != nil || len(keys) == 0 {
			continue
		}
		fields := gomatrixserverlib.ServerKeyFields{ServerName: srv,
			VerifyKeys:    map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{},
			OldVerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{}}
		for _, k := range keys {
			pub, err := base64.RawStdEncoding.DecodeString(k.PublicKey)
			if err != nil {
				continue
			}
			if k.ExpiredTS != 0 {
				fields.OldVerifyKeys[gomatrixserverlib.KeyID(k.KeyID)] = gomatrixserverlib.OldVerifyKey{VerifyKey: gomatrixserverlib.VerifyKey{Key: pub}, ExpiredTS: spec.Timestamp(k.ExpiredTS)}
			} else {
				fields.VerifyKeys[gomatrixserverlib.KeyID(k.KeyID)] = gomatrixserverlib.VerifyKey{Key: pub}
				fields.ValidUntilTS = max(fields.ValidUntilTS, spec.Timestamp(k.ValidUntilTS))
			}
		}
		raw, _ := json.Marshal(fields)
		if signed, err := gomatrixserverlib.SignJSON(string(a.serverName), a.keyID, a.privateKey, raw); err == nil {
			out = append(out, signed)
		}
	}
	return map[string]any{"server_keys": out}, nil
}

// keyDB is the key ring's cache, in the database (table server_keys), with
// the keys last read held in memory (every signature check asks).
type keyDB struct {
	db  *storage.DB
	mem *sync.Map // PublicKeyLookupRequest -> PublicKeyLookupResult
}

func (k keyDB) FetcherName() string { return "database" }

func (k keyDB) FetchKeys(ctx context.Context, reqs map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	out := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	// From memory when the cached key is good for the time asked about.
	now := spec.AsTimestamp(time.Now())
	missing := map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{}
	for req, ts := range reqs {
		if v, ok := k.mem.Load(req); ok {
			res := v.(gomatrixserverlib.PublicKeyLookupResult)
			if (res.ExpiredTS != gomatrixserverlib.PublicKeyNotExpired) || (res.ValidUntilTS > now && res.ValidUntilTS >= ts) {
				out[req] = res
				continue
			}
		}
		missing[req] = ts
	}
	reqs = missing
	byServer := map[spec.ServerName][]storage.ServerKey{}
	for req := range reqs {
		keys, ok := byServer[req.ServerName]
		if !ok {
			var err error
			if keys, err = k.db.ServerKeys(ctx, string(req.ServerName)); err != nil {
				return nil, err
			}
			byServer[req.ServerName] = keys
		}
		for _, key := range keys {
			if key.KeyID != string(req.KeyID) {
				continue
			}
			pub, err := base64.RawStdEncoding.DecodeString(key.PublicKey)
			if err != nil {
				continue
			}
			res := gomatrixserverlib.PublicKeyLookupResult{VerifyKey: gomatrixserverlib.VerifyKey{Key: pub},
				ExpiredTS: spec.Timestamp(key.ExpiredTS), ValidUntilTS: spec.Timestamp(key.ValidUntilTS)}
			out[req] = res
			k.mem.Store(req, res)
		}
	}
	return out, nil
}

func (k keyDB) StoreKeys(ctx context.Context, res map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) error {
	keys := make([]storage.ServerKey, 0, len(res))
	for req, r := range res {
		keys = append(keys, storage.ServerKey{ServerName: string(req.ServerName), KeyID: string(req.KeyID),
			PublicKey: base64.RawStdEncoding.EncodeToString(r.Key), ValidUntilTS: int64(r.ValidUntilTS), ExpiredTS: int64(r.ExpiredTS)})
	}
	if len(keys) == 0 {
		return nil
	}
	for req := range res {
		k.mem.Delete(req) // re-read: the database keeps the later validity
	}
	return k.db.StoreServerKeys(ctx, keys)
}
