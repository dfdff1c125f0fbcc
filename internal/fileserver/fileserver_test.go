package fileserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/catalog"
	"github.com/fastfile/fschunk/internal/faultconn"
	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/hashtree"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout only bounds a failing test; nothing is measured against it.
const waitTimeout = 20 * time.Second

type testLogWriter struct{ tb testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.tb.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func testLogger(tb testing.TB) *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("FILESERVER_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testLogWriter{tb}, &slog.HandlerOptions{Level: level}))
}

func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func writeFile(tb testing.TB, dir, p string, content []byte) {
	tb.Helper()
	full := filepath.Join(dir, filepath.FromSlash(p))
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(full, content, 0o644); err != nil {
		tb.Fatal(err)
	}
}

func randomBytes(n int, seed uint64) []byte {
	r := mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

type fixtureOpts struct {
	files    map[string][]byte
	debounce time.Duration // catalog debounce; default 20 ms
	hb       time.Duration // gateway heartbeat interval; default 250 ms
	gwMaxDG  uint32        // gateway's WELCOME.MaxDatagram; default fschunk.DefaultDatagramSize
	limits   auth.Limits
	wrap     bool // wrap the server's socket with faultconn
	out, in  faultconn.Config
	// connWrap, if set, wraps the server's socket (after faultconn).
	connWrap func(net.PacketConn) net.PacketConn
	// extra are more test gateways (f.more); their names are given as
	// "localhost:port" so that name resolution is exercised too.
	extra int
	// logs, if set, also receives the server's log (at debug level).
	logs *logBuf
}

type fixture struct {
	t      *testing.T
	dir    string
	key    *auth.Key
	cat    *catalog.Catalog
	srv    *Server
	conn   net.PacketConn
	fc     *faultconn.Conn
	gw     *testGateway
	more   []*testGateway
	opts   fixtureOpts
	cancel context.CancelFunc
	runErr chan error
	ran    bool
}

func newFixture(t *testing.T, o fixtureOpts) *fixture {
	t.Helper()
	if o.debounce == 0 {
		o.debounce = 20 * time.Millisecond
	}
	if o.hb == 0 {
		o.hb = 250 * time.Millisecond
	}
	if o.gwMaxDG == 0 {
		o.gwMaxDG = fschunk.DefaultDatagramSize
	}
	f := &fixture{t: t, dir: t.TempDir(), opts: o, runErr: make(chan error, 1)}
	for p, c := range o.files {
		writeFile(t, f.dir, p, c)
	}
	var err error
	f.cat, err = catalog.Open(f.dir, catalog.Options{Debounce: o.debounce, RescanInterval: time.Hour, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	catCtx, catCancel := context.WithCancel(context.Background())
	catDone := make(chan struct{})
	go func() {
		defer close(catDone)
		_ = f.cat.Run(catCtx)
	}()
	select {
	case <-f.cat.Ready():
	case <-time.After(waitTimeout):
		t.Fatal("catalog not ready")
	}

	f.key, err = auth.NewKey(bytes.Repeat([]byte("k"), 32))
	if err != nil {
		t.Fatal(err)
	}
	f.gw = startTestGateway(t, f.key, "127.0.0.1:0", o.hb, o.gwMaxDG, o.limits.WithDefaults())
	names := []string{f.gw.addr()}
	for range o.extra {
		g := startTestGateway(t, f.key, "127.0.0.1:0", o.hb, o.gwMaxDG, o.limits.WithDefaults())
		f.more = append(f.more, g)
		names = append(names, net.JoinHostPort("localhost", fmt.Sprint(g.conn.LocalAddr().(*net.UDPAddr).Port)))
	}
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = udp.SetReadBuffer(4 << 20)
	_ = udp.SetWriteBuffer(4 << 20)
	f.conn = udp
	if o.wrap {
		f.fc = faultconn.Wrap(udp, o.out, o.in)
		f.conn = f.fc
	}
	if o.connWrap != nil {
		f.conn = o.connWrap(f.conn)
	}
	log := testLogger(t)
	if o.logs != nil {
		log = slog.New(slog.NewTextHandler(io.MultiWriter(testLogWriter{t}, o.logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	f.srv, err = New(Config{
		Gateways:    names,
		Conn:        f.conn,
		Key:         f.key,
		Static:      srvStatic,
		GatewayKeys: []auth.PublicKey{tgStatic.Public()},
		Catalog:     f.cat,
		Logger:      log,
		Limits:      o.limits,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	f.ran = true
	go func() { f.runErr <- f.srv.Run(ctx) }()

	t.Cleanup(func() {
		f.stop()
		f.conn.Close()
		f.gw.close()
		for _, g := range f.more {
			g.close()
		}
		catCancel()
		<-catDone
		f.cat.Close()
	})
	return f
}

// stop cancels Run and waits for it; Run must return nil.
func (f *fixture) stop() {
	f.t.Helper()
	if !f.ran {
		return
	}
	f.ran = false
	f.cancel()
	select {
	case err := <-f.runErr:
		if err != nil {
			f.t.Errorf("Run: %v", err)
		}
	case <-time.After(waitTimeout):
		f.t.Fatal("Run did not return after cancel")
	}
}

// wantFiles is the server's current catalog in wire form.
func (f *fixture) wantFiles() (uint64, map[string]fschunk.Entry) {
	gen, entries := f.cat.Snapshot()
	m := make(map[string]fschunk.Entry, len(entries))
	for _, e := range entries {
		m[e.Path] = fschunk.Entry{Hash: e.Hash, Size: e.Size, ModTime: e.ModTime.UTC(), Path: e.Path}
	}
	return gen, m
}

func sameFiles(a, b map[string]fschunk.Entry) bool {
	if len(a) != len(b) {
		return false
	}
	for p, x := range a {
		y, ok := b[p]
		if !ok || x.Hash != y.Hash || x.Size != y.Size || x.ModTime.UnixNano() != y.ModTime.UnixNano() || x.Path != y.Path {
			return false
		}
	}
	return true
}

// synced reports whether gw holds exactly the server's current catalog.
func (f *fixture) synced(gw *testGateway) bool {
	gen, want := f.wantFiles()
	in := gw.info()
	return in.present && in.gen == gen && sameFiles(in.files, want)
}

func (f *fixture) waitSynced(gw *testGateway) {
	f.t.Helper()
	eventually(f.t, "the gateway to hold the server's catalog", func() bool { return f.synced(gw) })
}

func (f *fixture) hashOf(p string) [32]byte {
	_, m := f.wantFiles()
	e, ok := m[p]
	if !ok {
		f.t.Fatalf("%s not in catalog", p)
	}
	return e.Hash
}

func (f *fixture) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	f.t.Cleanup(cancel)
	return ctx
}

func codeOf(err error) fschunk.Code {
	var e *fschunk.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// ---------------------------------------------------------------- tests

func TestNewValidates(t *testing.T) {
	key, _ := auth.NewKey(bytes.Repeat([]byte("k"), 32))
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cat, err := catalog.Open(t.TempDir(), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	good := Config{Gateways: []string{"127.0.0.1:9"}, Conn: conn, Key: key, Static: srvStatic, GatewayKeys: []auth.PublicKey{tgStatic.Public()}, Catalog: cat}
	if _, err := New(good); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for name, mut := range map[string]func(*Config){
		"no gateways":   func(c *Config) { c.Gateways = nil },
		"bad gateway":   func(c *Config) { c.Gateways = []string{"nohostport"} },
		"no port":       func(c *Config) { c.Gateways = []string{"host:"} },
		"nil conn":      func(c *Config) { c.Conn = nil },
		"nil key":       func(c *Config) { c.Key = nil },
		"no static key": func(c *Config) { c.Static = auth.StaticKey{} },
		"no gw key":     func(c *Config) { c.GatewayKeys = nil },
		"many gw keys":  func(c *Config) { c.GatewayKeys = make([]auth.PublicKey, auth.MaxGatewayKeys+1) },
		"nil catalog":   func(c *Config) { c.Catalog = nil },
		"tiny datagram": func(c *Config) { c.MaxDatagram = 500 },
		"huge datagram": func(c *Config) { c.MaxDatagram = 70000 },
	} {
		c := good
		mut(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}

func TestRegistrationAndCatalog(t *testing.T) {
	files := map[string][]byte{}
	for i := range 150 {
		files[fmt.Sprintf("dir%02d/a-rather-long-file-name-to-fill-pages-%04d.bin", i%7, i)] = []byte(fmt.Sprintf("content %d", i))
	}
	files["top.txt"] = []byte("top")
	files["empty"] = nil
	// The smallest datagram a gateway may ask for makes the catalog span
	// many pages.
	f := newFixture(t, fixtureOpts{files: files, gwMaxDG: fschunk.MinDatagramSize})
	f.waitSynced(f.gw)

	in := f.gw.info()
	if in.joins != 1 || in.fulls != 1 || in.deltas != 0 {
		t.Errorf("joins %d, full catalogs %d, deltas %d; want 1, 1, 0", in.joins, in.fulls, in.deltas)
	}
	if f.srv.Connected() != 1 {
		t.Errorf("Connected() = %d, want 1", f.srv.Connected())
	}
	// The gateway holds the catalog before the server has seen the last
	// acknowledgement.
	eventually(t, "the server to count the sync", func() bool { return f.srv.Stats().CatalogSyncs >= 1 })
	if st := f.srv.Stats(); st.Handshakes < 1 || st.CatalogPagesSent < 10 {
		t.Errorf("stats: %+v", st)
	}
	gen, want := f.wantFiles()
	eventually(t, "a heartbeat announcing the current catalog", func() bool {
		hb := f.gw.info().lastHB
		return hb.CatalogGen == gen && int(hb.Files) == len(want)
	})

	e, err := f.gw.meta(f.ctx(), "top.txt")
	if err != nil {
		t.Fatalf("META top.txt: %v", err)
	}
	if w := want["top.txt"]; e.Hash != w.Hash || e.Size != 3 || !e.ModTime.Equal(w.ModTime) {
		t.Errorf("META top.txt = %+v, want %+v", e, w)
	}
	if _, err := f.gw.meta(f.ctx(), "no/such/file"); codeOf(err) != fschunk.CodeNotFound {
		t.Errorf("META of a missing path: %v, want NOT_FOUND", err)
	}
}

func TestEmptyCatalogAnnounced(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	f.waitSynced(f.gw)
	in := f.gw.info()
	if in.gen == 0 || len(in.files) != 0 || in.fulls != 1 {
		t.Errorf("gateway holds gen %d with %d files after %d catalogs; want gen ≥ 1, 0 files, 1 catalog", in.gen, len(in.files), in.fulls)
	}
}

func TestCatalogDelta(t *testing.T) {
	f := newFixture(t, fixtureOpts{files: map[string][]byte{
		"a.txt":     []byte("version one"),
		"b.txt":     []byte("bee"),
		"sub/c.txt": []byte("sea"),
	}})
	f.waitSynced(f.gw)
	gen0 := f.gw.info().gen

	start := time.Now()
	writeFile(t, f.dir, "new/d.txt", []byte("a file added after registration"))
	writeFile(t, f.dir, "a.txt", []byte("version two, longer"))
	if err := os.Remove(filepath.Join(f.dir, "b.txt")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the changes to reach the gateway", func() bool {
		gen, want := f.wantFiles()
		_, hasD := want["new/d.txt"]
		_, hasB := want["b.txt"]
		return gen > gen0 && hasD && !hasB && f.synced(f.gw)
	})
	t.Logf("changes reached the gateway after %v", time.Since(start))
	in := f.gw.info()
	if in.deltas < 1 || in.fulls != 1 {
		t.Errorf("deltas %d, full catalogs %d; want the changes sent as deltas", in.deltas, in.fulls)
	}
	if in.files["a.txt"].Hash != rootOf([]byte("version two, longer")) {
		t.Errorf("a.txt has the old hash at the gateway")
	}
}

func TestReadExact(t *testing.T) {
	big := randomBytes(300_000, 1)
	f := newFixture(t, fixtureOpts{files: map[string][]byte{"big.bin": big, "small.txt": []byte("hello, world")}})
	f.waitSynced(f.gw)
	h := f.hashOf("big.bin")
	ranges := []fschunk.Range{
		{Offset: 0, Length: 1000},
		{Offset: 5000, Length: 100_000},
		{Offset: 299_000, Length: 1000}, // ends exactly at EOF
		{Offset: 123_457, Length: 1},
	}
	for _, dg := range []uint16{fschunk.MinDatagramSize, fschunk.DefaultDatagramSize, fschunk.LoopbackDatagramSize} {
		got, _, err := f.gw.read(f.ctx(), h, ranges, dg)
		if err != nil {
			t.Fatalf("datagram %d: %v", dg, err)
		}
		for i, r := range ranges {
			if !bytes.Equal(got[i], big[r.Offset:r.Offset+int64(r.Length)]) {
				t.Errorf("datagram %d: range %d (%d+%d) differs", dg, i, r.Offset, r.Length)
			}
		}
	}
	got, _, err := f.gw.read(f.ctx(), f.hashOf("small.txt"), []fschunk.Range{{Offset: 7, Length: 5}}, fschunk.DefaultDatagramSize)
	if err != nil || string(got[0]) != "world" {
		t.Errorf("small read: %q, %v", got, err)
	}

	// Errors.
	if _, n, err := f.gw.read(f.ctx(), sha256.Sum256([]byte("nothing")), []fschunk.Range{{Offset: 0, Length: 10}}, fschunk.DefaultDatagramSize); codeOf(err) != fschunk.CodeNotFound || n != 0 {
		t.Errorf("unknown hash: %v (%d DATA), want NOT_FOUND", err, n)
	}
	for _, r := range []fschunk.Range{{Offset: 299_990, Length: 20}, {Offset: 400_000, Length: 1}} {
		if _, n, err := f.gw.read(f.ctx(), h, []fschunk.Range{{Offset: 0, Length: 10}, r}, fschunk.DefaultDatagramSize); codeOf(err) != fschunk.CodeRange || n != 0 {
			t.Errorf("range %d+%d beyond EOF: %v (%d DATA), want RANGE and no data", r.Offset, r.Length, err, n)
		}
	}
	// Counted after the send: the gateway may have its answer first.
	eventually(t, "the stats to count the reads and errors", func() bool {
		st := f.srv.Stats()
		return st.ErrorsSent[fschunk.CodeNotFound] >= 1 && st.ErrorsSent[fschunk.CodeRange] >= 2 && st.ReadsServed >= 4
	})
}

func TestReadWithLoss(t *testing.T) {
	big := randomBytes(400_000, 2)
	f := newFixture(t, fixtureOpts{
		files: map[string][]byte{"big.bin": big},
		wrap:  true,
		out:   faultconn.Config{Loss: 0.1, Reorder: 0.05, Seed: 1},
		in:    faultconn.Config{Loss: 0.05, Seed: 2},
	})
	f.waitSynced(f.gw)
	ranges := []fschunk.Range{{Offset: 0, Length: 150_000}, {Offset: 200_000, Length: 199_999}, {Offset: 399_999, Length: 1}}
	got, _, err := f.gw.read(f.ctx(), f.hashOf("big.bin"), ranges, fschunk.DefaultDatagramSize)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range ranges {
		if !bytes.Equal(got[i], big[r.Offset:r.Offset+int64(r.Length)]) {
			t.Errorf("range %d differs", i)
		}
	}
	if st := f.fc.Stats(); st.Dropped == 0 {
		t.Errorf("faultconn dropped nothing: %+v", st)
	}
}

func TestReadStale(t *testing.T) {
	// A long debounce keeps the catalog from publishing the change before
	// the READs: the server must notice it by itself.
	f := newFixture(t, fixtureOpts{
		debounce: time.Minute,
		files: map[string][]byte{
			"read-then-changed.txt": []byte("old content of the first file"),
			"changed-unread.txt":    []byte("old content of the second file"),
		},
	})
	f.waitSynced(f.gw)
	h1, h2 := f.hashOf("read-then-changed.txt"), f.hashOf("changed-unread.txt")
	rg := []fschunk.Range{{Offset: 0, Length: 10}}
	if _, _, err := f.gw.read(f.ctx(), h1, rg, fschunk.DefaultDatagramSize); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	for _, p := range []string{"read-then-changed.txt", "changed-unread.txt"} {
		writeFile(t, f.dir, p, []byte("NEW CONTENT THAT MUST NEVER BE SERVED"))
		if err := os.Chtimes(filepath.Join(f.dir, p), later, later); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range [][32]byte{h1, h2} {
		_, n, err := f.gw.read(f.ctx(), h, rg, fschunk.DefaultDatagramSize)
		if codeOf(err) != fschunk.CodeStale || n != 0 {
			t.Errorf("READ of a changed file: %v (%d DATA), want STALE and no data", err, n)
		}
	}
}

func TestBusy(t *testing.T) {
	f := newFixture(t, fixtureOpts{files: map[string][]byte{"x": []byte("xyz")}})
	f.waitSynced(f.gw)
	h := f.hashOf("x")
	rg := []fschunk.Range{{Offset: 0, Length: 3}}
	// Occupy every worker slot, as MaxReads READs in progress would.
	f.srv.active.Add(int64(f.srv.maxReads))
	_, _, err := f.gw.read(f.ctx(), h, rg, fschunk.DefaultDatagramSize)
	f.srv.active.Add(-int64(f.srv.maxReads))
	if codeOf(err) != fschunk.CodeBusy {
		t.Errorf("READ with all workers busy: %v, want BUSY", err)
	}
	if got, _, err := f.gw.read(f.ctx(), h, rg, fschunk.DefaultDatagramSize); err != nil || string(got[0]) != "xyz" {
		t.Errorf("READ after: %q, %v", got, err)
	}
}

func TestGatewayRestart(t *testing.T) {
	f := newFixture(t, fixtureOpts{files: map[string][]byte{"a": []byte("1"), "b": []byte("2")}})
	f.waitSynced(f.gw)
	old := f.gw.info()
	addr := f.gw.addr()

	f.gw.close()
	restarted := time.Now()
	f.gw = startTestGateway(t, f.key, addr, f.opts.hb, f.opts.gwMaxDG, auth.DefaultLimits)
	eventually(t, "the server to register with the restarted gateway", func() bool { return f.gw.info().present })
	t.Logf("re-registered %v after the restart (heartbeat interval %v)", time.Since(restarted), f.opts.hb)
	f.waitSynced(f.gw)
	in := f.gw.info()
	if in.instance != old.instance || in.fulls != 1 {
		t.Errorf("instance %x (was %x), full catalogs %d", in.instance, old.instance, in.fulls)
	}
	eventually(t, "the restart to be counted", func() bool {
		st := f.srv.Stats()
		return st.GatewayRestarts >= 1 && st.Reregistrations >= 1
	})
	if got, _, err := f.gw.read(f.ctx(), f.hashOf("a"), []fschunk.Range{{Offset: 0, Length: 1}}, fschunk.DefaultDatagramSize); err != nil || string(got[0]) != "1" {
		t.Errorf("read after restart: %q, %v", got, err)
	}
}

func TestGatewayGoodbye(t *testing.T) {
	logs := &logBuf{}
	f := newFixture(t, fixtureOpts{files: map[string][]byte{"a": []byte("1")}, logs: logs})
	f.waitSynced(f.gw)
	f.gw.goodbye()
	eventually(t, "the server to register again and re-announce its catalog", func() bool {
		in := f.gw.info()
		return in.joins >= 2 && in.fulls >= 2 && f.synced(f.gw)
	})
	st := f.srv.Stats()
	if st.GoodbyesReceived != 1 || st.Reregistrations < 1 {
		t.Errorf("goodbyes %d, re-registrations %d", st.GoodbyesReceived, st.Reregistrations)
	}
	// The reason in words, not "reason=0".
	if logs.count("gateway said goodbye", "reason=shutdown") != 1 {
		t.Errorf("goodbye not logged with its reason in words:\n%s", logs)
	}
}

// TestGatewayRevokes: a server the gateway revokes says so in its log, as
// a warning naming its public key, rather than as a gateway shutdown.
func TestGatewayRevokes(t *testing.T) {
	logs := &logBuf{}
	f := newFixture(t, fixtureOpts{files: map[string][]byte{"a": []byte("1")}, logs: logs})
	f.waitSynced(f.gw)
	f.gw.goodbyeFor(fschunk.GoodbyeRevoked)
	eventually(t, "the revocation logged", func() bool { return logs.count("the gateway revoked this server", "public_key=") == 1 })
	if logs.count("gateway said goodbye") != 0 {
		t.Errorf("revocation not logged as such:\n%s", logs)
	}
}

func TestGoodbyeOnShutdown(t *testing.T) {
	f := newFixture(t, fixtureOpts{files: map[string][]byte{"a": []byte("1")}})
	f.waitSynced(f.gw)
	f.stop()
	eventually(t, "GOODBYE at the gateway", func() bool {
		bs := f.gw.info().goodbyes
		return len(bs) > 0 && bs[0] == fschunk.GoodbyeShutdown
	})
	if n := f.srv.Connected(); n != 1 {
		t.Errorf("Connected() after Run = %d", n)
	}
}

func TestRekey(t *testing.T) {
	lim := auth.Limits{
		RekeyAfterTime:      400 * time.Millisecond,
		RejectAfterTime:     1200 * time.Millisecond,
		RekeyAfterMessages:  fschunk.RekeyAfterMessages,
		RejectAfterMessages: fschunk.RejectAfterMessages,
	}
	f := newFixture(t, fixtureOpts{files: map[string][]byte{"a": []byte("abc")}, limits: lim})
	f.waitSynced(f.gw)
	eventually(t, "two rekeys", func() bool { return f.srv.Stats().Rekeys >= 2 })
	if got, _, err := f.gw.read(f.ctx(), f.hashOf("a"), []fschunk.Range{{Offset: 0, Length: 3}}, fschunk.DefaultDatagramSize); err != nil || string(got[0]) != "abc" {
		t.Errorf("read after rekeys: %q, %v", got, err)
	}
	st := f.srv.Stats()
	if st.Sessions > 2 || st.Connected != 1 {
		t.Errorf("sessions %d (want at most current and previous), connected %d", st.Sessions, st.Connected)
	}
	if in := f.gw.info(); in.fulls != 1 {
		t.Errorf("a rekey resent the catalog: %d full catalogs", in.fulls)
	}
}

// TestHostileDatagrams sends garbage, truncated, bit-flipped, replayed and
// forged datagrams from another socket: none may change anything or get an
// answer.
func TestHostileDatagrams(t *testing.T) {
	// A long heartbeat interval keeps scheduling hiccups from causing
	// re-registrations that would blur the "nothing changed" check.
	f := newFixture(t, fixtureOpts{files: map[string][]byte{"a": []byte("abcdef")}, hb: time.Second})
	f.waitSynced(f.gw)
	h := f.hashOf("a")
	rg := []fschunk.Range{{Offset: 0, Length: 6}}
	if _, _, err := f.gw.read(f.ctx(), h, rg, fschunk.DefaultDatagramSize); err != nil {
		t.Fatal(err)
	}
	captured := f.gw.sentCopies()
	if len(captured) == 0 {
		t.Fatal("nothing captured")
	}
	before, gwBefore := f.srv.Stats(), f.gw.info()

	rogue, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Close()
	dst := f.conn.LocalAddr().(*net.UDPAddr)
	send := func(b []byte) {
		if _, err := rogue.WriteToUDP(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	r := mrand.New(mrand.NewPCG(7, 7))
	// Garbage of every length class.
	for i := range 200 {
		b := make([]byte, r.IntN(200))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		if i%2 == 0 && len(b) > 1 {
			b[0] = fschunk.Version // get past the version check sometimes
		}
		send(b)
	}
	// A HELLO and an AUTH: a server never receives those.
	send(make([]byte, fschunk.HelloSize))
	for _, c := range captured {
		// Truncated.
		for _, n := range []int{1, 3, 4, 15, 16, 31, len(c) - 1} {
			if n < len(c) && n > 0 {
				send(c[:n])
			}
		}
		// Bit-flipped, in the prefix, the receiver, the counter and the body.
		for _, bit := range []int{1, 33, 70, 8 * (len(c) - 1), 8*fschunk.HeaderSize + 3} {
			if bit/8 >= len(c) {
				continue
			}
			b := bytes.Clone(c)
			b[bit/8] ^= 1 << (bit % 8)
			send(b)
		}
		// Replayed verbatim.
		send(c)
	}
	// Forged: a session under another key, aimed at the server's real
	// session index, and a CHALLENGE under another key.
	wrong, _ := auth.NewKey(bytes.Repeat([]byte("w"), 32))
	in := mustInitiator(t, wrong, 42)
	resp := mustResponder(t, wrong, auth.DefaultLimits)
	from := netip.MustParseAddrPort("127.0.0.1:1")
	chal, err := resp.HandleHello(in.Hello(nil), from, nil)
	if err != nil {
		t.Fatal(err)
	}
	send(chal)
	am, err := in.HandleChallenge(chal, nil)
	if err != nil {
		t.Fatal(err)
	}
	acc, err := resp.HandleAuth(am, from, nil)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := acc.NewSession(1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	forged.RemoteIndex = gwBefore.serverIdx
	// Move past the counters the real gateway used, so that the replay
	// window does not reject the forgeries before their tag is checked.
	for range 1000 {
		if _, err := forged.Seal(fschunk.AppendHeader(nil, fschunk.Header{Type: fschunk.TypeRead}), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		pkt := fschunk.AppendHeader(nil, fschunk.Header{Type: fschunk.TypeRead})
		rd := fschunk.Read{ID: uint32(1000 + i), Hash: h, MaxDatagram: fschunk.DefaultDatagramSize, Ranges: rg}
		pkt = rd.Append(pkt)
		out, err := forged.Seal(pkt, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		send(out)
	}

	d0 := before.Dropped
	eventually(t, "drops of every cause to be counted", func() bool {
		d1 := f.srv.Stats().Dropped
		return d1.Garbage > d0.Garbage && d1.AuthFailure > d0.AuthFailure && d1.Replay > d0.Replay && d1.UnknownSession > d0.UnknownSession
	})
	// Everything was processed: no answer to any of it may have come.
	_ = rogue.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 65536)
	if n, _, err := rogue.ReadFromUDP(buf); err == nil {
		t.Errorf("the server answered a hostile datagram (%d bytes)", n)
	}
	after := f.srv.Stats()
	d1 := after.Dropped
	if after.Handshakes != before.Handshakes || after.Reregistrations != before.Reregistrations || after.Connected != 1 {
		t.Errorf("state changed: handshakes %d→%d, re-registrations %d→%d, connected %d",
			before.Handshakes, after.Handshakes, before.Reregistrations, after.Reregistrations, after.Connected)
	}
	if in := f.gw.info(); in.joins != gwBefore.joins || in.addr != gwBefore.addr {
		t.Errorf("gateway view changed: joins %d→%d, addr %v→%v", gwBefore.joins, in.joins, gwBefore.addr, in.addr)
	}
	// Still serving, and to the real gateway.
	got, _, err := f.gw.read(f.ctx(), h, rg, fschunk.DefaultDatagramSize)
	if err != nil || string(got[0]) != "abcdef" {
		t.Errorf("read after the attack: %q, %v", got, err)
	}
	t.Logf("drops: %+v", d1)
}

func TestSeveralGateways(t *testing.T) {
	f := newFixture(t, fixtureOpts{files: map[string][]byte{"a": []byte("shared")}, extra: 2})
	all := append([]*testGateway{f.gw}, f.more...)
	for _, g := range all {
		f.waitSynced(g)
	}
	if n := f.srv.Connected(); n != 3 {
		t.Errorf("Connected() = %d, want 3", n)
	}
	h := f.hashOf("a")
	for i, g := range all {
		got, _, err := g.read(f.ctx(), h, []fschunk.Range{{Offset: 0, Length: 6}}, fschunk.DefaultDatagramSize)
		if err != nil || string(got[0]) != "shared" {
			t.Errorf("gateway %d: %q, %v", i, got, err)
		}
	}
	// One gateway going away does not disturb the others.
	f.more[0].goodbye()
	writeFile(t, f.dir, "b", []byte("later"))
	eventually(t, "the new file at every gateway", func() bool {
		for _, g := range all {
			if _, ok := g.info().files["b"]; !ok || !f.synced(g) {
				return false
			}
		}
		return true
	})
}

func TestDeltaResync(t *testing.T) {
	f := newFixture(t, fixtureOpts{files: map[string][]byte{"a": []byte("1")}})
	f.waitSynced(f.gw)
	f.gw.mu.Lock()
	f.gw.refuseDeltas = true
	f.gw.mu.Unlock()
	writeFile(t, f.dir, "b", []byte("2"))
	eventually(t, "the change to arrive as a full catalog after RESYNC", func() bool {
		_, ok := f.gw.info().files["b"]
		return ok && f.synced(f.gw)
	})
	if in := f.gw.info(); in.resyncs < 1 || in.fulls < 2 || in.deltas != 0 {
		t.Errorf("resyncs %d, full catalogs %d, deltas %d", in.resyncs, in.fulls, in.deltas)
	}
}

// TestServeReadAllocs checks that the data path does not allocate per
// datagram: one READ of a megabyte is some 730 datagrams.
func TestServeReadAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	f := newFixture(t, fixtureOpts{files: map[string][]byte{"big": randomBytes(1<<20, 3)}})
	f.waitSynced(f.gw)
	g := f.srv.gateways[0]
	r := fschunk.Read{ID: 4242, Hash: f.hashOf("big"), MaxDatagram: fschunk.DefaultDatagramSize, Ranges: []fschunk.Range{{Offset: 0, Length: 1 << 20}}}
	before := f.srv.Stats().DataSent
	allocs := testing.AllocsPerRun(5, func() { f.srv.serveRead(context.Background(), g, &r) })
	perRead := (f.srv.Stats().DataSent - before) / 6
	t.Logf("%.0f allocations per READ of %d datagrams", allocs, perRead)
	if perRead < 700 {
		t.Fatalf("only %d datagrams per READ", perRead)
	}
	if allocs > 50 {
		t.Errorf("%.0f allocations per READ of %d datagrams: the data path allocates per datagram", allocs, perRead)
	}
}

func TestUnsupportedType(t *testing.T) {
	f := newFixture(t, fixtureOpts{files: map[string][]byte{"a": []byte("1")}})
	f.waitSynced(f.gw)
	ch := f.gw.listen(0)
	f.gw.sendRaw(fschunk.Type(0x7e), []byte("a message from a later protocol version"))
	select {
	case m := <-ch:
		if m.typ != fschunk.TypeError || m.err.Code != fschunk.CodeUnsupported || m.err.ID != 0 {
			t.Errorf("answer to an unknown type: %+v", m)
		}
	case <-time.After(waitTimeout):
		t.Fatal("no answer to an unknown type")
	}
	// A message only servers send is authentic but makes no sense here:
	// dropped without an answer.
	before := f.srv.Stats().Dropped.Unexpected
	d := fschunk.Data{ID: 0, Offset: 0, Payload: []byte("x")}
	f.gw.sendRaw(fschunk.TypeData, d.Append(nil))
	eventually(t, "the unexpected DATA to be counted", func() bool { return f.srv.Stats().Dropped.Unexpected > before })
	select {
	case m := <-ch:
		t.Errorf("the server answered a DATA: %+v", m)
	case <-time.After(200 * time.Millisecond):
	}
}

// refusingConn refuses one large write (a DATA datagram) the way a local
// firewall drop does: sendto fails with EPERM.
type refusingConn struct {
	net.PacketConn
	n      atomic.Int32
	refuse int32
}

func (c *refusingConn) WriteTo(p []byte, a net.Addr) (int, error) {
	if len(p) > 1000 && c.n.Add(1) == c.refuse {
		return 0, &net.OpError{Op: "write", Net: "udp", Err: syscall.EPERM}
	}
	return c.PacketConn.WriteTo(p, a)
}

// TestReadSurvivesRefusedWrite: a datagram the socket refuses is lost like
// one lost on the wire; the rest of the read is still sent (it used to
// abandon the read, which turned 2 % loss into a third of the throughput).
func TestReadSurvivesRefusedWrite(t *testing.T) {
	const size = 100_000
	rc := &refusingConn{refuse: 3}
	f := newFixture(t, fixtureOpts{
		files:    map[string][]byte{"big.bin": randomBytes(size, 3)},
		connWrap: func(pc net.PacketConn) net.PacketConn { rc.PacketConn = pc; return rc },
	})
	f.waitSynced(f.gw)
	id, ch := f.gw.register()
	defer f.gw.unregister(id)
	f.gw.mu.Lock()
	f.gw.sendLocked(fschunk.TypeRead, &fschunk.Read{ID: id, Hash: f.hashOf("big.bin"), MaxDatagram: fschunk.DefaultDatagramSize,
		Ranges: []fschunk.Range{{Offset: 0, Length: size}}})
	f.gw.mu.Unlock()
	seg := fschunk.DefaultDatagramSize - fschunk.DataOverhead
	want := (size+seg-1)/seg - 1 // all but the refused one
	deadline := time.After(waitTimeout)
	for got := 0; got < want; {
		select {
		case m := <-ch:
			if m.typ == fschunk.TypeData {
				got++
			}
		case <-deadline:
			t.Fatalf("got %d DATA of %d after a refused write", got, want)
		}
	}
	if st := f.srv.Stats(); st.SendErrors != 1 {
		t.Errorf("send errors %d, want 1", st.SendErrors)
	}
}

// rootOf is a content hash: the root of the content's hash tree.
func rootOf(b []byte) [32]byte {
	t := hashtree.NewBuilder()
	t.Write(b)
	return t.Tree().Root
}
