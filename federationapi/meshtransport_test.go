package federationapi

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// A slow answer that keeps moving is not cut; a stalled one is, once
// nothing has moved for the idle limit (no fixed overall limit).
func TestIdleConnCutsOnlyStalls(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stall := r.URL.Query().Get("stall") != ""
		for i := 0; i < 8; i++ {
			w.Write([]byte("73 "))
			w.(http.Flusher).Flush()
			if stall && i == 3 {
				time.Sleep(time.Second)
			}
			time.Sleep(60 * time.Millisecond)
		}
	}))
	defer srv.Close()
	tr := &http.Transport{DialContext: idleDialer(&net.Dialer{}, 300*time.Millisecond)}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	get := func(q string) (string, error) {
		resp, err := client.Get(srv.URL + q)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	// 8 × 60 ms = 480 ms in all, longer than the idle limit, but flowing.
	if body, err := get("/"); err != nil || len(body) != 24 {
		t.Fatalf("flowing answer: %q, %v", body, err)
	}
	if _, err := get("/?stall=1"); err == nil {
		t.Fatal("a stalled answer was not cut")
	}
}
