package auth

import (
	"crypto/ecdh"
	"fmt"

	"github.com/fastfile/fschunk/internal/keys"
)

// PublicKey is an X25519 public key: a server's or a gateway's identity.
// It is package keys' type (text form, Short, allow-lists).
type PublicKey = keys.Public

// StaticKey is a long-lived X25519 key pair: the gateway's or a server's.
type StaticKey struct {
	private [32]byte
	public  PublicKey
}

// NewStaticKey makes the key pair of an X25519 private key's bytes.
func NewStaticKey(private [32]byte) (StaticKey, error) {
	k, err := ecdh.X25519().NewPrivateKey(private[:])
	if err != nil {
		return StaticKey{}, fmt.Errorf("auth: private key: %w", err)
	}
	s := StaticKey{private: private}
	copy(s.public[:], k.PublicKey().Bytes())
	return s, nil
}

// StaticKeyOf makes the key pair of a private key read by package keys
// (keys.LoadPrivate, keys.Generate).
func StaticKeyOf(p keys.Private) (StaticKey, error) {
	if p.IsZero() {
		return StaticKey{}, fmt.Errorf("auth: %w: no private key", keys.ErrKey)
	}
	return NewStaticKey([32]byte(p.Bytes()))
}

// GenerateStaticKey draws a new key pair (keys.Generate: clamped as `wg
// genkey` does).
func GenerateStaticKey() StaticKey {
	p, err := keys.Generate()
	if err != nil {
		panic(err) // the system's random source failed
	}
	s, err := StaticKeyOf(p)
	if err != nil {
		panic(err) // keys.Generate makes valid keys
	}
	return s
}

// Public is the key pair's public half.
func (s StaticKey) Public() PublicKey { return s.public }

// IsZero reports whether s was never set.
func (s StaticKey) IsZero() bool { return s.public == PublicKey{} }
