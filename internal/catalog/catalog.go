// Package catalog keeps track of the files FastFileSrv serves from one
// directory tree and hands out confined, version-checked read handles for
// them.
//
// Files are identified by their content hash (the root of the BLAKE3 hash
// tree of docs/PROTOCOL.md §5.17, package hashtree), because the gateway
// addresses data by content: a path is only a label, and a byte range is only
// meaningful for one exact version of a file. The catalog therefore never
// announces a file before it has been hashed, and every read is checked
// against the version (size, mtime, inode) that was hashed.
//
// All access to served content goes through an *os.Root, so that neither a
// crafted name nor a symlink planted in the tree can make the server read
// outside the directory it was given.
//
// The package knows nothing about the network protocol: callers poll
// Snapshot/Since after a signal on Changed and translate that into whatever
// they send.
package catalog

import (
	"cmp"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fastfile/fschunk/internal/hashtree"
)

// Entry describes one published version of one file.
type Entry struct {
	Path    string    // slash-separated, relative to the root, no leading slash, clean (no "." or ".." elements)
	Size    int64     // bytes
	ModTime time.Time // full nanosecond precision as stat reports it
	Hash    [32]byte  // content hash: the root of the hash tree (package hashtree)
}

// Change is one element of a delta between two generations.
type Change struct {
	Entry   Entry
	Removed bool // Entry.Path is gone (Hash etc. are zero)
}

// Options tunes a Catalog. The zero value is usable.
type Options struct {
	StateFile      string        // hash cache file; "" = no cache. Must not be inside the served root.
	RescanInterval time.Duration // safety-net full rescan period; default 60s
	Debounce       time.Duration // coalescing of fsnotify events; default 200ms
	HashWorkers    int           // default 2
	ProgressEvery  time.Duration // hashing progress log period while files wait; default 5s
	// NoWatch turns fsnotify off: changes are seen by the periodic
	// rescan only (file systems where inotify sees nothing, such as
	// network mounts; tests in a testing/synctest bubble, where a
	// goroutine blocked reading inotify would stop the virtual clock; and
	// tests of what a server serves when its disk changes behind its back).
	NoWatch bool
	Logger  *slog.Logger // nil = discard
}

// Stats are counters for monitoring and tests. They are a consistent-enough
// view for humans; individual fields are read without a common lock.
type Stats struct {
	Gen         uint64 // current generation
	Files       int    // regular files currently known on disk (hashed or not)
	Entries     int    // published entries
	Queued      int    // files waiting to be hashed
	HashedFiles uint64 // files whose content was read and hashed since Open
	HashedBytes uint64 // bytes read for hashing since Open
	// RacyRehashes counts files hashed again because their first hash
	// was racy (not in HashedFiles; their bytes are in HashedBytes).
	RacyRehashes uint64
	CacheHits    uint64 // hashes reused without reading (state file or rename)
	Rescans      uint64 // full scans done, including the initial one
	WatchedDirs  int    // directories with an fsnotify watch
	OpenHandles  int    // cached *os.File handles (in use or idle)
}

var (
	// ErrNotFound is returned by Open for a hash the catalog does not publish.
	ErrNotFound = errors.New("catalog: hash not found")
	// ErrStale means the file on disk is no longer the version that was
	// published under the requested hash; the caller should refetch the
	// catalog rather than serve mixed data.
	ErrStale = errors.New("catalog: file changed on disk")
)

const (
	defaultRescan   = 60 * time.Second
	defaultDebounce = 200 * time.Millisecond
	defaultWorkers  = 2
	defaultProgress = 5 * time.Second
	// maxHistory bounds Since: older clients get a full snapshot, which is
	// cheaper than keeping an unbounded change log.
	maxHistory = 64
	// defaultMaxHandles bounds idle cached file descriptors.
	defaultMaxHandles = 256
	// defaultSaveDelay rate-limits state file writes during bursts of changes:
	// the file holds one record per file, so it is not written per batch.
	defaultSaveDelay = 5 * time.Second
)

// Catalog is the set of files under one root. Create it with Open, start it
// with Run. All methods are safe for concurrent use.
type Catalog struct {
	root      *os.Root
	rootPath  string // absolute path, used only to name fsnotify watches
	stateFile string // absolute, "" if none
	opt       Options
	log       *slog.Logger

	// Tunables, unexported so that tests can shrink them.
	maxHandles int
	saveDelay  time.Duration
	noWatch    bool // pretend fsnotify is unavailable

	started atomic.Bool
	ready   chan struct{} // closed after the first publish
	changed chan struct{} // buffered 1, coalesced generation signal
	work    chan struct{} // buffered 1, wakes a hash worker
	wake    chan struct{} // buffered 1, wakes the Run loop (hash done, restat request)

	mu         sync.RWMutex
	files      map[string]*fileRec // what is on disk, by path
	queue      []*fileRec          // files to hash, FIFO from qhead
	qhead      int
	inflight   int                 // files being hashed right now
	pending    map[string]struct{} // paths whose published state may be outdated
	restat     map[string]struct{} // paths a worker or reader found changed
	stateDirty bool                // hashes changed since the state file was written
	gen        uint64
	snap       []Entry               // published entries sorted by Path; never mutated once published
	byHash     map[[32]byte][]pubRef // published entries by content
	// trees holds the hash tree of every hashed content, by root: the
	// gateway asks for blocks of them to verify what it streams.
	trees map[[32]byte]*hashtree.Tree
	hist  []batch // changes of the last generations, oldest first
	histN int     // total changes in hist

	// stateCache holds the hashes loaded from the state file until the first
	// scan has consumed them. Only touched by Open and the Run goroutine.
	stateCache map[string]stateRec
	stateHits  int // records of stateCache used; fewer means the file has stale records
	// stateID identifies the state file on disk so that a scan can skip it
	// should it ever appear under the root (bind mounts, hard links).
	stateID fileID

	handles handleCache

	hashedFiles  atomic.Uint64
	hashedBytes  atomic.Uint64
	racyRehashes atomic.Uint64
	cacheHits    atomic.Uint64
	rescans      atomic.Uint64
	watchedDirs  atomic.Int64
}

// fileRec is the catalog's knowledge about one path on disk. Guarded by
// Catalog.mu. The stat fields are written only by the Run goroutine, the hash
// fields by whoever establishes the hash.
type fileRec struct {
	path    string
	size    int64
	mtime   int64  // ns since the epoch
	ctime   int64  // ns since the epoch; 0 where the platform has none
	ino     uint64 // 0 where the platform has no inode
	ver     uint32 // bumped when the stat changes, so that in-flight hashing can tell
	seen    uint32 // scan epoch of the last observation, for mark and sweep
	hash    [32]byte
	hashed  bool // hash matches size/mtime/ino
	queued  bool
	hashing bool
	failed  bool // reading failed for this stat; retried only by a full rescan
	removed bool
	// racyUntil: the hash may have missed a write in the same timestamp
	// tick (see racy); hash again after this time. Zero: not racy.
	racyUntil time.Time
	recheck   bool // hashed, but queued to be hashed again (racy)
}

func (r *fileRec) entry() Entry {
	return Entry{Path: r.path, Size: r.size, ModTime: time.Unix(0, r.mtime), Hash: r.hash}
}

// pubRef is a published entry plus the inode it was hashed from, so that
// Open can verify it is opening that very file.
type pubRef struct {
	Entry
	ino uint64
}

type batch struct {
	gen     uint64
	changes []Change // sorted by path
}

// fileID is the identity of a file on disk as far as stat can tell.
type fileID struct {
	dev, ino uint64
}

// Open prepares a catalog of the directory root. It does not scan; Run does.
func Open(root string, opt Options) (*Catalog, error) {
	if opt.RescanInterval <= 0 {
		opt.RescanInterval = defaultRescan
	}
	if opt.Debounce <= 0 {
		opt.Debounce = defaultDebounce
	}
	if opt.HashWorkers <= 0 {
		opt.HashWorkers = defaultWorkers
	}
	if opt.ProgressEvery <= 0 {
		opt.ProgressEvery = defaultProgress
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("catalog: root %q: %w", root, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("catalog: root: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("catalog: root %q is not a directory", abs)
	}
	var stateFile string
	if opt.StateFile != "" {
		if stateFile, err = filepath.Abs(opt.StateFile); err != nil {
			return nil, fmt.Errorf("catalog: state file %q: %w", opt.StateFile, err)
		}
		if isWithin(abs, stateFile) {
			return nil, fmt.Errorf("catalog: state file %q is inside the served root %q", stateFile, abs)
		}
	}
	r, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("catalog: root: %w", err)
	}
	// Fail now rather than serve an empty catalog from an unreadable root.
	if err := checkReadable(r); err != nil {
		r.Close()
		return nil, fmt.Errorf("catalog: root %q: %w", abs, err)
	}
	c := &Catalog{
		root:       r,
		rootPath:   abs,
		stateFile:  stateFile,
		opt:        opt,
		log:        log,
		maxHandles: defaultMaxHandles,
		noWatch:    opt.NoWatch,
		saveDelay:  defaultSaveDelay,
		ready:      make(chan struct{}),
		changed:    make(chan struct{}, 1),
		work:       make(chan struct{}, 1),
		wake:       make(chan struct{}, 1),
		files:      make(map[string]*fileRec),
		pending:    make(map[string]struct{}),
		restat:     make(map[string]struct{}),
		byHash:     make(map[[32]byte][]pubRef),
		trees:      make(map[[32]byte]*hashtree.Tree),
	}
	c.handles.init(c)
	if stateFile != "" {
		c.stateCache = c.loadState()
	}
	return c, nil
}

func checkReadable(r *os.Root) error {
	d, err := r.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	if _, err := d.ReadDir(1); err != nil && err != io.EOF {
		return err
	}
	return nil
}

// isWithin reports whether p is root or below it, lexically or after
// resolving symlinks of the existing parts.
func isWithin(root, p string) bool {
	under := func(root, p string) bool {
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return false
		}
		return rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
	}
	if under(root, p) {
		return true
	}
	rr, err := filepath.EvalSymlinks(root)
	if err != nil {
		rr = root
	}
	if t, err := filepath.EvalSymlinks(p); err == nil && under(rr, t) {
		return true
	}
	if d, err := filepath.EvalSymlinks(filepath.Dir(p)); err == nil && under(rr, filepath.Join(d, filepath.Base(p))) {
		return true
	}
	return false
}

// Close releases the root and idle file handles. Files still open keep their
// descriptor until closed. Call it after Run has returned.
func (c *Catalog) Close() error {
	c.handles.closeIdle(0)
	return c.root.Close()
}

// Snapshot returns the current generation and all published entries sorted by
// Path. The slice is shared between callers and must not be modified: sharing
// is what makes a snapshot of 100k entries free to take after every change.
func (c *Catalog) Snapshot() (gen uint64, entries []Entry) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen, c.snap
}

// Changed receives a value after the generation advanced. Signals coalesce,
// so a receiver must read the state (Snapshot/Since), not count signals.
func (c *Catalog) Changed() <-chan struct{} { return c.changed }

// Ready is closed once the first full scan and the hashing of every file it
// found are done, i.e. when generation 1 is published.
func (c *Catalog) Ready() <-chan struct{} { return c.ready }

// Since returns the changes from generation gen to the current one, one per
// path, sorted by path. ok is false if gen is not covered by the kept history
// (older than about 64 generations, 0 once the first scan is published, or
// from the future, e.g. from a previous process); the caller must then send
// a full Snapshot instead. A Removed change may name a path the caller never
// saw (added and removed in between); it is safe to ignore.
func (c *Catalog) Since(gen uint64) (ch []Change, ok bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if gen == c.gen {
		return nil, true
	}
	if gen > c.gen {
		return nil, false
	}
	base := c.gen
	if len(c.hist) > 0 {
		base = c.hist[0].gen - 1
	}
	if gen < base {
		return nil, false
	}
	bs := c.hist[gen-base:]
	if len(bs) == 1 {
		return slices.Clone(bs[0].changes), true
	}
	idx := make(map[string]int)
	for _, b := range bs {
		for _, x := range b.changes {
			if i, seen := idx[x.Entry.Path]; seen {
				ch[i] = x
				continue
			}
			idx[x.Entry.Path] = len(ch)
			ch = append(ch, x)
		}
	}
	slices.SortFunc(ch, func(a, b Change) int { return strings.Compare(a.Entry.Path, b.Entry.Path) })
	return ch, true
}

// Lookup returns a published entry with the given content hash. If several
// paths have the same content, one of them is returned.
func (c *Catalog) Lookup(hash [32]byte) (Entry, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if refs := c.byHash[hash]; len(refs) > 0 {
		return refs[0].Entry, true
	}
	return Entry{}, false
}

// Tree returns the hash tree of a published content hash.
func (c *Catalog) Tree(hash [32]byte) (*hashtree.Tree, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if len(c.byHash[hash]) == 0 {
		return nil, false
	}
	t := c.trees[hash]
	return t, t != nil
}

// Stats returns counters for monitoring and tests.
func (c *Catalog) Stats() Stats {
	c.mu.RLock()
	s := Stats{
		Gen:     c.gen,
		Files:   len(c.files),
		Entries: len(c.snap),
		Queued:  len(c.queue) - c.qhead,
	}
	c.mu.RUnlock()
	s.HashedFiles = c.hashedFiles.Load()
	s.HashedBytes = c.hashedBytes.Load()
	s.RacyRehashes = c.racyRehashes.Load()
	s.CacheHits = c.cacheHits.Load()
	s.Rescans = c.rescans.Load()
	s.WatchedDirs = int(c.watchedDirs.Load())
	s.OpenHandles = c.handles.len()
	return s
}

// publishLocked turns the pending differences between the files on disk and
// the published state into one new generation. It returns the number of
// changes published. Caller holds c.mu for writing.
func (c *Catalog) publishLocked() int {
	if c.gen == 0 {
		return c.publishFirstLocked()
	}
	if len(c.pending) == 0 {
		return 0
	}
	paths := make([]string, 0, len(c.pending))
	for p := range c.pending {
		paths = append(paths, p)
	}
	c.resetPendingLocked()
	slices.Sort(paths)
	var chs []Change
	for _, p := range paths {
		old, hadOld := c.findLocked(p)
		rec := c.files[p]
		if rec != nil && rec.hashed {
			e := rec.entry()
			if hadOld && sameEntry(old, e) {
				// Same content and stat, maybe another inode (cp -p, or
				// rename over with a copy): not a visible change, but reads
				// must now verify against the new inode.
				c.updateInoLocked(old, rec.ino)
				continue
			}
			chs = append(chs, Change{Entry: e})
		} else if hadOld {
			chs = append(chs, Change{Entry: Entry{Path: p}, Removed: true})
		}
	}
	if len(chs) == 0 {
		return 0
	}
	// Merge into a new slice: the old one may still be held by callers of
	// Snapshot.
	next := make([]Entry, 0, len(c.snap)+len(chs))
	i := 0
	for _, x := range chs {
		for i < len(c.snap) && c.snap[i].Path < x.Entry.Path {
			next = append(next, c.snap[i])
			i++
		}
		if i < len(c.snap) && c.snap[i].Path == x.Entry.Path {
			c.unindexLocked(c.snap[i])
			i++
		}
		if !x.Removed {
			next = append(next, x.Entry)
			c.indexLocked(x.Entry, c.files[x.Entry.Path].ino)
		}
	}
	next = append(next, c.snap[i:]...)
	c.snap = next[:len(next):len(next)]
	c.gen++
	c.hist = append(c.hist, batch{gen: c.gen, changes: chs})
	c.histN += len(chs)
	// A delta larger than the snapshot is no cheaper than the snapshot.
	for len(c.hist) > 1 && (len(c.hist) > maxHistory || c.histN > max(1024, len(c.snap))) {
		c.histN -= len(c.hist[0].changes)
		c.hist[0] = batch{}
		c.hist = c.hist[1:]
	}
	c.signalChanged()
	c.log.Debug("catalog: published", "gen", c.gen, "changes", len(chs), "entries", len(c.snap))
	return len(chs)
}

func (c *Catalog) publishFirstLocked() int {
	snap := make([]Entry, 0, len(c.files))
	for _, rec := range c.files {
		if rec.hashed {
			e := rec.entry()
			snap = append(snap, e)
			c.indexLocked(e, rec.ino)
		}
	}
	slices.SortFunc(snap, func(a, b Entry) int { return cmp.Compare(a.Path, b.Path) })
	c.resetPendingLocked()
	if c.stateHits != len(c.stateCache) {
		c.stateDirty = true
	}
	c.snap = snap
	c.gen = 1
	c.signalChanged()
	return len(snap)
}

// resetPendingLocked empties pending; a map that grew large (initial scan,
// mass change) is replaced, because clear keeps its buckets allocated.
func (c *Catalog) resetPendingLocked() {
	if len(c.pending) > 1024 {
		c.pending = make(map[string]struct{})
	} else {
		clear(c.pending)
	}
}

func (c *Catalog) signalChanged() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *Catalog) findLocked(p string) (Entry, bool) {
	i, ok := slices.BinarySearchFunc(c.snap, p, func(e Entry, p string) int { return strings.Compare(e.Path, p) })
	if !ok {
		return Entry{}, false
	}
	return c.snap[i], true
}

func (c *Catalog) indexLocked(e Entry, ino uint64) {
	c.byHash[e.Hash] = append(c.byHash[e.Hash], pubRef{Entry: e, ino: ino})
}

// unindexLocked removes a published entry from the hash index and retires any
// cached handle for it: the version disappeared from the catalog.
func (c *Catalog) unindexLocked(e Entry) {
	refs := c.byHash[e.Hash]
	for i := range refs {
		if refs[i].Path == e.Path {
			refs = slices.Delete(refs, i, i+1)
			break
		}
	}
	if len(refs) == 0 {
		delete(c.byHash, e.Hash)
	} else {
		c.byHash[e.Hash] = refs
	}
	c.handles.drop(e.Hash, e.Path)
}

func (c *Catalog) updateInoLocked(e Entry, ino uint64) {
	refs := c.byHash[e.Hash]
	for i := range refs {
		if refs[i].Path == e.Path && refs[i].ino != ino {
			refs[i].ino = ino
			c.handles.drop(e.Hash, e.Path)
		}
	}
}

// isPublishedLocked reports whether ref is still published as is.
func (c *Catalog) isPublishedLocked(ref pubRef) bool {
	for _, r := range c.byHash[ref.Hash] {
		if r.Path == ref.Path && r.ino == ref.ino && r.Size == ref.Size && r.ModTime.Equal(ref.ModTime) {
			return true
		}
	}
	return false
}

func sameEntry(a, b Entry) bool {
	return a.Path == b.Path && a.Size == b.Size && a.ModTime.Equal(b.ModTime) && a.Hash == b.Hash
}

// noteChanged asks the Run loop to re-stat p; used when a worker or a reader
// notices a change that fsnotify may not report (or has not yet).
func (c *Catalog) noteChanged(p string) {
	c.mu.Lock()
	c.restat[p] = struct{}{}
	c.mu.Unlock()
	c.signalWake()
}

func (c *Catalog) signalWake() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// shortHash is the log form of a hash: enough to tell files apart.
func shortHash(h [32]byte) string { return hex.EncodeToString(h[:6]) }

// osPath converts a catalog path to the form os.Root expects.
func osPath(p string) string { return filepath.FromSlash(p) }

// relPath converts an absolute path below the root (as fsnotify reports it)
// into a catalog path. It refuses anything that is not strictly below the
// root, so that an event can never make the catalog look outside it.
func (c *Catalog) relPath(name string) (string, bool) {
	rel, err := filepath.Rel(c.rootPath, name)
	if err != nil {
		return "", false
	}
	rel = filepath.ToSlash(rel)
	if !fs.ValidPath(rel) {
		return "", false
	}
	return rel, true
}
