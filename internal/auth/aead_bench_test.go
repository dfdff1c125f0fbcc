package auth

import (
	"crypto/cipher"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/fastfile/fschunk/internal/fschunk"
)

// BenchmarkAEADChoice compares the two AEADs the specification could have
// used on a full-size DATA datagram: why the protocol uses AES-256-GCM.
func BenchmarkAEADChoice(b *testing.B) {
	key := make([]byte, 32)
	gcm, _ := newAEAD(key)
	cc, _ := chacha20poly1305.New(key)
	for _, c := range []struct {
		name string
		a    cipher.AEAD
	}{{"AES-256-GCM", gcm}, {"ChaCha20-Poly1305", cc}} {
		b.Run(c.name, func(b *testing.B) {
			pt := make([]byte, fschunk.DefaultDatagramSize-fschunk.Overhead)
			buf := make([]byte, 0, fschunk.DefaultDatagramSize)
			nonce := make([]byte, 12)
			ad := make([]byte, fschunk.HeaderSize)
			b.SetBytes(int64(len(pt)))
			b.ReportAllocs()
			for b.Loop() {
				buf = c.a.Seal(buf[:0], nonce, pt, ad)
			}
		})
	}
}
