// Package auth authenticates the FS Chunk Protocol: the static key pairs
// and the pre-shared key, the handshake (a stateless cookie exchange, then
// Noise IKpsk2), the session keys it yields, and the sealing and opening
// of every datagram after it (AES-256-GCM with 64-bit counters as nonces
// and an RFC 6479 replay window). docs/PROTOCOL.md §Authentication is the
// specification; this package is its only implementation.
package auth

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/fastfile/fschunk/internal/keys"
)

// MinKeySize is the shortest pre-shared key accepted, in bytes.
const MinKeySize = 16

// KeyHint tells an operator how to make a key; every error about a missing
// or short key carries it.
const KeyHint = "create one with: (umask 077; head -c 32 /dev/urandom > fschunk.key)"

// Key is the pre-shared key both programs are started with: the extra
// symmetric layer of the handshake (Noise's psk2, as WireGuard's), beside
// the static key pairs that say who is who. Only derived keys are ever
// used directly: one mixed into the Noise handshake, and one per gateway
// public key for the handshake MACs.
type Key struct {
	psk      []byte
	noisePSK []byte // 32 bytes, as Noise requires
}

// ErrKey is wrapped by every key error.
var ErrKey = errors.New("bad pre-shared key")

// NewKey wraps raw key bytes (at least MinKeySize).
func NewKey(psk []byte) (*Key, error) {
	if len(psk) < MinKeySize {
		return nil, fmt.Errorf("%w: %d bytes, need at least %d; %s", ErrKey, len(psk), MinKeySize, KeyHint)
	}
	k := &Key{psk: bytes.Clone(psk)}
	nk, err := hkdf.Key(sha256.New, k.psk, nil, "fschunk v3 noise psk", 32)
	if err != nil {
		return nil, fmt.Errorf("derive handshake key: %w", err)
	}
	k.noisePSK = nk
	return k, nil
}

// macKey is the key of the MACs of HELLO, CHALLENGE and AUTH for a
// gateway whose static public key is gw: a sender must know both the
// pre-shared key and which gateway it talks to (WireGuard keys its mac1
// with the responder's public key alike), and a gateway with two key
// pairs (rotation) tells by the MAC which one a server addressed.
func (k *Key) macKey(gw PublicKey) []byte {
	mk, err := hkdf.Key(sha256.New, k.psk, gw[:], "fschunk v3 handshake mac", 32)
	if err != nil {
		panic(err) // only for a length beyond HKDF's bound
	}
	return mk
}

// LoadKey reads a key file. The whole file is the key (binary is fine), so
// `(umask 077; head -c 32 /dev/urandom > fschunk.key)` makes one.
func LoadKey(path string) (*Key, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: no key file given (-key-file); %s", ErrKey, KeyHint)
	}
	b, err := keys.ReadSecretFile(path)
	if err != nil {
		// err names the file and what is wrong with it.
		return nil, fmt.Errorf("%w: %w; %s", ErrKey, err, KeyHint)
	}
	k, err := NewKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// ErrKeyMode is returned by CheckKeyFileMode for a key file others can
// read. It is keys.ErrFileMode: one check serves every secret file.
var ErrKeyMode = keys.ErrFileMode

// CheckKeyFileMode reports (ErrKeyMode) a key file that users other than
// its owner may read: whoever reads the key can impersonate the gateway
// and every server. It is a warning, not a refusal; see
// keys.CheckFileMode.
func CheckKeyFileMode(path string) error { return keys.CheckFileMode(path) }
