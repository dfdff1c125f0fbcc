package httpfront

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// pathRecordingSource wraps a fakeSource and records every path the
// handler asks it about, so that a test can check that only clean paths
// ever reach the pool.
type pathRecordingSource struct {
	*fakeSource
	mu      sync.Mutex
	lookups []string
	lists   []string
	opened  []string
}

func (s *pathRecordingSource) Lookup(p string) (File, bool) {
	s.mu.Lock()
	s.lookups = append(s.lookups, p)
	s.mu.Unlock()
	return s.fakeSource.Lookup(p)
}

func (s *pathRecordingSource) List(dir string) ([]DirEntry, bool) {
	s.mu.Lock()
	s.lists = append(s.lists, dir)
	s.mu.Unlock()
	return s.fakeSource.List(dir)
}

func (s *pathRecordingSource) Open(ctx context.Context, f File) (Content, error) {
	s.mu.Lock()
	s.opened = append(s.opened, f.Path)
	s.mu.Unlock()
	return s.fakeSource.Open(ctx, f)
}

func (s *pathRecordingSource) calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.lookups) + len(s.lists) + len(s.opened)
}

// fuzzHandlerSeeds are request targets for FuzzHandlerPath: legitimate
// ones that reach every branch of the router (file, index, redirect, 404,
// trailing slash on a file) and the classic traversal forms.
var fuzzHandlerSeeds = []string{
	"/", "/a.txt", "/docs/", "/docs", "/docs/a%20b.pdf", "/docs/a b.pdf", "/docs/sub/deep.bin",
	"/caf%C3%A9.txt", "/100%25", "/a.txt/", "/nope", "/docs?x=1", "/docs/a%20b.pdf?x=../..",
	"/../etc/passwd", "/docs/../a.txt", "/./a.txt", "/%2e%2e/a.txt", "/%2E%2E/a.txt", "/.%2e/x",
	"/docs%2fa%20b.pdf", "/docs%2Fsub", "/%252e%252e/x", "/%252e%252e%252fetc%252fpasswd",
	"/%25252e%25252e/x", "/a%00b", "/a.txt%00.jpg", "/a%5cb", "/a\\b", "/..%5c..%5cwin.ini",
	"/%c0%ae%c0%ae/x", "/%c0%af", "/%e0%80%ae", "/%ff", "//etc/passwd", "/docs//a%20b.pdf",
	"/DOCS/A%20B.PDF", "/A.TXT", "*", "a.txt", "http://h/%2e%2e/x", "http://h/docs/a%20b.pdf",
	"/a%0d%0aSet-Cookie:%20x", "/a%09b", "/%", "/%2", "/%zz",
	"/" + strings.Repeat("a/", 2100), "/" + strings.Repeat("%2e%2e/", 600) + "etc/passwd",
	"/" + strings.Repeat("a", MaxPathLen+1),
}

// FuzzHandlerPath drives the whole handler, not just CleanPath, with an
// arbitrary request target parsed the way net/http's server parses it. It
// checks that the handler never panics, never answers 5xx (the source has
// no failures, so a 5xx could only come from mishandling the path), never
// asks the source about a path that is not clean, and refuses with 400,
// without touching the source, exactly the targets CleanPath refuses.
func FuzzHandlerPath(f *testing.F) {
	for _, s := range fuzzHandlerSeeds {
		f.Add(s)
	}
	files := []*fakeFile{
		newFile("a.txt", []byte("alpha\n")),
		newFile("docs/a b.pdf", randomBytes(21, 3000)),
		newFile("docs/sub/deep.bin", randomBytes(22, 70_000)),
		newFile("café.txt", []byte("café\n")),
		newFile("100%", []byte("percent\n")),
	}
	f.Fuzz(func(t *testing.T, target string) {
		wire := "GET " + target + " HTTP/1.1\r\nHost: fuzz\r\n\r\n"
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(wire)))
		if err != nil {
			return // net/http's server answers 400 itself; no handler runs
		}
		src := &pathRecordingSource{fakeSource: newFakeSource(files...)}
		h := NewHandler(src, Options{Logger: discardLogger()})
		rec := httptest.NewRecorder()
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("target %q: handler panicked: %v", target, p)
				}
			}()
			h.ServeHTTP(rec, req)
		}()
		if rec.Code >= 500 {
			t.Fatalf("target %q: status %d: %q", target, rec.Code, rec.Body.String())
		}
		raw := req.URL.EscapedPath()
		if _, cerr := CleanPath(raw); cerr != nil {
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("target %q: CleanPath refuses %q (%v) but status is %d", target, raw, cerr, rec.Code)
			}
			if n := src.calls(); n != 0 {
				t.Fatalf("target %q: refused path reached the source (%d calls)", target, n)
			}
		} else if rec.Code == http.StatusBadRequest {
			t.Fatalf("target %q: CleanPath accepts %q but status is 400", target, raw)
		}
		src.mu.Lock()
		defer src.mu.Unlock()
		for _, p := range src.lookups {
			if p == "" {
				t.Fatalf("target %q: Lookup of the empty path", target)
			}
			checkClean(t, raw, p)
		}
		for _, p := range src.opened {
			if p == "" {
				t.Fatalf("target %q: Open of the empty path", target)
			}
			checkClean(t, raw, p)
		}
		for _, p := range src.lists {
			checkClean(t, raw, p) // "" is the root and allowed
		}
		if len(src.opened) > 0 && rec.Code == http.StatusOK {
			want := src.files[src.opened[0]].data
			if rec.Body.String() != string(want) {
				t.Fatalf("target %q: 200 with %d bytes, want the %d bytes of %q", target, rec.Body.Len(), len(want), src.opened[0])
			}
		}
	})
}
