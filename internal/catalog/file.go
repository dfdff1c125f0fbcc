package catalog

import (
	"container/list"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// File reads one published version of a file. It is safe for concurrent use.
type File struct {
	h      *handle
	closed atomic.Bool
}

// handle is a shared open descriptor for one version. Reads of the same
// version from many requests share it, so a burst of range requests costs
// one open.
type handle struct {
	c     *Catalog
	ref   pubRef
	f     *os.File
	stale atomic.Bool

	// guarded by handleCache.mu
	refs     int
	inCache  bool
	idle     *list.Element // in handleCache.idle while refs == 0 and cached
	lastUsed time.Time
}

// handleCache maps a hash to the live handle for it. Handles in use are
// always in the map (so that the catalog can retire them when the version
// disappears); idle ones are kept up to max, least recently used first out.
type handleCache struct {
	c    *Catalog
	mu   sync.Mutex
	m    map[[32]byte]*handle
	idle list.List // front = most recently released
}

func (hc *handleCache) init(c *Catalog) {
	hc.c = c
	hc.m = make(map[[32]byte]*handle)
}

func (hc *handleCache) len() int {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	return len(hc.m)
}

// acquire returns the live cached handle for hash, with a reference taken.
func (hc *handleCache) acquire(hash [32]byte) *handle {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	h := hc.m[hash]
	if h == nil || h.stale.Load() {
		return nil
	}
	hc.takeLocked(h)
	return h
}

func (hc *handleCache) takeLocked(h *handle) {
	if h.idle != nil {
		hc.idle.Remove(h.idle)
		h.idle = nil
	}
	h.refs++
}

// install caches a freshly opened handle, or returns the one another
// goroutine installed meanwhile (the caller then closes its own).
func (hc *handleCache) install(h *handle) *handle {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	key := h.ref.Hash
	if ex := hc.m[key]; ex != nil {
		if !ex.stale.Load() {
			hc.takeLocked(ex)
			return ex
		}
		hc.evictLocked(ex)
	}
	for len(hc.m) >= hc.c.maxHandles && hc.idle.Len() > 0 {
		hc.evictLocked(hc.idle.Back().Value.(*handle))
	}
	h.inCache = true
	h.refs = 1
	hc.m[key] = h
	return h
}

// evictLocked takes h out of the cache; its descriptor is closed now if
// nobody uses it, else by the last Close.
func (hc *handleCache) evictLocked(h *handle) {
	if hc.m[h.ref.Hash] == h {
		delete(hc.m, h.ref.Hash)
	}
	h.inCache = false
	if h.idle != nil {
		hc.idle.Remove(h.idle)
		h.idle = nil
	}
	if h.refs == 0 {
		h.f.Close()
	}
}

func (hc *handleCache) release(h *handle) {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	h.refs--
	if h.refs > 0 {
		return
	}
	if !h.inCache || h.stale.Load() {
		hc.evictLocked(h)
		return
	}
	h.lastUsed = time.Now()
	h.idle = hc.idle.PushFront(h)
	for len(hc.m) > hc.c.maxHandles && hc.idle.Len() > 0 {
		hc.evictLocked(hc.idle.Back().Value.(*handle))
	}
}

// drop retires the handle of a version that left the catalog.
func (hc *handleCache) drop(hash [32]byte, path string) {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	if h := hc.m[hash]; h != nil && h.ref.Path == path {
		h.stale.Store(true)
		hc.evictLocked(h)
	}
}

// closeIdle closes handles unused for at least d (all idle ones if d is 0).
// It runs with the periodic rescan so that idle descriptors need no timer
// of their own.
func (hc *handleCache) closeIdle(d time.Duration) {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	now := time.Now()
	for e := hc.idle.Back(); e != nil; {
		prev := e.Prev()
		if h := e.Value.(*handle); d == 0 || now.Sub(h.lastUsed) >= d {
			hc.evictLocked(h)
		}
		e = prev
	}
}

// Open returns a handle for reads of the version published under hash.
// Errors: ErrNotFound if no such version is published, ErrStale if the file
// on disk changed, or the error of opening it through the root (e.g. a path
// that now is a symlink out of the root).
func (c *Catalog) Open(hash [32]byte) (*File, error) {
	if h := c.handles.acquire(hash); h != nil {
		return &File{h: h}, nil
	}
	c.mu.RLock()
	cands := slices.Clone(c.byHash[hash])
	c.mu.RUnlock()
	if len(cands) == 0 {
		return nil, ErrNotFound
	}
	var firstErr error
	for _, ref := range cands {
		h, err := c.openHandle(ref)
		if err == nil {
			// Install under the catalog lock so that a concurrent publish
			// either sees the handle (and retires it) or happened before
			// and is detected here.
			c.mu.RLock()
			if c.isPublishedLocked(ref) {
				h2 := c.handles.install(h)
				c.mu.RUnlock()
				if h2 != h {
					h.f.Close()
				}
				return &File{h: h2}, nil
			}
			c.mu.RUnlock()
			h.f.Close()
			err = ErrStale
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

func (c *Catalog) openHandle(ref pubRef) (*handle, error) {
	f, err := c.root.OpenFile(osPath(ref.Path), openFlags, 0)
	if err != nil {
		c.noteChanged(ref.Path)
		return nil, fmt.Errorf("catalog: open %s: %w", ref.Path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("catalog: open %s: %w", ref.Path, err)
	}
	if !matches(statOf(fi), ref) {
		f.Close()
		c.noteChanged(ref.Path)
		return nil, ErrStale
	}
	return &handle{c: c, ref: ref, f: f}, nil
}

// matches is the per-read version check. nlink 0 means the file was deleted
// after it was opened: the content may still be readable, but the version
// is no longer in the tree.
func matches(st statInfo, ref pubRef) bool {
	return st.regular && st.nlink != 0 && st.size == ref.Size && st.mtime == ref.ModTime.UnixNano() && st.ino == ref.ino
}

// Entry returns the version this file reads.
func (f *File) Entry() Entry { return f.h.ref.Entry }

// ReadAt reads like os.File.ReadAt, but fails with ErrStale if the file is
// no longer the version it was opened for. The check runs after the read, so
// data from a version that changed during the read is not returned as good.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if f.closed.Load() {
		return 0, os.ErrClosed
	}
	h := f.h
	if h.stale.Load() {
		return 0, ErrStale
	}
	n, err := h.f.ReadAt(p, off)
	if verr := h.verify(); verr != nil {
		return 0, verr
	}
	return n, err
}

// verify checks with one fstat, after every read, that the file is still
// the version it was opened for: a modification made before the read
// returned is always caught (one cheap syscall beside a pread and a
// sendmsg, and one per 64 KiB batch of DATA).
func (h *handle) verify() error {
	fi, err := h.f.Stat()
	if err != nil || !matches(statOf(fi), h.ref) {
		if h.stale.CompareAndSwap(false, true) {
			h.c.noteChanged(h.ref.Path)
		}
		return ErrStale
	}
	return nil
}

// Close releases the handle. The descriptor may stay cached for other
// readers of the same version.
func (f *File) Close() error {
	if !f.closed.CompareAndSwap(false, true) {
		return os.ErrClosed
	}
	f.h.c.handles.release(f.h)
	return nil
}
