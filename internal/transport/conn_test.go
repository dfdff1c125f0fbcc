package transport

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// Tests every system runs: both Conns over real loopback sockets, the
// portable one also over PacketConns that are not sockets.

// plainConn hides everything of a *net.UDPConn but net.PacketConn, as a
// relay or fault injector would.
type plainConn struct{ net.PacketConn }

// apConn keeps the AddrPort methods too, as simnet's connections have them.
type apConn struct{ *net.UDPConn }

func listen(t testing.TB) (*net.UDPConn, netip.AddrPort) {
	t.Helper()
	c, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ap, _ := AddrPort(c.LocalAddr())
	return c, ap
}

// kind is a way to wrap a socket; each test runs on all of them.
type kind struct {
	name   string
	wrap   func(*net.UDPConn) net.PacketConn
	single bool // Linux: one recvmsg per read, as in race builds
}

func udpKind(c *net.UDPConn) net.PacketConn { return c }

var kinds = []kind{
	{"udp", udpKind, false},
	{"udp-recvmsg", udpKind, true},
	{"portable-addrport", func(c *net.UDPConn) net.PacketConn { return apConn{c} }, false},
	{"portable-plain", func(c *net.UDPConn) net.PacketConn { return plainConn{c} }, false},
}

// conn wraps c as k says; "udp" reads with recvmmsg even under -race.
func (k kind) conn(t testing.TB, c *net.UDPConn, gro bool) Conn {
	t.Helper()
	cn := newConn(t, k.wrap(c), gro)
	setSingle(cn, k.single)
	return cn
}

func newConn(t testing.TB, pc net.PacketConn, gro bool) Conn {
	t.Helper()
	c, err := NewConn(pc, Options{GRO: gro})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// datagrams makes count datagrams of seg bytes back to back (the last one
// short by 100 if short), each filled with tag+its index.
func datagrams(count, seg int, tag byte, short bool) []byte {
	var b []byte
	for i := range count {
		n := seg
		if short && i == count-1 {
			n -= 100
		}
		b = append(b, bytes.Repeat([]byte{tag + byte(i)}, n)...)
	}
	return b
}

// readAll reads until want datagrams arrived and returns them split as
// the Conn reported them, with the largest batch one ReadBatch returned.
func readAll(t *testing.T, c Conn, pc net.PacketConn, want int) (got [][]byte, from []netip.AddrPort, most int) {
	t.Helper()
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	msgs := NewMessages(c.BatchSize(), GROBufferSize)
	for len(got) < want {
		n, err := c.ReadBatch(msgs)
		if err != nil {
			t.Fatalf("read after %d of %d datagrams: %v", len(got), want, err)
		}
		if n < 1 || n > c.BatchSize() {
			t.Fatalf("ReadBatch returned %d messages (batch size %d)", n, c.BatchSize())
		}
		most = max(most, n)
		for _, m := range msgs[:n] {
			if m.N == 0 || m.Seg <= 0 {
				t.Fatalf("empty message: %+v", m)
			}
			for off := 0; off < m.N; off += m.Seg {
				got = append(got, bytes.Clone(m.Buf[off:min(off+m.Seg, m.N)]))
				from = append(from, m.Addr)
			}
		}
	}
	return got, from, most
}

func check(t *testing.T, got [][]byte, want []byte, seg int) {
	t.Helper()
	var all []byte
	for i, d := range got {
		if len(d) > seg || d[0] != d[len(d)-1] {
			t.Fatalf("datagram %d: %d bytes from %d to %d (segment %d)", i, len(d), d[0], d[len(d)-1], seg)
		}
		all = append(all, d...)
	}
	if !bytes.Equal(all, want) {
		t.Fatalf("got %d bytes in %d datagrams, not the %d bytes sent", len(all), len(got), len(want))
	}
}

// TestBatchRoundTrip: a batch of messages of several datagrams each, to
// one address, arrives as the datagrams it was made of, boundaries and
// order kept, from the sender's address, whichever Conn is at each end.
func TestBatchRoundTrip(t *testing.T) {
	for _, tx := range kinds {
		for _, rx := range kinds {
			t.Run(tx.name+"→"+rx.name, func(t *testing.T) {
				a, _ := listen(t)
				b, to := listen(t)
				from, _ := AddrPort(a.LocalAddr())
				w, r := tx.conn(t, a, false), rx.conn(t, b, true)
				const seg = 1472
				var msgs []Message
				var want []byte
				for i, count := range []int{44, 1, 7, 100} { // 100: more than one GSO write
					d := datagrams(count, seg, byte(i*50), true)
					msgs = append(msgs, Message{Buf: d, Seg: seg, Addr: to})
					want = append(want, d...)
				}
				msgs = append(msgs, Message{Buf: []byte("ssssss"), Addr: to}) // Seg 0: one datagram
				want = append(want, "ssssss"...)
				n, err := w.WriteBatch(msgs)
				if err != nil || n != len(want) {
					t.Fatalf("WriteBatch = %d, %v; want %d", n, err, len(want))
				}
				got, src, _ := readAll(t, r, b, 44+1+7+100+1)
				check(t, got, want, seg)
				for _, s := range src {
					if s != from {
						t.Fatalf("datagram from %v, want %v", s, from)
					}
				}
			})
		}
	}
}

// TestReadBatchPartial: fewer messages than asked for, or fewer slots
// than waiting datagrams, both work.
func TestReadBatchPartial(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			a, _ := listen(t)
			b, to := listen(t)
			w, r := k.conn(t, a, false), k.conn(t, b, false)
			for i := range 5 {
				if _, err := w.WriteBatch([]Message{{Buf: []byte{byte(i)}, Addr: to}}); err != nil {
					t.Fatal(err)
				}
			}
			b.SetReadDeadline(time.Now().Add(10 * time.Second))
			msgs := NewMessages(2, 100)
			var got []byte
			for len(got) < 5 {
				n, err := r.ReadBatch(msgs)
				if err != nil {
					t.Fatal(err)
				}
				if n < 1 || n > 2 {
					t.Fatalf("ReadBatch into 2 slots returned %d", n)
				}
				for _, m := range msgs[:n] {
					got = append(got, m.Buf[:m.N]...)
				}
			}
			if !bytes.Equal(got, []byte{0, 1, 2, 3, 4}) {
				t.Fatalf("got %v", got)
			}
			if n, err := r.ReadBatch(nil); n != 0 || err != nil {
				t.Fatalf("ReadBatch(nil) = %d, %v", n, err)
			}
		})
	}
}

// TestWriteBatchErrors: a message that cannot be sent is reported and
// lost, the others of the batch still go.
func TestWriteBatchErrors(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			a, _ := listen(t)
			b, to := listen(t)
			w, r := k.conn(t, a, false), k.conn(t, b, false)
			msgs := []Message{
				{Buf: []byte("first"), Addr: to},
				{Buf: []byte("no address")},
				{Buf: []byte("negative"), Seg: -1, Addr: to},
				// An IPv4 socket cannot send to IPv6: the kernel refuses.
				{Buf: []byte("v6"), Addr: netip.MustParseAddrPort("[2001:db8::1]:9")},
				{Buf: []byte("last"), Addr: to},
			}
			n, err := w.WriteBatch(msgs)
			if err == nil {
				t.Fatal("no error for unsendable messages")
			}
			if !errors.Is(err, errBadMessage) {
				t.Errorf("first error %v, want the message without an address", err)
			}
			if n != len("first")+len("last") {
				t.Errorf("sent %d bytes, want %d", n, len("firstlast"))
			}
			got, _, _ := readAll(t, r, b, 2)
			if string(got[0]) != "first" || string(got[1]) != "last" {
				t.Fatalf("got %q", got)
			}
		})
	}
}

// TestClosedSocket: reads and writes on a closed socket fail with
// net.ErrClosed, and a blocked read is woken by the close.
func TestClosedSocket(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			b, to := listen(t)
			r := k.conn(t, b, true)
			done := make(chan error)
			go func() {
				_, err := r.ReadBatch(NewMessages(4, GROBufferSize))
				done <- err
			}()
			time.Sleep(20 * time.Millisecond) // let it block (either way it must end)
			b.Close()
			if err := <-done; !errors.Is(err, net.ErrClosed) {
				t.Fatalf("blocked ReadBatch after Close: %v", err)
			}
			if _, err := r.ReadBatch(NewMessages(4, GROBufferSize)); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("ReadBatch on a closed socket: %v", err)
			}
			if _, err := r.WriteBatch([]Message{{Buf: []byte("x"), Addr: to}}); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("WriteBatch on a closed socket: %v", err)
			}
		})
	}
}

// TestReadDeadline: the socket's read deadline ends a ReadBatch with a
// timeout.
func TestReadDeadline(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			b, _ := listen(t)
			r := k.conn(t, b, true)
			b.SetReadDeadline(time.Now().Add(-time.Second))
			_, err := r.ReadBatch(NewMessages(4, GROBufferSize))
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("ReadBatch past the deadline: %v", err)
			}
		})
	}
}

// notUDP is a PacketConn whose peers have no UDP address.
type notUDP struct{ net.PacketConn }

func (c notUDP) ReadFrom(b []byte) (int, net.Addr, error) {
	n, _, err := c.PacketConn.ReadFrom(b)
	return n, &net.UnixAddr{Name: "@x", Net: "unixgram"}, err
}

// TestPortableForeignAddress: a datagram from an address that is not
// UDP comes as an empty message, never as one from the zero address.
func TestPortableForeignAddress(t *testing.T) {
	a, _ := listen(t)
	b, to := listen(t)
	a.WriteToUDPAddrPort([]byte("hi"), to)
	r := newConn(t, notUDP{b}, false)
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	msgs := NewMessages(1, 100)
	if n, err := r.ReadBatch(msgs); n != 1 || err != nil || msgs[0].N != 0 {
		t.Fatalf("ReadBatch = %d, %v, message %+v", n, err, msgs[0])
	}
}

func TestNewMessages(t *testing.T) {
	ms := NewMessages(3, 10)
	for i := range ms {
		if len(ms[i].Buf) != 10 || cap(ms[i].Buf) != 10 {
			t.Fatalf("message %d: buffer %d/%d", i, len(ms[i].Buf), cap(ms[i].Buf))
		}
	}
	ms[0].Buf = append(ms[0].Buf, 1) // must not run into the next buffer
	if ms[1].Buf[0] != 0 {
		t.Fatal("buffers overlap")
	}
}
