package fileserver

import (
	"context"
	"log/slog"
	"time"

	"github.com/fastfile/fschunk/internal/fschunk"
)

// catalogSync is one transfer of a catalog generation to a gateway: a full
// catalog (CATALOG_PAGE) or the changes since the generation the gateway
// holds (CATALOG_DELTA). Pages are encoded once and sealed afresh at each
// transmission, on whatever session is current then.
type catalogSync struct {
	full      bool
	base, gen uint64
	maxDG     int      // datagram size the pages were cut for
	pages     [][]byte // encoded bodies
	sentAt    []time.Time
	acked     []bool
	low       int // first page not acknowledged
	next      int // first page never sent
	inflight  int // sent and not acknowledged
	remaining int // not acknowledged
	progress  time.Time
}

// deadline is the earliest retransmission, or the stall timeout.
func (sy *catalogSync) deadline() time.Time {
	t := sy.progress.Add(catalogStallTimeout)
	for i := sy.low; i < sy.next; i++ {
		if !sy.acked[i] {
			if r := sy.sentAt[i].Add(fschunk.CatalogRetry); r.Before(t) {
				t = r
			}
		}
	}
	return t
}

// maybeSync starts a sync if the gateway's generation is known and is not
// ours. A sync in progress is left to finish; its completion checks again.
func (g *gateway) maybeSync(now time.Time) {
	if g.sync != nil || !g.gwKnown {
		return
	}
	cur := g.cur.Load()
	if cur == nil {
		return
	}
	v := g.s.currentView()
	if v.gen == 0 || v.gen == g.gwGen {
		return
	}
	if g.gwGen > 0 && g.startDelta(cur, v, now) {
		return
	}
	g.startFull(cur, now)
}

// startDelta sends the changes from the generation the gateway holds; false
// if the catalog no longer has them (or the gateway's generation is not
// ours, e.g. from a previous process).
func (g *gateway) startDelta(cur *session, v *catView, now time.Time) bool {
	// v.gen was read before Since: the changes cover at least up to it,
	// and changes beyond it are idempotent and sent again next time.
	changes, ok := g.s.cfg.Catalog.Since(g.gwGen)
	if !ok {
		return false
	}
	entries := make([]fschunk.Entry, 0, len(changes))
	removed := make([]bool, 0, len(changes))
	for _, c := range changes {
		if c.Removed {
			if fschunk.ValidPath(c.Entry.Path) == nil {
				entries = append(entries, fschunk.Entry{Path: c.Entry.Path})
				removed = append(removed, true)
			}
			continue
		}
		if e, ok := wireEntry(c.Entry); ok {
			entries = append(entries, e)
			removed = append(removed, false)
		}
	}
	split, err := fschunk.SplitPages(entries, cur.maxDG-fschunk.Overhead, fschunk.CatalogDeltaHeaderSize, 1)
	if err != nil {
		g.log.Error("fileserver: cannot page catalog delta", "gen", v.gen, "err", err)
		return false
	}
	sy := g.newSync(false, g.gwGen, v.gen, cur.maxDG, len(split), now)
	start := 0
	for i, p := range split {
		d := fschunk.CatalogDelta{Base: g.gwGen, Gen: v.gen, Page: uint32(i), Pages: uint32(len(split)), Entries: p, Removed: removed[start : start+len(p)]}
		sy.pages[i] = d.Append(nil)
		start += len(p)
	}
	g.sync = sy
	// Deltas are routine (one per published generation, several a second
	// while a tree is being hashed): debug. Full catalogs stay at info.
	g.log.Debug("fileserver: sending catalog delta", "gen", v.gen, "base", g.gwGen, "pages", len(split), "changes", len(entries))
	g.syncStep(cur, now)
	return true
}

// startFull sends the whole current catalog; an empty one is one page with
// no entries, so the gateway knows it is empty rather than unknown.
func (g *gateway) startFull(cur *session, now time.Time) {
	v := g.s.currentView()
	split, err := fschunk.SplitPages(v.entries, cur.maxDG-fschunk.Overhead, fschunk.CatalogPageHeaderSize, 0)
	if err != nil {
		// Cannot happen: paths are bounded so an entry fits the minimum
		// datagram size.
		g.log.Error("fileserver: cannot page catalog", "gen", v.gen, "err", err)
		return
	}
	sy := g.newSync(true, 0, v.gen, cur.maxDG, len(split), now)
	for i, p := range split {
		c := fschunk.CatalogPage{Gen: v.gen, Page: uint32(i), Pages: uint32(len(split)), Entries: p}
		sy.pages[i] = c.Append(nil)
	}
	g.sync = sy
	g.log.Info("fileserver: sending catalog", "gen", v.gen, "pages", len(split), "files", len(v.entries))
	g.syncStep(cur, now)
}

func (g *gateway) newSync(full bool, base, gen uint64, maxDG, n int, now time.Time) *catalogSync {
	return &catalogSync{
		full: full, base: base, gen: gen, maxDG: maxDG,
		pages:     make([][]byte, n),
		sentAt:    make([]time.Time, n),
		acked:     make([]bool, n),
		remaining: n,
		progress:  now,
	}
}

// syncStep retransmits pages unacknowledged for fschunk.CatalogRetry and
// sends new ones while fewer than maxCatalogInflight are unacknowledged.
func (g *gateway) syncStep(cur *session, now time.Time) {
	sy := g.sync
	if sy == nil {
		return
	}
	if now.Sub(sy.progress) >= catalogStallTimeout {
		g.log.Warn("fileserver: catalog sync stalled, abandoned", "gen", sy.gen, "pages", len(sy.pages), "acked", len(sy.pages)-sy.remaining)
		g.sync = nil
		g.gwKnown = false
		return
	}
	for i := sy.low; i < sy.next; i++ {
		if !sy.acked[i] && now.Sub(sy.sentAt[i]) >= fschunk.CatalogRetry {
			g.sendPage(cur, sy, i, now)
		}
	}
	for sy.inflight < maxCatalogInflight && sy.next < len(sy.pages) {
		g.sendPage(cur, sy, sy.next, now)
		sy.next++
		sy.inflight++
	}
}

func (g *gateway) sendPage(cur *session, sy *catalogSync, i int, now time.Time) {
	t := fschunk.TypeCatalogDelta
	if sy.full {
		t = fschunk.TypeCatalogPage
	}
	pkt := fschunk.AppendHeader(g.buf[:0], fschunk.Header{Type: t})
	pkt = append(pkt, sy.pages[i]...)
	sy.sentAt[i] = now
	if g.s.sealSend(cur, pkt) == nil {
		g.s.st.pagesSent.Add(1)
	}
}

// onCatalogAck records an acknowledged page; a RESYNC for a delta means the
// gateway does not hold its base: send the full catalog instead.
func (g *gateway) onCatalogAck(ev gwEvent, now time.Time) {
	sy, a := g.sync, ev.catAck
	if sy == nil || a.Gen != sy.gen || int(a.Page) >= sy.next {
		return
	}
	cur := g.cur.Load()
	if cur == nil {
		return
	}
	if a.Status == fschunk.CatalogResync {
		if !sy.full {
			g.log.Info("fileserver: gateway lacks the delta's base, sending the full catalog", "gen", sy.gen, "base", sy.base)
			g.sync = nil
			g.startFull(cur, now)
		}
		return
	}
	if sy.acked[a.Page] {
		return
	}
	sy.acked[a.Page] = true
	sy.inflight--
	sy.remaining--
	sy.progress = now
	for sy.low < sy.next && sy.acked[sy.low] {
		sy.low++
	}
	if sy.remaining > 0 {
		g.syncStep(cur, now)
		return
	}
	g.gwGen, g.gwKnown = sy.gen, true
	g.fence = g.hbSeq
	g.sync = nil
	g.s.st.syncs.Add(1)
	kind, lv := "delta", slog.LevelDebug
	if sy.full {
		kind, lv = "full", slog.LevelInfo
	}
	g.log.Log(context.Background(), lv, "fileserver: catalog synced", "gen", sy.gen, "pages", len(sy.pages), "kind", kind)
	// The catalog may have moved on while this generation was sent.
	g.maybeSync(now)
}
