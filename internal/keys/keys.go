// Package keys holds the X25519 static key pairs of the FS Chunk Protocol
// handshake and the files an operator keeps them in: a private key file
// per program, and the gateway's allow-list of server public keys.
//
// The text form of a key is WireGuard's: standard base64 of the 32 bytes
// (44 characters with one '=' of padding), so `httpgw genkey | httpgw
// pubkey` and `wg genkey | wg pubkey` are interchangeable. Generate clamps
// the scalar as `wg genkey` does (RFC 7748 §5); a private key read from
// elsewhere is used as given, and X25519 clamps it when it multiplies, so
// an unclamped key has the same public key as its clamped form (as with
// `wg pubkey`).
//
// Public is a comparable array, so it can be a map key and compared with
// ==; Private is opaque (a *ecdh.PrivateKey inside) so that its bytes are
// not printed by accident: %v prints its public key's Short form only.
package keys

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// Size is the length of an X25519 key in bytes.
const Size = 32

// textSize is the length of a key's text form: base64 of 32 bytes.
var textSize = base64.StdEncoding.EncodedLen(Size)

// ShortSize is the length of Public.Short: 8 base64 characters, 48 bits.
const ShortSize = 8

// ErrKey is wrapped by every error about a key's text or file.
var ErrKey = errors.New("bad key")

// Public is an X25519 public key.
type Public [Size]byte

// Private is an X25519 private key. The zero value is not a key: make one
// with Generate, ParsePrivate or LoadPrivate.
type Private struct {
	k *ecdh.PrivateKey
}

// Generate makes a new random private key, clamped as `wg genkey` does.
func Generate() (Private, error) {
	var b [Size]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Private{}, fmt.Errorf("generate key: %w", err)
	}
	clamp(&b)
	return newPrivate(b[:])
}

// clamp makes b a canonical X25519 scalar (RFC 7748 §5): a multiple of the
// cofactor 8, below 2^255, with bit 254 set.
func clamp(b *[Size]byte) {
	b[0] &= 248
	b[31] = b[31]&127 | 64
}

func newPrivate(b []byte) (Private, error) {
	k, err := ecdh.X25519().NewPrivateKey(b)
	if err != nil {
		return Private{}, fmt.Errorf("%w: %v", ErrKey, err)
	}
	return Private{k: k}, nil
}

// IsZero reports whether p is the zero value, not a key.
func (p Private) IsZero() bool { return p.k == nil }

// Public returns p's public key (the zero Public for the zero Private).
func (p Private) Public() Public {
	var pub Public
	if p.k != nil {
		copy(pub[:], p.k.PublicKey().Bytes())
	}
	return pub
}

// Bytes returns a copy of the 32 private key bytes, for a Noise library
// that takes keys as bytes. They are a secret.
func (p Private) Bytes() []byte {
	if p.k == nil {
		return nil
	}
	return p.k.Bytes()
}

// ECDH returns the X25519 shared secret of p and peer. It fails for a
// low-order peer key (the all-zero result RFC 7748 §6.1 says to refuse).
func (p Private) ECDH(peer Public) ([]byte, error) {
	if p.k == nil {
		return nil, fmt.Errorf("%w: the zero private key", ErrKey)
	}
	pk, err := ecdh.X25519().NewPublicKey(peer[:])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	s, err := p.k.ECDH(pk)
	if err != nil {
		return nil, fmt.Errorf("%w: peer key %s: %v", ErrKey, peer.Short(), err)
	}
	return s, nil
}

// Text returns the private key in its text form (base64, as `wg genkey`
// prints it). It is a secret: for files and stdout, never for logs.
func (p Private) Text() string {
	if p.k == nil {
		return ""
	}
	return base64.StdEncoding.EncodeToString(p.k.Bytes())
}

// String names the key by its public half so that a Private in a log line
// or a %v shows no secret.
func (p Private) String() string {
	if p.k == nil {
		return "keys.Private(zero)"
	}
	return "keys.Private(public " + p.Public().Short() + ")"
}

// GoString is String, for %#v.
func (p Private) GoString() string { return p.String() }

// LogValue is String, so that slog never writes the secret.
func (p Private) LogValue() slog.Value { return slog.StringValue(p.String()) }

// ParsePrivate reads a private key's text form. Surrounding white space
// (a file's trailing newline) is ignored. Errors never repeat the text.
func ParsePrivate(s string) (Private, error) {
	b, err := decode(strings.TrimSpace(s), "private")
	if err != nil {
		return Private{}, err
	}
	return newPrivate(b[:])
}

// String returns the key's text form: 44 characters of standard base64,
// as `wg pubkey` prints it.
func (k Public) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Short returns the first ShortSize (8) characters of the text form: 48
// bits, enough for a person to tell a fleet's servers apart in logs,
// metrics and the status page. It is a label, not an identity check:
// every decision compares the whole key.
func (k Public) Short() string { return k.String()[:ShortSize] }

// LogValue is Short: logs name a key the way the status page does.
func (k Public) LogValue() slog.Value { return slog.StringValue(k.Short()) }

// IsZero reports whether k is all zeros (the zero value, not a key).
func (k Public) IsZero() bool { return k == Public{} }

// MarshalText returns the text form (for JSON and flag.TextVar).
func (k Public) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText parses the text form, as ParsePublic.
func (k *Public) UnmarshalText(b []byte) error {
	p, err := ParsePublic(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// ParsePublic reads a public key's text form (surrounding white space is
// ignored). The all-zero key is refused: it is a low-order point, with
// which every shared secret is zero.
func ParsePublic(s string) (Public, error) {
	b, err := decode(strings.TrimSpace(s), "public")
	if err != nil {
		return Public{}, err
	}
	k := Public(b)
	if k.IsZero() {
		return Public{}, fmt.Errorf("%w: the all-zero public key", ErrKey)
	}
	return k, nil
}

// decode reads 32 bytes of standard base64. what ("public", "private")
// goes into the errors; the text itself does not, as it may be a secret.
func decode(s, what string) ([Size]byte, error) {
	var b [Size]byte
	if len(s) != textSize {
		return b, fmt.Errorf("%w: a %s key is %d characters of base64 (as wg genkey writes), got %d", ErrKey, what, textSize, len(s))
	}
	// 44 characters without padding would decode to 33 bytes.
	var buf [Size + 1]byte
	n, err := base64.StdEncoding.Strict().Decode(buf[:], []byte(s))
	if err != nil {
		return b, fmt.Errorf("%w: %s key is not standard base64: %v", ErrKey, what, err)
	}
	if n != Size {
		return b, fmt.Errorf("%w: %s key decodes to %d bytes, want %d", ErrKey, what, n, Size)
	}
	copy(b[:], buf[:n])
	return b, nil
}
