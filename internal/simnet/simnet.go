// Package simnet is an in-memory datagram network for tests: hosts, each
// behind its own access link, whose two directions have a rate, a one-way
// delay, a drop-tail queue, random and bursty (Gilbert–Elliott) loss,
// reordering and duplication, all seeded. A datagram from host A to host
// B crosses A's uplink, then B's downlink.
//
// It keeps time with the time package, so inside a testing/synctest bubble
// the clock is virtual: a 200 ms-RTT transfer of tens of megabytes runs in
// seconds of real time, the same way every run. The network and its
// connections must then be created inside the bubble. quic-go's
// testutils/simnet is the model.
package simnet

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

// DefaultRecvBuffer is a connection's receive queue, as a socket's
// receive buffer: datagrams beyond it are dropped and counted.
const DefaultRecvBuffer = 16 << 20

// Network is a set of hosts. Safe for concurrent use.
type Network struct {
	mu    sync.Mutex
	hosts map[netip.Addr]*Host
	conns map[netip.AddrPort]*Conn
}

// New returns an empty network.
func New() *Network {
	return &Network{hosts: map[netip.Addr]*Host{}, conns: map[netip.AddrPort]*Conn{}}
}

// Host is one address on the network and its access link.
type Host struct {
	n        *Network
	addr     netip.Addr
	up, down *link
	nextPort uint16
}

// AddHost adds a host at addr behind a link: up is the direction from the
// host into the network, down the direction to it.
func (n *Network) AddHost(addr netip.Addr, up, down LinkConfig) (*Host, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.hosts[addr]; ok {
		return nil, fmt.Errorf("simnet: host %v exists", addr)
	}
	h := &Host{n: n, addr: addr, nextPort: 40000}
	h.up = newLink(up, n.route)
	h.down = newLink(down, n.arrive)
	n.hosts[addr] = h
	return h, nil
}

// SetUp and SetDown change a direction of the host's link from now on (a
// route change, an outage: LinkConfig{Loss: 1}); datagrams already on the
// link arrive when they were going to, and new ones may overtake them. The
// link's random decisions restart from the new Seed.
func (h *Host) SetUp(cfg LinkConfig)   { h.up.set(cfg) }
func (h *Host) SetDown(cfg LinkConfig) { h.down.set(cfg) }

// Up and Down report what the host's link did in each direction.
func (h *Host) Up() LinkStats   { return h.up.stats() }
func (h *Host) Down() LinkStats { return h.down.stats() }

// ResetPeaks starts new peaks (MaxQueueDelay) in both directions, so a
// measurement sees its own, not an earlier transfer's.
func (h *Host) ResetPeaks() { h.up.resetPeak(); h.down.resetPeak() }

// Listen opens a connection on the host at port (0: any free port).
func (h *Host) Listen(port uint16) (*Conn, error) {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if port == 0 {
		for {
			h.nextPort++
			if _, ok := n.conns[netip.AddrPortFrom(h.addr, h.nextPort)]; !ok {
				port = h.nextPort
				break
			}
		}
	}
	ap := netip.AddrPortFrom(h.addr, port)
	if _, ok := n.conns[ap]; ok {
		return nil, fmt.Errorf("simnet: listen %v: address in use", ap)
	}
	c := &Conn{n: n, h: h, addr: ap, recvCap: DefaultRecvBuffer, notify: make(chan struct{}, 1), done: make(chan struct{})}
	n.conns[ap] = c
	return c, nil
}

// packet is one datagram on its way.
type packet struct {
	data     []byte
	from, to netip.AddrPort
}

func (p *packet) clone() *packet {
	q := *p
	q.data = append([]byte(nil), p.data...)
	return &q
}

// route takes a datagram off a sender's uplink onto the receiver's downlink.
func (n *Network) route(p *packet) {
	n.mu.Lock()
	h := n.hosts[p.to.Addr()]
	n.mu.Unlock()
	if h != nil {
		h.down.send(p)
	}
}

// arrive hands a datagram off a downlink to its connection.
func (n *Network) arrive(p *packet) {
	n.mu.Lock()
	c := n.conns[p.to]
	n.mu.Unlock()
	if c != nil {
		c.enqueue(p)
	}
}

// Conn is one end of the network: a net.PacketConn whose addresses are
// *net.UDPAddr.
type Conn struct {
	n    *Network
	h    *Host
	addr netip.AddrPort

	mu        sync.Mutex
	queue     []*packet
	queued    int // bytes in queue
	recvCap   int
	overflows uint64
	closed    bool
	deadline  chan struct{} // closed when the read deadline passes; nil: none
	dlTimer   *time.Timer

	notify chan struct{} // a datagram was queued
	done   chan struct{} // closed by Close
}

// SetRecvBuffer sets the receive queue's size in bytes.
func (c *Conn) SetRecvBuffer(n int) {
	c.mu.Lock()
	c.recvCap = n
	c.mu.Unlock()
}

// Overflows counts datagrams dropped because the receive queue was full.
func (c *Conn) Overflows() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.overflows
}

func (c *Conn) enqueue(p *packet) {
	c.mu.Lock()
	if c.closed || c.queued+len(p.data) > c.recvCap {
		if !c.closed {
			c.overflows++
		}
		c.mu.Unlock()
		return
	}
	c.queue = append(c.queue, p)
	c.queued += len(p.data)
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// ReadFrom reads the next datagram.
func (c *Conn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.ReadFromUDPAddrPort(b)
	if err != nil {
		return 0, nil, err
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

// ReadFromUDPAddrPort reads the next datagram; a datagram longer than b
// is truncated, as on a socket.
func (c *Conn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	for {
		c.mu.Lock()
		if len(c.queue) > 0 {
			p := c.queue[0]
			c.queue[0] = nil
			c.queue = c.queue[1:]
			c.queued -= len(p.data)
			c.mu.Unlock()
			return copy(b, p.data), p.from, nil
		}
		if c.closed {
			c.mu.Unlock()
			return 0, netip.AddrPort{}, c.opErr("read", net.ErrClosed)
		}
		dl := c.deadline
		c.mu.Unlock()
		select {
		case <-c.notify:
		case <-c.done:
		case <-dl:
			return 0, netip.AddrPort{}, c.opErr("read", os.ErrDeadlineExceeded)
		}
	}
}

// WriteTo sends b to a, a *net.UDPAddr or anything whose String parses as
// an address and port. A datagram to nobody is lost silently, as on UDP.
func (c *Conn) WriteTo(b []byte, a net.Addr) (int, error) {
	var to netip.AddrPort
	if ua, ok := a.(*net.UDPAddr); ok {
		to = ua.AddrPort()
	} else if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		to = ap
	} else {
		return 0, c.opErr("write", fmt.Errorf("simnet: bad address %v", a))
	}
	return c.WriteToUDPAddrPort(b, to)
}

// WriteToUDPAddrPort sends b to to.
func (c *Conn) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return 0, c.opErr("write", net.ErrClosed)
	}
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	c.h.up.send(&packet{data: append([]byte(nil), b...), from: c.addr, to: to})
	return len(b), nil
}

// Close closes the connection; blocked reads return net.ErrClosed.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opErr("close", net.ErrClosed)
	}
	c.closed = true
	c.queue, c.queued = nil, 0
	if c.dlTimer != nil {
		c.dlTimer.Stop()
	}
	close(c.done)
	c.n.mu.Lock()
	delete(c.n.conns, c.addr)
	c.n.mu.Unlock()
	return nil
}

// LocalAddr is the connection's address, a *net.UDPAddr.
func (c *Conn) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(c.addr) }

// AddrPort is the connection's address.
func (c *Conn) AddrPort() netip.AddrPort { return c.addr }

// SetDeadline sets the read deadline (writes never block).
func (c *Conn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetWriteDeadline does nothing: writes never block.
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }

// SetReadDeadline makes reads fail with a timeout from t on; the zero
// time removes the deadline.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dlTimer != nil {
		c.dlTimer.Stop()
		c.dlTimer = nil
	}
	if t.IsZero() {
		c.deadline = nil
		return nil
	}
	ch := make(chan struct{})
	c.deadline = ch
	if d := time.Until(t); d > 0 {
		c.dlTimer = time.AfterFunc(d, func() { close(ch) })
	} else {
		close(ch)
	}
	// A reader blocked on the old deadline looks again.
	select {
	case c.notify <- struct{}{}:
	default:
	}
	return nil
}

func (c *Conn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "udp", Addr: c.LocalAddr(), Err: err}
}

var _ net.PacketConn = (*Conn)(nil)
