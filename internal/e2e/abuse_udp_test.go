package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/fetch"
	"github.com/fastfile/fschunk/internal/fileserver"
	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/gateway"
	"github.com/fastfile/fschunk/internal/transport"
)

// The UDP half of the abuse suite. Attack datagrams come from real
// sockets; those with a forged source address (the genuine peer's, or a
// victim's) are injected at the target's socket wrapper, since an
// unprivileged socket cannot send them. Every test counts what the target
// delivered, authenticated, dropped and answered, at moments when the
// target's receive loop is between two datagrams, so the counts are exact.

// udpAbuseEnv is a system under test whose gateway's and servers' sockets
// are tapped.
type udpAbuseEnv struct {
	*env
	att     *udpAbuseAttackers
	gwTap   *udpAbuseTap
	srvTaps []*udpAbuseTap
}

func udpAbuseNewEnv(t *testing.T, files map[string][]byte, servers int) *udpAbuseEnv {
	t.Helper()
	u := &udpAbuseEnv{att: &udpAbuseAttackers{}}
	wrap := func(pc net.PacketConn) *udpAbuseTap {
		tp, err := udpAbuseWrap(pc, u.att)
		if err != nil {
			t.Fatal(err)
		}
		return tp
	}
	// The gateway bounds the bytes in flight by the receive buffer it got,
	// when its socket is a *net.UDPConn; behind the tap, as it would be.
	var fc fetch.Config
	if pc, err := transport.Listen(context.Background(), "127.0.0.1:0"); err == nil {
		if rcv, _, err := transport.Buffers(pc); err == nil {
			fc.MaxInflight = rcv / 2
		}
		pc.Close()
	}
	u.env = newEnv(t, files, envOpts{datagram: fschunk.DefaultDatagramSize, fetch: fc, gwWrap: func(pc net.PacketConn) net.PacketConn {
		u.gwTap = wrap(pc)
		return u.gwTap
	}})
	for range servers {
		u.addServer(func(pc net.PacketConn) net.PacketConn {
			tp := wrap(pc)
			u.srvTaps = append(u.srvTaps, tp)
			return tp
		})
	}
	u.waitHolders(servers)
	gp := func() udpAbuseProbe {
		st := udpAbuseGwSettled(u.gw)
		return udpAbuseProbe{auth: st.Authenticated, drop: udpAbuseGwDrops(st), hs: st.Handshakes, challenge: u.gwTap.challenges.Load(), welcome: u.gwTap.welcomes.Load()}
	}
	u.gwTap.probe.Store(&gp)
	for i, tap := range u.srvTaps {
		srv := u.servers[i].Srv
		// A server's sessions are made by its handshake goroutine, not
		// its receive loop: they are not any one datagram's doing.
		sp := func() udpAbuseProbe {
			st := srv.Stats()
			return udpAbuseProbe{auth: st.Authenticated, drop: udpAbuseSrvDrops(st)}
		}
		tap.probe.Store(&sp)
	}
	return u
}

// udpAbuseGwSnap is the gateway's counters and its tap's counts, read together.
type udpAbuseGwSnap struct {
	c  udpAbuseCounts
	st gateway.Stats
}

func (u *udpAbuseEnv) snapGateway(t *testing.T) udpAbuseGwSnap {
	t.Helper()
	var s udpAbuseGwSnap
	if err := u.gwTap.atRest(func() {
		u.gwTap.mu.Lock()
		s.c = u.gwTap.countsLocked()
		u.gwTap.mu.Unlock()
		s.st = udpAbuseGwSettled(u.gw)
	}); err != nil {
		t.Fatalf("gateway snapshot: %v", err)
	}
	return s
}

type udpAbuseSrvSnap struct {
	c  udpAbuseCounts
	st fileserver.Stats
}

func (u *udpAbuseEnv) snapServer(t *testing.T, i int) udpAbuseSrvSnap {
	t.Helper()
	var s udpAbuseSrvSnap
	tap := u.srvTaps[i]
	u.mu.Lock()
	srv := u.servers[i].Srv
	u.mu.Unlock()
	if err := tap.atRest(func() {
		tap.mu.Lock()
		s.c = tap.countsLocked()
		tap.mu.Unlock()
		s.st = srv.Stats()
	}); err != nil {
		t.Fatalf("server %d snapshot: %v", i+1, err)
	}
	return s
}

func udpAbuseGwDrops(st gateway.Stats) uint64 {
	return st.DropGarbage + st.DropAuth + st.DropReplay + st.DropUnknownSession + st.DropInstances + st.DropHandshakeQueue + st.DropHandshakeRate + st.DropUnlisted + st.DropIdentity
}

// udpAbuseGwSettled reads the gateway's counters once its handshake
// worker has handled every handshake datagram queued: handshakes are
// answered off the receive loop, and a datagram's verdict includes them.
func udpAbuseGwSettled(g *gateway.Gateway) gateway.Stats {
	for {
		if st := g.Stats(); st.HandshakesDone == st.HandshakesQueued {
			// Read again: Stats loads one counter after another, and the
			// drop counters come before HandshakesDone.
			return g.Stats()
		}
		time.Sleep(20 * time.Microsecond)
	}
}

func udpAbuseSrvDrops(st fileserver.Stats) uint64 {
	d := st.Dropped
	return d.Garbage + d.AuthFailure + d.Replay + d.UnknownSession + d.Unexpected + d.QueueFull
}

// udpAbusePoolState is what the gateway knows of its servers and files,
// without the fields that move on their own (last heard, load).
func (u *udpAbuseEnv) poolState() string {
	var b strings.Builder
	for _, s := range u.gw.Pool().Servers() {
		fmt.Fprintf(&b, "server %016x addr %s joined %v gen %d files %d\n", uint64(s.ID), s.Addr, s.Joined, s.CatalogGen, s.Files)
	}
	paths := slices.Sorted(func(yield func(string) bool) {
		for p := range u.files {
			if !yield(p) {
				return
			}
		}
	})
	for _, p := range paths {
		f, ok := u.gw.Source().Lookup(p)
		fmt.Fprintf(&b, "file %q ok %v size %d hash %x holders %d\n", p, ok, f.Size, f.Hash, f.Holders)
	}
	return b.String()
}

// udpAbuseFetch downloads url and compares it with want.
func udpAbuseFetch(url string, want []byte) (time.Duration, error) {
	start := time.Now()
	if err := fetchExact(http.DefaultClient, url, want); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// udpAbuseKeyHolderAuth runs the first half of a handshake from c as a
// holder of the key and returns the AUTH it would send (not sent): a valid
// MAC and a cookie bound to c's address; and the gateway's cookie clock,
// read from the CHALLENGE.
func udpAbuseKeyHolderAuth(c *net.UDPConn, in *auth.Initiator, gw netip.AddrPort) ([]byte, udpAbuseCookieClock, error) {
	if _, err := c.WriteToUDPAddrPort(in.Hello(nil), gw); err != nil {
		return nil, udpAbuseCookieClock{}, err
	}
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	n, _, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil, udpAbuseCookieClock{}, fmt.Errorf("no CHALLENGE: %w", err)
	}
	ts := binary.BigEndian.Uint64(buf[8:16]) // the CHALLENGE's cookie time
	clk := udpAbuseCookieClock{epoch: time.Now().Add(-time.Duration(ts) * time.Second)}
	a, err := in.HandleChallenge(buf[:n], nil)
	return a, clk, err
}

func udpAbuseCookieTime(authPkt []byte) int64 {
	return int64(binary.BigEndian.Uint64(authPkt[32:40]))
}

// udpAbuseCookieClock reads the gateway's cookie times: whole seconds of
// its own monotonic clock (PROTOCOL.md §9.3), not Unix time. epoch is when
// that clock read 0, as seen from here: up to a second late (the cookie
// time is truncated), never early.
type udpAbuseCookieClock struct{ epoch time.Time }

// age is how old a cookie of time ts is now, in seconds. The gateway's
// own reading, in whole seconds, is within one second of it: below 10 (the
// cookie is accepted) if age ≤ 9, above 11 (refused) if age ≥ 12.
func (c udpAbuseCookieClock) age(ts int64) float64 {
	return time.Since(c.epoch).Seconds() - float64(ts)
}

// at is when the gateway's cookie clock reads ts seconds, or a little
// later.
func (c udpAbuseCookieClock) at(ts int64) time.Time {
	return c.epoch.Add(time.Duration(ts) * time.Second)
}

// ---------------------------------------------------------------- forgery helpers

func udpAbuseRandom(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// udpAbuseFlip flips 1 to 3 distinct random bits of a copy of pkt.
func udpAbuseFlip(r *rand.Rand, pkt []byte) []byte {
	out := bytes.Clone(pkt)
	bits := map[int]bool{}
	for n := 1 + r.IntN(3); len(bits) < n && len(bits) < 8*len(out); {
		b := r.IntN(8 * len(out))
		if !bits[b] {
			bits[b] = true
			out[b/8] ^= 1 << (b % 8)
		}
	}
	return out
}

// udpAbuseBodyLen is a plausible body length for each transport type.
var udpAbuseBodyLen = map[fschunk.Type]int{
	fschunk.TypeWelcome: 24, fschunk.TypeHeartbeat: 32, fschunk.TypeHeartbeatAck: 16, fschunk.TypeGoodbye: 4,
	fschunk.TypeCatalogPage: 120, fschunk.TypeCatalogDelta: 140, fschunk.TypeCatalogAck: 16,
	fschunk.TypeMetaRequest: 20, fschunk.TypeMeta: 70, fschunk.TypeRead: fschunk.ReadSize(1),
	fschunk.TypeData: fschunk.DataHeaderSize + fschunk.DefaultDatagramSize - fschunk.DataOverhead, fschunk.TypeError: 24,
}

// udpAbuseForge is a transport datagram with a well-formed header and a
// random body and tag: what anyone can make without the session key.
func udpAbuseForge(r *rand.Rand, typ fschunk.Type, idx uint32, ctr uint64) []byte {
	b := fschunk.AppendHeader(nil, fschunk.Header{Type: typ, Receiver: idx, Counter: ctr})
	return append(b, udpAbuseRandom(r, udpAbuseBodyLen[typ]+fschunk.TagSize)...)
}

// udpAbuseGarbage is random bytes; half of it behind a valid prefix, so
// that it reaches the header and index checks.
func udpAbuseGarbage(r *rand.Rand) []byte {
	b := udpAbuseRandom(r, 1+r.IntN(1500))
	if r.IntN(2) == 0 && len(b) >= fschunk.PrefixSize {
		b[0], b[2], b[3] = fschunk.Version, 0, 0
	}
	return b
}

func udpAbuseIsType(pkt []byte, typ fschunk.Type) bool {
	t, ok := udpAbuseType(pkt)
	return ok && t == typ
}

func udpAbuseKinds(m map[string]uint64) string {
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// ---------------------------------------------------------------- 1. forgeries

// TestAbuseUDPForgeriesAccepted attacks the gateway's and a server's UDP
// ports with more than 100,000 replayed, reflected, bit-flipped, forged,
// truncated and random datagrams while real sessions exist and downloads
// run, and proves that none is accepted: every attack datagram the targets
// read is dropped (counted by cause) or, for verbatim replays of a
// captured HELLO or of a fresh AUTH from its own address, gets the
// stateless answer the protocol prescribes; no attack datagram is
// authenticated or makes a session (each gets a verdict from the counters
// it moved); no server or catalog changes; and downloads during and after
// are byte-exact.
func TestAbuseUDPForgeriesAccepted(t *testing.T) {
	files := map[string][]byte{"abuse.bin": randBytes(4<<20 + 321), "small.txt": randBytes(3000)}
	u := udpAbuseNewEnv(t, files, 2)
	gwAddr := u.gwTap.addrPort()
	srvAddr := []netip.AddrPort{u.srvTaps[0].addrPort(), u.srvTaps[1].addrPort()}

	// A key holder's AUTH, bound to its own address and never sent: it
	// proves the address binding now and the cookie expiry later.
	khConn, err := udpAbuseListen(u.att)
	if err != nil {
		t.Fatal(err)
	}
	authKH, cookies, err := udpAbuseKeyHolderAuth(khConn, u.keyHolder(0x4b6579486f6c6472), gwAddr)
	if err != nil {
		t.Fatal(err)
	}
	kh := udpAbuseStartAttacker(khConn)
	defer kh.close()

	// Real traffic to capture: registration happened; now a download.
	u.get("abuse.bin")
	u.get("small.txt")
	s2g := u.gwTap.captured(false)
	g2s := u.gwTap.captured(true)
	hellos := u.gwTap.capturedType(false, fschunk.TypeHello)
	auths := u.gwTap.capturedType(false, fschunk.TypeAuth)
	if len(hellos) == 0 || len(auths) == 0 || len(u.gwTap.capturedType(false, fschunk.TypeData)) == 0 || len(u.gwTap.capturedType(true, fschunk.TypeRead)) == 0 {
		t.Fatalf("capture incomplete: %d HELLO, %d AUTH, s2g %d, g2s %d", len(hellos), len(auths), len(s2g), len(g2s))
	}
	type authInfo struct {
		origin netip.AddrPort
		ts     int64
	}
	validHello := map[string]bool{}
	for _, d := range hellos {
		validHello[string(d.pkt)] = true
	}
	khAddr := kh.addr
	authOf := map[string]authInfo{string(authKH): {khAddr, udpAbuseCookieTime(authKH)}}
	newest := udpAbuseCookieTime(authKH)
	for _, d := range auths {
		authOf[string(d.pkt)] = authInfo{d.addr, udpAbuseCookieTime(d.pkt)}
		newest = max(newest, udpAbuseCookieTime(d.pkt))
	}
	// The gateway answers a verbatim HELLO replay with a CHALLENGE, and an
	// AUTH replayed from its own address while its cookie is fresh with
	// the session's WELCOME again (PROTOCOL.md §9.2, §9.8.3): stateless,
	// and counted apart. The gateway's cookie check is in whole seconds
	// (0 to 10, on its monotonic clock); ages 10 and 11 are avoided by the senders.
	oracle := func(pkt []byte, from netip.AddrPort) string {
		if validHello[string(pkt)] {
			return "challenge"
		}
		if a, ok := authOf[string(pkt)]; ok && from == a.origin {
			switch age := cookies.age(a.ts); {
			case age <= 9:
				return "welcome"
			case age >= 12:
				return ""
			default:
				return "ambiguous"
			}
		}
		return ""
	}
	u.gwTap.oracle.Store(&oracle)
	authAge := func(pkt []byte) int64 { return int64(math.Floor(cookies.age(udpAbuseCookieTime(pkt)))) }

	var attackers []*udpAbuseAttacker
	for range 4 {
		a, err := udpAbuseNewAttacker(u.att)
		if err != nil {
			t.Fatal(err)
		}
		defer a.close()
		attackers = append(attackers, a)
	}

	pool0 := u.poolState()
	gw0 := u.snapGateway(t)
	srv0 := []udpAbuseSrvSnap{u.snapServer(t, 0), u.snapServer(t, 1)}
	start := time.Now()

	// Downloads run for the whole attack.
	stop := make(chan struct{})
	var dlWG sync.WaitGroup
	var dlErr error
	var during int
	dlWG.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := udpAbuseFetch(u.url("abuse.bin"), files["abuse.bin"]); err != nil {
				dlErr = err
				return
			}
			during++
		}
	})

	gwSnd := udpAbuseNewSender(u.gwTap, attackers)
	srvSnd := udpAbuseNewSender(u.srvTaps[0], attackers)
	var atWG sync.WaitGroup
	var gwErr, srvErr error
	atWG.Go(func() { gwErr = udpAbuseAttackGateway(gwSnd, u.gwTap, s2g, g2s, srvAddr, authKH, authAge) })
	atWG.Go(func() { srvErr = udpAbuseAttackServer(srvSnd, u.gwTap, s2g, g2s, srvAddr[0], gwAddr) })
	atWG.Wait()
	if gwErr != nil || srvErr != nil {
		close(stop)
		dlWG.Wait()
		t.Fatalf("attack: gateway: %v; server: %v", gwErr, srvErr)
	}
	attackTime := time.Since(start)

	// Expired cookies: the captured AUTHs from their own addresses and the
	// key holder's, once every cookie is at least 12 s old.
	if wait := time.Until(cookies.at(newest + 12).Add(50 * time.Millisecond)); wait > 0 {
		time.Sleep(wait)
	}
	for i := range 1000 {
		pkt, from := authKH, khAddr
		if i%2 == 1 {
			d := auths[i%len(auths)]
			pkt, from = d.pkt, d.addr
		}
		if err := gwSnd.send("gw: expired-cookie AUTH from its own address", pkt, from); err != nil {
			t.Fatal(err)
		}
	}
	gwSnd.drain()
	srvSnd.drain()
	close(stop)
	dlWG.Wait()
	if dlErr != nil {
		t.Fatalf("download during the attack: %v\n%s", dlErr, u.diagnose())
	}

	gw1 := u.snapGateway(t)
	srv1 := []udpAbuseSrvSnap{u.snapServer(t, 0), u.snapServer(t, 1)}
	for _, a := range append(attackers, kh) {
		a.settled()
	}
	elapsed := time.Since(start)

	// Every attack datagram the targets read got a verdict, and none is
	// "accepted".
	gA := gw1.c.attack - gw0.c.attack
	gv := udpAbuseCheckVerdicts(t, "gateway", gw0.c, gw1.c)
	chN, wlN := gv[udpAbuseChallenge], gv[udpAbuseWelcome]
	gLegit := udpAbuseLegitVerdicts(gw0.c, gw1.c)
	var sA uint64
	var sv, sLegit map[string]uint64
	for i := range srv0 {
		sA += srv1[i].c.attack - srv0[i].c.attack
		sv = udpAbuseAdd(sv, udpAbuseCheckVerdicts(t, fmt.Sprintf("server %d", i+1), srv0[i].c, srv1[i].c))
		sLegit = udpAbuseAdd(sLegit, udpAbuseLegitVerdicts(srv0[i].c, srv1[i].c))
		if d := srv1[i].st.GoodbyesReceived - srv0[i].st.GoodbyesReceived; d != 0 {
			t.Errorf("server %d took %d GOODBYEs during the attack", i+1, d)
		}
	}
	// The same from the counters alone: the drop counters rose by one per
	// datagram dropped, and sessions were made only by genuine AUTHs
	// (servers re-register when an overloaded machine delays their
	// heartbeat acknowledgements past 1.5 s).
	if d := udpAbuseGwDrops(gw1.st) - udpAbuseGwDrops(gw0.st); d != gv[udpAbuseDropped]+gLegit[udpAbuseDropped] {
		t.Errorf("gateway drop counters rose by %d, want %d attack + %d genuine datagrams dropped", d, gv[udpAbuseDropped], gLegit[udpAbuseDropped])
	}
	if d := gw1.st.Authenticated - gw0.st.Authenticated; d > gLegit[udpAbuseAccepted] {
		t.Errorf("gateway authenticated %d datagrams, only %d genuine ones were accepted", d, gLegit[udpAbuseAccepted])
	}
	rereg := gw1.st.Handshakes - gw0.st.Handshakes
	if rereg != gLegit[udpAbuseSession] {
		t.Errorf("gateway made %d sessions, %d of them from genuine AUTHs", rereg, gLegit[udpAbuseSession])
	}
	if d := gw1.st.Evictions - gw0.st.Evictions; d != 0 {
		t.Errorf("gateway evicted %d servers during the attack", d)
	}

	// What came back to the attackers: CHALLENGEs to their HELLO replays.
	var rxB, rxN, odd, toAttackers, wantAttackers uint64
	for k, n := range gw1.c.out {
		if k.typ == fschunk.TypeChallenge && u.att.has(k.to) {
			toAttackers += n - gw0.c.out[k]
		}
	}
	for k, n := range gw1.c.exp {
		if k.label == udpAbuseChallenge && u.att.has(k.from) {
			wantAttackers += n - gw0.c.exp[k]
		}
	}
	for _, a := range append(attackers, kh) {
		rxB, rxN, odd = rxB+a.rxB.Load(), rxN+a.rxN.Load(), odd+a.rxOdd.Load()
	}
	if toAttackers != wantAttackers || odd != 0 || rxN != toAttackers || rxB != toAttackers*fschunk.ChallengeSize {
		t.Errorf("attackers received %d datagrams (%d B, %d not CHALLENGE); the gateway sent them %d CHALLENGEs for %d verbatim HELLO replays", rxN, rxB, odd, toAttackers, wantAttackers)
	}

	if p := u.poolState(); p != pool0 {
		t.Errorf("pool changed under attack:\nbefore:\n%s\nafter:\n%s", pool0, p)
	}
	if _, err := udpAbuseFetch(u.url("abuse.bin"), files["abuse.bin"]); err != nil {
		t.Fatalf("download after the attack: %v\n%s", err, u.diagnose())
	}
	u.get("small.txt")

	total := gwSnd.sent + srvSnd.sent
	if gA+sA < 100000 {
		t.Errorf("only %d attack datagrams reached the targets (sent %d)", gA+sA, total)
	}
	byKind := map[string]uint64{}
	for k, n := range gwSnd.byKind {
		byKind[k] = n
	}
	for k, n := range srvSnd.byKind {
		byKind[k] = n
	}
	t.Logf("sent %d attack datagrams (gateway %d, server 1 %d), read by the targets %d; by kind: %s",
		total, gwSnd.sent, srvSnd.sent, gA+sA, udpAbuseKinds(byKind))
	t.Logf("accepted %d. Gateway: %d read, verdicts %s (drops by cause: garbage %d, auth %d, replay %d, unknown session %d). Servers: %d read, verdicts %s",
		gv[udpAbuseAccepted]+gv[udpAbuseSession]+sv[udpAbuseAccepted], gA, udpAbuseKinds(gv), gw1.st.DropGarbage-gw0.st.DropGarbage, gw1.st.DropAuth-gw0.st.DropAuth, gw1.st.DropReplay-gw0.st.DropReplay,
		gw1.st.DropUnknownSession-gw0.st.DropUnknownSession, sA, udpAbuseKinds(sv))
	t.Logf("stateless answers, as specified: %d CHALLENGEs to verbatim HELLO replays (%d to attacker sockets: %d B back for %d B of HELLOs; the rest to the servers whose address was forged, which dropped them), %d WELCOME repeats to fresh AUTH replays from the server's own address",
		chN, toAttackers, rxB, toAttackers*fschunk.HelloSize, wlN)
	t.Logf("genuine datagrams meanwhile: gateway %s; servers %s; sessions made %d, by genuine AUTHs only (servers re-register when a loaded machine delays their heartbeat acknowledgements past 1.5 s); pool and catalog unchanged",
		udpAbuseKinds(gLegit), udpAbuseKinds(sLegit), rereg)
	t.Logf("downloads of %d B: %d byte-exact during the attack, 1 after; attack phase %v, whole test after setup %v",
		len(files["abuse.bin"]), during, attackTime.Round(time.Millisecond), elapsed.Round(time.Millisecond))
}

// udpAbuseCheckVerdicts returns the verdicts of the attack datagrams a tap
// handed its owner between two snapshots, and fails the test for any
// datagram without a verdict or with one its expected answer does not
// allow: dropped for all of them, except a verbatim HELLO replay (a
// CHALLENGE) and a fresh AUTH replayed from its own address (a repeated
// WELCOME, or a drop as a replay once its session is gone).
func udpAbuseCheckVerdicts(t *testing.T, who string, c0, c1 udpAbuseCounts) map[string]uint64 {
	t.Helper()
	allowed := map[string][]string{
		"":                {udpAbuseDropped},
		udpAbuseChallenge: {udpAbuseChallenge},
		udpAbuseWelcome:   {udpAbuseWelcome, udpAbuseDropped},
	}
	out := map[string]uint64{}
	var n uint64
	for k, v := range c1.verdicts {
		d := v - c0.verdicts[k]
		if !k.attack || d == 0 {
			continue
		}
		n += d
		out[k.verdict] += d
		if !slices.Contains(allowed[k.label], k.verdict) {
			t.Errorf("%s: %d attack datagrams expecting %q got verdict %q", who, d, k.label, k.verdict)
		}
	}
	if a := c1.attack - c0.attack; n != a {
		t.Errorf("%s: %d attack datagrams read, %d judged", who, a, n)
	}
	return out
}

// udpAbuseLegitVerdicts counts the verdicts of genuine datagrams.
func udpAbuseLegitVerdicts(c0, c1 udpAbuseCounts) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range c1.verdicts {
		if d := v - c0.verdicts[k]; !k.attack && d > 0 {
			out[k.verdict] += d
		}
	}
	return out
}

func udpAbuseAdd(a, b map[string]uint64) map[string]uint64 {
	if a == nil {
		a = map[string]uint64{}
	}
	for k, v := range b {
		a[k] += v
	}
	return a
}

// udpAbuseAttackGateway sends about 60,000 attack datagrams to the gateway.
// authAge tells how old an AUTH's cookie is, so that AUTH replays from the
// server's own address are sent only when the gateway's answer is certain.
func udpAbuseAttackGateway(s *udpAbuseSender, gwTap *udpAbuseTap, s2g, g2s []udpAbuseDatagram, srvAddr []netip.AddrPort, authKH []byte, authAge func([]byte) int64) error {
	r := rand.New(rand.NewPCG(1, 2))
	none := netip.AddrPort{}
	safe := func(d udpAbuseDatagram) udpAbuseDatagram {
		for udpAbuseIsType(d.pkt, fschunk.TypeAuth) {
			if age := authAge(d.pkt); age <= 8 || age >= 12 {
				break
			}
			d = s2g[r.IntN(len(s2g))]
		}
		return d
	}
	wrongKey, err := auth.NewKey(udpAbuseRandom(r, 32))
	if err != nil {
		return err
	}
	forger := udpForger(wrongKey, 7)
	s2gTypes := []fschunk.Type{fschunk.TypeHeartbeat, fschunk.TypeData, fschunk.TypeCatalogPage, fschunk.TypeCatalogDelta, fschunk.TypeGoodbye, fschunk.TypeMeta, fschunk.TypeError}
	steps := []struct {
		kind string
		n    int
		gen  func(i int) ([]byte, netip.AddrPort, error)
	}{
		{"gw: replay", 8000, func(i int) ([]byte, netip.AddrPort, error) {
			return s2g[i%len(s2g)].pkt, none, nil
		}},
		{"gw: replay from the server's address", 8000, func(i int) ([]byte, netip.AddrPort, error) {
			d := safe(s2g[i%len(s2g)])
			return d.pkt, d.addr, nil
		}},
		{"gw: reflected gateway→server", 8000, func(i int) ([]byte, netip.AddrPort, error) {
			d := g2s[i%len(g2s)]
			if i%2 == 0 {
				return d.pkt, d.addr, nil // as if the server bounced it
			}
			return d.pkt, none, nil
		}},
		{"gw: bit-flipped", 10000, func(i int) ([]byte, netip.AddrPort, error) {
			d := s2g[r.IntN(len(s2g))]
			if i%2 == 0 {
				return udpAbuseFlip(r, d.pkt), d.addr, nil
			}
			return udpAbuseFlip(r, d.pkt), none, nil
		}},
		{"gw: forged, live index, fresh counter", 8000, func(i int) ([]byte, netip.AddrPort, error) {
			srv := srvAddr[i%len(srvAddr)]
			idx, ctr, ok := gwTap.liveIndex(srv, false)
			if !ok {
				return nil, none, fmt.Errorf("no session index seen from %v", srv)
			}
			// The next counters the server will use: a forgery that
			// burnt them would make its genuine datagrams replays.
			pkt := udpAbuseForge(r, s2gTypes[i%len(s2gTypes)], idx, ctr+1+uint64(i%64))
			if i%2 == 0 {
				return pkt, srv, nil
			}
			return pkt, none, nil
		}},
		{"gw: forged HELLO (wrong key)", 2000, func(i int) ([]byte, netip.AddrPort, error) {
			if i%2 == 0 {
				return forger.Hello(nil), srvAddr[i%len(srvAddr)], nil
			}
			return forger.Hello(nil), none, nil
		}},
		{"gw: forged AUTH", 3000, func(i int) ([]byte, netip.AddrPort, error) {
			d := safe(s2g[0])
			for !udpAbuseIsType(d.pkt, fschunk.TypeAuth) {
				d = s2g[r.IntN(len(s2g))]
			}
			pkt := bytes.Clone(d.pkt)
			switch i % 4 {
			case 0: // random MAC
				copy(pkt[fschunk.AuthSize-fschunk.MACSize:], udpAbuseRandom(r, fschunk.MACSize))
			case 1: // a newer cookie timestamp: the MAC no longer matches
				binary.BigEndian.PutUint64(pkt[32:40], binary.BigEndian.Uint64(pkt[32:40])+1)
			case 2: // a key holder's valid AUTH, from another address
				return authKH, none, nil
			case 3: // the same, claiming to come from a server
				return authKH, srvAddr[i%len(srvAddr)], nil
			}
			return pkt, d.addr, nil
		}},
		{"gw: truncated", 5000, func(i int) ([]byte, netip.AddrPort, error) {
			d := s2g[r.IntN(len(s2g))]
			pkt := d.pkt[:r.IntN(len(d.pkt))]
			if i%2 == 0 {
				return pkt, d.addr, nil
			}
			return pkt, none, nil
		}},
		{"gw: random garbage", 5000, func(i int) ([]byte, netip.AddrPort, error) {
			return udpAbuseGarbage(r), none, nil
		}},
		{"gw: forged, guessed index", 3000, func(i int) ([]byte, netip.AddrPort, error) {
			return udpAbuseForge(r, s2gTypes[i%len(s2gTypes)], r.Uint32(), r.Uint64N(1<<20)), none, nil
		}},
	}
	return udpAbuseRun(s, steps)
}

// udpAbuseAttackServer sends about 60,000 attack datagrams to a server.
func udpAbuseAttackServer(s *udpAbuseSender, gwTap *udpAbuseTap, s2g, g2s []udpAbuseDatagram, srv, gw netip.AddrPort) error {
	r := rand.New(rand.NewPCG(3, 4))
	none := netip.AddrPort{}
	wrongKey, err := auth.NewKey(udpAbuseRandom(r, 32))
	if err != nil {
		return err
	}
	forger := udpForger(wrongKey, 9)
	g2sTypes := []fschunk.Type{fschunk.TypeRead, fschunk.TypeHeartbeatAck, fschunk.TypeCatalogAck, fschunk.TypeGoodbye, fschunk.TypeMetaRequest, fschunk.TypeWelcome, fschunk.TypeError}
	either := func(i int, pkt []byte) ([]byte, netip.AddrPort, error) {
		if i%2 == 0 {
			return pkt, gw, nil // as if from the gateway
		}
		return pkt, none, nil
	}
	steps := []struct {
		kind string
		n    int
		gen  func(i int) ([]byte, netip.AddrPort, error)
	}{
		{"srv: replay", 8000, func(i int) ([]byte, netip.AddrPort, error) {
			return g2s[i%len(g2s)].pkt, none, nil
		}},
		{"srv: replay from the gateway's address", 8000, func(i int) ([]byte, netip.AddrPort, error) {
			return g2s[i%len(g2s)].pkt, gw, nil
		}},
		{"srv: reflected server→gateway", 8000, func(i int) ([]byte, netip.AddrPort, error) {
			return either(i, s2g[i%len(s2g)].pkt)
		}},
		{"srv: bit-flipped", 10000, func(i int) ([]byte, netip.AddrPort, error) {
			return either(i, udpAbuseFlip(r, g2s[r.IntN(len(g2s))].pkt))
		}},
		{"srv: forged, live index, fresh counter", 8000, func(i int) ([]byte, netip.AddrPort, error) {
			idx, ctr, ok := gwTap.liveIndex(srv, true)
			if !ok {
				return nil, none, fmt.Errorf("no session index seen to %v", srv)
			}
			return either(i, udpAbuseForge(r, g2sTypes[i%len(g2sTypes)], idx, ctr+1+uint64(i%64)))
		}},
		{"srv: forged handshake", 3000, func(i int) ([]byte, netip.AddrPort, error) {
			switch i % 3 {
			case 0: // a CHALLENGE naming the live session's index
				idx, _, _ := gwTap.liveIndex(srv, true)
				c := fschunk.Challenge{Receiver: idx}
				copy(c.Cookie[:], udpAbuseRandom(r, fschunk.CookieSize))
				pkt := c.Append(nil)
				copy(pkt[len(pkt)-fschunk.MACSize:], udpAbuseRandom(r, fschunk.MACSize))
				return either(i, pkt)
			case 1:
				return either(i, forger.Hello(nil))
			}
			c := fschunk.Challenge{Receiver: r.Uint32()}
			return either(i, c.Append(nil))
		}},
		{"srv: truncated", 5000, func(i int) ([]byte, netip.AddrPort, error) {
			d := g2s[r.IntN(len(g2s))]
			return either(i, d.pkt[:r.IntN(len(d.pkt))])
		}},
		{"srv: random garbage", 5000, func(i int) ([]byte, netip.AddrPort, error) {
			return udpAbuseGarbage(r), none, nil
		}},
		{"srv: forged, guessed index", 5000, func(i int) ([]byte, netip.AddrPort, error) {
			return udpAbuseForge(r, g2sTypes[i%len(g2sTypes)], r.Uint32(), r.Uint64N(1<<20)), none, nil
		}},
	}
	return udpAbuseRun(s, steps)
}

// udpAbuseRun interleaves the steps' datagrams, so that every kind of
// attack overlaps the downloads.
func udpAbuseRun(s *udpAbuseSender, steps []struct {
	kind string
	n    int
	gen  func(i int) ([]byte, netip.AddrPort, error)
}) error {
	done := make([]int, len(steps))
	for left := true; left; {
		left = false
		for k, st := range steps {
			for j := 0; j < 50 && done[k] < st.n; j++ {
				pkt, from, err := st.gen(done[k])
				if err != nil {
					return fmt.Errorf("%s: %w", st.kind, err)
				}
				if err := s.send(st.kind, pkt, from); err != nil {
					return err
				}
				done[k]++
			}
			left = left || done[k] < st.n
		}
	}
	return nil
}

// ---------------------------------------------------------------- 2. amplification

// TestAbuseUDPAmplification measures, with real sockets, the bytes each
// kind of unauthenticated datagram gets sent back to the address it
// carries, per byte sent, at both ports: never more than 1.
func TestAbuseUDPAmplification(t *testing.T) {
	files := map[string][]byte{"amp.bin": randBytes(600 << 10)}
	u := udpAbuseNewEnv(t, files, 1)
	gwAddr, srvAddr := u.gwTap.addrPort(), u.srvTaps[0].addrPort()
	u.get("amp.bin")
	hello := u.gwTap.capturedType(false, fschunk.TypeHello)[0].pkt
	srvAuth := u.gwTap.capturedType(false, fschunk.TypeAuth)[0].pkt
	reads := u.gwTap.capturedType(true, fschunk.TypeRead)
	s2g := slices.Concat(u.gwTap.capturedType(false, fschunk.TypeHeartbeat), u.gwTap.capturedType(false, fschunk.TypeData), u.gwTap.capturedType(false, fschunk.TypeCatalogPage))
	g2s := u.gwTap.captured(true)
	hs := slices.Concat(u.gwTap.capturedType(true, fschunk.TypeChallenge), u.gwTap.capturedType(true, fschunk.TypeWelcome))
	r := rand.New(rand.NewPCG(5, 6))
	wrongKey, err := auth.NewKey(udpAbuseRandom(r, 32))
	if err != nil {
		t.Fatal(err)
	}
	forger := udpForger(wrongKey, 11)

	// A key holder K registers from its own socket; its AUTH replayed with
	// K's address (the attacker cannot make one) is the gateway's largest
	// unauthenticated answer: the session's WELCOME again.
	kConn, err := udpAbuseListen(u.att)
	if err != nil {
		t.Fatal(err)
	}
	authK, _, err := udpAbuseKeyHolderAuth(kConn, u.keyHolder(0x4b6579486f6c6472), gwAddr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kConn.WriteToUDPAddrPort(authK, gwAddr); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	kConn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, _, err := kConn.ReadFromUDPAddrPort(buf); err != nil || !udpAbuseIsType(buf[:n], fschunk.TypeWelcome) {
		t.Fatalf("key holder's handshake: no WELCOME (%v)", err)
	}
	kConn.SetReadDeadline(time.Time{})
	k := udpAbuseStartAttacker(kConn)
	defer k.close()
	victim, err := udpAbuseNewAttacker(u.att)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.close()

	oracle := func(pkt []byte, from netip.AddrPort) string {
		switch {
		case bytes.Equal(pkt, hello):
			return udpAbuseChallenge
		case bytes.Equal(pkt, authK) && from == k.addr:
			return udpAbuseWelcome
		}
		return ""
	}
	u.gwTap.oracle.Store(&oracle)

	const n = 300
	type kind struct {
		name   string
		tap    *udpAbuseTap
		victim *udpAbuseAttacker // answers go here when the source is forged
		gen    func(i int) []byte
		want   float64 // expected factor, from the specification
	}
	liveFwd := func(i int) []byte { // gateway's index for the server
		idx, ctr, _ := u.gwTap.liveIndex(srvAddr, false)
		return udpAbuseForge(r, fschunk.TypeHeartbeat, idx, ctr+1+uint64(i))
	}
	liveBack := func(typ fschunk.Type) func(i int) []byte { // server's index
		return func(i int) []byte {
			idx, ctr, _ := u.gwTap.liveIndex(srvAddr, true)
			return udpAbuseForge(r, typ, idx, ctr+1+uint64(i))
		}
	}
	kinds := []kind{
		// First: the key holder's session is evicted 3 s after its
		// handshake, and the gateway then refuses its AUTH as a replay.
		{"gateway: key holder's AUTH replayed, source = its address", u.gwTap, k, func(int) []byte { return authK }, float64(fschunk.WelcomeSize) / fschunk.AuthSize},
		{"gateway: HELLO replayed (captured)", u.gwTap, nil, func(int) []byte { return hello }, float64(fschunk.ChallengeSize) / fschunk.HelloSize},
		{"gateway: HELLO replayed, source = victim", u.gwTap, victim, func(int) []byte { return hello }, float64(fschunk.ChallengeSize) / fschunk.HelloSize},
		{"gateway: server's AUTH replayed from elsewhere", u.gwTap, nil, func(int) []byte { return srvAuth }, 0},
		{"gateway: forged HELLO (wrong key)", u.gwTap, nil, func(int) []byte { return forger.Hello(nil) }, 0},
		{"gateway: forged HEARTBEAT, live index", u.gwTap, nil, liveFwd, 0},
		{"gateway: forged READ, guessed session", u.gwTap, nil, func(i int) []byte { return udpAbuseForge(r, fschunk.TypeRead, r.Uint32(), uint64(i)) }, 0},
		{"gateway: server datagrams replayed", u.gwTap, nil, func(i int) []byte { return s2g[i%len(s2g)].pkt }, 0},
		{"gateway: gateway datagrams reflected", u.gwTap, nil, func(i int) []byte { return g2s[i%len(g2s)].pkt }, 0},
		{"gateway: HELLO truncated", u.gwTap, nil, func(i int) []byte { return hello[:i%fschunk.HelloSize] }, 0},
		{"gateway: random garbage", u.gwTap, nil, func(int) []byte { return udpAbuseGarbage(r) }, 0},
		{"server: READ replayed", u.srvTaps[0], nil, func(i int) []byte { return reads[i%len(reads)].pkt }, 0},
		{"server: READ replayed, source = victim", u.srvTaps[0], victim, func(i int) []byte { return reads[i%len(reads)].pkt }, 0},
		{"server: forged READ, live index", u.srvTaps[0], nil, liveBack(fschunk.TypeRead), 0},
		{"server: forged META_REQUEST, live index", u.srvTaps[0], nil, liveBack(fschunk.TypeMetaRequest), 0},
		{"server: forged GOODBYE, live index", u.srvTaps[0], nil, liveBack(fschunk.TypeGoodbye), 0},
		{"server: forged READ, guessed session", u.srvTaps[0], nil, func(i int) []byte { return udpAbuseForge(r, fschunk.TypeRead, r.Uint32(), uint64(i)) }, 0},
		{"server: CHALLENGE and WELCOME replayed", u.srvTaps[0], nil, func(i int) []byte { return hs[i%len(hs)].pkt }, 0},
		{"server: HELLO", u.srvTaps[0], nil, func(int) []byte { return hello }, 0},
		{"server: random garbage", u.srvTaps[0], nil, func(int) []byte { return udpAbuseGarbage(r) }, 0},
	}
	var totTx, totRx uint64
	var lines []string
	for _, kd := range kinds {
		from, err := udpAbuseNewAttacker(u.att)
		if err != nil {
			t.Fatal(err)
		}
		back := from
		if kd.victim != nil {
			back = kd.victim
		}
		isSrv := kd.tap != u.gwTap
		var s0 udpAbuseSrvSnap
		var g0 udpAbuseGwSnap
		if isSrv {
			s0 = u.snapServer(t, 0)
		} else {
			g0 = u.snapGateway(t)
		}
		rx0 := back.rxB.Load()
		snd := udpAbuseNewSender(kd.tap, []*udpAbuseAttacker{from})
		snd.backlog = 16 // a burst of DATA replays must fit a small socket buffer
		var tx uint64
		for i := range n {
			pkt := kd.gen(i)
			spoof := netip.AddrPort{}
			if kd.victim != nil {
				spoof = kd.victim.addr
			}
			if err := snd.send(kd.name, pkt, spoof); err != nil {
				t.Fatal(err)
			}
			tx += uint64(len(pkt))
		}
		snd.drain()
		// What the kernel drops still counts as sent: the factor is what
		// an attacker gets for what it spends.
		read := snd.delivered()
		if read == 0 {
			t.Errorf("%s: no datagram reached the target", kd.name)
		}
		// At rest, every answer is already in the receiving socket.
		if isSrv {
			udpAbuseCheckVerdicts(t, kd.name, s0.c, u.snapServer(t, 0).c)
		} else {
			udpAbuseCheckVerdicts(t, kd.name, g0.c, u.snapGateway(t).c)
		}
		back.settled()
		from.close()
		rx := back.rxB.Load() - rx0
		f := float64(rx) / float64(tx)
		totTx, totRx = totTx+tx, totRx+rx
		lines = append(lines, fmt.Sprintf("%-58s sent %7d B (%d/%d read), back %6d B, factor %.3f", kd.name, tx, read, n, rx, f))
		if f > 1 {
			t.Errorf("%s: amplification %.3f > 1 (%d B back for %d B)", kd.name, f, rx, tx)
		}
		if kd.want > 0 && rx == 0 {
			t.Errorf("%s: no answer at all, the measurement is broken", kd.name)
		}
		if kd.want == 0 && rx != 0 {
			t.Errorf("%s: %d B came back, want none", kd.name, rx)
		}
		if f > kd.want+1e-9 {
			t.Errorf("%s: factor %.3f above the specified %.3f", kd.name, f, kd.want)
		}
	}
	overall := float64(totRx) / float64(totTx)
	if overall > 1 {
		t.Errorf("overall amplification %.3f > 1", overall)
	}
	t.Logf("amplification to senders that never proved the key (%d datagrams per kind, bytes back to the source address / bytes sent):\n%s\noverall: %d B back for %d B sent, factor %.3f",
		n, strings.Join(lines, "\n"), totRx, totTx, overall)
}

// ---------------------------------------------------------------- 3. flood

// TestAbuseUDPGarbageFlood floods the gateway's and a server's UDP ports
// with random datagrams while several clients download a multi-MiB file:
// every download is byte-exact and every flooded datagram is dropped.
// Times and rates are printed, not judged.
func TestAbuseUDPGarbageFlood(t *testing.T) {
	const clients = 4
	files := map[string][]byte{"flood.bin": randBytes(8<<20 + 77)}
	u := udpAbuseNewEnv(t, files, 3)
	want := files["flood.bin"]

	round := func() ([]time.Duration, time.Duration, error) {
		start := time.Now()
		times := make([]time.Duration, clients)
		errs := make([]error, clients)
		var wg sync.WaitGroup
		for c := range clients {
			wg.Go(func() { times[c], errs[c] = udpAbuseFetch(u.url("flood.bin"), want) })
		}
		wg.Wait()
		sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
		for _, err := range errs {
			if err != nil {
				return nil, 0, err
			}
		}
		return times, time.Since(start), nil
	}
	calm, calmWall, err := round()
	if err != nil {
		t.Fatalf("calm download: %v", err)
	}

	var attackers []*udpAbuseAttacker
	for range 2 {
		a, err := udpAbuseNewAttacker(u.att)
		if err != nil {
			t.Fatal(err)
		}
		defer a.close()
		attackers = append(attackers, a)
	}
	gw0, s0 := u.snapGateway(t), u.snapServer(t, 0)
	stop := make(chan struct{})
	var fw sync.WaitGroup
	snds := []*udpAbuseSender{udpAbuseNewSender(u.gwTap, attackers[:1]), udpAbuseNewSender(u.srvTaps[0], attackers[1:])}
	for _, s := range snds {
		// A flood does not wait for its target: what the socket buffer
		// cannot hold is lost, as it would be.
		s.backlog, s.patience = 1024, 20*time.Millisecond
	}
	floodErr := make([]error, len(snds))
	floodStart := time.Now()
	for i, s := range snds {
		// Made beforehand, so that the flood is as fast as sockets go.
		r := rand.New(rand.NewPCG(uint64(i), 99))
		garbage := make([][]byte, 4096)
		for j := range garbage {
			garbage[j] = udpAbuseGarbage(r)
		}
		fw.Go(func() {
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := s.send("garbage", garbage[j%len(garbage)], netip.AddrPort{}); err != nil {
					floodErr[i] = err
					return
				}
			}
		})
	}
	flood, floodWall, dlErr := round()
	close(stop)
	fw.Wait()
	floodTime := time.Since(floodStart)
	for _, s := range snds {
		s.drain()
	}
	if dlErr != nil {
		t.Fatalf("download under flood: %v\n%s", dlErr, u.diagnose())
	}
	for _, err := range floodErr {
		if err != nil {
			t.Fatalf("flood: %v", err)
		}
	}
	gw1, s1 := u.snapGateway(t), u.snapServer(t, 0)

	gA, sA := gw1.c.attack-gw0.c.attack, s1.c.attack-s0.c.attack
	gv := udpAbuseCheckVerdicts(t, "gateway", gw0.c, gw1.c)
	sv := udpAbuseCheckVerdicts(t, "server 1", s0.c, s1.c)
	var back uint64
	for _, a := range attackers {
		a.settled()
		back += a.rxB.Load()
	}
	if back != 0 {
		t.Errorf("the flooders got %d B back", back)
	}

	mib := float64(len(want)) / (1 << 20)
	rate := func(ts []time.Duration, wall time.Duration) string {
		parts := make([]string, len(ts))
		for i, d := range ts {
			parts[i] = d.Round(time.Millisecond).String()
		}
		return fmt.Sprintf("%s (%.1f MiB/s aggregate)", strings.Join(parts, ", "), clients*mib/wall.Seconds())
	}
	t.Logf("garbage flood: %d datagrams sent; %d (%d B) read by the gateway and %d (%d B) by server 1 in %v, %.0f datagrams/s; verdicts: gateway %s, server %s; %d B back to the flooders",
		snds[0].sent+snds[1].sent, gA, gw1.c.attackBytes-gw0.c.attackBytes, sA, s1.c.attackBytes-s0.c.attackBytes, floodTime.Round(time.Millisecond), float64(gA+sA)/floodTime.Seconds(),
		udpAbuseKinds(gv), udpAbuseKinds(sv), back)
	t.Logf("%d concurrent downloads of %.1f MiB from 3 servers, byte-exact: calm %s; under flood %s", clients, mib, rate(calm, calmWall), rate(flood, floodWall))
}
