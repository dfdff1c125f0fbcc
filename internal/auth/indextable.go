package auth

import (
	"crypto/rand"
	"encoding/binary"
	"iter"
	"sync"
)

// IndexTable maps the receiver indices of incoming datagrams (the
// Receiver field every message after HELLO carries) to what they belong
// to: a session, or a handshake in progress. It is the one demultiplexing
// table of an endpoint, as wireguard-go's device/indextable.go: indices
// are random 32-bit values, never 0 (0 names no one), and never two
// owners at once, so a datagram finds its owner with one lookup under a
// read lock.
//
// T is what an index leads to (*session, or a struct naming a session or
// a handshake); its zero value means "reserved, nobody yet": Lookup does
// not report it. The zero IndexTable is empty and ready. Its lock is its
// own and is never held while calling out, so callers may hold theirs
// around its methods.
type IndexTable[T comparable] struct {
	mu sync.RWMutex
	m  map[uint32]T
}

// randIndex draws a candidate index. crypto/rand: the index is the only
// thing a datagram from an unauthenticated sender can aim at, so it should
// not be guessable from earlier ones.
func randIndex() uint32 {
	var b [4]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}

// NewIndex stores v under a fresh random index and returns it. v may be
// the zero T to reserve an index for a value that needs to know it (a
// session is keyed by its own index): Replace then fills it in.
func (t *IndexTable[T]) NewIndex(v T) uint32 {
	for {
		idx := randIndex()
		if t.Claim(idx, v) {
			return idx
		}
	}
}

// Claim stores v under idx, an index drawn elsewhere (by a handshake
// initiator), if idx is not 0 and not in use.
func (t *IndexTable[T]) Claim(idx uint32, v T) bool {
	if idx == 0 {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, used := t.m[idx]; used {
		return false
	}
	if t.m == nil {
		t.m = make(map[uint32]T)
	}
	t.m[idx] = v
	return true
}

// Replace stores v under idx if idx now holds old: a reserved index (old
// the zero T) gets its value, a handshake becomes its session. It reports
// whether it did; a stale old (the entry has moved on) changes nothing.
func (t *IndexTable[T]) Replace(idx uint32, old, v T) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur, ok := t.m[idx]; !ok || cur != old {
		return false
	}
	t.m[idx] = v
	return true
}

// Lookup returns what idx leads to; ok is false for an index not in use
// or only reserved.
func (t *IndexTable[T]) Lookup(idx uint32) (v T, ok bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	v = t.m[idx]
	var zero T
	return v, v != zero
}

// Delete frees idx if it holds v, so that an owner that ended cannot free
// an index handed on to another. It reports whether it did.
func (t *IndexTable[T]) Delete(idx uint32, v T) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur, ok := t.m[idx]; !ok || cur != v {
		return false
	}
	delete(t.m, idx)
	return true
}

// Len is the number of indices in use, reserved ones included.
func (t *IndexTable[T]) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.m)
}

// All yields every index in use and its value (reserved ones too, with
// the zero T), under the table's read lock: the loop must not call the
// table's other methods that write.
func (t *IndexTable[T]) All() iter.Seq2[uint32, T] {
	return func(yield func(uint32, T) bool) {
		t.mu.RLock()
		defer t.mu.RUnlock()
		for idx, v := range t.m {
			if !yield(idx, v) {
				return
			}
		}
	}
}
