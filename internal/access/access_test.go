package access

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for Config.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func mustPrefixes(t *testing.T, s string) []netip.Prefix {
	t.Helper()
	ps, err := ParsePrefixes(s)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func TestParsePrefixes(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string // prefixes joined by spaces, or "error: <substring>"
	}{
		{"", ""},
		{" , ", ""},
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"10.0.0.0/8, 192.0.2.7 ,2001:db8::/32,::1", "10.0.0.0/8 192.0.2.7/32 2001:db8::/32 ::1/128"},
		{"10.0.0.0/33", "error: invalid CIDR"},
		{"10.0.0/8", "error: invalid CIDR"},
		{"example.com", "error: invalid address"},
		{"10.0.0.1,bogus", "error: invalid address \"bogus\""},
	} {
		ps, err := ParsePrefixes(tt.in)
		if want, ok := strings.CutPrefix(tt.want, "error: "); ok {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%q: err %v, want %q", tt.in, err, want)
			}
			continue
		}
		var got []string
		for _, p := range ps {
			got = append(got, p.String())
		}
		if err != nil || strings.Join(got, " ") != tt.want {
			t.Errorf("%q: got %v, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestAllowDeny(t *testing.T) {
	for _, tt := range []struct {
		allow, deny string
		admit       []string
		refuse      []string
	}{
		{"", "", []string{"192.0.2.1", "2001:db8::1"}, nil},
		{"", "192.0.2.0/24", []string{"192.0.3.1", "2001:db8::1"}, []string{"192.0.2.1", "::ffff:192.0.2.9"}},
		{"10.0.0.0/8,::1", "", []string{"10.1.2.3", "::1", "::ffff:10.0.0.1"}, []string{"192.0.2.1", "::2"}},
		// Deny wins over a wider allow.
		{"10.0.0.0/8", "10.9.0.0/16", []string{"10.8.0.1"}, []string{"10.9.1.1", "11.0.0.1"}},
		// Unmasked and IPv4-mapped prefixes in the lists are canonicalised.
		{"", "10.1.2.3/8", []string{"11.0.0.1"}, []string{"10.200.0.1"}},
		{"", "::ffff:10.0.0.0/104", []string{"11.0.0.1"}, []string{"10.200.0.1"}},
		// Zones do not dodge the lists.
		{"", "fe80::/10", nil, []string{"fe80::1%eth0"}},
	} {
		g, err := New(Config{Allow: mustPrefixes(t, tt.allow), Deny: mustPrefixes(t, tt.deny)})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range tt.admit {
			if !g.Allowed(netip.MustParseAddr(a)) {
				t.Errorf("allow %q deny %q: %s refused", tt.allow, tt.deny, a)
			}
		}
		for _, a := range tt.refuse {
			if g.Allowed(netip.MustParseAddr(a)) {
				t.Errorf("allow %q deny %q: %s admitted", tt.allow, tt.deny, a)
			}
		}
	}
}

func TestClientKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":                "192.0.2.1",
		"::ffff:192.0.2.1":         "192.0.2.1",
		"2001:db8:1:2:3:4:5:6":     "2001:db8:1:2::",
		"2001:db8:1:2:ffff::1":     "2001:db8:1:2::",
		"fe80::1%eth0":             "fe80::",
		"2001:db8:1:3::1":          "2001:db8:1:3::",
		"::1":                      "::",
		"2001:db8:ffff:ffff::abcd": "2001:db8:ffff:ffff::",
	} {
		if got := ClientKey(netip.MustParseAddr(in)).String(); got != want {
			t.Errorf("ClientKey(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, c := range []Config{
		{Rate: -1, Burst: 1},
		{Rate: 5, Burst: 0},
		{MaxConns: -1},
		{MaxConnsPerClient: -3},
		{Rate: 1, Burst: 1, MaxClients: -1},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func TestRateLimitFakeClock(t *testing.T) {
	clk := newFakeClock()
	g, err := New(Config{Rate: 2, Burst: 3, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("192.0.2.1")
	allow := func(a netip.Addr) (bool, time.Duration) { return g.rates.allow(ClientKey(a), clk.Now()) }
	for i := range 3 {
		if ok, _ := allow(a); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, wait := allow(a)
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("4th request: ok %v, wait %v; want refused, 500ms", ok, wait)
	}
	// Refusals take no token: the wait does not grow with retries.
	clk.Advance(100 * time.Millisecond)
	if ok, wait := allow(a); ok || wait != 400*time.Millisecond {
		t.Fatalf("retry after 100ms: ok %v, wait %v; want refused, 400ms", ok, wait)
	}
	// Another client, and another /64, have buckets of their own; the
	// same /64 shares one.
	if ok, _ := allow(netip.MustParseAddr("192.0.2.2")); !ok {
		t.Fatal("another client refused")
	}
	v6a, v6b := netip.MustParseAddr("2001:db8:0:1::a"), netip.MustParseAddr("2001:db8:0:1::b")
	for range 3 {
		if ok, _ := allow(v6a); !ok {
			t.Fatal("IPv6 burst refused")
		}
	}
	if ok, _ := allow(v6b); ok {
		t.Fatal("another address of the same /64 got a bucket of its own")
	}
	if ok, _ := allow(netip.MustParseAddr("2001:db8:0:2::a")); !ok {
		t.Fatal("another /64 refused")
	}
	clk.Advance(399 * time.Millisecond)
	if ok, _ := allow(a); ok {
		t.Fatal("admitted 1ms before a token is due")
	}
	clk.Advance(time.Millisecond)
	if ok, _ := allow(a); !ok {
		t.Fatal("refused when a token is due")
	}
	// Sustained: exactly the rate over 10 s of one try per 10 ms.
	n := 0
	for range 1000 {
		clk.Advance(10 * time.Millisecond)
		if ok, _ := allow(a); ok {
			n++
		}
	}
	if n != 20 {
		t.Fatalf("%d requests admitted in 10 s at 2/s", n)
	}
}

func TestRetryAfter(t *testing.T) {
	for d, want := range map[time.Duration]int{
		0: 1, time.Nanosecond: 1, 500 * time.Millisecond: 1, time.Second: 1,
		time.Second + 1: 2, 9500 * time.Millisecond: 10, time.Minute: 60,
	} {
		if got := retryAfter(d); got != want {
			t.Errorf("retryAfter(%v) = %d, want %d", d, got, want)
		}
	}
	// And from a slow bucket: 1 request per 10 s.
	clk := newFakeClock()
	g, _ := New(Config{Rate: 0.1, Burst: 1, Now: clk.Now})
	a := netip.MustParseAddr("192.0.2.1")
	g.rates.allow(a, clk.Now())
	clk.Advance(2500 * time.Millisecond)
	if _, wait := g.rates.allow(a, clk.Now()); retryAfter(wait) != 8 {
		t.Fatalf("wait %v: Retry-After %d, want 8", wait, retryAfter(wait))
	}
}

// TestRateTableBounded floods the table with more clients than it holds
// and checks that it stays bounded, evicts the least recently used, and
// forgets idle clients on its own.
func TestRateTableBounded(t *testing.T) {
	clk := newFakeClock()
	g, err := New(Config{Rate: 1, Burst: 2, MaxClients: 100, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	hot := netip.MustParseAddr("198.51.100.1")
	g.rates.allow(hot, clk.Now())
	g.rates.allow(hot, clk.Now()) // bucket empty
	for i := range 10000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		g.rates.allow(a, clk.Now())
		if i%50 == 0 {
			g.rates.allow(hot, clk.Now()) // keeps it recently used
		}
		if n, _ := g.rates.stats(); n > 100 {
			t.Fatalf("%d clients in a table of 100", n)
		}
	}
	n, ev := g.rates.stats()
	if n != 100 || ev != 10000+1-100 {
		t.Fatalf("table %d, evictions %d; want 100 and %d", n, ev, 10000+1-100)
	}
	// The hot client survived the flood with its empty bucket.
	if ok, _ := g.rates.allow(hot, clk.Now()); ok {
		t.Fatal("hot client got a fresh bucket during the flood")
	}
	// Once every bucket has refilled (2 s), each call drops idle ones.
	clk.Advance(2 * time.Second)
	for range 60 {
		g.rates.allow(hot, clk.Now())
	}
	if n, _ := g.rates.stats(); n != 1 {
		t.Fatalf("%d clients left after they all went idle, want 1 (the hot one)", n)
	}
	if st := g.Stats(); st.RateClients != 1 || st.RateEvictions != 10000+1-100 {
		t.Fatalf("stats %+v", st)
	}
}

func BenchmarkRateAllow(b *testing.B) {
	g, _ := New(Config{Rate: 1e9, Burst: 1 << 30})
	keys := make([]netip.Addr, 1024)
	for i := range keys {
		keys[i] = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
	}
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		g.rates.allow(keys[i%len(keys)], now)
	}
}
