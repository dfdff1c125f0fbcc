package pool

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/fschunk"
)

// listScan is List as it was: a scan of every path in the pool. The
// index must give the same answer.
func (p *Pool) listScan(dir string, now time.Time) ([]DirEntry, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	prefix := ""
	if dir != "" {
		prefix = dir + "/"
	}
	seen := map[string]DirEntry{}
	found := dir == ""
	for name, pe := range p.paths {
		if !strings.HasPrefix(name, prefix) || len(pe.versions) == 0 && now.Sub(pe.orphaned) > ForgetAfter {
			continue
		}
		found = true
		rest := name[len(prefix):]
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			seen[rest[:i]] = DirEntry{Name: rest[:i], IsDir: true}
			continue
		}
		de := DirEntry{Name: rest}
		if best := pe.best(); best != nil {
			de.Size, de.ModTime, de.Holders = best.v.Size, best.v.ModTime, len(best.holders)
		} else {
			de.Size, de.ModTime = pe.last.Size, pe.last.ModTime
		}
		seen[rest] = de
	}
	if !found {
		return nil, false
	}
	out := make([]DirEntry, 0, len(seen))
	for _, de := range seen {
		out = append(out, de)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].IsDir != out[j].IsDir {
			return out[i].IsDir
		}
		return out[i].Name < out[j].Name
	})
	return out, true
}

// TestListIndex: through catalogs, deltas, servers leaving and paths
// being forgotten, every directory lists what a scan of all paths gives.
func TestListIndex(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	name := func() string {
		var b strings.Builder
		for d := rng.IntN(4); d > 0; d-- {
			fmt.Fprintf(&b, "d%d/", rng.IntN(3))
		}
		fmt.Fprintf(&b, "f%d", rng.IntN(6))
		return b.String()
	}
	p := New()
	now := t0
	dirs := func() []string {
		out := []string{"", "nope", "d0/nope"}
		for n := range p.paths {
			for i := range len(n) {
				if n[i] == '/' {
					out = append(out, n[:i])
				}
			}
		}
		return out
	}
	check := func(step int) {
		t.Helper()
		for _, d := range dirs() {
			got, gok := p.List(d, now)
			want, wok := p.listScan(d, now)
			if gok != wok || !slices.Equal(got, want) {
				t.Fatalf("step %d, List(%q) = %v, %v; a scan gives %v, %v", step, d, got, gok, want, wok)
			}
		}
	}
	for step := range 400 {
		id := ServerID(1 + rng.IntN(3))
		switch rng.IntN(6) {
		case 0, 1:
			p.Join(id, "a", now)
			es := make([]fschunk.Entry, rng.IntN(8))
			for i := range es {
				es[i] = ent(name(), fmt.Sprint(rng.IntN(4)), rng.IntN(3))
			}
			p.SetCatalog(id, uint64(step), es, now)
		case 2:
			if p.Has(id) {
				p.ApplyDelta(id, uint64(step), []fschunk.Entry{{Path: name()}}, []bool{true}, now)
			}
		case 3:
			p.Remove(id, now)
		case 4:
			// The gateway prunes every second or so; a subdirectory
			// whose paths are all forgotten is listed until then.
			now = now.Add(ForgetAfter / 3)
			p.Prune(now)
		case 5:
			p.Prune(now)
		}
		check(step)
	}
	p.Prune(now.Add(2 * ForgetAfter))
	for id := range ServerID(4) {
		p.Remove(id, now)
	}
	p.Prune(now.Add(4 * ForgetAfter))
	if len(p.dirs) != 1 || len(p.dirs[""].files) != 0 || len(p.dirs[""].subdirs) != 0 {
		t.Fatalf("index not empty after every path was forgotten: %d directories", len(p.dirs))
	}
}

// BenchmarkList: listing a directory of a pool of 200,000 paths (1,000
// directories of 200 files; and the root, of 1,000 directories). It was
// a scan of every path per request.
func BenchmarkList(b *testing.B) {
	es := make([]fschunk.Entry, 200_000)
	for i := range es {
		es[i] = ent(fmt.Sprintf("dir%d/file%d", i/200, i), fmt.Sprint(i), 1)
	}
	p := New()
	p.Join(1, "a", t0)
	p.SetCatalog(1, 1, es, t0)
	for _, c := range []struct {
		how  string
		list func(string, time.Time) ([]DirEntry, bool)
	}{{"index", p.List}, {"scan", p.listScan}} {
		for _, dir := range []string{"dir500", ""} {
			want := map[string]int{"": 1000, "dir500": 200}[dir]
			b.Run(fmt.Sprintf("%s/dir=%q", c.how, dir), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if es, ok := c.list(dir, t0); !ok || len(es) != want {
						b.Fatalf("%d entries, %v", len(es), ok)
					}
				}
			})
		}
	}
}
