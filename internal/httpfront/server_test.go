package httpfront

import (
	"bytes"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestHostilePaths sends request targets verbatim over a raw connection, so
// that no client library normalises them first.
func TestHostilePaths(t *testing.T) {
	src := newFakeSource(newFile("etc/passwd", []byte("root:x:0:0")), newFile("x", []byte("x")),
		newFile("a/b", []byte("b")), newFile("a/x", []byte("x")))
	ts := newTestServer(t, src)
	targets := []string{
		"/../etc/passwd",
		"/a/../etc/passwd",
		"/./x",
		"/%2e%2e/x",
		"/%2E%2E/etc/passwd",
		"/a/%2e%2e/%2e%2e/x",
		"/.%2e/x",
		"/a%00b",
		"/a%5cb",
		"/a%5c..%5cx",
		"/a%2fb",
		"/%c0%ae%c0%ae/x",
		"/%c0%af",
		"/%ff",
		"/a//b",
		"//etc/passwd",
		"/a%0d%0aX-Injected:%201",
		"/a%09b",
		"/" + strings.Repeat("a", MaxPathLen+1),
		"/" + strings.Repeat("%61", MaxPathLen/2) + "/" + strings.Repeat("%62", MaxPathLen/2),
	}
	// One connection for all of them: a 400 from the handler must not
	// close it.
	c := dialRaw(t, ts)
	for _, target := range targets {
		resp, body := c.roundTrip(t, "GET", getReq(target))
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s: status %d, want 400", target, resp.StatusCode)
		}
		if strings.Contains(string(body), "root:") || strings.Contains(string(body), "%") {
			t.Errorf("GET %s: body %q", target, body)
		}
	}
	if n := ts.newConn.Load(); n != 1 {
		t.Errorf("%d connections used, want 1", n)
	}
	// All of them reached the handler and were refused by CleanPath, not
	// by net/http.
	for i, rec := range ts.waitRecords(t, len(targets)) {
		if rec.Status != http.StatusBadRequest || rec.Err == nil {
			t.Errorf("%s: access record %+v", targets[i], rec)
		}
	}
	// Targets that net/http itself refuses still end up as 400.
	for _, target := range []string{"/a\\b", "/a b", "/a\x00b", "/a\x7fb"} {
		c := dialRaw(t, ts)
		resp, _ := c.roundTrip(t, "GET", getReq(target))
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %q: status %d, want 400", target, resp.StatusCode)
		}
	}
	// Sanity: the same server serves legitimate paths.
	resp, body := dialRaw(t, ts).roundTrip(t, "GET", getReq("/a/b"))
	if resp.StatusCode != 200 || string(body) != "b" {
		t.Fatalf("GET /a/b: %d %q", resp.StatusCode, body)
	}
}

// TestKeepAlive sends several requests, successes and failures alike, on
// one connection: only a failure after the body started may close it.
func TestKeepAlive(t *testing.T) {
	data := randomBytes(11, 200_000)
	noHolders := newFile("noholders", data)
	noHolders.Holders = 0
	src := newFakeSource(newFile("a.bin", data), noHolders,
		failing("fail0", data, 0, wrappedErr{ErrUnavailable}),
		failing("failmid", data, 100_000, ErrUpstreamTimeout))
	ts := newTestServer(t, src)
	c := dialRaw(t, ts)
	steps := []struct {
		method, target string
		status         int
		body           []byte
	}{
		{"GET", "/a.bin", 200, data},
		{"HEAD", "/a.bin", 200, nil},
		{"GET", "/nope", 404, []byte("not found\n")},
		{"GET", "/noholders", 503, []byte(ErrUnavailable.Error() + "\n")},
		{"GET", "/fail0", 503, []byte(ErrUnavailable.Error() + "\n")},
		{"POST", "/a.bin", 405, []byte("method not allowed\n")},
		{"GET", "/", 200, nil},
		{"GET", "/a.bin", 200, data},
	}
	for i, s := range steps {
		req := s.method + " " + s.target + " HTTP/1.1\r\nHost: test\r\n"
		if s.method == "POST" {
			req += "Content-Length: 3\r\n\r\nabc"
		} else {
			req += "\r\n"
		}
		resp, body := c.roundTrip(t, s.method, req)
		if resp.StatusCode != s.status || (s.body != nil && !bytes.Equal(body, s.body)) {
			t.Fatalf("step %d %s %s: status %d, %d bytes", i, s.method, s.target, resp.StatusCode, len(body))
		}
		if resp.Close {
			t.Fatalf("step %d: server asked to close the connection", i)
		}
	}
	if n := ts.newConn.Load(); n != 1 {
		t.Fatalf("%d connections used, want 1", n)
	}
	// A failure mid-body ends the connection, as it must.
	if _, err := io.WriteString(c, getReq("/failmid")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil || n >= int64(len(data)) {
		t.Fatalf("mid-body failure: read %d bytes, err %v", n, err)
	}
}

// TestHeaderLimit checks that the request line plus headers may be 16 KiB
// and not one byte more.
func TestHeaderLimit(t *testing.T) {
	ts := newTestServer(t, newFakeSource(newFile("a.txt", []byte("a"))))
	build := func(total int) string {
		head := "GET /a.txt HTTP/1.1\r\nHost: test\r\nX-Pad: "
		tail := "\r\n\r\n"
		return head + strings.Repeat("p", total-len(head)-len(tail)) + tail
	}
	for _, tt := range []struct {
		total  int
		status int
	}{
		{8 << 10, 200},
		{MaxHeaderBytes, 200},
		{MaxHeaderBytes + 1, http.StatusRequestHeaderFieldsTooLarge},
		{MaxHeaderBytes + 4096, http.StatusRequestHeaderFieldsTooLarge},
		{64 << 10, http.StatusRequestHeaderFieldsTooLarge},
	} {
		req := build(tt.total)
		if len(req) != tt.total {
			t.Fatalf("built %d bytes, want %d", len(req), tt.total)
		}
		resp, _ := dialRaw(t, ts).roundTrip(t, "GET", req)
		if resp.StatusCode != tt.status {
			t.Errorf("%d-byte request head: status %d, want %d", tt.total, resp.StatusCode, tt.status)
		}
	}
	// A long request line counts too.
	resp, _ := dialRaw(t, ts).roundTrip(t, "GET", getReq("/"+strings.Repeat("a", MaxHeaderBytes)))
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("long request line: status %d, want 431", resp.StatusCode)
	}
}

func TestNewServerConfig(t *testing.T) {
	h := NewHandler(newFakeSource(), Options{Logger: discardLogger()})
	s := NewServer(":8080", h, ServerOptions{})
	if s.Addr != ":8080" || s.Handler != h || s.ReadHeaderTimeout != 10*time.Second ||
		s.ReadTimeout != 0 || s.WriteTimeout != 0 || s.IdleTimeout != 120*time.Second ||
		s.MaxHeaderBytes+headerSlop != 16<<10 || s.ErrorLog == nil || s.TLSConfig != nil {
		t.Fatalf("unexpected config: %+v", s)
	}
	if s.Protocols == nil || !s.Protocols.HTTP1() || s.Protocols.HTTP2() || s.Protocols.UnencryptedHTTP2() {
		t.Fatalf("protocols %v, want HTTP/1 only without TLS", s.Protocols)
	}
	tc := &tls.Config{}
	s = NewServer(":8443", h, ServerOptions{TLS: tc})
	if s.TLSConfig != tc || !s.Protocols.HTTP1() || !s.Protocols.HTTP2() || s.Protocols.UnencryptedHTTP2() {
		t.Fatalf("TLS: config %p, protocols %v; want HTTP/1 and HTTP/2", s.TLSConfig, s.Protocols)
	}
	if s.HTTP2 == nil || s.HTTP2.MaxConcurrentStreams != 32 || s.HTTP2.MaxReceiveBufferPerStream != 64<<10 {
		t.Fatalf("HTTP/2 config %+v", s.HTTP2)
	}
}

// TestClientDisconnectNoLeak drops the connection in the middle of a large
// body and checks that the handler finishes, closes the Content, and leaves
// no goroutine behind. It runs for plain and multipart responses, the
// latter having a goroutine of its own inside http.ServeContent.
func TestClientDisconnectNoLeak(t *testing.T) {
	for _, rangeHdr := range []string{"", "Range: bytes=0-99,1000-\r\n"} {
		t.Run(strings.TrimSpace(rangeHdr), func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			big := &fakeFile{File: File{Path: "huge.bin", Size: 1 << 40, ModTime: testModTime, Holders: 3},
				gen: true, failAt: -1}
			src := newFakeSource(big)
			ts := newTestServer(t, src)

			c := dialRaw(t, ts)
			if _, err := io.WriteString(c, "GET /huge.bin HTTP/1.1\r\nHost: test\r\n"+rangeHdr+"\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.CopyN(io.Discard, resp.Body, 256<<10); err != nil {
				t.Fatal(err)
			}
			c.Close()

			rec := ts.waitRecords(t, 1)[0]
			if rec.Err == nil || rec.Bytes >= big.Size {
				t.Errorf("access record %+v: want a write error", rec)
			}
			ts.Close() // waits for the handler, which closes its Content
			if o, cl := src.opens.Load(), src.closes.Load(); o != 1 || cl != 1 {
				t.Errorf("opened %d, closed %d; want 1 and 1", o, cl)
			}
		})
	}
}
