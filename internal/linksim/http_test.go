package linksim

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"testing"
)

func TestHTTPText(t *testing.T) {
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write([]byte(`{"pdus":[{"signatures":{}}]}`))
	zw.Close()
	reqs := fmt.Sprintf("PUT /_matrix/federation/v1/send/1 HTTP/1.1\r\nHost: a\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s", z.Len(), z.Bytes()) +
		"GET /x HTTP/1.1\r\nHost: a\r\nAuthorization: X-Matrix origin=\"a\"\r\n\r\n"
	text, n, err := HTTPText([]byte(reqs))
	if err != nil || n != 1 || !bytes.Contains(text, []byte(`"signatures"`)) || !bytes.Contains(text, []byte("X-Matrix")) {
		t.Fatalf("requests: %v %d %q", err, n, text)
	}
	resps := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
	text, n, err = HTTPText([]byte(resps))
	if err != nil || n != 0 || !bytes.Contains(text, []byte("hello")) || !bytes.Contains(text, []byte("abc")) {
		t.Fatalf("responses (the second cut off): %v %d %q", err, n, text)
	}
	if bytes.Contains([]byte(reqs), []byte(`"signatures"`)) {
		t.Fatal("test is vacuous: the signature key was visible without decoding")
	}
}
