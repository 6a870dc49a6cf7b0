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
// With the amateur-radio mode's unsigned option the document goes
// unsigned too: this server signs nothing, and peers on the mesh read only
// its server_name (discovery) from it.
func (a *API) serverKeys(r *http.Request) (any, error) {
	return json.RawMessage(a.ownKeys(time.Now(), !a.policy.Unsigned())), nil
}

func (a *API) ownKeys(now time.Time, sign bool) []byte {
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
	if !sign {
		return raw
	}
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
		if id := httputil.Vars(r)["keyId"]; id != "" { // the older form naming one key
			want[spec.ServerName(name)] = map[gomatrixserverlib.KeyID]spec.Timestamp{gomatrixserverlib.KeyID(id): 0}
		}
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
			out = append(out, a.ownKeys(time.Now(), true))
			continue
		}
		out = append(out, a.notaryKeys(r.Context(), srv, ids)...)
	}
	return map[string]any{"server_keys": out}, nil
}

// notaryKeys answers a notary query for one server: the server's own
// signed key responses, with our signature added. A response we hold that
// covers the wanted key IDs until the wanted time is served as is; other
// wants go to the server first. What the server says never replaces a
// response we hold for a key it no longer lists, and if it cannot be
// reached we serve what we have, even expired (spec: "Querying Keys
// Through Another Server").
func (a *API) notaryKeys(ctx context.Context, srv spec.ServerName, ids map[gomatrixserverlib.KeyID]spec.Timestamp) []json.RawMessage {
	held, _ := a.db.KeyResponses(ctx, string(srv))
	fresh := len(ids) == 0 || len(held) == 0
	for id, minTS := range ids {
		// Valid until what the asker needs, or now when it does not say.
		need := int64(minTS)
		if need == 0 {
			need = time.Now().UnixMilli()
		}
		found := false
		for _, h := range held {
			if h.KeyID == string(id) && h.ValidUntilTS >= need {
				found = true
			}
		}
		fresh = fresh || !found
	}
	if fresh {
		fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		keys, err := a.client.GetServerKeys(fctx, srv)
		cancel()
		if err == nil {
			if checks, _ := gomatrixserverlib.CheckKeys(srv, time.Now(), keys); checks.AllChecksOK || (checks.MatchingServerName && checks.AllEd25519ChecksOK != nil && *checks.AllEd25519ChecksOK) {
				var keyIDs []string
				for id := range keys.VerifyKeys {
					keyIDs = append(keyIDs, string(id))
				}
				for id := range keys.OldVerifyKeys {
					keyIDs = append(keyIDs, string(id))
				}
				if err := a.db.StoreKeyResponse(ctx, string(srv), keyIDs, keys.Raw, int64(keys.ValidUntilTS)); err == nil {
					held, _ = a.db.KeyResponses(ctx, string(srv))
				}
			}
		}
	}
	// One copy of each distinct response that holds a wanted key (all of
	// them when no key is named), signed by us too.
	seen := map[string]bool{}
	var out []json.RawMessage
	for _, h := range held {
		if _, wanted := ids[gomatrixserverlib.KeyID(h.KeyID)]; len(ids) > 0 && !wanted {
			continue
		}
		if seen[string(h.Response)] {
			continue
		}
		seen[string(h.Response)] = true
		if signed, err := gomatrixserverlib.SignJSON(string(a.serverName), a.keyID, a.privateKey, h.Response); err == nil {
			out = append(out, signed)
		}
	}
	return out
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
