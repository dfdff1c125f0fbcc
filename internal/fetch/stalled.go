package fetch

import "time"

// Clients that stop reading.
//
// A response is written to its client a piece at a time (WriteToN), each
// piece in one Write straight from its buffer. A client that stops
// reading blocks that Write until the front end's send timeout cuts the
// response, and the blocked Write pins its piece. Nothing else need stay
// pinned: a response whose Write has lasted StalledAfter is stalled. It
// no longer counts among the responses that share the budget (so a
// client that reads gets the share a stalled one would have had), it
// fetches nothing more, and when another response needs room beyond the
// budget it gives back everything but the piece it is writing: its
// window, the rest of its chunk, its outstanding READs (reclaim). That
// piece leaves the budget too, counted apart (Engine.pinned). When its
// Write returns after all, it starts a new window where it stands,
// fetching again what it gave back.
//
// A client not yet seen to read (a new response, or one that stalled)
// is first sent ProbeSize bytes, which the writer copies into its own
// buffer, and a Flush: a client that never reads blocks in that Flush,
// pinning none of the engine's pieces, and gives everything back. Only a
// client that reads a little and then stops can pin a piece.
//
// So the engine holds at most the budget, plus a piece for each stalled
// response, plus, beyond the budget, one chunk for each response that
// is not stalled (see fill). Giving back only under pressure spares a
// slow client (one taking a piece in more than StalledAfter, i.e. less
// than 16 KB/s) from fetching its window again after every piece while
// there is room for it.
//
// The bookkeeping is two lists under e.mu, in time order, so every step
// is O(1) per response: e.writers, the responses in a Write, oldest
// first; e.stalled, those found stalled and not yet reclaimed.

// dlist is an intrusive doubly-linked list of downloads (one list at a
// time per download: d.lprev, d.lnext, d.on).
type dlist struct {
	head, tail *download
	n          int
}

func (l *dlist) push(d *download) {
	d.on, d.lprev, d.lnext = l, l.tail, nil
	if l.tail != nil {
		l.tail.lnext = d
	} else {
		l.head = d
	}
	l.tail = d
	l.n++
}

func (l *dlist) remove(d *download) {
	if d.lprev != nil {
		d.lprev.lnext = d.lnext
	} else {
		l.head = d.lnext
	}
	if d.lnext != nil {
		d.lnext.lprev = d.lprev
	} else {
		l.tail = d.lprev
	}
	d.on, d.lprev, d.lnext = nil, nil, nil
	l.n--
}

// beginWrite records that the reader is about to write piece p (of the
// first chunk; nil for a Flush, which holds none of the engine's bytes)
// to its client, unlocked. Under e.mu.
func (d *download) beginWrite(p *[]byte, now time.Time) {
	d.writing, d.writeSince = p, now
	d.e.writers.push(d)
	d.e.armSweep(d.e.cfg.StalledAfter)
}

// armSweep makes sure a sweep runs after a while, if none is due: a
// response is found stalled even when no other response needs room or
// looks. Under e.mu.
func (e *Engine) armSweep(after time.Duration) {
	if e.sweepArmed {
		return
	}
	e.sweepArmed = true
	if e.sweepTimer == nil {
		e.sweepTimer = time.AfterFunc(after, e.sweepTick)
	} else {
		e.sweepTimer.Reset(after)
	}
}

// sweepTick sweeps, and again when the oldest Write left would stall.
func (e *Engine) sweepTick() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sweepArmed = false
	now := e.cfg.Now()
	e.sweep(now)
	if d := e.writers.head; d != nil {
		e.armSweep(max(d.writeSince.Add(e.cfg.StalledAfter).Sub(now), time.Millisecond))
	}
}

// endWrite records that the Write (or Flush) begun by beginWrite
// returned. Under e.mu. It reports whether it was found stalled, and
// whether the window was reclaimed meanwhile: the piece being written
// was then the response's last, and is given back here; the caller
// starts a new window.
func (d *download) endWrite() (stalled, reclaimed bool) {
	e := d.e
	if d.on != nil {
		d.on.remove(d)
	}
	p := d.writing
	d.writing = nil
	stalled, reclaimed = d.stalled, d.reclaimed
	d.setStalled(false)
	d.reclaimed = false
	if reclaimed && p != nil {
		e.pinned -= len(*p)
		e.recycle(p)
	}
	return stalled, reclaimed
}

// setStalled marks d stalled or not; a stalled response does not count
// among those that share the budget. Under e.mu.
func (d *download) setStalled(on bool) {
	if on == d.stalled {
		return
	}
	d.stalled = on
	if on {
		d.e.nstalled++
	} else {
		d.e.nstalled--
	}
	if d.streaming {
		if on {
			d.e.streaming--
		} else {
			d.e.streaming++
		}
	}
}

// sweep moves the responses whose Write has lasted StalledAfter from
// e.writers to e.stalled, and while the windows are over the budget
// reclaims stalled ones. Under e.mu.
func (e *Engine) sweep(now time.Time) {
	for d := e.writers.head; d != nil && now.Sub(d.writeSince) >= e.cfg.StalledAfter; d = e.writers.head {
		e.writers.remove(d)
		e.stalled.push(d)
		d.setStalled(true)
		e.stats.Stalls++
	}
	e.reclaim(0)
}

// reclaim takes back the windows of stalled responses, the longest
// stalled first, until n more bytes fit in the budget or none is left.
// Under e.mu.
func (e *Engine) reclaim(n int) {
	for d := e.stalled.head; d != nil && e.held+n > e.budget; d = e.stalled.head {
		e.stalled.remove(d)
		d.reclaim()
	}
}

// reclaim gives back everything d holds but the piece its reader is
// writing, which moves out of the budget into e.pinned. Under e.mu.
func (d *download) reclaim() {
	e := d.e
	before := e.held
	for _, c := range d.chunks {
		for len(c.reqs) > 0 {
			e.finish(c.reqs[0], false)
		}
		if c.verifying {
			c.dropped = true // the pump is reading it: it frees it after
		} else {
			e.freePieces(c, d.writing)
		}
	}
	d.chunks = d.chunks[:0]
	if p := d.writing; p != nil {
		e.held -= len(*p) // now out of the budget
		e.alloc -= len(*p)
		e.pinned += len(*p)
	}
	d.reclaimed = true
	e.stats.ReclaimedBytes += uint64(before - e.held)
}
