// Package hashtree is the content hash tree of the FS Chunk Protocol
// (docs/PROTOCOL.md §5.17): a binary BLAKE3 tree over a file's 64 KiB
// leaves whose root, bound to the file's size, is the version's content
// hash. A server builds the whole tree while it hashes the file (Builder,
// Tree); the gateway learns it block by block from any holder, checking
// every block against what it already trusts, down from the root
// (Partial), and then checks every leaf of content before it reaches a
// client. BitTorrent v2's piece layers and BLAKE3/Bao are the models.
//
// Hashes are domain-separated by BLAKE3's own key derivation mode, one
// context string each, so that a leaf can never pass for a node, nor a
// node for the root:
//
//	leaf = BLAKE3-derive_key(LeafContext, bytes)              up to TreeLeafSize bytes
//	node = BLAKE3-derive_key(NodeContext, left ‖ right)       a lone last node moves up as it is
//	root = BLAKE3-derive_key(RootContext, size (8 bytes) ‖ top)
//
// A context, unlike a prefix byte, costs nothing per hash: the input is
// hashed as it is (a 64 KiB leaf is 64 BLAKE3 chunks, not 65), under a key
// derived once from the context string.
package hashtree

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/zeebo/blake3"

	"github.com/fastfile/fschunk/internal/fschunk"
)

// The BLAKE3 key derivation contexts of the three kinds of hash
// (docs/PROTOCOL.md §5.17). Changing one changes every content hash.
const (
	LeafContext = "FS Chunk Protocol 2026-12-03 content tree leaf"
	NodeContext = "FS Chunk Protocol 2026-12-03 content tree node"
	RootContext = "FS Chunk Protocol 2026-12-03 content tree root"
)

// Hashers in derive-key mode, their contexts already hashed: templates
// cloned into each Hasher, never written to (deriving a context key is a
// hash of its own, not to be paid per node).
var leafInit, nodeInit, rootInit = blake3.NewDeriveKey(LeafContext),
	blake3.NewDeriveKey(NodeContext), blake3.NewDeriveKey(RootContext)

// Hash is one BLAKE3 value: a leaf, a node or a root.
type Hash = [fschunk.HashSize]byte

const (
	// LeafSize is the bytes under one leaf.
	LeafSize = fschunk.TreeLeafSize
	// BlockLevels and BlockNodes: the unit of transfer of the tree, an
	// aligned block of up to BlockNodes nodes of one level.
	BlockLevels = fschunk.TreeBlockLevels
	BlockNodes  = fschunk.TreeBlockNodes
)

// ErrMismatch means nodes or content do not hash to what the tree says.
var ErrMismatch = errors.New("hashtree: hash mismatch")

// Leaves is the number of leaves of a file of size bytes: an empty file
// has one leaf (the hash of no bytes).
func Leaves(size int64) int64 {
	if size <= 0 {
		return 1
	}
	return (size-1)/LeafSize + 1
}

// LevelLen is the number of nodes at level h of a tree with n leaves.
func LevelLen(n int64, h int) int64 {
	for range h {
		n = (n + 1) / 2
	}
	return n
}

// Height is the level of the top node (0 for a single leaf).
func Height(n int64) int {
	h := 0
	for n > 1 {
		n = (n + 1) / 2
		h++
	}
	return h
}

// Stored is whether level h of a tree of the given height is one that
// servers keep and gateways fetch: every BlockLevels-th level from the
// leaves, below the top (the top is implied by the root).
func Stored(h, height int) bool {
	return h%BlockLevels == 0 && (h < height || h == 0)
}

// LeafHash hashes one leaf's bytes.
func LeafHash(b []byte) Hash {
	var h Hasher
	return h.Leaf(b)
}

// Node hashes two children.
func Node(l, r Hash) Hash {
	var h Hasher
	return h.Node(l, r)
}

// Root binds the top node to the file's size.
func Root(size int64, top Hash) Hash {
	var h Hasher
	return h.Root(size, top)
}

// up hashes one level of nodes into the next, in place; it returns the
// shorter slice. A lone last node moves up unchanged.
func (h *Hasher) up(level []Hash) []Hash {
	n := 0
	for i := 0; i < len(level); i += 2 {
		if i+1 < len(level) {
			level[n] = h.Node(level[i], level[i+1])
		} else {
			level[n] = level[i]
		}
		n++
	}
	return level[:n]
}

// Hasher hashes leaves, nodes and roots with reusable BLAKE3 states,
// allocated on first use of each kind (about 11 KiB each: a small Hasher
// value can sit in every response, and one that only checks leaves never
// holds the other two). Not safe for concurrent use.
type Hasher struct {
	leaf, node, root *blake3.Hasher
}

// state returns *s, first set up as a copy of template init.
func state(s **blake3.Hasher, init *blake3.Hasher) *blake3.Hasher {
	if *s == nil {
		*s = init.Clone()
	}
	return *s
}

func sum(b *blake3.Hasher) Hash {
	var out Hash
	b.Sum(out[:0])
	b.Reset()
	return out
}

// Leaf hashes one leaf's bytes.
func (h *Hasher) Leaf(b []byte) Hash {
	s := state(&h.leaf, leafInit)
	s.Write(b)
	return sum(s)
}

// Node hashes two children.
func (h *Hasher) Node(l, r Hash) Hash {
	s := state(&h.node, nodeInit)
	var b [2 * fschunk.HashSize]byte
	copy(b[:], l[:])
	copy(b[fschunk.HashSize:], r[:])
	s.Write(b[:])
	return sum(s)
}

// Root binds the top node to the file's size.
func (h *Hasher) Root(size int64, top Hash) Hash {
	s := state(&h.root, rootInit)
	var b [8 + fschunk.HashSize]byte
	binary.BigEndian.PutUint64(b[:], uint64(size))
	copy(b[8:], top[:])
	s.Write(b[:])
	return sum(s)
}

// LeafParts hashes one leaf whose bytes are held in parts, in order (the
// gateway keeps a leaf in separately allocated pieces): the same hash as
// Leaf of their concatenation, without copying them together.
func (h *Hasher) LeafParts(parts [][]byte) Hash {
	s := state(&h.leaf, leafInit)
	for _, b := range parts {
		s.Write(b)
	}
	return sum(s)
}

// Builder computes the leaves of a stream of bytes written to it, one
// pass, no buffering beyond BLAKE3's own. It implements io.Writer.
type Builder struct {
	h      Hasher
	inLeaf int // bytes of the current leaf written so far
	size   int64
	leaves []Hash
}

// NewBuilder returns an empty Builder.
func NewBuilder() *Builder {
	b := &Builder{}
	state(&b.h.leaf, leafInit)
	return b
}

// Reset starts a new stream, keeping the hash states (a server hashing
// many small files keeps one Builder per worker). Trees returned before
// are not affected.
func (b *Builder) Reset() {
	b.h.leaf.Reset()
	b.inLeaf, b.size, b.leaves = 0, 0, nil
}

// Write adds bytes; it never fails.
func (b *Builder) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), LeafSize-b.inLeaf)
		b.h.leaf.Write(p[:k]) // set up by NewBuilder
		b.inLeaf += k
		b.size += int64(k)
		p = p[k:]
		if b.inLeaf == LeafSize {
			b.endLeaf()
		}
	}
	return n, nil
}

func (b *Builder) endLeaf() {
	b.leaves = append(b.leaves, sum(b.h.leaf))
	b.inLeaf = 0
}

// Tree finishes the stream and returns its tree.
func (b *Builder) Tree() *Tree {
	if b.inLeaf > 0 || len(b.leaves) == 0 {
		b.endLeaf()
	}
	return b.h.fromLeaves(b.size, b.leaves)
}

// Tree is a whole tree, as a server keeps it: the stored levels (0, 5,
// 10, … below the top) and the root.
type Tree struct {
	Size   int64
	Root   Hash
	levels [][]Hash // levels[i] is level i·BlockLevels
}

// FromLeaves builds the tree of a file of size bytes from its leaves
// (len(leaves) must be Leaves(size)); leaves is kept.
func FromLeaves(size int64, leaves []Hash) *Tree {
	var h Hasher
	return h.fromLeaves(size, leaves)
}

func (h *Hasher) fromLeaves(size int64, leaves []Hash) *Tree {
	t := &Tree{Size: size}
	height := Height(int64(len(leaves)))
	t.levels = append(t.levels, leaves)
	cur := append([]Hash(nil), leaves...)
	for lv := 1; lv <= height; lv++ {
		cur = h.up(cur)
		if Stored(lv, height) {
			t.levels = append(t.levels, append([]Hash(nil), cur...))
		}
	}
	t.Root = h.Root(size, cur[0])
	return t
}

// Leaves returns the leaf hashes (level 0), not a copy.
func (t *Tree) Leaves() []Hash { return t.levels[0] }

// Block returns up to BlockNodes nodes of a stored level from index
// (a multiple of BlockNodes), as the bytes a HASHES message carries.
func (t *Tree) Block(level int, index uint64, count int) ([]byte, error) {
	height := Height(int64(len(t.levels[0])))
	if !Stored(level, height) || index%BlockNodes != 0 {
		return nil, fmt.Errorf("hashtree: level %d index %d not stored", level, index)
	}
	nodes := t.levels[level/BlockLevels]
	if index >= uint64(len(nodes)) {
		return nil, fmt.Errorf("hashtree: index %d beyond level %d (%d nodes)", index, level, len(nodes))
	}
	end := min(uint64(len(nodes)), index+uint64(min(count, BlockNodes)))
	out := make([]byte, 0, int(end-index)*fschunk.HashSize)
	for _, h := range nodes[index:end] {
		out = append(out, h[:]...)
	}
	return out, nil
}

// Verify hashes content (the whole file) and compares it with root.
func Verify(root Hash, content []byte) bool {
	b := NewBuilder()
	b.Write(content)
	return b.Tree().Root == root
}
