package catalog

import (
	"cmp"
	"context"
	"io/fs"
	"slices"
	"strings"
	"time"
)

// statInfo is what the catalog compares to decide whether a file changed.
type statInfo struct {
	size, mtime, ctime int64
	dev, ino, nlink    uint64
	regular            bool
}

func statOf(fi fs.FileInfo) statInfo {
	dev, ino, nlink, ctime := sysStat(fi)
	return statInfo{
		size:    fi.Size(),
		mtime:   fi.ModTime().UnixNano(),
		ctime:   ctime,
		dev:     dev,
		ino:     ino,
		nlink:   nlink,
		regular: fi.Mode().IsRegular(),
	}
}

// sameVersion is the version check: size, mtime, ctime and inode, as
// promised to readers. ctime counts because mtime can be set back (cp -p,
// touch -r) after a rewrite in place, and ctime cannot: a chmod costs a
// re-hash, a rewrite that keeps its mtime no longer keeps its old hash.
func (s statInfo) sameVersion(o statInfo) bool {
	return s.size == o.size && s.mtime == o.mtime && s.ctime == o.ctime && s.ino == o.ino
}

// Racy hashes (git's rule): a file whose mtime or ctime lies within the
// file system's timestamp granularity of the moment its hashing started
// may have been written again in the same tick, invisibly to stat. Its
// hash is published (the gateway verifies every byte anyway) but the file
// is hashed again once the window has passed. File systems with whole
// second timestamps (FAT, some network file systems) get 2 s.
const (
	racyWindow       = 50 * time.Millisecond
	racyWindowCoarse = 2 * time.Second
)

// racy reports whether a hash that started at start may miss a write to
// a file with stat st, and until when.
func racy(st statInfo, start time.Time) (bool, time.Time) {
	w := racyWindow
	if st.mtime%int64(time.Second) == 0 && st.ctime%int64(time.Second) == 0 {
		w = racyWindowCoarse
	}
	last := time.Unix(0, max(st.mtime, st.ctime))
	return !last.Before(start.Add(-w)), last.Add(w)
}

// ident lets a renamed file keep its hash: same inode, size and mtime means
// same content as far as the catalog can ever tell.
type ident struct {
	size, mtime int64
	ino         uint64
}

// goneSet remembers the hashes of recently removed files for a while, so
// that a rename is recognised even when its two halves arrive in different
// batches of events.
type goneSet map[ident]goneHash

type goneHash struct {
	hash [32]byte
	at   time.Time
}

const (
	goneTTL = 10 * time.Second
	goneMax = 1 << 17
)

// prune forgets old entries; it runs at the start of each scan, so an idle
// catalog needs no timer for it.
func (g goneSet) prune(now time.Time) {
	if len(g) > goneMax {
		clear(g)
		return
	}
	for k, v := range g {
		if now.Sub(v.at) > goneTTL {
			delete(g, k)
		}
	}
}

type observation struct {
	path string
	st   statInfo
}

// scan is one pass of the Run loop over part or all of the tree. Observations
// are applied in chunks so that readers and hash workers are never locked out
// for the duration of a walk over a large tree.
type scan struct {
	l         *loop
	ctx       context.Context
	full      bool // full rescan: also retry files whose hashing failed
	deferHash bool // resolve hashes after removals, so renames reuse hashes
	obs       []observation
	need      []*fileRec
	gone      goneSet             // the loop's recently removed files
	failed    map[string]struct{} // directories that could not be read
	added     []string            // directories first watched by this scan
	visited   int
}

const flushEvery = 1024

func (l *loop) newScan(ctx context.Context, full, deferHash bool) *scan {
	l.gone.prune(time.Now())
	return &scan{
		l:         l,
		ctx:       ctx,
		full:      full,
		deferHash: deferHash,
		gone:      l.gone,
		failed:    make(map[string]struct{}),
	}
}

type kind int

const (
	kindGone kind = iota
	kindFile
	kindDir
)

// classify looks at one path through the root. Anything that is not a
// directory or a regular file (possibly behind a symlink that stays inside
// the root) counts as gone.
func (c *Catalog) classify(p string) (kind, statInfo) {
	if !fs.ValidPath(p) {
		return kindGone, statInfo{}
	}
	fi, err := c.root.Lstat(osPath(p))
	if err != nil {
		return kindGone, statInfo{}
	}
	mode := fi.Mode()
	switch {
	case mode.IsDir():
		return kindDir, statInfo{}
	case mode.IsRegular():
	case mode&fs.ModeSymlink != 0:
		// os.Root refuses targets outside the root; symlinked directories
		// are not followed to avoid loops and double listings.
		if fi, err = c.root.Stat(osPath(p)); err != nil || !fi.Mode().IsRegular() {
			return kindGone, statInfo{}
		}
	default:
		return kindGone, statInfo{}
	}
	st := statOf(fi)
	if c.isStateFile(st) {
		return kindGone, statInfo{}
	}
	return kindFile, st
}

func (c *Catalog) isStateFile(st statInfo) bool {
	return c.stateID.ino != 0 && st.ino == c.stateID.ino && st.dev == c.stateID.dev
}

// parentsAreDirs reports whether every ancestor of p is a real directory,
// not a symlink to one. A walk never goes through directory symlinks, and
// an event path must not either: an event can carry a stale name of a
// directory that has since been replaced by a symlink. memo caches answers
// for one batch of events.
func (c *Catalog) parentsAreDirs(p string, memo map[string]bool) bool {
	for i := 0; i < len(p); i++ {
		if p[i] != '/' {
			continue
		}
		dir := p[:i]
		ok, known := memo[dir]
		if !known {
			fi, err := c.root.Lstat(osPath(dir))
			ok = err == nil && fi.IsDir()
			memo[dir] = ok
		}
		if !ok {
			return false
		}
	}
	return true
}

// walk visits the tree below start (a directory) through the root, adding
// watches before each directory is read.
func (l *loop) walk(s *scan, start string) error {
	c := l.c
	return fs.WalkDir(c.root.FS(), start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if d == nil && p == start {
				return err
			}
			// Keep what we knew below a directory we could not read rather
			// than announce a mass removal on what may be a transient error.
			s.failed[p] = struct{}{}
			c.log.Warn("catalog: cannot read directory", "path", p, "err", err)
			return nil
		}
		if s.visited++; s.visited%256 == 0 && s.ctx.Err() != nil {
			return s.ctx.Err()
		}
		t := d.Type()
		switch {
		case t.IsDir():
			if _, ok := l.watched[p]; !ok && l.w != nil && !l.watchBroken {
				s.added = append(s.added, p)
			}
			l.watch(p)
		case t.IsRegular():
			// Under an os.Root, ReadDir already did an fstatat per entry.
			fi, err := d.Info()
			if err != nil {
				return nil
			}
			s.add(p, statOf(fi))
		case t&fs.ModeSymlink != 0:
			fi, err := c.root.Stat(osPath(p))
			if err != nil || !fi.Mode().IsRegular() {
				return nil
			}
			s.add(p, statOf(fi))
		}
		return nil
	})
}

func (s *scan) add(p string, st statInfo) {
	if s.l.c.isStateFile(st) {
		return
	}
	s.obs = append(s.obs, observation{p, st})
	if len(s.obs) >= flushEvery {
		s.flush()
	}
}

func (s *scan) flush() {
	if len(s.obs) == 0 {
		return
	}
	c := s.l.c
	c.mu.Lock()
	for _, o := range s.obs {
		s.applyLocked(o)
	}
	c.mu.Unlock()
	clear(s.obs)
	s.obs = s.obs[:0]
}

// applyLocked records one observation of a regular file.
func (s *scan) applyLocked(o observation) {
	c := s.l.c
	rec := c.files[o.path]
	if rec == nil {
		rec = &fileRec{path: o.path, size: o.st.size, mtime: o.st.mtime, ctime: o.st.ctime, ino: o.st.ino, seen: s.l.epoch}
		c.files[o.path] = rec
		s.needHash(rec)
		return
	}
	rec.seen = s.l.epoch
	if rec.size == o.st.size && rec.mtime == o.st.mtime && rec.ctime == o.st.ctime && rec.ino == o.st.ino {
		if !rec.hashed && !rec.queued && !rec.hashing && (!rec.failed || s.full) {
			s.needHash(rec)
		} else if rec.hashed && !rec.racyUntil.IsZero() && !time.Now().Before(rec.racyUntil) {
			// Racy: hash it again, still published meanwhile.
			rec.racyUntil, rec.recheck = time.Time{}, false
			rec.recheck = true
			c.enqueueLocked(rec)
		}
		return
	}
	rec.size, rec.mtime, rec.ctime, rec.ino = o.st.size, o.st.mtime, o.st.ctime, o.st.ino
	rec.racyUntil = time.Time{}
	rec.ver++
	rec.failed = false
	if rec.hashed {
		rec.hashed = false
		c.pending[rec.path] = struct{}{}
		c.stateDirty = true
	}
	s.needHash(rec)
}

func (s *scan) needHash(rec *fileRec) {
	if s.deferHash {
		s.need = append(s.need, rec)
		return
	}
	s.l.c.resolveLocked([]*fileRec{rec}, nil)
}

func (s *scan) underFailed(p string) bool {
	return len(s.failed) > 0 && hasAncestorIn(p, s.failed)
}

// hasAncestorIn reports whether a proper ancestor directory of p is in set
// ("." counts as the ancestor of everything).
func hasAncestorIn(p string, set map[string]struct{}) bool {
	if _, ok := set["."]; ok {
		return true
	}
	for {
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			return false
		}
		p = p[:i]
		if _, ok := set[p]; ok {
			return true
		}
	}
}

// resolveLocked finds a hash for each record without reading it if it can
// (state file, or a file that just disappeared with the same inode, size and
// mtime, i.e. a rename) and queues the rest for the workers.
func (c *Catalog) resolveLocked(recs []*fileRec, gone goneSet) {
	for _, rec := range recs {
		if rec.removed || rec.hashed {
			continue
		}
		if sr, ok := c.stateCache[rec.path]; ok && sr.size == rec.size && sr.mtime == rec.mtime && sr.ctime == rec.ctime && sr.ino == rec.ino && c.trees[sr.hash] != nil {
			// Already in the state file: no need to rewrite it for this.
			dirty := c.stateDirty
			c.setHashLocked(rec, sr.hash)
			c.stateDirty = dirty
			c.stateHits++
			c.cacheHits.Add(1)
			continue
		}
		if rec.ino != 0 {
			if g, ok := gone[ident{rec.size, rec.mtime, rec.ino}]; ok && c.trees[g.hash] != nil {
				c.setHashLocked(rec, g.hash)
				c.cacheHits.Add(1)
				continue
			}
		}
		c.enqueueLocked(rec)
	}
}

func (c *Catalog) setHashLocked(rec *fileRec, h [32]byte) {
	rec.hash = h
	rec.hashed = true
	rec.failed = false
	c.pending[rec.path] = struct{}{}
	c.stateDirty = true
}

func (c *Catalog) enqueueLocked(rec *fileRec) {
	if rec.queued || rec.hashing {
		// A worker that is hashing it sees the changed ver and requeues.
		return
	}
	rec.queued = true
	c.queue = append(c.queue, rec)
	select {
	case c.work <- struct{}{}:
	default:
	}
}

func (c *Catalog) removeLocked(rec *fileRec, gone goneSet) {
	delete(c.files, rec.path)
	rec.removed = true
	if rec.hashed && rec.ino != 0 && gone != nil {
		gone[ident{rec.size, rec.mtime, rec.ino}] = goneHash{rec.hash, time.Now()}
	}
	c.pending[rec.path] = struct{}{}
	c.stateDirty = true
}

// fullScan walks the whole tree and removes what it did not see. It is the
// initial scan, the safety net for lost events and the only periodic work;
// on an unchanged tree it only stats.
func (l *loop) fullScan(ctx context.Context) {
	c := l.c
	l.fullPending = false
	clear(l.dirty) // everything they could name is looked at anyway
	l.epoch++
	c.mu.RLock()
	published := c.gen > 0
	c.mu.RUnlock()
	start := time.Now()
	// The initial scan defers hashing too, so that the queue can be
	// ordered smallest first: many small files are announced before one
	// large file is done.
	s := l.newScan(ctx, true, true)
	err := l.walk(s, ".")
	if ctx.Err() != nil {
		return
	}
	s.flush()
	if err != nil {
		c.log.Error("catalog: scan failed", "err", err)
		return
	}
	c.mu.Lock()
	for p, rec := range c.files {
		if rec.seen != l.epoch && !s.underFailed(p) {
			c.removeLocked(rec, s.gone)
		}
	}
	if !published {
		slices.SortStableFunc(s.need, func(a, b *fileRec) int { return cmp.Compare(a.size, b.size) })
	}
	c.resolveLocked(s.need, s.gone)
	nfiles, queued := len(c.files), len(c.queue)-c.qhead
	c.mu.Unlock()
	l.sweepWatches(s, func(string) bool { return true })
	c.rescans.Add(1)
	c.log.Debug("catalog: full scan", "files", nfiles, "queued", queued, "took", time.Since(start))
}

// processDirty re-examines the paths named by fsnotify events: a removed
// path takes its subtree with it, a new directory is walked, a file is
// re-stat'ed.
func (l *loop) processDirty(ctx context.Context) {
	c := l.c
	if len(l.dirty) == 0 {
		return
	}
	paths := make([]string, 0, len(l.dirty))
	for p := range l.dirty {
		paths = append(paths, p)
	}
	clear(l.dirty)
	slices.Sort(paths)
	l.epoch++
	s := l.newScan(ctx, false, true)
	dirs := make(map[string]struct{})
	var dirList, notFiles []string
	var goneDirs map[string]struct{}
	realDirs := make(map[string]bool)
	for _, p := range paths {
		if hasAncestorIn(p, dirs) {
			continue // covered by walking that directory
		}
		k, st := kindGone, statInfo{}
		if c.parentsAreDirs(p, realDirs) {
			k, st = c.classify(p)
		}
		switch k {
		case kindDir:
			dirs[p] = struct{}{}
			dirList = append(dirList, p)
			notFiles = append(notFiles, p)
		case kindFile:
			s.obs = append(s.obs, observation{p, st})
		default:
			notFiles = append(notFiles, p)
		}
	}

	// Removals first, so that the new name of a renamed file can take over
	// the hash of the old one.
	c.mu.Lock()
	for _, p := range notFiles {
		if rec := c.files[p]; rec != nil {
			c.removeLocked(rec, s.gone)
		} else if _, isDir := dirs[p]; !isDir {
			if goneDirs == nil {
				goneDirs = make(map[string]struct{})
			}
			goneDirs[p] = struct{}{}
		}
	}
	for _, o := range s.obs {
		if c.files[o.path] == nil {
			// A file where there was none: maybe a directory before.
			if goneDirs == nil {
				goneDirs = make(map[string]struct{})
			}
			goneDirs[o.path] = struct{}{}
		}
	}
	if len(goneDirs) > 0 {
		for p, rec := range c.files {
			if hasAncestorIn(p, goneDirs) {
				c.removeLocked(rec, s.gone)
			}
		}
	}
	c.mu.Unlock()
	// Drop watches of vanished directories before watching new ones: after a
	// directory rename the kernel may hand out the same watch for the new
	// name.
	if len(goneDirs) > 0 && l.w != nil {
		for p := range l.watched {
			if _, ok := goneDirs[p]; ok || hasAncestorIn(p, goneDirs) {
				l.unwatch(p)
			}
		}
	}
	s.flush()
	for _, d := range dirList {
		if err := l.walk(s, d); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.failed[d] = struct{}{}
		}
	}
	s.flush()
	c.mu.Lock()
	if len(dirs) > 0 {
		for p, rec := range c.files {
			if rec.seen != l.epoch && hasAncestorIn(p, dirs) && !s.underFailed(p) {
				c.removeLocked(rec, s.gone)
			}
		}
	}
	c.resolveLocked(s.need, s.gone)
	c.mu.Unlock()
	if len(dirs) > 0 {
		l.sweepWatches(s, func(p string) bool { return hasAncestorIn(p, dirs) })
	}
}

// sweepWatches drops watches of directories a scan no longer found.
func (l *loop) sweepWatches(s *scan, under func(string) bool) {
	if l.w == nil {
		return
	}
	removed := false
	for p, e := range l.watched {
		if e != l.epoch && under(p) && !s.underFailed(p) {
			l.unwatch(p)
			removed = true
		}
	}
	if !removed {
		return
	}
	// A watch added in this scan may have been the kernel's existing watch
	// of a moved directory, now removed with the old name: add it again.
	for _, p := range s.added {
		if _, ok := l.watched[p]; ok {
			delete(l.watched, p)
			l.watch(p)
		}
	}
}
