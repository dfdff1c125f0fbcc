package fetch

import (
	"time"

	"github.com/fastfile/fschunk/internal/fschunk"
)

// link is the gateway's transfer state for one server, shared by every
// download that uses it, so that a server's capacity is shared fairly and
// measured once. Guarded by Engine.mu.
type link struct {
	id    ServerID
	chunk int // the engine's chunk size

	// RTT estimator (RFC 6298 shape), sampled from READ sent to its first
	// DATA, never from re-requests (Karn's rule).
	srtt, rttvar time.Duration
	hasRTT       bool
	// Queueing shows as first-byte latency above the path's minimum: the
	// window stops growing, and loss then counts as congestion.
	latest          time.Duration // latest RTT sample
	minRTT, nextMin time.Duration // windowed minimum (two overlapping windows)
	minAt           time.Time
	backoff         uint // consecutive timeouts: the RTO doubles with each

	// Window of bytes in flight: asked for and neither received nor
	// given up. Grows like TCP (slow start, then one chunk per window),
	// shrinks on loss only when loss is heavy or bursty enough to mean
	// congestion rather than random corruption of the path.
	cwnd     int
	ssthresh int
	inflight int

	// Round accounting for the loss-tolerant window.
	roundDelivered int
	roundLost      int

	// Delivery rate, bytes/s, smoothed over samples taken while busy.
	rate       float64
	rateBytes  int
	rateStart  time.Time
	rateLast   time.Time // the latest arrival counted
	lastSample float64   // the latest delivery rate sample
	model      pathModel // bandwidth model: the pace asked of the server
	// paced: the server is not on this host, so its READs carry the
	// model's pace and the model sets the window. On loopback the window
	// grows as it always did (slow start, then a chunk per window), the
	// model only watching.
	paced       bool
	suspendTill time.Time // no new work before this (BUSY, timeouts)
	lastTimeout time.Time
	lastData    time.Time // when the server last delivered new bytes
	// gap is the pause between the datagrams of one READ per READ
	// outstanding on the link, smoothed (quick to rise, slow to fall): a
	// paced server interleaves the batches of the READs it serves, so a
	// READ's next batch comes one turn of all of them later, and a turn
	// is as long as there are READs (about a millisecond each). A READ
	// silent for two turns and a reordering allowance while its server
	// goes on sending has lost its tail (request.tailLostAt).
	gap time.Duration
	// reqs counts the READs outstanding on the link.
	reqs int
	// firstSent is the latest send time of a READ whose first datagram
	// arrived, at firstSeenAt: READs sent before it and still unanswered
	// were lost (request.lostAt).
	firstSent, firstSeenAt time.Time

	// Counters for metrics.
	delivered   uint64
	retransmits uint64
	timeouts    uint64
	blamed      uint64 // verdicts against it: bytes or hashes that did not verify
}

// Window tuning. A chunk is the unit of work; the window is in bytes.
const (
	initialWindowChunks = 4
	minWindowChunks     = 2 // one chunk arriving while the next is asked for: the pipe never drains
	// lossTolerance is the fraction of a round's bytes that may be lost
	// before the window shrinks: random loss of a few percent (a noisy
	// path) leaves the rate alone, tail-drop of an overflowing queue
	// (congestion) does not.
	lossTolerance = 0.10
	decrease      = 0.7
	rateGain      = 0.25
	// rateInterval is the least interval of a delivery rate sample: long
	// against one paced batch (about 1 ms), so that where an interval
	// starts and ends hardly matters.
	rateInterval = 20 * time.Millisecond
	// busyPause is how long a server that answered BUSY gets no new reads.
	busyPause = 20 * time.Millisecond
	// queueDelay is how much first-byte latency above the minimum means
	// a queue is building (at least; a fast path also tolerates its own
	// minimum again).
	queueDelay   = 10 * time.Millisecond
	minRTTWindow = 10 * time.Second
	minRate      = 1e6 // bytes/s assumed at least, for deadlines
)

// queueing reports whether the latest latency shows a standing queue:
// more than the path's minimum twice, plus a few chunks' transfer time
// (a queue of that much keeps a slow link busy; more only adds delay).
func (l *link) queueing(chunk int) bool {
	return l.minRTT > 0 && l.latest > 2*l.minRTT+max(queueDelay, 3*l.transferTime(chunk))
}

func newLink(id ServerID, chunk, maxWindow int) *link {
	return &link{id: id, chunk: chunk, cwnd: initialWindowChunks * chunk, ssthresh: maxWindow, model: newPathModel()}
}

// policyRate is the rate the scheduling policy sees: the model's
// bandwidth, or 0 (unmeasured: optimistic) in startup, where the rates
// measured are those of a link the scheduler has not yet given enough
// work; judged by them it would never be given more.
func (l *link) policyRate() float64 {
	if !l.paced {
		return l.rate
	}
	if l.model.startup {
		return 0
	}
	return l.model.bw.get()
}

// reorderAllowance is how long a hole may wait for a datagram that was
// overtaken before it is declared lost: a quarter of the RTT, at least
// 1 ms (RFC 9002's time threshold, scaled to a first-byte RTT).
func (l *link) reorderAllowance() time.Duration { return max(l.srtt/4, time.Millisecond) }

// windowSlackChunks are added to the model's window: a READ is a whole
// chunk, and the bytes of a READ whose loss is not detected yet still
// count in flight.
const windowSlackChunks = 2

// startupQueue reports whether the latest latency shows that startup's
// doubling has filled the path: a queue of more than a quarter of the
// minimum RTT (at least minRound, at most maxStartupQueue). Waiting for
// three rounds without growth, as BBR does, overflows a router buffer
// shorter than the RTT twice over at the doubled pace; and a quarter of
// 200 ms is a whole 50 ms buffer.
func (l *link) startupQueue() bool {
	return l.minRTT > 0 && l.latest-l.minRTT > min(max(l.minRTT/4, minRound), maxStartupQueue)
}

// maxStartupQueue is the most queueing delay startup builds before it
// ends: less than half of a common 50 ms router buffer, since the pace
// goes on doubling for the round trip the news takes.
const maxStartupQueue = 20 * time.Millisecond

// paceKiB is the pace to put in a READ, KiB/s (0: unpaced): the model's
// rate, or nothing above maxPace, where pacing would only cost the
// server CPU (loopback, a LAN).
func (l *link) paceKiB(now time.Time) uint32 {
	p := l.model.pace(now, l.minRTT)
	if p <= 0 || p >= maxPace {
		return 0
	}
	return uint32(max(p/1024, 1))
}

// maxPace is the fastest pace asked for, bytes/s (8 Gbit/s): beyond it a
// READ is served unpaced.
const maxPace = 1e9

// rto is the retransmission timeout: SRTT + max(4·RTTVAR, 1 ms), within
// [MinRTO, MaxRTO], doubled per consecutive timeout.
func (l *link) rto() time.Duration {
	r := fschunk.InitialRTO
	if l.hasRTT {
		r = l.srtt + max(4*l.rttvar, time.Millisecond)
	}
	r = max(r, fschunk.MinRTO) << min(l.backoff, 6)
	return min(r, fschunk.MaxRTO)
}

func (l *link) sampleRTT(rtt time.Duration, now time.Time) {
	l.latest = rtt
	l.model.onRTT(rtt)
	if l.minRTT == 0 || rtt < l.minRTT {
		l.minRTT = rtt
	}
	if l.nextMin == 0 || rtt < l.nextMin {
		l.nextMin = rtt
	}
	if now.Sub(l.minAt) >= minRTTWindow {
		// Forget minima older than two windows, so a path that got
		// slower for good is not judged against its old best.
		l.minRTT, l.nextMin, l.minAt = l.nextMin, rtt, now
	}
	if !l.hasRTT {
		l.srtt, l.rttvar, l.hasRTT = rtt, rtt/2, true
		return
	}
	d := l.srtt - rtt
	if d < 0 {
		d = -d
	}
	l.rttvar = (3*l.rttvar + d) / 4
	l.srtt = (7*l.srtt + rtt) / 8
}

// transferTime is how long n bytes take at the measured rate, assuming
// at least minRate and at most MaxRTO: a rate measured over a few sparse
// datagrams must not push a deadline minutes away.
func (l *link) transferTime(n int) time.Duration {
	t := float64(n) / max(l.rate, minRate) * float64(time.Second)
	return min(time.Duration(t), fschunk.MaxRTO)
}

// onDelivered accounts n new bytes received from this server.
func (l *link) onDelivered(n int, now time.Time) {
	l.delivered += uint64(n)
	l.lastData = now
	l.roundDelivered += n
	l.backoff = 0
	if l.rateStart.IsZero() {
		// The interval starts with this datagram: its bytes arrived
		// before it, so they do not count.
		l.rateStart, l.rateLast = now, now
		return
	}
	// An interval ends on a burst (one clock read: GRO, an emulator's
	// timer tick) and takes all of it, the datagrams after the one that
	// ended it included; the next starts after it. Cut at a datagram,
	// a burst would count in neither (or, started on one, in both), and
	// every clump would read as less (more) than the path carries: the
	// bandwidth model keeps the largest sample, so a pace that settles
	// above the bottleneck fills its queue.
	if now.After(l.rateLast) {
		if el := l.rateLast.Sub(l.rateStart); el >= rateInterval {
			l.rateSample(float64(l.rateBytes)/el.Seconds(), l.rateLast)
			l.rateBytes, l.rateStart = 0, l.rateLast
		}
		l.rateLast = now
	}
	if now.After(l.rateStart) {
		l.rateBytes += n
	}
}

// rateSample takes a delivery rate measured over an interval ending at.
func (l *link) rateSample(sample float64, at time.Time) {
	if l.rate == 0 {
		l.rate = sample
	} else {
		l.rate += rateGain * (sample - l.rate)
	}
	l.lastSample = sample
	if l.inflight+l.chunk <= l.cwnd && sample < l.model.bw.get() {
		// Taken with room in the window for another READ that nobody
		// asked for: it says what the gateway asked of the server, not
		// what the path carries (BBR's application-limited sample). It
		// may raise the estimate, never lower it: over the real emulator
		// a server given less work measured less, was given less for
		// it, and the three links carried 0.55 of their capacity.
		return
	}
	l.model.onSample(sample, at, l.minRTT)
}

// wide reports whether the link is a paced path of a few milliseconds at
// least, where the tail and retransmission rules (request.tailLostAt,
// request.lostAt) run. On a LAN or this host the RTO is a few
// milliseconds anyway, and there a scheduler's pause is as long as a
// server's turn: a gateway short of CPU (a flood of forged datagrams in
// TestAbuseUDPForgeriesAccepted) read its own lateness as loss, threw
// away the rest of READs still arriving and asked again, 8,457 times for
// a 4 MiB file, until the heavy-loss rounds had cut the pace to 100 kB/s.
func (l *link) wide() bool { return l.paced && l.hasRTT && l.minRTT >= wideRTT }

// wideRTT is the least minimum RTT of a wide-area path (link.wide).
const wideRTT = 4 * time.Millisecond

// noteGap takes the pause between two datagrams of one READ.
func (l *link) noteGap(g time.Duration) {
	g /= time.Duration(max(l.reqs, 1))
	if g > l.gap {
		l.gap = g
	} else {
		l.gap -= (l.gap - g) / 8
	}
}

// turn is how long a READ may wait for its next batch: two turns of the
// server's round of READs (see gap).
func (l *link) turn() time.Duration { return 2 * l.gap * time.Duration(max(l.reqs, 1)) }

// onIdle restarts the rate interval when the link had nothing in flight,
// so idle time does not read as slowness.
func (l *link) onIdle() { l.rateBytes, l.rateStart, l.rateLast = 0, time.Time{}, time.Time{} }

// onRequestDone grows or shrinks the window when a request ends with
// got bytes received of asked.
func (l *link) onRequestDone(asked, got, chunk, maxWindow int) {
	if lost := asked - got; lost > 0 {
		l.roundLost += lost
	}
	// Growth counts what was delivered, lossy requests included: random
	// loss must not freeze the window; heavy loss shrinks it below.
	if l.roundDelivered+l.roundLost < l.cwnd {
		l.grow(got, chunk, maxWindow)
		return
	}
	// End of a round (a window's worth of bytes accounted).
	total := l.roundDelivered + l.roundLost
	if float64(l.roundLost) > lossTolerance*float64(total) {
		if !l.paced || l.model.startup {
			l.cwnd = max(int(float64(l.cwnd)*decrease), minWindowChunks*chunk)
			l.ssthresh = l.cwnd
			l.model.exitStartup(l.lastData)
		} else {
			l.model.onHeavyLoss()
		}
	} else {
		l.grow(got, chunk, maxWindow)
	}
	l.roundDelivered, l.roundLost = 0, 0
}

func (l *link) grow(n, chunk, maxWindow int) {
	if l.paced && !l.model.startup {
		// The model decides: twice the bandwidth-delay product, plus a
		// chunk for the READ granularity.
		if w := l.model.window(l.minRTT, minWindowChunks*chunk); w > 0 {
			l.cwnd = min(w+windowSlackChunks*chunk, maxWindow)
		}
		return
	}
	if l.queueing(chunk) || l.paced && l.startupQueue() {
		l.model.exitStartup(l.lastData)
		return // more in flight would only lengthen the queue
	}
	if l.cwnd < l.ssthresh {
		l.cwnd += n
	} else {
		l.cwnd += max(chunk*n/l.cwnd, 1)
	}
	l.cwnd = min(l.cwnd, maxWindow)
}

// onTimeout backs off after a request got nothing for its RTO. All the
// requests outstanding on a server that died time out together: that is
// one loss event, so the backoff grows at most once per RTO.
func (l *link) onTimeout(now time.Time, chunk int) {
	l.timeouts++
	if !l.lastTimeout.IsZero() && now.Sub(l.lastTimeout) < l.rto() {
		return
	}
	l.lastTimeout = now
	l.backoff++
	l.ssthresh = max(l.cwnd/2, minWindowChunks*chunk)
	l.cwnd = l.ssthresh
	l.suspendTill = now.Add(l.rto())
	l.onIdle()
}

// room reports whether n more bytes fit in the window; an empty window
// always takes one request so a small window never stalls. A suspect
// server (requests timed out in two successive RTOs) gets one request at a time, a
// probe, until it delivers again, unless every holder is suspect
// (onlyChoice): then throttling it would only slow the response.
func (l *link) room(n int, now time.Time, onlyChoice bool) bool {
	if now.Before(l.suspendTill) {
		return false
	}
	if l.suspect() && !onlyChoice {
		return l.inflight == 0
	}
	return l.inflight == 0 || l.inflight+n <= l.cwnd
}

// suspect reports whether the server's requests timed out in two
// successive RTOs with nothing delivered since: one timeout is a lost
// READ on a lossy path, two in a row look like a dead server.
func (l *link) suspect() bool { return l.backoff >= 2 }
