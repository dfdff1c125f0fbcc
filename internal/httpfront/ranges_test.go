package httpfront

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestPlanRanges(t *testing.T) {
	const size = 1000
	for _, tt := range []struct {
		in, hdr string
		plan    []byteRange
	}{
		{"bytes=0-0", "bytes=0-0", []byteRange{{0, 1}}},
		{"Bytes = 10-19", "bytes=10-19", []byteRange{{10, 20}}},
		{"bytes=-7", "bytes=993-999", []byteRange{{993, 1000}}},
		{"bytes=990-5000", "bytes=990-999", []byteRange{{990, 1000}}},
		{"bytes=-0", "bytes=1000-", nil},
		{"bytes=1000-,2000-3000", "bytes=1000-", nil},
		{"bytes=-0,0-4", "bytes=0-4", []byteRange{{0, 5}}},
		{"items=0-5", "", nil},
		{"0-5", "", nil},
		{"bytes=abc", "bytes=abc", nil},
		{"bytes=5-1", "bytes=5-1", nil},
		{"bytes=+5-9", "bytes=+5-9", nil},
		{"bytes=99999999999999999999-", "bytes=99999999999999999999-", nil},
		// Sorted, overlapping and near ranges merged, empty elements skipped.
		{"bytes=500-,0-9,,-5,20-29", "bytes=0-29,500-999", []byteRange{{0, 30}, {500, 1000}}},
		{"bytes=0-9,90-99", "bytes=0-99", []byteRange{{0, 100}}}, // a gap of 80 bytes
		{"bytes=0-9,91-99", "bytes=0-9,91-99", []byteRange{{0, 10}, {91, 100}}},
		{"bytes=0-9,89-99", "bytes=0-99", []byteRange{{0, 100}}},
		{"bytes=0-0,0-0,0-0", "bytes=0-0", []byteRange{{0, 1}}},
	} {
		hdr, plan := planRanges(tt.in, size, DefaultMaxRanges)
		if hdr != tt.hdr || !slices.Equal(plan, tt.plan) {
			t.Errorf("planRanges(%q) = %q, %v; want %q, %v", tt.in, hdr, plan, tt.hdr, tt.plan)
		}
	}
	// The cap counts ranges after merging.
	var specs []string
	for i := range 10 {
		specs = append(specs, fmt.Sprintf("%d-%d", i*100, i*100))
	}
	hdr := "bytes=" + strings.Join(specs, ",")
	if got, plan := planRanges(hdr, size, 10); len(plan) != 10 || got == "" {
		t.Errorf("10 ranges, cap 10: %q, %d ranges", got, len(plan))
	}
	if got, plan := planRanges(hdr, size, 9); got != "" || plan != nil {
		t.Errorf("10 ranges, cap 9: %q, %v; want the whole file", got, plan)
	}
	if got, plan := planRanges(hdr+",0-999", size, 1); got != "bytes=0-999" || len(plan) != 1 {
		t.Errorf("10 ranges inside one, cap 1: %q, %v", got, plan)
	}
}

// TestRangesCapped: more ranges than the cap (after merging) get the
// whole file with 200, as nginx does past max_ranges.
func TestRangesCapped(t *testing.T) {
	data := randomBytes(3, 1<<20)
	ts := newTestServer(t, newFakeSource(newFile("big.bin", data)))
	var specs []string
	for i := range DefaultMaxRanges + 1 {
		specs = append(specs, fmt.Sprintf("%d-%d", i*1000, i*1000))
	}
	resp, body := ts.do(t, "GET", "/big.bin", "Range", "bytes="+strings.Join(specs, ","))
	if resp.StatusCode != http.StatusOK || len(body) != len(data) {
		t.Fatalf("%d ranges: status %d, %d bytes; want 200 and the whole file", len(specs), resp.StatusCode, len(body))
	}
	resp, body = ts.do(t, "GET", "/big.bin", "Range", "bytes="+strings.Join(specs[1:], ","))
	if resp.StatusCode != http.StatusPartialContent || len(body) < DefaultMaxRanges || len(body) > 200*DefaultMaxRanges {
		t.Fatalf("%d ranges: status %d, %d bytes; want 206 multipart", len(specs)-1, resp.StatusCode, len(body))
	}
}

// TestRangeLimits: the Content is told where each range ends before it
// is read there, so that it fetches nothing past it; without a Range,
// it is told nothing.
func TestRangeLimits(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprint("direct=", direct), func(t *testing.T) {
			data := randomBytes(4, 1000)
			src := newFakeSource(newFile("r.bin", data))
			src.direct = direct
			ts := newTestServer(t, src)
			for _, c := range []struct {
				rng  string
				want []int64
			}{
				{"", nil},
				{"bytes=0-0", []int64{1}},
				{"bytes=-10", nil}, // the range ends at the end of the file
				{"bytes=500-599,0-9", []int64{10, 600}},
			} {
				src.mu.Lock()
				src.limits = nil
				src.mu.Unlock()
				var kv []string
				if c.rng != "" {
					kv = []string{"Range", c.rng}
				}
				resp, _ := ts.do(t, "GET", "/r.bin", kv...)
				src.mu.Lock()
				got := src.limits
				src.mu.Unlock()
				if resp.StatusCode/100 != 2 || !slices.Equal(got, c.want) {
					t.Errorf("Range %q: status %d, limits %v; want %v", c.rng, resp.StatusCode, got, c.want)
				}
			}
		})
	}
}
