package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/demo"
	"github.com/fastfile/fschunk/internal/fileserver"
	"github.com/fastfile/fschunk/internal/pool"
)

// multiGwServer is one FastFileSrv registered with several gateways, as
// `fastfilesrv -gateway a,b` runs it.
type multiGwServer struct {
	srv  *fileserver.Server
	stop func()
}

func multiGwStartServer(t *testing.T, e *env, name string, gateways []string, rec *multiGwRecorder) *multiGwServer {
	t.Helper()
	log := slog.New(&multiGwHandler{next: e.log.Handler(), rec: rec}).With("side", name)
	cfg := e.serverConfig(name)
	cfg.Gateways, cfg.Logger = gateways, log
	ds, err := demo.StartServer(context.Background(), cfg, name)
	if err != nil {
		t.Fatal(err)
	}
	s := &multiGwServer{srv: ds.Srv}
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			if err := ds.Stop(); err != nil {
				t.Errorf("server %s: %v", name, err)
			}
		})
	}
	t.Cleanup(s.stop)
	return s
}

// multiGwRecorder keeps the servers' session renewals with each gateway,
// with their reason, from their logs: the counters do not say which
// gateway a re-registration was with.
type multiGwRecorder struct {
	mu    sync.Mutex
	renew []multiGwRenewal
}

type multiGwRenewal struct{ server, gateway, msg, reason string }

func (r *multiGwRecorder) with(gateway string) []multiGwRenewal {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []multiGwRenewal
	for _, x := range r.renew {
		if x.gateway == gateway {
			out = append(out, x)
		}
	}
	return out
}

// multiGwHandler passes records on and records re-registrations.
type multiGwHandler struct {
	next  slog.Handler
	rec   *multiGwRecorder
	attrs []slog.Attr
}

func (h *multiGwHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h *multiGwHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "re-registered") {
		x := multiGwRenewal{msg: r.Message}
		attr := func(a slog.Attr) bool {
			switch a.Key {
			case "side":
				x.server = a.Value.String()
			case "gateway":
				x.gateway = a.Value.String()
			case "reason":
				x.reason = a.Value.String()
			}
			return true
		}
		for _, a := range h.attrs {
			attr(a)
		}
		r.Attrs(attr)
		h.rec.mu.Lock()
		h.rec.renew = append(h.rec.renew, x)
		h.rec.mu.Unlock()
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *multiGwHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &multiGwHandler{next: h.next.WithAttrs(as), rec: h.rec, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h *multiGwHandler) WithGroup(name string) slog.Handler {
	return &multiGwHandler{next: h.next.WithGroup(name), rec: h.rec, attrs: h.attrs}
}

// multiGwSecond starts another gateway (with its own HTTP front) over the
// same pre-shared key and files as e, with a key pair of its own: a
// second, independent HttpGw. Servers started on e afterwards know both
// gateways' public keys and are admitted by both.
func multiGwSecond(t *testing.T, e *env) *env {
	t.Helper()
	e.mu.Lock()
	allowed := maps.Clone(e.allowed)
	e.mu.Unlock()
	b := &env{t: t, key: e.key, gwKey: auth.GenerateStaticKey(), allowed: allowed, root: e.root, files: e.files, log: e.log.With("gw", "B")}
	b.startGateway(envOpts{}, "127.0.0.1:0")
	e.linked = append(e.linked, b)
	t.Cleanup(b.close)
	return b
}

// multiGwFetch downloads p through e and compares it with the original;
// safe to call from several goroutines (it reports, never fails the test).
func multiGwFetch(e *env, p string) error {
	if err := fetchExact(http.DefaultClient, e.url(p), e.files[p]); err != nil {
		return fmt.Errorf("via %s: %w", e.udp, err)
	}
	return nil
}

// multiGwFetchAll downloads every file through every gateway at once.
func multiGwFetchAll(t *testing.T, envs ...*env) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for _, e := range envs {
		for p := range e.files {
			wg.Go(func() {
				if err := multiGwFetch(e, p); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
}

// multiGwPoolView is what must not change in a gateway whose peer gateway
// dies: its servers (none evicted or leaving, none re-joined). Handshakes
// are compared apart: see multiGwCheckRenewals.
type multiGwPoolView struct {
	handshakes, evictions, goodbyes uint64
	joined                          map[pool.ServerID]time.Time
}

func multiGwView(e *env) multiGwPoolView {
	st := e.gw.Stats()
	v := multiGwPoolView{handshakes: st.Handshakes, evictions: st.Evictions, goodbyes: st.Goodbyes, joined: map[pool.ServerID]time.Time{}}
	for _, s := range e.gw.Pool().Servers() {
		v.joined[s.ID] = s.Joined
	}
	return v
}

func (v multiGwPoolView) sameAs(w multiGwPoolView) error {
	if v.evictions != w.evictions || v.goodbyes != w.goodbyes {
		return fmt.Errorf("evictions/goodbyes %d/%d, were %d/%d", w.evictions, w.goodbyes, v.evictions, v.goodbyes)
	}
	if len(v.joined) != len(w.joined) {
		return fmt.Errorf("%d servers, were %d", len(w.joined), len(v.joined))
	}
	for id, j := range v.joined {
		if !w.joined[id].Equal(j) {
			return fmt.Errorf("server %016x rejoined (joined %v, was %v)", uint64(id), w.joined[id], j)
		}
	}
	return nil
}

// multiGwCheckRenewals fails on any renewal of a session with gateway b
// other than for a late HEARTBEAT_ACK, and on handshakes with b that no
// server logged. A late acknowledgement is load (the race detector on two
// shared cores delays the receive loops by seconds), not A's doing, and
// the server re-registers without b evicting it; a renewal because b "said
// GOODBYE" or "restarted", or a session expiring, would be A's death
// leaking into b's sessions.
func multiGwCheckRenewals(t *testing.T, rec *multiGwRecorder, b *env, before multiGwPoolView) {
	t.Helper()
	renewals := rec.with(b.udp)
	late := 0
	for _, x := range renewals {
		if x.reason != "heartbeat ack timeout" {
			t.Fatalf("%s renewed its session with gateway B: %s (reason %q)", x.server, x.msg, x.reason)
		}
		late++
	}
	if late > 0 {
		t.Logf("gateway B: %d re-registrations after late heartbeat acknowledgements (load)", late)
	}
	// The initial joins happened before the snapshot; every handshake
	// since must be one of the renewals seen.
	if got := b.gw.Stats().Handshakes - before.handshakes; got > uint64(late) {
		t.Fatalf("gateway B: %d handshakes since A died, %d explained by late acknowledgements", got, late)
	}
}

// TestMultiGatewayIndependent: three servers each registered with two
// gateways (fastfilesrv -gateway A,B). Downloads through both at once are
// byte-exact; gateway A then dies (crash: no GOODBYE, or a clean stop with
// GOODBYE) in the middle of a download through B; that download and later
// ones through B complete, and B sees no handshake, eviction or goodbye:
// the servers' sessions with B were not disturbed. A restarts on the same
// port with no memory; the servers register with it again on their own.
func TestMultiGatewayIndependent(t *testing.T) {
	for _, crash := range []bool{true, false} {
		name := "stop"
		if crash {
			name = "crash"
		}
		t.Run(name, func(t *testing.T) {
			files := map[string][]byte{"video.mp4": randBytes(12<<20 + 5), "report.pdf": randBytes(3 << 20)}
			var aConn net.PacketConn
			a := newEnv(t, files, envOpts{gwWrap: func(pc net.PacketConn) net.PacketConn { aConn = pc; return pc }})
			b := multiGwSecond(t, a)
			rec := &multiGwRecorder{}
			var srvs []*multiGwServer
			for i := range 3 {
				srvs = append(srvs, multiGwStartServer(t, a, fmt.Sprintf("srv%d", i+1), []string{a.udp, b.udp}, rec))
			}
			connected := func(n int) func() bool {
				return func() bool {
					for _, s := range srvs {
						if s.srv.Connected() != n {
							return false
						}
					}
					return true
				}
			}
			a.waitHolders(3)
			b.waitHolders(3)
			a.waitFor("every server connected to both gateways", connected(2))
			multiGwFetchAll(t, a, b)
			before := multiGwView(b)

			// A dies while a download through B is in flight.
			resp, err := http.Get(b.url("video.mp4"))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			head := make([]byte, 2<<20)
			if _, err := io.ReadFull(resp.Body, head); err != nil {
				t.Fatal(err)
			}
			addrA := a.udp
			hellos := make([]uint64, len(srvs))
			for i, s := range srvs {
				hellos[i] = s.srv.Stats().HandshakesStarted
			}
			if crash {
				aConn.Close() // nothing more leaves A, not even GOODBYE
			}
			a.gwStop()
			rest, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("download through B after A died: %v\n%s", err, b.diagnose())
			}
			if !bytes.Equal(append(head, rest...), files["video.mp4"]) {
				t.Fatal("download through B across A's death: content differs")
			}
			// After a GOODBYE a server drops the session at once; after a
			// crash it keeps it (it cannot tell a crash from loss) until a
			// new one is up, but registers again after missed
			// acknowledgements. Either way it sends HELLOs to A.
			a.waitFor("every server to notice A is gone", func() bool {
				for i, s := range srvs {
					if s.srv.Stats().HandshakesStarted <= hellos[i] {
						return false
					}
				}
				return true
			})
			if !crash && !connected(1)() {
				t.Fatal("GOODBYE from A: servers still count a session with it")
			}
			multiGwFetchAll(t, b)
			if err := before.sameAs(multiGwView(b)); err != nil {
				t.Fatalf("gateway B disturbed by A's death: %v", err)
			}
			multiGwCheckRenewals(t, rec, b, before)

			// A comes back on the same port, a new process with no memory.
			a.startGateway(envOpts{}, addrA)
			a.waitHolders(3)
			a.waitFor("every server connected to both gateways again", connected(2))
			multiGwFetchAll(t, a, b)
			if err := before.sameAs(multiGwView(b)); err != nil {
				t.Fatalf("gateway B disturbed by A's restart: %v", err)
			}
			multiGwCheckRenewals(t, rec, b, before)
			for i, s := range srvs {
				st := s.srv.Stats()
				// Only A's boot changed: B's session was never renewed.
				if st.GatewayRestarts != 1 {
					t.Errorf("server %d saw %d gateway restarts, want 1 (A's)", i+1, st.GatewayRestarts)
				}
				t.Logf("server %d: handshakes %d, re-registrations %d, gateway restarts %d, goodbyes received %d",
					i+1, st.Handshakes, st.Reregistrations, st.GatewayRestarts, st.GoodbyesReceived)
			}
			after := multiGwView(b)
			t.Logf("gateway B: %d handshakes before A died, %d at the end; %d evictions, %d goodbyes", before.handshakes, after.handshakes, after.evictions, after.goodbyes)
		})
	}
}
