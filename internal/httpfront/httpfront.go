// Package httpfront is the HTTP front end of HttpGw (HTTP/1.1, and HTTP/2
// over TLS).
//
// HttpGw holds no files. It fetches each file in chunks, in parallel, from
// several UDP backends holding identical content, and streams the result.
// This package knows nothing about UDP: it reaches the pool through the
// Source interface and turns it into HTTP semantics — directory indexes,
// ranges, conditional requests, and honest failures.
//
// The one subtle part is failure. A fetch can fail at any byte, and the
// gateway only finds out when it reads. The handler therefore holds back
// the status line until the first body byte is ready: a failure before that
// becomes a clean 503/504/502, and a failure after it aborts the connection
// so that the client sees a truncated transfer, never a complete-looking
// short response it might cache or checksum as valid.
package httpfront

import (
	"context"
	"encoding/hex"
	"errors"
	"html/template"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"
)

// File describes one version of a file in the pool.
type File struct {
	// Path is the clean slash path without a leading slash, e.g.
	// "docs/a b.pdf"; see CleanPath.
	Path    string
	Size    int64
	ModTime time.Time
	// Hash is the SHA-256 of the content. It is the file's identity across
	// backends and becomes the strong ETag.
	Hash [32]byte
	// Holders is the number of live servers holding this version; 0 means
	// the file is known but cannot be fetched right now.
	Holders int
}

// DirEntry is one element of a directory listing.
type DirEntry struct {
	Name    string // a single path element
	IsDir   bool
	Size    int64
	ModTime time.Time
	Holders int
}

// Source is the pool as seen by the front end.
type Source interface {
	// Lookup returns the file at a clean path; false means no such file
	// (the handler then tries List before answering 404).
	Lookup(path string) (File, bool)
	// List returns the entries of a directory; dir "" is the root. false
	// means there is no such directory.
	List(dir string) ([]DirEntry, bool)
	// Open prepares to read f. ctx is cancelled when the client goes away
	// or the response is finished, and should abort outstanding fetches.
	Open(ctx context.Context, f File) (Content, error)
}

// Starter may be implemented by a Source that has just started and does
// not yet know every file: its servers are still registering. While
// Starting is true a path it does not know gets 503 with Retry-After
// (ErrStarting) instead of 404, which clients, caches and crawlers
// treat as final.
type Starter interface {
	Starting() bool
}

// Content is an open file. Seek must be cheap (it only moves a cursor);
// Read fetches and may fail with errors wrapping ErrUnavailable,
// ErrUpstreamTimeout or anything else.
type Content interface {
	io.ReadSeeker
	io.Closer
}

// FileCSP is the Content-Security-Policy of every file served.
const FileCSP = "sandbox"

// DirectWriter may be implemented by a Content that can write its next n
// bytes to w without an intermediate copy (the gateway's engine writes
// straight from its chunk buffers, a chunk per write). It returns io.EOF
// if the content ends first, and w's errors as they are.
type DirectWriter interface {
	WriteToN(w io.Writer, n int64) (int64, error)
}

// Limiter may be implemented by a Content that reads ahead: SetLimit
// says where the stretch being read ends (the end of the Range being
// served), so that it fetches nothing past it. The handler calls it
// before reading from a new place; a read past the limit lifts it.
type Limiter interface {
	SetLimit(end int64)
}

var (
	// ErrUnavailable means no live server holds the file. Open or Read
	// errors wrapping it become 503 with Retry-After: 1.
	ErrUnavailable = errors.New("no live server holds this file")
	// ErrStarting is the 503 answered for an unknown path while the
	// Source is Starting.
	ErrStarting = errors.New("the gateway has just started; servers are registering")
	// ErrUpstreamTimeout means the backends did not answer in time. Errors
	// wrapping it (or context.DeadlineExceeded) become 504. Any other
	// error before the headers are sent becomes 502.
	ErrUpstreamTimeout = errors.New("upstream fetch timed out")
)

// StatusClientClosed is recorded in the access log (never sent) when the
// client went away before a response could be sent. It is nginx's 499.
const StatusClientClosed = 499

// AccessRecord describes one finished request.
type AccessRecord struct {
	Method string
	// Path is the escaped request path, so that hostile input cannot put
	// control characters into logs.
	Path     string
	Status   int
	Bytes    int64 // body bytes sent (0 for HEAD)
	Duration time.Duration
	Remote   string
	// Err is why the request failed or was refused, nil on success.
	Err error
	// Servers and Retransmits say how the body was fetched, when the
	// Content implements Reporter (0 otherwise).
	Servers     int
	Retransmits int
}

// Reporter may be implemented by a Content to tell the access log how it
// was fetched: how many servers delivered bytes, how many reads were
// retransmissions.
type Reporter interface {
	FetchReport() (servers, retransmits int)
}

// Options configures NewHandler.
type Options struct {
	// Logger receives one info line per request and debug details;
	// nil means slog.Default().
	Logger *slog.Logger
	// AccessLog, if set, is called after each response, from the
	// request's goroutine.
	AccessLog func(AccessRecord)
	// MaxRanges is the most ranges a request may ask for once overlapping
	// and near ones are merged; beyond it the whole file is sent (see
	// planRanges). 0 means DefaultMaxRanges.
	MaxRanges int
	// SendTimeout is how long one write of a response to the client may
	// take (a chunk, at most 128 KiB by default, so a client must read
	// about 4 KiB/s at the default): past it an HTTP/1.1 connection is
	// closed and an HTTP/2 stream reset, and the response's buffers go
	// back to the engine. 0 means DefaultSendTimeout; negative, none.
	SendTimeout time.Duration
}

// DefaultSendTimeout is Options.SendTimeout's default.
const DefaultSendTimeout = 30 * time.Second

// handler is the http.Handler returned by NewHandler. It is immutable after
// construction and safe for concurrent use.
type handler struct {
	src    Source
	log    *slog.Logger
	access func(AccessRecord)
	index  *template.Template
	// maxRanges: Options.MaxRanges.
	maxRanges   int
	sendTimeout time.Duration
	// copyBufs are the body copy buffers (*[]byte of copyBufferSize):
	// io.Copy would allocate one per response.
	copyBufs sync.Pool
}

// copyBufferSize is io.Copy's own buffer size.
const copyBufferSize = 32 << 10

// NewHandler returns the HttpGw front end for src.
//
// Only GET and HEAD are served; every other method, OPTIONS included, gets
// 405 with "Allow: GET, HEAD". OPTIONS is not special-cased because the
// gateway serves no cross-origin API that would need preflight answers, and
// a single Allow set is simpler to reason about.
//
// "/" and directories are served as an index (HTML, or JSON when the Accept
// header prefers application/json); a directory requested without its
// trailing slash is redirected (301) to it so that relative links work. A
// file path with a trailing slash is 404.
func NewHandler(src Source, opt Options) http.Handler {
	log := opt.Logger
	if log == nil {
		log = slog.Default()
	}
	h := &handler{
		src:       src,
		log:       log,
		access:    opt.AccessLog,
		index:     template.Must(template.New("index").Parse(indexHTML)),
		maxRanges: opt.MaxRanges,
	}
	if h.maxRanges <= 0 {
		h.maxRanges = DefaultMaxRanges
	}
	switch h.sendTimeout = opt.SendTimeout; {
	case h.sendTimeout == 0:
		h.sendTimeout = DefaultSendTimeout
	case h.sendTimeout < 0:
		h.sendTimeout = 0
	}
	h.copyBufs.New = func() any {
		b := make([]byte, copyBufferSize)
		return &b
	}
	return h
}

// ServeHTTP implements http.Handler.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	d := &deferredWriter{rw: w, bufs: &h.copyBufs, sendTimeout: h.sendTimeout}
	abort, err := h.serve(d, r)
	if !abort {
		d.commit() // HEAD, 304 and the like have no body to trigger it
	}
	d.clearDeadline()
	bytes := d.bytes
	if r.Method == http.MethodHead {
		bytes = 0 // net/http discards HEAD bodies; don't count them
	}
	h.logAccess(r.Context(), AccessRecord{
		Method:      r.Method,
		Path:        r.URL.EscapedPath(),
		Status:      d.status,
		Bytes:       bytes,
		Duration:    time.Since(start),
		Remote:      r.RemoteAddr,
		Err:         err,
		Servers:     d.servers,
		Retransmits: d.retrans,
	})
	if abort {
		// Closes the connection without completing the response; net/http
		// does not log a stack trace for this value.
		panic(http.ErrAbortHandler)
	}
}

// serve routes the request. It returns whether the connection must be
// aborted because a response is already under way, and the error to log.
func (h *handler) serve(d *deferredWriter, r *http.Request) (abort bool, err error) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		d.respond(http.StatusMethodNotAllowed, "method not allowed", "Allow", "GET, HEAD")
		return false, nil
	}
	raw := r.URL.EscapedPath()
	clean, err := CleanPath(raw)
	if err != nil {
		// Don't echo the path: it is attacker-controlled.
		d.respond(http.StatusBadRequest, "bad request path")
		return false, err
	}
	if clean == "" {
		entries, _ := h.src.List("") // no root yet is just an empty pool
		return false, h.serveIndex(d, r, "", entries)
	}
	dirSyntax := strings.HasSuffix(raw, "/")
	if !dirSyntax {
		if f, ok := h.src.Lookup(clean); ok {
			return h.serveFile(d, r, clean, f)
		}
	}
	entries, ok := h.src.List(clean)
	switch {
	case ok && dirSyntax:
		return false, h.serveIndex(d, r, clean, entries)
	case ok:
		loc := "/" + escapePath(clean) + "/"
		if r.URL.RawQuery != "" {
			loc += "?" + r.URL.RawQuery
		}
		d.respond(http.StatusMovedPermanently, "moved to "+loc, "Location", loc)
		return false, nil
	}
	if st, ok := h.src.(Starter); ok && st.Starting() {
		d.respond(http.StatusServiceUnavailable, ErrStarting.Error())
		return false, nil
	}
	d.respond(http.StatusNotFound, "not found")
	return false, nil
}

// serveFile streams f through http.ServeContent, which implements HEAD,
// ranges (including multipart) and conditional requests. See upstream and
// deferredWriter for how failures are caught.
func (h *handler) serveFile(d *deferredWriter, r *http.Request, name string, f File) (abort bool, err error) {
	if f.Holders <= 0 {
		d.respond(http.StatusServiceUnavailable, ErrUnavailable.Error())
		return false, ErrUnavailable
	}
	up := newUpstream(r.Context(), h.src, f)
	defer func() {
		d.servers, d.retrans = up.report()
		if cerr := up.close(); cerr != nil {
			h.log.DebugContext(r.Context(), "closing content", "path", name, "err", cerr)
		}
	}()
	d.up = up

	hdr := d.Header()
	hdr.Set("ETag", ETag(f.Hash))
	// Set explicitly so that ServeContent never reads the content to
	// sniff it, which would fetch from the backends before the range and
	// precondition checks.
	hdr.Set("Content-Type", contentType(name))
	hdr.Set("Accept-Ranges", "bytes")
	// The content is arbitrary user data; don't let browsers reinterpret it.
	hdr.Set("X-Content-Type-Options", "nosniff")
	// Nor run it on the gateway's origin: an .html or .svg file from a
	// server is shown in a sandbox (no script, no forms, an opaque
	// origin), so it cannot read other files or the index as the
	// gateway. Images, media and PDFs display as before.
	hdr.Set("Content-Security-Policy", FileCSP)

	if v := r.Header.Get("Range"); v != "" {
		// Before ServeContent, which would serve every range as written
		// (see planRanges); the upstream learns where each range ends, so
		// the engine fetches no further.
		fixed, plan := planRanges(v, f.Size, h.maxRanges)
		up.ranges = plan
		if fixed != v {
			r2 := *r
			r2.Header = r.Header.Clone()
			if fixed == "" {
				r2.Header.Del("Range")
			} else {
				r2.Header.Set("Range", fixed)
			}
			r = &r2
		}
	}
	http.ServeContent(d, r, path.Base(name), f.ModTime, up)

	ferr := up.failure()
	switch {
	case ferr == nil:
		return false, d.writeErr // non-nil if the client went away
	case d.committed:
		return true, ferr
	case r.Context().Err() != nil:
		// The client is gone; there is no one to tell.
		d.status = StatusClientClosed
		return true, ferr
	}
	code, msg := statusFor(ferr)
	d.respond(code, msg)
	return false, ferr
}

// statusFor maps an upstream failure to the status sent when nothing has
// been sent yet. The message is generic: backend details go to the log.
func statusFor(err error) (int, string) {
	switch {
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable, ErrUnavailable.Error()
	case errors.Is(err, ErrUpstreamTimeout), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "upstream timed out"
	default:
		return http.StatusBadGateway, "upstream fetch failed"
	}
}

// ETag returns the strong entity tag for a content hash (the root of the
// content's hash tree, which commits to every byte and the size): all 64
// hex digits, lower case, quoted. The full hash is kept rather than a
// prefix: the header is sent once per response so the saving is
// negligible, and a client can check a download against the whole tag.
func ETag(hash [32]byte) string {
	return `"` + hex.EncodeToString(hash[:]) + `"`
}

// contentType picks the media type from the extension only. Unknown
// extensions get application/octet-stream rather than sniffing, because
// sniffing means fetching the first 512 bytes before anything else.
func contentType(name string) string {
	if t := mime.TypeByExtension(path.Ext(name)); t != "" {
		return t
	}
	return "application/octet-stream"
}

func (h *handler) logAccess(ctx context.Context, rec AccessRecord) {
	if h.access != nil {
		h.access(rec)
	}
	if !h.log.Enabled(ctx, slog.LevelInfo) {
		return // no attributes built for a line nobody reads
	}
	attrs := []slog.Attr{
		slog.String("method", rec.Method),
		slog.String("path", rec.Path),
		slog.Int("status", rec.Status),
		slog.Int64("bytes", rec.Bytes),
		slog.Duration("dur", rec.Duration),
		slog.String("remote", rec.Remote),
	}
	if rec.Servers > 0 {
		attrs = append(attrs, slog.Int("servers", rec.Servers), slog.Int("retransmits", rec.Retransmits))
	}
	if rec.Err != nil {
		attrs = append(attrs, slog.String("err", rec.Err.Error()))
	}
	h.log.LogAttrs(ctx, slog.LevelInfo, "http request", attrs...)
}
