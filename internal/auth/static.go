package auth

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"fmt"

	"github.com/fastfile/fschunk/internal/fschunk"
)

// PublicKey is an X25519 public key: a server's or a gateway's identity.
type PublicKey [fschunk.PublicKeySize]byte

// String is the key's base64 text form, as WireGuard writes it.
func (p PublicKey) String() string { return base64.StdEncoding.EncodeToString(p[:]) }

// Short is the first 8 characters of the text form: enough to tell a
// fleet's keys apart in a log line, a metric label or a status page.
func (p PublicKey) Short() string { return p.String()[:8] }

// StaticKey is a long-lived X25519 key pair: the gateway's or a server's.
type StaticKey struct {
	private [32]byte
	public  PublicKey
}

// NewStaticKey makes the key pair of an X25519 private key.
func NewStaticKey(private [32]byte) (StaticKey, error) {
	k, err := ecdh.X25519().NewPrivateKey(private[:])
	if err != nil {
		return StaticKey{}, fmt.Errorf("auth: private key: %w", err)
	}
	s := StaticKey{private: private}
	copy(s.public[:], k.PublicKey().Bytes())
	return s, nil
}

// GenerateStaticKey draws a new key pair.
func GenerateStaticKey() StaticKey {
	var p [32]byte
	rand.Read(p[:])
	s, err := NewStaticKey(p)
	if err != nil {
		panic(err) // any 32 bytes are an X25519 private key
	}
	return s
}

// Public is the key pair's public half.
func (s StaticKey) Public() PublicKey { return s.public }

// IsZero reports whether s was never set.
func (s StaticKey) IsZero() bool { return s.public == PublicKey{} }
