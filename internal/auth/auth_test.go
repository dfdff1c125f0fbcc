package auth

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/fschunk"
)

var (
	srvAddr = netip.MustParseAddrPort("192.0.2.10:40000")
	t0      = time.Unix(1_800_000_000, 0)
)

func testKey(t testing.TB, b byte) *Key {
	t.Helper()
	k, err := NewKey(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The static key pairs of the tests: one server, one gateway.
var (
	srvStatic = GenerateStaticKey()
	gwStatic  = GenerateStaticKey()
)

func newIn(t testing.TB, k *Key, instance uint64, lim Limits) *Initiator {
	t.Helper()
	in, err := NewInitiator(k, srvStatic, []PublicKey{gwStatic.Public()}, instance, lim)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func newResp(t testing.TB, k *Key, lim Limits, mono func() time.Duration) *Responder {
	t.Helper()
	r, err := NewResponder(k, []StaticKey{gwStatic}, lim, mono)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

type clock struct{ t time.Time }

// mono is the responder's monotonic clock, as time since t0.
func (c *clock) mono() time.Duration { return c.t.Sub(t0) }

// handshake runs the three messages and returns both ends' sessions.
func handshake(t testing.TB, srvKey, gwKey *Key, lim Limits, c *clock) (srv, gw *Session) {
	t.Helper()
	in := newIn(t, srvKey, 77, lim)
	r := newResp(t, gwKey, lim, c.mono)
	hello := in.Hello(nil)
	chal, err := r.HandleHello(hello, srvAddr, nil)
	if err != nil {
		t.Fatalf("HandleHello: %v", err)
	}
	if len(chal) > len(hello) {
		t.Fatalf("amplification: CHALLENGE %d bytes for a HELLO of %d", len(chal), len(hello))
	}
	authMsg, err := in.HandleChallenge(chal, nil)
	if err != nil {
		t.Fatalf("HandleChallenge: %v", err)
	}
	acc, err := r.HandleAuth(authMsg, srvAddr, nil)
	if err != nil {
		t.Fatalf("HandleAuth: %v", err)
	}
	gw, err = acc.NewSession(1234, c.t)
	if err != nil {
		t.Fatal(err)
	}
	wel, err := Welcome(gw, fschunk.Welcome{GatewayIndex: 1234, GatewayBoot: 5, HeartbeatInterval: time.Second, MaxDatagram: 1452}, nil, c.t)
	if err != nil {
		t.Fatal(err)
	}
	if len(wel) > len(authMsg) {
		t.Fatalf("WELCOME %d bytes for an AUTH of %d", len(wel), len(authMsg))
	}
	srv, w, err := in.HandleWelcome(wel, c.t)
	if err != nil {
		t.Fatalf("HandleWelcome: %v", err)
	}
	if w.GatewayIndex != 1234 || srv.RemoteIndex != 1234 || gw.RemoteIndex != srv.LocalIndex {
		t.Fatalf("indexes: welcome %+v, srv %d→%d, gw %d→%d", w, srv.LocalIndex, srv.RemoteIndex, gw.LocalIndex, gw.RemoteIndex)
	}
	return srv, gw
}

func sealed(t testing.TB, s *Session, typ fschunk.Type, body []byte, now time.Time) []byte {
	t.Helper()
	b := fschunk.AppendHeader(make([]byte, 0, 2048), fschunk.Header{Type: typ})
	b = append(b, body...)
	pkt, err := s.Seal(b, now)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return pkt
}

func TestHandshakeAndData(t *testing.T) {
	c := &clock{t0}
	srv, gw := handshake(t, testKey(t, 1), testKey(t, 1), DefaultLimits, c)
	for i, dir := range []struct{ from, to *Session }{{srv, gw}, {gw, srv}} {
		body := []byte("chunk bytes of direction " + string(rune('A'+i)))
		pkt := sealed(t, dir.from, fschunk.TypeData, body, c.t)
		if len(pkt) != fschunk.Overhead+len(body) {
			t.Fatalf("overhead: %d bytes for a %d-byte body", len(pkt), len(body))
		}
		h, got, err := dir.to.Open(pkt, c.t)
		if err != nil || !bytes.Equal(got, body) || h.Type != fschunk.TypeData {
			t.Fatalf("Open = %v %q %v", h, got, err)
		}
	}
}

func TestRejections(t *testing.T) {
	c := &clock{t0}
	srv, gw := handshake(t, testKey(t, 1), testKey(t, 1), DefaultLimits, c)
	fresh := func() []byte { return sealed(t, srv, fschunk.TypeHeartbeat, make([]byte, 32), c.t) }

	t.Run("every bit flipped", func(t *testing.T) {
		pkt := fresh()
		for bit := 0; bit < len(pkt)*8; bit++ {
			p := bytes.Clone(pkt)
			p[bit/8] ^= 1 << (bit % 8)
			if _, _, err := gw.Open(p, c.t); err == nil {
				t.Fatalf("bit %d flipped: accepted", bit)
			}
		}
		if _, _, err := gw.Open(pkt, c.t); err != nil {
			t.Fatalf("the original after %d forgeries: %v (a forgery burned its counter)", len(pkt)*8, err)
		}
	})
	t.Run("replay", func(t *testing.T) {
		pkt := fresh()
		keep := bytes.Clone(pkt)
		if _, _, err := gw.Open(pkt, c.t); err != nil {
			t.Fatal(err)
		}
		if _, _, err := gw.Open(keep, c.t); !errors.Is(err, ErrReplay) {
			t.Fatalf("replay: %v", err)
		}
	})
	t.Run("reflection", func(t *testing.T) {
		// A gateway datagram sent back to the gateway: other index, other key.
		pkt := sealed(t, gw, fschunk.TypeRead, make([]byte, 60), c.t)
		if _, _, err := gw.Open(pkt, c.t); err == nil {
			t.Fatal("reflected datagram accepted")
		}
		// Even with the index rewritten, the direction's key differs.
		p := bytes.Clone(pkt)
		fschunk.PutHeaderIDs(p, gw.LocalIndex, 1<<30)
		if _, _, err := gw.Open(p, c.t); !errors.Is(err, ErrForged) {
			t.Fatalf("reflected with our index: %v", err)
		}
	})
	t.Run("truncated and extended", func(t *testing.T) {
		pkt := fresh()
		for n := 0; n < len(pkt); n++ {
			if _, _, err := gw.Open(bytes.Clone(pkt[:n]), c.t); err == nil {
				t.Fatalf("truncated to %d: accepted", n)
			}
		}
		if _, _, err := gw.Open(append(bytes.Clone(pkt), 0), c.t); err == nil {
			t.Fatal("extended: accepted")
		}
	})
	t.Run("expired", func(t *testing.T) {
		pkt := fresh()
		if _, _, err := gw.Open(pkt, t0.Add(fschunk.RejectAfterTime)); !errors.Is(err, ErrExpired) {
			t.Fatalf("old session: %v", err)
		}
	})
}

func TestWrongKey(t *testing.T) {
	c := &clock{t0}
	in := newIn(t, testKey(t, 1), 1, DefaultLimits)
	r := newResp(t, testKey(t, 2), DefaultLimits, c.mono)
	if _, err := r.HandleHello(in.Hello(nil), srvAddr, nil); !errors.Is(err, ErrBadMAC) {
		t.Fatalf("fake server HELLO: %v", err)
	}
	// A fake gateway: its CHALLENGE does not verify at the server.
	fake := newResp(t, testKey(t, 2), DefaultLimits, c.mono)
	hello := in.Hello(nil)
	// The fake gateway cannot verify the HELLO, so it forges a CHALLENGE for
	// it, correct in every field and MACed over the right HELLO nonce, but
	// with its own key: only the key differs.
	chal, err := fake.HandleHello(newIn(t, testKey(t, 2), 1, DefaultLimits).Hello(nil), srvAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cm fschunk.Challenge
	_ = cm.Decode(chal)
	var h fschunk.Hello
	_ = h.Decode(hello)
	cm.Receiver = h.Sender
	forged := cm.Append(nil)
	putMAC(testKey(t, 2).macKey(gwStatic.Public()), forged, h.Nonce[:])
	if _, err := in.HandleChallenge(forged, nil); !errors.Is(err, ErrBadMAC) {
		t.Fatalf("fake gateway CHALLENGE: %v", err)
	}
}

func TestCookie(t *testing.T) {
	c := &clock{t0}
	k := testKey(t, 1)
	r := newResp(t, k, DefaultLimits, c.mono)
	run := func(from netip.AddrPort, advance time.Duration) error {
		in := newIn(t, k, 9, DefaultLimits)
		chal, err := r.HandleHello(in.Hello(nil), srvAddr, nil)
		if err != nil {
			return err
		}
		a, err := in.HandleChallenge(chal, nil)
		if err != nil {
			return err
		}
		c.t = c.t.Add(advance)
		_, err = r.HandleAuth(a, from, nil)
		return err
	}
	if err := run(srvAddr, 0); err != nil {
		t.Fatalf("same address: %v", err)
	}
	if err := run(netip.MustParseAddrPort("192.0.2.10:40001"), 0); !errors.Is(err, ErrBadCookie) {
		t.Fatalf("other port: %v", err)
	}
	if err := run(srvAddr, fschunk.CookieLifetime+time.Second); !errors.Is(err, ErrBadCookie) {
		t.Fatalf("stale cookie: %v", err)
	}
	if err := run(srvAddr, fschunk.CookieRotation); !errors.Is(err, ErrBadCookie) {
		t.Fatalf("cookie far past its lifetime: %v", err)
	}
	// A cookie issued just before a rotation still verifies after it: a
	// fresh responder rotates CookieRotation from now, so the HELLO lands
	// 2 s before its rotation and the AUTH 1 s after.
	r = newResp(t, k, DefaultLimits, c.mono)
	c.t = c.t.Add(fschunk.CookieRotation - 2*time.Second)
	if err := run(srvAddr, 3*time.Second); err != nil {
		t.Fatalf("across one rotation: %v", err)
	}
	// A replayed AUTH from a spoofed address is refused.
	in := newIn(t, k, 9, DefaultLimits)
	chal, _ := r.HandleHello(in.Hello(nil), srvAddr, nil)
	a, _ := in.HandleChallenge(chal, nil)
	if _, err := r.HandleAuth(a, netip.MustParseAddrPort("198.51.100.1:40000"), nil); !errors.Is(err, ErrBadCookie) {
		t.Fatalf("AUTH replayed from elsewhere: %v", err)
	}
}

// TestRestart: after either side restarts, datagrams of the old session
// are refused: the new side has other keys even if an index collides.
func TestRestart(t *testing.T) {
	c := &clock{t0}
	k := testKey(t, 1)
	oldSrv, oldGw := handshake(t, k, k, DefaultLimits, c)
	newSrv, newGw := handshake(t, k, k, DefaultLimits, c)
	fromOld := sealed(t, oldSrv, fschunk.TypeHeartbeat, make([]byte, 32), c.t)
	p := bytes.Clone(fromOld)
	fschunk.PutHeaderIDs(p, newGw.LocalIndex, 1<<20)
	if _, _, err := newGw.Open(p, c.t); !errors.Is(err, ErrForged) {
		t.Fatalf("old server session at restarted gateway: %v", err)
	}
	toOld := sealed(t, oldGw, fschunk.TypeRead, make([]byte, 52), c.t)
	fschunk.PutHeaderIDs(toOld, newSrv.LocalIndex, 1<<20)
	if _, _, err := newSrv.Open(toOld, c.t); !errors.Is(err, ErrForged) {
		t.Fatalf("old gateway session at restarted server: %v", err)
	}
}

func TestLimits(t *testing.T) {
	c := &clock{t0}
	lim := Limits{RekeyAfterTime: time.Minute, RejectAfterTime: 2 * time.Minute, RekeyAfterMessages: 3, RejectAfterMessages: 5}
	srv, gw := handshake(t, testKey(t, 1), testKey(t, 1), lim, c)
	for i := 0; i < 3; i++ {
		if srv.NeedsRekey(c.t) {
			t.Fatalf("rekey wanted after %d datagrams", i)
		}
		pkt := sealed(t, srv, fschunk.TypeHeartbeat, nil, c.t)
		if _, _, err := gw.Open(pkt, c.t); err != nil {
			t.Fatal(err)
		}
	}
	if !srv.NeedsRekey(c.t) {
		t.Fatal("no rekey after the message bound")
	}
	sealed(t, srv, fschunk.TypeHeartbeat, nil, c.t)
	sealed(t, srv, fschunk.TypeHeartbeat, nil, c.t)
	if _, err := srv.Seal(fschunk.AppendHeader(nil, fschunk.Header{Type: fschunk.TypeHeartbeat}), c.t); !errors.Is(err, ErrExpired) {
		t.Fatalf("seal past the reject bound: %v", err)
	}
	if !gw.NeedsRekey(t0.Add(time.Minute)) || !gw.Expired(t0.Add(2*time.Minute)) {
		t.Fatal("time bounds not applied")
	}
}

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name, path string
		ok         bool
	}{
		{"good", write("good", bytes.Repeat([]byte{7}, 32)), true},
		{"short", write("short", []byte("too short")), false},
		{"huge", write("huge", make([]byte, 1<<20)), false},
		{"missing", filepath.Join(dir, "nope"), false},
		{"unset", "", false},
	}
	for _, c := range cases {
		_, err := LoadKey(c.path)
		if (err == nil) != c.ok {
			t.Errorf("%s: err = %v", c.name, err)
		}
		if err != nil && (!errors.Is(err, ErrKey) || !strings.Contains(err.Error(), "head -c 32 /dev/urandom") && c.name != "huge") {
			t.Errorf("%s: error %q lacks ErrKey or the hint", c.name, err)
		}
	}
}

// FuzzResponder: nothing a sender without the key can send makes the
// gateway answer or accept; and answers are never larger than the input.
func FuzzResponder(f *testing.F) {
	k, _ := NewKey(bytes.Repeat([]byte{1}, 32))
	in := newIn(f, k, 1, DefaultLimits)
	f.Add(in.Hello(nil))
	f.Add(make([]byte, fschunk.AuthSize))
	r := newResp(f, k, DefaultLimits, nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		if out, err := r.HandleHello(b, srvAddr, nil); err == nil {
			if len(out) > len(b) {
				t.Fatalf("answer of %d bytes to %d", len(out), len(b))
			}
			// Only a correctly MACed HELLO is answered; the fuzzer finding
			// one other than a seed would mean the MAC is broken.
			var h fschunk.Hello
			if h.Decode(b) != nil || !checkMAC(k.macKey(gwStatic.Public()), b, nil) {
				t.Fatal("answered an unauthenticated HELLO")
			}
		}
		if _, err := r.HandleAuth(b, srvAddr, nil); err == nil {
			t.Fatal("accepted a fuzzed AUTH")
		}
	})
}

func benchSessions(b *testing.B) (srv, gw *Session) {
	c := &clock{time.Now()}
	return handshake(b, testKey(b, 1), testKey(b, 1), DefaultLimits, c)
}

// BenchmarkSealData: build and seal a full-size DATA datagram (1452 bytes).
func BenchmarkSealData(b *testing.B) {
	srv, _ := benchSessions(b)
	payload := make([]byte, fschunk.DefaultDatagramSize-fschunk.DataOverhead)
	buf := make([]byte, 0, fschunk.DefaultDatagramSize)
	now := time.Now()
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		p := fschunk.AppendHeader(buf[:0], fschunk.Header{Type: fschunk.TypeData})
		p = fschunk.AppendDataHeader(p, 1, 1<<20)
		p = append(p, payload...)
		if _, err := srv.Seal(p, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenData: open and decode a full-size DATA datagram.
func BenchmarkOpenData(b *testing.B) {
	srv, gw := benchSessions(b)
	now := time.Now()
	payload := make([]byte, fschunk.DefaultDatagramSize-fschunk.DataOverhead)
	// Pre-seal distinct counters so the replay window accepts every one.
	const n = 4096
	pkts := make([][]byte, n)
	for i := range pkts {
		p := fschunk.AppendHeader(make([]byte, 0, fschunk.DefaultDatagramSize), fschunk.Header{Type: fschunk.TypeData})
		p = fschunk.AppendDataHeader(p, 1, int64(i))
		p, _ = srv.Seal(append(p, payload...), now)
		pkts[i] = p
	}
	work := make([]byte, fschunk.DefaultDatagramSize)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	i := 0
	var d fschunk.Data
	for b.Loop() {
		if i == n { // re-seal a fresh batch outside the timer
			b.StopTimer()
			for j := range pkts {
				p := fschunk.AppendHeader(pkts[j][:0], fschunk.Header{Type: fschunk.TypeData})
				p = fschunk.AppendDataHeader(p, 1, int64(j))
				pkts[j], _ = srv.Seal(append(p, payload...), now)
			}
			i = 0
			b.StartTimer()
		}
		w := work[:len(pkts[i])]
		copy(w, pkts[i])
		_, body, err := gw.Open(w, now)
		if err != nil {
			b.Fatal(err)
		}
		if err := d.Decode(body); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// TestReplayedAuthNewKeys: if the gateway accepts one AUTH twice (a
// replay within the cookie's lifetime that its memory of nonces missed),
// the two sessions still have different keys, because each answer draws a
// new ephemeral key: the same counter never seals under the same key
// twice, and the replayer, who lacks the server's ephemeral private key,
// can use neither session.
func TestReplayedAuthNewKeys(t *testing.T) {
	c := &clock{t0}
	k := testKey(t, 1)
	r := newResp(t, k, DefaultLimits, c.mono)
	in := newIn(t, k, 9, DefaultLimits)
	chal, err := r.HandleHello(in.Hello(nil), srvAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := in.HandleChallenge(chal, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := fschunk.Welcome{GatewayIndex: 1, GatewayBoot: 2, HeartbeatInterval: time.Second, MaxDatagram: 1452}
	var welcomes [][]byte
	for range 2 {
		acc, err := r.HandleAuth(a, srvAddr, nil)
		if err != nil {
			t.Fatal(err)
		}
		s, err := acc.NewSession(1, c.t)
		if err != nil {
			t.Fatal(err)
		}
		pkt, err := Welcome(s, w, nil, c.t)
		if err != nil {
			t.Fatal(err)
		}
		welcomes = append(welcomes, pkt)
	}
	// Same header (index, counter 0) and plaintext: only new keys make
	// the ciphertexts differ.
	h := fschunk.HeaderSize
	if !bytes.Equal(welcomes[0][:h], welcomes[1][:h]) {
		t.Fatalf("headers differ: %x %x", welcomes[0][:h], welcomes[1][:h])
	}
	if ct0, ct1 := welcomes[0][len(welcomes[0])-fschunk.WelcomeBodySize-fschunk.TagSize:], welcomes[1][len(welcomes[1])-fschunk.WelcomeBodySize-fschunk.TagSize:]; bytes.Equal(ct0, ct1) {
		t.Fatal("one AUTH accepted twice sealed the same WELCOME at counter 0 under the same key: nonce reuse")
	}
	// The server opens the first and derives its keys from it.
	s, _, err := in.HandleWelcome(welcomes[0], c.t)
	if err != nil {
		t.Fatalf("WELCOME: %v", err)
	}
	if s.RemoteIndex != 1 {
		t.Fatalf("remote index %d", s.RemoteIndex)
	}
}

// TestWelcomeNoiseAuthenticated: Noise's second message travels in the
// clear but is authenticated: changing it fails the WELCOME, and the
// genuine one still completes the handshake after the forgery.
func TestWelcomeNoiseAuthenticated(t *testing.T) {
	c := &clock{t0}
	k := testKey(t, 1)
	r := newResp(t, k, DefaultLimits, c.mono)
	in := newIn(t, k, 9, DefaultLimits)
	chal, _ := r.HandleHello(in.Hello(nil), srvAddr, nil)
	a, _ := in.HandleChallenge(chal, nil)
	acc, err := r.HandleAuth(a, srvAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := acc.NewSession(1, c.t)
	pkt, err := Welcome(s, fschunk.Welcome{GatewayIndex: 1, GatewayBoot: 2, HeartbeatInterval: time.Second, MaxDatagram: 1452}, nil, c.t)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkt) != fschunk.WelcomeSize {
		t.Fatalf("WELCOME %d bytes, want %d", len(pkt), fschunk.WelcomeSize)
	}
	p := bytes.Clone(pkt)
	p[fschunk.HeaderSize] ^= 1
	if _, _, err := in.HandleWelcome(p, c.t); err == nil {
		t.Fatal("WELCOME with a changed Noise message accepted")
	}
	if _, _, err := in.HandleWelcome(pkt, c.t); err != nil {
		t.Fatalf("genuine WELCOME after a forged one: %v", err)
	}
}

// TestCookieMonotonic: a cookie's age is read on the responder's own
// monotonic clock: at most CookieLifetime, and a cookie from the future
// (forged, or minted by another process) is refused.
func TestCookieMonotonic(t *testing.T) {
	c := &clock{t0.Add(time.Hour)}
	k := testKey(t, 1)
	r := newResp(t, k, DefaultLimits, c.mono)
	in := newIn(t, k, 9, DefaultLimits)
	chal, _ := r.HandleHello(in.Hello(nil), srvAddr, nil)
	a, _ := in.HandleChallenge(chal, nil)
	if ts := binary.BigEndian.Uint64(a[32:40]); ts != 3600 {
		t.Fatalf("cookie time %d, want 3600 (seconds of the responder's clock)", ts)
	}
	c.t = c.t.Add(fschunk.CookieLifetime)
	if _, err := r.HandleAuth(a, srvAddr, nil); err != nil {
		t.Fatalf("cookie %v old: %v", fschunk.CookieLifetime, err)
	}
	c.t = c.t.Add(time.Second)
	if _, err := r.HandleAuth(a, srvAddr, nil); !errors.Is(err, ErrBadCookie) {
		t.Fatalf("cookie %v old: %v", fschunk.CookieLifetime+time.Second, err)
	}
	// A responder whose clock started later (a restart) refuses it too.
	c.t = t0
	r2 := newResp(t, k, DefaultLimits, c.mono)
	if _, err := r2.HandleAuth(a, srvAddr, nil); !errors.Is(err, ErrBadCookie) {
		t.Fatalf("cookie from the future: %v", err)
	}
}

// TestKeyFileMode: a key file readable by group or others is reported,
// one readable by its owner only is not.
func TestKeyFileMode(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		mode os.FileMode
		warn bool
	}{{0o600, false}, {0o400, false}, {0o640, true}, {0o644, true}, {0o604, true}} {
		p := filepath.Join(dir, "k")
		os.Remove(p)
		if err := os.WriteFile(p, bytes.Repeat([]byte{1}, 32), c.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, c.mode); err != nil { // whatever the umask
			t.Fatal(err)
		}
		err := CheckKeyFileMode(p)
		if got := errors.Is(err, ErrKeyMode); got != c.warn {
			t.Errorf("mode %04o: %v, want a warning: %v", c.mode, err, c.warn)
		}
	}
}
