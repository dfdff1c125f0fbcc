package fileserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"maps"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/fschunk"
)

// testGateway is a minimal HttpGw protocol endpoint for tests: it answers
// handshakes, acknowledges heartbeats and catalog pages, assembles the
// server's catalog and issues READs, re-asking for missing bytes the way
// the real gateway does. It serves exactly one server process.
type testGateway struct {
	tb    testing.TB
	conn  *net.UDPConn
	resp  *auth.Responder
	boot  uint64
	hb    time.Duration
	maxDG uint32
	done  chan struct{}
	once  sync.Once

	mu       sync.Mutex
	sessions auth.IndexTable[*tgSession]
	byNonce  map[[fschunk.NonceSize]byte]*tgSession
	srv      *tgServer
	waiters  map[uint32]chan tgMsg
	nextID   uint32
	sent     [][]byte // sealed datagrams sent to the server, for replay tests
	// refuseDeltas answers every delta with RESYNC, as a gateway that
	// lost the delta's base would.
	refuseDeltas bool
}

type tgSession struct {
	s        *auth.Session
	instance uint64
	welcome  []byte
}

// tgServer is what the gateway knows about the server.
type tgServer struct {
	instance   uint64
	sess       *tgSession
	addr       netip.AddrPort
	joins      int
	goodbyes   []fschunk.GoodbyeReason
	heartbeats int
	lastHB     fschunk.Heartbeat
	gen        uint64 // generation of the complete catalog held, 0 if none
	files      map[string]fschunk.Entry
	fulls      int // full catalogs completed
	deltas     int // deltas applied
	resyncs    int

	pageGen    uint64
	pageN      uint32
	pages      map[uint32][]fschunk.Entry
	deltaBase  uint64
	deltaGen   uint64
	deltaN     uint32
	deltaPages map[uint32]fschunk.CatalogDelta
}

type tgMsg struct {
	typ  fschunk.Type
	data fschunk.Data
	err  fschunk.Error
	meta fschunk.Meta
}

// tgInfo is a copy of tgServer for assertions.
type tgInfo struct {
	present    bool
	instance   uint64
	joins      int
	goodbyes   []fschunk.GoodbyeReason
	heartbeats int
	lastHB     fschunk.Heartbeat
	gen        uint64
	files      map[string]fschunk.Entry
	fulls      int
	deltas     int
	resyncs    int
	serverIdx  uint32
	addr       netip.AddrPort
}

// startTestGateway listens on addr ("127.0.0.1:0" or a fixed port, retried
// for a while in case the port is still held by a closed predecessor).
// The static key pairs of the tests: the test gateway's and the
// server's.
var (
	tgStatic  = auth.GenerateStaticKey()
	srvStatic = auth.GenerateStaticKey()
)

func mustResponder(tb testing.TB, key *auth.Key, lim auth.Limits) *auth.Responder {
	tb.Helper()
	r, err := auth.NewResponder(key, []auth.StaticKey{tgStatic}, lim, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

func mustInitiator(tb testing.TB, key *auth.Key, instance uint64) *auth.Initiator {
	tb.Helper()
	in, err := auth.NewInitiator(key, srvStatic, []auth.PublicKey{tgStatic.Public()}, instance, auth.DefaultLimits)
	if err != nil {
		tb.Fatal(err)
	}
	return in
}

func startTestGateway(tb testing.TB, key *auth.Key, addr string, hb time.Duration, maxDG uint32, lim auth.Limits) *testGateway {
	tb.Helper()
	ua, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		tb.Fatal(err)
	}
	var conn *net.UDPConn
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, err = net.ListenUDP("udp4", ua)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		tb.Fatal(err)
	}
	_ = conn.SetReadBuffer(4 << 20)
	var b [8]byte
	rand.Read(b[:])
	g := &testGateway{
		tb:      tb,
		conn:    conn,
		resp:    mustResponder(tb, key, lim),
		boot:    binary.BigEndian.Uint64(b[:]),
		hb:      hb,
		maxDG:   maxDG,
		done:    make(chan struct{}),
		byNonce: map[[fschunk.NonceSize]byte]*tgSession{},
		waiters: map[uint32]chan tgMsg{},
		nextID:  1,
	}
	go g.loop()
	return g
}

func (g *testGateway) addr() string { return g.conn.LocalAddr().String() }

// close stops the gateway: its socket is closed, its state forgotten.
func (g *testGateway) close() {
	g.once.Do(func() {
		g.conn.Close()
		<-g.done
	})
}

func (g *testGateway) loop() {
	defer close(g.done)
	buf := make([]byte, 65536)
	for {
		n, from, err := g.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		g.handle(buf[:n], from)
	}
}

type appender interface{ Append([]byte) []byte }

// sendLocked seals a message on the server's latest session. g.mu held.
func (g *testGateway) sendLocked(t fschunk.Type, body appender) {
	srv := g.srv
	if srv == nil || srv.sess == nil {
		return
	}
	pkt := fschunk.AppendHeader(make([]byte, 0, 2048), fschunk.Header{Type: t})
	pkt = body.Append(pkt)
	out, err := srv.sess.s.Seal(pkt, time.Now())
	if err != nil {
		return
	}
	if len(g.sent) < 1024 {
		g.sent = append(g.sent, bytes.Clone(out))
	}
	_, _ = g.conn.WriteToUDPAddrPort(out, srv.addr)
}

func (g *testGateway) handle(pkt []byte, from netip.AddrPort) {
	t, err := fschunk.ParsePrefix(pkt)
	if err != nil {
		return
	}
	now := time.Now()
	switch t {
	case fschunk.TypeHello:
		if out, err := g.resp.HandleHello(pkt, from, nil); err == nil {
			_, _ = g.conn.WriteToUDPAddrPort(out, from)
		}
		return
	case fschunk.TypeAuth:
		g.onAuth(pkt, from, now)
		return
	case fschunk.TypeChallenge:
		return
	}
	h, err := fschunk.ParseHeader(pkt)
	if err != nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	ts, _ := g.sessions.Lookup(h.Receiver)
	if ts == nil {
		return
	}
	_, body, err := ts.s.Open(pkt, now)
	if err != nil {
		return
	}
	srv := g.srv
	if srv == nil || srv.instance != ts.instance {
		return
	}
	srv.addr = from
	switch h.Type {
	case fschunk.TypeHeartbeat:
		var hb fschunk.Heartbeat
		if hb.Decode(body) != nil {
			return
		}
		srv.heartbeats++
		srv.lastHB = hb
		g.sendLocked(fschunk.TypeHeartbeatAck, &fschunk.HeartbeatAck{Seq: hb.Seq, CatalogGen: srv.gen})
	case fschunk.TypeCatalogPage:
		var p fschunk.CatalogPage
		if p.Decode(body) != nil {
			return
		}
		srv.addPage(&p)
		g.sendLocked(fschunk.TypeCatalogAck, &fschunk.CatalogAck{Gen: p.Gen, Page: p.Page, Status: fschunk.CatalogOK})
	case fschunk.TypeCatalogDelta:
		var d fschunk.CatalogDelta
		if d.Decode(body) != nil {
			return
		}
		st := fschunk.CatalogResync
		if g.refuseDeltas {
			srv.resyncs++
		} else {
			st = srv.addDelta(&d)
		}
		g.sendLocked(fschunk.TypeCatalogAck, &fschunk.CatalogAck{Gen: d.Gen, Page: d.Page, Status: st})
	case fschunk.TypeGoodbye:
		var b fschunk.Goodbye
		if b.Decode(body) == nil {
			srv.goodbyes = append(srv.goodbyes, b.Reason)
		}
	case fschunk.TypeData:
		var d fschunk.Data
		if d.Decode(body) != nil {
			return
		}
		if g.waiters[d.ID] != nil { // no copy for nobody (allocation test)
			d.Payload = bytes.Clone(d.Payload)
			g.deliverLocked(d.ID, tgMsg{typ: fschunk.TypeData, data: d})
		}
	case fschunk.TypeError:
		var e fschunk.Error
		if e.Decode(body) != nil {
			return
		}
		g.deliverLocked(e.ID, tgMsg{typ: fschunk.TypeError, err: e})
	case fschunk.TypeMeta:
		var m fschunk.Meta
		if m.Decode(body) != nil {
			return
		}
		g.deliverLocked(m.ID, tgMsg{typ: fschunk.TypeMeta, meta: m})
	}
}

func (g *testGateway) deliverLocked(id uint32, m tgMsg) {
	if ch := g.waiters[id]; ch != nil {
		select {
		case ch <- m:
		default: // a full queue is loss, which the reader recovers from
		}
	}
}

func (g *testGateway) onAuth(pkt []byte, from netip.AddrPort, now time.Time) {
	var a fschunk.Auth
	if a.Decode(pkt) != nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if ts := g.byNonce[a.Nonce]; ts != nil {
		// A retransmitted AUTH: the WELCOME was lost, send it again.
		_, _ = g.conn.WriteToUDPAddrPort(ts.welcome, from)
		return
	}
	acc, err := g.resp.HandleAuth(pkt, from, nil)
	if err != nil {
		return
	}
	idx := g.sessions.NewIndex(nil) // the session's keys are bound to it
	s, err := acc.NewSession(idx, now)
	if err != nil {
		g.sessions.Delete(idx, nil)
		return
	}
	w := fschunk.Welcome{GatewayIndex: idx, GatewayBoot: g.boot, HeartbeatInterval: g.hb, MaxDatagram: g.maxDG}
	wpkt, err := auth.Welcome(s, w, nil, now)
	if err != nil {
		g.sessions.Delete(idx, nil)
		return
	}
	ts := &tgSession{s: s, instance: acc.Instance, welcome: wpkt}
	g.sessions.Replace(idx, nil, ts)
	g.byNonce[a.Nonce] = ts
	if g.srv == nil || g.srv.instance != acc.Instance {
		g.srv = &tgServer{instance: acc.Instance, files: map[string]fschunk.Entry{}}
	}
	g.srv.sess = ts
	g.srv.addr = from
	g.srv.joins++
	_, _ = g.conn.WriteToUDPAddrPort(wpkt, from)
}

func (s *tgServer) addPage(p *fschunk.CatalogPage) {
	if p.Gen == s.gen {
		return // a retransmission of a catalog already complete
	}
	if s.pageGen != p.Gen || s.pageN != p.Pages {
		s.pageGen, s.pageN, s.pages = p.Gen, p.Pages, map[uint32][]fschunk.Entry{}
	}
	s.pages[p.Page] = append([]fschunk.Entry(nil), p.Entries...)
	if len(s.pages) < int(s.pageN) {
		return
	}
	files := map[string]fschunk.Entry{}
	for _, es := range s.pages {
		for _, e := range es {
			files[e.Path] = e
		}
	}
	s.files, s.gen, s.pageGen, s.pages = files, p.Gen, 0, nil
	s.fulls++
}

func (s *tgServer) addDelta(d *fschunk.CatalogDelta) fschunk.CatalogStatus {
	if d.Gen == s.gen {
		return fschunk.CatalogOK // a retransmission of a delta already applied
	}
	if d.Base != s.gen {
		s.resyncs++
		return fschunk.CatalogResync
	}
	if s.deltaBase != d.Base || s.deltaGen != d.Gen || s.deltaN != d.Pages {
		s.deltaBase, s.deltaGen, s.deltaN, s.deltaPages = d.Base, d.Gen, d.Pages, map[uint32]fschunk.CatalogDelta{}
	}
	c := *d
	c.Entries = append([]fschunk.Entry(nil), d.Entries...)
	c.Removed = append([]bool(nil), d.Removed...)
	s.deltaPages[d.Page] = c
	if len(s.deltaPages) < int(s.deltaN) {
		return fschunk.CatalogOK
	}
	for i := range s.deltaN {
		p := s.deltaPages[i]
		for j, e := range p.Entries {
			if p.Removed[j] {
				delete(s.files, e.Path)
			} else {
				s.files[e.Path] = e
			}
		}
	}
	s.gen, s.deltaPages = d.Gen, nil
	s.deltas++
	return fschunk.CatalogOK
}

// info returns a copy of what the gateway knows about the server.
func (g *testGateway) info() tgInfo {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.srv
	if s == nil {
		return tgInfo{}
	}
	in := tgInfo{
		present: true, instance: s.instance, joins: s.joins, heartbeats: s.heartbeats, lastHB: s.lastHB,
		gen: s.gen, files: maps.Clone(s.files), fulls: s.fulls, deltas: s.deltas, resyncs: s.resyncs,
		goodbyes: append([]fschunk.GoodbyeReason(nil), s.goodbyes...), addr: s.addr,
	}
	if s.sess != nil {
		in.serverIdx = s.sess.s.RemoteIndex
	}
	return in
}

// sentCopies returns the sealed datagrams sent to the server so far.
func (g *testGateway) sentCopies() [][]byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([][]byte(nil), g.sent...)
}

// goodbye ends the server's session the way a restarting gateway does, and
// forgets its catalog.
func (g *testGateway) goodbye() { g.goodbyeFor(fschunk.GoodbyeShutdown) }

func (g *testGateway) goodbyeFor(r fschunk.GoodbyeReason) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sendLocked(fschunk.TypeGoodbye, &fschunk.Goodbye{Reason: r})
	if s := g.srv; s != nil {
		s.gen, s.files = 0, map[string]fschunk.Entry{}
	}
}

type rawBody []byte

func (r rawBody) Append(b []byte) []byte { return append(b, r...) }

// sendRaw sends a message of any type with any body on the server's session.
func (g *testGateway) sendRaw(t fschunk.Type, body []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sendLocked(t, rawBody(body))
}

// listen returns the messages carrying request id (0: not about a request).
func (g *testGateway) listen(id uint32) chan tgMsg {
	g.mu.Lock()
	defer g.mu.Unlock()
	ch := make(chan tgMsg, 16)
	g.waiters[id] = ch
	return ch
}

func (g *testGateway) register() (uint32, chan tgMsg) {
	g.mu.Lock()
	defer g.mu.Unlock()
	id := g.nextID
	g.nextID++
	ch := make(chan tgMsg, 8192)
	g.waiters[id] = ch
	return id, ch
}

func (g *testGateway) unregister(id uint32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.waiters, id)
}

// reaskAfter is how long the test gateway waits without progress before
// asking again for the bytes it is missing.
const reaskAfter = 150 * time.Millisecond

// read fetches ranges of the file with content hash h, re-asking for
// missing bytes until all arrived, an ERROR arrives, or ctx ends. ndata is
// the number of DATA datagrams received.
func (g *testGateway) read(ctx context.Context, h [32]byte, ranges []fschunk.Range, maxDG uint16) (bufs [][]byte, ndata int, err error) {
	id, ch := g.register()
	defer g.unregister(id)
	bufs = make([][]byte, len(ranges))
	have := make([][]bool, len(ranges))
	missing := 0
	for i, r := range ranges {
		bufs[i] = make([]byte, r.Length)
		have[i] = make([]bool, r.Length)
		missing += int(r.Length)
	}
	ask := func() {
		var spans []fschunk.Range
		for i, r := range ranges {
			for j := 0; j < len(have[i]); {
				if have[i][j] {
					j++
					continue
				}
				k := j
				for k < len(have[i]) && !have[i][k] {
					k++
				}
				spans = append(spans, fschunk.Range{Offset: r.Offset + int64(j), Length: uint32(k - j)})
				j = k
			}
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		for len(spans) > 0 {
			n := min(len(spans), fschunk.MaxReadRanges)
			g.sendLocked(fschunk.TypeRead, &fschunk.Read{ID: id, Hash: h, MaxDatagram: maxDG, Ranges: spans[:n]})
			spans = spans[n:]
		}
	}
	ask()
	timer := time.NewTimer(reaskAfter)
	defer timer.Stop()
	for missing > 0 {
		select {
		case <-ctx.Done():
			return nil, ndata, ctx.Err()
		case <-timer.C:
			ask()
			timer.Reset(reaskAfter)
		case m := <-ch:
			switch m.typ {
			case fschunk.TypeError:
				e := m.err
				return nil, ndata, &e
			case fschunk.TypeData:
				ndata++
				d := m.data
				for i, r := range ranges {
					if d.Offset < r.Offset || d.Offset >= r.Offset+int64(r.Length) {
						continue
					}
					at := int(d.Offset - r.Offset)
					n := copy(bufs[i][at:], d.Payload)
					for k := at; k < at+n; k++ {
						if !have[i][k] {
							have[i][k] = true
							missing--
						}
					}
					break
				}
				timer.Reset(reaskAfter)
			}
		}
	}
	return bufs, ndata, nil
}

// meta asks for the metadata of a path, asking again if nothing comes.
func (g *testGateway) meta(ctx context.Context, path string) (fschunk.Entry, error) {
	id, ch := g.register()
	defer g.unregister(id)
	ask := func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.sendLocked(fschunk.TypeMetaRequest, &fschunk.MetaRequest{ID: id, Path: path})
	}
	ask()
	tick := time.NewTicker(reaskAfter)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return fschunk.Entry{}, ctx.Err()
		case <-tick.C:
			ask()
		case m := <-ch:
			switch m.typ {
			case fschunk.TypeError:
				e := m.err
				return fschunk.Entry{}, &e
			case fschunk.TypeMeta:
				return m.meta.Entry, nil
			}
		}
	}
}
