package hashtree

import (
	"encoding/hex"
	"testing"

	"github.com/zeebo/blake3"
)

// TestVectors checks the roots of docs/PROTOCOL.md Appendix B, computed
// independently (with another BLAKE3 implementation, from the spec's
// text: the command is in the appendix). Content byte i is i mod 251.
func TestVectors(t *testing.T) {
	// The BLAKE3 library itself against the official test vector of the
	// key derivation mode (input of length 0).
	var off [32]byte
	blake3.DeriveKey("BLAKE3 2019-12-27 16:29:52 test vectors context", nil, off[:])
	if got := hex.EncodeToString(off[:]); got != "2cc39783c223154fea8dfb7c1b1660f2ac2dcbd1c1de8277b0b0dd39b7e50d7d" {
		t.Fatalf("BLAKE3 derive_key of no bytes: %s", got)
	}
	for _, v := range []struct {
		size int
		root string
	}{
		{0, "9b60c3dd40cde023572dc11da7932a77cb8a3e7348b5f1a6c96abf9f90f19440"},
		{1, "1ad457f2324e12071d6ba0b57e6a4ca084cabea693a2583a20b5cffeb368ccea"},
		{65536, "078a8c620af43adcac6f325b540ba919de9251f18649af071edb8adca97421df"},
		{65537, "4b1418cbc61eb9a556ef7393beaa3d682ca0b5bac2d30326735d137591f84ce4"},
		{327680, "ec1244fb25b186ff18bff993de847cf1d4bf71f35e4eebc99a99f965425c2558"},
		{1000000, "c444afc3fe77cf19c589772e3d8f0b606276d35389f88b30e3811b900d33f98b"},
	} {
		b := make([]byte, v.size)
		for i := range b {
			b[i] = byte(i % 251)
		}
		bl := NewBuilder()
		bl.Write(b)
		if got := hex.EncodeToString(bl.Tree().Root[:]); got != v.root {
			t.Errorf("size %d: root %s, want %s", v.size, got, v.root)
		}
	}
	for _, v := range []struct {
		size int
		leaf string
	}{
		{0, "22980c4cb825124d30027fac2e57813cda44bcbeefc21ee077c29d36bf1f74ce"},
		{1, "906ffaa970109e49a9acfe9dbb158aa527d321a1356c34f9c720fa18bc1b1fe2"},
		{65536, "730b0c9fb37388a6a47d8d2d386a9c6790303af6d227e045368e5b3b1bc6b6aa"},
	} {
		b := make([]byte, v.size)
		for i := range b {
			b[i] = byte(i % 251)
		}
		if got := LeafHash(b); hex.EncodeToString(got[:]) != v.leaf {
			t.Errorf("leaf of %d bytes: %x, want %s", v.size, got, v.leaf)
		}
	}
}
