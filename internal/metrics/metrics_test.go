package metrics

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/access"
	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/gateway"
	"github.com/fastfile/fschunk/internal/httpfront"
)

// TestExposition: every metric the operator documentation promises is
// served, with the event metrics reflecting what was observed.
func TestExposition(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	key, _ := auth.NewKey(bytes.Repeat([]byte{1}, 32))
	m := New()
	g, err := gateway.New(gateway.Config{Conn: pc, Key: key, Static: auth.GenerateStaticKey()})
	if err != nil {
		t.Fatal(err)
	}
	m.Attach(g)
	guard, err := access.New(access.Config{Rate: 1, Burst: 1, Now: func() time.Time { return time.Unix(1e9, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	m.AttachAccess(guard)
	// Two requests from one client within a second: the second is refused.
	h := guard.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	for range 2 {
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = "192.0.2.1:1234"
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	m.ObserveAccess(httpfront.AccessRecord{Method: "GET", Status: 206, Bytes: 1234, Duration: 3 * time.Millisecond})
	m.ObserveChunk(1, 2*time.Millisecond)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	text := string(body)
	for _, want := range []string{
		`httpgw_http_requests_total{code="206",method="GET"} 1`,
		`httpgw_http_response_bytes_total 1234`,
		`httpgw_http_response_duration_seconds_count 1`,
		`httpgw_chunk_fetch_seconds_count 1`,
		`httpgw_udp_drops_total{cause="auth"} 0`,
		`httpgw_udp_drops_total{cause="replay"} 0`,
		`httpgw_retransmissions_total 0`,
		`httpgw_duplicate_bytes_total 0`,
		`httpgw_evictions_total 0`,
		`httpgw_servers 0`,
		`httpgw_catalog_files 0`,
		`httpgw_access_refused_total{reason="rate"} 1`,
		`httpgw_access_refused_total{reason="deny"} 0`,
		`httpgw_access_refused_total{reason="conns_per_ip"} 0`,
		`httpgw_access_refused_total{reason="conns_total"} 0`,
		`httpgw_http_connections 0`,
		`httpgw_access_rate_clients 1`,
		`httpgw_access_rate_evictions_total 0`,
		`go_goroutines`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
