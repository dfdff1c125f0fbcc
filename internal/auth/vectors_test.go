package auth

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/fschunk"
)

// vectors are docs/PROTOCOL.md's Appendix A, as hex. The test recomputes
// every one from the appendix's inputs, so the document and the code
// cannot drift apart.
var vectors = map[string]string{
	"Kmac":      "63f7338f0924f3fdd404c9a59543192ca222fceccb7f06ee0ccb52a903532262",
	"HELLO":     "03010000010203041112131415161718a0a1a2a3a4a5a6a7a8a9aaabacadaeaf0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000457fd1041a51f52a33343d3d55d7ed6c",
	"Cookie":    "00000000000003e88d653218330111b8cc7ec6ecec6fbeaa193d8c96fda97e27",
	"CHALLENGE": "030200000102030400000000000003e88d653218330111b8cc7ec6ecec6fbeaa193d8c96fda97e276c64b9ac850e9cf644e0bcf1462d5bf0",
	"AUTH":      "03030000010203041112131415161718a0a1a2a3a4a5a6a7a8a9aaabacadaeaf00000000000003e88d653218330111b8cc7ec6ecec6fbeaa193d8c96fda97e272479672f74435cf95f9b7e8706f0954e",
	"Ks2g":      "c31ce4a1e65df38afd60f44411ccf02af1ec96103ecb9e9fe8221a4e0621543f",
	"Kg2s":      "8878535eb0cfe30ae5e5f67c33e29b623582c4402b768805366a54a8d8ef4e38",
	"WELCOME":   "03100000010203040000000000000000b0b1b2b3b4b5b6b7b8b9babbbcbdbebf438f937209c3c4dffe15667a2b72e46730c668947d68c1be9b4627b914c1501db00e7f28085a91f9",
	"HEARTBEAT": "031100000a0b0c0d000000000000000080da8f1e81cc0605999446fc839f53f5542f0a55920862ce8cacb95411e866edc60a126a6f963271c3323f203134ed61",
}

func seq(from byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = from + byte(i)
	}
	return b
}

func TestVectors(t *testing.T) {
	k, err := NewKey(seq(0, 32))
	if err != nil {
		t.Fatal(err)
	}
	const sender, instance = 0x01020304, 0x1112131415161718
	var nonce [fschunk.NonceSize]byte
	copy(nonce[:], seq(0xa0, 16))
	from := netip.MustParseAddrPort("192.0.2.1:40000")
	got := map[string][]byte{"Kmac": k.macKey}

	hello := (&fschunk.Hello{Sender: sender, Instance: instance, Nonce: nonce}).Append(nil)
	m := k.mac(hello[:len(hello)-fschunk.MACSize], nil)
	copy(hello[len(hello)-fschunk.MACSize:], m[:])
	got["HELLO"] = hello

	// The gateway's cookie clock reads 1000 s; its secret is 32 × 0x55.
	r := NewResponder(k, DefaultLimits, func() time.Duration { return 1000 * time.Second })
	copy(r.cur[:], bytes.Repeat([]byte{0x55}, 32))
	chal, err := r.HandleHello(hello, from, nil)
	if err != nil {
		t.Fatal(err)
	}
	got["CHALLENGE"] = chal
	got["Cookie"] = chal[8:40]

	in := &Initiator{key: k, instance: instance, limits: DefaultLimits, sender: sender, nonce: nonce, started: true}
	authMsg, err := in.HandleChallenge(chal, nil)
	if err != nil {
		t.Fatal(err)
	}
	got["AUTH"] = authMsg

	acc, err := r.HandleAuth(authMsg, from)
	if err != nil {
		t.Fatal(err)
	}
	// The gateway random value is b0 b1 … bf.
	copy(acc.random[:], seq(0xb0, 16))
	acc.s2g, acc.g2s, err = k.sessionKeys(acc.Nonce, in.cookie, acc.random, sender, instance)
	if err != nil {
		t.Fatal(err)
	}
	got["Ks2g"], got["Kg2s"] = acc.s2g, acc.g2s
	gs, err := acc.NewSession(0x0a0b0c0d, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	wel, err := Welcome(gs, fschunk.Welcome{GatewayIndex: 0x0a0b0c0d, GatewayBoot: 0x2122232425262728, HeartbeatInterval: time.Second, MaxDatagram: 1452}, nil, time.Unix(0, 0))
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

	for name, want := range vectors {
		h := hex.EncodeToString(got[name])
		if h != strings.ReplaceAll(want, " ", "") {
			t.Errorf("%s = %s\nwant %s", name, h, want)
		}
	}
}
