package hashtree

import (
	"fmt"

	"github.com/fastfile/fschunk/internal/fschunk"
)

// Partial is the gateway's view of one version's tree: the root and size
// it was fetched under, and the blocks of the stored levels learnt so
// far, each checked against a node already trusted before it is kept. A
// node is trusted only through the root: a holder can make the gateway
// keep nothing that the root does not commit to. Not safe for concurrent
// use.
type Partial struct {
	root   Hash
	size   int64
	leaves int64
	top    int      // highest stored level
	levels [][]Hash // levels[i]: stored level i·BlockLevels, allocated on first use
	known  [][]bool // known[i][b]: block b of levels[i] is held and checked
	bytes  int
}

// NewPartial starts the tree of the version (root, size), knowing nothing.
func NewPartial(root Hash, size int64) *Partial {
	p := &Partial{root: root, size: size, leaves: Leaves(size)}
	p.top = (max(Height(p.leaves)-1, 0) / BlockLevels) * BlockLevels
	n := p.top/BlockLevels + 1
	p.levels, p.known = make([][]Hash, n), make([][]bool, n)
	return p
}

// Size is the version's size.
func (p *Partial) Size() int64 { return p.size }

// Bytes is the memory the learnt nodes take.
func (p *Partial) Bytes() int { return p.bytes }

// Want says which block to fetch next to learn leaf j's hash: the highest
// stored level whose block above j is not held yet (a block can be checked
// only once the one above it is held). ok is false when leaf j is known.
func (p *Partial) Want(j int64) (level int, index uint64, count int, ok bool) {
	for lv := p.top; lv >= 0; lv -= BlockLevels {
		blk := (j >> lv) / BlockNodes
		if k := p.known[lv/BlockLevels]; k == nil || !k[blk] {
			index = uint64(blk) * BlockNodes
			return lv, index, int(min(BlockNodes, LevelLen(p.leaves, lv)-int64(index))), true
		}
	}
	return 0, 0, 0, false
}

// Leaf returns leaf j's hash if it is known.
func (p *Partial) Leaf(j int64) (Hash, bool) {
	k := p.known[0]
	if k == nil || j < 0 || j >= p.leaves || !k[j/BlockNodes] {
		return Hash{}, false
	}
	return p.levels[0][j], true
}

// Add checks a block of nodes (HashSize bytes each) of a stored level
// against the node above it and keeps it. ErrMismatch means the sender
// lied (or its file is not this version); other errors mean the block
// was not one that could be checked now (unasked, malformed, or its
// parent not yet known).
func (p *Partial) Add(level int, index uint64, nodes []byte) error {
	if level%BlockLevels != 0 || level > p.top || index%BlockNodes != 0 {
		return fmt.Errorf("hashtree: block at level %d index %d not stored", level, index)
	}
	n := LevelLen(p.leaves, level)
	if index >= uint64(n) {
		return fmt.Errorf("hashtree: index %d beyond level %d", index, level)
	}
	count := int(min(BlockNodes, n-int64(index)))
	if len(nodes) != count*fschunk.HashSize {
		return fmt.Errorf("hashtree: %d bytes for %d nodes at level %d", len(nodes), count, level)
	}
	li, blk := level/BlockLevels, index/BlockNodes
	if p.known[li] != nil && p.known[li][blk] {
		return nil // held already
	}
	var want Hash
	if level == p.top {
		// The whole level fits one block and hashes up to the top node.
	} else if k := p.known[li+1]; k == nil || !k[blk/BlockNodes] {
		return fmt.Errorf("hashtree: parent of level %d block %d not known", level, blk)
	} else {
		want = p.levels[li+1][blk]
	}
	var buf [BlockNodes]Hash
	got := buf[:count]
	for i := range got {
		copy(got[i][:], nodes[i*fschunk.HashSize:])
	}
	work := buf2(got)
	var h Hasher
	if level == p.top {
		for len(work) > 1 {
			work = h.up(work)
		}
		if h.Root(p.size, work[0]) != p.root {
			return ErrMismatch
		}
	} else {
		for range BlockLevels {
			work = h.up(work)
		}
		if len(work) != 1 || work[0] != want {
			return ErrMismatch
		}
	}
	if p.levels[li] == nil {
		p.levels[li] = make([]Hash, n)
		p.known[li] = make([]bool, (n+BlockNodes-1)/BlockNodes)
		p.bytes += int(n)*fschunk.HashSize + len(p.known[li])
	}
	copy(p.levels[li][index:], got)
	p.known[li][blk] = true
	return nil
}

// buf2 copies a block into scratch that up may overwrite.
func buf2(b []Hash) []Hash {
	var s [BlockNodes]Hash
	n := copy(s[:], b)
	return s[:n]
}
