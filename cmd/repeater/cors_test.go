package main

import (
	"net/http"
	"testing"

	"repeater/storage/storagetest"
)

// Browser clients preflight every call: OPTIONS answers with CORS headers
// and no authentication, and real responses carry them too.
func TestCORS(t *testing.T) {
	ts := startTestServer(t, newTestConfig(t, storagetest.Dialects(t)["sqlite"]))
	for _, path := range []string{"/_matrix/client/v3/sync", "/_matrix/client/v3/rooms/!x:y/send/m.room.message/1", "/_matrix/client/versions"} {
		req, _ := http.NewRequest("OPTIONS", ts.base+path, nil)
		req.Header.Set("Origin", "https://app.example")
		req.Header.Set("Access-Control-Request-Method", "PUT")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
			resp.Header.Get("Access-Control-Allow-Headers") == "" {
			t.Fatalf("preflight %s: %d %v", path, resp.StatusCode, resp.Header)
		}
	}
	resp, err := http.Get(ts.base + "/_matrix/client/versions")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatal("no CORS header on a GET")
	}
}
