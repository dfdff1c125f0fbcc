package catalog

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAnnouncedWhileHashing: files are published as they are hashed,
// smallest first, so a small file next to a large one is announced long
// before the large one is hashed (and Ready, which means everything is
// hashed); while files wait, progress is logged with files, bytes, rate
// and time left.
func TestAnnouncedWhileHashing(t *testing.T) {
	root := t.TempDir()
	// A large sparse file: reading it costs hashing time, not disk.
	f, err := os.Create(filepath.Join(root, "a-big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(512 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	writeTree(t, root, map[string]string{"z-small.txt": "small"})

	var logs lockedBuf
	opt := testOptions(t)
	opt.HashWorkers = 1 // one file at a time: the order is the queue's
	opt.ProgressEvery = 10 * time.Millisecond
	opt.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	c, err := Open(root, opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done; c.Close() }()

	waitSnapshot(t, c, "the small file announced", func(_ uint64, es []Entry) bool {
		for _, e := range es {
			if e.Path == "a-big.bin" {
				t.Fatal("the large file was hashed first, or before the small one was announced")
			}
		}
		return len(es) == 1 && es[0].Path == "z-small.txt"
	})
	select {
	case <-c.Ready():
		t.Fatal("Ready before the large file was hashed")
	default:
	}
	select {
	case <-c.Ready():
	case <-time.After(waitTimeout):
		t.Fatal("not ready")
	}
	if _, es := c.Snapshot(); len(es) != 2 {
		t.Fatalf("%d entries when ready, want 2", len(es))
	}
	found := false
	for line := range strings.Lines(logs.String()) {
		ok := strings.Contains(line, "catalog: hashing (")
		for _, want := range []string{"files_hashed=", "files_left=1 ", "bytes_left=", "rate=", "MB/s", "time_left="} {
			ok = ok && strings.Contains(line, want)
		}
		found = found || ok
	}
	if !found {
		t.Fatalf("no progress line with files, bytes, rate and time left; log:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "catalog: hashing done") {
		t.Errorf("no summary line; log:\n%s", logs.String())
	}
}
