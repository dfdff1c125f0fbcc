package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/fastfile/fschunk/internal/hashtree"
)

// errChanged means the file changed while it was being hashed; the result is
// discarded and the path re-examined.
var errChanged = errors.New("catalog: file changed while hashing")

// openFlags opens without blocking on a FIFO that replaced a regular file
// between stat and open; for regular files O_NONBLOCK has no effect.
const openFlags = os.O_RDONLY | syscall.O_NONBLOCK

const (
	hashBufSize = 256 << 10
	// checkEvery bounds the work wasted on a file that is rewritten while
	// being hashed.
	checkEvery = 8 << 20
)

// hashWorker hashes queued files until ctx is done. Workers are a fixed pool
// so that memory and open descriptors do not grow with the tree.
func (c *Catalog) hashWorker(ctx context.Context) {
	buf := make([]byte, hashBufSize)
	tb := hashtree.NewBuilder()
	for {
		rec, ver, want := c.nextJob()
		if rec == nil {
			select {
			case <-ctx.Done():
				return
			case <-c.work:
				continue
			}
		}
		start := time.Now()
		tree, st, n, err := c.hashFile(ctx, rec, ver, want, buf, tb)
		c.finishJob(ctx, rec, ver, tree, st, start, n, err)
		if ctx.Err() != nil {
			return
		}
	}
}

func (c *Catalog) nextJob() (*fileRec, uint32, statInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.qhead < len(c.queue) {
		rec := c.queue[c.qhead]
		c.queue[c.qhead] = nil
		c.qhead++
		if c.qhead == len(c.queue) {
			c.queue, c.qhead = c.queue[:0], 0
		} else if c.qhead > 4096 && c.qhead*2 > len(c.queue) {
			n := copy(c.queue, c.queue[c.qhead:])
			clear(c.queue[n:])
			c.queue, c.qhead = c.queue[:n], 0
		}
		rec.queued = false
		if rec.removed || rec.hashed && !rec.recheck {
			continue
		}
		rec.hashing = true
		c.inflight++
		if c.qhead < len(c.queue) {
			// More work: wake another worker.
			select {
			case c.work <- struct{}{}:
			default:
			}
		}
		return rec, rec.ver, statInfo{size: rec.size, mtime: rec.mtime, ctime: rec.ctime, ino: rec.ino}
	}
	return nil, 0, statInfo{}
}

// hashFile builds the hash tree of one file through the root. It succeeds
// only if the file had the expected size/mtime/ctime/inode before and
// after reading, so that a hash is never attached to a version it was not
// computed from. buf and h are the worker's, reused from file to file.
func (c *Catalog) hashFile(ctx context.Context, rec *fileRec, ver uint32, want statInfo, buf []byte, h *hashtree.Builder) (tree *hashtree.Tree, before statInfo, n int64, err error) {
	f, err := c.root.OpenFile(osPath(rec.path), openFlags, 0)
	if err != nil {
		return nil, before, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, before, 0, err
	}
	before = statOf(fi)
	if !before.regular {
		return nil, before, 0, fmt.Errorf("not a regular file")
	}
	if !before.sameVersion(want) {
		return nil, before, 0, errChanged
	}
	h.Reset()
	next := int64(checkEvery)
	for {
		m, rerr := f.Read(buf)
		h.Write(buf[:m])
		n += int64(m)
		// Counted as read, so that progress moves during a large file.
		c.hashedBytes.Add(uint64(m))
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return nil, before, n, rerr
		}
		if n >= next {
			next += checkEvery
			if err := ctx.Err(); err != nil {
				return nil, before, n, err
			}
			c.mu.RLock()
			stale := rec.ver != ver || rec.removed
			c.mu.RUnlock()
			if stale {
				return nil, before, n, errChanged
			}
		}
	}
	fi, err = f.Stat()
	if err != nil {
		return nil, before, n, err
	}
	if after := statOf(fi); !after.sameVersion(before) || n != before.size {
		return nil, before, n, errChanged
	}
	return h.Tree(), before, n, nil
}

func (c *Catalog) finishJob(ctx context.Context, rec *fileRec, ver uint32, tree *hashtree.Tree, st statInfo, start time.Time, n int64, err error) {
	c.mu.Lock()
	c.inflight--
	rec.hashing = false
	switch {
	case rec.removed:
	case rec.ver != ver:
		// The Run loop saw a newer version while we were reading.
		c.enqueueLocked(rec)
	case err == nil:
		if rec.recheck {
			c.racyRehashes.Add(1)
		} else {
			c.hashedFiles.Add(1)
		}
		rec.recheck = false
		if c.trees[tree.Root] == nil {
			c.trees[tree.Root] = tree
		}
		if old := rec.hash; !rec.hashed || old != tree.Root {
			c.setHashLocked(rec, tree.Root)
		}
		if r, until := racy(st, start); r {
			rec.racyUntil = until
			c.recheckLater(rec.path, until)
		}
		c.log.Debug("catalog: hashed", "path", rec.path, "size", rec.size, "hash", shortHash(tree.Root), "racy", !rec.racyUntil.IsZero())
	case ctx.Err() != nil:
		// Shutting down; the next run picks it up.
	case errors.Is(err, errChanged):
		// Let the Run loop re-stat it rather than spin here on a file that
		// is being written.
		c.restat[rec.path] = struct{}{}
	default:
		// Unreadable (or replaced by something unreadable): do not retry
		// until it changes or a full rescan comes by.
		rec.failed = true
		c.restat[rec.path] = struct{}{}
		c.log.Warn("catalog: cannot hash file", "path", rec.path, "size", rec.size, "err", err)
	}
	c.mu.Unlock()
	c.signalWake()
}

// recheckLater asks the Run loop to look at path again once its racy
// window has passed. Under c.mu.
func (c *Catalog) recheckLater(path string, at time.Time) {
	time.AfterFunc(time.Until(at)+time.Millisecond, func() {
		c.mu.Lock()
		c.restat[path] = struct{}{}
		c.mu.Unlock()
		c.signalWake()
	})
}
