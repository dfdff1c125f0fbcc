package fetch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/hashtree"
	"github.com/fastfile/fschunk/internal/pool"
)

// fakeNet serves READs from memory for a set of servers, calling the
// engine back from other goroutines as the real receive loop would.
type fakeNet struct {
	e       *Engine
	content []byte
	mu      sync.Mutex
	rnd     *rand.Rand
	loss    float64
	dead    map[ServerID]bool
	served  map[ServerID]int
	wg      sync.WaitGroup
	holders []ServerID
	jitter  time.Duration // each datagram delivered after a random delay up to this
	tree    *hashtree.Tree
	// liars send other bytes than the content (a byte flipped every
	// 64 KiB) or, with lieHashes, a tree block with a flipped bit.
	liars     map[ServerID]bool
	lieHashes bool
	wrong     int // wrong bytes the liars sent
}

func (f *fakeNet) SendHashRequest(id ServerID, r *fschunk.HashRequest) error {
	f.mu.Lock()
	dead, lie := f.dead[id], f.liars[id] && f.lieHashes
	f.mu.Unlock()
	if dead {
		return nil
	}
	msg := *r
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		nodes, err := f.tree.Block(int(msg.Level), msg.Index, int(msg.Count))
		if err != nil {
			f.e.HandleError(id, &fschunk.Error{ID: msg.ID, Code: fschunk.CodeRange})
			return
		}
		if lie {
			nodes[3] ^= 1
		}
		f.e.HandleHashes(id, &fschunk.Hashes{ID: msg.ID, Level: msg.Level, Index: msg.Index, Nodes: nodes})
	}()
	return nil
}

func (f *fakeNet) SendRead(id ServerID, r *fschunk.Read) error {
	f.mu.Lock()
	dead := f.dead[id]
	f.mu.Unlock()
	if dead {
		return nil
	}
	msg := *r
	msg.Ranges = append([]fschunk.Range(nil), r.Ranges...)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		seg := int(msg.MaxDatagram) - fschunk.DataOverhead
		for _, rg := range msg.Ranges {
			for off := rg.Offset; off < rg.Offset+int64(rg.Length); off += int64(seg) {
				end := min(off+int64(seg), rg.Offset+int64(rg.Length))
				f.mu.Lock()
				drop := f.rnd.Float64() < f.loss || f.dead[id]
				f.served[id] += int(end - off)
				f.mu.Unlock()
				if drop {
					continue
				}
				payload := f.content[off:end]
				f.mu.Lock()
				if f.liars[id] && !f.lieHashes {
					payload = bytes.Clone(payload)
					for i := range payload {
						if (off+int64(i))%(64<<10) == 100 {
							payload[i] ^= 0xff
							f.wrong++
						}
					}
				}
				f.mu.Unlock()
				d := &fschunk.Data{ID: msg.ID, Offset: off, Payload: payload}
				if f.jitter > 0 {
					f.mu.Lock()
					wait := time.Duration(f.rnd.Int64N(int64(f.jitter)))
					f.mu.Unlock()
					f.wg.Add(1)
					time.AfterFunc(wait, func() { defer f.wg.Done(); f.e.HandleData(id, d) })
					continue
				}
				f.e.HandleData(id, d)
			}
		}
	}()
	return nil
}

func newFake(t *testing.T, size int, servers int, loss float64) (*fakeNet, *Engine) {
	content := make([]byte, size)
	rr := rand.New(rand.NewPCG(uint64(size), 7))
	for i := range content {
		content[i] = byte(rr.Uint32())
	}
	f := &fakeNet{content: content, rnd: rand.New(rand.NewPCG(1, 2)), loss: loss, dead: map[ServerID]bool{}, served: map[ServerID]int{},
		liars: map[ServerID]bool{}}
	b := hashtree.NewBuilder()
	b.Write(content)
	f.tree = b.Tree()
	for i := 1; i <= servers; i++ {
		f.holders = append(f.holders, ServerID(i))
	}
	f.e = New(Config{
		Sender: f,
		Holders: func(pool.Key) []ServerID {
			f.mu.Lock()
			defer f.mu.Unlock()
			var out []ServerID
			for _, h := range f.holders {
				if !f.dead[h] {
					out = append(out, h)
				}
			}
			return out
		},
		ChunkSize:  64 << 10,
		Window:     1 << 20,
		HolderWait: 200 * time.Millisecond,
	})
	t.Cleanup(f.wg.Wait)
	return f, f.e
}

func readAll(t *testing.T, e *Engine, f *fakeNet, off int64) []byte {
	t.Helper()
	r := e.Open(context.Background(), f.tree.Root, int64(len(f.content)), "test")
	defer r.Close()
	if _, err := r.Seek(off, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return got
}

func TestDownloadExact(t *testing.T) {
	// A cleanup registered first runs last: after newFake's wait for the
	// fake servers' goroutines.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	for _, c := range []struct {
		name          string
		size, servers int
		loss          float64
		off           int64
	}{
		{"one server", 1 << 20, 1, 0, 0},
		{"three servers", 3<<20 + 17, 3, 0, 0},
		{"loss 10%", 2<<20 + 5, 3, 0.10, 0},
		{"offset", 1<<20 + 3, 2, 0.02, 12345},
		{"tiny", 1, 3, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, e := newFake(t, c.size, c.servers, c.loss)
			got := readAll(t, e, f, c.off)
			if !bytes.Equal(got, f.content[c.off:]) {
				t.Fatalf("content differs (%d bytes, want %d)", len(got), len(f.content)-int(c.off))
			}
			if c.servers > 1 && c.size > 1<<20 {
				f.mu.Lock() // late duplicates may still be being served
				for _, h := range f.holders {
					if f.served[h] == 0 {
						t.Errorf("server %d never used", h)
					}
				}
				f.mu.Unlock()
			}
			if c.loss > 0 && e.Stats().Retransmits == 0 {
				t.Error("loss but no retransmission")
			}
		})
	}
}

func TestServerDiesMidDownload(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	f, e := newFake(t, 4<<20, 3, 0)
	r := e.Open(context.Background(), f.tree.Root, int64(len(f.content)), "test")
	defer r.Close()
	buf := make([]byte, 1<<20)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.dead[2] = true // black hole: no answers, still listed as holder
	f.mu.Unlock()
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(buf, rest...), f.content) {
		t.Fatal("content differs")
	}
}

func TestNoHolder(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	f, e := newFake(t, 1<<20, 1, 0)
	f.dead[1] = true
	r := e.Open(context.Background(), f.tree.Root, int64(len(f.content)), "test")
	defer r.Close()
	if _, err := r.Read(make([]byte, 10)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}

func TestCancel(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	f, e := newFake(t, 8<<20, 2, 0)
	ctx, cancel := context.WithCancel(context.Background())
	r := e.Open(ctx, f.tree.Root, int64(len(f.content)), "test")
	if _, err := r.Read(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	cancel()
	var err error
	for err == nil {
		_, err = r.Read(make([]byte, 1<<16))
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("read after cancel: %v, want context.Canceled", err)
	}
	r.Close()
	f.wg.Wait()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.reqs) != 0 || len(e.readers) != 0 {
		t.Fatalf("after cancel: %d requests, %d readers", len(e.reqs), len(e.readers))
	}
	for _, l := range e.links {
		if l.inflight != 0 {
			t.Fatalf("link %d: %d bytes still in flight", l.id, l.inflight)
		}
	}
}

func TestSpanSet(t *testing.T) {
	var s spanSet
	rr := rand.New(rand.NewPCG(3, 4))
	have := make([]bool, 1000)
	for i := 0; i < 3000; i++ {
		lo := rr.IntN(1000)
		hi := min(lo+1+rr.IntN(50), 1000)
		want := 0
		for j := lo; j < hi; j++ {
			if !have[j] {
				want++
				have[j] = true
			}
		}
		if got := s.add(lo, hi); got != want {
			t.Fatalf("add(%d,%d) = %d, want %d", lo, hi, got, want)
		}
		miss := 0
		for _, m := range s.missing(nil, 1000) {
			miss += m.hi - m.lo
		}
		n := 0
		for _, h := range have {
			if !h {
				n++
			}
		}
		if miss != n {
			t.Fatalf("missing %d, want %d", miss, n)
		}
	}
	if !s.covers(1000) {
		t.Fatal("not covered after 3000 random spans")
	}
}

// TestReorderingAndLoss: heavy reordering (every datagram delayed at
// random) with loss never stalls a download.
func TestReorderingAndLoss(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	for i := 0; i < 5; i++ {
		f, e := newFake(t, 3<<20+11, 3, 0.02)
		f.jitter = 4 * time.Millisecond
		if got := readAll(t, e, f, 0); !bytes.Equal(got, f.content) {
			t.Fatal("content differs")
		}
		f.wg.Wait()
		e.mu.Lock()
		if e.inflight != 0 || len(e.reqs) != 0 {
			t.Fatalf("after the download: %d bytes in flight, %d requests", e.inflight, len(e.reqs))
		}
		e.mu.Unlock()
	}
}

// TestBudgetShared: several responses together never buffer more than the
// engine's budget, though each alone may use its whole window, and every
// byte still arrives.
func TestBudgetShared(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	f, _ := newFake(t, 4<<20, 3, 0)
	const chunk, window, budget = 64 << 10, 1 << 20, 1 << 20
	e := New(Config{Sender: f, Holders: f.e.cfg.Holders, ChunkSize: chunk, Window: window, Budget: budget, HolderWait: 200 * time.Millisecond})
	f.e = e
	const n = 4
	var rs [n]*Reader
	var got [n][]byte
	for i := range rs {
		rs[i] = e.Open(context.Background(), f.tree.Root, int64(len(f.content)), "test")
		defer rs[i].Close()
	}
	maxHeld, buf := 0, make([]byte, 32<<10)
	for done := 0; done < n; {
		done = 0
		for i, r := range rs {
			k, err := r.Read(buf)
			got[i] = append(got[i], buf[:k]...)
			if err == io.EOF {
				done++
			} else if err != nil {
				t.Fatal(err)
			}
			maxHeld = max(maxHeld, e.Stats().Buffered)
		}
	}
	for i := range got {
		if !bytes.Equal(got[i], f.content) {
			t.Fatalf("reader %d: content differs", i)
		}
	}
	if maxHeld > budget {
		t.Fatalf("%d readers held %d bytes at most; budget %d", n, maxHeld, budget)
	}
	together := maxHeld
	// Alone, one reader grows past a quarter of the budget.
	alone := e.Open(context.Background(), f.tree.Root, int64(len(f.content)), "alone")
	defer alone.Close()
	maxHeld = 0
	for {
		_, err := alone.Read(buf)
		maxHeld = max(maxHeld, e.Stats().Buffered)
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d readers: at most %d bytes buffered; one alone: %d", n, together, maxHeld)
	if maxHeld <= budget/n {
		t.Fatalf("a reader alone held at most %d bytes: the share did not grow back", maxHeld)
	}
}

// TestOverloadQueuesNotStalls: when the gateway's own in-flight bound
// makes responses wait their turn far longer than StallTimeout, they
// queue and complete; only a response that gets nothing while nothing at
// all is delivered may fail.
func TestOverloadQueuesNotStalls(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	f, _ := newFake(t, 256<<10, 3, 0)
	f.jitter = 20 * time.Millisecond
	e := New(Config{Sender: f, Holders: f.e.cfg.Holders, ChunkSize: 64 << 10, Window: 1 << 20,
		MaxInflight: 64 << 10, StallTimeout: 300 * time.Millisecond, HolderWait: 200 * time.Millisecond})
	f.e = e
	const readers = 10
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for range readers {
		wg.Go(func() {
			r := e.Open(context.Background(), f.tree.Root, int64(len(f.content)), "queued")
			defer r.Close()
			got, err := io.ReadAll(r)
			if err == nil && !bytes.Equal(got, f.content) {
				err = errors.New("content differs")
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("reader: %v", err)
		}
	}
	t.Logf("%d readers of %d chunks through one chunk in flight: %v (stall timeout 300ms)", readers, 4, time.Since(start))
}

type failAfter struct {
	n   int
	err error
}

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		k := f.n
		f.n = 0
		return k, f.err
	}
	f.n -= len(p)
	return len(p), nil
}

// TestWriteToN: writing straight from the chunk buffers gives the same
// bytes as Read, in any steps, after seeks, and reports the writer's
// error as it is.
func TestWriteToN(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	f, e := newFake(t, 1<<20+123, 3, 0.02)
	r := e.Open(context.Background(), f.tree.Root, int64(len(f.content)), "direct")
	defer r.Close()
	var got bytes.Buffer
	rng := rand.New(rand.NewPCG(3, 4))
	for {
		n, err := r.WriteToN(&got, rng.Int64N(200<<10)+1)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes (+%d): %v", got.Len(), n, err)
		}
	}
	if !bytes.Equal(got.Bytes(), f.content) {
		t.Fatalf("content differs (%d bytes, want %d)", got.Len(), len(f.content))
	}
	// A range after a seek.
	if _, err := r.Seek(300_001, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	got.Reset()
	if n, err := r.WriteToN(&got, 500_000); err != nil || n != 500_000 || !bytes.Equal(got.Bytes(), f.content[300_001:800_001]) {
		t.Fatalf("range: %d bytes, %v", n, err)
	}
	// The writer's error comes back unchanged, with what it took.
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("client gone")
	n, err := r.WriteToN(&failAfter{n: 70_000, err: boom}, 1<<20)
	if err != boom || n != 70_000 {
		t.Fatalf("failing writer: %d bytes, %v; want 70000, %v", n, err, boom)
	}
}

// TestSpanSetAddInPlace: recording a datagram, in order or filling a
// gap, allocates nothing once the set has room (the per-datagram path).
func TestSpanSetAddInPlace(t *testing.T) {
	s := make(spanSet, 0, 8)
	allocs := testing.AllocsPerRun(100, func() {
		s = s[:0]
		s.add(0, 100)   // first
		s.add(100, 200) // in order
		s.add(300, 400) // a gap
		s.add(200, 300) // the gap filled: merges three
	})
	if allocs != 0 || len(s) != 1 || s[0] != (span{0, 400}) {
		t.Fatalf("%v allocations, set %v; want 0 and [{0 400}]", allocs, s)
	}
}

// BenchmarkQueuedReaders: 100 readers of 512 KiB through an in-flight
// bound of one chunk, so that nearly all of them wait for room at any
// moment; the fake servers answer at once. It measures what the engine
// spends per delivered byte when most responses are queued.
func BenchmarkQueuedReaders(b *testing.B) {
	const readers = 100
	b.ReportAllocs()
	for b.Loop() {
		f := &fakeNet{rnd: rand.New(rand.NewPCG(1, 2)), dead: map[ServerID]bool{}, served: map[ServerID]int{}, holders: []ServerID{1, 2, 3}}
		f.content = make([]byte, 512<<10)
		tb := hashtree.NewBuilder()
		tb.Write(f.content)
		f.tree = tb.Tree()
		f.e = New(Config{Sender: f, Holders: func(pool.Key) []ServerID { return f.holders }, ChunkSize: 64 << 10,
			Window: 1 << 20, MaxInflight: 64 << 10})
		var wg sync.WaitGroup
		for range readers {
			wg.Go(func() {
				r := f.e.Open(context.Background(), f.tree.Root, int64(len(f.content)), "bench")
				defer r.Close()
				if _, err := io.Copy(io.Discard, r); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
		f.wg.Wait()
	}
	b.SetBytes(readers * 512 << 10)
}
