package httpfront

import (
	"context"
	"errors"
	"io"
	"sync"
)

// maxEmptyReads is how many consecutive (0, nil) reads upstream tolerates,
// the same limit bufio uses.
const maxEmptyReads = 100

// errClosed is returned by upstream after close; it only reaches the
// multipart goroutine of http.ServeContent, which may outlive ServeContent.
var errClosed = errors.New("httpfront: content already closed")

// upstream is the io.ReadSeeker handed to http.ServeContent. It exists for
// four reasons:
//
//   - ServeContent ignores the error of its final io.CopyN, so the handler
//     could not otherwise tell a complete body from a failed fetch. upstream
//     remembers the first error, which decides between a clean 5xx (nothing
//     sent yet) and aborting the connection.
//   - Open is deferred to the first Read, and seeks are only recorded until
//     then. ServeContent seeks to the end to learn the size, which upstream
//     answers from File.Size; so HEAD, 304, 412 and 416 responses never touch
//     the backends.
//   - A short read (io.EOF before File.Size bytes) is turned into
//     io.ErrUnexpectedEOF, so that a backend returning less data than the
//     index promised is a failure rather than a silently short body.
//   - For multi-range requests ServeContent reads from a goroutine that can
//     still be running after ServeContent returns (when the client went
//     away). The mutex makes close wait for an in-flight Read, after
//     cancelling its context so that the wait is short, and makes later
//     reads fail instead of touching a closed Content.
type upstream struct {
	ctx    context.Context
	cancel context.CancelFunc
	src    Source
	file   File

	// ranges are the ranges ServeContent will serve (see planRanges),
	// nil for the whole file. Set before ServeContent runs.
	ranges []byteRange

	mu     sync.Mutex // serialises Read, Seek and close
	c      Content    // nil until the first Read
	pos    int64      // position seen by ServeContent
	cpos   int64      // position of c; differs from pos after a Seek
	limit  int64      // the limit c was given (Limiter)
	empty  int        // consecutive (0, nil) reads
	closed bool

	// err has its own lock so that the response writer can check it
	// without waiting for a Read in progress in the multipart goroutine.
	errMu sync.Mutex
	err   error // first failure, sticky
}

func newUpstream(ctx context.Context, src Source, f File) *upstream {
	ctx, cancel := context.WithCancel(ctx)
	return &upstream{ctx: ctx, cancel: cancel, src: src, file: f}
}

// Read implements io.Reader.
func (u *upstream) Read(p []byte) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return 0, errClosed
	}
	if err := u.failure(); err != nil {
		return 0, err
	}
	if u.pos >= u.file.Size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	// Never ask for more than the index says exists: the backends are
	// queried by chunk and a read past the end would be a wasted round trip.
	if rem := u.file.Size - u.pos; int64(len(p)) > rem {
		p = p[:rem]
	}
	if err := u.ready(); err != nil {
		return 0, err
	}
	n, err := u.c.Read(p)
	u.pos += int64(n)
	u.cpos += int64(n)
	if n == 0 && err == nil {
		// io.Copy would spin on a Content that keeps returning (0, nil).
		u.empty++
		if u.empty >= maxEmptyReads {
			err = io.ErrNoProgress
		}
	} else {
		u.empty = 0
	}
	return n, u.settle(err)
}

// ready opens the Content on first use and moves it to u.pos. Under u.mu.
func (u *upstream) ready() error {
	if u.c == nil {
		c, err := u.src.Open(u.ctx, u.file)
		if err != nil {
			return u.fail(err)
		}
		u.c, u.cpos, u.limit = c, 0, u.file.Size
	}
	if u.cpos != u.pos {
		if _, err := u.c.Seek(u.pos, io.SeekStart); err != nil {
			return u.fail(err)
		}
		u.cpos = u.pos
	}
	if l, ok := u.c.(Limiter); ok {
		if end := stretchEnd(u.ranges, u.pos, u.file.Size); end != u.limit {
			l.SetLimit(end)
			u.limit = end
		}
	}
	return nil
}

// settle turns the Content's error into the reader's: EOF only at the
// end of the file, anything else a recorded failure.
func (u *upstream) settle(err error) error {
	switch {
	case err == nil:
	case errors.Is(err, io.EOF) && u.pos >= u.file.Size:
		err = io.EOF
	case errors.Is(err, io.EOF):
		err = u.fail(io.ErrUnexpectedEOF)
	default:
		err = u.fail(err)
	}
	return err
}

// writeDirect sends up to n bytes to w with the Content's DirectWriter,
// if it has one (direct is false otherwise, and nothing happened). Errors
// of w come back as they are and are not the upstream's failure; at the
// end of the file it returns nil, as io.ReaderFrom does.
func (u *upstream) writeDirect(w io.Writer, n int64) (written int64, direct bool, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return 0, true, errClosed
	}
	if err := u.failure(); err != nil {
		return 0, true, err
	}
	n = min(n, u.file.Size-u.pos)
	if n <= 0 {
		return 0, true, nil
	}
	if err := u.ready(); err != nil {
		return 0, true, err
	}
	dw, ok := u.c.(DirectWriter)
	if !ok {
		return 0, false, nil
	}
	ew := &errWriter{w: w}
	var dst io.Writer = ew
	if f, ok := w.(flushErrorer); ok {
		dst = errFlusher{ew, f}
	}
	written, err = dw.WriteToN(dst, n)
	u.pos += written
	u.cpos += written
	switch {
	case err == nil:
	case ew.err != nil && errors.Is(err, ew.err):
		// The client's side failed: not the upstream's failure.
	default:
		if err = u.settle(err); err == io.EOF {
			err = nil
		}
	}
	return written, true, err
}

// errWriter remembers the error of its writer.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil && e.err == nil {
		e.err = err
	}
	return n, err
}

// flushErrorer is what http.ResponseController.Flush looks for.
type flushErrorer interface{ FlushError() error }

// errFlusher is an errWriter whose writer can also flush; the errors of
// its flushes are remembered too.
type errFlusher struct {
	*errWriter
	f flushErrorer
}

func (e errFlusher) FlushError() error {
	err := e.f.FlushError()
	if err != nil && e.err == nil {
		e.err = err
	}
	return err
}

// Seek implements io.Seeker without touching the Content; see the type
// comment. Seeking beyond the end is allowed, as for files.
func (u *upstream) Seek(offset int64, whence int) (int64, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return 0, errClosed
	}
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = u.pos + offset
	case io.SeekEnd:
		abs = u.file.Size + offset
	default:
		return 0, errors.New("httpfront: invalid whence")
	}
	if abs < 0 {
		return 0, errors.New("httpfront: negative position")
	}
	u.pos = abs
	return abs, nil
}

// fail records err as the first failure and returns it.
func (u *upstream) fail(err error) error {
	u.errMu.Lock()
	defer u.errMu.Unlock()
	if u.err == nil {
		u.err = err
	}
	return err
}

// failure returns the first failure, if any.
func (u *upstream) failure() error {
	u.errMu.Lock()
	defer u.errMu.Unlock()
	return u.err
}

// close cancels outstanding fetches and closes the Content if it was opened.
// It is idempotent.
func (u *upstream) close() error {
	u.cancel()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil
	}
	u.closed = true
	if u.c == nil {
		return nil
	}
	return u.c.Close()
}

// report returns the content's fetch report, if it gives one.
func (u *upstream) report() (servers, retransmits int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if r, ok := u.c.(Reporter); ok {
		return r.FetchReport()
	}
	return 0, 0
}
