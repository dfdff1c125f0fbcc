// Package metrics exposes the gateway in the Prometheus format on the
// admin listener. Counters owned by other packages are read at scrape
// time (a custom collector), so the data path pays nothing for them; only
// per-response and per-chunk histograms are observed as events.
package metrics

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fastfile/fschunk/internal/access"
	"github.com/fastfile/fschunk/internal/fetch"
	"github.com/fastfile/fschunk/internal/gateway"
	"github.com/fastfile/fschunk/internal/httpfront"
)

// Metrics is the gateway's registry.
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	bytes    prometheus.Counter
	duration prometheus.Histogram
	chunk    prometheus.Histogram
}

// New makes the registry with the event metrics; Attach adds the
// gateway's counters once it exists.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "httpgw_http_requests_total", Help: "HTTP requests by method and status code.",
		}, []string{"method", "code"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "httpgw_http_response_bytes_total", Help: "Response body bytes sent to clients.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "httpgw_http_response_duration_seconds", Help: "Time from request to the end of the response.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}),
		chunk: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "httpgw_chunk_fetch_seconds", Help: "Time from first asking for a chunk to holding all of it.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 3, 12),
		}),
	}
	m.reg.MustRegister(m.requests, m.bytes, m.duration, m.chunk,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Attach registers the gateway's own counters.
func (m *Metrics) Attach(g *gateway.Gateway) {
	m.reg.MustRegister(&gatewayCollector{g: g})
}

// AttachAccess registers the client access counters (refusals by reason,
// open HTTP connections, clients tracked by the rate limiter).
func (m *Metrics) AttachAccess(g *access.Guard) {
	m.reg.MustRegister(&accessCollector{g: g})
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// ObserveAccess is an httpfront AccessLog hook.
func (m *Metrics) ObserveAccess(r httpfront.AccessRecord) {
	m.requests.WithLabelValues(methodLabel(r.Method), strconv.Itoa(r.Status)).Inc()
	m.bytes.Add(float64(r.Bytes))
	m.duration.Observe(r.Duration.Seconds())
}

// methodLabel bounds the method label: net/http accepts any token as a
// method, and a label value per invented method would be a series
// created, and kept, for every one a client sends.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead:
		return m
	}
	return "OTHER"
}

// ObserveChunk is a fetch OnChunk hook.
func (m *Metrics) ObserveChunk(_ fetch.ServerID, took time.Duration) {
	m.chunk.Observe(took.Seconds())
}

type gatewayCollector struct{ g *gateway.Gateway }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	dReceived   = desc("httpgw_udp_datagrams_received_total", "Datagrams read from the UDP socket.")
	dReads      = desc("httpgw_udp_reads_total", "Batched reads of the UDP socket (system calls); datagrams received over reads is the datagrams each system call carried.")
	dSent       = desc("httpgw_udp_datagrams_sent_total", "Datagrams sent on the UDP socket.")
	dDrops      = desc("httpgw_udp_drops_total", "Datagrams dropped, by cause: garbage (did not parse), version (another protocol version; also counted as garbage), auth (bad MAC, cookie, Noise message or tag), replay, unknown_session, handshake_queue (handshake queue full), handshake_rate (per-source handshake limit under load), instances (too many servers from one address), catalog (catalog page over a bound), unlisted_key (a valid handshake from a server key not in -allowed-servers), stolen_identity (a handshake claiming a server instance another key owns).", "cause")
	dRevoked    = desc("httpgw_servers_revoked_total", "Servers whose sessions ended because their key left the allowed servers list.")
	dChallenges = desc("httpgw_challenges_total", "CHALLENGEs sent (answers to valid HELLOs, at most the handshake rate).")
	dHandshakes = desc("httpgw_handshakes_total", "Server sessions established (registrations and rekeys).")
	dPanics     = desc("httpgw_udp_handler_panics_total", "Datagrams whose handling panicked (recovered; the sending server evicted). Any is a bug.")
	dEvictions  = desc("httpgw_evictions_total", "Servers evicted (silence, goodbye, a handler panic, or repeated verification failures).")
	dBlamed     = desc("httpgw_verify_failures_total", "Verdicts against servers: leaves or hash blocks that did not match the content hash.")
	dVerified   = desc("httpgw_verified_bytes_total", "Bytes checked against their content hash before reaching a client.")
	dServers    = desc("httpgw_servers", "Servers in the pool.")
	dFiles      = desc("httpgw_catalog_files", "Distinct paths with a live holder.")
	dActive     = desc("httpgw_active_downloads", "Responses being fetched now.")
	dFetched    = desc("httpgw_fetched_bytes_total", "New bytes received from servers.")
	dDupBytes   = desc("httpgw_duplicate_bytes_total", "Bytes received that were already held (hedged or duplicated datagrams).")
	dRequests   = desc("httpgw_reads_total", "READ requests sent to servers.")
	dRetrans    = desc("httpgw_retransmissions_total", "READs re-asking for bytes asked before (loss recovery).")
	dEndgame    = desc("httpgw_endgame_reads_total", "Duplicate READs of the endgame (tail hedging).")
	dTimeouts   = desc("httpgw_read_timeouts_total", "READs given up after their RTO.")
	dUp         = desc("httpgw_server_up", "1 for each server in the pool, by name (the allowed list's, else -name; stable across restarts), server_id (the instance, new at every restart; not `instance`, which is Prometheus's own target label) and public key (shortened: its identity).", "server", "server_id", "key")
	dRTT        = desc("httpgw_server_rtt_seconds", "Smoothed first-byte latency of a server.", "server")
	dRate       = desc("httpgw_server_throughput_bytes_per_second", "Measured delivery rate of a server.", "server")
	dInflight   = desc("httpgw_server_inflight_bytes", "Bytes asked of a server and not yet received.", "server")
	dWindow     = desc("httpgw_server_window_bytes", "A server's window of bytes in flight.", "server")
	dBuffered   = desc("httpgw_buffered_bytes", "Chunk buffers held by all responses (bounded by -window-total, plus a 16 KiB piece per stalled response).")
	dStalled    = desc("httpgw_stalled_responses", "Responses whose client has not taken a write for a second (they hold at most what they are writing).")
	dReclaimed  = desc("httpgw_reclaimed_bytes_total", "Bytes of windows given back by stalled responses to make room for others.")
	dCacheHits  = desc("httpgw_cache_hits_total", "Small files served from the gateway's cache.")
	dCacheMiss  = desc("httpgw_cache_misses_total", "Small files not in the cache when asked.")
	dCacheBytes = desc("httpgw_cache_bytes", "Bytes held by the cache.")
)

func (c *gatewayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dReceived, dReads, dSent, dDrops, dChallenges, dHandshakes, dPanics, dEvictions, dRevoked, dBlamed, dVerified, dServers, dFiles, dActive,
		dFetched, dDupBytes, dRequests, dRetrans, dEndgame, dTimeouts, dUp, dRTT, dRate, dInflight, dWindow, dBuffered, dStalled, dReclaimed, dCacheHits, dCacheMiss, dCacheBytes} {
		ch <- d
	}
}

func (c *gatewayCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	u := c.g.Stats()
	counter(dReceived, u.Received)
	counter(dReads, u.Reads)
	counter(dSent, u.Sent)
	counter(dDrops, u.DropGarbage, "garbage")
	counter(dDrops, u.DropAuth, "auth")
	counter(dDrops, u.DropReplay, "replay")
	counter(dDrops, u.DropUnknownSession, "unknown_session")
	counter(dDrops, u.DropVersion, "version")
	counter(dDrops, u.DropHandshakeQueue, "handshake_queue")
	counter(dDrops, u.DropHandshakeRate, "handshake_rate")
	counter(dDrops, u.DropInstances, "instances")
	counter(dDrops, u.CatalogRefused, "catalog")
	counter(dDrops, u.DropUnlisted, "unlisted_key")
	counter(dDrops, u.DropIdentity, "stolen_identity")
	counter(dRevoked, u.Revoked)
	counter(dChallenges, u.Challenges)
	counter(dHandshakes, u.Handshakes)
	counter(dPanics, u.Panics)
	counter(dEvictions, u.Evictions)
	counter(dBlamed, u.Blamed)
	e := c.g.Engine().Stats()
	gauge(dActive, float64(e.Active))
	counter(dFetched, e.BytesDelivered)
	counter(dDupBytes, e.DuplicateBytes)
	counter(dRequests, e.Requests)
	counter(dRetrans, e.Retransmits)
	counter(dEndgame, e.EndgameRequests)
	counter(dTimeouts, e.Timeouts)
	counter(dVerified, e.VerifiedBytes)
	gauge(dBuffered, float64(e.Buffered))
	gauge(dStalled, float64(e.Stalled))
	counter(dReclaimed, e.ReclaimedBytes)
	if fc := c.g.Cache(); fc != nil {
		cs := fc.Stats()
		counter(dCacheHits, cs.Hits)
		counter(dCacheMiss, cs.Misses)
		gauge(dCacheBytes, float64(cs.Bytes))
	}
	servers := c.g.Pool().Servers()
	gauge(dServers, float64(len(servers)))
	gauge(dFiles, float64(c.g.Pool().Files()))
	live := map[fetch.ServerID]string{} // the label, formatted once
	named := map[string]int{}
	for _, s := range servers {
		named[s.Name]++
	}
	for _, s := range servers {
		// By name, so that series survive a restart; by name and
		// instance where two live servers share a name (say, two on one
		// host with the default name), as labels must be unique. A server
		// is named by its first heartbeat.
		label := s.Name
		if label == "" || named[s.Name] > 1 {
			label = strings.TrimPrefix(s.Name+"/", "/") + s.ID.String()
		}
		live[s.ID] = label
		gauge(dUp, 1, label, s.ID.String(), s.Key)
	}
	for _, l := range c.g.Engine().Links() {
		id, ok := live[l.ID]
		if !ok {
			continue
		}
		gauge(dRTT, l.SRTT.Seconds(), id)
		gauge(dRate, l.Rate, id)
		gauge(dInflight, float64(l.Inflight), id)
		gauge(dWindow, float64(l.Window), id)
	}
}

var (
	dRefused     = desc("httpgw_access_refused_total", "Clients refused, by reason: deny (-allow/-deny), rate (request rate, 429), conns_per_ip (429 at accept), conns_total (503 at accept).", "reason")
	dOpenConns   = desc("httpgw_http_connections", "Open client connections on the HTTP port.")
	dRateClients = desc("httpgw_access_rate_clients", "Clients (IPv4 addresses, IPv6 /64s) with a live rate-limit bucket.")
	dRateEvicted = desc("httpgw_access_rate_evictions_total", "Live rate-limit buckets dropped because the table was full.")
	dDelayed     = desc("httpgw_access_rate_delayed_total", "Requests over the rate limit served after waiting for their token.")
	dQueued      = desc("httpgw_access_queued_total", "Requests that waited for one of their client's slots (-max-requests-per-ip).")
)

type accessCollector struct{ g *access.Guard }

func (c *accessCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dRefused, dOpenConns, dRateClients, dRateEvicted, dDelayed, dQueued} {
		ch <- d
	}
}

func (c *accessCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.g.Stats()
	for _, r := range []struct {
		reason string
		n      uint64
	}{{access.ReasonDeny, s.Denied}, {access.ReasonRate, s.RateLimited},
		{access.ReasonConnsPerIP, s.ConnsPerIP}, {access.ReasonConnsTotal, s.ConnsTotal}} {
		ch <- prometheus.MustNewConstMetric(dRefused, prometheus.CounterValue, float64(r.n), r.reason)
	}
	ch <- prometheus.MustNewConstMetric(dOpenConns, prometheus.GaugeValue, float64(s.OpenConns))
	ch <- prometheus.MustNewConstMetric(dRateClients, prometheus.GaugeValue, float64(s.RateClients))
	ch <- prometheus.MustNewConstMetric(dRateEvicted, prometheus.CounterValue, float64(s.RateEvictions))
	ch <- prometheus.MustNewConstMetric(dDelayed, prometheus.CounterValue, float64(s.RateDelayed))
	ch <- prometheus.MustNewConstMetric(dQueued, prometheus.CounterValue, float64(s.Queued))
}
