package transport

import (
	"encoding/binary"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// oobSize holds the UDP_GRO control message of a read.
var oobSize = unix.CmsgSpace(4) * 2

// probe reports whether the socket fd has GSO and, if enableGRO, turns
// GRO on and reports whether it took.
func probe(fd int, enableGRO bool) (gso, gro bool) {
	// Reading the option back is the probe: kernels without GSO reject
	// it with ENOPROTOOPT.
	if _, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT); err == nil {
		gso = true
	}
	if enableGRO && unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil {
		gro = true
	}
	return gso, gro
}

func (o *Offload) writeGSO(b []byte, seg int, to netip.AddrPort) error {
	var oob [unix.SizeofCmsghdr + 8]byte // CmsgSpace(2)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level = unix.IPPROTO_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.SizeofCmsghdr:], uint16(seg))
	_, _, err := o.c.WriteMsgUDPAddrPort(b, oob[:unix.CmsgSpace(2)], to)
	return err
}

// groSize finds the UDP_GRO control message (the segment size, an int).
func groSize(oob []byte) (int, bool) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return 0, false
		}
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && l >= unix.CmsgLen(4) {
			return int(binary.NativeEndian.Uint32(oob[unix.SizeofCmsghdr:])), true
		}
		sp := unix.CmsgSpace(l - unix.SizeofCmsghdr)
		if sp > len(oob) {
			break
		}
		oob = oob[sp:]
	}
	return 0, false
}
