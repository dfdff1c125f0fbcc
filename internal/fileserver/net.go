package fileserver

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/transport"
)

// peer is a gateway's address, as resolved: a netip.AddrPort, which a
// *net.UDPConn writes to without allocating, and the same as a net.Addr
// for any other PacketConn (a relay, a test wrapper).
type peer struct {
	ap netip.AddrPort
	na net.Addr
}

func (p peer) String() string {
	if p.na != nil {
		return p.na.String()
	}
	return p.ap.String()
}

// errNoAddress: the gateway's name has not been resolved yet.
var errNoAddress = errors.New("no address for the gateway yet")

// writeTo sends one datagram. Failures are counted and otherwise treated
// like any lost datagram; callers that can tell an operator something
// useful log them.
func (s *Server) writeTo(pkt []byte, p *peer) error {
	if p == nil {
		return errNoAddress
	}
	var err error
	if s.udp != nil && p.ap.IsValid() {
		_, err = s.udp.WriteToUDPAddrPort(pkt, p.ap)
	} else {
		a := p.na
		if a == nil {
			a = net.UDPAddrFromAddrPort(p.ap)
		}
		_, err = s.cfg.Conn.WriteTo(pkt, a)
	}
	if err != nil {
		s.st.sendErrors.Add(1)
		s.log.Debug("fileserver: send failed", "addr", p.String(), "err", err)
		return err
	}
	s.st.bytesSent.Add(uint64(len(pkt)))
	return nil
}

// sendBatch sends bb.out, datagrams of dg bytes each (the last may be
// shorter) sealed on sess, to the gateway: one system call where the
// socket has sendmmsg, GSO runs within it where it has GSO. It reports
// whether any of them left.
func (s *Server) sendBatch(sess *session, bb *batchBuf, dg int) bool {
	p := sess.gw.addr.Load()
	if p == nil {
		return false
	}
	b := bb.out
	if p.ap.IsValid() {
		bb.msg[0] = transport.Message{Buf: b, Seg: dg, Addr: p.ap}
		sent, err := s.conn.WriteBatch(bb.msg[:])
		bb.msg[0].Buf = nil
		if err != nil {
			s.st.sendErrors.Add(1)
			s.log.Debug("fileserver: send failed", "addr", p.String(), "err", err)
		}
		s.st.bytesSent.Add(uint64(sent))
		return sent > 0
	}
	ok := false
	for off := 0; off < len(b); off += dg {
		if s.writeTo(b[off:min(off+dg, len(b))], p) == nil {
			ok = true
		}
	}
	return ok
}

// errNoSession: nothing can be sent to a gateway now.
var errNoSession = errors.New("fileserver: no session with the gateway")

// maxSendFailures is how many batches of one read in a row the socket may
// refuse entirely before the read is abandoned.
const maxSendFailures = 32

// sealSend seals pkt (a transport header and body, with fschunk.TagSize
// spare capacity) in place with sess and sends it to the gateway's
// address. errNoSession means the session can no longer seal (stop); any
// other error is the socket refusing this one datagram (it is lost, the
// next may pass).
func (s *Server) sealSend(sess *session, pkt []byte) error {
	out, err := sess.auth.Seal(pkt, s.now())
	if err != nil {
		return errNoSession
	}
	return s.writeTo(out, sess.gw.addr.Load())
}

// sendCurrent seals pkt with the gateway's current session: whatever
// session a request came in on, answers go out on the newest one, so that
// nothing more is sent on a session being retired.
func (s *Server) sendCurrent(g *gateway, pkt []byte) error {
	cur := g.cur.Load()
	if cur == nil {
		return errNoSession
	}
	return s.sealSend(cur, pkt)
}

// resolve resolves "host:port" the way net.ResolveUDPAddr does (first IPv4
// address if there is one), but honours ctx, so that a hanging DNS lookup
// cannot hold up shutdown.
func resolve(ctx context.Context, hostport string) (peer, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return peer{}, err
	}
	pn, err := net.DefaultResolver.LookupPort(ctx, "udp", port)
	if err != nil {
		return peer{}, err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		ips, lerr := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if lerr != nil {
			return peer{}, lerr
		}
		if len(ips) == 0 {
			return peer{}, fmt.Errorf("no address for %s", host)
		}
		ip = ips[0]
		for _, a := range ips {
			if a.Unmap().Is4() {
				ip = a
				break
			}
		}
	}
	ap := netip.AddrPortFrom(ip.Unmap(), uint16(pn))
	return peer{ap: ap, na: net.UDPAddrFromAddrPort(ap)}, nil
}

// ---------------------------------------------------------------- receive

// receive is the single reader of the socket: it authenticates every
// datagram and hands it to its owner. Whatever does not parse or
// authenticate is counted and dropped without an answer, so a forger
// learns nothing and cannot make the server send anything.
func (s *Server) receive(ctx context.Context) error {
	msgs := transport.NewMessages(s.conn.BatchSize(), recvBufferSize)
	var pause *time.Timer
	for {
		k, err := s.conn.ReadBatch(msgs)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				s.log.Error("fileserver: socket closed", "err", err)
				return fmt.Errorf("fileserver: receive: %w", err)
			}
			s.log.Warn("fileserver: receive failed", "err", err)
			if pause == nil {
				pause = time.NewTimer(readErrorPause)
				defer pause.Stop()
			} else {
				pause.Reset(readErrorPause)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-pause.C:
			}
			continue
		}
		for _, m := range msgs[:k] {
			s.handle(m.Buf[:m.N], m.Addr)
		}
	}
}

// handle demultiplexes one datagram: handshake messages by the receiver
// index they carry (the handshake that sent the HELLO), transport messages
// by the receiver index of their header (the session, current or previous,
// that owns it). The source address plays no part: a gateway may answer
// from another address, and authentication is what counts.
func (s *Server) handle(pkt []byte, from netip.AddrPort) {
	t, err := fschunk.ParsePrefix(pkt)
	if err != nil {
		s.st.garbage.Add(1)
		if errors.Is(err, fschunk.ErrVersion) {
			s.st.version.Add(1)
			s.versionLog.Do(func() {
				s.log.Warn("fileserver: datagram of another FS Chunk Protocol version dropped: the server and the gateway must run the same protocol version",
					"addr", from.String(), "peer_version", pkt[0], "our_version", fschunk.Version)
			})
		}
		return
	}
	if t.IsHandshake() {
		// A server only ever receives CHALLENGE.
		if t != fschunk.TypeChallenge || len(pkt) != fschunk.ChallengeSize {
			s.st.garbage.Add(1)
			return
		}
		idx := binary.BigEndian.Uint32(pkt[4:8])
		_, g := s.reg.lookup(idx)
		if g == nil {
			s.st.unknown.Add(1)
			return
		}
		g.postHandshake(gwEvent{kind: evChallenge, index: idx, pkt: bytes.Clone(pkt)})
		return
	}
	h, err := fschunk.ParseHeader(pkt)
	if err != nil {
		s.st.garbage.Add(1)
		return
	}
	sess, g := s.reg.lookup(h.Receiver)
	if sess == nil {
		if g != nil && h.Type == fschunk.TypeWelcome {
			g.postHandshake(gwEvent{kind: evWelcome, index: h.Receiver, pkt: bytes.Clone(pkt)})
			return
		}
		s.st.unknown.Add(1)
		return
	}
	_, body, err := sess.auth.Open(pkt, s.now())
	if err != nil {
		s.dropFor(err)
		return
	}
	s.st.authenticated.Add(1)
	g = sess.gw
	switch h.Type {
	case fschunk.TypeRead:
		s.onRead(g, body)
	case fschunk.TypeMetaRequest:
		s.onMeta(g, body)
	case fschunk.TypeHashRequest:
		s.onHashRequest(g, body)
	case fschunk.TypeHeartbeatAck:
		ev := gwEvent{kind: evHeartbeatAck, sess: sess}
		if ev.hbAck.Decode(body) != nil {
			s.st.garbage.Add(1)
			return
		}
		g.post(ev)
	case fschunk.TypeCatalogAck:
		ev := gwEvent{kind: evCatalogAck, sess: sess}
		if ev.catAck.Decode(body) != nil {
			s.st.garbage.Add(1)
			return
		}
		g.post(ev)
	case fschunk.TypeGoodbye:
		ev := gwEvent{kind: evGoodbye, sess: sess}
		if ev.bye.Decode(body) != nil {
			s.st.garbage.Add(1)
			return
		}
		g.post(ev)
	case fschunk.TypeWelcome:
		// A retransmitted WELCOME for a session already established:
		// nothing to do.
	case fschunk.TypeError:
		var e fschunk.Error
		if e.Decode(body) != nil {
			s.st.garbage.Add(1)
			return
		}
		s.st.errorsRecv.Add(1)
		g.log.Debug("fileserver: gateway reported an error", "session", sess.auth.LocalIndex, "code", e.Code.String(), "err", e.Message)
	case fschunk.TypeHeartbeat, fschunk.TypeCatalogPage, fschunk.TypeCatalogDelta, fschunk.TypeMeta, fschunk.TypeData, fschunk.TypeHashes:
		s.st.unexpected.Add(1)
	default:
		s.sendError(g, 0, fschunk.CodeUnsupported, "unsupported message type")
	}
}
