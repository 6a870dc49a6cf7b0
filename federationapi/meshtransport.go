package federationapi

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"time"

	"repeater/internal/part97"
)

// meshRoundTrip sends a request to a mesh peer (the amateur-radio mode):
// without its X-Matrix header when events go unsigned, with a gzip body
// when the peer has said it takes one, and noting the peer's address for
// the relay record (part97.Relay). Responses come back compressed when
// the peer compresses: Go's transport asks for gzip and unpacks it.
func (t *transport) meshRoundTrip(name string, r *http.Request) (*http.Response, error) {
	if t.unsigned {
		r.Header.Del("Authorization")
		r.Header.Set(originHeader, t.origin)
	}
	if rel := part97.RelayFrom(r.Context()); rel != nil {
		r = r.WithContext(httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{
			GotConn: func(ci httptrace.GotConnInfo) { rel.SetAddr(ci.Conn.RemoteAddr().String()) },
		}))
	}
	if _, ok := t.gzipOK.Load(name); ok && r.Body != nil && r.ContentLength > minGzip {
		if err := gzipBody(r); err != nil {
			return nil, err
		}
	}
	resp, err := t.plain.RoundTrip(r)
	if err == nil && acceptsGzip(resp.Header) {
		t.gzipOK.Store(name, true)
	}
	return resp, err
}

// minGzip is the smallest body worth compressing.
const minGzip = 512

// acceptsGzip reports whether a response says its server takes gzip
// request bodies (RFC 7694, "Client-Initiated Content-Encoding").
func acceptsGzip(h http.Header) bool {
	for _, v := range h.Values("Accept-Encoding") {
		for _, enc := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(strings.SplitN(enc, ";", 2)[0]), "gzip") {
				return true
			}
		}
	}
	return false
}

func gzipBody(r *http.Request) error {
	raw, err := io.ReadAll(r.Body)
	r.Body.Close()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(raw)
	if err := zw.Close(); err != nil {
		return err
	}
	z := buf.Bytes()
	r.Body = io.NopCloser(bytes.NewReader(z))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(z)), nil }
	r.ContentLength = int64(len(z))
	r.Header.Set("Content-Encoding", "gzip")
	return nil
}

// On a mesh, requests that move data (transactions, backfill, joins) get
// meshSlack times their usual time limit, and connections are cut when no
// byte has moved on them for meshIdle instead: a slow but working radio
// link finishes what it carries, a dead one is noticed as soon as on a
// fast network.
const (
	meshSlack = 10
	meshIdle  = 30 * time.Second
)

// deadline bounds ctx by d, or on a mesh by meshSlack*d.
func (a *API) deadline(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if a.policy.On() {
		d *= meshSlack
	}
	return context.WithTimeout(ctx, d)
}

// idleConn is a connection that fails once nothing has moved on it for
// idle: every read and write pushes the deadline on.
type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c *idleConn) Read(b []byte) (int, error) {
	c.Conn.SetDeadline(time.Now().Add(c.idle))
	return c.Conn.Read(b)
}

func (c *idleConn) Write(b []byte) (int, error) {
	c.Conn.SetDeadline(time.Now().Add(c.idle))
	return c.Conn.Write(b)
}

// idleDialer dials connections that are cut after idle without traffic.
func idleDialer(d *net.Dialer, idle time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &idleConn{Conn: c, idle: idle}, nil
	}
}
