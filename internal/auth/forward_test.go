package auth

import (
	"bytes"
	"crypto/ecdh"
	"errors"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/fschunk"
)

// recording is what an eavesdropper keeps of one session: the handshake
// and a datagram each way.
type recording struct {
	hello, challenge, auth, welcome []byte
	sender                          uint32
	instance                        uint64
	nonce                           [fschunk.NonceSize]byte
	s2g, g2s                        []byte // a DATA and a READ, sealed
}

// record runs a handshake whose server ephemeral key is eph and records it.
func record(t *testing.T, k *Key, r *Responder, eph []byte, c *clock) recording {
	t.Helper()
	in := newIn(t, k, 0x5ec, DefaultLimits)
	in.rand = bytes.NewReader(eph)
	var rec recording
	rec.hello = in.Hello(nil)
	rec.sender, rec.instance, rec.nonce = in.sender, in.instance, in.nonce
	var err error
	if rec.challenge, err = r.HandleHello(rec.hello, srvAddr, nil); err != nil {
		t.Fatal(err)
	}
	if rec.auth, err = in.HandleChallenge(rec.challenge, nil); err != nil {
		t.Fatal(err)
	}
	acc, err := r.HandleAuth(rec.auth, srvAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := acc.NewSession(42, c.t)
	if err != nil {
		t.Fatal(err)
	}
	wel, err := Welcome(gw, fschunk.Welcome{GatewayIndex: 42, GatewayBoot: 1, HeartbeatInterval: time.Second, MaxDatagram: 1452}, nil, c.t)
	if err != nil {
		t.Fatal(err)
	}
	rec.welcome = bytes.Clone(wel)
	srv, _, err := in.HandleWelcome(wel, c.t)
	if err != nil {
		t.Fatal(err)
	}
	rec.s2g = sealed(t, srv, fschunk.TypeData, []byte("secret file bytes"), c.t)
	rec.g2s = sealed(t, gw, fschunk.TypeRead, []byte("secret request...................................."), c.t)
	return rec
}

// TestForwardSecrecy: an eavesdropper who recorded a session and later
// stole every long-term secret (both static private keys, the pre-shared
// key, even the gateway's cookie secret) cannot decrypt it: the session
// keys also depend on the two ephemeral keys, which are never stored. The
// control shows the attack is real: given the server's ephemeral private
// key too, the same steps decrypt the recording.
func TestForwardSecrecy(t *testing.T) {
	c := &clock{t0}
	k := testKey(t, 1)
	r := newResp(t, k, DefaultLimits, c.mono) // its cookie secret: stolen too
	eph := bytes.Repeat([]byte{0x3e}, 32)
	rec := record(t, k, r, eph, c)

	// As the gateway: the stolen gateway key reads the recorded AUTH (so
	// it proves the server's identity), but the answer is a new ephemeral
	// key, so the keys differ from the recorded session's.
	acc, err := r.HandleAuth(rec.auth, srvAddr, nil)
	if err != nil {
		t.Fatalf("the stolen gateway key does not read the recorded AUTH: %v", err)
	}
	gw, err := acc.NewSession(42, c.t)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := gw.Open(bytes.Clone(rec.s2g), c.t); !errors.Is(err, ErrForged) {
		t.Fatalf("recorded DATA opened with keys made from the stolen gateway key: %v", err)
	}

	// As the server: the stolen server key starts the same handshake (same
	// index, instance, nonce, cookie) but cannot recreate its ephemeral
	// key, so the recorded WELCOME does not complete it.
	attempt := func(eph []byte) error {
		in := newIn(t, k, rec.instance, DefaultLimits)
		in.rand = bytes.NewReader(eph)
		in.sender, in.nonce, in.started = rec.sender, rec.nonce, true
		if _, err := in.HandleChallenge(rec.challenge, nil); err != nil {
			return err
		}
		srv, _, err := in.HandleWelcome(bytes.Clone(rec.welcome), c.t)
		if err != nil {
			return err
		}
		_, body, err := srv.Open(bytes.Clone(rec.g2s), c.t)
		if err == nil && !bytes.HasPrefix(body, []byte("secret request")) {
			t.Fatalf("opened to %q", body)
		}
		return err
	}
	guess := bytes.Repeat([]byte{0x3f}, 32)
	if err := attempt(guess); err == nil {
		t.Fatal("recorded session decrypted with the static keys and the pre-shared key alone")
	}
	// Control: with the ephemeral private key the recording opens.
	if err := attempt(eph); err != nil {
		t.Fatalf("control: the recording does not open even with the ephemeral key: %v", err)
	}
}

// TestIdentityBound: the server's static key is bound to its handshake.
// A key holder cannot complete a handshake under a static key it does not
// hold: swapping the encrypted static key of one server's AUTH for
// another's fails, and the gateway learns the true sender of each AUTH.
func TestIdentityBound(t *testing.T) {
	c := &clock{t0}
	k := testKey(t, 1)
	r := newResp(t, k, DefaultLimits, c.mono)
	other := GenerateStaticKey()
	in, err := NewInitiator(k, other, []PublicKey{gwStatic.Public()}, 9, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	chal, _ := r.HandleHello(in.Hello(nil), srvAddr, nil)
	a, _ := in.HandleChallenge(chal, nil)
	acc, err := r.HandleAuth(a, srvAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if acc.Peer != other.Public() {
		t.Fatalf("gateway read key %s, want the sender's %s", acc.Peer.Short(), other.Public().Short())
	}
	// The admission check sees the key before anything is answered.
	refused := errors.New("not listed")
	if _, err := r.HandleAuth(a, srvAddr, func(p PublicKey) error {
		if p != srvStatic.Public() {
			return refused
		}
		return nil
	}); !errors.Is(err, refused) {
		t.Fatalf("admission: %v", err)
	}
	// Splice srvStatic's encrypted static key (from its own AUTH) into
	// this AUTH: the key does not decrypt under this handshake's state.
	in2 := newIn(t, k, 9, DefaultLimits)
	chal2, _ := r.HandleHello(in2.Hello(nil), srvAddr, nil)
	a2, _ := in2.HandleChallenge(chal2, nil)
	spliced := bytes.Clone(a)
	copy(spliced[64+32:64+32+48], a2[64+32:64+32+48])
	putMAC(k.macKey(gwStatic.Public()), spliced, nil)
	if _, err := r.HandleAuth(spliced, srvAddr, nil); !errors.Is(err, ErrBadNoise) {
		t.Fatalf("spliced static key: %v", err)
	}
}

// TestGatewayKeyRotation: a server that knows the gateway's current and
// next public keys sends a HELLO for each; a gateway holding either one
// (before, during and after its rotation) completes the handshake.
func TestGatewayKeyRotation(t *testing.T) {
	c := &clock{t0}
	k := testKey(t, 1)
	next := GenerateStaticKey()
	for _, held := range [][]StaticKey{{gwStatic}, {gwStatic, next}, {next}} {
		r, err := NewResponder(k, held, DefaultLimits, c.mono)
		if err != nil {
			t.Fatal(err)
		}
		in, err := NewInitiator(k, srvStatic, []PublicKey{gwStatic.Public(), next.Public()}, 5, DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		hellos := in.Hello(nil)
		if len(hellos) != 2*fschunk.HelloSize {
			t.Fatalf("%d bytes of HELLO for two gateway keys", len(hellos))
		}
		answered := 0
		var a []byte
		for off := 0; off < len(hellos); off += fschunk.HelloSize {
			chal, err := r.HandleHello(hellos[off:off+fschunk.HelloSize], srvAddr, nil)
			if err != nil {
				continue
			}
			answered++
			if a, err = in.HandleChallenge(chal, nil); err != nil {
				t.Fatal(err)
			}
		}
		if answered != len(held) {
			t.Fatalf("gateway holding %d keys answered %d HELLOs", len(held), answered)
		}
		acc, err := r.HandleAuth(a, srvAddr, nil)
		if err != nil {
			t.Fatalf("holding %d keys: %v", len(held), err)
		}
		if acc.Gateway != in.Gateway() {
			t.Fatalf("server addressed %s, gateway answered as %s", in.Gateway().Short(), acc.Gateway.Short())
		}
	}
}

// BenchmarkHandshake: one complete handshake, both sides (HELLO,
// CHALLENGE, AUTH, WELCOME): the gateway's share is the CHALLENGE, the
// AUTH's verification (two DH) and the answer (an ephemeral key, two DH).
func BenchmarkHandshake(b *testing.B) {
	c := &clock{time.Now()}
	k := testKey(b, 1)
	r := newResp(b, k, DefaultLimits, c.mono)
	b.ReportAllocs()
	for b.Loop() {
		handshakeWith(b, k, r, c)
	}
}

// BenchmarkGatewayHandshake: the gateway's share alone, per handshake.
func BenchmarkGatewayHandshake(b *testing.B) {
	c := &clock{time.Now()}
	k := testKey(b, 1)
	r := newResp(b, k, DefaultLimits, c.mono)
	const n = 256
	hellos, auths := make([][]byte, n), make([][]byte, n)
	for i := range n {
		in := newIn(b, k, uint64(i), DefaultLimits)
		hellos[i] = in.Hello(nil)
		chal, _ := r.HandleHello(hellos[i], srvAddr, nil)
		auths[i], _ = in.HandleChallenge(chal, nil)
	}
	buf := make([]byte, 0, fschunk.MaxDatagramSize)
	w := fschunk.Welcome{GatewayIndex: 1, GatewayBoot: 2, HeartbeatInterval: time.Second, MaxDatagram: 1452}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := r.HandleHello(hellos[i%n], srvAddr, buf[:0]); err != nil {
			b.Fatal(err)
		}
		acc, err := r.HandleAuth(auths[i%n], srvAddr, nil)
		if err != nil {
			b.Fatal(err)
		}
		s, err := acc.NewSession(1, c.t)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Welcome(s, w, buf[:0], c.t); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func handshakeWith(tb testing.TB, k *Key, r *Responder, c *clock) {
	in := newIn(tb, k, 1, DefaultLimits)
	chal, err := r.HandleHello(in.Hello(nil), srvAddr, nil)
	if err != nil {
		tb.Fatal(err)
	}
	a, err := in.HandleChallenge(chal, nil)
	if err != nil {
		tb.Fatal(err)
	}
	acc, err := r.HandleAuth(a, srvAddr, nil)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := acc.NewSession(1, c.t)
	if err != nil {
		tb.Fatal(err)
	}
	wel, err := Welcome(s, fschunk.Welcome{GatewayIndex: 1, GatewayBoot: 2, HeartbeatInterval: time.Second, MaxDatagram: 1452}, nil, c.t)
	if err != nil {
		tb.Fatal(err)
	}
	if _, _, err := in.HandleWelcome(wel, c.t); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkX25519: one X25519 scalar multiplication, the unit of the
// handshake's cost (the gateway does five per handshake), measured in the
// same run so that a loaded machine's numbers can be compared as ratios.
func BenchmarkX25519(b *testing.B) {
	k := GenerateStaticKey()
	peer := GenerateStaticKey().Public()
	priv, err := ecdh.X25519().NewPrivateKey(k.private[:])
	if err != nil {
		b.Fatal(err)
	}
	pub, err := ecdh.X25519().NewPublicKey(peer[:])
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := priv.ECDH(pub); err != nil {
			b.Fatal(err)
		}
	}
}
