package gateway

import (
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/pool"
)

// handshakeAs runs a handshake with the key pair static for instance and
// returns the server's session, or nil if the gateway did not answer the
// AUTH.
func handshakeAs(t *testing.T, c *client, key *auth.Key, static auth.StaticKey, instance uint64) *auth.Session {
	t.Helper()
	in := newInitiatorAs(t, key, static, instance, auth.DefaultLimits)
	c.send(in.Hello(nil))
	a, err := in.HandleChallenge(c.recv(2*time.Second), nil)
	if err != nil {
		t.Fatalf("challenge: %v", err)
	}
	c.send(a)
	w := c.recv(500 * time.Millisecond)
	if w == nil {
		return nil
	}
	s, _, err := in.HandleWelcome(w, time.Now())
	if err != nil {
		t.Fatalf("welcome: %v", err)
	}
	return s
}

// heartbeat sends a HEARTBEAT naming the server name and waits for its
// acknowledgement; false if none came.
func heartbeat(t *testing.T, c *client, s *auth.Session, name string) bool {
	t.Helper()
	hb := fschunk.Heartbeat{Seq: 1, Name: name}
	c.send(seal(t, s, fschunk.TypeHeartbeat, hb.Append(nil)))
	for {
		b := c.recv(500 * time.Millisecond)
		if b == nil {
			return false
		}
		if h, _, err := s.Open(b, time.Now()); err == nil && h.Type == fschunk.TypeHeartbeatAck {
			return true
		}
	}
}

// TestStolenIdentity: a server with a valid, listed key of its own claims
// another server's identity: its instance (sent in the clear in every
// HELLO) and its name. The gateway refuses the handshake for the instance
// (counted, no WELCOME), keeps the real server's session untouched, and
// names every server as its own key's entry in the allowed list says,
// whatever name it gives itself.
func TestStolenIdentity(t *testing.T) {
	key := newKey(t)
	mallory := auth.GenerateStaticKey()
	g, addr := startGWWith(t, Config{Key: key, Allowed: Allowed{testSrv.Public(): "alice", mallory.Public(): "mallory"}})
	const instance = 0xa11ce
	alice := newClient(t, addr)
	as := handshakeAs(t, alice, key, testSrv, instance)
	if as == nil || !heartbeat(t, alice, as, "alice") {
		t.Fatal("the real server did not register")
	}

	m := newClient(t, addr)
	if s := handshakeAs(t, m, key, mallory, instance); s != nil {
		t.Fatal("a handshake claiming another key's instance was answered")
	}
	if st := g.Stats(); st.DropIdentity != 1 || st.Handshakes != 1 {
		t.Fatalf("identity drops %d, handshakes %d; want 1 and 1", st.DropIdentity, st.Handshakes)
	}
	if k, _ := g.serverKey(pool.ServerID(instance)); k != testSrv.Public() {
		t.Fatalf("instance now owned by %s", k.Short())
	}
	// The real server carries on.
	if !heartbeat(t, alice, as, "alice") {
		t.Fatal("the real server's session was disturbed")
	}

	// Under its own instance, mallory is admitted, but calling itself
	// "alice" does not make it alice.
	ms := handshakeAs(t, m, key, mallory, 0xbad)
	if ms == nil || !heartbeat(t, m, ms, "alice") {
		t.Fatal("mallory not admitted under its own instance")
	}
	names := map[string]string{}
	for _, s := range g.Pool().Servers() {
		names[s.Name] = s.Key
	}
	if names["alice"] != testSrv.Public().Short() || names["mallory"] != mallory.Public().Short() || len(names) != 2 {
		t.Fatalf("servers by name: %v; want alice → %s, mallory → %s", names, testSrv.Public().Short(), mallory.Public().Short())
	}
}

// TestRevocation: removing a key from the allowed list ends that
// server's session at once (GOODBYE, evicted, its next handshakes
// refused), and leaves the other servers' sessions alone.
func TestRevocation(t *testing.T) {
	key := newKey(t)
	other := auth.GenerateStaticKey()
	g, addr := startGWWith(t, Config{Key: key, Allowed: Allowed{testSrv.Public(): "a", other.Public(): "b"}})
	ca, cb := newClient(t, addr), newClient(t, addr)
	sa, sb := handshakeAs(t, ca, key, testSrv, 1), handshakeAs(t, cb, key, other, 2)
	if sa == nil || sb == nil || !heartbeat(t, ca, sa, "") || !heartbeat(t, cb, sb, "") {
		t.Fatal("servers did not register")
	}
	if n := g.SetAllowed(Allowed{testSrv.Public(): "a"}); n != 1 {
		t.Fatalf("%d servers revoked, want 1", n)
	}
	// b hears GOODBYE on its session.
	bye := cb.recv(time.Second)
	if bye == nil {
		t.Fatal("no GOODBYE for the revoked server")
	}
	if h, _, err := sb.Open(bye, time.Now()); err != nil || h.Type != fschunk.TypeGoodbye {
		t.Fatalf("revoked server got %v, %v; want GOODBYE", h.Type, err)
	}
	if g.Pool().Has(pool.ServerID(2)) || !g.Pool().Has(pool.ServerID(1)) {
		t.Fatal("pool: want a kept, b gone")
	}
	// b's session is gone: its heartbeats are not acknowledged; a's are.
	if heartbeat(t, cb, sb, "") {
		t.Fatal("the revoked session still answered")
	}
	if !heartbeat(t, ca, sa, "") {
		t.Fatal("the other server's session was disturbed")
	}
	// And b cannot come back.
	if s := handshakeAs(t, cb, key, other, 3); s != nil {
		t.Fatal("a revoked key completed a handshake")
	}
	if st := g.Stats(); st.Revoked != 1 || st.DropUnlisted != 1 {
		t.Fatalf("revoked %d, unlisted drops %d; want 1 and 1", st.Revoked, st.DropUnlisted)
	}
}

// TestGatewaySetStatics: the gateway's key pair changes without a
// restart: a server that knows only the next key is answered once the
// gateway holds it, and sessions made under the old key continue.
func TestGatewaySetStatics(t *testing.T) {
	key := newKey(t)
	g, addr := startGWWith(t, Config{Key: key})
	c := newClient(t, addr)
	s := handshakeAs(t, c, key, testSrv, 1)
	if s == nil {
		t.Fatal("no session")
	}
	next := auth.GenerateStaticKey()
	in, err := auth.NewInitiator(key, testSrv, []auth.PublicKey{next.Public()}, 2, auth.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	c2 := newClient(t, addr)
	c2.send(in.Hello(nil))
	if b := c2.recv(300 * time.Millisecond); b != nil {
		t.Fatal("a HELLO to a key the gateway does not hold was answered")
	}
	if err := g.SetStatics(next, auth.StaticKey{}); err != nil {
		t.Fatal(err)
	}
	c2.send(in.Hello(nil))
	a, err := in.HandleChallenge(c2.recv(2*time.Second), nil)
	if err != nil {
		t.Fatalf("challenge under the next key: %v", err)
	}
	c2.send(a)
	if _, _, err := in.HandleWelcome(c2.recv(2*time.Second), time.Now()); err != nil {
		t.Fatalf("welcome under the next key: %v", err)
	}
	if !heartbeat(t, c, s, "") {
		t.Fatal("the session made under the old key was disturbed")
	}
}
