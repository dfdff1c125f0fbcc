package fschunk

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// message is what every codec type implements.
type message interface {
	Append([]byte) []byte
	Decode([]byte) error
}

func sampleEntry(p string, size int64) Entry {
	return Entry{Hash: sha256.Sum256([]byte(p)), Size: size, ModTime: time.Unix(1700000000, 123456789).UTC(), Path: p}
}

// samples returns one valid value of every message, keyed by fuzz target name.
func samples() map[string][]message {
	nonce := [NonceSize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	var cookie [CookieSize]byte
	copy(cookie[:], bytes.Repeat([]byte{0xc0}, CookieSize))
	mac := [MACSize]byte{0xaa, 0xbb}
	return map[string][]message{
		"Hello":        {&Hello{Sender: 7, Instance: 0x0102030405060708, Nonce: nonce, MAC: mac}},
		"Challenge":    {&Challenge{Receiver: 7, Cookie: cookie, MAC: mac}},
		"Auth":         {&Auth{Sender: 7, Instance: 9, Nonce: nonce, Cookie: cookie, Noise: [NoiseInitSize]byte{1, 2, 3}, MAC: mac}},
		"Welcome":      {&Welcome{GatewayIndex: 3, GatewayBoot: 99, HeartbeatInterval: time.Second, MaxDatagram: DefaultDatagramSize}},
		"Heartbeat":    {&Heartbeat{Seq: 1, ReadsActive: 2, TxRate: 3 << 30, CatalogGen: 4, Files: 5}, &Heartbeat{Seq: 2, Name: "files-01.example"}},
		"HeartbeatAck": {&HeartbeatAck{Seq: 1, CatalogGen: 4}, &HeartbeatAck{}},
		"Goodbye":      {&Goodbye{Reason: GoodbyeShutdown}, &Goodbye{Reason: GoodbyeRekeyed}, &Goodbye{Reason: GoodbyeRevoked}},
		"CatalogPage": {
			&CatalogPage{Gen: 1, Page: 0, Pages: 1, Entries: []Entry{}},
			&CatalogPage{Gen: 2, Page: 1, Pages: 3, Entries: []Entry{sampleEntry("a.txt", 0), sampleEntry("dir/with space/ünï.bin", 1<<40)}},
		},
		"CatalogDelta": {&CatalogDelta{Base: 1, Gen: 2, Page: 0, Pages: 1,
			Entries: []Entry{sampleEntry("new.txt", 5), {Path: "gone.txt"}}, Removed: []bool{false, true}}},
		"CatalogAck":  {&CatalogAck{Gen: 2, Page: 1, Status: CatalogOK}, &CatalogAck{Gen: 2, Status: CatalogResync}},
		"MetaRequest": {&MetaRequest{ID: 5, Path: "docs/report.pdf"}},
		"Meta":        {&Meta{ID: 5, Entry: sampleEntry("docs/report.pdf", 1234)}},
		"Read": {&Read{ID: 8, Hash: sha256.Sum256([]byte("x")), MaxDatagram: DefaultDatagramSize, Pace: 12207,
			Ranges: []Range{{0, 1}, {1 << 33, MaxReadLength}}}},
		"Data":  {&Data{ID: 8, Offset: 1 << 33, Payload: []byte("hello, world")}},
		"Error": {&Error{ID: 8, Code: CodeStale, Message: "file changed"}, &Error{ID: 1, Code: 999}},
		"HashRequest": {&HashRequest{ID: 9, Hash: sha256.Sum256([]byte("x")), Level: 5, Count: TreeBlockNodes, Index: 64},
			&HashRequest{ID: 10, Level: MaxTreeLevel, Count: 1}},
		"Hashes": {&Hashes{ID: 9, Level: 5, Index: 64, Nodes: bytes.Repeat([]byte{7}, TreeBlockNodes*HashSize)},
			&Hashes{ID: 10, Level: 0, Index: 0, Nodes: make([]byte, HashSize)}},
	}
}

func newOf(m message) message { return reflect.New(reflect.TypeOf(m).Elem()).Interface().(message) }

func TestRoundTrip(t *testing.T) {
	for name, ms := range samples() {
		for i, m := range ms {
			t.Run(fmt.Sprintf("%s/%d", name, i), func(t *testing.T) {
				enc := m.Append(nil)
				got := newOf(m)
				if err := got.Decode(enc); err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if re := got.Append(nil); !bytes.Equal(re, enc) {
					t.Fatalf("re-encoding differs:\n%x\n%x", re, enc)
				}
				// Every strict prefix is refused, and so is one extra byte.
				limit := len(enc)
				if _, ok := m.(*Data); ok {
					limit = DataHeaderSize + 1 // a shorter payload is still a payload
				}
				for n := 0; n < limit; n++ {
					if err := newOf(m).Decode(enc[:n]); err == nil {
						t.Fatalf("truncated to %d of %d bytes: accepted", n, len(enc))
					}
				}
				if _, ok := m.(*Data); !ok { // DATA's payload runs to the end by design
					if err := newOf(m).Decode(append(enc, 0)); err == nil {
						t.Fatal("trailing byte accepted")
					}
				}
			})
		}
	}
}

func TestHandshakeSizes(t *testing.T) {
	s := samples()
	for name, want := range map[string]int{"Hello": HelloSize, "Challenge": ChallengeSize, "Auth": AuthSize} {
		if got := len(s[name][0].Append(nil)); got != want {
			t.Errorf("%s is %d bytes, want %d", name, got, want)
		}
	}
	// Anti-amplification: an unproven sender never gets more than it sent.
	if ChallengeSize > HelloSize {
		t.Error("CHALLENGE larger than HELLO")
	}
	for m, want := range map[message]int{s["Heartbeat"][0]: heartbeatSize, s["HeartbeatAck"][0]: heartbeatAckSize, s["Welcome"][0]: WelcomeBodySize} {
		if got := len(m.Append(nil)); got != want {
			t.Errorf("%T body is %d bytes, want %d", m, got, want)
		}
	}
	if WelcomeSize > AuthSize {
		t.Error("WELCOME larger than AUTH")
	}
}

func TestStrictness(t *testing.T) {
	hello := samples()["Hello"][0].Append(nil)
	mut := func(b []byte, f func([]byte)) []byte { c := bytes.Clone(b); f(c); return c }
	cases := []struct {
		name string
		m    message
		b    []byte
		want error
	}{
		{"version 1", &Hello{}, mut(hello, func(b []byte) { b[0] = 1 }), ErrVersion},
		{"version 2", &Hello{}, mut(hello, func(b []byte) { b[0] = 2 }), ErrVersion},
		{"version 4", &Hello{}, mut(hello, func(b []byte) { b[0] = 4 }), ErrVersion},
		{"reserved prefix", &Hello{}, mut(hello, func(b []byte) { b[3] = 1 }), ErrReserved},
		{"padding", &Hello{}, mut(hello, func(b []byte) { b[50] = 1 }), ErrReserved},
		{"wrong type", &Challenge{}, hello, ErrType},
		{"zero ranges", &Read{}, (&Read{MaxDatagram: DefaultDatagramSize}).Append(nil), ErrInvalid},
		{"tiny datagram", &Read{}, (&Read{MaxDatagram: 100, Ranges: []Range{{0, 1}}}).Append(nil), ErrInvalid},
		{"empty range", &Read{}, (&Read{MaxDatagram: DefaultDatagramSize, Ranges: []Range{{0, 0}}}).Append(nil), ErrInvalid},
		{"huge range", &Read{}, (&Read{MaxDatagram: DefaultDatagramSize, Ranges: []Range{{0, MaxReadLength + 1}}}).Append(nil), ErrInvalid},
		{"negative offset", &Read{}, (&Read{MaxDatagram: DefaultDatagramSize, Ranges: []Range{{-1, 1}}}).Append(nil), ErrInvalid},
		{"empty data", &Data{}, (&Data{ID: 1}).Append(nil), ErrShort},
		{"page ≥ pages", &CatalogPage{}, (&CatalogPage{Gen: 1, Page: 1, Pages: 1}).Append(nil), ErrInvalid},
		{"generation 0", &CatalogPage{}, (&CatalogPage{Page: 0, Pages: 1}).Append(nil), ErrInvalid},
		{"delta backwards", &CatalogDelta{}, (&CatalogDelta{Base: 3, Gen: 3, Pages: 1}).Append(nil), ErrInvalid},
		{"dotdot path", &MetaRequest{}, (&MetaRequest{Path: "../etc/passwd"}).Append(nil), ErrPath},
		{"absolute path", &MetaRequest{}, (&MetaRequest{Path: "/etc/passwd"}).Append(nil), ErrPath},
		{"unclean path", &MetaRequest{}, (&MetaRequest{Path: "a//b"}).Append(nil), ErrPath},
		{"NUL path", &MetaRequest{}, (&MetaRequest{Path: "a\x00b"}).Append(nil), ErrPath},
		{"backslash path", &MetaRequest{}, (&MetaRequest{Path: `a\..\b`}).Append(nil), ErrPath},
		{"overlong UTF-8 path", &MetaRequest{}, (&MetaRequest{Path: "\xc0\xae\xc0\xae/x"}).Append(nil), ErrPath},
		{"long path", &MetaRequest{}, (&MetaRequest{Path: strings.Repeat("a", MaxPathLen+1)}).Append(nil), ErrPath},
		{"error code 0", &Error{}, (&Error{ID: 1}).Append(nil), ErrInvalid},
		{"ack status", &CatalogAck{}, (&CatalogAck{Gen: 1, Status: 7}).Append(nil), ErrInvalid},
		{"size above MaxFileSize", &CatalogPage{}, (&CatalogPage{Gen: 1, Pages: 1, Entries: []Entry{{Path: "a", Size: MaxFileSize + 1}}}).Append(nil), ErrInvalid},
		{"size 2^63-1", &CatalogPage{}, (&CatalogPage{Gen: 1, Pages: 1, Entries: []Entry{{Path: "a", Size: math.MaxInt64}}}).Append(nil), ErrInvalid},
		{"negative size", &CatalogPage{}, (&CatalogPage{Gen: 1, Pages: 1, Entries: []Entry{{Path: "a", Size: -1}}}).Append(nil), ErrInvalid},
		{"read past MaxFileSize", &Read{}, (&Read{ID: 1, MaxDatagram: 1452, Ranges: []Range{{Offset: MaxFileSize - 1, Length: 2}}}).Append(nil), ErrInvalid},
		{"read offset wraps", &Read{}, (&Read{ID: 1, MaxDatagram: 1452, Ranges: []Range{{Offset: -1, Length: 2}}}).Append(nil), ErrInvalid},
		{"data past MaxFileSize", &Data{}, (&Data{ID: 1, Offset: MaxFileSize - 1, Payload: []byte{1, 2}}).Append(nil), ErrInvalid},
		{"data offset wraps", &Data{}, (&Data{ID: 1, Offset: -1, Payload: []byte{1, 2}}).Append(nil), ErrInvalid},
		{"welcome datagram", &Welcome{}, (&Welcome{HeartbeatInterval: time.Second, MaxDatagram: 10}).Append(nil), ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.m.Decode(c.b); !errors.Is(err, c.want) {
				t.Fatalf("Decode = %v, want %v", err, c.want)
			}
		})
	}
}

func TestHeader(t *testing.T) {
	b := AppendHeader(nil, Header{Type: TypeData})
	PutHeaderIDs(b, 42, 1<<50)
	b = append(b, make([]byte, TagSize)...)
	h, err := ParseHeader(b)
	if err != nil || h != (Header{Type: TypeData, Receiver: 42, Counter: 1 << 50}) {
		t.Fatalf("ParseHeader = %+v, %v", h, err)
	}
	if _, err := ParseHeader(b[:Overhead-1]); !errors.Is(err, ErrShort) {
		t.Fatalf("short header: %v", err)
	}
	b[1] = byte(TypeHello)
	if _, err := ParseHeader(b); !errors.Is(err, ErrType) {
		t.Fatalf("handshake type as transport: %v", err)
	}
}

func TestSplitPages(t *testing.T) {
	var es []Entry
	for i := 0; i < 1000; i++ {
		es = append(es, sampleEntry(fmt.Sprintf("dir%03d/file-%d.bin", i%17, i), int64(i)))
	}
	budget := DefaultDatagramSize - Overhead
	pages, err := SplitPages(es, budget, CatalogPageHeaderSize, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i, p := range pages {
		body := (&CatalogPage{Gen: 1, Page: uint32(i), Pages: uint32(len(pages)), Entries: p}).Append(nil)
		if len(body) > budget {
			t.Fatalf("page %d is %d bytes, budget %d", i, len(body), budget)
		}
		n += len(p)
	}
	if n != len(es) {
		t.Fatalf("pages hold %d entries, want %d", n, len(es))
	}
	if pages, _ := SplitPages(nil, budget, CatalogPageHeaderSize, 0); len(pages) != 1 || len(pages[0]) != 0 {
		t.Fatalf("empty catalog: %d pages", len(pages))
	}
	if _, err := SplitPages(es[:1], 60, CatalogPageHeaderSize, 0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized entry: %v", err)
	}
}

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz seed corpora from samples()")

// TestSeedCorpus keeps the committed seed corpus in step with samples():
// each committed file must decode, and -update-corpus rewrites them.
func TestSeedCorpus(t *testing.T) {
	for name, ms := range samples() {
		dir := filepath.Join("testdata", "fuzz", "Fuzz"+name)
		for i, m := range ms {
			file := filepath.Join(dir, fmt.Sprintf("seed-%d", i))
			want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", m.Append(nil))
			if *updateCorpus {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(file)
			if err != nil || string(got) != want {
				t.Errorf("%s is missing or stale (run go test -run TestSeedCorpus -update-corpus): %v", file, err)
			}
		}
	}
}

func TestGoodbyeReasonString(t *testing.T) {
	for r, want := range map[GoodbyeReason]string{GoodbyeShutdown: "shutdown", GoodbyeRekeyed: "rekeyed", GoodbyeRevoked: "revoked", 9: "unknown(9)"} {
		if got := r.String(); got != want {
			t.Errorf("%d: %q, want %q", uint16(r), got, want)
		}
	}
}

// TestHeartbeatName: the server's name travels in HEARTBEAT and bad names
// are refused by the decoder.
func TestHeartbeatName(t *testing.T) {
	for _, name := range []string{"", "srv-1", "bücher.example", strings.Repeat("n", MaxServerName)} {
		var got Heartbeat
		in := Heartbeat{Seq: 3, Name: name}
		if err := got.Decode(in.Append(nil)); err != nil || got.Name != name {
			t.Errorf("%q: decoded %q, %v", name, got.Name, err)
		}
	}
	for _, name := range []string{"two words", "tab\t", "bad\xff", strings.Repeat("n", MaxServerName+1)} {
		var got Heartbeat
		in := Heartbeat{Seq: 3, Name: name}
		if err := got.Decode(in.Append(nil)); err == nil {
			t.Errorf("%q accepted", name)
		}
	}
}
