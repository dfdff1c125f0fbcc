package httpfront

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// randomBytes returns n deterministic pseudo-random bytes.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func failing(p string, data []byte, at int64, err error) *fakeFile {
	f := newFile(p, data)
	f.failAt, f.failErr = at, err
	return f
}

func TestMethods(t *testing.T) {
	data := []byte("hello, world\n")
	ts := newTestServer(t, newFakeSource(newFile("a.txt", data)))
	tests := []struct {
		method     string
		target     string
		wantStatus int
		wantBody   string
		wantAllow  string
	}{
		{"GET", "/a.txt", 200, string(data), ""},
		{"HEAD", "/a.txt", 200, "", ""},
		{"POST", "/a.txt", 405, "method not allowed\n", "GET, HEAD"},
		{"PUT", "/a.txt", 405, "method not allowed\n", "GET, HEAD"},
		{"DELETE", "/", 405, "method not allowed\n", "GET, HEAD"},
		{"OPTIONS", "/a.txt", 405, "method not allowed\n", "GET, HEAD"},
		{"PATCH", "/nope", 405, "method not allowed\n", "GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			resp, body := ts.do(t, tt.method, tt.target)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if string(body) != tt.wantBody {
				t.Fatalf("body = %q, want %q", body, tt.wantBody)
			}
			if got := resp.Header.Get("Allow"); got != tt.wantAllow {
				t.Fatalf("Allow = %q, want %q", got, tt.wantAllow)
			}
			if tt.method == "HEAD" && resp.ContentLength != int64(len(data)) {
				t.Fatalf("HEAD Content-Length = %d, want %d", resp.ContentLength, len(data))
			}
		})
	}
}

func TestRanges(t *testing.T) {
	data := randomBytes(1, 1000)
	f := newFile("r.bin", data)
	etag := ETag(f.Hash)
	lastMod := testModTime.Format(http.TimeFormat)
	ts := newTestServer(t, newFakeSource(f))
	tests := []struct {
		name         string
		kv           []string
		wantStatus   int
		wantBody     []byte
		wantCRange   string
		wantNoCRange bool
	}{
		{"none", nil, 200, data, "", true},
		{"first byte", []string{"Range", "bytes=0-0"}, 206, data[:1], "bytes 0-0/1000", false},
		{"closed", []string{"Range", "bytes=10-19"}, 206, data[10:20], "bytes 10-19/1000", false},
		{"open-ended", []string{"Range", "bytes=990-"}, 206, data[990:], "bytes 990-999/1000", false},
		{"suffix", []string{"Range", "bytes=-7"}, 206, data[993:], "bytes 993-999/1000", false},
		{"suffix longer than file", []string{"Range", "bytes=-5000"}, 206, data, "bytes 0-999/1000", false},
		{"end clipped", []string{"Range", "bytes=995-5000"}, 206, data[995:], "bytes 995-999/1000", false},
		{"whole", []string{"Range", "bytes=0-"}, 206, data, "bytes 0-999/1000", false},
		{"unsatisfiable", []string{"Range", "bytes=1000-"}, 416, nil, "bytes */1000", false},
		{"unsatisfiable suffix", []string{"Range", "bytes=-0"}, 416, nil, "bytes */1000", false},
		{"malformed", []string{"Range", "bytes=abc"}, 416, nil, "", true},
		{"zero suffix among others", []string{"Range", "bytes=-0,0-4"}, 206, data[:5], "bytes 0-4/1000", false},
		{"other unit ignored", []string{"Range", "items=0-5"}, 200, data, "", true},
		{"unit case-insensitive", []string{"Range", "Bytes=0-4"}, 206, data[:5], "bytes 0-4/1000", false},
		{"no unit", []string{"Range", "0-4"}, 200, data, "", true},
		{"If-Range etag match", []string{"Range", "bytes=0-4", "If-Range", etag}, 206, data[:5], "bytes 0-4/1000", false},
		{"If-Range etag mismatch", []string{"Range", "bytes=0-4", "If-Range", `"0000"`}, 200, data, "", true},
		{"If-Range weak etag", []string{"Range", "bytes=0-4", "If-Range", "W/" + etag}, 200, data, "", true},
		{"If-Range date match", []string{"Range", "bytes=0-4", "If-Range", lastMod}, 206, data[:5], "bytes 0-4/1000", false},
		{"If-Range date mismatch", []string{"Range", "bytes=0-4", "If-Range", testModTime.Add(-time.Hour).Format(http.TimeFormat)}, 200, data, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := ts.do(t, "GET", "/r.bin", tt.kv...)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %q)", resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantBody != nil && !bytes.Equal(body, tt.wantBody) {
				t.Fatalf("body differs: got %d bytes, want %d", len(body), len(tt.wantBody))
			}
			cr := resp.Header.Get("Content-Range")
			if tt.wantNoCRange && cr != "" {
				t.Fatalf("unexpected Content-Range %q", cr)
			}
			if tt.wantCRange != "" && cr != tt.wantCRange {
				t.Fatalf("Content-Range = %q, want %q", cr, tt.wantCRange)
			}
			if resp.StatusCode < 300 {
				if got := resp.Header.Get("Accept-Ranges"); got != "bytes" {
					t.Fatalf("Accept-Ranges = %q", got)
				}
				if got := resp.Header.Get("ETag"); got != etag {
					t.Fatalf("ETag = %q, want %q", got, etag)
				}
			}
		})
	}
}

// readMultipart parses a multipart/byteranges response into its parts'
// Content-Range headers and bodies.
func readMultipart(t *testing.T, resp *http.Response, body []byte) (ranges []string, parts [][]byte) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/byteranges" {
		t.Fatalf("Content-Type = %q (%v), want multipart/byteranges", resp.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return ranges, parts
		}
		if err != nil {
			t.Fatalf("NextPart: %v", err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatalf("reading part: %v", err)
		}
		ranges = append(ranges, p.Header.Get("Content-Range"))
		parts = append(parts, b)
	}
}

func TestMultipartRanges(t *testing.T) {
	data := randomBytes(2, 1000)
	ts := newTestServer(t, newFakeSource(newFile("m.pdf", data)))
	resp, body := ts.do(t, "GET", "/m.pdf", "Range", "bytes=500-599,0-9,-5,200-299")
	if resp.StatusCode != 206 {
		t.Fatalf("status = %d", resp.StatusCode)
	}
	if resp.ContentLength != int64(len(body)) {
		t.Fatalf("Content-Length %d, body %d", resp.ContentLength, len(body))
	}
	ranges, parts := readMultipart(t, resp, body)
	want := []struct {
		cr   string
		data []byte
	}{
		{"bytes 0-9/1000", data[0:10]},
		{"bytes 200-299/1000", data[200:300]},
		{"bytes 500-599/1000", data[500:600]},
		{"bytes 995-999/1000", data[995:]},
	}
	if len(parts) != len(want) {
		t.Fatalf("got %d parts, want %d", len(parts), len(want))
	}
	for i, w := range want {
		if ranges[i] != w.cr || !bytes.Equal(parts[i], w.data) {
			t.Errorf("part %d: Content-Range %q (want %q), %d bytes, equal=%v", i, ranges[i], w.cr, len(parts[i]), bytes.Equal(parts[i], w.data))
		}
	}
}

func TestConditional(t *testing.T) {
	data := []byte("conditional content")
	f := newFile("c.txt", data)
	etag := ETag(f.Hash)
	ts := newTestServer(t, newFakeSource(f))
	before := testModTime.Add(-time.Hour).Format(http.TimeFormat)
	tests := []struct {
		name       string
		kv         []string
		wantStatus int
	}{
		{"If-None-Match match", []string{"If-None-Match", etag}, 304},
		{"If-None-Match list", []string{"If-None-Match", `"x", ` + etag}, 304},
		{"If-None-Match weak match", []string{"If-None-Match", "W/" + etag}, 304},
		{"If-None-Match star", []string{"If-None-Match", "*"}, 304},
		{"If-None-Match mismatch", []string{"If-None-Match", `"nope"`}, 200},
		{"If-Modified-Since same", []string{"If-Modified-Since", testModTime.Format(http.TimeFormat)}, 304},
		{"If-Modified-Since later", []string{"If-Modified-Since", testModTime.Add(time.Hour).Format(http.TimeFormat)}, 304},
		{"If-Modified-Since earlier", []string{"If-Modified-Since", before}, 200},
		{"If-None-Match wins over IMS", []string{"If-None-Match", `"nope"`, "If-Modified-Since", testModTime.Format(http.TimeFormat)}, 200},
		{"If-Match mismatch", []string{"If-Match", `"nope"`}, 412},
		{"If-Match match", []string{"If-Match", etag}, 200},
		{"If-Unmodified-Since earlier", []string{"If-Unmodified-Since", before}, 412},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opens := ts.src.opens.Load()
			resp, body := ts.do(t, "GET", "/c.txt", tt.kv...)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			switch tt.wantStatus {
			case 304:
				if len(body) != 0 {
					t.Fatalf("304 with body %q", body)
				}
				if got := resp.Header.Get("ETag"); got != etag {
					t.Fatalf("304 ETag = %q, want %q", got, etag)
				}
			case 200:
				if string(body) != string(data) {
					t.Fatalf("body = %q", body)
				}
			}
			if tt.wantStatus != 200 && ts.src.opens.Load() != opens {
				t.Fatalf("a %d response opened the content", tt.wantStatus)
			}
		})
	}
}

func TestHeaders(t *testing.T) {
	hash := [32]byte{0xde, 0xad, 0xbe, 0xef}
	mk := func(p string) *fakeFile {
		f := newFile(p, []byte("<html>data</html>"))
		f.Hash = hash
		return f
	}
	ts := newTestServer(t, newFakeSource(mk("doc.pdf"), mk("page.html"), mk("PIC.PNG"),
		mk("x.unknownext"), mk("noext"), mk("dir/a b.json")))
	etagRE := regexp.MustCompile(`^"[0-9a-f]{64}"$`)
	tests := []struct {
		target string
		ctype  string
	}{
		{"/doc.pdf", "application/pdf"},
		{"/page.html", "text/html; charset=utf-8"},
		{"/PIC.PNG", "image/png"},
		{"/x.unknownext", "application/octet-stream"},
		{"/noext", "application/octet-stream"},
		{"/dir/a%20b.json", "application/json"},
	}
	for _, tt := range tests {
		for _, method := range []string{"GET", "HEAD"} {
			t.Run(method+tt.target, func(t *testing.T) {
				opens := ts.src.opens.Load()
				resp, _ := ts.do(t, method, tt.target)
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				if got := resp.Header.Get("Content-Type"); got != tt.ctype {
					t.Errorf("Content-Type = %q, want %q", got, tt.ctype)
				}
				etag := resp.Header.Get("ETag")
				if !etagRE.MatchString(etag) || etag != `"`+hex.EncodeToString(hash[:])+`"` {
					t.Errorf("ETag = %q", etag)
				}
				if got := resp.Header.Get("Last-Modified"); got != testModTime.Format(http.TimeFormat) {
					t.Errorf("Last-Modified = %q", got)
				}
				if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
					t.Errorf("X-Content-Type-Options = %q", got)
				}
				// HEAD must not fetch anything, not even to sniff.
				if method == "HEAD" && ts.src.opens.Load() != opens {
					t.Errorf("HEAD opened the content")
				}
			})
		}
	}
}

func TestZeroLength(t *testing.T) {
	ts := newTestServer(t, newFakeSource(newFile("empty.txt", nil)))
	for _, kv := range [][]string{nil, {"Range", "bytes=0-"}, {"Range", "bytes=5-10"}} {
		resp, body := ts.do(t, "GET", "/empty.txt", kv...)
		if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != 0 {
			t.Fatalf("%v: status %d, Content-Length %d, body %q", kv, resp.StatusCode, resp.ContentLength, body)
		}
		if resp.Header.Get("ETag") == "" {
			t.Fatalf("no ETag")
		}
	}
}

func TestNotFound(t *testing.T) {
	ts := newTestServer(t, newFakeSource(newFile("a/b.txt", []byte("x"))))
	for _, target := range []string{"/nope", "/a/nope", "/a/b.txt/", "/a/b.txt/c", "/nodir/"} {
		resp, body := ts.do(t, "GET", target)
		if resp.StatusCode != 404 {
			t.Errorf("%s: status %d, want 404", target, resp.StatusCode)
		}
		if string(body) != "not found\n" {
			t.Errorf("%s: body %q", target, body)
		}
	}
}

type wrappedErr struct{ err error }

func (w wrappedErr) Error() string { return "chunk 3 from 10.0.0.7: " + w.err.Error() }
func (w wrappedErr) Unwrap() error { return w.err }

// TestUpstreamErrorsBeforeHeaders checks that a failure before any body byte
// is sent replaces the response with an honest status.
func TestUpstreamErrorsBeforeHeaders(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(map[bool]string{false: "copy", true: "direct"}[direct], func(t *testing.T) { testUpstreamErrorsBeforeHeaders(t, direct) })
	}
}

func testUpstreamErrorsBeforeHeaders(t *testing.T, direct bool) {
	data := randomBytes(3, 100_000)
	noHolders := newFile("noholders.bin", data)
	noHolders.Holders = 0
	openUnavail := newFile("openunavail.bin", data)
	openUnavail.openErr = fmt.Errorf("open: %w", ErrUnavailable)
	openOther := newFile("openother.bin", data)
	openOther.openErr = errors.New("udp: connection refused")
	short := newFile("short.bin", data[:10])
	short.Size = int64(len(data)) // the backends have less than the index says
	src := newFakeSource(
		noHolders, openUnavail, openOther, short,
		failing("unavail.bin", data, 0, wrappedErr{ErrUnavailable}),
		failing("timeout.bin", data, 0, fmt.Errorf("fetch: %w", ErrUpstreamTimeout)),
		failing("deadline.bin", data, 0, context.DeadlineExceeded),
		failing("other.bin", data, 0, errors.New("checksum mismatch")),
		failing("rangefail.bin", data, 5000, wrappedErr{ErrUnavailable}),
	)
	src.direct = direct
	ts := newTestServer(t, src)
	tests := []struct {
		target     string
		kv         []string
		wantStatus int
		wantOpen   bool
	}{
		{"/noholders.bin", nil, 503, false},
		{"/openunavail.bin", nil, 503, true},
		{"/openother.bin", nil, 502, true},
		{"/unavail.bin", nil, 503, true},
		{"/timeout.bin", nil, 504, true},
		{"/deadline.bin", nil, 504, true},
		{"/other.bin", nil, 502, true},
		{"/short.bin", []string{"Range", "bytes=50-"}, 502, true},
		{"/rangefail.bin", []string{"Range", "bytes=6000-6999"}, 503, true},
		{"/unavail.bin", []string{"Range", "bytes=-10"}, 503, true},
		{"/timeout.bin", []string{"Range", "bytes=0-0"}, 504, true},
	}
	for _, tt := range tests {
		t.Run(tt.target+strings.Join(tt.kv, "="), func(t *testing.T) {
			ts.src.mu.Lock()
			before := len(ts.src.ctxs)
			ts.src.mu.Unlock()
			resp, body := ts.do(t, "GET", tt.target, tt.kv...)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %q)", resp.StatusCode, tt.wantStatus, body)
			}
			if got := resp.Header.Get("Retry-After"); (tt.wantStatus == 503) != (got == "1") {
				t.Fatalf("Retry-After = %q for %d", got, tt.wantStatus)
			}
			for _, h := range []string{"ETag", "Content-Range", "Last-Modified", "Accept-Ranges"} {
				if v := resp.Header.Get(h); v != "" {
					t.Errorf("error response leaked %s: %q", h, v)
				}
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
				t.Errorf("Content-Type = %q", ct)
			}
			if len(body) == 0 || len(body) > 100 || strings.Contains(string(body), "10.0.0.7") {
				t.Errorf("body = %q: want a short message without backend details", body)
			}
			ts.src.mu.Lock()
			opened := len(ts.src.ctxs) > before
			ts.src.mu.Unlock()
			if opened != tt.wantOpen {
				t.Errorf("Open called = %v, want %v", opened, tt.wantOpen)
			}
		})
	}
	// Every Content that was opened was closed, and every context given to
	// Open was cancelled.
	ts.waitRecords(t, len(tests))
	if o, c := src.opens.Load(), src.closes.Load(); o != c {
		t.Errorf("opened %d contents, closed %d", o, c)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	for i, ctx := range src.ctxs {
		if ctx.Err() == nil {
			t.Errorf("context %d passed to Open not cancelled", i)
		}
	}
}

// TestTruncatedBody checks that a failure after body bytes went out is
// visible to the client as a broken transfer.
func TestTruncatedBody(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(map[bool]string{false: "copy", true: "direct"}[direct], func(t *testing.T) { testTruncatedBody(t, direct) })
	}
}

func testTruncatedBody(t *testing.T, direct bool) {
	data := randomBytes(4, 1<<20)
	src := newFakeSource(
		failing("mid.bin", data, 300_000, wrappedErr{ErrUnavailable}),
		failing("late.bin", data, 1<<20-1, errors.New("boom")),
	)
	src.direct = direct
	ts := newTestServer(t, src)
	tests := []struct {
		target    string
		kv        []string
		multipart bool
		early     bool // may fail before the status line reached the client
	}{
		{"/mid.bin", nil, false, false},
		{"/late.bin", nil, false, false},
		{"/mid.bin", []string{"Range", "bytes=100000-"}, false, false},
		{"/mid.bin", []string{"Range", "bytes=0-9,100000-"}, true, false},
		{"/mid.bin", []string{"Range", "bytes=0-9,299990-"}, true, true},
	}
	for i, tt := range tests {
		t.Run(tt.target+strings.Join(tt.kv, "="), func(t *testing.T) {
			defer func() {
				rec := ts.waitRecords(t, i+1)[i]
				if rec.Err == nil || rec.Bytes == 0 {
					t.Errorf("access record %+v: want the error and the bytes sent", rec)
				}
			}()
			req, _ := http.NewRequest("GET", ts.URL+tt.target, nil)
			for i := 0; i+1 < len(tt.kv); i += 2 {
				req.Header.Set(tt.kv[i], tt.kv[i+1])
			}
			resp, err := ts.Client().Do(req)
			if err != nil {
				if !tt.early {
					t.Fatalf("request failed: %v", err)
				}
				// The failure came so early that the status line was
				// still in net/http's buffer when the connection was
				// aborted: the client sees a failed request, which is
				// just as good.
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 && resp.StatusCode != 206 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			body, err := io.ReadAll(resp.Body)
			if err == nil {
				t.Fatalf("read %d bytes of %d without error: truncation not signalled", len(body), resp.ContentLength)
			}
			if int64(len(body)) >= resp.ContentLength {
				t.Fatalf("got %d bytes, Content-Length %d", len(body), resp.ContentLength)
			}
			if tt.multipart {
				if _, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); params["boundary"] != "" {
					// The body must not parse as a complete multipart
					// document: the closing boundary is missing.
					mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
					for {
						p, err := mr.NextPart()
						if err == nil {
							_, err = io.Copy(io.Discard, p)
						}
						if err == io.EOF {
							t.Fatal("truncated multipart body parsed as complete")
						}
						if err != nil {
							break
						}
					}
				}
			}
		})
	}
	if o, c := src.opens.Load(), src.closes.Load(); o != c {
		t.Errorf("opened %d contents, closed %d", o, c)
	}
}

// TestRandomRanges compares 200 random range requests, single and multiple,
// against a random 1 MiB file.
func TestRandomRanges(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(map[bool]string{false: "copy", true: "direct"}[direct], func(t *testing.T) { testRandomRanges(t, direct) })
	}
}

func testRandomRanges(t *testing.T, direct bool) {
	const size = 1 << 20
	data := randomBytes(5, size)
	src := newFakeSource(newFile("big.bin", data))
	src.direct = direct
	ts := newTestServer(t, src)
	rng := rand.New(rand.NewPCG(6, 7))
	type span struct{ start, end int64 } // [start, end)
	for i := range 200 {
		n := 1
		if rng.IntN(4) == 0 {
			n = 2 + rng.IntN(3)
		}
		var specs []string
		var want []span
		for range n {
			var sp span
			switch rng.IntN(3) {
			case 0: // closed, end possibly past EOF
				sp.start = rng.Int64N(size)
				last := sp.start + rng.Int64N(size/4+1)
				specs = append(specs, fmt.Sprintf("%d-%d", sp.start, last))
				sp.end = min(last+1, size)
			case 1: // open-ended
				sp.start = rng.Int64N(size)
				specs = append(specs, fmt.Sprintf("%d-", sp.start))
				sp.end = size
			case 2: // suffix
				l := 1 + rng.Int64N(size/4)
				specs = append(specs, fmt.Sprintf("-%d", l))
				sp.start, sp.end = size-l, size
			}
			want = append(want, sp)
		}
		hdr := "bytes=" + strings.Join(specs, ",")
		resp, body := ts.do(t, "GET", "/big.bin", "Range", hdr)
		// Served sorted, with overlapping ranges and those less than 80
		// bytes apart merged.
		slices.SortFunc(want, func(a, b span) int { return cmp.Compare(a.start, b.start) })
		merged := want[:1]
		for _, sp := range want[1:] {
			if last := &merged[len(merged)-1]; sp.start <= last.end+80 {
				last.end = max(last.end, sp.end)
			} else {
				merged = append(merged, sp)
			}
		}
		want, n = merged, len(merged)
		switch {
		case n == 1:
			sp := want[0]
			wantCR := fmt.Sprintf("bytes %d-%d/%d", sp.start, sp.end-1, size)
			if resp.StatusCode != 206 || resp.Header.Get("Content-Range") != wantCR ||
				!bytes.Equal(body, data[sp.start:sp.end]) {
				t.Fatalf("#%d %s: status %d, Content-Range %q (want %q), %d bytes", i, hdr,
					resp.StatusCode, resp.Header.Get("Content-Range"), wantCR, len(body))
			}
		default:
			if resp.StatusCode != 206 {
				t.Fatalf("#%d %s: status %d", i, hdr, resp.StatusCode)
			}
			crs, parts := readMultipart(t, resp, body)
			if len(parts) != n {
				t.Fatalf("#%d %s: %d parts, want %d", i, hdr, len(parts), n)
			}
			for j, sp := range want {
				wantCR := fmt.Sprintf("bytes %d-%d/%d", sp.start, sp.end-1, size)
				if crs[j] != wantCR || !bytes.Equal(parts[j], data[sp.start:sp.end]) {
					t.Fatalf("#%d %s part %d: Content-Range %q (want %q), %d bytes", i, hdr, j, crs[j], wantCR, len(parts[j]))
				}
			}
		}
	}
	if direct && src.directWrites.Load() == 0 {
		t.Error("DirectWriter never used")
	}
}

func TestIndex(t *testing.T) {
	src := newFakeSource(
		newFile("docs/a b.pdf", randomBytes(7, 1536)),
		newFile("docs/<img src=x onerror=alert(1)>.txt", []byte("x")),
		newFile("docs/javascript:alert(1)", []byte("x")),
		newFile("docs/sub/deep.bin", randomBytes(8, 3<<20)),
		newFile("top.txt", []byte("hello")),
		newFile("café.txt", []byte("hello")),
	)
	// Names a broken Source might return; they must not be shown.
	src.extra["docs"] = []DirEntry{{Name: ".."}, {Name: "x/y"}, {Name: "a\x00b"}, {Name: ""}}
	ts := newTestServer(t, src)

	t.Run("html", func(t *testing.T) {
		resp, body := ts.do(t, "GET", "/docs/", "Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		page := string(body)
		for _, want := range []string{
			`<title>Index of /docs/</title>`,
			`href="./a%20b.pdf"`, `>a b.pdf</a>`, `1.5 KiB`,
			`&lt;img src=x onerror=alert(1)&gt;.txt`,
			`href="./javascript:alert%281%29"`,
			`href="./sub/"`, `>sub/</a>`,
			`href="../"`,
			`2024-05-06 07:08:09`,
		} {
			if !strings.Contains(page, want) {
				t.Errorf("page lacks %q", want)
			}
		}
		for _, bad := range []string{"<img", "<script", "<link", `href="..`, "x/y", "http://", "https://", `href="javascript:`} {
			if bad == `href="..` {
				// The parent link is the only one allowed to start with "..".
				if strings.Count(page, bad) != 1 {
					t.Errorf("page has %d links starting with ..", strings.Count(page, bad))
				}
				continue
			}
			if strings.Contains(page, bad) {
				t.Errorf("page contains %q", bad)
			}
		}
		// Directories first, then names in byte order.
		if i, j := strings.Index(page, ">sub/<"), strings.Index(page, ">a b.pdf<"); i < 0 || j < 0 || i > j {
			t.Errorf("directory not listed first")
		}
		if resp.Header.Get("Vary") != "Accept" || resp.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("missing Vary or CSP: %v", resp.Header)
		}
	})

	t.Run("json", func(t *testing.T) {
		resp, body := ts.do(t, "GET", "/docs/", "Accept", "application/json")
		if resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("Content-Type %q", resp.Header.Get("Content-Type"))
		}
		var doc struct {
			Path    string `json:"path"`
			Entries []struct {
				Name     string    `json:"name"`
				Dir      bool      `json:"dir"`
				Size     int64     `json:"size"`
				Modified time.Time `json:"modified"`
				Holders  int       `json:"holders"`
			} `json:"entries"`
		}
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		if doc.Path != "docs" || len(doc.Entries) != 4 {
			t.Fatalf("path %q, %d entries: %s", doc.Path, len(doc.Entries), body)
		}
		e := doc.Entries[0]
		if e.Name != "sub" || !e.Dir {
			t.Errorf("first entry %+v, want directory sub", e)
		}
		e = doc.Entries[2]
		if e.Name != "a b.pdf" || e.Dir || e.Size != 1536 || e.Holders != 2 || !e.Modified.Equal(testModTime) {
			t.Errorf("entry %+v", e)
		}
	})

	t.Run("negotiation", func(t *testing.T) {
		for _, tt := range []struct {
			accept string
			json   bool
		}{
			{"", false},
			{"*/*", false},
			{"text/html", false},
			{"application/json", true},
			{"application/*", true},
			{"application/json;q=0.5, text/html", false},
			{"text/html;q=0.1, application/json", true},
			{"application/json, text/html", false},
			{"application/json;q=0", false},
			{"application/json;q=0.9, */*;q=0.1", true},
			{"text/*;q=0.5, application/json;q=0.4", false},
			{"garbage;;, application/json", true},
		} {
			resp, _ := ts.do(t, "GET", "/", "Accept", tt.accept)
			isJSON := resp.Header.Get("Content-Type") == "application/json"
			if isJSON != tt.json {
				t.Errorf("Accept %q: JSON = %v, want %v", tt.accept, isJSON, tt.json)
			}
		}
	})

	t.Run("root", func(t *testing.T) {
		_, body := ts.do(t, "GET", "/", "Accept", "application/json")
		var doc indexDoc
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range doc.Entries {
			names = append(names, e.Name)
		}
		if got := strings.Join(names, ","); doc.Path != "" || got != "docs,café.txt,top.txt" {
			t.Errorf("root path %q, entries %q", doc.Path, got)
		}
	})

	t.Run("redirect", func(t *testing.T) {
		ts2 := newTestServer(t, newFakeSource(newFile("my docs/x.txt", []byte("x"))))
		for _, tt := range []struct{ target, loc string }{
			{"/docs", "/docs/"},
			{"/docs/sub?x=1", "/docs/sub/?x=1"},
		} {
			resp, _ := ts.do(t, "GET", tt.target)
			if resp.StatusCode != 301 || resp.Header.Get("Location") != tt.loc {
				t.Errorf("%s: status %d, Location %q, want 301 %q", tt.target, resp.StatusCode, resp.Header.Get("Location"), tt.loc)
			}
		}
		resp, _ := ts2.do(t, "HEAD", "/my%20docs")
		if resp.StatusCode != 301 || resp.Header.Get("Location") != "/my%20docs/" {
			t.Errorf("status %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
		}
	})

	t.Run("head", func(t *testing.T) {
		resp, body := ts.do(t, "HEAD", "/docs/")
		if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength <= 0 {
			t.Errorf("status %d, Content-Length %d, body %d bytes", resp.StatusCode, resp.ContentLength, len(body))
		}
	})
}

func TestEmptyPoolIndex(t *testing.T) {
	for _, src := range []*fakeSource{newFakeSource(), {files: map[string]*fakeFile{}, dirs: map[string][]DirEntry{}}} {
		ts := newTestServer(t, src)
		resp, body := ts.do(t, "GET", "/")
		if resp.StatusCode != 200 || !strings.Contains(string(body), "(empty)") || !strings.HasSuffix(string(body), "</html>\n") {
			t.Errorf("HTML: status %d, body %q", resp.StatusCode, body)
		}
		resp, body = ts.do(t, "GET", "/", "Accept", "application/json")
		if resp.StatusCode != 200 || string(body) != `{"path":"","entries":[]}`+"\n" {
			t.Errorf("JSON: status %d, body %q", resp.StatusCode, body)
		}
	}
}

func TestAccessLog(t *testing.T) {
	data := randomBytes(9, 5000)
	ts := newTestServer(t, newFakeSource(newFile("a%b/f.bin", data)))
	ts.do(t, "GET", "/a%25b/f.bin", "Range", "bytes=0-99")
	ts.do(t, "HEAD", "/a%25b/f.bin")
	ts.do(t, "POST", "/x")
	ts.do(t, "GET", "/a%00")
	recs := ts.waitRecords(t, 4)
	want := []struct {
		method string
		path   string
		status int
		bytes  int64
		err    bool
	}{
		{"GET", "/a%25b/f.bin", 206, 100, false},
		{"HEAD", "/a%25b/f.bin", 200, 0, false},
		{"POST", "/x", 405, int64(len("method not allowed\n")), false},
		{"GET", "/a%00", 400, int64(len("bad request path\n")), true},
	}
	for i, w := range want {
		r := recs[i]
		if r.Method != w.method || r.Path != w.path || r.Status != w.status || r.Bytes != w.bytes ||
			(r.Err != nil) != w.err || r.Remote == "" || r.Duration <= 0 {
			t.Errorf("record %d = %+v, want %+v", i, r, w)
		}
	}
	ts.mu.Lock()
	logText := ts.logBuf.String()
	ts.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(logText), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d log lines, want 4:\n%s", len(lines), logText)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"method", "path", "status", "bytes", "dur", "remote"} {
		if _, ok := m[k]; !ok {
			t.Errorf("log line lacks %q: %s", k, lines[0])
		}
	}
	if m["level"] != "INFO" || m["status"] != float64(206) || m["bytes"] != float64(100) {
		t.Errorf("log line %s", lines[0])
	}
}

// maxWriteRecorder records the largest single Write.
type maxWriteRecorder struct {
	*httptest.ResponseRecorder
	max int
}

func (m *maxWriteRecorder) Write(p []byte) (int, error) {
	m.max = max(m.max, len(p))
	return m.ResponseRecorder.Write(p)
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestLargeWrites(t *testing.T) {
	data := randomBytes(10, 1<<20)
	h := NewHandler(newFakeSource(newFile("big.bin", data)), Options{Logger: discardLogger()})
	rec := &maxWriteRecorder{ResponseRecorder: httptest.NewRecorder()}
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/big.bin", nil))
	if rec.Code != 200 || !bytes.Equal(rec.Body.Bytes(), data) {
		t.Fatalf("status %d, %d bytes", rec.Code, rec.Body.Len())
	}
	if rec.max < 32<<10 {
		t.Fatalf("largest write %d bytes; the wrapper must not fragment ServeContent's copy", rec.max)
	}
}

func TestDeferredWriterController(t *testing.T) {
	// Through a real server: http.NewResponseController must reach the
	// connection via Unwrap, and Flush must commit the pending status.
	var gotDeadlineErr, gotFlushErr error
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := &deferredWriter{rw: w}
		d.Header().Set("X-Test", "1")
		d.WriteHeader(http.StatusAccepted)
		if _, ok := any(d).(http.Flusher); !ok {
			t.Error("deferredWriter is not an http.Flusher")
		}
		rc := http.NewResponseController(d)
		gotDeadlineErr = rc.SetWriteDeadline(time.Now().Add(time.Minute))
		gotFlushErr = rc.Flush()
		if !d.committed || d.status != http.StatusAccepted {
			t.Errorf("Flush did not commit: committed %v status %d", d.committed, d.status)
		}
		d.WriteHeader(http.StatusTeapot) // ignored after commit
		_, _ = io.WriteString(d, "ok")
	})
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || string(body) != "ok" || resp.Header.Get("X-Test") != "1" {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	if gotDeadlineErr != nil || gotFlushErr != nil {
		t.Fatalf("SetWriteDeadline: %v, Flush: %v", gotDeadlineErr, gotFlushErr)
	}

	// Nothing is sent until the first Write or commit.
	rec := httptest.NewRecorder()
	d := &deferredWriter{rw: rec}
	d.WriteHeader(http.StatusPartialContent)
	if rec.Flushed || rec.Code != 200 || d.committed { // 200 is the recorder's untouched default
		t.Fatal("WriteHeader was not deferred")
	}
	d.respond(http.StatusBadGateway, "upstream fetch failed")
	if rec.Code != http.StatusBadGateway || rec.Body.String() != "upstream fetch failed\n" ||
		rec.Header().Get("Content-Length") != strconv.Itoa(len("upstream fetch failed\n")) {
		t.Fatalf("respond: %d %q %v", rec.Code, rec.Body.String(), rec.Header())
	}
}

// TestAbortPanics checks the mechanism behind TestTruncatedBody directly:
// over a real connection net/http would also close a connection whose body
// is shorter than its Content-Length, which hides a missing abort.
func TestAbortPanics(t *testing.T) {
	data := randomBytes(12, 200_000)
	src := newFakeSource(failing("mid.bin", data, 100_000, errors.New("boom")),
		failing("first.bin", data, 0, errors.New("boom")))
	h := NewHandler(src, Options{Logger: discardLogger()})
	serve := func(target string) (rec *httptest.ResponseRecorder, panicked any) {
		rec = httptest.NewRecorder()
		defer func() { panicked = recover() }()
		h.ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
		return rec, nil
	}
	rec, p := serve("/mid.bin")
	if p != http.ErrAbortHandler {
		t.Fatalf("mid-body failure: panic %v, want http.ErrAbortHandler", p)
	}
	if rec.Code != 200 || rec.Body.Len() != 100_000 {
		t.Fatalf("mid-body failure: status %d after %d bytes", rec.Code, rec.Body.Len())
	}
	rec, p = serve("/first.bin")
	if p != nil || rec.Code != http.StatusBadGateway {
		t.Fatalf("failure before the body: panic %v, status %d; want 502 without panic", p, rec.Code)
	}
	if o, c := src.opens.Load(), src.closes.Load(); o != 2 || c != 2 {
		t.Fatalf("opened %d, closed %d; want 2 and 2", o, c)
	}
}

// TestFilesSandboxed: a served file carries a sandbox CSP, so that an
// .html or .svg from a server cannot run script on the gateway's
// origin; the gateway's own index page keeps its own policy (styles, no
// sandbox), and a 206 gets the same policy as a 200.
func TestFilesSandboxed(t *testing.T) {
	ts := newTestServer(t, newFakeSource(
		newFile("x/evil.html", []byte("<script>alert(document.domain)</script>")),
		newFile("x/evil.svg", []byte(`<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>`)),
	))
	for _, c := range []struct {
		path string
		kv   []string
	}{{"/x/evil.html", nil}, {"/x/evil.svg", nil}, {"/x/evil.html", []string{"Range", "bytes=0-3"}}} {
		resp, _ := ts.do(t, "GET", c.path, c.kv...)
		csp := resp.Header.Get("Content-Security-Policy")
		if resp.StatusCode/100 != 2 || !strings.Contains(csp, "sandbox") || strings.Contains(csp, "allow-scripts") {
			t.Errorf("%s %v: status %d, Content-Security-Policy %q; want a sandbox without scripts", c.path, c.kv, resp.StatusCode, csp)
		}
	}
	resp, body := ts.do(t, "GET", "/x/")
	if csp := resp.Header.Get("Content-Security-Policy"); resp.StatusCode != 200 || strings.Contains(csp, "sandbox") || !strings.Contains(string(body), "evil.svg") {
		t.Errorf("index: status %d, Content-Security-Policy %q", resp.StatusCode, csp)
	}
}

// TestIndexCapped: a huge folder lists its first MaxListing entries and
// counts the rest, in HTML and JSON.
func TestIndexCapped(t *testing.T) {
	var files []*fakeFile
	for i := range MaxListing + 7 {
		files = append(files, newFile(fmt.Sprintf("big/f%06d", i), []byte("x")))
	}
	ts := newTestServer(t, newFakeSource(files...))
	resp, body := ts.do(t, "GET", "/big/")
	if resp.StatusCode != 200 || strings.Count(string(body), "<tr><td><a href=\"./") != MaxListing ||
		!strings.Contains(string(body), "and 7 more not listed") || strings.Contains(string(body), fmt.Sprintf("f%06d", MaxListing)) {
		t.Errorf("HTML: status %d, %d rows", resp.StatusCode, strings.Count(string(body), "<tr><td><a href=\"./"))
	}
	resp, body = ts.do(t, "GET", "/big/", "Accept", "application/json")
	var doc indexDoc
	if err := json.Unmarshal(body, &doc); err != nil || resp.StatusCode != 200 || len(doc.Entries) != MaxListing || doc.Omitted != 7 {
		t.Errorf("JSON: status %d, %d entries, %d omitted, %v", resp.StatusCode, len(doc.Entries), doc.Omitted, err)
	}
}

// TestIndexFolderFields: a folder has no size, time or server count of its
// own; the JSON leaves them out instead of giving zeros, and the HTML shows
// no red "0" for it.
func TestIndexFolderFields(t *testing.T) {
	src := newFakeSource(newFile("f.txt", []byte("x")))
	src.extra[""] = []DirEntry{{Name: "empty", IsDir: true}}
	ts := newTestServer(t, src)
	_, body := ts.do(t, "GET", "/", "Accept", "application/json")
	var doc struct {
		Entries []map[string]any `json:"entries"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	for _, e := range doc.Entries {
		switch e["name"] {
		case "empty":
			for _, k := range []string{"size", "modified", "holders"} {
				if v, ok := e[k]; ok {
					t.Errorf("folder carries %s: %v", k, v)
				}
			}
		case "f.txt":
			if e["size"] != 1.0 || e["holders"] != 2.0 || e["modified"] == nil {
				t.Errorf("file entry %v", e)
			}
		}
	}
	_, body = ts.do(t, "GET", "/")
	page := string(body)
	row := page[strings.Index(page, `>empty/<`):]
	row = row[:strings.Index(row, "</tr>")]
	if strings.Contains(row, "down") || strings.Contains(row, ">0<") {
		t.Errorf("folder row shows a server count: %s", row)
	}
}

// TestStartingUnknownPath503: while the source is starting (its servers
// are still registering) a path it does not know is 503 with Retry-After,
// not a 404 that clients and caches take as final; known files and
// directories are served as usual, and once started it is 404 again.
func TestStartingUnknownPath503(t *testing.T) {
	src := newFakeSource(newFile("d/a.txt", []byte("hello")))
	ts := newTestServer(t, src)
	src.starting.Store(true)
	resp, body := ts.do(t, "GET", "/missing.txt")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || !strings.Contains(string(body), "just started") {
		t.Fatalf("starting, unknown path: %d Retry-After %q %q", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if resp, _ := ts.do(t, "GET", "/d/a.txt"); resp.StatusCode != 200 {
		t.Fatalf("starting, known file: %d", resp.StatusCode)
	}
	if resp, _ := ts.do(t, "GET", "/d/"); resp.StatusCode != 200 {
		t.Fatalf("starting, known directory: %d", resp.StatusCode)
	}
	src.starting.Store(false)
	if resp, _ := ts.do(t, "GET", "/missing.txt"); resp.StatusCode != 404 {
		t.Fatalf("started, unknown path: %d, want 404", resp.StatusCode)
	}
}
