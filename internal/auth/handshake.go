package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flynn/noise"

	"github.com/fastfile/fschunk/internal/fschunk"
)

// Handshake errors.
var (
	ErrBadMAC    = errors.New("auth: handshake MAC mismatch (wrong pre-shared key, wrong gateway public key, or forged)")
	ErrBadCookie = errors.New("auth: cookie invalid or expired")
	ErrNoPending = errors.New("auth: no handshake in progress for this message")
	// ErrBadNoise is a Noise message that does not decrypt: a sender
	// that knows the MAC key but not the static private key it claims.
	ErrBadNoise = errors.New("auth: Noise handshake message does not verify")
)

// NoiseProtocol is the Noise protocol name of the handshake: IK (the
// server knows the gateway's static key; it sends its own, encrypted, in
// the first message) with the pre-shared key mixed in after the second
// message, as WireGuard does; X25519, ChaCha20-Poly1305 and BLAKE2s.
const NoiseProtocol = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"

// MaxGatewayKeys bounds the gateway public keys a server accepts (one
// HELLO each per attempt): the current and next keys of a gateway or two.
const MaxGatewayKeys = 4

// MaxStaticKeys bounds the key pairs a gateway answers for: the current
// key and the next one during a rotation.
const MaxStaticKeys = 2

var suite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)

// prologue binds the AUTH's fields sent in the clear into the Noise
// handshake: a changed index, instance or nonce makes it fail.
func prologue(sender uint32, instance uint64, nonce [fschunk.NonceSize]byte) []byte {
	b := make([]byte, 0, 10+4+8+fschunk.NonceSize)
	b = append(b, "fschunk v3"...)
	b = binary.BigEndian.AppendUint32(b, sender)
	b = binary.BigEndian.AppendUint64(b, instance)
	return append(b, nonce[:]...)
}

func noiseConfig(k *Key, initiator bool, static StaticKey, peer *PublicKey, pro []byte, rng io.Reader) noise.Config {
	c := noise.Config{
		CipherSuite:           suite,
		Random:                rng,
		Pattern:               noise.HandshakeIK,
		Initiator:             initiator,
		Prologue:              pro,
		PresharedKey:          k.noisePSK,
		PresharedKeyPlacement: 2,
		StaticKeypair:         noise.DHKey{Private: bytes.Clone(static.private[:]), Public: bytes.Clone(static.public[:])},
	}
	if peer != nil {
		c.PeerStatic = bytes.Clone(peer[:])
	}
	return c
}

// mac is the truncated HMAC-SHA256 of a handshake message under a MAC key;
// extra is appended to the MACed bytes (the CHALLENGE covers the HELLO's
// nonce that it does not repeat).
func mac(key, msg, extra []byte) [fschunk.MACSize]byte {
	h := hmac.New(sha256.New, key)
	h.Write(msg)
	h.Write(extra)
	var out [fschunk.MACSize]byte
	copy(out[:], h.Sum(nil))
	return out
}

// checkMAC verifies the MAC that ends msg.
func checkMAC(key, msg, extra []byte) bool {
	n := len(msg) - fschunk.MACSize
	want := mac(key, msg[:n], extra)
	return hmac.Equal(want[:], msg[n:])
}

// putMAC fills in the MAC that ends msg.
func putMAC(key, msg, extra []byte) {
	m := mac(key, msg[:len(msg)-fschunk.MACSize], extra)
	copy(msg[len(msg)-fschunk.MACSize:], m[:])
}

// sessionKeys are the two directional keys of a finished handshake:
// Noise's Split, initiator (server) to responder (gateway) first.
func sessionKeys(cs1, cs2 *noise.CipherState) (s2g, g2s []byte) {
	a, b := cs1.UnsafeKey(), cs2.UnsafeKey()
	return a[:], b[:]
}

// ---------------------------------------------------------------- initiator

type gatewayKey struct {
	pub PublicKey
	mac []byte
}

// Initiator runs the server's side of handshakes, one at a time.
type Initiator struct {
	key      *Key
	static   StaticKey
	gateways []gatewayKey
	instance uint64
	limits   Limits
	rand     io.Reader // ephemeral keys; nil is crypto/rand (tests fix it for vectors)

	sender  uint32
	nonce   [fschunk.NonceSize]byte
	started bool
	target  int // the gateway key whose CHALLENGE was answered
	hs      *noise.HandshakeState
	auth    []byte // the AUTH sent, kept for retransmission
	// The first WELCOME that completed the Noise handshake: a repeat of
	// it (answering a retransmitted AUTH) is opened with the same keys.
	resp     []byte
	s2g, g2s []byte
}

// NewInitiator makes a handshake initiator for a server process whose
// instance id is instance (random per process), with its static key and
// the public keys of the gateway it accepts (the current and, during a
// rotation, the next: one HELLO is sent per key and the AUTH answers the
// one the gateway knows).
func NewInitiator(k *Key, static StaticKey, gateways []PublicKey, instance uint64, lim Limits) (*Initiator, error) {
	if static.IsZero() {
		return nil, errors.New("auth: the server has no private key")
	}
	if len(gateways) == 0 || len(gateways) > MaxGatewayKeys {
		return nil, fmt.Errorf("auth: %d gateway public keys, want 1 to %d", len(gateways), MaxGatewayKeys)
	}
	in := &Initiator{key: k, static: static, instance: instance, limits: lim}
	for _, g := range gateways {
		in.gateways = append(in.gateways, gatewayKey{pub: g, mac: k.macKey(g)})
	}
	return in, nil
}

// Hello starts a new handshake (forgetting any in progress) and appends
// its HELLOs to b: one per gateway key, each fschunk.HelloSize bytes, all
// with the same index and nonce. Each call draws a fresh index and nonce.
func (in *Initiator) Hello(b []byte) []byte {
	var rnd [4 + fschunk.NonceSize]byte
	rand.Read(rnd[:])
	in.sender = binary.BigEndian.Uint32(rnd[:4])
	copy(in.nonce[:], rnd[4:])
	in.started, in.auth, in.hs, in.resp = true, nil, nil, nil
	h := fschunk.Hello{Sender: in.sender, Instance: in.instance, Nonce: in.nonce}
	for _, g := range in.gateways {
		start := len(b)
		b = h.Append(b)
		putMAC(g.mac, b[start:], nil)
	}
	return b
}

// HandleChallenge checks a CHALLENGE for the handshake in progress and
// appends the AUTH to send: the cookie and Noise's first message, to the
// gateway key the CHALLENGE's MAC names. A CHALLENGE that repeats (the
// gateway answered a retransmitted HELLO) yields the same AUTH.
func (in *Initiator) HandleChallenge(pkt, b []byte) ([]byte, error) {
	var c fschunk.Challenge
	if err := c.Decode(pkt); err != nil {
		return nil, err
	}
	if !in.started || c.Receiver != in.sender {
		return nil, ErrNoPending
	}
	target := -1
	for i, g := range in.gateways {
		if checkMAC(g.mac, pkt, in.nonce[:]) {
			target = i
			break
		}
	}
	if target < 0 {
		return nil, ErrBadMAC
	}
	if in.auth != nil {
		// A second CHALLENGE (answering a retransmitted HELLO) may carry a
		// newer cookie or answer another of our HELLOs; keep the first
		// AUTH, whose Noise state is the one kept here.
		return append(b, in.auth...), nil
	}
	g := in.gateways[target]
	hs, err := noise.NewHandshakeState(noiseConfig(in.key, true, in.static, &g.pub, prologue(in.sender, in.instance, in.nonce), in.rand))
	if err != nil {
		return nil, fmt.Errorf("auth: noise: %w", err)
	}
	msg1, _, _, err := hs.WriteMessage(nil, nil)
	if err != nil {
		return nil, fmt.Errorf("auth: noise message 1: %w", err)
	}
	a := fschunk.Auth{Sender: in.sender, Instance: in.instance, Nonce: in.nonce, Cookie: c.Cookie}
	copy(a.Noise[:], msg1)
	msg := a.Append(nil)
	putMAC(g.mac, msg, nil)
	in.target, in.hs, in.auth = target, hs, msg
	return append(b, msg...), nil
}

// PendingAuth returns the AUTH to retransmit, or nil.
func (in *Initiator) PendingAuth() []byte { return in.auth }

// Gateway is the gateway public key the handshake in progress (or the
// last one completed) was addressed to.
func (in *Initiator) Gateway() PublicKey { return in.gateways[in.target].pub }

// HandleWelcome opens a WELCOME and, if it completes the handshake in
// progress, returns the new session. Noise's second message, carried in
// the clear after the header, gives the keys; the sealed body is opened
// with them (a forged WELCOME costs the Noise read and fails).
func (in *Initiator) HandleWelcome(pkt []byte, now time.Time) (*Session, fschunk.Welcome, error) {
	var w fschunk.Welcome
	if in.auth == nil {
		return nil, w, ErrNoPending
	}
	h, err := fschunk.ParseHeader(pkt)
	if err != nil {
		return nil, w, err
	}
	if h.Type != fschunk.TypeWelcome || h.Receiver != in.sender {
		return nil, w, ErrNoPending
	}
	if len(pkt) != fschunk.WelcomeSize {
		return nil, w, fmt.Errorf("welcome: %d bytes, want %d: %w", len(pkt), fschunk.WelcomeSize, fschunk.ErrShort)
	}
	resp := pkt[fschunk.HeaderSize : fschunk.HeaderSize+fschunk.NoiseResponseSize]
	if in.resp == nil {
		_, cs1, cs2, err := in.hs.ReadMessage(nil, resp)
		if err != nil || cs1 == nil {
			return nil, w, ErrForged
		}
		in.resp = bytes.Clone(resp)
		in.s2g, in.g2s = sessionKeys(cs1, cs2)
	} else if !bytes.Equal(in.resp, resp) {
		return nil, w, ErrForged
	}
	s, err := newSession(in.s2g, in.g2s, in.sender, 0, in.instance, now, in.limits)
	if err != nil {
		return nil, w, err
	}
	_, body, err := s.Open(pkt, now)
	if err != nil {
		return nil, w, err
	}
	if err := w.Decode(body); err != nil {
		return nil, w, fmt.Errorf("welcome: %w", err)
	}
	s.RemoteIndex = w.GatewayIndex
	in.started, in.auth, in.hs, in.resp = false, nil, nil, nil
	return s, w, nil
}

// ---------------------------------------------------------------- responder

type responderKey struct {
	static StaticKey
	mac    []byte
}

// Responder runs the gateway's side of handshakes. It keeps no state per
// sender: a CHALLENGE's cookie is a MAC of the sender's address and HELLO
// under a secret that rotates, so only an AUTH that returns a fresh cookie
// from the address it was sent to costs a Diffie-Hellman, and only one
// whose Noise message proves a listed server key costs any memory.
//
// Cookies are timed by a monotonic clock that starts with the responder,
// never by the wall clock: a wall clock stepped back would make an old
// cookie young again.
type Responder struct {
	key    *Key
	limits Limits
	mono   func() time.Duration
	rand   io.Reader // ephemeral keys; nil is crypto/rand

	statics atomic.Pointer[[]responderKey]

	mu      sync.Mutex
	cur     [32]byte
	prev    [32]byte
	rotated time.Duration
}

// NewResponder makes the gateway's handshake responder for its static
// key pairs (the current one, and the next during a rotation). mono is
// the cookies' clock, the time since some fixed start, never going back;
// nil is the process's monotonic clock from now on. Tests pass a fake.
func NewResponder(k *Key, statics []StaticKey, lim Limits, mono func() time.Duration) (*Responder, error) {
	if mono == nil {
		start := time.Now()
		mono = func() time.Duration { return time.Since(start) } // monotonic: start carries the monotonic reading
	}
	r := &Responder{key: k, limits: lim, mono: mono}
	if err := r.SetStatics(statics); err != nil {
		return nil, err
	}
	rand.Read(r.cur[:])
	rand.Read(r.prev[:])
	r.rotated = mono()
	return r, nil
}

// SetStatics replaces the key pairs the responder answers for (a key
// rotation, without a restart). Handshakes under way to a key dropped
// here fail; sessions already made are not touched.
func (r *Responder) SetStatics(statics []StaticKey) error {
	if len(statics) == 0 || len(statics) > MaxStaticKeys {
		return fmt.Errorf("auth: %d gateway key pairs, want 1 to %d", len(statics), MaxStaticKeys)
	}
	ks := make([]responderKey, 0, len(statics))
	for _, s := range statics {
		if s.IsZero() {
			return errors.New("auth: the gateway has no private key")
		}
		ks = append(ks, responderKey{static: s, mac: r.key.macKey(s.public)})
	}
	r.statics.Store(&ks)
	return nil
}

// Publics returns the public keys the responder answers for.
func (r *Responder) Publics() []PublicKey {
	ks := *r.statics.Load()
	out := make([]PublicKey, len(ks))
	for i, k := range ks {
		out[i] = k.static.public
	}
	return out
}

// match finds the key pair whose MAC key verifies msg.
func (r *Responder) match(msg, extra []byte) (*responderKey, error) {
	ks := *r.statics.Load()
	for i := range ks {
		if checkMAC(ks[i].mac, msg, extra) {
			return &ks[i], nil
		}
	}
	return nil, ErrBadMAC
}

func (r *Responder) secrets(now time.Duration) (cur, prev [32]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now-r.rotated >= fschunk.CookieRotation {
		r.prev = r.cur
		rand.Read(r.cur[:])
		r.rotated = now
	}
	return r.cur, r.prev
}

func cookieMAC(secret [32]byte, ts []byte, from netip.AddrPort, sender uint32, instance uint64, nonce []byte) []byte {
	var h hash.Hash = hmac.New(sha256.New, secret[:])
	h.Write(ts)
	a := from.Addr().As16()
	h.Write(a[:])
	var tail [2 + 4 + 8]byte
	binary.BigEndian.PutUint16(tail[0:2], from.Port())
	binary.BigEndian.PutUint32(tail[2:6], sender)
	binary.BigEndian.PutUint64(tail[6:14], instance)
	h.Write(tail[:])
	h.Write(nonce)
	return h.Sum(nil)[:fschunk.CookieSize-8]
}

// HandleHello verifies a HELLO and appends the CHALLENGE to send back to
// from. It allocates nothing that outlives the call, and its answer
// (fschunk.ChallengeSize) is smaller than the HELLO it answers.
func (r *Responder) HandleHello(pkt []byte, from netip.AddrPort, b []byte) ([]byte, error) {
	var h fschunk.Hello
	if err := h.Decode(pkt); err != nil {
		return nil, err
	}
	k, err := r.match(pkt, nil)
	if err != nil {
		return nil, err
	}
	now := r.mono()
	cur, _ := r.secrets(now)
	c := fschunk.Challenge{Receiver: h.Sender}
	binary.BigEndian.PutUint64(c.Cookie[:8], uint64(now/time.Second))
	copy(c.Cookie[8:], cookieMAC(cur, c.Cookie[:8], from, h.Sender, h.Instance, h.Nonce[:]))
	start := len(b)
	b = c.Append(b)
	putMAC(k.mac, b[start:], h.Nonce[:])
	return b, nil
}

// Accepted is a verified AUTH: the sender proved its static key (Peer)
// and that it receives at its address. NewSession turns it into a session.
type Accepted struct {
	Sender   uint32
	Instance uint64
	Nonce    [fschunk.NonceSize]byte
	Peer     PublicKey // the server's static key
	Gateway  PublicKey // which of the gateway's keys the server addressed
	response [fschunk.NoiseResponseSize]byte
	s2g, g2s []byte
	limits   Limits
}

// CheckAuth verifies an AUTH's MAC and cookie, the cheap part: enough to
// answer a retransmitted AUTH (same bytes as one accepted before) again
// without the Diffie-Hellmans.
func (r *Responder) CheckAuth(pkt []byte, from netip.AddrPort) error {
	_, _, err := r.checkAuth(pkt, from)
	return err
}

func (r *Responder) checkAuth(pkt []byte, from netip.AddrPort) (*fschunk.Auth, *responderKey, error) {
	var a fschunk.Auth
	if err := a.Decode(pkt); err != nil {
		return nil, nil, err
	}
	k, err := r.match(pkt, nil)
	if err != nil {
		return nil, nil, err
	}
	if err := r.checkCookie(&a, from); err != nil {
		return nil, nil, err
	}
	return &a, k, nil
}

// HandleAuth verifies an AUTH from from: its MAC, its cookie, then Noise's
// first message, which yields the server's static key. admit, if not nil,
// decides whether that key may have a session (the gateway's list of
// servers); only then is the second message written and the keys split.
// Each accepted AUTH draws a new ephemeral key, so its session's keys are
// new even for an AUTH accepted before.
func (r *Responder) HandleAuth(pkt []byte, from netip.AddrPort, admit func(PublicKey) error) (*Accepted, error) {
	a, k, err := r.checkAuth(pkt, from)
	if err != nil {
		return nil, err
	}
	hs, err := noise.NewHandshakeState(noiseConfig(r.key, false, k.static, nil, prologue(a.Sender, a.Instance, a.Nonce), r.rand))
	if err != nil {
		return nil, fmt.Errorf("auth: noise: %w", err)
	}
	payload, _, _, err := hs.ReadMessage(nil, a.Noise[:])
	if err != nil || len(payload) != 0 {
		return nil, ErrBadNoise
	}
	acc := &Accepted{Sender: a.Sender, Instance: a.Instance, Nonce: a.Nonce, Gateway: k.static.public, limits: r.limits}
	copy(acc.Peer[:], hs.PeerStatic())
	if admit != nil {
		if err := admit(acc.Peer); err != nil {
			return nil, err
		}
	}
	msg2, cs1, cs2, err := hs.WriteMessage(nil, nil)
	if err != nil || cs1 == nil || len(msg2) != fschunk.NoiseResponseSize {
		return nil, fmt.Errorf("auth: noise message 2: %v", err)
	}
	copy(acc.response[:], msg2)
	acc.s2g, acc.g2s = sessionKeys(cs1, cs2)
	return acc, nil
}

// CheckCookie verifies only the cookie of an AUTH (size and layout
// checked, MAC not): under load the gateway checks this proof that the
// sender receives at its address before anything else.
func (r *Responder) CheckCookie(pkt []byte, from netip.AddrPort) error {
	var a fschunk.Auth
	if err := a.Decode(pkt); err != nil {
		return err
	}
	return r.checkCookie(&a, from)
}

// checkCookie: the cookie's time is at most CookieLifetime behind the
// responder's monotonic clock (and not ahead of it), and its MAC verifies
// with the source address under the current or the previous secret.
func (r *Responder) checkCookie(a *fschunk.Auth, from netip.AddrPort) error {
	now := r.mono()
	ts := binary.BigEndian.Uint64(a.Cookie[:8])
	secs := uint64(now / time.Second)
	if ts > secs || secs-ts > uint64(fschunk.CookieLifetime/time.Second) {
		return ErrBadCookie
	}
	cur, prev := r.secrets(now)
	for _, s := range [][32]byte{cur, prev} {
		if hmac.Equal(cookieMAC(s, a.Cookie[:8], from, a.Sender, a.Instance, a.Nonce[:]), a.Cookie[8:]) {
			return nil
		}
	}
	return ErrBadCookie
}

// NewSession makes the gateway's session for an accepted AUTH; local is
// the index the gateway chose (unique among its sessions).
func (a *Accepted) NewSession(local uint32, now time.Time) (*Session, error) {
	s, err := newSession(a.g2s, a.s2g, local, a.Sender, a.Instance, now, a.limits)
	if err != nil {
		return nil, err
	}
	s.response = a.response
	return s, nil
}

// Welcome appends the sealed WELCOME for a new gateway session: the
// header, Noise's second message (in the clear: the server needs it to
// derive the keys; authenticated with the header), the sealed body and
// the tag. A repeat (for a retransmitted AUTH) carries the same Noise
// message and the session's next counter.
func Welcome(s *Session, w fschunk.Welcome, b []byte, now time.Time) ([]byte, error) {
	start := len(b)
	b = fschunk.AppendHeader(b, fschunk.Header{Type: fschunk.TypeWelcome})
	b = append(b, s.response[:]...)
	b = w.Append(b)
	pkt, err := s.Seal(b[start:], now)
	if err != nil {
		return nil, err
	}
	return append(b[:start], pkt...), nil
}
