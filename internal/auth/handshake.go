package auth

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"net/netip"
	"sync"
	"time"

	"github.com/fastfile/fschunk/internal/fschunk"
)

// Handshake errors.
var (
	ErrBadMAC    = errors.New("auth: handshake MAC mismatch (wrong key or forged)")
	ErrBadCookie = errors.New("auth: cookie invalid or expired")
	ErrNoPending = errors.New("auth: no handshake in progress for this message")
)

// mac is the truncated HMAC-SHA256 of handshake messages under the key's
// MAC key; extra is appended to the MACed bytes (the CHALLENGE covers the
// HELLO's nonce that it does not repeat).
func (k *Key) mac(msg, extra []byte) [fschunk.MACSize]byte {
	h := hmac.New(sha256.New, k.macKey)
	h.Write(msg)
	h.Write(extra)
	var out [fschunk.MACSize]byte
	copy(out[:], h.Sum(nil))
	return out
}

func (k *Key) checkMAC(msg []byte, extra []byte) error {
	n := len(msg) - fschunk.MACSize
	want := k.mac(msg[:n], extra)
	if !hmac.Equal(want[:], msg[n:]) {
		return ErrBadMAC
	}
	return nil
}

// sessionKeys derives the two directional keys from the PSK and all three
// fresh contributions: the server's nonce, the gateway's cookie and the
// gateway's random value of the WELCOME. The random value makes every
// session's keys new even if the gateway were made to accept one AUTH
// twice (a replay after its memory of used nonces expired, or a clock
// step): the keys, and so the nonces sealed under them, never repeat.
func (k *Key) sessionKeys(nonce [fschunk.NonceSize]byte, cookie [fschunk.CookieSize]byte, random [fschunk.GatewayRandomSize]byte, sender uint32, instance uint64) (s2g, g2s []byte, err error) {
	salt := make([]byte, 0, fschunk.NonceSize+fschunk.CookieSize+fschunk.GatewayRandomSize)
	salt = append(append(append(salt, nonce[:]...), cookie[:]...), random[:]...)
	info := binary.BigEndian.AppendUint32([]byte("fschunk v2 session keys"), sender)
	info = binary.BigEndian.AppendUint64(info, instance)
	okm, err := hkdf.Key(sha256.New, k.psk, salt, string(info), 64)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: derive session keys: %w", err)
	}
	return okm[:32], okm[32:], nil
}

// ---------------------------------------------------------------- initiator

// Initiator runs the server's side of handshakes, one at a time.
type Initiator struct {
	key      *Key
	instance uint64
	limits   Limits

	sender  uint32
	nonce   [fschunk.NonceSize]byte
	started bool
	cookie  [fschunk.CookieSize]byte // the CHALLENGE's, answered by auth
	auth    []byte                   // the AUTH sent, kept for retransmission
}

// NewInitiator makes a handshake initiator for a server process whose
// instance id is instance (random per process).
func NewInitiator(k *Key, instance uint64, lim Limits) *Initiator {
	return &Initiator{key: k, instance: instance, limits: lim}
}

// Hello starts a new handshake (forgetting any in progress) and appends
// its HELLO to b. Each call draws a fresh index and nonce.
func (in *Initiator) Hello(b []byte) []byte {
	var rnd [4 + fschunk.NonceSize]byte
	rand.Read(rnd[:])
	in.sender = binary.BigEndian.Uint32(rnd[:4])
	copy(in.nonce[:], rnd[4:])
	in.started, in.auth = true, nil
	h := fschunk.Hello{Sender: in.sender, Instance: in.instance, Nonce: in.nonce}
	start := len(b)
	b = h.Append(b)
	m := in.key.mac(b[start:len(b)-fschunk.MACSize], nil)
	copy(b[len(b)-fschunk.MACSize:], m[:])
	return b
}

// HandleChallenge checks a CHALLENGE for the handshake in progress and
// appends the AUTH to send. A CHALLENGE that repeats (the gateway answered
// a retransmitted HELLO) yields the same AUTH.
func (in *Initiator) HandleChallenge(pkt, b []byte) ([]byte, error) {
	var c fschunk.Challenge
	if err := c.Decode(pkt); err != nil {
		return nil, err
	}
	if !in.started || c.Receiver != in.sender {
		return nil, ErrNoPending
	}
	if err := in.key.checkMAC(pkt, in.nonce[:]); err != nil {
		return nil, err
	}
	if in.auth != nil {
		// A second CHALLENGE (answering a retransmitted HELLO) may carry a
		// newer cookie; keep the first AUTH so the keys the gateway
		// derives match the cookie kept here.
		return append(b, in.auth...), nil
	}
	in.cookie = c.Cookie
	a := fschunk.Auth{Sender: in.sender, Instance: in.instance, Nonce: in.nonce, Cookie: c.Cookie}
	msg := a.Append(nil)
	m := in.key.mac(msg[:len(msg)-fschunk.MACSize], nil)
	copy(msg[len(msg)-fschunk.MACSize:], m[:])
	in.auth = msg
	return append(b, msg...), nil
}

// PendingAuth returns the AUTH to retransmit, or nil.
func (in *Initiator) PendingAuth() []byte { return in.auth }

// HandleWelcome opens a WELCOME and, if it completes the handshake in
// progress, returns the new session. The keys are derived here, with the
// gateway's random value that the WELCOME carries in the clear (and
// authenticates): a forged WELCOME costs a key derivation and fails.
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
	var random [fschunk.GatewayRandomSize]byte
	copy(random[:], pkt[fschunk.HeaderSize:])
	s2g, g2s, err := in.key.sessionKeys(in.nonce, in.cookie, random, in.sender, in.instance)
	if err != nil {
		return nil, w, err
	}
	s, err := newSession(s2g, g2s, in.sender, 0, in.instance, now, in.limits)
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
	in.started, in.auth = false, nil
	return s, w, nil
}

// ---------------------------------------------------------------- responder

// Responder runs the gateway's side of handshakes. It keeps no state per
// sender: a CHALLENGE's cookie is a MAC of the sender's address and HELLO
// under a secret that rotates, so only an AUTH that returns a fresh cookie
// from the address it was sent to, under the PSK, costs any memory.
//
// Cookies are timed by a monotonic clock that starts with the responder,
// never by the wall clock: a wall clock stepped back would make an old
// cookie young again, and an AUTH captured before the step acceptable
// after its session (and the gateway's memory of its nonce) is gone.
type Responder struct {
	key    *Key
	limits Limits
	mono   func() time.Duration

	mu      sync.Mutex
	cur     [32]byte
	prev    [32]byte
	rotated time.Duration
}

// NewResponder makes the gateway's handshake responder. mono is the
// cookies' clock, the time since some fixed start, never going back; nil
// is the process's monotonic clock from now on. Tests pass a fake.
func NewResponder(k *Key, lim Limits, mono func() time.Duration) *Responder {
	if mono == nil {
		start := time.Now()
		mono = func() time.Duration { return time.Since(start) } // monotonic: start carries the monotonic reading
	}
	r := &Responder{key: k, limits: lim, mono: mono}
	rand.Read(r.cur[:])
	rand.Read(r.prev[:])
	r.rotated = mono()
	return r
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
	if err := r.key.checkMAC(pkt, nil); err != nil {
		return nil, err
	}
	now := r.mono()
	cur, _ := r.secrets(now)
	c := fschunk.Challenge{Receiver: h.Sender}
	binary.BigEndian.PutUint64(c.Cookie[:8], uint64(now/time.Second))
	copy(c.Cookie[8:], cookieMAC(cur, c.Cookie[:8], from, h.Sender, h.Instance, h.Nonce[:]))
	start := len(b)
	b = c.Append(b)
	m := r.key.mac(b[start:len(b)-fschunk.MACSize], h.Nonce[:])
	copy(b[len(b)-fschunk.MACSize:], m[:])
	return b, nil
}

// Accepted is a verified AUTH: the sender proved the key and that it
// receives at its address. NewSession turns it into a session.
type Accepted struct {
	Sender   uint32
	Instance uint64
	Nonce    [fschunk.NonceSize]byte
	random   [fschunk.GatewayRandomSize]byte
	s2g, g2s []byte
	limits   Limits
}

// HandleAuth verifies an AUTH from from. Each accepted AUTH draws a new
// gateway random value, so its session's keys are new even for an AUTH
// accepted before.
func (r *Responder) HandleAuth(pkt []byte, from netip.AddrPort) (*Accepted, error) {
	var a fschunk.Auth
	if err := a.Decode(pkt); err != nil {
		return nil, err
	}
	if err := r.key.checkMAC(pkt, nil); err != nil {
		return nil, err
	}
	if err := r.checkCookie(&a, from); err != nil {
		return nil, err
	}
	acc := &Accepted{Sender: a.Sender, Instance: a.Instance, Nonce: a.Nonce, limits: r.limits}
	rand.Read(acc.random[:])
	s2g, g2s, err := r.key.sessionKeys(a.Nonce, a.Cookie, acc.random, a.Sender, a.Instance)
	if err != nil {
		return nil, err
	}
	acc.s2g, acc.g2s = s2g, g2s
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
	s.random = a.random
	return s, nil
}

// Welcome appends the sealed WELCOME for a new gateway session: the
// header, the session's gateway random value (in the clear: the server
// needs it to derive the keys; authenticated with the header), the sealed
// body and the tag. A repeat (for a retransmitted AUTH) carries the same
// random value and the session's next counter.
func Welcome(s *Session, w fschunk.Welcome, b []byte, now time.Time) ([]byte, error) {
	start := len(b)
	b = fschunk.AppendHeader(b, fschunk.Header{Type: fschunk.TypeWelcome})
	b = append(b, s.random[:]...)
	b = w.Append(b)
	pkt, err := s.Seal(b[start:], now)
	if err != nil {
		return nil, err
	}
	return append(b[:start], pkt...), nil
}
