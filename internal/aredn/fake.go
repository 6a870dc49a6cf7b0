package aredn

import (
	"encoding/json"
	"net"
	"net/http"
	"sync"
	"time"
)

// FakeNode is an in-process fake AREDN node for tests (this package's and
// the server's mesh tests). It listens on 127.0.0.1 (an ephemeral port)
// and serves a sysinfo document at /cgi-bin/sysinfo.json and /a/sysinfo;
// the "services" array is included only when the query has services=1, as
// on real firmware. It uses plain net/http (not httptest) so that nothing
// test-only is linked into the server.
//
// Set the exported fields before the first request, or use the setter
// methods at any time.
type FakeNode struct {
	// Redirect makes /cgi-bin/sysinfo.json answer 302 to /a/sysinfo (query
	// preserved), like newer firmware.
	Redirect bool
	// NoLegacy makes /cgi-bin/sysinfo.json answer 404, so clients must use
	// /a/sysinfo.
	NoLegacy bool
	// NodeName is the node name reported in the document.
	NodeName string

	srv *http.Server
	url string

	mu         sync.Mutex
	services   []Service
	polls      int
	failStatus int
	failBody   []byte
}

// NewFakeNode starts a fake node with no services. It panics if it cannot
// listen on loopback (tests only).
func NewFakeNode() *FakeNode {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("aredn: fake node: " + err.Error())
	}
	f := &FakeNode{NodeName: "N0CALL-HAP-1", url: "http://" + l.Addr().String()}
	f.srv = &http.Server{Handler: http.HandlerFunc(f.serve), ReadHeaderTimeout: 10 * time.Second}
	go f.srv.Serve(l)
	return f
}

// URL is the node's base URL (http://127.0.0.1:port).
func (f *FakeNode) URL() string { return f.url }

// Close stops the node.
func (f *FakeNode) Close() { f.srv.Close() }

// SetServices replaces the advertised services.
func (f *FakeNode) SetServices(s []Service) {
	f.mu.Lock()
	f.services = append([]Service(nil), s...)
	f.mu.Unlock()
}

// SetRedirect turns the newer firmware's redirect on or off.
func (f *FakeNode) SetRedirect(on bool) {
	f.mu.Lock()
	f.Redirect = on
	f.mu.Unlock()
}

// SetFailure makes every sysinfo request answer status with body (status
// 0: back to normal).
func (f *FakeNode) SetFailure(status int, body []byte) {
	f.mu.Lock()
	f.failStatus, f.failBody = status, body
	f.mu.Unlock()
}

// Polls is how many sysinfo documents were served.
func (f *FakeNode) Polls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.polls
}

func (f *FakeNode) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	redirect, noLegacy := f.Redirect, f.NoLegacy
	status, body := f.failStatus, f.failBody
	f.mu.Unlock()
	switch r.URL.Path {
	case legacySysinfoPath:
		if noLegacy {
			http.NotFound(w, r)
			return
		}
		if redirect {
			to := sysinfoPath
			if r.URL.RawQuery != "" {
				to += "?" + r.URL.RawQuery
			}
			http.Redirect(w, r, to, http.StatusFound)
			return
		}
	case sysinfoPath:
	default:
		http.NotFound(w, r)
		return
	}
	if status != 0 {
		w.WriteHeader(status)
		w.Write(body)
		return
	}
	f.mu.Lock()
	doc := map[string]any{
		"api_version": "1.5",
		"node":        f.NodeName,
		"lat":         "32.7767", "lon": "-96.7970", "grid_square": "EM12kt",
		"sysinfo":      map[string]any{"uptime": "3 days, 2:01:07", "loads": []float64{0.1, 0.05, 0.01}},
		"meshrf":       map[string]any{"status": "on", "ssid": "AREDN-10-v3", "channel": "177", "chanbw": "10"},
		"node_details": map[string]any{"model": "MikroTik hAP ac lite", "firmware_version": "3.24.10.0"},
		"interfaces":   []any{map[string]any{"name": "br-lan", "ip": "10.54.20.1", "mac": "00:00:00:00:00:00"}},
	}
	if r.URL.Query().Get("services") == "1" {
		svcs := make([]map[string]string, 0, len(f.services))
		for _, s := range f.services {
			svcs = append(svcs, map[string]string{"name": s.Name, "protocol": s.Protocol, "link": s.Link})
		}
		doc["services"] = svcs
	}
	f.polls++
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(doc)
}
