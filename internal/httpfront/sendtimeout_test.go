package httpfront

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// stalledFile is larger than every buffer between the handler and a
// client that does not read (socket buffers, HTTP/2 flow control
// windows), so that the handler's writes block.
func stalledFile() *fakeFile {
	f := newFile("stall.bin", nil)
	f.gen, f.Size = true, 1<<30
	return f
}

// waitCloses waits until the source has seen n Contents closed: the
// handlers of n responses have returned.
func waitCloses(t *testing.T, src *fakeSource, n int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for src.closes.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d responses ended: a client that stopped reading holds its response", src.closes.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSendTimeoutHTTP1: a response whose client stops reading is cut
// after SendTimeout: the handler returns (its Content is closed, so the
// engine's buffers go back) and the connection is closed.
func TestSendTimeoutHTTP1(t *testing.T) {
	src := newFakeSource(stalledFile())
	h := NewHandler(src, Options{Logger: discardLogger(), SendTimeout: 200 * time.Millisecond})
	s := NewServer("", h, ServerOptions{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go Serve(s, l)
	t.Cleanup(func() { s.Close() })
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /stall.bin HTTP/1.1\r\nHost: x\r\n\r\n")
	waitCloses(t, src, 1)
	// The connection was closed: reading what was sent ends well before
	// the gigabyte.
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil || n >= 1<<30 {
		t.Fatalf("read %d bytes, %v; want the connection cut", n, err)
	}
}

// TestSendTimeoutHTTP2: over HTTP/2 the stream is reset, the handler
// returns, and the connection serves other requests.
func TestSendTimeoutHTTP2(t *testing.T) {
	src := newFakeSource(stalledFile(), newFile("ok.txt", []byte("fine")))
	url, client := startTLSServerWith(t, src, true, Options{Logger: discardLogger(), SendTimeout: 200 * time.Millisecond})
	req, err := http.NewRequestWithContext(context.Background(), "GET", url+"/stall.bin", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("protocol %s, want HTTP/2", resp.Proto)
	}
	waitCloses(t, src, 1)
	if n, err := io.Copy(io.Discard, resp.Body); err == nil || n >= 1<<30 {
		t.Fatalf("read %d bytes, %v; want the stream reset", n, err)
	}
	r2, body := fetch(t, client, context.Background(), "GET", url+"/ok.txt")
	if r2.StatusCode != 200 || string(body) != "fine" || r2.ProtoMajor != 2 {
		t.Fatalf("next request: %s %q", r2.Status, body)
	}
}
