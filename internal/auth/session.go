package auth

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/replay"
)

// Errors of Session.Open and Session.Seal; callers count drops by cause.
var (
	ErrUnknownSession = errors.New("auth: datagram for another session")
	ErrReplay         = errors.New("auth: replayed or too old counter")
	ErrForged         = errors.New("auth: authentication tag mismatch")
	ErrExpired        = errors.New("auth: session expired")
)

// Limits bound a session's life. Tests shorten them; production uses
// DefaultLimits, the values of the specification.
type Limits struct {
	RekeyAfterTime      time.Duration
	RejectAfterTime     time.Duration
	RekeyAfterMessages  uint64
	RejectAfterMessages uint64
}

// WithDefaults fills each zero (or negative) field of l from DefaultLimits.
func (l Limits) WithDefaults() Limits {
	def := DefaultLimits
	if l.RekeyAfterTime <= 0 {
		l.RekeyAfterTime = def.RekeyAfterTime
	}
	if l.RejectAfterTime <= 0 {
		l.RejectAfterTime = def.RejectAfterTime
	}
	if l.RekeyAfterMessages == 0 {
		l.RekeyAfterMessages = def.RekeyAfterMessages
	}
	if l.RejectAfterMessages == 0 {
		l.RejectAfterMessages = def.RejectAfterMessages
	}
	return l
}

// DefaultLimits are the specification's values.
var DefaultLimits = Limits{
	RekeyAfterTime:      fschunk.RekeyAfterTime,
	RejectAfterTime:     fschunk.RejectAfterTime,
	RekeyAfterMessages:  fschunk.RekeyAfterMessages,
	RejectAfterMessages: fschunk.RejectAfterMessages,
}

// Session is one authenticated association between a server and a
// gateway. Seal and Open are safe for concurrent use.
type Session struct {
	LocalIndex  uint32 // the index peers put in datagrams for us
	RemoteIndex uint32 // the index we put in datagrams for the peer
	Instance    uint64 // the server process this session belongs to
	Created     time.Time

	limits Limits
	send   cipher.AEAD
	recv   cipher.AEAD
	sendN  atomic.Uint64 // next counter to seal with

	mu     sync.Mutex
	filter replay.Filter

	// response is Noise's second message, carried by the WELCOME that
	// made the session (gateway side), sent again in a repeated WELCOME.
	response [fschunk.NoiseResponseSize]byte
}

func newSession(sendKey, recvKey []byte, local, remote uint32, instance uint64, now time.Time, lim Limits) (*Session, error) {
	s := &Session{LocalIndex: local, RemoteIndex: remote, Instance: instance, Created: now, limits: lim}
	var err error
	if s.send, err = newAEAD(sendKey); err != nil {
		return nil, err
	}
	if s.recv, err = newAEAD(recvKey); err != nil {
		return nil, err
	}
	return s, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("auth: cipher: %w", err)
	}
	return cipher.NewGCM(b)
}

// nonce is the AEAD nonce of an encoded header: its receiver index and
// counter, 12 bytes as sent. The index is fixed per session and direction
// and the counter never repeats, so nonces never repeat under one key; and
// slicing the header costs no allocation on the data path.
func nonce(hdr []byte) []byte { return hdr[4:fschunk.HeaderSize] }

// adLen is how much of a datagram of type t is sent in the clear and
// authenticated as additional data: the header, and for a WELCOME also
// Noise's second message that follows it.
func adLen(t fschunk.Type) int {
	if t == fschunk.TypeWelcome {
		return fschunk.HeaderSize + fschunk.NoiseResponseSize
	}
	return fschunk.HeaderSize
}

// Seal authenticates and encrypts a datagram in place. pkt must hold a
// transport header (fschunk.AppendHeader) followed by the plaintext body
// (for a WELCOME, Noise's second message, then the body); Seal fills in
// the receiver index and the next counter, encrypts the body and appends
// the tag, reusing pkt's capacity when it has fschunk.TagSize spare bytes
// (then it does not allocate).
func (s *Session) Seal(pkt []byte, now time.Time) ([]byte, error) {
	if len(pkt) < fschunk.HeaderSize {
		return nil, fmt.Errorf("auth: seal: %w", fschunk.ErrShort)
	}
	ad := adLen(fschunk.Type(pkt[1]))
	if len(pkt) < ad {
		return nil, fmt.Errorf("auth: seal: %w", fschunk.ErrShort)
	}
	n := s.sendN.Add(1) - 1
	if n >= s.limits.RejectAfterMessages || now.Sub(s.Created) >= s.limits.RejectAfterTime {
		return nil, ErrExpired
	}
	fschunk.PutHeaderIDs(pkt, s.RemoteIndex, n)
	return s.send.Seal(pkt[:ad], nonce(pkt), pkt[ad:], pkt[:ad]), nil
}

// Open verifies and decrypts a datagram in place and returns its header
// and plaintext body (aliasing pkt). A counter is marked as seen only
// after its tag verified, so forgeries cannot burn counters.
func (s *Session) Open(pkt []byte, now time.Time) (fschunk.Header, []byte, error) {
	h, err := fschunk.ParseHeader(pkt)
	if err != nil {
		return h, nil, err
	}
	ad := adLen(h.Type)
	if len(pkt) < ad+fschunk.TagSize {
		return h, nil, fschunk.ErrShort
	}
	if h.Receiver != s.LocalIndex {
		return h, nil, ErrUnknownSession
	}
	if h.Counter >= s.limits.RejectAfterMessages || now.Sub(s.Created) >= s.limits.RejectAfterTime {
		return h, nil, ErrExpired
	}
	s.mu.Lock()
	ok := s.filter.Check(h.Counter)
	s.mu.Unlock()
	if !ok {
		return h, nil, ErrReplay
	}
	body, err := s.recv.Open(pkt[ad:ad], nonce(pkt), pkt[ad:], pkt[:ad])
	if err != nil {
		return h, nil, ErrForged
	}
	s.mu.Lock()
	ok = s.filter.Accept(h.Counter)
	s.mu.Unlock()
	if !ok { // a duplicate that raced us between Check and Accept
		return h, nil, ErrReplay
	}
	return h, body, nil
}

// NeedsRekey reports whether the initiator should start a new handshake
// now, well before the session is rejected.
func (s *Session) NeedsRekey(now time.Time) bool {
	return now.Sub(s.Created) >= s.limits.RekeyAfterTime || s.sendN.Load() >= s.limits.RekeyAfterMessages
}

// Expired reports whether the session may no longer be used at all.
func (s *Session) Expired(now time.Time) bool {
	return now.Sub(s.Created) >= s.limits.RejectAfterTime || s.sendN.Load() >= s.limits.RejectAfterMessages
}
