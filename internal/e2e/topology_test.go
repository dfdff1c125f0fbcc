package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/admin"
	"github.com/fastfile/fschunk/internal/keys"
	"github.com/fastfile/fschunk/internal/linkemu"
)

// The statement's topology, each host a network namespace on one bridge
// (in its own namespace, the "switch"), every link rate-limited by tbf on
// both ends. Addresses are in 10.99.0.0/24, which exists only inside these
// namespaces.
const (
	topoGwIP       = "10.99.0.1"
	topoGwUDP      = "8888"
	topoServerRate = "20mbit" // three of them: the 60 Mbit/s the downloads share
	topoGwRate     = "200mbit"
	topoClientRate = "100mbit"
	topoPDFWidth   = 2048 // × 4096 RGB pixels: a 24 MiB image in the PDF
	topoVideoSize  = 32 << 20
	topoLinkDelay  = 5 * time.Millisecond // one-way, each server link
	topoLinkLoss   = 0.005                // each way, each server link
)

// topoHosts are the namespaces besides the switch: name → address. s4
// starts empty and gets a FastFileSrv in the middle of the downloads.
var topoHosts = []struct{ name, ip, rate string }{
	{"gw", topoGwIP, topoGwRate},
	{"s1", "10.99.0.11", topoServerRate},
	{"s2", "10.99.0.12", topoServerRate},
	{"s3", "10.99.0.13", topoServerRate},
	{"s4", "10.99.0.14", topoServerRate},
	{"c1", "10.99.0.21", topoClientRate},
	{"c2", "10.99.0.22", topoClientRate},
}

// TestTopologyNamespaces runs the built httpgw and fastfilesrv binaries in
// the statement's topology: a gateway host, three server hosts and two
// client hosts, each a network namespace, on rate-limited links. The two
// clients fetch a 24 MiB PDF and a 32 MiB video with wget at the same time;
// a quarter of the way in one server is SIGKILLed, and at 40% a fourth
// server host starts. Both files must arrive sha256-identical, the killed
// server must be evicted and the new one must have delivered bytes.
// It needs root, ip(8), tc(8) and wget; it skips without them.
func TestTopologyNamespaces(t *testing.T) {
	topoRequire(t)
	began := time.Now()
	dir := t.TempDir()
	bin := topoBuild(t, dir)
	built := time.Now()

	n := topoSetup(t, dir)
	files := topoFiles(t, dir)
	key := filepath.Join(dir, "fschunk.key")
	k := make([]byte, 32)
	rand.Read(k)
	if err := os.WriteFile(key, k, 0o600); err != nil {
		t.Fatal(err)
	}

	// Key pairs as an operator makes them: one per program, the servers'
	// public keys listed for the gateway, the gateway's given to each
	// server.
	privFile := func(name string) (path string, pub keys.Public) {
		k, err := keys.Generate()
		if err != nil {
			t.Fatal(err)
		}
		path = filepath.Join(dir, name+".key")
		if err := keys.WritePrivate(path, k); err != nil {
			t.Fatal(err)
		}
		return path, k.Public()
	}
	gwKey, gwPub := privFile("httpgw")
	var list strings.Builder
	srvKeys := map[string]string{}
	for _, h := range []string{"s1", "s2", "s3", "s4"} {
		path, pub := privFile(h)
		srvKeys[h] = path
		fmt.Fprintf(&list, "%s %s\n", pub, h)
	}
	allowed := filepath.Join(dir, "servers.txt")
	if err := os.WriteFile(allowed, []byte(list.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	n.start("gw", "httpgw", filepath.Join(bin, "httpgw"), "-key-file", key, "-private-key", gwKey, "-allowed-servers", allowed,
		"-http", topoGwIP+":8080", "-udp", topoGwIP+":"+topoGwUDP, "-admin", "127.0.0.1:8081")
	server := func(host string) *topoProc {
		root := filepath.Join(dir, "root-"+host)
		if err := os.MkdirAll(root, 0o755); err != nil {
			t.Fatal(err)
		}
		for name := range files {
			// Each server its own folder; hard links spare the disk.
			if err := os.Link(filepath.Join(dir, "files", name), filepath.Join(root, name)); err != nil && !errors.Is(err, os.ErrExist) {
				t.Fatal(err)
			}
		}
		// The statement's command line: fastfilesrv … GATEWAY_HOST PORT.
		return n.start(host, "fastfilesrv-"+host, filepath.Join(bin, "fastfilesrv"), "-key-file", key,
			"-private-key", srvKeys[host], "-gateway-public-key", gwPub.String(), "-root", root, "-state", filepath.Join(dir, host+".state"), topoGwIP, topoGwUDP)
	}
	var srv2 *topoProc
	for _, h := range []string{"s1", "s2", "s3"} {
		p := server(h)
		if h == "s2" {
			srv2 = p
		}
	}
	n.waitFor("both files offered by 3 servers", 30*time.Second, func() (bool, error) {
		var fs []struct {
			Path    string `json:"path"`
			Holders int    `json:"holders"`
		}
		if err := n.api("/api/files", &fs); err != nil {
			return false, nil // not up yet
		}
		ok := 0
		for _, f := range fs {
			if _, known := files[f.Path]; known && f.Holders == 3 {
				ok++
			}
		}
		return ok == len(files), nil
	})
	ready := time.Now()

	// The two downloads, at once.
	type download struct {
		client, name, out string
		proc              *topoProc
		end               time.Time
	}
	dls := []*download{{client: "c1", name: "report.pdf"}, {client: "c2", name: "video.mp4"}}
	var total int64
	for _, d := range dls {
		total += int64(len(files[d.name]))
	}
	t0 := time.Now()
	for _, d := range dls {
		d.out = filepath.Join(dir, d.client+"-"+d.name)
		// One try: a retry would resume with Range and hide a broken body.
		d.proc = n.start(d.client, "wget-"+d.client, "wget", "--no-config", "--no-proxy", "-nv", "--tries=1",
			"--timeout=30", "-O", d.out, "http://"+topoGwIP+":8080/"+d.name)
	}
	progress := func() int64 {
		var got int64
		for _, d := range dls {
			if st, err := os.Stat(d.out); err == nil {
				got += st.Size()
			}
		}
		return got
	}
	var killedAt, startedAt, joinedAt time.Duration
	var killedPct, startedPct float64
	var s2Delivered uint64
	joined := false
	deadline := time.After(60 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for running := len(dls); running > 0; {
		select {
		case <-deadline:
			t.Fatalf("downloads not done after 60 s: %d of %d bytes", progress(), total)
		case <-tick.C:
		}
		running = 0
		for _, d := range dls {
			if d.end.IsZero() && d.proc.exited() {
				d.end = time.Now()
			}
			if d.end.IsZero() {
				running++
			}
		}
		got := progress()
		pct := 100 * float64(got) / float64(total)
		switch {
		case killedAt == 0 && pct >= 25:
			ss, err := n.servers()
			if err != nil {
				t.Fatal(err)
			}
			if v := topoFind(ss, "10.99.0.12"); v != nil {
				s2Delivered = v.Delivered
			}
			srv2.kill()
			killedAt, killedPct = time.Since(t0), pct
			if s2Delivered == 0 {
				t.Fatal("s2 had delivered nothing when it was killed: it was not part of the downloads")
			}
		case killedAt != 0 && startedAt == 0 && pct >= 40:
			server("s4")
			startedAt, startedPct = time.Since(t0), pct
		case startedAt != 0 && !joined:
			if ss, err := n.servers(); err == nil && topoFind(ss, "10.99.0.14") != nil {
				joined, joinedAt = true, time.Since(t0)
			}
		}
	}
	if killedAt == 0 || startedAt == 0 {
		t.Fatalf("the downloads ended before the events (server killed at %v, server started at %v): links too fast?", killedAt, startedAt)
	}

	for _, d := range dls {
		if err := d.proc.wait(); err != nil {
			t.Errorf("%s: wget %s: %v (log: %s)", d.client, d.name, err, topoTail(d.proc.log, 5))
			continue
		}
		body, err := os.ReadFile(d.out)
		if err != nil {
			t.Fatal(err)
		}
		got, want := sha256.Sum256(body), sha256.Sum256(files[d.name])
		if got != want {
			t.Errorf("%s: %s: sha256 %x (%d bytes), want %x (%d bytes)", d.client, d.name, got[:8], len(body), want[:8], len(files[d.name]))
			continue
		}
		el := d.end.Sub(t0)
		t.Logf("%s wget %s: %.1f MiB in %.2f s = %.2f MB/s (%.1f Mbit/s), sha256 %s identical",
			d.client, d.name, float64(len(body))/(1<<20), el.Seconds(), float64(len(body))/el.Seconds()/1e6,
			float64(len(body))*8/el.Seconds()/1e6, hex.EncodeToString(got[:6]))
	}
	if t.Failed() {
		t.FailNow()
	}
	last := dls[0].end
	for _, d := range dls[1:] {
		if d.end.After(last) {
			last = d.end
		}
	}
	el := last.Sub(t0)
	t.Logf("both: %.1f MiB in %.2f s = %.2f MB/s (%.1f Mbit/s) over 3 server links of %s", float64(total)/(1<<20), el.Seconds(),
		float64(total)/el.Seconds()/1e6, float64(total)*8/el.Seconds()/1e6, topoServerRate)
	t.Logf("one %s link carries at most %.2f MB/s: the downloads together got %.2f× that", topoServerRate,
		topoMbit(topoServerRate)/8, float64(total)/el.Seconds()/1e6/(topoMbit(topoServerRate)/8))
	t.Logf("s2 SIGKILLed at %.2f s (%.0f%% of the bytes, %.1f MiB from s2 so far), s4 started at %.2f s (%.0f%%), registered at %.2f s",
		killedAt.Seconds(), killedPct, float64(s2Delivered)/(1<<20), startedAt.Seconds(), startedPct, joinedAt.Seconds())

	// The killed server is evicted; the newcomer took part.
	var ss []admin.ServerView
	n.waitFor("eviction of s2", 15*time.Second, func() (bool, error) {
		var err error
		if ss, err = n.servers(); err != nil {
			return false, err
		}
		return topoFind(ss, "10.99.0.12") == nil, nil
	})
	for _, h := range []struct{ name, ip string }{{"s1", "10.99.0.11"}, {"s3", "10.99.0.13"}, {"s4", "10.99.0.14"}} {
		v := topoFind(ss, h.ip)
		if v == nil {
			t.Errorf("%s (%s) is not in the gateway's pool", h.name, h.ip)
			continue
		}
		t.Logf("%s delivered %.1f MiB (srtt %.1f ms, %d retransmits, %d timeouts)", h.name, float64(v.Delivered)/(1<<20),
			float64(v.SRTTMicros)/1000, v.Retransmits, v.Timeouts)
		if v.Delivered == 0 {
			t.Errorf("%s delivered nothing", h.name)
		}
	}
	if len(n.links) > 0 {
		var in, lost, out uint64
		for _, l := range n.links {
			for _, d := range []*linkemu.Direction{l.Up, l.Down} {
				s := d.Stats()
				in, lost, out = in+s.PacketsIn, lost+s.RandomDrops, out+s.PacketsOut
			}
		}
		t.Logf("emulated server links: %d frames in, %d lost at random (%.2f%%), %d delivered %v late", in, lost,
			100*float64(lost)/float64(max(in, 1)), out, topoLinkDelay)
		// The loss was applied: about 0.5% of tens of thousands of frames.
		if lost == 0 || float64(lost) > 3*topoLinkLoss*float64(in) {
			t.Errorf("%d of %d frames lost on links configured for %.1f%% loss", lost, in, 100*topoLinkLoss)
		}
	}
	t.Logf("wall time: build %.1f s, set-up and registration %.1f s, downloads %.1f s, total %.1f s",
		built.Sub(began).Seconds(), ready.Sub(built).Seconds(), el.Seconds(), time.Since(began).Seconds())
}

// topoRequire skips unless the test can build namespaces and shape links.
func topoRequire(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, veth, tc): run go test as root; CI does")
	}
	for _, c := range []string{"ip", "tc", "wget", "go"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("needs %s in PATH (Debian: iproute2, wget; .ci/run installs them)", c)
		}
	}
	probe := fmt.Sprintf("fstopo%d-probe%x", os.Getpid(), mrand.Uint32())
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		t.Skipf("cannot create network namespaces here (ip netns add: %v: %s)", err, bytes.TrimSpace(out))
	}
	exec.Command("ip", "netns", "del", probe).Run()
}

// topoBuild builds the two commands into dir/bin.
func topoBuild(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "bin")
	cmd := exec.Command("go", "build", "-buildvcs=false", "-o", bin+"/",
		"github.com/fastfile/fschunk/cmd/httpgw", "github.com/fastfile/fschunk/cmd/fastfilesrv")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// topoFiles writes the two files served, in dir/files.
func topoFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{"report.pdf": topoPDF(topoPDFWidth, 2*topoPDFWidth), "video.mp4": topoVideo(topoVideoSize)}
	if err := os.MkdirAll(filepath.Join(dir, "files"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, "files", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

// topoNet is the set of namespaces of one run, named after the test
// process and a random tag so that parallel runs never share one.
type topoNet struct {
	t      *testing.T
	prefix string
	dir    string
	links  []*linkemu.Pair // the emulated server links, if any
}

func (n *topoNet) ns(host string) string { return n.prefix + host }

// topoSetup builds the switch and every host. Every namespace is deleted
// at cleanup, after the processes in it are killed (t.Cleanup runs in
// reverse order and the processes are started later).
func topoSetup(t *testing.T, dir string) *topoNet {
	t.Helper()
	n := &topoNet{t: t, prefix: fmt.Sprintf("fstopo%d-%04x-", os.Getpid(), mrand.Uint32N(1<<16)), dir: dir}
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
			for _, l := range logs {
				t.Logf("--- %s (last lines)\n%s", filepath.Base(l), topoTail(l, 15))
			}
		}
	})
	sw := n.addNS("sw")
	n.must("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
	n.must("ip", "-n", sw, "link", "set", "br0", "up")
	// The server links' delay and loss: from the user-space link emulator
	// where TAP devices work (this kernel has no netem), else from netem,
	// else none.
	emu := topoTAP()
	netem := !emu && exec.Command("ip", "netns", "exec", sw, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms").Run() == nil
	switch {
	case emu:
		t.Logf("server links get %v delay and %.1f%% loss each way from the link emulator (internal/linkemu, TAP devices)", topoLinkDelay, 100*topoLinkLoss)
	case netem:
		n.must("ip", "netns", "exec", sw, "tc", "qdisc", "del", "dev", "lo", "root")
		t.Logf("netem available: server links also get 5 ms ± 1 ms delay and 0.5%% loss")
	default:
		t.Logf("neither TAP devices nor netem here: links are rate-limited only, the delay and loss part is skipped")
	}
	for _, h := range topoHosts {
		ns := n.addNS(h.name)
		port := "p-" + h.name
		n.must("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", sw)
		server := strings.HasPrefix(h.name, "s")
		if emu && server {
			n.emulate(h.name, port)
		} else {
			n.must("ip", "-n", sw, "link", "set", port, "master", "br0")
		}
		n.must("ip", "-n", sw, "link", "set", port, "up")
		n.must("ip", "-n", ns, "addr", "add", h.ip+"/24", "dev", "eth0")
		n.must("ip", "-n", ns, "link", "set", "eth0", "up")
		// Both directions: the host's egress and the switch's egress
		// towards the host.
		n.shape(ns, "eth0", h.rate, netem && server)
		n.shape(sw, port, h.rate, false)
	}
	return n
}

// topoTAP reports whether TAP devices can be made here.
func topoTAP() bool {
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// emulate puts the link emulator between the switch and a server host:
// the host's switch port goes into a bridge of its own with one TAP
// device, whose twin is a port of br0, and the emulator carries frames
// between the two with the links' delay and loss. Addresses and ARP are
// unchanged (it is still one Ethernet segment).
func (n *topoNet) emulate(host, port string) {
	n.t.Helper()
	sw := n.ns("sw")
	br, toSwitch, toHost := "b-"+host, "ta-"+host, "tb-"+host
	n.must("ip", "-n", sw, "link", "add", br, "type", "bridge")
	n.must("ip", "-n", sw, "link", "set", br, "up")
	n.must("ip", "-n", sw, "link", "set", port, "master", br)
	cfg := linkemu.Config{Delay: topoLinkDelay, Loss: topoLinkLoss, Seed: uint64(len(n.links))}
	p, err := linkemu.OpenPair("/var/run/netns/"+sw, "link "+host, toSwitch, toHost, linkemu.TAP, cfg, cfg)
	if err != nil {
		n.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	n.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			n.t.Errorf("emulator: %v", err)
		}
	})
	n.must("ip", "-n", sw, "link", "set", toSwitch, "master", "br0")
	n.must("ip", "-n", sw, "link", "set", toHost, "master", br)
	n.links = append(n.links, p)
}

func (n *topoNet) addNS(host string) string {
	ns := n.ns(host)
	n.must("ip", "netns", "add", ns)
	n.t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			n.t.Errorf("ip netns del %s: %v: %s", ns, err, out)
		}
	})
	n.must("ip", "-n", ns, "link", "set", "lo", "up")
	return ns
}

// shape limits dev's egress to rate; with netem, delay and loss come first
// and tbf is its child (the arrangement of the netem documentation).
func (n *topoNet) shape(ns, dev, rate string, netem bool) {
	tc := []string{"ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev}
	tbf := []string{"tbf", "rate", rate, "burst", "32kb", "latency", "50ms"}
	if !netem {
		n.must(append(append(tc, "root"), tbf...)...)
		return
	}
	n.must(append(tc, "root", "handle", "1:", "netem", "delay", "5ms", "1ms", "loss", "0.5%")...)
	n.must(append(append(tc, "parent", "1:1", "handle", "10:"), tbf...)...)
}

func (n *topoNet) must(args ...string) {
	n.t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		n.t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
}

// api fetches a JSON document from the gateway's admin listener, which
// is on the loopback of the gateway's namespace.
func (n *topoNet) api(path string, v any) error {
	out, err := exec.Command("ip", "netns", "exec", n.ns("gw"), "wget", "--no-config", "--no-proxy", "-q", "-T", "5", "-O", "-", "http://127.0.0.1:8081"+path).Output()
	if err != nil {
		return fmt.Errorf("admin %s: %w", path, err)
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("admin %s: %w", path, err)
	}
	return nil
}

func (n *topoNet) servers() ([]admin.ServerView, error) {
	var ss []admin.ServerView
	return ss, n.api("/api/servers", &ss)
}

func topoFind(ss []admin.ServerView, ip string) *admin.ServerView {
	for i := range ss {
		if strings.HasPrefix(ss[i].Addr, ip+":") {
			return &ss[i]
		}
	}
	return nil
}

func (n *topoNet) waitFor(what string, limit time.Duration, cond func() (bool, error)) {
	n.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, err := cond()
		if err != nil {
			n.t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// topoProc is a process started in a namespace. `ip netns exec` execs the
// command, so the process is the command itself and a signal reaches it.
type topoProc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func (n *topoNet) start(host, name string, args ...string) *topoProc {
	n.t.Helper()
	logPath := filepath.Join(n.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		n.t.Fatal(err)
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.ns(host)}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		n.t.Fatalf("start %s in %s: %v", name, host, err)
	}
	p := &topoProc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	n.t.Cleanup(p.kill)
	return p
}

func (p *topoProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait returns the process's exit error once it has ended.
func (p *topoProc) wait() error { <-p.done; return p.err }

// kill ends the process at once, as a crash would, and reaps it.
func (p *topoProc) kill() {
	if !p.exited() {
		p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// topoMbit is the rate of a "20mbit" tc rate in Mbit/s.
func topoMbit(rate string) float64 {
	var v float64
	fmt.Sscanf(rate, "%gmbit", &v)
	return v
}

func topoTail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(ls[max(0, len(ls)-lines):], "\n")
}

// topoPDF is a valid one-page PDF whose page shows a w×h RGB noise image
// stored uncompressed (so its size is about 3·w·h bytes) and a title,
// with a correct cross-reference table: viewers open it without repair.
func topoPDF(w, h int) []byte {
	img := make([]byte, 3*w*h)
	mrand.NewChaCha8([32]byte{'p', 'd', 'f'}).Read(img)
	content := "q 612 0 0 792 0 0 cm /Im1 Do Q\nBT /F1 18 Tf 72 740 Td (FS Chunk Protocol: namespace topology test) Tj ET\n"
	objs := []string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /XObject << /Im1 5 0 R >> /Font << /F1 6 0 R >> >> >>",
		fmt.Sprintf("<< /Length %d >>\nstream\n%sendstream", len(content), content),
		"", // the image, written below
		"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
	}
	var b bytes.Buffer
	b.Grow(len(img) + 4096)
	b.WriteString("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
	offs := make([]int, len(objs))
	for i, o := range objs {
		offs[i] = b.Len()
		fmt.Fprintf(&b, "%d 0 obj\n", i+1)
		if i == 4 {
			fmt.Fprintf(&b, "<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB /BitsPerComponent 8 /Length %d >>\nstream\n", w, h, len(img))
			b.Write(img)
			b.WriteString("\nendstream")
		} else {
			b.WriteString(o)
		}
		b.WriteString("\nendobj\n")
	}
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(objs)+1)
	for _, o := range offs {
		fmt.Fprintf(&b, "%010d 00000 n \n", o)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(objs)+1, xref)
	return b.Bytes()
}

// topoVideo is n bytes shaped like an MP4 (an ftyp box, then one mdat box
// of random bytes): the right magic for file(1) and browsers, no frames.
func topoVideo(n int) []byte {
	b := make([]byte, n)
	ftyp := []byte("\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isommp41")
	copy(b, ftyp)
	binary.BigEndian.PutUint32(b[len(ftyp):], uint32(n-len(ftyp)))
	copy(b[len(ftyp)+4:], "mdat")
	mrand.NewChaCha8([32]byte{'m', 'p', '4'}).Read(b[len(ftyp)+8:])
	return b
}
