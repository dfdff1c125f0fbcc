package cache

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"
)

func content(i, size int) ([HashSize]byte, []byte) {
	b := bytes.Repeat([]byte(fmt.Sprint(i)), size)[:size]
	return sha256.Sum256(b), b
}

func TestGetAdd(t *testing.T) {
	c := New(100, 40)
	h, b := content(1, 30)
	if _, ok := c.Get(h); ok {
		t.Fatal("hit in an empty cache")
	}
	c.Add(h, b)
	got, ok := c.Get(h)
	if !ok || !bytes.Equal(got, b) {
		t.Fatal("miss after Add")
	}
	big, bb := content(2, 41)
	c.Add(big, bb)
	if _, ok := c.Get(big); ok || c.Admits(41) {
		t.Fatal("a file above the object limit was kept")
	}
	st := c.Stats()
	if st.Hits != 1 || st.Misses != 2 || st.Entries != 1 || st.Bytes != 30 {
		t.Fatalf("stats %+v", st)
	}
}

// TestLRU: the least recently used entries go first, and the byte bound
// always holds.
func TestLRU(t *testing.T) {
	c := New(100, 40)
	var hs [5][HashSize]byte
	for i := range hs {
		var b []byte
		hs[i], b = content(i, 30)
		c.Add(hs[i], b)
		if i == 2 {
			c.Get(hs[0]) // 0 is now more recent than 1 and 2
		}
		if s := c.Stats(); s.Bytes > 100 {
			t.Fatalf("holding %d bytes, bound 100", s.Bytes)
		}
	}
	// 3 entries of 30 fit: 0 (touched), 3, 4; 1 and 2 were evicted.
	for i, want := range []bool{true, false, false, true, true} {
		if _, ok := c.Get(hs[i]); ok != want {
			t.Errorf("entry %d present=%v, want %v", i, ok, want)
		}
	}
	if s := c.Stats(); s.Evictions != 2 {
		t.Errorf("evictions %d, want 2", s.Evictions)
	}
}

func TestAddTwiceKeepsOne(t *testing.T) {
	c := New(100, 40)
	h, b := content(1, 30)
	c.Add(h, b)
	c.Add(h, bytes.Clone(b))
	if s := c.Stats(); s.Entries != 1 || s.Bytes != 30 {
		t.Fatalf("stats %+v", s)
	}
}

func TestConcurrent(t *testing.T) {
	c := New(1000, 100)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				h, b := content((g*7+i)%50, 10+i%90)
				if got, ok := c.Get(h); ok && !bytes.Equal(got, b) {
					t.Error("wrong content for a hash")
					return
				}
				c.Add(h, b)
			}
		})
	}
	wg.Wait()
	if s := c.Stats(); s.Bytes > 1000 {
		t.Fatalf("holding %d bytes, bound 1000", s.Bytes)
	}
}

func BenchmarkGetHit(b *testing.B) {
	c := New(1<<20, 1<<20)
	h, data := content(1, 4096)
	c.Add(h, data)
	b.ReportAllocs()
	for b.Loop() {
		c.Get(h)
	}
}
