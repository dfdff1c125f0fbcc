// Package faultconn wraps a net.PacketConn and injects the faults a real
// network produces — loss, duplication, reordering, bit corruption, delay with
// jitter and total outages — so that in-process tests of a UDP protocol can
// exercise its recovery paths over loopback sockets, which by themselves
// almost never misbehave.
//
// Faults are configured separately for the outbound (WriteTo) and inbound
// (ReadFrom) direction, because many protocol bugs only show up when the two
// directions of a conversation degrade differently (for example data arrives
// but acknowledgements are lost). Every random decision comes from a seeded
// PCG generator per direction, so a failing run can be replayed with the same
// Seed as long as the datagrams pass through in the same order.
//
// A Conn whose configuration is all zero costs almost nothing: WriteTo and
// ReadFrom call the wrapped connection directly, without goroutines or copies,
// so the wrapper can stay in place in tests that only sometimes inject faults.
package faultconn

import (
	"container/heap"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// maxDatagram is the largest payload a UDP datagram can carry; the
	// background reader must accept anything the socket can deliver.
	maxDatagram = 64 << 10

	// smallBuf covers every datagram that fits a typical path MTU. Pooling
	// buffers of this size instead of maxDatagram keeps thousands of queued
	// test datagrams from pinning hundreds of megabytes.
	smallBuf = 2048

	// maxQueued bounds the inbound queue, standing in for the socket receive
	// buffer: a test that stops reading must not make the reader goroutine
	// grow memory without limit. Excess datagrams are dropped, like a full
	// kernel buffer would, and counted in Stats.Overflowed.
	maxQueued = 4096

	// reorderGrace is how long a datagram held back for reordering waits
	// (on top of the configured delay and jitter) for a successor before it
	// is released anyway. Without it, holding back the last datagram of a
	// burst would turn reordering into loss.
	reorderGrace = 20 * time.Millisecond
)

// aLongTimeAgo is a deadline in the past, used to wake the background reader
// out of a blocking read on the wrapped connection.
var aLongTimeAgo = time.Unix(1, 0)

// Config describes the faults applied to the datagrams of one direction.
// The zero value injects nothing.
type Config struct {
	// Loss, Duplicate, Reorder and Corrupt are per-datagram probabilities in
	// [0, 1]; values outside that range are clamped.
	//
	// Loss drops the datagram. Duplicate delivers it twice (each copy gets its
	// own delay). Reorder holds it back and releases it after the next
	// datagram of the same direction, or after a short timeout if no other
	// datagram comes, so reordering never turns into loss. Corrupt flips one
	// to three distinct random bits in a copy; the caller's buffer is never
	// modified.
	Loss, Duplicate, Reorder, Corrupt float64

	// Delay defers delivery of every datagram. Jitter adds a uniformly
	// distributed offset in [-Jitter, +Jitter] per datagram (the result is
	// clamped at zero), which also reorders datagrams sent closer together
	// than the jitter.
	Delay, Jitter time.Duration

	// Seed initialises the direction's random generator. SetOut and SetIn
	// restart the sequence from the new Seed, so a test that switches
	// configurations at a known point stays reproducible.
	Seed int64
}

// normalized clamps the fields into their meaningful ranges so that the hot
// path does not need to guard against nonsense values.
func (cfg Config) normalized() Config {
	clamp := func(p float64) float64 {
		switch {
		case p > 1:
			return 1
		case p > 0:
			return p
		default: // also NaN
			return 0
		}
	}
	cfg.Loss = clamp(cfg.Loss)
	cfg.Duplicate = clamp(cfg.Duplicate)
	cfg.Reorder = clamp(cfg.Reorder)
	cfg.Corrupt = clamp(cfg.Corrupt)
	cfg.Delay = max(cfg.Delay, 0)
	cfg.Jitter = max(cfg.Jitter, 0)
	return cfg
}

// active reports whether cfg injects any fault. Seed alone does not count:
// it only matters once a fault is enabled.
func (cfg Config) active() bool {
	return cfg.Loss > 0 || cfg.Duplicate > 0 || cfg.Reorder > 0 ||
		cfg.Corrupt > 0 || cfg.Delay > 0 || cfg.Jitter > 0
}

// delay draws the delivery delay of one datagram copy.
func (cfg *Config) delay(r *rand.Rand) time.Duration {
	d := cfg.Delay
	if cfg.Jitter > 0 {
		d += time.Duration(r.Int64N(2*int64(cfg.Jitter)+1)) - cfg.Jitter
	}
	return max(d, 0)
}

// Filter decides whether a datagram may pass: returning false drops it. It
// lets a test target one specific datagram (say, the third data packet)
// deterministically instead of hoping a random loss hits it.
//
// p is the datagram (the caller's buffer for outbound datagrams) and must be
// neither modified nor retained. addr is the destination of an outbound and
// the source of an inbound datagram. The filter runs without internal locks
// held, possibly concurrently from several goroutines, so it must be safe for
// concurrent use; it may call Conn's Set* and Stats methods but not Close.
type Filter func(p []byte, addr net.Addr, outbound bool) bool

// Stats counts what happened to datagrams, both directions combined.
type Stats struct {
	Sent       uint64 // datagrams written to the wrapped conn, duplicates included
	Received   uint64 // datagrams returned by ReadFrom, duplicates included
	Dropped    uint64 // datagrams discarded by Loss, the black hole or the Filter
	Duplicated uint64 // extra copies created by Duplicate
	Reordered  uint64 // datagrams held back by Reorder
	Corrupted  uint64 // datagrams with flipped bits
	Delayed    uint64 // datagram copies scheduled with a non-zero delay
	Overflowed uint64 // inbound datagrams discarded because the queue was full
}

// counters are atomics rather than mutex-guarded fields so that Stats can be
// polled by a test while traffic flows, without contending for Conn.mu.
type counters struct {
	sent, received, dropped, duplicated, reordered, corrupted, delayed, overflowed atomic.Uint64
}

// packet is one datagram copy travelling through the fault pipeline.
type packet struct {
	buf  []byte // pooled backing storage; nil if data is borrowed from the caller
	data []byte
	addr net.Addr
}

// Queued datagrams must be copied because callers reuse their buffers; the
// pools make that copy cheap under the sustained traffic of a loss test.
var (
	smallPool = sync.Pool{New: func() any { return &packet{buf: make([]byte, smallBuf)} }}
	largePool = sync.Pool{New: func() any { return &packet{buf: make([]byte, maxDatagram)} }}
)

// newPacket returns a pooled packet holding a copy of p.
func newPacket(p []byte, addr net.Addr) *packet {
	var pk *packet
	switch {
	case len(p) <= smallBuf:
		pk = smallPool.Get().(*packet)
	case len(p) <= maxDatagram:
		pk = largePool.Get().(*packet)
	default: // cannot be a valid datagram, but never truncate silently
		pk = &packet{buf: make([]byte, len(p))}
	}
	pk.data = pk.buf[:copy(pk.buf, p)]
	pk.addr = addr
	return pk
}

// free returns pk's storage to its pool. Borrowed packets are left alone.
func (pk *packet) free() {
	if pk.buf == nil {
		return
	}
	pk.data, pk.addr = nil, nil
	switch cap(pk.buf) {
	case smallBuf:
		smallPool.Put(pk)
	case maxDatagram:
		largePool.Put(pk)
	}
}

// flipBits flips between one and three distinct bits of b. Distinct, because
// flipping the same bit twice would silently undo the corruption.
func flipBits(r *rand.Rand, b []byte) {
	nbits := len(b) * 8
	k := min(1+r.IntN(3), nbits)
	var chosen [3]int
	for i := 0; i < k; {
		bit := r.IntN(nbits)
		dup := false
		for _, c := range chosen[:i] {
			dup = dup || c == bit
		}
		if dup {
			continue
		}
		chosen[i] = bit
		b[bit/8] ^= 1 << (bit % 8)
		i++
	}
}

// direction is the fault state of one direction. Guarded by Conn.mu.
type direction struct {
	outbound bool
	stream   uint64 // PCG stream, so equal seeds still give the directions distinct sequences
	cfg      Config
	active   bool
	rng      *rand.Rand
	held     *packet // datagram held back for reordering
	heldID   uint64  // identifies held, so a stale release timer can tell it is stale
	pending  int     // datagrams of this direction held or waiting in the scheduler
}

func (d *direction) set(cfg Config) {
	d.cfg = cfg.normalized()
	d.active = d.cfg.active()
	d.rng = rand.New(rand.NewPCG(uint64(cfg.Seed), d.stream))
}

// event is a scheduled delivery. pk == nil marks the timeout of a datagram
// held for reordering, identified by holdID.
type event struct {
	at     time.Time
	seq    uint64 // tie-break: equal times deliver in scheduling order
	dir    *direction
	pk     *packet
	holdID uint64
}

type eventHeap []*event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].seq < h[j].seq
	}
	return h[i].at.Before(h[j].at)
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(*event)) }
func (h *eventHeap) Pop() any {
	old := *h
	ev := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return ev
}

// Conn is a net.PacketConn that injects faults into the datagrams passing
// through the wrapped connection. All methods are safe for concurrent use.
//
// Conn starts goroutines only when faults need them: one scheduler for delayed
// and reordered datagrams, and, while inbound faults are active, one reader
// that drains the wrapped connection into a queue so inbound datagrams can be
// held back. Close stops both.
type Conn struct {
	pc   net.PacketConn
	done chan struct{} // closed by Close; stops the scheduler
	wg   sync.WaitGroup

	mu        sync.Mutex
	cond      *sync.Cond // on mu; wakes the reader waiting for direct readers to finish
	closed    bool
	out, in   direction
	blackhole bool
	filter    Filter

	// Scheduler.
	events       eventHeap
	seq          uint64
	schedRunning bool
	wake         chan struct{} // capacity 1; an earlier event was scheduled

	// Inbound queue, used whenever the reader goroutine runs or inbound
	// datagrams are still in flight.
	queue    []*packet
	qhead    int
	inErr    error         // read error from the reader goroutine, handed to the next ReadFrom
	readable chan struct{} // closed to wake waiting ReadFrom calls; nil if nobody waits

	readDeadline time.Time
	// directReaders counts ReadFrom calls blocked directly on pc. The
	// reader goroutine waits for them before clearing pc's read deadline,
	// so their deadlines keep working.
	directReaders int
	readerRunning bool
	readerStop    bool // asks the reader to hand pc back to direct reads
	readerOwns    bool // the reader has cleared pc's read deadline for itself
	deadlineDirty bool // pc's read deadline may be set; the reader must clear it

	stats counters
}

// Wrap returns a Conn that applies out to datagrams written with WriteTo and
// in to datagrams read with ReadFrom. The Conn takes ownership of c: closing
// the Conn closes c. c should not be used directly afterwards, since the
// Conn may be reading from it in the background.
func Wrap(c net.PacketConn, out, in Config) *Conn {
	fc := &Conn{
		pc:   c,
		done: make(chan struct{}),
		wake: make(chan struct{}, 1),
	}
	fc.cond = sync.NewCond(&fc.mu)
	fc.out = direction{outbound: true, stream: 0x6f7574}
	fc.in = direction{stream: 0x696e}
	fc.out.set(out)
	fc.in.set(in)
	return fc
}

// SetOut replaces the outbound configuration and restarts its random
// sequence from cfg.Seed. Datagrams already scheduled keep their delivery
// time.
func (c *Conn) SetOut(cfg Config) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out.set(cfg)
}

// SetIn replaces the inbound configuration and restarts its random sequence
// from cfg.Seed. Switching to an all-zero configuration stops the background
// reader; once the datagrams still in flight have been read, ReadFrom reads
// the wrapped connection directly again.
func (c *Conn) SetIn(cfg Config) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.in.set(cfg)
	if c.closed {
		return
	}
	if c.in.active {
		c.readerStop = false
	} else if c.readerRunning {
		c.readerStop = true
		c.cond.Broadcast()
		if c.readerOwns {
			// Kick the reader out of its blocking read.
			_ = c.pc.SetReadDeadline(aLongTimeAgo)
			c.deadlineDirty = true
		}
	}
	c.notifyReaders()
}

// SetBlackhole turns a total outage on or off: while on, every datagram is
// dropped in both directions, including those already delayed or held back
// whose delivery falls into the outage. This models a link going down, for
// testing timeouts and reconnection.
func (c *Conn) SetBlackhole(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.blackhole = on
}

// SetFilter installs f, or removes the filter if f is nil. The filter sees
// every datagram not dropped by the black hole, before random faults apply.
func (c *Conn) SetFilter(f Filter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.filter = f
}

// Stats returns a snapshot of the counters.
func (c *Conn) Stats() Stats {
	s := &c.stats
	return Stats{
		Sent:       s.sent.Load(),
		Received:   s.received.Load(),
		Dropped:    s.dropped.Load(),
		Duplicated: s.duplicated.Load(),
		Reordered:  s.reordered.Load(),
		Corrupted:  s.corrupted.Load(),
		Delayed:    s.delayed.Load(),
		Overflowed: s.overflowed.Load(),
	}
}

// LocalAddr returns the wrapped connection's local address.
func (c *Conn) LocalAddr() net.Addr { return c.pc.LocalAddr() }

// SetDeadline sets both the read and the write deadline.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline for ReadFrom, with the semantics of
// net.PacketConn. It is tracked by the Conn rather than only by the wrapped
// connection because, with inbound faults active, ReadFrom waits on the
// inbound queue instead of on the socket.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opError("set", nil, net.ErrClosed)
	}
	c.readDeadline = t
	c.notifyReaders() // waiting calls must re-arm their timers
	if c.readerOwns {
		return nil
	}
	return c.pc.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline of the wrapped connection. WriteTo
// only blocks for datagrams sent immediately; delayed datagrams are written
// later by the scheduler and fail silently if the deadline has passed by then.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	return c.pc.SetWriteDeadline(t)
}

func (c *Conn) opError(op string, addr net.Addr, err error) error {
	e := &net.OpError{Op: op, Addr: addr, Err: err}
	if la := c.pc.LocalAddr(); la != nil {
		e.Net, e.Source = la.Network(), la
	}
	return e
}

// WriteTo applies the outbound faults to p and sends the surviving copies to
// addr. Datagrams that are dropped, delayed or held back still report
// len(p), nil — a sender on a real network cannot tell either — and p is
// copied before WriteTo returns whenever it must outlive the call.
func (c *Conn) WriteTo(p []byte, addr net.Addr) (int, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, c.opError("write", addr, net.ErrClosed)
	}
	if !c.out.active && !c.blackhole && c.filter == nil && c.out.held == nil {
		c.mu.Unlock()
		n, err := c.pc.WriteTo(p, addr)
		if err == nil {
			c.stats.sent.Add(1)
		}
		return n, err
	}
	blackhole, filter := c.blackhole, c.filter
	c.mu.Unlock()

	if blackhole || (filter != nil && !filter(p, addr, true)) {
		c.stats.dropped.Add(1)
		return len(p), nil
	}

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, c.opError("write", addr, net.ErrClosed)
	}
	now := c.applyFaults(&c.out, p, addr, false)
	c.mu.Unlock()

	// now[0], if present, is p itself (or its corrupted copy): report its
	// error like a direct write would. Errors of duplicates and released
	// held-back datagrams belong to no caller and are ignored.
	var err error
	for i, pk := range now {
		if _, werr := c.pc.WriteTo(pk.data, pk.addr); werr == nil {
			c.stats.sent.Add(1)
		} else if i == 0 {
			err = werr
		}
		pk.free()
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// applyFaults runs one datagram through the random faults of d. Copies that
// are delayed or held back go to the scheduler; the copies to deliver right
// away are returned in order, and the caller delivers them after releasing
// c.mu. With mustCopy false, the returned packets may borrow p.
//
// Must be called with c.mu held and c not closed.
func (c *Conn) applyFaults(d *direction, p []byte, addr net.Addr, mustCopy bool) []*packet {
	cfg, r := &d.cfg, d.rng
	if cfg.Loss > 0 && r.Float64() < cfg.Loss {
		c.stats.dropped.Add(1)
		return nil
	}

	data := p
	var scratch *packet // corrupted copy, handed to the first copy that needs storage
	corrupted := cfg.Corrupt > 0 && len(p) > 0 && r.Float64() < cfg.Corrupt
	if corrupted {
		scratch = newPacket(p, addr)
		flipBits(r, scratch.data)
		data = scratch.data
		c.stats.corrupted.Add(1)
	}
	own := func() *packet {
		if pk := scratch; pk != nil {
			scratch = nil
			return pk
		}
		return newPacket(data, addr) // data stays valid: scratch is not freed before we return
	}

	copies := 1
	if cfg.Duplicate > 0 && r.Float64() < cfg.Duplicate {
		copies = 2
		c.stats.duplicated.Add(1)
	}
	hold := cfg.Reorder > 0 && d.held == nil && r.Float64() < cfg.Reorder

	now := time.Now()
	var (
		ready []*packet
		last  time.Time // latest scheduled delivery of this datagram; zero if immediate
	)
	for i := range copies {
		if i == 0 && hold {
			d.held = own()
			d.heldID++
			d.pending++
			c.push(&event{at: now.Add(cfg.Delay + cfg.Jitter + reorderGrace), dir: d, holdID: d.heldID})
			c.stats.reordered.Add(1)
			continue
		}
		if delay := cfg.delay(r); delay > 0 {
			at := now.Add(delay)
			d.pending++
			c.push(&event{at: at, dir: d, pk: own()})
			c.stats.delayed.Add(1)
			if at.After(last) {
				last = at
			}
			continue
		}
		// Borrowing is only safe for p itself: a corrupted copy lives in a
		// packet that another copy may free before this one is written.
		if mustCopy || corrupted {
			ready = append(ready, own())
		} else {
			ready = append(ready, &packet{data: p, addr: addr})
		}
	}

	// A datagram held back earlier is released right behind this one.
	if !hold && d.held != nil {
		h := d.held
		d.held = nil
		if last.IsZero() {
			d.pending--
			ready = append(ready, h)
		} else {
			c.push(&event{at: last, dir: d, pk: h}) // same time, later seq: after us
		}
	}
	if scratch != nil {
		scratch.free()
	}
	return ready
}

// push schedules ev, starting the scheduler on first use so that a Conn
// without delays never runs it. Must be called with c.mu held, c not closed.
func (c *Conn) push(ev *event) {
	c.seq++
	ev.seq = c.seq
	heap.Push(&c.events, ev)
	if !c.schedRunning {
		c.schedRunning = true
		c.wg.Add(1)
		go c.schedule()
		return
	}
	if c.events[0] == ev {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

// schedule is the single scheduler goroutine: it sleeps until the earliest
// event is due and delivers it. One goroutine with a heap, rather than a timer
// goroutine per datagram, keeps thousands of delayed datagrams cheap and
// delivers those due at the same instant in a defined order.
func (c *Conn) schedule() {
	defer c.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var outs []*packet
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return
		}
		now := time.Now()
		outs = outs[:0]
		inbound := false
		for len(c.events) > 0 && !c.events[0].at.After(now) {
			ev := heap.Pop(&c.events).(*event)
			d, pk := ev.dir, ev.pk
			if pk == nil { // reorder timeout
				if d.held == nil || d.heldID != ev.holdID {
					continue // released by a successor already
				}
				pk, d.held = d.held, nil
			}
			d.pending--
			switch {
			case c.blackhole:
				c.stats.dropped.Add(1)
				pk.free()
			case d.outbound:
				outs = append(outs, pk)
			default:
				c.enqueue(pk)
				inbound = true
			}
		}
		if inbound || c.in.pending == 0 {
			c.notifyReaders()
		}
		wait := time.Duration(-1)
		if len(c.events) > 0 {
			wait = c.events[0].at.Sub(now)
		}
		c.mu.Unlock()

		if len(outs) > 0 {
			for i, pk := range outs {
				if _, err := c.pc.WriteTo(pk.data, pk.addr); err == nil {
					c.stats.sent.Add(1)
				}
				pk.free()
				outs[i] = nil
			}
			continue // writing took time; re-check what is due
		}
		if wait >= 0 {
			timer.Reset(wait)
		}
		select {
		case <-c.wake:
		case <-timer.C:
		case <-c.done:
			timer.Stop()
			return
		}
		timer.Stop()
	}
}

// enqueue appends an inbound datagram to the queue. Must be called with c.mu
// held.
func (c *Conn) enqueue(pk *packet) {
	if len(c.queue)-c.qhead >= maxQueued {
		c.stats.overflowed.Add(1)
		pk.free()
		return
	}
	if c.qhead > 0 && len(c.queue) == cap(c.queue) {
		n := copy(c.queue, c.queue[c.qhead:])
		clear(c.queue[n:])
		c.queue, c.qhead = c.queue[:n], 0
	}
	c.queue = append(c.queue, pk)
}

// notifyReaders wakes every ReadFrom waiting on the queue so it re-evaluates
// its state. Must be called with c.mu held.
func (c *Conn) notifyReaders() {
	if c.readable != nil {
		close(c.readable)
		c.readable = nil
	}
}

// inbound runs a datagram read from the wrapped connection through the
// inbound faults and queues what survives. p is copied. Must be called
// without c.mu held, because the filter is user code.
func (c *Conn) inbound(p []byte, addr net.Addr) {
	c.mu.Lock()
	blackhole, filter := c.blackhole, c.filter
	c.mu.Unlock()
	if blackhole || (filter != nil && !filter(p, addr, false)) {
		c.stats.dropped.Add(1)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	ready := c.applyFaults(&c.in, p, addr, true)
	for _, pk := range ready {
		c.enqueue(pk)
	}
	if len(ready) > 0 {
		c.notifyReaders()
	}
}

// ReadFrom reads the next inbound datagram that survives the faults, with the
// semantics of net.PacketConn: it honours the read deadline (returning an
// error wrapping os.ErrDeadlineExceeded) and returns an error wrapping
// net.ErrClosed after Close.
//
// With an all-zero inbound configuration and nothing in flight, it reads the
// wrapped connection directly into p. Otherwise datagrams come from the
// queue fed by the reader goroutine and the scheduler.
func (c *Conn) ReadFrom(p []byte) (int, net.Addr, error) {
	c.mu.Lock()
	for {
		if c.closed {
			c.mu.Unlock()
			return 0, nil, c.opError("read", nil, net.ErrClosed)
		}
		if dl := c.readDeadline; !dl.IsZero() && !time.Now().Before(dl) {
			c.mu.Unlock()
			return 0, nil, c.opError("read", nil, os.ErrDeadlineExceeded)
		}
		if c.qhead < len(c.queue) {
			pk := c.queue[c.qhead]
			c.queue[c.qhead] = nil
			c.qhead++
			if c.qhead == len(c.queue) {
				c.queue, c.qhead = c.queue[:0], 0
			}
			c.mu.Unlock()
			n, addr := copy(p, pk.data), pk.addr
			pk.free()
			c.stats.received.Add(1)
			return n, addr, nil
		}
		if err := c.inErr; err != nil {
			c.inErr = nil
			c.mu.Unlock()
			return 0, nil, err
		}
		if !c.in.active && !c.readerRunning && c.in.pending == 0 {
			n, addr, done, err := c.readDirect(p)
			if done {
				c.mu.Unlock()
				return n, addr, err
			}
			continue
		}
		if c.in.active && !c.readerRunning {
			c.readerRunning, c.readerStop = true, false
			c.wg.Add(1)
			go c.readLoop()
		}
		c.waitReadable()
	}
}

// readDirect is the pass-through read: straight into p, no copy, no
// goroutine. done is false if the datagram was consumed (dropped by the black
// hole or the filter, or handed to the fault pipeline because inbound faults
// were switched on while we were blocked) and ReadFrom must try again.
//
// Must be called with c.mu held; returns with c.mu held.
func (c *Conn) readDirect(p []byte) (n int, addr net.Addr, done bool, err error) {
	c.directReaders++
	c.mu.Unlock()
	n, addr, err = c.pc.ReadFrom(p)
	c.mu.Lock()
	c.directReaders--
	if c.directReaders == 0 {
		c.cond.Broadcast()
	}
	if err != nil {
		if c.closed {
			err = c.opError("read", nil, net.ErrClosed)
		}
		return n, addr, true, err
	}
	if c.in.active || c.readerRunning {
		c.mu.Unlock()
		c.inbound(p[:n], addr)
		c.mu.Lock()
		return 0, nil, false, nil
	}
	if c.blackhole {
		c.stats.dropped.Add(1)
		return 0, nil, false, nil
	}
	if f := c.filter; f != nil {
		c.mu.Unlock()
		ok := f(p[:n], addr, false)
		c.mu.Lock()
		if !ok {
			c.stats.dropped.Add(1)
			return 0, nil, false, nil
		}
	}
	c.stats.received.Add(1)
	return n, addr, true, nil
}

// waitReadable blocks until notifyReaders, the read deadline or Close. Must
// be called with c.mu held; returns with c.mu held.
func (c *Conn) waitReadable() {
	if c.readable == nil {
		c.readable = make(chan struct{})
	}
	ch, dl := c.readable, c.readDeadline
	c.mu.Unlock()
	defer c.mu.Lock()
	var expired <-chan time.Time
	if !dl.IsZero() {
		t := time.NewTimer(time.Until(dl))
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-ch:
	case <-expired:
	case <-c.done:
	}
}

// readLoop is the background reader that feeds the inbound queue while
// inbound faults are active; holding datagrams back is impossible if they are
// only read when the caller asks for one.
func (c *Conn) readLoop() {
	defer c.wg.Done()
	buf := make([]byte, maxDatagram)
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		// Direct readers still blocked on pc rely on its read deadline;
		// clearing it under them would make them overrun the deadline.
		for c.directReaders > 0 && !c.closed && !c.readerStop {
			c.cond.Wait()
		}
		if c.closed {
			c.readerRunning = false
			return
		}
		if c.readerStop {
			c.releaseReader()
			return
		}
		if !c.readerOwns || c.deadlineDirty {
			// The read deadline belongs to ReadFrom, not to this loop.
			_ = c.pc.SetReadDeadline(time.Time{})
			c.readerOwns, c.deadlineDirty = true, false
		}
		c.mu.Unlock()
		n, addr, err := c.pc.ReadFrom(buf)
		if err == nil {
			c.inbound(buf[:n], addr)
		}
		c.mu.Lock()
		if err != nil && !c.closed {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.deadlineDirty = true // a kick from SetIn, or someone set pc's deadline
				continue
			}
			c.inErr = err
			c.releaseReader()
			return
		}
	}
}

// releaseReader marks the reader stopped and hands pc back to direct reads
// with the caller's deadline. Must be called with c.mu held.
func (c *Conn) releaseReader() {
	c.readerRunning, c.readerStop = false, false
	if c.readerOwns {
		c.readerOwns = false
		_ = c.pc.SetReadDeadline(c.readDeadline)
	}
	c.notifyReaders()
}

// Close closes the wrapped connection and waits for every goroutine the Conn
// started, so tests can check for leaks right after it returns. Datagrams
// still delayed, held back or queued are discarded.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.opError("close", nil, net.ErrClosed)
	}
	c.closed = true
	close(c.done)
	c.cond.Broadcast()
	c.notifyReaders()
	for _, ev := range c.events {
		if ev.pk != nil {
			ev.pk.free()
		}
	}
	c.events = nil
	for _, pk := range c.queue[c.qhead:] {
		pk.free()
	}
	c.queue, c.qhead = nil, 0
	for _, d := range []*direction{&c.out, &c.in} {
		if d.held != nil {
			d.held.free()
			d.held = nil
		}
		d.pending = 0
	}
	c.mu.Unlock()

	err := c.pc.Close() // unblocks the reader goroutine and direct readers
	c.wg.Wait()
	return err
}

var _ net.PacketConn = (*Conn)(nil)
