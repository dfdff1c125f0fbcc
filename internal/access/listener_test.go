package access

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// echoServer accepts through a Guard's listener, greets each connection
// with "hello\n" and holds it until the client closes it.
type echoServer struct {
	l    net.Listener
	wg   sync.WaitGroup
	addr string
}

func startEchoServer(t *testing.T, g *Guard, answer bool, setup ...func(*listener)) *echoServer {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{l: g.Listener(inner, answer), addr: inner.Addr().String()}
	for _, f := range setup {
		f(s.l.(*listener))
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.l.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				io.WriteString(c, "hello\n")
				io.Copy(io.Discard, c)
			}()
		}
	}()
	t.Cleanup(func() { s.l.Close(); s.wg.Wait() })
	return s
}

// dialFrom connects from a given loopback address (Linux routes all of
// 127.0.0.0/8 to lo).
func dialFrom(t *testing.T, from, to string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", to)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// refusal sends a request on c and reads what it gets before EOF: "" if
// it was just closed, else the status line and Retry-After; it fails if
// the connection was accepted instead.
func refusal(t *testing.T, c net.Conn) string {
	t.Helper()
	// An HTTP client sends its request first (and it may find the
	// connection closed already).
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	b, err := io.ReadAll(c)
	if ne, ok := err.(net.Error); (ok && ne.Timeout()) || strings.HasPrefix(string(b), "hello") {
		t.Fatalf("connection accepted, want refused: %q, %v", b, err)
	}
	if len(b) == 0 {
		// Closed without an answer: EOF, or a reset since the request
		// was not read.
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("refused connection: %v", err)
		}
		return ""
	}
	if err != nil {
		t.Fatalf("answer %q cut by %v", b, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(b))), nil)
	if err != nil {
		t.Fatalf("bad refusal %q: %v", b, err)
	}
	body, _ := io.ReadAll(resp.Body)
	if !resp.Close || int64(len(body)) != resp.ContentLength {
		t.Fatalf("refusal %q: want Connection: close and an exact Content-Length", b)
	}
	return resp.Status + " retry=" + resp.Header.Get("Retry-After")
}

// accepted checks that the server accepted c: it is greeted.
func accepted(t *testing.T, c net.Conn) {
	t.Helper()
	b := make([]byte, 6)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "hello\n" {
		t.Fatalf("connection not accepted: read %q, %v", b, err)
	}
}

// waitOpen polls until the guard counts n open connections (the server
// side closes asynchronously after the client does).
func waitOpen(t *testing.T, g *Guard, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for g.Stats().OpenConns != n {
		if time.Now().After(deadline) {
			t.Fatalf("open connections %d, want %d", g.Stats().OpenConns, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestListenerConnsPerClient(t *testing.T) {
	g, _ := New(Config{MaxConnsPerClient: 2})
	s := startEchoServer(t, g, true)
	c1 := dialFrom(t, "127.0.0.1", s.addr)
	accepted(t, c1)
	accepted(t, dialFrom(t, "127.0.0.1", s.addr))
	if got := refusal(t, dialFrom(t, "127.0.0.1", s.addr)); got != "429 Too Many Requests retry=1" {
		t.Fatalf("3rd connection: %q", got)
	}
	// Another client is not affected.
	other := dialFrom(t, "127.0.0.2", s.addr)
	accepted(t, other)
	// A closed connection frees its slot.
	c1.Close()
	waitOpen(t, g, 2)
	accepted(t, dialFrom(t, "127.0.0.1", s.addr))
	if st := g.Stats(); st.ConnsPerIP != 1 || st.OpenConns != 3 || st.ConnsTotal != 0 || st.Denied != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestListenerConnsTotal(t *testing.T) {
	g, _ := New(Config{MaxConns: 2, MaxConnsPerClient: 5})
	s := startEchoServer(t, g, true)
	accepted(t, dialFrom(t, "127.0.0.1", s.addr))
	accepted(t, dialFrom(t, "127.0.0.2", s.addr))
	if got := refusal(t, dialFrom(t, "127.0.0.3", s.addr)); got != "503 Service Unavailable retry=1" {
		t.Fatalf("3rd connection: %q", got)
	}
	if st := g.Stats(); st.ConnsTotal != 1 || st.ConnsPerIP != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestListenerDeny(t *testing.T) {
	for _, answer := range []bool{true, false} {
		g, _ := New(Config{Deny: mustPrefixes(t, "127.0.0.2"), Allow: mustPrefixes(t, "127.0.0.0/30")})
		s := startEchoServer(t, g, answer)
		want := "403 Forbidden retry="
		if !answer {
			want = "" // TLS: closed without a word
		}
		if got := refusal(t, dialFrom(t, "127.0.0.2", s.addr)); got != want {
			t.Errorf("answer=%v: denied client got %q, want %q", answer, got, want)
		}
		if got := refusal(t, dialFrom(t, "127.0.0.9", s.addr)); got != want {
			t.Errorf("answer=%v: client outside -allow got %q, want %q", answer, got, want)
		}
		accepted(t, dialFrom(t, "127.0.0.1", s.addr))
		if st := g.Stats(); st.Denied != 2 || st.OpenConns != 1 {
			t.Errorf("answer=%v: stats %+v", answer, st)
		}
	}
}

// TestListenerFloodFallback: with every lingering slot taken by clients
// that send nothing, a further refused connection is answered at once from
// Accept, without waiting for its request.
func TestListenerFloodFallback(t *testing.T) {
	g, _ := New(Config{Deny: mustPrefixes(t, "127.0.0.0/8")})
	// The silent clients hold their slots.
	s := startEchoServer(t, g, true, func(l *listener) { l.lingerTimeout = time.Minute })
	l := s.l.(*listener)
	var silent []net.Conn
	for range maxLingering {
		silent = append(silent, dialFrom(t, "127.0.0.1", s.addr))
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(l.slots) < maxLingering {
		if time.Now().After(deadline) {
			t.Fatalf("%d lingering refusals, want %d", len(l.slots), maxLingering)
		}
		time.Sleep(2 * time.Millisecond)
	}
	c := dialFrom(t, "127.0.0.2", s.addr)
	b, err := io.ReadAll(c) // no request sent
	if err != nil || !strings.HasPrefix(string(b), "HTTP/1.1 403 Forbidden\r\n") {
		t.Fatalf("refusal under flood: %q, %v", b, err)
	}
	// The silent ones are let go when they close.
	for _, c := range silent {
		c.Close()
	}
	deadline = time.Now().Add(10 * time.Second)
	for len(l.slots) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d lingering refusals left after their clients closed", len(l.slots))
		}
		time.Sleep(2 * time.Millisecond)
	}
	if st := g.Stats(); st.Denied != maxLingering+1 || st.OpenConns != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestListenerCloseEndsLingering: closing the listener ends refusals still
// waiting for their request, instead of waiting out their timeout.
func TestListenerCloseEndsLingering(t *testing.T) {
	g, _ := New(Config{Deny: mustPrefixes(t, "127.0.0.0/8")})
	s := startEchoServer(t, g, true, func(l *listener) { l.lingerTimeout = time.Hour })
	l := s.l.(*listener)
	silent := []net.Conn{dialFrom(t, "127.0.0.1", s.addr), dialFrom(t, "127.0.0.1", s.addr)}
	deadline := time.Now().Add(10 * time.Second)
	for len(l.slots) < len(silent) {
		if time.Now().After(deadline) {
			t.Fatalf("%d lingering refusals, want %d", len(l.slots), len(silent))
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range silent {
		if b, err := io.ReadAll(c); len(b) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
			t.Fatalf("after Close: %q, %v", b, err)
		}
	}
	if len(l.slots) != 0 {
		t.Fatalf("%d slots still taken", len(l.slots))
	}
}

// TestHTTPRateLimit drives the whole guard through net/http: the rate
// limit applies per request over keep-alive HTTP/1.1 and per stream over
// HTTP/2, with the clock faked.
func TestHTTPRateLimit(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		name := "HTTP/1.1"
		if h2 {
			name = "HTTP/2.0"
		}
		t.Run(name, func(t *testing.T) {
			clk := newFakeClock()
			g, err := New(Config{Rate: 1, Burst: 2, MaxConnsPerClient: 4, Now: clk.Now})
			if err != nil {
				t.Fatal(err)
			}
			ts := httptest.NewUnstartedServer(g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "ok "+r.Proto)
			})))
			ts.Listener = g.Listener(ts.Listener, !h2)
			if h2 {
				ts.EnableHTTP2 = true
				ts.StartTLS()
			} else {
				ts.Start()
			}
			defer ts.Close()
			conns := 0
			get := func() (int, string, string) {
				t.Helper()
				req, _ := http.NewRequest("GET", ts.URL+"/", nil)
				req = req.WithContext(withConnCounter(req.Context(), &conns))
				resp, err := ts.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				if resp.Proto != name {
					t.Fatalf("proto %s, want %s", resp.Proto, name)
				}
				return resp.StatusCode, resp.Header.Get("Retry-After"), string(body)
			}
			for i := range 2 {
				if code, _, body := get(); code != 200 || body != "ok "+name {
					t.Fatalf("request %d: %d %q", i+1, code, body)
				}
			}
			if code, retry, body := get(); code != 429 || retry != "1" || body != "too many requests\n" {
				t.Fatalf("3rd request: %d Retry-After %q %q", code, retry, body)
			}
			clk.Advance(time.Second)
			if code, _, _ := get(); code != 200 {
				t.Fatalf("after 1 s: %d", code)
			}
			if code, _, _ := get(); code != 429 {
				t.Fatalf("5th request: %d", code)
			}
			if conns != 1 {
				t.Fatalf("%d connections, want all requests on 1", conns)
			}
			if st := g.Stats(); st.RateLimited != 2 || st.RateClients != 1 || st.OpenConns != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// withConnCounter counts the new (not reused) connections a request uses.
func withConnCounter(ctx context.Context, n *int) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if !i.Reused {
			*n++
		}
	}})
}

// TestHTTPConnLimit: a net/http client whose connection is refused at
// accept reads the 429 (its request was already sent: the answer must
// not be lost to a reset), and gets in once a slot is free.
func TestHTTPConnLimit(t *testing.T) {
	g, _ := New(Config{MaxConnsPerClient: 1})
	ts := httptest.NewUnstartedServer(g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})))
	ts.Listener = g.Listener(ts.Listener, true)
	ts.Start()
	defer ts.Close()
	holder := dialFrom(t, "127.0.0.1", ts.Listener.Addr().String())
	waitOpen(t, g, 1)
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	for i := range 20 {
		resp, err := client.Get(ts.URL + "/")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" || string(body) != "too many connections from your IP\n" {
			t.Fatalf("request %d: %s Retry-After %q %q", i, resp.Status, resp.Header.Get("Retry-After"), body)
		}
	}
	holder.Close()
	waitOpen(t, g, 0)
	resp, err := client.Get(ts.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("after the slot was freed: %s %q", resp.Status, body)
	}
	if st := g.Stats(); st.ConnsPerIP != 20 {
		t.Fatalf("stats %+v", st)
	}
}
