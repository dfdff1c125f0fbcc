package fileserver

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/fschunk"
)

// session is one authenticated session with a gateway.
type session struct {
	gw      *gateway
	auth    *auth.Session
	welcome fschunk.Welcome
	maxDG   int // largest datagram sent on it: min(WELCOME.MaxDatagram, Config.MaxDatagram)
}

// hsPhase is where a gateway's handshake stands.
type hsPhase uint8

const (
	hsIdle  hsPhase = iota // no handshake in progress
	hsWait                 // a handshake starts at handshake.next
	hsHello                // HELLO sent, waiting for a CHALLENGE that verifies
	hsAuth                 // AUTH sent, waiting for WELCOME
)

// hsReason is why a handshake was started; it decides how its completion
// is logged and counted.
type hsReason uint8

const (
	reasonJoin    hsReason = iota // first registration with this gateway
	reasonRekey                   // the current session is due for a rekey
	reasonLost                    // no HEARTBEAT_ACK: the gateway forgot us
	reasonGoodbye                 // the gateway said GOODBYE
	reasonExpired                 // the current session expired before a rekey completed
)

func (r hsReason) String() string {
	switch r {
	case reasonJoin:
		return "join"
	case reasonRekey:
		return "rekey"
	case reasonLost:
		return "heartbeat ack timeout"
	case reasonGoodbye:
		return "goodbye"
	case reasonExpired:
		return "session expired"
	}
	return "unknown"
}

type handshake struct {
	phase   hsPhase
	reason  hsReason
	index   uint32        // receiver index registered for the handshake in progress
	backoff time.Duration // next retransmission interval before jitter
	next    time.Time     // next (re)transmission or start
	authAt  time.Time     // when the CHALLENGE verified and the first AUTH went out
}

// schedule sets the next retransmission: exponential backoff from
// fschunk.HandshakeRetryMin to fschunk.HandshakeRetryMax, ±20% jitter.
func (h *handshake) schedule(now time.Time) {
	if h.backoff == 0 {
		h.backoff = fschunk.HandshakeRetryMin
	}
	f := 1 - handshakeJitter + 2*handshakeJitter*rand.Float64()
	h.next = now.Add(time.Duration(float64(h.backoff) * f))
	h.backoff = min(2*h.backoff, fschunk.HandshakeRetryMax)
}

// evKind is the kind of a gwEvent.
type evKind uint8

const (
	evChallenge evKind = iota + 1
	evWelcome
	evHeartbeatAck
	evCatalogAck
	evGoodbye
)

// gwEvent is a datagram for a gateway goroutine, already authenticated
// (transport) or demultiplexed by index (handshake, verified by the
// goroutine that owns the auth.Initiator).
type gwEvent struct {
	kind   evKind
	sess   *session // transport: the session it arrived on
	index  uint32   // handshake: the receiver index it carried
	pkt    []byte   // handshake: a copy of the datagram
	hbAck  fschunk.HeartbeatAck
	catAck fschunk.CatalogAck
	bye    fschunk.Goodbye
}

// gateway is the server's relationship with one configured gateway. Its
// state belongs to its own goroutine (run); other goroutines only read the
// current session and address, and post events.
type gateway struct {
	s      *Server
	name   string
	log    *slog.Logger
	init   *auth.Initiator
	events chan gwEvent
	hsEv   chan gwEvent  // CHALLENGE and WELCOME: see handshakeQueueSize
	kick   chan struct{} // the catalog changed
	pace   *pacer        // spaces DATA at the gateway's READ.Pace

	cur  atomic.Pointer[session] // nil until registered, and after GOODBYE
	addr atomic.Pointer[peer]    // the gateway's address as last resolved

	// Owned by run.
	prev    *session // the session before a rekey: receives until it expires, sends nothing
	joined  bool
	boot    uint64 // GatewayBoot of the latest WELCOME
	hs      handshake
	hbSeq   uint32
	nextHB  time.Time
	lastAck time.Time
	txBytes uint64 // Server bytes sent at the previous heartbeat
	txAt    time.Time
	gwGen   uint64 // catalog generation the gateway holds for us
	gwKnown bool   // gwGen is known (from a HEARTBEAT_ACK or a completed sync)
	// fence is the last heartbeat sent before the latest sync completed:
	// acknowledgements of it or earlier ones may predate the sync and
	// understate what the gateway holds.
	fence uint32
	sync  *catalogSync
	buf   []byte
	quiet silence // handshakes unanswered, for the operator
	// badChallenge paces the warning about CHALLENGEs that fail
	// authentication (on-path forgeries could repeat it).
	badChallenge rate.Sometimes
}

// silence tracks a gateway that does not answer our handshakes: the
// server warns after silenceFirstWarn, then at doubling intervals up to
// silenceMaxWarn, and says so once the gateway answers.
type silence struct {
	since    time.Time // first unanswered HELLO; zero while answered
	hellos   int       // HELLOs sent since
	nextWarn time.Time
	every    time.Duration
	warned   bool
}

const (
	silenceFirstWarn = 3 * time.Second
	silenceMaxWarn   = 5 * time.Minute
)

// helloSent counts a HELLO and warns when due.
func (g *gateway) helloSent(addr string, now time.Time) {
	q := &g.quiet
	if q.since.IsZero() {
		*q = silence{since: now, nextWarn: now.Add(silenceFirstWarn), every: silenceFirstWarn}
	}
	q.hellos++
	if now.Before(q.nextWarn) {
		return
	}
	// A gateway with another key drops our HELLO without a word (it
	// cannot tell us from an attacker), so the two causes look the same
	// from here; the gateway's log names the failing address.
	g.log.Warn("fileserver: no gateway answers: check that httpgw runs at this address and its UDP port is reachable, that both use the same key file, that -gateway-public-key is the gateway's (httpgw pubkey < its private key), and that the gateway lists this server's public key in its allowed servers (the gateway logs which check failed)",
		"addr", addr, "for", now.Sub(q.since).Round(time.Second), "hellos", q.hellos, "next_warning_in", min(2*q.every, silenceMaxWarn))
	q.warned = true
	q.every = min(2*q.every, silenceMaxWarn)
	q.nextWarn = now.Add(q.every)
}

// answered ends a silence; it is logged if it was warned about.
func (g *gateway) answered(now time.Time) {
	if g.quiet.warned {
		g.log.Info("fileserver: gateway answers again", "after", now.Sub(g.quiet.since).Round(time.Second))
	}
	g.quiet = silence{}
}

func newGateway(s *Server, name string) (*gateway, error) {
	in, err := auth.NewInitiator(s.cfg.Key, s.cfg.Static, s.cfg.GatewayKeys, s.instance, s.cfg.Limits)
	if err != nil {
		return nil, err
	}
	return &gateway{
		s:      s,
		name:   name,
		log:    s.log.With("gateway", name),
		init:   in,
		events: make(chan gwEvent, eventQueueSize),
		hsEv:   make(chan gwEvent, handshakeQueueSize),
		kick:   make(chan struct{}, 1),
		pace:   newPacer(),
		buf:    make([]byte, 0, s.maxDG),

		badChallenge: rate.Sometimes{Interval: 10 * time.Second},
	}, nil
}

// post hands an event to the gateway goroutine without ever blocking the
// receive loop.
func (g *gateway) post(ev gwEvent) {
	select {
	case g.events <- ev:
	default:
		g.s.st.queueFull.Add(1)
	}
}

// postHandshake hands a CHALLENGE or WELCOME to the gateway goroutine,
// on its own bounded queue, without ever blocking the receive loop.
func (g *gateway) postHandshake(ev gwEvent) {
	select {
	case g.hsEv <- ev:
	default:
		g.s.st.queueFull.Add(1)
	}
}

// poke tells the gateway goroutine that the catalog changed.
func (g *gateway) poke() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

// setAddr records where everything for this gateway goes: the address its
// name resolved to for the latest HELLO. It is never taken from a
// datagram's source: an on-path attacker rewriting the source of a READ
// would otherwise aim its DATA (a thousand times larger) at a victim.
func (g *gateway) setAddr(p peer) { g.addr.Store(&p) }

// run drives handshakes, heartbeats and catalog syncs for one gateway
// until ctx is done. It sleeps until the earliest of its deadlines or an
// event.
func (g *gateway) run(ctx context.Context) {
	s := g.s
	g.hs = handshake{phase: hsWait, reason: reasonJoin, next: s.now()}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		now := s.now()
		g.tick(ctx, now)
		timer.Reset(max(g.nextDeadline(now).Sub(s.now()), minTimerWait))
		select {
		case <-ctx.Done():
		case ev := <-g.events:
			g.handleEvent(ev, s.now())
		case ev := <-g.hsEv:
			g.handleEvent(ev, s.now())
		case <-g.kick:
			g.maybeSync(s.now())
		case <-timer.C:
		}
	}
	g.releasePending()
}

// tick does whatever is due at now.
func (g *gateway) tick(ctx context.Context, now time.Time) {
	s := g.s
	switch g.hs.phase {
	case hsWait, hsHello:
		if !now.Before(g.hs.next) {
			g.sendHello(ctx)
		}
	case hsAuth:
		if now.Sub(g.hs.authAt) >= fschunk.CookieLifetime {
			// The cookie is too old to be accepted any more.
			g.log.Debug("fileserver: no WELCOME within the cookie lifetime, starting over")
			g.hs.backoff = 0
			g.sendHello(ctx)
		} else if !now.Before(g.hs.next) {
			_ = s.writeTo(g.init.PendingAuth(), g.addr.Load())
			g.hs.schedule(now)
		}
	}
	if g.prev != nil && g.prev.auth.Expired(now) {
		s.reg.remove(g.prev)
		g.prev = nil
	}
	cur := g.cur.Load()
	if cur == nil {
		return
	}
	if cur.auth.Expired(now) {
		g.log.Warn("fileserver: session expired before a new one was established", "session", cur.auth.LocalIndex)
		g.cur.Store(nil)
		s.reg.remove(cur)
		if g.hs.phase == hsIdle {
			g.startHandshake(ctx, reasonExpired)
		} else {
			g.hs.reason = reasonExpired
		}
		return
	}
	if g.hs.phase == hsIdle {
		switch {
		case cur.auth.NeedsRekey(now):
			g.startHandshake(ctx, reasonRekey)
		case now.Sub(g.lastAck) >= ackTimeout(cur.welcome.HeartbeatInterval):
			g.log.Info("fileserver: no heartbeat acknowledgement, registering again", "session", cur.auth.LocalIndex)
			g.startHandshake(ctx, reasonLost)
		}
	}
	if !now.Before(g.nextHB) {
		g.sendHeartbeat(cur, now)
	}
	g.syncStep(cur, now)
}

// nextDeadline is the earliest time tick has something to do.
func (g *gateway) nextDeadline(now time.Time) time.Time {
	lim := g.s.cfg.Limits
	next := now.Add(time.Hour)
	earlier := func(t time.Time) {
		if t.Before(next) {
			next = t
		}
	}
	switch g.hs.phase {
	case hsWait, hsHello:
		earlier(g.hs.next)
	case hsAuth:
		earlier(g.hs.next)
		earlier(g.hs.authAt.Add(fschunk.CookieLifetime))
	}
	if g.prev != nil {
		earlier(g.prev.auth.Created.Add(lim.RejectAfterTime))
	}
	if cur := g.cur.Load(); cur != nil {
		earlier(g.nextHB)
		earlier(cur.auth.Created.Add(lim.RejectAfterTime))
		if g.hs.phase == hsIdle {
			earlier(cur.auth.Created.Add(lim.RekeyAfterTime))
			earlier(g.lastAck.Add(ackTimeout(cur.welcome.HeartbeatInterval)))
		}
		if g.sync != nil {
			earlier(g.sync.deadline())
		}
	}
	return next
}

func (g *gateway) handleEvent(ev gwEvent, now time.Time) {
	switch ev.kind {
	case evChallenge:
		g.onChallenge(ev, now)
	case evWelcome:
		g.onWelcome(ev, now)
	case evHeartbeatAck:
		g.onHeartbeatAck(ev, now)
	case evCatalogAck:
		g.onCatalogAck(ev, now)
	case evGoodbye:
		g.onGoodbye(ev, now)
	}
}

// ---------------------------------------------------------------- handshake

// startHandshake begins a handshake now. The current session, if any,
// keeps serving until the new one is up.
func (g *gateway) startHandshake(ctx context.Context, reason hsReason) {
	g.hs = handshake{phase: hsWait, reason: reason}
	g.sendHello(ctx)
}

// releasePending forgets the receiver index of the handshake in progress,
// so that late answers to it are dropped as unknown.
func (g *gateway) releasePending() {
	if g.hs.phase == hsHello || g.hs.phase == hsAuth {
		g.s.reg.releasePending(g.hs.index, g)
	}
}

// sendHello sends a fresh HELLO (new index, new nonce) to the gateway's
// name resolved anew, so that a DNS change is followed at the next attempt.
func (g *gateway) sendHello(ctx context.Context) {
	s := g.s
	g.releasePending()
	dst, err := resolve(ctx, g.name)
	now := s.now()
	g.hs.phase = hsHello
	if err != nil {
		if ctx.Err() == nil {
			g.log.Warn("fileserver: cannot resolve gateway", "err", err)
		}
		g.hs.index = 0
		g.hs.phase = hsWait
		g.hs.schedule(now)
		return
	}
	var pkt []byte
	for {
		pkt = g.init.Hello(g.buf[:0])
		idx := binary.BigEndian.Uint32(pkt[4:8])
		if s.reg.reservePending(idx, g) {
			g.hs.index = idx
			break
		}
	}
	s.st.hellos.Add(1)
	g.setAddr(dst)
	// One HELLO per gateway public key we accept (the current and the
	// next during a rotation): the gateway answers the one it holds.
	for off := 0; off < len(pkt); off += fschunk.HelloSize {
		if err := s.writeTo(pkt[off:off+fschunk.HelloSize], &dst); err != nil {
			g.log.Warn("fileserver: cannot send HELLO", "addr", dst.String(), "err", err)
		}
	}
	g.helloSent(dst.String(), now)
	g.hs.schedule(now)
}

func (g *gateway) onChallenge(ev gwEvent, now time.Time) {
	s := g.s
	if g.hs.phase == hsAuth && ev.index == g.hs.index {
		// Another answer to the same HELLO: the AUTH already sent stands.
		return
	}
	if g.hs.phase != hsHello || ev.index != g.hs.index {
		s.st.unknown.Add(1)
		return
	}
	pkt, err := g.init.HandleChallenge(ev.pkt, g.buf[:0])
	if err != nil {
		s.dropFor(err)
		if errors.Is(err, auth.ErrBadMAC) {
			g.badChallenge.Do(func() {
				g.log.Warn("fileserver: the gateway's CHALLENGE failed authentication: it uses a different key file or another public key than -gateway-public-key (or the packet was forged)", "addr", g.addr.Load().String())
			})
		}
		return
	}
	g.hs.phase, g.hs.authAt, g.hs.backoff = hsAuth, now, 0
	_ = s.writeTo(pkt, g.addr.Load())
	g.hs.schedule(now)
}

func (g *gateway) onWelcome(ev gwEvent, now time.Time) {
	s := g.s
	if g.hs.phase != hsAuth || ev.index != g.hs.index {
		s.st.unknown.Add(1)
		return
	}
	as, w, err := g.init.HandleWelcome(ev.pkt, now)
	if err != nil {
		s.dropFor(err)
		return
	}
	g.answered(now)
	ns := &session{gw: g, auth: as, welcome: w, maxDG: min(int(w.MaxDatagram), s.maxDG)}
	s.reg.promote(g.hs.index, g, ns)
	reason := g.hs.reason
	g.hs = handshake{}
	old := g.cur.Swap(ns)
	if g.prev != nil {
		s.reg.remove(g.prev)
	}
	g.prev = old // receives until it expires; nothing more is sent on it
	s.st.handshakes.Add(1)

	restarted := g.joined && w.GatewayBoot != g.boot
	args := []any{"session", as.LocalIndex, "addr", g.addr.Load().String(), "gateway_key", g.init.Gateway().Short(), "heartbeat", w.HeartbeatInterval, "max_datagram", w.MaxDatagram}
	switch {
	case !g.joined:
		g.log.Info("fileserver: joined gateway", args...)
	case restarted:
		s.st.restarts.Add(1)
		s.st.rereg.Add(1)
		g.log.Info("fileserver: gateway restarted, re-registered", append(args, "reason", reason.String())...)
	case reason == reasonRekey:
		s.st.rekeys.Add(1)
		g.log.Debug("fileserver: session rekeyed", args...)
	default:
		s.st.rereg.Add(1)
		g.log.Info("fileserver: re-registered", append(args, "reason", reason.String())...)
	}
	g.joined, g.boot = true, w.GatewayBoot

	if restarted || (g.sync != nil && ns.maxDG < g.sync.maxDG) {
		// A restarted gateway holds nothing of ours; pages cut for a
		// larger datagram would not fit. The next HEARTBEAT_ACK says
		// what to send.
		g.sync = nil
		g.gwKnown = false
	}
	g.lastAck = now
	g.sendHeartbeat(ns, now)
}

// onGoodbye handles the gateway ending a session: if it is the current
// one, the gateway is restarting or shedding us; register again after
// fschunk.HandshakeRetryMin.
func (g *gateway) onGoodbye(ev gwEvent, now time.Time) {
	s := g.s
	s.st.goodbyes.Add(1)
	if ev.sess == g.prev {
		s.reg.remove(g.prev)
		g.prev = nil
		return
	}
	cur := g.cur.Load()
	if ev.sess != cur {
		return
	}
	if ev.bye.Reason == fschunk.GoodbyeRevoked {
		// The operator's doing, or a mistake of theirs: say so plainly.
		// The server keeps trying (a key put back in the list readmits it).
		g.log.Warn("fileserver: the gateway revoked this server: its public key is no longer in the gateway's allowed servers list",
			"session", cur.auth.LocalIndex, "public_key", g.s.cfg.Static.Public().String())
	} else {
		g.log.Info("fileserver: gateway said goodbye", "session", cur.auth.LocalIndex, "reason", ev.bye.Reason.String())
	}
	g.cur.Store(nil)
	s.reg.remove(cur)
	if g.prev != nil {
		s.reg.remove(g.prev)
		g.prev = nil
	}
	g.releasePending()
	g.sync = nil
	g.gwKnown = false
	g.hs = handshake{phase: hsWait, reason: reasonGoodbye, next: now.Add(fschunk.HandshakeRetryMin)}
}

// ---------------------------------------------------------------- heartbeat

func (g *gateway) sendHeartbeat(cur *session, now time.Time) {
	s := g.s
	v := s.currentView()
	total := s.st.bytesSent.Load()
	var rate uint64
	if el := now.Sub(g.txAt); !g.txAt.IsZero() && el > 0 {
		rate = uint64(float64(total-g.txBytes) / el.Seconds())
	}
	g.txBytes, g.txAt = total, now
	g.hbSeq++
	hb := fschunk.Heartbeat{
		Seq:         g.hbSeq,
		ReadsActive: uint32(max(s.active.Load(), 0)),
		TxRate:      rate,
		CatalogGen:  v.gen,
		Files:       uint32(len(v.entries)),
		Name:        s.cfg.Name,
	}
	pkt := fschunk.AppendHeader(g.buf[:0], fschunk.Header{Type: fschunk.TypeHeartbeat})
	pkt = hb.Append(pkt)
	if s.sealSend(cur, pkt) == nil {
		s.st.heartbeats.Add(1)
	}
	g.nextHB = now.Add(cur.welcome.HeartbeatInterval)
}

func (g *gateway) onHeartbeatAck(ev gwEvent, now time.Time) {
	a := ev.hbAck
	if ev.sess != g.cur.Load() || a.Seq == 0 || a.Seq > g.hbSeq {
		return
	}
	g.lastAck = now
	if a.Seq <= g.fence {
		return
	}
	g.gwGen, g.gwKnown = a.CatalogGen, true
	g.maybeSync(now)
}
