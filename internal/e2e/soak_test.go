package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/httpfront"
)

// soakFile is one file of the soak mix; weight is its share of requests.
type soakFile struct {
	name   string
	size   int
	weight int
}

// soakMix favours small files, as real traffic does, while the large ones
// keep the chunk engine busy with multi-chunk, multi-server downloads.
var soakMix = []soakFile{
	{"s/empty", 0, 7},
	{"s/tiny.txt", 7, 60},
	{"s/1k.bin", 1000 + 3, 60},
	{"s/32k.bin", 32<<10 + 1, 50},
	{"s/200k.bin", 200<<10 - 5, 20},
	{"s/1m.bin", 1<<20 + 9, 2},
	{"s/3m.bin", 3<<20 + 11, 1},
}

// soakSample is one reading of the process taken once a second.
type soakSample struct {
	at         time.Duration
	heap       uint64 // runtime HeapInuse
	goroutines int
}

// TestSoak runs 1,000 concurrent clients against the gateway with three
// servers for SOAK_DURATION (default 15 s): a mix of file sizes from empty
// to 3 MiB, a quarter of the requests for a random byte range. Every body
// is checked byte for byte against the expected bytes; there must be no
// error at all. Memory must stay flat (the peak heap of the last third of
// the run at most max(heapFactor × the first third's peak, that peak +
// heapFloor)) and the
// goroutines must return to their number before the run once the clients
// are gone.
//
// Each client keeps its keep-alive connection and sends its requests back
// to back (SOAK_THINK sets a mean pause between them, exponentially
// distributed; default none). That offers far more than the gateway does
// under -race on two shared cores (10-50 MB/s), so most responses wait for
// room in the engine's windows: the test proves that overload queues
// (latency grows, bodies stay exact) instead of failing. Before the engine
// told queueing from stalling, this run ended 500 of 7,820 requests with
// 504.
func TestSoak(t *testing.T) {
	const (
		clients      = 1000
		rangeShare   = 4 // one request in rangeShare asks for a range
		heapFactor   = 3.0
		heapFloor    = 128 << 20
		heapRetained = 32 << 20 // live heap the run may leave behind
		goroutSlack  = 5        // runtime and timer goroutines that come and go
	)
	dur := soakEnvDuration(t, "SOAK_DURATION", 15*time.Second)
	if dur < 3*time.Second {
		t.Fatalf("SOAK_DURATION=%v: at least 3s, to have thirds to compare", dur)
	}
	think := soakEnvDuration(t, "SOAK_THINK", 0)

	files := map[string][]byte{}
	var names []string
	for _, f := range soakMix {
		files[f.name] = randBytes(f.size)
		for range f.weight {
			names = append(names, f.name)
		}
	}
	e := newEnv(t, files, envOpts{})
	for range 3 {
		e.addServer(nil)
	}
	e.waitHolders(3)
	// The front end as cmd/httpgw configures it.
	h := httpfront.NewHandler(e.gw.Source(), httpfront.Options{Logger: e.log})
	web := httptest.NewUnstartedServer(h)
	web.Config = httpfront.NewServer("", h, httpfront.ServerOptions{Logger: e.log})
	web.Start()
	defer web.Close()
	for _, f := range soakMix {
		if err := soakFetch(context.Background(), http.DefaultClient, web.URL, f.name, files[f.name], ""); err != nil {
			t.Fatalf("warm-up: %v", err)
		}
	}
	http.DefaultClient.CloseIdleConnections()
	// Let the warm-up connections' goroutines finish before the baseline.
	time.Sleep(100 * time.Millisecond)
	baseline := runtime.NumGoroutine()
	heapBefore := soakLiveHeap()

	tr := &http.Transport{MaxIdleConns: clients, MaxIdleConnsPerHost: clients}
	client := &http.Client{Transport: tr}
	// Only a guard against a hung request; the test does not time anything.
	ctx, cancel := context.WithTimeout(context.Background(), dur+2*time.Minute)
	defer cancel()

	var (
		requests, bytesIn, errCount, ranges atomic.Int64
		inflight, peakInflight              atomic.Int64
		errMu                               sync.Mutex
		errs                                []string
		latMu                               sync.Mutex
		lats                                []time.Duration
		wg                                  sync.WaitGroup
	)
	start := time.Now()
	stopAt := start.Add(dur)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 0x50a6))
			var mine []time.Duration
			// Exponential pauses, the first one included, make each
			// client's requests a stationary process from the start: no
			// ramp-up to confuse the first third of the memory samples.
			pause := func() {
				d := min(time.Duration(rng.ExpFloat64()*float64(think)), time.Until(stopAt))
				if d > 0 {
					time.Sleep(d)
				}
			}
			pause()
			for time.Now().Before(stopAt) {
				name := names[rng.IntN(len(names))]
				data := files[name]
				rangeHdr, want := "", data
				if len(data) > 1 && rng.IntN(rangeShare) == 0 {
					lo := rng.IntN(len(data))
					hi := lo + rng.IntN(len(data)-lo)
					rangeHdr = fmt.Sprintf("bytes=%d-%d", lo, hi)
					want = data[lo : hi+1]
					ranges.Add(1)
				}
				n := inflight.Add(1)
				for p := peakInflight.Load(); n > p && !peakInflight.CompareAndSwap(p, n); p = peakInflight.Load() {
				}
				t0 := time.Now()
				err := soakFetch(ctx, client, web.URL, name, want, rangeHdr)
				mine = append(mine, time.Since(t0))
				inflight.Add(-1)
				requests.Add(1)
				if err != nil {
					errCount.Add(1)
					errMu.Lock()
					if len(errs) < 10 {
						errs = append(errs, err.Error())
					}
					errMu.Unlock()
				} else {
					bytesIn.Add(int64(len(want)))
				}
				pause()
			}
			latMu.Lock()
			lats = append(lats, mine...)
			latMu.Unlock()
		}()
	}

	// Sample once a second while the clients run.
	var samples []soakSample
	sampleDone := make(chan struct{})
	go func() {
		defer close(sampleDone)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for now := range tick.C {
			if now.After(stopAt) {
				return
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			samples = append(samples, soakSample{now.Sub(start), ms.HeapInuse, runtime.NumGoroutine()})
		}
	}()
	wg.Wait()
	elapsed := time.Since(start)
	<-sampleDone

	// The clients are gone: their connections close, the server's and the
	// engine's goroutines must follow.
	tr.CloseIdleConnections()
	e.waitFor("the engine's readers to close", func() bool { return e.gw.Engine().Stats().Active == 0 })
	after := 0
	e.waitFor(fmt.Sprintf("goroutines back to the baseline of %d", baseline), func() bool {
		after = runtime.NumGoroutine()
		return after <= baseline+goroutSlack
	})

	heapAfter := soakLiveHeap()

	slices.Sort(lats)
	pct := func(p float64) time.Duration {
		if len(lats) == 0 {
			return 0
		}
		return lats[min(len(lats)-1, int(p*float64(len(lats))))]
	}
	var heapMiB []string
	var maxGoroutines int
	for _, s := range samples {
		heapMiB = append(heapMiB, fmt.Sprintf("%.0f", float64(s.heap)/(1<<20)))
		maxGoroutines = max(maxGoroutines, s.goroutines)
	}
	t.Logf("soak: %d clients, mean pause %v, for %v (ran %v): %d requests (%d ranges, up to %d at once), %.1f MiB checked byte for byte, %d errors, %.0f req/s, latency p50 %v p99 %v max %v",
		clients, think, dur, elapsed.Round(time.Millisecond), requests.Load(), ranges.Load(), peakInflight.Load(), float64(bytesIn.Load())/(1<<20),
		errCount.Load(), float64(requests.Load())/elapsed.Seconds(),
		pct(0.50).Round(time.Millisecond), pct(0.99).Round(time.Millisecond), pct(1).Round(time.Millisecond))
	t.Logf("soak: heap in use per second (MiB): [%s]; live heap before %.1f MiB, after %.1f MiB; goroutines baseline %d, peak %d, after %d",
		strings.Join(heapMiB, " "), float64(heapBefore)/(1<<20), float64(heapAfter)/(1<<20), baseline, maxGoroutines, after)
	st := e.gw.Engine().Stats()
	t.Logf("soak: engine %+v", st)

	if n := errCount.Load(); n > 0 {
		t.Errorf("%d of %d requests failed; first ones:\n%s", n, requests.Load(), strings.Join(errs, "\n"))
	}
	if requests.Load() < clients {
		t.Errorf("only %d requests for %d clients", requests.Load(), clients)
	}
	if len(samples) < 3 {
		t.Fatalf("%d memory samples; the run is too short to judge", len(samples))
	}
	third := len(samples) / 3
	peak := func(ss []soakSample) uint64 {
		var m uint64
		for _, s := range ss {
			m = max(m, s.heap)
		}
		return m
	}
	// The heap in use follows the number of responses in flight, which
	// varies with the machine's other load; hence a generous bound, with a
	// floor for small heaps.
	first, last := peak(samples[:third]), peak(samples[len(samples)-third:])
	if limit := max(heapFactor*float64(first), float64(first+heapFloor)); float64(last) > limit {
		t.Errorf("heap grew: peak %d MiB in the last third, %d MiB in the first (limit %.0f MiB)", last>>20, first>>20, limit/(1<<20))
	}
	// Once the clients are gone, what the run left behind is garbage.
	if heapAfter > heapBefore+heapRetained {
		t.Errorf("live heap %d MiB after the run, %d MiB before: more than %d MiB retained", heapAfter>>20, heapBefore>>20, heapRetained>>20)
	}
}

// soakLiveHeap returns the heap in use after two collections, that is
// roughly the live heap (the second cycle frees what the first one's
// finalizers and sync.Pool victim caches released).
func soakLiveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// soakFetch gets name (with the Range header rangeHdr, if set) and checks
// the status, the length and every byte of the body against want.
func soakFetch(ctx context.Context, c *http.Client, base, name string, want []byte, rangeHdr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/"+name, nil)
	if err != nil {
		return err
	}
	wantStatus := http.StatusOK
	if rangeHdr != "" {
		req.Header.Set("Range", rangeHdr)
		wantStatus = http.StatusPartialContent
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s %s: %w", name, rangeHdr, err)
	}
	defer resp.Body.Close()
	cmp := &soakCompare{want: want}
	n, err := io.Copy(cmp, resp.Body)
	switch {
	case errors.Is(err, errSoakDiffers):
		return fmt.Errorf("GET %s %s: body differs from byte %d", name, rangeHdr, cmp.off)
	case err != nil:
		return fmt.Errorf("GET %s %s: %s, body after %d bytes: %w", name, rangeHdr, resp.Status, n, err)
	case resp.StatusCode != wantStatus:
		return fmt.Errorf("GET %s %s: %s, want %d", name, rangeHdr, resp.Status, wantStatus)
	case n != int64(len(want)):
		return fmt.Errorf("GET %s %s: %d bytes, want %d", name, rangeHdr, n, len(want))
	}
	return nil
}

var errSoakDiffers = errors.New("body differs")

// soakCompare checks a body against want as it streams in: no hashing of
// either side on the cores the soak is loading.
type soakCompare struct {
	want []byte
	off  int
}

func (c *soakCompare) Write(p []byte) (int, error) {
	if len(p) > len(c.want)-c.off || !bytes.Equal(p, c.want[c.off:c.off+len(p)]) {
		return 0, errSoakDiffers
	}
	c.off += len(p)
	return len(p), nil
}

// soakEnvDuration reads a duration from the environment, def if unset.
func soakEnvDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		t.Fatalf("%s=%q: want a duration such as 2m", name, v)
	}
	return d
}
