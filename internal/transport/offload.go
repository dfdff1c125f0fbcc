package transport

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
