package transport

import (
	"bytes"
	"context"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func listenPair(t *testing.T) (tx, rx *Offload, to netip.AddrPort) {
	t.Helper()
	a, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	if tx, err = NewOffload(a, false); err != nil {
		t.Fatal(err)
	}
	if rx, err = NewOffload(b, true); err != nil {
		t.Fatal(err)
	}
	return tx, rx, b.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort()
}

// batch makes count datagrams of seg bytes (the last one short by 100),
// each filled with its index.
func batch(count, seg int) []byte {
	var b []byte
	for i := range count {
		n := seg
		if i == count-1 {
			n -= 100
		}
		b = append(b, bytes.Repeat([]byte{byte(i)}, n)...)
	}
	return b
}

// receive reads until want bytes of datagrams arrived and returns them
// split into datagrams as the reader reported them.
func receive(t *testing.T, rx *Offload, want int) [][]byte {
	t.Helper()
	rx.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := rx.NewReader()
	buf := make([]byte, GROBufferSize)
	var got [][]byte
	total := 0
	for total < want {
		n, seg, _, err := r.Read(buf)
		if err != nil {
			t.Fatalf("read after %d of %d bytes: %v", total, want, err)
		}
		for off := 0; off < n; off += seg {
			got = append(got, bytes.Clone(buf[off:min(off+seg, n)]))
		}
		total += n
	}
	return got
}

func checkDatagrams(t *testing.T, got [][]byte, count, seg int) {
	t.Helper()
	if len(got) != count {
		t.Fatalf("got %d datagrams, want %d", len(got), count)
	}
	for i, d := range got {
		want := seg
		if i == count-1 {
			want -= 100
		}
		if len(d) != want || d[0] != byte(i) || d[len(d)-1] != byte(i) {
			t.Fatalf("datagram %d: %d bytes starting %d, want %d bytes of %d", i, len(d), d[0], want, i)
		}
	}
}

// TestBatchArrivesAsDatagrams: whatever the kernel offers, a batch is
// received as the datagrams it was made of, with their boundaries.
func TestBatchArrivesAsDatagrams(t *testing.T) {
	for _, forceNoGSO := range []bool{false, true} {
		tx, rx, to := listenPair(t)
		if forceNoGSO {
			tx.gso.Store(false)
		}
		t.Logf("gso=%v gro=%v", tx.GSO(), rx.GRO())
		const count, seg = 40, 1472
		b := batch(count, seg)
		n, err := tx.WriteBatch(b, seg, to)
		if err != nil || n != len(b) {
			t.Fatalf("WriteBatch = %d, %v; want %d", n, err, len(b))
		}
		checkDatagrams(t, receive(t, rx, len(b)), count, seg)
	}
}

// TestGROCoalesces checks that on this kernel a GSO batch over loopback
// reaches a GRO reader in few reads: the point of the offloads. Kernels
// without them skip.
func TestGROCoalesces(t *testing.T) {
	tx, rx, to := listenPair(t)
	if !tx.GSO() || !rx.GRO() {
		t.Skip("kernel without UDP GSO/GRO")
	}
	const count, seg = 44, 1472
	b := batch(count, seg)
	if _, err := tx.WriteBatch(b, seg, to); err != nil {
		t.Fatal(err)
	}
	rx.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, s, _, err := rx.NewReader().Read(make([]byte, GROBufferSize))
	if err != nil {
		t.Fatal(err)
	}
	if n != len(b) || s != seg {
		t.Fatalf("one read got %d bytes in segments of %d; want the whole batch of %d in %d", n, s, len(b), seg)
	}
}

func TestWriteBatchRejectsBadSegment(t *testing.T) {
	tx, _, to := listenPair(t)
	if _, err := tx.WriteBatch([]byte("x"), 0, to); err == nil {
		t.Fatal("segment size 0 accepted")
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

// BenchmarkLoopback1472 moves 1,472-byte datagrams over loopback in
// batches of 44 (one GSO write's worth), side by side: GSO send + GRO
// receive, and one system call per datagram at each end. "recv-MB/s" is
// what the receiver got (a sender outrunning its receiver only drops).
func BenchmarkLoopback1472(b *testing.B) {
	for _, c := range []struct {
		name     string
		gso, gro bool
	}{{"gso+gro", true, true}, {"gso", true, false}, {"plain", false, false}} {
		b.Run(c.name, func(b *testing.B) {
			tx, err := Listen(context.Background(), "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			rx, err := Listen(context.Background(), "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer tx.Close()
			defer rx.Close()
			to, _ := NewOffload(tx, false)
			ro, _ := NewOffload(rx, c.gro)
			if c.gso && !to.GSO() || c.gro && !ro.GRO() {
				b.Skip("kernel without UDP GSO/GRO")
			}
			to.gso.Store(c.gso)
			dst := rx.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort()
			const seg, count = 1472, 44
			buf := batch(count, seg)
			var got atomic.Int64
			done := make(chan struct{})
			go func() {
				defer close(done)
				r, p := ro.NewReader(), make([]byte, GROBufferSize)
				for {
					n, _, _, err := r.Read(p)
					if err != nil {
						return
					}
					got.Add(int64(n))
				}
			}()
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			start := time.Now()
			for b.Loop() {
				to.WriteBatch(buf, seg, dst)
			}
			time.Sleep(10 * time.Millisecond) // let the receiver drain
			el := time.Since(start)
			rx.Close()
			<-done
			b.ReportMetric(float64(got.Load())/el.Seconds()/1e6, "recv-MB/s")
		})
	}
}
