package transport

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// addrPortConn is what *net.UDPConn and simnet's connections have beside
// net.PacketConn: reads and writes with netip.AddrPort, which allocate
// nothing.
type addrPortConn interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error)
}

// portable is the Conn of any net.PacketConn: one datagram per system call
// (or per call of an in-memory network), no offloads. It serves the BSDs
// and macOS, and every PacketConn that is not a socket: simnet, faultconn,
// relays in tests.
type portable struct {
	pc net.PacketConn
	ap addrPortConn // pc, if it has the AddrPort methods; else nil
}

func newPortable(pc net.PacketConn) *portable {
	p := &portable{pc: pc}
	p.ap, _ = pc.(addrPortConn)
	return p
}

func (p *portable) BatchSize() int { return 1 }
func (p *portable) GSO() bool      { return false }
func (p *portable) GRO() bool      { return false }

// ReadBatch reads one datagram: without recvmmsg, reading more would mean
// more system calls, which is what batching saves.
func (p *portable) ReadBatch(msgs []Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	m := &msgs[0]
	var (
		n    int
		from netip.AddrPort
		err  error
	)
	if p.ap != nil {
		n, from, err = p.ap.ReadFromUDPAddrPort(m.Buf)
	} else {
		var a net.Addr
		n, a, err = p.pc.ReadFrom(m.Buf)
		if err == nil {
			var ok bool
			if from, ok = AddrPort(a); !ok {
				n = 0 // not a UDP address: nothing anyone can answer
			}
		}
	}
	if err != nil {
		return 0, err
	}
	if n > len(m.Buf) {
		n = 0 // a PacketConn that reports the untruncated length
	}
	m.N, m.Seg, m.Addr = n, n, unmap(from)
	return 1, nil
}

// WriteBatch sends every datagram of msgs, one call each.
func (p *portable) WriteBatch(msgs []Message) (int, error) {
	var first error
	sent := 0
	for i := range msgs {
		m := &msgs[i]
		seg, err := segment(m)
		if err != nil {
			first = firstErr(first, err)
			continue
		}
		for off := 0; off < len(m.Buf); off += seg {
			n, err := p.write(m.Buf[off:min(off+seg, len(m.Buf))], m.Addr)
			sent += n
			first = firstErr(first, err)
		}
	}
	return sent, first
}

func (p *portable) write(b []byte, to netip.AddrPort) (int, error) {
	if p.ap != nil {
		return p.ap.WriteToUDPAddrPort(b, to)
	}
	return p.pc.WriteTo(b, net.UDPAddrFromAddrPort(to))
}

// errBadMessage: a message WriteBatch cannot send.
var errBadMessage = errors.New("transport: message to send has no valid address or a negative segment size")

// segment checks m for WriteBatch and returns its datagram size.
func segment(m *Message) (int, error) {
	if m.Seg < 0 || !m.Addr.IsValid() {
		return 0, fmt.Errorf("%w (%v, segment %d)", errBadMessage, m.Addr, m.Seg)
	}
	if m.Seg == 0 || m.Seg > len(m.Buf) {
		return max(len(m.Buf), 1), nil
	}
	return m.Seg, nil
}

// firstErr keeps the first error.
func firstErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}
