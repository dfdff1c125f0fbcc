package transport

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// udpConnOf is the Linux Conn of c, reading with recvmmsg even in race
// builds.
func udpConnOf(t testing.TB, c *net.UDPConn, gro bool) *udpConn {
	t.Helper()
	u := newConn(t, c, gro).(*udpConn)
	u.single = false
	return u
}

func setSingle(c Conn, single bool) {
	if u, ok := c.(*udpConn); ok {
		u.single = single
	}
}

// TestGROCoalesces: on this kernel a GSO write over loopback reaches a GRO
// reader as one message, split by its segment size. Kernels without the
// offloads skip.
func TestGROCoalesces(t *testing.T) {
	a, _ := listen(t)
	b, to := listen(t)
	w, r := udpConnOf(t, a, false), udpConnOf(t, b, true)
	if !w.GSO() || !r.GRO() {
		t.Skip("kernel without UDP GSO/GRO")
	}
	const count, seg = 44, 1472
	d := datagrams(count, seg, 0, true)
	if _, err := w.WriteBatch([]Message{{Buf: d, Seg: seg, Addr: to}}); err != nil {
		t.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	msgs := NewMessages(4, GROBufferSize)
	n, err := r.ReadBatch(msgs)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || msgs[0].N != len(d) || msgs[0].Seg != seg {
		t.Fatalf("%d messages, the first of %d bytes in segments of %d; want the whole write of %d in %d", n, msgs[0].N, msgs[0].Seg, len(d), seg)
	}
}

// TestBatchWithoutGSO: with GSO off (as after a refusal) a message of
// many datagrams still arrives as its datagrams.
func TestBatchWithoutGSO(t *testing.T) {
	a, _ := listen(t)
	b, to := listen(t)
	w, r := udpConnOf(t, a, false), udpConnOf(t, b, true)
	w.gso.Store(false)
	d := datagrams(40, 1472, 0, true)
	if n, err := w.WriteBatch([]Message{{Buf: d, Seg: 1472, Addr: to}}); err != nil || n != len(d) {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	got, _, _ := readAll(t, r, b, 40)
	check(t, got, d, 1472)
}

// TestGSOFallback: a socket whose path refuses segmentation (here
// SO_NO_CHECK: the kernel will not send GSO without checksums, EINVAL)
// turns GSO off and sends the refused run again as single datagrams;
// nothing is lost.
func TestGSOFallback(t *testing.T) {
	a, _ := listen(t)
	b, to := listen(t)
	w, r := udpConnOf(t, a, false), udpConnOf(t, b, true)
	if !w.GSO() {
		t.Skip("kernel without UDP GSO")
	}
	rc, _ := a.SyscallConn()
	rc.Control(func(fd uintptr) {
		if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1); err != nil {
			t.Skipf("SO_NO_CHECK: %v", err)
		}
	})
	d1, d2 := datagrams(10, 1000, 0, true), datagrams(5, 1000, 100, false)
	n, err := w.WriteBatch([]Message{{Buf: d1, Seg: 1000, Addr: to}, {Buf: d2, Seg: 1000, Addr: to}})
	if err != nil || n != len(d1)+len(d2) {
		t.Fatalf("WriteBatch = %d, %v; want %d, nil", n, err, len(d1)+len(d2))
	}
	if w.GSO() {
		t.Fatal("GSO still on after the kernel refused it")
	}
	got, _, _ := readAll(t, r, b, 15)
	check(t, got, append(d1, d2...), 1000)
}

// TestReadBatchFills: datagrams waiting in the socket are read many per
// system call, at most BatchSize.
func TestReadBatchFills(t *testing.T) {
	a, _ := listen(t)
	b, to := listen(t)
	w := udpConnOf(t, a, false)
	rc, err := NewConn(b, Options{BatchSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	setSingle(rc, false)
	r := rc
	var msgs []Message
	for i := range 20 {
		msgs = append(msgs, Message{Buf: []byte{byte(i)}, Addr: to})
	}
	if _, err := w.WriteBatch(msgs); err != nil {
		t.Fatal(err)
	}
	got, _, most := readAll(t, r, b, 20)
	for i, d := range got {
		if len(d) != 1 || d[0] != byte(i) {
			t.Fatalf("datagram %d: %v", i, d)
		}
	}
	// Loopback delivers within the send call (unless a loaded kernel
	// defers it to ksoftirqd), so all 20 normally wait before the first
	// read: 8 at once. Only no batching at all is a failure.
	if most < 2 {
		t.Errorf("largest batch read %d: one datagram per system call", most)
	}
	t.Logf("largest batch %d of at most 8", most)
}

// TestReadBatchTruncated: a datagram larger than its buffer comes as an
// empty message, not as its cut prefix; the next one is intact.
func TestReadBatchTruncated(t *testing.T) {
	for _, single := range []bool{false, true} {
		a, _ := listen(t)
		b, to := listen(t)
		r := udpConnOf(t, b, false)
		r.single = single
		readTruncated(t, a, b, r, to)
	}
}

func readTruncated(t *testing.T, a, b *net.UDPConn, r *udpConn, to netip.AddrPort) {
	a.WriteToUDPAddrPort(make([]byte, 2000), to)
	a.WriteToUDPAddrPort([]byte("ok"), to)
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	msgs := NewMessages(2, 1000)
	var seen []int
	for len(seen) < 2 {
		n, err := r.ReadBatch(msgs)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs[:n] {
			seen = append(seen, m.N)
		}
	}
	if seen[0] != 0 || seen[1] != 2 {
		t.Fatalf("message sizes %v, want [0 2]", seen)
	}
}

// TestWriteBatchAllocs: the send path allocates nothing per batch (a
// server sends tens of thousands a second).
func TestWriteBatchAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	a, _ := listen(t)
	_, to := listen(t)
	w := udpConnOf(t, a, false)
	msgs := []Message{{Buf: datagrams(20, 1472, 0, false), Seg: 1472, Addr: to}, {Buf: make([]byte, 100), Addr: to}}
	if n := testing.AllocsPerRun(50, func() { w.WriteBatch(msgs) }); n > 0 {
		t.Errorf("%.1f allocations per WriteBatch", n)
	}
}

func TestGROSize(t *testing.T) {
	oob := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_GRO
	h.SetLen(unix.CmsgLen(4))
	oob[unix.SizeofCmsghdr] = 0xc0 // 1472 = 0x5c0, little or big endian
	oob[unix.SizeofCmsghdr+1] = 0x05
	if s, ok := groSize(oob); !ok || (s != 1472 && s != 0xc0050000) {
		t.Fatalf("groSize = %d, %v", s, ok)
	}
	// Truncated or malformed control data is ignored, never a panic.
	for i := range oob {
		groSize(oob[:i])
	}
	h.Len = 1000
	if _, ok := groSize(oob); ok {
		t.Fatal("oversized cmsg length accepted")
	}
}

// BenchmarkLoopback moves datagrams over loopback, side by side: batched
// (GSO runs and sendmmsg; recvmmsg with GRO) and the portable Conn (one
// system call per datagram at each end), for the 1,472-byte datagrams of
// an Ethernet path and loopback's 32 KiB ones. "recv-MB/s" is what the
// receiver got (a sender outrunning its receiver only drops).
func BenchmarkLoopback(b *testing.B) {
	for _, seg := range []int{1472, 32 << 10} {
		for _, c := range []struct {
			name     string
			portable bool
		}{{"batch", false}, {"portable", true}} {
			b.Run(c.name+"/"+map[int]string{1472: "1472", 32 << 10: "32KiB"}[seg], func(b *testing.B) {
				tx, _ := listen(b)
				rx, dst := listen(b)
				var w, r Conn
				if c.portable {
					w, r = newConn(b, apConn{tx}, false), newConn(b, apConn{rx}, true)
				} else {
					w, r = udpConnOf(b, tx, false), udpConnOf(b, rx, true)
				}
				buf := datagrams(max(1, 64<<10/seg)*4, seg, 0, false)
				msgs := []Message{{Buf: buf, Seg: seg, Addr: dst}}
				var got atomic.Int64
				done := make(chan struct{})
				go func() {
					defer close(done)
					ms := NewMessages(r.BatchSize(), GROBufferSize)
					for {
						n, err := r.ReadBatch(ms)
						if err != nil {
							return
						}
						for _, m := range ms[:n] {
							got.Add(int64(m.N))
						}
					}
				}()
				b.SetBytes(int64(len(buf)))
				b.ReportAllocs()
				start := time.Now()
				for b.Loop() {
					w.WriteBatch(msgs)
				}
				time.Sleep(10 * time.Millisecond) // let the receiver drain
				el := time.Since(start)
				rx.Close()
				<-done
				b.ReportMetric(float64(got.Load())/el.Seconds()/1e6, "recv-MB/s")
			})
		}
	}
}

// TestDualStack: a socket on ":port" (IPv6 with IPv4 mapped, as httpgw
// -udp :8888 opens) sends GSO batches to IPv4 peers and reports their
// addresses unmapped, as an IPv4 socket would.
func TestDualStack(t *testing.T) {
	a, err := Listen(context.Background(), ":0")
	if err != nil {
		t.Skipf("no dual-stack socket: %v", err)
	}
	defer a.Close()
	b, to := listen(t)
	w, r := udpConnOf(t, a, true), udpConnOf(t, b, true)
	d := datagrams(10, 1000, 0, true)
	if n, err := w.WriteBatch([]Message{{Buf: d, Seg: 1000, Addr: to}}); err != nil || n != len(d) {
		t.Fatalf("WriteBatch from a dual-stack socket = %d, %v", n, err)
	}
	got, _, _ := readAll(t, r, b, 10)
	check(t, got, d, 1000)
	port := a.LocalAddr().(*net.UDPAddr).Port
	back := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	if _, err := r.WriteBatch([]Message{{Buf: d, Seg: 1000, Addr: back}}); err != nil {
		t.Fatal(err)
	}
	got, from, _ := readAll(t, w, a, 10)
	check(t, got, d, 1000)
	if want, _ := AddrPort(b.LocalAddr()); from[0] != want || !from[0].Addr().Is4() {
		t.Fatalf("datagram from %v, want %v (unmapped)", from[0], want)
	}
}
