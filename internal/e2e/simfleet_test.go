package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/demo"
	"github.com/fastfile/fschunk/internal/fetch"
	"github.com/fastfile/fschunk/internal/gateway"
	"github.com/fastfile/fschunk/internal/httpfront"
	"github.com/fastfile/fschunk/internal/simnet"
)

// simFleet is a gateway and FastFileSrv on an in-memory network, each
// server behind its own link: the in-process, virtual-time counterpart of
// env. It must be made inside a testing/synctest bubble, and everything
// in it then runs in virtual time, deterministically for a given seed.
type simFleet struct {
	t       *testing.T
	ctx     context.Context
	key     *auth.Key
	gwKey   auth.StaticKey
	allowed gateway.Allowed
	root    string
	files   map[string][]byte
	net     *simnet.Network
	gw      *gateway.Gateway
	gwHost  *simnet.Host
	hosts   []*simnet.Host
	servers []*demo.Server
}

const simGatewayAddr = "10.0.0.1:8888"

// newSimFleet starts the gateway (behind an ideal link) with files to
// serve; addServer adds the servers. Everything stops when the test ends.
func newSimFleet(t *testing.T, files map[string][]byte, fc fetch.Config) *simFleet {
	t.Helper()
	key, root := newTestKey(t), writeFiles(t, files)
	var err error
	ctx, cancel := context.WithCancel(t.Context())
	f := &simFleet{t: t, ctx: ctx, key: key, gwKey: auth.GenerateStaticKey(), allowed: gateway.Allowed{},
		root: root, files: files, net: simnet.New()}
	gwAddr := netip.MustParseAddrPort(simGatewayAddr)
	if f.gwHost, err = f.net.AddHost(gwAddr.Addr(), simnet.LinkConfig{}, simnet.LinkConfig{}); err != nil {
		t.Fatal(err)
	}
	gc, err := f.gwHost.Listen(gwAddr.Port())
	if err != nil {
		t.Fatal(err)
	}
	if f.gw, err = gateway.New(gateway.Config{Conn: gc, Key: key, Static: f.gwKey, Fetch: fc, Logger: testLogger(t).With("side", "gw")}); err != nil {
		t.Fatal(err)
	}
	gwDone := make(chan struct{})
	go func() { defer close(gwDone); f.gw.Run(ctx) }()
	t.Cleanup(func() {
		for _, s := range f.servers {
			s.Stop()
		}
		cancel()
		<-gwDone
		gc.Close()
	})
	return f
}

// addServer starts a server behind a link of up and down (seen from it).
func (f *simFleet) addServer(up, down simnet.LinkConfig) *simnet.Host {
	f.t.Helper()
	i := len(f.hosts)
	h, err := f.net.AddHost(netip.AddrFrom4([4]byte{10, 0, 1, byte(i + 1)}), up, down)
	if err != nil {
		f.t.Fatal(err)
	}
	sc, err := h.Listen(0)
	if err != nil {
		f.t.Fatal(err)
	}
	name := fmt.Sprintf("srv%d", i+1)
	static := auth.GenerateStaticKey()
	f.allowed[static.Public()] = name
	f.gw.SetAllowed(f.allowed)
	s, err := demo.StartServer(f.ctx, demo.ServerConfig{Gateways: []string{simGatewayAddr}, Root: f.root, Key: f.key,
		Static: static, GatewayKeys: []auth.PublicKey{f.gwKey.Public()}, Conn: sc, NoWatch: true, Logger: testLogger(f.t).With("side", name)}, name)
	if err != nil {
		f.t.Fatal(err)
	}
	f.hosts = append(f.hosts, h)
	f.servers = append(f.servers, s)
	return h
}

// waitHolders waits until every file is offered by n servers. Virtual
// time: the minute costs nothing, and a server that never joins fails
// the test here rather than at go test's timeout.
func (f *simFleet) waitHolders(n int) {
	f.t.Helper()
	src := f.gw.Source()
	by := time.Now().Add(time.Minute)
	for name := range f.files {
		for {
			if fi, ok := src.Lookup(name); ok && fi.Holders >= n {
				break
			}
			if time.Now().After(by) {
				f.t.Fatalf("%s: not offered by %d servers after a virtual minute", name, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// get downloads a file through the gateway's source (the HTTP front's
// path without the HTTP) and checks its content.
func (f *simFleet) get(name string) {
	f.t.Helper()
	src := f.gw.Source()
	fi, ok := src.Lookup(name)
	if !ok {
		f.t.Fatalf("%s: not offered", name)
	}
	content, err := src.Open(f.ctx, fi)
	if err != nil {
		f.t.Fatal(err)
	}
	defer content.Close()
	var b strings.Builder
	if _, err := content.(httpfront.DirectWriter).WriteToN(&b, fi.Size); err != nil {
		f.t.Fatalf("%s: %v", name, err)
	}
	if b.String() != string(f.files[name]) {
		f.t.Fatalf("%s: content differs (%d bytes, want %d)", name, b.Len(), len(f.files[name]))
	}
}

// linkStats sums both directions of every server's link.
func (f *simFleet) linkStats() simnet.LinkStats {
	var s simnet.LinkStats
	for _, h := range f.hosts {
		for _, st := range []simnet.LinkStats{h.Up(), h.Down()} {
			s.Datagrams += st.Datagrams
			s.LossDrops += st.LossDrops
			s.FilterDrops += st.FilterDrops
			s.Duplicated += st.Duplicated
			s.Reordered += st.Reordered
			s.Corrupted += st.Corrupted
		}
	}
	return s
}
