package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/fastfile/fschunk/internal/fschunk"
)

// chunk is one slot of a response's reorder window. Once done its bytes
// never change, so the reader copies them out.
type chunk struct {
	off        int64 // absolute offset of buf[0]
	n          int
	buf        *[]byte
	have       spanSet
	reqs       []*request // outstanding READs for it
	asked      bool       // asked for before: later READs are retransmissions
	dupped     bool       // an endgame duplicate was sent
	done       bool
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
	return r.tailAt.Add(max(r.l.srtt/4, time.Millisecond))
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
	e      *Engine
	hash   [fschunk.HashSize]byte
	size   int64
	ctx    context.Context
	label  string
	opened time.Time
	// streaming: counted in e.streaming (see setStreaming).
	streaming bool

	streamPos int64    // next byte the reader gets
	base      int64    // chunk index of chunks[0]
	chunks    []*chunk // the window
	win       int      // current window, chunks (grows as the reader consumes)
	maxWin    int
	bad       map[ServerID]bool // servers that no longer have this version
	err       error
	dupBytes  int64
	used      map[ServerID]bool // servers that delivered bytes
	retrans   int
	noHolder  time.Time
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

	pos     int64 // reader goroutine only
	started bool
}

// Reader reads one version of a file; it implements io.ReadSeekCloser
// for http.ServeContent. Seek is lazy; a Read at a new position restarts
// the window there. Not safe for concurrent use (one response, one reader).
type Reader struct{ d *download }

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
	c, rel, err := d.next()
	if err != nil {
		return 0, err
	}
	defer d.e.mu.Unlock()
	n := copy(p, (*c.buf)[rel:c.n])
	d.advance(c, rel, n)
	return n, nil
}

// next waits until the chunk at the stream position (d.pos < d.size) is
// complete and returns it, and the offset in it, with e.mu held; on an
// error the lock is not held.
func (d *download) next() (*chunk, int, error) {
	for {
		c, rel, err := d.ready()
		if err != nil || c != nil {
			return c, rel, err
		}
		select {
		case <-d.progress:
		case <-d.ctx.Done():
			return nil, 0, d.ctx.Err()
		}
	}
}

// errEmptyWindow: the window holds no chunk at a position before the end,
// which the arithmetic of fill rules out; it is an error, not a panic, so
// that a bug cannot leave Engine.mu locked.
var errEmptyWindow = errors.New("fetch: empty window before the end of the version")

// ready returns the chunk at the stream position if it is complete, with
// e.mu held; otherwise (nil chunk, or an error) the lock is released,
// also if anything in between panics.
func (d *download) ready() (c *chunk, rel int, err error) {
	e := d.e
	e.mu.Lock()
	defer func() {
		if c == nil {
			e.mu.Unlock()
		}
	}()
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
	if c := d.chunks[0]; c.done {
		return c, int(d.streamPos - c.off), nil
	}
	return nil, 0, nil
}

// startAt starts fetching at d.pos: the pump on the first read, a new
// window after a seek. Under e.mu.
func (d *download) startAt() {
	if d.started && d.pos == d.streamPos {
		return
	}
	d.restart(d.pos)
	if !d.started {
		d.started = true
		d.e.stats.Downloads++
		d.pumpDone = make(chan struct{})
		go d.pump()
	}
}

// advanceLocked is advance under e.mu, taken and released here.
func (d *download) advanceLocked(c *chunk, rel, n int) {
	d.e.mu.Lock()
	defer d.e.mu.Unlock()
	d.advance(c, rel, n)
}

// advance moves the stream past n bytes of c, the first chunk and complete,
// taken from offset rel; a chunk used up is recycled and the window slides
// (and grows). Under e.mu.
func (d *download) advance(c *chunk, rel, n int) {
	e := d.e
	d.streamPos += int64(n)
	d.pos = d.streamPos
	if rel+n < c.n {
		return
	}
	e.putBuf(c.buf)
	c.buf = nil
	d.chunks = d.chunks[1:]
	d.base++
	d.win = min(d.win+2, d.maxWin)
	if d.streamPos >= d.size {
		d.setStreaming(false) // at the end: no share needed
	}
	notify(d.wake)
}

// WriteToN writes the next n bytes (fewer at the end of the file, then
// io.EOF) to w straight from the chunk buffers, each chunk in one Write as
// soon as it is complete: no copy in between, and large writes. Errors
// from w are returned as they are. It must not be called concurrently
// with the Reader's other methods.
func (r *Reader) WriteToN(w io.Writer, n int64) (int64, error) {
	d, e := r.d, r.d.e
	var written int64
	for written < n {
		if d.pos >= d.size {
			return written, io.EOF
		}
		c, rel, err := d.next()
		if err != nil {
			return written, err
		}
		k := int(min(int64(c.n-rel), n-written))
		// A complete chunk is never written to again and only this
		// reader's own calls (restart, Close) recycle it, so its bytes
		// can be handed to w without the lock.
		e.mu.Unlock()
		wn, werr := w.Write((*c.buf)[rel : rel+k])
		d.advanceLocked(c, rel, wn)
		written += int64(wn)
		if werr != nil {
			return written, werr
		}
	}
	return written, nil
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
	started := d.started
	e.mu.Unlock()
	if started {
		<-d.pumpDone
	}
	e.mu.Lock()
	d.drop()
	d.setStreaming(false)
	delete(e.readers, d)
	delete(e.starved, d)
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
	cs := int64(d.e.cfg.ChunkSize)
	d.streamPos, d.base = pos, pos/cs
	d.win = min(2, d.maxWin)
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
		if c.buf != nil {
			d.e.putBuf(c.buf)
			c.buf = nil
		}
	}
	d.chunks = d.chunks[:0]
}

// minStreamChunks is the least window of a response, whatever the budget:
// the chunk the client is being sent. Beyond the budget each response
// fetches its next chunk only once the client has taken the last, so that
// memory grows by one chunk per response, not by a window.
const minStreamChunks = 1

// fill adds chunks up to the window, within the download's share of the
// engine's budget.
func (d *download) fill() {
	e := d.e
	cs := int64(e.cfg.ChunkSize)
	limit := min(d.win, e.share())
	for len(d.chunks) < limit && (len(d.chunks) < minStreamChunks || e.held < e.budget) {
		k := d.base + int64(len(d.chunks))
		// Sizes are at most fschunk.MaxFileSize (Open), so k*cs does not
		// overflow; the end is computed from what is left, never as
		// (k+1)*cs, which would for the last chunk of a size near 2⁶³.
		lo := max(k*cs, d.streamPos)
		if lo >= d.size {
			return
		}
		hi := lo + min(cs-lo%cs, d.size-lo)
		d.chunks = append(d.chunks, &chunk{off: lo, n: int(hi - lo), buf: e.getBuf()})
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

// pump schedules the download's READs until it is closed.
func (d *download) pump() {
	defer close(d.pumpDone)
	e := d.e
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var out []outRead
	for {
		e.mu.Lock()
		out = out[:0]
		var next time.Time
		if !d.closed && d.err == nil {
			out, next = d.schedule(out, e.cfg.Now())
		}
		e.mu.Unlock()
		for i := range out {
			if err := e.cfg.Sender.SendRead(out[i].id, &out[i].msg); err != nil {
				e.cfg.Logger.Debug("send read", "server", uint64(out[i].id), "err", err)
			}
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
			if next.IsZero() || t.Before(next) {
				next = t
			}
		}
	}
	return out, next
}

// assign times out READs, assigns chunks and copies them; see schedule.
func (d *download) assign(out []outRead, now time.Time) ([]outRead, time.Time) {
	e := d.e
	var next time.Time
	soon := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	d.fill()
	// Time out silent requests; their chunks become unassigned.
	for _, c := range d.chunks {
		for i := 0; i < len(c.reqs); {
			r := c.reqs[i]
			if !r.tailAt.IsZero() {
				if at := r.lossAt(); !now.Before(at) {
					e.finish(r, true) // a loss, not a timeout: ask again below
					continue
				} else {
					soon(at)
				}
			}
			if dl := r.deadline(); !now.Before(dl) {
				if r.l.lastData.After(r.lastAct) {
					// The server kept delivering other reads after this one
					// went quiet: the READ or its tail was lost, the server
					// is fine. Ask again without backing off. (Late answers
					// to READs given up on do not count: a server drowning
					// in them must see the gateway back off.)
					e.finish(r, true)
					continue
				}
				e.cfg.Logger.Debug("read timed out", "server", uint64(r.l.id), "id", r.id, "offset", r.c.off,
					"asked", r.asked, "released", r.released, "first", r.first, "age", now.Sub(r.sentAt), "quiet", now.Sub(r.lastAct), "rto", r.l.rto())
				r.l.onTimeout(now, e.cfg.ChunkSize)
				e.stats.Timeouts++
				e.finish(r, false)
				continue
			} else {
				soon(dl)
			}
			i++
		}
	}
	// A response stalls when chunks it waits for make no progress; a
	// slow client with a full window is not a stall.
	waiting := false
	for _, c := range d.chunks {
		waiting = waiting || !c.done
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
		soon(now.Add(e.cfg.StallTimeout))
	case now.Sub(d.lastProgress) > e.cfg.StallTimeout:
		d.fail(fmt.Errorf("%w: no data for %v", ErrTimeout, e.cfg.StallTimeout))
		d.logStall(now)
		return out, next
	default:
		soon(d.lastProgress.Add(e.cfg.StallTimeout + time.Millisecond))
	}

	holders := e.cfg.Holders(d.hash)
	links := d.links[:0] // scratch, reused every round
	for _, h := range holders {
		if !d.bad[h] {
			links = append(links, e.link(h))
		}
	}
	d.links = links
	if len(links) == 0 {
		if d.noHolder.IsZero() {
			d.noHolder = now
		}
		if now.Sub(d.noHolder) >= e.cfg.HolderWait {
			d.fail(ErrUnavailable)
			return out, next
		}
		// Servers re-register within a couple of heartbeats: look again soon.
		soon(now.Add(50 * time.Millisecond))
		return out, next
	}
	d.noHolder = time.Time{}

	allSuspect := true
	for _, l := range links {
		allSuspect = allSuspect && l.suspect()
	}
	var cands [16]Candidate
	var candLinks [16]*link
	pick := func(n int, exclude *chunk, idleOnly bool) *link {
		cs, ls := cands[:0], candLinks[:0]
		if !e.room(n) {
			return nil
		}
		for _, l := range links {
			if !l.room(n, now, allSuspect) || idleOnly && l.inflight > 0 || exclude != nil && serves(exclude, l) {
				if now.Before(l.suspendTill) {
					soon(l.suspendTill)
				}
				continue
			}
			if len(cs) == cap(cands) {
				break
			}
			cs = append(cs, Candidate{SRTT: l.srtt, Rate: l.rate, Inflight: l.inflight})
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

	starved := false
	for _, c := range d.chunks {
		if c.done || c.assigned() {
			continue
		}
		d.miss = c.have.missing(d.miss[:0], c.n) // scratch: issue copies what it keeps
		l := pick(spanBytes(d.miss), nil, false)
		if l == nil {
			starved = true
			break
		}
		out = append(out, e.issue(d, c, l, d.miss, false, now))
	}
	// copyChunk asks a second server for c's missing bytes, within the
	// response's duplicate budget; false when it could not.
	budget := int64(e.cfg.DupBudget*float64(d.size)) + int64(e.cfg.ChunkSize)
	copyChunk := func(c *chunk, idleOnly bool) bool {
		d.miss = c.have.missing(d.miss[:0], c.n)
		n := spanBytes(d.miss)
		if d.dupBytes+int64(n) > budget {
			return false
		}
		l := pick(n, c, idleOnly)
		if l == nil || l.suspect() {
			return false
		}
		c.dupped = true
		d.dupBytes += int64(n)
		e.stats.EndgameRequests++
		out = append(out, e.issue(d, c, l, d.miss, true, now))
		return true
	}
	// Hedge: a chunk whose only READs are on suspect servers (a timeout,
	// nothing since) is asked of a healthy one too, at once, so a dying
	// server does not hold up the response for its backed-off RTO.
	for _, c := range d.chunks {
		if c.done || c.dupped || len(c.reqs) == 0 || !onlySuspects(c) {
			continue
		}
		if !copyChunk(c, false) {
			break
		}
	}
	d.queued = false
	if starved {
		e.starved[d] = struct{}{}
		d.queued = true
		for _, c := range d.chunks {
			if len(c.reqs) > 0 {
				d.queued = false // its own READs decide whether it stalls
				break
			}
		}
		return out, next
	}
	// Endgame: nothing left to assign and the window at its maximum
	// (-window; a window held smaller by the budget's share does not
	// count: extra copies would only add to an overload). At the tail of
	// the response, a server with nothing to do takes a copy of the oldest
	// unfinished chunk, so one slow server does not hold up the end.
	// Mid-file only the chunk the client is waiting for is hedged, and
	// only once it is late.
	if len(d.chunks) == 0 {
		return out, next
	}
	last := d.chunks[len(d.chunks)-1]
	tail := last.off+int64(last.n) >= d.size
	if !tail && len(d.chunks) < d.maxWin {
		return out, next
	}
	for i, c := range d.chunks {
		if c.done || c.dupped {
			continue
		}
		if !tail {
			if i > 0 {
				break
			}
			if at := lateAt(c); now.Before(at) {
				soon(at)
				break
			}
		}
		if !copyChunk(c, true) {
			break
		}
	}
	return out, next
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

// issue records a READ for the missing spans of c on link l.
func (e *Engine) issue(d *download, c *chunk, l *link, miss []span, dup bool, now time.Time) outRead {
	e.nextID++
	if e.nextID == 0 {
		e.nextID = 1
	}
	for e.reqs[e.nextID] != nil {
		e.nextID++
	}
	if len(miss) > fschunk.MaxReadRanges {
		miss = miss[:fschunk.MaxReadRanges] // the rest on the next round
	}
	r := &request{id: e.nextID, d: d, c: c, l: l, ranges: append([]span(nil), miss...),
		sentAt: now, lastAct: now, retrans: c.asked, dup: dup, ahead: l.inflight}
	r.asked = spanBytes(r.ranges)
	if l.inflight == 0 {
		l.onIdle()
	}
	l.inflight += r.asked
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
	msg := fschunk.Read{ID: r.id, Hash: d.hash, MaxDatagram: uint16(min(e.cfg.DatagramSize(l.id), fschunk.MaxDatagramSize))}
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
			"holders", len(d.e.cfg.Holders(d.hash)), "bad", len(d.bad), "reqs", len(d.e.reqs))
	}
}
