package fetch

import (
	"time"

	"github.com/fastfile/fschunk/internal/hashtree"
)

// PieceSize is the unit of a chunk's memory. A chunk's bytes are held in
// pieces allocated each on its own (from a pool), not in one buffer, so
// that they can be given back one at a time: a piece is handed to the
// client in one Write, straight from its buffer, and returned to the
// pool as soon as that Write is done. A client that stops reading blocks
// the Write it is in, and so pins one piece, never a chunk; the rest of
// its window can be taken back (see stalled.go).
//
// 16 KiB is the largest TLS record and HTTP/2's default frame: a Write
// of it costs the TLS and HTTP/2 layers no more records, frames or
// system calls than a larger one cut by them, and 3,200 stalled HTTP/2
// streams pin 52 MB of pieces rather than 200 MiB of 64 KiB leaves.
// It divides the hash tree's leaf, so a leaf is a whole number of pieces.
const PieceSize = 16 << 10

// A leaf must be a whole number of pieces (compile-time check).
var _ = [1]struct{}{}[hashtree.LeafSize%PieceSize]

// leafPieces is the number of pieces under one leaf.
const leafPieces = hashtree.LeafSize / PieceSize

// pieces returns the number of pieces that hold n bytes.
func pieces(n int) int { return (n + PieceSize - 1) / PieceSize }

// reserve counts a new chunk of the window against the budget (e.held).
// Its pieces are taken only when its first READ is sent (allocPieces): a
// response waiting for room at the servers holds no memory, so with
// thousands of them the memory is bounded by the bytes in flight, not
// by a chunk per response. Under e.mu.
func (e *Engine) reserve(c *chunk) {
	e.held += pieces(c.n) * PieceSize
}

// allocPieces gives c, a chunk of d, its pieces, if it has none yet. Beyond the budget,
// stalled responses give back their windows first: responses that all
// reserved their first chunk at once take their pieces only as their
// READs go out, and no fill may come to reclaim for them. Under e.mu.
func (e *Engine) allocPieces(d *download, c *chunk, now time.Time) {
	if c.pieces != nil {
		return
	}
	if need := pieces(c.n) * PieceSize; e.alloc+need > e.budget {
		e.sweep(now)
		for x := e.stalled.head; x != nil && e.alloc+need > e.budget; {
			next := x.lnext
			if x != d { // not the window being worked on
				e.stalled.remove(x)
				x.reclaim()
			}
			x = next
		}
	}
	c.pieces = make([]*[]byte, pieces(c.n))
	for i := range c.pieces {
		c.pieces[i] = e.getPiece()
	}
	e.alloc += len(c.pieces) * PieceSize
}

// putPiece returns one piece of a chunk to the pool and the budget.
// Under e.mu.
func (e *Engine) putPiece(p *[]byte) {
	e.held -= PieceSize
	e.alloc -= PieceSize
	e.recycle(p)
}

// maxFree is the most bytes of pieces kept for reuse, as a fraction of
// the budget: enough for the pieces a fast download gives back between
// two READs. A sync.Pool would keep everything given back until two
// garbage collections, which a quiet gateway may not run for minutes:
// the windows of thousands of stalled responses, once reclaimed, would
// stay resident.
const maxFree = 8 // 1/8 of the budget

// getPiece takes a piece for reuse, or allocates one. Under e.mu.
func (e *Engine) getPiece() *[]byte {
	if n := len(e.free); n > 0 {
		p := e.free[n-1]
		e.free[n-1] = nil
		e.free = e.free[:n-1]
		return p
	}
	b := make([]byte, PieceSize)
	return &b
}

// recycle keeps a piece given back for reuse, or leaves it to the
// garbage collector beyond maxFree. Under e.mu.
func (e *Engine) recycle(p *[]byte) {
	if len(e.free) < e.budget/maxFree/PieceSize {
		e.free = append(e.free, p)
	}
}

// freePieces returns everything c holds or reserves, but keep (the piece
// a reader is writing, see stalled.go; nil for none), once c leaves the
// window. Under e.mu.
func (e *Engine) freePieces(c *chunk, keep *[]byte) {
	if c.pieces == nil {
		e.held -= pieces(c.n) * PieceSize // reserved, never taken
		return
	}
	for i, p := range c.pieces {
		if p != nil && p != keep {
			e.putPiece(p)
		}
		c.pieces[i] = nil
	}
	c.pieces = nil
}

// write copies p into c at chunk-relative offset rel, across pieces.
// rel+len(p) <= c.n.
func (c *chunk) write(rel int, p []byte) {
	for len(p) > 0 {
		n := copy((*c.pieces[rel/PieceSize])[rel%PieceSize:], p)
		p, rel = p[n:], rel+n
	}
}

// bytesAt returns c's bytes from rel to the end of the piece holding rel
// (or of the chunk, if sooner), and that piece.
func (c *chunk) bytesAt(rel int) ([]byte, *[]byte) {
	i := rel / PieceSize
	end := min((i+1)*PieceSize, c.n) - i*PieceSize
	return (*c.pieces[i])[rel%PieceSize : end], c.pieces[i]
}

// leaf returns the bytes of c's chunk-relative leaf k, piece by piece,
// in parts (which it fills from the start).
func (c *chunk) leaf(k int, parts *[leafPieces][]byte) [][]byte {
	lo, hi := k*hashtree.LeafSize, min((k+1)*hashtree.LeafSize, c.n)
	out := parts[:0]
	for at := lo; at < hi; {
		b, _ := c.bytesAt(at)
		b = b[:min(len(b), hi-at)]
		out = append(out, b)
		at += len(b)
	}
	return out
}
