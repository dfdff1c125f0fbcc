//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"100MiB": 100 << 20, "16M": 16 << 20, "1G": 1 << 30, "4096": 4096, "2KiB": 2048, "3mb": 3 << 20} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-5M", "0", "10Q"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q): no error", in)
		}
	}
}

func TestGridCases(t *testing.T) {
	cs, err := gridCases(options{})
	if err != nil || len(cs) != 9 {
		t.Fatalf("default grid: %d cases, %v", len(cs), err)
	}
	cs, err = gridCases(options{grid: "30ms/0.01, 100ms/0"})
	if err != nil || len(cs) != 2 || cs[0].Delay != 30*time.Millisecond || cs[0].Loss != 0.01 || cs[1].Delay != 100*time.Millisecond {
		t.Fatalf("-grid: %+v, %v", cs, err)
	}
	for _, bad := range []string{"30ms", "x/0", "30ms/1", "30ms/-0.1", "-5ms/0"} {
		if _, err := gridCases(options{grid: bad}); err == nil {
			t.Errorf("-grid %q: no error", bad)
		}
	}
}

// fakeResults is a run where the gateway meets the 60 ms goal and misses
// the 200 ms one.
func fakeResults() *results {
	c := capacity(nServers)
	mk := func(tool string, rate float64) transfer {
		return transfer{Tool: tool, Bytes: 100 << 20, Seconds: float64(100<<20) / rate}
	}
	g1 := mk("curl via httpgw", 0.95*c)
	g1.DupBytes = 0.01 * (100 << 20)
	return &results{
		Date: time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC), Commit: "abc1234", Machine: "test", Size: 100 << 20, ShortSz: 16 << 20,
		Opts: []string{"-note", "it's"},
		Cases: []*wanCase{
			{Delay: 30 * time.Millisecond, Gateway: g1, Aria2: []transfer{mk("aria2c -x1 -s3 -k1M", 0.5*c), mk("aria2c -x16 -s16 -k1M", 0.6*c)}},
			{Delay: 100 * time.Millisecond, Loss: 0.01, Gateway: mk("curl via httpgw", 0.5*c), Aria2: []transfer{mk("aria2c -x1 -s3 -k1M", 0.4*c), {Tool: "aria2c", Err: "boom"}}},
		},
		Short: &wanCase{Delay: 30 * time.Millisecond, Gateway: func() transfer { x := mk("curl via httpgw", 0.7*c); x.FirstByte = 0.2; return x }()},
		Fair:  &fairResult{Delay: 30 * time.Millisecond, Alone: mk("gw", c/3), GW: transfer{Bytes: 36e6, Seconds: 12, Capped: true}, TCP: transfer{Bytes: 108e6, Seconds: 12, Capped: true}},
	}
}

func TestMarkdownVerdicts(t *testing.T) {
	md := markdown(fakeResults(), true)
	for _, want := range []string{
		"| RTT 60 ms, no loss | 0.95 of capacity, 1.58× aria2 | ≥ 0.90, ahead of aria2 | MET |",
		"| RTT 200 ms, 1% loss | 0.50 of capacity, 1.25× aria2 | ≥ 0.80, ahead of aria2 | NOT MET |",
		"| redundant bytes, every case | at most 1.00% | ≤ 3% | MET |",
		"| 16 MiB at RTT 60 ms | 0.70 of capacity | ≥ 0.60 | MET |",
		"| TCP sharing a link with httpgw | TCP 75% | ≥ 25% | MET |",
		"Goals met: 5 of 7.", "| first byte of the short transfer | 200 ms | ≤ 2 RTT + one chunk at one link's rate = 131 ms | NOT MET |",
		"-note 'it'\\''s'",
		"](wan-grid.png)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func TestPlotAndDocs(t *testing.T) {
	dir := t.TempDir()
	png := filepath.Join(dir, "p.png")
	if err := drawPlot(fakeResults(), png); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(png); err != nil || len(b) < 1000 || string(b[1:4]) != "PNG" {
		t.Fatalf("plot: %d bytes, %v", len(b), err)
	}
	doc := filepath.Join(dir, "B.md")
	os.WriteFile(doc, []byte("# B\n\nintro\n"), 0o644)
	if err := updateDocs(doc, "first\n"); err != nil {
		t.Fatal(err)
	}
	if err := updateDocs(doc, "second\n"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(doc)
	if s := string(b); strings.Contains(s, "first") || strings.Count(s, docsBegin+"\nsecond\n"+docsEnd) != 1 || !strings.HasPrefix(s, "# B\n\nintro\n") {
		t.Errorf("docs after two updates:\n%s", s)
	}
}
