package fileserver

import (
	"context"
	"math"

	"golang.org/x/time/rate"

	"github.com/fastfile/fschunk/internal/transport"
)

// pacingQuantum is how much sending time one paced batch holds: small
// enough that a shallow router queue absorbs it, large enough that a
// batch is still several datagrams (one system call) at high rates.
const pacingQuantum = 0.001 // seconds

// pacer spaces the DATA of every READ of one gateway at the rate the
// gateway asked for (READ.Pace): the gateway measures what the path
// carries, and a server that sent each READ as fast as its socket takes
// it would overflow the queue of the slowest router on the way as soon as
// a few READs overlap. All READs in service share the one limiter, so
// their batches interleave at the session's rate.
type pacer struct{ lim *rate.Limiter }

func newPacer() *pacer {
	// The burst is one full GSO batch: what one unpaced write sends, and
	// the most an idle session may send at once.
	return &pacer{lim: rate.NewLimiter(rate.Inf, transport.MaxSegmentBytes)}
}

// set takes the pace of a READ, KiB/s (0: unpaced), and returns the
// datagrams per batch to send at it, at most max.
func (p *pacer) set(kibps uint32, dg, maxSegs int) int {
	if kibps == 0 {
		if p.lim.Limit() != rate.Inf {
			p.lim.SetLimit(rate.Inf)
		}
		return maxSegs
	}
	bps := float64(kibps) * 1024
	if rate.Limit(bps) != p.lim.Limit() {
		p.lim.SetLimit(rate.Limit(bps))
	}
	segs := int(math.Min(bps*pacingQuantum/float64(dg), float64(maxSegs)))
	return max(segs, 1)
}

// wait blocks until n more bytes may be sent. A batch larger than the
// burst (only at paces where a millisecond is more than a GSO write)
// waits for its bytes a burst at a time.
func (p *pacer) wait(ctx context.Context, n int) error {
	if p.lim.Limit() == rate.Inf {
		return nil
	}
	for b := p.lim.Burst(); n > 0; n -= b {
		if err := p.lim.WaitN(ctx, min(n, b)); err != nil {
			return err
		}
	}
	return nil
}
