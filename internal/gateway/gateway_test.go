package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/httpfront"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startGW(t *testing.T, key *auth.Key) (*Gateway, *net.UDPAddr) {
	t.Helper()
	return startGWWith(t, Config{Key: key})
}

// startGWWith starts a gateway on a loopback socket with cfg (Conn is set
// here).
func startGWWith(t *testing.T, cfg Config) (*Gateway, *net.UDPAddr) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Conn = pc
	if cfg.Static.IsZero() {
		cfg.Static = testGW
	}
	if cfg.Allowed == nil {
		cfg.Allowed = testAllowed()
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; pc.Close() })
	return g, pc.LocalAddr().(*net.UDPAddr)
}

// The static key pairs of the tests: the gateway's and one server's,
// which the gateways of the tests admit.
var (
	testGW  = auth.GenerateStaticKey()
	testSrv = auth.GenerateStaticKey()
)

func testAllowed() Allowed { return Allowed{testSrv.Public(): ""} }

// newInitiator is a server's side of the handshake with testSrv's key,
// addressed to testGW.
func newInitiator(t testing.TB, key *auth.Key, instance uint64, lim auth.Limits) *auth.Initiator {
	t.Helper()
	return newInitiatorAs(t, key, testSrv, instance, lim)
}

func newInitiatorAs(t testing.TB, key *auth.Key, static auth.StaticKey, instance uint64, lim auth.Limits) *auth.Initiator {
	t.Helper()
	in, err := auth.NewInitiator(key, static, []auth.PublicKey{testGW.Public()}, instance, lim)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func newKey(t *testing.T) *auth.Key {
	b := make([]byte, 32)
	rand.Read(b)
	k, err := auth.NewKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// client is a socket that counts what it sends and receives.
type client struct {
	t        *testing.T
	c        *net.UDPConn
	to       *net.UDPAddr
	sent     int
	received int
}

func newClient(t *testing.T, to *net.UDPAddr) *client {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, to: to}
}

func (c *client) send(b []byte) {
	c.t.Helper()
	if _, err := c.c.WriteToUDP(b, c.to); err != nil {
		c.t.Fatal(err)
	}
	c.sent += len(b)
}

// recv returns the next datagram, or nil after wait.
func (c *client) recv(wait time.Duration) []byte {
	buf := make([]byte, 65536)
	c.c.SetReadDeadline(time.Now().Add(wait))
	n, _, err := c.c.ReadFromUDP(buf)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil
		}
		c.t.Fatal(err)
	}
	c.received += n
	return buf[:n]
}

// register runs a real handshake and returns the server's session.
func register(t *testing.T, c *client, key *auth.Key) *auth.Session {
	t.Helper()
	return registerAs(t, c, key, 42)
}

// registerAs is register for the server instance given.
func registerAs(t *testing.T, c *client, key *auth.Key, instance uint64) *auth.Session {
	t.Helper()
	in := newInitiator(t, key, instance, auth.DefaultLimits)
	c.send(in.Hello(nil))
	ch := c.recv(2 * time.Second)
	a, err := in.HandleChallenge(ch, nil)
	if err != nil {
		t.Fatalf("challenge: %v", err)
	}
	c.send(a)
	s, _, err := in.HandleWelcome(c.recv(2*time.Second), time.Now())
	if err != nil {
		t.Fatalf("welcome: %v", err)
	}
	return s
}

func seal(t *testing.T, s *auth.Session, typ fschunk.Type, body []byte) []byte {
	b := fschunk.AppendHeader(nil, fschunk.Header{Type: typ})
	p, err := s.Seal(append(b, body...), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUnauthenticatedGetNothing: garbage, forgeries and handshakes under
// the wrong key get no answer at all, and nothing is allocated for them.
func TestUnauthenticatedGetNothing(t *testing.T) {
	key := newKey(t)
	g, addr := startGW(t, key)
	atk := newClient(t, addr)
	wrong := newInitiator(t, newKey(t), 1, auth.DefaultLimits)
	junk := make([]byte, 200)
	// Paced by what the gateway has handled, so that none is dropped by
	// the kernel before it is judged.
	sent := uint64(0)
	send := func(b []byte) {
		atk.send(b)
		if sent++; sent%64 == 0 {
			waitReceived(t, g, sent)
		}
	}
	for i := 0; i < 2000; i++ {
		rand.Read(junk[:1+i%199])
		send(junk[:1+i%199])
	}
	for i := 0; i < 200; i++ {
		send(wrong.Hello(nil))
		var a fschunk.Auth
		rand.Read(a.Cookie[:])
		send(a.Append(nil))
		h := fschunk.AppendHeader(nil, fschunk.Header{Type: fschunk.TypeHeartbeat, Receiver: uint32(i), Counter: uint64(i)})
		send(append(h, make([]byte, 48)...))
	}
	waitReceived(t, g, sent) // all handled: any answer is on its way
	if b := atk.recv(300 * time.Millisecond); b != nil {
		t.Fatalf("answered an unauthenticated sender with %d bytes", len(b))
	}
	st := g.Stats()
	if st.Handshakes != 0 || st.DropGarbage+st.DropAuth+st.DropUnknownSession == 0 {
		t.Fatalf("stats %+v", st)
	}
	g.mu.RLock()
	n := g.sessions.Len() + len(g.peers)
	g.mu.RUnlock()
	if n != 0 {
		t.Fatalf("%d sessions/peers allocated for unauthenticated senders", n)
	}
}

// TestAmplification: a captured HELLO replayed from a spoofed address
// earns that address fewer bytes than were sent.
func TestAmplification(t *testing.T) {
	key := newKey(t)
	_, addr := startGW(t, key)
	victim := newClient(t, addr)
	hello := newInitiator(t, key, 1, auth.DefaultLimits).Hello(nil)
	for i := 0; i < 50; i++ {
		victim.send(hello)
	}
	for victim.recv(200*time.Millisecond) != nil {
	}
	if victim.received == 0 || victim.received > 50*fschunk.ChallengeSize {
		t.Fatalf("%d bytes back for 50 HELLOs: want one CHALLENGE (%d bytes) for each, at most", victim.received, fschunk.ChallengeSize)
	}
	if f := float64(victim.received) / float64(victim.sent); f > 1.0 {
		t.Fatalf("amplification %.2f (%d bytes for %d)", f, victim.received, victim.sent)
	}
}

// TestSessionSecurity: heartbeats are acknowledged; replays, bit flips and
// reflections are not.
func TestSessionSecurity(t *testing.T) {
	key := newKey(t)
	g, addr := startGW(t, key)
	c := newClient(t, addr)
	s := register(t, c, key)
	hb := seal(t, s, fschunk.TypeHeartbeat, (&fschunk.Heartbeat{Seq: 1}).Append(nil))
	keep := bytes.Clone(hb)
	c.send(hb)
	ack := c.recv(2 * time.Second)
	if ack == nil {
		t.Fatal("no heartbeat ack")
	}
	reflected := bytes.Clone(ack)
	if _, body, err := s.Open(ack, time.Now()); err != nil || len(body) == 0 {
		t.Fatalf("open ack: %v", err)
	}
	before := g.Stats().Received
	c.send(keep) // replay
	flipped := seal(t, s, fschunk.TypeHeartbeat, (&fschunk.Heartbeat{Seq: 2}).Append(nil))
	flipped[20] ^= 1
	c.send(flipped)
	c.send(reflected) // the gateway's own datagram sent back to it
	waitReceived(t, g, before+3)
	if b := c.recv(300 * time.Millisecond); b != nil {
		t.Fatalf("answered a replay/forgery/reflection with %d bytes", len(b))
	}
	st := g.Stats()
	if st.DropReplay != 1 || st.DropAuth != 1 || st.DropUnknownSession != 1 {
		t.Fatalf("stats %+v", st)
	}
	if len(g.Pool().Servers()) != 1 {
		t.Fatal("server not in the pool")
	}
	// Goodbye evicts at once.
	c.send(seal(t, s, fschunk.TypeGoodbye, (&fschunk.Goodbye{}).Append(nil)))
	deadline := time.Now().Add(2 * time.Second)
	for len(g.Pool().Servers()) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("not evicted after goodbye")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCatalogAssembly: pages in any order, duplicated, then a delta and a
// delta against the wrong base.
func TestCatalogAssembly(t *testing.T) {
	key := newKey(t)
	g, addr := startGW(t, key)
	c := newClient(t, addr)
	s := register(t, c, key)
	e := func(p string) fschunk.Entry {
		return fschunk.Entry{Path: p, Size: 1, ModTime: time.Unix(1, 0).UTC()}
	}
	pages := []fschunk.CatalogPage{
		{Gen: 5, Page: 1, Pages: 2, Entries: []fschunk.Entry{e("b")}},
		{Gen: 5, Page: 0, Pages: 2, Entries: []fschunk.Entry{e("a")}},
	}
	for _, p := range append(pages, pages[0]) {
		c.send(seal(t, s, fschunk.TypeCatalogPage, p.Append(nil)))
		c.recv(time.Second)
	}
	if g.Pool().CatalogGen(42) != 5 || g.Pool().Files() != 2 {
		t.Fatalf("gen %d files %d", g.Pool().CatalogGen(42), g.Pool().Files())
	}
	d := fschunk.CatalogDelta{Base: 4, Gen: 6, Pages: 1, Entries: []fschunk.Entry{e("c")}, Removed: []bool{false}}
	c.send(seal(t, s, fschunk.TypeCatalogDelta, d.Append(nil)))
	_, body, err := s.Open(c.recv(time.Second), time.Now())
	var ack fschunk.CatalogAck
	if err != nil || ack.Decode(body) != nil || ack.Status != fschunk.CatalogResync {
		t.Fatalf("wrong base: %+v %v", ack, err)
	}
	d.Base = 5
	c.send(seal(t, s, fschunk.TypeCatalogDelta, d.Append(nil)))
	c.recv(time.Second)
	if g.Pool().CatalogGen(42) != 6 || g.Pool().Files() != 3 {
		t.Fatalf("after delta: gen %d files %d", g.Pool().CatalogGen(42), g.Pool().Files())
	}
}

// TestAuthReplayAfterSessionEnds: an AUTH replayed within the cookie's
// lifetime after its session ended must not re-create the session (its
// keys would seal from counter 0 again).
func TestAuthReplayAfterSessionEnds(t *testing.T) {
	key := newKey(t)
	g, addr := startGW(t, key)
	c := newClient(t, addr)
	in := newInitiator(t, key, 7, auth.DefaultLimits)
	c.send(in.Hello(nil))
	a, err := in.HandleChallenge(c.recv(2*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.send(a)
	s, _, err := in.HandleWelcome(c.recv(2*time.Second), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c.send(a) // a retransmitted AUTH while the session lives: WELCOME again
	if c.recv(time.Second) == nil {
		t.Fatal("no WELCOME for a retransmitted AUTH")
	}
	c.send(seal(t, s, fschunk.TypeGoodbye, (&fschunk.Goodbye{}).Append(nil)))
	deadline := time.Now().Add(2 * time.Second)
	for len(g.Pool().Servers()) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("not evicted after goodbye")
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.send(a)
	if b := c.recv(300 * time.Millisecond); b != nil {
		t.Fatalf("replayed AUTH after the session ended got %d bytes", len(b))
	}
	if g.Stats().Handshakes != 1 {
		t.Fatalf("handshakes %d, want 1", g.Stats().Handshakes)
	}
}

// TestNewSessionUsedOnceConfirmed: after a second handshake of the same
// server (rekey or re-registration) the gateway keeps sending on the old
// session until the server uses the new one, so a lost WELCOME does not
// black-hole the gateway's READs.
func TestNewSessionUsedOnceConfirmed(t *testing.T) {
	key := newKey(t)
	g, addr := startGW(t, key)
	c := newClient(t, addr)
	a := register(t, c, key)
	b := register(t, c, key) // same instance (42): a rekey
	read := func() *fschunk.Read {
		return &fschunk.Read{ID: 1, MaxDatagram: 1452, Ranges: []fschunk.Range{{Offset: 0, Length: 10}}}
	}
	opens := func(s *auth.Session) bool {
		t.Helper()
		if err := g.SendRead(42, read()); err != nil {
			t.Fatal(err)
		}
		pkt := c.recv(time.Second)
		_, _, err := s.Open(pkt, time.Now())
		return err == nil
	}
	if !opens(a) {
		t.Fatal("READ not sealed on the old session before the new one was used")
	}
	c.send(seal(t, b, fschunk.TypeHeartbeat, (&fschunk.Heartbeat{Seq: 1}).Append(nil)))
	c.recv(time.Second) // the ack
	if !opens(b) {
		t.Fatal("READ not sealed on the new session after the server used it")
	}
}

// waitReceived waits until g has read at least n datagrams: handled, so
// the counters and any answer are final.
func waitReceived(t *testing.T, g *Gateway, n uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := g.Stats()
		// Handshakes are answered by their own worker: done when it has
		// handled every one queued.
		if st.Received >= n && st.HandshakesDone == st.HandshakesQueued {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway read %d datagrams, want %d; handshakes %d of %d handled", st.Received, n, st.HandshakesDone, st.HandshakesQueued)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestRekeyLoggedAtDebug: a server joining is an info line; the same
// server rekeying (every two minutes) is not.
func TestRekeyLoggedAtDebug(t *testing.T) {
	var logs syncBuf
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	g, err := New(Config{Conn: pc, Key: key, Static: testGW, Allowed: testAllowed(), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; pc.Close() })
	c := newClient(t, pc.LocalAddr().(*net.UDPAddr))
	register(t, c, key)
	register(t, c, key) // the same instance again: a rekey
	if n := strings.Count(logs.String(), `msg="server session"`); n != 1 {
		t.Fatalf("%d info lines for one join and one rekey, want 1:\n%s", n, logs.String())
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestReceiveBatches: datagrams waiting in the socket are read many per
// system call (a flood costs a fraction of a call per datagram), and each
// is still handled: 100 garbage datagrams queued before the loop starts
// are 100 received and 100 garbage, in a few reads.
func TestReceiveBatches(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	g, err := New(Config{Conn: pc, Key: newKey(t), Static: testGW, Allowed: testAllowed()})
	if err != nil {
		t.Fatal(err)
	}
	if g.conn.BatchSize() == 1 {
		t.Skip("no batch reads on this system")
	}
	c := newClient(t, pc.LocalAddr().(*net.UDPAddr))
	const n = 100
	for i := range n {
		c.send([]byte{byte(i)})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitReceived(t, g, n)
	st := g.Stats()
	if st.Received != n || st.DropGarbage != n {
		t.Fatalf("received %d, garbage %d; want %d each", st.Received, st.DropGarbage, n)
	}
	// All 100 wait before the loop starts, so reads of 32 take 4 system
	// calls; a loaded kernel may deliver some late, so only one datagram
	// per call is a failure.
	if st.Reads == 0 || st.Reads >= st.Received {
		t.Fatalf("%d datagrams in %d reads: not batched (batch size %d)", st.Received, st.Reads, g.conn.BatchSize())
	}
	t.Logf("%d datagrams in %d reads", st.Received, st.Reads)
}

// TestSourceStarting: the gateway reports itself starting (unknown paths
// are 503, not 404) for EvictAfter after New, by its clock, and no longer.
func TestSourceStarting(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	g, err := New(Config{Conn: pc, Key: newKey(t), Static: testGW, Allowed: testAllowed(),
		EvictAfter: 3 * time.Second, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	var st httpfront.Starter = g.Source()
	if !st.Starting() {
		t.Fatal("not starting right after New")
	}
	now = now.Add(3*time.Second - time.Nanosecond)
	if !st.Starting() {
		t.Fatal("not starting just before EvictAfter")
	}
	now = now.Add(time.Nanosecond)
	if st.Starting() {
		t.Fatal("still starting after EvictAfter")
	}
}
