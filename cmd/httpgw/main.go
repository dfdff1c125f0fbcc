// Command httpgw is HttpGw: an HTTP gateway that holds no files and
// fetches each one in chunks, in parallel, from every FastFileSrv holding
// it, over the FS Chunk Protocol. This file only parses flags and wires
// packages together.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fastfile/fschunk/internal/access"
	"github.com/fastfile/fschunk/internal/admin"
	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/cache"
	"github.com/fastfile/fschunk/internal/cli"
	"github.com/fastfile/fschunk/internal/demo"
	"github.com/fastfile/fschunk/internal/fetch"
	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/gateway"
	"github.com/fastfile/fschunk/internal/httpfront"
	"github.com/fastfile/fschunk/internal/metrics"
	"github.com/fastfile/fschunk/internal/pool"
	"github.com/fastfile/fschunk/internal/tlscert"
	"github.com/fastfile/fschunk/internal/transport"
)

const envPrefix = "HTTPGW"

type options struct {
	http, udp, admin, keyFile string
	// The gateway's key pairs and the servers it admits.
	privateKey, nextPrivateKey, allowedServers string
	adminHosts                                 string
	datagram                                   int
	policy                                     string
	chunk, window, budget                      size
	cacheSize, cacheMaxFile                    size
	logFormat, logLevel                        string
	demo                                       bool
	demoRoot                                   string
	demoServers                                int
	drain                                      time.Duration

	tlsCert, tlsKey string
	tlsSelfSigned   bool
	allow, deny     string
	rateLimit       float64
	rateBurst       int
	rateMaxWait     time.Duration
	maxReqPerIP     int
	maxConnsPerIP   int
	maxConns        int
	maxRanges       int
	sendTimeout     time.Duration
}

func main() { cli.Main("httpgw", run) }

func parse(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("httpgw", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.http, "http", ":8080", "HTTP listen `address`")
	fs.StringVar(&o.udp, "udp", ":8888", "UDP `address` for the FS Chunk Protocol (servers register here)")
	fs.StringVar(&o.admin, "admin", "127.0.0.1:8081", "admin listen `address` (API, pprof); keep it on loopback; \"\" disables it")
	fs.StringVar(&o.adminHosts, "admin-host", "", "comma-separated host `names` the admin listener answers to besides loopback addresses, localhost and the -admin address (others get 403: a DNS rebinding defence)")
	fs.StringVar(&o.keyFile, "key-file", "", "pre-shared key `file` (≥16 bytes; create one with: (umask 077; head -c 32 /dev/urandom > fschunk.key))")
	fs.StringVar(&o.privateKey, "private-key", "", "the gateway's X25519 private key `file` (make one with: httpgw genkey -out FILE; servers get its public key: httpgw pubkey < FILE); re-read on SIGHUP")
	fs.StringVar(&o.nextPrivateKey, "next-private-key", "", "during a key rotation, the gateway's next private key `file`: handshakes addressed to either key are answered; re-read on SIGHUP (README: rotating keys)")
	fs.StringVar(&o.allowedServers, "allowed-servers", "", "`file` of the servers admitted, one `PUBKEY [NAME]` a line (# comments); re-read when it changes and on SIGHUP: a key removed ends that server's sessions at once")
	fs.IntVar(&o.datagram, "datagram-size", 0, "DATA datagram `bytes` to ask servers for; 0: 1472 for IPv4 and 1452 for IPv6 servers (no fragmentation on Ethernet), 32768 for servers on this host")
	fs.StringVar(&o.policy, "policy", "least-time", "chunk scheduling `policy`: least-time or round-robin")
	o.chunk, o.window, o.budget = size{s: "128KiB", n: 128 << 10}, size{s: "24MiB", n: 24 << 20}, size{s: "32MiB", n: 32 << 20}
	o.cacheSize, o.cacheMaxFile = size{s: "32MiB", n: 32 << 20, zeroOK: true}, size{s: "1MiB", n: 1 << 20}
	fs.Var(&o.chunk, "chunk-size", "`bytes` per chunk and per READ")
	fs.Var(&o.window, "window", "`bytes` buffered ahead per response (memory bound; a long lossy path needs several round trips of it)")
	fs.Var(&o.budget, "window-total", "`bytes` buffered ahead by all responses together; each gets an equal share; beyond it, one 64 KiB leaf each; a response whose client stopped reading keeps at most the 16 KiB it is writing (memory bound)")
	fs.Var(&o.cacheSize, "cache-size", "memory `bytes` for small files kept whole, by content hash (always fresh: a changed file has a new hash); 0 disables")
	fs.Var(&o.cacheMaxFile, "cache-max-file", "largest file the cache keeps, in `bytes`")
	fs.StringVar(&o.logFormat, "log-format", "text", "log `format`: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.BoolVar(&o.demo, "demo", false, "run a demo: generate a sample folder and every key, and start embedded FastFileSrv")
	fs.StringVar(&o.demoRoot, "demo-root", "", "with -demo, serve this `folder` instead of generated samples")
	fs.IntVar(&o.demoServers, "demo-servers", 3, "with -demo, how many embedded servers")
	fs.DurationVar(&o.drain, "drain-timeout", 10*time.Second, "on SIGTERM, how long running downloads may take to finish")
	cli.AddVersionFlag(fs)
	fs.StringVar(&o.tlsCert, "tls-cert", "", "serve HTTPS (and HTTP/2) with this PEM certificate chain `file`; needs -tls-key")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key `file` for -tls-cert")
	fs.BoolVar(&o.tlsSelfSigned, "tls-self-signed", false, "serve HTTPS (and HTTP/2) with a certificate generated at start for localhost and this host; its SHA-256 fingerprint is logged")
	fs.StringVar(&o.allow, "allow", "", "if set, only clients in these comma-separated `CIDRs` or addresses may connect (e.g. 10.0.0.0/8,2001:db8::/32)")
	fs.StringVar(&o.deny, "deny", "", "clients in these comma-separated `CIDRs` or addresses are refused (403 over plain HTTP, closed over TLS), even if -allow admits them")
	fs.Float64Var(&o.rateLimit, "rate-limit", 1000, "sustained HTTP `requests/s` per client IP (IPv6: per /64), HTTP/2 streams included; faster requests are delayed (see -rate-max-wait); 0: no limit")
	fs.IntVar(&o.rateBurst, "rate-burst", 2000, "`requests` a client may make at once above -rate-limit")
	fs.DurationVar(&o.rateMaxWait, "rate-max-wait", 10*time.Second, "longest a request over -rate-limit is delayed; beyond it, 429 + Retry-After; 0: refuse at once")
	fs.IntVar(&o.maxReqPerIP, "max-requests-per-ip", 256, "requests in progress per client IP (IPv6: per /64), HTTP/2 streams included; more wait for one to finish; 0: no limit")
	fs.IntVar(&o.maxConnsPerIP, "max-conns-per-ip", 256, "open connections per client IP (IPv6: per /64); more are answered 429 and closed; 0: no limit")
	fs.IntVar(&o.maxConns, "max-conns", 4096, "open client connections in total; more are answered 503 and closed; 0: no limit")
	fs.DurationVar(&o.sendTimeout, "send-timeout", httpfront.DefaultSendTimeout, "cut a response (HTTP/1.1: close the connection; HTTP/2: reset the stream) when one write of it to the client takes longer; its buffers go back to the budget")
	fs.IntVar(&o.maxRanges, "max-ranges", httpfront.DefaultMaxRanges, "`ranges` one request may ask for once overlapping and near ones are merged; more get the whole file (200)")
	fs.Usage = cli.Usage(fs, envPrefix, "httpgw [flags]",
		"httpgw -demo                                   # everything in one process, open http://localhost:8080/",
		"httpgw -key-file fschunk.key -private-key gw.key -allowed-servers servers.txt -http :80 -udp :8888",
		"    # then on each server: fastfilesrv -key-file fschunk.key -private-key srv.key -gateway-public-key GWPUB -root /srv/files GATEWAY 8888",
		"httpgw -key-file fschunk.key -private-key gw.key -allowed-servers servers.txt -http :443 -tls-cert fullchain.pem -tls-key privkey.pem",
		"httpgw -demo -tls-self-signed                  # HTTPS and HTTP/2 on https://localhost:8080/")
	if err := cli.Parse(fs, envPrefix, args); err != nil {
		return nil, err
	}
	if o.sendTimeout <= 0 {
		return nil, fmt.Errorf("invalid -send-timeout %v: want a positive duration", o.sendTimeout)
	}
	if o.maxRanges < 1 {
		return nil, fmt.Errorf("invalid -max-ranges %d: want at least 1", o.maxRanges)
	}
	if o.demoServers < 1 {
		return nil, fmt.Errorf("invalid -demo-servers %d: want at least 1", o.demoServers)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (httpgw takes only flags; see -h)", fs.Arg(0))
	}
	return o, nil
}

// size is a flag holding a byte count written "128KiB", "8MiB" or
// "65536". It is checked when set, so a bad value from the environment is
// reported under the variable's name (cli.Parse), not the flag's.
type size struct {
	s      string
	n      int
	zeroOK bool
}

func (z *size) String() string { return z.s }

func (z *size) Set(v string) error {
	mult, num := 1, strings.TrimSpace(v)
	for _, u := range []struct {
		suf string
		m   int
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}} {
		if strings.HasSuffix(num, u.suf) {
			num, mult = strings.TrimSuffix(num, u.suf), u.m
			break
		}
	}
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil || n < 0 || n == 0 && !z.zeroOK || n > math.MaxInt32/mult {
		return errors.New("want a size like 128KiB, 8MiB or 65536")
	}
	z.s, z.n = v, n*mult
	return nil
}

// run runs the gateway until ctx is done (SIGINT/SIGTERM in main).
func run(ctx context.Context, args []string, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	log, err := cli.Logger(stderr, o.logFormat, o.logLevel)
	if err != nil {
		return err
	}
	policy, err := fetch.PolicyByName(o.policy)
	if err != nil {
		return err
	}
	chunk, window, budget := o.chunk.n, o.window.n, o.budget.n
	if chunk > fschunk.MaxReadLength {
		return fmt.Errorf("invalid -chunk-size %s: at most %d bytes", o.chunk.s, fschunk.MaxReadLength)
	}
	if budget < window {
		return fmt.Errorf("invalid -window-total %s: less than -window %s", o.budget.s, o.window.s)
	}
	var fileCache *cache.Cache
	if o.cacheSize.n != 0 {
		fileCache = cache.New(int64(o.cacheSize.n), int64(o.cacheMaxFile.n))
	}
	if o.datagram != 0 && (o.datagram < fschunk.MinDatagramSize || o.datagram > fschunk.MaxDatagramSize) {
		return fmt.Errorf("invalid -datagram-size %d: want 0 (auto) or %d..%d", o.datagram, fschunk.MinDatagramSize, fschunk.MaxDatagramSize)
	}
	gk, err := loadKeys(o, log)
	if err != nil {
		return err
	}
	guard, err := newGuard(o, log)
	if err != nil {
		return err
	}
	tlsConf, err := newTLS(o, log)
	if err != nil {
		return err
	}

	ctx, stop := context.WithCancel(ctx)
	defer stop()

	uc, err := transport.Listen(ctx, o.udp)
	if err != nil {
		return err
	}
	defer uc.Close()
	if rcv, snd, err := transport.Buffers(uc); err == nil && rcv < transport.SocketBuffer {
		log.Warn("small UDP socket buffers: run as root or raise net.core.rmem_max/wmem_max", "rcvbuf", rcv, "sndbuf", snd, "want", transport.SocketBuffer)
	}
	m := metrics.New()
	gw, err := gateway.New(gateway.Config{Conn: uc, Key: gk.psk, Static: gk.cur, NextStatic: gk.next, Allowed: gk.allowed(gk.list()), Logger: log, DatagramSize: o.datagram, Cache: fileCache,
		Fetch: fetch.Config{Policy: policy, ChunkSize: chunk, Window: window, Budget: budget, OnChunk: m.ObserveChunk}})
	if err != nil {
		return err
	}
	m.Attach(gw)
	m.AttachAccess(guard)
	hl, err := net.Listen("tcp", o.http)
	if err != nil {
		return fmt.Errorf("listen http %s: %w", o.http, err)
	}
	var al net.Listener
	if o.admin != "" {
		if al, err = net.Listen("tcp", o.admin); err != nil {
			hl.Close()
			return fmt.Errorf("listen admin %s: %w", o.admin, err)
		}
	}

	gwCtx, gwCancel := context.WithCancel(context.Background())
	gwDone := make(chan error, 1)
	go func() { gwDone <- gw.Run(gwCtx) }()
	gk.watch(gwCtx, o, gw)

	front := httpfront.NewHandler(gw.Source(), httpfront.Options{Logger: log, AccessLog: m.ObserveAccess, MaxRanges: o.maxRanges, SendTimeout: o.sendTimeout})
	hs := httpfront.NewServer(o.http, guard.Handler(front), httpfront.ServerOptions{TLS: tlsConf, Logger: log, SendTimeout: o.sendTimeout})
	go func() {
		// Plain HTTP refusals at accept get a short HTTP answer; over TLS
		// they are closed before any handshake.
		if err := httpfront.Serve(hs, guard.Listener(hl, tlsConf == nil)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "err", err)
			stop()
		}
	}()
	var as *http.Server
	if al != nil {
		as = &http.Server{Handler: admin.Handler(gw, m.Handler(), guard, adminHosts(o)...), ReadHeaderTimeout: 10 * time.Second}
		go as.Serve(al)
	}
	log.Info("httpgw listening", "http", hl.Addr().String(), "tls", tlsConf != nil, "udp", uc.LocalAddr().String(), "admin", o.admin, "version", cli.VersionString("httpgw"))

	var dm *demoRun
	if o.demo {
		// The embedded servers do not stop with ctx (the signal): they
		// must outlive the drain, or the downloads being drained fail.
		dm, err = startDemo(context.WithoutCancel(ctx), o, gk, uc.LocalAddr().(*net.UDPAddr), hl.Addr().(*net.TCPAddr), tlsConf, log)
		if err != nil {
			hs.Close()
			if as != nil {
				as.Close()
			}
			gwCancel()
			<-gwDone
			return err
		}
		// The banner comes once every sample is served: printed earlier,
		// a user who clicks at once gets 404 for a file still hashing.
		dm.waitServed(ctx, gw.Pool(), demoReadyTimeout, log)
		log.Info("demo running", dm.banner...)
	}

	<-ctx.Done()
	log.Info("shutting down: draining responses (a second Ctrl-C or SIGTERM exits at once)", "timeout", o.drain)
	sctx, cancel := context.WithTimeout(context.Background(), o.drain)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("drain timed out; closing remaining connections", "err", err)
		hs.Close()
	}
	if as != nil {
		as.Close()
	}
	if dm != nil {
		dm.stop()
	}
	gwCancel()
	if err := <-gwDone; err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	log.Info("bye")
	return nil
}

// demoRun is the demo's embedded servers and the temporary folders they
// use.
type demoRun struct {
	servers []*demo.Server
	temp    []string // removed by stop
	banner  []any    // the "demo running" log line's attributes
}

// stop stops the servers (they say goodbye), then removes the temporary
// folders. run calls it before returning, so that nothing is left behind
// when the process exits (a context.AfterFunc raced with the exit).
func (d *demoRun) stop() {
	for _, s := range d.servers {
		s.Stop()
	}
	for _, dir := range d.temp {
		os.RemoveAll(dir)
	}
}

func startDemo(ctx context.Context, o *options, gk *gwKeys, udp *net.UDPAddr, web *net.TCPAddr, tlsConf *tls.Config, log *slog.Logger) (_ *demoRun, err error) {
	d := &demoRun{}
	defer func() {
		if err != nil {
			d.stop()
		}
	}()
	root := o.demoRoot
	stateDir, err := os.MkdirTemp("", "httpgw-demo-state-")
	if err != nil {
		return nil, err
	}
	d.temp = append(d.temp, stateDir)
	if root == "" {
		dir, err := os.MkdirTemp("", "httpgw-demo-files-")
		if err != nil {
			return nil, err
		}
		d.temp = append(d.temp, dir)
		if err := demo.WriteSample(dir); err != nil {
			return nil, err
		}
		root = dir
	}
	gwAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(udp.Port))
	for i := 1; i <= o.demoServers; i++ {
		name := fmt.Sprintf("demo-%d", i)
		s, err := demo.StartServer(ctx, demo.ServerConfig{Gateways: []string{gwAddr}, Root: root, StateDir: stateDir, Key: gk.psk,
			Static: gk.demo[i-1], GatewayKeys: []auth.PublicKey{gk.cur.Public()}, Logger: log.With("fastfilesrv", name)}, name)
		if err != nil {
			return nil, err
		}
		d.servers = append(d.servers, s)
	}
	url, curl := fmt.Sprintf("http://localhost:%d/", web.Port), "curl"
	if tlsConf != nil {
		url = fmt.Sprintf("https://localhost:%d/", web.Port)
		if o.tlsSelfSigned {
			// -k skips the CA check; curl still checks the pin.
			pin, _ := tlscert.PublicKeyPin(tlsConf.Certificates[0])
			curl = "curl -k --pinnedpubkey '" + pin + "'"
		}
	}
	d.banner = []any{"servers", len(d.servers), "root", root, "open", url,
		"try", fmt.Sprintf("%s -o video.mp4 '%svideos/sample%%20video.mp4'", curl, url),
		"status", "http://" + o.admin + "/status"}
	return d, nil
}

// demoReadyTimeout bounds how long the demo waits for its servers to hash
// and announce everything before it prints its banner anyway (a large
// -demo-root on a slow disk).
const demoReadyTimeout = time.Minute

// waitServed returns once every embedded server has hashed its folder and
// the gateway holds each server's whole catalog, so that every file the
// banner points at is served; or at ctx's end or the timeout, with a
// warning. The pool has no change notification, so this polls it; it runs
// once, at start-up.
func (d *demoRun) waitServed(ctx context.Context, p *pool.Pool, timeout time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	want := make(map[string]int, len(d.servers))
	for _, s := range d.servers {
		select {
		case <-s.Catalog.Ready():
		case <-ctx.Done():
			log.Warn("demo: servers still hashing; some files answer 404 until they are announced", "waited", time.Since(start).Round(time.Millisecond))
			return
		}
		_, entries := s.Catalog.Snapshot()
		want[s.Name] = len(entries)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		served := 0
		for _, si := range p.Servers() {
			if n, ok := want[si.Name]; ok && si.Files >= n {
				served++
			}
		}
		if served == len(want) {
			log.Debug("demo: every file announced", "took", time.Since(start).Round(time.Millisecond))
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			log.Warn("demo: not every server's catalog reached the gateway yet", "servers", len(want), "complete", served)
			return
		}
	}
}

// newGuard makes the client access control from -allow, -deny, -rate-limit,
// -rate-burst, -max-conns-per-ip and -max-conns.
func newGuard(o *options, log *slog.Logger) (*access.Guard, error) {
	allow, err := access.ParsePrefixes(o.allow)
	if err != nil {
		return nil, fmt.Errorf("invalid -allow: %w", err)
	}
	deny, err := access.ParsePrefixes(o.deny)
	if err != nil {
		return nil, fmt.Errorf("invalid -deny: %w", err)
	}
	switch {
	case o.rateLimit < 0 || math.IsNaN(o.rateLimit) || math.IsInf(o.rateLimit, 0):
		return nil, fmt.Errorf("invalid -rate-limit %v: want requests per second ≥ 0 (0: no limit)", o.rateLimit)
	case o.rateLimit > 0 && o.rateBurst < 1:
		return nil, fmt.Errorf("invalid -rate-burst %d: want at least 1 with -rate-limit", o.rateBurst)
	case o.rateMaxWait < 0:
		return nil, fmt.Errorf("invalid -rate-max-wait %v: want ≥ 0 (0: refuse at once)", o.rateMaxWait)
	case o.maxReqPerIP < 0:
		return nil, fmt.Errorf("invalid -max-requests-per-ip %d: want ≥ 0 (0: no limit)", o.maxReqPerIP)
	case o.maxConnsPerIP < 0:
		return nil, fmt.Errorf("invalid -max-conns-per-ip %d: want ≥ 0 (0: no limit)", o.maxConnsPerIP)
	case o.maxConns < 0:
		return nil, fmt.Errorf("invalid -max-conns %d: want ≥ 0 (0: no limit)", o.maxConns)
	}
	g, err := access.New(access.Config{Allow: allow, Deny: deny, Rate: o.rateLimit, Burst: o.rateBurst, MaxDelay: o.rateMaxWait,
		MaxRequestsPerClient: o.maxReqPerIP, MaxConnsPerClient: o.maxConnsPerIP, MaxConns: o.maxConns, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("access control: %w", err)
	}
	log.Info("client access control", "allow", o.allow, "deny", o.deny, "rate_limit", o.rateLimit,
		"rate_burst", o.rateBurst, "rate_max_wait", o.rateMaxWait, "max_requests_per_ip", o.maxReqPerIP, "max_conns_per_ip", o.maxConnsPerIP, "max_conns", o.maxConns)
	return g, nil
}

// newTLS makes the HTTPS configuration from -tls-cert/-tls-key or
// -tls-self-signed; nil means plain HTTP.
func newTLS(o *options, log *slog.Logger) (*tls.Config, error) {
	var cert tls.Certificate
	switch {
	case o.tlsSelfSigned && (o.tlsCert != "" || o.tlsKey != ""):
		return nil, errors.New("-tls-self-signed and -tls-cert/-tls-key exclude each other: pick one")
	case (o.tlsCert == "") != (o.tlsKey == ""):
		return nil, errors.New("-tls-cert and -tls-key go together: give both PEM files")
	case o.tlsSelfSigned:
		hosts := []string{"localhost", "127.0.0.1", "::1"}
		if h, err := os.Hostname(); err == nil && h != "" && !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
		if h, _, err := net.SplitHostPort(o.http); err == nil && h != "" && !slices.Contains(hosts, h) {
			if ip := net.ParseIP(h); ip == nil || !ip.IsUnspecified() {
				hosts = append(hosts, h) // the address it was asked to listen on
			}
		}
		c, err := tlscert.SelfSigned(hosts, time.Now())
		if err != nil {
			return nil, err
		}
		pin, err := tlscert.PublicKeyPin(c)
		if err != nil {
			return nil, err
		}
		log.Info("self-signed TLS certificate (new at every start; pin it or use -tls-cert)", "hosts", strings.Join(hosts, ","),
			"sha256_fingerprint", tlscert.Fingerprint(c), "curl_pin", pin)
		cert = c
	case o.tlsCert != "":
		c, err := tlscert.Load(o.tlsCert, o.tlsKey)
		if err != nil {
			return nil, err
		}
		log.Info("TLS certificate", "file", o.tlsCert, "sha256_fingerprint", tlscert.Fingerprint(c))
		cert = c
	default:
		return nil, nil
	}
	return tlscert.ServerConfig(cert), nil
}

// adminHosts are the Host names the admin listener answers to besides
// loopback addresses and localhost: its own address (when it is not a
// wildcard) and -admin-host.
func adminHosts(o *options) []string {
	var hosts []string
	if h, _, err := net.SplitHostPort(o.admin); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
		hosts = append(hosts, h)
	}
	for _, h := range strings.Split(o.adminHosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	return hosts
}
