package gateway

import (
	"errors"
	"net/netip"
	"time"

	"github.com/fastfile/fschunk/internal/fschunk"
)

// MaxCatalogPages bounds the pages of one catalog or delta.
const MaxCatalogPages = 1 << 16

// CatalogLimits bound what servers' catalogs may cost the gateway. A
// server holding the key could otherwise make it hold an unfinished
// catalog of 65,536 pages of 64 KiB (4 GiB of entries), and register as
// many server instances as it likes. Bytes are counted as on the wire
// (50 bytes + the path per entry); the pool's maps take a small multiple
// of that.
type CatalogLimits struct {
	// MaxEntries and MaxBytes bound one server's catalog, held and being
	// assembled together (default 1,048,576 entries, 64 MiB).
	MaxEntries int
	MaxBytes   int64
	// MaxTotalBytes bounds all servers' catalogs together, held and being
	// assembled (default 256 MiB).
	MaxTotalBytes int64
	// MaxInstancesPerSource bounds the server instances registered from
	// one source address (an IPv6 /64 counts as one address): default 64.
	MaxInstancesPerSource int
}

// Defaults of CatalogLimits.
const (
	DefaultCatalogEntries        = 1 << 20
	DefaultCatalogBytes          = 64 << 20
	DefaultCatalogTotalBytes     = 256 << 20
	DefaultMaxInstancesPerSource = 64
)

func (l CatalogLimits) withDefaults() CatalogLimits {
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultCatalogEntries
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultCatalogBytes
	}
	if l.MaxTotalBytes <= 0 {
		l.MaxTotalBytes = DefaultCatalogTotalBytes
	}
	if l.MaxInstancesPerSource <= 0 {
		l.MaxInstancesPerSource = DefaultMaxInstancesPerSource
	}
	return l
}

// errTooManyInstances: the AUTH's source address has its quota of servers.
var errTooManyInstances = errors.New("gateway: too many server instances from one source address")

// sourceKey groups addresses by who controls them: an IPv4 address, or an
// IPv6 /64 (one host or link gets a whole /64).
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// instancesLocked counts the servers whose address is in from's source
// group. Under g.mu; only for AUTHs of unknown instances, which are rare.
func (g *Gateway) instancesLocked(from netip.AddrPort) int {
	key := sourceKey(from.Addr())
	n := 0
	for _, p := range g.peers {
		if a := p.addr.Load(); a != nil && sourceKey(a.Addr()) == key {
			n++
		}
	}
	return n
}

// catalogUse is what a server's catalogs cost now: the catalog the pool
// holds for it (as last accepted) and the one being assembled.
type catalogUse struct {
	heldEntries, asmEntries int
	heldBytes, asmBytes     int64
	gone                    bool // evicted: nothing more is counted
	// refused names the catalog last refused for its size, so that its
	// retransmitted pages are dropped at once.
	refused struct {
		delta     bool
		base, gen uint64
	}
}

type assembly struct {
	delta     bool
	base, gen uint64
	pages     [][]fschunk.Entry
	removed   [][]bool
	got       int
}

func (g *Gateway) handlePage(p *peer, size int, body []byte, now time.Time) {
	var m fschunk.CatalogPage
	if m.Decode(body) != nil || m.Pages > MaxCatalogPages {
		g.ctr.garbage.Add(1)
		return
	}
	g.ctr.pages.Add(1)
	// Generations only grow within a server process: a page older than
	// what is held is a late duplicate, acknowledged and ignored.
	if held := g.pool.CatalogGen(p.id); held < m.Gen {
		all, _, done, ok := g.addPage(p, size, false, 0, m.Gen, m.Page, m.Pages, m.Entries, nil)
		if !ok {
			return // refused: not acknowledged
		}
		if done {
			g.pool.SetCatalog(p.id, m.Gen, all, now)
			g.log.Info("catalog", "name", g.pool.Name(p.id), "server", p.id.String(), "gen", m.Gen, "files", len(all), "pages", m.Pages)
		}
	}
	ack := fschunk.CatalogAck{Gen: m.Gen, Page: m.Page}
	g.sendTo(p, fschunk.TypeCatalogAck, ack.Append)
}

func (g *Gateway) handleDelta(p *peer, size int, body []byte, now time.Time) {
	var m fschunk.CatalogDelta
	if m.Decode(body) != nil || m.Pages > MaxCatalogPages {
		g.ctr.garbage.Add(1)
		return
	}
	g.ctr.pages.Add(1)
	ack := fschunk.CatalogAck{Gen: m.Gen, Page: m.Page}
	switch held := g.pool.CatalogGen(p.id); {
	case held >= m.Gen:
	case held != m.Base:
		ack.Status = fschunk.CatalogResync
	default:
		all, rm, done, ok := g.addPage(p, size, true, m.Base, m.Gen, m.Page, m.Pages, m.Entries, m.Removed)
		switch {
		case !ok:
			// Over the budget: a full catalog replaces the held one
			// rather than adding to it, so ask for one.
			ack.Status = fschunk.CatalogResync
		case done:
			g.pool.ApplyDelta(p.id, m.Gen, all, rm, now)
			// Routine (several a second while a server hashes its tree).
			g.log.Debug("catalog delta", "name", g.pool.Name(p.id), "server", p.id.String(), "base", m.Base, "gen", m.Gen, "changes", len(all))
		}
	}
	g.sendTo(p, fschunk.TypeCatalogAck, ack.Append)
}

// addPage stores one page of a catalog (or delta) being assembled and,
// once every page is held, returns the whole of it in page order. A page
// of another catalog than the one being assembled starts over: only the
// latest catalog a server sends matters. ok is false if the page was
// refused: a datagram larger than the server's agreed size, or a catalog
// over its or the gateway's budget (which abandons the assembly).
func (g *Gateway) addPage(p *peer, size int, delta bool, base, gen uint64, page, pages uint32, entries []fschunk.Entry, removed []bool) (all []fschunk.Entry, rm []bool, done, ok bool) {
	if size > p.datagram {
		// The server cuts pages to the datagram size agreed in WELCOME;
		// larger ones would let it pin 64 KiB per page whatever M is.
		g.ctr.catRefused.Add(1)
		return nil, nil, false, false
	}
	a := p.asm
	if a == nil || a.delta != delta || a.base != base || a.gen != gen || len(a.pages) != int(pages) {
		g.dropAssembly(p)
		a = &assembly{delta: delta, base: base, gen: gen, pages: make([][]fschunk.Entry, pages), removed: make([][]bool, pages)}
		p.asm = a
	}
	if a.pages[page] == nil {
		var n int64
		for i := range entries {
			n += int64(entries[i].EncodedLen())
		}
		if !g.charge(p, delta, base, gen, len(entries), n) {
			g.ctr.catRefused.Add(1)
			p.asm = nil
			return nil, nil, false, false
		}
		a.pages[page], a.removed[page] = entries, removed
		if a.pages[page] == nil {
			a.pages[page] = []fschunk.Entry{} // received, and empty
		}
		a.got++
	}
	if a.got < len(a.pages) {
		return nil, nil, false, true
	}
	p.asm = nil
	for i := range a.pages {
		all = append(all, a.pages[i]...)
		rm = append(rm, a.removed[i]...)
	}
	g.settle(p, delta)
	return all, rm, true, true
}

// charge counts a page of n entries and b bytes against the server's and
// the gateway's catalog budgets; false (the assembly is then abandoned
// and released) if either would be exceeded. Under catMu.
func (g *Gateway) charge(p *peer, delta bool, base, gen uint64, n int, b int64) bool {
	g.catMu.Lock()
	defer g.catMu.Unlock()
	c := &p.cat
	if c.gone {
		return false
	}
	if c.refused.delta == delta && c.refused.base == base && c.refused.gen == gen {
		g.releaseAsmLocked(c)
		return false
	}
	lim := g.cfg.Catalog
	entries, bytes := c.asmEntries+n, c.asmBytes+b
	if delta {
		// A delta adds to what is held (counted without its removals:
		// a full catalog recounts exactly).
		entries += c.heldEntries
		bytes += c.heldBytes
	}
	own := entries > lim.MaxEntries || bytes > lim.MaxBytes
	if own || g.catTotal+b > lim.MaxTotalBytes {
		if own {
			// This catalog will never fit: drop its pages at once from
			// now on. (One refused for the total may fit later.)
			c.refused.delta, c.refused.base, c.refused.gen = delta, base, gen
		}
		held := c.heldBytes
		g.releaseAsmLocked(c)
		g.log.Warn("catalog refused: over the gateway's catalog budget", "server", p.id.String(), "gen", gen, "delta", delta,
			"entries", entries, "bytes", bytes, "held_bytes", held, "total_bytes", g.catTotal,
			"max_entries", lim.MaxEntries, "max_bytes", lim.MaxBytes, "max_total_bytes", lim.MaxTotalBytes)
		return false
	}
	c.asmEntries += n
	c.asmBytes += b
	g.catTotal += b
	return true
}

// settle moves a completed assembly's count to what is held: it replaces
// the held catalog, or for a delta adds to it. Under catMu.
func (g *Gateway) settle(p *peer, delta bool) {
	g.catMu.Lock()
	defer g.catMu.Unlock()
	c := &p.cat
	if c.gone {
		return
	}
	if !delta {
		g.catTotal -= c.heldBytes
		c.heldEntries, c.heldBytes = 0, 0
	}
	c.heldEntries += c.asmEntries
	c.heldBytes += c.asmBytes
	c.asmEntries, c.asmBytes = 0, 0
}

// dropAssembly abandons the assembly in progress (another catalog
// started) and releases its count.
func (g *Gateway) dropAssembly(p *peer) {
	p.asm = nil
	g.catMu.Lock()
	defer g.catMu.Unlock()
	g.releaseAsmLocked(&p.cat)
}

func (g *Gateway) releaseAsmLocked(c *catalogUse) {
	g.catTotal -= c.asmBytes
	c.asmEntries, c.asmBytes = 0, 0
}

// releaseCatalog forgets an evicted server's catalogs.
func (g *Gateway) releaseCatalog(p *peer) {
	g.catMu.Lock()
	defer g.catMu.Unlock()
	c := &p.cat
	g.releaseAsmLocked(c)
	g.catTotal -= c.heldBytes
	c.heldEntries, c.heldBytes = 0, 0
	c.gone = true
}

// CatalogBytes is what all servers' catalogs cost now, held and being
// assembled, in bytes as on the wire (bounded by CatalogLimits.MaxTotalBytes).
func (g *Gateway) CatalogBytes() int64 {
	g.catMu.Lock()
	defer g.catMu.Unlock()
	return g.catTotal
}
