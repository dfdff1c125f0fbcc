package gateway

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"golang.org/x/time/rate"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/fschunk"
)

// Handshakes are answered off the data path. The receive loop only checks
// a HELLO's or AUTH's size and copies it into a bounded queue (dropped,
// and counted, when full); one worker goroutine verifies MACs and cookies,
// answers and makes sessions, at a bounded rate. A flood of handshakes,
// valid-looking or not, thus costs the receive loop a copy per datagram
// and the process at most HandshakeLimits.Rate handshakes per second,
// whatever its source addresses, and never delays the DATA of running
// downloads behind HMACs.
//
// Under load (either queue at least an eighth full: WireGuard's
// QueueHandshakeBusySize), the worker also
//   - serves AUTHs before HELLOs: an AUTH carries the stateless cookie of
//     a CHALLENGE, proof that its sender receives at its address, so a
//     server that got its CHALLENGE completes its handshake whatever the
//     flood of HELLOs;
//   - checks an AUTH's cookie before its MAC (the cookie is what says the
//     source address is real), then limits AUTHs per source address;
//   - limits HELLOs per source address (HandshakeLimits.PerSource).
// The CHALLENGE is this protocol's cookie reply: nothing expensive (a
// Diffie-Hellman, a session, memory) is done for a sender before it
// returns a cookie, in any mode; what load changes is who is served first and how
// much each source gets.

// HandshakeLimits bound the handshake work of the gateway.
type HandshakeLimits struct {
	// Rate and Burst bound handshake datagrams handled per second, all
	// sources together (default 5,000/s, burst 500). A HELLO costs an HMAC;
	// an AUTH of a pre-shared-key holder five X25519 operations (about a
	// core's worth at this rate, BENCHMARKS.md), which only a sender with
	// the PSK and a cookie for its address can cause. Beyond it the queues
	// fill and drop.
	Rate  rate.Limit
	Burst int
	// PerSourceRate and PerSourceBurst bound, under load, the handshake
	// datagrams of one source address (IPv6: /64) per second (default 20/s,
	// burst 10: WireGuard's values). A server needs two per handshake.
	PerSourceRate  rate.Limit
	PerSourceBurst int
}

// Defaults of HandshakeLimits, and the queues.
const (
	DefaultHandshakeRate  = 5000
	DefaultHandshakeBurst = 500
	DefaultPerSourceRate  = 20
	DefaultPerSourceBurst = 10
	helloQueueSize        = 1024
	authQueueSize         = 256
	underLoadDivisor      = 8    // a queue this fraction full means under load
	maxHandshakeSources   = 4096 // per-source buckets kept
)

func (l HandshakeLimits) withDefaults() HandshakeLimits {
	if l.Rate <= 0 {
		l.Rate = DefaultHandshakeRate
	}
	if l.Burst <= 0 {
		l.Burst = DefaultHandshakeBurst
	}
	if l.PerSourceRate <= 0 {
		l.PerSourceRate = DefaultPerSourceRate
	}
	if l.PerSourceBurst <= 0 {
		l.PerSourceBurst = DefaultPerSourceBurst
	}
	return l
}

// hsJob is a handshake datagram waiting for the worker.
type hsJob struct {
	pkt  [max(fschunk.HelloSize, fschunk.AuthSize)]byte
	n    int
	from netip.AddrPort
}

// handshakeQueues are the worker's inputs and its own state.
type handshakeQueues struct {
	hello, auth chan hsJob
	all         *rate.Limiter
	// helloSources belongs to the receive loop, authSources to the worker.
	helloSources, authSources *sourceLimits
}

type sourceBucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newHandshakeQueues(l HandshakeLimits) handshakeQueues {
	return handshakeQueues{
		hello:        make(chan hsJob, helloQueueSize),
		auth:         make(chan hsJob, authQueueSize),
		all:          rate.NewLimiter(l.Rate, l.Burst),
		helloSources: newSourceLimits(l),
		authSources:  newSourceLimits(l),
	}
}

// enqueueHandshake is the receive loop's part: a size check and a copy;
// under load, a HELLO is first checked against its source's limit, which
// costs a map lookup, as a transport datagram's session lookup does, and
// spares the queue (and a wake-up of the worker) for one that would be
// refused anyway.
func (g *Gateway) enqueueHandshake(t fschunk.Type, pkt []byte, from netip.AddrPort, now time.Time) {
	q, size := g.hs.hello, fschunk.HelloSize
	if t == fschunk.TypeAuth {
		q, size = g.hs.auth, fschunk.AuthSize
	}
	if len(pkt) != size {
		g.ctr.garbage.Add(1)
		return
	}
	if t == fschunk.TypeHello && g.underLoad() && !g.hs.helloSources.allow(from, now) {
		g.ctr.hsRateLimited.Add(1)
		return
	}
	j := hsJob{n: len(pkt), from: from}
	copy(j.pkt[:], pkt)
	select {
	case q <- j:
		g.ctr.hsQueued.Add(1)
	default:
		g.ctr.hsQueueFull.Add(1)
	}
}

// underLoad reports whether the handshake queues are loaded.
func (g *Gateway) underLoad() bool {
	return len(g.hs.hello) >= helloQueueSize/underLoadDivisor || len(g.hs.auth) >= authQueueSize/underLoadDivisor
}

// handshakeWorker answers handshakes until ctx is done, AUTHs first.
func (g *Gateway) handshakeWorker(ctx context.Context) {
	for {
		var j hsJob
		isAuth := false
		select {
		case j = <-g.hs.auth:
			isAuth = true
		default:
			select {
			case j = <-g.hs.auth:
				isAuth = true
			case j = <-g.hs.hello:
			case <-ctx.Done():
				return
			}
		}
		err := g.handshakeSafe(ctx, j, isAuth)
		g.ctr.hsDone.Add(1)
		if err != nil {
			return
		}
	}
}

// handshakeSafe handles one handshake datagram, taking a token of the
// global rate before any MAC is computed; an error only when ctx is done.
// Like the receive loop, the worker survives a panic (logged, counted).
func (g *Gateway) handshakeSafe(ctx context.Context, j hsJob, isAuth bool) (err error) {
	defer func() {
		if p := recover(); p != nil {
			g.ctr.panics.Add(1)
			g.log.Error("handshake handler panicked", "addr", j.from.String(), "panic", p)
		}
	}()
	pkt := j.pkt[:j.n]
	if isAuth {
		load := g.underLoad()
		if err := g.hs.all.Wait(ctx); err != nil {
			return err
		}
		if load {
			// The cookie first: it is what proves the source address,
			// so the per-source limit below counts real senders.
			if err := g.resp.CheckCookie(pkt, j.from); err != nil {
				g.dropHandshake(err, j.from)
				return nil
			}
			if !g.hs.authSources.allow(j.from, time.Now()) {
				g.ctr.hsRateLimited.Add(1)
				return nil
			}
		}
		g.handleAuth(pkt, j.from)
		return nil
	}
	// (A HELLO's source limit was applied by the receive loop: its source
	// is not proven, but the check costs a map lookup and no token.)
	if err := g.hs.all.Wait(ctx); err != nil {
		return err
	}
	out := g.getBuf()
	defer g.putBuf(out)
	ch, herr := g.resp.HandleHello(pkt, j.from, (*out)[:0])
	if herr != nil {
		g.dropHandshake(herr, j.from)
		return nil
	}
	if g.write(ch, j.from) == nil {
		g.ctr.challenges.Add(1)
	}
	return nil
}

// sourceLimits is a token bucket per source address (IPv6: per /64),
// owned by one goroutine (no lock). It is bounded: when full, buckets that
// have refilled are forgotten, and if none has, all of them (a flood from
// that many sources is bounded by the global rate anyway).
type sourceLimits struct {
	rate   rate.Limit
	burst  int
	refill time.Duration
	m      map[netip.Addr]*sourceBucket
}

func newSourceLimits(l HandshakeLimits) *sourceLimits {
	return &sourceLimits{
		rate: l.PerSourceRate, burst: l.PerSourceBurst,
		refill: time.Duration(float64(l.PerSourceBurst) / float64(l.PerSourceRate) * float64(time.Second)),
		m:      map[netip.Addr]*sourceBucket{},
	}
}

// allow takes a token from the source's bucket; false if it has none.
func (s *sourceLimits) allow(from netip.AddrPort, now time.Time) bool {
	key := sourceKey(from.Addr())
	b := s.m[key]
	if b == nil {
		if len(s.m) >= maxHandshakeSources {
			for k, v := range s.m {
				if now.Sub(v.seen) >= s.refill {
					delete(s.m, k)
				}
			}
			if len(s.m) >= maxHandshakeSources {
				clear(s.m)
			}
		}
		b = &sourceBucket{lim: rate.NewLimiter(s.rate, s.burst)}
		s.m[key] = b
	}
	b.seen = now
	return b.lim.AllowN(now, 1)
}

// authLogEvery is the most often the gateway warns about handshakes that
// fail authentication.
const authLogEvery = 10 * time.Second

func (g *Gateway) dropHandshake(err error, from netip.AddrPort) {
	var un *unlistedError
	if errors.As(err, &un) {
		n := g.ctr.unlisted.Add(1)
		g.keyLog.Do(func() {
			g.log.Warn("server refused: its public key is not in the allowed servers list (add it there to admit the server; a revoked server keeps trying)",
				"key", un.key.String(), "addr", from.String(), "refused", n, "next_report_in", authLogEvery)
		})
		return
	}
	if errors.Is(err, auth.ErrBadNoise) {
		g.ctr.authFail.Add(1)
		return
	}
	if errors.Is(err, auth.ErrBadMAC) || errors.Is(err, auth.ErrBadCookie) {
		n := g.ctr.authFail.Add(1)
		if errors.Is(err, auth.ErrBadMAC) {
			// Nothing is answered (the sender could be anyone), so this
			// line is the only way an operator learns that a server was
			// started with another key.
			g.authLog.Do(func() {
				g.log.Warn("handshake failed authentication: probably a FastFileSrv with a different key file or another gateway public key (-gateway-public-key), or a forged packet; nothing was answered",
					"from", from.String(), "auth_failures", n, "next_report_in", authLogEvery)
			})
		}
		return
	}
	g.ctr.garbage.Add(1)
}
