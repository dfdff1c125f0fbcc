// Command stallclient measures what clients that stop reading cost a
// gateway (issue 11): it opens -conns HTTP/2 connections over TLS, asks
// for -url on -streams streams of each and never reads the bodies (the
// flow-control windows it grants are 64 KiB per stream and per
// connection, so the gateway can send almost nothing), samples the
// gateway's resident memory (VmRSS of -pid) every second for -hold, and
// meanwhile, -normal-after once every stalled stream has its response
// headers, downloads -url once as a normal client (HTTP/1.1 over TLS)
// and reports its rate.
//
//	stallclient -url https://127.0.0.1:8080/big.bin -pid 1234 -hold 40s
//	stallclient -url https://127.0.0.1:8080/big.bin -conns 0 -normal-after 0   # the calm rate
//
// With -admin (the gateway's admin address) it saves a heap and a
// goroutine profile and the engine's counters (/api/stats) into -profile-dir
// at -profile-at. bench/stall-rss.sh runs the whole measurement.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "stallclient:", err)
		os.Exit(1)
	}
}

type options struct {
	url         string
	conns       int
	streams     int
	pid         int
	hold        time.Duration
	normalAfter time.Duration
	admin       string
	profileAt   time.Duration
	profileDir  string
}

func run() error {
	var o options
	flag.StringVar(&o.url, "url", "", "`URL` of a large file on the gateway (https)")
	flag.IntVar(&o.conns, "conns", 100, "HTTP/2 connections that stop reading")
	flag.IntVar(&o.streams, "streams", 32, "streams per connection")
	flag.IntVar(&o.pid, "pid", 0, "the gateway's process id (its VmRSS is sampled every second)")
	flag.DurationVar(&o.hold, "hold", 40*time.Second, "how long the stalled streams are held")
	flag.DurationVar(&o.normalAfter, "normal-after", time.Second, "when the normal download starts, after every stalled stream has its headers (negative: none)")
	flag.StringVar(&o.admin, "admin", "", "the gateway's admin `address` (host:port), for profiles")
	flag.DurationVar(&o.profileAt, "profile-at", 30*time.Second, "when the profiles are taken")
	flag.StringVar(&o.profileDir, "profile-dir", ".", "where the profiles are saved")
	flag.Parse()
	if o.url == "" {
		return errors.New("-url is required")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var opened, failed atomic.Int64
	var firstErr atomic.Value
	var all sync.WaitGroup // every stalled stream has its headers, or failed
	all.Add(o.conns * o.streams)
	bodies := make(chan io.Closer, o.conns*o.streams)
	defer func() {
		close(bodies)
		for b := range bodies {
			b.Close()
		}
	}()
	for range o.conns {
		c := &http.Client{Transport: stallTransport()}
		for range o.streams {
			go func() {
				defer all.Done()
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.url, nil)
				if err == nil {
					var resp *http.Response
					if resp, err = c.Do(req); err == nil {
						opened.Add(1)
						bodies <- resp.Body // never read
						return
					}
				}
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}()
		}
	}

	normal := make(chan string, 1)
	if o.normalAfter >= 0 {
		go func() {
			all.Wait()
			time.Sleep(o.normalAfter)
			normal <- download(ctx, o.url)
		}()
	}

	start := time.Now()
	var peak int64
	normalResult := ""
	profiled := o.admin == ""
	for tick := time.NewTicker(time.Second); time.Since(start) < o.hold; {
		select {
		case r := <-normal:
			normalResult = r
			fmt.Printf("t=%2.0fs %s\n", time.Since(start).Seconds(), r)
			if o.conns == 0 {
				return nil
			}
			continue
		case <-tick.C:
		}
		kb := rssKB(o.pid)
		peak = max(peak, kb)
		fmt.Printf("t=%2.0fs stalled streams open %d failed %d gateway RSS %d kB%s\n",
			time.Since(start).Seconds(), opened.Load(), failed.Load(), kb, engineStats(o.admin))
		if !profiled && time.Since(start) >= o.profileAt {
			profiled = true
			if err := profile(o.admin, o.profileDir); err != nil {
				fmt.Println("profile:", err)
			}
		}
	}
	if e := firstErr.Load(); e != nil {
		fmt.Println("first failure:", e)
	}
	fmt.Printf("summary: stalled streams %d (failed %d), gateway RSS peak %d kB, last %d kB\n",
		opened.Load(), failed.Load(), peak, rssKB(o.pid))
	switch {
	case normalResult != "":
		fmt.Println(normalResult)
	case o.normalAfter >= 0:
		fmt.Println("normal download: not finished within -hold")
	}
	return nil
}

// stallTransport is one HTTP/2 connection (a Transport of its own) whose
// flow-control windows stay at 64 KiB: the gateway may send that much
// and then waits for a reader that never comes.
func stallTransport() *http.Transport {
	var p http.Protocols
	p.SetHTTP2(true)
	return &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the gateway's self-signed certificate
		Protocols:       &p,
		HTTP2: &http.HTTP2Config{
			StrictMaxConcurrentRequests:   true, // one connection per Transport
			MaxReceiveBufferPerConnection: 64 << 10,
			MaxReceiveBufferPerStream:     64 << 10,
		},
	}
}

// download fetches url whole as an ordinary client and says how fast.
func download(ctx context.Context, url string) string {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	t0 := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "normal download: " + err.Error()
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "normal download: " + err.Error()
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	d := time.Since(t0)
	return fmt.Sprintf("normal download: %d bytes in %v, %.1f MB/s, status %d, err %v",
		n, d.Round(time.Millisecond), float64(n)/d.Seconds()/1e6, resp.StatusCode, err)
}

// rssKB is the VmRSS of a process, in kB (0 if unknown).
func rssKB(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// engineStats reads the engine's memory counters from the gateway's
// admin listener ("" without one).
func engineStats(admin string) string {
	if admin == "" {
		return ""
	}
	resp, err := http.Get("http://" + admin + "/api/stats")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var s struct {
		Engine struct {
			Buffered  int64 `json:"buffered_bytes"`
			Stalled   int64 `json:"stalled"`
			Reclaimed int64 `json:"reclaimed_bytes"`
		} `json:"engine"`
	}
	if json.NewDecoder(resp.Body).Decode(&s) != nil {
		return ""
	}
	return fmt.Sprintf(", engine buffers %d kB, stalled %d, reclaimed %d kB",
		s.Engine.Buffered>>10, s.Engine.Stalled, s.Engine.Reclaimed>>10)
}

// profile saves the gateway's heap and goroutine profiles and engine
// counters from its admin listener.
func profile(admin, dir string) error {
	for name, path := range map[string]string{
		"heap.pprof":      "/debug/pprof/heap?gc=1",
		"goroutine.pprof": "/debug/pprof/goroutine",
		"stats.json":      "/api/stats",
		"memstats.txt":    "/debug/pprof/heap?debug=1", // ends with runtime.MemStats
		"cpu.pprof":       "/debug/pprof/profile?seconds=5",
	} {
		resp, err := http.Get("http://" + admin + path)
		if err != nil {
			return err
		}
		f, err := os.Create(filepath.Join(dir, name))
		if err == nil {
			_, err = io.Copy(f, resp.Body)
			err = errors.Join(err, f.Close())
		}
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("save %s: %w", name, err)
		}
	}
	fmt.Println("profiles saved in", dir)
	return nil
}
