// Package pool is the gateway's soft state about its servers: which
// servers are live, and which versions of which files each holds. Nothing
// here is durable: a server that stops sending is evicted and its files
// are forgotten; a server that comes back re-announces them.
package pool

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fastfile/fschunk/internal/fschunk"
)

// ServerID identifies a server process: the Instance of its handshakes,
// stable across its rekeys and re-registrations, new when it restarts.
type ServerID uint64

// String is the form logs, metrics and the admin API show: 16 hex digits.
func (id ServerID) String() string { return fmt.Sprintf("%016x", uint64(id)) }

// Version is one version of a file, identified by its content hash.
type Version struct {
	Hash    [fschunk.HashSize]byte
	Size    int64
	ModTime time.Time
}

// Load is what a server reports about itself in heartbeats.
type Load struct {
	ReadsActive uint32
	TxRate      uint64
}

// ServerInfo is a snapshot of one live server.
type ServerInfo struct {
	ID         ServerID
	Name       string // stable across restarts (the gateway's allowed list, else HEARTBEAT); "" until known
	Key        string // the server's public key, shortened: its identity
	Addr       string
	Joined     time.Time
	LastHeard  time.Time
	Load       Load
	CatalogGen uint64
	Files      int
	Blamed     int // verdicts: bytes or hashes it sent that failed verification
}

// DirEntry is one name in a directory listing.
type DirEntry struct {
	Name    string
	IsDir   bool
	Size    int64
	ModTime time.Time
	Holders int
}

// ForgetAfter is how long a path whose holders all left stays known, so
// that clients get 503 (come back soon) rather than 404 (never existed)
// while servers restart. It applies only when a holder vanished (was
// evicted, or refused a read): a path that every live holder reported
// deleted in its catalog is forgotten at once, and answered 404.
const ForgetAfter = 10 * time.Minute

type server struct {
	info   ServerInfo
	files  map[string]Version // path → version this server holds
	hashes map[Key]int        // version → paths with it
}

// Key names a version: its content hash and size. The hash (the root of
// the content's hash tree) commits to the size, so two holders announcing
// one hash with different sizes cannot both be right; keeping them apart
// lets the gateway find out by verifying, instead of asking an honest
// holder for bytes beyond its end and dropping it.
type Key struct {
	Hash [fschunk.HashSize]byte
	Size int64
}

// Key is the version's key.
func (v Version) Key() Key { return Key{v.Hash, v.Size} }

type versionEntry struct {
	v       Version
	holders ids
}

type pathEntry struct {
	versions []*versionEntry // usually one
	orphaned time.Time       // when the last holder left; zero while held
	last     Version         // newest version seen, for 503 answers
	// vanished: a holder left without reporting a deletion (evicted, or
	// a read refused), so the path may come back with it.
	vanished bool
}

// Pool is safe for concurrent use.
type Pool struct {
	mu      sync.RWMutex
	servers map[ServerID]*server
	paths   map[string]*pathEntry
	dirs    map[string]*dirIndex // directory ("" the root) → what it holds
	byHash  map[Key]ids
	orphans map[string]time.Time // paths with no holder left, and since when
}

// dirIndex is one directory of the pool's paths, so that listing it
// looks at its own entries only, not at every path in the pool.
type dirIndex struct {
	files   map[string]*pathEntry // files right in it, by name
	subdirs map[string]int        // subdirectories, by name → paths under each
	// order is the listing order (directories first, then by name),
	// built by the first List after a change and kept until the next.
	// Changes happen under Pool.mu held for writing; List, which holds it
	// for reading, builds it under orderMu.
	orderMu sync.Mutex
	order   []dirName
}

type dirName struct {
	name string
	dir  bool
}

// New returns an empty pool.
func New() *Pool {
	return &Pool{
		servers: map[ServerID]*server{},
		paths:   map[string]*pathEntry{},
		dirs:    map[string]*dirIndex{"": newDirIndex()},
		byHash:  map[Key]ids{},
		orphans: map[string]time.Time{},
	}
}

func newDirIndex() *dirIndex {
	return &dirIndex{files: map[string]*pathEntry{}, subdirs: map[string]int{}}
}

// indexPath adds a new path to the directory index: its name to its
// directory, and one more path under each directory above.
func (p *Pool) indexPath(name string, pe *pathEntry) {
	parent, start := "", 0
	for {
		d := p.dirs[parent]
		if d == nil {
			d = newDirIndex()
			p.dirs[parent] = d
		}
		i := strings.IndexByte(name[start:], '/')
		if i < 0 {
			d.files[name[start:]] = pe
			d.order = nil
			return
		}
		sub := name[start : start+i]
		if d.subdirs[sub] == 0 {
			d.order = nil
		}
		d.subdirs[sub]++
		parent, start = name[:start+i], start+i+1
	}
}

// unindexPath undoes indexPath; directories left empty go (but the root).
func (p *Pool) unindexPath(name string) {
	parent, start := "", 0
	for {
		d := p.dirs[parent]
		if d == nil {
			return
		}
		i := strings.IndexByte(name[start:], '/')
		if i < 0 {
			delete(d.files, name[start:])
			d.order = nil
		} else {
			sub := name[start : start+i]
			if d.subdirs[sub]--; d.subdirs[sub] <= 0 {
				delete(d.subdirs, sub)
				d.order = nil
			}
		}
		if parent != "" && len(d.files) == 0 && len(d.subdirs) == 0 {
			delete(p.dirs, parent)
		}
		if i < 0 {
			return
		}
		parent, start = name[:start+i], start+i+1
	}
}

// listOrder returns d's names in listing order. Under p.mu, read or write.
func (d *dirIndex) listOrder() []dirName {
	d.orderMu.Lock()
	defer d.orderMu.Unlock()
	if d.order != nil {
		return d.order
	}
	order := make([]dirName, 0, len(d.subdirs)+len(d.files))
	for name := range d.subdirs {
		order = append(order, dirName{name, true})
	}
	for name := range d.files {
		order = append(order, dirName{name, false})
	}
	slices.SortFunc(order, func(a, b dirName) int {
		if a.dir != b.dir {
			if a.dir {
				return -1
			}
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	d.order = order
	return order
}

// Join adds a server (or refreshes one that re-registered).
func (p *Pool) Join(id ServerID, addr string, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.servers[id]; ok {
		s.info.Addr, s.info.LastHeard = addr, now
		return
	}
	p.servers[id] = &server{
		info:   ServerInfo{ID: id, Addr: addr, Joined: now, LastHeard: now},
		files:  map[string]Version{},
		hashes: map[Key]int{},
	}
}

// Heard records that a server was heard from (any authenticated datagram).
func (p *Pool) Heard(id ServerID, addr string, now time.Time) {
	p.mu.Lock()
	if s, ok := p.servers[id]; ok {
		s.info.LastHeard, s.info.Addr = now, addr
	}
	p.mu.Unlock()
}

// SetLoad stores a server's heartbeat figures.
func (p *Pool) SetLoad(id ServerID, l Load) {
	p.mu.Lock()
	if s, ok := p.servers[id]; ok {
		s.info.Load = l
	}
	p.mu.Unlock()
}

// SetName stores a server's name and reports whether it changed.
func (p *Pool) SetName(id ServerID, name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.servers[id]; ok && s.info.Name != name {
		s.info.Name = name
		return true
	}
	return false
}

// SetKey records a server's identity: its public key, shortened.
func (p *Pool) SetKey(id ServerID, key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.servers[id]; ok {
		s.info.Key = key
	}
}

// Name is a server's name, or its ID while it has none.
func (p *Pool) Name(id ServerID) string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if s, ok := p.servers[id]; ok && s.info.Name != "" {
		return s.info.Name
	}
	return id.String()
}

// Has reports whether id is a live server.
func (p *Pool) Has(id ServerID) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	_, ok := p.servers[id]
	return ok
}

// CatalogGen is the catalog generation held complete for a server (0: none).
func (p *Pool) CatalogGen(id ServerID) uint64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if s, ok := p.servers[id]; ok {
		return s.info.CatalogGen
	}
	return 0
}

// Remove evicts a server and everything it held.
func (p *Pool) Remove(id ServerID, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.servers[id]
	if !ok {
		return false
	}
	for name, v := range s.files {
		p.unhold(id, name, v, now, false)
	}
	delete(p.servers, id)
	return true
}

// Expired returns the servers not heard from since before deadline.
func (p *Pool) Expired(deadline time.Time) []ServerID {
	p.mu.RLock()
	defer p.mu.RUnlock()
	var out []ServerID
	for id, s := range p.servers {
		if s.info.LastHeard.Before(deadline) {
			out = append(out, id)
		}
	}
	return out
}

// SetCatalog replaces a server's whole file set with generation gen.
func (p *Pool) SetCatalog(id ServerID, gen uint64, entries []fschunk.Entry, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.servers[id]
	if !ok {
		return
	}
	next := make(map[string]Version, len(entries))
	for _, e := range entries {
		next[e.Path] = Version{Hash: e.Hash, Size: e.Size, ModTime: e.ModTime}
	}
	for name, v := range s.files {
		if nv, ok := next[name]; !ok || nv != v {
			p.unhold(id, name, v, now, true)
			delete(s.files, name)
		}
	}
	for name, v := range next {
		if _, ok := s.files[name]; !ok {
			s.files[name] = v
			p.hold(id, name, v)
		}
	}
	s.info.CatalogGen, s.info.Files = gen, len(s.files)
}

// ApplyDelta applies changes from the generation held to gen.
func (p *Pool) ApplyDelta(id ServerID, gen uint64, entries []fschunk.Entry, removed []bool, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.servers[id]
	if !ok {
		return
	}
	for i, e := range entries {
		if old, ok := s.files[e.Path]; ok {
			p.unhold(id, e.Path, old, now, true)
			delete(s.files, e.Path)
		}
		if !removed[i] {
			v := Version{Hash: e.Hash, Size: e.Size, ModTime: e.ModTime}
			s.files[e.Path] = v
			p.hold(id, e.Path, v)
		}
	}
	s.info.CatalogGen, s.info.Files = gen, len(s.files)
}

// Blame records a verdict against a server and returns how many it has.
func (p *Pool) Blame(id ServerID) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.servers[id]; ok {
		s.info.Blamed++
		return s.info.Blamed
	}
	return 0
}

// DropVersion stops using a server for a version it said it no longer has
// (ERROR NOT_FOUND or STALE) or whose bytes failed verification, until its
// next catalog says otherwise.
func (p *Pool) DropVersion(id ServerID, k Key, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.servers[id]
	if !ok {
		return
	}
	for name, v := range s.files {
		if v.Key() == k {
			p.unhold(id, name, v, now, false)
			delete(s.files, name)
		}
	}
	s.info.Files = len(s.files)
	// The catalog no longer matches what the server announced: make its
	// next heartbeat acknowledgement ask for a full resend.
	s.info.CatalogGen = 0
}

func (p *Pool) hold(id ServerID, name string, v Version) {
	pe := p.paths[name]
	if pe == nil {
		pe = &pathEntry{}
		p.paths[name] = pe
		p.indexPath(name, pe)
	}
	ve := pe.version(v.Key())
	if ve == nil {
		ve = &versionEntry{v: v}
		pe.versions = append(pe.versions, ve)
	}
	ve.holders = ve.holders.add(id)
	pe.orphaned = time.Time{}
	delete(p.orphans, name)
	p.byHash[v.Key()] = p.byHash[v.Key()].add(id)
	p.servers[id].hashes[v.Key()]++
}

// unhold removes id as a holder of name's version v. reported says the
// server itself reported the path gone (its catalog), rather than the
// server vanishing: when the last holder leaves and none vanished, the
// path is forgotten at once.
func (p *Pool) unhold(id ServerID, name string, v Version, now time.Time, reported bool) {
	// The server still holds the content if another of its paths has it.
	s := p.servers[id]
	k := v.Key()
	if s.hashes[k]--; s.hashes[k] <= 0 {
		delete(s.hashes, k)
		if hs := p.byHash[k].remove(id); len(hs) == 0 {
			delete(p.byHash, k)
		} else {
			p.byHash[k] = hs
		}
	}
	pe := p.paths[name]
	if pe == nil {
		return
	}
	for i, ve := range pe.versions {
		if ve.v.Key() != k {
			continue
		}
		if ve.holders = ve.holders.remove(id); len(ve.holders) == 0 {
			pe.versions = append(pe.versions[:i], pe.versions[i+1:]...)
			if pe.last.ModTime.IsZero() || !v.ModTime.Before(pe.last.ModTime) {
				pe.last = v
			}
		}
		break
	}
	pe.vanished = pe.vanished || !reported
	if len(pe.versions) == 0 {
		if !pe.vanished {
			delete(p.paths, name)
			p.unindexPath(name)
			return
		}
		pe.orphaned = now
		p.orphans[name] = now
	}
}

func (pe *pathEntry) version(k Key) *versionEntry {
	for _, ve := range pe.versions {
		if ve.v.Key() == k {
			return ve
		}
	}
	return nil
}

// ids is a small set of servers, kept sorted. A file has a handful of
// holders: a slice costs a fraction of a map per file, which matters at
// hundreds of thousands of files.
type ids []ServerID

func (s ids) add(id ServerID) ids {
	i, found := slices.BinarySearch(s, id)
	if found {
		return s
	}
	return slices.Insert(s, i, id)
}

func (s ids) remove(id ServerID) ids {
	if i, found := slices.BinarySearch(s, id); found {
		return slices.Delete(s, i, i+1)
	}
	return s
}

// Lookup resolves a path to the version to serve: the newest (by mtime,
// then by hash for determinism) that a live server holds, with its
// holder count. A path whose holders all left recently is returned with
// zero holders (the caller answers 503); ok is false for unknown paths.
func (p *Pool) Lookup(name string, now time.Time) (v Version, holders int, ok bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	pe := p.paths[name]
	if pe == nil {
		return Version{}, 0, false
	}
	if len(pe.versions) == 0 {
		if now.Sub(pe.orphaned) > ForgetAfter {
			return Version{}, 0, false
		}
		return pe.last, 0, true
	}
	best := pe.best()
	return best.v, len(best.holders), true
}

// best is the version a path serves: the newest, ties broken by hash so
// that every gateway and every listing picks the same one. nil if the
// path has no live version.
func (pe *pathEntry) best() *versionEntry {
	var best *versionEntry
	for _, ve := range pe.versions {
		if best == nil || ve.v.ModTime.After(best.v.ModTime) ||
			ve.v.ModTime.Equal(best.v.ModTime) && string(ve.v.Hash[:]) > string(best.v.Hash[:]) ||
			ve.v.ModTime.Equal(best.v.ModTime) && ve.v.Hash == best.v.Hash && ve.v.Size < best.v.Size {
			best = ve
		}
	}
	return best
}

// Holders returns the live servers holding version k (under any path),
// sorted.
func (p *Pool) Holders(k Key) []ServerID {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return slices.Clone(p.byHash[k])
}

// List returns the entries of directory dir ("" is the root), or false if
// no known file lies under it, directories first and then by name. It
// costs the entries of dir, whatever the size of the pool (the names
// are sorted once per change of the directory). A subdirectory whose
// paths all left longer than ForgetAfter ago is listed until Prune
// forgets them (within a second or so).
func (p *Pool) List(dir string, now time.Time) ([]DirEntry, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	d := p.dirs[dir]
	if d == nil {
		return nil, dir == ""
	}
	order := d.listOrder()
	found := dir == ""
	out := make([]DirEntry, 0, len(order))
	for _, n := range order {
		if n.dir {
			out = append(out, DirEntry{Name: n.name, IsDir: true})
			found = true
			continue
		}
		pe := d.files[n.name]
		if len(pe.versions) == 0 && now.Sub(pe.orphaned) > ForgetAfter {
			continue
		}
		found = true
		de := DirEntry{Name: n.name}
		if best := pe.best(); best != nil {
			de.Size, de.ModTime, de.Holders = best.v.Size, best.v.ModTime, len(best.holders)
		} else {
			de.Size, de.ModTime = pe.last.Size, pe.last.ModTime
		}
		out = append(out, de)
	}
	if !found {
		return nil, false
	}
	return out, true
}

// Servers returns a snapshot of the live servers, by join time.
func (p *Pool) Servers() []ServerInfo {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]ServerInfo, 0, len(p.servers))
	for _, s := range p.servers {
		out = append(out, s.info)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Joined.Equal(out[j].Joined) {
			return out[i].Joined.Before(out[j].Joined)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Files is the number of distinct paths with a live holder.
func (p *Pool) Files() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	n := 0
	for _, pe := range p.paths {
		if len(pe.versions) > 0 {
			n++
		}
	}
	return n
}

// Prune forgets paths orphaned longer than ForgetAfter. It visits only
// orphans, so an idle gateway with a large pool does no work here.
func (p *Pool) Prune(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, since := range p.orphans {
		if now.Sub(since) > ForgetAfter {
			delete(p.paths, name)
			delete(p.orphans, name)
			p.unindexPath(name)
		}
	}
}
