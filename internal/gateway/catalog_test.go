package gateway

import (
	"fmt"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/fschunk"
)

func entries(n, pathLen int, tag string) []fschunk.Entry {
	out := make([]fschunk.Entry, n)
	for i := range out {
		p := fmt.Sprintf("%s/%06d", tag, i)
		for len(p) < pathLen {
			p += "x"
		}
		out[i] = fschunk.Entry{Path: p, Size: 1, ModTime: time.Unix(1, 0).UTC()}
	}
	return out
}

// acked sends a catalog page and reports whether it was acknowledged.
func acked(t *testing.T, c *client, s *auth.Session, typ fschunk.Type, body []byte) bool {
	t.Helper()
	c.send(seal(t, s, typ, body))
	pkt := c.recv(300 * time.Millisecond)
	if pkt == nil {
		return false
	}
	h, _, err := s.Open(pkt, time.Now())
	return err == nil && h.Type == fschunk.TypeCatalogAck
}

// TestCatalogPageSize: a page larger than the datagram size agreed with
// the server is refused, so a server cannot pin 64 KiB per page whatever
// the agreed size.
func TestCatalogPageSize(t *testing.T) {
	key := newKey(t)
	g, addr := startGWWith(t, Config{Key: key, DatagramSize: fschunk.DefaultDatagramSize})
	c := newClient(t, addr)
	s := register(t, c, key)
	big := fschunk.CatalogPage{Gen: 1, Pages: 2, Entries: entries(200, 100, "big")} // ≈ 30 KB
	if acked(t, c, s, fschunk.TypeCatalogPage, big.Append(nil)) {
		t.Error("a page of ~30 KB acknowledged on a session whose datagram size is 1452")
	}
	small := fschunk.CatalogPage{Gen: 1, Pages: 1, Entries: entries(5, 10, "small")}
	if !acked(t, c, s, fschunk.TypeCatalogPage, small.Append(nil)) {
		t.Error("a page within the datagram size not acknowledged")
	}
	if st := g.Stats(); st.CatalogRefused != 1 {
		t.Errorf("CatalogRefused %d, want 1", st.CatalogRefused)
	}
}

// TestCatalogBudget: a catalog over the server's budget is refused and
// its assembly released; the gateway's total stays within its bound; a
// delta over the budget asks for a full catalog instead.
func TestCatalogBudget(t *testing.T) {
	key := newKey(t)
	g, addr := startGWWith(t, Config{Key: key, Catalog: CatalogLimits{MaxEntries: 100, MaxBytes: 1 << 20, MaxTotalBytes: 1 << 20}})
	c := newClient(t, addr)
	s := register(t, c, key)
	pages := []fschunk.CatalogPage{
		{Gen: 1, Page: 0, Pages: 3, Entries: entries(60, 20, "a")},
		{Gen: 1, Page: 1, Pages: 3, Entries: entries(60, 20, "b")},
	}
	if !acked(t, c, s, fschunk.TypeCatalogPage, pages[0].Append(nil)) {
		t.Fatal("first page (60 entries of 100) not acknowledged")
	}
	if acked(t, c, s, fschunk.TypeCatalogPage, pages[1].Append(nil)) {
		t.Fatal("second page (120 entries of 100) acknowledged")
	}
	if n := g.CatalogBytes(); n != 0 {
		t.Fatalf("%d catalog bytes still counted after the refusal", n)
	}
	// The refused catalog's retransmissions are dropped at once.
	if acked(t, c, s, fschunk.TypeCatalogPage, pages[0].Append(nil)) {
		t.Fatal("a page of the refused catalog acknowledged")
	}
	// A catalog that fits is taken.
	ok := fschunk.CatalogPage{Gen: 2, Pages: 1, Entries: entries(90, 20, "c")}
	if !acked(t, c, s, fschunk.TypeCatalogPage, ok.Append(nil)) || g.Pool().CatalogGen(42) != 2 {
		t.Fatal("a catalog within the budget not taken")
	}
	held := g.CatalogBytes()
	if want := int64(90 * (fschunk.CatalogEntryBase + 20)); held != want {
		t.Fatalf("held %d bytes, want %d", held, want)
	}
	// A delta that would take it over asks for a full catalog.
	d := fschunk.CatalogDelta{Base: 2, Gen: 3, Pages: 1, Entries: entries(20, 20, "d"), Removed: make([]bool, 20)}
	c.send(seal(t, s, fschunk.TypeCatalogDelta, d.Append(nil)))
	_, body, err := s.Open(c.recv(time.Second), time.Now())
	var ack fschunk.CatalogAck
	if err != nil || ack.Decode(body) != nil || ack.Status != fschunk.CatalogResync {
		t.Fatalf("delta over the budget: %+v %v, want RESYNC", ack, err)
	}
	if g.Pool().CatalogGen(42) != 2 || g.CatalogBytes() != held {
		t.Fatalf("after the refused delta: gen %d, %d bytes", g.Pool().CatalogGen(42), g.CatalogBytes())
	}
	if st := g.Stats(); st.CatalogRefused != 3 {
		t.Errorf("CatalogRefused %d, want 3", st.CatalogRefused)
	}
	// Eviction releases everything.
	c.send(seal(t, s, fschunk.TypeGoodbye, (&fschunk.Goodbye{}).Append(nil)))
	deadline := time.Now().Add(2 * time.Second)
	for g.CatalogBytes() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes counted after eviction", g.CatalogBytes())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCatalogTotalBudget: two servers within their own budgets cannot
// together exceed the gateway's total.
func TestCatalogTotalBudget(t *testing.T) {
	key := newKey(t)
	per := int64(100 * (fschunk.CatalogEntryBase + 20))
	g, addr := startGWWith(t, Config{Key: key, Catalog: CatalogLimits{MaxTotalBytes: per + per/2}})
	a, b := newClient(t, addr), newClient(t, addr)
	sa, sb := registerAs(t, a, key, 1), registerAs(t, b, key, 2)
	if !acked(t, a, sa, fschunk.TypeCatalogPage, (&fschunk.CatalogPage{Gen: 1, Pages: 1, Entries: entries(100, 20, "a")}).Append(nil)) {
		t.Fatal("first server's catalog refused")
	}
	if acked(t, b, sb, fschunk.TypeCatalogPage, (&fschunk.CatalogPage{Gen: 1, Pages: 1, Entries: entries(100, 20, "b")}).Append(nil)) {
		t.Fatal("second server's catalog taken beyond the total budget")
	}
	if n := g.CatalogBytes(); n != per {
		t.Fatalf("%d bytes counted, want %d", n, per)
	}
}

// TestInstancesPerSource: one source address registers at most
// MaxInstancesPerSource server instances; re-registering one it has is
// fine.
func TestInstancesPerSource(t *testing.T) {
	key := newKey(t)
	g, addr := startGWWith(t, Config{Key: key, Catalog: CatalogLimits{MaxInstancesPerSource: 2}})
	c := newClient(t, addr)
	registerAs(t, c, key, 1)
	registerAs(t, c, key, 2)
	registerAs(t, c, key, 1) // a rekey of a known instance
	in := newInitiator(t, key, 3, auth.DefaultLimits)
	c.send(in.Hello(nil))
	a, err := in.HandleChallenge(c.recv(2*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.send(a)
	if w := c.recv(300 * time.Millisecond); w != nil {
		t.Fatal("a third instance from one address got a WELCOME")
	}
	if st := g.Stats(); st.DropInstances != 1 || st.Handshakes != 3 {
		t.Fatalf("DropInstances %d handshakes %d, want 1 and 3", st.DropInstances, st.Handshakes)
	}
	if n := len(g.Pool().Servers()); n != 2 {
		t.Fatalf("%d servers in the pool, want 2", n)
	}
}
