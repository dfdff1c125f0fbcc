package catalog

import (
	"fmt"
	"time"
)

// hashProgress reports hashing to the operator: a large tree takes
// minutes to hash, and a server that says nothing meanwhile looks stuck.
// Owned by the Run loop.
type hashProgress struct {
	start    time.Time // of the current hashing run (first file waiting)
	at       time.Time // previous report
	atBytes  uint64    // HashedBytes at the previous report
	reported bool      // a report was logged for the current run
}

// report logs, if files wait to be hashed, how many are done and left (in
// files and bytes), the rate since the previous report and the time left
// at that rate.
func (p *hashProgress) report(c *Catalog, now time.Time) {
	c.mu.RLock()
	leftFiles := len(c.queue) - c.qhead + c.inflight
	var leftBytes int64
	for _, rec := range c.queue[c.qhead:] {
		leftBytes += rec.size
	}
	if c.inflight > 0 {
		// Files being hashed count whole: an upper bound.
		for _, rec := range c.files {
			if rec.hashing {
				leftBytes += rec.size
			}
		}
	}
	c.mu.RUnlock()
	hashed := c.hashedBytes.Load()
	if leftFiles == 0 {
		p.done(c, now)
		return
	}
	if p.at.IsZero() {
		if p.start.IsZero() {
			// First sight of work after an idle spell: measure from
			// here, report from the next tick.
			p.start, p.at, p.atBytes = now, now, hashed
			return
		}
		// Hashing since Run started (Run sets start): measure from there.
		p.at = p.start
	}
	el := now.Sub(p.at)
	rate := 0.0
	if el > 0 {
		rate = float64(hashed-p.atBytes) / el.Seconds()
	}
	eta := "unknown"
	if rate >= 1 {
		eta = time.Duration(float64(leftBytes) / rate * float64(time.Second)).Round(time.Second).String()
	}
	c.log.Info("catalog: hashing (files are announced as they are hashed, smallest first)",
		"files_hashed", c.hashedFiles.Load(), "files_left", leftFiles,
		"bytes_hashed", hashed, "bytes_left", leftBytes,
		"rate", fmt.Sprintf("%.1f MB/s", rate/1e6), "time_left", eta)
	p.at, p.atBytes, p.reported = now, hashed, true
}

// done ends a hashing run, with a summary if it was reported on.
func (p *hashProgress) done(c *Catalog, now time.Time) {
	if p.reported {
		c.log.Info("catalog: hashing done", "files_hashed", c.hashedFiles.Load(), "bytes_hashed", c.hashedBytes.Load(),
			"took", now.Sub(p.start).Round(time.Second))
	}
	*p = hashProgress{}
}
