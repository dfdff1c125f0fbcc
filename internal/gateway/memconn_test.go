package gateway

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

// memNet is an in-memory datagram network for tests in a synctest
// bubble: a read blocks on a channel (durably), so virtual time advances
// while the gateway waits for datagrams. Datagrams to an unknown address,
// or to a full queue, are lost.
type memNet struct {
	mu    sync.Mutex
	conns map[netip.AddrPort]*memConn
}

type memPkt struct {
	b    []byte
	from netip.AddrPort
}

func newMemNet() *memNet { return &memNet{conns: map[netip.AddrPort]*memConn{}} }

func (n *memNet) listen(addr string) *memConn {
	ap := netip.MustParseAddrPort(addr)
	c := &memConn{net: n, addr: ap, in: make(chan memPkt, 1024), wake: make(chan struct{}, 1), closed: make(chan struct{})}
	n.mu.Lock()
	n.conns[ap] = c
	n.mu.Unlock()
	return c
}

type memConn struct {
	net    *memNet
	addr   netip.AddrPort
	in     chan memPkt
	wake   chan struct{}
	closed chan struct{}
	once   sync.Once

	mu       sync.Mutex
	deadline time.Time
}

func (c *memConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		dl := c.deadline
		c.mu.Unlock()
		var timeout <-chan time.Time
		if !dl.IsZero() {
			wait := time.Until(dl)
			if wait <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			timeout = time.After(wait)
		}
		select {
		case p := <-c.in:
			return copy(b, p.b), net.UDPAddrFromAddrPort(p.from), nil
		case <-c.wake:
		case <-timeout:
		case <-c.closed:
			return 0, nil, net.ErrClosed
		}
	}
}

// recv returns the next datagram for c, or nil if none is queued.
func (c *memConn) recv() []byte {
	select {
	case p := <-c.in:
		return p.b
	default:
		return nil
	}
}

func (c *memConn) WriteTo(b []byte, a net.Addr) (int, error) {
	ap := a.(*net.UDPAddr).AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	c.net.mu.Lock()
	to := c.net.conns[ap]
	c.net.mu.Unlock()
	if to != nil {
		select {
		case to.in <- memPkt{b: append([]byte(nil), b...), from: c.addr}:
		default:
		}
	}
	return len(b), nil
}

func (c *memConn) send(b []byte, to *memConn) { c.WriteTo(b, net.UDPAddrFromAddrPort(to.addr)) }

func (c *memConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *memConn) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(c.addr) }

func (c *memConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return nil
}

func (c *memConn) SetDeadline(t time.Time) error    { return c.SetReadDeadline(t) }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }
