package fetch

import (
	"testing"
	"time"
)

// The bandwidth model on a fake clock, one behaviour per test (as quic-go
// tests its congestion controllers).

var t0 = time.Unix(1000, 0)

// feed gives the model one sample every step from at, for n steps, of
// rate f(i), and returns the time after the last.
func feed(m *pathModel, at time.Time, n int, step, minRTT time.Duration, f func(i int) float64) time.Time {
	for i := range n {
		at = at.Add(step)
		m.onSample(f(i), at, minRTT)
	}
	return at
}

func TestModelUnmeasuredIsUnpaced(t *testing.T) {
	m := newPathModel()
	if p := m.pace(t0, 50*time.Millisecond); p != 0 {
		t.Errorf("pace before any sample %v, want 0 (unpaced)", p)
	}
	if w := m.window(50*time.Millisecond, 1); w != 0 {
		t.Errorf("window before any sample %v, want 0", w)
	}
}

func TestModelStartupDoublesThenStopsAtThePlateau(t *testing.T) {
	m := newPathModel()
	rtt := 50 * time.Millisecond
	// Rate doubles each round up to 10 MB/s, then stays there.
	at := feed(&m, t0, 20, rtt, rtt, func(i int) float64 { return min(1e5*float64(int(1)<<i), 1e7) })
	if m.startup {
		t.Fatal("still in startup after many rounds at the same rate")
	}
	if b := m.bw.get(); b != 1e7 {
		t.Errorf("bandwidth %v, want the plateau 1e7", b)
	}
	// While it was doubling, startup paced at twice the rate measured.
	m2 := newPathModel()
	feed(&m2, t0, 5, rtt, rtt, func(i int) float64 { return 1e5 * float64(int(1)<<i) })
	if !m2.startup {
		t.Fatal("left startup while the rate still doubled")
	}
	if p := m2.pace(at, rtt); p != startupGain*1.6e6 {
		t.Errorf("startup pace %v, want %v", p, startupGain*1.6e6)
	}
}

func TestModelProbeCycle(t *testing.T) {
	m := newPathModel()
	rtt := 20 * time.Millisecond
	at := feed(&m, t0, 2, rtt, rtt, func(int) float64 { return 1e6 })
	m.exitStartup(at)
	// One phase per round: drain first, then cruise, then a probe.
	var gains []float64
	for range len(probeGains) {
		gains = append(gains, m.pace(at, rtt)/1e6)
		at = at.Add(rtt)
	}
	want := []float64{0.75, 1, 1, 1, 1, 1, 1, 1.25}
	for i := range want {
		if gains[i] != want[i] {
			t.Fatalf("gains over one cycle %v, want %v", gains, want)
		}
	}
}

func TestModelRandomLossDoesNotLowerTheRate(t *testing.T) {
	// Loss is not an input of the model: only heavy loss is (below).
	m := newPathModel()
	rtt := 30 * time.Millisecond
	at := feed(&m, t0, 10, rtt, rtt, func(int) float64 { return 5e6 })
	m.exitStartup(at)
	if b := m.bw.get(); b != 5e6 {
		t.Fatalf("bandwidth %v", b)
	}
	m.onHeavyLoss()
	if b := m.bw.get(); b != heavyLossDecrease*5e6 {
		t.Errorf("after heavy loss %v, want %v", b, heavyLossDecrease*5e6)
	}
}

func TestModelForgetsOldMaximum(t *testing.T) {
	m := newPathModel()
	rtt := 20 * time.Millisecond
	at := feed(&m, t0, 5, rtt, rtt, func(int) float64 { return 8e6 })
	// The path slows down for good: after two windows the old maximum is gone.
	win := max(bwWindowRounds*rtt, minBwWindow)
	at = feed(&m, at, int(3*win/rtt), rtt, rtt, func(int) float64 { return 2e6 })
	if b := m.bw.get(); b != 2e6 {
		t.Errorf("bandwidth %v three windows after the path slowed to 2e6", b)
	}
	_ = at
}

func TestModelWindowIsTwiceTheBDP(t *testing.T) {
	m := newPathModel()
	feed(&m, t0, 3, 10*time.Millisecond, 100*time.Millisecond, func(int) float64 { return 1e7 })
	if w := m.window(100*time.Millisecond, 1); w != int(cwndGain*1e7*0.1) {
		t.Errorf("window %d, want %d", w, int(cwndGain*1e7*0.1))
	}
	if w := m.window(time.Microsecond, 1<<20); w != 1<<20 {
		t.Errorf("window %d, want the floor", w)
	}
}

func TestLinkRateSampleExcludesTheFirstDatagram(t *testing.T) {
	l := newLink(1, 128<<10, 4<<20)
	at := t0
	// 1,000 bytes every millisecond: 1 MB/s exactly.
	for range 100 {
		l.onDelivered(1000, at)
		at = at.Add(time.Millisecond)
	}
	if l.lastSample != 1e6 {
		t.Errorf("sample %v, want 1e6", l.lastSample)
	}
}

func TestLinkStartupEndsOnQueueingDelay(t *testing.T) {
	l := newLink(1, 128<<10, 4<<20)
	l.paced = true
	l.sampleRTT(40*time.Millisecond, t0)
	l.onRequestDone(128<<10, 128<<10, 128<<10, 4<<20)
	if !l.model.startup {
		t.Fatal("left startup without a queue")
	}
	l.sampleRTT(40*time.Millisecond+2*minRound, t0.Add(time.Second))
	l.onRequestDone(128<<10, 128<<10, 128<<10, 4<<20)
	if l.model.startup {
		t.Error("still in startup with a queue of half the RTT")
	}
}

func TestLinkPaceIsUnsetOnFastPaths(t *testing.T) {
	l := newLink(1, 128<<10, 4<<20)
	l.model.bw.update(5e9, t0, time.Second)
	if p := l.paceKiB(t0); p != 0 {
		t.Errorf("pace %d KiB/s on a 5 GB/s path, want 0 (unpaced)", p)
	}
	l.model.bw.reset(1 << 20)
	l.model.exitStartup(t0)
	if p := l.paceKiB(t0); p != 768 {
		t.Errorf("pace %d KiB/s in the drain phase of 1 MiB/s, want 768", p)
	}
}

// A cruise phase after one whose every RTT sample was a standing queue
// above the minimum drains instead, until the queue is gone; the probe is
// never replaced (without it the maximum of the samples, all taken at a
// drain's pace, would shrink the estimate each time it expires).
func TestModelDrainsAStandingQueue(t *testing.T) {
	m := newPathModel()
	rtt := 60 * time.Millisecond
	at := feed(&m, t0, 3, 20*time.Millisecond, rtt, func(int) float64 { return 1e7 })
	m.exitStartup(at) // phase 1, the drain
	m.pace(at, rtt)
	drain := probeGains[drainPhase] * 1e7
	probed := false
	for i := range 2 * len(probeGains) {
		m.onRTT(rtt + 30*time.Millisecond) // a queue of 30 ms, all along
		at = at.Add(rtt)
		p := m.pace(at, rtt)
		if i == 0 {
			continue // one phase of late samples is not yet a queue
		}
		if probeGains[m.phase] > 1 {
			probed = true
			if p != probeGains[m.phase]*1e7 {
				t.Fatalf("probe phase paced %v, want %v", p, probeGains[m.phase]*1e7)
			}
			continue
		}
		if p != drain {
			t.Fatalf("phase %d paced %v with a standing queue, want the drain's %v", m.phase, p, drain)
		}
	}
	if !probed {
		t.Fatal("two cycles without a probe")
	}
	// A sample close to the minimum (the queue drained): cruising again.
	for probeGains[m.phase] != 1 || m.draining {
		m.onRTT(rtt + 3*time.Millisecond)
		at = at.Add(rtt)
		m.pace(at, rtt)
	}
	if p := m.pace(at, rtt); p != 1e7 {
		t.Errorf("pace %v once the queue is gone, want the estimate %v", p, 1e7)
	}
}
