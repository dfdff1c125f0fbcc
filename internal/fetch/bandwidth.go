package fetch

import "time"

// pathModel is a server path's bandwidth model, BBR's idea applied to a
// receiver-driven protocol: the gateway measures the rate at which a
// server's bytes arrive, keeps the maximum over a window of recent
// samples as the path's bottleneck bandwidth, and asks the server (READ
// .Pace) to send at that rate times a gain that probes a little above it
// now and then and drains a little below it afterwards. Random loss does
// not enter the model at all, so a noisy path keeps its rate; a queue the
// gateway builds shows as delivery that no longer grows with the pace.
//
// It starts in a startup mode (the window grows as in slow start and the
// pace is twice the rate measured) and leaves it once three rounds in a
// row did not raise the bandwidth by a quarter, or once a round lost
// heavily or the latency shows a queue.
type pathModel struct {
	bw      windowedMax // bytes/s
	startup bool
	// Startup's plateau detection, once per round.
	fullBw     float64
	fullRounds int
	roundAt    time.Time
	// ProbeBW's gain cycle.
	phase   int
	phaseAt time.Time
	// phaseMin is the least RTT sample of the phase (0: none yet): if
	// even that is a standingQueue above the path's minimum, a queue
	// stands at the bottleneck and the next phase drains it.
	phaseMin time.Duration
	draining bool // this cruise phase drains a standing queue instead
	// queuedBefore: the phase before the last also saw a standing queue.
	queuedBefore bool
}

// Gains (BBR's, but a gentler startup gain: the pace doubles per round).
const (
	startupGain = 2.0
	cwndGain    = 1.25 // the window is twice the path's bandwidth-delay product
	// fullBwGrowth and fullBwRounds: startup ends when the bandwidth grew
	// less than this factor for this many rounds in a row.
	fullBwGrowth = 1.25
	fullBwRounds = 3
	// bwWindowRounds is how many round trips the bandwidth maximum
	// covers (at least minBwWindow).
	bwWindowRounds = 10
	minBwWindow    = 500 * time.Millisecond
	minRound       = 10 * time.Millisecond
)

// probeGains is the pacing gain cycle of ProbeBW, one phase per round:
// probe above the estimate, drain what the probe queued, cruise.
var probeGains = [...]float64{1.25, 0.75, 1, 1, 1, 1, 1, 1}

func newPathModel() pathModel { return pathModel{startup: true} }

// roundTrip is the length of one round trip for the model's clocks.
func roundTrip(minRTT time.Duration) time.Duration { return max(minRTT, minRound) }

// onSample takes a delivery rate measured over an interval ending now.
func (m *pathModel) onSample(bw float64, now time.Time, minRTT time.Duration) {
	m.bw.update(bw, now, max(bwWindowRounds*roundTrip(minRTT), minBwWindow))
	if !m.startup {
		return
	}
	if m.roundAt.IsZero() {
		m.roundAt = now
		return
	}
	if now.Sub(m.roundAt) < roundTrip(minRTT) {
		return
	}
	m.roundAt = now
	if b := m.bw.get(); b >= fullBwGrowth*m.fullBw {
		m.fullBw, m.fullRounds = b, 0
		return
	}
	if m.fullRounds++; m.fullRounds >= fullBwRounds {
		m.exitStartup(now)
	}
}

// exitStartup ends startup: the path is full (or overflowing). The first
// phase drains the queue startup built.
func (m *pathModel) exitStartup(now time.Time) {
	if m.startup {
		m.startup = false
		m.phase, m.phaseAt, m.draining = 1, now, false
	}
}

// onHeavyLoss is told that a round lost more than loss tolerance allows
// outside startup: the estimate is above what the path carries now (it
// changed, or another flow took part of it), so it restarts from the
// latest sample.
func (m *pathModel) onHeavyLoss() {
	if b := m.bw.get(); b > 0 {
		m.bw.reset(heavyLossDecrease * b)
	}
}

// heavyLossDecrease is what a round of heavy loss leaves of the estimate.
// Not the latest sample: a sample can never exceed the pace, so an
// estimate cut to one taken while the server was slowed down (or the
// response had little to ask) would hold the pace down by itself.
const heavyLossDecrease = 0.85

// pace is the rate to ask of the server now, bytes/s; 0 until the path
// has been measured (then the window alone limits the first round).
func (m *pathModel) pace(now time.Time, minRTT time.Duration) float64 {
	b := m.bw.get()
	if b == 0 {
		return 0
	}
	if m.startup {
		return startupGain * b
	}
	if now.Sub(m.phaseAt) >= m.phaseLen(minRTT) {
		m.phase = (m.phase + 1) % len(probeGains)
		// A pace at the estimate holds a queue where it is, and samples
		// taken at the bottleneck's rate err upwards as often as
		// downwards (the estimate keeps the largest): a cruise phase
		// after one that saw a standing queue drains instead. Never the
		// probe: the estimate is the maximum of recent samples, and
		// without a probe now and then every sample would be taken at a
		// drain's pace and the estimate, and the pace with it, would
		// shrink by a quarter each time the old maximum expires.
		// Two phases in a row, so that one phase of samples late for
		// other reasons (a loaded gateway or server is late to send or
		// to read) does not cost a quarter of a round trip's bytes.
		queued := m.phaseMin > minRTT+standingQueue(minRTT)
		m.draining = probeGains[m.phase] == 1 && queued && m.queuedBefore
		m.queuedBefore = queued
		m.phaseAt, m.phaseMin = now, 0
	}
	if m.draining {
		return probeGains[drainPhase] * b
	}
	return probeGains[m.phase] * b
}

// phaseLen is how long the current phase lasts: a round trip, but a
// probe and its drain at most maxProbe: a probe a round trip long puts a
// quarter of the path's BDP in the bottleneck's queue, which at 200 ms
// is the whole of a 50 ms router buffer.
func (m *pathModel) phaseLen(minRTT time.Duration) time.Duration {
	if probeGains[m.phase] != 1 {
		return min(roundTrip(minRTT), maxProbe)
	}
	return roundTrip(minRTT)
}

// maxProbe bounds a probe's length: 40 ms at 1.25 queue 10 ms, and are
// still two rate samples long.
const maxProbe = 40 * time.Millisecond

// drainPhase is the phase of probeGains that paces below the estimate.
const drainPhase = 1

// standingQueue is the queueing delay that no RTT sample of a whole phase
// fell below, beyond which the model drains: 15 ms, or a sixth of a
// longer path's minimum RTT. Samples run from a READ's sending to its
// first datagram, so they include the wait for the server's turn among
// the READs it serves (a millisecond or so each) and, on a loaded
// machine, the gateway's and the server's lateness: over the real
// emulator with the machine's load average at 10, a 10 ms threshold
// drained all along and one download got 0.56 of the links.
func standingQueue(minRTT time.Duration) time.Duration {
	return max(15*time.Millisecond, minRTT/6)
}

// onRTT takes an RTT sample.
func (m *pathModel) onRTT(rtt time.Duration) {
	if m.phaseMin == 0 || rtt < m.phaseMin {
		m.phaseMin = rtt
	}
}

// window is the bytes in flight the model allows outside startup: twice
// the bandwidth-delay product, and at least minBytes; 0 while unknown.
func (m *pathModel) window(minRTT time.Duration, minBytes int) int {
	b := m.bw.get()
	if b == 0 || minRTT == 0 {
		return 0
	}
	return max(int(cwndGain*b*minRTT.Seconds()), minBytes)
}

// windowedMax is the maximum of the samples of the last one to two
// windows: two buckets, the older forgotten when the newer is a window old.
type windowedMax struct {
	cur, prev float64
	curAt     time.Time
}

func (w *windowedMax) update(v float64, now time.Time, win time.Duration) {
	if w.curAt.IsZero() || now.Sub(w.curAt) >= win {
		w.prev, w.cur, w.curAt = w.cur, v, now
		return
	}
	w.cur = max(w.cur, v)
}

func (w *windowedMax) get() float64 { return max(w.cur, w.prev) }

func (w *windowedMax) reset(v float64) { w.cur, w.prev = v, 0 }
