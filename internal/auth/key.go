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
	"io"
	"os"
	"runtime"
)

// MinKeySize is the shortest pre-shared key accepted, in bytes.
const MinKeySize = 16

// maxKeyFile bounds what LoadKey reads, so a wrong path (a log, a device)
// fails fast instead of being slurped.
const maxKeyFile = 4096

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
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v; %s", ErrKey, err, KeyHint)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		// err is an *os.PathError that already names the file ("read X:
		// is a directory").
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes, not a key file", ErrKey, path, maxKeyFile)
	}
	k, err := NewKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// ErrKeyMode is returned by CheckKeyFileMode for a key file others can read.
var ErrKeyMode = errors.New("key file readable by group or others")

// CheckKeyFileMode reports (ErrKeyMode) a key file that users other than
// its owner may read: whoever reads the key can impersonate the gateway
// and every server. It is a warning, not a refusal (a key handed out by
// configuration management may legitimately sit in a group-readable
// file). On systems without Unix permissions it reports nothing.
func CheckKeyFileMode(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return nil // LoadKey reports it
	}
	if m := st.Mode().Perm(); runtime.GOOS != "windows" && m&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %04o; restrict it with: chmod 600 %s", ErrKeyMode, path, m, path)
	}
	return nil
}
