package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/transport"
)

// This file holds the instruments of the UDP abuse tests: a socket wrapper
// that captures real traffic, tells genuine datagrams from attack ones,
// injects datagrams with a forged source address and takes consistent
// snapshots of its owner's counters; and attacker sockets that count what
// comes back to them.

// udpAbuseDatagram is one captured or injected datagram; addr is its source
// (received) or destination (sent).
type udpAbuseDatagram struct {
	pkt  []byte
	addr netip.AddrPort
}

// udpAbuseAttackers is the set of source addresses whose datagrams are
// attack traffic, shared by every tap of a test.
type udpAbuseAttackers struct {
	mu  sync.RWMutex
	set map[netip.AddrPort]bool
}

func (a *udpAbuseAttackers) add(ap netip.AddrPort) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.set == nil {
		a.set = map[netip.AddrPort]bool{}
	}
	a.set[ap] = true
}

func (a *udpAbuseAttackers) has(ap netip.AddrPort) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.set[ap]
}

// udpAbuseExpKey counts attack datagrams by the answer an oracle expects
// for them ("" = dropped) and by the source address they carried.
type udpAbuseExpKey struct {
	label string
	from  netip.AddrPort
}

// udpAbuseOutKey counts datagrams the owner sent, by type and destination.
type udpAbuseOutKey struct {
	typ fschunk.Type
	to  netip.AddrPort
}

// udpAbuseProbe is the owner's counters that a datagram can move: the
// owner's receive loop is single-threaded and only it moves them, so their
// change between two reads of the socket is the fate of the datagram read
// in between.
type udpAbuseProbe struct {
	auth      uint64 // datagrams authenticated
	drop      uint64 // datagrams dropped, any cause
	hs        uint64 // sessions made (gateway)
	challenge uint64 // CHALLENGEs sent (gateway)
	welcome   uint64 // WELCOMEs sent (gateway)
}

// Verdicts of one datagram.
const (
	udpAbuseAccepted  = "accepted"  // authenticated
	udpAbuseSession   = "session"   // made a session
	udpAbuseDropped   = "dropped"   // one drop counted, nothing sent
	udpAbuseChallenge = "challenge" // one CHALLENGE sent, nothing else
	udpAbuseWelcome   = "welcome"   // one WELCOME sent, nothing else
)

func udpAbuseVerdict(a, b udpAbuseProbe) string {
	d := udpAbuseProbe{b.auth - a.auth, b.drop - a.drop, b.hs - a.hs, b.challenge - a.challenge, b.welcome - a.welcome}
	switch d {
	case udpAbuseProbe{drop: 1}:
		return udpAbuseDropped
	case udpAbuseProbe{challenge: 1}:
		return udpAbuseChallenge
	case udpAbuseProbe{welcome: 1}:
		return udpAbuseWelcome
	}
	switch {
	case d == udpAbuseProbe{}:
		// At a server: a handshake message handed to the goroutine
		// that owns the handshake. Never right for attack traffic.
		return "no counter moved"
	case d.hs > 0:
		return udpAbuseSession
	case d.auth > 0:
		return udpAbuseAccepted
	}
	return fmt.Sprintf("unexplained %+v", d)
}

// udpAbuseVerdictKey counts datagrams by origin, expected answer (the
// oracle's label) and verdict.
type udpAbuseVerdictKey struct {
	attack  bool
	label   string
	verdict string
}

// udpAbuseCounts is what a tap saw, all of it delivered to (or sent by)
// the owner.
type udpAbuseCounts struct {
	attack      uint64 // datagrams from attacker sockets or injected
	attackBytes uint64
	exp         map[udpAbuseExpKey]uint64
	out         map[udpAbuseOutKey]uint64
	verdicts    map[udpAbuseVerdictKey]uint64
}

func (c udpAbuseCounts) clone() udpAbuseCounts {
	c.exp, c.out, c.verdicts = maps.Clone(c.exp), maps.Clone(c.out), maps.Clone(c.verdicts)
	return c
}

// udpAbuseMaxCapture bounds the datagrams kept per direction and type.
const udpAbuseMaxCapture = 64

// udpAbuseTap wraps its owner's (gateway's or server's) socket. It has no
// goroutine: the owner's single receive loop runs it. A datagram from the
// tap's own poke socket is never handed to the owner: it wakes the loop to
// deliver an injected datagram or to run a snapshot while the owner is
// between two datagrams.
type udpAbuseTap struct {
	net.PacketConn
	self      *net.UDPAddr
	poke      *net.UDPConn
	pokeAt    netip.AddrPort
	attackers *udpAbuseAttackers
	inject    chan udpAbuseDatagram
	reqs      chan func()
	delivered atomic.Uint64 // attack datagrams handed to the owner

	// oracle, if set, labels each attack datagram with the answer the
	// owner should give it ("" = none); it runs at delivery.
	oracle atomic.Pointer[func(pkt []byte, from netip.AddrPort) string]
	// probe, if set, reads the owner's counters; then every datagram
	// handed to the owner gets a verdict.
	probe                atomic.Pointer[func() udpAbuseProbe]
	challenges, welcomes atomic.Uint64 // sent by the owner

	// The datagram last handed to the owner; only the owner's receive
	// loop touches these.
	prev struct {
		valid  bool
		attack bool
		label  string
		probe  udpAbuseProbe
	}

	mu     sync.Mutex
	c      udpAbuseCounts
	capIn  map[fschunk.Type][]udpAbuseDatagram
	capOut map[fschunk.Type][]udpAbuseDatagram
	inIdx  map[netip.AddrPort]uint32 // receiver index of the latest transport datagram from each peer (the owner's index)
	outIdx map[netip.AddrPort]uint32 // ... to each peer (the peer's index)
	maxCtr map[uint32]uint64         // highest counter seen per receiver index, both directions
}

func udpAbuseWrap(pc net.PacketConn, att *udpAbuseAttackers) (*udpAbuseTap, error) {
	poke, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("poke socket: %w", err)
	}
	pokeAt, _ := transport.AddrPort(poke.LocalAddr())
	self := pc.LocalAddr().(*net.UDPAddr)
	return &udpAbuseTap{
		PacketConn: pc, self: self, poke: poke, pokeAt: pokeAt, attackers: att,
		inject: make(chan udpAbuseDatagram, 32), reqs: make(chan func(), 8),
		c:     udpAbuseCounts{exp: map[udpAbuseExpKey]uint64{}, out: map[udpAbuseOutKey]uint64{}, verdicts: map[udpAbuseVerdictKey]uint64{}},
		capIn: map[fschunk.Type][]udpAbuseDatagram{}, capOut: map[fschunk.Type][]udpAbuseDatagram{},
		inIdx: map[netip.AddrPort]uint32{}, outIdx: map[netip.AddrPort]uint32{}, maxCtr: map[uint32]uint64{},
	}, nil
}

func (t *udpAbuseTap) addrPort() netip.AddrPort {
	ap, _ := transport.AddrPort(t.self)
	return ap
}

func (t *udpAbuseTap) ReadFrom(b []byte) (int, net.Addr, error) {
	t.judge()
	for {
		select {
		case d := <-t.inject:
			n := copy(b, d.pkt)
			t.record(b[:n], d.addr, true)
			return n, net.UDPAddrFromAddrPort(d.addr), nil
		default:
		}
		n, a, err := t.PacketConn.ReadFrom(b)
		if err != nil {
			return n, a, err
		}
		ap, _ := transport.AddrPort(a)
		if ap == t.pokeAt {
			// Everything sent to the owner before this poke has been
			// handled (one socket, FIFO), except injected datagrams
			// still queued: those go first, their own pokes follow.
			if len(t.inject) == 0 {
				t.serve()
			}
			continue
		}
		t.record(b[:n], ap, t.attackers.has(ap))
		return n, a, nil
	}
}

// judge gives the datagram handed to the owner last its verdict: the
// owner is back for the next one, so it is done with it.
func (t *udpAbuseTap) judge() {
	p := t.probe.Load()
	if !t.prev.valid || p == nil {
		return
	}
	v := udpAbuseVerdict(t.prev.probe, (*p)())
	t.prev.valid = false
	t.mu.Lock()
	t.c.verdicts[udpAbuseVerdictKey{t.prev.attack, t.prev.label, v}]++
	t.mu.Unlock()
}

func (t *udpAbuseTap) serve() {
	for {
		select {
		case f := <-t.reqs:
			f()
		default:
			return
		}
	}
}

func udpAbuseType(pkt []byte) (fschunk.Type, bool) {
	if len(pkt) < fschunk.PrefixSize || pkt[0] != fschunk.Version {
		return 0, false
	}
	return fschunk.Type(pkt[1]), true
}

func (t *udpAbuseTap) record(pkt []byte, from netip.AddrPort, attack bool) {
	label := ""
	if attack {
		if o := t.oracle.Load(); o != nil {
			label = (*o)(pkt, from)
		}
	}
	if p := t.probe.Load(); p != nil {
		t.prev.valid, t.prev.attack, t.prev.label, t.prev.probe = true, attack, label, (*p)()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if attack {
		t.c.attack++
		t.c.attackBytes += uint64(len(pkt))
		t.c.exp[udpAbuseExpKey{label, from}]++
		t.delivered.Add(1)
		return
	}
	if typ, ok := udpAbuseType(pkt); ok {
		t.captureLocked(t.capIn, t.inIdx, typ, pkt, from)
	}
}

func (t *udpAbuseTap) captureLocked(into map[fschunk.Type][]udpAbuseDatagram, idx map[netip.AddrPort]uint32, typ fschunk.Type, pkt []byte, peer netip.AddrPort) {
	if len(into[typ]) < udpAbuseMaxCapture {
		into[typ] = append(into[typ], udpAbuseDatagram{pkt: append([]byte(nil), pkt...), addr: peer})
	}
	if h, err := fschunk.ParseHeader(pkt); err == nil {
		idx[peer] = h.Receiver
		t.maxCtr[h.Receiver] = max(t.maxCtr[h.Receiver], h.Counter)
	}
}

func (t *udpAbuseTap) WriteTo(pkt []byte, a net.Addr) (int, error) {
	to, _ := transport.AddrPort(a)
	typ, ok := udpAbuseType(pkt)
	switch {
	case ok && typ == fschunk.TypeChallenge:
		t.challenges.Add(1)
	case ok && typ == fschunk.TypeWelcome:
		t.welcomes.Add(1)
	}
	t.mu.Lock()
	t.c.out[udpAbuseOutKey{typ, to}]++
	if ok && !t.attackers.has(to) {
		t.captureLocked(t.capOut, t.outIdx, typ, pkt, to)
	}
	t.mu.Unlock()
	return t.PacketConn.WriteTo(pkt, a)
}

func (t *udpAbuseTap) Close() error {
	return errors.Join(t.poke.Close(), t.PacketConn.Close())
}

func (t *udpAbuseTap) wake() error {
	_, err := t.poke.WriteTo([]byte{0}, t.self)
	return err
}

// injectFrom hands pkt to the owner as if it came from "from": what an
// attacker who can forge source addresses (on-path, or off-path without
// egress filtering) achieves; unprivileged sockets cannot send it.
func (t *udpAbuseTap) injectFrom(pkt []byte, from netip.AddrPort) error {
	select {
	case t.inject <- udpAbuseDatagram{pkt: pkt, addr: from}:
	case <-time.After(10 * time.Second):
		return errors.New("injection: the owner stopped reading")
	}
	return t.wake()
}

// atRest runs f in the owner's receive loop once everything sent to the
// owner before the call has been handled and before the next datagram is:
// counters read in f are consistent with the tap's counts.
func (t *udpAbuseTap) atRest(f func()) error {
	done := make(chan struct{})
	t.reqs <- func() { f(); close(done) }
	if err := t.wake(); err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-time.After(20 * time.Second):
		return errors.New("owner did not come back to its socket within 20 s")
	}
}

func (t *udpAbuseTap) countsLocked() udpAbuseCounts { return t.c.clone() }

// captured returns the datagrams captured in one direction, all types.
func (t *udpAbuseTap) captured(out bool) []udpAbuseDatagram {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.capIn
	if out {
		m = t.capOut
	}
	var all []udpAbuseDatagram
	for _, ds := range m {
		all = append(all, ds...)
	}
	return all
}

func (t *udpAbuseTap) capturedType(out bool, typ fschunk.Type) []udpAbuseDatagram {
	t.mu.Lock()
	defer t.mu.Unlock()
	if out {
		return append([]udpAbuseDatagram(nil), t.capOut[typ]...)
	}
	return append([]udpAbuseDatagram(nil), t.capIn[typ]...)
}

// liveIndex returns the receiver index last used with peer (in: the
// owner's index for it; out: the peer's) and the highest counter seen
// with that index.
func (t *udpAbuseTap) liveIndex(peer netip.AddrPort, out bool) (idx uint32, ctr uint64, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.inIdx
	if out {
		m = t.outIdx
	}
	idx, ok = m[peer]
	return idx, t.maxCtr[idx], ok
}

// udpAbuseAttacker is an attacker's real socket; a goroutine counts what
// comes back to it.
type udpAbuseAttacker struct {
	conn   *net.UDPConn
	addr   netip.AddrPort
	rxN    atomic.Uint64
	rxB    atomic.Uint64
	rxOdd  atomic.Uint64 // datagrams other than CHALLENGE
	done   chan struct{}
	closed sync.Once
}

func udpAbuseNewAttacker(att *udpAbuseAttackers) (*udpAbuseAttacker, error) {
	c, err := udpAbuseListen(att)
	if err != nil {
		return nil, err
	}
	return udpAbuseStartAttacker(c), nil
}

// udpAbuseListen opens a socket whose datagrams count as attack traffic.
func udpAbuseListen(att *udpAbuseAttackers) (*net.UDPConn, error) {
	c, err := transport.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ap, _ := transport.AddrPort(c.LocalAddr())
	att.add(ap)
	return c, nil
}

// udpAbuseStartAttacker starts counting what comes back to c.
func udpAbuseStartAttacker(c *net.UDPConn) *udpAbuseAttacker {
	ap, _ := transport.AddrPort(c.LocalAddr())
	a := &udpAbuseAttacker{conn: c, addr: ap, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		buf := make([]byte, 64<<10)
		for {
			n, _, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			a.rxN.Add(1)
			a.rxB.Add(uint64(n))
			if typ, ok := udpAbuseType(buf[:n]); !ok || typ != fschunk.TypeChallenge {
				a.rxOdd.Add(1)
			}
		}
	}()
	return a
}

func (a *udpAbuseAttacker) send(pkt []byte, to netip.AddrPort) error {
	if _, err := a.conn.WriteToUDPAddrPort(pkt, to); err != nil {
		return err
	}
	return nil
}

func (a *udpAbuseAttacker) close() {
	a.closed.Do(func() { a.conn.Close(); <-a.done })
}

// settled waits until the attacker has received nothing new for a while
// (its answers, if any, were already queued when the target was at rest).
func (a *udpAbuseAttacker) settled() {
	last := a.rxN.Load()
	for {
		time.Sleep(30 * time.Millisecond)
		n := a.rxN.Load()
		if n == last {
			return
		}
		last = n
	}
}

// udpAbuseSender sends attack datagrams to one target and keeps the
// target's backlog small, so that the kernel drops none of them (a
// non-root CI runner gets small socket buffers) and genuine traffic is not
// starved into timeouts: the point is what is accepted, not loss.
type udpAbuseSender struct {
	tap      *udpAbuseTap
	to       netip.AddrPort
	from     []*udpAbuseAttacker
	next     int
	sent     uint64 // datagrams sent or injected
	lost     uint64 // taken as dropped by the kernel (never delivered in time)
	byKind   map[string]uint64
	backlog  uint64
	patience time.Duration
	base     uint64 // tap.delivered when the sender started
}

func udpAbuseNewSender(tap *udpAbuseTap, from []*udpAbuseAttacker) *udpAbuseSender {
	return &udpAbuseSender{tap: tap, to: tap.addrPort(), from: from, byKind: map[string]uint64{}, backlog: 128, patience: 250 * time.Millisecond, base: tap.delivered.Load()}
}

// send sends pkt from an attacker socket, or injects it with source spoof
// if spoof is valid.
func (s *udpAbuseSender) send(kind string, pkt []byte, spoof netip.AddrPort) error {
	var err error
	if spoof.IsValid() {
		err = s.tap.injectFrom(pkt, spoof)
	} else {
		a := s.from[s.next%len(s.from)]
		s.next++
		err = a.send(pkt, s.to)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", kind, err)
	}
	s.sent++
	s.byKind[kind]++
	s.pace(s.backlog, s.patience)
	return nil
}

// pace waits until at most limit sent datagrams are not yet delivered, or
// for patience: then those outstanding are taken as dropped by the kernel
// (the test reports what was read, not what was sent).
func (s *udpAbuseSender) pace(limit uint64, patience time.Duration) {
	deadline := time.Now().Add(patience)
	for s.sent-s.lost > s.delivered()+limit {
		if time.Now().After(deadline) {
			s.lost = s.sent - s.delivered()
			return
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// drain waits until everything sent is delivered (or lost).
func (s *udpAbuseSender) drain() { s.pace(0, 5*time.Second) }

func (s *udpAbuseSender) delivered() uint64 { return s.tap.delivered.Load() - s.base }
