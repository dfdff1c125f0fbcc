package fetch

import (
	"time"

	"github.com/fastfile/fschunk/internal/hashtree"
)

// PieceSize is the unit of a chunk's memory beyond the budget. Within
// the budget a chunk is one buffer, written to the client in one Write
// (a large write is cheaper: on plain TCP a chunk in 16 KiB writes cost
// 17 % more CPU per GiB). Beyond it, a chunk's bytes are held in pieces
// allocated each on its own, so that they can be given back one at a
// time: a piece is handed to the client in one Write, straight from its
// buffer, and given back as soon as that Write is done. A client that
// stops reading blocks the Write it is in, and so pins what it writes:
// a piece beyond the budget, and whole chunks only as long as those
// pinned stay within the budget too (see allocate); the rest of its
// window can be taken back (see stalled.go).
//
// 16 KiB is the largest TLS record and HTTP/2's default frame: a Write
// of it costs the TLS and HTTP/2 layers no more records or frames than
// a larger one cut by them, and 3,200 stalled HTTP/2 streams pin at most
// 52 MB of pieces rather than 200 MiB of 64 KiB leaves. It divides the
// hash tree's leaf, so a leaf is a whole number of pieces.
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

// allocate gives c, a chunk of d, its memory, if it has none yet: one
// buffer if it is a whole chunk and the budget has room for it beside
// what stalled responses pin, else pieces. Beyond the budget, stalled
// responses give back their windows first: responses that all reserved
// their first chunk at once take their memory only as their READs go
// out, and no fill may come to reclaim for them. Under e.mu.
func (e *Engine) allocate(d *download, c *chunk, now time.Time) {
	if c.allocated() {
		return
	}
	need := pieces(c.n) * PieceSize
	if e.alloc+need > e.budget {
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
	e.alloc += need
	if c.n == e.cfg.ChunkSize && e.alloc+e.pinned <= e.budget {
		c.whole = e.getBuf(&e.freeWhole, c.n)
		return
	}
	c.pieces = make([]*[]byte, pieces(c.n))
	for i := range c.pieces {
		c.pieces[i] = e.getBuf(&e.free, PieceSize)
	}
}

// allocated reports whether c has its memory.
func (c *chunk) allocated() bool { return c.whole != nil || c.pieces != nil }

// putBuf gives back a chunk's buffer or one of its pieces, to the budget
// and for reuse. Under e.mu.
func (e *Engine) putBuf(p *[]byte) {
	e.held -= len(*p)
	e.alloc -= len(*p)
	e.recycle(p)
}

// getBuf takes a buffer of size bytes from free, or allocates one. Under
// e.mu.
func (e *Engine) getBuf(free *[]*[]byte, size int) *[]byte {
	if n := len(*free); n > 0 {
		p := (*free)[n-1]
		(*free)[n-1] = nil
		*free = (*free)[:n-1]
		e.freeBytes -= size
		return p
	}
	b := make([]byte, size)
	return &b
}

// recycle keeps a buffer given back (a whole chunk's or a piece) for
// reuse as long as the buffers in use and kept fit in the budget, and
// leaves it to the garbage collector beyond. A window's buffers in use
// swing by megabytes while a download runs (a fresh buffer costs page
// faults and zeroing: 17 % more CPU per GiB with an eighth of the budget
// kept), and a sync.Pool would keep everything given back until two
// garbage collections, which a quiet gateway may not run for minutes:
// the windows of thousands of stalled responses, once reclaimed, would
// stay resident. Under e.mu.
func (e *Engine) recycle(p *[]byte) {
	if e.alloc+e.freeBytes+len(*p) > e.budget {
		return
	}
	e.freeBytes += len(*p)
	if len(*p) == PieceSize {
		e.free = append(e.free, p)
	} else {
		e.freeWhole = append(e.freeWhole, p)
	}
}

// freePieces returns everything c holds or reserves, but keep (the piece
// a reader is writing, see stalled.go; nil for none), once c leaves the
// window. Under e.mu.
func (e *Engine) freePieces(c *chunk, keep *[]byte) {
	switch {
	case c.whole != nil:
		if c.whole != keep {
			e.putBuf(c.whole)
		}
		c.whole = nil
	case c.pieces != nil:
		for i, p := range c.pieces {
			if p != nil && p != keep {
				e.putBuf(p)
			}
			c.pieces[i] = nil
		}
		c.pieces = nil
	default:
		e.held -= pieces(c.n) * PieceSize // reserved, never taken
	}
}

// write copies p into c at chunk-relative offset rel, across pieces.
// rel+len(p) <= c.n.
func (c *chunk) write(rel int, p []byte) {
	if c.whole != nil {
		copy((*c.whole)[rel:], p)
		return
	}
	for len(p) > 0 {
		n := copy((*c.pieces[rel/PieceSize])[rel%PieceSize:], p)
		p, rel = p[n:], rel+n
	}
}

// bytesAt returns c's bytes from rel to the end of its buffer, or of
// the piece holding rel, and that buffer or piece.
func (c *chunk) bytesAt(rel int) ([]byte, *[]byte) {
	if c.whole != nil {
		return (*c.whole)[rel:c.n], c.whole
	}
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
