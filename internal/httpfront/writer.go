package httpfront

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// errSuppressed is returned to http.ServeContent when it tries to write after
// the upstream has already failed and nothing has been sent: the handler will
// replace the whole response, so ServeContent's own output must be dropped.
var errSuppressed = errors.New("httpfront: response replaced after upstream failure")

// deferredWriter holds back the status line and headers until the first body
// byte (or a Flush, or the end of the handler). The gateway learns whether a
// fetch works only when it reads, which http.ServeContent does after calling
// WriteHeader(200). Deferring the header lets a failure on the first read
// still become an honest 503/504/502 instead of a 200 with a short body.
//
// Header changes made between WriteHeader and the first Write still take
// effect, unlike with a plain ResponseWriter; ServeContent does not make any.
type deferredWriter struct {
	rw http.ResponseWriter
	up *upstream // nil when not serving a file

	status    int   // pending or committed status; 0 = none yet
	committed bool  // status line handed to rw
	bytes     int64 // body bytes accepted by rw
	writeErr  error // first error from rw.Write: the client went away

	servers, retrans int // the content's fetch report, for the access log

	bufs *sync.Pool // *[]byte copy buffers for ReadFrom; nil: allocate

	// sendTimeout, if positive, is how long one write to the client may
	// take (see Options.SendTimeout); deadline is the write deadline set
	// last, zero if none.
	sendTimeout time.Duration
	deadline    time.Time
}

// extendDeadline gives the next write sendTimeout to complete. It sets
// the connection's (HTTP/1.1) or the stream's (HTTP/2) write deadline,
// but only when that moves it by more than a sixteenth of the timeout:
// an HTTP/2 deadline is a message to the connection's goroutine, not
// worth sending for every chunk.
func (d *deferredWriter) extendDeadline() {
	if d.sendTimeout <= 0 {
		return
	}
	now := time.Now()
	if next := now.Add(d.sendTimeout); next.Sub(d.deadline) > d.sendTimeout/16 {
		if http.NewResponseController(d.rw).SetWriteDeadline(next) == nil {
			d.deadline = next
		}
	}
}

// clearDeadline removes the write deadline, so that it cannot cut the
// next response on a kept-alive HTTP/1.1 connection.
func (d *deferredWriter) clearDeadline() {
	if !d.deadline.IsZero() {
		_ = http.NewResponseController(d.rw).SetWriteDeadline(time.Time{})
		d.deadline = time.Time{}
	}
}

// Header implements http.ResponseWriter.
func (d *deferredWriter) Header() http.Header { return d.rw.Header() }

// WriteHeader records code; it is sent with the first Write. Informational
// (1xx) codes other than 101 are passed through at once, as net/http does.
func (d *deferredWriter) WriteHeader(code int) {
	if d.committed {
		return
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		d.rw.WriteHeader(code)
		return
	}
	if d.status == 0 {
		d.status = code
	}
}

// Write commits the pending header and writes p. If the upstream has already
// failed and nothing has been committed, the write is dropped (see
// errSuppressed).
func (d *deferredWriter) Write(p []byte) (int, error) {
	if !d.committed {
		if d.up != nil && d.up.failure() != nil {
			return 0, errSuppressed
		}
		d.commit()
	}
	d.extendDeadline()
	n, err := d.rw.Write(p)
	d.bytes += int64(n)
	if err != nil && d.writeErr == nil {
		d.writeErr = err
	}
	return n, err
}

// ReadFrom copies r to the client: straight from a DirectWriter Content,
// or else through a pooled buffer. It is what io.Copy (and so
// http.ServeContent) uses when the destination has it; io.Copy itself
// would allocate a buffer for every response.
func (d *deferredWriter) ReadFrom(r io.Reader) (int64, error) {
	// http.ServeContent hands io.Copy its body as an io.LimitedReader
	// over the upstream: let a Content that can write directly do so.
	if lr, ok := r.(*io.LimitedReader); ok {
		if u, ok := lr.R.(*upstream); ok {
			n, direct, err := u.writeDirect(clientWriter{d}, lr.N)
			lr.N -= n
			if direct {
				return n, err
			}
		}
	}
	var bp *[]byte
	if d.bufs != nil {
		bp = d.bufs.Get().(*[]byte)
		defer d.bufs.Put(bp)
	} else {
		b := make([]byte, copyBufferSize)
		bp = &b
	}
	buf := *bp
	var total int64
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			w, werr := d.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// clientWriter hides deferredWriter's ReadFrom from code that would use
// it, and keeps its Write and FlushError (the engine probes a client not
// yet seen to read with a small write and a flush).
type clientWriter struct{ d *deferredWriter }

func (w clientWriter) Write(p []byte) (int, error) { return w.d.Write(p) }
func (w clientWriter) FlushError() error           { return w.d.FlushError() }

// FlushError commits the pending header and flushes. It is what
// http.ResponseController.Flush calls first.
func (d *deferredWriter) FlushError() error {
	d.commit()
	return http.NewResponseController(d.rw).Flush()
}

// Flush implements http.Flusher.
func (d *deferredWriter) Flush() { _ = d.FlushError() }

// Unwrap lets http.ResponseController reach the connection's writer for
// deadlines, hijacking and so on.
func (d *deferredWriter) Unwrap() http.ResponseWriter { return d.rw }

// commit sends the pending status (200 if none was set). Idempotent.
func (d *deferredWriter) commit() {
	if d.committed {
		return
	}
	if d.status == 0 {
		d.status = http.StatusOK
	}
	d.committed = true
	d.rw.WriteHeader(d.status)
}

// respond discards any pending header and sends a short text/plain message
// instead, with the extra header key/value pairs in kv. It must only be
// called before commit. A 503 always carries
// Retry-After: the pool changes quickly (a server rejoins, a fetch is
// retried), so a client should come back soon rather than give up.
func (d *deferredWriter) respond(code int, msg string, kv ...string) {
	h := d.rw.Header()
	for k := range h {
		delete(h, k)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	if code == http.StatusServiceUnavailable {
		h.Set("Retry-After", "1")
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(msg)+1))
	d.status = code
	d.commit()
	n, err := io.WriteString(d.rw, msg+"\n")
	d.bytes += int64(n)
	if err != nil && d.writeErr == nil {
		d.writeErr = err
	}
}
