package fetch

import (
	"bytes"
	"container/list"
	"errors"
	"fmt"
	"time"

	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/hashtree"
	"github.com/fastfile/fschunk/internal/pool"
)

// Verified streaming. A version's content hash is the root of its hash
// tree (package hashtree), which also commits to its size. Each version
// being read has one vtree, shared by its readers: the blocks of the tree
// learnt so far, each checked against the root before it is kept, asked
// of any holder with HASH_REQUEST. A chunk whose bytes are all in is
// checked leaf by leaf on its reader's pump goroutine, outside the lock,
// before the reader may hand any of it to the client. A leaf that fails is
// fetched again; if one server sent all of it, that server is blamed:
// ejected from the version at once (every reader of it stops asking it,
// the pool forgets it as a holder) and reported through Config.Blamed.

// ErrUnverified: every holder of the version was caught sending bytes or
// hashes that do not match its content hash.
var ErrUnverified = errors.New("no holder sent bytes matching the content hash")

// vtree is the hash tree of one version being read. Guarded by Engine.mu.
type vtree struct {
	key   pool.Key
	p     *hashtree.Partial
	users int
	// idle: the tree's place in Engine.idleTrees while no reader uses
	// it, and the bytes it was counted with there.
	idle      *list.Element
	idleBytes int
	pending   map[blockID]*hashReq
	// hedges: hedge requests sent for this version and not yet expired
	// (an answered one may still be listed; it is gone from Engine.hreqs).
	// Kept here so that expiring them each round walks this version's
	// hedges, not every request of the engine.
	hedges []*hashReq
	tries  map[blockID]int
	// blamed: servers caught lying about this version; gone: servers
	// that said they do not have it. Neither is asked again.
	blamed map[ServerID]bool
	gone   map[ServerID]bool
	// early: blocks that arrived before the block above them, every
	// answer in its order of arrival (a block is hedged to two holders
	// at the start), kept unchecked and unused until it arrives; see
	// wantHashes. earlyN counts them.
	early  map[blockID][]earlyBlock
	earlyN int
}

// earlyBlock is a hash block received before its parent: its nodes and
// who sent them (blamed if they do not check).
type earlyBlock struct {
	nodes  []byte
	server ServerID
}

// maxEarlyBlocks bounds a tree's early blocks: a few per stored level of
// the first chunks' paths is all the pipelining asks for.
const maxEarlyBlocks = 16

type blockID struct {
	level int
	index uint64
}

// hashReq is one outstanding HASH_REQUEST.
type hashReq struct {
	id       uint32
	t        *vtree
	blk      blockID
	count    int
	server   ServerID
	deadline time.Time
	// hedge: a copy of the block's request sent to a second holder while
	// the first has no RTT sample (the start of a download, when a lost
	// request would stall the first byte). It is not the block's pending
	// request: its answer counts if it comes first, and it is forgotten
	// at its deadline.
	hedge bool
}

// outHash is a HASH_REQUEST decided under the lock and sent after it.
type outHash struct {
	id  ServerID
	msg fschunk.HashRequest
}

// blame is a verdict to report once the lock is released.
type blame struct {
	id     ServerID
	key    pool.Key
	reason string
}

func (t *vtree) excluded(id ServerID) bool { return t.blamed[id] || t.gone[id] }

// acquireTree returns the version's tree, shared by its readers. Under e.mu.
func (e *Engine) acquireTree(k pool.Key) *vtree {
	t := e.trees[k]
	if t != nil && t.idle != nil {
		e.idleTrees.Remove(t.idle)
		e.idleBytes -= t.idleBytes
		t.idle = nil
	}
	if t == nil {
		t = &vtree{key: k, p: hashtree.NewPartial(k.Hash, k.Size), pending: map[blockID]*hashReq{},
			tries: map[blockID]int{}, blamed: map[ServerID]bool{}, gone: map[ServerID]bool{}, early: map[blockID][]earlyBlock{}}
		e.trees[k] = t
	}
	t.users++
	return t
}

// releaseTree keeps an unused tree for the next reader of the version
// while the trees not in use fit Config.TreeCache, least recently used
// out first (a list, so that a gateway serving many small files does
// not scan its trees on every response). Under e.mu.
func (e *Engine) releaseTree(t *vtree) {
	if t.users--; t.users > 0 {
		return
	}
	// Bytes counted now: blocks arriving for an idle tree (answers to
	// requests of readers that left) may add a little, never a lot.
	t.idleBytes = t.p.Bytes() + 256
	t.idle = e.idleTrees.PushFront(t)
	e.idleBytes += t.idleBytes
	for e.idleBytes > e.cfg.TreeCache {
		old := e.idleTrees.Remove(e.idleTrees.Back()).(*vtree)
		e.idleBytes -= old.idleBytes
		old.idle = nil
		for _, r := range old.pending {
			delete(e.hreqs, r.id)
		}
		old.dropHedges(e, func(*hashReq) bool { return true })
		delete(e.trees, old.key)
	}
}

// chunkLeaves is the range of leaves a chunk covers; chunks start on a
// leaf boundary and end on one or at the end of the file.
func chunkLeaves(c *chunk) (first, n int64) {
	first = c.off / hashtree.LeafSize
	return first, (c.off+int64(c.n)-1)/hashtree.LeafSize - first + 1
}

// wantHashes asks for the tree blocks the window's unverified chunks
// need, one request per block at a time, and gives up on silent ones. It
// returns when to look again (zero: no need). Under e.mu.
func (d *download) wantHashes(links []*link, now time.Time) (next time.Time) {
	// A time, not a callback into the round: a method value of the round
	// would move it to the heap, a kilobyte per round of every download.
	soon := func(at time.Time) {
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	e, t := d.e, d.t
	for b, r := range t.pending {
		if now.Before(r.deadline) {
			soon(r.deadline)
			continue
		}
		delete(e.hreqs, r.id)
		delete(t.pending, b)
		e.stats.HashTimeouts++
	}
	t.dropHedges(e, func(h *hashReq) bool { return !now.Before(h.deadline) })
	if len(links) == 0 {
		return
	}
	// ask requests the blocks of the tree leaf j still needs that are not
	// asked for yet: the first (the highest level missing) and, at once,
	// those below it on j's path, which are kept when they come until the
	// block above them is checked. Asked one level per round trip, the
	// first byte of a 100 MiB file would wait three round trips for its
	// hashes (levels 10, 5 and 0 of 32-node blocks). It reports whether
	// j needs a block.
	ask := func(j int64) bool {
		lv, _, _, ok := t.p.Want(j)
		if !ok {
			return false
		}
		for ; lv >= 0; lv -= hashtree.BlockLevels {
			idx := uint64((j>>lv)/hashtree.BlockNodes) * hashtree.BlockNodes
			cnt := int(min(hashtree.BlockNodes, hashtree.LevelLen(hashtree.Leaves(t.key.Size), lv)-int64(idx)))
			d.askBlock(links, blockID{lv, idx}, cnt, now, soon)
		}
		return true
	}
	end := int64(-1)
	for _, c := range d.chunks {
		end = max(end, c.off+int64(c.n))
		if c.verified {
			continue
		}
		first, n := chunkLeaves(c)
		for j := first; j < first+n; j++ {
			if ask(j) {
				break // the rest of this chunk needs that block first
			}
		}
	}
	// One block ahead of the window: a window sliding into the next block
	// of leaves finds its hashes there instead of waiting a round trip
	// for them with every byte of its first chunk already in.
	if end >= 0 {
		if j := end / hashtree.LeafSize; j < hashtree.Leaves(t.key.Size) {
			ask(j)
		}
	}
	return next
}

// askBlock requests block b (cnt nodes) of d's tree of one of links,
// unless it is asked for or held early. Under e.mu.
func (d *download) askBlock(links []*link, b blockID, cnt int, now time.Time, soon func(time.Time)) {
	e, t := d.e, d.t
	if t.pending[b] != nil {
		return
	}
	if _, ok := t.early[b]; ok {
		return
	}
	lv, idx := b.level, b.index
	l := links[(t.tries[b]+int(idx/hashtree.BlockNodes))%len(links)]
	t.tries[b]++
	r := &hashReq{id: e.newID(), t: t, blk: b, count: cnt, server: l.id,
		deadline: now.Add(hashWait(l, t.tries[b]))}
	e.hreqs[r.id] = r
	t.pending[b] = r
	e.stats.HashRequests++
	d.hashOut = append(d.hashOut, outHash{id: l.id, msg: fschunk.HashRequest{
		ID: r.id, Hash: t.key.Hash, Level: uint8(lv), Count: uint8(cnt), Index: idx}})
	soon(r.deadline)
	if l2 := links[(t.tries[b]+int(idx/hashtree.BlockNodes))%len(links)]; !l.hasRTT && l2 != l {
		h := &hashReq{id: e.newID(), t: t, blk: b, count: cnt, server: l2.id,
			deadline: r.deadline, hedge: true}
		e.hreqs[h.id] = h
		t.hedges = append(t.hedges, h)
		e.stats.HashRequests++
		d.hashOut = append(d.hashOut, outHash{id: l2.id, msg: fschunk.HashRequest{
			ID: h.id, Hash: t.key.Hash, Level: uint8(lv), Count: uint8(cnt), Index: idx}})
	}
}

// dropHedges forgets t's hedges for which drop is true. An answered
// hedge is already out of e.hreqs and its ID may have been reused, hence
// the identity check. Under e.mu.
func (t *vtree) dropHedges(e *Engine, drop func(*hashReq) bool) {
	live := t.hedges[:0]
	for _, h := range t.hedges {
		if !drop(h) {
			live = append(live, h)
		} else if e.hreqs[h.id] == h {
			delete(e.hreqs, h.id)
		}
	}
	clear(t.hedges[len(live):])
	t.hedges = live
}

// hashWait is how long a HASH_REQUEST to l, the tries-th for its block,
// may go unanswered: twice l's RTO once l has an RTT sample, otherwise
// fschunk.InitialHashWait doubled per earlier try.
func hashWait(l *link, tries int) time.Duration {
	if l.hasRTT {
		return max(2*l.rto(), 20*time.Millisecond)
	}
	return fschunk.InitialHashWait << min(max(tries-1, 0), 3)
}

// HandleHashes takes a HASHES from server id: the block is checked
// against the tree and kept, or its sender blamed.
func (e *Engine) HandleHashes(id ServerID, m *fschunk.Hashes) {
	e.mu.Lock()
	r := e.hreqs[m.ID]
	if r == nil || r.server != id {
		e.stats.Late++
		e.mu.Unlock()
		return
	}
	t := r.t
	delete(e.hreqs, r.id)
	if t.pending[r.blk] == r {
		delete(t.pending, r.blk)
	}
	e.stats.HashBytes += uint64(len(m.Nodes))
	var blames []blame
	var err error
	early := false
	if int(m.Level) != r.blk.level || m.Index != r.blk.index {
		err = fmt.Errorf("answered level %d index %d for level %d index %d", m.Level, m.Index, r.blk.level, r.blk.index)
	} else if early = t.beforeParent(r.blk); early {
		if t.earlyN < maxEarlyBlocks {
			t.early[r.blk] = append(t.early[r.blk], earlyBlock{nodes: append([]byte(nil), m.Nodes...), server: id})
			t.earlyN++
		}
	} else {
		err = t.p.Add(int(m.Level), m.Index, m.Nodes)
	}
	if err != nil {
		blames = e.blameLocked(blames, t, id, "hash tree: "+err.Error())
	} else {
		if p := t.pending[r.blk]; p != nil {
			// A hedge answered first: the block's own request is done too.
			delete(e.hreqs, p.id)
			delete(t.pending, r.blk)
		}
		if !early {
			blames = e.addEarly(blames, t)
		}
	}
	e.wakeTree(t)
	e.mu.Unlock()
	e.report(blames)
}

// beforeParent reports whether block b cannot be checked yet: the block
// above it is not held.
func (t *vtree) beforeParent(b blockID) bool {
	lv, _, _, ok := t.p.Want(int64(b.index) << b.level)
	return ok && lv > b.level
}

// addEarly checks and keeps the early blocks whose parent is now held,
// and then theirs, blaming the sender of any answer that does not check.
// Of several answers for one block the first that checks is kept and
// every other must be the same bytes: a liar whose answer came early is
// caught as surely as one whose answer was checked on arrival. Under
// e.mu.
func (e *Engine) addEarly(bs []blame, t *vtree) []blame {
	for progress := true; progress; {
		progress = false
		for b, xs := range t.early {
			if t.beforeParent(b) {
				continue
			}
			delete(t.early, b)
			t.earlyN -= len(xs)
			progress = true
			var good []byte
			for _, x := range xs {
				if good != nil {
					if !bytes.Equal(x.nodes, good) {
						bs = e.blameLocked(bs, t, x.server, fmt.Sprintf("hash tree: level %d block %d differs from the one that checked", b.level, b.index))
					}
					continue
				}
				if err := t.p.Add(b.level, b.index, x.nodes); err != nil {
					bs = e.blameLocked(bs, t, x.server, "hash tree: "+err.Error())
					continue
				}
				good = x.nodes
			}
		}
	}
	return bs
}

// wakeTree wakes every reader of t's version. Under e.mu.
func (e *Engine) wakeTree(t *vtree) {
	for d := range e.readers {
		if d.t == t {
			notify(d.wake)
		}
	}
}

// blameLocked ejects server id from t's version: no reader asks it again,
// its outstanding requests for the version are cancelled, and the verdict
// is queued for report. Under e.mu.
func (e *Engine) blameLocked(bs []blame, t *vtree, id ServerID, reason string) []blame {
	e.stats.Blamed++
	if l := e.links[id]; l != nil {
		l.blamed++
	}
	if !t.blamed[id] {
		t.blamed[id] = true
		for _, r := range e.reqs {
			if r.d.t == t && r.l.id == id {
				e.finish(r, false)
			}
		}
		for b, r := range t.pending {
			if r.server == id {
				delete(e.hreqs, r.id)
				delete(t.pending, b)
			}
		}
	}
	e.wakeTree(t)
	return append(bs, blame{id: id, key: t.key, reason: reason})
}

// report tells the pool and the operator, outside the engine's lock.
func (e *Engine) report(bs []blame) {
	for _, b := range bs {
		e.cfg.Dropped(b.id, b.key)
		e.cfg.Blamed(b.id, b.key, b.reason)
	}
}

// verifyJob is a complete chunk taken for checking, with the leaf hashes
// it must match (copied under the lock).
type verifyJob struct {
	c      *chunk
	hashes []hashtree.Hash
	bad    []int // leaves (chunk-relative) that failed
}

// takeVerifyJobs marks for checking the complete chunks whose leaf hashes
// are known. Under e.mu.
func (d *download) takeVerifyJobs(jobs []verifyJob) []verifyJob {
	for _, c := range d.chunks {
		if !c.done || c.verified || c.verifying {
			continue
		}
		first, n := chunkLeaves(c)
		hs := make([]hashtree.Hash, n)
		ok := true
		for j := range hs {
			if hs[j], ok = d.t.p.Leaf(first + int64(j)); !ok {
				break
			}
		}
		if !ok {
			continue
		}
		c.verifying = true
		jobs = append(jobs, verifyJob{c: c, hashes: hs})
	}
	return jobs
}

// verify checks a job's chunk, without the lock: a complete chunk is
// never written to (bytes already held are ignored), and its buffer is
// not recycled while it is being checked (see drop).
func (j *verifyJob) verify(h *hashtree.Hasher) {
	var parts [leafPieces][]byte
	for k, want := range j.hashes {
		if h.LeafParts(j.c.leaf(k, &parts)) != want {
			j.bad = append(j.bad, k)
		}
	}
}

// applyVerified records the verdicts of checked chunks. Under e.mu.
func (d *download) applyVerified(jobs []verifyJob, bs []blame) []blame {
	e := d.e
	for i := range jobs {
		j := &jobs[i]
		c := j.c
		c.verifying = false
		if c.dropped {
			e.freePieces(c, nil)
			continue
		}
		if len(j.bad) == 0 {
			c.verified = true
			e.stats.VerifiedBytes += uint64(c.n)
			continue
		}
		for _, k := range j.bad {
			lo := k * hashtree.LeafSize
			hi := min(lo+hashtree.LeafSize, c.n)
			c.have.remove(lo, hi)
			c.done = false
			e.stats.VerifyFailures++
			src := c.src[k]
			c.src[k] = nil
			if len(src) == 1 {
				bs = e.blameLocked(bs, d.t, src[0], fmt.Sprintf("leaf at offset %d does not match the content hash", c.off+int64(lo)))
			} else {
				// Bytes of several servers: the culprit is not known. The
				// leaf is asked again; its next sender answers for all of it.
				e.stats.Ambiguous++
			}
		}
		notify(d.wake)
	}
	return bs
}

// noteSource records that server id supplied bytes [lo, hi) of c.
// Under e.mu.
func (c *chunk) noteSource(id ServerID, lo, hi int) {
	for k := lo / hashtree.LeafSize; k <= (hi-1)/hashtree.LeafSize; k++ {
		if !containsID(c.src[k], id) {
			c.src[k] = append(c.src[k], id)
		}
	}
}

func containsID(s []ServerID, id ServerID) bool {
	for _, x := range s {
		if x == id {
			return true
		}
	}
	return false
}
