package replay

import (
	"math/rand/v2"
	"testing"
)

func TestSequence(t *testing.T) {
	var f Filter
	steps := []struct {
		n    uint64
		want bool
	}{
		{0, true}, {0, false}, {1, true}, {1, false}, {3, true}, {2, true}, {2, false},
		{windowSize + 3, true}, {3, false}, {4, true}, {4, false},
		{2 * windowSize, true}, {windowSize + 3, false}, {windowSize, false}, {windowSize + 1, true},
		{2*windowSize - 1, true}, {1 << 40, true}, {1<<40 - windowSize, false},
		{1<<40 - windowSize + 1, true}, {1<<40 - 1, true}, {1 << 40, false},
	}
	for i, s := range steps {
		if got := f.Accept(s.n); got != s.want {
			t.Fatalf("step %d: Accept(%d) = %v, want %v", i, s.n, got, s.want)
		}
	}
}

// TestCheckDoesNotMark: a counter that was only checked (its tag failed)
// must still be accepted later.
func TestCheckDoesNotMark(t *testing.T) {
	var f Filter
	for i := 0; i < 3; i++ {
		if !f.Check(7) {
			t.Fatal("Check(7) on empty filter = false")
		}
	}
	if !f.Accept(7) || f.Accept(7) || f.Check(7) {
		t.Fatal("7 must be accepted exactly once")
	}
}

// TestAgainstModel compares the ring with an exact set on random traffic
// with reordering, duplicates and jumps.
func TestAgainstModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var f Filter
	seen := map[uint64]bool{}
	var last uint64
	var any bool
	for i := 0; i < 200000; i++ {
		var n uint64
		switch k := r.IntN(100); {
		case k < 70:
			n = last + uint64(r.IntN(4))
		case k < 95 && last > 0:
			n = last - uint64(r.IntN(int(min(last, 3*windowSize/2))+1))
		default:
			n = last + uint64(r.IntN(3*windowSize))
		}
		want := !seen[n] && (!any || n > last || last-n < windowSize)
		if got := f.Accept(n); got != want {
			t.Fatalf("op %d: Accept(%d) = %v, want %v (last %d)", i, n, got, want, last)
		}
		if want {
			seen[n] = true
			if !any || n > last {
				last = n
			}
			any = true
		}
	}
}

func BenchmarkAcceptInOrder(b *testing.B) {
	var f Filter
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		f.Accept(uint64(i))
	}
}
