package federationapi

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"repeater/internal/httputil"
	"repeater/internal/part97"
)

// originHeader names the sending server on a request that carries no
// X-Matrix signature (the amateur-radio mode's unsigned option). It is a
// claim, believed only from trusted peers (part97.trusted_peers).
const originHeader = "Part97-Origin"

// meshVerifier is the signature checker in the amateur-radio mode: JSON
// that carries no signature of the server it should be signed by is
// accepted when it came through a trusted relay (the context's
// part97.Relay: the peer that pushed it or that we fetched it from);
// everything else, including whatever is signed, goes to the key ring as
// usual. A trusted peer that signs is still checked, so a signature that
// does not verify is refused whoever relayed it.
type meshVerifier struct {
	next   gomatrixserverlib.JSONVerifier
	policy *part97.Policy
}

func (v meshVerifier) VerifyJSONs(ctx context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	trusted := v.policy.TrustedRelay(part97.RelayFrom(ctx))
	out := make([]gomatrixserverlib.VerifyJSONResult, len(reqs))
	var rest []gomatrixserverlib.VerifyJSONRequest
	var idx []int
	for i, r := range reqs {
		if trusted && !gjson.GetBytes(r.Message, "signatures."+gjson.Escape(string(r.ServerName))).Exists() {
			continue // unsigned, from a trusted peer: accepted
		}
		rest = append(rest, r)
		idx = append(idx, i)
	}
	if len(rest) == 0 {
		return out, nil
	}
	res, err := v.next.VerifyJSONs(ctx, rest)
	if err != nil {
		return nil, err
	}
	for j, i := range idx {
		out[i] = res[j]
	}
	return out, nil
}

// from marks ctx as fetching from srv: events verified in it came through
// srv (trusted or not), and the transport records srv's address.
func (a *API) from(ctx context.Context, srv spec.ServerName) context.Context {
	if !a.policy.On() {
		return ctx
	}
	return part97.WithRelay(ctx, string(srv), "")
}

// verifyRequest authenticates an inbound federation request (spec:
// "Request Authentication") and returns its origin and body. In the
// amateur-radio mode a trusted peer may instead name itself in the
// Part97-Origin header with no signature. The returned request's context
// carries the relay (origin and remote address) in the mode.
func (a *API) verifyRequest(r *http.Request) (*http.Request, spec.ServerName, []byte, error) {
	r.Body = http.MaxBytesReader(nil, r.Body, maxRequestBody)
	if a.policy.On() {
		claimed := r.Header.Get(originHeader)
		if r.Header.Get("Authorization") == "" && claimed != "" {
			rel := &part97.Relay{Server: claimed}
			rel.SetAddr(r.RemoteAddr)
			if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(claimed)); !ok || !a.policy.TrustedRelay(rel) {
				return nil, "", nil, httputil.Err(401, "M_UNAUTHORIZED", "Unsigned requests are accepted only from trusted mesh peers (part97.trusted_peers)")
			}
			body, err := io.ReadAll(r.Body)
			if err != nil {
				return nil, "", nil, httputil.Err(413, "M_TOO_LARGE", "Request body too large")
			}
			if len(body) > 0 && !gjson.ValidBytes(body) {
				return nil, "", nil, httputil.NotJSON("Body is not JSON")
			}
			return r.WithContext(part97.WithRelay(r.Context(), claimed, r.RemoteAddr)), spec.ServerName(claimed), body, nil
		}
	}
	fr, resp := fclient.VerifyHTTPRequest(r, time.Now(), a.serverName, a.isLocal, a.verifier)
	if fr == nil {
		msg := "Invalid request signature"
		if m, ok := resp.JSON.(map[string]any); ok {
			if s, ok := m["message"].(string); ok {
				msg = s
			}
		} else if m, ok := resp.JSON.(struct {
			Message string `json:"message"`
		}); ok && m.Message != "" {
			msg = m.Message
		}
		if resp.Code == http.StatusBadRequest {
			return nil, "", nil, httputil.Err(400, "M_BAD_JSON", msg)
		}
		return nil, "", nil, httputil.Err(401, "M_UNAUTHORIZED", msg)
	}
	if a.policy.On() {
		r = r.WithContext(part97.WithRelay(r.Context(), string(fr.Origin()), r.RemoteAddr))
	}
	return r, fr.Origin(), fr.Content(), nil
}

// build builds and signs an event of ours from a template another server
// made (joins, leaves, knocks); with the mode's unsigned option it carries
// no signature.
func (a *API) build(impl gomatrixserverlib.IRoomVersion, pe *gomatrixserverlib.ProtoEvent) (gomatrixserverlib.PDU, error) {
	pdu, err := impl.NewEventBuilderFromProtoEvent(pe).Build(time.Now(), a.serverName, a.keyID, a.privateKey)
	if err != nil {
		return nil, err
	}
	return a.policy.Finish(pdu)
}
