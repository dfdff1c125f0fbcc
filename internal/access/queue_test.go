package access

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestOverRateQueuedNotRefused: a client making more requests than its
// rate and its concurrency allow, as a download manager does, has them
// delayed and queued, never refused; it never has more than its share in
// progress at once.
func TestOverRateQueuedNotRefused(t *testing.T) {
	g, err := New(Config{Rate: 50, Burst: 5, MaxDelay: time.Minute, MaxRequestsPerClient: 4})
	if err != nil {
		t.Fatal(err)
	}
	var inProgress, most atomic.Int32
	h := g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inProgress.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		inProgress.Add(-1)
	}))
	var wg sync.WaitGroup
	codes := make([]int, 40)
	for i := range codes {
		wg.Go(func() {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("GET", "/f", nil)
			req.RemoteAddr = "192.0.2.7:1234"
			h.ServeHTTP(rec, req)
			codes[i] = rec.Code
		})
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusOK {
			t.Errorf("request %d: %d", i, c)
		}
	}
	if m := most.Load(); m > 4 {
		t.Errorf("%d requests in progress at once, cap 4", m)
	}
	st := g.Stats()
	if st.RateLimited != 0 || st.RateDelayed == 0 || st.Queued == 0 || st.ActiveClients != 0 {
		t.Errorf("stats %+v: want delays and queueing, no refusal, no client left", st)
	}
}

// TestOverMaxDelayRefused: beyond MaxDelay a request is refused, with a
// Retry-After from the bucket.
func TestOverMaxDelayRefused(t *testing.T) {
	clk := newFakeClock()
	g, err := New(Config{Rate: 1, Burst: 1, MaxDelay: 0, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	key := ClientKey(netip.MustParseAddr("192.0.2.8"))
	if ok, d := g.rates.take(key, clk.Now(), 1500*time.Millisecond); !ok || d != 0 {
		t.Fatalf("first: %v %v", ok, d)
	}
	if ok, d := g.rates.take(key, clk.Now(), 1500*time.Millisecond); !ok || d != time.Second {
		t.Fatalf("second: %v %v, want a 1 s delay", ok, d)
	}
	if ok, d := g.rates.take(key, clk.Now(), 1500*time.Millisecond); ok || retryAfter(d) != 2 {
		t.Fatalf("third: %v %v, want refused with 2 s to wait", ok, d)
	}
}
