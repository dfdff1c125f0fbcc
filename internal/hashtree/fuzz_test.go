package hashtree

import (
	"bytes"
	"testing"
)

// FuzzPartialAdd feeds a gateway's Partial blocks as a hostile holder may
// send them (any level, index and bytes, after any honest blocks): Add
// must never panic, and a block it keeps must be the tree's own.
func FuzzPartialAdd(f *testing.F) {
	const n = 1100*LeafSize + 5 // three stored levels: 0, 5 and 10
	b := NewBuilder()
	b.Write(bytes.Repeat([]byte{7}, n))
	tr := b.Tree()
	top, _ := tr.Block(10, 0, BlockNodes)
	mid, _ := tr.Block(5, 0, BlockNodes)
	f.Add(uint8(10), uint64(0), top, uint8(0))
	f.Add(uint8(5), uint64(0), mid, uint8(1))
	f.Add(uint8(0), uint64(32), mid, uint8(2))
	f.Add(uint8(47), uint64(1<<40), []byte{1}, uint8(3))
	f.Fuzz(func(t *testing.T, level uint8, index uint64, nodes []byte, honest uint8) {
		p := NewPartial(tr.Root, n)
		// Some honest blocks first, so that lower levels can be reached.
		for lv := 10; lv >= 0 && honest > 0; lv -= BlockLevels {
			blk, _ := tr.Block(lv, 0, BlockNodes)
			if err := p.Add(lv, 0, blk); err != nil {
				t.Fatalf("honest block at level %d: %v", lv, err)
			}
			honest--
		}
		if err := p.Add(int(level), index, nodes); err != nil {
			return
		}
		want, err := tr.Block(int(level), index, BlockNodes)
		if err != nil || !bytes.Equal(want, nodes) {
			t.Fatalf("kept a block at level %d index %d that is not the tree's", level, index)
		}
	})
}
