package linkemu

import (
	"errors"
	"math"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func ms(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }

func mustLink(t *testing.T, c Config) *Link {
	t.Helper()
	l, err := NewLink(c)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// At 12 Mbit/s a 1,500-byte packet takes 1 ms on the wire: a burst
// leaves one per millisecond, each after the one-way delay.
func TestLinkRateAndDelay(t *testing.T) {
	l := mustLink(t, Config{Rate: 12e6, Delay: 30 * time.Millisecond})
	for i := range 5 {
		at, v := l.Offer(t0, 1500)
		if v != Deliver {
			t.Fatalf("packet %d: verdict %d", i, v)
		}
		if want := t0.Add(ms(30 + float64(i+1))); !at.Equal(want) {
			t.Errorf("packet %d leaves at %v, want %v", i, at.Sub(t0), want.Sub(t0))
		}
	}
	// Once the burst has left, a packet waits for nothing.
	now := t0.Add(time.Second)
	if at, _ := l.Offer(now, 1500); !at.Equal(now.Add(ms(31))) {
		t.Errorf("idle link: leaves after %v, want 31ms", at.Sub(now))
	}
	s := l.Stats()
	if s.PacketsIn != 6 || s.PacketsOut != 6 || s.BytesOut != 9000 {
		t.Errorf("stats %+v", s)
	}
	if s.MaxQueueDelay != ms(4) {
		t.Errorf("max queue delay %v, want 4ms (the fifth packet of the burst)", s.MaxQueueDelay)
	}
	if got := s.MeanQueueDelay(); got != ms(10.0/6) {
		t.Errorf("mean queue delay %v, want %v", got, ms(10.0/6))
	}
}

// Packets offered at exactly the rate never queue; offered at twice the
// rate, half of them are dropped once the queue is full, and the queue
// delay stays at its limit.
func TestLinkDropTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"in time", Config{Rate: 12e6, QueueDelay: 10 * time.Millisecond}},
		{"in bytes", Config{Rate: 12e6, QueueBytes: 15000}},
		{"smaller of both", Config{Rate: 12e6, QueueDelay: time.Second, QueueBytes: 15000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := mustLink(t, tc.cfg)
			// A burst of 20: ten fit (the tenth ends its serialisation
			// exactly at the 10 ms limit), ten are dropped.
			for i := range 20 {
				_, v := l.Offer(t0, 1500)
				if want := map[bool]Verdict{true: Deliver, false: QueueDrop}[i < 10]; v != want {
					t.Errorf("burst packet %d: verdict %d, want %d", i, v, want)
				}
			}
			// 5 ms later five packets have left: five fit again.
			acc := 0
			for range 10 {
				if _, v := l.Offer(t0.Add(ms(5)), 1500); v == Deliver {
					acc++
				}
			}
			if acc != 5 {
				t.Errorf("after 5 ms, %d accepted, want 5", acc)
			}
			s := l.Stats()
			if s.QueueDrops != 15 || s.PacketsOut != 15 || s.PacketsIn != 30 {
				t.Errorf("stats %+v", s)
			}
			if s.MaxQueueDelay != ms(9) {
				t.Errorf("max queue delay %v, want 9ms", s.MaxQueueDelay)
			}
		})
	}

	// Offered at twice the rate for a long time: half pass.
	l := mustLink(t, Config{Rate: 12e6, QueueDelay: 50 * time.Millisecond})
	for i := range 10000 {
		l.Offer(t0.Add(time.Duration(i)*ms(0.5)), 1500)
	}
	s := l.Stats()
	if d := math.Abs(float64(s.PacketsOut) - 5000); d > 60 {
		t.Errorf("at twice the rate %d of 10000 passed, want about 5000", s.PacketsOut)
	}
	if s.MaxQueueDelay > 50*time.Millisecond {
		t.Errorf("queue delay %v beyond the 50 ms limit", s.MaxQueueDelay)
	}
}

// An empty queue takes a packet larger than the limit; without a rate
// there is neither serialisation nor a queue.
func TestLinkEdges(t *testing.T) {
	l := mustLink(t, Config{Rate: 12e6, QueueBytes: 1000})
	if _, v := l.Offer(t0, 1500); v != Deliver {
		t.Error("an empty queue refused a packet larger than its limit")
	}
	if _, v := l.Offer(t0, 100); v != QueueDrop {
		t.Error("a full queue took a packet")
	}
	l = mustLink(t, Config{Delay: 5 * time.Millisecond, QueueDelay: time.Millisecond})
	for range 1000 {
		if at, v := l.Offer(t0, 65000); v != Deliver || !at.Equal(t0.Add(5*time.Millisecond)) {
			t.Fatalf("no rate: verdict %d at %v", v, at.Sub(t0))
		}
	}
}

// Random loss hits the configured fraction, the same packets for the same
// seed, and lost packets still used the link.
func TestLinkRandomLoss(t *testing.T) {
	run := func(seed uint64) (drops []int, s Stats) {
		l := mustLink(t, Config{Rate: 12e6, Loss: 0.05, Seed: seed})
		for i := range 100000 {
			if _, v := l.Offer(t0.Add(time.Duration(i)*ms(1)), 1500); v == RandomDrop {
				drops = append(drops, i)
			}
		}
		return drops, l.Stats()
	}
	a, s := run(1)
	b, _ := run(1)
	c, _ := run(2)
	// 5% of 100,000: σ ≈ 69; six σ either way.
	if n := float64(s.RandomDrops); math.Abs(n-5000) > 420 {
		t.Errorf("%v random drops of 100000 at 5%%", n)
	}
	if s.PacketsOut+s.RandomDrops != s.PacketsIn || s.QueueDrops != 0 {
		t.Errorf("stats do not add up: %+v", s)
	}
	if len(a) != len(b) || a[0] != b[0] || a[len(a)-1] != b[len(b)-1] {
		t.Error("same seed, different losses")
	}
	if len(a) == len(c) && a[0] == c[0] {
		t.Error("different seeds, same losses")
	}
	// A lost packet took its serialisation time: back to back at the
	// rate, no packet ever waits.
	if s.MaxQueueDelay != 0 {
		t.Errorf("max queue delay %v at exactly the rate", s.MaxQueueDelay)
	}
	l := mustLink(t, Config{Rate: 12e6, Loss: 0.5, Seed: 3})
	var last time.Time
	for range 100 {
		if at, v := l.Offer(t0, 1500); v == Deliver {
			last = at
		}
	}
	if last.Sub(t0) < ms(95) {
		t.Errorf("lost packets did not use the link: last delivery after %v", last.Sub(t0))
	}
}

// Gilbert-Elliott: with certain loss in the bad state and none in the
// good one, losses come in runs of mean length 1/PBadGood and the loss
// fraction is PGoodBad / (PGoodBad + PBadGood).
func TestLinkGilbertElliott(t *testing.T) {
	g := &GilbertElliott{PGoodBad: 0.01, PBadGood: 0.25, LossBad: 0.999999}
	l := mustLink(t, Config{Bursty: g, Seed: 7})
	const n = 400000
	runs, run, lost := 0, 0, 0
	for i := range n {
		if _, v := l.Offer(t0.Add(time.Duration(i)), 100); v == RandomDrop {
			lost++
			run++
		} else if run > 0 {
			runs++
			run = 0
		}
	}
	frac := float64(lost) / n
	if want := 0.01 / 0.26; math.Abs(frac-want) > 0.15*want {
		t.Errorf("loss fraction %.4f, want about %.4f", frac, want)
	}
	if mean := float64(lost) / float64(runs); math.Abs(mean-4) > 0.5 {
		t.Errorf("mean burst %.2f packets, want about 4", mean)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Rate: -1}, {Rate: math.NaN()}, {Delay: -1}, {QueueDelay: -1}, {QueueBytes: -1},
		{Loss: 1}, {Loss: -0.1}, {Loss: math.NaN()},
		{Bursty: &GilbertElliott{PGoodBad: 2}}, {Bursty: &GilbertElliott{LossBad: -1}},
	} {
		if _, err := NewLink(c); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: error %v, want ErrConfig", c, err)
		}
	}
	if _, err := NewLink(Config{Rate: 1e8, Delay: time.Millisecond, Loss: 0.5,
		Bursty: &GilbertElliott{PGoodBad: 0.1, PBadGood: 0.5, LossBad: 0.5}}); err != nil {
		t.Error(err)
	}
}
