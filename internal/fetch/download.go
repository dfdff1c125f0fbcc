package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/hashtree"
	"github.com/fastfile/fschunk/internal/pool"
)

// chunk is one slot of a response's reorder window. Once done its bytes
// never change, so the reader copies them out.
type chunk struct {
	off int64 // absolute offset of its first byte
	n   int
	// whole or pieces hold its bytes (see PieceSize); a piece already
	// written to the client is given back and its entry is nil.
	whole      *[]byte
	pieces     []*[]byte
	have       spanSet
	reqs       []*request   // outstanding READs for it
	asked      bool         // asked for before: later READs are retransmissions
	dupped     bool         // an endgame duplicate was sent
	done       bool         // every byte is in
	verified   bool         // and matches the content hash: the reader may send it
	verifying  bool         // being checked by the pump, outside the lock
	dropped    bool         // left the window while being checked: the checker frees it
	src        [][]ServerID // per leaf, the servers that sent its bytes (for blame)
	firstAsked time.Time
}

// request is one outstanding READ.
type request struct {
	id       uint32
	d        *download
	c        *chunk
	l        *link
	ranges   []span // chunk-relative, in the order the server sends them
	asked    int    // bytes asked
	released int    // bytes of the window given back (received or abandoned)
	expect   int    // request-space position after the furthest datagram seen
	ahead    int    // bytes in flight on the link when sent (queue to wait behind)
	sentAt   time.Time
	lastAct  time.Time
	first    bool
	retrans  bool
	dup      bool
	tailAt   time.Time // when the request's last datagram arrived with holes left
	gapAt    time.Time // when a datagram arrived beyond a hole (not yet asked again)
	gapAfter int       // datagrams that arrived beyond it since (lossThreshold)
	reasked  bool      // declared lost by time and asked again (round.reaskLost)
}

// complete reports whether every byte the request asked for is held
// (from it or from any other request for the chunk).
func (r *request) complete() bool {
	for _, s := range r.ranges {
		if !r.c.have.coversRange(s.lo, s.hi) {
			return false
		}
	}
	return true
}

// lossAt is when the holes of a request whose tail arrived are declared
// lost: after a reordering allowance of a quarter of the server's RTT
// (at least 1 ms), like RFC 9002's time threshold.
func (r *request) lossAt() time.Time {
	return r.tailAt.Add(r.l.reorderAllowance())
}

// lostAt is when a READ with no answer yet is declared lost, RACK-style
// (RFC 8985), long before its RTO: once the server answered a READ sent
// after it (servers start READs in the order they arrive), a reordering
// allowance later. ok is false when that does not apply (the RTO
// decides). A READ whose tail is lost is left to its RTO: the server
// interleaves the batches of the READs it serves, so a READ's silence
// says little while others are sent.
//
// A retransmission sent to a paced server with nothing else of ours in
// flight to it has no queue to wait behind and no later READ to be
// overtaken by: it is lost once its first datagram is later than the
// smoothed RTT and the larger of a reordering allowance and 2·RTTVAR
// (RFC 9002's probe timeout has 4·RTTVAR, which here is mostly the
// spread of waits behind other READs). That is the retransmission of the
// chunk the client waits for, alone on the path while the window is
// full: waiting for the RTO stalls the response. (A first READ may wait
// behind READs the gateway gave up on and the server still serves.)
func (r *request) lostAt() (at time.Time, ok bool) {
	l := r.l
	if r.first {
		return time.Time{}, false
	}
	if l.firstSent.After(r.sentAt) {
		// RACK: as long after its sending as the READ sent after it
		// took, and a reordering allowance. (Not counted from that
		// READ's answer: with READs answered all the time, a deadline
		// counted from the latest one would never come.)
		return r.sentAt.Add(l.firstSeenAt.Sub(l.firstSent) + l.reorderAllowance()), true
	}
	if r.idleRetransmit() {
		return r.sentAt.Add(max(l.srtt, l.minRTT) + max(l.reorderAllowance(), 2*l.rttvar) + l.turn()), true
	}
	return time.Time{}, false
}

// idleRetransmit: r asks again for bytes asked before, of a paced server
// with nothing else of ours in flight (see lostAt).
func (r *request) idleRetransmit() bool {
	return r.retrans && r.l.wide()
}

// tailLostAt is when a READ whose datagrams stopped before its end has
// lost its tail (or the rest of it): two turns of its server's round of
// READs (link.gap) and a reordering allowance after its last datagram.
// Only if by then the server sent other READs' bytes since, or has no
// other READ of ours (tailLost): a server silent altogether is left to
// the RTO. Without it a READ whose last datagram is lost waits for its
// RTO, and with it the chunk and the in-order window behind it. Wide-area
// paths only (link.wide).
func (r *request) tailLostAt() (at time.Time, ok bool) {
	if !r.first || !r.tailAt.IsZero() || r.expect >= r.asked || !r.l.wide() {
		return time.Time{}, false
	}
	return r.lastAct.Add(r.l.turn() + r.l.reorderAllowance()), true
}

// tailLost reports whether the server went on after r fell silent.
func (r *request) tailLost() bool {
	return r.l.lastData.After(r.lastAct) || r.l.reqs == 1
}

// position maps a chunk-relative datagram to its place in the request's
// byte stream (its ranges laid end to end), so loss shows as a gap.
func (r *request) position(rel, n int) (int, bool) {
	base := 0
	for _, s := range r.ranges {
		if rel >= s.lo && rel+n <= s.hi {
			return base + rel - s.lo, true
		}
		base += s.hi - s.lo
	}
	return 0, false
}

// deadline is when a silent request is given up: its RTO after the last
// datagram, and before the first one also the time to drain what was
// queued on the server ahead of it.
func (r *request) deadline() time.Time {
	t := r.lastAct.Add(r.l.rto())
	if !r.first {
		t = t.Add(r.l.transferTime(r.ahead + r.asked))
	}
	return t
}

// download is the state of one Reader. Everything but the channels and
// pos is guarded by Engine.mu.
type download struct {
	e    *Engine
	hash [fschunk.HashSize]byte
	size int64
	key  pool.Key
	t    *vtree // the version's hash tree, shared with its other readers
	// hashOut: HASH_REQUESTs decided by assign, sent by the pump.
	hashOut []outHash
	ctx     context.Context
	label   string
	opened  time.Time
	// streaming: counted in e.streaming (see setStreaming).
	streaming bool

	streamPos int64 // next byte the reader gets
	// limit is where the stretch being read ends (SetLimit; the file's
	// size if none): the window fetches nothing at or past it.
	limit    int64
	chunks   []*chunk // the window
	win      int      // current window, chunks (grows as the reader consumes)
	maxWin   int
	bad      map[ServerID]bool // servers that no longer have this version
	err      error
	dupBytes int64
	used     map[ServerID]bool // servers that delivered bytes
	retrans  int
	noHolder time.Time
	// links and miss are schedule's scratch slices, kept between rounds.
	links []*link
	miss  []span
	// queued: the last round found no room for the download's missing
	// chunks and it had no READ of its own outstanding.
	queued       bool
	lastProgress time.Time
	closed       bool

	wake     chan struct{} // to the pump: something changed
	progress chan struct{} // to the reader: a chunk completed or an error
	done     chan struct{} // closed by Close
	pumpDone chan struct{}
	pumping  bool // a pump goroutine runs (see pump)

	pos     int64 // reader goroutine only
	started bool

	// The Write in progress, see stalled.go: the piece being written
	// (nil if none) and since when; stalled: it has lasted StalledAfter;
	// reclaimed: everything else was given back meanwhile. lprev, lnext
	// and on: d's place in e.writers or e.stalled.
	writing    *[]byte
	writeSince time.Time
	stalled    bool
	reclaimed  bool
	// read: the client took its last write in time; until it has (and
	// after a stall) writes are probes (see WriteToN).
	read         bool
	lprev, lnext *download
	on           *dlist
}

// Reader reads one version of a file; it implements io.ReadSeekCloser
// for http.ServeContent. Seek is lazy; a Read at a new position restarts
// the window there. Not safe for concurrent use (one response, one reader).
type Reader struct{ d *download }

// SetLimit says that the stretch being read ends at end (the end of the
// Range being served): the window fetches nothing at or past it, and the
// chunk it ends in is asked only up to it. So a 1-byte range costs the
// servers one byte, not a chunk and a readahead window. A read at or past
// the limit lifts it to the end of the file; a Seek keeps it.
func (r *Reader) SetLimit(end int64) {
	d, e := r.d, r.d.e
	e.mu.Lock()
	defer e.mu.Unlock()
	d.limit = min(max(end, 0), d.size)
}

// Seek sets the position of the next Read.
func (r *Reader) Seek(off int64, whence int) (int64, error) {
	d := r.d
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += d.pos
	case io.SeekEnd:
		off += d.size
	default:
		return 0, fmt.Errorf("fetch: seek whence %d", whence)
	}
	if off < 0 {
		return 0, errors.New("fetch: seek before start")
	}
	d.pos = off
	return off, nil
}

// Read copies the next bytes once they have arrived in order.
func (r *Reader) Read(p []byte) (int, error) {
	d := r.d
	if len(p) == 0 {
		return 0, nil
	}
	if d.pos >= d.size {
		return 0, io.EOF
	}
	d.e.mu.Lock()
	defer d.e.mu.Unlock()
	c, rel, err := d.next()
	if err != nil {
		return 0, err
	}
	n := 0
	for n < len(p) && rel+n < c.n {
		b, _ := c.bytesAt(rel + n)
		n += copy(p[n:], b)
	}
	d.advance(c, rel, n)
	return n, nil
}

// next waits until the chunk at the stream position (d.pos < d.size) is
// complete and returns it, and the offset in it. Called with e.mu held,
// it returns with it held, having released it while waiting.
func (d *download) next() (*chunk, int, error) {
	for {
		c, rel, err := d.ready()
		if err != nil || c != nil {
			return c, rel, err
		}
		d.e.mu.Unlock()
		select {
		case <-d.progress:
		case <-d.ctx.Done():
			err = d.ctx.Err()
		}
		d.e.mu.Lock()
		if err != nil {
			return nil, 0, err
		}
	}
}

// errEmptyWindow: the window holds no chunk at a position before the end,
// which the arithmetic of fill rules out; it is an error, not a panic, so
// that a bug cannot leave Engine.mu locked.
var errEmptyWindow = errors.New("fetch: empty window before the end of the version")

// ready returns the chunk at the stream position if it is complete (nil
// if not yet). Under e.mu.
func (d *download) ready() (c *chunk, rel int, err error) {
	if d.closed {
		return nil, 0, ErrClosed
	}
	if d.err != nil {
		return nil, 0, d.err
	}
	d.startAt()
	if d.err != nil {
		return nil, 0, d.err
	}
	d.fill() // pos < size, so the window holds at least one chunk
	if len(d.chunks) == 0 {
		return nil, 0, fmt.Errorf("%w: offset %d of %d", errEmptyWindow, d.streamPos, d.size)
	}
	if c := d.chunks[0]; c.verified {
		return c, int(d.streamPos - c.off), nil
	}
	return nil, 0, nil
}

// startAt starts fetching at d.pos: the pump on the first read, a new
// window after a seek. Under e.mu.
func (d *download) startAt() {
	if d.pos >= d.limit {
		// Reading on past the stretch: nothing beyond it was fetched,
		// so the window is empty and simply goes on from here.
		d.limit = d.size
	}
	if d.started && d.pos == d.streamPos {
		return
	}
	d.restart(d.pos)
	if !d.started {
		d.started = true
		d.e.stats.Downloads++
		d.startPump()
	}
}

// startPump starts the download's pump, unless it runs. Under e.mu.
func (d *download) startPump() {
	if !d.pumping {
		d.pumping = true
		d.pumpDone = make(chan struct{})
		go d.pump()
	}
}

// advance moves the stream past n bytes of c, the first chunk and complete,
// taken from offset rel; the pieces used up are given back, and a chunk
// used up leaves the window, which slides (and grows). Under e.mu.
func (d *download) advance(c *chunk, rel, n int) {
	e := d.e
	d.streamPos += int64(n)
	d.pos = d.streamPos
	for i := rel / PieceSize; i < len(c.pieces) && min((i+1)*PieceSize, c.n) <= rel+n; i++ {
		if c.pieces[i] != nil {
			e.putBuf(c.pieces[i])
			c.pieces[i] = nil
		}
	}
	if rel+n < c.n {
		return
	}
	if c.whole != nil {
		e.putBuf(c.whole)
		c.whole = nil
	}
	c.pieces = nil
	d.chunks = d.chunks[1:]
	d.win = min(d.win+2, d.maxWin)
	if d.streamPos >= d.limit {
		d.setStreaming(false) // at the end of the stretch: no share needed
	}
	notify(d.wake)
}

// ProbeSize is the most WriteToN hands a client not yet seen to read,
// before a Flush: small enough to be copied into the writer's own buffer
// (net/http's is 2 KiB for an HTTP/1.1 body, 4 KiB for an HTTP/2 stream),
// so that the Write does not block, and the Flush, which does if the
// client never reads, holds none of the engine's bytes.
const ProbeSize = 2 << 10

// FlushWriter is a writer with a buffer of its own, of at least
// ProbeSize bytes, sent by FlushError (as an http.ResponseWriter through
// http.ResponseController).
type FlushWriter interface {
	io.Writer
	FlushError() error
}

// WriteToN writes the next n bytes (fewer at the end of the file, then
// io.EOF) to w straight from the chunk buffers: each piece in one Write
// as soon as its chunk is verified, no copy in between. If w is a
// FlushWriter, a client not yet seen to read is first sent ProbeSize
// bytes and a Flush (see stalled.go). Errors from w are returned as they
// are. It must not be called concurrently with the Reader's other
// methods.
func (r *Reader) WriteToN(w io.Writer, n int64) (int64, error) {
	d, e := r.d, r.d.e
	var written int64
	e.mu.Lock()
	locked := true
	defer func() {
		if locked {
			e.mu.Unlock()
		}
	}()
	// unlocked runs f (a Write of piece p, or a Flush if p is nil)
	// without the lock, recorded as the response's write in progress: a
	// complete chunk is never written to again, and the piece being
	// written is recycled by nobody else (see stalled.go), so its bytes
	// can be handed to w as they are.
	unlocked := func(p *[]byte, f func() error) (stalled, reclaimed bool, err error) {
		d.beginWrite(p, e.cfg.Now())
		locked = false
		e.mu.Unlock()
		err = f()
		e.mu.Lock()
		locked = true
		stalled, reclaimed = d.endWrite()
		return stalled, reclaimed, err
	}
	fw, _ := w.(FlushWriter)
	for written < n {
		if d.pos >= d.size {
			return written, io.EOF
		}
		c, rel, err := d.next()
		if err != nil {
			return written, err
		}
		b, p := c.bytesAt(rel)
		b = b[:min(int64(len(b)), n-written)]
		probe := fw != nil && !d.read
		if probe {
			b = b[:min(len(b), ProbeSize)]
		}
		var wn int
		stalled, reclaimed, werr := unlocked(p, func() (err error) {
			wn, err = w.Write(b)
			return err
		})
		d.taken(c, rel, wn, reclaimed, werr)
		written += int64(wn)
		if probe && werr == nil {
			// The probe is in w's buffer: see whether it leaves.
			stalled, reclaimed, werr = unlocked(nil, fw.FlushError)
			d.taken(nil, 0, 0, reclaimed, werr)
		}
		d.read = !stalled
		if werr != nil {
			return written, werr
		}
	}
	return written, nil
}

// taken moves the stream past n bytes of c written from rel (none if c
// is nil); or, if the window was reclaimed during the write, starts a
// new window where the stream then stands, unless the write failed.
// Under e.mu.
func (d *download) taken(c *chunk, rel, n int, reclaimed bool, err error) {
	if !reclaimed {
		if c != nil {
			d.advance(c, rel, n)
		}
		return
	}
	d.streamPos += int64(n)
	d.pos = d.streamPos
	if err == nil && d.pos < d.size {
		d.restart(d.pos)
		d.startPump()
	}
}

// FetchReport says how many servers delivered bytes to this reader and
// how many of its READs were retransmissions (for the access log).
func (r *Reader) FetchReport() (servers, retransmits int) {
	e := r.d.e
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(r.d.used), r.d.retrans
}

// Close stops fetching and frees the window.
func (r *Reader) Close() error {
	d, e := r.d, r.d.e
	e.mu.Lock()
	if d.closed {
		e.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.done)
	pumping, pumpDone := d.pumping, d.pumpDone
	e.mu.Unlock()
	if pumping {
		<-pumpDone
	}
	e.mu.Lock()
	if d.on != nil || d.reclaimed {
		d.endWrite() // a Write that panicked
	}
	d.drop()
	d.setStreaming(false)
	delete(e.readers, d)
	delete(e.starved, d)
	e.releaseTree(d.t)
	e.mu.Unlock()
	return nil
}

// setStreaming says whether d counts among the downloads that share the
// budget: from its first read until its end or its close. Under e.mu.
func (d *download) setStreaming(on bool) {
	if on != d.streaming {
		d.streaming = on
		if on {
			d.e.streaming++
		} else {
			d.e.streaming--
		}
	}
}

// restart empties the window and starts it again at pos.
func (d *download) restart(pos int64) {
	d.drop()
	d.setStreaming(true)
	d.streamPos = pos
	d.win = min(2, d.maxWin)
	if d.e.held+initialReadahead*d.e.cfg.ChunkSize <= d.e.budget/2 {
		d.win = min(initialReadahead, d.maxWin) // an idle gateway: start big
	}
	d.lastProgress = d.e.cfg.Now()
	d.fill()
	notify(d.wake)
}

// drop cancels every outstanding READ and returns the buffers.
func (d *download) drop() {
	for _, c := range d.chunks {
		for len(c.reqs) > 0 {
			d.e.finish(c.reqs[0], false)
		}
		if c.verifying {
			c.dropped = true // the pump is reading it: it frees it after
		} else {
			d.e.freePieces(c, nil)
		}
	}
	d.chunks = d.chunks[:0]
}

// initialReadahead is the window a response starts with, in chunks, when
// the gateway holds less than half its budget (otherwise two; it grows by
// two per chunk the client takes): 2 MiB of 128 KiB chunks, a round
// trip's worth on a fast long path, so that the first RTTs of a large
// download are not spent growing it.
const initialReadahead = 16

// minStreamChunks is the least window of a response, whatever the budget:
// the chunk the client is being sent. Beyond the budget each response
// fetches its next chunk, one leaf (the least that can be verified),
// only once the client has taken the last, so that memory grows by a
// leaf per response, not by a window; and a response whose client stops
// reading gives back all but the piece it is writing (stalled.go).
const minStreamChunks = 1

// fill adds chunks up to the window, within the download's share of the
// engine's budget, and never past the limit. Chunks end on multiples of
// the chunk size (so a restart lines up with the READs of other
// responses' windows), or at the limit.
func (d *download) fill() {
	e := d.e
	if e.writers.head != nil {
		e.sweep(e.cfg.Now())
	}
	if d.stalled {
		return // its client does not read: nothing more for it
	}
	cs := int64(e.cfg.ChunkSize)
	n := min(d.win, e.share())
	// A leaf is verified whole, so it is fetched whole: the window runs
	// from the leaf the stream is in to the end of the leaf the limit is
	// in (chunk sizes are multiples of the leaf). Sizes are at most
	// fschunk.MaxFileSize (Open), so rounding up does not overflow.
	leaf := int64(hashtree.LeafSize)
	end := min(d.size, (d.limit+leaf-1)/leaf*leaf)
	for len(d.chunks) < n {
		over := e.held+int(cs) > e.budget
		if over && e.stalled.head != nil {
			e.reclaim(int(cs))
			over = e.held+int(cs) > e.budget
		}
		if over && len(d.chunks) >= minStreamChunks {
			return
		}
		lo := d.streamPos / leaf * leaf
		if k := len(d.chunks); k > 0 {
			lo = d.chunks[k-1].off + int64(d.chunks[k-1].n)
		}
		if lo >= end {
			return
		}
		hi := lo + min(cs-lo%cs, end-lo) // no overflow, whatever the size
		if over {
			hi = min(hi, lo+leaf)
		}
		c := &chunk{off: lo, n: int(hi - lo)}
		e.reserve(c)
		_, nl := chunkLeaves(c)
		c.src = make([][]ServerID, nl)
		d.chunks = append(d.chunks, c)
	}
}

func (d *download) fail(err error) {
	if d.err == nil {
		d.err = err
		notify(d.progress)
	}
}

// outRead is a READ decided under the lock and sent after it.
type outRead struct {
	id  ServerID
	msg fschunk.Read
}

// pump schedules the download's READs until it is closed, or until its
// window is reclaimed (its client stopped reading): it then has nothing
// to do until the client reads again, and its goroutine is not kept
// (taken starts it again).
func (d *download) pump() {
	defer close(d.pumpDone)
	e := d.e
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var out []outRead
	var outH []outHash
	var jobs []verifyJob
	for {
		e.mu.Lock()
		out, outH, jobs = out[:0], outH[:0], jobs[:0]
		var next time.Time
		if !d.closed && d.err == nil {
			out, next = d.schedule(out, e.cfg.Now())
			outH = append(outH, d.hashOut...)
			d.hashOut = d.hashOut[:0]
			jobs = d.takeVerifyJobs(jobs)
		}
		if d.reclaimed && len(d.chunks) == 0 && len(out) == 0 && len(outH) == 0 && len(jobs) == 0 {
			d.pumping = false
			e.mu.Unlock()
			return
		}
		e.mu.Unlock()
		for i := range outH {
			if err := e.cfg.Sender.SendHashRequest(outH[i].id, &outH[i].msg); err != nil {
				e.cfg.Logger.Debug("send hash request", "server", uint64(outH[i].id), "err", err)
			}
		}
		for i := range out {
			if err := e.cfg.Sender.SendRead(out[i].id, &out[i].msg); err != nil {
				e.cfg.Logger.Debug("send read", "server", uint64(out[i].id), "err", err)
			}
		}
		if len(jobs) > 0 {
			// Checking runs here, on the response's own goroutine, in
			// parallel with the client's writes and the receive loop.
			h, _ := e.hashers.Get().(*hashtree.Hasher)
			if h == nil {
				h = new(hashtree.Hasher)
			}
			for i := range jobs {
				jobs[i].verify(h)
			}
			e.hashers.Put(h)
			e.mu.Lock()
			blames := d.applyVerified(jobs, nil)
			notify(d.progress)
			e.mu.Unlock()
			e.report(blames)
			continue // schedule again: refetches, or more chunks to check
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(e.cfg.Now()), 0) // on the engine's clock, as next is
		}
		timer.Reset(wait)
		select {
		case <-d.wake:
		case <-timer.C:
		case <-d.done:
			return
		case <-d.ctx.Done():
			e.mu.Lock()
			d.fail(d.ctx.Err())
			e.mu.Unlock()
			return
		}
	}
}

// schedule decides what to ask of whom, under the engine lock, and
// returns the READs to send and when to look again: at the latest when
// the first outstanding READ, including those just decided, is due. (A
// READ whose answer is lost entirely wakes nobody else.)
func (d *download) schedule(out []outRead, now time.Time) ([]outRead, time.Time) {
	out, next := d.assign(out, now)
	for _, c := range d.chunks {
		for _, r := range c.reqs {
			t := r.deadline()
			if !r.tailAt.IsZero() && r.lossAt().Before(t) {
				t = r.lossAt()
			}
			if !r.gapAt.IsZero() {
				// A gap already due waits for room (recoverGaps is then
				// starved and woken with the others), not for a timer.
				if at := r.gapAt.Add(r.l.reorderAllowance()); at.Before(t) && at.After(now) {
					t = at
				}
			}
			if at, ok := r.lostAt(); ok && !r.reasked && at.Before(t) && at.After(now) {
				t = at
			}
			if at, ok := r.tailLostAt(); ok && !r.reasked && at.Before(t) && at.After(now) {
				t = at
			}
			if next.IsZero() || t.Before(next) {
				next = t
			}
		}
	}
	return out, next
}

// assign times out READs, assigns chunks and copies them; see schedule.
// One pass is a round: its phases are the round's methods, in order.
func (d *download) assign(out []outRead, now time.Time) ([]outRead, time.Time) {
	r := round{d: d, e: d.e, now: now, out: out}
	d.fill()
	r.expire()
	if d.stalled {
		// Its client does not read: nothing more is asked for it (the
		// READs out may finish), and what it waits for is no stall of
		// the servers.
		d.lastProgress = now
		return r.out, r.next
	}
	if !r.checkStall() || !r.holders() {
		return r.out, r.next
	}
	starved := r.reaskLost()
	starved = r.recoverGaps() || starved
	starved = starved || r.assignMissing()
	for !starved && r.growForRoom() {
		starved = r.assignMissing()
	}
	r.hedge()
	d.queued = false
	if starved {
		d.e.starved[d] = struct{}{}
		d.queued = true
		for _, c := range d.chunks {
			if len(c.reqs) > 0 {
				d.queued = false // its own READs decide whether it stalls
				break
			}
		}
		return r.out, r.next
	}
	r.endgame()
	return r.out, r.next
}

// round is one scheduling pass over a download, under the engine lock:
// the READs it decides and the earliest time something falls due.
type round struct {
	d          *download
	e          *Engine
	now        time.Time
	out        []outRead
	next       time.Time
	links      []*link // holders not known to lack the version
	allSuspect bool
	lost       []*request // declared lost by time this round, to ask again
}

// soon makes the pump look again at t at the latest.
func (r *round) soon(t time.Time) {
	if r.next.IsZero() || t.Before(r.next) {
		r.next = t
	}
}

// expire ends READs whose holes are declared lost (a reordering
// allowance after their tail) and times out silent ones; their chunks
// become unassigned.
func (r *round) expire() {
	e, now := r.e, r.now
	for _, c := range r.d.chunks {
		for i := 0; i < len(c.reqs); {
			q := c.reqs[i]
			if !q.tailAt.IsZero() {
				if at := q.lossAt(); !now.Before(at) {
					e.finish(q, true) // a loss, not a timeout: ask again below
					continue
				} else {
					r.soon(at)
				}
			}
			// Declared lost by time (RACK, a retransmission's timeout, a
			// silent tail), the READ is asked again but not given up: if it
			// was only late, its bytes still count, it keeps its place in
			// the window and it is no loss to the round's accounting. Given
			// up, a gateway whose own lateness (a loaded CPU, a timer's
			// slack) read as loss threw away the bytes on their way and
			// asked again, and again.
			if at, ok := q.lostAt(); ok && !q.reasked {
				if !now.Before(at) {
					if q.idleRetransmit() && !q.l.firstSent.After(q.sentAt) {
						e.stats.IdleLosses++
					} else {
						e.stats.EarlyLosses++
					}
					r.lost = append(r.lost, q)
				} else {
					r.soon(at)
				}
			}
			if at, ok := q.tailLostAt(); ok && !q.reasked {
				if !now.Before(at) && q.tailLost() {
					e.stats.TailLosses++
					r.lost = append(r.lost, q)
				} else if now.Before(at) {
					r.soon(at)
				}
			}
			if dl := q.deadline(); !now.Before(dl) {
				if q.l.lastData.After(q.lastAct) {
					// The server kept delivering other reads after this one
					// went quiet: the READ or its tail was lost, the server
					// is fine. Ask again without backing off. (Late answers
					// to READs given up on do not count: a server drowning
					// in them must see the gateway back off.)
					e.finish(q, true)
					continue
				}
				e.cfg.Logger.Debug("read timed out", "server", uint64(q.l.id), "id", q.id, "offset", q.c.off,
					"asked", q.asked, "released", q.released, "first", q.first, "age", now.Sub(q.sentAt), "quiet", now.Sub(q.lastAct), "rto", q.l.rto())
				q.l.onTimeout(now, e.cfg.ChunkSize)
				e.stats.Timeouts++
				e.finish(q, false)
				continue
			} else {
				r.soon(dl)
			}
			i++
		}
	}
}

// checkStall fails the download when the chunks it waits for made no
// progress for the stall timeout; a slow client with a full window is not
// a stall. It reports whether the download goes on.
func (r *round) checkStall() bool {
	d, e, now := r.d, r.e, r.now
	waiting := false
	for _, c := range d.chunks {
		waiting = waiting || !c.verified
	}
	switch {
	case !waiting:
		d.lastProgress = now
	case d.queued && now.Sub(e.lastDelivery) <= e.cfg.StallTimeout:
		// Under overload most responses wait for room in the gateway's
		// own windows while others are being served: that is a queue,
		// not a stall, and failing it would turn load into 504s. If
		// nothing at all is delivered for StallTimeout, it is a stall.
		d.lastProgress = now
		r.soon(now.Add(e.cfg.StallTimeout))
	case now.Sub(d.lastProgress) > e.cfg.StallTimeout:
		d.fail(fmt.Errorf("%w: no data for %v", ErrTimeout, e.cfg.StallTimeout))
		d.logStall(now)
		return false
	default:
		r.soon(d.lastProgress.Add(e.cfg.StallTimeout + time.Millisecond))
	}
	return true
}

// holders finds the links of the servers holding the version. With none,
// the download waits for one to (re)appear, up to HolderWait; it reports
// whether there is any.
func (r *round) holders() bool {
	d, e, now := r.d, r.e, r.now
	links := d.links[:0] // scratch, reused every round
	for _, h := range e.cfg.Holders(d.key) {
		if !d.bad[h] && !d.t.excluded(h) {
			links = append(links, e.link(h))
		}
	}
	d.links, r.links = links, links
	if at := d.wantHashes(links, now); !at.IsZero() {
		r.soon(at)
	}
	if len(links) == 0 {
		if len(d.t.blamed) > 0 {
			// Every holder left was caught lying about this version.
			d.fail(ErrUnverified)
			return false
		}
		if d.noHolder.IsZero() {
			d.noHolder = now
		}
		if now.Sub(d.noHolder) >= e.cfg.HolderWait {
			d.fail(ErrUnavailable)
			return false
		}
		// Servers re-register within a couple of heartbeats: look again soon.
		r.soon(now.Add(50 * time.Millisecond))
		return false
	}
	d.noHolder = time.Time{}
	r.allSuspect = true
	for _, l := range links {
		r.allSuspect = r.allSuspect && l.suspect()
	}
	return true
}

// pick chooses, by the policy, a holder with room for n more bytes: not
// one already serving exclude, and, if idleOnly, one with nothing in
// flight. nil if none has room.
func (r *round) pick(n int, exclude *chunk, idleOnly bool) *link {
	e, now := r.e, r.now
	cs, ls := e.cands[:0], e.candLinks[:0]
	if !e.room(n) {
		return nil
	}
	for _, l := range r.links {
		if !l.room(n, now, r.allSuspect) || idleOnly && l.inflight > 0 || exclude != nil && serves(exclude, l) {
			if now.Before(l.suspendTill) {
				r.soon(l.suspendTill)
			}
			continue
		}
		if len(cs) == cap(e.cands) {
			break
		}
		cs = append(cs, Candidate{SRTT: l.srtt, Rate: l.policyRate(), Inflight: l.inflight})
		ls = append(ls, l)
	}
	if len(cs) == 0 {
		return nil
	}
	i := e.cfg.Policy.Pick(cs, n)
	if i < 0 || i >= len(ls) {
		return nil
	}
	return ls[i]
}

// reaskLost asks again for what the READs declared lost by time (expire)
// still lack and no other READ asks for, leaving them outstanding; it
// reports whether it ran out of room first (those left are declared
// again next round).
func (r *round) reaskLost() (starved bool) {
	d, e := r.d, r.e
	for _, q := range r.lost {
		c := q.c
		if c.done || q.reasked || e.reqs[q.id] != q {
			continue
		}
		d.miss = c.missingIn(d.miss[:0], 0, c.n, q)
		if len(d.miss) == 0 {
			q.reasked = true
			continue
		}
		l := r.pick(spanBytes(d.miss), nil, false)
		if l == nil {
			return true
		}
		q.reasked = true
		r.out = append(r.out, e.issue(d, c, l, d.miss, false, r.now))
	}
	return false
}

// lossThreshold is how many datagrams of a READ must arrive beyond a
// hole for it to be lost without waiting for the reordering allowance
// (RFC 9002's packet threshold, TCP's three duplicate ACKs): a server
// sends a READ's bytes in order, and datagrams of one batch arrive
// together, so a hole inside a batch is known at once.
const lossThreshold = 3

// recoverGaps asks again for bytes lost in the middle of a READ still in
// progress: a server sends a READ's bytes in order, so a datagram beyond
// a hole means the hole was lost (or overtaken: hence the reordering
// allowance). Waiting for the READ's last datagram would add the rest of
// the READ's sending time, which with paced, interleaved READs is many
// milliseconds, to the time the chunk takes.
func (r *round) recoverGaps() (starved bool) {
	d, e, now := r.d, r.e, r.now
	for _, c := range d.chunks {
		if c.done {
			continue
		}
		for _, q := range c.reqs {
			if q.gapAt.IsZero() || q.dup {
				continue
			}
			if at := q.gapAt.Add(q.l.reorderAllowance()); now.Before(at) && q.gapAfter < lossThreshold {
				r.soon(at)
				continue
			}
			d.miss = c.holesBehind(d.miss[:0], q)
			if len(d.miss) == 0 {
				q.gapAt = time.Time{}
				continue
			}
			l := r.pick(spanBytes(d.miss), nil, false)
			if l == nil {
				return true // no room now: woken when there is
			}
			q.gapAt = time.Time{}
			e.stats.GapRecoveries++
			r.out = append(r.out, e.issue(d, c, l, d.miss, false, now))
			break // c.reqs changed
		}
	}
	return false
}

// assignMissing gives every chunk with missing bytes and no READ for them
// to a holder; it reports whether it ran out of room first (starved).
func (r *round) assignMissing() bool {
	d, e := r.d, r.e
	for _, c := range d.chunks {
		if c.done || c.assigned() {
			continue
		}
		d.miss = c.have.missing(d.miss[:0], c.n) // scratch: issue copies what it keeps
		l := r.pick(spanBytes(d.miss), nil, false)
		if l == nil {
			return true
		}
		r.out = append(r.out, e.issue(d, c, l, d.miss, false, r.now))
	}
	return false
}

// growForRoom adds a chunk to the window when every chunk in it is asked
// for, a holder has room for one more and the chunk the client waits for
// is not verified yet (its hashes on their way at the start, a loss being
// recovered): the network, not the client, holds the response up, and a
// window grown only as the client takes chunks would leave the links idle
// for the round trips that takes (at 200 ms RTT a chunk that loses a
// datagram takes about 2.5 RTT; a window of 16 chunks is 0.2 RTT of three
// 100 Mbit/s links). Only while the gateway holds less than half its
// budget, as a response's initial readahead: a response must not take
// what others are about to share. It reports whether the window grew.
func (r *round) growForRoom() bool {
	d, e := r.d, r.e
	if len(d.chunks) == 0 || d.chunks[0].verified || d.win >= d.maxWin || len(d.chunks) < d.win ||
		e.held+2*e.cfg.ChunkSize > e.budget/2 || r.pick(e.cfg.ChunkSize, nil, false) == nil {
		return false
	}
	d.win++
	n := len(d.chunks)
	d.fill()
	return len(d.chunks) > n
}

// copyChunk asks a second server for c's missing bytes, within the
// response's duplicate budget; false when it could not.
func (r *round) copyChunk(c *chunk, idleOnly bool) bool {
	d, e := r.d, r.e
	budget := int64(e.cfg.DupBudget*float64(d.size)) + int64(e.cfg.ChunkSize)
	d.miss = c.have.missing(d.miss[:0], c.n)
	n := spanBytes(d.miss)
	if d.dupBytes+int64(n) > budget {
		return false
	}
	l := r.pick(n, c, idleOnly)
	if l == nil || l.suspect() {
		return false
	}
	c.dupped = true
	d.dupBytes += int64(n)
	e.stats.EndgameRequests++
	r.out = append(r.out, e.issue(d, c, l, d.miss, true, r.now))
	return true
}

// hedge asks a healthy server too for a chunk whose only READs are on
// suspect servers (a timeout, nothing since), at once, so a dying server
// does not hold up the response for its backed-off RTO.
func (r *round) hedge() {
	for _, c := range r.d.chunks {
		if c.done || c.dupped || len(c.reqs) == 0 || !onlySuspects(c) {
			continue
		}
		if !r.copyChunk(c, false) {
			break
		}
	}
}

// endgame: nothing left to assign and the window at its maximum (-window;
// a window held smaller by the budget's share does not count: extra
// copies would only add to an overload). At the tail of the response, a
// server with nothing to do takes a copy of the oldest unfinished chunk,
// so one slow server does not hold up the end. Mid-file only the chunk
// the client is waiting for is hedged, and only once it is late.
func (r *round) endgame() {
	d := r.d
	if len(d.chunks) == 0 {
		return
	}
	last := d.chunks[len(d.chunks)-1]
	tail := last.off+int64(last.n) >= d.size
	if !tail && len(d.chunks) < d.maxWin {
		return
	}
	for i, c := range d.chunks {
		if c.done || c.dupped {
			continue
		}
		if !tail {
			if i > 0 {
				break
			}
			if at := lateAt(c); r.now.Before(at) {
				r.soon(at)
				break
			}
		}
		if !r.copyChunk(c, true) {
			break
		}
	}
}

// holesBehind appends to dst the bytes q asked for that are missing
// behind the furthest datagram q delivered, less those another
// outstanding READ asks for.
func (c *chunk) holesBehind(dst []span, q *request) []span {
	base := 0
	for _, s := range q.ranges {
		if base >= q.expect {
			break
		}
		hi := min(s.hi, s.lo+q.expect-base)
		dst = c.missingIn(dst, s.lo, hi, q)
		base += s.hi - s.lo
	}
	return dst
}

// missingIn appends the bytes of [lo, hi) that c lacks and no READ for c
// other than q asks for.
func (c *chunk) missingIn(dst []span, lo, hi int, q *request) []span {
	at := lo
	for at < hi {
		// Skip what is held or asked for elsewhere.
		if end := c.coveredFrom(at, q); end > at {
			at = end
			continue
		}
		// A hole from at to the next held or asked-for byte.
		end := hi
		for _, s := range c.have {
			if s.lo > at && s.lo < end {
				end = s.lo
			}
		}
		for _, o := range c.reqs {
			if o == q {
				continue
			}
			for _, s := range o.ranges {
				if s.lo > at && s.lo < end {
					end = s.lo
				}
			}
		}
		if len(dst) == fschunk.MaxReadRanges {
			return dst
		}
		dst = append(dst, span{at, end})
		at = end
	}
	return dst
}

// coveredFrom returns the end of the held or asked-for (by a READ other
// than q) run of bytes that contains at, or at if none does.
func (c *chunk) coveredFrom(at int, q *request) int {
	end := at
	for changed := true; changed; {
		changed = false
		for _, s := range c.have {
			if s.lo <= end && end < s.hi {
				end, changed = s.hi, true
			}
		}
		for _, o := range c.reqs {
			if o == q {
				continue
			}
			for _, s := range o.ranges {
				if s.lo <= end && end < s.hi {
					end, changed = s.hi, true
				}
			}
		}
	}
	return end
}

// lateAt is when a chunk's READs have taken twice what they should: the
// server's latency plus the time to send everything queued on it.
func lateAt(c *chunk) time.Time {
	var at time.Time
	for _, r := range c.reqs {
		exp := r.l.srtt + r.l.transferTime(r.ahead+r.asked)
		t := r.sentAt.Add(2*exp + fschunk.MinRTO)
		if at.IsZero() || t.Before(at) {
			at = t
		}
	}
	return at
}

// assigned reports whether a primary (non-duplicate) READ is outstanding
// for c. It is derived from c.reqs, not counted, so that it cannot drift.
func (c *chunk) assigned() bool {
	for _, r := range c.reqs {
		if !r.dup {
			return true
		}
	}
	return false
}

func onlySuspects(c *chunk) bool {
	for _, r := range c.reqs {
		if !r.l.suspect() {
			return false
		}
	}
	return true
}

func serves(c *chunk, l *link) bool {
	for _, r := range c.reqs {
		if r.l == l {
			return true
		}
	}
	return false
}

func spanBytes(ss []span) int {
	n := 0
	for _, s := range ss {
		n += s.hi - s.lo
	}
	return n
}

// newID is a request ID not in use by a READ or a HASH_REQUEST. Under e.mu.
func (e *Engine) newID() uint32 {
	e.nextID++
	for e.nextID == 0 || e.reqs[e.nextID] != nil || e.hreqs[e.nextID] != nil {
		e.nextID++
	}
	return e.nextID
}

// issue records a READ for the missing spans of c on link l.
func (e *Engine) issue(d *download, c *chunk, l *link, miss []span, dup bool, now time.Time) outRead {
	e.newID()
	if len(miss) > fschunk.MaxReadRanges {
		miss = miss[:fschunk.MaxReadRanges] // the rest on the next round
	}
	e.allocate(d, c, now)
	r := &request{id: e.nextID, d: d, c: c, l: l, ranges: append([]span(nil), miss...),
		sentAt: now, lastAct: now, retrans: c.asked, dup: dup, ahead: l.inflight}
	r.asked = spanBytes(r.ranges)
	if l.inflight == 0 {
		l.onIdle()
	}
	l.inflight += r.asked
	l.reqs++
	e.inflight += r.asked
	e.reqs[r.id] = r
	c.reqs = append(c.reqs, r)
	e.stats.Requests++
	if c.asked && !dup {
		e.stats.Retransmits++
		l.retransmits++
		d.retrans++
	}
	if !c.asked {
		c.firstAsked = now
	}
	c.asked = true
	dg := e.cfg.DatagramSize(l.id)
	msg := fschunk.Read{ID: r.id, Hash: d.hash, MaxDatagram: uint16(min(dg, fschunk.MaxDatagramSize))}
	if l.paced = dg < fschunk.LoopbackDatagramSize; l.paced {
		// A server on this host (loopback-sized datagrams) has no router
		// queue on its path to protect, only the socket buffer, which the
		// global bound on bytes in flight protects: it is not paced.
		msg.Pace = l.paceKiB(now)
	}
	msg.Ranges = make([]fschunk.Range, len(r.ranges))
	for i, s := range r.ranges {
		msg.Ranges[i] = fschunk.Range{Offset: c.off + int64(s.lo), Length: uint32(s.hi - s.lo)}
	}
	return outRead{id: l.id, msg: msg}
}

// logStall describes a stalled response for the operator (and for us).
func (d *download) logStall(now time.Time) {
	for _, c := range d.chunks {
		if c.done {
			continue
		}
		reqs := make([]string, 0, len(c.reqs))
		for _, r := range c.reqs {
			reqs = append(reqs, fmt.Sprintf("id=%d server=%016x asked=%d released=%d expect=%d first=%v dup=%v sent=%v ago last=%v ago deadline in %v tail=%v",
				r.id, uint64(r.l.id), r.asked, r.released, r.expect, r.first, r.dup, now.Sub(r.sentAt), now.Sub(r.lastAct), r.deadline().Sub(now), !r.tailAt.IsZero()))
		}
		d.e.cfg.Logger.Warn("stalled chunk", "path", d.label, "offset", c.off, "missing", c.have.missing(nil, c.n), "reqs", reqs)
	}
	for _, l := range d.e.links {
		d.e.cfg.Logger.Warn("stalled link", "server", l.id.String(), "inflight", l.inflight, "cwnd", l.cwnd,
			"suspect", l.suspect(), "suspended_for", l.suspendTill.Sub(now), "total_inflight", d.e.inflight, "max_inflight", d.e.cfg.MaxInflight,
			"holders", len(d.e.cfg.Holders(d.key)), "bad", len(d.bad), "blamed", len(d.t.blamed), "reqs", len(d.e.reqs))
	}
}
