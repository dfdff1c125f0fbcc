// Package demo runs the whole system in one process for a first look:
// a generated sample folder and embedded FastFileSrv that speak the real
// protocol to the gateway over real UDP sockets on loopback.
package demo

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
)

// SampleFiles lists what WriteSample creates, with sizes.
var SampleFiles = []struct {
	Path string
	Size int64 // 0: generated content of its own size
}{
	{"README.txt", 0},
	{"images/gradient.png", 0},
	{"docs/report.pdf", 0},
	{"videos/sample video.mp4", 64 << 20},
	{"data/random-1MiB.bin", 1 << 20},
	{"data/empty.txt", 0},
	{"nested/a/b/c/deep file.txt", 0},
}

// WriteSample fills dir with the sample folder. Content is deterministic,
// so every run and every server has the same bytes.
func WriteSample(dir string) error {
	for _, f := range SampleFiles {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("sample: %w", err)
		}
		var b []byte
		switch {
		case f.Path == "README.txt":
			b = []byte(readme)
		case strings.HasSuffix(f.Path, ".png"):
			b = gradientPNG()
		case strings.HasSuffix(f.Path, ".pdf"):
			b = tinyPDF("FS Chunk Protocol demo report", "Served in chunks by three FastFileSrv.")
		case f.Path == "data/empty.txt":
			b = nil
		case strings.HasSuffix(f.Path, "deep file.txt"):
			b = []byte("a file four folders down, with a space in its name\n")
		default:
			b = randomBytes(f.Size, uint64(len(f.Path)))
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return fmt.Errorf("sample: %w", err)
		}
	}
	return nil
}

const readme = `This folder is served by HttpGw through three FastFileSrv.

Every file you download was fetched in chunks, in parallel, from all the
servers holding it, over the FS Chunk Protocol (UDP, authenticated), and
reassembled by the gateway. Try:

  curl -O http://localhost:8080/videos/sample%20video.mp4
  curl -r 0-99 http://localhost:8080/README.txt
`

func randomBytes(n int64, seed uint64) []byte {
	r := rand.NewChaCha8([32]byte{byte(seed), 1, 2, 3})
	b := make([]byte, n)
	r.Read(b)
	return b
}

func gradientPNG() []byte {
	const w, h = 256, 256
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(255 - x/2 - y/2), 255})
		}
	}
	var buf bytes.Buffer
	png.Encode(&buf, img)
	return buf.Bytes()
}

// tinyPDF writes a valid one-page PDF with two lines of text, computing
// the cross-reference offsets so viewers open it without repair.
func tinyPDF(title, line string) []byte {
	stream := fmt.Sprintf("BT /F1 24 Tf 72 720 Td (%s) Tj ET\nBT /F1 12 Tf 72 690 Td (%s) Tj ET\n", title, line)
	objs := []string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
		fmt.Sprintf("<< /Length %d >>\nstream\n%sendstream", len(stream), stream),
		"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
	}
	var b bytes.Buffer
	b.WriteString("%PDF-1.4\n")
	offs := make([]int, len(objs))
	for i, o := range objs {
		offs[i] = b.Len()
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", i+1, o)
	}
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(objs)+1)
	for _, o := range offs {
		fmt.Fprintf(&b, "%010d 00000 n \n", o)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(objs)+1, xref)
	return b.Bytes()
}
