package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/cache"
	"github.com/fastfile/fschunk/internal/demo"
	"github.com/fastfile/fschunk/internal/fetch"
	"github.com/fastfile/fschunk/internal/gateway"
	"github.com/fastfile/fschunk/internal/httpfront"
	"github.com/fastfile/fschunk/internal/transport"
)

// env is one system under test.
type env struct {
	t       *testing.T
	key     *auth.Key
	gwKey   auth.StaticKey  // the gateway's key pair
	allowed gateway.Allowed // the servers' keys the gateway admits; under mu
	// linked are other gateways (their own key pairs) that the servers
	// started here also talk to, and that admit them too.
	linked  []*env
	root    string
	files   map[string][]byte
	udp     string // gateway UDP address
	gw      *gateway.Gateway
	gwStop  func()
	web     *httptest.Server
	mu      sync.Mutex
	servers []*demo.Server
	log     *slog.Logger
}

type envOpts struct {
	gwWrap   func(net.PacketConn) net.PacketConn
	fetch    fetch.Config
	datagram int
	cache    *cache.Cache
	front    httpfront.Options // Logger is set by startGateway
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("E2E_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newEnv(t *testing.T, files map[string][]byte, o envOpts) *env {
	t.Helper()
	key, root := newTestKey(t), writeFiles(t, files)
	e := &env{t: t, key: key, gwKey: auth.GenerateStaticKey(), allowed: gateway.Allowed{}, root: root, files: files, log: testLogger(t)}
	e.startGateway(o, "127.0.0.1:0")
	t.Cleanup(e.close)
	return e
}

func (e *env) startGateway(o envOpts, addr string) {
	e.t.Helper()
	uc, err := transport.Listen(context.Background(), addr)
	if err != nil {
		e.t.Fatal(err)
	}
	var conn net.PacketConn = uc
	if o.gwWrap != nil {
		conn = o.gwWrap(uc)
	}
	e.mu.Lock()
	allowed := maps.Clone(e.allowed)
	e.mu.Unlock()
	gw, err := gateway.New(gateway.Config{Conn: conn, Key: e.key, Static: e.gwKey, Allowed: allowed, Logger: e.log.With("side", "gw"), DatagramSize: o.datagram,
		Fetch: o.fetch, Cache: o.cache,
		StartGrace: -1, // the tests ask for missing paths at once and want their 404
	})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); gw.Run(ctx) }()
	e.udp = uc.LocalAddr().String()
	e.gw = gw
	e.gwStop = func() { cancel(); <-done; conn.Close() }
	fo := o.front
	fo.Logger = e.log
	h := httpfront.NewHandler(gw.Source(), fo)
	if e.web == nil {
		e.web = httptest.NewServer(h)
	} else {
		e.web.Config.Handler = h
	}
}

func (e *env) close() {
	e.mu.Lock()
	servers := e.servers
	e.servers = nil
	e.mu.Unlock()
	for i, s := range servers {
		if err := s.Stop(); err != nil {
			e.t.Errorf("server %d: %v", i+1, err)
		}
	}
	if e.web != nil {
		e.web.Close()
	}
	e.gwStop()
}

// addServer starts a FastFileSrv over the shared root.
func (e *env) addServer(wrap func(net.PacketConn) net.PacketConn) *demo.Server {
	e.t.Helper()
	e.mu.Lock()
	name := fmt.Sprintf("srv%d", len(e.servers)+1)
	e.mu.Unlock()
	cfg := e.serverConfig(name)
	cfg.Wrap = wrap
	s, err := demo.StartServer(context.Background(), cfg, name)
	if err != nil {
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.servers = append(e.servers, s)
	e.mu.Unlock()
	return s
}

// serverConfig is the configuration of a server called name over the
// shared root: a key pair of its own, which the gateway is told to admit.
func (e *env) serverConfig(name string) demo.ServerConfig {
	k := auth.GenerateStaticKey()
	e.allow(k.Public(), name)
	gws := []auth.PublicKey{e.gwKey.Public()}
	for _, l := range e.linked {
		l.allow(k.Public(), name)
		gws = append(gws, l.gwKey.Public())
	}
	return demo.ServerConfig{Gateways: []string{e.udp}, Root: e.root, Key: e.key, Static: k, GatewayKeys: gws, Logger: e.log.With("side", name)}
}

// keyHolder is the handshake initiator of a server the test drives by
// hand: a key pair of its own, which the gateway admits (as "keyholder").
func (e *env) keyHolder(instance uint64) *auth.Initiator {
	e.t.Helper()
	k := auth.GenerateStaticKey()
	e.allow(k.Public(), "")
	in, err := auth.NewInitiator(e.key, k, []auth.PublicKey{e.gwKey.Public()}, instance, auth.DefaultLimits)
	if err != nil {
		e.t.Fatal(err)
	}
	return in
}

// udpForger is the handshake initiator of a sender with a wrong
// pre-shared key, a key pair nobody lists, and a gateway key of its own.
func udpForger(wrong *auth.Key, instance uint64) *auth.Initiator {
	in, err := auth.NewInitiator(wrong, auth.GenerateStaticKey(), []auth.PublicKey{auth.GenerateStaticKey().Public()}, instance, auth.DefaultLimits)
	if err != nil {
		panic(err) // the arguments are valid by construction
	}
	return in
}

// allow adds a server key to the gateway's allowed list (as an edit of
// its file would).
func (e *env) allow(k auth.PublicKey, name string) {
	e.mu.Lock()
	e.allowed[k] = name
	a := maps.Clone(e.allowed)
	e.mu.Unlock()
	e.gw.SetAllowed(a)
}

// revoke removes a server key from the gateway's allowed list.
func (e *env) revoke(k auth.PublicKey) {
	e.mu.Lock()
	delete(e.allowed, k)
	a := maps.Clone(e.allowed)
	e.mu.Unlock()
	e.gw.SetAllowed(a)
}

// waitFor polls cond until true or a generous deadline.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitHolders waits until every file is offered by n servers.
func (e *env) waitHolders(n int) {
	e.t.Helper()
	e.waitFor(fmt.Sprintf("%d holders of every file", n), func() bool {
		for p := range e.files {
			f, ok := e.gw.Source().Lookup(p)
			if !ok || f.Holders < n {
				return false
			}
		}
		return true
	})
}

func (e *env) url(p string) string {
	return e.web.URL + "/" + strings.ReplaceAll(p, " ", "%20")
}

// get downloads p and compares it with the original.
func (e *env) get(p string) {
	e.t.Helper()
	if err := fetchExact(http.DefaultClient, e.url(p), e.files[p]); err != nil {
		e.t.Fatalf("%v\n%s", err, e.diagnose())
	}
}

// fetchExact GETs url with c and checks for 200 and exactly want.
func fetchExact(c *http.Client, url string, want []byte) error {
	resp, err := c.Get(url)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: body after %d bytes: %w", url, len(body), err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	if !bytes.Equal(body, want) {
		return fmt.Errorf("GET %s: %d bytes differ from the %d-byte original", url, len(body), len(want))
	}
	return nil
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// diagnose describes the gateway's state for a failure message.
func (e *env) diagnose() string {
	var b strings.Builder
	fmt.Fprintf(&b, "udp: %+v\nengine: %+v\n", e.gw.Stats(), e.gw.Engine().Stats())
	for _, l := range e.gw.Engine().Links() {
		fmt.Fprintf(&b, "link %016x: %+v\n", uint64(l.ID), l)
	}
	for _, s := range e.gw.Pool().Servers() {
		fmt.Fprintf(&b, "server %016x: %+v\n", uint64(s.ID), s)
	}
	e.mu.Lock()
	for i, s := range e.servers {
		fmt.Fprintf(&b, "fileserver %d: %+v\n", i, s.Srv.Stats())
	}
	e.mu.Unlock()
	return b.String()
}

// newTestKey makes a fresh pre-shared key for one test.
func newTestKey(t *testing.T) *auth.Key {
	t.Helper()
	k := make([]byte, 32)
	rand.Read(k)
	key, err := auth.NewKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// writeFiles writes files (slash paths) into a new temporary folder and
// returns it.
func writeFiles(t *testing.T, files map[string][]byte) string {
	t.Helper()
	root := t.TempDir()
	for p, b := range files {
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}
