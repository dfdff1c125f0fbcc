package transport

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// The kernel's UDP segmentation offloads, which are what make small
// datagrams cheap: one system call carries up to MaxSegments datagrams.
//
//   - GSO (UDP_SEGMENT, Linux 4.18): the sender hands the kernel one buffer
//     of equal-sized datagrams (the last may be shorter) and it is cut into
//     datagrams as late as possible, on the NIC if it can.
//   - GRO (UDP_GRO, Linux 5.0): the receiver gets back-to-back datagrams of
//     one flow in one read, with their size in a control message. On
//     loopback and veth a GSO buffer arrives whole, never cut.
//
// Each datagram is still its own sealed FS Chunk Protocol datagram on the
// wire: the offloads change how many system calls move them, not what a
// peer without them sees.
const (
	// MaxSegments is the most datagrams in one GSO write. The kernel's
	// limit (UDP_MAX_SEGMENTS) is 64 before Linux 6.9 and 128 since.
	MaxSegments = 64
	// MaxSegmentBytes is the most bytes in one GSO write: the payload of
	// one IPv4 UDP datagram, less a little for IPv6 extension headers.
	MaxSegmentBytes = 65000
	// GROBufferSize holds the largest coalesced read.
	GROBufferSize = 1 << 16
)

// Offload gives access to GSO and GRO on a UDP socket, with a fallback to
// one datagram per system call wherever they are missing.
type Offload struct {
	c   *net.UDPConn
	gso atomic.Bool
	gro bool
}

// NewOffload probes c for GSO and, if enableGRO, turns GRO on (both are
// Linux offloads: elsewhere both stay off and every datagram is its own
// system call).
func NewOffload(c *net.UDPConn, enableGRO bool) (*Offload, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("offload: %w", err)
	}
	o := &Offload{c: c}
	cerr := rc.Control(func(fd uintptr) {
		gso, gro := probe(int(fd), enableGRO)
		o.gso.Store(gso)
		o.gro = gro
	})
	if cerr != nil {
		return nil, fmt.Errorf("offload: %w", cerr)
	}
	return o, nil
}

// GSO reports whether WriteBatch sends a batch in one system call.
func (o *Offload) GSO() bool { return o.gso.Load() }

// GRO reports whether reads may return several datagrams.
func (o *Offload) GRO() bool { return o.gro }

// WriteBatch sends b, a run of datagrams of seg bytes each (the last may
// be shorter), to to, and returns how many bytes left. With GSO it is one
// system call; without it, or if the kernel refuses the offload for this
// path, one per datagram, and GSO is turned off for the socket from then
// on. The error is the first refusal; as with single datagrams, a refused
// datagram is simply lost.
func (o *Offload) WriteBatch(b []byte, seg int, to netip.AddrPort) (int, error) {
	if seg <= 0 {
		return 0, errors.New("offload: segment size must be positive")
	}
	if len(b) > seg && o.gso.Load() {
		err := o.writeGSO(b, seg, to)
		if err == nil {
			return len(b), nil
		}
		// EIO: the device cannot checksum segments; EINVAL or
		// EOPNOTSUPP: this path cannot segment. Anything else (EPERM
		// from a firewall, ENOBUFS) is loss, not a missing offload.
		if !errors.Is(err, unix.EIO) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EOPNOTSUPP) {
			return 0, err
		}
		o.gso.Store(false)
	}
	var first error
	sent := 0
	for off := 0; off < len(b); off += seg {
		n, err := o.c.WriteToUDPAddrPort(b[off:min(off+seg, len(b))], to)
		sent += n
		if err != nil && first == nil {
			first = err
		}
	}
	return sent, first
}

// Reader reads from an Offload's socket, one goroutine at a time, without
// allocating: its control-message buffer is reused, and the address
// comes back as a netip.AddrPort.
type Reader struct {
	o   *Offload
	oob []byte
}

// NewReader returns a Reader; each reading goroutine needs its own.
func (o *Offload) NewReader() *Reader {
	return &Reader{o: o, oob: make([]byte, oobSize)}
}

// Read reads into b, which should be GROBufferSize long when GRO is on.
// It returns the bytes read and seg, the size of each datagram in them
// (the last may be shorter); seg == n for a single datagram.
func (r *Reader) Read(b []byte) (n, seg int, from netip.AddrPort, err error) {
	n, oobn, flags, from, err := r.o.c.ReadMsgUDPAddrPort(b, r.oob)
	if err != nil {
		return 0, 0, from, err
	}
	if flags&unix.MSG_TRUNC != 0 {
		return 0, 0, from, fmt.Errorf("offload: datagram larger than the %d-byte buffer", len(b))
	}
	seg = n
	if r.o.gro && oobn > 0 {
		if s, ok := groSize(r.oob[:oobn]); ok && s > 0 && s < n {
			seg = s
		}
	}
	return n, seg, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), nil
}
