package e2e

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/demo"
)

// TestRevocationMidDownload: a server's key is removed from the allowed
// list while a download reads from it. Its session ends at once (well
// within a heartbeat interval), the download finishes from the two other
// holders, and the other servers are not disturbed.
func TestRevocationMidDownload(t *testing.T) {
	files := map[string][]byte{"big.bin": randBytes(16 << 20)}
	e := newEnv(t, files, envOpts{fetch: smallWindow()})
	var servers []*demo.Server
	for range 3 {
		servers = append(servers, e.addServer(nil))
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
	before := e.gw.Stats()
	start := time.Now()
	e.revoke(servers[1].Key)
	gone := func() bool {
		for _, s := range e.gw.Pool().Servers() {
			if s.Key == servers[1].Key.Short() {
				return false
			}
		}
		return true
	}
	if !gone() {
		t.Fatalf("revoked server still in the pool %v after SetAllowed", time.Since(start))
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("after the revocation: %v", err)
	}
	if got := append(half, rest...); string(got) != string(files["big.bin"]) {
		t.Fatal("content differs")
	}
	// The revoked server tries to come back (the GOODBYE makes it
	// register again) and is refused; the two others stay.
	e.waitFor("the revoked server's handshake refused", func() bool { return e.gw.Stats().DropUnlisted > before.DropUnlisted })
	if n := len(e.gw.Pool().Servers()); n != 2 || !gone() {
		t.Fatalf("%d servers in the pool after the revocation, want the 2 others", n)
	}
	if st := e.gw.Stats(); st.Revoked != before.Revoked+1 || st.Evictions != before.Evictions+1 {
		t.Fatalf("revoked %d evictions %d, want one each", st.Revoked-before.Revoked, st.Evictions-before.Evictions)
	}
	e.get("big.bin")
}

// TestKeyRotationUnderLoad rolls a three-server fleet to new key pairs,
// and the gateway to a new key pair, while clients download without a
// pause, following README's procedure:
//
//  1. the gateway takes a next key pair beside its current one
//     (SetStatics; httpgw -next-private-key and SIGHUP);
//  2. one server at a time: its new public key joins the allowed list
//     under its name, a server with the new key pair (knowing both gateway
//     keys) starts, the old one stops (GOODBYE), its old key leaves the
//     list;
//  3. the gateway drops its old key pair (the next becomes the current).
//
// Not one request may fail.
func TestKeyRotationUnderLoad(t *testing.T) {
	files := map[string][]byte{"a.bin": randBytes(4 << 20), "b.bin": randBytes(3 << 20), "c.txt": randBytes(100 << 10)}
	e := newEnv(t, files, envOpts{fetch: smallWindow()})
	var fleet []*demo.Server
	for range 3 {
		fleet = append(fleet, e.addServer(nil))
	}
	e.waitHolders(3)

	var ok, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range 3 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p := []string{"a.bin", "b.bin", "c.txt"}[(c+i)%3]
				if err := fetchExact(http.DefaultClient, e.url(p), files[p]); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
				} else {
					ok.Add(1)
				}
			}
		})
	}
	// Some load before the roll starts.
	e.waitFor("downloads under way", func() bool { return ok.Load() >= 3 })

	oldGW := e.gwKey
	newGW := auth.GenerateStaticKey()
	if err := e.gw.SetStatics(oldGW, newGW); err != nil {
		t.Fatal(err)
	}
	for i, old := range fleet {
		name := fmt.Sprintf("srv%d", i+1)
		cfg := e.serverConfig(name) // a new key pair, allowed under the same name
		cfg.GatewayKeys = []auth.PublicKey{oldGW.Public(), newGW.Public()}
		s, err := demo.StartServer(t.Context(), cfg, name)
		if err != nil {
			t.Fatal(err)
		}
		e.mu.Lock()
		e.servers = append(e.servers, s)
		e.mu.Unlock()
		e.waitHolders(4)
		if err := old.Stop(); err != nil {
			t.Errorf("stopping the old %s: %v", name, err)
		}
		e.mu.Lock()
		for j, x := range e.servers {
			if x == old {
				e.servers = append(e.servers[:j], e.servers[j+1:]...)
				break
			}
		}
		e.mu.Unlock()
		e.revoke(old.Key)
		e.waitFor("the old "+name+" gone", func() bool { return len(e.gw.Pool().Servers()) == 3 })
		n := ok.Load()
		e.waitFor("downloads after rolling "+name, func() bool { return ok.Load() >= n+2 })
	}
	if err := e.gw.SetStatics(newGW, auth.StaticKey{}); err != nil {
		t.Fatal(err)
	}
	e.gwKey = newGW
	// A server that knows only the new gateway key joins.
	cfg := e.serverConfig("srv4")
	cfg.GatewayKeys = []auth.PublicKey{newGW.Public()}
	s, err := demo.StartServer(t.Context(), cfg, "srv4")
	if err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	e.servers = append(e.servers, s)
	e.mu.Unlock()
	e.waitHolders(4)
	n := ok.Load()
	e.waitFor("downloads after the gateway's rotation", func() bool { return ok.Load() >= n+2 })
	close(stop)
	wg.Wait()

	t.Logf("rotation under load: %d requests, %d failed; gateway handshakes %d", ok.Load()+failed.Load(), failed.Load(), e.gw.Stats().Handshakes)
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during the rotation; first: %v", failed.Load(), ok.Load()+failed.Load(), *firstErr.Load())
	}
	for _, si := range e.gw.Pool().Servers() {
		if si.Key == "" || si.Name == "" {
			t.Errorf("server %v without identity: key %q name %q", si.ID, si.Key, si.Name)
		}
	}
}
