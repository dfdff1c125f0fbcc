package fetch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"testing/synctest"

	"go.uber.org/goleak"

	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/hashtree"
	"github.com/fastfile/fschunk/internal/pool"
)

// blames records the engine's verdicts.
type blames struct {
	mu sync.Mutex
	by map[ServerID]int
}

func (b *blames) hook(e *Engine) {
	b.by = map[ServerID]int{}
	e.cfg.Blamed = func(id ServerID, _ pool.Key, _ string) {
		b.mu.Lock()
		b.by[id]++
		b.mu.Unlock()
	}
}

func (b *blames) count(id ServerID) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.by[id]
}

// TestLiarBlamed: one of three holders sends wrong bytes (one per leaf)
// under the right hash. Not one wrong byte reaches the reader, the
// download completes from the honest holders, and the liar is blamed and
// ejected from the version after its first bad leaf.
func TestLiarBlamed(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	f, e := newFake(t, 4<<20+123, 3, 0)
	var b blames
	b.hook(e)
	f.liars[2] = true
	got := readAll(t, e, f, 0)
	if !bytes.Equal(got, f.content) {
		t.Fatalf("content differs: %d wrong bytes", diff(got, f.content))
	}
	f.mu.Lock()
	wrong := f.wrong
	f.mu.Unlock()
	if wrong == 0 {
		t.Fatal("the liar was never asked: the test proves nothing")
	}
	if b.count(2) == 0 || b.count(1)+b.count(3) != 0 {
		t.Fatalf("verdicts %v, want against server 2 only", b.by)
	}
	st := e.Stats()
	if st.VerifyFailures == 0 || st.VerifiedBytes < uint64(len(f.content)) {
		t.Fatalf("stats %+v", st)
	}
}

// TestHashLiarBlamed: a holder that answers HASH_REQUESTs with a wrong
// block is blamed; the tree is learnt from the others.
//
// The fake answers every HASH_REQUEST on a goroutine of its own, and a
// request is asked of one holder first and hedged to another only later:
// in a run where the honest answer comes first and ends the request, the
// liar's answer is late and ignored, and there is nothing to blame. So a
// run may end with no verdict (about one in seven); five such runs in a
// row mean the liar is not blamed.
func TestHashLiarBlamed(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	for range 5 {
		f, e := newFake(t, 3<<20, 3, 0)
		var b blames
		b.hook(e)
		f.liars[1], f.lieHashes = true, true
		got := readAll(t, e, f, 0)
		if !bytes.Equal(got, f.content) {
			t.Fatal("content differs")
		}
		if b.count(2)+b.count(3) != 0 {
			t.Fatalf("verdicts %v, want against server 1 only", b.by)
		}
		if b.count(1) > 0 {
			return
		}
	}
	t.Fatal("the hash liar was never blamed in five downloads")
}

// TestOnlyLiars: when every holder lies the reader fails with
// ErrUnverified, having delivered nothing.
func TestOnlyLiars(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	f, e := newFake(t, 1<<20, 2, 0)
	f.liars[1], f.liars[2] = true, true
	r := e.Open(context.Background(), f.tree.Root, int64(len(f.content)), "test")
	defer r.Close()
	n, err := io.Copy(io.Discard, r)
	if !errors.Is(err, ErrUnverified) || n != 0 {
		t.Fatalf("read %d bytes, %v; want 0, ErrUnverified", n, err)
	}
}

// TestSizeLie: a version announced with the honest hash and a larger size
// cannot be verified (the root commits to the size): its holder is blamed
// for the tree's top, and nothing is delivered.
func TestSizeLie(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	f, e := newFake(t, 1<<20, 1, 0)
	var b blames
	b.hook(e)
	big := append(bytes.Clone(f.content), make([]byte, 1<<20)...)
	tb := hashtree.NewBuilder()
	tb.Write(big)
	honest := f.tree
	f.tree = tb.Tree() // the liar serves the tree of its larger content
	r := e.Open(context.Background(), honest.Root, int64(len(big)), "test")
	defer r.Close()
	n, err := io.Copy(io.Discard, r)
	if !errors.Is(err, ErrUnverified) || n != 0 || b.count(1) == 0 {
		t.Fatalf("read %d bytes, %v, verdicts %v", n, err, b.by)
	}
}

// TestRangeInsideLeaf: a read starting inside a leaf fetches the whole
// leaf (it is checked whole) and returns exactly the bytes asked for.
func TestRangeInsideLeaf(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	f, e := newFake(t, 1<<20, 2, 0)
	r := e.Open(context.Background(), f.tree.Root, int64(len(f.content)), "test")
	defer r.Close()
	const off = 3*hashtree.LeafSize + 777
	if _, err := r.Seek(off, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if _, err := io.ReadFull(r, buf); err != nil || !bytes.Equal(buf, f.content[off:off+10]) {
		t.Fatalf("read %x, %v", buf, err)
	}
}

func diff(a, b []byte) int {
	n := 0
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			n++
		}
	}
	return n + max(len(a), len(b)) - min(len(a), len(b))
}

// TestTreeCacheBounded: the trees of versions no reader uses are kept
// within Config.TreeCache, and a version read again finds its tree.
func TestTreeCacheBounded(t *testing.T) {
	e := New(Config{Sender: &recordSender{}, Holders: func(pool.Key) []ServerID { return nil }, TreeCache: 1000})
	for i := range 100 {
		r := e.Open(context.Background(), [32]byte{byte(i)}, int64(i), "t")
		r.Close()
	}
	e.mu.Lock()
	n, bytes := len(e.trees), e.idleBytes
	e.mu.Unlock()
	if n == 0 || n > 10 || bytes > 1000 {
		t.Fatalf("%d idle trees of %d bytes kept, want a few within 1000", n, bytes)
	}
	r := e.Open(context.Background(), [32]byte{99}, 99, "t")
	e.mu.Lock()
	same := r.d.t.idle == nil && e.trees[r.d.key] == r.d.t && len(e.trees) == n
	e.mu.Unlock()
	r.Close()
	if !same {
		t.Fatal("the most recent version's tree was not reused")
	}
}

// hashRecorder is a Sender that answers nothing and records HASH_REQUESTs.
type hashRecorder struct {
	mu   sync.Mutex
	reqs []fschunk.HashRequest
}

func (h *hashRecorder) SendRead(ServerID, *fschunk.Read) error { return nil }
func (h *hashRecorder) SendHashRequest(_ ServerID, r *fschunk.HashRequest) error {
	h.mu.Lock()
	h.reqs = append(h.reqs, *r)
	h.mu.Unlock()
	return nil
}

// TestHashLevelsAskedAtOnce: the first chunk of a file whose tree stores
// three levels (levels 10, 5 and 0 of 32-node blocks) asks for the three
// blocks on its path at once, not one per round trip, and blocks that
// arrive before the one above them are kept until it comes, then checked.
func TestHashLevelsAskedAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		size := int64(64<<20 + hashtree.LeafSize) // 1,025 leaves: height 11
		b := hashtree.NewBuilder()
		zero := make([]byte, 1<<20)
		for range 64 {
			b.Write(zero)
		}
		b.Write(zero[:hashtree.LeafSize])
		tree := b.Tree()
		rec := &hashRecorder{}
		e := New(Config{Sender: rec, Holders: func(pool.Key) []ServerID { return []ServerID{1} }})
		var bl blames
		bl.hook(e)
		ctx, cancel := context.WithCancel(context.Background())
		r := e.Open(ctx, tree.Root, size, "test")
		done := make(chan struct{})
		go func() { defer close(done); r.Read(make([]byte, 1)) }()
		synctest.Wait() // the pump's first round, nothing answered

		rec.mu.Lock()
		asked := map[int]fschunk.HashRequest{}
		for _, q := range rec.reqs {
			if q.Index == 0 {
				asked[int(q.Level)] = q
			}
		}
		rec.mu.Unlock()
		for _, lv := range []int{10, 5, 0} {
			if _, ok := asked[lv]; !ok {
				t.Fatalf("first round asked %v for leaf 0: want levels 10, 5 and 0 at once", asked)
			}
		}
		// Answered bottom up: the lower blocks wait for the top one.
		for _, lv := range []int{0, 5, 10} {
			q := asked[lv]
			nodes, err := tree.Block(lv, 0, int(q.Count))
			if err != nil {
				t.Fatal(err)
			}
			e.HandleHashes(1, &fschunk.Hashes{ID: q.ID, Level: q.Level, Index: 0, Nodes: nodes})
		}
		e.mu.Lock()
		_, known := r.d.t.p.Leaf(0)
		early := len(r.d.t.early)
		e.mu.Unlock()
		if !known || early != 0 || bl.count(1) != 0 {
			t.Errorf("leaf 0 known %v, %d blocks still early, %d verdicts: want known, none, none", known, early, bl.count(1))
		}
		cancel() // a Read is not to be cut by Close
		<-done
		r.Close()
	})
}
