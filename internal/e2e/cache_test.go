package e2e

import (
	"bytes"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/fastfile/fschunk/internal/cache"
)

// TestCacheServesHotFiles: small files are fetched from the servers once,
// however many clients ask at the same time, then served from memory,
// byte-exact, ranges included; large files still stream.
func TestCacheServesHotFiles(t *testing.T) {
	files := map[string][]byte{"small/a.bin": randBytes(4096), "small/b.bin": randBytes(100_000), "big.bin": randBytes(3 << 20)}
	c := cache.New(1<<20, 512<<10)
	e := newEnv(t, files, envOpts{cache: c})
	for range 3 {
		e.addServer(nil)
	}
	e.waitHolders(3)

	// 40 clients at once on a cold file: one fetch.
	var wg sync.WaitGroup
	for range 40 {
		wg.Go(func() { e.get("small/a.bin") })
	}
	wg.Wait()
	if d := e.gw.Engine().Stats().Downloads; d != 1 {
		t.Fatalf("40 concurrent cold requests made %d fetches, want 1", d)
	}
	before := e.gw.Engine().Stats().Requests
	for range 20 {
		e.get("small/a.bin")
	}
	if r := e.gw.Engine().Stats().Requests; r != before {
		t.Fatalf("cached file sent %d READs", r-before)
	}
	// A range of a cached file.
	req, _ := http.NewRequest("GET", e.url("small/a.bin"), nil)
	req.Header.Set("Range", "bytes=100-199")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, files["small/a.bin"][100:200]) {
		t.Fatalf("range of a cached file: %s, %d bytes", resp.Status, len(body))
	}
	e.get("small/b.bin")
	e.get("big.bin") // above the object limit: streamed, not cached
	st := c.Stats()
	if st.Entries != 2 || st.Bytes != 4096+100_000 {
		t.Fatalf("cache holds %d entries, %d bytes; want the two small files", st.Entries, st.Bytes)
	}
	t.Logf("cache: %+v", st)
}

// TestCacheLateJoinerFetchesNothing: a client that missed the cache while
// another client's fetch of the same file was running, and asks only
// after that fetch ended (a loaded machine stretches this gap), is served
// from the cache, not by a second fetch.
func TestCacheLateJoinerFetchesNothing(t *testing.T) {
	data := randBytes(50_000)
	c := cache.New(1<<20, 512<<10)
	e := newEnv(t, map[string][]byte{"a.bin": data}, envOpts{cache: c})
	e.addServer(nil)
	e.waitHolders(1)
	src := e.gw.Source()
	f, ok := src.Lookup("a.bin")
	if !ok {
		t.Fatal("a.bin not in the pool")
	}
	ctx := t.Context()
	first, err := src.Open(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	late, err := src.Open(ctx, f) // misses the cache too: nothing fetched yet
	if err != nil {
		t.Fatal(err)
	}
	for i, ct := range []io.ReadCloser{first, late} {
		b, err := io.ReadAll(ct)
		ct.Close()
		if err != nil || !bytes.Equal(b, data) {
			t.Fatalf("reader %d: %d bytes, %v", i, len(b), err)
		}
	}
	if d := e.gw.Engine().Stats().Downloads; d != 1 {
		t.Fatalf("%d fetches for one file read by two clients in turn, want 1", d)
	}
}
