package transport

import (
	"net"
	"net/netip"
)

// Conn moves datagrams in batches: many per system call where the system
// can (recvmmsg and sendmmsg on Linux, with GSO and GRO on top), one per
// system call elsewhere, behind the same two methods. wireguard-go's
// conn.Bind is the model; unlike a Bind, a Conn wraps a socket its caller
// opened and closes (each program has exactly one), and a batch written
// may go to several addresses (the gateway's READs of one scheduling
// round go to several servers).
//
// ReadBatch is for one goroutine at a time (each program has one receive
// loop); WriteBatch is safe for concurrent use.
type Conn interface {
	// ReadBatch blocks until at least one datagram has arrived, then
	// fills msgs[:n] with what is waiting, at most BatchSize of them, and
	// returns n. Each message's Buf must be large enough for what may
	// arrive: GROBufferSize when GRO is on, else the largest datagram
	// expected. Errors are the socket's: a deadline (net.Error with
	// Timeout), net.ErrClosed once the socket is closed.
	ReadBatch(msgs []Message) (n int, err error)
	// WriteBatch sends every message of msgs (a message of several
	// datagrams as one GSO write where the socket has it) and returns
	// how many bytes the system took and the first error. As on the
	// wire, a datagram the system refuses is lost: the rest of the batch
	// is still sent.
	WriteBatch(msgs []Message) (sent int, err error)
	// BatchSize is the most messages one ReadBatch returns.
	BatchSize() int
	// GSO reports whether a message of several datagrams leaves in one
	// system call; GRO whether a read may return several datagrams of one
	// sender in one message.
	GSO() bool
	GRO() bool
}

// Message is one datagram, or a run of datagrams of Seg bytes each from
// or to one address (the last may be shorter): what a GSO write takes and
// a GRO read returns. Each datagram is still sealed on its own.
type Message struct {
	// Buf is, for ReadBatch, the buffer to read into (all of its length);
	// for WriteBatch, the bytes to send.
	Buf []byte
	// N is the bytes ReadBatch read into Buf. A message with N == 0
	// carries nothing to handle: an empty datagram, one larger than
	// Buf (the kernel cut it), or one from an address that is not a UDP
	// address (a test relay's).
	N int
	// Seg is the size of each datagram in the message. For ReadBatch it
	// is N for a single datagram; for WriteBatch, 0 (or len(Buf) or
	// more) sends Buf as one datagram.
	Seg int
	// Addr is where the message came from or goes to; ReadBatch returns
	// IPv4-mapped IPv6 addresses unmapped, so one host has one key.
	Addr netip.AddrPort
}

// DefaultBatchSize is how many messages a Conn reads at most in one
// system call: 32 × GROBufferSize is 2 MiB of receive buffers per program.
// A flood of small datagrams then costs a thirty-second of a system call
// each; wireguard-go reads 128 at a time.
const DefaultBatchSize = 32

// Options tune NewConn.
type Options struct {
	// GRO turns on UDP receive offload (Linux): a burst from one GSO
	// sender is read as one message of many datagrams. Every Buf given to
	// ReadBatch must then be GROBufferSize long.
	GRO bool
	// BatchSize is ReadBatch's most messages; 0 means DefaultBatchSize.
	BatchSize int
}

// NewConn wraps pc. A *net.UDPConn gets the system's batch calls and
// offloads (Linux); any other PacketConn (the in-memory simnet, a fault
// injector, a relay) one datagram per call, through the allocation-free
// AddrPort methods where pc has them.
func NewConn(pc net.PacketConn, o Options) (Conn, error) {
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if uc, ok := pc.(*net.UDPConn); ok {
		return newUDPConn(uc, o)
	}
	return newPortable(pc), nil
}

// NewMessages returns n messages, each with a buffer of size bytes, for
// ReadBatch.
func NewMessages(n, size int) []Message {
	ms := make([]Message, n)
	buf := make([]byte, n*size)
	for i := range ms {
		ms[i].Buf = buf[i*size : (i+1)*size : (i+1)*size]
	}
	return ms
}

// unmap makes one key of an address: IPv4-mapped IPv6 addresses (what a
// dual-stack socket reports for IPv4 senders) become IPv4.
func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
