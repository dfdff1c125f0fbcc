//go:build linux

package linkemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// emuNet is a client, a router and a server namespace: client
// 10.203.1.2 — 10.203.1.1 router 10.203.2.1 — 10.203.2.2 server, the
// router sending each way through one emulated link (two TUN devices and
// policy routing, as the WAN benchmark does).
type emuNet struct {
	t      *testing.T
	prefix string
	pair   *Pair
}

func (n *emuNet) ns(name string) string   { return n.prefix + name }
func (n *emuNet) path(name string) string { return "/var/run/netns/" + n.ns(name) }

func (n *emuNet) ip(args ...string) {
	n.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		n.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
}

func (n *emuNet) sysctl(ns string, kv ...string) {
	n.t.Helper()
	args := append([]string{"netns", "exec", n.ns(ns), "sysctl", "-q", "-w"}, kv...)
	n.ip(args...)
}

func emuRequire(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, TUN devices)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip(8) (iproute2)")
	}
	if _, err := exec.LookPath("sysctl"); err != nil {
		t.Skip("needs sysctl(8) (procps)")
	}
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no TUN devices here: %v", err)
	}
	f.Close()
	probe := fmt.Sprintf("fsle%d-probe%x", os.Getpid(), mrand.Uint32())
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		t.Skipf("cannot create network namespaces here: %v: %s", err, bytes.TrimSpace(out))
	}
	exec.Command("ip", "netns", "del", probe).Run()
}

func newEmuNet(t *testing.T, up, down Config) *emuNet {
	n := &emuNet{t: t, prefix: fmt.Sprintf("fsle%d-%04x-", os.Getpid(), mrand.Uint32N(1<<16))}
	for _, name := range []string{"c", "r", "s"} {
		n.ip("netns", "add", n.ns(name))
		t.Cleanup(func() { exec.Command("ip", "netns", "del", n.ns(name)).Run() })
		n.ip("-n", n.ns(name), "link", "set", "lo", "up")
	}
	n.ip("link", "add", "vc", "netns", n.ns("c"), "type", "veth", "peer", "name", "rc", "netns", n.ns("r"))
	n.ip("link", "add", "vs", "netns", n.ns("s"), "type", "veth", "peer", "name", "rs", "netns", n.ns("r"))
	for _, a := range [][3]string{{"c", "vc", "10.203.1.2/24"}, {"r", "rc", "10.203.1.1/24"}, {"r", "rs", "10.203.2.1/24"}, {"s", "vs", "10.203.2.2/24"}} {
		n.ip("-n", n.ns(a[0]), "addr", "add", a[2], "dev", a[1])
		n.ip("-n", n.ns(a[0]), "link", "set", a[1], "up")
	}
	n.ip("-n", n.ns("c"), "route", "add", "default", "via", "10.203.1.1")
	n.ip("-n", n.ns("s"), "route", "add", "default", "via", "10.203.2.1")
	n.sysctl("r", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
		"net.ipv6.conf.default.disable_ipv6=1")

	p, err := OpenPair(n.path("r"), "test", "tunup", "tundown", TUN, up, down)
	if err != nil {
		t.Fatal(err)
	}
	n.pair = p
	done := make(chan error, 1)
	runCtx, stop := context.WithCancel(context.Background())
	go func() { done <- p.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("emulator: %v", err)
		}
	})
	// Client to server into tunup, server to client into tundown; what
	// comes out of the other device is routed by the main table.
	n.ip("-n", n.ns("r"), "route", "add", "default", "dev", "tunup", "table", "100")
	n.ip("-n", n.ns("r"), "rule", "add", "iif", "rc", "to", "10.203.2.0/24", "lookup", "100")
	n.ip("-n", n.ns("r"), "route", "add", "default", "dev", "tundown", "table", "101")
	n.ip("-n", n.ns("r"), "rule", "add", "iif", "rs", "to", "10.203.1.0/24", "lookup", "101")
	return n
}

// inNS runs f on a thread in namespace ns: sockets f creates live there
// (and can be used from any goroutine afterwards). The thread is never
// returned to the runtime's pool.
func inNS[T any](t *testing.T, path string, f func() (T, error)) T {
	t.Helper()
	type res struct {
		v   T
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Setns(fd, unix.CLONE_NEWNET)
			unix.Close(fd)
		}
		if err != nil {
			ch <- res{err: err}
			return
		}
		v, err := f()
		ch <- res{v, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.v
}

// Real TCP through one emulated link: the round trip is at least the two
// one-way delays, the bulk goodput stays under the rate and gets a fair
// part of it, the counters add up, and random loss is applied at its rate
// without corrupting the stream.
func TestTUNLinkTCP(t *testing.T) {
	emuRequire(t)
	const (
		rate  = 20e6
		delay = 15 * time.Millisecond
	)
	link := Config{Rate: rate, Delay: delay, QueueDelay: 50 * time.Millisecond, Seed: 1}
	n := newEmuNet(t, link, link)

	ln := inNS(t, n.path("s"), func() (net.Listener, error) { return net.Listen("tcp4", "10.203.2.2:0") })
	defer ln.Close()
	// The server: echoes 1-byte pings, then sends what the client asks
	// for (an 8-byte size) and the bytes' SHA-256.
	srvDone := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvDone <- err
			return
		}
		defer c.Close()
		srvDone <- serve(c)
	}()
	conn := inNS(t, n.path("c"), func() (net.Conn, error) {
		return (&net.Dialer{Timeout: 5 * time.Second}).Dial("tcp4", ln.Addr().String())
	})
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))

	// Round trips of one byte: never faster than the two delays.
	minRTT := time.Hour
	for range 10 {
		start := time.Now()
		if _, err := conn.Write([]byte{'p'}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		minRTT = min(minRTT, time.Since(start))
	}
	t.Logf("RTT %v (configured %v of delay)", minRTT, 2*delay)
	if minRTT < 2*delay || minRTT > 2*delay+100*time.Millisecond {
		t.Errorf("RTT %v, want %v plus a little", minRTT, 2*delay)
	}

	bulk := func(size int) (time.Duration, Stats) {
		t.Helper()
		n.pair.ResetStats()
		start := time.Now()
		if _, err := conn.Write(append([]byte{'b'}, fmt.Sprintf("%08d", size)...)); err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		if _, err := io.CopyN(h, conn, int64(size)); err != nil {
			t.Fatal(err)
		}
		el := time.Since(start)
		sum := make([]byte, sha256.Size)
		if _, err := io.ReadFull(conn, sum); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(sum, h.Sum(nil)) {
			t.Fatal("the stream arrived corrupted")
		}
		return el, n.pair.Down.Stats()
	}

	// Bulk at the rate: TCP cannot beat the serialisation, and on an idle
	// link it should get a good part of it.
	const size = 3 << 20
	el, s := bulk(size)
	goodput := float64(size) * 8 / el.Seconds()
	t.Logf("bulk %d bytes in %v: %.1f Mbit/s of %.0f; down %+v", size, el, goodput/1e6, rate/1e6, s)
	if goodput > rate {
		t.Errorf("goodput %.1f Mbit/s beyond the %.0f Mbit/s rate", goodput/1e6, rate/1e6)
	}
	if goodput < 0.25*rate {
		t.Errorf("goodput %.1f Mbit/s: under a quarter of the rate", goodput/1e6)
	}
	if s.BytesOut < size || s.PacketsIn != s.PacketsOut+s.QueueDrops+s.RandomDrops || s.RandomDrops != 0 || s.Overflows != 0 || s.WriteErrors != 0 {
		t.Errorf("down counters do not add up: %+v", s)
	}
	if up := n.pair.Up.Stats(); up.PacketsOut == 0 {
		t.Errorf("no acknowledgement went up: %+v", up)
	}

	// 3% random loss downwards: about 3% of the packets are lost, TCP
	// repairs the stream.
	lossy := link
	lossy.Loss = 0.03
	if err := n.pair.SetConfig(link, lossy); err != nil {
		t.Fatal(err)
	}
	el, s = bulk(2 << 20)
	frac := float64(s.RandomDrops) / float64(s.PacketsIn)
	t.Logf("lossy bulk in %v: %d of %d packets lost (%.2f%%)", el, s.RandomDrops, s.PacketsIn, 100*frac)
	if frac < 0.01 || frac > 0.06 {
		t.Errorf("%.2f%% of the packets lost at 3%% loss", 100*frac)
	}
	conn.Write([]byte{'q'})
	if err := <-srvDone; err != nil {
		t.Errorf("server: %v", err)
	}
}

func serve(c net.Conn) error {
	c.SetDeadline(time.Now().Add(60 * time.Second))
	cmd := make([]byte, 1)
	for {
		if _, err := io.ReadFull(c, cmd); err != nil {
			return err
		}
		switch cmd[0] {
		case 'p':
			if _, err := c.Write(cmd); err != nil {
				return err
			}
		case 'b':
			var sz [8]byte
			if _, err := io.ReadFull(c, sz[:]); err != nil {
				return err
			}
			var size int
			fmt.Sscanf(string(sz[:]), "%d", &size)
			buf := make([]byte, size)
			mrand.NewChaCha8([32]byte{byte(size)}).Read(buf)
			sum := sha256.Sum256(buf)
			if _, err := c.Write(append(buf, sum[:]...)); err != nil {
				return err
			}
		case 'q':
			return nil
		default:
			return fmt.Errorf("unknown command %q", cmd)
		}
	}
}
