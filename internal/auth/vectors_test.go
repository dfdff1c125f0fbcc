package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"

	"github.com/fastfile/fschunk/internal/fschunk"
)

// vectors are docs/PROTOCOL.md's Appendix A, as hex. TestVectors
// recomputes every one with the package's code from the appendix's
// inputs, and TestVectorsIndependent recomputes the key schedule with a
// second implementation written from the Noise specification on
// golang.org/x/crypto's primitives (not flynn/noise), so the document, the
// library and the specification cannot drift apart.
var vectors = map[string]string{
	"Spub":      "358072d6365880d1aeea329adf9121383851ed21a28e3b75e965d0d2cd166254",
	"Gpub":      "79a631eede1bf9c98f12032cdeadd0e7a079398fc786b88cc846ec89af85a51a",
	"Kmac":      "48ec85c023c78fbc12d537434de72c1d7f17ffeb29a10da9cf629c165016b4b0",
	"PSKnoise":  "995df98d225d05cb5161ffcd13f15a7f986835380b5a6c6ee083bbf3a5e7f29f",
	"HELLO":     "03010000010203041112131415161718a0a1a2a3a4a5a6a7a8a9aaabacadaeaf0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000f679a26842d61e1424838ce3b1263527",
	"CHALLENGE": "030200000102030400000000000003e88d653218330111b8cc7ec6ecec6fbeaa193d8c96fda97e27f888a11f4c0899eafb6609004eacbaed",
	"AUTH":      "03030000010203041112131415161718a0a1a2a3a4a5a6a7a8a9aaabacadaeaf00000000000003e88d653218330111b8cc7ec6ecec6fbeaa193d8c96fda97e27675dd574ed7789310b3d2e7681f3790b466c773b1521fecf36577958371ea52f7f3561e5c0e8d9c152ac965be05922a599b6ff6a6047d310db05dfc2ebd11c2fa39d8df0d3b86497f5f21a3c1ae7ca67623a2115d4a64268e2a4a518a2b32099fd5a2125d0d5499a9a122a5dff131e63",
	"Ks2g":      "5bf0a38d647f45ac523abb3cf52aae7bbdf4b3d400ae020ddf080c0c81d9b3bc",
	"Kg2s":      "2bf5a96ca5f01899768d47a5a32f1d95de9b71062a59e86bb93fa8afd42c17b3",
	"WELCOME":   "03100000010203040000000000000000493e82fc74464a59268817623d2053c5eb8e2cc4a988b4fee179ec6b010d531d86f226aab085ddddc22d5272f9e62f3875f017b2870e51965664b1949b8f2443a77cc74124de90bc94f4d087142f07ffdf113aff6f18918f",
	"HEARTBEAT": "031100000a0b0c0d00000000000000005db55ab9556f9bba089a31b207a4fde1230edb7948dd37cf470b3c7b55e3a59aa3d67131f332605b93e5d151045237fc",
}

func seq(from byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = from + byte(i)
	}
	return b
}

// vectorInputs are Appendix A's inputs.
type vectorInputs struct {
	psk           *Key
	srv, gw       StaticKey
	srvEph, gwEph []byte // ephemeral private keys
	sender        uint32
	instance      uint64
	nonce         [fschunk.NonceSize]byte
	from          netip.AddrPort
	gwIndex       uint32
	gwBoot        uint64
	cookieSecret  []byte
}

func appendixInputs(t *testing.T) vectorInputs {
	t.Helper()
	k, err := NewKey(seq(0, 32))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewStaticKey([32]byte(seq(0x20, 32)))
	if err != nil {
		t.Fatal(err)
	}
	gw, err := NewStaticKey([32]byte(seq(0x40, 32)))
	if err != nil {
		t.Fatal(err)
	}
	v := vectorInputs{psk: k, srv: srv, gw: gw, srvEph: seq(0x60, 32), gwEph: seq(0x80, 32),
		sender: 0x01020304, instance: 0x1112131415161718, from: netip.MustParseAddrPort("192.0.2.1:40000"),
		gwIndex: 0x0a0b0c0d, gwBoot: 0x2122232425262728, cookieSecret: bytes.Repeat([]byte{0x55}, 32)}
	copy(v.nonce[:], seq(0xa0, 16))
	return v
}

// computeVectors runs the handshake with the package's code on the
// appendix's inputs.
func computeVectors(t *testing.T, v vectorInputs) map[string][]byte {
	t.Helper()
	got := map[string][]byte{"Kmac": v.psk.macKey(v.gw.Public()), "PSKnoise": v.psk.noisePSK}
	sp, gp := v.srv.Public(), v.gw.Public()
	got["Spub"], got["Gpub"] = sp[:], gp[:]

	in, err := NewInitiator(v.psk, v.srv, []PublicKey{v.gw.Public()}, v.instance, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	in.rand = bytes.NewReader(v.srvEph)
	in.sender, in.nonce, in.started = v.sender, v.nonce, true
	hello := (&fschunk.Hello{Sender: v.sender, Instance: v.instance, Nonce: v.nonce}).Append(nil)
	putMAC(in.gateways[0].mac, hello, nil)
	got["HELLO"] = hello

	// The gateway's cookie clock reads 1000 s; its secret is 32 × 0x55.
	r, err := NewResponder(v.psk, []StaticKey{v.gw}, DefaultLimits, func() time.Duration { return 1000 * time.Second })
	if err != nil {
		t.Fatal(err)
	}
	r.rand = bytes.NewReader(v.gwEph)
	copy(r.cur[:], v.cookieSecret)
	chal, err := r.HandleHello(hello, v.from, nil)
	if err != nil {
		t.Fatal(err)
	}
	got["CHALLENGE"] = chal

	authMsg, err := in.HandleChallenge(chal, nil)
	if err != nil {
		t.Fatal(err)
	}
	got["AUTH"] = authMsg

	acc, err := r.HandleAuth(authMsg, v.from, nil)
	if err != nil {
		t.Fatal(err)
	}
	if acc.Peer != v.srv.Public() {
		t.Fatalf("the gateway read server key %s, want %s", acc.Peer, v.srv.Public())
	}
	got["Ks2g"], got["Kg2s"] = acc.s2g, acc.g2s
	gs, err := acc.NewSession(v.gwIndex, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	wel, err := Welcome(gs, fschunk.Welcome{GatewayIndex: v.gwIndex, GatewayBoot: v.gwBoot, HeartbeatInterval: time.Second, MaxDatagram: 1452}, nil, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	got["WELCOME"] = bytes.Clone(wel) // HandleWelcome opens it in place

	ss, _, err := in.HandleWelcome(wel, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	hb := fschunk.AppendHeader(nil, fschunk.Header{Type: fschunk.TypeHeartbeat})
	hb = (&fschunk.Heartbeat{Seq: 1, CatalogGen: 1, Files: 3}).Append(hb)
	hb, err = ss.Seal(hb, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	got["HEARTBEAT"] = hb
	return got
}

func TestVectors(t *testing.T) {
	got := computeVectors(t, appendixInputs(t))
	for name, want := range vectors {
		h := hex.EncodeToString(got[name])
		if h != strings.ReplaceAll(want, " ", "") {
			t.Errorf("%s = %s\nwant %s", name, h, want)
		}
	}
}

// ---------------------------------------------------------------- a second implementation

// Written from the Noise Protocol Framework, revision 34 (§4 and §5:
// CipherState, SymmetricState, HandshakeState; §9: the psk modifier) and
// RFC 5869 for the HKDFs around it, on x/crypto's BLAKE2s,
// ChaCha20-Poly1305 and X25519 and the standard library's HMAC.

type refSymmetric struct {
	ck, h, k []byte
	n        uint64
}

func refHash(parts ...[]byte) []byte {
	d, _ := blake2s.New256(nil)
	for _, p := range parts {
		d.Write(p)
	}
	return d.Sum(nil)
}

func refHMAC(newHash func() hash.Hash, key []byte, parts ...[]byte) []byte {
	m := hmac.New(newHash, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

func blake() hash.Hash { d, _ := blake2s.New256(nil); return d }

// refHKDF is Noise's HKDF (§4.3) with HMAC-BLAKE2s: three outputs.
func refHKDF(ck, ikm []byte) (o1, o2, o3 []byte) {
	temp := refHMAC(blake, ck, ikm)
	o1 = refHMAC(blake, temp, []byte{1})
	o2 = refHMAC(blake, temp, o1, []byte{2})
	o3 = refHMAC(blake, temp, o2, []byte{3})
	return
}

func newRefSymmetric(name string) *refSymmetric {
	h := make([]byte, 32)
	if len(name) <= 32 {
		copy(h, name)
	} else {
		h = refHash([]byte(name))
	}
	return &refSymmetric{ck: bytes.Clone(h), h: h}
}

func (s *refSymmetric) mixHash(data []byte) { s.h = refHash(s.h, data) }
func (s *refSymmetric) mixKey(ikm []byte) {
	s.ck, s.k, _ = refHKDF(s.ck, ikm)
	s.n = 0
}
func (s *refSymmetric) mixKeyAndHash(ikm []byte) {
	var th []byte
	s.ck, th, s.k = refHKDF(s.ck, ikm)
	s.mixHash(th)
	s.n = 0
}

func refNonce(n uint64) []byte {
	nonce := make([]byte, 12)
	binary.LittleEndian.PutUint64(nonce[4:], n)
	return nonce
}

func (s *refSymmetric) encryptAndHash(p []byte) []byte {
	a, _ := chacha20poly1305.New(s.k)
	c := a.Seal(nil, refNonce(s.n), p, s.h)
	s.n++
	s.mixHash(c)
	return c
}

func (s *refSymmetric) split() (k1, k2 []byte) {
	k1, k2, _ = refHKDF(s.ck, nil)
	return
}

func refDH(priv, pub []byte) []byte {
	out, err := curve25519.X25519(priv, pub)
	if err != nil {
		panic(err)
	}
	return out
}

// refRFC5869 is HKDF-SHA256 (RFC 5869 §2.2, §2.3) for 32 bytes.
func refRFC5869(ikm, salt []byte, info string) []byte {
	if salt == nil {
		salt = make([]byte, sha256.Size)
	}
	prk := refHMAC(sha256.New, salt, ikm)
	return refHMAC(sha256.New, prk, []byte(info), []byte{1})
}

// TestVectorsIndependent recomputes the handshake's keys and Noise
// messages from the appendix's inputs with the second implementation and
// checks the first one's against them.
func TestVectorsIndependent(t *testing.T) {
	v := appendixInputs(t)
	got := computeVectors(t, v)
	want := map[string][]byte{}

	psk := seq(0, 32)
	gwPub := refDH(v.gw.private[:], curve25519.Basepoint)
	srvPub := refDH(v.srv.private[:], curve25519.Basepoint)
	want["Spub"], want["Gpub"] = srvPub, gwPub
	want["Kmac"] = refRFC5869(psk, gwPub, "fschunk v3 handshake mac")
	noisePSK := refRFC5869(psk, nil, "fschunk v3 noise psk")
	want["PSKnoise"] = noisePSK

	// Message 1 (server → gateway): -> e, es, s, ss, with the pre-message
	// <- s (the gateway's static key) and the psk modifier's MixKey(e).
	ss := newRefSymmetric("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s")
	pro := append([]byte("fschunk v3"), binary.BigEndian.AppendUint32(nil, v.sender)...)
	pro = binary.BigEndian.AppendUint64(pro, v.instance)
	pro = append(pro, v.nonce[:]...)
	ss.mixHash(pro)
	ss.mixHash(gwPub)
	ePub := refDH(v.srvEph, curve25519.Basepoint)
	msg1 := bytes.Clone(ePub)
	ss.mixHash(ePub)
	ss.mixKey(ePub)
	ss.mixKey(refDH(v.srvEph, gwPub))
	msg1 = append(msg1, ss.encryptAndHash(srvPub)...)
	ss.mixKey(refDH(v.srv.private[:], gwPub))
	msg1 = append(msg1, ss.encryptAndHash(nil)...)
	if a := got["AUTH"]; !bytes.Equal(a[64:64+fschunk.NoiseInitSize], msg1) {
		t.Errorf("AUTH's Noise message 1 = %x\nindependent   %x", a[64:64+fschunk.NoiseInitSize], msg1)
	}

	// Message 2 (gateway → server): <- e, ee, se, psk.
	rPub := refDH(v.gwEph, curve25519.Basepoint)
	msg2 := bytes.Clone(rPub)
	ss.mixHash(rPub)
	ss.mixKey(rPub)
	ss.mixKey(refDH(v.gwEph, ePub))
	ss.mixKey(refDH(v.gwEph, srvPub))
	ss.mixKeyAndHash(noisePSK)
	msg2 = append(msg2, ss.encryptAndHash(nil)...)
	if w := got["WELCOME"]; !bytes.Equal(w[fschunk.HeaderSize:fschunk.HeaderSize+fschunk.NoiseResponseSize], msg2) {
		t.Errorf("WELCOME's Noise message 2 = %x\nindependent     %x", w[fschunk.HeaderSize:fschunk.HeaderSize+fschunk.NoiseResponseSize], msg2)
	}
	want["Ks2g"], want["Kg2s"] = ss.split()

	// The MACs of the three handshake messages (HMAC-SHA256, 16 bytes).
	mac := func(msg, extra []byte) []byte {
		return refHMAC(sha256.New, want["Kmac"], msg[:len(msg)-fschunk.MACSize], extra)[:fschunk.MACSize]
	}
	for name, extra := range map[string][]byte{"HELLO": nil, "CHALLENGE": v.nonce[:], "AUTH": nil} {
		m := got[name]
		if w := mac(m, extra); !bytes.Equal(m[len(m)-fschunk.MACSize:], w) {
			t.Errorf("%s MAC = %x, independent %x", name, m[len(m)-fschunk.MACSize:], w)
		}
	}
	// The WELCOME's body, sealed with AES-256-GCM under Kg2s: header and
	// Noise message 2 as additional data, receiver index and counter as
	// the nonce.
	w := got["WELCOME"]
	ad := fschunk.HeaderSize + fschunk.NoiseResponseSize
	if body, err := openGCM(want["Kg2s"], w[4:16], w[ad:], w[:ad]); err != nil || len(body) != fschunk.WelcomeBodySize {
		t.Errorf("WELCOME does not open under the independent Kg2s: %v", err)
	}
	for name, k := range want {
		if !bytes.Equal(got[name], k) {
			t.Errorf("%s = %x\nindependent %x", name, got[name], k)
		}
	}
}

func openGCM(key, nonce, ct, ad []byte) ([]byte, error) {
	a, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	return a.Open(nil, nonce, ct, ad)
}
