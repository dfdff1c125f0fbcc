package fileserver

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"

	"github.com/fastfile/fschunk/internal/catalog"
	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/transport"
)

// readJob is one admitted READ, pooled so that steady-state serving
// allocates nothing per request beyond what the catalog does.
type readJob struct {
	gw   *gateway
	read fschunk.Read
}

func (s *Server) putJob(j *readJob) {
	j.gw = nil
	s.jobPool.Put(j)
}

// batchBytes is the most bytes of datagrams in one batch: two GSO
// writes' worth, one sendmmsg. More would save few system calls and cost
// memory: each READ in service holds a batch (twice: the file bytes and
// the sealed datagrams).
const batchBytes = 2 * transport.MaxSegmentBytes

// batchBuf holds one batch of DATA datagrams: the file bytes, the sealed
// datagrams back to back, and the message that hands them to the socket.
type batchBuf struct {
	data, out []byte
	msg       [1]transport.Message
}

func (s *Server) getBatch() *batchBuf  { return s.batchPool.Get().(*batchBuf) }
func (s *Server) putBatch(b *batchBuf) { s.batchPool.Put(b) }

func (s *Server) getBuf() *[]byte { return s.bufPool.Get().(*[]byte) }

func (s *Server) putBuf(b *[]byte) {
	*b = (*b)[:0]
	s.bufPool.Put(b)
}

// onRead admits a READ to the worker pool or refuses it with BUSY at once:
// the gateway then asks another holder instead of waiting in a queue here.
func (s *Server) onRead(g *gateway, body []byte) {
	j := s.jobPool.Get().(*readJob)
	if err := j.read.Decode(body); err != nil {
		s.st.garbage.Add(1)
		s.putJob(j)
		return
	}
	if s.active.Add(1) > int64(s.maxReads) {
		s.active.Add(-1)
		s.refuse(g, &j.read, fschunk.CodeBusy, nil)
		s.putJob(j)
		return
	}
	j.gw = g
	// Never blocks: at most maxReads jobs are admitted, and that is the
	// channel's capacity.
	s.jobs <- j
}

// worker serves admitted READs until ctx is done.
func (s *Server) worker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-s.jobs:
			s.serveRead(ctx, j.gw, &j.read)
			s.putJob(j)
			s.active.Add(-1)
		}
	}
}

// serveRead answers one READ: DATA datagrams covering its ranges in order,
// or one ERROR. A request is checked as a whole before any byte is sent, so
// it is answered either with data or with an error, never with both.
func (s *Server) serveRead(ctx context.Context, g *gateway, r *fschunk.Read) {
	f, err := s.cfg.Catalog.Open(r.Hash)
	if err != nil {
		code := fschunk.CodeInternal
		switch {
		case errors.Is(err, catalog.ErrNotFound):
			code = fschunk.CodeNotFound
		case errors.Is(err, catalog.ErrStale):
			code = fschunk.CodeStale
		}
		s.refuse(g, r, code, err)
		return
	}
	defer f.Close()
	size := f.Entry().Size
	for _, rg := range r.Ranges {
		if rg.Offset+int64(rg.Length) > size {
			s.refuse(g, r, fschunk.CodeRange, nil)
			return
		}
	}
	dg := min(int(r.MaxDatagram), s.maxDG)
	chunk := dg - fschunk.DataOverhead
	// A batch is one read of the file and one system call to send it:
	// batchBytes of datagrams, in GSO runs where the socket has GSO,
	// several datagrams per sendmmsg in any case on Linux (one system
	// call per datagram elsewhere). Loopback's 32 KiB datagrams are too
	// large for GSO but still go three to a call.
	segs := max(1, batchBytes/dg)
	// Paced, a batch is about a millisecond at the gateway's rate.
	segs = g.pace.set(r.Pace, dg, segs)
	bb := s.getBatch()
	defer s.putBatch(bb)
	var sent int64
	failed := 0 // consecutive batches the socket refused
	for _, rg := range r.Ranges {
		end := rg.Offset + int64(rg.Length)
		for off := rg.Offset; off < end; {
			if ctx.Err() != nil {
				return
			}
			n := int(min(int64(segs*chunk), end-off))
			data := bb.data[:n]
			got, err := f.ReadAt(data, off)
			if got < n || (err != nil && !errors.Is(err, io.EOF)) {
				code := fschunk.CodeInternal
				// A short read means the file is no longer the version
				// that was hashed, whether or not the check noticed yet.
				if errors.Is(err, catalog.ErrStale) || (got < n && (err == nil || errors.Is(err, io.EOF))) {
					code = fschunk.CodeStale
				}
				s.refuse(g, r, code, err)
				return
			}
			// Answers go out on the gateway's newest session, whatever
			// session the READ came in on.
			cur := g.cur.Load()
			if cur == nil {
				return // no session: nobody is listening
			}
			out, now := bb.out[:0], s.now()
			for p := 0; p < n; p += chunk {
				m := min(chunk, n-p)
				at := len(out)
				pkt := fschunk.AppendHeader(out, fschunk.Header{Type: fschunk.TypeData})
				pkt = fschunk.AppendDataHeader(pkt, r.ID, off+int64(p))
				pkt = append(pkt, data[p:p+m]...)
				// Sealed in place: the tag goes into the spare capacity.
				sealed, err := cur.auth.Seal(pkt[at:], now)
				if err != nil {
					return // the session can no longer seal
				}
				out = pkt[:at+len(sealed)]
			}
			if err := g.pace.wait(ctx, n); err != nil { // Pace counts file bytes
				return
			}
			bb.out = out
			if s.sendBatch(cur, bb, dg) {
				failed = 0
			} else if failed++; failed >= maxSendFailures {
				// The socket refused everything (a local firewall
				// drop, a full device queue, an ICMP error) for a
				// while: the path is plainly down. Isolated refusals
				// are losses like on the wire, and the gateway asks
				// again.
				return
			}
			s.st.dataSent.Add(uint64((n + chunk - 1) / chunk))
			sent += int64(n)
			off += int64(n)
		}
	}
	s.st.readsServed.Add(1)
	if s.log.Enabled(ctx, slog.LevelDebug) {
		g.log.Debug("fileserver: read served", "hash", shortHash(r.Hash), "offset", r.Ranges[0].Offset, "ranges", len(r.Ranges), "bytes", sent, "id", r.ID)
	}
}

// refuse answers a READ with an ERROR and warns, at most once per
// refusedLogEvery: refusals come in bursts (a changed file, overload).
func (s *Server) refuse(g *gateway, r *fschunk.Read, code fschunk.Code, err error) {
	s.sendError(g, r.ID, code, errorText(code))
	now := s.now().UnixNano()
	last := s.refusedAt.Load()
	if now-last < int64(refusedLogEvery) || !s.refusedAt.CompareAndSwap(last, now) {
		s.refusedSuppressed.Add(1)
		return
	}
	args := []any{"hash", shortHash(r.Hash), "offset", r.Ranges[0].Offset, "code", code.String(), "id", r.ID}
	if err != nil {
		args = append(args, "err", err)
	}
	if n := s.refusedSuppressed.Swap(0); n > 0 {
		args = append(args, "suppressed", n)
	}
	g.log.Warn("fileserver: read refused", args...)
}

func errorText(code fschunk.Code) string {
	switch code {
	case fschunk.CodeNotFound:
		return "no such file"
	case fschunk.CodeStale:
		return "file changed"
	case fschunk.CodeRange:
		return "range beyond end of file"
	case fschunk.CodeBusy:
		return "too many reads"
	case fschunk.CodeUnsupported:
		return "unsupported message type"
	}
	return "internal error"
}

// sendError sends an ERROR on the gateway's current session.
func (s *Server) sendError(g *gateway, id uint32, code fschunk.Code, msg string) {
	bp := s.getBuf()
	defer s.putBuf(bp)
	pkt := fschunk.AppendHeader((*bp)[:0], fschunk.Header{Type: fschunk.TypeError})
	e := fschunk.Error{ID: id, Code: code, Message: msg}
	pkt = e.Append(pkt)
	if s.sendCurrent(g, pkt) == nil && int(code) < len(s.st.errorsSent) {
		s.st.errorsSent[code].Add(1)
	}
}

// onMeta answers a META_REQUEST from the current catalog generation.
func (s *Server) onMeta(g *gateway, body []byte) {
	var m fschunk.MetaRequest
	if err := m.Decode(body); err != nil {
		s.st.garbage.Add(1)
		return
	}
	v := s.currentView()
	i, ok := v.byPath[m.Path]
	if !ok {
		s.sendError(g, m.ID, fschunk.CodeNotFound, errorText(fschunk.CodeNotFound))
		return
	}
	bp := s.getBuf()
	defer s.putBuf(bp)
	pkt := fschunk.AppendHeader((*bp)[:0], fschunk.Header{Type: fschunk.TypeMeta})
	meta := fschunk.Meta{ID: m.ID, Entry: v.entries[i]}
	pkt = meta.Append(pkt)
	if s.sendCurrent(g, pkt) == nil {
		s.st.metaServed.Add(1)
	}
}

// onHashRequest answers a HASH_REQUEST with a block of the version's hash
// tree, kept by the catalog since the file was hashed: no file access.
// Like META, the answer is about as large as the request (≤ 1,072 bytes
// for 80), and it needs the key.
func (s *Server) onHashRequest(g *gateway, body []byte) {
	var m fschunk.HashRequest
	if err := m.Decode(body); err != nil {
		s.st.garbage.Add(1)
		return
	}
	t, ok := s.cfg.Catalog.Tree(m.Hash)
	if !ok {
		s.sendError(g, m.ID, fschunk.CodeNotFound, errorText(fschunk.CodeNotFound))
		return
	}
	nodes, err := t.Block(int(m.Level), m.Index, int(m.Count))
	if err != nil {
		s.sendError(g, m.ID, fschunk.CodeRange, err.Error())
		return
	}
	bp := s.getBuf()
	defer s.putBuf(bp)
	pkt := fschunk.AppendHeader((*bp)[:0], fschunk.Header{Type: fschunk.TypeHashes})
	h := fschunk.Hashes{ID: m.ID, Level: m.Level, Index: m.Index, Nodes: nodes}
	pkt = h.Append(pkt)
	if s.sendCurrent(g, pkt) == nil {
		s.st.hashesServed.Add(1)
	}
}

// shortHash is the log form of a content hash: enough to tell files apart.
func shortHash(h [fschunk.HashSize]byte) string { return hex.EncodeToString(h[:6]) }
