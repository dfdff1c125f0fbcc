package fetch

import (
	"fmt"
	"time"
)

// Candidate is what a Policy sees of a server that has room in its window.
type Candidate struct {
	SRTT     time.Duration // smoothed first-byte latency
	Rate     float64       // delivery rate, bytes/s (0 while unmeasured)
	Inflight int           // bytes asked for and not yet received
}

// Policy chooses which server a chunk goes to. It is consulted under the
// engine's lock and must be quick and allocation-free.
type Policy interface {
	// Pick returns the index in cands of the server to ask for n bytes.
	Pick(cands []Candidate, n int) int
	Name() string
}

// LeastTime gives a chunk to the server expected to finish it first:
// its latency plus everything queued on it, plus the chunk, at its
// measured rate. Faster servers therefore get proportionally more, and a
// server that slows down gets less as soon as its queue drains slower
// (the idea of aria2's adaptive selector and of peak-EWMA balancing,
// applied per chunk).
type LeastTime struct{}

func (LeastTime) Name() string { return "least-time" }

func (LeastTime) Pick(cands []Candidate, n int) int {
	best, bestT := -1, 0.0
	for i, c := range cands {
		rate := c.Rate
		if rate <= 0 {
			rate = unmeasuredRate
		}
		t := c.SRTT.Seconds() + float64(c.Inflight+n)/rate
		if best < 0 || t < bestT {
			best, bestT = i, t
		}
	}
	return best
}

// unmeasuredRate is assumed for a server until its rate is measured:
// optimistic (1 GB/s), so a new server gets work at once and is measured.
const unmeasuredRate = 1e9

// RoundRobin gives chunks to servers in turn, ignoring speed: the
// assignment's "every server a chunk", kept as a baseline to measure
// LeastTime against.
type RoundRobin struct{ next int }

func (*RoundRobin) Name() string { return "round-robin" }

func (r *RoundRobin) Pick(cands []Candidate, n int) int {
	if len(cands) == 0 {
		return -1
	}
	r.next++
	return r.next % len(cands)
}

// PolicyByName returns the policy a -policy flag names.
func PolicyByName(name string) (Policy, error) {
	switch name {
	case "", "least-time":
		return LeastTime{}, nil
	case "round-robin":
		return &RoundRobin{}, nil
	}
	return nil, fmt.Errorf("unknown scheduling policy %q (want least-time or round-robin)", name)
}
