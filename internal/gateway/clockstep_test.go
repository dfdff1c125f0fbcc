package gateway

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/fschunk"
)

// TestAuthReplayAfterClockStep: a server registers; its session ends
// (GOODBYE); the gateway's memory of used nonces expires (12 s); then the
// wall clock steps back by as much and the captured AUTH is replayed from
// the server's address. When cookies were timed by the wall clock, the
// cookie looked fresh again, a second session was made with the same keys
// and its WELCOME was sealed again at counter 0: AES-GCM nonce reuse. Now
// cookies are timed by the gateway's monotonic clock: the replay is
// dropped as a stale cookie. (Even if it were accepted, the gateway random
// value in the WELCOME would give the second session new keys;
// auth.TestReplayedAuthNewKeys checks that.)
//
// The test runs in virtual time: Config.Now is the gateway's wall clock,
// stepped back here; the monotonic clock (time.Now in the bubble) is not.
func TestAuthReplayAfterClockStep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var step atomic.Int64 // the wall clock's offset
		wall := func() time.Time { return time.Now().Add(time.Duration(step.Load())) }
		mn := newMemNet()
		gc, sc := mn.listen("10.0.0.1:8888"), mn.listen("10.0.0.2:4000")
		key := newKey(t)
		g, err := New(Config{Conn: gc, Key: key, Static: testGW, Allowed: testAllowed(), Now: wall})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); g.Run(ctx) }()
		defer func() { cancel(); <-done }()

		exchange := func(pkt []byte) []byte {
			sc.send(pkt, gc)
			synctest.Wait()
			return sc.recv()
		}
		in := newInitiator(t, key, 7, auth.DefaultLimits)
		a, err := in.HandleChallenge(exchange(in.Hello(nil)), nil)
		if err != nil {
			t.Fatalf("challenge: %v", err)
		}
		w1 := exchange(a)
		if w1 == nil {
			t.Fatal("no WELCOME")
		}
		w1 = bytes.Clone(w1)
		s, _, err := in.HandleWelcome(bytes.Clone(w1), time.Now())
		if err != nil {
			t.Fatalf("welcome: %v", err)
		}
		bye := fschunk.AppendHeader(nil, fschunk.Header{Type: fschunk.TypeGoodbye})
		bye, err = s.Seal((&fschunk.Goodbye{}).Append(bye), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		sc.send(bye, gc)
		synctest.Wait()
		if n := len(g.Pool().Servers()); n != 0 {
			t.Fatalf("%d servers after GOODBYE", n)
		}

		// 13 s later the gateway has forgotten the AUTH's nonce; then the
		// wall clock steps back 13 s.
		time.Sleep(fschunk.CookieLifetime + 3*time.Second)
		step.Store(int64(-(fschunk.CookieLifetime + 3*time.Second)))

		w2 := exchange(a)
		if w2 != nil {
			msg := "a replayed AUTH made a new session after a clock step"
			if bytes.Equal(w1[4:fschunk.HeaderSize], w2[4:fschunk.HeaderSize]) && !bytes.Equal(w1, w2) {
				msg += ", and its WELCOME reused the first one's nonce (same index and counter 0)"
			}
			t.Error(msg)
		}
		if st := g.Stats(); st.Handshakes != 1 {
			t.Errorf("sessions made: %d, want 1", st.Handshakes)
		}
	})
}
