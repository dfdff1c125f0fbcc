// Package cache keeps whole small files in the gateway's memory, keyed by
// content hash, so that hot small files are answered without a round trip
// to the servers.
//
// Keying by the content hash makes the cache always correct: a path
// whose file changes gets a new hash, so an entry can never be stale, only
// unused (and then evicted, least recently used first). Callers verify the
// hash of what they add, so a faulty or hostile server cannot poison it.
package cache

import (
	"container/list"
	"sync"
)

// HashSize is the size of a content hash (a hash tree root).
const HashSize = 32

// Stats are the cache's counters.
type Stats struct {
	Hits      uint64 `json:"hits"`
	Misses    uint64 `json:"misses"`
	Evictions uint64 `json:"evictions"`
	Entries   int    `json:"entries"`
	Bytes     int64  `json:"bytes"` // held now
	MaxBytes  int64  `json:"max_bytes"`
}

// Cache is an LRU of immutable byte slices bounded in total bytes. It is
// safe for concurrent use. The zero value is not usable; use New.
type Cache struct {
	maxBytes, maxObject int64

	mu    sync.Mutex
	lru   *list.List // front: most recently used; values are *entry
	index map[[HashSize]byte]*list.Element
	bytes int64
	st    Stats
}

type entry struct {
	hash [HashSize]byte
	data []byte
}

// New returns a cache holding at most maxBytes, of files up to maxObject
// bytes each (at most maxBytes).
func New(maxBytes, maxObject int64) *Cache {
	return &Cache{
		maxBytes:  maxBytes,
		maxObject: min(maxObject, maxBytes),
		lru:       list.New(),
		index:     map[[HashSize]byte]*list.Element{},
	}
}

// Admits reports whether a file of size bytes may be cached.
func (c *Cache) Admits(size int64) bool { return size <= c.maxObject }

// Get returns the content with hash h. The slice must not be modified.
func (c *Cache) Get(h [HashSize]byte) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.index[h]
	if !ok {
		c.st.Misses++
		return nil, false
	}
	c.st.Hits++
	c.lru.MoveToFront(el)
	return el.Value.(*entry).data, true
}

// Add stores data as the content with hash h, evicting the least recently
// used entries to make room. The caller must have checked that data hashes
// to h, and must not modify data afterwards. Files that Admits refuses are
// ignored.
func (c *Cache) Add(h [HashSize]byte, data []byte) {
	size := int64(len(data))
	if !c.Admits(size) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.index[h]; ok {
		c.lru.MoveToFront(el)
		return
	}
	for c.bytes+size > c.maxBytes {
		old := c.lru.Back()
		if old == nil {
			return
		}
		e := c.lru.Remove(old).(*entry)
		delete(c.index, e.hash)
		c.bytes -= int64(len(e.data))
		c.st.Evictions++
	}
	c.index[h] = c.lru.PushFront(&entry{hash: h, data: data})
	c.bytes += size
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.st
	s.Entries, s.Bytes, s.MaxBytes = len(c.index), c.bytes, c.maxBytes
	return s
}
