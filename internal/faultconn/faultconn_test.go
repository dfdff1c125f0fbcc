package faultconn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/bits"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// failsafe bounds every wait in these tests. It only guards against hangs;
// no assertion depends on it.
const failsafe = 10 * time.Second

func listen(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wrap(t *testing.T, out, in Config) *Conn {
	t.Helper()
	c := Wrap(listen(t), out, in)
	t.Cleanup(func() { c.Close() })
	return c
}

// msg builds a numbered datagram, padded so that corruption and copies have
// something to work on.
func msg(seq int) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint64(b, uint64(seq))
	for i := 8; i < len(b); i++ {
		b[i] = byte(seq + i)
	}
	return b
}

func seqOf(b []byte) int { return int(binary.BigEndian.Uint64(b)) }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// drain reads from c until done reports true, returning the datagrams read.
// It reads with short deadlines so that done is re-evaluated even when the
// remaining datagrams were dropped and nothing more will arrive.
func drain(t *testing.T, c net.PacketConn, done func(got int) bool) [][]byte {
	t.Helper()
	var got [][]byte
	buf := make([]byte, maxDatagram)
	limit := time.Now().Add(failsafe)
	for !done(len(got)) {
		if time.Now().After(limit) {
			t.Fatalf("gave up after %d datagrams", len(got))
		}
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			if isTimeout(err) {
				continue
			}
			t.Fatal(err)
		}
		got = append(got, bytes.Clone(buf[:n]))
	}
	c.SetReadDeadline(time.Time{})
	return got
}

// readOne reads a single datagram, failing the test if none comes.
func readOne(t *testing.T, c net.PacketConn) ([]byte, net.Addr) {
	t.Helper()
	buf := make([]byte, maxDatagram)
	c.SetReadDeadline(time.Now().Add(failsafe))
	defer c.SetReadDeadline(time.Time{})
	n, addr, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n], addr
}

// expectNothing asserts that no datagram is readable right now. It is only
// used where a datagram, if it was going to arrive, would already be sitting
// in the socket buffer or the queue, so the short wait is not a timing bound
// on the code under test.
func expectNothing(t *testing.T, c net.PacketConn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, maxDatagram)
	if n, _, err := c.ReadFrom(buf); !isTimeout(err) {
		t.Fatalf("ReadFrom = %q, %v; want timeout", buf[:n], err)
	}
}

func write(t *testing.T, c net.PacketConn, p []byte, to net.Addr) {
	t.Helper()
	n, err := c.WriteTo(p, to)
	if err != nil || n != len(p) {
		t.Fatalf("WriteTo = %d, %v; want %d, nil", n, err, len(p))
	}
}

func TestPassThrough(t *testing.T) {
	before := goleak.IgnoreCurrent()
	a := wrap(t, Config{Seed: 7}, Config{Seed: 7}) // a Seed alone injects nothing
	b := listen(t)

	sizes := []int{0, 1, 100, 1400, 9000}
	for _, size := range sizes {
		p := make([]byte, size)
		for i := range p {
			p[i] = byte(i * 7)
		}
		write(t, a, p, b.LocalAddr())
		got, from := readOne(t, b)
		if !bytes.Equal(got, p) || from.String() != a.LocalAddr().String() {
			t.Fatalf("size %d: outbound got %d bytes from %v", size, len(got), from)
		}
		write(t, b, p, a.LocalAddr())
		got, from = readOne(t, a)
		if !bytes.Equal(got, p) || from.String() != b.LocalAddr().String() {
			t.Fatalf("size %d: inbound got %d bytes from %v", size, len(got), from)
		}
	}
	// A short read buffer truncates like the socket does.
	write(t, b, []byte("truncated"), a.LocalAddr())
	short := make([]byte, 4)
	if n, _, err := a.ReadFrom(short); err != nil || string(short[:n]) != "trun" {
		t.Fatalf("short read = %q, %v", short[:n], err)
	}

	if err := goleak.Find(before); err != nil {
		t.Fatalf("pass-through started goroutines: %v", err)
	}
	st := a.Stats()
	if want := (Stats{Sent: uint64(len(sizes)), Received: uint64(len(sizes)) + 1}); st != want {
		t.Fatalf("Stats = %+v, want %+v", st, want)
	}
}

func TestLossOutbound(t *testing.T) {
	const total, batch, loss = 5000, 100, 0.25
	a := wrap(t, Config{Loss: loss, Seed: 1}, Config{})
	b := listen(t)
	received := 0
	for i := 0; i < total; i += batch {
		for j := i; j < i+batch; j++ {
			write(t, a, msg(j), b.LocalAddr())
		}
		// Drain before the next batch so the socket buffer never
		// overflows: any loss must come from the Conn.
		sent := a.Stats().Sent
		received += len(drain(t, b, func(got int) bool { return uint64(received+got) >= sent }))
	}
	st := a.Stats()
	if st.Sent+st.Dropped != total || uint64(received) != st.Sent {
		t.Fatalf("Stats = %+v, received %d; want Sent+Dropped = %d = received+Dropped", st, received, total)
	}
	if rate := float64(st.Dropped) / total; rate < loss-0.05 || rate > loss+0.05 {
		t.Fatalf("loss rate %.3f, want about %.2f", rate, loss)
	}
}

func TestLossInbound(t *testing.T) {
	const total, batch, loss = 2000, 100, 0.3
	s := listen(t)
	r := wrap(t, Config{}, Config{Loss: loss, Seed: 2})
	for i := 0; i < total; i += batch {
		for j := i; j < i+batch; j++ {
			write(t, s, msg(j), r.LocalAddr())
		}
		sent := uint64(i + batch)
		drain(t, r, func(int) bool { st := r.Stats(); return st.Received+st.Dropped >= sent })
	}
	st := r.Stats()
	if st.Received+st.Dropped != total || st.Overflowed != 0 {
		t.Fatalf("Stats = %+v; want Received+Dropped = %d", st, total)
	}
	if rate := float64(st.Dropped) / total; rate < loss-0.05 || rate > loss+0.05 {
		t.Fatalf("loss rate %.3f, want about %.2f", rate, loss)
	}
}

func TestDeterministic(t *testing.T) {
	run := func(seed int64) []int {
		a := wrap(t, Config{Loss: 0.5, Seed: seed}, Config{})
		b := listen(t)
		for i := range 200 {
			write(t, a, msg(i), b.LocalAddr())
		}
		sent := int(a.Stats().Sent)
		var seqs []int
		for _, p := range drain(t, b, func(got int) bool { return got >= sent }) {
			seqs = append(seqs, seqOf(p))
		}
		return seqs
	}
	first, again, other := run(42), run(42), run(43)
	if !slicesEqual(first, again) {
		t.Fatalf("same seed, different survivors:\n%v\n%v", first, again)
	}
	if slicesEqual(first, other) {
		t.Fatalf("different seeds, same survivors: %v", first)
	}
}

func slicesEqual(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// pair returns a sender applying out and a receiver applying in.
func pair(t *testing.T, out, in Config) (s, r *Conn) {
	return wrap(t, out, Config{}), wrap(t, Config{}, in)
}

func TestDuplicate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		out, in Config
	}{
		{"outbound", Config{Duplicate: 0.5, Seed: 3}, Config{}},
		{"inbound", Config{}, Config{Duplicate: 0.5, Seed: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const total, batch = 300, 50
			s, r := pair(t, tc.out, tc.in)
			for i := 0; i < total; i += batch {
				for j := i; j < i+batch; j++ {
					write(t, s, msg(j), r.LocalAddr())
				}
				// Received can only reach this once every datagram of
				// the batch, and each copy, has been read.
				want := uint64(i + batch)
				drain(t, r, func(int) bool {
					return r.Stats().Received >= want+s.Stats().Duplicated+r.Stats().Duplicated
				})
			}
			st := s.Stats()
			rt := r.Stats()
			dups := st.Duplicated + rt.Duplicated
			if dups == 0 {
				t.Fatal("no duplicates")
			}
			if rt.Received != total+dups {
				t.Fatalf("received %d, want %d + %d duplicates", rt.Received, total, dups)
			}
		})
	}
}

func TestDuplicateContents(t *testing.T) {
	const total = 200
	s, r := pair(t, Config{Duplicate: 0.3, Seed: 4}, Config{})
	count := map[int]int{}
	for i := range total {
		write(t, s, msg(i), r.LocalAddr())
		want := i + 1 + int(s.Stats().Duplicated)
		for _, p := range drain(t, r, func(int) bool { return int(r.Stats().Received) >= want }) {
			if !bytes.Equal(p, msg(seqOf(p))) {
				t.Fatalf("datagram %d altered", seqOf(p))
			}
			count[seqOf(p)]++
		}
	}
	twice := 0
	for i := range total {
		switch count[i] {
		case 1:
		case 2:
			twice++
		default:
			t.Fatalf("datagram %d arrived %d times", i, count[i])
		}
	}
	if twice == 0 || uint64(twice) != s.Stats().Duplicated {
		t.Fatalf("%d datagrams arrived twice, Stats.Duplicated = %d", twice, s.Stats().Duplicated)
	}
}

func TestCorrupt(t *testing.T) {
	check := func(t *testing.T, got, orig []byte) {
		t.Helper()
		if len(got) != len(orig) {
			t.Fatalf("length changed: %d -> %d", len(orig), len(got))
		}
		flipped := 0
		for i := range got {
			flipped += bits.OnesCount8(got[i] ^ orig[i])
		}
		if flipped < 1 || flipped > 3 {
			t.Fatalf("%d bits flipped, want 1..3", flipped)
		}
	}
	t.Run("outbound", func(t *testing.T) {
		s, r := pair(t, Config{Corrupt: 1, Duplicate: 0.5, Seed: 5}, Config{})
		for i := range 50 {
			p := msg(i)
			orig := bytes.Clone(p)
			write(t, s, p, r.LocalAddr())
			if !bytes.Equal(p, orig) {
				t.Fatal("WriteTo modified the caller's buffer")
			}
			want := uint64(i+1) + s.Stats().Duplicated
			for _, got := range drain(t, r, func(int) bool { return r.Stats().Received >= want }) {
				check(t, got, orig)
			}
		}
		if st := s.Stats(); st.Corrupted != 50 {
			t.Fatalf("Corrupted = %d, want 50", st.Corrupted)
		}
	})
	t.Run("inbound", func(t *testing.T) {
		s, r := pair(t, Config{}, Config{Corrupt: 1, Seed: 5})
		for i := range 50 {
			orig := msg(i)
			write(t, s, orig, r.LocalAddr())
			got, _ := readOne(t, r)
			check(t, got, orig)
		}
	})
}

func TestReorder(t *testing.T) {
	for _, tc := range []struct {
		name    string
		out, in Config
	}{
		{"outbound", Config{Reorder: 0.3, Seed: 6}, Config{}},
		{"inbound", Config{}, Config{Reorder: 0.3, Seed: 6}},
		{"outbound with delay", Config{Reorder: 0.3, Delay: time.Millisecond, Seed: 6}, Config{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const total, batch = 300, 50
			s, r := pair(t, tc.out, tc.in)
			var order []int
			for i := 0; i < total; i += batch {
				for j := i; j < i+batch; j++ {
					write(t, s, msg(j), r.LocalAddr())
				}
				// Nothing is lost, so wait for the whole batch; a
				// datagram held back at the end of the batch is
				// released by its timeout.
				want := i + batch
				for _, p := range drain(t, r, func(got int) bool { return len(order)+got >= want }) {
					order = append(order, seqOf(p))
				}
			}
			seen := map[int]bool{}
			inversions := 0
			for i, seq := range order {
				if seen[seq] {
					t.Fatalf("datagram %d duplicated", seq)
				}
				seen[seq] = true
				if i > 0 && seq < order[i-1] {
					inversions++
				}
			}
			if len(seen) != total {
				t.Fatalf("received %d distinct datagrams, want %d", len(seen), total)
			}
			reordered := s.Stats().Reordered + r.Stats().Reordered
			if inversions == 0 || reordered == 0 {
				t.Fatalf("order unchanged: %d inversions, Stats.Reordered = %d", inversions, reordered)
			}
		})
	}
}

func TestDelayOutbound(t *testing.T) {
	slow := wrap(t, Config{Delay: 500 * time.Millisecond}, Config{})
	fast := listen(t)
	r := listen(t)

	write(t, slow, []byte("slow"), r.LocalAddr()) // returns at once
	write(t, fast, []byte("fast"), r.LocalAddr())
	if got, _ := readOne(t, r); string(got) != "fast" {
		t.Fatalf("first datagram %q, want the undelayed one", got)
	}
	if got, from := readOne(t, r); string(got) != "slow" || from.String() != slow.LocalAddr().String() {
		t.Fatalf("second datagram %q from %v, want the delayed one", got, from)
	}
	// Sent is counted when the scheduler's write returns, which may be
	// after r has already seen the datagram.
	if st := slow.Stats(); st.Delayed != 1 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestDelayInbound(t *testing.T) {
	s := listen(t)
	r := wrap(t, Config{}, Config{Delay: time.Second})
	write(t, s, []byte("A"), r.LocalAddr())
	// Reading starts the background reader; wait until it has scheduled the
	// datagram. Then it must still not be readable, because it is delayed
	// for far longer than we wait.
	drain(t, r, func(got int) bool {
		if got > 0 {
			t.Fatal("delayed datagram delivered early")
		}
		return r.Stats().Delayed == 1
	})
	expectNothing(t, r)
	if st := r.Stats(); st.Delayed != 1 || st.Received != 0 {
		t.Fatalf("Stats = %+v", st)
	}
	if got, _ := readOne(t, r); string(got) != "A" {
		t.Fatalf("got %q", got)
	}
}

func TestJitterLosesNothing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		out, in Config
	}{
		{"outbound", Config{Delay: 2 * time.Millisecond, Jitter: 2 * time.Millisecond, Seed: 8}, Config{}},
		{"inbound", Config{}, Config{Delay: 2 * time.Millisecond, Jitter: 2 * time.Millisecond, Seed: 8}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const total = 200
			s, r := pair(t, tc.out, tc.in)
			for i := range total {
				write(t, s, msg(i), r.LocalAddr())
			}
			seen := map[int]bool{}
			for _, p := range drain(t, r, func(got int) bool { return got >= total }) {
				seen[seqOf(p)] = true
			}
			if len(seen) != total {
				t.Fatalf("%d distinct datagrams, want %d", len(seen), total)
			}
			if d := s.Stats().Delayed + r.Stats().Delayed; d == 0 {
				t.Fatal("nothing delayed")
			}
		})
	}
}

func TestBlackhole(t *testing.T) {
	t.Run("outbound", func(t *testing.T) {
		a := wrap(t, Config{}, Config{})
		b := listen(t)
		a.SetBlackhole(true)
		for i := range 20 {
			write(t, a, msg(i), b.LocalAddr())
		}
		a.SetBlackhole(false)
		write(t, a, []byte("marker"), b.LocalAddr())
		if got, _ := readOne(t, b); string(got) != "marker" {
			t.Fatalf("first datagram after the outage %q, want marker", got)
		}
		if st := a.Stats(); st.Dropped != 20 || st.Sent != 1 {
			t.Fatalf("Stats = %+v", st)
		}
	})
	for _, tc := range []struct {
		name string
		in   Config
	}{
		{"inbound direct", Config{}},
		{"inbound with faults", Config{Delay: time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := listen(t)
			r := wrap(t, Config{}, tc.in)
			r.SetBlackhole(true)
			for i := range 20 {
				write(t, s, msg(i), r.LocalAddr())
			}
			drain(t, r, func(int) bool { return r.Stats().Dropped >= 20 })
			r.SetBlackhole(false)
			write(t, s, []byte("marker"), r.LocalAddr())
			if got, _ := readOne(t, r); string(got) != "marker" {
				t.Fatalf("first datagram after the outage %q, want marker", got)
			}
			if st := r.Stats(); st.Dropped != 20 || st.Received != 1 {
				t.Fatalf("Stats = %+v", st)
			}
		})
	}
	t.Run("in flight", func(t *testing.T) {
		a := wrap(t, Config{Delay: 200 * time.Millisecond}, Config{})
		b := listen(t)
		write(t, a, []byte("doomed"), b.LocalAddr())
		a.SetBlackhole(true) // the outage begins while the datagram is delayed
		drain(t, b, func(int) bool { return a.Stats().Dropped >= 1 })
		a.SetBlackhole(false)
		a.SetOut(Config{})
		write(t, a, []byte("marker"), b.LocalAddr())
		if got, _ := readOne(t, b); string(got) != "marker" {
			t.Fatalf("got %q, want marker", got)
		}
	})
}

func TestFilter(t *testing.T) {
	t.Run("outbound", func(t *testing.T) {
		a := wrap(t, Config{}, Config{})
		b := listen(t)
		var n atomic.Int32
		a.SetFilter(func(p []byte, addr net.Addr, outbound bool) bool {
			if !outbound || addr.String() != b.LocalAddr().String() {
				t.Errorf("filter called with outbound=%v addr=%v", outbound, addr)
			}
			return n.Add(1) != 3 // drop the third datagram
		})
		for i := range 5 {
			write(t, a, msg(i), b.LocalAddr())
		}
		var seqs []int
		for _, p := range drain(t, b, func(got int) bool { return got >= 4 }) {
			seqs = append(seqs, seqOf(p))
		}
		if !slicesEqual(seqs, []int{0, 1, 3, 4}) {
			t.Fatalf("received %v", seqs)
		}
		a.SetFilter(nil)
		write(t, a, msg(5), b.LocalAddr())
		if got, _ := readOne(t, b); seqOf(got) != 5 {
			t.Fatalf("after removing the filter got %d", seqOf(got))
		}
	})
	for _, tc := range []struct {
		name string
		in   Config
	}{
		{"inbound direct", Config{}},
		{"inbound with faults", Config{Delay: time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := listen(t)
			r := wrap(t, Config{}, tc.in)
			r.SetFilter(func(p []byte, addr net.Addr, outbound bool) bool {
				return outbound || seqOf(p) != 2
			})
			for i := range 5 {
				write(t, s, msg(i), r.LocalAddr())
			}
			var seqs []int
			for _, p := range drain(t, r, func(got int) bool { return got >= 4 }) {
				seqs = append(seqs, seqOf(p))
			}
			if !slicesEqual(seqs, []int{0, 1, 3, 4}) || r.Stats().Dropped != 1 {
				t.Fatalf("received %v, Stats = %+v", seqs, r.Stats())
			}
		})
	}
}

func TestReadDeadline(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Config
	}{
		{"direct", Config{}},
		{"queued", Config{Delay: time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := listen(t)
			r := wrap(t, Config{}, tc.in)
			buf := make([]byte, 100)

			checkTimeout := func(err error) {
				t.Helper()
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("err = %v, want a net.Error timeout wrapping os.ErrDeadlineExceeded", err)
				}
			}
			r.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			_, _, err := r.ReadFrom(buf)
			checkTimeout(err)

			r.SetDeadline(time.Now().Add(-time.Second)) // already passed
			_, _, err = r.ReadFrom(buf)
			checkTimeout(err)

			// Moving the deadline wakes a blocked ReadFrom.
			r.SetReadDeadline(time.Time{})
			errc := make(chan error, 1)
			go func() { _, _, err := r.ReadFrom(buf); errc <- err }()
			waitBlocked(t, r)
			r.SetReadDeadline(time.Now())
			select {
			case err := <-errc:
				checkTimeout(err)
			case <-time.After(failsafe):
				t.Fatal("ReadFrom did not return after the deadline moved")
			}

			r.SetReadDeadline(time.Time{})
			write(t, s, []byte("after"), r.LocalAddr())
			if got, _ := readOne(t, r); string(got) != "after" {
				t.Fatalf("got %q", got)
			}
		})
	}
}

// TestSwitchInbound turns inbound faults on and off at run time and checks
// that no datagram is lost across the switches and that the reader goroutine
// hands the socket back.
func TestSwitchInbound(t *testing.T) {
	s := listen(t)
	r := wrap(t, Config{}, Config{})
	seq := 0
	send := func(n int) {
		for range n {
			write(t, s, msg(seq), r.LocalAddr())
			seq++
		}
	}
	var got []int
	recv := func() {
		for _, p := range drain(t, r, func(n int) bool { return len(got)+n >= seq }) {
			got = append(got, seqOf(p))
		}
	}

	// Block a direct read, then switch faults on underneath it.
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 100)
		r.SetReadDeadline(time.Now().Add(failsafe))
		n, _, err := r.ReadFrom(buf)
		if err != nil {
			t.Error(err)
			return
		}
		got = append(got, seqOf(buf[:n]))
	}()
	waitBlocked(t, r) // the switch must happen under a blocked direct read
	r.SetIn(Config{Delay: 5 * time.Millisecond, Reorder: 0.2, Seed: 9})
	send(1)
	<-done

	send(50)
	recv()
	r.SetIn(Config{Delay: 50 * time.Millisecond})
	send(10)
	r.SetIn(Config{}) // datagrams still in flight must not be lost
	send(10)
	recv()

	r.mu.Lock()
	running := r.readerRunning
	r.mu.Unlock()
	if running {
		t.Fatal("reader goroutine still running with a zero inbound Config")
	}
	seen := map[int]bool{}
	for _, s := range got {
		seen[s] = true
	}
	if len(seen) != seq || len(got) != seq {
		t.Fatalf("got %d datagrams (%d distinct), want %d", len(got), len(seen), seq)
	}

	// Direct reads work again, including the deadline.
	send(1)
	recv()
	expectNothing(t, r)
}

func TestCloseStopsEverything(t *testing.T) {
	s := Wrap(listen(t), Config{Delay: time.Hour, Reorder: 0.5, Seed: 10}, Config{})
	r := Wrap(listen(t), Config{}, Config{Delay: time.Hour, Duplicate: 0.5, Seed: 10})

	errc := make(chan error, 1)
	go func() {
		_, _, err := r.ReadFrom(make([]byte, 100))
		errc <- err
	}()
	plain := listen(t)
	for i := range 10 {
		write(t, s, msg(i), r.LocalAddr())     // delayed forever in s
		write(t, plain, msg(i), r.LocalAddr()) // delayed forever in r
	}
	drain(t, plain, func(int) bool { return r.Stats().Delayed >= 10 })

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked ReadFrom returned %v, want net.ErrClosed", err)
		}
	case <-time.After(failsafe):
		t.Fatal("blocked ReadFrom did not return after Close")
	}
	if _, _, err := r.ReadFrom(make([]byte, 100)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadFrom after Close = %v, want net.ErrClosed", err)
	}
	if _, err := s.WriteTo([]byte("x"), r.LocalAddr()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteTo after Close = %v, want net.ErrClosed", err)
	}
	if err := r.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close = %v, want net.ErrClosed", err)
	}
	goleak.VerifyNone(t)
}

func TestCloseDirect(t *testing.T) {
	r := Wrap(listen(t), Config{}, Config{})
	errc := make(chan error, 1)
	go func() {
		_, _, err := r.ReadFrom(make([]byte, 100))
		errc <- err
	}()
	waitBlocked(t, r)
	r.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadFrom = %v, want net.ErrClosed", err)
	}
	goleak.VerifyNone(t)
}

// TestConcurrentControl exercises every control method while traffic flows,
// for the race detector.
func TestConcurrentControl(t *testing.T) {
	a := Wrap(listen(t), Config{Loss: 0.1, Delay: time.Millisecond, Seed: 11}, Config{})
	b := Wrap(listen(t), Config{}, Config{Reorder: 0.1, Jitter: time.Millisecond, Seed: 11})

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				a.WriteTo(msg(w*1_000_000+i), b.LocalAddr())
				if i%50 == 0 {
					time.Sleep(time.Millisecond) // let the receiver keep up
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 100)
		for {
			if _, _, err := b.ReadFrom(buf); errors.Is(err, net.ErrClosed) {
				return
			}
		}
	}()
	for i := range 200 {
		a.SetOut(Config{Loss: 0.1, Duplicate: 0.1, Corrupt: 0.1, Reorder: float64(i%3) / 10, Seed: int64(i)})
		b.SetIn(Config{Delay: time.Duration(i%2) * time.Millisecond, Seed: int64(i)})
		a.SetBlackhole(i%7 == 0)
		b.SetBlackhole(i%11 == 0)
		if i%5 == 0 {
			b.SetFilter(func(p []byte, _ net.Addr, _ bool) bool { return len(p) > 0 && p[len(p)-1]%2 == 0 })
		} else {
			b.SetFilter(nil)
		}
		b.SetReadDeadline(time.Time{})
		_ = a.Stats()
		_ = b.Stats()
		time.Sleep(200 * time.Microsecond)
	}
	close(stop)
	a.Close()
	b.Close()
	wg.Wait()
	if a.Stats().Sent == 0 || b.Stats().Received == 0 {
		t.Fatalf("no traffic: %+v %+v", a.Stats(), b.Stats())
	}
	goleak.VerifyNone(t)
}

// waitBlocked waits until a ReadFrom on c is blocked: on the socket
// directly, or waiting for the queue.
func waitBlocked(t *testing.T, c *Conn) {
	t.Helper()
	deadline := time.Now().Add(failsafe)
	for {
		c.mu.Lock()
		blocked := c.directReaders > 0 || c.readable != nil
		c.mu.Unlock()
		if blocked {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("ReadFrom never blocked")
		}
		time.Sleep(time.Millisecond)
	}
}
