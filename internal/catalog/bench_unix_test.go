//go:build unix

package catalog

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// BenchmarkScan100k measures the first scan and hash of 100,000 small files,
// a restart with the state file, the heap the catalog keeps for them, and
// the CPU it uses while idle. Run with:
//
//	go test -run '^$' -bench Scan100k -benchtime 1x ./internal/catalog/
func BenchmarkScan100k(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a 100k file tree")
	}
	const n = 100_000
	base := b.TempDir()
	root := filepath.Join(base, "root")
	start := time.Now()
	buildTree(b, root, n)
	b.Logf("built %d files in %v", n, time.Since(start))
	stateFile := filepath.Join(base, "state")
	opt := Options{HashWorkers: 2, StateFile: stateFile}

	runOnce := func(b *testing.B, opt Options) *Catalog {
		c, err := Open(root, opt)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		<-c.Ready()
		b.StopTimer()
		if st := c.Stats(); st.Entries != n {
			b.Fatalf("stats %+v", st)
		}
		cancel()
		<-done
		c.Close()
		b.StartTimer()
		return c
	}

	b.Run("first", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			os.Remove(stateFile)
			b.StartTimer()
			c := runOnce(b, opt)
			b.ReportMetric(float64(c.Stats().HashedFiles), "hashed")
		}
	})
	b.Run("state", func(b *testing.B) {
		for b.Loop() {
			c := runOnce(b, opt)
			b.ReportMetric(float64(c.Stats().HashedFiles), "hashed")
			b.ReportMetric(float64(c.Stats().CacheHits), "cachehits")
		}
	})
	b.Run("rescan", func(b *testing.B) {
		c, err := Open(root, opt)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		l := &loop{c: c, watched: map[string]uint32{}, dirty: map[string]struct{}{}, gone: goneSet{}}
		l.fullScan(context.Background()) // state file hits, no watches
		for b.Loop() {
			l.fullScan(context.Background())
		}
		if st := c.Stats(); st.HashedFiles != 0 {
			b.Fatalf("rescan hashed: %+v", st)
		}
	})
	b.Run("idle", func(b *testing.B) {
		c, err := Open(root, opt)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		<-c.Ready()
		// Let the post-ready state save finish; this measures, it does not
		// synchronise anything.
		time.Sleep(2 * time.Second)
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		heap := float64(ms.HeapAlloc) / (1 << 20)
		t0 := time.Now()
		c0 := cpuTime()
		for b.Loop() {
			time.Sleep(5 * time.Second)
		}
		idle := float64(cpuTime()-c0) / float64(time.Since(t0))
		b.ReportMetric(heap, "heap-MiB")
		b.ReportMetric(idle, "cpu-s/s")
		cancel()
		<-done
	})
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
