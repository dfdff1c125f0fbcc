//go:build !linux

package transport

import "net"

// Elsewhere (macOS, the BSDs) a UDP socket is read and written one
// datagram per system call: golang.org/x/net's batch calls fall back to
// that there too, and there are no UDP offloads to turn on.
func newUDPConn(uc *net.UDPConn, _ Options) (Conn, error) {
	return newPortable(uc), nil
}
