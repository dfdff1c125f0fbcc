package fileserver

import (
	"net"
	"testing"

	"github.com/fastfile/fschunk/internal/fschunk"
)

// TestVersionMismatch: datagrams of another protocol version (a gateway
// not yet upgraded) are dropped and counted as such, never answered.
func TestVersionMismatch(t *testing.T) {
	f := newFixture(t, fixtureOpts{files: map[string][]byte{"a": []byte("abc")}})
	f.waitSynced(f.gw)
	before := f.srv.Stats().Dropped
	rogue, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Close()
	dst := f.conn.LocalAddr().(*net.UDPAddr)
	hello := mustInitiator(t, f.key, 1).Hello(nil)
	for _, v := range []byte{1, 2, fschunk.Version + 100} {
		b := append([]byte(nil), hello...)
		b[0] = v
		if _, err := rogue.WriteToUDP(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "three version drops", func() bool { return f.srv.Stats().Dropped.Version-before.Version == 3 })
	if d := f.srv.Stats().Dropped; d.Garbage-before.Garbage != 3 {
		t.Errorf("garbage drops %d, want 3 (a version drop is garbage too)", d.Garbage-before.Garbage)
	}
}
