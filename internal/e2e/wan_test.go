package e2e

import (
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/demo"
	"github.com/fastfile/fschunk/internal/fetch"
	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/gateway"
	"github.com/fastfile/fschunk/internal/httpfront"
	"github.com/fastfile/fschunk/internal/simnet"
)

// The WAN grid of issue 12, in virtual time: the gateway and three real
// FastFileSrv over a simulated network, each server behind its own
// 100 Mbit/s link (both directions) with a 50 ms drop-tail queue, a
// one-way delay of half the RTT and random loss each way. The file is
// smaller than the 100 MiB of the real grid (CPU time under -race), but
// large against the path: at 200 ms RTT it is several times the
// bandwidth-delay product of the three links together.

const (
	wanRate     = 100e6 / 8 // bytes/s of each server's link
	wanOverhead = 28        // IPv4 + UDP headers, counted on the links
	wanQueue    = 50 * time.Millisecond
)

type wanCase struct {
	rtt  time.Duration
	loss float64 // random loss, each way
	size int
	// goals checked (0: only reported)
	minShare     float64
	maxRedundant float64
}

func (c wanCase) String() string {
	return fmt.Sprintf("rtt=%v loss=%g%% size=%dMiB", c.rtt, c.loss*100, c.size>>20)
}

// wanResult is what one download over the grid measured.
type wanResult struct {
	elapsed, firstByte time.Duration
	share              float64 // goodput / payload capacity of the three links
	redundant          float64 // bytes that reached the gateway beyond a perfect transfer, / file
	queueDrops         uint64
	meanQueue, maxQ    time.Duration // queueing delay at the servers' uplinks
}

func (r wanResult) String() string {
	return fmt.Sprintf("share %.2f, redundant %.1f%%, %v (first byte %v), queue drops %d, mean queue %v (max %v)",
		r.share, 100*r.redundant, r.elapsed.Round(time.Millisecond), r.firstByte.Round(time.Millisecond), r.queueDrops,
		r.meanQueue.Round(100*time.Microsecond), r.maxQ.Round(time.Millisecond))
}

// payloadCapacity is what three links carry of file bytes, in bytes/s.
func payloadCapacity(dg int) float64 {
	return 3 * wanRate * float64(dg-fschunk.DataOverhead) / float64(dg+wanOverhead)
}

// firstWrite records when the first byte reached the client.
type firstWrite struct {
	hash.Hash
	at time.Time
}

func (w *firstWrite) Write(p []byte) (int, error) {
	if w.at.IsZero() && len(p) > 0 {
		w.at = time.Now()
	}
	return w.Hash.Write(p)
}

// runWAN downloads one file of c.size over the grid, sizes times in turn
// over the same gateway (later downloads use what the first learnt), and
// returns the result of each.
func runWAN(t *testing.T, c wanCase, sizes ...int) []wanResult {
	t.Helper()
	if len(sizes) == 0 {
		sizes = []int{c.size}
	}
	var out []wanResult
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		k := make([]byte, 32)
		for i := range k {
			k[i] = byte(i)
		}
		key, err := auth.NewKey(k)
		if err != nil {
			t.Fatal(err)
		}
		root := t.TempDir()
		want := map[int][32]byte{}
		for _, n := range sizes {
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(i*7 + i>>12)
			}
			if err := os.WriteFile(filepath.Join(root, fmt.Sprint(n)), b, 0o644); err != nil {
				t.Fatal(err)
			}
			want[n] = sha256.Sum256(b)
		}

		sn := simnet.New()
		gh, err := sn.AddHost(netip.MustParseAddr("10.0.0.1"), simnet.LinkConfig{}, simnet.LinkConfig{})
		if err != nil {
			t.Fatal(err)
		}
		gc, err := gh.Listen(8888)
		if err != nil {
			t.Fatal(err)
		}
		gwKey := auth.GenerateStaticKey()
		srvKeys := []auth.StaticKey{auth.GenerateStaticKey(), auth.GenerateStaticKey(), auth.GenerateStaticKey()}
		allowed := gateway.Allowed{}
		for i, k := range srvKeys {
			allowed[k.Public()] = fmt.Sprintf("srv%d", i+1)
		}
		gw, err := gateway.New(gateway.Config{Conn: gc, Key: key, Static: gwKey, Allowed: allowed, Logger: testLogger(t).With("side", "gw")})
		if err != nil {
			t.Fatal(err)
		}
		gwDone := make(chan struct{})
		go func() { defer close(gwDone); gw.Run(ctx) }()

		var hosts []*simnet.Host
		var servers []*demo.Server
		for i := range 3 {
			link := func(seed uint64) simnet.LinkConfig {
				return simnet.LinkConfig{Rate: wanRate, Overhead: wanOverhead, Delay: c.rtt / 2, Queue: wanQueue, Loss: c.loss, Seed: seed}
			}
			h, err := sn.AddHost(netip.AddrFrom4([4]byte{10, 0, 1, byte(i + 1)}), link(uint64(2*i+1)), link(uint64(2*i+2)))
			if err != nil {
				t.Fatal(err)
			}
			sc, err := h.Listen(0)
			if err != nil {
				t.Fatal(err)
			}
			name := fmt.Sprintf("srv%d", i+1)
			s, err := demo.StartServer(ctx, demo.ServerConfig{Gateways: []string{"10.0.0.1:8888"}, Root: root, Key: key,
				Static: srvKeys[i], GatewayKeys: []auth.PublicKey{gwKey.Public()}, Conn: sc, NoWatch: true, Logger: testLogger(t).With("side", name)}, name)
			if err != nil {
				t.Fatal(err)
			}
			hosts = append(hosts, h)
			servers = append(servers, s)
		}
		defer func() {
			for _, s := range servers {
				s.Stop()
			}
			cancel()
			<-gwDone
			gc.Close()
		}()

		src := gw.Source()
		// Virtual time: the bound costs nothing, and a server that never
		// joins fails the test here instead of spinning until go test's
		// timeout.
		joinBy := time.Now().Add(time.Minute)
		for _, n := range sizes {
			name := fmt.Sprint(n)
			for {
				if f, ok := src.Lookup(name); ok && f.Holders == 3 {
					break
				}
				if time.Now().After(joinBy) {
					t.Fatalf("%s: not offered by 3 servers after a virtual minute", name)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		dg := fschunk.IPv4DatagramSize
		for _, n := range sizes {
			f, _ := src.Lookup(fmt.Sprint(n))
			before := gh.Down().Bytes
			var up0 []simnet.LinkStats
			for _, h := range hosts {
				up0 = append(up0, h.Up())
			}
			start := time.Now()
			traceDone := make(chan struct{})
			if os.Getenv("WAN_TRACE") != "" {
				go func() {
					tk := time.NewTicker(50 * time.Millisecond)
					defer tk.Stop()
					for {
						select {
						case <-traceDone:
							return
						case <-tk.C:
						}
						line := fmt.Sprintf("%6v", time.Since(start).Round(time.Millisecond))
						for _, dl := range gw.Engine().Downloads() {
							line += fmt.Sprintf(" win=%d pos=%dK", dl.Window, dl.Pos>>10)
						}
						links := gw.Engine().Links()
						slices.SortFunc(links, func(a, b fetch.LinkStats) int { return cmp.Compare(a.ID, b.ID) })
						for _, l := range links {
							line += fmt.Sprintf(" | infl=%dK cwnd=%dK bw=%.1f rate=%.1f ss=%v srtt=%v", l.Inflight>>10, l.Window>>10, l.Bandwidth/1e6, l.Rate/1e6, l.Startup, l.SRTT.Round(time.Millisecond))
						}
						t.Log(line)
					}
				}()
			}
			content, err := src.Open(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			w := &firstWrite{Hash: sha256.New()}
			_, err = content.(httpfront.DirectWriter).WriteToN(w, f.Size)
			elapsed := time.Since(start)
			close(traceDone)
			content.Close()
			if err != nil {
				t.Fatalf("%v: download of %d bytes: %v", c, n, err)
			}
			if [32]byte(w.Sum(nil)) != want[n] {
				t.Fatalf("%v: content differs", c)
			}
			perfect := float64((n + dg - fschunk.DataOverhead - 1) / (dg - fschunk.DataOverhead) * dg)
			r := wanResult{elapsed: elapsed, firstByte: w.at.Sub(start),
				share:     float64(n) / elapsed.Seconds() / payloadCapacity(dg),
				redundant: (float64(gh.Down().Bytes-before) - perfect) / float64(n)}
			var queued uint64
			var qd time.Duration
			for i, h := range hosts {
				st := h.Up()
				r.queueDrops += st.QueueDrops - up0[i].QueueDrops
				queued += st.Queued - up0[i].Queued
				qd += st.QueueDelay - up0[i].QueueDelay
				r.maxQ = max(r.maxQ, st.MaxQueueDelay)
			}
			if queued > 0 {
				r.meanQueue = qd / time.Duration(queued)
			}
			if testing.Verbose() {
				t.Logf("engine %+v", gw.Engine().Stats())
				for _, l := range gw.Engine().Links() {
					t.Logf("link %+v", l)
				}
			}
			out = append(out, r)
		}
	})
	return out
}

// TestWANGrid downloads over the grid of issue 12 and checks goodput and
// redundant bytes against the goals.
func TestWANGrid(t *testing.T) {
	if testing.Short() {
		t.Skip("simulates several transfers")
	}
	// 32 MiB keeps the four cases at a few tens of seconds under -race;
	// WAN_SIZE_MIB=100 runs the real grid's size (BENCHMARKS.md). The
	// floors are what is met (a little below, for margin; the lossy cases
	// vary by about ±0.07 between runs, as goroutine scheduling inside the
	// bubble changes which datagrams the seeded loss hits, and 10 ms/5%
	// falls to 0.65 when its first chunk needs a second retransmission:
	// first byte 417 ms instead of 73 ms; the old transport got 0.52). Verified
	// streaming costs the 60 ms case its 0.90: the top block of the hash
	// tree must arrive before the first chunk can be checked, one more
	// round trip on a 1.1 s transfer (first byte 120 ms instead of 71 ms).
	size := 32 << 20
	if v, err := strconv.Atoi(os.Getenv("WAN_SIZE_MIB")); err == nil && v > 0 {
		size = v << 20
	}
	cases := []wanCase{
		{rtt: 60 * time.Millisecond, size: size, minShare: 0.82, maxRedundant: 0.03},
		{rtt: 60 * time.Millisecond, loss: 0.01, size: size, minShare: 0.60, maxRedundant: 0.03},
		{rtt: 200 * time.Millisecond, loss: 0.01, size: size, minShare: 0.27, maxRedundant: 0.03},
		{rtt: 10 * time.Millisecond, loss: 0.05, size: size, minShare: 0.60, maxRedundant: 0.03},
	}
	for _, c := range cases {
		t.Run(c.String(), func(t *testing.T) {
			r := runWAN(t, c)[0]
			t.Logf("%v: %v", c, r)
			if r.share < c.minShare {
				t.Errorf("%v: %.2f of the links' payload capacity, want at least %.2f", c, r.share, c.minShare)
			}
			if r.redundant > c.maxRedundant {
				t.Errorf("%v: %.1f%% redundant bytes, want at most %.0f%%", c, 100*r.redundant, 100*c.maxRedundant)
			}
		})
	}
}
