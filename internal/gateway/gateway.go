// Package gateway is HttpGw's UDP endpoint: it answers handshakes,
// keeps a session per server, tracks the pool (liveness and catalogs),
// sends the download engine's READs and hands it the DATA that comes
// back. One socket, one receive loop; all state about servers is soft.
package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/cache"
	"github.com/fastfile/fschunk/internal/fetch"
	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/pool"
	"github.com/fastfile/fschunk/internal/transport"
)

// heardEvery is how often a busy server's liveness is refreshed in the pool.
const heardEvery = 100 * time.Millisecond

// Config configures a Gateway. Conn, Key and Static are required.
type Config struct {
	Conn net.PacketConn
	// Key is the pre-shared key: the extra symmetric layer of the
	// handshake (Noise's psk2).
	Key *auth.Key
	// Static is the gateway's key pair, which servers know by its public
	// half; NextStatic, if set, a second one it also answers for, so that
	// servers can move to it one by one (a key rotation). SetStatics
	// replaces both without a restart.
	Static, NextStatic auth.StaticKey
	// Allowed lists the servers admitted: their public keys and names.
	// SetAllowed replaces it without a restart (and ends the sessions of
	// servers no longer listed).
	Allowed Allowed
	Logger  *slog.Logger
	Limits  auth.Limits // zero fields: auth.DefaultLimits

	// DatagramSize is the size of DATA datagrams asked of servers; 0 picks
	// fschunk.LoopbackDatagramSize for servers on this host,
	// fschunk.IPv4DatagramSize for IPv4 and fschunk.DefaultDatagramSize for
	// IPv6 ones (no fragmentation on Ethernet).
	DatagramSize int

	// Catalog bounds the memory catalogs may take (zero fields: defaults).
	Catalog CatalogLimits
	// Handshake bounds the work handshakes may cost (zero fields:
	// defaults); see handshake.go.
	Handshake HandshakeLimits

	HeartbeatInterval time.Duration // told to servers; default fschunk.HeartbeatInterval
	EvictAfter        time.Duration // default fschunk.EvictAfter
	// StartGrace is how long after New a path missing from the pool is
	// answered 503 (servers are still registering) rather than 404; see
	// Source.Starting. Zero means EvictAfter, negative none.
	StartGrace time.Duration

	Fetch fetch.Config // the engine's tuning; Sender, Holders, Dropped and DatagramSize are set here
	// Cache, if set, holds small files whole, keyed by content hash.
	Cache *cache.Cache
	Now   func() time.Time
}

// Stats are the endpoint's counters.
type Stats struct {
	Received uint64 `json:"received"`
	// Reads counts the batched reads (system calls) that returned
	// datagrams: Received / Reads is what one system call carried.
	Reads              uint64 `json:"reads"`
	Sent               uint64 `json:"sent"`
	Authenticated      uint64 `json:"authenticated"` // transport datagrams whose tag verified (an AUTH that makes a session counts in Handshakes)
	Handshakes         uint64 `json:"handshakes"`    // sessions established
	Evictions          uint64 `json:"evictions"`
	DropGarbage        uint64 `json:"drop_garbage"` // did not parse
	DropVersion        uint64 `json:"drop_version"` // of another protocol version (also counted in DropGarbage)
	DropAuth           uint64 `json:"drop_auth"`    // bad MAC, cookie or tag
	DropReplay         uint64 `json:"drop_replay"`
	DropUnknownSession uint64 `json:"drop_unknown_session"`
	CatalogPages       uint64 `json:"catalog_pages"`
	// CatalogRefused counts catalog pages dropped unacknowledged because
	// they broke a bound: larger than the server's datagram size, or over
	// its or the gateway's catalog budget (CatalogLimits).
	CatalogRefused uint64 `json:"catalog_refused"`
	// DropInstances counts AUTHs refused because their source address
	// already has CatalogLimits.MaxInstancesPerSource servers.
	DropInstances uint64 `json:"drop_instances"`
	// DropUnlisted counts AUTHs of a valid handshake from a server key
	// the allowed list does not hold (or no longer holds).
	DropUnlisted uint64 `json:"drop_unlisted"`
	// DropIdentity counts AUTHs refused because they claim a server
	// instance that another key owns (a stolen identity).
	DropIdentity uint64 `json:"drop_identity"`
	// Revoked counts servers whose sessions ended because their key left
	// the allowed list.
	Revoked uint64 `json:"revoked"`
	// Handshake datagrams (HELLO, AUTH): queued for the handshake worker,
	// and handled by it (any outcome); dropped because the queue was full;
	// dropped under load by the per-source limit. Challenges counts the
	// CHALLENGEs sent.
	HandshakesQueued   uint64 `json:"handshakes_queued"`
	HandshakesDone     uint64 `json:"handshakes_done"`
	DropHandshakeQueue uint64 `json:"drop_handshake_queue"`
	DropHandshakeRate  uint64 `json:"drop_handshake_rate"`
	Challenges         uint64 `json:"challenges"`
	Goodbyes           uint64 `json:"goodbyes"`
	SendErrors         uint64 `json:"send_errors"`
	Blamed             uint64 `json:"blamed"` // verdicts against servers: content or hashes that failed verification
	// Panics counts datagrams whose handling panicked: recovered, logged,
	// and the server that sent the datagram (if it authenticated) evicted.
	Panics uint64 `json:"panics"`
}

type counters struct {
	received, reads, sent, authenticated, handshakes, evictions, garbage, authFail, replay, unknown, pages, goodbyes, sendErr, panics, version, catRefused, instances, blamed atomic.Uint64
	unlisted, identity, revoked                                                                                                                                               atomic.Uint64
	hsQueued, hsDone, hsQueueFull, hsRateLimited, challenges                                                                                                                  atomic.Uint64
}

// versionLogEvery is how often, at most, a datagram of another protocol
// version is logged (they are all counted).
const versionLogEvery = time.Minute

// readErrorPause separates socket reads after an unexpected error.
const readErrorPause = 10 * time.Millisecond

// Gateway is the UDP side of HttpGw.
type Gateway struct {
	cfg  Config
	log  *slog.Logger
	resp *auth.Responder
	conn transport.Conn // cfg.Conn, read and written in batches
	hs   handshakeQueues
	boot uint64
	// started is cfg.Now() at New; see Source.Starting.
	started time.Time
	pool    *pool.Pool
	eng     *fetch.Engine
	ctr     counters
	bufs    sync.Pool
	fills   singleflight.Group // whole-file fetches for the cache, by hash
	// authLog paces the warning about handshakes that fail
	// authentication: one line per authLogEvery, whatever the flood.
	authLog rate.Sometimes

	// sessions maps the receiver index of a datagram to its session. It
	// has its own lock: the receive path looks sessions up without g.mu.
	sessions auth.IndexTable[*session]

	mu      sync.RWMutex
	byNonce map[[fschunk.NonceSize]byte]*session
	// usedNonces remembers the nonce of every session established in the
	// last cookie lifetime, even after the session is dropped: a replayed
	// AUTH is then refused rather than re-creating a session whose keys
	// would seal from counter 0 again.
	usedNonces map[[fschunk.NonceSize]byte]time.Time
	peers      map[pool.ServerID]*peer

	catMu    sync.Mutex
	catTotal int64 // catalog bytes held and being assembled, all servers

	// versionLog rate-limits the warning about datagrams of another
	// protocol version.
	versionLog rate.Sometimes
	// instanceLog rate-limits the warning about AUTHs refused for
	// MaxInstancesPerSource; keyLog the warnings about unlisted keys and
	// stolen identities.
	instanceLog rate.Sometimes
	keyLog      rate.Sometimes

	// allowed is the current list of admitted server keys.
	allowed atomic.Pointer[Allowed]

	// rxPeer is the server whose datagram the receive loop is handling
	// (once authenticated): the one evicted if the handling panics.
	rxPeer *peer
}

type session struct {
	s     *auth.Session
	p     *peer
	nonce [fschunk.NonceSize]byte
	auth  []byte // the AUTH that made it: a retransmission is answered again
}

// peer is one server process (one Instance) and its sessions.
type peer struct {
	id pool.ServerID
	// key is the server's static public key: every session of the peer
	// proves it; an AUTH claiming the instance with another key is
	// refused.
	key  auth.PublicKey
	addr atomic.Pointer[netip.AddrPort]
	cur  atomic.Pointer[session]
	prev *session // guarded by Gateway.mu
	// next is a newer session (rekey, re-registration) that the server
	// has not used yet: the gateway keeps sending on cur until the server
	// shows it holds next (its WELCOME may be lost), then promotes it.
	next     *session // guarded by Gateway.mu
	datagram int

	// Touched only by the receive loop.
	asm     *assembly // catalog being assembled
	heardAt time.Time // last refresh of the pool's liveness

	cat catalogUse // guarded by Gateway.catMu
}

// New makes a gateway endpoint; Run starts it.
func New(cfg Config) (*Gateway, error) {
	if cfg.Conn == nil || cfg.Key == nil || cfg.Static.IsZero() {
		return nil, errors.New("gateway: Conn, Key and Static are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = fschunk.HeartbeatInterval
	}
	if cfg.EvictAfter <= 0 {
		cfg.EvictAfter = fschunk.EvictAfter
	}
	if cfg.StartGrace == 0 {
		cfg.StartGrace = cfg.EvictAfter
	}
	if cfg.DatagramSize != 0 && (cfg.DatagramSize < fschunk.MinDatagramSize || cfg.DatagramSize > fschunk.MaxDatagramSize) {
		return nil, fmt.Errorf("gateway: datagram size %d outside [%d, %d]", cfg.DatagramSize, fschunk.MinDatagramSize, fschunk.MaxDatagramSize)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Catalog = cfg.Catalog.withDefaults()
	cfg.Handshake = cfg.Handshake.withDefaults()
	var b [8]byte
	rand.Read(b[:])
	resp, err := auth.NewResponder(cfg.Key, statics(cfg.Static, cfg.NextStatic), cfg.Limits, nil)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g := &Gateway{
		cfg:         cfg,
		log:         cfg.Logger,
		resp:        resp,
		hs:          newHandshakeQueues(cfg.Handshake),
		boot:        binary.BigEndian.Uint64(b[:]),
		started:     cfg.Now(),
		pool:        pool.New(),
		byNonce:     map[[fschunk.NonceSize]byte]*session{},
		usedNonces:  map[[fschunk.NonceSize]byte]time.Time{},
		peers:       map[pool.ServerID]*peer{},
		versionLog:  rate.Sometimes{First: 1, Interval: versionLogEvery},
		instanceLog: rate.Sometimes{First: 1, Interval: versionLogEvery},
		keyLog:      rate.Sometimes{Interval: authLogEvery},
		authLog:     rate.Sometimes{Interval: authLogEvery},
	}
	allowed := cfg.Allowed.clone()
	g.allowed.Store(&allowed)
	g.bufs.New = func() any { b := make([]byte, 0, fschunk.MaxDatagramSize); return &b }
	fc := cfg.Fetch
	fc.Sender = g
	fc.Holders = g.pool.Holders
	fc.Dropped = func(id pool.ServerID, k pool.Key) { g.pool.DropVersion(id, k, g.cfg.Now()) }
	fc.Blamed = g.blamed
	fc.DatagramSize = g.datagramSize
	if uc, ok := cfg.Conn.(*net.UDPConn); ok && fc.MaxInflight == 0 {
		// Linux reports twice the buffer asked for (the rest is its
		// bookkeeping); half of what it reports is what data may use.
		if rcv, _, err := transport.Buffers(uc); err == nil {
			fc.MaxInflight = rcv / 2
		}
	}
	if fc.Logger == nil {
		fc.Logger = cfg.Logger
	}
	if fc.Now == nil {
		fc.Now = cfg.Now
	}
	g.eng = fetch.New(fc)
	// GRO: a burst from a server's GSO write is read as one message.
	if g.conn, err = transport.NewConn(cfg.Conn, transport.Options{GRO: true}); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.log.Debug("udp socket", "batch", g.conn.BatchSize(), "gro", g.conn.GRO(), "gso", g.conn.GSO())
	return g, nil
}

// Cache returns the small-file cache, nil if there is none.
func (g *Gateway) Cache() *cache.Cache { return g.cfg.Cache }

// Pool is the gateway's view of its servers and files.
func (g *Gateway) Pool() *pool.Pool { return g.pool }

// Engine is the download engine.
func (g *Gateway) Engine() *fetch.Engine { return g.eng }

// Stats returns the endpoint's counters.
func (g *Gateway) Stats() Stats {
	c := &g.ctr
	return Stats{Received: c.received.Load(), Reads: c.reads.Load(), Sent: c.sent.Load(), Authenticated: c.authenticated.Load(), Handshakes: c.handshakes.Load(), Evictions: c.evictions.Load(),
		DropGarbage: c.garbage.Load(), DropVersion: c.version.Load(), DropAuth: c.authFail.Load(), DropReplay: c.replay.Load(), DropUnknownSession: c.unknown.Load(),
		CatalogPages: c.pages.Load(), CatalogRefused: c.catRefused.Load(), DropInstances: c.instances.Load(), DropUnlisted: c.unlisted.Load(), DropIdentity: c.identity.Load(), Revoked: c.revoked.Load(),
		HandshakesQueued: c.hsQueued.Load(), HandshakesDone: c.hsDone.Load(), DropHandshakeQueue: c.hsQueueFull.Load(), DropHandshakeRate: c.hsRateLimited.Load(), Challenges: c.challenges.Load(), Goodbyes: c.goodbyes.Load(), SendErrors: c.sendErr.Load(), Panics: c.panics.Load(), Blamed: c.blamed.Load()}
}

// Run serves until ctx is done, then says GOODBYE to every server (so they
// re-register at once with whichever gateway comes next) and returns.
// The caller closes the socket after Run returns.
func (g *Gateway) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); g.maintain(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); g.handshakeWorker(ctx) }()
	stop := context.AfterFunc(ctx, func() { g.cfg.Conn.SetReadDeadline(time.Now()) })
	defer stop()
	msgs := transport.NewMessages(g.conn.BatchSize(), transport.GROBufferSize)
	var err error
	for {
		k, rerr := g.conn.ReadBatch(msgs)
		if rerr != nil {
			if ctx.Err() != nil {
				break
			}
			var ne net.Error
			if errors.As(rerr, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(rerr, net.ErrClosed) {
				err = rerr
				break
			}
			g.log.Warn("udp read", "err", rerr)
			// A persistent error must not spin a core and flood the log.
			select {
			case <-ctx.Done():
			case <-time.After(readErrorPause):
			}
			continue
		}
		g.ctr.reads.Add(1)
		now := g.cfg.Now() // one clock read for the whole batch
		for i := range msgs[:k] {
			g.handleMessage(&msgs[i], now)
		}
	}
	wg.Wait()
	g.goodbyeAll()
	return err
}

// handleMessage handles what one message of a batch holds: with GRO,
// several datagrams of one sender, each sealed on its own.
func (g *Gateway) handleMessage(m *transport.Message, now time.Time) {
	if m.N == 0 || m.Seg <= 0 || m.N > fschunk.MaxDatagramSize && m.Seg == m.N {
		g.ctr.received.Add(1)
		g.ctr.garbage.Add(1)
		return
	}
	for off := 0; off < m.N; off += m.Seg {
		g.handleSafe(m.Buf[off:min(off+m.Seg, m.N)], m.Addr, now)
		g.ctr.received.Add(1) // after: Received counts datagrams handled
	}
}

// handleSafe handles one datagram and survives a panic in any handler: a
// bug triggered by one server's data must not stop the only goroutine
// that reads the socket (every server would then be lost). The panic is
// logged with its stack and counted, and the server whose authenticated
// datagram caused it is evicted (it re-registers, and its catalog is
// fetched afresh). Locks taken by handlers are released by defer, so
// nothing stays held.
func (g *Gateway) handleSafe(pkt []byte, from netip.AddrPort, now time.Time) {
	g.rxPeer = nil
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		g.ctr.panics.Add(1)
		attrs := []any{"addr", from.String(), "panic", p, "stack", string(debug.Stack())}
		if len(pkt) >= 2 {
			attrs = append(attrs, "type", fschunk.Type(pkt[1]).String())
		}
		if g.rxPeer != nil {
			attrs = append(attrs, "server", g.rxPeer.id.String())
		}
		g.log.Error("datagram handler panicked; dropping the server that sent it", attrs...)
		if g.rxPeer != nil {
			g.evict(g.rxPeer.id, "handler panic")
		}
		g.rxPeer = nil
	}()
	g.handle(pkt, from, now)
}

func (g *Gateway) handle(pkt []byte, from netip.AddrPort, now time.Time) {
	t, err := fschunk.ParsePrefix(pkt)
	if err != nil {
		g.ctr.garbage.Add(1)
		if errors.Is(err, fschunk.ErrVersion) {
			g.ctr.version.Add(1)
			g.versionLog.Do(func() {
				g.log.Warn("datagram of another FS Chunk Protocol version dropped: the server and the gateway must run the same protocol version",
					"addr", from.String(), "peer_version", pkt[0], "our_version", fschunk.Version)
			})
		}
		return
	}
	switch t {
	case fschunk.TypeHello, fschunk.TypeAuth:
		g.enqueueHandshake(t, pkt, from, now) // to the handshake worker
	case fschunk.TypeChallenge:
		g.ctr.garbage.Add(1) // only servers receive challenges (a reflection)
	default:
		g.handleTransport(pkt, from, now)
	}
}

func (g *Gateway) handleAuth(pkt []byte, from netip.AddrPort) {
	now := g.cfg.Now()
	if s := g.repeatOf(pkt); s != nil {
		// A retransmitted AUTH (its WELCOME was lost): the same bytes as
		// one accepted, so only its MAC and cookie (from this address,
		// still fresh) are checked, not the Diffie-Hellmans again.
		if err := g.resp.CheckAuth(pkt, from); err != nil {
			g.dropHandshake(err, from)
			return
		}
		g.sendWelcome(s, from, now)
		return
	}
	acc, err := g.resp.HandleAuth(pkt, from, g.allowKey)
	if err != nil {
		g.dropHandshake(err, from)
		return
	}
	s, err := g.admit(acc, pkt, from, now)
	if err != nil {
		switch {
		case errors.Is(err, auth.ErrReplay):
			g.ctr.replay.Add(1) // a replay of an AUTH whose session ended
		case errors.Is(err, errTooManyInstances):
			g.ctr.instances.Add(1)
			g.instanceLog.Do(func() {
				g.log.Warn("server refused: too many server instances from one source address", "addr", from.String(), "max", g.cfg.Catalog.MaxInstancesPerSource)
			})
		case errors.Is(err, errIdentity):
			g.ctr.identity.Add(1)
			g.keyLog.Do(func() {
				g.log.Warn("server refused: it claims a server instance that another key owns (a stolen or copied identity)", "key", acc.Peer.Short(), "server", pool.ServerID(acc.Instance).String(), "addr", from.String())
			})
		default:
			g.log.Error("new session", "err", err)
		}
		return
	}
	p := s.p
	g.ctr.handshakes.Add(1)
	rejoin := g.pool.Has(p.id)
	g.pool.Join(p.id, from.String(), now)
	if !rejoin {
		g.pool.SetKey(p.id, p.key.Short())
	}
	// A rekey (every few minutes per server) is routine: debug. A
	// server joining is news.
	lv := slog.LevelInfo
	if rejoin {
		lv = slog.LevelDebug
	}
	g.log.Log(context.Background(), lv, "server session", "server", p.id.String(), "key", p.key.Short(), "addr", from.String(), "session", s.s.LocalIndex, "rekey", rejoin)
	g.sendWelcome(s, from, now)
}

// sendWelcome sends the WELCOME of session s (again, for a retransmitted
// AUTH: the same Noise message, the session's next counter).
func (g *Gateway) sendWelcome(s *session, from netip.AddrPort, now time.Time) {
	out := g.getBuf()
	defer g.putBuf(out)
	w := fschunk.Welcome{GatewayIndex: s.s.LocalIndex, GatewayBoot: g.boot, HeartbeatInterval: g.cfg.HeartbeatInterval, MaxDatagram: uint32(s.p.datagram)}
	pkt, err := auth.Welcome(s.s, w, (*out)[:0], now)
	if err != nil {
		g.log.Error("seal welcome", "err", err)
		return
	}
	g.write(pkt, from)
}

// repeatOf returns the session an AUTH with exactly these bytes made, if
// it is still there.
func (g *Gateway) repeatOf(pkt []byte) *session {
	var a fschunk.Auth
	if a.Decode(pkt) != nil {
		return nil
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	if s := g.byNonce[a.Nonce]; s != nil && bytes.Equal(s.auth, pkt) {
		return s
	}
	return nil
}

// admit makes the session of an accepted AUTH; auth.ErrReplay if its
// nonce made a session before (a replay, or a second AUTH for one
// HELLO), errIdentity if it claims an instance another key owns.
func (g *Gateway) admit(acc *auth.Accepted, pkt []byte, from netip.AddrPort, now time.Time) (s *session, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.byNonce[acc.Nonce] != nil {
		return nil, auth.ErrReplay
	}
	if _, used := g.usedNonces[acc.Nonce]; used {
		return nil, auth.ErrReplay
	}
	id := pool.ServerID(acc.Instance)
	p := g.peers[id]
	if p != nil && p.key != acc.Peer {
		return nil, errIdentity
	}
	// The index is reserved first: the session's keys are bound to it.
	idx := g.sessions.NewIndex(nil)
	defer func() {
		if s == nil {
			g.sessions.Delete(idx, nil)
		}
	}()
	as, err := acc.NewSession(idx, now)
	if err != nil {
		return nil, err
	}
	if p == nil {
		if g.instancesLocked(from) >= g.cfg.Catalog.MaxInstancesPerSource {
			return nil, errTooManyInstances
		}
		p = &peer{id: id, key: acc.Peer, datagram: g.pickDatagram(from)}
		g.peers[id] = p
	}
	s = &session{s: as, p: p, nonce: acc.Nonce, auth: bytes.Clone(pkt)}
	if p.cur.Load() == nil {
		p.cur.Store(s)
		p.addr.Store(&from)
	} else {
		if p.next != nil {
			g.dropSessionLocked(p.next)
		}
		p.next = s
	}
	g.sessions.Replace(idx, nil, s)
	g.byNonce[acc.Nonce] = s
	g.usedNonces[acc.Nonce] = now
	return s, nil
}

func (g *Gateway) pickDatagram(from netip.AddrPort) int {
	if g.cfg.DatagramSize != 0 {
		return g.cfg.DatagramSize
	}
	switch a := from.Addr(); {
	case a.IsLoopback():
		return fschunk.LoopbackDatagramSize
	case a.Is4() || a.Is4In6():
		return fschunk.IPv4DatagramSize
	}
	return fschunk.DefaultDatagramSize
}

func (g *Gateway) datagramSize(id pool.ServerID) int {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if p := g.peers[id]; p != nil {
		return p.datagram
	}
	return fschunk.DefaultDatagramSize
}

func (g *Gateway) handleTransport(pkt []byte, from netip.AddrPort, now time.Time) {
	h, err := fschunk.ParseHeader(pkt)
	if err != nil {
		g.ctr.garbage.Add(1)
		return
	}
	s, _ := g.sessions.Lookup(h.Receiver)
	if s == nil {
		g.ctr.unknown.Add(1)
		return
	}
	_, body, err := s.s.Open(pkt, now)
	switch {
	case err == nil:
	case errors.Is(err, auth.ErrReplay):
		g.ctr.replay.Add(1)
		return
	case errors.Is(err, auth.ErrForged), errors.Is(err, auth.ErrExpired):
		g.ctr.authFail.Add(1)
		return
	default:
		g.ctr.garbage.Add(1)
		return
	}
	g.ctr.authenticated.Add(1)
	p := s.p
	g.rxPeer = p
	if s != p.cur.Load() {
		g.promote(s)
	}
	moved := false
	if a := p.addr.Load(); a == nil || *a != from {
		to := from // a copy, so that from stays on the stack
		p.addr.Store(&to)
		moved = true
	}
	// Liveness is coarse (eviction after seconds): refresh the pool, which
	// takes its lock and formats the address, at most every heardEvery,
	// not for every DATA datagram.
	if moved || now.Sub(p.heardAt) >= heardEvery {
		p.heardAt = now
		g.pool.Heard(p.id, from.String(), now)
	}
	switch h.Type {
	case fschunk.TypeData:
		var d fschunk.Data
		// Decoded directly, not through decode's interface, so that d
		// stays on the stack: this is the per-datagram path.
		if d.Decode(body) != nil {
			g.ctr.garbage.Add(1)
			return
		}
		g.eng.HandleDataAt(p.id, &d, now)
	case fschunk.TypeError:
		var e fschunk.Error
		if !g.decode(&e, body) {
			return
		}
		g.eng.HandleError(p.id, &e)
	case fschunk.TypeHashes:
		var hs fschunk.Hashes
		if !g.decode(&hs, body) {
			return
		}
		g.eng.HandleHashes(p.id, &hs)
	case fschunk.TypeHeartbeat:
		var hb fschunk.Heartbeat
		if !g.decode(&hb, body) {
			return
		}
		g.pool.SetLoad(p.id, pool.Load{ReadsActive: hb.ReadsActive, TxRate: hb.TxRate})
		// The allowed list's name for the server's key wins over the
		// name the server gives itself: a key holder cannot pass for
		// another listed server on the status page or in metrics.
		name := hb.Name
		if listed := g.listedName(p.key); listed != "" {
			name = listed
		}
		if name != "" && g.pool.SetName(p.id, name) {
			// The first HEARTBEAT names a server: from here on logs,
			// metrics and the status page use the name.
			g.log.Info("server joined", "name", name, "server", p.id.String(), "key", p.key.Short(), "addr", p.addr.Load().String(), "files", hb.Files)
		}
		ack := fschunk.HeartbeatAck{Seq: hb.Seq, CatalogGen: g.pool.CatalogGen(p.id)}
		g.sendTo(p, fschunk.TypeHeartbeatAck, ack.Append)
	case fschunk.TypeGoodbye:
		var gb fschunk.Goodbye
		if !g.decode(&gb, body) {
			return
		}
		g.ctr.goodbyes.Add(1)
		if gb.Reason == fschunk.GoodbyeRekeyed {
			return // the newer session carries on
		}
		g.evict(p.id, "goodbye")
	case fschunk.TypeCatalogPage:
		g.handlePage(p, len(pkt), body, now)
	case fschunk.TypeCatalogDelta:
		g.handleDelta(p, len(pkt), body, now)
	default:
		// Authenticated but not for us: say so, it is cheap and bounded.
		e := fschunk.Error{Code: fschunk.CodeUnsupported, Message: "unsupported message type " + h.Type.String()}
		g.sendTo(p, fschunk.TypeError, e.Append)
	}
}

// decode parses a message body; a body that does not parse is counted as
// garbage (it authenticated, so a buggy or newer peer, not an attacker).
func (g *Gateway) decode(m interface{ Decode([]byte) error }, body []byte) bool {
	if m.Decode(body) != nil {
		g.ctr.garbage.Add(1)
		return false
	}
	return true
}

// SendRead implements fetch.Sender.
func (g *Gateway) SendRead(id pool.ServerID, r *fschunk.Read) error {
	g.mu.RLock()
	p := g.peers[id]
	g.mu.RUnlock()
	if p == nil {
		return fmt.Errorf("server %016x: not in the pool", uint64(id))
	}
	return g.sendTo(p, fschunk.TypeRead, r.Append)
}

// SendHashRequest implements fetch.Sender.
func (g *Gateway) SendHashRequest(id pool.ServerID, r *fschunk.HashRequest) error {
	g.mu.RLock()
	p := g.peers[id]
	g.mu.RUnlock()
	if p == nil {
		return fmt.Errorf("server %016x: not in the pool", uint64(id))
	}
	return g.sendTo(p, fschunk.TypeHashRequest, r.Append)
}

// MaxBlames is how many verdicts a server may collect (bytes or hashes
// that did not match a content hash) before the gateway drops it: one bad
// leaf is a disk error or a file rewritten under the server; a few are a
// broken or hostile server.
const MaxBlames = 3

// blamed is the engine's report that server id sent bytes or hashes of
// version k that do not match it. The engine has ejected it from that
// version already; the third verdict evicts it.
func (g *Gateway) blamed(id pool.ServerID, k pool.Key, reason string) {
	n := g.pool.Blame(id)
	g.ctr.blamed.Add(1)
	addr := ""
	if p := g.peer(id); p != nil {
		if a := p.addr.Load(); a != nil {
			addr = a.String()
		}
	}
	g.log.Warn("server failed verification: ejected from the version", "server", id.String(), "addr", addr,
		"hash", fmt.Sprintf("%x", k.Hash[:8]), "size", k.Size, "reason", reason, "verdicts", n)
	if n >= MaxBlames {
		g.evict(id, fmt.Sprintf("failed verification %d times", n))
	}
}

func (g *Gateway) peer(id pool.ServerID) *peer {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.peers[id]
}

// sendTo seals a message on the server's current session and sends it to
// the address the server was last heard from.
func (g *Gateway) sendTo(p *peer, t fschunk.Type, body func([]byte) []byte) error {
	s := p.cur.Load()
	addr := p.addr.Load()
	if s == nil || addr == nil {
		return errors.New("no session")
	}
	buf := g.getBuf()
	defer g.putBuf(buf)
	b := fschunk.AppendHeader((*buf)[:0], fschunk.Header{Type: t})
	b = body(b)
	pkt, err := s.s.Seal(b, g.cfg.Now())
	if err != nil {
		return fmt.Errorf("seal %v: %w", t, err)
	}
	return g.write(pkt, *addr)
}

func (g *Gateway) write(pkt []byte, to netip.AddrPort) error {
	var err error
	if uc, ok := g.cfg.Conn.(*net.UDPConn); ok {
		_, err = uc.WriteToUDPAddrPort(pkt, to) // no allocation
	} else {
		_, err = g.cfg.Conn.WriteTo(pkt, net.UDPAddrFromAddrPort(to))
	}
	if err != nil {
		g.ctr.sendErr.Add(1)
		return fmt.Errorf("send to %v: %w", to, err)
	}
	g.ctr.sent.Add(1)
	return nil
}

func (g *Gateway) getBuf() *[]byte  { return g.bufs.Get().(*[]byte) }
func (g *Gateway) putBuf(b *[]byte) { g.bufs.Put(b) }

// maintain evicts silent servers and expired sessions.
func (g *Gateway) maintain(ctx context.Context) {
	t := time.NewTicker(g.cfg.EvictAfter / 12)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := g.cfg.Now()
		for _, id := range g.pool.Expired(now.Add(-g.cfg.EvictAfter)) {
			g.evict(id, "silent")
		}
		g.mu.Lock()
		for _, p := range g.peers {
			if p.prev != nil && (p.prev.s.Expired(now) || now.Sub(p.cur.Load().s.Created) > g.cfg.EvictAfter) {
				g.dropSessionLocked(p.prev)
				p.prev = nil
			}
			if cur := p.cur.Load(); cur != nil && cur.s.Expired(now) {
				g.dropSessionLocked(cur)
			}
			if p.next != nil && now.Sub(p.next.s.Created) > fschunk.CookieLifetime {
				// Never used by the server: its WELCOME never arrived and
				// it has moved on to another handshake.
				g.dropSessionLocked(p.next)
				p.next = nil
			}
		}
		for n, t := range g.usedNonces {
			if now.Sub(t) > fschunk.CookieLifetime+2*time.Second {
				delete(g.usedNonces, n)
			}
		}
		g.mu.Unlock()
		g.pool.Prune(now)
	}
}

// promote makes s its peer's current session once the server has used
// it; the session it replaces stays, for receiving, as prev.
func (g *Gateway) promote(s *session) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := s.p
	if p.next != s {
		return // a datagram on prev: nothing to do
	}
	if p.prev != nil {
		g.dropSessionLocked(p.prev)
	}
	p.prev, p.next = p.cur.Load(), nil
	p.cur.Store(s)
}

func (g *Gateway) dropSessionLocked(s *session) {
	g.sessions.Delete(s.s.LocalIndex, s)
	if g.byNonce[s.nonce] == s {
		delete(g.byNonce, s.nonce)
	}
}

// evict removes a server: its sessions, its files, its outstanding reads.
func (g *Gateway) evict(id pool.ServerID, why string) {
	name := g.pool.Name(id) // before Remove forgets it
	var key string
	g.mu.Lock()
	p := g.peers[id]
	if p != nil {
		key = p.key.Short()
		if s := p.cur.Load(); s != nil {
			g.dropSessionLocked(s)
		}
		if p.prev != nil {
			g.dropSessionLocked(p.prev)
		}
		if p.next != nil {
			g.dropSessionLocked(p.next)
		}
		delete(g.peers, id)
	}
	g.mu.Unlock()
	if p != nil {
		g.releaseCatalog(p)
	}
	if g.pool.Remove(id, g.cfg.Now()) {
		g.ctr.evictions.Add(1)
		g.log.Info("server evicted", "name", name, "server", id.String(), "key", key, "reason", why)
	}
	g.eng.ServerGone(id)
}

func (g *Gateway) goodbyeAll() {
	g.mu.RLock()
	peers := make([]*peer, 0, len(g.peers))
	for _, p := range g.peers {
		peers = append(peers, p)
	}
	g.mu.RUnlock()
	bye := fschunk.Goodbye{Reason: fschunk.GoodbyeShutdown}
	for _, p := range peers {
		g.sendTo(p, fschunk.TypeGoodbye, bye.Append)
	}
}
