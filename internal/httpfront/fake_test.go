package httpfront

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeFile is a file of the in-memory pool.
type fakeFile struct {
	File
	data    []byte // nil with gen set: content generated on the fly
	gen     bool   // content is byte(i) for offset i, of File.Size bytes
	openErr error  // returned by Open
	failAt  int64  // Read fails with failErr once this offset is reached; <0 never
	failErr error
}

// fakeSource is an in-memory Source. Directories are derived from the files.
type fakeSource struct {
	files map[string]*fakeFile
	dirs  map[string][]DirEntry
	extra map[string][]DirEntry // added verbatim to a listing

	opens, closes atomic.Int64
	// direct: contents implement DirectWriter, as the gateway's do;
	// directWrites counts the calls of WriteToN.
	direct       bool
	directWrites atomic.Int64
	// starting is what Starting (httpfront.Starter) reports.
	starting atomic.Bool

	mu     sync.Mutex
	ctxs   []context.Context // contexts passed to Open
	limits []int64           // SetLimit calls, in order
}

var testModTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

func newFile(p string, data []byte) *fakeFile {
	return &fakeFile{
		File: File{Path: p, Size: int64(len(data)), ModTime: testModTime,
			Hash: sha256.Sum256(data), Holders: 2},
		data:   data,
		failAt: -1,
	}
}

func newFakeSource(files ...*fakeFile) *fakeSource {
	s := &fakeSource{files: map[string]*fakeFile{}, dirs: map[string][]DirEntry{"": nil},
		extra: map[string][]DirEntry{}}
	for _, f := range files {
		s.files[f.Path] = f
		elems := strings.Split(f.Path, "/")
		for i, name := range elems {
			dir := strings.Join(elems[:i], "/")
			if containsName(s.dirs[dir], name) {
				continue
			}
			e := DirEntry{Name: name, IsDir: true, ModTime: f.ModTime, Holders: 1}
			if i == len(elems)-1 {
				e = DirEntry{Name: name, Size: f.Size, ModTime: f.ModTime, Holders: f.Holders}
			}
			s.dirs[dir] = append(s.dirs[dir], e)
		}
	}
	return s
}

func containsName(es []DirEntry, name string) bool {
	for _, e := range es {
		if e.Name == name {
			return true
		}
	}
	return false
}

func (s *fakeSource) Starting() bool { return s.starting.Load() }

func (s *fakeSource) Lookup(p string) (File, bool) {
	f, ok := s.files[p]
	if !ok {
		return File{}, false
	}
	return f.File, true
}

func (s *fakeSource) List(dir string) ([]DirEntry, bool) {
	es, ok := s.dirs[dir]
	if !ok {
		return nil, false
	}
	out := append([]DirEntry(nil), es...)
	out = append(out, s.extra[dir]...)
	// Deliberately unsorted-looking: reverse order.
	sort.Slice(out, func(i, j int) bool { return out[i].Name > out[j].Name })
	return out, true
}

func (s *fakeSource) Open(ctx context.Context, f File) (Content, error) {
	ff := s.files[f.Path]
	if ff == nil {
		return nil, errors.New("fake: unknown file")
	}
	s.mu.Lock()
	s.ctxs = append(s.ctxs, ctx)
	s.mu.Unlock()
	if ff.openErr != nil {
		return nil, ff.openErr
	}
	s.opens.Add(1)
	c := &fakeContent{src: s, f: ff, ctx: ctx}
	if s.direct {
		return &directContent{c}, nil
	}
	return c, nil
}

// directContent is a fakeContent that is also a DirectWriter, writing
// in pieces of up to 48 KiB like the engine writes chunks.
type directContent struct{ *fakeContent }

func (c *directContent) WriteToN(w io.Writer, n int64) (int64, error) {
	c.src.directWrites.Add(1)
	buf := make([]byte, 48<<10)
	var written int64
	for written < n {
		k, err := c.Read(buf[:min(int64(len(buf)), n-written)])
		if k > 0 {
			wn, werr := w.Write(buf[:k])
			written += int64(wn)
			if werr != nil {
				return written, werr
			}
		}
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// fakeContent reads a fakeFile, failing at failAt if set.
type fakeContent struct {
	src    *fakeSource
	f      *fakeFile
	ctx    context.Context
	pos    int64
	closed bool
}

func (c *fakeContent) Read(p []byte) (int, error) {
	if c.closed {
		return 0, errors.New("fake: read after close")
	}
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	if c.f.failAt >= 0 {
		if c.pos >= c.f.failAt {
			return 0, c.f.failErr
		}
		if rem := c.f.failAt - c.pos; int64(len(p)) > rem {
			p = p[:rem]
		}
	}
	var n int
	if c.f.gen {
		if c.pos >= c.f.Size {
			return 0, io.EOF
		}
		if rem := c.f.Size - c.pos; int64(len(p)) > rem {
			p = p[:rem]
		}
		for i := range p {
			p[i] = byte(c.pos + int64(i))
		}
		n = len(p)
	} else {
		if c.pos >= int64(len(c.f.data)) {
			return 0, io.EOF
		}
		n = copy(p, c.f.data[c.pos:])
	}
	c.pos += int64(n)
	return n, nil
}

func (c *fakeContent) Seek(off int64, whence int) (int64, error) {
	if c.closed {
		return 0, errors.New("fake: seek after close")
	}
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += c.pos
	case io.SeekEnd:
		off += c.f.Size
	}
	if off < 0 {
		return 0, errors.New("fake: negative seek")
	}
	c.pos = off
	return off, nil
}

// SetLimit implements Limiter: it records the call.
func (c *fakeContent) SetLimit(end int64) {
	c.src.mu.Lock()
	defer c.src.mu.Unlock()
	c.src.limits = append(c.src.limits, end)
}

func (c *fakeContent) Close() error {
	if c.closed {
		return errors.New("fake: double close")
	}
	c.closed = true
	c.src.closes.Add(1)
	return nil
}

// testServer is an httptest server configured by NewServer, with the access
// log captured.
type testServer struct {
	*httptest.Server
	src *fakeSource

	mu      sync.Mutex
	records []AccessRecord
	logBuf  bytes.Buffer
	newConn atomic.Int64
}

func newTestServer(t *testing.T, src *fakeSource) *testServer {
	t.Helper()
	ts := &testServer{src: src}
	logger := slog.New(slog.NewJSONHandler(&lockedWriter{mu: &ts.mu, w: &ts.logBuf}, nil))
	h := NewHandler(src, Options{Logger: logger, AccessLog: func(r AccessRecord) {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		ts.records = append(ts.records, r)
	}})
	ts.Server = httptest.NewUnstartedServer(h)
	ts.Config = NewServer("", h, ServerOptions{})
	ts.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			ts.newConn.Add(1)
		}
	}
	ts.Start()
	t.Cleanup(ts.Close)
	return ts
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// waitRecords waits until at least n access records exist and returns them.
// Records are written after the response reached the client, so tests that
// look at them must wait.
func (ts *testServer) waitRecords(t *testing.T, n int) []AccessRecord {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ts.mu.Lock()
		recs := append([]AccessRecord(nil), ts.records...)
		ts.mu.Unlock()
		if len(recs) >= n {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d access records, want %d", len(recs), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// get performs a request with the given headers (key, value pairs) and
// returns the response with the body read.
func (ts *testServer) do(t *testing.T, method, target string, kv ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		req.Header.Set(kv[i], kv[i+1])
	}
	c := ts.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, target, err)
	}
	return resp, body
}

// rawConn is a client connection speaking HTTP/1.1 by hand, so that request
// targets reach the server exactly as written.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, ts *testServer) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{Conn: c, br: bufio.NewReader(c)}
}

// roundTrip sends a raw request and reads the response and its body.
func (c *rawConn) roundTrip(t *testing.T, method, request string) (*http.Response, []byte) {
	t.Helper()
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading response to %q: %v", firstLine(request), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body of %q: %v", firstLine(request), err)
	}
	return resp, body
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

func getReq(target string) string {
	return "GET " + target + " HTTP/1.1\r\nHost: test\r\n\r\n"
}
