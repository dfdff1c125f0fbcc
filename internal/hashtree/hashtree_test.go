package hashtree

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"math/rand/v2"
	"testing"

	"github.com/zeebo/blake3"
)

func content(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// naiveRoot computes the root by its definition, level by level.
func naiveRoot(b []byte) Hash {
	var level []Hash
	for off := 0; off < len(b) || off == 0; off += LeafSize {
		level = append(level, LeafHash(b[off:min(off+LeafSize, len(b))]))
		if len(b) == 0 {
			break
		}
	}
	for len(level) > 1 {
		var next []Hash
		for i := 0; i < len(level); i += 2 {
			if i+1 < len(level) {
				next = append(next, Node(level[i], level[i+1]))
			} else {
				next = append(next, level[i])
			}
		}
		level = next
	}
	return Root(int64(len(b)), level[0])
}

// sizes around the shapes that matter: empty, one leaf, block edges, and
// more levels than one block holds.
var sizes = []int{0, 1, LeafSize - 1, LeafSize, LeafSize + 1, 31 * LeafSize, 32 * LeafSize, 33*LeafSize + 7, 1025*LeafSize + 3}

func TestBuilderMatchesDefinition(t *testing.T) {
	reused := NewBuilder() // Reset between streams, as a server's worker does
	for _, n := range sizes {
		b := content(n, uint64(n))
		bl := NewBuilder()
		// Odd write sizes: leaf boundaries fall inside writes.
		for rest := b; len(rest) > 0; {
			k := min(len(rest), 12345)
			bl.Write(rest[:k])
			rest = rest[k:]
		}
		tr := bl.Tree()
		if tr.Root != naiveRoot(b) {
			t.Fatalf("size %d: builder root differs from the definition", n)
		}
		if int64(len(tr.Leaves())) != Leaves(int64(n)) {
			t.Fatalf("size %d: %d leaves, want %d", n, len(tr.Leaves()), Leaves(int64(n)))
		}
		if !Verify(tr.Root, b) {
			t.Fatalf("size %d: Verify failed", n)
		}
		reused.Reset()
		reused.Write(b)
		if r := reused.Tree(); r.Root != tr.Root || len(r.Leaves()) != len(tr.Leaves()) {
			t.Fatalf("size %d: a reset Builder gives another tree", n)
		}
	}
}

func TestRootBindsSize(t *testing.T) {
	b := content(3*LeafSize, 1)
	tr := NewBuilder()
	tr.Write(b)
	root := tr.Tree().Root
	// Same bytes plus zeros, or cut: other roots.
	if Verify(root, append(bytes.Clone(b), 0)) || Verify(root, b[:len(b)-1]) {
		t.Fatal("root does not bind the size")
	}
}

// learn fetches every leaf of a Partial from tree src, as a gateway does,
// and returns how many blocks it took.
func learn(t *testing.T, p *Partial, src *Tree) int {
	t.Helper()
	blocks := 0
	for j := int64(0); j < Leaves(src.Size); j++ {
		for {
			lv, idx, cnt, ok := p.Want(j)
			if !ok {
				break
			}
			nodes, err := src.Block(lv, idx, cnt)
			if err != nil {
				t.Fatalf("Block(%d, %d, %d): %v", lv, idx, cnt, err)
			}
			if err := p.Add(lv, idx, nodes); err != nil {
				t.Fatalf("Add(%d, %d): %v", lv, idx, err)
			}
			blocks++
		}
		if h, ok := p.Leaf(j); !ok || h != src.Leaves()[j] {
			t.Fatalf("leaf %d not learnt", j)
		}
	}
	return blocks
}

func TestPartialLearnsFromRoot(t *testing.T) {
	for _, n := range sizes {
		bl := NewBuilder()
		bl.Write(content(n, uint64(n)))
		tr := bl.Tree()
		p := NewPartial(tr.Root, int64(n))
		blocks := learn(t, p, tr)
		leaves := Leaves(int64(n))
		// Leaf blocks plus at most 1/32 more for the levels above.
		if max := (leaves+31)/32 + (leaves+1023)/1024 + 2; int64(blocks) > max {
			t.Errorf("size %d: %d blocks, want at most %d", n, blocks, max)
		}
	}
}

// TestPartialRefusesLies: a block that is not the tree's, a tree of the
// same bytes under another size, and blocks whose parent is not known
// are all refused, and a refused block leaves nothing behind.
func TestPartialRefusesLies(t *testing.T) {
	n := 1025*LeafSize + 3
	b := content(n, 9)
	bl := NewBuilder()
	bl.Write(b)
	tr := bl.Tree()

	p := NewPartial(tr.Root, int64(n))
	lv, idx, cnt, _ := p.Want(0)
	if lv != 10 {
		t.Fatalf("first block at level %d, want 10", lv)
	}
	// A leaf block before its parent.
	leaves, _ := tr.Block(0, 0, 32)
	if err := p.Add(0, 0, leaves); err == nil || errors.Is(err, ErrMismatch) {
		t.Fatalf("leaf block without parent: %v", err)
	}
	good, _ := tr.Block(lv, idx, cnt)
	bad := bytes.Clone(good)
	bad[5] ^= 1
	if err := p.Add(lv, idx, bad); !errors.Is(err, ErrMismatch) {
		t.Fatalf("flipped top block: %v", err)
	}
	if _, _, _, ok := p.Want(0); !ok {
		t.Fatal("nothing should be known")
	}
	// The honest top under a larger size (the size lie).
	big := NewPartial(tr.Root, int64(n)+LeafSize)
	blv, bidx, bcnt, _ := big.Want(0)
	if nodes, err := tr.Block(blv, bidx, bcnt); err == nil {
		if err := big.Add(blv, bidx, nodes); err == nil {
			t.Fatal("top accepted under another size")
		}
	}
	if err := p.Add(lv, idx, good); err != nil {
		t.Fatal(err)
	}
	lv, idx, cnt, _ = p.Want(40 * 32)
	mid, _ := tr.Block(lv, idx, cnt)
	mid[0] ^= 0x80
	if err := p.Add(lv, idx, mid); !errors.Is(err, ErrMismatch) {
		t.Fatalf("flipped mid block: %v", err)
	}
	if err := p.Add(lv, idx, mid[:32]); err == nil {
		t.Fatal("short block accepted")
	}
}

func BenchmarkLeafHash(b *testing.B) {
	for _, n := range []int{16 << 10, 64 << 10, 128 << 10} {
		buf := content(n, 1)
		b.Run(fmt.Sprintf("%dKiB", n>>10), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			var h Hasher
			for b.Loop() {
				h.Leaf(buf)
			}
		})
	}
}

// TestLeafParts: a leaf hashed from its pieces is the leaf's hash.
func TestLeafParts(t *testing.T) {
	b := make([]byte, LeafSize)
	for i := range b {
		b[i] = byte(i * 7)
	}
	var h Hasher
	want := LeafHash(b)
	for _, cut := range [][]int{{}, {16 << 10, 32 << 10, 48 << 10}, {1, LeafSize - 1}, {0, LeafSize}} {
		var parts [][]byte
		at := 0
		for _, c := range cut {
			parts = append(parts, b[at:c])
			at = c
		}
		parts = append(parts, b[at:])
		if got := h.LeafParts(parts); got != want {
			t.Errorf("cut at %v: %x, want %x", cut, got, want)
		}
	}
}

// BenchmarkChoice is the benchmark behind the choice of hash
// (docs/PROTOCOL.md §5.17, "Choice of hash"): one 64 KiB leaf hashed by
// version 2's leaf function (SHA-256 of a prefix byte and the bytes), by
// BLAKE3 behind the same prefix byte, and by BLAKE3's key derivation mode
// (the leaf of version 3). Run it side by side, in one command:
//
//	go test -run '^$' -bench Choice -count 5 ./internal/hashtree/
func BenchmarkChoice(b *testing.B) {
	buf := content(LeafSize, 1)
	var out Hash
	run := func(name string, h hash.Hash, prefix []byte) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(LeafSize)
			b.ReportAllocs()
			for b.Loop() {
				h.Reset()
				h.Write(prefix)
				h.Write(buf)
				h.Sum(out[:0])
			}
		})
	}
	run("sha256-prefix", sha256.New(), []byte{0})
	run("blake3-prefix", blake3.New(), []byte{0})
	run("blake3-kdf", blake3.NewDeriveKey(LeafContext), nil)
}
