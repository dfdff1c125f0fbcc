package tlscert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestSelfSigned(t *testing.T) {
	now := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	c, err := SelfSigned([]string{"localhost", "gw.example", "127.0.0.1", "::1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	leaf := c.Leaf
	if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Fatalf("public key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if leaf.IsCA || leaf.NotBefore.After(now) || !leaf.NotAfter.Equal(now.Add(SelfSignedValidity)) {
		t.Fatalf("IsCA %v, validity %v..%v", leaf.IsCA, leaf.NotBefore, leaf.NotAfter)
	}
	// It verifies as its own root for every host it names, and for no other.
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	for _, h := range []string{"localhost", "gw.example", "127.0.0.1", "::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: h, Roots: roots, CurrentTime: now}); err != nil {
			t.Errorf("verify for %s: %v", h, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "other.example", Roots: roots, CurrentTime: now}); err == nil {
		t.Error("verifies for a host it does not name")
	}
	// Two generations differ (fresh key and serial).
	c2, _ := SelfSigned([]string{"localhost"}, now)
	if Fingerprint(c) == Fingerprint(c2) {
		t.Error("two certificates with one fingerprint")
	}
}

func TestFingerprintAndPin(t *testing.T) {
	c, err := SelfSigned([]string{"localhost"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	fp := Fingerprint(c)
	if !regexp.MustCompile(`^([0-9A-F]{2}:){31}[0-9A-F]{2}$`).MatchString(fp) {
		t.Fatalf("fingerprint %q", fp)
	}
	sum := sha256.Sum256(c.Certificate[0])
	if fp[:5] != fmt.Sprintf("%02X:%02X", sum[0], sum[1]) {
		t.Fatalf("fingerprint %q does not start with the digest %x", fp, sum[:2])
	}
	pin, err := PublicKeyPin(c)
	if err != nil || !regexp.MustCompile(`^sha256//[A-Za-z0-9+/]{43}=$`).MatchString(pin) {
		t.Fatalf("pin %q, %v", pin, err)
	}
	c.Leaf = nil // parsed from the DER then
	if pin2, err := PublicKeyPin(c); err != nil || pin2 != pin {
		t.Fatalf("pin without Leaf %q, %v", pin2, err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	c, err := SelfSigned([]string{"localhost"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	got, err := Load(certFile, keyFile)
	if err != nil || Fingerprint(got) != Fingerprint(c) {
		t.Fatalf("Load: %v", err)
	}
	for _, tt := range []struct{ cert, key, want string }{
		{filepath.Join(dir, "missing.pem"), keyFile, "no such file"},
		{certFile, filepath.Join(dir, "missing.pem"), "no such file"},
		{keyFile, certFile, "load TLS certificate"},
		{certFile, certFile, "load TLS certificate"},
	} {
		_, err := Load(tt.cert, tt.key)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "load TLS certificate") {
			t.Errorf("Load(%s, %s): %v, want %q", tt.cert, tt.key, err, tt.want)
		}
	}
	other, _ := SelfSigned([]string{"localhost"}, time.Now())
	otherKey, _ := x509.MarshalPKCS8PrivateKey(other.PrivateKey)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: otherKey}), 0o600)
	if _, err := Load(certFile, keyFile); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched key: %v", err)
	}
}
