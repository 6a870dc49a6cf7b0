package federationapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// transport carries outbound federation requests (URLs matrix://name/...).
// A name configured as a static peer goes to that base URL (plain HTTP
// allowed: mesh networks, tests); any other is resolved per the spec
// ("Resolving server names": .well-known, SRV, port 8448, via
// gomatrixserverlib's ResolveServer) and reached over HTTPS. Connections to
// loopback and private addresses are refused unless allowed, except to
// static peers, which are trusted by configuration.
type transport struct {
	peersMu      sync.RWMutex
	peers        map[string]*url.URL
	plain        *http.Transport // static peers
	secure       *http.Transport // resolved servers
	allowPrivate bool
	allowNets    []*net.IPNet
	denyNets     []*net.IPNet

	mu    sync.Mutex
	cache map[string]resolved

	// The amateur-radio mode (mesh): plain HTTP only; names that are not
	// peers are reached at http://name (port 8008 unless the name has
	// one); with unsigned, requests go without their X-Matrix header,
	// naming us in Part97-Origin instead.
	mesh     bool
	meshDNS  bool
	unsigned bool
	origin   string
	// gzipOK are the peers that said (RFC 7694: Accept-Encoding on a
	// response) they take gzip-compressed request bodies.
	gzipOK sync.Map
}

type resolved struct {
	res     fclient.ResolutionResult
	expires time.Time
}

func newTransport(peers map[string]string, skipVerify, allowPrivate bool, allowNets, denyNets []string) (*transport, error) {
	t := &transport{peers: map[string]*url.URL{}, allowPrivate: allowPrivate, cache: map[string]resolved{}}
	if err := t.setPeers(peers); err != nil {
		return nil, err
	}
	for _, c := range allowNets {
		if _, n, err := net.ParseCIDR(c); err == nil {
			t.allowNets = append(t.allowNets, n)
		}
	}
	for _, c := range denyNets {
		if _, n, err := net.ParseCIDR(c); err == nil {
			t.denyNets = append(t.denyNets, n)
		}
	}
	dialer := &net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}
	t.plain = &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: 8, IdleConnTimeout: 90 * time.Second,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: skipVerify}} // #nosec G402 -- test networks only, by config
	guarded := &net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second, Control: t.checkAddr}
	t.secure = &http.Transport{DialContext: guarded.DialContext, MaxIdleConnsPerHost: 8, IdleConnTimeout: 90 * time.Second,
		TLSHandshakeTimeout: 15 * time.Second, ForceAttemptHTTP2: true,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: skipVerify}} // #nosec G402
	return t, nil
}

// setPeers adds static peers (name -> base URL).
func (t *transport) setPeers(peers map[string]string) error {
	for name, base := range peers {
		if err := t.AddPeer(name, base); err != nil {
			return err
		}
	}
	return nil
}

// AddPeer maps a server name to a base URL (static peers, and peers
// discovered on a mesh); it replaces an earlier mapping.
func (t *transport) AddPeer(name, base string) error {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("federation peer %s: bad base URL %q", name, base)
	}
	if t.mesh && u.Scheme != "http" {
		return fmt.Errorf("federation peer %s: Part 97 mode reaches peers over plain http:// only", name)
	}
	t.peersMu.Lock()
	t.peers[name] = u
	t.peersMu.Unlock()
	return nil
}

// peer returns the base URL of a static or discovered peer.
func (t *transport) peer(name string) (*url.URL, bool) {
	t.peersMu.RLock()
	defer t.peersMu.RUnlock()
	u, ok := t.peers[name]
	return u, ok
}

// errPrivate refuses an address outside the public internet.
var errPrivate = errors.New("federation: refusing to connect to a private or loopback address")

func (t *transport) checkAddr(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return errPrivate
	}
	for _, n := range t.denyNets {
		if n.Contains(ip) {
			return errDenied
		}
	}
	if t.allowPrivate {
		return nil
	}
	for _, n := range t.allowNets {
		if n.Contains(ip) {
			return nil
		}
	}
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() || ip.IsMulticast() {
		return errPrivate
	}
	return nil
}

// errDenied refuses an address in a configured deny range.
var errDenied = errors.New("federation: address is in federation.deny_networks")

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	name := req.URL.Host
	r := req.Clone(req.Context())
	peer, ok := t.peer(name)
	if !ok && t.mesh {
		if !t.meshDNS {
			return nil, fmt.Errorf("federation: %s is not a known mesh peer", name)
		}
		// No .well-known, SRV or 8448 on the mesh: plain HTTP to the name
		// itself, on 8008 unless it names a port.
		host, port, okName := spec.ParseAndValidateServerName(spec.ServerName(name))
		if !okName {
			return nil, fmt.Errorf("federation: invalid server name %q", name)
		}
		if port <= 0 {
			port = 8008
		}
		peer, ok = &url.URL{Scheme: "http", Host: net.JoinHostPort(host, strconv.Itoa(port))}, true
	}
	if ok {
		r.URL.Scheme, r.URL.Host = peer.Scheme, peer.Host
		r.URL.Path = strings.TrimSuffix(peer.Path, "/") + req.URL.Path
		if req.URL.RawPath != "" {
			r.URL.RawPath = strings.TrimSuffix(peer.Path, "/") + req.URL.RawPath
		}
		r.Host = name
		if t.mesh {
			return t.meshRoundTrip(name, r)
		}
		return t.plain.RoundTrip(r)
	}
	res, err := t.resolve(req.Context(), name)
	if err != nil {
		return nil, err
	}
	r.URL.Scheme, r.URL.Host, r.Host = "https", res.Destination, string(res.Host)
	tr := t.secure
	if res.TLSServerName != "" && res.TLSServerName != hostOnly(res.Destination) {
		tr = tr.Clone()
		tr.TLSClientConfig.ServerName = res.TLSServerName
	}
	return tr.RoundTrip(r)
}

func hostOnly(hp string) string {
	h, _, err := net.SplitHostPort(hp)
	if err != nil {
		return hp
	}
	return h
}

// resolve finds where a server name is served, caching for an hour.
func (t *transport) resolve(ctx context.Context, name string) (fclient.ResolutionResult, error) {
	t.mu.Lock()
	c, ok := t.cache[name]
	t.mu.Unlock()
	if ok && time.Now().Before(c.expires) {
		return c.res, nil
	}
	results, err := fclient.ResolveServer(ctx, spec.ServerName(name))
	if err != nil {
		return fclient.ResolutionResult{}, err
	}
	if len(results) == 0 {
		return fclient.ResolutionResult{}, fmt.Errorf("federation: cannot resolve %s", name)
	}
	t.mu.Lock()
	t.cache[name] = resolved{res: results[0], expires: time.Now().Add(time.Hour)}
	t.mu.Unlock()
	return results[0], nil
}

// peerNames lists the static and discovered peers.
func (t *transport) peerNames() []string {
	t.peersMu.RLock()
	defer t.peersMu.RUnlock()
	out := make([]string, 0, len(t.peers))
	for n := range t.peers {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
