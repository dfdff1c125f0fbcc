package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/pool"
)

// recordSender remembers the READs it is asked to send and answers none.
type recordSender struct {
	mu    sync.Mutex
	reads []fschunk.Read
}

func (s *recordSender) SendRead(_ ServerID, r *fschunk.Read) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := *r
	m.Ranges = append([]fschunk.Range(nil), r.Ranges...)
	s.reads = append(s.reads, m)
	return nil
}

func (s *recordSender) SendHashRequest(ServerID, *fschunk.HashRequest) error { return nil }

func (s *recordSender) all() []fschunk.Read {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]fschunk.Read(nil), s.reads...)
}

// readLast opens a version of the given size, reads its last byte with a
// short deadline and reports what happened: the error, or a panic.
func readLast(e *Engine, size int64) (err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	r := e.Open(ctx, [fschunk.HashSize]byte{1}, size, "size-lie")
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	defer r.Close()
	if _, err := r.Seek(-1, io.SeekEnd); err != nil {
		return err
	}
	_, err = r.Read(make([]byte, 1))
	return err
}

// TestSizeLieDoesNotWedge: a version announced with a size near 2⁶³ (a
// lying or broken server) once made the window arithmetic overflow for
// the last chunk; Read then indexed an empty window and panicked while
// holding Engine.mu, and every later call into the engine (the gateway's
// receive loop with the next DATA) blocked for ever. Now such a size is an
// error, the largest legal size is fetched with the right READ, and the
// engine stays usable either way.
func TestSizeLieDoesNotWedge(t *testing.T) {
	snd := &recordSender{}
	e := New(Config{
		Sender:     snd,
		Holders:    func(pool.Key) []ServerID { return []ServerID{1} },
		ChunkSize:  128 << 10,
		Window:     1 << 20,
		HolderWait: 50 * time.Millisecond,
	})
	for _, c := range []struct {
		name string
		size int64
		want func(error) bool
	}{
		{"MaxInt64", math.MaxInt64, func(err error) bool { return err != nil && !errors.Is(err, context.DeadlineExceeded) }},
		{"MaxFileSize+1", fschunk.MaxFileSize + 1, func(err error) bool { return err != nil && !errors.Is(err, context.DeadlineExceeded) }},
		// Legal: the READ goes out and nobody answers.
		{"MaxFileSize-5", fschunk.MaxFileSize - 5, func(err error) bool { return errors.Is(err, context.DeadlineExceeded) }},
	} {
		res := make(chan error, 1)
		go func() { res <- readLast(e, c.size) }()
		var err error
		select {
		case err = <-res:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: reading the last byte hangs (engine lock held)", c.name)
		}
		if !c.want(err) {
			t.Errorf("%s: read of the last byte: %v", c.name, err)
		}
		// The engine must still answer: its lock was released.
		done := make(chan struct{})
		go func() { e.Stats(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: engine lock still held after the read", c.name)
		}
	}
	var last fschunk.Read
	for _, r := range snd.all() {
		last = r
	}
	// The last leaf, whole: a leaf is verified whole, so it is fetched whole.
	lastLeaf := int64(fschunk.MaxFileSize-6) / fschunk.TreeLeafSize * fschunk.TreeLeafSize
	want := fschunk.Range{Offset: lastLeaf, Length: uint32(fschunk.MaxFileSize - 5 - lastLeaf)}
	if len(last.Ranges) != 1 || last.Ranges[0] != want {
		t.Errorf("READ for the last byte of a %d-byte version: %+v, want %+v", int64(fschunk.MaxFileSize-5), last.Ranges, want)
	}
	// Every READ must decode (offsets inside the protocol's bound).
	for _, r := range snd.all() {
		b := r.Append(nil)
		var m fschunk.Read
		if err := m.Decode(b); err != nil {
			t.Errorf("READ %+v does not decode: %v", r.Ranges, err)
		}
	}
}
