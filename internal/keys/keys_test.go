package keys

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// RFC 7748 §6.1: Alice's and Bob's X25519 key pairs and their shared
// secret, with the keys in the text form `wg genkey` and `wg pubkey` use
// (standard base64, computed independently from the RFC's hex with
// Python's base64 module). Alice's private key is not clamped (its first
// byte is 0x77), as a key made elsewhere may not be: `wg pubkey` clamps
// when it multiplies, and so must we, to print the RFC's public key.
const (
	alicePriv = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo="
	alicePub  = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
	bobPriv   = "XasIfmJKikt54X+Lg4AO5m87sSkmGLb9HC+LJ/+I4Os="
	bobPub    = "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08="
	sharedHex = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
)

func TestVectors(t *testing.T) {
	for _, v := range []struct{ priv, pub string }{{alicePriv, alicePub}, {bobPriv, bobPub}} {
		k, err := ParsePrivate(v.priv + "\n")
		if err != nil {
			t.Fatal(err)
		}
		if got := k.Public().String(); got != v.pub {
			t.Errorf("pubkey(%s) = %s, want %s", v.priv, got, v.pub)
		}
		if k.Text() != v.priv {
			t.Errorf("text form %q did not round-trip", v.priv)
		}
	}
	a, _ := ParsePrivate(alicePriv)
	b, _ := ParsePrivate(bobPriv)
	ab, err := a.ECDH(b.Public())
	if err != nil {
		t.Fatal(err)
	}
	ba, _ := b.ECDH(a.Public())
	if hex.EncodeToString(ab) != sharedHex || !bytes.Equal(ab, ba) {
		t.Errorf("shared secret %x / %x, want %s", ab, ba, sharedHex)
	}
}

// A scalar and its clamped form are the same key, as for `wg pubkey`.
func TestClamp(t *testing.T) {
	a, _ := ParsePrivate(alicePriv)
	raw := [Size]byte(a.Bytes())
	clamp(&raw)
	c, err := newPrivate(raw[:])
	if err != nil {
		t.Fatal(err)
	}
	if c.Public() != a.Public() {
		t.Fatal("clamped scalar has another public key")
	}
	for range 16 {
		k, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		b := k.Bytes()
		if b[0]&7 != 0 || b[31]&128 != 0 || b[31]&64 == 0 {
			t.Fatalf("generated key %x is not clamped", b)
		}
		p, err := ParsePrivate(k.Text())
		if err != nil || p.Public() != k.Public() {
			t.Fatalf("text form did not round-trip: %v", err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", "44 characters"},
		{alicePub[:43], "44 characters"},
		{alicePub + "A", "44 characters"},
		{strings.Repeat("A", 44), "decodes to 33 bytes"}, // no padding
		{"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTm!=", "not standard base64"},
		{"hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo=", "not standard base64"}, // URL alphabet
		{"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmp=", "not standard base64"}, // non-zero pad bits
		{"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "all-zero"},
	}
	for _, c := range cases {
		_, err := ParsePublic(c.in)
		if err == nil || !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParsePublic(%q) = %v, want an ErrKey saying %q", c.in, err, c.want)
		}
		if _, err := ParsePrivate(c.in); err == nil && c.want != "all-zero" {
			t.Errorf("ParsePrivate(%q) accepted", c.in)
		} else if err != nil && len(c.in) > 8 && strings.Contains(err.Error(), c.in) {
			t.Errorf("ParsePrivate error quotes the secret: %v", err)
		}
	}
	if k, err := ParsePublic("  " + alicePub + "\r\n"); err != nil || k.String() != alicePub {
		t.Errorf("white space around a key: %v", err)
	}
}

func TestShort(t *testing.T) {
	k, _ := ParsePublic(alicePub)
	if k.Short() != "hSDwCYkw" || len(k.Short()) != ShortSize {
		t.Fatalf("Short = %q", k.Short())
	}
}

// A Private never shows its secret, however it is printed or logged.
func TestPrivateNotPrinted(t *testing.T) {
	k, _ := ParsePrivate(alicePriv)
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "key", k)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "key", k)
	out := fmt.Sprintf("%v %+v %#v %s %q", k, k, k, k, k) + logs.String()
	if strings.Contains(out, alicePriv[:20]) || strings.Contains(out, hex.EncodeToString(k.Bytes())[:20]) {
		t.Fatalf("secret printed: %s", out)
	}
	if !strings.Contains(out, "hSDwCYkw") {
		t.Fatalf("public half not named: %s", out)
	}
	var zero Private
	if zero.Public() != (Public{}) || zero.Bytes() != nil || zero.Text() != "" || !zero.IsZero() {
		t.Fatal("zero Private is not empty")
	}
	if _, err := zero.ECDH(k.Public()); err == nil {
		t.Fatal("zero Private did ECDH")
	}
}

func TestLowOrderPeer(t *testing.T) {
	k, _ := Generate()
	var one Public
	one[0] = 1 // u = 1 is a point of low order: every shared secret with it is zero
	if _, err := k.ECDH(one); err == nil {
		t.Fatal("ECDH with a low-order point accepted")
	}
}

func TestPublicJSON(t *testing.T) {
	k, _ := ParsePublic(alicePub)
	b, err := json.Marshal(map[string]Public{"k": k})
	if err != nil || string(b) != `{"k":"`+alicePub+`"}` {
		t.Fatalf("%s %v", b, err)
	}
	var m map[string]Public
	if err := json.Unmarshal(b, &m); err != nil || m["k"] != k {
		t.Fatalf("%v %v", m, err)
	}
	if err := json.Unmarshal([]byte(`{"k":"nope"}`), &m); err == nil {
		t.Fatal("bad key accepted")
	}
}
