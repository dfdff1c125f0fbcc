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

// sessionKeys derives the two directional keys from the PSK and both
// sides' fresh contributions: the server's nonce and the gateway's cookie.
func (k *Key) sessionKeys(nonce [fschunk.NonceSize]byte, cookie [fschunk.CookieSize]byte, sender uint32, instance uint64) (s2g, g2s []byte, err error) {
	salt := append(nonce[:], cookie[:]...)
	info := binary.BigEndian.AppendUint32([]byte("fschunk v1 session keys"), sender)
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
	s2g     []byte
	g2s     []byte
	auth    []byte // the AUTH sent, kept for retransmission
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
	in.started, in.s2g, in.g2s, in.auth = true, nil, nil, nil
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
		// derives match the ones already derived here.
		return append(b, in.auth...), nil
	}
	s2g, g2s, err := in.key.sessionKeys(in.nonce, c.Cookie, in.sender, in.instance)
	if err != nil {
		return nil, err
	}
	in.s2g, in.g2s = s2g, g2s
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
// progress, returns the new session.
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
	in.started, in.auth = false, nil
	return s, w, nil
}

// ---------------------------------------------------------------- responder

// Responder runs the gateway's side of handshakes. It keeps no state per
// sender: a CHALLENGE's cookie is a MAC of the sender's address and HELLO
// under a secret that rotates, so only an AUTH that returns a fresh cookie
// from the address it was sent to, under the PSK, costs any memory.
type Responder struct {
	key    *Key
	limits Limits
	now    func() time.Time

	mu      sync.Mutex
	cur     [32]byte
	prev    [32]byte
	rotated time.Time
}

// NewResponder makes the gateway's handshake responder. now may be nil
// (time.Now); tests pass a fake clock.
func NewResponder(k *Key, lim Limits, now func() time.Time) *Responder {
	if now == nil {
		now = time.Now
	}
	r := &Responder{key: k, limits: lim, now: now}
	rand.Read(r.cur[:])
	rand.Read(r.prev[:])
	r.rotated = now()
	return r
}

func (r *Responder) secrets(now time.Time) (cur, prev [32]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.rotated) >= fschunk.CookieRotation {
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
	now := r.now()
	cur, _ := r.secrets(now)
	c := fschunk.Challenge{Receiver: h.Sender}
	binary.BigEndian.PutUint64(c.Cookie[:8], uint64(now.Unix()))
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
	s2g, g2s []byte
	limits   Limits
}

// HandleAuth verifies an AUTH from from.
func (r *Responder) HandleAuth(pkt []byte, from netip.AddrPort) (*Accepted, error) {
	var a fschunk.Auth
	if err := a.Decode(pkt); err != nil {
		return nil, err
	}
	if err := r.key.checkMAC(pkt, nil); err != nil {
		return nil, err
	}
	now := r.now()
	ts := int64(binary.BigEndian.Uint64(a.Cookie[:8]))
	age := now.Unix() - ts
	if age < -1 || age > int64(fschunk.CookieLifetime/time.Second) {
		return nil, ErrBadCookie
	}
	cur, prev := r.secrets(now)
	ok := false
	for _, s := range [][32]byte{cur, prev} {
		if hmac.Equal(cookieMAC(s, a.Cookie[:8], from, a.Sender, a.Instance, a.Nonce[:]), a.Cookie[8:]) {
			ok = true
		}
	}
	if !ok {
		return nil, ErrBadCookie
	}
	s2g, g2s, err := r.key.sessionKeys(a.Nonce, a.Cookie, a.Sender, a.Instance)
	if err != nil {
		return nil, err
	}
	return &Accepted{Sender: a.Sender, Instance: a.Instance, Nonce: a.Nonce, s2g: s2g, g2s: g2s, limits: r.limits}, nil
}

// NewSession makes the gateway's session for an accepted AUTH; local is
// the index the gateway chose (unique among its sessions).
func (a *Accepted) NewSession(local uint32, now time.Time) (*Session, error) {
	return newSession(a.g2s, a.s2g, local, a.Sender, a.Instance, now, a.limits)
}

// Welcome appends the sealed WELCOME for a new gateway session.
func Welcome(s *Session, w fschunk.Welcome, b []byte, now time.Time) ([]byte, error) {
	start := len(b)
	b = fschunk.AppendHeader(b, fschunk.Header{Type: fschunk.TypeWelcome})
	b = w.Append(b)
	pkt, err := s.Seal(b[start:], now)
	if err != nil {
		return nil, err
	}
	return append(b[:start], pkt...), nil
}
