package fschunk

import (
	"bytes"
	"testing"
)

// fuzzDecoder checks one decoder: it never panics, and whatever it accepts
// re-encodes to exactly the same bytes, so there is one encoding of every
// message and nothing (reserved bits, trailing bytes) slips through.
func fuzzDecoder(f *testing.F, name string, fresh func() message) {
	for _, m := range samples()[name] {
		f.Add(m.Append(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := fresh()
		if err := m.Decode(b); err != nil {
			return
		}
		if re := m.Append(nil); !bytes.Equal(re, b) {
			t.Fatalf("accepted %x but re-encodes as %x", b, re)
		}
	})
}

func FuzzHello(f *testing.F) { fuzzDecoder(f, "Hello", func() message { return new(Hello) }) }
func FuzzChallenge(f *testing.F) {
	fuzzDecoder(f, "Challenge", func() message { return new(Challenge) })
}
func FuzzAuth(f *testing.F)    { fuzzDecoder(f, "Auth", func() message { return new(Auth) }) }
func FuzzWelcome(f *testing.F) { fuzzDecoder(f, "Welcome", func() message { return new(Welcome) }) }
func FuzzHeartbeat(f *testing.F) {
	fuzzDecoder(f, "Heartbeat", func() message { return new(Heartbeat) })
}
func FuzzHeartbeatAck(f *testing.F) {
	fuzzDecoder(f, "HeartbeatAck", func() message { return new(HeartbeatAck) })
}
func FuzzGoodbye(f *testing.F) { fuzzDecoder(f, "Goodbye", func() message { return new(Goodbye) }) }
func FuzzCatalogPage(f *testing.F) {
	fuzzDecoder(f, "CatalogPage", func() message { return new(CatalogPage) })
}
func FuzzCatalogDelta(f *testing.F) {
	fuzzDecoder(f, "CatalogDelta", func() message { return new(CatalogDelta) })
}
func FuzzCatalogAck(f *testing.F) {
	fuzzDecoder(f, "CatalogAck", func() message { return new(CatalogAck) })
}
func FuzzMetaRequest(f *testing.F) {
	fuzzDecoder(f, "MetaRequest", func() message { return new(MetaRequest) })
}
func FuzzMeta(f *testing.F)  { fuzzDecoder(f, "Meta", func() message { return new(Meta) }) }
func FuzzRead(f *testing.F)  { fuzzDecoder(f, "Read", func() message { return new(Read) }) }
func FuzzData(f *testing.F)  { fuzzDecoder(f, "Data", func() message { return new(Data) }) }
func FuzzError(f *testing.F) { fuzzDecoder(f, "Error", func() message { return new(Error) }) }
func FuzzHashRequest(f *testing.F) {
	fuzzDecoder(f, "HashRequest", func() message { return new(HashRequest) })
}
func FuzzHashes(f *testing.F) { fuzzDecoder(f, "Hashes", func() message { return new(Hashes) }) }

// FuzzHeader: the transport header parser never panics and accepts only
// version-1 transport types with zero reserved bytes.
func FuzzHeader(f *testing.F) {
	f.Add(append(AppendHeader(nil, Header{Type: TypeData, Receiver: 1, Counter: 2}), make([]byte, TagSize)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			return
		}
		if b[0] != Version || b[2]|b[3] != 0 || h.Type.IsHandshake() || len(b) < Overhead {
			t.Fatalf("accepted %x", b)
		}
	})
}
