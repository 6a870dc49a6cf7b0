package mediaapi

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"io"
	"testing"

	"repeater/internal/httputil"
	"repeater/storage"
)

// storeLocal stores content as local media and returns it.
func storeLocal(t *testing.T, m *API, id string, content []byte, ct string) *media {
	t.Helper()
	err := m.storeUpload(context.Background(), bytes.NewReader(content), func(sha string, size int64) error {
		return m.db.StoreMedia(context.Background(), storage.LocalMedia{MediaID: id, Uploader: "@a:local.test", ContentType: ct, Size: size, SHA256: sha, CreatedTS: 1}, m.quota)
	})
	if err != nil {
		t.Fatal(err)
	}
	md, err := m.resolveLocal(context.Background(), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	return md
}

func (m *API) readResult(t *testing.T, res *thumbResult) (string, int, int, []byte) {
	t.Helper()
	f, err := m.store.open(res.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	cfg, format, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if "image/"+format != res.ContentType {
		t.Fatalf("content type %s for a %s", res.ContentType, format)
	}
	return format, cfg.Width, cfg.Height, b
}

func TestAnimatedThumbnails(t *testing.T) {
	m := newTestAPI(t, nil, nil)
	ctx := context.Background()
	anim := encodeGIF(t, testImage(400, 300), 3)
	md := storeLocal(t, m, "anim", anim, "image/gif")

	// animated=true: the animation itself.
	res, err := m.thumb(ctx, md, thumbRequest{W: 96, H: 96, Method: "crop", Animated: true})
	if err != nil {
		t.Fatal(err)
	}
	if format, _, _, b := m.readResult(t, res); format != "gif" || !bytes.Equal(b, anim) {
		t.Fatalf("animated=true: %s", format)
	}
	// Otherwise a still PNG of the first frame.
	res, err = m.thumb(ctx, md, thumbRequest{W: 96, H: 96, Method: "crop"})
	if err != nil {
		t.Fatal(err)
	}
	if format, w, h, _ := m.readResult(t, res); format != "png" || w != 96 || h != 96 {
		t.Fatalf("still thumbnail: %s %dx%d", format, w, h)
	}
	// Even when the animation is smaller than asked (never the original).
	small := storeLocal(t, m, "small", encodeGIF(t, testImage(20, 10), 2), "image/gif")
	res, err = m.thumb(ctx, small, thumbRequest{W: 96, H: 96, Method: "crop", Animated: false})
	if err != nil {
		t.Fatal(err)
	}
	if format, w, h, _ := m.readResult(t, res); format != "png" || w != 20 || h != 10 {
		t.Fatalf("small animation: %s %dx%d", format, w, h)
	}
	// A still GIF smaller than asked is its own thumbnail.
	still := encodeGIF(t, testImage(20, 10), 1)
	res, err = m.thumb(ctx, storeLocal(t, m, "still", still, "image/gif"), thumbRequest{W: 96, H: 96, Method: "scale"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, b := m.readResult(t, res); !bytes.Equal(b, still) {
		t.Fatal("small still GIF not answered with itself")
	}
}

// hugePNG is just a PNG header claiming w x h pixels.
func hugePNG(w, h uint32) []byte {
	ihdr := binary.BigEndian.AppendUint32(nil, w)
	ihdr = binary.BigEndian.AppendUint32(ihdr, h)
	ihdr = append(ihdr, 8, 6, 0, 0, 0) // 8-bit RGBA
	chunk := binary.BigEndian.AppendUint32(nil, uint32(len(ihdr)))
	body := append([]byte("IHDR"), ihdr...)
	chunk = append(chunk, body...)
	chunk = binary.BigEndian.AppendUint32(chunk, crc32.ChecksumIEEE(body))
	return append([]byte("\x89PNG\r\n\x1a\n"), chunk...)
}

func TestThumbnailRefusesHugeImages(t *testing.T) {
	m := newTestAPI(t, nil, nil)
	md := storeLocal(t, m, "bomb", hugePNG(20000, 20000), "image/png")
	_, err := m.thumb(context.Background(), md, thumbRequest{W: 32, H: 32, Method: "crop"})
	var he *httputil.Error
	if !errors.As(err, &he) || he.Status != 413 || he.Code != "M_TOO_LARGE" {
		t.Fatalf("400-megapixel image: %v", err)
	}
	md.Origin = "remote.test" // the same from another server is a 502
	_, err = m.thumb(context.Background(), md, thumbRequest{W: 32, H: 32, Method: "crop"})
	if !errors.As(err, &he) || he.Status != 502 || he.Code != "M_TOO_LARGE" {
		t.Fatalf("remote huge image: %v", err)
	}
}
