package catalog

import (
	"context"
	"fmt"
	"github.com/fastfile/fschunk/internal/hashtree"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout is generous: it only bounds a failing test.
const waitTimeout = 15 * time.Second

// sum is the content hash of s: the root of its hash tree.
func sum(s string) [32]byte { return treeOf(s).Root }

func treeOf(s string) *hashtree.Tree {
	b := hashtree.NewBuilder()
	b.Write([]byte(s))
	return b.Tree()
}

// writeTree creates files (path -> content) below dir.
func writeTree(tb testing.TB, dir string, files map[string]string) {
	tb.Helper()
	for p, content := range files {
		writeFile(tb, dir, p, content)
	}
}

func writeFile(tb testing.TB, dir, p, content string) {
	tb.Helper()
	full := filepath.Join(dir, filepath.FromSlash(p))
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// buildTree creates n small files spread over directories of 100 files, two
// levels deep, as a large served tree would look.
func buildTree(tb testing.TB, root string, n int) {
	tb.Helper()
	for i := 0; i < n; i++ {
		dir := filepath.Join(root, fmt.Sprintf("d%03d", i/10000), fmt.Sprintf("e%03d", i/100%100))
		if i%100 == 0 {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				tb.Fatal(err)
			}
		}
		content := fmt.Sprintf("file %d of the benchmark tree, with a little padding to look real\n", i)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%06d.dat", i)), []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}

type testLogWriter struct{ tb testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(string(p[:len(p)-1]))
	return len(p), nil
}

func testOptions(tb testing.TB) Options {
	level := slog.LevelInfo
	if os.Getenv("CATALOG_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return Options{
		Debounce:       20 * time.Millisecond,
		RescanInterval: time.Hour,
		HashWorkers:    2,
		Logger:         slog.New(slog.NewTextHandler(testLogWriter{tb}, &slog.HandlerOptions{Level: level})),
	}
}

// running is a catalog whose Run goroutine a test can stop.
type running struct {
	*Catalog
	cancel context.CancelFunc
	done   chan error
}

// stop cancels Run and waits for it; safe to call twice.
func (r *running) stop(tb testing.TB) {
	tb.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			tb.Errorf("Run returned %v", err)
		}
	case <-time.After(waitTimeout):
		tb.Fatal("Run did not return after cancel")
	}
}

// start opens root, lets tweak adjust internals, runs the catalog and waits
// until it is ready. Run is stopped and the catalog closed at cleanup.
func start(tb testing.TB, root string, opt Options, tweak ...func(*Catalog)) *running {
	tb.Helper()
	c, err := Open(root, opt)
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range tweak {
		f(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Catalog: c, cancel: cancel, done: make(chan error, 1)}
	go func() {
		r.done <- c.Run(ctx)
		close(r.done)
	}()
	tb.Cleanup(func() {
		r.stop(tb)
		c.Close()
	})
	select {
	case <-c.Ready():
	case <-time.After(waitTimeout):
		tb.Fatal("catalog not ready")
	}
	return r
}

// waitSnapshot waits, driven by Changed, until cond holds for the snapshot.
func waitSnapshot(tb testing.TB, c *Catalog, what string, cond func(gen uint64, es []Entry) bool) uint64 {
	tb.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		gen, es := c.Snapshot()
		if cond(gen, es) {
			return gen
		}
		select {
		case <-c.Changed():
		case <-deadline.C:
			tb.Fatalf("timeout waiting for %s; gen %d, entries %v", what, gen, paths(es))
		}
	}
}

// poll waits for cond by polling; for conditions that have no signal.
func poll(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timeout waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func paths(es []Entry) []string {
	var ps []string
	for _, e := range es {
		ps = append(ps, e.Path)
	}
	return ps
}

// matchesTree reports whether the entries are exactly files (path -> content).
func matchesTree(es []Entry, files map[string]string) bool {
	if len(es) != len(files) {
		return false
	}
	for _, e := range es {
		content, ok := files[e.Path]
		if !ok || e.Hash != sum(content) || e.Size != int64(len(content)) {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
