package simnet

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"testing/synctest"
	"time"
)

// pair builds a sender behind link up and a receiver behind an ideal link.
func pair(t *testing.T, up LinkConfig) (*Host, *Conn, *Conn) {
	t.Helper()
	n := New()
	ha, err := n.AddHost(netip.MustParseAddr("10.0.0.1"), up, LinkConfig{})
	if err != nil {
		t.Fatal(err)
	}
	hb, err := n.AddHost(netip.MustParseAddr("10.0.0.2"), LinkConfig{}, LinkConfig{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := ha.Listen(0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := hb.Listen(9000)
	if err != nil {
		t.Fatal(err)
	}
	return ha, a, b
}

// receiveAll reads until nothing arrives for a second and returns the
// arrival times.
func receiveAll(t *testing.T, c *Conn) []time.Duration {
	t.Helper()
	start := time.Now()
	var at []time.Duration
	buf := make([]byte, 2048)
	for {
		c.SetReadDeadline(time.Now().Add(time.Second))
		_, _, err := c.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal(err)
			}
			return at
		}
		at = append(at, time.Since(start))
	}
}

func TestRateDelayAndQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 1 MB/s, 10 ms, a queue of 20 ms (20 datagrams of 1,000 bytes).
		h, a, b := pair(t, LinkConfig{Rate: 1e6, Delay: 10 * time.Millisecond, Queue: 20 * time.Millisecond})
		buf := make([]byte, 1000)
		for range 50 {
			a.WriteTo(buf, b.LocalAddr())
		}
		at := receiveAll(t, b)
		// The queue counts the datagram on the wire: 20 fit. The first is
		// serialised in 1 ms and delayed 10, the last waits 19 ms more.
		if len(at) != 20 {
			t.Fatalf("delivered %d datagrams, want 20", len(at))
		}
		if at[0] != 11*time.Millisecond || at[19] != 30*time.Millisecond {
			t.Errorf("arrivals at %v and %v, want 11ms and 30ms", at[0], at[19])
		}
		st := h.Up()
		if st.QueueDrops != 30 || st.MaxQueueDelay != 19*time.Millisecond {
			t.Errorf("stats %+v: want 30 queue drops and 19ms max queue delay", st)
		}
		// The 20 accepted waited 0, 1, …, 19 ms: the first found the
		// queue empty and counts too.
		if st.Queued != 20 || st.MeanQueueDelay() != 9500*time.Microsecond {
			t.Errorf("%d queued, mean queue delay %v: want 20 and 9.5ms", st.Queued, st.MeanQueueDelay())
		}
		// A second burst of 5 after the queue drained: its own figures.
		h.ResetPeaks()
		for range 5 {
			a.WriteTo(buf, b.LocalAddr())
		}
		receiveAll(t, b)
		d := h.Up().Since(st)
		if d.Queued != 5 || d.QueueDrops != 0 || d.MaxQueueDelay != 4*time.Millisecond || d.MeanQueueDelay() != 2*time.Millisecond {
			t.Errorf("second burst %+v: want 5 queued, max 4ms, mean 2ms", d)
		}
	})
}

func TestPacedSenderKeepsQueueEmpty(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, a, b := pair(t, LinkConfig{Rate: 1e6, Delay: 5 * time.Millisecond})
		buf := make([]byte, 1000)
		for range 100 {
			a.WriteTo(buf, b.LocalAddr())
			time.Sleep(time.Millisecond) // exactly the link's rate
		}
		if got := len(receiveAll(t, b)); got != 100 {
			t.Fatalf("delivered %d, want 100", got)
		}
		if st := h.Up(); st.QueueDrops != 0 || st.MaxQueueDelay != 0 {
			t.Errorf("a paced sender queued: %+v", st)
		}
	})
}

func TestLossIsSeededAndNearItsRate(t *testing.T) {
	run := func(seed uint64) (int, LinkStats) {
		var got int
		var st LinkStats
		synctest.Test(t, func(t *testing.T) {
			h, a, b := pair(t, LinkConfig{Loss: 0.05, Seed: seed})
			buf := make([]byte, 100)
			for range 10000 {
				a.WriteTo(buf, b.LocalAddr())
			}
			got = len(receiveAll(t, b))
			st = h.Up()
		})
		return got, st
	}
	n1, st := run(1)
	n2, _ := run(1)
	n3, _ := run(2)
	if n1 != n2 {
		t.Errorf("same seed, different outcomes: %d and %d delivered", n1, n2)
	}
	if n1 == n3 {
		t.Errorf("different seeds, same outcome (%d): the seed is not used", n1)
	}
	if n1 < 9400 || n1 > 9600 || st.LossDrops != uint64(10000-n1) {
		t.Errorf("5%% loss delivered %d of 10,000 (stats %+v)", n1, st)
	}
}

func TestGilbertElliottLossComesInBursts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Mean burst 1/R = 4 datagrams, about 2% of the time in the bad state.
		h, a, b := pair(t, LinkConfig{Burst: &GilbertElliott{P: 0.005, R: 0.25, LossBad: 1}, Seed: 7})
		buf := make([]byte, 8)
		for i := range 20000 {
			buf[0], buf[1] = byte(i>>8), byte(i)
			a.WriteTo(buf, b.LocalAddr())
		}
		prev, bursts, lost := -1, 0, 0
		for {
			b.SetReadDeadline(time.Now().Add(time.Second))
			_, _, err := b.ReadFrom(buf)
			if err != nil {
				break
			}
			i := int(buf[0])<<8 | int(buf[1])
			if i != prev+1 {
				bursts++
				lost += i - prev - 1
			}
			prev = i
		}
		if st := h.Up(); uint64(lost) != st.LossDrops || lost == 0 {
			t.Fatalf("lost %d, stats %+v", lost, st)
		}
		if mean := float64(lost) / float64(bursts); mean < 2.5 {
			t.Errorf("mean loss burst %.1f datagrams, want about 4", mean)
		}
	})
}

func TestReorderAndDuplicate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, a, b := pair(t, LinkConfig{Reorder: 0.1, Duplicate: 0.1, Seed: 3})
		buf := make([]byte, 100)
		for i := range 1000 {
			buf[0], buf[1] = byte(i>>8), byte(i)
			a.WriteTo(buf, b.LocalAddr())
		}
		seen := map[int]int{}
		out, prev := 0, -1
		for {
			b.SetReadDeadline(time.Now().Add(time.Second))
			_, _, err := b.ReadFrom(buf)
			if err != nil {
				break
			}
			i := int(buf[0])<<8 | int(buf[1])
			if i < prev {
				out++
			}
			prev = max(prev, i)
			seen[i]++
		}
		st := h.Up()
		dups := 0
		for _, k := range seen {
			dups += k - 1
		}
		if len(seen) != 1000 || uint64(dups) != st.Duplicated || dups == 0 || out == 0 || st.Reordered == 0 || uint64(out) > st.Reordered+st.Duplicated {
			t.Errorf("%d distinct, %d duplicates, %d out of order; stats %+v", len(seen), dups, out, st)
		}
	})
}

func TestCloseAndDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a, b := pair(t, LinkConfig{})
		b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		start := time.Now()
		var ne net.Error
		if _, _, err := b.ReadFrom(make([]byte, 10)); !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("read past the deadline: %v", err)
		}
		if d := time.Since(start); d != 50*time.Millisecond {
			t.Errorf("deadline fired after %v", d)
		}
		b.SetReadDeadline(time.Time{})
		go func() { time.Sleep(time.Second); b.Close() }()
		if _, _, err := b.ReadFrom(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on closed conn: %v", err)
		}
		if _, err := a.WriteTo([]byte("x"), b.LocalAddr()); err != nil {
			t.Errorf("a datagram to nobody must be lost silently: %v", err)
		}
	})
}

func TestCorrupt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, a, b := pair(t, LinkConfig{Corrupt: 0.2, Seed: 5})
		sent := make([]byte, 64)
		for i := range 1000 {
			sent[0], sent[1] = byte(i>>8), byte(i)
			a.WriteTo(sent, b.LocalAddr())
			// The sender's buffer is never touched.
			if sent[0] != byte(i>>8) || sent[1] != byte(i) || sent[63] != 0 {
				t.Fatal("the sender's buffer changed")
			}
		}
		got := make([]byte, 100)
		bad := 0
		for {
			b.SetReadDeadline(time.Now().Add(time.Second))
			n, _, err := b.ReadFrom(got)
			if err != nil {
				break
			}
			// Count the flipped bits against what was sent (the index
			// bytes may be hit too: compare with the datagram of the
			// same index when untouched, else with zeros after them).
			flips := 0
			for _, c := range got[2:n] {
				for ; c != 0; c &= c - 1 {
					flips++
				}
			}
			if flips > 3 {
				t.Fatalf("%d bits flipped in one datagram", flips)
			}
			if flips > 0 || got[0] > 3 {
				bad++
			}
		}
		st := h.Up()
		if st.Corrupted == 0 || st.Corrupted > 300 || uint64(bad) > st.Corrupted || st.Delivered != 1000 {
			t.Errorf("%d datagrams seen corrupted; stats %+v", bad, st)
		}
	})
}

func TestJitter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a, b := pair(t, LinkConfig{Delay: 10 * time.Millisecond, Jitter: 5 * time.Millisecond, Seed: 9})
		start := time.Now()
		arrived := make(chan [2]time.Duration, 200) // datagram i, one-way delay
		go func() {
			defer close(arrived)
			buf := make([]byte, 8)
			for {
				b.SetReadDeadline(time.Now().Add(time.Second))
				if _, _, err := b.ReadFrom(buf); err != nil {
					return
				}
				// Datagram i was sent at i×100µs.
				sent := time.Duration(buf[0]) * 100 * time.Microsecond
				arrived <- [2]time.Duration{time.Duration(buf[0]), time.Since(start) - sent}
			}
		}()
		for i := range 200 {
			a.WriteTo([]byte{byte(i)}, b.LocalAddr())
			time.Sleep(100 * time.Microsecond)
		}
		lo, hi, out, prev := time.Hour, time.Duration(0), 0, time.Duration(-1)
		for x := range arrived {
			lo, hi = min(lo, x[1]), max(hi, x[1])
			if x[0] < prev {
				out++
			}
			prev = max(prev, x[0])
		}
		if lo < 5*time.Millisecond || hi > 15*time.Millisecond || hi-lo < 5*time.Millisecond || out == 0 {
			t.Errorf("one-way delays %v to %v, %d out of order; want 5ms to 15ms, spread, reordered", lo, hi, out)
		}
	})
}

// Drop aims at chosen datagrams; SetUp changes a link while it runs (an
// outage, then back) without reordering what is already on it.
func TestDropAndSetUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		third := func(data []byte, _, _ netip.AddrPort) bool { return data[0] == 3 }
		h, a, b := pair(t, LinkConfig{Drop: third, Delay: time.Millisecond})
		send := func(from, to int) {
			for i := from; i < to; i++ {
				a.WriteTo([]byte{byte(i)}, b.LocalAddr())
			}
		}
		send(0, 5)
		h.SetUp(LinkConfig{Loss: 1}) // an outage
		send(5, 10)
		h.SetUp(LinkConfig{}) // back, ideal: ahead of what is still on the link
		send(10, 12)
		var got []byte
		buf := make([]byte, 4)
		for {
			b.SetReadDeadline(time.Now().Add(time.Second))
			if _, _, err := b.ReadFrom(buf); err != nil {
				break
			}
			got = append(got, buf[0])
		}
		if string(got) != string([]byte{10, 11, 0, 1, 2, 4}) {
			t.Errorf("delivered %v, want [10 11 0 1 2 4]", got)
		}
		if st := h.Up(); st.FilterDrops != 1 || st.LossDrops != 5 || st.Datagrams != 12 {
			t.Errorf("stats %+v", st)
		}
	})
}
