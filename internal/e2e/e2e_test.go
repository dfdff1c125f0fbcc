package e2e

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/fastfile/fschunk/internal/faultconn"
	"github.com/fastfile/fschunk/internal/fetch"
	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/simnet"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const chunk = 128 << 10

// boundaryFiles has sizes at every edge: empty, one byte, one datagram
// payload −1/0/+1 (at 1452-byte datagrams), one chunk −1/0/+1, several MiB.
func boundaryFiles() map[string][]byte {
	seg := fschunk.DefaultDatagramSize - fschunk.DataOverhead
	files := map[string][]byte{}
	for _, n := range []int{0, 1, seg - 1, seg, seg + 1, chunk - 1, chunk, chunk + 1, 3<<20 + 7} {
		files[fmt.Sprintf("sizes/%d.bin", n)] = randBytes(n)
	}
	files["dir/with space/ünï.txt"] = []byte("hello\n")
	return files
}

func TestDownloadsBoundarySizes(t *testing.T) {
	for _, dg := range []int{fschunk.DefaultDatagramSize, 0} {
		t.Run(fmt.Sprintf("datagram=%d", dg), func(t *testing.T) {
			e := newEnv(t, boundaryFiles(), envOpts{datagram: dg})
			for i := 0; i < 3; i++ {
				e.addServer(nil)
			}
			e.waitHolders(3)
			for p := range e.files {
				e.get(p)
			}
		})
	}
}

// TestLossyNetwork downloads through links that lose, duplicate, reorder,
// corrupt and delay datagrams, in virtual time on the in-memory network:
// each case is the same every run (seeded links), and a long delay costs
// no wall-clock time.
func TestLossyNetwork(t *testing.T) {
	files := map[string][]byte{"big.bin": randBytes(6<<20 + 123), "small.txt": randBytes(5000)}
	cases := []struct {
		name string
		link simnet.LinkConfig
	}{
		{"loss 5%", simnet.LinkConfig{Loss: 0.05}},
		{"loss 20%", simnet.LinkConfig{Loss: 0.20}},
		{"duplication and reordering", simnet.LinkConfig{Duplicate: 0.1, Reorder: 0.1}},
		{"corruption", simnet.LinkConfig{Corrupt: 0.05}},
		{"delay and jitter", simnet.LinkConfig{Delay: 2 * time.Millisecond, Jitter: 2 * time.Millisecond, Loss: 0.02}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newSimFleet(t, files, fetch.Config{})
				for s := range 3 {
					up, down := c.link, c.link
					up.Seed, down.Seed = uint64(100*i+2*s+1), uint64(100*i+2*s+2)
					f.addServer(up, down)
				}
				f.waitHolders(3)
				f.get("big.bin")
				f.get("small.txt")
				// The faults were really injected: a case that passes
				// over an ideal network proves nothing.
				ls := f.linkStats()
				for _, x := range []struct {
					on   bool
					n    uint64
					what string
				}{{c.link.Loss > 0, ls.LossDrops, "lost"}, {c.link.Duplicate > 0, ls.Duplicated, "duplicated"},
					{c.link.Reorder > 0, ls.Reordered, "reordered"}, {c.link.Corrupt > 0, ls.Corrupted, "corrupted"}} {
					if x.on && x.n == 0 {
						t.Errorf("no datagram %s", x.what)
					}
				}
				st := f.gw.Engine().Stats()
				if c.link.Loss >= 0.05 && st.Retransmits == 0 {
					t.Errorf("%v loss and no retransmission", c.link.Loss)
				}
				if c.link.Corrupt > 0 && f.gw.Stats().DropAuth == 0 {
					t.Error("corruption but no datagram failed authentication")
				}
			})
		})
	}
}

// TestServerKilledMidDownload: one of three servers crashes (no goodbye)
// halfway; the download completes from the other two.
func TestServerKilledMidDownload(t *testing.T) {
	files := map[string][]byte{"big.bin": randBytes(16 << 20)}
	e := newEnv(t, files, envOpts{fetch: smallWindow()})
	var victims []*faultconn.Conn
	for s := 0; s < 3; s++ {
		e.addServer(func(pc net.PacketConn) net.PacketConn {
			fc := faultconn.Wrap(pc, faultconn.Config{}, faultconn.Config{})
			victims = append(victims, fc)
			return fc
		})
	}
	e.waitHolders(3)
	resp, err := http.Get(e.url("big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	half := make([]byte, 8<<20)
	if _, err := io.ReadFull(resp.Body, half); err != nil {
		t.Fatal(err)
	}
	victims[1].SetBlackhole(true) // crashed: no answers, no goodbye
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("after the crash: %v", err)
	}
	if got := append(half, rest...); string(got) != string(files["big.bin"]) {
		t.Fatal("content differs")
	}
	e.waitFor("eviction of the dead server", func() bool { return len(e.gw.Pool().Servers()) == 2 })
}

// TestServerJoinsMidDownload: a download that started with one server
// uses a second one that joins while it runs.
func TestServerJoinsMidDownload(t *testing.T) {
	files := map[string][]byte{"big.bin": randBytes(24 << 20)}
	e := newEnv(t, files, envOpts{fetch: smallWindow()})
	slow := faultconn.Config{Delay: 3 * time.Millisecond}
	e.addServer(func(pc net.PacketConn) net.PacketConn { return faultconn.Wrap(pc, slow, faultconn.Config{}) })
	e.waitHolders(1)
	resp, err := http.Get(e.url("big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	head := make([]byte, 1<<20)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatal(err)
	}
	e.addServer(nil)
	e.waitHolders(2) // the client pauses meanwhile; the small window holds the engine
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got := append(head, rest...); string(got) != string(files["big.bin"]) {
		t.Fatal("content differs")
	}
	used := 0
	for _, l := range e.gw.Engine().Links() {
		if l.Delivered > 0 {
			used++
		}
	}
	if used != 2 {
		t.Fatalf("%d servers delivered data, want 2", used)
	}
}

// TestGatewayRestart: the gateway process restarts (same UDP port, new
// keys, no memory); servers re-register on their own and downloads work.
func TestGatewayRestart(t *testing.T) {
	files := map[string][]byte{"a.bin": randBytes(2 << 20)}
	e := newEnv(t, files, envOpts{})
	for s := 0; s < 3; s++ {
		e.addServer(nil)
	}
	e.waitHolders(3)
	e.get("a.bin")
	addr := e.udp
	e.gwStop()
	e.startGateway(envOpts{}, addr)
	e.waitHolders(3)
	e.get("a.bin")
}

// TestStatementScenario: three servers with the same files; two clients
// download a large and a medium file at once, and the same file twice.
func TestStatementScenario(t *testing.T) {
	files := map[string][]byte{"report.pdf": randBytes(3 << 20), "video.mp4": randBytes(20 << 20)}
	e := newEnv(t, files, envOpts{})
	for s := 0; s < 3; s++ {
		e.addServer(nil)
	}
	e.waitHolders(3)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for _, p := range []string{"report.pdf", "video.mp4", "video.mp4", "report.pdf"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(e.url(p))
			if err != nil {
				errs <- err.Error()
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil || string(b) != string(files[p]) {
				errs <- fmt.Sprintf("%s: %v, %d bytes", p, err, len(b))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for s := range errs {
		t.Error(s)
	}
}

// TestRandomRanges: random byte ranges against the file read directly.
func TestRandomRanges(t *testing.T) {
	files := map[string][]byte{"f.bin": randBytes(2<<20 + 333)}
	e := newEnv(t, files, envOpts{})
	for s := 0; s < 2; s++ {
		e.addServer(nil)
	}
	e.waitHolders(2)
	r := rand.New(rand.NewPCG(5, 6))
	orig := files["f.bin"]
	client := &http.Client{}
	for i := 0; i < 60; i++ {
		lo := r.IntN(len(orig))
		hi := lo + r.IntN(len(orig)-lo)
		req, _ := http.NewRequest("GET", e.url("f.bin"), nil)
		req.Header.Set("Range", "bytes="+strconv.Itoa(lo)+"-"+strconv.Itoa(hi))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 206 || string(b) != string(orig[lo:hi+1]) {
			t.Fatalf("range %d-%d: %v %s, %d bytes", lo, hi, err, resp.Status, len(b))
		}
	}
}

// TestHTTPStatuses: unknown path, known path without holders, methods.
func TestHTTPStatuses(t *testing.T) {
	files := map[string][]byte{"a.txt": []byte("abc")}
	e := newEnv(t, files, envOpts{})
	s := e.addServer(nil)
	e.waitHolders(1)
	check := func(method, p string, want int) {
		t.Helper()
		req, _ := http.NewRequest(method, e.url(p), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d, want %d", method, p, resp.StatusCode, want)
		}
	}
	check("GET", "a.txt", 200)
	check("HEAD", "a.txt", 200)
	check("POST", "a.txt", 405)
	check("GET", "nope.txt", 404)
	s.Stop() // goodbye: evicted at once
	e.waitFor("eviction", func() bool { return len(e.gw.Pool().Servers()) == 0 })
	check("GET", "a.txt", 503)
}

// TestClientDisconnects: a client that goes away mid-download leaves no
// request, reader or goroutine behind (goleak in TestMain checks the last).
func TestClientDisconnects(t *testing.T) {
	files := map[string][]byte{"big.bin": randBytes(32 << 20)}
	e := newEnv(t, files, envOpts{})
	for s := 0; s < 2; s++ {
		e.addServer(nil)
	}
	e.waitHolders(2)
	for i := 0; i < 5; i++ {
		resp, err := http.Get(e.url("big.bin"))
		if err != nil {
			t.Fatal(err)
		}
		io.ReadFull(resp.Body, make([]byte, 1<<20))
		resp.Body.Close()
	}
	e.waitFor("readers to close", func() bool { return e.gw.Engine().Stats().Active == 0 })
}

func smallWindow() fetch.Config { return fetch.Config{Window: 2 << 20} }

// TestManyClients: 200 clients at once over a mix of sizes, the same
// files fetched by many clients (no state keyed by file name); every body
// is compared.
func TestManyClients(t *testing.T) {
	files := map[string][]byte{}
	for i, n := range []int{0, 100, 4 << 10, 70 << 10, 300 << 10, 2 << 20} {
		files[fmt.Sprintf("mix/%d.bin", i)] = randBytes(n)
	}
	e := newEnv(t, files, envOpts{fetch: fetch.Config{Window: 1 << 20}})
	for s := 0; s < 3; s++ {
		e.addServer(nil)
	}
	e.waitHolders(3)
	names := make([]string, 0, len(files))
	for p := range files {
		names = append(names, p)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 200}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	const clients = 200
	var wg sync.WaitGroup
	errs := make(chan string, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 3; j++ {
				p := names[(i+j)%len(names)]
				resp, err := client.Get(e.url(p))
				if err != nil {
					errs <- err.Error()
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || string(b) != string(files[p]) {
					errs <- fmt.Sprintf("%s: %v %d, %d bytes", p, err, resp.StatusCode, len(b))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for s := range errs {
		t.Error(s)
	}
	e.waitFor("readers to close", func() bool { return e.gw.Engine().Stats().Active == 0 })
}
