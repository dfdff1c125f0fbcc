// Package access decides which clients may use the gateway's public HTTP
// port, and how much of it:
//
//   - allow and deny lists by CIDR (deny wins), checked when a connection
//     is accepted;
//   - a cap on open connections per client and in total (nginx's
//     limit_conn and worker_connections), also checked at accept, so that
//     a refused connection costs no goroutine, no buffers and no TLS
//     handshake;
//   - a cap on requests in progress per client: more wait for a slot
//     (queued, not refused), so that one client cannot hold more than its
//     share of the gateway's responses while a download manager opening
//     many requests is only slowed;
//   - a request rate per client (a token bucket, golang.org/x/time/rate),
//     checked per request, so that every HTTP/2 stream counts and not only
//     connections. A request over the rate waits for its token for up to
//     Config.MaxDelay and is refused (429) only beyond that: wget and
//     aria2c do not retry a 429 by default (nor a 503: wget needs
//     --retry-on-http-error, aria2c --retry-wait), so for them a refusal
//     is a lost file, while a delay is invisible.
//
// A client is its IP address; IPv6 addresses are grouped by /64, the
// smallest prefix a host is normally given, so that one host cannot take a
// fresh bucket per address. The peer address of the TCP connection is used:
// there is no trusted-proxy (X-Forwarded-For) support, the gateway is meant
// to face clients directly.
package access

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Reasons a client is refused, as used in metrics labels.
const (
	ReasonDeny       = "deny"         // not allowed by -allow/-deny
	ReasonRate       = "rate"         // request rate over the limit
	ReasonConnsPerIP = "conns_per_ip" // too many open connections from one client
	ReasonConnsTotal = "conns_total"  // too many open connections overall
)

// IPv6Prefix is the prefix length by which IPv6 clients are grouped.
const IPv6Prefix = 64

// DefaultMaxClients bounds the rate table when Config.MaxClients is 0. An
// entry costs about 200 bytes, so the table stays under ~4 MB whatever the
// number of source addresses.
const DefaultMaxClients = 16384

// Config configures a Guard. The zero value lets everyone in without limits.
type Config struct {
	// Allow, if not empty, admits only clients inside one of these
	// prefixes. Deny refuses clients inside one of its prefixes, whether
	// or not Allow admits them.
	Allow, Deny []netip.Prefix
	// Rate is the sustained number of requests per second a client may
	// make, Burst how many it may make at once. Rate 0 means no limit.
	Rate  float64
	Burst int
	// MaxDelay is how long a request over the rate may wait for its
	// token; beyond it the request is refused (429 + Retry-After). 0
	// refuses at once.
	MaxDelay time.Duration
	// MaxRequestsPerClient caps one client's requests in progress; more
	// wait for a slot. 0 means no limit.
	MaxRequestsPerClient int
	// MaxConnsPerClient and MaxConns cap open connections from one client
	// and in total; 0 means no limit.
	MaxConnsPerClient int
	MaxConns          int
	// MaxClients bounds how many clients the rate limiter remembers;
	// 0 means DefaultMaxClients. See rateTable for what happens when full.
	MaxClients int
	// Now is the clock; nil means time.Now. Tests pass a fake one.
	Now func() time.Time
	// Logger receives one debug line per refusal; nil means slog.Default().
	Logger *slog.Logger
}

// Stats counts refusals since start, and the current state.
type Stats struct {
	Denied        uint64 `json:"refused_deny"`
	RateLimited   uint64 `json:"refused_rate"`
	ConnsPerIP    uint64 `json:"refused_conns_per_ip"`
	ConnsTotal    uint64 `json:"refused_conns_total"`
	OpenConns     int    `json:"open_conns"`
	RateClients   int    `json:"rate_clients"`   // clients in the rate table
	RateEvictions uint64 `json:"rate_evictions"` // live buckets dropped because the table was full
	RateDelayed   uint64 `json:"rate_delayed"`   // requests served after waiting for a token
	Queued        uint64 `json:"queued"`         // requests that waited for a slot (MaxRequestsPerClient)
	ActiveClients int    `json:"active_clients"` // clients with a request in progress or waiting
}

// Guard enforces a Config. It is safe for concurrent use.
type Guard struct {
	allow, deny []netip.Prefix
	now         func() time.Time
	log         *slog.Logger
	conns       *connTable
	rates       *rateTable // nil: no rate limit
	maxDelay    time.Duration
	slots       *slotTable // nil: no cap on requests in progress

	denied, rateLimited, connsPerIP, connsTotal, delayed, queued atomic.Uint64
}

// New checks c and returns its Guard.
func New(c Config) (*Guard, error) {
	switch {
	case !(c.Rate >= 0) || math.IsInf(c.Rate, 1): // NaN fails >= too
		return nil, fmt.Errorf("rate limit %v: want a finite rate ≥ 0", c.Rate)
	case c.Rate > 0 && c.Burst < 1:
		return nil, fmt.Errorf("rate burst %d: want at least 1 with a rate limit", c.Burst)
	case c.MaxConnsPerClient < 0 || c.MaxConns < 0:
		return nil, errors.New("negative connection limit")
	case c.MaxClients < 0:
		return nil, errors.New("negative rate table size")
	case c.MaxDelay < 0 || c.MaxRequestsPerClient < 0:
		return nil, errors.New("negative rate delay or request limit")
	}
	g := &Guard{
		allow:    canonical(c.Allow),
		deny:     canonical(c.Deny),
		now:      c.Now,
		log:      c.Logger,
		conns:    &connTable{perClient: map[netip.Addr]int{}, maxPerClient: c.MaxConnsPerClient, max: c.MaxConns},
		maxDelay: c.MaxDelay,
	}
	if c.MaxRequestsPerClient > 0 {
		g.slots = newSlotTable(c.MaxRequestsPerClient)
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.log == nil {
		g.log = slog.Default()
	}
	if c.Rate > 0 {
		n := c.MaxClients
		if n == 0 {
			n = DefaultMaxClients
		}
		g.rates = newRateTable(rate.Limit(c.Rate), c.Burst, n)
	}
	return g, nil
}

// Stats returns the counters.
func (g *Guard) Stats() Stats {
	s := Stats{
		Denied:      g.denied.Load(),
		RateLimited: g.rateLimited.Load(),
		ConnsPerIP:  g.connsPerIP.Load(),
		ConnsTotal:  g.connsTotal.Load(),
		OpenConns:   g.conns.open(),
		RateDelayed: g.delayed.Load(),
		Queued:      g.queued.Load(),
	}
	if g.slots != nil {
		s.ActiveClients = g.slots.clients()
	}
	if g.rates != nil {
		s.RateClients, s.RateEvictions = g.rates.stats()
	}
	return s
}

// Allowed reports whether the lists admit a (deny wins over allow).
func (g *Guard) Allowed(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range g.deny {
		if p.Contains(a) {
			return false
		}
	}
	if len(g.allow) == 0 {
		return true
	}
	for _, p := range g.allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Handler wraps next with the per-request checks: the cap on requests in
// progress (wait for a slot), the rate limit (wait for a token up to
// MaxDelay, else 429 with Retry-After from the client's bucket) and, for a
// Guard used without its Listener, the lists (403). Refusals are counted
// (Stats), logged at debug level only (a flood must not become a log
// flood) and never reach next, so they are not in the access log.
func (g *Guard) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			// Not an IP peer (a test transport, a Unix socket): nothing
			// to key a limit on.
			next.ServeHTTP(w, r)
			return
		}
		a := ap.Addr()
		if !g.Allowed(a) {
			g.refused(ReasonDeny, a)
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		key := ClientKey(a)
		if g.slots != nil {
			// A slot first: the requests waiting for a token below are
			// then at most MaxRequestsPerClient per client.
			release, waited, err := g.slots.acquire(r.Context(), key)
			if waited {
				g.queued.Add(1)
			}
			if err != nil {
				return // the client went away while queued
			}
			defer release()
		}
		if g.rates != nil {
			ok, wait := g.rates.take(key, g.now(), g.maxDelay)
			if !ok {
				g.refused(ReasonRate, a)
				w.Header().Set("Retry-After", strconv.Itoa(retryAfter(wait)))
				http.Error(w, "too many requests", http.StatusTooManyRequests)
				return
			}
			if wait > 0 {
				g.delayed.Add(1)
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-r.Context().Done():
					t.Stop()
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// retryAfter turns a wait into Retry-After seconds: rounded up, at least 1
// (0 would invite an immediate retry that fails again).
func retryAfter(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
}

func (g *Guard) refused(reason string, a netip.Addr) {
	switch reason {
	case ReasonDeny:
		g.denied.Add(1)
	case ReasonRate:
		g.rateLimited.Add(1)
	case ReasonConnsPerIP:
		g.connsPerIP.Add(1)
	case ReasonConnsTotal:
		g.connsTotal.Add(1)
	}
	if g.log.Enabled(context.Background(), slog.LevelDebug) {
		g.log.Debug("client refused", "reason", reason, "remote", a.String())
	}
}

// ClientKey is the identity a limit applies to: the address itself for
// IPv4 (IPv4-mapped IPv6 included), the /64 for IPv6.
func ClientKey(a netip.Addr) netip.Addr {
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return a
	}
	p, err := a.Prefix(IPv6Prefix)
	if err != nil {
		return a
	}
	return p.Addr()
}

// ParsePrefixes reads a comma-separated list of CIDR prefixes or single
// addresses ("10.0.0.0/8, 192.0.2.7, 2001:db8::/32"); "" is an empty list.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return nil, fmt.Errorf("invalid CIDR %q (want e.g. 10.0.0.0/8 or 2001:db8::/32)", f)
			}
			out = append(out, p)
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("invalid address %q (want an IP or a CIDR like 10.0.0.0/8)", f)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// canonical masks prefixes and unmaps IPv4-mapped ones, so that
// "::ffff:10.0.0.0/104" matches 10.1.2.3 as 10.0.0.0/8 does.
func canonical(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		a, bits := p.Addr(), p.Bits()
		if a.Is4In6() {
			a, bits = a.Unmap(), max(bits-96, 0)
		}
		out = append(out, netip.PrefixFrom(a.WithZone(""), bits).Masked())
	}
	return out
}
