package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http/httptest"
	"regexp"
	"testing"

	"github.com/fastfile/fschunk/internal/access"
	"github.com/fastfile/fschunk/internal/auth"
	"github.com/fastfile/fschunk/internal/cache"
	"github.com/fastfile/fschunk/internal/gateway"
)

// TestJSONSnakeCase: every key of every JSON API is snake_case (no Go
// field names such as "Hits" or "DropAuth").
func TestJSONSnakeCase(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	key, err := auth.NewKey(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(gateway.Config{Conn: pc, Key: key, Static: auth.GenerateStaticKey(), Cache: cache.New(1<<20, 1<<10)})
	if err != nil {
		t.Fatal(err)
	}
	acc, err := access.New(access.Config{Rate: 1, Burst: 1})
	if err != nil {
		t.Fatal(err)
	}
	h := Handler(g, nil, acc)
	snake := regexp.MustCompile(`^[a-z0-9]+(_[a-z0-9]+)*$`)
	var check func(path string, v any)
	check = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if !snake.MatchString(k) {
					t.Errorf("%s: key %q is not snake_case", path, k)
				}
				check(path+"."+k, x)
			}
		case []any:
			for _, x := range v {
				check(path, x)
			}
		}
	}
	for _, p := range []string{"/api/stats", "/api/servers", "/api/files", "/api/downloads"} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequestWithContext(context.Background(), "GET", p, nil)
		req.Host, req.RemoteAddr = "localhost", "127.0.0.1:40000" // the admin listener answers loopback only
		h.ServeHTTP(rec, req)
		var v any
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatalf("%s: %v: %s", p, err, rec.Body)
		}
		check(p, v)
	}
	// The status page reads those keys.
	for _, m := range regexp.MustCompile(`\b[ue]\.(\w+)`).FindAllStringSubmatch(statusPage, -1) {
		if !snake.MatchString(m[1]) {
			t.Errorf("status page reads /api/stats key %q", m[1])
		}
	}
}
