package e2e

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/gateway"
	"github.com/fastfile/fschunk/internal/transport"
)

// The abuse cases of a faulty or malicious key holder (a server with the
// key that lies), and of handshake floods. Counts are judged; times are
// only printed.

// udpKeyHolder is a registered server that the test drives by hand: it
// sends whatever the test wants, sealed on its session.
type udpKeyHolder struct {
	t    *testing.T
	c    *net.UDPConn
	gw   netip.AddrPort
	sess *auth.Session
}

func udpNewKeyHolder(t *testing.T, e *env, instance uint64) *udpKeyHolder {
	t.Helper()
	c, err := transport.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ap, err := netip.ParseAddrPort(e.udp)
	if err != nil {
		t.Fatal(err)
	}
	k := &udpKeyHolder{t: t, c: c, gw: ap}
	in := e.keyHolder(instance)
	k.send(in.Hello(nil))
	a, err := in.HandleChallenge(k.recv(5*time.Second), nil)
	if err != nil {
		t.Fatalf("key holder: challenge: %v", err)
	}
	k.send(a)
	s, _, err := in.HandleWelcome(k.recv(5*time.Second), time.Now())
	if err != nil {
		t.Fatalf("key holder: welcome: %v", err)
	}
	k.sess = s
	return k
}

func (k *udpKeyHolder) send(pkt []byte) {
	k.t.Helper()
	if _, err := k.c.WriteToUDPAddrPort(pkt, k.gw); err != nil {
		k.t.Fatal(err)
	}
}

// recv returns the next datagram, nil after wait.
func (k *udpKeyHolder) recv(wait time.Duration) []byte {
	buf := make([]byte, 64<<10)
	k.c.SetReadDeadline(time.Now().Add(wait))
	n, _, err := k.c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

// sendSealed seals body as a message of type typ on the session.
func (k *udpKeyHolder) sendSealed(typ fschunk.Type, body []byte) {
	k.t.Helper()
	b := fschunk.AppendHeader(nil, fschunk.Header{Type: typ})
	pkt, err := k.sess.Seal(append(b, body...), time.Now())
	if err != nil {
		k.t.Fatal(err)
	}
	k.send(pkt)
}

// TestAbuseUDPSizeLie: a key holder announces a file of 2⁶³ − 1 bytes and
// an anonymous client asks for its last byte (Range: bytes=-1). The chunk
// arithmetic once overflowed there and the engine panicked with its lock
// held: every later download hung and every server was lost. The gateway
// must refuse the size and go on serving everyone else.
func TestAbuseUDPSizeLie(t *testing.T) {
	files := map[string][]byte{"honest.bin": randBytes(3<<20 + 11)}
	u := udpAbuseNewEnv(t, files, 2)
	liar := udpNewKeyHolder(t, u.env, 0x6c696172)
	var h [fschunk.HashSize]byte
	rand.Read(h[:])
	for _, size := range []int64{math.MaxInt64, fschunk.MaxFileSize + 1} {
		before := u.gw.Stats()
		page := fschunk.CatalogPage{Gen: 1, Pages: 1, Entries: []fschunk.Entry{{Hash: h, Size: size, ModTime: time.Unix(1, 0).UTC(), Path: "lie.bin"}}}
		liar.sendSealed(fschunk.TypeCatalogPage, page.Append(nil))
		u.waitFor("the lying page handled", func() bool { return u.gw.Stats().Received > before.Received })
	}
	c := &http.Client{Timeout: 10 * time.Second}
	req, _ := http.NewRequest(http.MethodGet, u.url("lie.bin"), nil)
	req.Header.Set("Range", "bytes=-1")
	status, err := func() (int, error) {
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, err
	}()
	if err != nil {
		t.Fatalf("GET lie.bin, Range: bytes=-1: %v\n%s", err, u.diagnose())
	}
	if status != http.StatusNotFound {
		t.Errorf("GET lie.bin: status %d, want 404 (the size is refused, the file never listed)", status)
	}
	// Everyone else is still served, and the liar's session still works
	// (its page was dropped, not its session).
	if err := fetchExact(c, u.url("honest.bin"), files["honest.bin"]); err != nil {
		t.Fatalf("after the size lie: %v\n%s", err, u.diagnose())
	}
	st := u.gw.Stats()
	if st.Panics != 0 {
		t.Errorf("%d handler panics", st.Panics)
	}
	t.Logf("size lie: catalog entries of %d and %d bytes refused as garbage (MaxFileSize %d); GET Range: bytes=-1 → %d; honest download byte-exact; handler panics %d",
		int64(math.MaxInt64), int64(fschunk.MaxFileSize+1), int64(fschunk.MaxFileSize), status, st.Panics)
}

// TestAbuseUDPHelloFlood: valid HELLOs (a captured one, replayed) flooded
// at the gateway as fast as a socket can send while a client downloads
// from three servers. The handshake worker answers at most
// HandshakeLimits.Rate of them, off the receive loop, and under load
// limits the flooding address; a server that registers during the flood
// (from another address) gets in. Only counts are judged.
//
// Printed: download rates calm, while the same flood goes to a socket
// that only reads and discards (what the flood costs the machine: its
// sender, the kernel, one reader), and while it goes to the gateway,
// alternated in one run; the ratios are issue 11's figure (target: the
// flood cuts the download by at most 20%).
func TestAbuseUDPHelloFlood(t *testing.T) {
	size := 8 << 20
	if n, err := strconv.Atoi(os.Getenv("E2E_FLOOD_MIB")); err == nil && n > 0 {
		size = n << 20
	}
	files := map[string][]byte{"flood.bin": randBytes(size)}
	e := newEnv(t, files, envOpts{})
	for range 3 {
		e.addServer(nil)
	}
	e.waitHolders(3)
	hello := e.keyHolder(0x666c6f6f64).Hello(nil)
	gw, err := netip.ParseAddrPort(e.udp)
	if err != nil {
		t.Fatal(err)
	}
	// The flood comes from 127.0.0.2, the servers from 127.0.0.1: two
	// source addresses, as two hosts would be.
	flooder, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Skipf("no second loopback address: %v", err)
	}
	defer flooder.Close()
	sink, err := transport.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := sink.ReadFromUDPAddrPort(buf); errors.Is(err, net.ErrClosed) {
				return
			}
		}
	}()
	sinkAddr, _ := transport.AddrPort(sink.LocalAddr())

	download := func() (float64, error) {
		start := time.Now()
		if err := fetchExact(http.DefaultClient, e.url("flood.bin"), files["flood.bin"]); err != nil {
			return 0, err
		}
		return float64(size) / (1 << 20) / time.Since(start).Seconds(), nil
	}
	// flood sends until stop is closed; wait returns how many were sent.
	flood := func(to netip.AddrPort, stop <-chan struct{}) (wait func() uint64) {
		done := make(chan uint64)
		go func() {
			var n uint64
			for {
				select {
				case <-stop:
					done <- n
					return
				default:
				}
				if _, err := flooder.WriteToUDPAddrPort(hello, to); err == nil {
					n++
				}
			}
		}()
		return func() uint64 { return <-done }
	}

	st0 := e.gw.Stats()
	var calm, toSink, toGw []float64
	var floodSent uint64
	var floodTime time.Duration
	joined := false
	rounds := 3
	if n, err := strconv.Atoi(os.Getenv("E2E_FLOOD_ROUNDS")); err == nil && n > 0 {
		rounds = n // for a measurement: the machine's noise needs more
	}
	for round := range rounds {
		r, err := download()
		if err != nil {
			t.Fatalf("calm download %d: %v", round, err)
		}
		calm = append(calm, r)

		stop := make(chan struct{})
		wait := flood(sinkAddr, stop)
		r, err = download()
		close(stop)
		wait()
		if err != nil {
			t.Fatalf("download %d, flood to a sink: %v", round, err)
		}
		toSink = append(toSink, r)

		stop = make(chan struct{})
		start := time.Now()
		wait = flood(gw, stop)
		r, err = download()
		if round == 0 && err == nil {
			// A server joins under the flood: its AUTH carries a cookie
			// and goes first. Judged by count, not time: a loaded CI
			// machine under the race detector is slow.
			e.addServer(nil)
			deadline := time.Now().Add(90 * time.Second)
			for !joined && time.Now().Before(deadline) {
				f, ok := e.gw.Source().Lookup("flood.bin")
				joined = ok && f.Holders == 4
				time.Sleep(10 * time.Millisecond)
			}
		}
		close(stop)
		floodSent += wait()
		floodTime += time.Since(start)
		if err != nil {
			t.Fatalf("download %d under the flood: %v\n%s", round, err, e.diagnose())
		}
		toGw = append(toGw, r)
	}
	e.waitFor("handshake queue drained", func() bool { st := e.gw.Stats(); return st.HandshakesDone == st.HandshakesQueued })
	st := e.gw.Stats()
	d := func(a, b uint64) uint64 { return a - b }
	challenges := d(st.Challenges, st0.Challenges)
	// Each flood phase starts with a full bucket (the calm phases refill
	// it) and leaves up to a queue's worth (1,024 HELLOs) to be answered
	// after it: the bound counts both per phase, and the rate over the
	// phases' time.
	const helloQueue = 1024
	bound := uint64(rounds*(gateway.DefaultHandshakeBurst+helloQueue)) + uint64(gateway.DefaultHandshakeRate*floodTime.Seconds()) + 1
	if challenges > bound {
		t.Errorf("%d CHALLENGEs in %v of flood: above the handshake rate bound %d", challenges, floodTime, bound)
	}
	if !joined {
		t.Error("no server joined during the flood")
	}
	if st.Panics != 0 {
		t.Errorf("%d panics", st.Panics)
	}
	med := func(v []float64) float64 { v = append([]float64(nil), v...); slices.Sort(v); return v[len(v)/2] }
	t.Logf("HELLO flood: %d valid HELLOs sent to the gateway in %v (%.0f/s) from one socket; gateway: %d queued, %d dropped (queue full), %d dropped (per-source limit under load), %d CHALLENGEs (bound %d); a server joined during the flood: %v",
		floodSent, floodTime.Round(time.Millisecond), float64(floodSent)/floodTime.Seconds(),
		d(st.HandshakesQueued, st0.HandshakesQueued), d(st.DropHandshakeQueue, st0.DropHandshakeQueue), d(st.DropHandshakeRate, st0.DropHandshakeRate),
		challenges, bound, joined)
	t.Logf("HELLO flood: %d MiB download from 3 servers, MiB/s (alternated, %d rounds): calm %.0f; flood to a sink %.0f; flood to the gateway %.0f. Median ratios: flood to the gateway / calm %.2f, flood to a sink / calm %.2f, gateway / sink %.2f",
		size>>20, rounds, calm, toSink, toGw, med(toGw)/med(calm), med(toSink)/med(calm), med(toGw)/med(toSink))
}

// TestAbuseUDPCatalogFlood: a key holder sends the pages of a catalog
// that never completes (65,536 pages announced), each as large as its
// datagram size allows. The gateway once held every page it was sent (up
// to 4 GiB); now it holds at most its per-server budget, then refuses
// the catalog, and keeps serving.
func TestAbuseUDPCatalogFlood(t *testing.T) {
	files := map[string][]byte{"honest.bin": randBytes(1<<20 + 3)}
	e := newEnv(t, files, envOpts{})
	e.addServer(nil)
	e.waitHolders(1)
	k := udpNewKeyHolder(t, e, 0x63617466)
	budget := int64(gateway.DefaultCatalogBytes)
	// Pages of 31 entries with 1000-byte paths: 32,550 bytes of entries,
	// within the 32,768-byte datagrams of a loopback server.
	page := func(i int) []byte {
		es := make([]fschunk.Entry, 31)
		for j := range es {
			p := fmt.Sprintf("flood/%05d/%02d/", i, j)
			es[j] = fschunk.Entry{Path: p + strings.Repeat("x", 1000-len(p)), Size: 1, ModTime: time.Unix(1, 0).UTC()}
		}
		return (&fschunk.CatalogPage{Gen: 1, Page: uint32(i), Pages: gateway.MaxCatalogPages, Entries: es}).Append(nil)
	}
	pageBytes := int64(31 * (fschunk.CatalogEntryBase + 1000))
	// A page is refused when the gateway counts it so; a missing ACK
	// alone proves nothing on a loaded machine, where one can take
	// longer than any fixed wait.
	// The key holder sends no heartbeats: once the gateway has refused
	// its catalog it may also evict it as silent, and its pages are
	// ignored from then on.
	evictions := e.gw.Stats().Evictions
	acked := func() bool {
		refused := e.gw.Stats().CatalogRefused
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			pkt := k.recv(100 * time.Millisecond)
			if pkt == nil {
				if st := e.gw.Stats(); st.CatalogRefused > refused || st.Evictions > evictions {
					return false
				}
				continue
			}
			if h, _, err := k.sess.Open(pkt, time.Now()); err == nil && h.Type == fschunk.TypeCatalogAck {
				return true
			}
		}
		t.Fatalf("a catalog page neither acknowledged nor counted as refused in 30 s: gateway %+v", e.gw.Stats())
		return false
	}
	var held, maxCounted int64
	sent, refusedAt := 0, -1
	for i := 0; i < int(budget/pageBytes)+50; i++ {
		k.sendSealed(fschunk.TypeCatalogPage, page(i))
		sent++
		if acked() {
			held += pageBytes
		} else if refusedAt < 0 {
			refusedAt = i
		}
		maxCounted = max(maxCounted, e.gw.CatalogBytes())
		if refusedAt >= 0 && i >= refusedAt+20 {
			break
		}
	}
	st := e.gw.Stats()
	if refusedAt < 0 {
		t.Fatalf("%d pages (%d MiB) of an unfinished catalog acknowledged: no budget", sent, held>>20)
	}
	if maxCounted > budget {
		t.Errorf("catalog bytes counted reached %d, above the per-server budget %d", maxCounted, budget)
	}
	if held > budget {
		t.Errorf("%d bytes of pages acknowledged, above the per-server budget %d", held, budget)
	}
	if n := e.gw.CatalogBytes(); n > int64(len("honest.bin"))+fschunk.CatalogEntryBase {
		t.Errorf("%d catalog bytes still counted after the refusal (the honest server's catalog is %d)", n, len("honest.bin")+fschunk.CatalogEntryBase)
	}
	e.get("honest.bin")
	t.Logf("catalog flood: %d pages of %d B sent, %d acknowledged (%d MiB) before the catalog was refused at page %d; at most %d MiB counted (budget %d MiB); %d pages refused; honest download byte-exact",
		sent, pageBytes, held/pageBytes, held>>20, refusedAt, maxCounted>>20, budget>>20, st.CatalogRefused)
}
