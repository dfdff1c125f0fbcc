//go:build linux

// Command wan is the WAN benchmark (scenario g of the harness): HttpGw
// with three FastFileSrv, each behind its own emulated link (rate,
// one-way delay, drop-tail queue, random loss; internal/linkemu on TUN
// devices, since this kernel has no netem), against aria2c fetching the
// same file from three nginx mirrors over the same links, in the same
// run. It prints a markdown table with the goals and verdicts,
// writes bench/out/wan.{md,json} and a plot of goodput against RTT, and
// with -update-docs puts both into docs/BENCHMARKS.md.
//
//	go run ./bench/wan                 # the grid: RTT {10, 60, 200} ms × loss {0, 1%, 5%}, 100 MiB (as root)
//	go run ./bench/wan -quick          # the four goal cases only, 32 MiB
//	go run ./bench/wan -update-docs    # also rewrite the WAN section of docs/BENCHMARKS.md and docs/wan-grid.png
//
// Everything runs in network namespaces this program creates (10.80.0.0/16
// exists only inside them) and is removed on exit, also on SIGINT/SIGTERM.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fastfile/fschunk/internal/keys"
	"github.com/fastfile/fschunk/internal/linkemu"
)

// The links of the issue: 100 Mbit/s with a 50 ms drop-tail queue.
const (
	linkRate  = 100e6
	linkQueue = 50 * time.Millisecond
	// payloadShare is the part of a link's IP bytes that is payload for
	// TCP with timestamps (1,448 of 1,500); the gateway's datagrams carry
	// 1,428 file bytes in 1,500 (0.986 of TCP's). "Capacity" below is
	// TCP's: 3 × 100 Mbit/s × 1448/1500 = 36.2 MB/s.
	payloadShare = 1448.0 / 1500
)

type options struct {
	size, shortSize, fairSize int64
	quick                     bool
	grid                      string
	limit                     time.Duration
	fairFor                   time.Duration
	updateDocs                bool
	noInstall                 bool
	keep                      bool
	note                      string
	render                    string
}

type bench struct {
	opt  options
	repo string
	tmp  string
	t    *topo
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
}

func main() {
	var o options
	var size, short string
	flag.StringVar(&size, "size", "100MiB", "the file of the grid")
	flag.StringVar(&short, "short", "16MiB", "the short transfer's file")
	flag.BoolVar(&o.quick, "quick", false, "the four goal cases only, 32 MiB, 6 s fairness run")
	flag.StringVar(&o.grid, "grid", "", "cases as delay/loss pairs, e.g. 30ms/0,100ms/0.01 (default: RTT 10, 60, 200 ms × loss 0, 1%, 5%)")
	flag.DurationVar(&o.limit, "limit", 60*time.Second, "longest one download may take; a slower one is measured over this time")
	flag.DurationVar(&o.fairFor, "fair", 12*time.Second, "duration of the fairness run")
	flag.BoolVar(&o.updateDocs, "update-docs", false, "rewrite the WAN section of docs/BENCHMARKS.md and docs/wan-grid.png")
	flag.BoolVar(&o.noInstall, "no-install", false, "report missing tools instead of installing them with apt-get")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (files, logs)")
	flag.StringVar(&o.note, "note", "", "a note for the report (e.g. what else loaded the machine)")
	flag.StringVar(&o.render, "render", "", "measure nothing: print the report (and with -update-docs write the docs) from this `file`, a saved bench/out/wan.json")
	flag.Parse()
	var err error
	if o.size, err = parseSize(size); err == nil {
		o.shortSize, err = parseSize(short)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wan:", err)
		os.Exit(2)
	}
	if o.quick {
		o.size = min(o.size, 32<<20)
		o.fairFor = min(o.fairFor, 6*time.Second)
	}
	o.fairSize = 256 << 20
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run0(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "wan:", err)
		os.Exit(1)
	}
}

func parseSize(s string) (int64, error) {
	var n int64
	var unit string
	if _, err := fmt.Sscanf(s, "%d%s", &n, &unit); err != nil {
		if _, err2 := fmt.Sscanf(s, "%d", &n); err2 != nil {
			return 0, fmt.Errorf("size %q: want e.g. 100MiB", s)
		}
	}
	switch strings.TrimSuffix(strings.TrimSuffix(strings.ToLower(unit), "ib"), "b") {
	case "":
	case "k":
		n <<= 10
	case "m":
		n <<= 20
	case "g":
		n <<= 30
	default:
		return 0, fmt.Errorf("size %q: unknown unit", s)
	}
	if n <= 0 {
		return 0, fmt.Errorf("size %q must be positive", s)
	}
	return n, nil
}

// tools checks (and installs with apt-get) what the benchmark runs.
func tools(noInstall bool) error {
	pkgOf := map[string]string{"ip": "iproute2", "sysctl": "procps", "nginx": "nginx-light", "aria2c": "aria2", "curl": "curl"}
	var missing []string
	for _, c := range []string{"ip", "sysctl", "nginx", "aria2c", "curl"} {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, pkgOf[c])
		}
	}
	if len(missing) == 0 {
		return nil
	}
	logf("missing: %s", strings.Join(missing, ", "))
	if noInstall {
		return fmt.Errorf("missing tools: apt-get install %s", strings.Join(missing, " "))
	}
	logf("installing with apt-get: %s", strings.Join(missing, " "))
	if err := run("apt-get", "update", "-qq"); err != nil {
		return err
	}
	cmd := exec.Command("apt-get", append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "RUNLEVEL=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get install %s: %w: %s", strings.Join(missing, " "), err, out)
	}
	return nil
}

// repoRoot is the module's directory (the program runs from inside it).
func repoRoot() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("go list -m (run from inside the repository): %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func run0(ctx context.Context, o options) error {
	if o.render != "" {
		return render(o)
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, TUN devices): sudo go run ./bench/wan")
	}
	if f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0); err != nil {
		return fmt.Errorf("no TUN devices: %w", err)
	} else {
		f.Close()
	}
	cases, err := gridCases(o)
	if err != nil {
		return err
	}
	if err := tools(o.noInstall); err != nil {
		return err
	}
	repo, err := repoRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "fswan-")
	if err != nil {
		return err
	}
	if o.keep {
		logf("temporary directory kept: %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	b := &bench{opt: o, repo: repo, tmp: tmp}
	res, err := b.run(ctx, cases)
	if res != nil {
		if werr := b.report(res); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}

// render reports a saved run again.
func render(o options) error {
	js, err := os.ReadFile(o.render)
	if err != nil {
		return err
	}
	var res results
	if err := json.Unmarshal(js, &res); err != nil {
		return fmt.Errorf("%s: %w", o.render, err)
	}
	repo, err := repoRoot()
	if err != nil {
		return err
	}
	b := &bench{opt: o, repo: repo}
	return b.report(&res)
}

// gridCases is the list of (one-way delay, loss) cases.
func gridCases(o options) ([]*wanCase, error) {
	var cs []*wanCase
	switch {
	case o.grid != "":
		for _, f := range strings.Split(o.grid, ",") {
			d, l, ok := strings.Cut(strings.TrimSpace(f), "/")
			delay, err := time.ParseDuration(d)
			var loss float64
			if err == nil && ok {
				_, err = fmt.Sscanf(l, "%g", &loss)
			}
			if err != nil || !ok || delay < 0 || loss < 0 || loss >= 1 {
				return nil, fmt.Errorf("-grid: %q is not delay/loss such as 30ms/0.01", f)
			}
			cs = append(cs, &wanCase{Delay: delay, Loss: loss})
		}
	case o.quick:
		for _, g := range goalCases {
			cs = append(cs, &wanCase{Delay: g.delay, Loss: g.loss})
		}
	default:
		for _, d := range []time.Duration{5, 30, 100} {
			for _, l := range []float64{0, 0.01, 0.05} {
				cs = append(cs, &wanCase{Delay: d * time.Millisecond, Loss: l})
			}
		}
	}
	return cs, nil
}

// goalCases are the targets: share of the links' payload capacity.
var goalCases = []struct {
	delay time.Duration
	loss  float64
	share float64
}{
	{30 * time.Millisecond, 0, 0.90},
	{30 * time.Millisecond, 0.01, 0.85},
	{100 * time.Millisecond, 0.01, 0.80},
	{5 * time.Millisecond, 0.05, 0.85},
}

type wanCase struct {
	Delay   time.Duration `json:"delay"`
	Loss    float64       `json:"loss"`
	Gateway transfer      `json:"gateway"`
	Aria2   []transfer    `json:"aria2"`
}

// BestAria2 is the faster of the aria2 runs.
func (c *wanCase) BestAria2() (transfer, bool) {
	var best transfer
	ok := false
	for _, a := range c.Aria2 {
		if a.Err == "" && (!ok || a.Rate() > best.Rate()) {
			best, ok = a, true
		}
	}
	return best, ok
}

type fairResult struct {
	Delay time.Duration `json:"delay"`
	Alone transfer      `json:"gateway_alone"`
	GW    transfer      `json:"gateway_shared"`
	TCP   transfer      `json:"tcp_shared"`
}

type results struct {
	Date    time.Time    `json:"date"`
	Commit  string       `json:"commit"`
	Machine string       `json:"machine"`
	Size    int64        `json:"size"`
	Cases   []*wanCase   `json:"cases"`
	Short   *wanCase     `json:"short,omitempty"`
	ShortSz int64        `json:"short_size"`
	Fair    *fairResult  `json:"fair,omitempty"`
	Partial string       `json:"partial,omitempty"`
	Note    string       `json:"note,omitempty"`
	Opts    []string     `json:"args"`
	Errors  []string     `json:"errors,omitempty"`
	Links   linkSettings `json:"links"`
}

type linkSettings struct {
	RateBits float64       `json:"rate_bits"`
	Queue    time.Duration `json:"queue"`
}

var aria2Opts = [][]string{{"-x1", "-s3", "-k1M"}, {"-x16", "-s16", "-k1M"}}

// run sets everything up and measures; on an error it returns what it
// has measured so far, marked partial.
func (b *bench) run(ctx context.Context, cases []*wanCase) (*results, error) {
	res := &results{Date: time.Now().UTC(), Commit: gitCommit(b.repo), Machine: machine(), Size: b.opt.size,
		ShortSz: b.opt.shortSize, Note: b.opt.note, Opts: os.Args[1:], Links: linkSettings{linkRate, linkQueue}}
	bin, err := b.build()
	if err != nil {
		return nil, err
	}
	if err := b.files(); err != nil {
		return nil, err
	}
	logdir := filepath.Join(b.repo, "bench", "out", "wan-logs")
	os.RemoveAll(logdir)
	if err := os.MkdirAll(logdir, 0o755); err != nil {
		return nil, err
	}
	logf("namespaces fsw%d-{c,gw,r,s1,s2,s3}, three emulated %.0f Mbit/s links with a %v queue (logs in %s)",
		os.Getpid(), linkRate/1e6, linkQueue, logdir)
	b.t, err = newTopo(logdir, linkemu.Config{Rate: linkRate, QueueDelay: linkQueue})
	if err != nil {
		return nil, err
	}
	defer b.t.Close()
	if err := b.startAll(ctx, bin); err != nil {
		return nil, err
	}

	fail := func(err error) (*results, error) {
		res.Partial = err.Error()
		return res, err
	}
	for _, c := range cases {
		if err := b.measure(ctx, c, "wan.bin", b.opt.size); err != nil {
			return fail(err)
		}
		res.Cases = append(res.Cases, c)
	}
	short := &wanCase{Delay: 30 * time.Millisecond}
	if err := b.measure(ctx, short, "short.bin", b.opt.shortSize); err != nil {
		return fail(err)
	}
	res.Short = short
	fair, err := b.fairness(ctx, 30*time.Millisecond)
	if err != nil {
		return fail(err)
	}
	res.Fair = fair
	return res, nil
}

// measure runs one case: the gateway, then each aria2 variant.
func (b *bench) measure(ctx context.Context, c *wanCase, name string, size int64) error {
	if err := b.t.setLinks(0, linkemu.Config{Rate: linkRate, QueueDelay: linkQueue, Delay: c.Delay, Loss: c.Loss}); err != nil {
		return err
	}
	logf("case: %v one-way (RTT %v), %g%% loss each way, %s", c.Delay, 2*c.Delay, 100*c.Loss, human(size))
	// Let the heartbeats see the new path before measuring.
	if err := sleep(ctx, 2*time.Second); err != nil {
		return err
	}
	c.Gateway = b.gateway(ctx, name, b.opt.limit)
	logf("  %s", describe(c.Gateway))
	for _, o := range aria2Opts {
		x := b.withLinks(func() transfer { return b.aria2(ctx, name, size, o, b.opt.limit) })
		logf("  %s", describe(x))
		c.Aria2 = append(c.Aria2, x)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.t.emulatorErr()
}

// fairness: first the gateway alone on link 1 (the queue it builds), then
// the gateway and a TCP bulk download (curl from nginx on server 1) at
// once over that link. fair.bin is held by server 1 only.
func (b *bench) fairness(ctx context.Context, delay time.Duration) (*fairResult, error) {
	if err := b.t.setLinks(0, linkemu.Config{Rate: linkRate, QueueDelay: linkQueue, Delay: delay}); err != nil {
		return nil, err
	}
	logf("fairness: one link, RTT %v, %v", 2*delay, b.opt.fairFor)
	if err := sleep(ctx, 2*time.Second); err != nil {
		return nil, err
	}
	f := &fairResult{Delay: delay}
	f.Alone = b.gateway(ctx, "fair.bin", b.opt.fairFor, 1)
	logf("  alone: %s", describe(f.Alone))
	if err := sleep(ctx, time.Second); err != nil {
		return nil, err
	}
	b.t.resetStats()
	tcp := make(chan transfer, 1)
	go func() {
		tcp <- b.curl(ctx, "c", fmt.Sprintf("http://%s/fair.bin", serverIP(1)), b.opt.fairFor)
	}()
	f.GW = b.gateway(ctx, "fair.bin", b.opt.fairFor, 1)
	f.TCP = <-tcp
	f.TCP.Tool = "curl from nginx (TCP CUBIC)"
	up, down := b.t.linkStats(1)
	f.TCP.Up, f.TCP.Down = view(up), view(down)
	logf("  shared: gateway %s; TCP %s", describe(f.GW), describe(f.TCP))
	return f, ctx.Err()
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func describe(x transfer) string {
	s := fmt.Sprintf("%s: %s in %.2f s = %.1f MB/s", x.Tool, human(x.Bytes), x.Seconds, x.Rate()/1e6)
	if x.Capped {
		s += " (capped)"
	}
	if x.Err != "" {
		s += " ERROR " + x.Err
	}
	return s + fmt.Sprintf("; links down: %d pkts, %d queue drops, %d random drops, queue mean %.1f ms max %.1f ms",
		x.Down.Packets, x.Down.QueueDrops, x.Down.RandomDrops, x.Down.MeanQueueMs, x.Down.MaxQueueMs)
}

func human(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%.4g MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%d B", n)
	}
}

// build compiles the two commands under names of their own, so that a
// broad pkill of httpgw elsewhere on a shared machine leaves them alone.
func (b *bench) build() (string, error) {
	bin := filepath.Join(b.tmp, "bin")
	logf("building httpgw and fastfilesrv")
	cmd := exec.Command("go", "build", "-o", bin+"/", "./cmd/httpgw", "./cmd/fastfilesrv")
	cmd.Dir = b.repo
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w: %s", err, out)
	}
	for _, r := range [][2]string{{"httpgw", "fsw-gateway"}, {"fastfilesrv", "fsw-fileserver"}} {
		if err := os.Rename(filepath.Join(bin, r[0]), filepath.Join(bin, r[1])); err != nil {
			return "", err
		}
	}
	return bin, nil
}

// files writes the test files: wan.bin (the grid), short.bin and fair.bin
// (server 1 only), random bytes, one folder per server of hard links.
func (b *bench) files() error {
	all := filepath.Join(b.tmp, "files")
	if err := os.MkdirAll(all, 0o755); err != nil {
		return err
	}
	for i, f := range []struct {
		name string
		size int64
	}{{"wan.bin", b.opt.size}, {"short.bin", b.opt.shortSize}, {"fair.bin", b.opt.fairSize}} {
		if err := randomFile(filepath.Join(all, f.name), f.size, byte(i)); err != nil {
			return err
		}
	}
	for i := 1; i <= nServers; i++ {
		root := filepath.Join(b.tmp, fmt.Sprintf("root%d", i))
		if err := os.MkdirAll(root, 0o755); err != nil {
			return err
		}
		names := []string{"wan.bin", "short.bin"}
		if i == 1 {
			names = append(names, "fair.bin")
		}
		for _, n := range names {
			if err := os.Link(filepath.Join(all, n), filepath.Join(root, n)); err != nil {
				return err
			}
		}
	}
	return nil
}

func randomFile(path string, size int64, seed byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	r := mrand.NewChaCha8([32]byte{'w', 'a', 'n', seed})
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		r.Read(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		left -= n
	}
	return f.Close()
}

// startAll starts the mirrors, the gateway and the servers, and waits
// until the gateway offers the files from every server.
func (b *bench) startAll(ctx context.Context, bin string) error {
	key := filepath.Join(b.tmp, "fschunk.key")
	k := make([]byte, 32)
	rand.Read(k)
	if err := os.WriteFile(key, k, 0o600); err != nil {
		return err
	}
	// Version 3's static keys: the gateway's pair, each server's, the
	// servers' public keys listed for the gateway and the gateway's given
	// to each server.
	privFile := func(name string) (string, keys.Public, error) {
		k, err := keys.Generate()
		if err != nil {
			return "", keys.Public{}, err
		}
		path := filepath.Join(b.tmp, name+".x25519")
		return path, k.Public(), keys.WritePrivate(path, k)
	}
	gwKey, gwPub, err := privFile("gateway")
	if err != nil {
		return err
	}
	var list strings.Builder
	srvKeys := make([]string, nServers+1)
	for i := 1; i <= nServers; i++ {
		path, pub, err := privFile(fmt.Sprintf("s%d", i))
		if err != nil {
			return err
		}
		srvKeys[i] = path
		fmt.Fprintf(&list, "%s s%d\n", pub, i)
	}
	allowed := filepath.Join(b.tmp, "servers.txt")
	if err := os.WriteFile(allowed, []byte(list.String()), 0o600); err != nil {
		return err
	}
	for i := 1; i <= nServers; i++ {
		if err := b.nginx(i); err != nil {
			return err
		}
	}
	if _, err := b.t.start("gw", "gateway", filepath.Join(bin, "fsw-gateway"), "-key-file", key,
		"-private-key", gwKey, "-allowed-servers", allowed, "-http", gwHTTP, "-udp", gwWANIP+":"+gwUDPPort, "-admin", gwAdmin, "-log-level", "warn"); err != nil {
		return err
	}
	for i := 1; i <= nServers; i++ {
		if _, err := b.t.start(fmt.Sprintf("s%d", i), fmt.Sprintf("fileserver%d", i), filepath.Join(bin, "fsw-fileserver"),
			"-key-file", key, "-private-key", srvKeys[i], "-gateway-public-key", gwPub.String(),
			"-root", filepath.Join(b.tmp, fmt.Sprintf("root%d", i)),
			"-state", filepath.Join(b.tmp, fmt.Sprintf("s%d.state", i)), "-log-level", "warn", gwWANIP, gwUDPPort); err != nil {
			return err
		}
	}
	logf("waiting for the three servers to register and offer the files")
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var fs []struct {
			Path    string `json:"path"`
			Holders int    `json:"holders"`
		}
		if err := b.api(ctx, "/api/files", &fs); err == nil {
			h := map[string]int{}
			for _, f := range fs {
				h[strings.TrimPrefix(f.Path, "/")] = f.Holders
			}
			if h["wan.bin"] == nServers && h["short.bin"] == nServers && h["fair.bin"] == 1 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("the gateway did not offer the files from all three servers within 3 minutes (see bench/out/wan-logs)")
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
}

// nginx starts the mirror on server i, serving that server's folder.
func (b *bench) nginx(i int) error {
	dir := filepath.Join(b.tmp, fmt.Sprintf("nginx%d", i))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
user root;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy_temp;
    fastcgi_temp_path %[1]s/fastcgi_temp;
    uwsgi_temp_path %[1]s/uwsgi_temp;
    scgi_temp_path %[1]s/scgi_temp;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    server {
        listen %[2]s:80;
        root %[3]s;
    }
}
`, dir, serverIP(i), filepath.Join(b.tmp, fmt.Sprintf("root%d", i)))
	cf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		return err
	}
	_, err := b.t.start(fmt.Sprintf("s%d", i), fmt.Sprintf("nginx%d", i), "nginx", "-p", dir, "-e", dir+"/error.log", "-c", cf)
	return err
}

func gitCommit(repo string) string {
	out, err := exec.Command("git", "-C", repo, "describe", "--always", "--dirty", "--abbrev=7").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func machine() string {
	ver := func(args ...string) string {
		out, _ := exec.Command(args[0], args[1:]...).CombinedOutput()
		l, _, _ := strings.Cut(string(out), "\n")
		return strings.TrimSpace(l)
	}
	var uts syscall.Utsname
	syscall.Uname(&uts)
	rel := make([]byte, 0, len(uts.Release))
	for _, c := range uts.Release {
		if c == 0 {
			break
		}
		rel = append(rel, byte(c))
	}
	n, _ := exec.Command("nproc").Output()
	return fmt.Sprintf("%s cores, Linux %s, %s, %s, %s", strings.TrimSpace(string(n)), rel, ver("go", "version"),
		ver("nginx", "-v"), ver("aria2c", "--version"))
}
