// Package aredn discovers Repeater peers on an AREDN mesh.
//
// AREDN (Amateur Radio Emergency Data Network) meshes are built from routers
// ("nodes") running the AREDN firmware. Every node serves a small JSON API,
// documented in the AREDN "Tools for Developers" guide:
//
//	http://<nodename>.local.mesh/cgi-bin/sysinfo.json
//
// Newer firmware redirects that URL to http://<nodename>.local.mesh/a/sysinfo
// (same document). With the query flag services=1 the document contains a
// "services" array with one entry per service advertised anywhere on the
// mesh:
//
//	"services": [
//	  {"name": "MeshChat", "protocol": "tcp", "link": "http://MYCALL-RPI/meshchat"},
//	  {"name": "EtherPad", "protocol": "tcp", "link": "http://MYCALL-RPI:9001/"}
//	]
//
// Operators advertise a service on their node (Services / "Local Services"
// in the node UI). The firmware stores one line per service in the form
//
//	name|link|protocol|host|port|path
//
// where link is "1" for a clickable URL service (rendered as
// protocol://host:port/path) and "0" for a plain-text entry. Recent
// firmware lets the operator pick an icon type, which it stores appended to
// the name as " [type]" (lowercase letters, e.g. "MeshChat [chat]"); that
// decoration shows up in the names published by sysinfo, so matching strips
// it. See ServiceLine for the line a Repeater operator enters.
//
// A Repeater homeserver running in Part 97 mode is advertised as an http
// service (default name "Matrix") whose link is the homeserver's base URL,
// e.g. http://kx0abc-matrix.local.mesh:8008/. The Poller periodically reads
// the mesh-wide service list from the local node, keeps the services whose
// name matches, and learns each homeserver's Matrix server name from its
// /_matrix/key/v2/server endpoint (falling back to /.well-known/matrix/server).
// Part 97 forbids encryption, so only http:// links are considered.
package aredn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"
)

const (
	// DefaultNode is the base URL of the AREDN node the host is attached to.
	DefaultNode = "http://localnode.local.mesh"
	// DefaultServiceName is the service name Repeater advertises by default.
	DefaultServiceName = "Matrix"
	// DefaultInterval is the polling interval used when Poller.Interval <= 0.
	DefaultInterval = 60 * time.Second
	// DefaultRequestTimeout bounds each HTTP request when
	// Poller.RequestTimeout <= 0.
	DefaultRequestTimeout = 10 * time.Second

	// legacySysinfoPath is the historical sysinfo URL (still redirected by
	// newer firmware).
	legacySysinfoPath = "/cgi-bin/sysinfo.json"
	// sysinfoPath is the sysinfo URL of newer firmware.
	sysinfoPath = "/a/sysinfo"

	// maxSysinfoBytes bounds the sysinfo document. A mesh-wide service list
	// is a few hundred bytes per service; 4 MiB leaves room for large meshes.
	maxSysinfoBytes = 4 << 20
	// maxMatrixBytes bounds responses from Matrix endpoints.
	maxMatrixBytes = 1 << 20
	// maxServices bounds how many services ParseServices returns.
	maxServices = 10000
	// maxPeersPerPoll bounds how many distinct matching links one poll
	// resolves.
	maxPeersPerPoll = 256
	// fetchConcurrency bounds parallel server-name lookups within a poll.
	fetchConcurrency = 4
	// nameTTL is how long a learnt server name is trusted before the link
	// is queried again (a host may be reinstalled under a new name while it
	// stays advertised).
	nameTTL = time.Hour
)

type cachedName struct {
	name string
	at   time.Time
}

// Service is one entry of the "services" array of an AREDN sysinfo
// document.
type Service struct {
	Name     string // display name, possibly with a " [type]" suffix
	Protocol string // usually "tcp"
	Link     string // URL, e.g. "http://MYCALL-RPI:9001/"
}

// Peer is a Repeater homeserver found on the mesh.
type Peer struct {
	ServerName string // Matrix server name, e.g. "kx0abc-matrix.local.mesh:8008"
	BaseURL    string // base URL without trailing slash, e.g. "http://kx0abc-matrix.local.mesh:8008"
}

// ParseServices extracts the "services" array from an AREDN sysinfo
// document. It tolerates unknown fields and a missing "services" key (an
// empty list is returned). Entries that are not objects or lack a string
// "name" or "link" are skipped ("protocol" is optional); surrounding
// whitespace is trimmed. Names are returned as published, decorations
// included. A body that is not a JSON object is an error.
func ParseServices(body []byte) ([]Service, error) {
	if !gjson.ValidBytes(body) {
		return nil, errors.New("aredn: sysinfo is not valid JSON")
	}
	root := gjson.ParseBytes(body)
	if !root.IsObject() {
		return nil, errors.New("aredn: sysinfo is not a JSON object")
	}
	list := root.Get("services")
	if !list.IsArray() {
		return []Service{}, nil
	}
	out := []Service{}
	list.ForEach(func(_, v gjson.Result) bool {
		if !v.IsObject() {
			return true
		}
		name, link := v.Get("name"), v.Get("link")
		if name.Type != gjson.String || link.Type != gjson.String {
			return true
		}
		s := Service{
			Name: strings.TrimSpace(name.String()),
			Link: strings.TrimSpace(link.String()),
		}
		if p := v.Get("protocol"); p.Type == gjson.String {
			s.Protocol = strings.TrimSpace(p.String())
		}
		if s.Name == "" || s.Link == "" {
			return true
		}
		out = append(out, s)
		return len(out) < maxServices
	})
	return out, nil
}

// typeSuffix matches the icon-type decoration AREDN appends to service
// names (" [chat]", " [phone]", ...). The firmware itself writes lowercase
// letters only; this is deliberately more liberal.
var typeSuffix = regexp.MustCompile(`^(.*?)\s*\[[^\[\]]*\]$`)

// BaseName returns a service name without AREDN's trailing " [type]"
// decoration and surrounding whitespace: "Matrix [chat]" -> "Matrix".
func BaseName(name string) string {
	name = strings.TrimSpace(name)
	if m := typeSuffix.FindStringSubmatch(name); m != nil && strings.TrimSpace(m[1]) != "" {
		return strings.TrimSpace(m[1])
	}
	return name
}

// Matches reports whether svc advertises a Repeater homeserver under
// serviceName: the names must be equal ignoring case and AREDN's " [type]"
// decoration, and the link must be a usable http:// URL (https and any
// other scheme never match, since Part 97 forbids encryption).
func Matches(svc Service, serviceName string) bool {
	want := BaseName(serviceName)
	if want == "" || !strings.EqualFold(BaseName(svc.Name), want) {
		return false
	}
	_, err := LinkBase(svc.Link)
	return err == nil
}

// LinkBase converts an advertised service link into a base URL: scheme
// "http" (lowercase), the host and explicit port as given, and the path
// without a trailing slash. Query, fragment and user info are dropped. Links
// that are not absolute http:// URLs with a host are rejected.
func LinkBase(link string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(link))
	if err != nil {
		return "", fmt.Errorf("aredn: bad link %q: %w", link, err)
	}
	if !strings.EqualFold(u.Scheme, "http") {
		return "", fmt.Errorf("aredn: link %q is not http://", link)
	}
	if u.Hostname() == "" {
		return "", fmt.Errorf("aredn: link %q has no host", link)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("aredn: link %q has a bad port", link)
		}
	}
	base := url.URL{Scheme: "http", Host: u.Host, Path: strings.TrimRight(u.Path, "/")}
	return base.String(), nil
}

// ServiceLine returns the service definition an operator adds on their
// AREDN node to advertise a Repeater homeserver, in the firmware's format
//
//	name|1|http|host|port|path
//
// (fields: service name, link flag "1" = clickable URL, protocol/URL
// scheme, host name as chosen in the node UI, port, path without leading
// slash - empty here). The mesh then publishes it with the link
// http://host:port/. In the node UI this corresponds to a "Generic URL"
// service with name, protocol "http", the host, port and an empty path.
// Characters AREDN forbids in names (| " < > and line breaks) are removed,
// and a ".local.mesh" suffix on host is stripped because the node UI stores
// bare host names. For example ServiceLine("Matrix", "KX0ABC-matrix", 8008)
// is "Matrix|1|http|KX0ABC-matrix|8008|".
func ServiceLine(name, host string, port int) string {
	clean := strings.Map(func(r rune) rune {
		switch r {
		case '|', '"', '<', '>', '\r', '\n':
			return -1
		}
		return r
	}, name)
	clean = strings.TrimSpace(clean)
	host = strings.TrimSpace(host)
	if len(host) > len(".local.mesh") && strings.EqualFold(host[len(host)-len(".local.mesh"):], ".local.mesh") {
		host = host[:len(host)-len(".local.mesh")]
	}
	host = strings.Map(func(r rune) rune {
		if r == '|' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, host)
	return fmt.Sprintf("%s|1|http|%s|%d|", clean, host, port)
}

// Poller discovers Repeater peers by polling an AREDN node's service list.
// Set the fields before calling Run or PollOnce and do not change them
// afterwards. A Poller is safe for concurrent use; polls are serialised.
type Poller struct {
	// Node is the node's base URL; DefaultNode when empty.
	Node string
	// ServiceName is the advertised service name to look for;
	// DefaultServiceName when empty.
	ServiceName string
	// Interval between polls; DefaultInterval when <= 0.
	Interval time.Duration
	// RequestTimeout bounds each HTTP request; DefaultRequestTimeout when
	// <= 0.
	RequestTimeout time.Duration
	// Client performs the requests. When nil, a client is used that
	// follows at most 5 redirects and only to http:// URLs.
	Client *http.Client
	// OnPeer, when set, is called (outside any lock, after the poll that
	// found it) for every peer whose (server name, base URL) pair is new or
	// changed. It may call PollOnce.
	OnPeer func(serverName, baseURL string)
	// Log receives diagnostics; nothing is logged when nil.
	Log *slog.Logger

	pollMu sync.Mutex // serialises polls

	mu       sync.Mutex
	names    map[string]cachedName // base URL -> server name learnt from it
	reported map[string]string     // base URL -> server name last passed to OnPeer
}

var defaultClient = &http.Client{
	CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return errors.New("aredn: too many redirects")
		}
		if req.URL.Scheme != "http" {
			return fmt.Errorf("aredn: refusing redirect to %s:// (Part 97 forbids TLS)", req.URL.Scheme)
		}
		return nil
	},
}

// Run polls immediately and then every Interval until ctx is done. Poll
// errors are logged and do not stop the loop.
func (p *Poller) Run(ctx context.Context) {
	interval := p.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if ctx.Err() != nil {
			return
		}
		if _, err := p.PollOnce(ctx); err != nil && ctx.Err() == nil {
			p.logger().Warn("aredn: poll failed", "node", p.node(), "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// PollOnce fetches the node's service list once and returns every peer it
// could identify among the matching services, in list order, deduplicated by
// base URL. It returns an error only when the service list itself could not
// be obtained; links whose server name cannot be learnt are logged and left
// out (and retried on the next poll).
//
// Server names are cached per base URL: a link already resolved is not
// queried again while it stays in the list (for up to an hour, after which
// it is re-checked once). Failures are not cached, so a link that could not
// be identified is retried on the next poll. A link that leaves the list is
// forgotten, so it is queried afresh if it comes back.
//
// Server name resolution for a link with base URL B:
//  1. GET B/_matrix/key/v2/server and use its "server_name".
//  2. Otherwise GET B/.well-known/matrix/server; if it holds a valid
//     "m.server", the link points at a Matrix deployment but its real name
//     is unknown, so the link's host[:port] (lowercased, ":80" omitted) is
//     used as the server name. The peer's base URL stays B: Repeater peers
//     serve the Matrix APIs at their advertised link, and in Part 97 mode the
//     usual https delegation does not apply.
//  3. Otherwise the link is skipped for this poll.
func (p *Poller) PollOnce(ctx context.Context) ([]Peer, error) {
	p.pollMu.Lock()
	peers, changed, err := p.poll(ctx)
	p.pollMu.Unlock()
	if err != nil {
		return nil, err
	}
	if p.OnPeer != nil {
		for _, c := range changed {
			p.OnPeer(c.ServerName, c.BaseURL)
		}
	}
	return peers, nil
}

func (p *Poller) poll(ctx context.Context) (peers, changed []Peer, err error) {
	services, err := p.fetchServices(ctx)
	if err != nil {
		return nil, nil, err
	}
	want := p.ServiceName
	if strings.TrimSpace(want) == "" {
		want = DefaultServiceName
	}
	var bases []string
	seen := map[string]bool{}
	for _, s := range services {
		if !Matches(s, want) {
			continue
		}
		b, err := LinkBase(s.Link)
		if err != nil || seen[b] {
			continue
		}
		if len(bases) >= maxPeersPerPoll {
			p.logger().Warn("aredn: too many matching services; ignoring the rest", "limit", maxPeersPerPoll)
			break
		}
		seen[b] = true
		bases = append(bases, b)
	}

	p.mu.Lock()
	if p.names == nil {
		p.names = map[string]cachedName{}
		p.reported = map[string]string{}
	}
	now := time.Now()
	resolved := make([]string, len(bases))
	fresh := make([]bool, len(bases))
	var todo []int
	for i, b := range bases {
		if c, ok := p.names[b]; ok && now.Sub(c.at) < nameTTL {
			resolved[i] = c.name
		} else {
			fresh[i] = true
			todo = append(todo, i)
		}
	}
	p.mu.Unlock()

	sem := make(chan struct{}, fetchConcurrency)
	var wg sync.WaitGroup
	for _, i := range todo {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			n, err := p.resolveName(ctx, bases[i])
			if err != nil {
				p.logger().Info("aredn: cannot identify advertised homeserver", "link", bases[i], "error", err)
				return
			}
			resolved[i] = n
		}(i)
	}
	wg.Wait()

	p.mu.Lock()
	defer p.mu.Unlock()
	for b := range p.names {
		if !seen[b] {
			delete(p.names, b)
		}
	}
	for i, b := range bases {
		n := resolved[i]
		if n == "" {
			continue
		}
		if fresh[i] {
			p.names[b] = cachedName{name: n, at: now}
		}
		peer := Peer{ServerName: n, BaseURL: b}
		peers = append(peers, peer)
		if old, ok := p.reported[b]; !ok || old != n {
			p.reported[b] = n
			changed = append(changed, peer)
		}
	}
	// Bound the memory of reported peers on a churning mesh.
	if len(p.reported) > 4*maxPeersPerPoll {
		for b := range p.reported {
			if !seen[b] {
				delete(p.reported, b)
			}
		}
	}
	return peers, changed, nil
}

// fetchServices reads the mesh-wide service list from the node, trying the
// legacy path first (newer firmware redirects it) and /a/sysinfo when the
// legacy path is 404.
func (p *Poller) fetchServices(ctx context.Context) ([]Service, error) {
	node := strings.TrimRight(p.node(), "/")
	status, body, err := p.get(ctx, node+legacySysinfoPath+"?services=1", maxSysinfoBytes)
	if err == nil && status == http.StatusNotFound {
		status, body, err = p.get(ctx, node+sysinfoPath+"?services=1", maxSysinfoBytes)
	}
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("aredn: sysinfo from %s: HTTP %d", node, status)
	}
	return ParseServices(body)
}

// resolveName learns the Matrix server name behind base; see PollOnce.
func (p *Poller) resolveName(ctx context.Context, base string) (string, error) {
	status, body, err := p.get(ctx, base+"/_matrix/key/v2/server", maxMatrixBytes)
	if err == nil && status == http.StatusOK && gjson.ValidBytes(body) {
		if v := gjson.GetBytes(body, "server_name"); v.Type == gjson.String && ValidServerName(v.String()) {
			return v.String(), nil
		}
	}
	keyErr := err
	if keyErr == nil {
		keyErr = fmt.Errorf("key endpoint: HTTP %d or no valid server_name", status)
	}
	status, body, err = p.get(ctx, base+"/.well-known/matrix/server", maxMatrixBytes)
	if err == nil && status == http.StatusOK && gjson.ValidBytes(body) {
		if v := gjson.GetBytes(body, "m\\.server"); v.Type == gjson.String && ValidServerName(v.String()) {
			u, perr := url.Parse(base)
			if perr == nil {
				host := strings.ToLower(u.Hostname())
				if strings.Contains(host, ":") {
					host = "[" + host + "]"
				}
				if port := u.Port(); port != "" && port != "80" {
					host += ":" + port
				}
				if ValidServerName(host) {
					return host, nil
				}
			}
		}
	}
	return "", fmt.Errorf("%w; well-known fallback failed", keyErr)
}

// get performs a bounded GET and returns the status and body. Bodies larger
// than limit are an error.
func (p *Poller) get(ctx context.Context, rawURL string, limit int64) (int, []byte, error) {
	timeout := p.RequestTimeout
	if timeout <= 0 {
		timeout = DefaultRequestTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Accept", "application/json")
	client := p.Client
	if client == nil {
		client = defaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return 0, nil, err
	}
	if int64(len(body)) > limit {
		return 0, nil, fmt.Errorf("aredn: response from %s exceeds %d bytes", rawURL, limit)
	}
	return resp.StatusCode, body, nil
}

func (p *Poller) node() string {
	if strings.TrimSpace(p.Node) == "" {
		return DefaultNode
	}
	return strings.TrimSpace(p.Node)
}

func (p *Poller) logger() *slog.Logger {
	if p.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Log
}

// ValidServerName reports whether s is syntactically a Matrix server name:
// a DNS name, IPv4 address or bracketed IPv6 address, optionally followed by
// ":port".
func ValidServerName(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return false
		}
		if net.ParseIP(s[1:end]) == nil || strings.Contains(s[1:end], "%") {
			return false
		}
		rest := s[end+1:]
		if rest != "" {
			if rest[0] != ':' {
				return false
			}
			port = rest[1:]
			if port == "" {
				return false
			}
		}
		host = ""
	} else if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i+1:]
		if port == "" {
			return false
		}
	}
	if port != "" {
		if len(port) > 5 {
			return false
		}
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || strings.TrimLeft(port, "0123456789") != "" {
			return false
		}
	}
	if host == "" {
		return strings.HasPrefix(s, "[")
	}
	for _, r := range host {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-':
		default:
			return false
		}
	}
	return true
}
