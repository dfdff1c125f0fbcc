//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

const (
	chunkSize = 128 << 10 // the gateway's default -chunk-size
	docsBegin = "<!-- wan:begin -->"
	docsEnd   = "<!-- wan:end -->"
	plotName  = "wan-grid.png"
)

// capacity is the three links' payload capacity in bytes per second.
func capacity(links int) float64 { return float64(links) * linkRate / 8 * payloadShare }

// report prints the table, writes bench/out/wan.{md,json} and the plot,
// and with -update-docs the docs.
func (b *bench) report(res *results) error {
	out := filepath.Join(b.repo, "bench", "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	plotPath := filepath.Join(out, plotName)
	if b.opt.updateDocs {
		plotPath = filepath.Join(b.repo, "docs", plotName)
	}
	var errs []error
	if len(res.Cases) > 0 {
		if err := drawPlot(res, plotPath); err != nil {
			errs = append(errs, fmt.Errorf("plot: %w", err))
		}
	}
	md := markdown(res, b.opt.updateDocs)
	fmt.Println(md)
	js, _ := json.MarshalIndent(res, "", "  ")
	errs = append(errs, os.WriteFile(filepath.Join(out, "wan.json"), js, 0o644),
		os.WriteFile(filepath.Join(out, "wan.md"), []byte(md), 0o644))
	logf("wrote bench/out/wan.md, bench/out/wan.json and %s", plotPath)
	if b.opt.updateDocs {
		if res.Partial != "" {
			errs = append(errs, errors.New("the run is incomplete: docs/BENCHMARKS.md left alone"))
		} else {
			errs = append(errs, updateDocs(filepath.Join(b.repo, "docs", "BENCHMARKS.md"), md))
		}
	}
	return errors.Join(errs...)
}

func verdict(ok bool) string {
	if ok {
		return "MET"
	}
	return "NOT MET"
}

func rtt(d time.Duration) string {
	return fmt.Sprintf("%d ms (%d ms one-way)", (2 * d).Milliseconds(), d.Milliseconds())
}

func pct(f float64) string {
	if f == 0 {
		return "0"
	}
	return fmt.Sprintf("%g%%", 100*f)
}

func lossName(f float64) string {
	if f == 0 {
		return "no loss"
	}
	return pct(f) + " loss"
}

func rate(x transfer) string {
	if x.Err != "" {
		return "failed: " + x.Err
	}
	s := fmt.Sprintf("%.1f MB/s", x.Rate()/1e6)
	if x.Capped {
		s += fmt.Sprintf(" (%s in %.0f s, capped)", human(x.Bytes), x.Seconds)
	}
	return s
}

// wire is the IP bytes the links delivered towards the client per file
// byte: headers (1,500 for 1,428 file bytes, 1.050×) and every byte sent
// twice.
func wire(x transfer) float64 {
	if x.Bytes == 0 {
		return 0
	}
	return float64(x.Down.Bytes) / float64(x.Bytes)
}

func redundant(x transfer) float64 {
	if x.Bytes == 0 {
		return 0
	}
	return x.DupBytes / float64(x.Bytes)
}

func markdown(res *results, forDocs bool) string {
	var w bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }
	cmd := "go run ./bench/wan"
	for _, a := range res.Opts {
		if strings.ContainsAny(a, " '\"$`\\") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		cmd += " " + a
	}
	p("Measured %s on commit `%s` with `%s` (as root). %s.\n\n", res.Date.Format("2006-01-02 15:04 UTC"), res.Commit, cmd, res.Machine)
	if res.Note != "" {
		p("%s\n\n", res.Note)
	}
	if res.Partial != "" {
		p("**INCOMPLETE RUN**: %s\n\n", res.Partial)
	}
	p("Three links of %.0f Mbit/s each way with a %v drop-tail queue (in the user-space emulator, `internal/linkemu`), "+
		"one per server; the delay and the random loss apply to each direction. Capacity is the links' payload capacity for TCP, "+
		"3 × %.0f Mbit/s × 1448/1500 = %.1f MB/s (the gateway's datagrams carry 1,428 file bytes per 1,500). "+
		"`httpgw` is one `curl` of a %s file through the gateway; aria2 is `aria2c` on three nginx mirrors over the same links, "+
		"the best of `%s` and `%s`. Redundant bytes are the gateway's `httpgw_duplicate_bytes_total` over the download, "+
		"as a share of the file; in brackets, the IP bytes the links delivered towards the client over the file's size (1.050× is the headers alone). Queue figures are the emulator's, over the three links towards the client during the download. "+
		"A download slower than the cap is measured over the cap.\n\n",
		linkRate/1e6, linkQueue, linkRate/1e6, capacity(nServers)/1e6, human(res.Size),
		strings.Join(aria2Opts[0], " "), strings.Join(aria2Opts[1], " "))

	p("| RTT | random loss each way | httpgw | share of capacity | aria2 (best) | httpgw / aria2 | redundant bytes | httpgw: queue drops, random drops, queue delay mean / max | aria2: queue drops, queue delay mean / max |\n")
	p("|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range res.Cases {
		g := c.Gateway
		a, ok := c.BestAria2()
		ar, ratio, aq := "failed", "n/a", ""
		if ok {
			ar = rate(a) + " (" + strings.TrimPrefix(a.Tool, "aria2c ") + ")"
			ratio = fmt.Sprintf("%.2f", g.Rate()/a.Rate())
			aq = fmt.Sprintf("%d, %.1f / %.1f ms", a.Down.QueueDrops, a.Down.MeanQueueMs, a.Down.MaxQueueMs)
		}
		p("| %s | %s | %s | %.2f | %s | %s | %.2f%% (%.0f READs re-asked; the links carried %.3f× the file) | %d, %d, %.1f / %.1f ms | %s |\n", rtt(c.Delay), pct(c.Loss), rate(g),
			g.Rate()/capacity(nServers), ar, ratio, 100*redundant(g), g.Retransmits, wire(g), g.Down.QueueDrops, g.Down.RandomDrops,
			g.Down.MeanQueueMs, g.Down.MaxQueueMs, aq)
	}
	if s := res.Short; s != nil {
		a, ok := s.BestAria2()
		ar := "failed"
		if ok {
			ar = rate(a)
		}
		p("\nShort transfer, %s at RTT %s, no loss: httpgw %s (%.2f of capacity, %.2f%% redundant, first byte after %.0f ms), aria2 %s.\n",
			human(res.ShortSz), rtt(s.Delay), rate(s.Gateway), s.Gateway.Rate()/capacity(nServers), 100*redundant(s.Gateway),
			1000*s.Gateway.FirstByte, ar)
	}
	if f := res.Fair; f != nil {
		tot := float64(f.GW.Bytes + f.TCP.Bytes)
		p("\nSharing one link (RTT %s, no loss) for %.0f s with a TCP CUBIC download (`curl` from nginx on the same server): "+
			"httpgw %s, TCP %s; TCP's share %.0f%%. Queue on the link meanwhile: %d drops, delay mean %.1f ms, max %.1f ms. "+
			"httpgw alone on that link just before: %s, queue delay mean %.1f ms, max %.1f ms, %d queue drops.\n",
			rtt(f.Delay), f.TCP.Seconds, rate(f.GW), rate(f.TCP), 100*float64(f.TCP.Bytes)/tot, f.TCP.Down.QueueDrops,
			f.TCP.Down.MeanQueueMs, f.TCP.Down.MaxQueueMs, rate(f.Alone), f.Alone.Down.MeanQueueMs, f.Alone.Down.MaxQueueMs,
			f.Alone.Down.QueueDrops)
	}

	p("\n| goal (issue 12) | measured | target | verdict |\n|---|---|---|---|\n")
	met, n := 0, 0
	goal := func(name, measured, target string, ok bool) {
		n++
		if ok {
			met++
		}
		p("| %s | %s | %s | %s |\n", name, measured, target, verdict(ok))
	}
	for _, gc := range goalCases {
		i := slices.IndexFunc(res.Cases, func(c *wanCase) bool { return c.Delay == gc.delay && c.Loss == gc.loss })
		if i < 0 {
			continue
		}
		c := res.Cases[i]
		share := c.Gateway.Rate() / capacity(nServers)
		a, ok := c.BestAria2()
		vs := "aria2 failed"
		ahead := ok
		if ok {
			vs = fmt.Sprintf("%.2f× aria2", c.Gateway.Rate()/a.Rate())
			ahead = c.Gateway.Rate() > a.Rate()
		}
		goal(fmt.Sprintf("RTT %d ms, %s", (2*gc.delay).Milliseconds(), lossName(gc.loss)), fmt.Sprintf("%.2f of capacity, %s", share, vs),
			fmt.Sprintf("≥ %.2f, ahead of aria2", gc.share), c.Gateway.Err == "" && share >= gc.share && ahead)
	}
	if len(res.Cases) > 0 {
		worst := 0.0
		for _, c := range res.Cases {
			worst = max(worst, redundant(c.Gateway))
		}
		goal("redundant bytes, every case", fmt.Sprintf("at most %.2f%%", 100*worst), "≤ 3%", worst <= 0.03)
	}
	if s := res.Short; s != nil {
		share := s.Gateway.Rate() / capacity(nServers)
		goal(fmt.Sprintf("%s at RTT %d ms", human(res.ShortSz), (2*s.Delay).Milliseconds()), fmt.Sprintf("%.2f of capacity", share), "≥ 0.60", s.Gateway.Err == "" && share >= 0.6)
		// One chunk (128 KiB) at one link's payload rate. Runs saved
		// before the first byte was measured have none.
		if limit := 2*s.Delay.Seconds()*2 + float64(chunkSize)/capacity(1); s.Gateway.FirstByte > 0 {
			goal("first byte of the short transfer", fmt.Sprintf("%.0f ms", 1000*s.Gateway.FirstByte),
				fmt.Sprintf("≤ 2 RTT + one chunk at one link's rate = %.0f ms", 1000*limit), s.Gateway.Err == "" && s.Gateway.FirstByte <= limit)
		}
	}
	if f := res.Fair; f != nil {
		share := float64(f.TCP.Bytes) / float64(f.GW.Bytes+f.TCP.Bytes)
		goal("TCP sharing a link with httpgw", fmt.Sprintf("TCP %.0f%%", 100*share), "≥ 25%", f.TCP.Err == "" && f.GW.Err == "" && share >= 0.25)
		goal("queue httpgw builds alone on a link", fmt.Sprintf("mean %.1f ms (max %.1f ms)", f.Alone.Down.MeanQueueMs, f.Alone.Down.MaxQueueMs), "≤ 20 ms", f.Alone.Err == "" && f.Alone.Down.MeanQueueMs <= 20)
	}
	p("\nGoals met: %d of %d.\n", met, n)
	if forDocs {
		p("\n![goodput against RTT, one line per loss rate, httpgw and aria2](%s)\n", plotName)
	}
	return w.String()
}

// drawPlot draws goodput against RTT, one line per loss rate, httpgw
// solid and aria2 dashed, with the links' capacity.
func drawPlot(res *results, path string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s over three emulated %.0f Mbit/s links (%v queue), commit %s, %s", human(res.Size), linkRate/1e6, linkQueue, res.Commit, res.Date.Format("2006-01-02 15:04 UTC"))
	p.X.Label.Text = "RTT (ms)"
	p.Y.Label.Text = "goodput (MB/s)"
	p.Legend.Top = true
	p.Legend.Left = false
	p.Y.Min = 0
	p.Y.Max = capacity(nServers) / 1e6 * 1.1
	var losses []float64
	for _, c := range res.Cases {
		if !slices.Contains(losses, c.Loss) {
			losses = append(losses, c.Loss)
		}
	}
	slices.Sort(losses)
	colors := []color.RGBA{{0x1f, 0x77, 0xb4, 255}, {0xff, 0x7f, 0x0e, 255}, {0xd6, 0x27, 0x28, 255}, {0x2c, 0xa0, 0x2c, 255}, {0x94, 0x67, 0xbd, 255}}
	maxRTT := 0.0
	for i, l := range losses {
		var gw, ar plotter.XYs
		for _, c := range res.Cases {
			if c.Loss != l {
				continue
			}
			x := float64((2 * c.Delay).Milliseconds())
			maxRTT = max(maxRTT, x)
			gw = append(gw, plotter.XY{X: x, Y: c.Gateway.Rate() / 1e6})
			if a, ok := c.BestAria2(); ok {
				ar = append(ar, plotter.XY{X: x, Y: a.Rate() / 1e6})
			}
		}
		slices.SortFunc(gw, func(a, b plotter.XY) int { return int(a.X - b.X) })
		slices.SortFunc(ar, func(a, b plotter.XY) int { return int(a.X - b.X) })
		col := colors[i%len(colors)]
		for _, s := range []struct {
			xy    plotter.XYs
			name  string
			dash  []vg.Length
			shape draw.GlyphDrawer
		}{
			{gw, "httpgw", nil, draw.CircleGlyph{}},
			{ar, "aria2", []vg.Length{vg.Points(6), vg.Points(4)}, draw.TriangleGlyph{}},
		} {
			if len(s.xy) == 0 {
				continue
			}
			line, pts, err := plotter.NewLinePoints(s.xy)
			if err != nil {
				return err
			}
			line.Color, line.Width, line.Dashes = col, vg.Points(2), s.dash
			pts.Color, pts.Shape, pts.Radius = col, s.shape, vg.Points(3.5)
			p.Add(line, pts)
			p.Legend.Add(fmt.Sprintf("%s, %s", s.name, lossName(l)), line, pts)
		}
	}
	// The legend goes right of the data, where the x axis runs on.
	right := maxRTT * 1.05
	capLine, err := plotter.NewLine(plotter.XYs{{X: 0, Y: capacity(nServers) / 1e6}, {X: right, Y: capacity(nServers) / 1e6}})
	if err != nil {
		return err
	}
	capLine.Color, capLine.Dashes = color.Gray{Y: 0x80}, []vg.Length{vg.Points(2), vg.Points(2)}
	p.Add(capLine)
	p.Legend.Add("links' payload capacity", capLine)
	p.X.Min = 0
	p.X.Max = maxRTT * 1.6
	var ticks []plot.Tick
	for _, c := range res.Cases {
		x := float64((2 * c.Delay).Milliseconds())
		if !slices.ContainsFunc(ticks, func(t plot.Tick) bool { return t.Value == x }) {
			ticks = append(ticks, plot.Tick{Value: x, Label: fmt.Sprint(x)})
		}
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	grid := plotter.NewGrid()
	grid.Vertical.Color = nil
	p.Add(grid)
	return p.Save(9*vg.Inch, 5.5*vg.Inch, path)
}

// updateDocs replaces the marked WAN section of BENCHMARKS.md, or adds
// one at the end.
func updateDocs(path, md string) error {
	doc, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(doc)
	block := docsBegin + "\n" + md + docsEnd
	i, j := strings.Index(s, docsBegin), strings.Index(s, docsEnd)
	switch {
	case i >= 0 && j > i:
		s = s[:i] + block + s[j+len(docsEnd):]
	default:
		s = strings.TrimRight(s, "\n") + "\n\n## Over emulated WAN links (bench/wan)\n\n" + block + "\n"
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		return err
	}
	logf("updated %s", path)
	return nil
}
