// Package fileserver is the protocol side of FastFileSrv: it registers the
// server with every configured gateway over the FS Chunk Protocol v2, keeps
// those sessions alive (heartbeats, rekeys, re-registration after a gateway
// restart), announces the catalog of files and its changes, and serves READ
// and META_REQUEST messages from the files of a catalog.Catalog.
//
// Everything travels over one UDP socket supplied by the caller, so that a
// server behind NAT or a UDP relay needs exactly one mapping. The server
// always initiates: gateways never need to reach it first.
//
// The protocol is receiver-driven. The server never retransmits DATA; the
// gateway asks again for what it is missing. The server retransmits only
// what the gateway cannot ask for: handshake messages and catalog pages.
package fileserver

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"golang.org/x/time/rate"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/catalog"
	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/transport"
)

// DefaultMaxReads is the default number of READs served at once. Beyond it
// a READ is refused with ERROR BUSY at once: the gateway asks another holder,
// which is cheaper than queueing behind a disk that is already saturated.
const DefaultMaxReads = 64

// Timers and bounds of the server side that package fschunk does not define.
const (
	// maxCatalogInflight bounds the catalog pages sent and not yet
	// acknowledged, so a large catalog does not flood a gateway's socket
	// buffer in one burst.
	maxCatalogInflight = 64

	// handshakeJitter spreads handshake retransmissions by ±20%, so that
	// many servers restarted together do not retry in lockstep.
	handshakeJitter = 0.2

	// goodbyeCopies of GOODBYE are sent at shutdown; nothing waits for an
	// acknowledgement, so redundancy is the only protection against loss.
	goodbyeCopies = 3

	// catalogStallTimeout abandons a catalog sync that got no
	// acknowledgement for this long (a gateway that rejects a page, or
	// disappeared without the heartbeat timeout noticing yet). The next
	// HEARTBEAT_ACK decides afresh what to send.
	catalogStallTimeout = 10 * time.Second

	// eventQueueSize is the capacity of each gateway's control queue
	// (acknowledgements, GOODBYE; handshakes have their own). Control traffic is
	// small and bounded by the catalog window; a full queue means the
	// gateway goroutine is stuck and the datagram is dropped.
	eventQueueSize = 256
	// handshakeQueueSize is the capacity of each gateway's queue of
	// CHALLENGEs and WELCOMEs. A handshake needs one of each; the queue is
	// apart from the control queue so that a flood of them (forged with a
	// pending index seen on the path) cannot crowd out acknowledgements,
	// and their MAC or key derivation is done by the gateway's goroutine,
	// never by the receive loop that serves READs.
	handshakeQueueSize = 8

	// refusedLogEvery rate-limits the warnings about refused READs, which
	// come in bursts when a file changes or the server is overloaded.
	refusedLogEvery = time.Second

	// readErrorPause separates socket reads after a transient error, so a
	// persistent error cannot spin a core.
	readErrorPause = 10 * time.Millisecond

	// recvBufferSize holds any UDP datagram.
	recvBufferSize = 64 << 10

	// minTimerWait keeps a gateway goroutine from spinning should a deadline
	// computed from an injected clock (Config.Now) never move forward.
	minTimerWait = time.Millisecond
)

// ackTimeout is fschunk.HeartbeatAckTimeout for the heartbeat interval a
// gateway asked for: one and a half intervals, so that a gateway restart is
// noticed within two intervals whatever interval the gateway chose.
func ackTimeout(interval time.Duration) time.Duration {
	return interval + interval/2
}

// Config configures a Server.
type Config struct {
	// Gateways are "host:port" each. The server keeps an independent
	// session with each. Names are resolved again at each handshake
	// attempt, so DNS changes are followed.
	Gateways []string
	// Name is the server's stable name, sent in every HEARTBEAT (see
	// fschunk.Heartbeat.Name); "" sends none.
	Name string
	// Conn is the one UDP socket used for everything. The caller creates
	// and closes it; Run only sets its read deadline to stop reading.
	Conn net.PacketConn
	// Key is the pre-shared key: the extra symmetric layer of the
	// handshake (Noise's psk2).
	Key *auth.Key
	// Static is this server's key pair: its identity, which gateways
	// list (their allowed servers) to admit it.
	Static auth.StaticKey
	// GatewayKeys are the public keys of the gateways this server talks
	// to: the current key and, during a gateway key rotation, the next
	// (each handshake sends a HELLO for each and completes with the one
	// the gateway answers). At most auth.MaxGatewayKeys.
	GatewayKeys []auth.PublicKey
	// Catalog must be Running (the caller runs it). The server must be the
	// only receiver of Catalog.Changed().
	Catalog *catalog.Catalog
	Logger  *slog.Logger
	// MaxReads is the number of READs served concurrently; default
	// DefaultMaxReads. Beyond it READs are answered with ERROR BUSY.
	MaxReads int
	// MaxDatagram is the largest datagram this server sends; default
	// fschunk.MaxDatagramSize. A DATA datagram is
	// min(READ.MaxDatagram, MaxDatagram) bytes.
	MaxDatagram int
	// Limits bound session lifetimes; zero fields take auth.DefaultLimits.
	Limits auth.Limits
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server is the protocol side of one FastFileSrv process.
type Server struct {
	cfg      Config
	log      *slog.Logger
	now      func() time.Time
	maxReads int
	maxDG    int
	instance uint64
	udp      *net.UDPConn   // cfg.Conn if it is one: allocation-free single writes
	conn     transport.Conn // cfg.Conn, read and written in batches

	gateways []*gateway
	reg      registry
	running  atomic.Bool

	jobs    chan *readJob
	active  atomic.Int64 // READs admitted and not finished
	jobPool sync.Pool    // *readJob
	bufPool sync.Pool    // *[]byte of maxDG bytes
	// batchPool holds *batchBuf sized for the largest batch.
	batchPool sync.Pool

	viewMu  sync.Mutex // serialises rebuilding view
	view    atomic.Pointer[catView]
	skipped map[string]bool // names logged as not announced; under viewMu

	refusedAt         atomic.Int64 // UnixNano of the last refused-READ warning
	refusedSuppressed atomic.Uint64
	// versionLog rate-limits the warning about datagrams of another
	// protocol version (receive loop only).
	versionLog rate.Sometimes

	st counters
}

// New validates cfg and returns a Server; Run starts it.
func New(cfg Config) (*Server, error) {
	if len(cfg.Gateways) == 0 {
		return nil, errors.New("fileserver: no gateways configured")
	}
	for _, g := range cfg.Gateways {
		host, port, err := net.SplitHostPort(g)
		if err != nil {
			return nil, fmt.Errorf("fileserver: gateway %q: %w", g, err)
		}
		if host == "" || port == "" {
			return nil, fmt.Errorf("fileserver: gateway %q: want host:port", g)
		}
	}
	if cfg.Name != "" {
		if err := fschunk.ValidServerName(cfg.Name); err != nil {
			return nil, fmt.Errorf("fileserver: %w", err)
		}
	}
	if cfg.Conn == nil {
		return nil, errors.New("fileserver: no socket (Config.Conn)")
	}
	if cfg.Key == nil {
		return nil, errors.New("fileserver: no pre-shared key (Config.Key)")
	}
	if cfg.Static.IsZero() {
		return nil, errors.New("fileserver: no private key (Config.Static)")
	}
	if len(cfg.GatewayKeys) == 0 || len(cfg.GatewayKeys) > auth.MaxGatewayKeys {
		return nil, fmt.Errorf("fileserver: %d gateway public keys (Config.GatewayKeys), want 1 to %d", len(cfg.GatewayKeys), auth.MaxGatewayKeys)
	}
	if cfg.Catalog == nil {
		return nil, errors.New("fileserver: no catalog (Config.Catalog)")
	}
	if cfg.MaxReads <= 0 {
		cfg.MaxReads = DefaultMaxReads
	}
	if cfg.MaxDatagram == 0 {
		cfg.MaxDatagram = fschunk.MaxDatagramSize
	}
	if cfg.MaxDatagram < fschunk.MinDatagramSize || cfg.MaxDatagram > fschunk.MaxDatagramSize {
		return nil, fmt.Errorf("fileserver: MaxDatagram %d outside [%d, %d]", cfg.MaxDatagram, fschunk.MinDatagramSize, fschunk.MaxDatagramSize)
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		now:      cfg.Now,
		maxReads: cfg.MaxReads,
		maxDG:    cfg.MaxDatagram,
		// The instance identifies this process to the gateways across
		// rekeys and re-registrations; a restart draws a new one.
		instance: binary.BigEndian.Uint64(rnd[:]) | 1,
		jobs:     make(chan *readJob, cfg.MaxReads),
		// Datagrams of another version are counted; the warning is
		// logged at most once a minute.
		versionLog: rate.Sometimes{First: 1, Interval: time.Minute},
	}
	s.udp, _ = cfg.Conn.(*net.UDPConn)
	var err error
	if s.conn, err = transport.NewConn(cfg.Conn, transport.Options{}); err != nil {
		return nil, fmt.Errorf("fileserver: %w", err)
	}
	s.jobPool.New = func() any { return new(readJob) }
	s.bufPool.New = func() any {
		b := make([]byte, 0, s.maxDG)
		return &b
	}
	s.batchPool.New = func() any {
		n := max(batchBytes, s.maxDG)
		return &batchBuf{data: make([]byte, n), out: make([]byte, 0, n)}
	}
	for _, name := range cfg.Gateways {
		g, err := newGateway(s, name)
		if err != nil {
			return nil, fmt.Errorf("fileserver: %w", err)
		}
		s.gateways = append(s.gateways, g)
	}
	return s, nil
}

// Run serves until ctx is done, then sends GOODBYE (shutdown) to every
// gateway it has a session with and returns nil once every goroutine it
// started has ended. It returns an error only if the socket fails for good
// (e.g. it was closed). Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("fileserver: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.log.Info("fileserver: starting", "gateways", len(s.gateways), "instance", fmt.Sprintf("%016x", s.instance), "max_reads", s.maxReads)

	var wg sync.WaitGroup
	for range s.maxReads {
		wg.Go(func() { s.worker(ctx) })
	}
	for _, g := range s.gateways {
		wg.Go(func() { g.run(ctx) })
	}
	wg.Go(func() { s.watchCatalog(ctx) })
	var recvErr error
	wg.Go(func() {
		recvErr = s.receive(ctx)
		cancel() // a dead socket stops everything
	})
	wg.Go(func() {
		// The socket belongs to the caller: a read deadline in the past
		// is the only way to wake the receive loop without closing it.
		<-ctx.Done()
		_ = s.cfg.Conn.SetReadDeadline(time.Unix(1, 0))
	})
	wg.Wait()
	// Hand the socket back as it came.
	_ = s.cfg.Conn.SetReadDeadline(time.Time{})

	// Drop READs admitted but never started.
	for drained := false; !drained; {
		select {
		case j := <-s.jobs:
			s.active.Add(-1)
			s.putJob(j)
		default:
			drained = true
		}
	}
	s.sayGoodbye()
	s.log.Info("fileserver: stopped")
	return recvErr
}

// sayGoodbye tells every gateway with a session that this server stops, so
// that it stops offering its files now rather than after missed heartbeats.
func (s *Server) sayGoodbye() {
	buf := make([]byte, 0, 64)
	for _, g := range s.gateways {
		cur := g.cur.Load()
		if cur == nil {
			continue
		}
		sent := 0
		for range goodbyeCopies {
			pkt := fschunk.AppendHeader(buf[:0], fschunk.Header{Type: fschunk.TypeGoodbye})
			bye := fschunk.Goodbye{Reason: fschunk.GoodbyeShutdown}
			pkt = bye.Append(pkt)
			if s.sealSend(cur, pkt) == nil {
				sent++
			}
		}
		g.log.Info("fileserver: goodbye sent", "session", cur.auth.LocalIndex, "copies", sent)
	}
}

// watchCatalog turns catalog changes into immediate syncs: waiting for the
// next heartbeat would add up to a heartbeat interval to the time a new
// file takes to become downloadable.
func (s *Server) watchCatalog(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.cfg.Catalog.Changed():
			v := s.currentView()
			s.log.Debug("fileserver: catalog changed", "gen", v.gen, "files", len(v.entries))
			for _, g := range s.gateways {
				g.poke()
			}
		}
	}
}

// Connected returns the number of gateways the server has a live session
// with.
func (s *Server) Connected() int {
	n := 0
	for _, g := range s.gateways {
		if g.cur.Load() != nil {
			n++
		}
	}
	return n
}

// ---------------------------------------------------------------- registry

// registry maps the receiver index of incoming datagrams to their owner: a
// session (current or previous of some gateway) or a handshake in progress,
// in one auth.IndexTable. Indexes are drawn at random by auth.Initiator;
// the table refuses a duplicate so that demultiplexing is never ambiguous.
type registry struct {
	t auth.IndexTable[regEntry]
}

// regEntry is what an index leads to: a session, or (hs) the gateway whose
// handshake is in progress under it.
type regEntry struct {
	sess *session
	hs   *gateway
}

func (r *registry) lookup(idx uint32) (*session, *gateway) {
	e, _ := r.t.Lookup(idx)
	return e.sess, e.hs
}

func (r *registry) reservePending(idx uint32, g *gateway) bool {
	return r.t.Claim(idx, regEntry{hs: g})
}

func (r *registry) releasePending(idx uint32, g *gateway) {
	r.t.Delete(idx, regEntry{hs: g})
}

// promote turns g's pending handshake idx into session s.
func (r *registry) promote(idx uint32, g *gateway, s *session) {
	r.t.Replace(idx, regEntry{hs: g}, regEntry{sess: s})
}

func (r *registry) remove(s *session) {
	if s != nil {
		r.t.Delete(s.auth.LocalIndex, regEntry{sess: s})
	}
}

// count is the number of sessions (handshakes in progress not counted).
func (r *registry) count() int {
	n := 0
	for _, e := range r.t.All() {
		if e.sess != nil {
			n++
		}
	}
	return n
}

// ---------------------------------------------------------------- catalog view

// catView is one catalog generation in wire form, with the path index that
// answers META_REQUEST. It is rebuilt once per generation and shared.
type catView struct {
	gen     uint64
	entries []fschunk.Entry // sorted by path, only paths fschunk.ValidPath accepts
	byPath  map[string]int
}

// currentView returns the view of the catalog's current generation,
// building it if the catalog moved on since the last call.
func (s *Server) currentView() *catView {
	gen, _ := s.cfg.Catalog.Snapshot()
	if v := s.view.Load(); v != nil && v.gen == gen {
		return v
	}
	s.viewMu.Lock()
	defer s.viewMu.Unlock()
	gen, entries := s.cfg.Catalog.Snapshot()
	if v := s.view.Load(); v != nil && v.gen == gen {
		return v
	}
	v := &catView{gen: gen, entries: make([]fschunk.Entry, 0, len(entries)), byPath: make(map[string]int, len(entries))}
	skipped, fresh := 0, 0
	for i := range entries {
		e, ok := wireEntry(entries[i])
		if !ok {
			skipped++
			if s.logSkipped(entries[i]) {
				fresh++
			}
			continue
		}
		v.byPath[e.Path] = len(v.entries)
		v.entries = append(v.entries, e)
	}
	if fresh > 0 {
		// Said when new names are skipped, not at every generation.
		// A gateway rejects a whole page for one such entry, which would
		// stall the sync forever: leave them out.
		s.log.Warn("fileserver: files with names or sizes the protocol cannot carry are not announced", "gen", gen, "skipped", skipped)
	}
	s.view.Store(v)
	return v
}

// maxSkippedLogged bounds the names logSkipped remembers (and logs); past
// it, only the count in currentView's warning grows.
const maxSkippedLogged = 1000

// logSkipped names a file left out of the catalog, once per name, escaped
// (it may hold a tab, a newline or bytes that are not UTF-8).
func (s *Server) logSkipped(e catalog.Entry) (logged bool) {
	p := e.Path
	if s.skipped == nil {
		s.skipped = map[string]bool{}
	}
	if s.skipped[p] || len(s.skipped) >= maxSkippedLogged {
		return false
	}
	s.skipped[p] = true
	if e.Size < 0 || e.Size > fschunk.MaxFileSize {
		s.log.Warn("fileserver: file not announced: larger than the protocol's limit", "path", strconv.QuoteToASCII(p), "size", e.Size, "max", int64(fschunk.MaxFileSize))
		return true
	}
	s.log.Warn("fileserver: file not announced: its name has a control character, a backslash or bytes that are not UTF-8, which no URL can name; rename it to serve it",
		"path", strconv.QuoteToASCII(p))
	return true
}

// wireEntry converts a catalog entry; ok is false for paths the protocol
// does not allow (control characters, backslashes, over-long names) and
// for those no HTTP client could ask for (C1 control characters, which
// the gateway refuses in a URL): every name announced can be fetched. It
// also refuses files larger than fschunk.MaxFileSize.
func wireEntry(e catalog.Entry) (fschunk.Entry, bool) {
	if fschunk.ValidPath(e.Path) != nil || strings.ContainsFunc(e.Path, unicode.IsControl) ||
		e.Size < 0 || e.Size > fschunk.MaxFileSize {
		return fschunk.Entry{}, false
	}
	return fschunk.Entry{Hash: e.Hash, Size: e.Size, ModTime: e.ModTime.UTC(), Path: e.Path}, true
}

// ---------------------------------------------------------------- stats

// Stats are counters for monitoring and tests.
type Stats struct {
	HandshakesStarted uint64 // HELLOs sent, each a fresh handshake attempt (retransmissions included)
	Handshakes        uint64 // handshakes completed: sessions established
	Rekeys            uint64 // sessions replaced because the old one was due for a rekey
	Reregistrations   uint64 // sessions established after the gateway forgot us, said GOODBYE, restarted, or the old session expired
	GatewayRestarts   uint64 // WELCOMEs whose GatewayBoot differed from the previous one
	Sessions          int    // sessions that can receive now (current and previous)
	Connected         int    // gateways with a current session

	HeartbeatsSent   uint64
	Authenticated    uint64 // transport datagrams on an established session whose tag verified
	ReadsActive      int    // READs admitted and not finished
	ReadsServed      uint64 // READs answered with all their DATA
	DataSent         uint64 // DATA datagrams
	BytesSent        uint64 // bytes of all datagrams sent
	SendErrors       uint64 // writes the socket refused (a GSO batch is one write)
	ErrorsSent       map[fschunk.Code]uint64
	ErrorsReceived   uint64 // ERROR messages from gateways (logged, otherwise ignored)
	MetaServed       uint64
	HashesServed     uint64 // HASHES answers: blocks of hash trees
	CatalogPagesSent uint64 // CATALOG_PAGE and CATALOG_DELTA datagrams, retransmissions included
	CatalogSyncs     uint64 // catalog syncs completed (every page acknowledged)
	GoodbyesReceived uint64

	Dropped Drops
}

// Drops counts datagrams dropped without an answer, by cause.
type Drops struct {
	Garbage        uint64 // does not parse: wrong version, type, size, reserved bits, or a malformed body
	Version        uint64 // of another protocol version (also counted in Garbage)
	AuthFailure    uint64 // MAC or AEAD tag mismatch: forged, corrupted or under another key
	Replay         uint64 // counter already seen or too old
	UnknownSession uint64 // no session or handshake owns the receiver index (or the session expired)
	Unexpected     uint64 // authentic, but a message only a server sends
	QueueFull      uint64 // a gateway's control queue was full
}

type counters struct {
	hellos, handshakes, rekeys, rereg, restarts  atomic.Uint64
	heartbeats, readsServed, dataSent, bytesSent atomic.Uint64
	sendErrors, errorsRecv, metaServed           atomic.Uint64
	hashesServed                                 atomic.Uint64
	pagesSent, syncs, goodbyes                   atomic.Uint64
	errorsSent                                   [16]atomic.Uint64 // by fschunk.Code
	garbage, authFail, replay, unknown, version  atomic.Uint64
	unexpected, queueFull, authenticated         atomic.Uint64
}

// Stats returns a snapshot of the counters; fields are read one by one.
func (s *Server) Stats() Stats {
	c := &s.st
	st := Stats{
		HandshakesStarted: c.hellos.Load(),
		Handshakes:        c.handshakes.Load(),
		Rekeys:            c.rekeys.Load(),
		Reregistrations:   c.rereg.Load(),
		GatewayRestarts:   c.restarts.Load(),
		Sessions:          s.reg.count(),
		Connected:         s.Connected(),
		HeartbeatsSent:    c.heartbeats.Load(),
		Authenticated:     c.authenticated.Load(),
		ReadsActive:       int(s.active.Load()),
		ReadsServed:       c.readsServed.Load(),
		DataSent:          c.dataSent.Load(),
		BytesSent:         c.bytesSent.Load(),
		SendErrors:        c.sendErrors.Load(),
		ErrorsSent:        map[fschunk.Code]uint64{},
		ErrorsReceived:    c.errorsRecv.Load(),
		MetaServed:        c.metaServed.Load(),
		HashesServed:      c.hashesServed.Load(),
		CatalogPagesSent:  c.pagesSent.Load(),
		CatalogSyncs:      c.syncs.Load(),
		GoodbyesReceived:  c.goodbyes.Load(),
		Dropped: Drops{
			Garbage:        c.garbage.Load(),
			Version:        c.version.Load(),
			AuthFailure:    c.authFail.Load(),
			Replay:         c.replay.Load(),
			UnknownSession: c.unknown.Load(),
			Unexpected:     c.unexpected.Load(),
			QueueFull:      c.queueFull.Load(),
		},
	}
	for code := range c.errorsSent {
		if n := c.errorsSent[code].Load(); n > 0 {
			st.ErrorsSent[fschunk.Code(code)] = n
		}
	}
	return st
}

// dropFor counts a datagram dropped because of err, by cause.
func (s *Server) dropFor(err error) {
	c := &s.st
	switch {
	case errors.Is(err, auth.ErrReplay):
		c.replay.Add(1)
	case errors.Is(err, auth.ErrForged), errors.Is(err, auth.ErrBadMAC):
		c.authFail.Add(1)
	case errors.Is(err, auth.ErrUnknownSession), errors.Is(err, auth.ErrExpired), errors.Is(err, auth.ErrNoPending):
		c.unknown.Add(1)
	default:
		c.garbage.Add(1)
	}
}
