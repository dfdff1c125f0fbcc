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
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/fschunk"
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

func udpNewKeyHolder(t *testing.T, key *auth.Key, gw string, instance uint64) *udpKeyHolder {
	t.Helper()
	c, err := transport.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ap, err := netip.ParseAddrPort(gw)
	if err != nil {
		t.Fatal(err)
	}
	k := &udpKeyHolder{t: t, c: c, gw: ap}
	in := auth.NewInitiator(key, instance, auth.DefaultLimits)
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
	liar := udpNewKeyHolder(t, u.key, u.udp, 0x6c696172)
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

var _ = errors.New
var _ = fmt.Sprintf
