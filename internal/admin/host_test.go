package admin

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestHostCheck: a page that rebinds its own name to 127.0.0.1 makes the
// browser send Host: its-name; the admin listener must refuse that, and
// answer loopback addresses, localhost and the configured hosts.
func TestHostCheck(t *testing.T) {
	h := Handler(nil, nil, nil, "gw.internal:8081", "10.0.0.5")
	for _, c := range []struct {
		host string
		want int
	}{
		{"127.0.0.1:8081", http.StatusOK},
		{"127.0.0.1", http.StatusOK},
		{"127.1.2.3:8081", http.StatusOK},
		{"[::1]:8081", http.StatusOK},
		{"localhost:8081", http.StatusOK},
		{"LOCALHOST.", http.StatusOK},
		{"gw.internal:8081", http.StatusOK},
		{"GW.internal", http.StatusOK},
		{"10.0.0.5:8081", http.StatusOK},
		{"rebind.attacker.example:8081", http.StatusForbidden},
		{"attacker.example", http.StatusForbidden},
		{"localhost.attacker.example", http.StatusForbidden},
		{"10.0.0.6:8081", http.StatusForbidden},
		{"[::ffff:7f00:1]:8081", http.StatusOK},
		{"", http.StatusForbidden},
	} {
		req := httptest.NewRequest(http.MethodGet, "/debug/pprof/", nil)
		req.Host = c.host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.want {
			t.Errorf("Host %q: %d, want %d", c.host, rec.Code, c.want)
		}
	}
}
