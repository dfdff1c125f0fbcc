// Command linkemu runs one emulated link between two TUN (or TAP) devices
// it creates, for experiments by hand; the WAN benchmark (bench/wan) runs
// the same emulator in-process.
//
//	linkemu -netns r -a up1 -b dn1 -rate 100mbit -delay 30ms -queue 50ms -loss 0.01 -report 5s
//
// Packets the kernel sends into device a leave device b after the link,
// and the other way round; route traffic into them with policy rules in
// that namespace, e.g.
//
//	ip -n r route add default dev up1 table 101
//	ip -n r rule add iif <towards the client> to <server subnet> lookup 101
//	ip -n r route add default dev dn1 table 201
//	ip -n r rule add iif <towards the server> lookup 201
//
// with net.ipv4.ip_forward=1 and rp_filter off in that namespace. The
// counters of both directions are printed as JSON lines every -report and
// on exit (SIGINT, SIGTERM).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fastfile/fschunk/internal/linkemu"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "linkemu:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		netns, a, b, rate, ge string
		tap                   bool
		c                     linkemu.Config
		report                time.Duration
	)
	flag.StringVar(&netns, "netns", "", "network namespace `name` (from ip netns add) for the devices; \"\": this one")
	flag.StringVar(&a, "a", "emua", "device `name` whose packets go up (a → b)")
	flag.StringVar(&b, "b", "emub", "device `name` whose packets come down (b → a)")
	flag.BoolVar(&tap, "tap", false, "TAP devices (Ethernet frames, can be bridge ports) instead of TUN")
	flag.StringVar(&rate, "rate", "0", "link `rate` each way, e.g. 100mbit, 1gbit, 512kbit; 0: no limit")
	flag.DurationVar(&c.Delay, "delay", 0, "one-way delay")
	flag.DurationVar(&c.QueueDelay, "queue", 50*time.Millisecond, "drop-tail queue limit in time at the rate")
	flag.IntVar(&c.QueueBytes, "queue-bytes", 0, "drop-tail queue limit in `bytes` (0: none)")
	flag.Float64Var(&c.Loss, "loss", 0, "random loss probability each way, in [0, 1)")
	flag.StringVar(&ge, "gilbert", "", "bursty loss `p,r,k,h`: P(good→bad), P(bad→good), loss in good, loss in bad")
	flag.Uint64Var(&c.Seed, "seed", 1, "seed of the loss sequence (the down direction uses seed+1)")
	flag.DurationVar(&report, "report", 0, "print the counters this often (0: on exit only)")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	var err error
	if c.Rate, err = parseRate(rate); err != nil {
		return err
	}
	if ge != "" {
		var g linkemu.GilbertElliott
		if n, _ := fmt.Sscanf(strings.ReplaceAll(ge, ",", " "), "%g %g %g %g", &g.PGoodBad, &g.PBadGood, &g.LossGood, &g.LossBad); n != 4 {
			return fmt.Errorf("-gilbert %q: want four probabilities p,r,k,h", ge)
		}
		c.Bursty = &g
	}
	down := c
	down.Seed++
	kind := linkemu.TUN
	if tap {
		kind = linkemu.TAP
	}
	path := ""
	if netns != "" {
		path = "/var/run/netns/" + netns
	}
	p, err := linkemu.OpenPair(path, a+"-"+b, a, b, kind, c, down)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var tick <-chan time.Time
	if report > 0 {
		t := time.NewTicker(report)
		defer t.Stop()
		tick = t.C
	}
	enc := json.NewEncoder(os.Stdout)
	print := func() {
		for _, d := range []struct {
			name string
			s    linkemu.Stats
		}{{"up", p.Up.Stats()}, {"down", p.Down.Stats()}} {
			enc.Encode(map[string]any{"time": time.Now().UTC().Format(time.RFC3339Nano), "direction": d.name,
				"packets_in": d.s.PacketsIn, "packets_out": d.s.PacketsOut, "bytes_out": d.s.BytesOut,
				"queue_drops": d.s.QueueDrops, "random_drops": d.s.RandomDrops, "overflows": d.s.Overflows,
				"write_errors": d.s.WriteErrors, "queue_delay_mean_ms": float64(d.s.MeanQueueDelay()) / 1e6,
				"queue_delay_max_ms": float64(d.s.MaxQueueDelay) / 1e6})
		}
	}
	fmt.Fprintf(os.Stderr, "linkemu: %s ⇄ %s (%s) up, rate %s, delay %v, queue %v, loss %g\n", a, b, kind, rate, c.Delay, c.QueueDelay, c.Loss)
	for {
		select {
		case <-tick:
			print()
		case err := <-done:
			print()
			return err
		}
	}
}

// parseRate reads "100mbit", "1gbit", "512kbit" or bits per second.
func parseRate(s string) (float64, error) {
	l := strings.ToLower(strings.TrimSpace(s))
	mult := 1.0
	for _, u := range []struct {
		suffix string
		m      float64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}} {
		if strings.HasSuffix(l, u.suffix) {
			l, mult = strings.TrimSuffix(l, u.suffix), u.m
			break
		}
	}
	v, err := strconv.ParseFloat(l, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("rate %q: want e.g. 100mbit", s)
	}
	return v * mult, nil
}
