package e2e

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/demo"
	"github.com/fastfile/fschunk/internal/gateway"
)

// logSink collects a logger's lines for checks by content.
type logSink struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logSink) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// waitLog waits until the log has a line containing every one of subs
// and returns it.
func waitLog(t *testing.T, l *logSink, subs ...string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for line := range strings.Lines(l.String()) {
			ok := true
			for _, s := range subs {
				ok = ok && strings.Contains(line, s)
			}
			if ok {
				return line
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q in:\n%s", subs, l)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The key pairs of the misconfiguration tests: the gateway's, and the
// server's, which the gateways admit unless a test says otherwise.
var (
	mcGW  = auth.GenerateStaticKey()
	mcSrv = auth.GenerateStaticKey()
)

func mcAllowed() gateway.Allowed { return gateway.Allowed{mcSrv.Public(): "srv"} }

func mustKey(t *testing.T, b byte) *auth.Key {
	k, err := auth.NewKey(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// startServer runs an embedded FastFileSrv on a one-file folder, logging
// into l, until the test ends.
func startLoggedServer(t *testing.T, gw string, key *auth.Key, l *logSink) *demo.Server {
	t.Helper()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "a.txt"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := demo.StartServer(context.Background(), demo.ServerConfig{Gateways: []string{gw}, Root: root, Key: key, Static: mcSrv, GatewayKeys: []auth.PublicKey{mcGW.Public()}, Logger: l.logger()}, "srv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

// TestWrongKeyLogged: a server started with another key than the
// gateway's is reported at both ends: the gateway names the source
// address and says the handshake failed authentication; the server says
// no gateway answers and what to check.
func TestWrongKeyLogged(t *testing.T) {
	var gwLog, srvLog logSink
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(gateway.Config{Conn: pc, Key: mustKey(t, 1), Static: mcGW, Allowed: mcAllowed(), Logger: gwLog.logger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; pc.Close() })

	s := startLoggedServer(t, pc.LocalAddr().String(), mustKey(t, 2), &srvLog)
	line := waitLog(t, &gwLog, "level=WARN", "handshake failed authentication", "different key", "from="+s.Conn.LocalAddr().String())
	t.Logf("gateway: %s", line)
	line = waitLog(t, &srvLog, "level=WARN", "no gateway answers", "same key file", "addr="+pc.LocalAddr().String())
	t.Logf("server: %s", line)
	// Rate-limited: several failed HELLOs by now (the server's warning
	// comes after five), fewer lines.
	if n, fails := strings.Count(gwLog.String(), "handshake failed authentication"), g.Stats().DropAuth; uint64(n) >= fails {
		t.Errorf("%d gateway warnings for %d failures: not rate-limited", n, fails)
	}
}

// TestUnlistedKeyLogged: a server whose public key the gateway does not
// list (never added, or revoked) is refused after a valid handshake; the
// gateway names its key and the list, the server says no gateway answers.
func TestUnlistedKeyLogged(t *testing.T) {
	var gwLog, srvLog logSink
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	key := mustKey(t, 4)
	g, err := gateway.New(gateway.Config{Conn: pc, Key: key, Static: mcGW, Allowed: gateway.Allowed{auth.GenerateStaticKey().Public(): "other"}, Logger: gwLog.logger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; pc.Close() })

	startLoggedServer(t, pc.LocalAddr().String(), key, &srvLog)
	line := waitLog(t, &gwLog, "level=WARN", "not in the allowed servers list", `key="`+mcSrv.Public().String())
	t.Logf("gateway: %s", line)
	line = waitLog(t, &srvLog, "level=WARN", "no gateway answers", "allowed servers")
	t.Logf("server: %s", line)
	if st := g.Stats(); st.Handshakes != 0 || st.DropUnlisted == 0 {
		t.Errorf("handshakes %d, unlisted drops %d: want 0 and some", st.Handshakes, st.DropUnlisted)
	}
}

// TestNoGatewayLogged: a server pointed at an address where no gateway
// runs warns (with backoff) until one starts there, then says it joined.
func TestNoGatewayLogged(t *testing.T) {
	var srvLog, gwLog logSink
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close() // nothing listens there for now
	key := mustKey(t, 3)
	startLoggedServer(t, addr, key, &srvLog)
	waitLog(t, &srvLog, "level=WARN", "no gateway answers", "addr="+addr, "next_warning_in=")

	pc, err = net.ListenPacket("udp", addr)
	if err != nil {
		t.Skipf("port taken meanwhile: %v", err)
	}
	g, err := gateway.New(gateway.Config{Conn: pc, Key: key, Static: mcGW, Allowed: mcAllowed(), Logger: gwLog.logger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; pc.Close() })
	waitLog(t, &srvLog, "level=INFO", "joined gateway")
	waitLog(t, &srvLog, "level=INFO", "gateway answers again")
}

// TestOddNamesReachable: every name a server announces is in the index and
// answers its correctly percent-encoded URL, "%" sequences included
// ("50%25off.txt" is /50%2525off.txt); names no URL can carry (tab,
// newline, backslash, bytes that are not UTF-8, C1 controls) are not
// announced, and each is logged by name, escaped.
func TestOddNamesReachable(t *testing.T) {
	reachable := map[string][]byte{
		"50%25off.txt":   []byte("fifty"),
		"a%2fb.txt":      []byte("not a slash"),
		"x%2e%2e.txt":    []byte("not dots"),
		"dir%2e/%41.txt": []byte("not an A"),
		"100%.txt":       []byte("percent"),
		"café ü.txt":     []byte("utf-8"),
	}
	skipped := map[string][]byte{
		"tab\there.txt":   []byte("1"),
		"new\nline.txt":   []byte("2"),
		`back\slash.txt`:  []byte("3"),
		"bad\xffutf8.txt": []byte("4"),
		"c1\u0085.txt":    []byte("5"),
	}
	files := map[string][]byte{}
	for p, b := range reachable {
		files[p] = b
	}
	for p, b := range skipped {
		files[p] = b
	}
	e := newEnv(t, files, envOpts{})
	var srvLog logSink
	e.log = srvLog.logger()
	e.addServer(nil)
	e.files = reachable
	e.waitHolders(1)
	for p, want := range reachable {
		var esc []string
		for _, el := range strings.Split(p, "/") {
			esc = append(esc, url.PathEscape(el))
		}
		if err := fetchExact(http.DefaultClient, e.web.URL+"/"+strings.Join(esc, "/"), want); err != nil {
			t.Errorf("%q: %v", p, err)
		}
		dir, base := strings.Join(esc[:len(esc)-1], "/"), p[strings.LastIndex(p, "/")+1:]
		if dir != "" {
			dir += "/"
		}
		resp, err := http.Get(e.web.URL + "/" + dir)
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(page), `href="./`+url.PathEscape(base)+`"`) {
			t.Errorf("index of /%s has no link to %q", dir, base)
		}
	}
	for p := range skipped {
		if _, ok := e.gw.Source().Lookup(p); ok {
			t.Errorf("%q announced", p)
		}
		waitLog(t, &srvLog, "level=WARN", "file not announced", "path="+strconv.Quote(strconv.QuoteToASCII(p)))
	}
}
