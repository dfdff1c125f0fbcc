package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// On Linux a UDP socket reads with recvmmsg and writes with sendmmsg
// (golang.org/x/net's ReadBatch and WriteBatch), and on top of that:
//   - GRO (UDP_GRO, Linux 5.0), if asked: a read returns back-to-back
//     datagrams of one sender as one message, their size in a control
//     message. On loopback and veth a GSO write arrives whole this way.
//   - GSO (UDP_SEGMENT, Linux 4.18): a message of several equal-sized
//     datagrams is one buffer to the kernel, cut as late as possible (on
//     the NIC if it can).
//
// So one system call can carry BatchSize messages each way, and each
// message up to MaxSegments datagrams.

// oobSize holds the control message of one datagram: UDP_GRO's segment
// size on reads (an int), UDP_SEGMENT's on writes (a uint16).
var oobSize = unix.CmsgSpace(4) * 2

// batchRW is what ipv4.PacketConn and ipv6.PacketConn have in common
// (their Message is the same type).
type batchRW interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

type udpConn struct {
	uc    *net.UDPConn
	pc    batchRW
	batch int
	gso   atomic.Bool // turned off for good if the path refuses it
	gro   bool
	// single makes ReadBatch read one datagram per system call
	// (recvmsg), in race builds only: x/net tells the race detector that
	// recvmmsg wrote each message's whole buffer, 64 KiB a message, which
	// made a flood of small datagrams cost the receive loop some 250 µs
	// each under -race (the e2e flood test then lost its servers). Tests
	// turn it off to check recvmmsg under -race too.
	single bool
	// rd is ReadBatch's state: one reader at a time (the mutex only
	// makes a second one safe, not fast).
	rdMu sync.Mutex
	rd   *batchState
	st   sync.Pool // *batchState for WriteBatch, which runs on many goroutines
}

// batchState is what one ReadBatch or WriteBatch call hands the kernel.
type batchState struct {
	xm    []ipv4.Message
	oob   []byte
	addrs []net.UDPAddr
	ips   [][16]byte
	segs  []int // WriteBatch: each x message's datagram size, for the GSO fallback
}

// writeBatchMax is the most messages one sendmmsg carries here.
const writeBatchMax = 64

func newUDPConn(uc *net.UDPConn, o Options) (Conn, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	c := &udpConn{uc: uc, batch: o.BatchSize, single: raceEnabled}
	cerr := rc.Control(func(fd uintptr) {
		gso, gro := probe(int(fd), o.GRO)
		c.gso.Store(gso)
		c.gro = gro
	})
	if cerr != nil {
		return nil, fmt.Errorf("transport: %w", cerr)
	}
	if a, ok := uc.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() != nil {
		c.pc = ipv4.NewPacketConn(uc)
	} else {
		c.pc = ipv6.NewPacketConn(uc) // any IPv6 or dual-stack socket
	}
	c.rd = newBatchState(c.batch)
	c.st.New = func() any { return newBatchState(writeBatchMax) }
	return c, nil
}

func newBatchState(n int) *batchState {
	st := &batchState{
		xm:    make([]ipv4.Message, n),
		oob:   make([]byte, n*oobSize),
		addrs: make([]net.UDPAddr, n),
		ips:   make([][16]byte, n),
		segs:  make([]int, n),
	}
	bufs := make([][]byte, n)
	for i := range st.xm {
		st.xm[i].Buffers = bufs[i : i+1 : i+1]
	}
	return st
}

func (c *udpConn) BatchSize() int {
	if c.single {
		return 1
	}
	return c.batch
}
func (c *udpConn) GSO() bool { return c.gso.Load() }
func (c *udpConn) GRO() bool { return c.gro }

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

func (c *udpConn) ReadBatch(msgs []Message) (int, error) {
	c.rdMu.Lock()
	defer c.rdMu.Unlock()
	st := c.rd
	k := min(len(msgs), c.BatchSize(), len(st.xm))
	if k == 0 {
		return 0, nil
	}
	if c.single {
		return c.readSingle(&msgs[0], st.oob[:oobSize])
	}
	xm := st.xm[:k]
	for i := range xm {
		xm[i].Buffers[0] = msgs[i].Buf
		xm[i].OOB = st.oob[i*oobSize : (i+1)*oobSize]
		xm[i].Addr = nil
		xm[i].N, xm[i].NN, xm[i].Flags = 0, 0, 0
	}
	n, err := c.pc.ReadBatch(xm, 0)
	if err != nil {
		return 0, err
	}
	for i := range xm[:n] {
		x, m := &xm[i], &msgs[i]
		m.N, m.Seg, m.Addr = x.N, x.N, netip.AddrPort{}
		if ua, ok := x.Addr.(*net.UDPAddr); ok {
			m.Addr = unmap(ua.AddrPort())
		} else {
			m.N, m.Seg = 0, 0
		}
		if x.Flags&unix.MSG_TRUNC != 0 {
			m.N, m.Seg = 0, 0 // larger than its buffer: cut, worthless
			continue
		}
		if c.gro && x.NN > 0 {
			if s, ok := groSize(x.OOB[:x.NN]); ok && s > 0 && s < m.N {
				m.Seg = s
			}
		}
	}
	for i := range xm {
		xm[i].Buffers[0] = nil // the pool keeps no caller's buffer alive
	}
	return n, nil
}

// readSingle reads one datagram (or GRO run) into m with recvmsg.
func (c *udpConn) readSingle(m *Message, oob []byte) (int, error) {
	n, oobn, flags, from, err := c.uc.ReadMsgUDPAddrPort(m.Buf, oob)
	if err != nil {
		return 0, err
	}
	m.N, m.Seg, m.Addr = n, n, unmap(from)
	if flags&unix.MSG_TRUNC != 0 {
		m.N, m.Seg = 0, 0
		return 1, nil
	}
	if c.gro && oobn > 0 {
		if s, ok := groSize(oob[:oobn]); ok && s > 0 && s < n {
			m.Seg = s
		}
	}
	return 1, nil
}

// WriteBatch packs msgs into sendmmsg calls of up to writeBatchMax
// messages: a message of several datagrams becomes GSO runs (at most
// MaxSegments datagrams and MaxSegmentBytes each) while the socket has
// GSO, single datagrams otherwise.
func (c *udpConn) WriteBatch(msgs []Message) (int, error) {
	st := c.st.Get().(*batchState)
	defer c.st.Put(st)
	var first error
	sent, j := 0, 0
	flush := func() {
		n, err := c.flush(st, j)
		sent += n
		first = firstErr(first, err)
		j = 0
	}
	for i := range msgs {
		m := &msgs[i]
		seg, err := segment(m)
		if err != nil {
			first = firstErr(first, err)
			continue
		}
		run := seg // bytes per x message
		if c.gso.Load() {
			if per := min(MaxSegments, MaxSegmentBytes/seg); per > 1 {
				run = per * seg
			}
		}
		for off := 0; off < len(m.Buf); off += run {
			if j == len(st.xm) {
				flush()
			}
			c.pack(st, j, m.Buf[off:min(off+run, len(m.Buf))], seg, m.Addr)
			j++
		}
	}
	if j > 0 {
		flush()
	}
	for i := range st.xm {
		st.xm[i].Buffers[0] = nil
	}
	return sent, first
}

// pack makes st.xm[j] the datagrams b of seg bytes each, to to.
func (c *udpConn) pack(st *batchState, j int, b []byte, seg int, to netip.AddrPort) {
	x := &st.xm[j]
	x.Buffers[0] = b
	x.N, x.NN, x.Flags = 0, 0, 0
	ua, ip := &st.addrs[j], &st.ips[j]
	a := to.Addr()
	if a.Is4() {
		*(*[4]byte)(ip[:4]) = a.As4()
		ua.IP = ip[:4]
	} else {
		*ip = a.As16()
		ua.IP = ip[:16]
	}
	ua.Port, ua.Zone = int(to.Port()), ""
	x.Addr = ua
	st.segs[j] = seg
	x.OOB = nil
	if len(b) > seg {
		oob := st.oob[j*oobSize : j*oobSize+unix.CmsgSpace(2)]
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_SEGMENT
		h.SetLen(unix.CmsgLen(2))
		binary.NativeEndian.PutUint16(oob[unix.SizeofCmsghdr:], uint16(seg))
		x.OOB = oob
	}
}

// flush sends st.xm[:n]. sendmmsg stops at the first message the kernel
// refuses; that one is lost (as any datagram may be) and the rest are
// sent. A GSO message refused because the path cannot segment turns GSO
// off for the socket and goes again as single datagrams.
func (c *udpConn) flush(st *batchState, n int) (int, error) {
	var first error
	sent := 0
	for start := 0; start < n; {
		k, err := c.pc.WriteBatch(st.xm[start:n], 0)
		k = max(k, 0)
		for i := start; i < start+k; i++ {
			sent += len(st.xm[i].Buffers[0])
		}
		start += k
		if err == nil {
			continue
		}
		if start >= n {
			first = firstErr(first, err)
			break
		}
		x := &st.xm[start]
		if x.OOB != nil && gsoRefused(err) {
			c.gso.Store(false)
			s, err := c.writeEach(x.Buffers[0], st.segs[start], x.Addr.(*net.UDPAddr).AddrPort())
			sent += s
			first = firstErr(first, err)
		} else {
			first = firstErr(first, err)
		}
		start++
	}
	return sent, first
}

// gsoRefused tells a path without segmentation from loss: EIO, the device
// cannot checksum segments; EINVAL or EOPNOTSUPP, this path cannot segment.
// Anything else (EPERM from a firewall, ENOBUFS) is loss.
func gsoRefused(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)
}

// writeEach sends b as single datagrams of seg bytes.
func (c *udpConn) writeEach(b []byte, seg int, to netip.AddrPort) (int, error) {
	var first error
	sent := 0
	for off := 0; off < len(b); off += seg {
		n, err := c.uc.WriteToUDPAddrPort(b[off:min(off+seg, len(b))], to)
		sent += n
		first = firstErr(first, err)
	}
	return sent, first
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
