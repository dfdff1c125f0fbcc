// Package replay implements the sliding-window replay filter of RFC 6479.
//
// Every authenticated datagram carries a 64-bit counter. A receiver must
// accept each counter at most once, yet tolerate reordering: a window of
// the most recent WindowSize counters is kept as a ring of 64-bit words, so
// testing and marking are O(1) and the window slides a word at a time
// without shifting the whole bitmap.
package replay

const (
	wordBits   = 64
	ringWords  = 128 // 8192 bits: a power of two, so the index is a mask
	ringBits   = ringWords * wordBits
	wordMask   = ringWords - 1
	bitMask    = wordBits - 1
	wordShift  = 6
	windowSize = ringBits - wordBits // one word is always being recycled
)

// WindowSize is how far behind the newest accepted counter a counter may
// be and still be accepted (if not seen before).
const WindowSize = windowSize

// Filter is an RFC 6479 anti-replay window. The zero value is ready and
// accepts counter 0 first. It is not safe for concurrent use: the owner
// (one session) serialises calls.
type Filter struct {
	last uint64 // highest counter accepted so far
	used bool   // whether anything has been accepted yet
	ring [ringWords]uint64
}

// Check reports whether counter would be accepted, without marking it.
// Callers check before the (expensive) tag verification and Accept only
// after it succeeded, so a forged datagram can never burn a counter.
func (f *Filter) Check(counter uint64) bool {
	if !f.used || counter > f.last {
		return true
	}
	if f.last-counter >= windowSize {
		return false
	}
	return f.ring[(counter>>wordShift)&wordMask]&(1<<(counter&bitMask)) == 0
}

// Accept marks counter as seen and reports whether it was new and inside
// the window. A false result means the datagram is a replay or too old and
// must be dropped.
func (f *Filter) Accept(counter uint64) bool {
	if !f.Check(counter) {
		return false
	}
	if !f.used || counter > f.last {
		idx := counter >> wordShift
		cur := f.last >> wordShift
		if !f.used {
			cur = idx
			f.ring[idx&wordMask] = 0
		}
		// Clear every word the window slides over; at most the whole ring.
		diff := idx - cur
		if diff > ringWords {
			diff = ringWords
		}
		for i := uint64(1); i <= diff; i++ {
			f.ring[(cur+i)&wordMask] = 0
		}
		f.last = counter
		f.used = true
	}
	f.ring[(counter>>wordShift)&wordMask] |= 1 << (counter & bitMask)
	return true
}
