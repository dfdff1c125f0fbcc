package auth

import (
	"sync"
	"testing"
)

func TestIndexTable(t *testing.T) {
	var tbl IndexTable[*int]
	if _, ok := tbl.Lookup(1); ok || tbl.Len() != 0 {
		t.Fatal("zero table not empty")
	}
	a, b := new(int), new(int)
	ia := tbl.NewIndex(a)
	if got, ok := tbl.Lookup(ia); !ok || got != a || ia == 0 {
		t.Fatalf("lookup %d: %v %v", ia, got, ok)
	}
	if tbl.Claim(ia, b) || tbl.Claim(0, b) {
		t.Fatal("claimed an index in use, or 0")
	}
	if !tbl.Claim(ia+1, b) && ia+1 != 0 {
		t.Fatal("free index refused")
	}

	// A reserved index is not found until its value is in.
	ir := tbl.NewIndex(nil)
	if _, ok := tbl.Lookup(ir); ok {
		t.Fatal("reserved index found")
	}
	if tbl.Claim(ir, a) {
		t.Fatal("reserved index claimed")
	}
	if tbl.Replace(ir, a, b) {
		t.Fatal("replaced with a stale old value")
	}
	if !tbl.Replace(ir, nil, b) {
		t.Fatal("reserved index not filled")
	}
	if got, ok := tbl.Lookup(ir); !ok || got != b {
		t.Fatal("filled index not found")
	}
	if tbl.Replace(12345678, nil, a) && ir != 12345678 && ia != 12345678 {
		t.Fatal("replaced an index not in use")
	}

	// Only the owner frees its index.
	if tbl.Delete(ia, b) {
		t.Fatal("deleted another owner's index")
	}
	if !tbl.Delete(ia, a) {
		t.Fatal("owner could not delete")
	}
	if _, ok := tbl.Lookup(ia); ok || tbl.Delete(ia, a) {
		t.Fatal("deleted index still there")
	}
	n := 0
	for idx, v := range tbl.All() {
		if got, _ := tbl.Lookup(idx); got != v {
			t.Fatal("All disagrees with Lookup")
		}
		n++
	}
	if n != tbl.Len() {
		t.Fatalf("All yielded %d of %d", n, tbl.Len())
	}
}

// Concurrent users get distinct indices and find only their own values.
func TestIndexTableConcurrent(t *testing.T) {
	var tbl IndexTable[*int]
	const workers, each = 8, 500
	var wg sync.WaitGroup
	idx := make([][]uint32, workers)
	for w := range workers {
		wg.Go(func() {
			for range each {
				v := new(int)
				i := tbl.NewIndex(v)
				if got, ok := tbl.Lookup(i); !ok || got != v {
					t.Errorf("index %d: got another value", i)
					return
				}
				idx[w] = append(idx[w], i)
			}
			for _, i := range idx[w][:each/2] {
				v, _ := tbl.Lookup(i)
				if !tbl.Delete(i, v) {
					t.Errorf("delete %d", i)
				}
			}
		})
	}
	wg.Wait()
	seen := map[uint32]bool{}
	for _, l := range idx {
		for _, i := range l {
			if seen[i] || i == 0 {
				t.Fatalf("index %d given twice (or 0)", i)
			}
			seen[i] = true
		}
	}
	if tbl.Len() != workers*each/2 {
		t.Fatalf("%d left, want %d", tbl.Len(), workers*each/2)
	}
}
