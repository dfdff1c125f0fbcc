package fetch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// stuckWriter takes ok bytes and then blocks every Write (and Flush)
// until released, as a client that stops reading.
type stuckWriter struct {
	ok       int
	release  chan struct{}
	flush    bool // it is a FlushWriter (an http.ResponseWriter)
	buffered int  // bytes written since the last flush (a FlushWriter's own buffer)
}

func (w *stuckWriter) Write(p []byte) (int, error) {
	if w.flush && w.buffered+len(p) <= ProbeSize {
		w.buffered += len(p) // copied into its own buffer
		return len(p), nil
	}
	if len(p) <= w.ok {
		w.ok -= len(p)
		return len(p), nil
	}
	<-w.release
	return 0, errors.New("client gone")
}

func (w *stuckWriter) FlushError() error {
	if w.buffered <= w.ok {
		w.ok -= w.buffered
		w.buffered = 0
		return nil
	}
	<-w.release
	return errors.New("client gone")
}

type flushStuckWriter struct{ *stuckWriter }

// TestStalledClientsGiveBack: responses whose clients stop reading hold
// at most the piece they are writing once another response needs room,
// none at all if their client never read; a client that reads meanwhile
// gets a window of the budget, not one chunk; everything comes back.
func TestStalledClientsGiveBack(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	f, _ := newFake(t, 4<<20, 3, 0)
	const chunk, budget, stalled = 128 << 10, 2 << 20, 40
	e := New(Config{Sender: f, Holders: f.e.cfg.Holders, ChunkSize: chunk, Window: budget, Budget: budget,
		HolderWait: 200 * time.Millisecond, StalledAfter: 20 * time.Millisecond})
	f.e = e
	release := make(chan struct{})
	var wg sync.WaitGroup
	readers := 0
	for i := range stalled {
		// Half never read (HTTP/2 streams without window: they block in
		// the probe's Flush); half read 100 KB and stop (in a piece).
		w := &stuckWriter{release: release, ok: 100_000}
		var dst io.Writer = w
		if i%2 == 0 {
			w.ok, w.flush = 0, true
			dst = flushStuckWriter{w}
		}
		r := e.Open(context.Background(), f.tree.Root, int64(len(f.content)), "stalled")
		readers++
		wg.Go(func() {
			defer r.Close()
			r.WriteToN(dst, int64(len(f.content)))
		})
	}
	deadline := time.Now().Add(time.Minute)
	for e.Stats().Stalled < stalled {
		if time.Now().After(deadline) {
			t.Fatalf("stalled responses: %d of %d after a minute", e.Stats().Stalled, stalled)
		}
		time.Sleep(time.Millisecond)
	}

	stalledHeld := e.Stats().Buffered
	// A normal client: the stalled ones give back their windows.
	r := e.Open(context.Background(), f.tree.Root, int64(len(f.content)), "normal")
	var got bytes.Buffer
	maxHeld, maxWindow := 0, 0
	for {
		_, err := r.WriteToN(&got, chunk)
		s := e.Stats()
		maxHeld = max(maxHeld, s.Buffered)
		e.mu.Lock()
		maxWindow = max(maxWindow, len(r.d.chunks))
		e.mu.Unlock()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	r.Close()
	if !bytes.Equal(got.Bytes(), f.content) {
		t.Fatal("the normal client's content differs")
	}
	s := e.Stats()
	// At most the budget, one chunk beyond it (the normal client's, taken
	// while over budget), whole chunks being written by stalled clients
	// that read as long as they fit in the budget too, and a piece for
	// each other stalled client that read.
	limit := 2*budget + chunk + stalled/2*PieceSize
	t.Logf("%d stalled responses (%d never read): the engine held at most %d bytes beside a normal client (limit %d; %d once they stalled); its window reached %d chunks; %d bytes reclaimed",
		stalled, stalled/2, maxHeld, limit, stalledHeld, maxWindow, s.ReclaimedBytes)
	if maxHeld > limit {
		t.Errorf("held %d bytes with %d stalled responses, more than %d", maxHeld, stalled, limit)
	}
	if maxWindow < budget/chunk/2 {
		t.Errorf("the normal client's window reached %d chunks, want at least %d (half the budget)", maxWindow, budget/chunk/2)
	}
	close(release)
	wg.Wait()
	if s := e.Stats(); s.Buffered != 0 || s.Stalled != 0 {
		t.Errorf("after every response ended: %d bytes held, %d stalled", s.Buffered, s.Stalled)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.held != 0 || e.alloc != 0 || e.pinned != 0 || e.streaming != 0 || e.writers.n != 0 || e.stalled.n != 0 {
		t.Errorf("accounts not back to zero: held %d alloc %d pinned %d streaming %d writers %d stalled %d",
			e.held, e.alloc, e.pinned, e.streaming, e.writers.n, e.stalled.n)
	}
}
