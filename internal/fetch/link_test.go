package fetch

import (
	"testing"
	"time"
)

// The link's loss and rate maths on a fake clock.

// A burst that arrives with one clock read (GRO, an emulator's timer tick)
// was sent before the interval its first datagram starts: counting its
// other datagrams read every clump as more than the path carries, and the
// bandwidth model keeps the largest sample.
func TestRateSampleLeavesOutTheFirstBurst(t *testing.T) {
	l := newLink(1, 128<<10, 8<<20)
	// 1 MB/s arriving as bursts of 10 datagrams of 1,000 bytes every 10 ms.
	at := t0
	for range 5 {
		for range 10 {
			l.onDelivered(1000, at)
		}
		at = at.Add(10 * time.Millisecond)
	}
	// Intervals end on a burst: 20 ms holds two bursts after the first.
	if got := l.lastSample; got != 1e6 {
		t.Errorf("sample %.0f B/s of a 1 MB/s path in bursts, want exactly 1e6", got)
	}
}

func TestTailLostAfterTwoTurnsOfTheServer(t *testing.T) {
	l := newLink(1, 128<<10, 8<<20)
	l.srtt, l.hasRTT, l.paced, l.minRTT = 40*time.Millisecond, true, true, 30*time.Millisecond
	// Four READs in service, a datagram of each every 4 ms: 1 ms a READ.
	l.reqs = 4
	l.noteGap(4 * time.Millisecond)
	if got := l.turn(); got != 8*time.Millisecond {
		t.Fatalf("turn %v, want 8ms (two rounds of four READs of 1 ms)", got)
	}
	c := &chunk{n: 128 << 10}
	r := &request{l: l, c: c, ranges: []span{{0, 128 << 10}}, asked: 128 << 10, first: true, expect: 64 << 10, lastAct: t0}
	at, ok := r.tailLostAt()
	if want := t0.Add(8*time.Millisecond + 10*time.Millisecond); !ok || !at.Equal(want) {
		t.Errorf("tail lost at %v (%v), want two turns and a quarter RTT after the last datagram, %v", at, ok, want)
	}
	// Nothing from the server since (and other READs outstanding): a
	// silent server is left to the RTO.
	if r.tailLost() {
		t.Error("tail declared lost while the server sent nothing else")
	}
	l.lastData = t0.Add(time.Millisecond)
	if !r.tailLost() {
		t.Error("tail not lost though the server went on with other READs")
	}
	// A more crowded server: the allowance grows with the READs at once.
	l.reqs = 8
	if got := l.turn(); got != 16*time.Millisecond {
		t.Errorf("turn with 8 READs %v, want 16ms", got)
	}
	// Every byte seen: no tail to lose.
	r.expect = r.asked
	if _, ok := r.tailLostAt(); ok {
		t.Error("a complete READ has a tail loss time")
	}
}

func TestIdleRetransmitLostBeforeItsRTO(t *testing.T) {
	l := newLink(1, 128<<10, 8<<20)
	l.paced = true
	for i := range 20 {
		l.sampleRTT(time.Duration(180+40*(i%2))*time.Millisecond, t0) // RTTVAR about 20 ms
	}
	r := &request{l: l, retrans: true, asked: 1428, sentAt: t0, lastAct: t0}
	at, ok := r.lostAt()
	if !ok {
		t.Fatal("an idle retransmission has no loss time")
	}
	if want := t0.Add(l.srtt + max(l.srtt/4, 2*l.rttvar)); !at.Equal(want) { // no READ of ours at the server: no turn
		t.Errorf("lost %v after sending, want %v (SRTT and the larger of a quarter of it and 2·RTTVAR)", at.Sub(t0), want.Sub(t0))
	}
	if dl := r.deadline(); !at.Before(dl) {
		t.Errorf("loss time %v not before the RTO deadline %v", at.Sub(t0), dl.Sub(t0))
	}
	// Queued behind 1 MiB it waits as long again as two turns of the
	// server's round of READs: the server serves them interleaved.
	l.reqs, l.gap = 8, time.Millisecond
	r.ahead = 1 << 20
	if at2, _ := r.lostAt(); !at2.Equal(at.Add(16 * time.Millisecond)) {
		t.Errorf("behind 8 READs lost %v after sending, want %v", at2.Sub(t0), at.Add(16*time.Millisecond).Sub(t0))
	}
	// A first READ waits for its RTO (or a later READ's answer).
	r.retrans = false
	if _, ok := r.lostAt(); ok {
		t.Error("a first READ declared lost before its RTO with no later READ answered")
	}
}

// RACK: a READ is lost once it is as late as the READ sent after it took
// to be answered, and an allowance, whatever is answered since.
func TestLostAfterALaterReadAnswered(t *testing.T) {
	l := newLink(1, 128<<10, 8<<20)
	l.srtt, l.hasRTT = 200*time.Millisecond, true
	r := &request{l: l, asked: 128 << 10, sentAt: t0, lastAct: t0}
	// A READ sent 10 ms later answered after 210 ms.
	l.firstSent, l.firstSeenAt = t0.Add(10*time.Millisecond), t0.Add(220*time.Millisecond)
	at, ok := r.lostAt()
	want := t0.Add(210*time.Millisecond + l.reorderAllowance())
	if !ok || !at.Equal(want) {
		t.Fatalf("lost at %v (%v), want %v", at.Sub(t0), ok, want.Sub(t0))
	}
	// Later READs answered all the time do not push it back.
	l.firstSent, l.firstSeenAt = t0.Add(100*time.Millisecond), t0.Add(310*time.Millisecond)
	if at2, _ := r.lostAt(); !at2.Equal(want) {
		t.Errorf("a later answer moved the loss time to %v, want %v", at2.Sub(t0), want.Sub(t0))
	}
}

func TestHoleLostAfterThreeDatagrams(t *testing.T) {
	if lossThreshold != 3 {
		t.Fatalf("lossThreshold %d: RFC 9002's packet threshold is 3", lossThreshold)
	}
}
