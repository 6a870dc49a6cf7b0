package linksim

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// HTTPText decodes a captured stream of HTTP/1.1 messages (the requests of
// a connection, or its responses) into what they say: each message's
// start line and headers, then its body with chunking and gzip
// Content-Encoding undone. Assertions about what crossed a link ("no
// signatures key") must look at this, not at the compressed bytes.
// compressed counts the bodies that were gzip-encoded on the wire. A stream
// cut off mid-message (a dropped connection) decodes as far as it goes, and
// what could not be parsed is appended as it is (still searchable). err
// reports only a gzip body that does not decompress.
func HTTPText(stream []byte) (text []byte, compressed int, err error) {
	rd := bytes.NewReader(stream)
	br := bufio.NewReader(rd)
	var out bytes.Buffer
	rest := func() []byte {
		// What the reader has not consumed: its buffer and what is left.
		buffered, _ := br.Peek(br.Buffered())
		out.Write(buffered)
		tail := make([]byte, rd.Len())
		rd.Read(tail)
		out.Write(tail)
		return out.Bytes()
	}
	for {
		head, perr := br.Peek(5)
		if perr != nil {
			return out.Bytes(), compressed, nil // end of stream
		}
		var hdr http.Header
		var body io.ReadCloser
		var start string
		if string(head) == "HTTP/" {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return rest(), compressed, nil
			}
			start, hdr, body = resp.Proto+" "+resp.Status, resp.Header, resp.Body
		} else {
			req, err := http.ReadRequest(br)
			if err != nil {
				return rest(), compressed, nil
			}
			start, hdr, body = req.Method+" "+req.RequestURI+" "+req.Proto, req.Header, req.Body
		}
		out.WriteString(start + "\r\n")
		hdr.Write(&out)
		out.WriteString("\r\n")
		raw, rerr := io.ReadAll(body)
		body.Close()
		if strings.EqualFold(hdr.Get("Content-Encoding"), "gzip") && len(raw) > 0 {
			compressed++
			zr, zerr := gzip.NewReader(bytes.NewReader(raw))
			if zerr != nil {
				return out.Bytes(), compressed, fmt.Errorf("linksim: bad gzip body: %w", zerr)
			}
			raw, zerr = io.ReadAll(zr)
			if zerr != nil && rerr == nil {
				return out.Bytes(), compressed, fmt.Errorf("linksim: bad gzip body: %w", zerr)
			}
		}
		out.Write(raw)
		out.WriteString("\r\n")
		if rerr != nil {
			return rest(), compressed, nil // cut off mid-body
		}
	}
}
