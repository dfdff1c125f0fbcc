package access

import (
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// connTable counts open connections per client and in total.
type connTable struct {
	maxPerClient, max int // 0: no limit

	mu        sync.Mutex
	perClient map[netip.Addr]int // only clients with open connections: bounded by total
	total     int
}

// acquire counts a new connection from key (invalid: not an IP peer, only
// the total applies), or returns the reason it is refused.
func (t *connTable) acquire(key netip.Addr) (reason string, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.max > 0 && t.total >= t.max {
		return ReasonConnsTotal, false
	}
	if key.IsValid() {
		if t.maxPerClient > 0 && t.perClient[key] >= t.maxPerClient {
			return ReasonConnsPerIP, false
		}
		t.perClient[key]++
	}
	t.total++
	return "", true
}

func (t *connTable) release(key netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total--
	if !key.IsValid() {
		return
	}
	if n := t.perClient[key]; n > 1 {
		t.perClient[key] = n - 1
	} else {
		delete(t.perClient, key)
	}
}

func (t *connTable) open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total
}

// Canned answers for connections refused at accept. Retry-After is a
// hint: nothing tells when a connection will end.
var (
	answerDeny       = canned("403 Forbidden", "", "forbidden\n")
	answerConnsPerIP = canned("429 Too Many Requests", "1", "too many connections from your IP\n")
	answerConnsTotal = canned("503 Service Unavailable", "1", "too many connections\n")
)

func canned(status, retryAfter, body string) []byte {
	h := "HTTP/1.1 " + status + "\r\nContent-Type: text/plain; charset=utf-8\r\n"
	if retryAfter != "" {
		h += "Retry-After: " + retryAfter + "\r\n"
	}
	return []byte(h + "Content-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body)
}

// How a refused plain-HTTP connection is answered. HTTP clients discard
// (net/http: "unsolicited response") or lose to a reset an answer that
// comes before they have sent their request, so the answer waits for the
// request, then the connection is half-closed and drained until the client
// closes it: at most maxLingering connections at a time, each for at most
// lingerTimeout. Beyond that (a flood), the answer is written at once from
// Accept — one write on a fresh socket, whose send buffer is empty, so it
// does not block; writeTimeout is a backstop — and the connection closed.
const (
	maxLingering  = 64
	lingerTimeout = time.Second
	writeTimeout  = 100 * time.Millisecond
)

// Listener wraps l so that Accept enforces the lists and the connection
// limits. A refused connection is answered and closed inside Accept, with
// no goroutine or buffer of its own. With answer set (plain HTTP), the
// answer is a short HTTP/1.1 response with Connection: close — 403 for a
// denied client, 429 for the per-client limit, 503 for the total; without
// it (TLS, where plaintext would be garbage and a handshake is the cost
// being avoided) the connection is just closed.
//
// Every accepted connection is counted until it is closed.
func (g *Guard) Listener(l net.Listener, answer bool) net.Listener {
	return &listener{Listener: l, g: g, answer: answer, slots: make(chan struct{}, maxLingering), lingerTimeout: lingerTimeout}
}

type listener struct {
	net.Listener
	g      *Guard
	answer bool

	slots         chan struct{} // lingering refusals in progress
	lingering     sync.WaitGroup
	lingerTimeout time.Duration

	mu     sync.Mutex
	closed bool
	active map[net.Conn]struct{} // lingering connections
}

// Close closes the listener and the connections of refusals in progress,
// and waits for their goroutines.
func (l *listener) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	l.closed = true
	for c := range l.active {
		c.Close()
	}
	l.mu.Unlock()
	l.lingering.Wait()
	return err
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		var a, key netip.Addr
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			a = ta.AddrPort().Addr().Unmap()
			key = ClientKey(a)
		}
		reason, ok := "", true
		if a.IsValid() && !l.g.Allowed(a) {
			reason, ok = ReasonDeny, false
		} else {
			reason, ok = l.g.conns.acquire(key)
		}
		if ok {
			return &conn{Conn: c, release: func() { l.g.conns.release(key) }}, nil
		}
		l.g.refused(reason, a)
		l.refuse(c, reason)
	}
}

func (l *listener) refuse(c net.Conn, reason string) {
	if !l.answer {
		_ = c.Close()
		return
	}
	msg := answerConnsTotal
	switch reason {
	case ReasonDeny:
		msg = answerDeny
	case ReasonConnsPerIP:
		msg = answerConnsPerIP
	}
	select {
	case l.slots <- struct{}{}:
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			<-l.slots
			_ = c.Close()
			return
		}
		if l.active == nil {
			l.active = map[net.Conn]struct{}{}
		}
		l.active[c] = struct{}{}
		l.lingering.Add(1)
		l.mu.Unlock()
		go l.linger(c, msg)
	default:
		_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, _ = c.Write(msg)
		_ = c.Close()
	}
}

// linger answers c after its request arrived and closes it without a
// reset; see maxLingering.
func (l *listener) linger(c net.Conn, msg []byte) {
	defer l.lingering.Done()
	defer func() {
		c.Close()
		l.mu.Lock()
		delete(l.active, c)
		l.mu.Unlock()
		<-l.slots
	}()
	_ = c.SetDeadline(time.Now().Add(l.lingerTimeout))
	buf := make([]byte, 2048)
	if _, err := c.Read(buf); err != nil {
		return // gone, or sent nothing in time
	}
	if _, err := c.Write(msg); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

// conn gives its slot back once, on the first Close.
type conn struct {
	net.Conn
	release func()
	once    sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseWrite is forwarded: net/http half-closes before closing after some
// errors, so that the client reads the error response instead of a reset.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
