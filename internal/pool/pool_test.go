package pool

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/fschunk"
)

var t0 = time.Unix(1_800_000_000, 0)

func ent(p, content string, mtime int) fschunk.Entry {
	return fschunk.Entry{Path: p, Hash: sha256.Sum256([]byte(content)), Size: int64(len(content)), ModTime: t0.Add(time.Duration(mtime) * time.Second)}
}

func TestNewestVersionWins(t *testing.T) {
	p := New()
	p.Join(1, "a", t0)
	p.Join(2, "b", t0)
	p.Join(3, "c", t0)
	p.SetCatalog(1, 1, []fschunk.Entry{ent("f", "old", 1)}, t0)
	p.SetCatalog(2, 1, []fschunk.Entry{ent("f", "new", 2)}, t0)
	p.SetCatalog(3, 1, []fschunk.Entry{ent("f", "new", 2)}, t0)
	v, n, ok := p.Lookup("f", t0)
	if !ok || n != 2 || v.Hash != sha256.Sum256([]byte("new")) {
		t.Fatalf("Lookup = %v %d %v", v, n, ok)
	}
	// Only holders of the newest version are offered.
	if hs := p.Holders(v.Key()); len(hs) != 2 || hs[0] != 2 || hs[1] != 3 {
		t.Fatalf("holders %v", hs)
	}
	// The newest version's holders leave: the old one is served.
	p.Remove(2, t0)
	p.Remove(3, t0)
	v, n, _ = p.Lookup("f", t0)
	if n != 1 || v.Hash != sha256.Sum256([]byte("old")) {
		t.Fatalf("after removal: %v %d", v, n)
	}
	// Everyone leaves: known with no holders (503), then forgotten (404).
	p.Remove(1, t0)
	if _, n, ok := p.Lookup("f", t0.Add(time.Minute)); !ok || n != 0 {
		t.Fatalf("orphan: %d %v", n, ok)
	}
	if _, _, ok := p.Lookup("f", t0.Add(ForgetAfter+time.Second)); ok {
		t.Fatal("orphan not forgotten")
	}
	p.Prune(t0.Add(ForgetAfter + time.Second))
	if len(p.paths) != 0 || len(p.orphans) != 0 {
		t.Fatalf("after Prune: %d paths, %d orphans", len(p.paths), len(p.orphans))
	}
}

func TestDeltaAndDrop(t *testing.T) {
	p := New()
	p.Join(1, "a", t0)
	p.SetCatalog(1, 1, []fschunk.Entry{ent("x", "1", 1), ent("d/y", "2", 1)}, t0)
	p.ApplyDelta(1, 2, []fschunk.Entry{ent("x", "1b", 2), {Path: "d/y"}, ent("d/z", "3", 1)}, []bool{false, true, false}, t0)
	if g := p.CatalogGen(1); g != 2 {
		t.Fatalf("gen %d", g)
	}
	if v, _, _ := p.Lookup("x", t0); v.Hash != sha256.Sum256([]byte("1b")) {
		t.Fatal("x not updated")
	}
	// Deleted by its only holder, which is live: gone at once.
	if _, _, ok := p.Lookup("d/y", t0); ok {
		t.Fatal("d/y still known")
	}
	es, ok := p.List("d", t0)
	if !ok || len(es) != 1 || es[0].Name != "z" {
		t.Fatalf("List(d) = %+v %v", es, ok)
	}
	root, _ := p.List("", t0)
	if len(root) != 2 || !root[0].IsDir || root[0].Name != "d" {
		t.Fatalf("List root = %+v", root)
	}
	p.DropVersion(1, Key{sha256.Sum256([]byte("3")), 1}, t0)
	if _, n, _ := p.Lookup("d/z", t0); n != 0 || p.CatalogGen(1) != 0 {
		t.Fatal("DropVersion did not drop or did not ask for a resync")
	}
	if _, ok := p.List("nope", t0); ok {
		t.Fatal("unknown dir listed")
	}
}

func TestExpired(t *testing.T) {
	p := New()
	p.Join(1, "a", t0)
	p.Join(2, "b", t0)
	p.Heard(2, "b", t0.Add(2*time.Second))
	ids := p.Expired(t0.Add(time.Second))
	if len(ids) != 1 || ids[0] != 1 {
		t.Fatalf("expired %v", ids)
	}
}

// TestSameContentTwoPaths: a server holding one content under two paths
// still holds it when one path goes.
func TestSameContentTwoPaths(t *testing.T) {
	p := New()
	p.Join(1, "a", t0)
	p.SetCatalog(1, 1, []fschunk.Entry{ent("x", "same", 1), ent("y", "same", 1)}, t0)
	h := Key{sha256.Sum256([]byte("same")), 4}
	p.ApplyDelta(1, 2, []fschunk.Entry{{Path: "x"}}, []bool{true}, t0)
	if hs := p.Holders(h); len(hs) != 1 {
		t.Fatalf("holders after removing one path: %v", hs)
	}
	p.ApplyDelta(1, 3, []fschunk.Entry{{Path: "y"}}, []bool{true}, t0)
	if hs := p.Holders(h); len(hs) != 0 {
		t.Fatalf("holders after removing both: %v", hs)
	}
}

// BenchmarkRemoveLargeServer: evicting a server with 100,000 files is
// linear (it once was quadratic and stalled the receive loop for minutes).
func BenchmarkRemoveLargeServer(b *testing.B) {
	es := make([]fschunk.Entry, 100_000)
	for i := range es {
		es[i] = ent(fmt.Sprintf("d%d/f%d", i/100, i), fmt.Sprint(i), 1)
	}
	b.ReportAllocs()
	for b.Loop() {
		p := New()
		p.Join(1, "a", t0)
		p.SetCatalog(1, 1, es, t0)
		p.Remove(1, t0)
	}
}

// TestDeletedByLiveHoldersIsGone: a file every live holder reported
// deleted is unknown at once (404), while one whose holder vanished keeps
// its grace period (503) in case the server comes back.
func TestDeletedByLiveHoldersIsGone(t *testing.T) {
	p := New()
	p.Join(1, "a", t0)
	p.Join(2, "b", t0)
	p.SetCatalog(1, 1, []fschunk.Entry{ent("both", "x", 1), ent("one", "y", 1), ent("gone", "z", 1)}, t0)
	p.SetCatalog(2, 1, []fschunk.Entry{ent("both", "x", 1)}, t0)
	// Deleted on server 1, its only holder, which stays live.
	p.ApplyDelta(1, 2, []fschunk.Entry{ent("one", "y", 1)}, []bool{true}, t0)
	if _, _, ok := p.Lookup("one", t0); ok {
		t.Error("a file its only live holder deleted is still known")
	}
	if es, _ := p.List("", t0); len(es) != 2 {
		t.Errorf("listing %+v, want both and gone only", es)
	}
	// Both holders delete it, one by a delta, one by a full catalog.
	p.ApplyDelta(1, 3, []fschunk.Entry{ent("both", "x", 1)}, []bool{true}, t0)
	p.SetCatalog(2, 2, nil, t0)
	if _, _, ok := p.Lookup("both", t0); ok {
		t.Error("a file every live holder deleted is still known")
	}
	// Server 1 vanishes holding "gone": grace.
	p.Remove(1, t0)
	if _, n, ok := p.Lookup("gone", t0.Add(time.Minute)); !ok || n != 0 {
		t.Errorf("vanished holder: Lookup %d %v, want known with no holder (503)", n, ok)
	}
	// A path whose holders were one vanished and one that deleted it:
	// the vanished one may come back with it.
	p.Join(3, "c", t0)
	p.Join(4, "d", t0)
	p.SetCatalog(3, 1, []fschunk.Entry{ent("mixed", "m", 1)}, t0)
	p.SetCatalog(4, 1, []fschunk.Entry{ent("mixed", "m", 1)}, t0)
	p.Remove(3, t0)
	p.SetCatalog(4, 2, nil, t0)
	if _, n, ok := p.Lookup("mixed", t0); !ok || n != 0 {
		t.Errorf("mixed: Lookup %d %v, want known with no holder (503)", n, ok)
	}
}

// TestSizeDisagreement: a holder announcing an honest hash with another
// size is a holder of another version, even under the same path: asking
// for that size never goes to the honest holders, and dropping the liar
// leaves them in place.
func TestSizeDisagreement(t *testing.T) {
	p := New()
	for id := ServerID(1); id <= 3; id++ {
		p.Join(id, "a", t0)
	}
	honest := ent("f", "honest bytes", 1)
	p.SetCatalog(1, 1, []fschunk.Entry{honest}, t0)
	p.SetCatalog(2, 1, []fschunk.Entry{honest}, t0)
	lie := honest
	lie.Size = 1 << 40
	lie.ModTime = lie.ModTime.Add(time.Hour) // newer: it would be served first
	p.SetCatalog(3, 1, []fschunk.Entry{lie}, t0)
	hk := Key{honest.Hash, honest.Size}
	if hs := p.Holders(hk); len(hs) != 2 || hs[0] != 1 || hs[1] != 2 {
		t.Fatalf("honest holders %v", hs)
	}
	if hs := p.Holders(Key{lie.Hash, lie.Size}); len(hs) != 1 || hs[0] != 3 {
		t.Fatalf("liar's holders %v", hs)
	}
	if v, n, _ := p.Lookup("f", t0); v.Size != lie.Size || n != 1 {
		t.Fatalf("Lookup = %+v, %d holders: the newest version first", v, n)
	}
	p.DropVersion(3, Key{lie.Hash, lie.Size}, t0)
	if v, n, _ := p.Lookup("f", t0); v.Size != honest.Size || n != 2 {
		t.Fatalf("after dropping the liar: %+v, %d holders", v, n)
	}
}
