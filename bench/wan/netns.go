//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fastfile/fschunk/internal/linkemu"
)

// The WAN topology, every host a network namespace:
//
//	client 10.80.0.2 ── 10.80.0.1 gateway 10.80.1.1 ── 10.80.1.2 router ─┬─ 10.80.11.1 ── 10.80.11.2 s1
//	                                                                      ├─ 10.80.12.1 ── 10.80.12.2 s2
//	                                                                      └─ 10.80.13.1 ── 10.80.13.2 s3
//
// In the router, every packet between the gateway's side and server N
// goes through emulated link N: a policy rule by incoming interface sends
// it into one of the link's two TUN devices, the emulator (in this
// process) applies the link and writes it out of the other device, and
// the main table routes it on. The client's own traffic to the mirrors
// (aria2) goes through the gateway namespace, which forwards it, and so
// over the same links. Addresses exist only inside these namespaces.
const (
	clientIP  = "10.80.0.2"
	gwLANIP   = "10.80.0.1" // the gateway's HTTP side
	gwWANIP   = "10.80.1.1" // the gateway's UDP side
	routerIP  = "10.80.1.2"
	gwHTTP    = gwLANIP + ":8080"
	gwUDPPort = "8888"
	gwAdmin   = "127.0.0.1:8081"
	nServers  = 3
)

func serverIP(i int) string     { return fmt.Sprintf("10.80.%d.2", 10+i) }
func serverSubnet(i int) string { return fmt.Sprintf("10.80.%d.0/24", 10+i) }

// topo is one run's namespaces, emulated links and processes.
type topo struct {
	prefix string
	dir    string // logs
	links  [nServers + 1]*linkemu.Pair

	mu    sync.Mutex
	ns    []string
	procs []*proc
	runs  sync.WaitGroup
	stop  context.CancelFunc
	errs  chan error
}

func (t *topo) name(host string) string { return t.prefix + host }
func (t *topo) path(host string) string { return "/var/run/netns/" + t.name(host) }

// run runs a command, returning its error with its output.
func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// ip runs ip(8) in host's namespace.
func (t *topo) ip(host string, args ...string) error {
	return run(append([]string{"ip", "-n", t.name(host)}, args...)...)
}

func (t *topo) sysctl(host string, kv ...string) error {
	return run(append([]string{"ip", "netns", "exec", t.name(host), "sysctl", "-q", "-w"}, kv...)...)
}

// newTopo builds the namespaces and links and starts the emulator with
// every link at cfg. Close undoes it all.
func newTopo(dir string, cfg linkemu.Config) (_ *topo, err error) {
	t := &topo{prefix: fmt.Sprintf("fsw%d-", os.Getpid()), dir: dir, errs: make(chan error, 2*nServers)}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	hosts := []string{"c", "gw", "r"}
	for i := 1; i <= nServers; i++ {
		hosts = append(hosts, fmt.Sprintf("s%d", i))
	}
	for _, h := range hosts {
		if err := run("ip", "netns", "add", t.name(h)); err != nil {
			return nil, err
		}
		t.mu.Lock()
		t.ns = append(t.ns, t.name(h))
		t.mu.Unlock()
		if err := t.ip(h, "link", "set", "lo", "up"); err != nil {
			return nil, err
		}
	}
	// The router forwards without checking sources (a packet from the
	// gateway comes in on a TUN device, not on the interface towards the
	// gateway), and so does the gateway for the client's own traffic.
	if err := t.sysctl("r", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
		"net.ipv4.conf.default.rp_filter=0", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
		return nil, err
	}
	if err := t.sysctl("gw", "net.ipv4.ip_forward=1"); err != nil {
		return nil, err
	}
	type veth struct{ a, aDev, aIP, b, bDev, bIP string }
	vs := []veth{{"c", "eth0", clientIP, "gw", "lan", gwLANIP}, {"gw", "wan", gwWANIP, "r", "gw", routerIP}}
	for i := 1; i <= nServers; i++ {
		vs = append(vs, veth{"r", fmt.Sprintf("s%d", i), fmt.Sprintf("10.80.%d.1", 10+i), fmt.Sprintf("s%d", i), "eth0", serverIP(i)})
	}
	for _, v := range vs {
		if err := run("ip", "link", "add", v.aDev, "netns", t.name(v.a), "type", "veth", "peer", "name", v.bDev, "netns", t.name(v.b)); err != nil {
			return nil, err
		}
		for _, e := range [][3]string{{v.a, v.aDev, v.aIP}, {v.b, v.bDev, v.bIP}} {
			if err := t.ip(e[0], "addr", "add", e[2]+"/24", "dev", e[1]); err != nil {
				return nil, err
			}
			if err := t.ip(e[0], "link", "set", e[1], "up"); err != nil {
				return nil, err
			}
		}
	}
	routes := [][]string{
		{"c", "route", "add", "default", "via", gwLANIP},
		{"gw", "route", "add", "default", "via", routerIP},
		{"r", "route", "add", "10.80.0.0/24", "via", gwWANIP},
	}
	for i := 1; i <= nServers; i++ {
		routes = append(routes, []string{fmt.Sprintf("s%d", i), "route", "add", "default", "via", fmt.Sprintf("10.80.%d.1", 10+i)})
	}
	for _, r := range routes {
		if err := t.ip(r[0], r[1:]...); err != nil {
			return nil, err
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	t.stop = cancel
	for i := 1; i <= nServers; i++ {
		up, dn := fmt.Sprintf("up%d", i), fmt.Sprintf("dn%d", i)
		p, err := linkemu.OpenPair(t.path("r"), fmt.Sprintf("link%d", i), up, dn, linkemu.TUN, seeded(cfg, i, 0), seeded(cfg, i, 1))
		if err != nil {
			return nil, err
		}
		t.links[i] = p
		t.runs.Go(func() {
			if err := p.Run(ctx); err != nil {
				t.errs <- err
			}
		})
		// Towards server i: from the gateway's side into up<i>; back:
		// from server i into dn<i>.
		for _, r := range [][]string{
			{"route", "add", "default", "dev", up, "table", fmt.Sprint(100 + i)},
			{"rule", "add", "iif", "gw", "to", serverSubnet(i), "lookup", fmt.Sprint(100 + i)},
			{"route", "add", "default", "dev", dn, "table", fmt.Sprint(200 + i)},
			{"rule", "add", "iif", fmt.Sprintf("s%d", i), "to", "10.80.0.0/23", "lookup", fmt.Sprint(200 + i)},
		} {
			if err := t.ip("r", r...); err != nil {
				return nil, err
			}
		}
	}
	return t, nil
}

// seeded gives each link direction its own loss sequence.
func seeded(c linkemu.Config, link, dir int) linkemu.Config {
	c.Seed = uint64(2*link + dir)
	return c
}

// setLinks configures link i (0: all) both ways.
func (t *topo) setLinks(i int, c linkemu.Config) error {
	for j := 1; j <= nServers; j++ {
		if i == 0 || i == j {
			if err := t.links[j].SetConfig(seeded(c, j, 0), seeded(c, j, 1)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (t *topo) resetStats() {
	for _, l := range t.links[1:] {
		l.ResetStats()
	}
}

// linkStats sums the counters of the given links (all if none given), in
// the direction towards the gateway (down) and towards the servers (up).
func (t *topo) linkStats(which ...int) (up, down linkemu.Stats) {
	if len(which) == 0 {
		which = []int{1, 2, 3}
	}
	for _, i := range which {
		addStats(&up, t.links[i].Up.Stats())
		addStats(&down, t.links[i].Down.Stats())
	}
	return up, down
}

func addStats(a *linkemu.Stats, b linkemu.Stats) {
	a.PacketsIn += b.PacketsIn
	a.PacketsOut += b.PacketsOut
	a.BytesIn += b.BytesIn
	a.BytesOut += b.BytesOut
	a.QueueDrops += b.QueueDrops
	a.RandomDrops += b.RandomDrops
	a.SumQueueDelay += b.SumQueueDelay
	a.MaxQueueDelay = max(a.MaxQueueDelay, b.MaxQueueDelay)
	a.Overflows += b.Overflows
	a.WriteErrors += b.WriteErrors
}

// emulatorErr reports a link that stopped.
func (t *topo) emulatorErr() error {
	select {
	case err := <-t.errs:
		return err
	default:
		return nil
	}
}

// Close stops every process, the emulator and deletes the namespaces.
func (t *topo) Close() {
	t.mu.Lock()
	procs := append([]*proc(nil), t.procs...)
	t.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].kill()
	}
	if t.stop != nil {
		t.stop()
		t.runs.Wait()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ns := range t.ns {
		if err := run("ip", "netns", "del", ns); err != nil {
			logf("cleanup: %v", err)
		}
	}
	t.ns = nil
}

// proc is a process started in a namespace, in its own process group.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// start runs args in host's namespace, output to dir/name.log.
func (t *topo) start(host, name string, args ...string) (*proc, error) {
	logPath := filepath.Join(t.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", t.name(host)}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.mu.Lock()
	t.procs = append(t.procs, p)
	t.mu.Unlock()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill ends the process group: TERM, then KILL after 3 s.
func (p *proc) kill() {
	if p.exited() {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// output runs a command in host's namespace and returns its stdout.
func (t *topo) output(ctx context.Context, host string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", t.name(host)}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}
