package simnet

import (
	"container/heap"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// LinkConfig describes one direction of a host's access link: what every
// datagram crossing it goes through, in this order: Drop, loss, the
// drop-tail queue and serialisation at Rate, the propagation Delay (with
// Jitter, plus the extra delay of a reordered datagram), duplication, and
// corruption of each copy. The zero value is an ideal link: no rate limit,
// no delay, no loss.
type LinkConfig struct {
	// Rate is the link's capacity in bytes per second; 0 means unlimited
	// (no serialisation and no queue).
	Rate float64
	// Overhead is added to every datagram's size for serialisation and
	// the queue: 28 for the IPv4 and UDP headers a real link carries.
	Overhead int
	// Delay is the one-way propagation delay. Jitter adds to it a delay
	// drawn uniformly from [-Jitter, +Jitter] for each datagram (the sum
	// at least 0), which reorders datagrams sent closer together than it.
	Delay, Jitter time.Duration
	// Queue is the drop-tail queue in front of the link, as time at Rate
	// (a router buffer of 50 ms is common); QueueBytes, if set, gives it in
	// bytes instead. A datagram that does not fit is dropped. Zero with a
	// Rate means 50 ms.
	Queue      time.Duration
	QueueBytes int
	// Loss drops each datagram with this probability, independently.
	Loss float64
	// Burst, if set, adds bursty loss (a Gilbert–Elliott channel).
	Burst *GilbertElliott
	// Duplicate delivers a datagram twice with this probability.
	Duplicate float64
	// Reorder holds a datagram back by ReorderDelay (default 1 ms) with this
	// probability, so that those sent after it overtake it.
	Reorder      float64
	ReorderDelay time.Duration
	// Corrupt flips one to three distinct random bits of each delivered
	// copy with this probability (the sender's buffer is never touched).
	Corrupt float64
	// Drop, if set, is asked first about every datagram; true drops it
	// (counted in FilterDrops). It lets a test aim at one datagram, say
	// the third DATA, instead of hoping random loss hits it. It runs under
	// the link's lock: it must not call into the network.
	Drop func(data []byte, from, to netip.AddrPort) bool
	// Tick, if set, hands datagrams on at multiples of it only (each on
	// the first tick at or after its arrival), as a user-space link
	// emulator woken by a timer does (internal/linkemu: about 1 ms): the
	// receiver sees clumps, and rates it measures over short intervals
	// are off by up to a tick.
	Tick time.Duration
	// Seed seeds the link's random decisions; a link with the same seed
	// and the same datagrams in the same order makes the same decisions.
	Seed uint64
}

// GilbertElliott is a two-state loss channel: in the good state datagrams
// are lost with LossGood, in the bad state with LossBad; after each
// datagram the channel goes bad with probability P and good again with R
// (mean burst 1/R datagrams).
type GilbertElliott struct {
	P, R              float64
	LossGood, LossBad float64
}

// LinkStats counts what a link did.
type LinkStats struct {
	Datagrams  uint64 // offered to the link
	Bytes      uint64 // offered to the link
	Delivered  uint64 // datagrams out of the far end (duplicates included)
	QueueDrops uint64 // dropped because the queue was full
	LossDrops  uint64 // dropped by random or bursty loss
	// FilterDrops counts the datagrams LinkConfig.Drop dropped.
	FilterDrops uint64
	Duplicated  uint64
	Reordered   uint64 // held back by Reorder
	Corrupted   uint64 // copies delivered with flipped bits
	// Queued counts the datagrams a rate-limited link accepted into its
	// queue (those that found it empty too), QueueDelay the sum of their
	// waits before serialisation and MaxQueueDelay the longest (the peak
	// since the link was made or since Host.ResetPeaks): the delay a
	// queue added, as internal/linkemu counts it.
	QueueDelay    time.Duration
	MaxQueueDelay time.Duration
	Queued        uint64
}

// MeanQueueDelay is the mean wait of an accepted datagram in the queue.
func (s LinkStats) MeanQueueDelay() time.Duration {
	if s.Queued == 0 {
		return 0
	}
	return s.QueueDelay / time.Duration(s.Queued)
}

// Since is what the link did after prev was taken: the counters' and
// sums' differences. MaxQueueDelay is kept as it is, a peak that cannot
// be subtracted (Host.ResetPeaks starts a new one).
func (s LinkStats) Since(prev LinkStats) LinkStats {
	return LinkStats{
		Datagrams: s.Datagrams - prev.Datagrams, Bytes: s.Bytes - prev.Bytes, Delivered: s.Delivered - prev.Delivered,
		QueueDrops: s.QueueDrops - prev.QueueDrops, LossDrops: s.LossDrops - prev.LossDrops, Duplicated: s.Duplicated - prev.Duplicated,
		FilterDrops: s.FilterDrops - prev.FilterDrops, Reordered: s.Reordered - prev.Reordered, Corrupted: s.Corrupted - prev.Corrupted,
		QueueDelay: s.QueueDelay - prev.QueueDelay, MaxQueueDelay: s.MaxQueueDelay, Queued: s.Queued - prev.Queued,
	}
}

// link is one direction of an access link. It keeps the datagrams in
// flight in a heap ordered by arrival and one timer for the earliest.
type link struct {
	cfg      LinkConfig
	queueCap float64 // bytes
	out      func(*packet)
	// outMu keeps deliveries in order: two timer firings close together
	// run on two goroutines.
	outMu sync.Mutex

	mu        sync.Mutex
	rng       *rand.Rand
	bad       bool      // Gilbert–Elliott state
	busyUntil time.Time // when the last queued datagram has been serialised
	flight    flight
	seq       uint64
	timer     *time.Timer
	armed     time.Time
	st        LinkStats
}

func newLink(cfg LinkConfig, out func(*packet)) *link {
	l := &link{out: out}
	l.configure(cfg)
	return l
}

// configure sets the link's configuration and restarts its random
// decisions from cfg.Seed. Under l.mu, or before the link is in use.
func (l *link) configure(cfg LinkConfig) {
	l.cfg = cfg
	l.rng = rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	l.bad = false
	l.queueCap = 0
	if cfg.Rate > 0 {
		switch {
		case cfg.QueueBytes > 0:
			l.queueCap = float64(cfg.QueueBytes)
		case cfg.Queue > 0:
			l.queueCap = cfg.Rate * cfg.Queue.Seconds()
		default:
			l.queueCap = cfg.Rate * 0.05
		}
	}
	if l.cfg.ReorderDelay <= 0 {
		l.cfg.ReorderDelay = time.Millisecond
	}
}

// set changes the link's configuration from now on: datagrams already on
// the link arrive when they were going to, and new ones may overtake them
// (as after a route change).
func (l *link) set(cfg LinkConfig) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.configure(cfg)
}

// ideal reports whether the link passes datagrams on at once, untouched.
// Under l.mu.
func (l *link) ideal() bool {
	c := &l.cfg
	return c.Rate == 0 && c.Delay == 0 && c.Jitter == 0 && c.Tick == 0 && c.Loss == 0 && c.Burst == nil &&
		c.Duplicate == 0 && c.Reorder == 0 && c.Corrupt == 0 && c.Drop == nil
}

// send offers p to the link at the current time.
func (l *link) send(p *packet) {
	now := time.Now()
	l.mu.Lock()
	l.st.Datagrams++
	l.st.Bytes += uint64(len(p.data))
	if l.ideal() {
		l.st.Delivered++
		l.mu.Unlock()
		l.out(p)
		return
	}
	defer l.mu.Unlock()
	if l.cfg.Drop != nil && l.cfg.Drop(p.data, p.from, p.to) {
		l.st.FilterDrops++
		return
	}
	if l.lost() {
		l.st.LossDrops++
		return
	}
	at := now
	if l.cfg.Rate > 0 {
		start := now
		if l.busyUntil.After(now) {
			start = l.busyUntil
		}
		size := float64(len(p.data) + l.cfg.Overhead)
		backlog := start.Sub(now).Seconds() * l.cfg.Rate
		if backlog+size > l.queueCap && backlog > 0 {
			l.st.QueueDrops++
			return
		}
		wait := start.Sub(now)
		l.st.Queued++
		l.st.QueueDelay += wait
		l.st.MaxQueueDelay = max(l.st.MaxQueueDelay, wait)
		l.busyUntil = start.Add(time.Duration(size / l.cfg.Rate * float64(time.Second)))
		at = l.busyUntil
	}
	delay := l.cfg.Delay
	if j := l.cfg.Jitter; j > 0 {
		delay = max(delay+time.Duration(l.rng.Int64N(2*int64(j)+1))-j, 0)
	}
	at = at.Add(delay)
	if l.cfg.Reorder > 0 && l.rng.Float64() < l.cfg.Reorder {
		l.st.Reordered++
		at = at.Add(l.cfg.ReorderDelay)
	}
	if tk := l.cfg.Tick; tk > 0 {
		if r := time.Duration(at.UnixNano()) % tk; r != 0 {
			at = at.Add(tk - r)
		}
	}
	var dup *packet
	if l.cfg.Duplicate > 0 && l.rng.Float64() < l.cfg.Duplicate {
		l.st.Duplicated++
		dup = p.clone()
	}
	l.push(l.corrupt(p), at)
	if dup != nil {
		l.push(l.corrupt(dup), at)
	}
	l.arm(now)
}

// corrupt flips one to three distinct bits of p with probability Corrupt.
// Under l.mu.
func (l *link) corrupt(p *packet) *packet {
	if l.cfg.Corrupt == 0 || len(p.data) == 0 || l.rng.Float64() >= l.cfg.Corrupt {
		return p
	}
	l.st.Corrupted++
	bits := len(p.data) * 8
	n := min(1+l.rng.IntN(3), bits)
	var flipped [3]int
	for i := 0; i < n; {
		b := l.rng.IntN(bits)
		if slices.Contains(flipped[:i], b) {
			continue
		}
		flipped[i] = b
		p.data[b/8] ^= 1 << (b % 8)
		i++
	}
	return p
}

// lost draws the loss decision for one datagram. Under l.mu.
func (l *link) lost() bool {
	drop := l.cfg.Loss > 0 && l.rng.Float64() < l.cfg.Loss
	if ge := l.cfg.Burst; ge != nil {
		p := ge.LossGood
		if l.bad {
			p = ge.LossBad
		}
		if p > 0 && l.rng.Float64() < p {
			drop = true
		}
		if l.bad {
			l.bad = l.rng.Float64() >= ge.R
		} else {
			l.bad = l.rng.Float64() < ge.P
		}
	}
	return drop
}

func (l *link) push(p *packet, at time.Time) {
	l.seq++
	heap.Push(&l.flight, inFlight{p: p, at: at, seq: l.seq})
}

// arm sets the timer for the earliest arrival. Under l.mu.
func (l *link) arm(now time.Time) {
	if len(l.flight) == 0 {
		return
	}
	at := l.flight[0].at
	if !l.armed.IsZero() && !at.Before(l.armed) {
		return // already due earlier or at the same time
	}
	l.armed = at
	if l.timer == nil {
		l.timer = time.AfterFunc(at.Sub(now), l.deliver)
	} else {
		l.timer.Reset(at.Sub(now))
	}
}

// deliver passes on every datagram that has arrived, in arrival order.
func (l *link) deliver() {
	l.outMu.Lock()
	defer l.outMu.Unlock()
	now := time.Now()
	var due []*packet
	l.mu.Lock()
	for len(l.flight) > 0 && !l.flight[0].at.After(now) {
		due = append(due, heap.Pop(&l.flight).(inFlight).p)
	}
	l.st.Delivered += uint64(len(due))
	l.armed = time.Time{}
	l.arm(now)
	l.mu.Unlock()
	for _, p := range due {
		l.out(p)
	}
}

func (l *link) resetPeak() {
	l.mu.Lock()
	l.st.MaxQueueDelay = 0
	l.mu.Unlock()
}

func (l *link) stats() LinkStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st
}

type inFlight struct {
	p   *packet
	at  time.Time
	seq uint64
}

// flight is a min-heap of datagrams by arrival, then by order sent.
type flight []inFlight

func (f flight) Len() int { return len(f) }
func (f flight) Less(i, j int) bool {
	if !f[i].at.Equal(f[j].at) {
		return f[i].at.Before(f[j].at)
	}
	return f[i].seq < f[j].seq
}
func (f flight) Swap(i, j int) { f[i], f[j] = f[j], f[i] }
func (f *flight) Push(x any)   { *f = append(*f, x.(inFlight)) }
func (f *flight) Pop() any {
	old := *f
	x := old[len(old)-1]
	old[len(old)-1] = inFlight{}
	*f = old[:len(old)-1]
	return x
}
