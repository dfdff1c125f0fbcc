package linkemu

import (
	"context"
	"fmt"
	"io"

	"golang.org/x/sync/errgroup"
)

// Kind is the kind of device: TUN carries IP packets, TAP Ethernet
// frames (a TAP device can be a bridge port).
type Kind uint8

const (
	TUN Kind = iota
	TAP
)

func (k Kind) String() string {
	if k == TAP {
		return "tap"
	}
	return "tun"
}

// A Pair is one emulated link between two devices, A and B: what the
// kernel sends into A comes out of B after Up, what it sends into B comes
// out of A after Down.
type Pair struct {
	Name     string
	Up, Down *Direction
	a, b     io.ReadWriteCloser
}

// NewPair joins devices a and b (owned by the pair from now on) by a
// link configured up (a → b) and down (b → a).
func NewPair(name string, a, b io.ReadWriteCloser, up, down Config) (*Pair, error) {
	u, err := NewDirection(name+" up", a, b, up)
	if err != nil {
		return nil, err
	}
	d, err := NewDirection(name+" down", b, a, down)
	if err != nil {
		return nil, err
	}
	return &Pair{Name: name, Up: u, Down: d, a: a, b: b}, nil
}

// SetConfig changes both directions.
func (p *Pair) SetConfig(up, down Config) error {
	if err := p.Up.SetConfig(up); err != nil {
		return err
	}
	return p.Down.SetConfig(down)
}

// ResetStats zeroes both directions' counters.
func (p *Pair) ResetStats() {
	p.Up.ResetStats()
	p.Down.ResetStats()
}

// Run moves packets both ways until ctx is done, then closes the devices
// (which removes non-persistent TUN and TAP devices). It returns the first
// error of either direction.
func (p *Pair) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	stop := context.AfterFunc(ctx, func() {
		p.a.Close()
		p.b.Close()
	})
	defer stop()
	g.Go(func() error { return p.Up.Run(ctx) })
	g.Go(func() error { return p.Down.Run(ctx) })
	if err := g.Wait(); err != nil {
		return fmt.Errorf("link %s: %w", p.Name, err)
	}
	return nil
}
