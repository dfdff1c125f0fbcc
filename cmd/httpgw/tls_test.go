package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/fastfile/fschunk/internal/hashtree"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/tlscert"
)

// syncBuffer is a bytes.Buffer safe for the gateway's logging goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDemoTLS runs "httpgw -demo -tls-self-signed": the client pins the
// certificate by the fingerprint the gateway logged, speaks HTTP/2, and
// gets files whose SHA-256 matches their ETag; plain HTTP on the same port
// is not served. The access counters show up in /api/stats.
func TestDemoTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	web, adm := freeAddr(t), freeAddr(t)
	var logs syncBuffer
	runGateway(t, &logs, "-demo", "-tls-self-signed", "-http", web, "-udp", "127.0.0.1:0", "-admin", adm)
	// The banner comes once every sample is served (waiting on the API
	// instead raced with it on a loaded machine: no banner yet).
	for deadline := time.Now().Add(90 * time.Second); !strings.Contains(logs.String(), "demo running"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no demo running:\n%s", logs.String())
		}
	}

	m := regexp.MustCompile(`sha256_fingerprint=((?:[0-9A-F]{2}:){31}[0-9A-F]{2})`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no fingerprint logged:\n%s", logs.String())
	}
	fingerprint := m[1]
	if !strings.Contains(logs.String(), "curl -k --pinnedpubkey 'sha256//") || !strings.Contains(logs.String(), "https://localhost:") {
		t.Errorf("demo line lacks the https URL or the pinned curl command:\n%s", logs.String())
	}
	// Trust exactly the logged fingerprint, as a pinning client does.
	tr := &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, // replaced by the pin check below
		VerifyConnection: func(cs tls.ConnectionState) error {
			got := tlscert.Fingerprint(tls.Certificate{Certificate: [][]byte{cs.PeerCertificates[0].Raw}})
			if got != fingerprint {
				return fmt.Errorf("certificate %s, logged %s", got, fingerprint)
			}
			// And it is valid for localhost on its own.
			roots := x509.NewCertPool()
			roots.AddCert(cs.PeerCertificates[0])
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: "localhost", Roots: roots})
			return err
		},
	}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	for _, p := range []string{"/README.txt", "/images/gradient.png", "/videos/sample%20video.mp4", "/data/empty.txt"} {
		resp, err := client.Get("https://" + web + p)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		sum := contentHash(body)
		if err != nil || resp.StatusCode != 200 || resp.Proto != "HTTP/2.0" || resp.Header.Get("ETag") != `"`+hex.EncodeToString(sum[:])+`"` {
			t.Fatalf("GET %s: %s %s, %d bytes, ETag %s, %v", p, resp.Proto, resp.Status, len(body), resp.Header.Get("ETag"), err)
		}
	}
	// Plain HTTP to the HTTPS port gets no file (net/http answers 400).
	resp, err := http.Get("http://" + web + "/README.txt")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP on the HTTPS port: %s, want 400", resp.Status)
	}
	resp, err = http.Get("http://" + adm + "/api/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Access *struct {
			OpenConns   int `json:"open_conns"`
			RateClients int `json:"rate_clients"`
		} `json:"access"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.Access == nil || st.Access.OpenConns < 1 || st.Access.RateClients != 1 {
		t.Fatalf("/api/stats access: %+v, %v", st.Access, err)
	}
}

// contentHash is a file's content hash, its ETag: the root of its hash tree.
func contentHash(b []byte) [32]byte {
	t := hashtree.NewBuilder()
	t.Write(b)
	return t.Tree().Root
}
