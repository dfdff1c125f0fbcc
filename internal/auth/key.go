// Package auth authenticates the FS Chunk Protocol: the pre-shared key,
// the three-message handshake with a stateless cookie, the session keys
// derived from it, and the sealing and opening of every datagram after it
// (AES-256-GCM with 64-bit counters as nonces and an RFC 6479 replay
// window). docs/PROTOCOL.md §Authentication is the specification; this
// package is its only implementation.
package auth

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
)

// MinKeySize is the shortest pre-shared key accepted, in bytes.
const MinKeySize = 16

// maxKeyFile bounds what LoadKey reads, so a wrong path (a log, a device)
// fails fast instead of being slurped.
const maxKeyFile = 4096

// KeyHint tells an operator how to make a key; every error about a missing
// or short key carries it.
const KeyHint = "create one with: head -c 32 /dev/urandom > fschunk.key"

// Key is the pre-shared key both programs are started with. Only derived
// keys are ever used directly: one for handshake MACs, and per session,
// one per direction.
type Key struct {
	psk    []byte
	macKey []byte
}

// ErrKey is wrapped by every key error.
var ErrKey = errors.New("bad pre-shared key")

// NewKey wraps raw key bytes (at least MinKeySize).
func NewKey(psk []byte) (*Key, error) {
	if len(psk) < MinKeySize {
		return nil, fmt.Errorf("%w: %d bytes, need at least %d; %s", ErrKey, len(psk), MinKeySize, KeyHint)
	}
	k := &Key{psk: bytes.Clone(psk)}
	mk, err := hkdf.Key(sha256.New, k.psk, nil, "fschunk v1 handshake mac", 32)
	if err != nil {
		return nil, fmt.Errorf("derive handshake key: %w", err)
	}
	k.macKey = mk
	return k, nil
}

// LoadKey reads a key file. The whole file is the key (binary is fine), so
// `head -c 32 /dev/urandom > fschunk.key` makes one.
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
