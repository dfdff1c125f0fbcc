package e2e

import (
	"fmt"
	"net"
	"net/http"
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

// TestHTTPAbuseStalledClients: clients that ask for a large file and
// stop reading must not pin the gateway's memory. Before, every one held
// a 128 KiB chunk beyond the budget (3,200 of them: 400 MiB, 731 MB of
// RSS over HTTP/2); now beyond the budget a response holds a 16 KiB
// piece, a normal client still downloads meanwhile, and the stalled
// responses are cut after -send-timeout, giving everything back.
func TestHTTPAbuseStalledClients(t *testing.T) {
	const (
		stalled = 100
		budget  = 1 << 20
		size    = 24 << 20
	)
	files := map[string][]byte{"big.bin": randBytes(size)}
	e := newEnv(t, files, envOpts{
		fetch: fetch.Config{Budget: budget, Window: budget},
		front: httpfront.Options{SendTimeout: 2 * time.Second},
	})
	e.addServer(nil)
	e.addServer(nil)
	e.waitHolders(2)
	eng := e.gw.Engine()
	addr := strings.TrimPrefix(e.web.URL, "http://")
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range stalled {
		conns = append(conns, stalledClient(t, addr, "big.bin"))
	}
	e.waitFor("every stalled response to start", func() bool { return eng.Stats().Active >= stalled })

	// At most the budget, a piece per response, and one chunk of slack
	// (a chunk is taken while the budget still has room for it).
	limit := budget + (stalled+1)*fetch.PieceSize + 128<<10
	maxHeld := 0
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- fetchExact(http.DefaultClient, e.url("big.bin"), files["big.bin"]) }()
	for waiting := true; waiting; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("normal client beside %d stalled ones: %v\n%s", stalled, err, e.diagnose())
			}
			waiting = false
		case <-time.After(5 * time.Millisecond):
		}
		maxHeld = max(maxHeld, eng.Stats().Buffered)
	}
	t.Logf("%d stalled responses and one normal download of %d bytes (%v): engine held at most %d bytes (limit %d; a chunk each would be %d)",
		stalled, size, time.Since(start).Round(time.Millisecond), maxHeld, limit, stalled*128<<10)
	if maxHeld > limit {
		t.Errorf("the engine held %d bytes with %d stalled responses, more than %d", maxHeld, stalled, limit)
	}
	// The stalled responses are cut (their connections still open), and
	// every buffer comes back.
	e.waitFor("the stalled responses to be cut and their buffers freed", func() bool {
		s := eng.Stats()
		return s.Active == 0 && s.Buffered == 0
	})
}
