// Package transport is the UDP socket both programs use: one per process
// for everything. Listen opens it, with large kernel buffers so that
// bursts of datagrams from several servers are not dropped before the
// gateway reads them, and with fragmentation forbidden so that a datagram
// too large for the path fails loudly instead of silently losing every
// fragment train. Conn (conn.go) moves its datagrams in batches: many per
// system call with recvmmsg, sendmmsg, GSO and GRO on Linux, one per call
// over any other net.PacketConn.
package transport

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// SocketBuffer is the kernel buffer asked for in each direction. Above
// net.core.rmem_max only root gets it (SO_RCVBUFFORCE); others get the
// maximum the system allows, which Buffers reports.
const SocketBuffer = 16 << 20

// Listen opens a UDP socket on addr ("host:port", ":0" for any port).
func Listen(ctx context.Context, addr string) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: control}
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	return pc.(*net.UDPConn), nil
}

// Buffers reports the kernel buffer sizes a socket got.
func Buffers(c *net.UDPConn) (rcv, snd int, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	cerr := rc.Control(func(fd uintptr) {
		rcv, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		if err == nil {
			snd, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
		}
	})
	if cerr != nil {
		return 0, 0, cerr
	}
	return rcv, snd, err
}

// AddrPort converts a net.Addr from ReadFrom to a comparable value, with
// IPv4-mapped addresses unmapped so one host has one key.
func AddrPort(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
	}
	return netip.AddrPort{}, false
}
