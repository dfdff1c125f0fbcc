package httpfront

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/tlscert"
)

// startTLSServer serves src over HTTPS with a freshly generated
// certificate, the way cmd/httpgw does (NewServer + Serve), and returns
// the base URL and a client trusting that certificate only. protos picks
// the client's protocols.
func startTLSServer(t *testing.T, src *fakeSource, http2 bool) (string, *http.Client) {
	t.Helper()
	return startTLSServerWith(t, src, http2, Options{Logger: discardLogger()})
}

// startTLSServerWith is startTLSServer with the handler's options.
func startTLSServerWith(t *testing.T, src *fakeSource, http2 bool, opt Options) (string, *http.Client) {
	t.Helper()
	cert, err := tlscert.SelfSigned([]string{"localhost", "127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer("", NewHandler(src, opt), ServerOptions{TLS: tlscert.ServerConfig(cert), SendTimeout: opt.SendTimeout})
	done := make(chan error, 1)
	go func() { done <- Serve(s, l) }()
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(http2)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, Protocols: &protos}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		s.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return "https://" + l.Addr().String(), &http.Client{Transport: tr}
}

// connCounter counts the connections requests opened (GotConn not reused).
type connCounter struct{ fresh, reused atomic.Int64 }

func (c *connCounter) ctx() context.Context {
	return httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if i.Reused {
			c.reused.Add(1)
		} else {
			c.fresh.Add(1)
		}
	}})
}

func fetch(t *testing.T, c *http.Client, ctx context.Context, method, url string, kv ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		req.Header.Set(kv[i], kv[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return resp, body
}

// TestHTTPS serves files over TLS to an HTTP/2 client and an HTTP/1.1-only
// client: byte-exact bodies, ranges, and every request of a client on one
// connection (HTTP/2: concurrently, as streams).
func TestHTTPS(t *testing.T) {
	data := randomBytes(21, 1<<20+17)
	src := newFakeSource(newFile("dir/big file.bin", data), newFile("small.txt", []byte("small\n")))
	for _, tt := range []struct {
		http2 bool
		proto string
	}{{true, "HTTP/2.0"}, {false, "HTTP/1.1"}} {
		t.Run(tt.proto, func(t *testing.T) {
			base, client := startTLSServer(t, src, tt.http2)
			var cc connCounter
			resp, body := fetch(t, client, cc.ctx(), "GET", base+"/dir/big%20file.bin")
			if resp.Proto != tt.proto || resp.StatusCode != 200 || !bytes.Equal(body, data) {
				t.Fatalf("GET: %s %s, %d bytes (want %d, byte-exact)", resp.Proto, resp.Status, len(body), len(data))
			}
			if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
				t.Fatalf("TLS state %+v", resp.TLS)
			}
			resp, body = fetch(t, client, cc.ctx(), "GET", base+"/dir/big%20file.bin", "Range", "bytes=900000-900099")
			if resp.StatusCode != 206 || !bytes.Equal(body, data[900000:900100]) {
				t.Fatalf("Range: %s, %d bytes", resp.Status, len(body))
			}
			resp, _ = fetch(t, client, cc.ctx(), "GET", base+"/nope")
			if resp.StatusCode != 404 {
				t.Fatalf("GET /nope: %s", resp.Status)
			}
			if cc.fresh.Load() != 1 {
				t.Fatalf("%d connections for sequential requests, want 1", cc.fresh.Load())
			}
			if !tt.http2 {
				return
			}
			// Concurrent requests are streams of the one connection.
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for i := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					req, _ := http.NewRequestWithContext(cc.ctx(), "GET", base+"/dir/big%20file.bin", nil)
					req.Header.Set("Range", fmt.Sprintf("bytes=%d-", i*100000))
					resp, err := client.Do(req)
					if err != nil {
						errs <- err
						return
					}
					defer resp.Body.Close()
					b, err := io.ReadAll(resp.Body)
					if err != nil || resp.StatusCode != 206 || !bytes.Equal(b, data[i*100000:]) {
						errs <- fmt.Errorf("stream %d: %s, %d bytes, %v", i, resp.Status, len(b), err)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if cc.fresh.Load() != 1 {
				t.Fatalf("%d connections for 8 concurrent HTTP/2 requests, want 1", cc.fresh.Load())
			}
		})
	}
}

// TestHTTP1Reuse checks keep-alive over plain HTTP/1.1 with net/http's
// client: every request after the first reuses the connection, including
// after error statuses.
func TestHTTP1Reuse(t *testing.T) {
	ts := newTestServer(t, newFakeSource(newFile("a.txt", []byte("aaa")), newFile("b.txt", []byte("bb"))))
	client := ts.Client()
	var cc connCounter
	for i, p := range []string{"/a.txt", "/b.txt", "/nope", "/", "/a.txt"} {
		resp, _ := fetch(t, client, cc.ctx(), "GET", ts.URL+p)
		if resp.Proto != "HTTP/1.1" {
			t.Fatalf("%s: proto %s", p, resp.Proto)
		}
		if want := int64(i); cc.reused.Load() != want {
			t.Fatalf("after request %d (%s): %d reused, want %d", i+1, p, cc.reused.Load(), want)
		}
	}
	if cc.fresh.Load() != 1 || ts.newConn.Load() != 1 {
		t.Fatalf("client opened %d, server saw %d connections; want 1", cc.fresh.Load(), ts.newConn.Load())
	}
}

// TestHTTP2HeaderLimit checks the header budget HTTP/2 advertises: an
// 8 KiB header passes, 13 KiB is over SETTINGS_MAX_HEADER_LIST_SIZE
// (12,608) and net/http's client refuses to send it.
func TestHTTP2HeaderLimit(t *testing.T) {
	base, client := startTLSServer(t, newFakeSource(newFile("a.txt", []byte("a"))), true)
	resp, _ := fetch(t, client, context.Background(), "GET", base+"/a.txt", "X-Pad", strings.Repeat("p", 8<<10))
	if resp.Proto != "HTTP/2.0" || resp.StatusCode != 200 {
		t.Fatalf("8 KiB header: %s %s", resp.Proto, resp.Status)
	}
	req, _ := http.NewRequest("GET", base+"/a.txt", nil)
	req.Header.Set("X-Pad", strings.Repeat("p", 13<<10))
	resp, err := client.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("13 KiB header: %s, want it refused", resp.Status)
	}
	if !strings.Contains(err.Error(), "larger than peer's advertised limit") {
		t.Fatalf("13 KiB header: %v", err)
	}
}
