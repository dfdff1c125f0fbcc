//go:build !linux

package transport

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// control asks for large buffers (as much as the system allows). Don't
// fragment is a Linux option here (IP_MTU_DISCOVER); elsewhere the
// datagram sizes the gateway asks for (1,472 bytes on IPv4, 1,452 on
// IPv6) fit an Ethernet MTU unfragmented anyway.
func control(network, address string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) {
		for _, o := range []int{unix.SO_RCVBUF, unix.SO_SNDBUF} {
			// Halve until the system accepts: BSDs refuse above their
			// maximum instead of clamping.
			for n := SocketBuffer; n >= 1<<16; n /= 2 {
				if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o, n) == nil {
					break
				}
			}
		}
	})
}
