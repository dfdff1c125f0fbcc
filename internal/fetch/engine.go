// Package fetch is the gateway's download engine: it cuts a response into
// chunks, asks every server holding the file's version for them in
// parallel over the FS Chunk Protocol, recovers losses by asking again
// for exactly the missing bytes, and hands the bytes to the HTTP side in
// order, with memory bounded per response. docs/ARCHITECTURE.md explains
// why it is built this way.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/pool"
)

// ServerID names a server, as in the pool.
type ServerID = pool.ServerID

// Errors a Reader returns.
var (
	ErrUnavailable = errors.New("no live server holds this version")
	ErrTimeout     = errors.New("servers stopped answering")
	ErrClosed      = errors.New("fetch: reader closed")
)

// Sender sends a READ to a server; the gateway's UDP endpoint implements it.
type Sender interface {
	SendRead(id ServerID, r *fschunk.Read) error
}

// Config configures an Engine. Sender and Holders are required.
type Config struct {
	Sender  Sender
	Holders func(hash [fschunk.HashSize]byte) []ServerID // live holders of a version
	// Dropped is told when a server says it no longer has a version
	// (NOT_FOUND, STALE, RANGE), so the pool stops offering it.
	Dropped func(ServerID, [fschunk.HashSize]byte)
	// DatagramSize is the datagram size to ask of a server; nil means
	// fschunk.DefaultDatagramSize.
	DatagramSize func(ServerID) int
	Policy       Policy

	ChunkSize int // bytes per chunk and per READ; default 128 KiB
	Window    int // bytes buffered ahead per response; default 8 MiB
	// Budget bounds the bytes buffered ahead by all responses together
	// (default 4 × Window): with many clients each gets an equal share,
	// never less than the one chunk it is sending (minStreamChunks), so
	// memory grows by a chunk per client, not by a window.
	Budget        int
	MaxLinkWindow int // bytes in flight per server; default 4 MiB
	// MaxInflight bounds the bytes in flight to all servers together, so
	// that bursts from every server at once fit in the gateway's socket
	// receive buffer instead of being dropped by the kernel; 0: no bound.
	MaxInflight  int
	HolderWait   time.Duration // wait for a holder to (re)appear; default 3 s
	StallTimeout time.Duration // no progress at all for this long fails; default 10 s
	DupBudget    float64       // endgame duplicates, fraction of a response; default 0.1
	Now          func() time.Time
	Logger       *slog.Logger
	// OnChunk, if set, observes every chunk completed: which server
	// delivered its last byte and how long it took since first asked. It
	// is called under the engine's lock and must be quick (a histogram).
	OnChunk func(server ServerID, took time.Duration)
}

func (c *Config) defaults() {
	if c.ChunkSize <= 0 {
		c.ChunkSize = 128 << 10
	}
	c.ChunkSize = min(c.ChunkSize, fschunk.MaxReadLength)
	if c.Window <= 0 {
		c.Window = 8 << 20
	}
	c.Window = max(c.Window, 2*c.ChunkSize)
	if c.Budget <= 0 {
		c.Budget = 4 * c.Window
	}
	c.Budget = max(c.Budget, c.Window)
	if c.MaxLinkWindow <= 0 {
		c.MaxLinkWindow = 4 << 20
	}
	c.MaxLinkWindow = max(c.MaxLinkWindow, c.ChunkSize)
	if c.HolderWait <= 0 {
		c.HolderWait = 3 * time.Second
	}
	if c.StallTimeout <= 0 {
		c.StallTimeout = 10 * time.Second
	}
	if c.DupBudget <= 0 {
		c.DupBudget = 0.1
	}
	if c.Policy == nil {
		c.Policy = LeastTime{}
	}
	if c.DatagramSize == nil {
		c.DatagramSize = func(ServerID) int { return fschunk.DefaultDatagramSize }
	}
	if c.Dropped == nil {
		c.Dropped = func(ServerID, [fschunk.HashSize]byte) {}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Stats are the engine's counters since it started.
type Stats struct {
	Downloads       uint64 `json:"downloads"`        // readers that fetched anything
	Active          int    `json:"active"`           // readers open now
	Buffered        int    `json:"buffered_bytes"`   // bytes of chunk buffers held now (see Config.Budget)
	BytesDelivered  uint64 `json:"delivered_bytes"`  // new bytes received
	DuplicateBytes  uint64 `json:"duplicate_bytes"`  // bytes received that were already held
	Requests        uint64 `json:"requests"`         // READs sent
	Retransmits     uint64 `json:"retransmits"`      // READs for bytes asked before
	EndgameRequests uint64 `json:"endgame_requests"` // duplicate READs of the endgame
	Timeouts        uint64 `json:"timeouts"`
	Late            uint64 `json:"late"` // DATA for no outstanding request
}

// LinkStats describe the engine's view of one server.
type LinkStats struct {
	ID          ServerID
	SRTT, RTO   time.Duration
	Window      int
	Inflight    int
	Rate        float64 // bytes/s
	Delivered   uint64
	Retransmits uint64
	Timeouts    uint64
}

// Engine runs every download of a gateway. It is safe for concurrent use.
type Engine struct {
	cfg  Config
	bufs sync.Pool // chunk buffers, *[]byte of ChunkSize

	mu       sync.Mutex
	links    map[ServerID]*link
	reqs     map[uint32]*request
	nextID   uint32
	inflight int                    // sum of the links' inflight
	starved  map[*download]struct{} // downloads waiting for window room
	readers  map[*download]struct{}
	stats    Stats

	budget    int // Config.Budget in chunks
	held      int // chunk buffers held by all downloads
	streaming int // downloads with a window (started, not closed)
	// lastDelivery is when any download last received new bytes: while
	// it is recent, a download queued for room is waiting its turn, not
	// stalled.
	lastDelivery time.Time
}

// New makes an engine.
func New(cfg Config) *Engine {
	cfg.defaults()
	e := &Engine{
		cfg:     cfg,
		links:   map[ServerID]*link{},
		reqs:    map[uint32]*request{},
		starved: map[*download]struct{}{},
		readers: map[*download]struct{}{},
	}
	e.bufs.New = func() any { b := make([]byte, cfg.ChunkSize); return &b }
	e.budget = cfg.Budget / cfg.ChunkSize
	return e
}

// getBuf and putBuf hand out chunk buffers, counting them against the
// budget. Under e.mu.
func (e *Engine) getBuf() *[]byte {
	e.held++
	return e.bufs.Get().(*[]byte)
}

func (e *Engine) putBuf(b *[]byte) {
	e.held--
	e.bufs.Put(b)
}

// share is the most chunks one download may buffer ahead now: an equal
// part of the budget. Under e.mu.
func (e *Engine) share() int {
	return max(minStreamChunks, e.budget/max(1, e.streaming))
}

// Stats returns a snapshot of the counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.Active = len(e.readers)
	s.Buffered = e.held * e.cfg.ChunkSize
	return s
}

// Links returns the engine's view of every server it has used.
func (e *Engine) Links() []LinkStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]LinkStats, 0, len(e.links))
	for _, l := range e.links {
		out = append(out, LinkStats{ID: l.id, SRTT: l.srtt, RTO: l.rto(), Window: l.cwnd, Inflight: l.inflight,
			Rate: l.rate, Delivered: l.delivered, Retransmits: l.retransmits, Timeouts: l.timeouts})
	}
	return out
}

func (e *Engine) link(id ServerID) *link {
	l := e.links[id]
	if l == nil {
		l = newLink(id, e.cfg.ChunkSize, e.cfg.MaxLinkWindow)
		e.links[id] = l
	}
	return l
}

// room reports whether n more bytes may be put in flight in total.
func (e *Engine) room(n int) bool {
	return e.cfg.MaxInflight <= 0 || e.inflight == 0 || e.inflight+n <= e.cfg.MaxInflight
}

// HandleData takes a DATA datagram from server id. The payload is copied;
// the caller may reuse its buffer.
func (e *Engine) HandleData(id ServerID, m *fschunk.Data) {
	e.HandleDataAt(id, m, e.cfg.Now())
}

// HandleDataAt is HandleData with the time of arrival read by the caller
// (once per received burst, on the engine's clock).
func (e *Engine) HandleDataAt(id ServerID, m *fschunk.Data, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.reqs[m.ID]
	if r == nil || r.l.id != id {
		e.stats.Late++
		return
	}
	c, d, l := r.c, r.d, r.l
	rel, n := int(m.Offset-c.off), len(m.Payload)
	pos, ok := r.position(rel, n)
	if m.Offset < c.off || rel+n > c.n || !ok {
		e.stats.Late++ // not what was asked: ignore
		return
	}
	if !r.first {
		r.first = true
		if !r.retrans {
			l.sampleRTT(now.Sub(r.sentAt), now)
		}
	}
	r.lastAct = now
	if pos >= r.expect {
		r.expect = pos + n
	}
	credit := min(n, r.asked-r.released)
	cs := e.cfg.ChunkSize
	hadRoom := l.room(cs, now, false) && e.room(cs)
	r.released += credit
	l.inflight -= credit
	e.inflight -= credit
	if added := c.have.add(rel, rel+n); added > 0 {
		copy((*c.buf)[rel:rel+n], m.Payload)
		l.onDelivered(added, now)
		d.lastProgress = now
		e.lastDelivery = now
		if !d.used[id] {
			d.used[id] = true
		}
		e.stats.BytesDelivered += uint64(added)
	} else {
		e.stats.DuplicateBytes += uint64(n)
	}
	switch {
	case c.have.covers(c.n):
		c.done = true
		if e.cfg.OnChunk != nil {
			e.cfg.OnChunk(id, now.Sub(c.firstAsked))
		}
		for len(c.reqs) > 0 {
			e.finish(c.reqs[0], c.reqs[0] == r)
		}
		notify(d.progress)
		notify(d.wake)
	case r.expect >= r.asked:
		// The server sent the last byte asked. Whatever is still missing
		// was lost or is overtaken: once every range is in, the request is
		// done; otherwise the pump waits a reordering allowance (RFC 9002's
		// time threshold, scaled to our first-byte RTT) and asks again.
		if r.complete() {
			e.finish(r, true)
		} else if r.tailAt.IsZero() {
			r.tailAt = now
		}
		notify(d.wake)
	}
	// Starved downloads wait for room for a chunk: wake them when this
	// datagram made some, not for every datagram (finish wakes them too
	// when a READ ends).
	if credit > 0 && !hadRoom && l.room(cs, now, false) && e.room(cs) {
		e.wakeStarved()
	}
}

// HandleError takes an ERROR from server id about one of our READs.
func (e *Engine) HandleError(id ServerID, m *fschunk.Error) {
	hash, dropped, ok := e.refused(id, m)
	if !ok {
		return
	}
	e.cfg.Logger.Debug("read refused", "server", uint64(id), "code", m.Code.String(), "msg", m.Message)
	if dropped {
		e.cfg.Dropped(id, hash)
	}
}

// refused applies an ERROR to its request under e.mu; dropped says the
// server no longer holds the version; ok is false if the ERROR names no
// request of that server.
func (e *Engine) refused(id ServerID, m *fschunk.Error) (hash [fschunk.HashSize]byte, dropped, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.reqs[m.ID]
	if r == nil || r.l.id != id {
		return hash, false, false
	}
	now := e.cfg.Now()
	d, l := r.d, r.l
	switch m.Code {
	case fschunk.CodeNotFound, fschunk.CodeStale, fschunk.CodeRange:
		d.bad[id] = true
		dropped = true
	case fschunk.CodeBusy:
		l.suspendTill = now.Add(busyPause)
	default:
		l.onTimeout(now, e.cfg.ChunkSize)
	}
	e.finish(r, false)
	notify(d.wake)
	e.wakeStarved()
	return d.hash, dropped, true
}

// ServerGone forgets a server that left the pool; its outstanding reads
// go to other holders at once.
func (e *Engine) ServerGone(id ServerID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, r := range e.reqs {
		if r.l.id == id {
			e.finish(r, false)
			notify(r.d.wake)
		}
	}
	delete(e.links, id)
}

// finish ends a request: it is forgotten (late DATA for it is dropped),
// the window bytes it still held are released, and, when ok, the server's
// window learns how the request went.
func (e *Engine) finish(r *request, ok bool) {
	delete(e.reqs, r.id)
	c, l := r.c, r.l
	for i, x := range c.reqs {
		if x == r {
			c.reqs = append(c.reqs[:i], c.reqs[i+1:]...)
			break
		}
	}
	if ok && !r.dup {
		l.onRequestDone(r.asked, r.released, e.cfg.ChunkSize, e.cfg.MaxLinkWindow)
	}
	l.inflight -= r.asked - r.released
	e.inflight -= r.asked - r.released
	r.released = r.asked
	if l.inflight == 0 {
		l.onIdle()
	}
	e.wakeStarved()
}

func (e *Engine) wakeStarved() {
	for d := range e.starved {
		notify(d.wake)
		delete(e.starved, d)
	}
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// DownloadInfo describes one open reader, for the status page.
type DownloadInfo struct {
	Label   string
	Size    int64
	Pos     int64 // next byte the client gets
	Started time.Time
	Window  int // chunks buffered ahead
}

// Downloads lists the open readers.
func (e *Engine) Downloads() []DownloadInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]DownloadInfo, 0, len(e.readers))
	for d := range e.readers {
		out = append(out, DownloadInfo{Label: d.label, Size: d.size, Pos: d.streamPos, Started: d.opened, Window: len(d.chunks)})
	}
	return out
}

// Open returns a reader of the version with content hash and size; label
// names it on the status page. It fetches nothing until the first Read;
// Seek is free.
func (e *Engine) Open(ctx context.Context, hash [fschunk.HashSize]byte, size int64, label string) *Reader {
	d := &download{
		e: e, hash: hash, size: size, ctx: ctx, label: label, opened: e.cfg.Now(),
		bad:      map[ServerID]bool{},
		used:     map[ServerID]bool{},
		wake:     make(chan struct{}, 1),
		progress: make(chan struct{}, 1),
		done:     make(chan struct{}),
		maxWin:   max(e.cfg.Window/e.cfg.ChunkSize, 2),
	}
	if size < 0 || size > fschunk.MaxFileSize {
		// The codec refuses such sizes; a caller passing one anyway gets
		// an error on the first read, not an overflow in the window.
		d.err = fmt.Errorf("fetch: size %d outside [0, %d]", size, int64(fschunk.MaxFileSize))
	}
	e.mu.Lock()
	e.readers[d] = struct{}{}
	e.mu.Unlock()
	return &Reader{d: d}
}
