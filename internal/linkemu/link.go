// Package linkemu emulates a network link in user space: a rate
// (serialisation), a one-way delay, a drop-tail queue and random or bursty
// loss, applied to real packets read from one TUN (or TAP) device and
// written to another. This kernel has no netem qdisc, so the end-to-end
// benchmarks and the namespace tests route a link's packets through the
// emulator instead; real TCP (curl, aria2, nginx) and real UDP then cross
// the same link.
//
// The link model (Link) is pure arithmetic on the time a packet is offered
// and its size, so its maths is tested with a fake clock; the devices and
// the goroutines that move packets are in Direction and tun_linux.go.
package linkemu

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Config is one direction of a link. The zero value passes every packet
// at once.
type Config struct {
	// Rate is the link's rate in bits per second, counted on the packet as
	// the device hands it over (the IP packet for a TUN device, the
	// Ethernet frame for a TAP device). 0 means no rate limit, and then no
	// queue either.
	Rate float64
	// Delay is the one-way propagation delay, added after serialisation.
	Delay time.Duration
	// QueueDelay bounds the drop-tail queue in time at Rate: a packet that
	// would wait longer than this before its serialisation ends is dropped.
	// 0 means no limit in time.
	QueueDelay time.Duration
	// QueueBytes bounds the queue in bytes (the packet included). 0 means
	// no limit in bytes. With both set, the smaller one applies.
	QueueBytes int
	// Loss is the probability in [0, 1) that a packet is lost on the wire
	// (after it used its share of the rate, as a corrupted frame does).
	Loss float64
	// Bursty, when set, adds Gilbert-Elliott loss on top of Loss.
	Bursty *GilbertElliott
	// Seed makes the loss decisions reproducible.
	Seed uint64
}

// GilbertElliott is a two-state loss model: in the good state a packet is
// lost with LossGood, in the bad state with LossBad; after each packet the
// state changes with PGoodBad (good → bad) or PBadGood (bad → good). The
// mean burst length is 1/PBadGood packets.
type GilbertElliott struct {
	PGoodBad, PBadGood float64
	LossGood, LossBad  float64
}

// ErrConfig reports a configuration the link cannot apply.
var ErrConfig = errors.New("linkemu: invalid link configuration")

// Validate reports a negative or out-of-range field.
func (c Config) Validate() error {
	prob := func(name string, p float64) error {
		if !(p >= 0 && p < 1) {
			return fmt.Errorf("%w: %s %v is not in [0, 1)", ErrConfig, name, p)
		}
		return nil
	}
	switch {
	case !(c.Rate >= 0):
		return fmt.Errorf("%w: rate %v", ErrConfig, c.Rate)
	case c.Delay < 0:
		return fmt.Errorf("%w: delay %v", ErrConfig, c.Delay)
	case c.QueueDelay < 0:
		return fmt.Errorf("%w: queue delay %v", ErrConfig, c.QueueDelay)
	case c.QueueBytes < 0:
		return fmt.Errorf("%w: queue bytes %d", ErrConfig, c.QueueBytes)
	}
	if err := prob("loss", c.Loss); err != nil {
		return err
	}
	if g := c.Bursty; g != nil {
		for _, p := range []struct {
			n string
			v float64
		}{{"p(good→bad)", g.PGoodBad}, {"p(bad→good)", g.PBadGood}, {"loss in good state", g.LossGood}, {"loss in bad state", g.LossBad}} {
			if err := prob(p.n, p.v); err != nil {
				return err
			}
		}
	}
	return nil
}

// Verdict is what the link does with one packet.
type Verdict uint8

const (
	// Deliver: the packet leaves the link at the returned time.
	Deliver Verdict = iota
	// QueueDrop: the queue was full (drop-tail).
	QueueDrop
	// RandomDrop: lost on the wire (random or bursty loss).
	RandomDrop
)

// Stats counts what a link did. QueueDelay figures are the time a packet
// waited behind others before its own serialisation began.
type Stats struct {
	PacketsIn, PacketsOut uint64
	BytesIn, BytesOut     uint64
	QueueDrops            uint64
	RandomDrops           uint64
	// MaxQueueDelay is the longest wait of an accepted packet.
	MaxQueueDelay time.Duration
	// SumQueueDelay over the accepted packets, for the mean.
	SumQueueDelay time.Duration
	// Overflows are packets the emulator itself could not hold (its
	// delivery queue was full); 0 unless the configured link holds more
	// packets than the emulator's bound.
	Overflows uint64
	// WriteErrors are delivered packets the far device refused.
	WriteErrors uint64
}

// MeanQueueDelay is the mean wait of an accepted packet.
func (s Stats) MeanQueueDelay() time.Duration {
	acc := s.PacketsIn - s.QueueDrops
	if acc == 0 {
		return 0
	}
	return s.SumQueueDelay / time.Duration(acc)
}

// Link is the model of one direction. It is not safe for concurrent use.
type Link struct {
	cfg  Config
	rng  *rand.Rand
	bad  bool      // Gilbert-Elliott state
	busy time.Time // when the serialisation of the last accepted packet ends
	st   Stats
}

// NewLink returns a link with cfg, or an error if cfg is invalid.
func NewLink(cfg Config) (*Link, error) {
	l := &Link{}
	return l, l.SetConfig(cfg)
}

// SetConfig changes the link; packets already accepted keep their times.
// The random sequence restarts from cfg.Seed.
func (l *Link) SetConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	l.cfg = cfg
	l.rng = rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	l.bad = false
	return nil
}

// Config returns the link's configuration.
func (l *Link) Config() Config { return l.cfg }

// Stats returns the counters so far.
func (l *Link) Stats() Stats { return l.st }

// ResetStats zeroes the counters (between two measured runs).
func (l *Link) ResetStats() { l.st = Stats{} }

// txTime is the serialisation time of n bytes at the link's rate.
func (l *Link) txTime(n int) time.Duration {
	if l.cfg.Rate <= 0 {
		return 0
	}
	return time.Duration(float64(n) * 8 / l.cfg.Rate * float64(time.Second))
}

// queueLimit is the longest a packet of n bytes may wait before its
// serialisation ends, from the configured limits in time and in bytes;
// 0 means no limit.
func (l *Link) queueLimit() time.Duration {
	lim := l.cfg.QueueDelay
	if l.cfg.QueueBytes > 0 && l.cfg.Rate > 0 {
		if b := l.txTime(l.cfg.QueueBytes); lim == 0 || b < lim {
			lim = b
		}
	}
	return lim
}

// Offer passes a packet of size bytes to the link at now. It returns the
// verdict and, for Deliver, the time the packet leaves the far end. Offer
// times must not go backwards; the returned times of delivered packets
// never do (the delay is the same for all, the queue is FIFO).
//
// The queue is fluid: the backlog at now is the serialisation time still
// owed to accepted packets, so a packet is queued behind exactly the bytes
// that have not yet left. An empty queue always takes a packet, however
// large.
func (l *Link) Offer(now time.Time, size int) (time.Time, Verdict) {
	l.st.PacketsIn++
	l.st.BytesIn += uint64(size)
	if l.busy.Before(now) {
		l.busy = now
	}
	wait := l.busy.Sub(now)
	tx := l.txTime(size)
	if lim := l.queueLimit(); lim > 0 && wait > 0 && wait+tx > lim {
		l.st.QueueDrops++
		return time.Time{}, QueueDrop
	}
	l.busy = l.busy.Add(tx)
	l.st.SumQueueDelay += wait
	l.st.MaxQueueDelay = max(l.st.MaxQueueDelay, wait)
	if l.lose() {
		l.st.RandomDrops++
		return time.Time{}, RandomDrop
	}
	l.st.PacketsOut++
	l.st.BytesOut += uint64(size)
	return l.busy.Add(l.cfg.Delay), Deliver
}

// lose draws the loss of one packet: the random loss, then the
// Gilbert-Elliott state's.
func (l *Link) lose() bool {
	lost := l.cfg.Loss > 0 && l.rng.Float64() < l.cfg.Loss
	if g := l.cfg.Bursty; g != nil {
		p := g.LossGood
		if l.bad {
			p = g.LossBad
		}
		if p > 0 && l.rng.Float64() < p {
			lost = true
		}
		if l.bad {
			l.bad = l.rng.Float64() >= g.PBadGood
		} else {
			l.bad = l.rng.Float64() < g.PGoodBad
		}
	}
	return lost
}
