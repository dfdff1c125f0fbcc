package linkemu

import (
	"context"
	"io"
	"os"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// chanDev is an in-memory device: Read takes the packets the test sends,
// Write records each packet with the (virtual) time it was written.
type chanDev struct {
	in     chan []byte
	closed chan struct{}
	once   sync.Once

	mu  sync.Mutex
	out []written
}

type written struct {
	at time.Time
	b  []byte
}

func newChanDev() *chanDev {
	return &chanDev{in: make(chan []byte, 1024), closed: make(chan struct{})}
}

func (d *chanDev) Read(p []byte) (int, error) {
	select {
	case b, ok := <-d.in:
		if !ok {
			return 0, io.EOF
		}
		return copy(p, b), nil
	case <-d.closed:
		return 0, os.ErrClosed
	}
}

func (d *chanDev) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.out = append(d.out, written{time.Now(), append([]byte(nil), p...)})
	return len(p), nil
}

func (d *chanDev) Close() error {
	d.once.Do(func() { close(d.closed) })
	return nil
}

func (d *chanDev) written() []written {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]written(nil), d.out...)
}

// A burst through a Direction, in virtual time: each packet leaves at its
// serialisation end plus the delay, in order and unchanged, and the
// packets beyond the queue are counted, not delivered.
func TestDirectionTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := newChanDev(), newChanDev()
		p, err := NewPair("test", a, b,
			Config{Rate: 10e6, Delay: 20 * time.Millisecond, QueueDelay: 10 * time.Millisecond},
			Config{Delay: 3 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()

		start := time.Now()
		for i := range 15 {
			pkt := make([]byte, 1250) // 1 ms at 10 Mbit/s
			pkt[0] = byte(i)
			a.in <- pkt
		}
		b.in <- []byte("ack")
		time.Sleep(time.Second)
		synctest.Wait()

		got := b.written()
		if len(got) != 10 {
			t.Fatalf("%d packets out of b, want 10 (the queue holds 10 ms)", len(got))
		}
		for i, w := range got {
			if w.b[0] != byte(i) || len(w.b) != 1250 {
				t.Errorf("packet %d: got #%d of %d bytes", i, w.b[0], len(w.b))
			}
			if want := 20*time.Millisecond + time.Duration(i+1)*time.Millisecond; w.at.Sub(start) != want {
				t.Errorf("packet %d left after %v, want %v", i, w.at.Sub(start), want)
			}
		}
		back := a.written()
		if len(back) != 1 || string(back[0].b) != "ack" || back[0].at.Sub(start) != 3*time.Millisecond {
			t.Errorf("down direction: %+v", back)
		}
		s := p.Up.Stats()
		if s.PacketsIn != 15 || s.PacketsOut != 10 || s.QueueDrops != 5 || s.MaxQueueDelay != 9*time.Millisecond {
			t.Errorf("up stats %+v", s)
		}
		p.ResetStats()
		if s := p.Up.Stats(); s != (Stats{}) {
			t.Errorf("after reset: %+v", s)
		}

		// A new configuration applies to the next packet.
		if err := p.SetConfig(Config{Delay: 50 * time.Millisecond}, Config{}); err != nil {
			t.Fatal(err)
		}
		sent := time.Now()
		a.in <- []byte{99}
		time.Sleep(time.Second)
		synctest.Wait()
		got = b.written()
		if last := got[len(got)-1]; last.b[0] != 99 || last.at.Sub(sent) != 50*time.Millisecond {
			t.Errorf("after SetConfig: packet %v left after %v, want 50ms", last.b, last.at.Sub(sent))
		}

		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// A device that fails ends Run with its error.
func TestDirectionReadError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := newChanDev(), newChanDev()
		p, err := NewPair("broken", a, b, Config{}, Config{})
		if err != nil {
			t.Fatal(err)
		}
		close(a.in)
		if err := p.Run(t.Context()); err == nil {
			t.Error("Run returned nil after a device failed")
		}
	})
}
