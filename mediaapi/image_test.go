package mediaapi

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"testing"
)

// testImage is a w x h picture: red on the left half, blue on the right.
func testImage(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.NRGBA{R: 255, A: 255}
			if x >= w/2 {
				c = color.NRGBA{B: 255, A: 255}
			}
			img.SetNRGBA(x, y, c)
		}
	}
	return img
}

func encodePNG(t testing.TB, img image.Image) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// encodeGIF writes frames copies of img (an animation if frames > 1).
func encodeGIF(t testing.TB, img image.Image, frames int) []byte {
	pal := color.Palette{color.NRGBA{R: 255, A: 255}, color.NRGBA{B: 255, A: 255}, color.Transparent}
	p := image.NewPaletted(img.Bounds(), pal)
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			p.Set(x, y, img.At(x, y))
		}
	}
	g := &gif.GIF{}
	for i := 0; i < frames; i++ {
		g.Image = append(g.Image, p)
		g.Delay = append(g.Delay, 10)
	}
	var b bytes.Buffer
	if err := gif.EncodeAll(&b, g); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// bitWriter writes bits least significant first (VP8L's order).
type bitWriter struct {
	buf   []byte
	acc   uint64
	nbits uint
}

func (w *bitWriter) write(v uint64, n uint) {
	w.acc |= v << w.nbits
	w.nbits += n
	for w.nbits >= 8 {
		w.buf = append(w.buf, byte(w.acc))
		w.acc >>= 8
		w.nbits -= 8
	}
}

func (w *bitWriter) bytes() []byte {
	if w.nbits > 0 {
		w.buf = append(w.buf, byte(w.acc))
	}
	return w.buf
}

// solidWebP is a lossless WebP (VP8L) of one colour: every prefix code
// has a single symbol, so the pixels take no bits at all.
func solidWebP(w, h int, c color.NRGBA) []byte {
	var bw bitWriter
	bw.write(0x2f, 8)
	bw.write(uint64(w-1), 14)
	bw.write(uint64(h-1), 14)
	bw.write(0, 1) // alpha_is_used
	bw.write(0, 3) // version
	bw.write(0, 1) // no transform
	bw.write(0, 1) // no color cache
	bw.write(0, 1) // no meta prefix codes
	for _, sym := range []uint8{c.G, c.R, c.B, c.A, 0} {
		bw.write(1, 1) // simple code
		bw.write(0, 1) // one symbol
		bw.write(1, 1) // 8-bit symbol
		bw.write(uint64(sym), 8)
	}
	data := bw.bytes()
	chunk := append([]byte("VP8L"), binary.LittleEndian.AppendUint32(nil, uint32(len(data)))...)
	chunk = append(chunk, data...)
	if len(data)%2 == 1 {
		chunk = append(chunk, 0)
	}
	out := append([]byte("RIFF"), binary.LittleEndian.AppendUint32(nil, uint32(4+len(chunk)))...)
	out = append(out, "WEBP"...)
	return append(out, chunk...)
}

// withOrientation inserts an EXIF APP1 segment with an orientation tag
// after a JPEG's SOI marker.
func withOrientation(jpg []byte, o uint16) []byte {
	tiff := []byte("MM\x00\x2a\x00\x00\x00\x08") // big-endian, IFD0 at 8
	tiff = binary.BigEndian.AppendUint16(tiff, 1)
	tiff = binary.BigEndian.AppendUint16(tiff, 0x0112)
	tiff = binary.BigEndian.AppendUint16(tiff, 3)
	tiff = binary.BigEndian.AppendUint32(tiff, 1)
	tiff = binary.BigEndian.AppendUint16(tiff, o)
	tiff = append(tiff, 0, 0, 0, 0, 0, 0) // value padding, next IFD
	seg := append([]byte("Exif\x00\x00"), tiff...)
	app1 := append([]byte{0xFF, 0xE1}, binary.BigEndian.AppendUint16(nil, uint16(len(seg)+2))...)
	app1 = append(app1, seg...)
	out := append([]byte{}, jpg[:2]...)
	out = append(out, app1...)
	return append(out, jpg[2:]...)
}

func TestProbeAndRenderEachFormat(t *testing.T) {
	img := testImage(1000, 500)
	cases := []struct {
		name, format, outType string
		data                  []byte
		animated              bool
	}{
		{"png", "png", "image/png", encodePNG(t, img), false},
		{"jpeg", "jpeg", "image/jpeg", encodeJPEG(t, img), false},
		{"gif", "gif", "image/png", encodeGIF(t, img, 1), false},
		{"animated gif", "gif", "image/png", encodeGIF(t, img, 3), true},
		{"webp", "webp", "image/png", solidWebP(1000, 500, color.NRGBA{R: 10, G: 200, B: 30, A: 255}), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			info, err := probeImage(bytes.NewReader(c.data))
			if err != nil {
				t.Fatal(err)
			}
			if info.Format != c.format || info.W != 1000 || info.H != 500 || info.Animated != c.animated {
				t.Fatalf("probe: %+v", info)
			}
			for _, tc := range []struct {
				size thumbSize
				w, h int
			}{
				{thumbSizes[0], 32, 32},   // crop 32x32
				{thumbSizes[1], 96, 96},   // crop 96x96
				{thumbSizes[2], 320, 160}, // scale into 320x240
				{thumbSizes[4], 800, 400}, // scale into 800x600
			} {
				out, ct, err := renderThumbnail(bytes.NewReader(c.data), info, tc.size)
				if err != nil {
					t.Fatal(err)
				}
				if ct != c.outType {
					t.Fatalf("%v: type %s, want %s", tc.size, ct, c.outType)
				}
				got, format, err := image.Decode(bytes.NewReader(out))
				if err != nil || "image/"+format != ct {
					t.Fatalf("%v: decoding the thumbnail: %v (%s)", tc.size, err, format)
				}
				if b := got.Bounds(); b.Dx() != tc.w || b.Dy() != tc.h {
					t.Fatalf("%v: thumbnail is %dx%d, want %dx%d", tc.size, b.Dx(), b.Dy(), tc.w, tc.h)
				}
				if c.format == "webp" {
					r, g, _, _ := got.At(tc.w/2, tc.h/2).RGBA()
					if r>>8 > 20 || g>>8 < 190 {
						t.Fatalf("webp thumbnail colour %v", got.At(tc.w/2, tc.h/2))
					}
				}
			}
		})
	}
}

func TestCropIsCentred(t *testing.T) {
	// 300x100: red | blue halves. A 96x96 crop takes the middle third at
	// 96/100 scale: red on the left, blue on the right.
	info := imageInfo{Format: "png", W: 300, H: 100, Orientation: 1}
	out, _, err := renderThumbnail(bytes.NewReader(encodePNG(t, testImage(300, 100))), info, thumbSizes[1])
	if err != nil {
		t.Fatal(err)
	}
	got, _ := png.Decode(bytes.NewReader(out))
	if got.Bounds().Dx() != 96 || got.Bounds().Dy() != 96 {
		t.Fatalf("size %v", got.Bounds())
	}
	if r, _, b, _ := got.At(5, 48).RGBA(); r>>8 < 200 || b>>8 > 50 {
		t.Fatalf("left edge is not red: %v", got.At(5, 48))
	}
	if r, _, b, _ := got.At(90, 48).RGBA(); b>>8 < 200 || r>>8 > 50 {
		t.Fatalf("right edge is not blue: %v", got.At(90, 48))
	}
}

func TestEXIFOrientation(t *testing.T) {
	// Stored 200x100 (red left, blue right) with orientation 6: shown
	// turned clockwise, 100x200 with red on top.
	jpg := withOrientation(encodeJPEG(t, testImage(200, 100)), 6)
	info, err := probeImage(bytes.NewReader(jpg))
	if err != nil {
		t.Fatal(err)
	}
	if info.Orientation != 6 || info.W != 100 || info.H != 200 {
		t.Fatalf("probe: %+v", info)
	}
	out, _, err := renderThumbnail(bytes.NewReader(jpg), info, thumbSize{64, 128, "scale"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := jpeg.Decode(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if got.Bounds().Dx() != 64 || got.Bounds().Dy() != 128 {
		t.Fatalf("size %v", got.Bounds())
	}
	if r, _, b, _ := got.At(32, 10).RGBA(); r>>8 < 200 || b>>8 > 60 {
		t.Fatalf("top is not red: %v", got.At(32, 10))
	}
	if r, _, b, _ := got.At(32, 118).RGBA(); b>>8 < 200 || r>>8 > 60 {
		t.Fatalf("bottom is not blue: %v", got.At(32, 118))
	}
	for o := 1; o <= 8; o++ {
		src := image.NewRGBA(image.Rect(0, 0, 3, 2))
		src.Pix[0] = 1 // mark (0,0)
		dst := orient(src, o)
		w, h := 3, 2
		if o >= 5 {
			w, h = 2, 3
		}
		if dst.Rect.Dx() != w || dst.Rect.Dy() != h {
			t.Fatalf("orientation %d: %v", o, dst.Rect)
		}
		n := 0
		for i := 0; i < len(dst.Pix); i += 4 {
			n += int(dst.Pix[i])
		}
		if n != 1 {
			t.Fatalf("orientation %d lost the marked pixel", o)
		}
	}
	if o := jpegOrientation(bufioReader(encodeJPEG(t, testImage(8, 8)))); o != 1 {
		t.Fatalf("no EXIF: orientation %d", o)
	}
}

func TestNotAnImage(t *testing.T) {
	for _, b := range [][]byte{[]byte("<html>hi</html>"), {}, []byte("GIF89a"), encodePNG(t, testImage(4, 4))[:30]} {
		if _, err := probeImage(bytes.NewReader(b)); err == nil {
			if _, _, err := renderThumbnail(bytes.NewReader(b), imageInfo{Format: "png", W: 4, H: 4}, thumbSizes[0]); err == nil {
				t.Fatalf("%q accepted", b)
			}
		}
	}
}

func TestPickSize(t *testing.T) {
	cases := []struct {
		name        string
		w, h        int // image
		rw, rh      int // request
		method      string
		want        thumbSize
		useOriginal bool
	}{
		{"avatar", 4000, 3000, 32, 32, "crop", thumbSizes[0], false},
		{"between crop sizes", 4000, 3000, 40, 40, "crop", thumbSizes[1], false},
		{"crop beyond crop sizes uses a big enough scale size", 4000, 3000, 200, 200, "crop", thumbSizes[2], false},
		{"crop 500x500 needs 800x600", 4000, 3000, 500, 500, "crop", thumbSizes[4], false},
		{"scale into 96x96", 4000, 3000, 96, 96, "scale", thumbSizes[2], false},
		{"scale exactly 640x480", 4000, 3000, 640, 480, "scale", thumbSizes[3], false},
		{"wide image, 600x100 box", 6000, 1000, 600, 100, "scale", thumbSizes[3], false},
		{"bigger than any size: the original", 4000, 3000, 1000, 1000, "scale", thumbSizes[4], true},
		{"image smaller than request: the original", 50, 40, 96, 96, "crop", thumbSizes[1], true},
		{"image smaller than the size class: the original", 300, 200, 96, 96, "scale", thumbSizes[2], true},
		{"tall image: 320x240 is too short, 640x480 is enough", 1000, 4000, 100, 300, "scale", thumbSizes[3], false},
	}
	for _, c := range cases {
		got, orig := pickSize(c.w, c.h, c.rw, c.rh, c.method)
		if got != c.want || orig != c.useOriginal {
			t.Errorf("%s: got %v original=%v, want %v original=%v", c.name, got, orig, c.want, c.useOriginal)
		}
		if !orig {
			// Never smaller than asked (as far as the image reaches).
			ow, oh := outputSize(c.w, c.h, got)
			ww, wh := min(c.rw, c.w), min(c.rh, c.h)
			if c.method == "scale" {
				ww, wh = outputSize(c.w, c.h, thumbSize{c.rw, c.rh, "scale"})
			}
			if ow < ww || oh < wh {
				t.Errorf("%s: %dx%d is smaller than %dx%d", c.name, ow, oh, ww, wh)
			}
		}
	}
}

func TestGIFFrames(t *testing.T) {
	img := testImage(10, 10)
	for _, n := range []int{1, 2, 5} {
		if got := gifFrames(bufioReader(encodeGIF(t, img, n)), 100); got != n {
			t.Fatalf("%d frames counted as %d", n, got)
		}
	}
}

func BenchmarkThumbnail12MP(b *testing.B) {
	jpg := encodeJPEG(b, testImage(4000, 3000))
	info, err := probeImage(bytes.NewReader(jpg))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := renderThumbnail(bytes.NewReader(jpg), info, thumbSizes[4]); err != nil {
			b.Fatal(err)
		}
	}
}
