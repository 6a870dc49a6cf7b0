package mediaapi

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"image"
	"image/color"
	_ "image/gif" // registers the GIF decoder
	"image/jpeg"
	"image/png"
	"io"
	"math"

	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp" // registers the WebP decoder
)

// Image handling for thumbnails: probing (format, size, orientation,
// animation) without decoding, choosing a size class, and rendering.

// thumbSize is a size class of thumbnails: a box and a method.
type thumbSize struct {
	W, H   int
	Method string // "crop" or "scale"
}

// thumbSizes are the classes the spec suggests servers produce, smallest
// first. Thumbnails are only ever made in these sizes, so each media has
// at most five.
var thumbSizes = []thumbSize{
	{32, 32, "crop"},
	{96, 96, "crop"},
	{320, 240, "scale"},
	{640, 480, "scale"},
	{800, 600, "scale"},
}

// maxPixels is the largest image (width x height) decoded for a
// thumbnail; bigger ones are refused before decoding (decompression
// bombs, and the memory of a small machine).
const maxPixels = 40_000_000

// maxAnimatedOriginal is the largest animated image served as its own
// thumbnail when a client asks for an animated one.
const maxAnimatedOriginal = 4 << 20

// imageInfo is what probing an image file tells.
type imageInfo struct {
	Format      string // "jpeg", "png", "gif" or "webp"
	W, H        int    // as displayed (after EXIF orientation)
	Orientation int    // EXIF orientation, 1..8
	Animated    bool
}

func (i imageInfo) contentType() string { return "image/" + i.Format }

// errNotImage: the content is not an image we can thumbnail.
var errNotImage = errors.New("media: not an image that can be thumbnailed")

// probeImage reads an image's header: format and dimensions, the EXIF
// orientation of a JPEG, whether a GIF or WebP is animated.
func probeImage(f io.ReadSeeker) (imageInfo, error) {
	cfg, format, err := image.DecodeConfig(bufio.NewReader(f))
	if err != nil {
		return imageInfo{}, errNotImage
	}
	info := imageInfo{Format: format, W: cfg.Width, H: cfg.Height, Orientation: 1}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return imageInfo{}, errNotImage
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return imageInfo{}, err
	}
	switch format {
	case "jpeg":
		info.Orientation = jpegOrientation(bufio.NewReader(f))
		if info.Orientation >= 5 {
			info.W, info.H = info.H, info.W
		}
	case "gif":
		info.Animated = gifFrames(bufio.NewReader(f), 2) > 1
	case "webp":
		var h [21]byte
		if _, err := io.ReadFull(f, h[:]); err == nil && string(h[12:16]) == "VP8X" {
			info.Animated = h[20]&0x02 != 0
		}
	case "png":
	default:
		return imageInfo{}, errNotImage
	}
	return info, nil
}

// outputSize is the size of a thumbnail of a w x h image in class t:
// "scale" fits the image in the box, keeping its aspect; "crop" fills the
// box (as far as the image reaches), cutting off what sticks out. Neither
// ever enlarges.
func outputSize(w, h int, t thumbSize) (int, int) {
	sx, sy := float64(t.W)/float64(w), float64(t.H)/float64(h)
	if t.Method == "crop" {
		s := math.Min(1, math.Max(sx, sy))
		return min(t.W, max(1, int(math.Round(float64(w)*s)))), min(t.H, max(1, int(math.Round(float64(h)*s))))
	}
	s := math.Min(1, math.Min(sx, sy))
	return max(1, int(math.Round(float64(w)*s))), max(1, int(math.Round(float64(h)*s)))
}

// pickSize chooses the smallest size class whose thumbnail of a w x h
// image is at least as large as the request asks (spec: "Thumbnails":
// never smaller than requested unless the original is; never enlarged).
// A crop request is answered by a scale class when no crop class is big
// enough (the client crops). original is true when the original itself
// is the answer: no class is big enough, or the chosen one would not
// shrink the image. size is then the class to use for a still copy.
func pickSize(w, h, reqW, reqH int, method string) (size thumbSize, original bool) {
	var classes []thumbSize
	for _, pass := range []string{method, "scale"} {
		for _, t := range thumbSizes {
			if t.Method == pass {
				classes = append(classes, t)
			}
		}
		if pass == "scale" {
			break
		}
	}
	wantW, wantH := min(reqW, w), min(reqH, h)
	if method != "crop" {
		wantW, wantH = outputSize(w, h, thumbSize{reqW, reqH, "scale"})
	}
	for _, t := range classes {
		ow, oh := outputSize(w, h, t)
		if ow >= wantW && oh >= wantH {
			return t, ow == w && oh == h
		}
	}
	return classes[len(classes)-1], true
}

// scaler resamples thumbnails. Catmull-Rom is sharp and, unlike the
// "approximate" scalers, looks at every source pixel when shrinking (no
// aliasing).
var scaler draw.Scaler = draw.CatmullRom

// renderThumbnail decodes an image and returns its thumbnail in class t:
// JPEG for a JPEG, PNG otherwise (the first frame of an animation).
func renderThumbnail(r io.Reader, info imageInfo, t thumbSize) ([]byte, string, error) {
	src, _, err := image.Decode(bufio.NewReader(r))
	if err != nil {
		return nil, "", errNotImage
	}
	box := t
	if info.Orientation >= 5 {
		// Work on the stored (unrotated) pixels with the box turned too.
		box.W, box.H = t.H, t.W
	}
	img := orient(resize(src, box), info.Orientation)
	var buf bytes.Buffer
	if info.Format == "jpeg" {
		err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 80})
		return buf.Bytes(), "image/jpeg", err
	}
	err = (&png.Encoder{CompressionLevel: png.DefaultCompression}).Encode(&buf, img)
	return buf.Bytes(), "image/png", err
}

// resize scales (and for "crop", centre-crops) src into class t.
func resize(src image.Image, t thumbSize) *image.RGBA {
	b := src.Bounds()
	w, h := b.Dx(), b.Dy()
	ow, oh := outputSize(w, h, t)
	sr := b
	if t.Method == "crop" {
		s := math.Min(1, math.Max(float64(t.W)/float64(w), float64(t.H)/float64(h)))
		cw := min(w, max(1, int(math.Round(float64(ow)/s))))
		ch := min(h, max(1, int(math.Round(float64(oh)/s))))
		x0, y0 := b.Min.X+(w-cw)/2, b.Min.Y+(h-ch)/2
		sr = image.Rect(x0, y0, x0+cw, y0+ch)
	}
	dst := image.NewRGBA(image.Rect(0, 0, ow, oh))
	// A large reduction first averages k x k blocks (cheap, and it looks at
	// every pixel), leaving at least twice the output size for the
	// resampling filter.
	if k := min(sr.Dx()/(2*ow), sr.Dy()/(2*oh)); k >= 2 {
		src = boxShrink(src, sr, k)
		sr = src.Bounds()
	}
	scaler.Scale(dst, dst.Bounds(), src, sr, draw.Src, nil)
	return dst
}

// boxShrink averages k x k blocks of src's rectangle sr (blocks at the
// right and bottom edges may be smaller), in premultiplied RGBA.
func boxShrink(src image.Image, sr image.Rectangle, k int) *image.RGBA {
	sw, sh := sr.Dx(), sr.Dy()
	dw, dh := (sw+k-1)/k, (sh+k-1)/k
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	sums := make([]uint64, 4*dw)
	ycc, _ := src.(*image.YCbCr)
	rgba, _ := src.(*image.RGBA)
	for by := 0; by < dh; by++ {
		clear(sums)
		y0, y1 := sr.Min.Y+by*k, min(sr.Min.Y+(by+1)*k, sr.Max.Y)
		for y := y0; y < y1; y++ {
			switch {
			case ycc != nil:
				for x := sr.Min.X; x < sr.Max.X; x++ {
					yi, ci := ycc.YOffset(x, y), ycc.COffset(x, y)
					r, g, b := color.YCbCrToRGB(ycc.Y[yi], ycc.Cb[ci], ycc.Cr[ci])
					j := 4 * ((x - sr.Min.X) / k)
					sums[j] += uint64(r)
					sums[j+1] += uint64(g)
					sums[j+2] += uint64(b)
					sums[j+3] += 255
				}
			case rgba != nil:
				row := rgba.Pix[rgba.PixOffset(sr.Min.X, y):]
				for i := 0; i < sw; i++ {
					p := row[4*i : 4*i+4 : 4*i+4]
					j := 4 * (i / k)
					sums[j] += uint64(p[0])
					sums[j+1] += uint64(p[1])
					sums[j+2] += uint64(p[2])
					sums[j+3] += uint64(p[3])
				}
			default:
				for x := sr.Min.X; x < sr.Max.X; x++ {
					r, g, b, a := src.At(x, y).RGBA()
					j := 4 * ((x - sr.Min.X) / k)
					sums[j] += uint64(r >> 8)
					sums[j+1] += uint64(g >> 8)
					sums[j+2] += uint64(b >> 8)
					sums[j+3] += uint64(a >> 8)
				}
			}
		}
		bh := uint64(y1 - y0)
		for bx := 0; bx < dw; bx++ {
			bw := uint64(min(k, sw-bx*k))
			n := bw * bh
			o := dst.PixOffset(bx, by)
			for c := 0; c < 4; c++ {
				dst.Pix[o+c] = uint8((sums[4*bx+c] + n/2) / n)
			}
		}
	}
	return dst
}

// orient applies an EXIF orientation (2..8) to an image.
func orient(src *image.RGBA, o int) *image.RGBA {
	if o < 2 || o > 8 {
		return src
	}
	w, h := src.Rect.Dx(), src.Rect.Dy()
	dw, dh := w, h
	if o >= 5 {
		dw, dh = h, w
	}
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	for y := 0; y < dh; y++ {
		for x := 0; x < dw; x++ {
			var sx, sy int
			switch o {
			case 2: // mirrored
				sx, sy = w-1-x, y
			case 3: // rotated 180°
				sx, sy = w-1-x, h-1-y
			case 4: // mirrored vertically
				sx, sy = x, h-1-y
			case 5: // transposed
				sx, sy = y, x
			case 6: // to be rotated 90° clockwise
				sx, sy = y, h-1-x
			case 7: // transversed
				sx, sy = w-1-y, h-1-x
			case 8: // to be rotated 90° anticlockwise
				sx, sy = w-1-y, x
			}
			si := src.PixOffset(src.Rect.Min.X+sx, src.Rect.Min.Y+sy)
			di := dst.PixOffset(x, y)
			copy(dst.Pix[di:di+4], src.Pix[si:si+4])
		}
	}
	return dst
}

// jpegOrientation returns the EXIF orientation of a JPEG (1 if none).
func jpegOrientation(br *bufio.Reader) int {
	var soi [2]byte
	if _, err := io.ReadFull(br, soi[:]); err != nil || soi[0] != 0xFF || soi[1] != 0xD8 {
		return 1
	}
	for {
		b, err := br.ReadByte()
		if err != nil || b != 0xFF {
			return 1
		}
		marker, err := br.ReadByte()
		for err == nil && marker == 0xFF {
			marker, err = br.ReadByte()
		}
		if err != nil {
			return 1
		}
		if marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8) {
			continue // no length
		}
		if marker == 0xDA || marker == 0xD9 {
			return 1 // image data: metadata comes before it
		}
		var l [2]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return 1
		}
		n := int(binary.BigEndian.Uint16(l[:])) - 2
		if n < 0 {
			return 1
		}
		if marker == 0xE1 && n >= 14 {
			data := make([]byte, n)
			if _, err := io.ReadFull(br, data); err != nil {
				return 1
			}
			if string(data[:6]) == "Exif\x00\x00" {
				return exifOrientation(data[6:])
			}
			continue
		}
		if _, err := br.Discard(n); err != nil {
			return 1
		}
	}
}

// exifOrientation reads tag 0x0112 from the first IFD of a TIFF header.
func exifOrientation(t []byte) int {
	if len(t) < 8 {
		return 1
	}
	var bo binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 1
	}
	if bo.Uint16(t[2:]) != 42 {
		return 1
	}
	off := int(bo.Uint32(t[4:]))
	if off < 8 || off+2 > len(t) {
		return 1
	}
	n := int(bo.Uint16(t[off:]))
	for i := 0; i < n; i++ {
		e := off + 2 + 12*i
		if e+12 > len(t) {
			break
		}
		if bo.Uint16(t[e:]) != 0x0112 {
			continue
		}
		if bo.Uint16(t[e+2:]) != 3 { // SHORT
			return 1
		}
		if v := int(bo.Uint16(t[e+8:])); v >= 1 && v <= 8 {
			return v
		}
		return 1
	}
	return 1
}

// gifFrames counts a GIF's frames, stopping at stop.
func gifFrames(br *bufio.Reader, stop int) int {
	var hdr [13]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return 0
	}
	if hdr[10]&0x80 != 0 {
		if _, err := br.Discard(3 << ((hdr[10] & 7) + 1)); err != nil {
			return 0
		}
	}
	frames := 0
	for {
		b, err := br.ReadByte()
		if err != nil {
			return frames
		}
		switch b {
		case 0x21: // extension: label, sub-blocks
			if _, err := br.ReadByte(); err != nil || !skipSubBlocks(br) {
				return frames
			}
		case 0x2C: // image descriptor
			frames++
			if frames >= stop {
				return frames
			}
			var d [9]byte
			if _, err := io.ReadFull(br, d[:]); err != nil {
				return frames
			}
			if d[8]&0x80 != 0 {
				if _, err := br.Discard(3 << ((d[8] & 7) + 1)); err != nil {
					return frames
				}
			}
			if _, err := br.ReadByte(); err != nil || !skipSubBlocks(br) { // LZW code size, data
				return frames
			}
		default: // 0x3B trailer, or garbage
			return frames
		}
	}
}

func skipSubBlocks(br *bufio.Reader) bool {
	for {
		n, err := br.ReadByte()
		if err != nil {
			return false
		}
		if n == 0 {
			return true
		}
		if _, err := br.Discard(int(n)); err != nil {
			return false
		}
	}
}
