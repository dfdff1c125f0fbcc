//go:build linux

// The HTTP half of the abuse suite: slow-loris clients, oversized request
// lines and headers, 10,000 idle connections and a path-traversal corpus,
// all against the real gateway with its front end configured by
// httpfront.NewServer, as cmd/httpgw configures it.
//
// Linux only: client connections are spread over many addresses of
// 127.0.0.0/8 (so that a per-address connection limit is not what the
// tests measure), which other systems do not route to the loopback
// interface by default, and the memory figures come from /proc.

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/httpfront"
)

// httpAbuseFront is the gateway's HTTP front end as cmd/httpgw builds it
// (httpfront.NewServer: header limit, timeouts), unlike env.web, which is a
// plain httptest server. It tracks the state of every connection.
type httpAbuseFront struct {
	*httptest.Server
	mu     sync.Mutex
	states map[net.Conn]http.ConnState
}

// httpAbuseStartFront serves e's gateway through httpfront.NewServer; tune,
// if set, adjusts the server before it starts.
func httpAbuseStartFront(t *testing.T, e *env, tune func(*http.Server)) *httpAbuseFront {
	t.Helper()
	h := httpfront.NewHandler(e.gw.Source(), httpfront.Options{Logger: e.log})
	f := &httpAbuseFront{states: map[net.Conn]http.ConnState{}}
	f.Server = httptest.NewUnstartedServer(h)
	f.Config = httpfront.NewServer("", h, httpfront.ServerOptions{Logger: e.log})
	f.Config.ConnState = func(c net.Conn, s http.ConnState) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if s == http.StateClosed || s == http.StateHijacked {
			delete(f.states, c)
		} else {
			f.states[c] = s
		}
	}
	if tune != nil {
		tune(f.Config)
	}
	f.Start()
	t.Cleanup(f.Close)
	return f
}

// count returns the number of open connections in state s.
func (f *httpAbuseFront) count(s http.ConnState) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, st := range f.states {
		if st == s {
			n++
		}
	}
	return n
}

func (f *httpAbuseFront) addr() string { return f.Listener.Addr().String() }

// httpAbuseLoopback returns the i-th client source address, spread over
// 127.0.0.0/8 and avoiding 127.0.0.1 (the server's) and .0/.255.
func httpAbuseLoopback(i int) net.IP {
	return net.IPv4(127, byte(1+i/(254*256)), byte(i/254%256), byte(1+i%254))
}

// httpAbuseDial connects to addr from source address ip.
func httpAbuseDial(ip net.IP, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 20 * time.Second}
	return d.Dial("tcp", addr)
}

// httpAbuseGet downloads p through the front end on a fresh connection
// and compares it with the original.
func httpAbuseGet(f *httpAbuseFront, e *env, p string) error {
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	return fetchExact(&http.Client{Transport: tr, Timeout: 2 * time.Minute}, f.URL+"/"+p, e.files[p])
}

// httpAbuseRoundTrip writes req on a fresh connection from ip and returns
// everything the server sent until it closed the connection, and the
// status of the response parsed from it (0 if none could be parsed).
// The write runs beside the read: a server refusing an oversized request
// stops reading it and may reset the connection while we still write.
func httpAbuseRoundTrip(ip net.IP, addr string, req []byte) (status int, raw []byte, err error) {
	c, err := httpAbuseDial(ip, addr)
	if err != nil {
		return 0, nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute)) // hang guard only
	go func() { _, _ = c.Write(req) }()
	raw, rerr := io.ReadAll(c)
	resp, perr := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
	if perr != nil {
		return 0, raw, fmt.Errorf("no response (read: %v; parse: %v)", rerr, perr)
	}
	resp.Body.Close()
	return resp.StatusCode, raw, nil
}

// TestHTTPAbuseSlowloris opens many connections that send their request
// head slowly, or not at all, and checks that the front end cuts every one
// of them at its header deadline while serving downloads byte-exact.
//
// To keep the test quick, the 10 s ReadHeaderTimeout that
// httpfront.NewServer sets is shortened to 2 s on the returned server; the
// mechanism under test is the same.
func TestHTTPAbuseSlowloris(t *testing.T) {
	const (
		slowConns     = 1000
		headerTimeout = 2 * time.Second
		trickleEvery  = 100 * time.Millisecond
		// Only a guard against hanging forever if the defence is gone;
		// the assertion is that the server closes, not how fast.
		hangGuard = 30 * time.Second
	)
	files := map[string][]byte{"big.bin": randBytes(3<<20 + 5), "small.txt": randBytes(777)}
	e := newEnv(t, files, envOpts{})
	e.addServer(nil)
	e.addServer(nil)
	e.waitHolders(2)
	f := httpAbuseStartFront(t, e, func(s *http.Server) { s.ReadHeaderTimeout = headerTimeout })
	if err := httpAbuseGet(f, e, "small.txt"); err != nil {
		t.Fatal(err)
	}

	// Four ways of being slow. Each trickled byte keeps the request
	// syntactically valid, so only the deadline can end it.
	kinds := []struct {
		name    string
		head    string // sent at once
		trickle string // then one byte per tick, cycling
	}{
		{"header trickle", "GET /small.txt HTTP/1.1\r\nHost: x\r\nX-Slow: ", "a"},
		{"request-line trickle", "G", "ET /" + strings.Repeat("a", 1000)},
		{"silent", "", ""},
		{"head without final CRLF", "GET /small.txt HTTP/1.1\r\nHost: x\r\n", ""},
	}
	type slowConn struct {
		c        net.Conn
		kind     int
		start    time.Time
		sent     atomic.Int64 // trickled bytes
		dead     atomic.Bool  // a trickle write failed
		closedIn time.Duration
		got      []byte
		err      error // of the final read
	}
	conns := make([]*slowConn, slowConns)
	var readers sync.WaitGroup
	for i := range conns {
		// Taken before Dial: the server's header clock cannot start
		// earlier, so a close measured from here is never early by
		// scheduling alone.
		start := time.Now()
		c, err := httpAbuseDial(httpAbuseLoopback(i), f.addr())
		if err != nil {
			t.Fatalf("slow connection %d: %v", i, err)
		}
		sc := &slowConn{c: c, kind: i % len(kinds), start: start}
		conns[i] = sc
		t.Cleanup(func() { c.Close() })
		if h := kinds[sc.kind].head; h != "" {
			if _, err := io.WriteString(c, h); err != nil {
				t.Fatalf("slow connection %d: %v", i, err)
			}
		}
		_ = c.SetReadDeadline(sc.start.Add(hangGuard))
		readers.Add(1)
		go func() {
			defer readers.Done()
			sc.got, sc.err = io.ReadAll(c) // returns when the server closes
			sc.closedIn = time.Since(sc.start)
		}()
	}
	dialled := time.Since(conns[0].start)

	stopTrickle := make(chan struct{})
	trickleDone := make(chan struct{})
	go func() {
		defer close(trickleDone)
		tick := time.NewTicker(trickleEvery)
		defer tick.Stop()
		for {
			select {
			case <-stopTrickle:
				return
			case <-tick.C:
			}
			for _, sc := range conns {
				tr := kinds[sc.kind].trickle
				if tr == "" || sc.dead.Load() {
					continue
				}
				n := sc.sent.Load()
				_ = sc.c.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := sc.c.Write([]byte{tr[n%int64(len(tr))]}); err != nil {
					sc.dead.Store(true)
					continue
				}
				sc.sent.Add(1)
			}
		}
	}()

	// Serve while the slow connections are open.
	openAtStart := f.count(http.StateNew) + f.count(http.StateActive)
	for i := 0; i < 3; i++ {
		for _, p := range []string{"big.bin", "small.txt"} {
			if err := httpAbuseGet(f, e, p); err != nil {
				t.Errorf("download during slow-loris: %v", err)
			}
		}
	}
	downloadsDone := time.Since(conns[0].start)

	readers.Wait()
	close(stopTrickle)
	<-trickleDone

	var closed, early, answered, trickled int
	var maxSent int64
	var minIn, maxIn time.Duration
	for i, sc := range conns {
		var ne net.Error
		switch {
		case errors.As(sc.err, &ne) && ne.Timeout():
			t.Errorf("slow connection %d (%s): the server never closed it (still open after %v)", i, kinds[sc.kind].name, hangGuard)
			continue
		case sc.err != nil && !errors.Is(sc.err, syscall.ECONNRESET):
			t.Errorf("slow connection %d (%s): %v", i, kinds[sc.kind].name, sc.err)
			continue
		}
		closed++
		if sc.closedIn < headerTimeout {
			early++
			t.Errorf("slow connection %d (%s): closed after %v, before the %v header deadline", i, kinds[sc.kind].name, sc.closedIn, headerTimeout)
		}
		// net/http closes silently at the deadline, except that a
		// request line cut by it is parsed as if complete and refused
		// with 400. Anything but a refusal would be a defect.
		if len(sc.got) > 0 {
			answered++
			if !bytes.HasPrefix(sc.got, []byte("HTTP/1.1 4")) {
				t.Errorf("slow connection %d (%s): got %q, want nothing or a 4xx refusal", i, kinds[sc.kind].name, firstLineOf(sc.got))
			}
		}
		if s := sc.sent.Load(); s > 0 {
			trickled++
			maxSent = max(maxSent, s)
		}
		if minIn == 0 || sc.closedIn < minIn {
			minIn = sc.closedIn
		}
		maxIn = max(maxIn, sc.closedIn)
	}
	e.waitFor("the front end to drop the slow connections", func() bool {
		return f.count(http.StateNew)+f.count(http.StateActive) == 0
	})
	if err := httpAbuseGet(f, e, "big.bin"); err != nil {
		t.Errorf("download after slow-loris: %v", err)
	}
	t.Logf("slow-loris: %d connections from %d source addresses (dialled in %v), %d open when downloads started; "+
		"6 downloads byte-exact, done %v after the first connection; %d/%d closed by the server after %v..%v "+
		"(header deadline %v), %d early, %d refused with a 4xx, the others closed silently, %d trickled (up to %d bytes each)",
		slowConns, slowConns, dialled.Round(time.Millisecond), openAtStart, downloadsDone.Round(time.Millisecond),
		closed, slowConns, minIn.Round(time.Millisecond), maxIn.Round(time.Millisecond), headerTimeout, early, answered, trickled, maxSent)
}

func firstLineOf(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\r\n"))
	return string(line)
}

// TestHTTPAbuseOversized sends request lines and headers around and far
// beyond the 16 KiB limit: beyond it, the answer is 431 (net/http has no
// 414; it answers 431 for an oversized request line too), a request line
// that fits but whose path is longer than any file name is a 400, and the
// gateway keeps serving after each.
func TestHTTPAbuseOversized(t *testing.T) {
	files := map[string][]byte{"small.txt": randBytes(4321)}
	e := newEnv(t, files, envOpts{})
	e.addServer(nil)
	e.waitHolders(1)
	f := httpAbuseStartFront(t, e, nil)

	head := func(target string, headers ...string) []byte {
		var b bytes.Buffer
		fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n", target)
		for _, h := range headers {
			b.WriteString(h + "\r\n")
		}
		b.WriteString("\r\n")
		return b.Bytes()
	}
	manyHeaders := make([]string, 1200)
	for i := range manyHeaders {
		manyHeaders[i] = fmt.Sprintf("X-H%d: %s", i, strings.Repeat("v", 10))
	}
	const limit = httpfront.MaxHeaderBytes
	cases := []struct {
		name string
		req  []byte
		want int
	}{
		{"headers just under 16 KiB", head("/small.txt", "X-Pad: "+strings.Repeat("p", limit-200)), 200},
		{"one 17 KiB header", head("/small.txt", "X-Pad: "+strings.Repeat("p", 17<<10)), 431},
		{"1200 small headers (~20 KiB)", head("/small.txt", manyHeaders...), 431},
		{"one 1 MiB header", head("/small.txt", "X-Pad: "+strings.Repeat("p", 1<<20)), 431},
		{"1 MiB header line, never terminated", []byte("GET /small.txt HTTP/1.1\r\nHost: test\r\nX-Pad: " + strings.Repeat("p", 1<<20)), 431},
		{"15 KiB request line (path too long for a file name)", head("/" + strings.Repeat("a", 15<<10)), 400},
		{"17 KiB request line", head("/" + strings.Repeat("a", 17<<10)), 431},
		{"1 MiB request line", head("/" + strings.Repeat("a", 1<<20)), 431},
		{"1 MiB request line, never terminated", []byte("GET /" + strings.Repeat("a", 1<<20)), 431},
	}
	statuses := map[int]int{}
	for i, c := range cases {
		status, raw, err := httpAbuseRoundTrip(httpAbuseLoopback(i), f.addr(), c.req)
		statuses[status]++
		switch {
		case err != nil:
			t.Errorf("%s (%d bytes): %v", c.name, len(c.req), err)
		case status != c.want:
			t.Errorf("%s (%d bytes): status %d (%q), want %d", c.name, len(c.req), status, firstLineOf(raw), c.want)
		case status == 200 && !bytes.HasSuffix(raw, files["small.txt"]):
			t.Errorf("%s: 200 without the file's content", c.name)
		}
		if err := httpAbuseGet(f, e, "small.txt"); err != nil {
			t.Errorf("after %s: %v", c.name, err)
		}
	}
	t.Logf("oversized: %d requests (%d..%d bytes), statuses %v, gateway served small.txt byte-exact after each",
		len(cases), len(cases[0].req), len(cases[3].req), statuses)
}

// Environment of the child process of TestHTTPAbuseIdleConnections.
const (
	httpAbuseIdleEnvAddr  = "HTTPABUSE_IDLE_ADDR"
	httpAbuseIdleEnvConns = "HTTPABUSE_IDLE_CONNS"
)

// TestHTTPAbuseIdleConnections holds 10,000 idle keep-alive connections
// open against the front end and checks that downloads stay byte-exact
// meanwhile, that the idle connections still answer, and that the memory
// they cost is bounded per connection.
//
// The client ends live in a child process (this test binary re-executed
// as TestHTTPAbuseIdleConnsChild): the file-descriptor limit here is 20,000
// and cannot be raised without CAP_SYS_RESOURCE, and both ends in one
// process would need more. It also keeps the client's memory out of the
// measurement, which is then the server side only: runtime heap and
// stacks, and RSS (which under -race includes the detector's shadow
// memory, hence a 4x allowance there). Both are asserted per connection.
func TestHTTPAbuseIdleConnections(t *testing.T) {
	const (
		idle        = 10_000
		maxPerConn  = 64 << 10 // bytes of Go heap+stack, and of RSS, per idle connection
		pingEvery   = 100      // the child re-uses every 100th connection
		childBudget = 5 * time.Minute
	)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < idle+1000 {
		t.Skipf("RLIMIT_NOFILE is %d; the server side of %d connections needs more", lim.Cur, idle)
	}
	files := map[string][]byte{"big.bin": randBytes(3<<20 + 17), "small.txt": randBytes(999)}
	e := newEnv(t, files, envOpts{})
	e.addServer(nil)
	e.addServer(nil)
	e.waitHolders(2)
	f := httpAbuseStartFront(t, e, nil)
	for p := range files {
		if err := httpAbuseGet(f, e, p); err != nil {
			t.Fatal(err)
		}
	}
	before := httpAbuseMem()
	goroutinesBefore := runtime.NumGoroutine()

	ctx, cancel := context.WithTimeout(context.Background(), childBudget)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHTTPAbuseIdleConnsChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), httpAbuseIdleEnvAddr+"="+f.addr(), httpAbuseIdleEnvConns+"="+strconv.Itoa(idle))
	stderr := &httpAbuseSyncBuffer{}
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	childExited := false
	defer func() {
		if !childExited {
			stdin.Close()
			_ = cmd.Wait()
		}
	}()
	lines := bufio.NewScanner(stdout)
	expect := func(prefix string) string {
		t.Helper()
		for lines.Scan() {
			if l, ok := strings.CutPrefix(lines.Text(), "HTTPABUSE "); ok {
				if strings.HasPrefix(l, "fail") {
					t.Fatalf("child: %s\n%s", l, stderr.String())
				}
				if v, ok := strings.CutPrefix(l, prefix+" "); ok {
					return v
				}
			}
		}
		t.Fatalf("child ended before %q: %v\n%s", prefix, lines.Err(), stderr.String())
		return ""
	}
	if got := expect("ready"); got != strconv.Itoa(idle) {
		t.Fatalf("child opened %s connections, want %d", got, idle)
	}
	opened := time.Since(start)
	e.waitFor("the front end to see every connection idle", func() bool { return f.count(http.StateIdle) >= idle })
	with := httpAbuseMem()
	goroutinesWith := runtime.NumGoroutine()
	idleSeen := f.count(http.StateIdle)

	// Serve while they are open.
	for i := 0; i < 3; i++ {
		for _, p := range []string{"big.bin", "small.txt"} {
			if err := httpAbuseGet(f, e, p); err != nil {
				t.Errorf("download with %d idle connections: %v", idle, err)
			}
		}
	}
	fmt.Fprintln(stdin, "ping")
	pinged := expect("pinged")
	if pinged != strconv.Itoa(idle/pingEvery) {
		t.Errorf("%s idle connections answered a second request, want %d", pinged, idle/pingEvery)
	}
	stillIdle := f.count(http.StateIdle)
	stdin.Close()
	childExited = true
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
	e.waitFor("the idle connections to close", func() bool { return f.count(http.StateIdle) == 0 })
	if err := httpAbuseGet(f, e, "big.bin"); err != nil {
		t.Error(err)
	}

	goPer := (int64(with.goBytes) - int64(before.goBytes)) / idle
	// The race detector's shadow memory roughly quadruples RSS.
	maxRSS := int64(maxPerConn)
	if httpAbuseRace {
		maxRSS *= 4
	}
	rssPer := (with.rss - before.rss) / idle
	t.Logf("idle: %d connections from %d source addresses, open and answered in %v; the server saw %d idle (%d after the downloads); "+
		"6 downloads byte-exact while open; %s of %d idle connections answered a second request",
		idle, idle, opened.Round(time.Millisecond), idleSeen, stillIdle, pinged, idle/pingEvery)
	t.Logf("idle memory: Go heap+stacks %d -> %d bytes (%d bytes per connection; limit %d), RSS %d -> %d bytes (%d per connection; limit %d), goroutines %d -> %d",
		before.goBytes, with.goBytes, goPer, maxPerConn, before.rss, with.rss, rssPer, maxRSS, goroutinesBefore, goroutinesWith)
	if idleSeen < idle {
		t.Errorf("the server saw %d idle connections, want %d", idleSeen, idle)
	}
	if goPer > maxPerConn {
		t.Errorf("%d bytes of Go memory per idle connection, more than %d", goPer, maxPerConn)
	}
	if before.rss > 0 && rssPer > maxRSS {
		t.Errorf("%d bytes of RSS per idle connection, more than %d", rssPer, maxRSS)
	}
}

// httpAbuseSyncBuffer collects a child's stderr, which os/exec copies from
// its own goroutine, so that a failure can show it while the child runs.
type httpAbuseSyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *httpAbuseSyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *httpAbuseSyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type httpAbuseMemSample struct {
	goBytes uint64 // runtime heap in use plus goroutine stacks
	rss     int64  // resident set size, 0 if unknown
}

// httpAbuseMem measures the process after collecting garbage twice (the
// second cycle frees what the first one's finalizers released).
func httpAbuseMem() httpAbuseMemSample {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := httpAbuseMemSample{goBytes: ms.HeapInuse + ms.StackInuse}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				s.rss = kb << 10
			}
		}
	}
	return s
}

// TestHTTPAbuseIdleConnsChild is the client side of
// TestHTTPAbuseIdleConnections, run in a child process. It opens the
// connections, one request each (a 404, which costs the gateway no fetch),
// reports on stdout, re-uses every 100th connection on "ping", and closes
// them all when stdin closes.
func TestHTTPAbuseIdleConnsChild(t *testing.T) {
	addr := os.Getenv(httpAbuseIdleEnvAddr)
	if addr == "" {
		t.Skip("helper process of TestHTTPAbuseIdleConnections")
	}
	n, err := strconv.Atoi(os.Getenv(httpAbuseIdleEnvConns))
	if err != nil {
		fmt.Printf("HTTPABUSE fail bad connection count: %v\n", err)
		t.Fatal(err)
	}
	probe := func(c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		if _, err := io.WriteString(c, "GET /idle-probe HTTP/1.1\r\nHost: idle\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReaderSize(c, 512), nil)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && (resp.StatusCode != http.StatusNotFound || resp.Close) {
			err = fmt.Errorf("status %d, close %v; want a kept-alive 404", resp.StatusCode, resp.Close)
		}
		_ = c.SetDeadline(time.Time{})
		return err
	}
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		failMu  sync.Mutex
		failErr error
	)
	failed := func() error {
		failMu.Lock()
		defer failMu.Unlock()
		return failErr
	}
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || failed() != nil {
					return
				}
				c, err := httpAbuseDial(httpAbuseLoopback(i), addr)
				if err == nil {
					conns[i] = c
					err = probe(c)
				}
				if err != nil {
					failMu.Lock()
					if failErr == nil {
						failErr = fmt.Errorf("connection %d: %w", i, err)
					}
					failMu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := failed(); err != nil {
		fmt.Printf("HTTPABUSE fail %v\n", err)
		t.Fatal(err)
	}
	fmt.Printf("HTTPABUSE ready %d\n", n)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() != "ping" {
			continue
		}
		ok := 0
		for i := 0; i < n; i += 100 {
			if err := probe(conns[i]); err != nil {
				fmt.Printf("HTTPABUSE fail ping of connection %d: %v\n", i, err)
				t.Fatal(err)
			}
			ok++
		}
		fmt.Printf("HTTPABUSE pinged %d\n", ok)
	}
}

// TestHTTPAbusePathTraversal sends a corpus of traversal attempts as raw
// request lines to the real gateway, whose served root holds symlinks
// pointing in and out of it, next to a secret file outside it.
//
// What the catalog specifies (internal/catalog, TestConfinement): a file
// symlink whose relative target stays inside the root is served as that
// file; absolute symlinks (os.Root refuses them even pointing inside),
// symlinks leaving the root, and directory symlinks are not served at all.
// So the in-root relative links answer 200 with the target's content, and
// every other request a 4xx: 400 when the path is refused as written
// (CleanPath or net/http), 404 when it is a clean name the pool does not
// hold, 431 when the request line exceeds the header limit.
func TestHTTPAbusePathTraversal(t *testing.T) {
	secretDir := t.TempDir()
	tok := make([]byte, 16)
	rand.Read(tok)
	secret := "SECRET-" + hex.EncodeToString(tok)
	for _, p := range []string{"secret.txt", "dir/inner.txt"} {
		full := filepath.Join(secretDir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(secret+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string][]byte{
		"pub/ok.txt": []byte("public ok content\n"),
		"top.txt":    randBytes(2000),
	}
	e := newEnv(t, files, envOpts{})
	base := filepath.Base(secretDir)
	if filepath.Dir(secretDir) != filepath.Dir(e.root) {
		t.Fatalf("secret dir %s and root %s are not siblings", secretDir, e.root)
	}
	links := map[string]string{
		"link-in":         "pub/ok.txt",                        // relative, inside: served
		"pub/back-in":     "../top.txt",                        // relative, up and back in: served
		"link-in-abs":     filepath.Join(e.root, "pub/ok.txt"), // absolute, inside: refused by os.Root
		"link-out":        filepath.Join(secretDir, "secret.txt"),
		"rel-out":         "../" + base + "/secret.txt",
		"dirlink-out":     secretDir,
		"dirlink-in":      "pub",
		"pub/nested-out":  "../../" + base + "/secret.txt",
		"pub/up":          "..",
		"pub/upup":        "../..",
		"dangling-secret": "../" + base + "/nonexistent",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(e.root, name)); err != nil {
			t.Fatal(err)
		}
	}
	e.addServer(nil)
	e.waitHolders(1)
	e.waitFor("the in-root symlinks", func() bool {
		_, a := e.gw.Source().Lookup("link-in")
		_, b := e.gw.Source().Lookup("pub/back-in")
		return a && b
	})
	f := httpAbuseStartFront(t, e, nil)
	served := map[string][]byte{"/link-in": files["pub/ok.txt"], "/pub/back-in": files["top.txt"]}

	corpus := httpAbuseTraversalCorpus(base, secretDir)
	for target := range served {
		corpus = append(corpus, target)
	}
	for name := range links {
		corpus = append(corpus, "/"+name, "/"+name+"/", "/"+name+"/secret.txt", "/"+name+"/"+base+"/secret.txt",
			"/"+strings.ToUpper(name), "/"+name+"%00", "/"+name+"/inner.txt", "/"+name+"/dir/inner.txt")
	}
	slices.Sort(corpus)
	corpus = slices.Compact(corpus)

	// want is the oracle described above.
	want := func(target string) int {
		if _, ok := served[target]; ok {
			return http.StatusOK
		}
		if len(target) > httpfront.MaxHeaderBytes {
			return http.StatusRequestHeaderFieldsTooLarge
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return http.StatusBadRequest
		}
		if _, err := httpfront.CleanPath(u.EscapedPath()); err != nil {
			return http.StatusBadRequest
		}
		return http.StatusNotFound
	}

	var (
		mu       sync.Mutex
		statuses = map[int]int{}
		next     atomic.Int64
		checks   atomic.Int64
		wg       sync.WaitGroup
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		t.Errorf(format, args...)
	}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(corpus) {
					return
				}
				target := corpus[i]
				req := fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n", target)
				status, raw, err := httpAbuseRoundTrip(httpAbuseLoopback(i), f.addr(), req)
				mu.Lock()
				statuses[status]++
				mu.Unlock()
				show := target
				if len(show) > 80 {
					show = show[:80] + fmt.Sprintf("...(%d bytes)", len(target))
				}
				if bytes.Contains(raw, []byte(secret)) {
					fail("GET %q: THE RESPONSE CONTAINS THE SECRET", show)
				}
				switch w := want(target); {
				case err != nil:
					fail("GET %q: %v", show, err)
				case status != w:
					fail("GET %q: status %d (%q), want %d", show, status, firstLineOf(raw), w)
				case status == http.StatusOK && !bytes.HasSuffix(raw, served[target]):
					fail("GET %q: 200 without the link target's content", show)
				}
				// The gateway keeps serving through the corpus.
				if i%200 == 0 {
					checks.Add(1)
					if err := httpAbuseGet(f, e, "top.txt"); err != nil {
						fail("after %d requests: %v", i, err)
					}
				}
			}
		}()
	}
	wg.Wait()

	// The indexes do not show what is not served.
	for _, dir := range []string{"/", "/pub/"} {
		status, raw, err := httpAbuseRoundTrip(httpAbuseLoopback(0), f.addr(),
			fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: test\r\nAccept: application/json\r\nConnection: close\r\n\r\n", dir))
		if err != nil || status != http.StatusOK {
			t.Fatalf("index %s: %d %v", dir, status, err)
		}
		for name := range links {
			listed := bytes.Contains(raw, []byte(`"`+filepath.Base(name)+`"`))
			shouldList := (dir == "/" && name == "link-in") || (dir == "/pub/" && name == "pub/back-in")
			if listed != shouldList {
				t.Errorf("index %s lists %s: %v, want %v", dir, name, listed, shouldList)
			}
		}
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("index %s contains the secret", dir)
		}
	}
	if err := httpAbuseGet(f, e, "top.txt"); err != nil {
		t.Error(err)
	}
	codes := slices.Sorted(maps.Keys(statuses))
	var summary []string
	for _, c := range codes {
		summary = append(summary, fmt.Sprintf("%d: %d", c, statuses[c]))
	}
	t.Logf("path traversal: corpus of %d raw request targets (%d symlinks in the root), statuses {%s}; "+
		"secret never seen; %d interleaved downloads byte-exact",
		len(corpus), len(links), strings.Join(summary, ", "), checks.Load())
}

// httpAbuseTraversalCorpus builds request targets that try to reach the
// secret directory (a sibling of the served root, named base, at absolute
// path secretDir) or /etc/passwd: every encoding of ".." and "/" crossed
// with prefixes and depths, plus NUL bytes, absolute paths, "//", mixed
// case and very long paths.
func httpAbuseTraversalCorpus(base, secretDir string) []string {
	dots := []string{
		"..", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "%252e%252e", "%25252e%25252e",
		"%c0%ae%c0%ae", "%e0%80%ae%e0%80%ae", "%c0%2e%c0%2e", "%uff0e%uff0e",
		"..%00", "%2e%2e%00", "..%c0%af", "..;", "....", ".%252e",
	}
	seps := []string{
		"/", "%2f", "%2F", "%252f", "%25252f", "%5c", "%5C", "%255c", "\\", "%c0%af", "%e0%80%af",
		"%c1%9c", "//", "/./", "%ef%bc%8f", "%2f%2f",
	}
	prefixes := []string{"/", "/pub/", "/pub/ok.txt/", "/link-in/", "/%2e/"}
	tails := [][]string{{base, "secret.txt"}, {base, "dir", "inner.txt"}, {"etc", "passwd"}}
	var out []string
	for _, d := range dots {
		for _, s := range seps {
			for _, p := range prefixes {
				for _, depth := range []int{1, 3} {
					for _, tail := range tails {
						out = append(out, p+strings.Repeat(d+s, depth)+strings.Join(tail, s))
					}
				}
			}
		}
	}
	abs := filepath.ToSlash(filepath.Join(secretDir, "secret.txt")) // starts with /
	out = append(out,
		// NUL
		"/pub/ok.txt%00", "/pub/ok.txt%00.jpg", "/%00", "/%00/../"+base+"/secret.txt", "/..%00/"+base+"/secret.txt",
		"/pub/%00../../"+base+"/secret.txt", "/%2500", "/pub%00/ok.txt",
		// absolute paths, in every form a request line can carry them
		abs, "/"+abs, "/%2f"+abs[1:], "/%2F"+strings.ReplaceAll(abs[1:], "/", "%2F"),
		"http://test"+abs, "http://test/../.."+abs, "http://test/%2e%2e/%2e%2e"+abs, "file://"+abs,
		"//etc/passwd", "/etc/passwd", "/proc/self/environ", "/proc/self/root/etc/passwd",
		"/proc/self/cwd/../"+base+"/secret.txt", "/dev/stdin", "/../../../../../../../../etc/passwd",
		"*", "etc/passwd", "../"+base+"/secret.txt", base+"/secret.txt",
		// doubled slashes
		"//", "///", "//pub/ok.txt", "/pub//ok.txt", "/pub/ok.txt//", "//"+base+"/secret.txt", "/.//..//"+base,
		// mixed case
		"/PUB/OK.TXT", "/Pub/ok.txt", "/pub/OK.txt", "/TOP.TXT", "/Link-In", "/LINK-OUT", "/%2E%2e/"+base,
		"/%2e%2E/"+base+"/secret.txt", "/%C0%AE%C0%AE/"+base, "/..%5C"+base+"%5Csecret.txt",
		// very long: past the path limit, past the request-line limit
		"/"+strings.Repeat("a/", 3000)+"x",
		"/"+strings.Repeat("../", 3000)+base+"/secret.txt",
		"/"+strings.Repeat("%2e%2e%2f", 1000)+base+"%2fsecret.txt",
		"/"+strings.Repeat("%2e%2e%2f", 2000)+base+"%2fsecret.txt",
		"/"+strings.Repeat("a", 20000),
		"/"+strings.Repeat("pub/", 1000)+"ok.txt",
		"/pub/"+strings.Repeat("%41", 4096)+"/../../"+base+"/secret.txt",
	)
	return out
}
