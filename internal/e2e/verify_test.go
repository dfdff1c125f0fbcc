package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/catalog"
	"github.com/fastfile/fschunk/internal/demo"
	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/pool"
)

// Verified streaming (issue 11, "cross-server poisoning"): servers that
// serve other bytes under a content hash, by a bad disk or on purpose,
// get no wrong byte to a client.

// addServerAt starts a FastFileSrv over its own folder. noWatch servers
// see changes only by rescans (none within a test), so bytes changed
// behind their back are served under the old hash: bit rot, or a key
// holder lying on purpose.
func (e *env) addServerAt(root string, noWatch bool) *demo.Server {
	e.t.Helper()
	e.mu.Lock()
	name := fmt.Sprintf("srv%d", len(e.servers)+1)
	e.mu.Unlock()
	cfg := e.serverConfig(name)
	cfg.Root, cfg.Catalog = root, catalog.Options{NoWatch: noWatch, RescanInterval: time.Hour}
	s, err := demo.StartServer(context.Background(), cfg, name)
	if err != nil {
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.servers = append(e.servers, s)
	e.mu.Unlock()
	return s
}

// settle waits out the catalog's racy window (50 ms) after files were
// written, so that their first hash is final: a racy hash is redone, and
// the redo would see the corruption the test makes and announce it as a
// new version instead of serving it under the old hash.
func settle() { time.Sleep(100 * time.Millisecond) }

func writeAt(t *testing.T, root, p string, b []byte) string {
	t.Helper()
	full := filepath.Join(root, filepath.FromSlash(p))
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return full
}

// corrupt overwrites bytes of a file in place at n places, keeping its
// size and mtime.
func corrupt(t *testing.T, full string, n int, size int64) {
	t.Helper()
	fi, err := os.Stat(full)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(full, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		off := int64(i)*(size/int64(n)) + 4321
		if _, err := f.WriteAt([]byte("CORRUPTED!"), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(full, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
}

// getCount downloads url and returns how many bytes differ from want (a
// short or failed body counts its missing bytes), and the status.
func getCount(url string, want []byte) (wrong int, status int, err error) {
	resp, err := http.Get(url)
	if err != nil {
		return len(want), 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return 0, resp.StatusCode, err
	}
	for i := range min(len(body), len(want)) {
		if body[i] != want[i] {
			wrong++
		}
	}
	return wrong + max(len(body), len(want)) - min(len(body), len(want)), resp.StatusCode, err
}

// TestVerifyCorruptCopy is the target: three servers with their
// own copies of a 64 MiB file, one corrupted in place at 16 places with
// size and mtime kept after it was hashed. Every download is byte-exact;
// the server with the bad copy is blamed.
func TestVerifyCorruptCopy(t *testing.T) {
	size := 64 << 20
	downloads := 3
	if httpAbuseRace {
		// The race detector makes every byte cost ~10×; the same shape,
		// smaller, keeps the suite's time (the 64 MiB run is without it).
		size, downloads = 16<<20, 2
	}
	content := randBytes(size)
	e := newEnv(t, map[string][]byte{}, envOpts{})
	e.files = map[string][]byte{"big.bin": content}
	var bad string
	roots := make([]string, 3)
	for i := range roots {
		roots[i] = t.TempDir()
		full := writeAt(t, roots[i], "big.bin", content)
		if i == 2 {
			bad = full
		}
	}
	settle()
	for i, root := range roots {
		e.addServerAt(root, i == 2)
	}
	e.waitHolders(3)
	corrupt(t, bad, 16, int64(size))
	for i := range downloads {
		wrong, status, err := getCount(e.url("big.bin"), content)
		if wrong != 0 || status != 200 || err != nil {
			t.Fatalf("download %d: %d wrong bytes, status %d, %v\n%s", i, wrong, status, err, e.diagnose())
		}
	}
	st := e.gw.Engine().Stats()
	if st.Blamed == 0 || st.VerifyFailures == 0 {
		t.Fatalf("the bad copy was never caught (was it asked?): %+v", st)
	}
	t.Logf("verified %d bytes, %d bad leaves, %d verdicts, %d hash bytes (%.3f%% of the bytes)",
		st.VerifiedBytes, st.VerifyFailures, st.Blamed, st.HashBytes, 100*float64(st.HashBytes)/float64(st.BytesDelivered))
}

// TestVerifyRoguePath: a key holder announces a victim file's content
// hash (public: the ETag) under a path of its own and serves its own
// bytes. Readers are chosen by content hash across paths, so before
// verification its bytes went into downloads of the victim (522,188 wrong
// bytes of 4 MiB with 200 OK). Now: no wrong byte, the download completes
// from the honest holders, and the rogue is blamed, visible in
// /api/servers, and dropped after repeated verdicts.
func TestVerifyRoguePath(t *testing.T) {
	const size = 4 << 20
	victim := randBytes(size)
	e := newEnv(t, map[string][]byte{"victim.bin": victim}, envOpts{})
	e.addServer(nil)
	e.addServer(nil)
	rogueRoot := t.TempDir()
	full := writeAt(t, rogueRoot, "mine/innocent.bin", victim)
	settle()
	rogue := e.addServerAt(rogueRoot, true)
	e.waitHolders(2)
	e.waitFor("the rogue announces the victim's hash", func() bool {
		v := mustLookup(t, e, "victim.bin")
		_, ok := rogue.Catalog.Lookup(v.Hash)
		return ok && len(e.gw.Pool().Holders(v.Key())) == 3
	})
	// Its own bytes, same size and mtime: still announced under the hash.
	corrupt(t, full, 400, size)
	total := 0
	for i := range 6 {
		wrong, status, err := getCount(e.url("victim.bin"), victim)
		total += wrong
		if status != 200 || err != nil {
			t.Fatalf("download %d: status %d, %v\n%s", i, status, err, e.diagnose())
		}
	}
	if total != 0 {
		t.Fatalf("%d wrong bytes reached clients\n%s", total, e.diagnose())
	}
	if e.gw.Engine().Stats().Blamed == 0 {
		t.Fatal("the rogue was never caught")
	}
	blamed := 0
	for _, s := range e.gw.Pool().Servers() {
		blamed += s.Blamed
	}
	if blamed == 0 && e.gw.Stats().Evictions == 0 {
		t.Fatalf("no verdict visible in the pool and no eviction: %+v", e.gw.Pool().Servers())
	}
}

// TestVerifyLargerSizeAnnounce: a key holder announces the victim's hash
// with a larger size (under another path). Before, the gateway asked the
// honest holders for bytes beyond their end, they answered RANGE and it
// dropped their versions: the victim became unavailable. Now the two
// sizes are two versions, the honest holders are never asked for the
// larger one, and the victim stays served byte-exact.
func TestVerifyLargerSizeAnnounce(t *testing.T) {
	const size = 1 << 20
	victim := randBytes(size)
	e := newEnv(t, map[string][]byte{"victim.bin": victim}, envOpts{})
	e.addServer(nil)
	e.addServer(nil)
	e.addServerAt(t.TempDir(), false) // the liar: an empty folder
	e.waitHolders(2)
	f := mustLookup(t, e, "victim.bin")
	var liarID pool.ServerID
	e.waitFor("the liar registered", func() bool {
		for _, s := range e.gw.Pool().Servers() {
			if s.Files == 0 && s.CatalogGen != 0 {
				liarID = s.ID
				return true
			}
		}
		return false
	})
	// What a key holder's catalog can say: the victim's hash, a larger size.
	e.gw.Pool().ApplyDelta(liarID, 1<<40, []fschunk.Entry{{Path: "big.bin", Hash: f.Hash, Size: 8 * size, ModTime: time.Now()}},
		[]bool{false}, time.Now())
	resp, err := http.Get(e.url("big.bin"))
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if h := e.gw.Pool().Holders(pool.Key{Hash: f.Hash, Size: size}); len(h) != 2 {
		t.Fatalf("honest holders after the larger announce: %v", h)
	}
	if wrong, status, err := getCount(e.url("victim.bin"), victim); wrong != 0 || status != 200 || err != nil {
		t.Fatalf("victim: %d wrong bytes, status %d, %v", wrong, status, err)
	}
}

func mustLookup(t *testing.T, e *env, p string) pool.Version {
	t.Helper()
	f, ok := e.gw.Source().Lookup(p)
	if !ok {
		t.Fatalf("%s not in the pool", p)
	}
	return pool.Version{Hash: f.Hash, Size: f.Size, ModTime: f.ModTime}
}
