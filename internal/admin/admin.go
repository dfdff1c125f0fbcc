// Package admin serves the gateway's operator endpoints on a separate,
// loopback-by-default listener: the live status page, Prometheus metrics,
// the pool, downloads and counters as JSON, and the Go profiler.
// It is never mounted on the public HTTP port.
package admin

import (
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/pprof"
	"sort"
	"time"

	"github.com/fastfile/fschunk/internal/access"
	"github.com/fastfile/fschunk/internal/fschunk"
	"github.com/fastfile/fschunk/internal/gateway"
)

// ServerView is one server in /api/servers.
type ServerView struct {
	Name        string    `json:"name"` // stable across restarts; the ID until the first heartbeat
	ID          string    `json:"id"`   // this process (instance): new at every restart
	Key         string    `json:"key"`  // the server's public key, shortened: its identity
	Addr        string    `json:"addr"`
	Joined      time.Time `json:"joined"`
	LastHeard   time.Time `json:"last_heard"`
	HeardAgoMs  int64     `json:"heard_ago_ms"`
	Health      string    `json:"health"` // up, or silent (missed a heartbeat; evicted after fschunk.EvictAfter)
	Files       int       `json:"files"`
	CatalogGen  uint64    `json:"catalog_gen"`
	ReadsActive uint32    `json:"reads_active"`
	TxRate      uint64    `json:"tx_bytes_per_sec"`
	SRTTMicros  int64     `json:"srtt_us"`
	RTOMicros   int64     `json:"rto_us"`
	Window      int       `json:"window_bytes"`
	Inflight    int       `json:"inflight_bytes"`
	Rate        float64   `json:"rate_bytes_per_sec"`
	Delivered   uint64    `json:"delivered_bytes"`
	Retransmits uint64    `json:"retransmits"`
	Timeouts    uint64    `json:"timeouts"`
	// Blamed: verdicts against the server (bytes or hashes that failed
	// verification); at gateway.MaxBlames it is evicted.
	Blamed int `json:"blamed"`
}

// Handler returns the admin mux for g; metrics serves /metrics (nil: none);
// acc's counters are added to /api/stats (nil: none). It answers only
// requests whose Host is a loopback address, localhost or one of hosts
// (403 otherwise): a defence against DNS rebinding from a browser on the
// operator's machine.
func Handler(g *gateway.Gateway, metrics http.Handler, acc *access.Guard, hosts ...string) http.Handler {
	mux := http.NewServeMux()
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'")
		io.WriteString(w, statusPage)
	})
	mux.HandleFunc("GET /api/downloads", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, downloads(g))
	})
	mux.HandleFunc("GET /api/servers", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, Servers(g))
	})
	mux.HandleFunc("GET /api/files", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, files(g))
	})
	mux.HandleFunc("GET /api/stats", func(w http.ResponseWriter, r *http.Request) {
		st := map[string]any{"udp": g.Stats(), "engine": g.Engine().Stats()}
		if c := g.Cache(); c != nil {
			st["cache"] = c.Stats()
		}
		if acc != nil {
			st["access"] = acc.Stats()
		}
		writeJSON(w, st)
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/status", http.StatusFound)
	})
	return hostGuard(mux, hosts)
}

// Servers joins the pool's and the engine's view of each server.
func Servers(g *gateway.Gateway) []ServerView {
	links := map[uint64]int{}
	ls := g.Engine().Links()
	for i, l := range ls {
		links[uint64(l.ID)] = i
	}
	out := []ServerView{}
	now := time.Now()
	for _, s := range g.Pool().Servers() {
		v := ServerView{Name: s.Name, ID: s.ID.String(), Key: s.Key, Addr: s.Addr, Joined: s.Joined, LastHeard: s.LastHeard,
			Files: s.Files, CatalogGen: s.CatalogGen, ReadsActive: s.Load.ReadsActive, TxRate: s.Load.TxRate,
			HeardAgoMs: now.Sub(s.LastHeard).Milliseconds(), Health: "up", Blamed: s.Blamed}
		if now.Sub(s.LastHeard) > fschunk.HeartbeatInterval*3/2 {
			v.Health = "silent"
		}
		if i, ok := links[uint64(s.ID)]; ok {
			l := ls[i]
			v.SRTTMicros, v.RTOMicros = l.SRTT.Microseconds(), l.RTO.Microseconds()
			v.Window, v.Inflight, v.Rate = l.Window, l.Inflight, l.Rate
			v.Delivered, v.Retransmits, v.Timeouts = l.Delivered, l.Retransmits, l.Timeouts
		}
		if v.Name == "" {
			v.Name = v.ID
		}
		out = append(out, v)
	}
	return out
}

type fileView struct {
	Path    string    `json:"path"`
	Size    int64     `json:"size"`
	ModTime time.Time `json:"modified"`
	Hash    string    `json:"content_hash"` // root of the BLAKE3 hash tree (the ETag); not a SHA-256 of the bytes
	Holders int       `json:"holders"`
}

func files(g *gateway.Gateway) []fileView {
	var out []fileView
	var walk func(dir string)
	src := g.Source()
	walk = func(dir string) {
		es, _ := src.List(dir)
		for _, e := range es {
			p := e.Name
			if dir != "" {
				p = dir + "/" + e.Name
			}
			if e.IsDir {
				walk(p)
				continue
			}
			f, ok := src.Lookup(p)
			if !ok {
				continue
			}
			out = append(out, fileView{Path: p, Size: f.Size, ModTime: f.ModTime, Hash: hex.EncodeToString(f.Hash[:]), Holders: f.Holders})
		}
	}
	walk("")
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

type downloadView struct {
	Path      string    `json:"path"`
	Size      int64     `json:"size"`
	Sent      int64     `json:"position"`
	Started   time.Time `json:"started"`
	WindowLen int       `json:"window_chunks"`
}

func downloads(g *gateway.Gateway) []downloadView {
	out := []downloadView{}
	for _, d := range g.Engine().Downloads() {
		out = append(out, downloadView{Path: d.Label, Size: d.Size, Sent: d.Pos, Started: d.Started, WindowLen: d.Window})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out
}
