package federationapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"repeater/internal/httputil"
)

// Media over federation: the media API serves and fetches the bytes; this
// file gives it signed requests out and request authentication in.

// ServerAuth wraps h so that it runs only for a request with a valid
// X-Matrix signature (spec: "Request Authentication"), with the requesting
// server's name; for endpoints another package serves over federation
// (media, whose answers are not JSON).
func (a *API) ServerAuth(h func(w http.ResponseWriter, r *http.Request, origin string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vr, origin, _, err := a.verifyRequest(r)
		if err != nil {
			httputil.WriteError(w, r, a.log, err)
			return
		}
		a.Sender.wake(string(origin))
		h(w, vr, string(origin))
	})
}

// MediaFetcher makes the media API's requests to other servers.
type MediaFetcher struct {
	a   *API
	fed *http.Client // matrix://server/... through the federation transport
	web *http.Client // URLs a server redirected us to
}

// NewMediaFetcher returns the media API's client of other servers. It has
// the federation transport and no overall timeout (a large file on a slow link
// takes long; the caller's context bounds it), and follows no redirects
// itself.
func NewMediaFetcher(a *API) (*MediaFetcher, error) {
	tr := a.tr
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &MediaFetcher{
		a:   a,
		fed: &http.Client{Transport: tr, CheckRedirect: noRedirect},
		// Redirect targets are arbitrary URLs: connect only where
		// federation may (no loopback or private addresses unless allowed).
		web: &http.Client{Transport: tr.secure, CheckRedirect: noRedirect},
	}, nil
}

// MediaGet sends GET path (with its query) to server, X-Matrix signed when
// signed.
func (f *MediaFetcher) MediaGet(ctx context.Context, server, path string, signed bool) (*http.Response, error) {
	if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(server)); !ok {
		return nil, fmt.Errorf("federation: invalid server name %q", server)
	}
	var req *http.Request
	var err error
	if signed {
		fr := fclient.NewFederationRequest(http.MethodGet, f.a.serverName, spec.ServerName(server), path)
		if err := fr.Sign(f.a.serverName, f.a.keyID, f.a.privateKey); err != nil {
			return nil, err
		}
		req, err = fr.HTTPRequest()
	} else {
		req, err = http.NewRequest(http.MethodGet, "matrix://"+server+path, nil)
	}
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "Repeater/"+f.a.version)
	return f.fed.Do(req.WithContext(ctx))
}

// MediaGetURL fetches an http(s) URL.
func (f *MediaFetcher) MediaGetURL(ctx context.Context, rawURL string) (*http.Response, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("federation: bad media URL %q", rawURL)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "Repeater/"+f.a.version)
	return f.web.Do(req)
}
