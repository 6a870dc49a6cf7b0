package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"net/http"
	"strings"
	"time"
)

// The media scenario: cfg.mediaFiles uploads of cfg.mediaSize random bytes
// with cfg.concurrency uploaders, then every file downloaded back through
// the authenticated endpoint (checked byte for byte), then thumbnails:
// cfg.mediaImages 2048x1536 JPEGs each asked for a 320x240 thumbnail
// (made on first request) and then asked again (served from the store).

// rawRequest sends a request with a raw body and returns the body read.
func (c *client) rawRequest(ctx context.Context, method, path, token string, body []byte, contentType string) ([]byte, http.Header, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		p, _, _ := strings.Cut(path, "?")
		return raw, resp.Header, &httpError{Method: method, Path: p, Status: resp.StatusCode, Body: string(raw)}
	}
	return raw, resp.Header, nil
}

// uploadMedia uploads content and returns its mxc:// URI without the
// scheme ("server/mediaId").
func (c *client) uploadMedia(ctx context.Context, u user, content []byte, contentType string) (string, error) {
	raw, _, err := c.rawRequest(ctx, "POST", "/_matrix/media/v3/upload", u.Token, content, contentType)
	if err != nil {
		return "", err
	}
	var r struct {
		ContentURI string `json:"content_uri"`
	}
	if err := json.Unmarshal(raw, &r); err != nil || !strings.HasPrefix(r.ContentURI, "mxc://") {
		return "", fmt.Errorf("upload: bad answer %q", raw)
	}
	return strings.TrimPrefix(r.ContentURI, "mxc://"), nil
}

func (r *runner) scenarioMedia(ctx context.Context) error {
	const s = "media"
	users, err := r.take(ctx, 1)
	if err != nil {
		return err
	}
	u := users[0]
	n, size := r.cfg.mediaFiles, r.cfg.mediaSize
	if n < 0 || size < 0 || r.cfg.mediaImages < 0 {
		return fmt.Errorf("media-files, media-size and media-images must not be negative")
	}

	files := make([][]byte, n)
	for i := range files {
		files[i] = make([]byte, size)
		rand.Read(files[i]) // distinct content: nothing is deduplicated
	}
	uris := make([]string, n)
	var upLat samples
	t0 := time.Now()
	errs, first := forEach(ctx, r.cfg.concurrency, n, func(ctx context.Context, _, i int) error {
		s0 := time.Now()
		uri, err := r.c.uploadMedia(ctx, u, files[i], "application/octet-stream")
		if err != nil {
			return err
		}
		upLat.add(ms(time.Since(s0)))
		uris[i] = uri
		return nil
	})
	elapsed := time.Since(t0)
	r.add(s, fmt.Sprintf("uploads of %d KiB", size/1024), float64(n-errs), "")
	r.add(s, "uploads/s", rate(n-errs, elapsed), "/s")
	r.add(s, "upload throughput", float64(int64(n-errs)*int64(size))/(1<<20)/elapsed.Seconds(), "MiB/s")
	sum := upLat.summary()
	r.add(s, "upload p50", sum.P50, "ms")
	r.add(s, "upload p99", sum.P99, "ms")
	if errs > 0 {
		return fmt.Errorf("%d uploads failed, first: %w", errs, first)
	}

	var downLat samples
	t0 = time.Now()
	errs, first = forEach(ctx, r.cfg.concurrency, n, func(ctx context.Context, _, i int) error {
		s0 := time.Now()
		body, _, err := r.c.rawRequest(ctx, "GET", "/_matrix/client/v1/media/download/"+uris[i], u.Token, nil, "")
		if err != nil {
			return err
		}
		if !bytes.Equal(body, files[i]) {
			return fmt.Errorf("download %s: content differs (%d bytes)", uris[i], len(body))
		}
		downLat.add(ms(time.Since(s0)))
		return nil
	})
	elapsed = time.Since(t0)
	r.add(s, "downloads/s", rate(n-errs, elapsed), "/s")
	r.add(s, "download throughput", float64(int64(n-errs)*int64(size))/(1<<20)/elapsed.Seconds(), "MiB/s")
	sum = downLat.summary()
	r.add(s, "download p50", sum.P50, "ms")
	r.add(s, "download p99", sum.P99, "ms")
	if errs > 0 {
		return fmt.Errorf("%d downloads failed, first: %w", errs, first)
	}

	// Thumbnails, one request at a time: first (made) and again (stored).
	var made, cached samples
	for i := 0; i < r.cfg.mediaImages; i++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		img, err := loadTestJPEG(2048, 1536, i)
		if err != nil {
			return err
		}
		uri, err := r.c.uploadMedia(ctx, u, img, "image/jpeg")
		if err != nil {
			return err
		}
		path := "/_matrix/client/v1/media/thumbnail/" + uri + "?width=320&height=240&method=scale"
		for round, smp := range []*samples{&made, &cached, &cached} {
			s0 := time.Now()
			body, hdr, err := r.c.rawRequest(ctx, "GET", path, u.Token, nil, "")
			if err != nil {
				return err
			}
			if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "image/") || len(body) == 0 {
				return fmt.Errorf("thumbnail %s (round %d): %q, %d bytes", uri, round, ct, len(body))
			}
			smp.add(ms(time.Since(s0)))
		}
	}
	if r.cfg.mediaImages > 0 {
		sum = made.summary()
		r.add(s, "thumbnail 2048x1536 JPEG -> 320x240, first request p50", sum.P50, "ms")
		r.add(s, "thumbnail, first request max", sum.Max, "ms")
		sum = cached.summary()
		r.add(s, "thumbnail, stored p50", sum.P50, "ms")
		r.add(s, "thumbnail, stored p99", sum.P99, "ms")
	}
	return nil
}

// loadTestJPEG draws a w x h gradient (varied by seed) as a JPEG.
func loadTestJPEG(w, h, seed int) ([]byte, error) {
	img := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Y[img.YOffset(x, y)] = uint8((x*7 + y*3 + seed*13) ^ (x * y >> 6))
		}
	}
	for y := 0; y < h/2; y++ {
		for x := 0; x < w/2; x++ {
			c := img.COffset(2*x, 2*y)
			img.Cb[c] = uint8(x + seed*31)
			img.Cr[c] = uint8(y - seed*17)
		}
	}
	var b bytes.Buffer
	err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 85})
	return b.Bytes(), err
}
