//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fastfile/fschunk/internal/linkemu"
)

// transfer is one download's outcome.
type transfer struct {
	Tool    string  `json:"tool"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	Capped  bool    `json:"capped,omitempty"` // stopped at the time cap; Bytes is what had arrived
	// FirstByte is curl's time to the first byte of the body, in seconds.
	FirstByte float64       `json:"first_byte,omitempty"`
	Err       string        `json:"error,omitempty"`
	Down      linkStatsView `json:"down"` // the links towards the client during it
	Up        linkStatsView `json:"up"`
	// Gateway counters (from /metrics) over the download.
	DupBytes    float64 `json:"dup_bytes,omitempty"`
	Retransmits float64 `json:"retransmits,omitempty"`
	Reads       float64 `json:"reads,omitempty"`
	Endgame     float64 `json:"endgame,omitempty"`
	Timeouts    float64 `json:"timeouts,omitempty"`
}

// Rate is the goodput in bytes per second.
func (x transfer) Rate() float64 {
	if x.Seconds <= 0 || x.Err != "" {
		return 0
	}
	return float64(x.Bytes) / x.Seconds
}

type linkStatsView struct {
	Packets     uint64  `json:"packets"`
	Bytes       uint64  `json:"bytes"`
	QueueDrops  uint64  `json:"queue_drops"`
	RandomDrops uint64  `json:"random_drops"`
	MeanQueueMs float64 `json:"mean_queue_ms"`
	MaxQueueMs  float64 `json:"max_queue_ms"`
	Overflows   uint64  `json:"overflows,omitempty"`
}

func view(s linkemu.Stats) linkStatsView {
	return linkStatsView{
		Packets: s.PacketsIn, Bytes: s.BytesOut, QueueDrops: s.QueueDrops, RandomDrops: s.RandomDrops,
		MeanQueueMs: float64(s.MeanQueueDelay()) / 1e6, MaxQueueMs: float64(s.MaxQueueDelay) / 1e6,
		Overflows: s.Overflows + s.WriteErrors,
	}
}

// curl downloads url from host's namespace for at most limit and reports
// what arrived. A download cut by the limit is Capped, not an error.
func (b *bench) curl(ctx context.Context, host, url string, limit time.Duration) transfer {
	out, err := b.t.output(ctx, host, "curl", "-s", "-o", "/dev/null", "--noproxy", "*",
		"--max-time", fmt.Sprintf("%.0f", limit.Seconds()), "-w", "%{http_code} %{size_download} %{time_total} %{exitcode} %{time_starttransfer}", url)
	var code int
	var size int64
	var secs, first float64
	var exit int
	if n, _ := fmt.Sscanf(string(out), "%d %d %f %d %f", &code, &size, &secs, &exit, &first); n != 5 {
		return transfer{Tool: "curl", Err: fmt.Sprintf("curl %s: %v (%q)", url, err, out)}
	}
	x := transfer{Tool: "curl", Bytes: size, Seconds: secs, FirstByte: first}
	switch {
	case code != 200:
		x.Err = fmt.Sprintf("HTTP %d", code)
	case exit == 28: // operation timed out
		x.Capped = true
	case exit != 0:
		x.Err = fmt.Sprintf("curl exit %d after %d bytes", exit, size)
	}
	return x
}

// aria2 fetches the file from the three mirrors with the given split
// options, writing to the temp dir, for at most limit.
func (b *bench) aria2(ctx context.Context, name string, size int64, opts []string, limit time.Duration) transfer {
	dl := filepath.Join(b.tmp, "aria2")
	os.MkdirAll(dl, 0o755)
	out := filepath.Join(dl, name)
	os.Remove(out)
	os.Remove(out + ".aria2")
	defer os.Remove(out)
	defer os.Remove(out + ".aria2")
	args := []string{"aria2c", "--no-conf", "-q", "--file-allocation=none", "--allow-overwrite=true",
		"--auto-file-renaming=false", "--connect-timeout=5", "--timeout=20", "--max-tries=5", "--retry-wait=1",
		"-d", dl, "-o", name}
	args = append(args, opts...)
	for i := 1; i <= nServers; i++ {
		args = append(args, fmt.Sprintf("http://%s/%s", serverIP(i), name))
	}
	cctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	start := time.Now()
	_, err := b.t.output(cctx, "c", args...)
	el := time.Since(start)
	x := transfer{Tool: "aria2c " + strings.Join(opts, " "), Seconds: el.Seconds()}
	var st syscall.Stat_t
	if e := syscall.Stat(out, &st); e == nil {
		// The file is written sparse where pieces arrived: its allocated
		// blocks are the bytes received.
		x.Bytes = min(st.Size, st.Blocks*512)
		if err == nil {
			x.Bytes = st.Size
		}
	}
	switch {
	case cctx.Err() != nil && ctx.Err() == nil:
		x.Capped = true
	case err != nil:
		x.Err = err.Error()
	case x.Bytes != size:
		x.Err = fmt.Sprintf("aria2c wrote %d of %d bytes", x.Bytes, size)
	}
	return x
}

// metrics reads the gateway's counters (those without labels).
func (b *bench) metrics(ctx context.Context) (map[string]float64, error) {
	out, err := b.t.output(ctx, "gw", "curl", "-s", "--noproxy", "*", "--max-time", "5", "http://"+gwAdmin+"/metrics")
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "#") || strings.Contains(l, "{") {
			continue
		}
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			m[f[0]] = v
		}
	}
	return m, nil
}

// api fetches a JSON document from the gateway's admin listener.
func (b *bench) api(ctx context.Context, path string, v any) error {
	out, err := b.t.output(ctx, "gw", "curl", "-s", "--noproxy", "*", "--max-time", "5", "http://"+gwAdmin+path)
	if err != nil {
		return err
	}
	return json.Unmarshal(out, v)
}

// gateway downloads path through the gateway from the client, with the
// gateway's counters and the links' over the download.
func (b *bench) gateway(ctx context.Context, path string, limit time.Duration, links ...int) transfer {
	before, err := b.metrics(ctx)
	if err != nil {
		return transfer{Tool: "curl via httpgw", Err: err.Error()}
	}
	b.t.resetStats()
	x := b.curl(ctx, "c", "http://"+gwHTTP+"/"+path, limit)
	x.Tool = "curl via httpgw"
	up, down := b.t.linkStats(links...)
	x.Up, x.Down = view(up), view(down)
	after, err := b.metrics(ctx)
	if err != nil {
		x.Err = err.Error()
		return x
	}
	d := func(k string) float64 { return after[k] - before[k] }
	x.DupBytes = d("httpgw_duplicate_bytes_total")
	x.Retransmits = d("httpgw_retransmissions_total")
	x.Reads = d("httpgw_reads_total")
	x.Endgame = d("httpgw_endgame_reads_total")
	x.Timeouts = d("httpgw_read_timeouts_total")
	return x
}

// withLinks runs f with the links' counters reset before and read after.
func (b *bench) withLinks(f func() transfer, links ...int) transfer {
	b.t.resetStats()
	x := f()
	up, down := b.t.linkStats(links...)
	x.Up, x.Down = view(up), view(down)
	return x
}
