package fschunk

import (
	"testing"
)

func BenchmarkDecodeData(b *testing.B) {
	body := (&Data{ID: 1, Offset: 1 << 20, Payload: make([]byte, DefaultDatagramSize-DataOverhead)}).Append(nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	var d Data
	for b.Loop() {
		if err := d.Decode(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeRead(b *testing.B) {
	r := Read{ID: 1, MaxDatagram: DefaultDatagramSize, Ranges: []Range{{0, 1 << 20}}}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = r.Append(buf[:0])
	}
}

func BenchmarkDecodeRead(b *testing.B) {
	body := (&Read{ID: 1, MaxDatagram: DefaultDatagramSize, Ranges: []Range{{0, 1 << 20}, {4 << 20, 4096}}}).Append(nil)
	var r Read
	b.ReportAllocs()
	for b.Loop() {
		if err := r.Decode(body); err != nil {
			b.Fatal(err)
		}
	}
}
