package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/fschunk"
)

// recordLog keeps the records logged at Warn and above.
type recordLog struct {
	mu   sync.Mutex
	recs []string
}

func (*recordLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h *recordLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	h.mu.Lock()
	h.recs = append(h.recs, b.String())
	h.mu.Unlock()
	return nil
}
func (h *recordLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordLog) WithGroup(string) slog.Handler      { return h }

// TestVersionMismatch: datagrams of protocol versions 1 and 2 (a server
// not yet upgraded to the Noise handshake) are dropped and counted,
// nothing is sent back, and one warning names both versions however many
// arrive.
func TestVersionMismatch(t *testing.T) {
	for _, v := range []byte{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) { versionMismatch(t, v) })
	}
}

func versionMismatch(t *testing.T, v byte) {
	key := newKey(t)
	rec := &recordLog{}
	g, addr := startGWWith(t, Config{Key: key, Logger: slog.New(rec)})
	c := newClient(t, addr)
	old := newInitiator(t, key, 1, auth.DefaultLimits).Hello(nil)
	old[0] = v
	for range 5 {
		c.send(old)
	}
	waitReceived(t, g, 5)
	if b := c.recv(200 * time.Millisecond); b != nil {
		t.Fatalf("answered a version %d HELLO with %d bytes", v, len(b))
	}
	if st := g.Stats(); st.DropVersion != 5 || st.Handshakes != 0 {
		t.Fatalf("DropVersion %d handshakes %d, want 5 and 0", st.DropVersion, st.Handshakes)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	n := 0
	for _, r := range rec.recs {
		if strings.Contains(r, "another FS Chunk Protocol version") {
			n++
			if !strings.Contains(r, fmt.Sprintf("peer_version=%d", v)) || !strings.Contains(r, fmt.Sprintf("our_version=%d", fschunk.Version)) || !strings.Contains(r, "addr=127.0.0.1:") {
				t.Errorf("warning does not name both versions and the sender: %s", r)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d version warnings for 5 datagrams, want 1 (rate-limited): %q", n, rec.recs)
	}
}
