package gateway

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/fschunk"
)

// panicOn is a log handler that panics when asked to log msg: a stand-in
// for any bug a server's datagram could trigger in a handler.
type panicOn struct{ msg string }

func (panicOn) Enabled(context.Context, slog.Level) bool { return true }
func (h panicOn) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		panic("injected: " + h.msg)
	}
	return nil
}
func (h panicOn) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h panicOn) WithGroup(string) slog.Handler      { return h }

// TestHandlerPanicRecovered: a panic while handling one server's datagram
// (here in the log call that reports a completed catalog) is recovered
// and counted; the receive loop carries on for everyone else, and the
// server whose datagram caused it is evicted.
func TestHandlerPanicRecovered(t *testing.T) {
	key := newKey(t)
	g, addr := startGWWith(t, Config{Key: key, Logger: slog.New(panicOn{msg: "catalog"})})
	bad, good := newClient(t, addr), newClient(t, addr)
	sb := register(t, bad, key)
	in := registerAs(t, good, key, 43)
	page := fschunk.CatalogPage{Gen: 1, Pages: 1, Entries: []fschunk.Entry{{Path: "a", Size: 1, ModTime: time.Unix(1, 0).UTC()}}}
	bad.send(seal(t, sb, fschunk.TypeCatalogPage, page.Append(nil)))
	deadline := time.Now().Add(5 * time.Second)
	for g.Stats().Panics == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no panic counted")
		}
		time.Sleep(time.Millisecond)
	}
	// The loop is alive: the other server's heartbeat is acknowledged.
	good.send(seal(t, in, fschunk.TypeHeartbeat, (&fschunk.Heartbeat{Seq: 1}).Append(nil)))
	if good.recv(2*time.Second) == nil {
		t.Fatal("no HEARTBEAT_ACK after a handler panicked: the receive loop died")
	}
	for _, s := range g.Pool().Servers() {
		if s.ID == 42 {
			t.Fatal("the server whose datagram panicked is still in the pool")
		}
	}
	if st := g.Stats(); st.Panics != 1 || st.Evictions != 1 {
		t.Fatalf("panics %d evictions %d, want 1 and 1", st.Panics, st.Evictions)
	}
}
