package linkemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

const (
	// maxPacket is the largest packet read from a device (a TUN device
	// without offloads hands over at most its MTU; 64 KiB covers any MTU).
	maxPacket = 64 << 10
	// smallPacket is the pooled buffer size: every packet of a 1500-byte
	// MTU (and its Ethernet header on a TAP device) fits.
	smallPacket = 2048
	// maxInFlight bounds the packets between the reader and the writer of
	// one direction: 100 Mbit/s × 250 ms of delay and queue is about 2,100
	// full-size packets, 1 Gbit/s × 250 ms about 21,000. Beyond it packets
	// are dropped and counted as Overflows, never silently.
	maxInFlight = 1 << 15
)

// A Direction moves packets from one device to another through a Link:
// a reader goroutine offers each packet to the link as it arrives and a
// writer goroutine writes the delivered ones out at their time.
type Direction struct {
	name string
	src  io.Reader
	dst  io.Writer
	now  func() time.Time

	mu        sync.Mutex // guards link and the counters below
	link      *Link
	overflows uint64
	writeErrs uint64

	q    chan packet
	pool sync.Pool
}

type packet struct {
	at  time.Time
	buf *[]byte
}

// NewDirection returns a direction from src to dst with cfg. name labels
// its errors.
func NewDirection(name string, src io.Reader, dst io.Writer, cfg Config) (*Direction, error) {
	l, err := NewLink(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	d := &Direction{name: name, src: src, dst: dst, now: time.Now, link: l, q: make(chan packet, maxInFlight)}
	d.pool.New = func() any { b := make([]byte, smallPacket); return &b }
	return d, nil
}

// SetConfig changes the link's configuration from the next packet on.
func (d *Direction) SetConfig(cfg Config) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.link.SetConfig(cfg); err != nil {
		return fmt.Errorf("%s: %w", d.name, err)
	}
	return nil
}

// Config returns the link's configuration.
func (d *Direction) Config() Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.link.Config()
}

// Stats returns the counters since the start or the last ResetStats.
func (d *Direction) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.link.Stats()
	s.Overflows = d.overflows
	s.WriteErrors = d.writeErrs
	return s
}

// ResetStats zeroes the counters.
func (d *Direction) ResetStats() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.link.ResetStats()
	d.overflows, d.writeErrs = 0, 0
}

// Run moves packets until ctx is done or reading src fails. The caller
// closes the devices after ctx is done to unblock the reader; a read
// error after that is not reported.
func (d *Direction) Run(ctx context.Context) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { d.write(wctx) })
	err := d.read(ctx)
	cancel()
	wg.Wait()
	return err
}

func (d *Direction) read(ctx context.Context) error {
	scratch := make([]byte, maxPacket)
	for {
		n, err := d.src.Read(scratch)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s: read: %w", d.name, err)
		}
		if n == 0 {
			continue
		}
		now := d.now()
		d.mu.Lock()
		at, v := d.link.Offer(now, n)
		d.mu.Unlock()
		if v != Deliver {
			continue
		}
		var b *[]byte
		if n <= smallPacket {
			b = d.pool.Get().(*[]byte)
			*b = (*b)[:n]
		} else {
			s := make([]byte, n)
			b = &s
		}
		copy(*b, scratch[:n])
		select {
		case d.q <- packet{at: at, buf: b}:
		default:
			d.mu.Lock()
			d.overflows++
			d.mu.Unlock()
		}
	}
}

func (d *Direction) write(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		var p packet
		select {
		case <-ctx.Done():
			return
		case p = <-d.q:
		}
		if wait := p.at.Sub(d.now()); wait > 0 {
			t.Reset(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		if _, err := d.dst.Write(*p.buf); err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return
			}
			// A device that refuses one packet (down for a moment, a
			// route missing) loses that packet, as a real link would.
			d.mu.Lock()
			d.writeErrs++
			d.mu.Unlock()
		}
		if cap(*p.buf) == smallPacket {
			*p.buf = (*p.buf)[:smallPacket]
			d.pool.Put(p.buf)
		}
	}
}
