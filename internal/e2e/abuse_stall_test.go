package e2e

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/fetch"
	"github.com/fastfile/fschunk/internal/httpfront"
)

// stalledClient opens a connection with a tiny receive buffer, asks for
// p and never reads.
func stalledClient(t *testing.T, addr, p string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(c, "GET /%s HTTP/1.1\r\nHost: stall\r\n\r\n", p); err != nil {
		t.Fatal(err)
	}
	return c
}

// stalledStreams opens conns HTTP/2 connections to srv (TLS) and asks for
// p on streams streams of each, never reading the bodies; the windows it
// grants are 64 KiB per stream and per connection, as in the RSS
// benchmark (bench/stall-rss.sh).
func stalledStreams(t *testing.T, srv *httptest.Server, p string, conns, streams int) []io.Closer {
	t.Helper()
	var out []io.Closer
	got := make(chan io.Closer, conns*streams)
	for range conns {
		var protos http.Protocols
		protos.SetHTTP2(true)
		tr := &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // httptest's certificate
			Protocols:       &protos,
			HTTP2: &http.HTTP2Config{StrictMaxConcurrentRequests: true,
				MaxReceiveBufferPerConnection: 64 << 10, MaxReceiveBufferPerStream: 64 << 10},
		}
		out = append(out, closerFunc(tr.CloseIdleConnections))
		c := &http.Client{Transport: tr}
		for range streams {
			go func() {
				resp, err := c.Get(srv.URL + "/" + p)
				if err != nil {
					got <- closerFunc(func() {})
					return
				}
				got <- resp.Body
			}()
		}
	}
	for range conns * streams {
		out = append(out, <-got)
	}
	return out
}

type closerFunc func()

func (f closerFunc) Close() error { f(); return nil }

// TestHTTPAbuseStalledClients: clients that ask for a large file and
// stop reading must not pin the gateway's memory, nor take the budget
// from a client that reads. Before, each held a 64 KiB leaf (128 KiB
// chunks before verified streaming) beyond the budget and counted in
// the budget's shares, so a normal client got one chunk of window
// (3,200 HTTP/2 streams: 631 MB of RSS). Now a response whose Write has
// not completed for StalledAfter gives back everything but the 16 KiB
// piece it is writing (none, if its client never read: the engine probes
// such a client with a write small enough for net/http's own buffer),
// and does not count in the shares; the stalled responses are cut after
// -send-timeout, giving everything back.
func TestHTTPAbuseStalledClients(t *testing.T) {
	for _, proto := range []string{"HTTP/1.1", "HTTP/2"} {
		t.Run(proto, func(t *testing.T) { testStalledClients(t, proto == "HTTP/2") })
	}
}

func testStalledClients(t *testing.T, h2 bool) {
	const (
		stalled = 100
		budget  = 1 << 20
		chunk   = 128 << 10
		size    = 24 << 20
	)
	files := map[string][]byte{"big.bin": randBytes(size)}
	e := newEnv(t, files, envOpts{
		fetch: fetch.Config{Budget: budget, Window: budget, ChunkSize: chunk, StalledAfter: 200 * time.Millisecond},
		front: httpfront.Options{SendTimeout: 20 * time.Second},
	})
	e.addServer(nil)
	e.addServer(nil)
	e.waitHolders(2)
	eng := e.gw.Engine()
	if h2 {
		srv := httptest.NewUnstartedServer(e.web.Config.Handler)
		srv.EnableHTTP2 = true
		srv.StartTLS()
		defer srv.Close()
		for _, c := range stalledStreams(t, srv, "big.bin", 4, stalled/4) {
			defer c.Close()
		}
	} else {
		addr := strings.TrimPrefix(e.web.URL, "http://")
		for range stalled {
			defer stalledClient(t, addr, "big.bin").Close()
		}
	}
	// Every stalled response has written what its client and the
	// kernel's buffers took, and is found stalled (a count, not a time;
	// under the race detector filling a hundred sockets' buffers takes a
	// while, hence the long deadline).
	for start := time.Now(); eng.Stats().Stalled < stalled; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 3*time.Minute {
			t.Fatalf("%d of %d responses stalled after %v\n%s", eng.Stats().Stalled, stalled, time.Since(start), e.diagnose())
		}
	}

	// At most the budget, one chunk beyond it (the normal client's, taken
	// while over budget), whole chunks that stalled responses were
	// writing, as long as they fit in the budget too, and a 16 KiB piece
	// (fetch.PieceSize) for each other stalled response.
	limit := 2*budget + chunk + stalled*16<<10
	maxHeld, maxWindow := 0, 0
	done := make(chan error, 1)
	go func() { done <- fetchExact(http.DefaultClient, e.url("big.bin"), files["big.bin"]) }()
	for waiting := true; waiting; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("normal client beside %d stalled ones: %v\n%s", stalled, err, e.diagnose())
			}
			waiting = false
		case <-time.After(2 * time.Millisecond):
		}
		maxHeld = max(maxHeld, eng.Stats().Buffered)
		for _, d := range eng.Downloads() {
			maxWindow = max(maxWindow, d.Window)
		}
	}
	s := eng.Stats()
	t.Logf("%d stalled responses and a normal download of %d bytes: engine held at most %d bytes (limit %d; %d once stalled; a leaf each would be %d); the normal client's window reached %d chunks; %d bytes reclaimed",
		stalled, size, maxHeld, limit, s.Buffered, stalled*64<<10, maxWindow, s.ReclaimedBytes)
	if maxHeld > limit {
		t.Errorf("the engine held %d bytes with %d stalled responses, more than %d", maxHeld, stalled, limit)
	}
	// A normal client gets the budget, not the share of one among 101.
	if maxWindow < budget/chunk/2 {
		t.Errorf("the normal client's window reached %d chunks, want at least %d (half the budget)", maxWindow, budget/chunk/2)
	}
}
