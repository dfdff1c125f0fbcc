package fileserver

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestPacerSpacesBatchesAtThePace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer()
		// 1,000 KiB/s with 1,472-byte datagrams: a millisecond is 0.7
		// datagram, so one datagram per batch.
		if segs := p.set(1000, 1472, 44); segs != 1 {
			t.Errorf("%d datagrams per batch at 1,000 KiB/s, want 1", segs)
		}
		start := time.Now()
		sent := 0
		for sent < 2<<20 {
			if err := p.wait(context.Background(), 1428); err != nil {
				t.Fatal(err)
			}
			sent += 1428
		}
		// The first burst (one GSO batch) is free; the rest at the pace.
		want := time.Duration(float64(sent-65000) / (1000 * 1024) * float64(time.Second))
		if got := time.Since(start); got < want-10*time.Millisecond || got > want+10*time.Millisecond {
			t.Errorf("2 MiB at 1,000 KiB/s took %v, want about %v", got, want)
		}
	})
}

func TestPacerUnpaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer()
		p.set(1000, 1472, 44)
		if segs := p.set(0, 1472, 44); segs != 44 {
			t.Errorf("%d datagrams per batch unpaced, want the full 44", segs)
		}
		start := time.Now()
		for range 1000 {
			p.wait(context.Background(), 65000)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("unpaced sending waited %v", d)
		}
		// Fast paces send full batches.
		if segs := p.set(1<<20, 1472, 44); segs != 44 {
			t.Errorf("%d datagrams per batch at 1 GiB/s, want 44", segs)
		}
	})
}

// TestPacerLargeBatch: at paces where a millisecond is more than the
// limiter's burst, a batch's every byte is still paced (it waits a burst
// at a time); counting only a burst per batch would send at twice the pace.
func TestPacerLargeBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer()
		const kibps = 128 << 10 // 128 MiB/s: 91 datagrams of 1,472 bytes a millisecond
		segs := p.set(kibps, 1472, batchBytes/1472)
		if segs*1472 <= p.lim.Burst() {
			t.Fatalf("batch of %d datagrams fits the burst; the test needs a larger one", segs)
		}
		start := time.Now()
		sent := 0
		for range 100 {
			if err := p.wait(context.Background(), segs*1472); err != nil {
				t.Fatal(err)
			}
			sent += segs * 1472
		}
		want := time.Duration(float64(sent-p.lim.Burst()) / (kibps * 1024) * float64(time.Second))
		if got := time.Since(start); got < want-time.Millisecond || got > want+time.Millisecond {
			t.Errorf("%d bytes at %d KiB/s took %v, want about %v", sent, kibps, got, want)
		}
	})
}
