package federationapi

import (
	"net"
	"strings"

	"github.com/tidwall/gjson"
)

// aclAllows applies m.room.server_acl content to a server name (spec:
// "Server Access Control Lists"): the port is ignored; IP literals are
// refused unless allow_ip_literals; a deny match refuses; otherwise an
// allow match is needed.
func aclAllows(content gjson.Result, server string) bool {
	host := server
	if h, _, err := net.SplitHostPort(server); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	allowIP := content.Get("allow_ip_literals")
	if net.ParseIP(host) != nil && allowIP.Exists() && !allowIP.Bool() {
		return false
	}
	for _, d := range content.Get("deny").Array() {
		if globMatch(d.Str, host) {
			return false
		}
	}
	for _, a := range content.Get("allow").Array() {
		if globMatch(a.Str, host) {
			return true
		}
	}
	return false
}

// globMatch matches s against a pattern of literal characters, '*' (any
// run) and '?' (any one character), case-insensitively.
func globMatch(pattern, s string) bool {
	p, t := strings.ToLower(pattern), strings.ToLower(s)
	pi, ti, star, mark := 0, 0, -1, 0
	for ti < len(t) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == t[ti]):
			pi++
			ti++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, ti
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			ti = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
