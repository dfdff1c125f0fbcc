// Package fetch is the gateway's download engine: it cuts a response into
// chunks, asks every server holding the file's version for them in
// parallel over the FS Chunk Protocol, recovers losses by asking again
// for exactly the missing bytes, and hands the bytes to the HTTP side in
// order, with memory bounded per response. docs/ARCHITECTURE.md explains
// why it is built this way.
package fetch

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/hashtree"
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

// Sender sends READs and HASH_REQUESTs to a server; the gateway's UDP
// endpoint implements it.
type Sender interface {
	SendRead(id ServerID, r *fschunk.Read) error
	SendHashRequest(id ServerID, r *fschunk.HashRequest) error
}

// Config configures an Engine. Sender and Holders are required.
type Config struct {
	Sender  Sender
	Holders func(pool.Key) []ServerID // live holders of a version
	// Dropped is told when a server says it no longer has a version
	// (NOT_FOUND, STALE, RANGE) or was caught sending bytes or hashes
	// that do not match it, so the pool stops offering it.
	Dropped func(ServerID, pool.Key)
	// Blamed is told, after Dropped, when a server sent bytes or hashes
	// that do not match the version's content hash (it is ejected from
	// the version; the gateway logs it and drops repeat offenders).
	Blamed func(ServerID, pool.Key, string)
	// TreeCache bounds the bytes of hash trees kept for versions no
	// reader uses now (default 16 MiB: the leaves of 32 GiB of content).
	TreeCache int
	// DatagramSize is the datagram size to ask of a server; nil means
	// fschunk.DefaultDatagramSize.
	DatagramSize func(ServerID) int
	Policy       Policy

	ChunkSize int // bytes per chunk and per READ; default 128 KiB
	// Window is the bytes buffered ahead per response; default 24 MiB: a
	// 200 ms path of 300 Mbit/s holds 7.5 MB, and a chunk that needs a
	// retransmission holds the window for another round trip or two.
	Window int
	// Budget bounds the bytes buffered ahead by all responses together
	// (default 32 MiB, at least Window): with many clients each gets an equal share,
	// never less than the one chunk it is sending (minStreamChunks), so
	// memory grows by a chunk per client, not by a window.
	Budget        int
	MaxLinkWindow int // bytes in flight per server; default 8 MiB (twice a 200 ms, 100 Mbit/s path)
	// MaxInflight bounds the bytes in flight to all servers together, so
	// that bursts from every server at once fit in the gateway's socket
	// receive buffer instead of being dropped by the kernel; 0: no bound.
	MaxInflight  int
	HolderWait   time.Duration // wait for a holder to (re)appear; default 3 s
	StallTimeout time.Duration // no progress at all for this long fails; default 10 s
	// StalledAfter: a response whose client has taken nothing of a
	// Write for this long is stalled (see stalled.go); default 1 s.
	StalledAfter time.Duration
	DupBudget    float64 // endgame duplicates, fraction of a response; default 0.1
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
	// Chunks are verified leaf by leaf, so they hold whole leaves.
	c.ChunkSize = (c.ChunkSize + hashtree.LeafSize - 1) / hashtree.LeafSize * hashtree.LeafSize
	if c.TreeCache <= 0 {
		c.TreeCache = 16 << 20
	}
	if c.Window <= 0 {
		c.Window = 24 << 20
	}
	c.Window = max(c.Window, 2*c.ChunkSize)
	if c.Budget <= 0 {
		c.Budget = 32 << 20
	}
	c.Budget = max(c.Budget, c.Window)
	if c.MaxLinkWindow <= 0 {
		c.MaxLinkWindow = 8 << 20
	}
	c.MaxLinkWindow = max(c.MaxLinkWindow, c.ChunkSize)
	if c.HolderWait <= 0 {
		c.HolderWait = 3 * time.Second
	}
	if c.StallTimeout <= 0 {
		c.StallTimeout = 10 * time.Second
	}
	if c.StalledAfter <= 0 {
		c.StalledAfter = time.Second
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
		c.Dropped = func(ServerID, pool.Key) {}
	}
	if c.Blamed == nil {
		c.Blamed = func(ServerID, pool.Key, string) {}
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
	Stalled         int    `json:"stalled"`          // responses whose client stopped reading, now (see StalledAfter)
	Stalls          uint64 `json:"stalls"`           // responses found stalled
	ReclaimedBytes  uint64 `json:"reclaimed_bytes"`  // bytes of windows given back by stalled responses
	BytesDelivered  uint64 `json:"delivered_bytes"`  // new bytes received
	DuplicateBytes  uint64 `json:"duplicate_bytes"`  // bytes received that were already held
	Requests        uint64 `json:"requests"`         // READs sent
	Retransmits     uint64 `json:"retransmits"`      // READs for bytes asked before
	EndgameRequests uint64 `json:"endgame_requests"` // duplicate READs of the endgame
	GapRecoveries   uint64 `json:"gap_recoveries"`   // READs for holes behind a READ's later datagrams, while it went on
	EarlyLosses     uint64 `json:"early_losses"`     // READs declared lost before their RTO (the server had moved on)
	TailLosses      uint64 `json:"tail_losses"`      // READs whose tail was declared lost (their server sent others' bytes since)
	IdleLosses      uint64 `json:"idle_losses"`      // READs to an idle server unanswered a smoothed RTT and an allowance after
	Timeouts        uint64 `json:"timeouts"`
	Late            uint64 `json:"late"` // DATA or HASHES for no outstanding request

	VerifiedBytes  uint64 `json:"verified_bytes"`  // bytes checked against their content hash
	VerifyFailures uint64 `json:"verify_failures"` // leaves that did not match (fetched again)
	Ambiguous      uint64 `json:"ambiguous"`       // failed leaves made of several servers' bytes (nobody blamed)
	Blamed         uint64 `json:"blamed"`          // verdicts against servers (bad leaves or hash blocks)
	HashRequests   uint64 `json:"hash_requests"`   // HASH_REQUESTs sent
	HashTimeouts   uint64 `json:"hash_timeouts"`   // HASH_REQUESTs given up (asked again)
	HashBytes      uint64 `json:"hash_bytes"`      // hash tree bytes received
}

// LinkStats describe the engine's view of one server.
type LinkStats struct {
	ID          ServerID
	SRTT, RTO   time.Duration
	Window      int
	Inflight    int
	Rate        float64 // bytes/s
	Bandwidth   float64 // the bandwidth model's estimate, bytes/s (0: unmeasured)
	Startup     bool    // the model is still in startup
	Delivered   uint64
	Retransmits uint64
	Timeouts    uint64
	Blamed      uint64 // times caught sending bytes or hashes that did not verify
}

// Engine runs every download of a gateway. It is safe for concurrent use.
type Engine struct {
	cfg Config
	// hashers: leaf hashers (*hashtree.Hasher, about 11 KiB of BLAKE3
	// state each) lent to pumps while they check chunks, so that their
	// number follows the responses checking at once, not all responses.
	hashers sync.Pool

	mu    sync.Mutex
	links map[ServerID]*link
	reqs  map[uint32]*request
	hreqs map[uint32]*hashReq
	trees map[pool.Key]*vtree // hash trees of the versions being read (and recently read)
	// idleTrees: the trees no reader uses, most recently used first, and
	// their bytes (bounded by Config.TreeCache).
	idleTrees list.List
	idleBytes int
	nextID    uint32
	inflight  int                    // sum of the links' inflight
	starved   map[*download]struct{} // downloads waiting for window room
	readers   map[*download]struct{}
	stats     Stats

	budget int // Config.Budget
	held   int // bytes of pieces reserved by all windows (see reserve)
	alloc  int // of which taken (see allocPieces)
	// pinned: bytes of the pieces that stalled responses, their windows
	// reclaimed, are writing (see stalled.go): outside the budget.
	pinned int
	// streaming: downloads with a window (started, not closed), but the
	// stalled ones.
	streaming int
	// cands and candLinks: round.pick's scratch (on a round they would
	// move it to the heap, the policy being an interface: a kilobyte per
	// round of every download).
	cands     [16]Candidate
	candLinks [16]*link
	// writers: downloads in a Write to their client, oldest first;
	// stalled: those whose Write lasted StalledAfter, not yet reclaimed.
	writers, stalled dlist
	nstalled         int // downloads stalled now (reclaimed or not)
	// sweepTimer runs sweepTick; sweepArmed: it is due.
	sweepTimer *time.Timer
	sweepArmed bool
	// free and freeWhole: pieces and whole chunks' buffers given back,
	// for reuse (see getBuf).
	free, freeWhole []*[]byte
	freeBytes       int
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
		hreqs:   map[uint32]*hashReq{},
		trees:   map[pool.Key]*vtree{},
		starved: map[*download]struct{}{},
		readers: map[*download]struct{}{},
	}
	e.budget = cfg.Budget
	return e
}

// share is the most chunks one download may buffer ahead now: an equal
// part of the budget. Under e.mu.
func (e *Engine) share() int {
	return max(minStreamChunks, e.budget/e.cfg.ChunkSize/max(1, e.streaming))
}

// Stats returns a snapshot of the counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.Active = len(e.readers)
	e.sweep(e.cfg.Now())
	s.Buffered = e.alloc + e.pinned
	s.Stalled = e.nstalled
	return s
}

// Links returns the engine's view of every server it has used.
func (e *Engine) Links() []LinkStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]LinkStats, 0, len(e.links))
	for _, l := range e.links {
		out = append(out, LinkStats{ID: l.id, SRTT: l.srtt, RTO: l.rto(), Window: l.cwnd, Inflight: l.inflight,
			Rate: l.rate, Bandwidth: l.model.bw.get(), Startup: l.model.startup, Delivered: l.delivered, Retransmits: l.retransmits, Timeouts: l.timeouts, Blamed: l.blamed})
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
	if r.first && pos >= r.expect && now.After(r.lastAct) {
		l.noteGap(now.Sub(r.lastAct))
	}
	if !r.first {
		r.first = true
		if !r.retrans {
			l.sampleRTT(now.Sub(r.sentAt), now)
		}
		if r.sentAt.After(l.firstSent) {
			l.firstSent, l.firstSeenAt = r.sentAt, now
		}
	}
	r.lastAct = now
	if pos >= r.expect {
		if pos > r.expect && r.gapAt.IsZero() && !r.dup {
			// A hole behind this datagram: lost, unless overtaken.
			r.gapAt, r.gapAfter = now, 1
			notify(d.wake)
		} else if !r.gapAt.IsZero() {
			if r.gapAfter++; r.gapAfter == lossThreshold {
				notify(d.wake) // lost for sure: ask again now
			}
		}
		r.expect = pos + n
	}
	credit := min(n, r.asked-r.released)
	cs := e.cfg.ChunkSize
	hadRoom := l.room(cs, now, false) && e.room(cs)
	r.released += credit
	l.inflight -= credit
	e.inflight -= credit
	if added := c.have.add(rel, rel+n); added > 0 {
		c.write(rel, m.Payload)
		c.noteSource(id, rel, rel+n)
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

// HandleError takes an ERROR from server id about one of our READs or
// HASH_REQUESTs.
func (e *Engine) HandleError(id ServerID, m *fschunk.Error) {
	key, dropped, ok := e.refused(id, m)
	if !ok {
		return
	}
	e.cfg.Logger.Debug("request refused", "server", uint64(id), "code", m.Code.String(), "msg", m.Message)
	if dropped {
		e.cfg.Dropped(id, key)
	}
}

// refused applies an ERROR to its request under e.mu; dropped says the
// server no longer holds the version; ok is false if the ERROR names no
// request of that server.
func (e *Engine) refused(id ServerID, m *fschunk.Error) (key pool.Key, dropped, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if hr := e.hreqs[m.ID]; hr != nil && hr.server == id {
		dropped = e.hashError(hr, m)
		return hr.t.key, dropped, true
	}
	r := e.reqs[m.ID]
	if r == nil || r.l.id != id {
		return key, false, false
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
	return d.key, dropped, true
}

// hashError applies an ERROR answering a HASH_REQUEST; dropped says the
// server no longer holds the version. Under e.mu.
func (e *Engine) hashError(r *hashReq, m *fschunk.Error) (dropped bool) {
	t := r.t
	delete(e.hreqs, r.id)
	if t.pending[r.blk] == r {
		delete(t.pending, r.blk)
	}
	switch m.Code {
	case fschunk.CodeNotFound, fschunk.CodeStale, fschunk.CodeRange:
		t.gone[r.server] = true
		dropped = true
	}
	e.wakeTree(t)
	return dropped
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
	l.reqs--
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
		e: e, hash: hash, size: size, key: pool.Key{Hash: hash, Size: size}, ctx: ctx, label: label, opened: e.cfg.Now(),
		bad:      map[ServerID]bool{},
		used:     map[ServerID]bool{},
		wake:     make(chan struct{}, 1),
		progress: make(chan struct{}, 1),
		done:     make(chan struct{}),
		maxWin:   max(e.cfg.Window/e.cfg.ChunkSize, 2),
		limit:    size,
	}
	if size < 0 || size > fschunk.MaxFileSize {
		// The codec refuses such sizes; a caller passing one anyway gets
		// an error on the first read, not an overflow in the window.
		d.err = fmt.Errorf("fetch: size %d outside [0, %d]", size, int64(fschunk.MaxFileSize))
	}
	e.mu.Lock()
	e.readers[d] = struct{}{}
	d.t = e.acquireTree(d.key)
	e.mu.Unlock()
	return &Reader{d: d}
}
