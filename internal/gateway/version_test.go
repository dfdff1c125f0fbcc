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

// TestVersionMismatch: datagrams of protocol version 1 (a server not yet
// upgraded) are dropped and counted, nothing is sent back, and one
// warning names both versions however many arrive.
func TestVersionMismatch(t *testing.T) {
	key := newKey(t)
	rec := &recordLog{}
	g, addr := startGWWith(t, Config{Key: key, Logger: slog.New(rec)})
	c := newClient(t, addr)
	v1 := auth.NewInitiator(key, 1, auth.DefaultLimits).Hello(nil)
	v1[0] = 1
	for range 5 {
		c.send(v1)
	}
	waitReceived(t, g, 5)
	if b := c.recv(200 * time.Millisecond); b != nil {
		t.Fatalf("answered a version 1 HELLO with %d bytes", len(b))
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
			if !strings.Contains(r, "peer_version=1") || !strings.Contains(r, fmt.Sprintf("our_version=%d", fschunk.Version)) || !strings.Contains(r, "addr=127.0.0.1:") {
				t.Errorf("warning does not name both versions and the sender: %s", r)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d version warnings for 5 datagrams, want 1 (rate-limited): %q", n, rec.recs)
	}
}
