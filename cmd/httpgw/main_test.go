package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFlagErrors(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "k")
	os.WriteFile(keyFile, bytes.Repeat([]byte{1}, 32), 0o600)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{}, "head -c 32 /dev/urandom"},
		{[]string{"-key-file", "/nonexistent"}, "head -c 32 /dev/urandom"},
		{[]string{"-key-file", keyFile, "-policy", "fastest"}, "unknown scheduling policy"},
		{[]string{"-key-file", keyFile, "-chunk-size", "lots"}, "invalid -chunk-size"},
		{[]string{"-key-file", keyFile, "-datagram-size", "100"}, "invalid -datagram-size"},
		{[]string{"-key-file", keyFile, "-log-format", "xml"}, "invalid -log-format"},
		{[]string{"-key-file", keyFile, "-http", "nonsense:addr:1"}, "listen http"},
		{[]string{"-bogus"}, "flag provided but not defined"},
		{[]string{"stray"}, "unexpected argument"},
	}
	for _, c := range cases {
		var stderr bytes.Buffer
		err := run(context.Background(), append([]string{"-udp", "127.0.0.1:0", "-admin", ""}, c.args...), &stderr)
		if err == nil || !strings.Contains(err.Error()+stderr.String(), c.want) {
			t.Errorf("%v: err %v, want it to mention %q", c.args, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error is not one line: %q", c.args, err)
		}
	}
}

func TestEnvFlags(t *testing.T) {
	t.Setenv("HTTPGW_POLICY", "nope")
	err := run(context.Background(), []string{"-demo", "-udp", "127.0.0.1:0", "-admin", ""}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("HTTPGW_POLICY not read: %v", err)
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestDemo runs the README's first command in-process: the gateway with
// three embedded servers; downloads every sample file and, where Chromium
// is installed, screenshots the status page.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	web, adm := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-demo", "-http", web, "-udp", "127.0.0.1:0", "-admin", adm, "-log-level", "warn"}, io.Discard)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	// Wait for three servers with their catalogs.
	deadline := time.Now().Add(60 * time.Second)
	for {
		var servers []struct{ Files int }
		if resp, err := http.Get("http://" + adm + "/api/servers"); err == nil {
			json.NewDecoder(resp.Body).Decode(&servers)
			resp.Body.Close()
		}
		n := 0
		for _, s := range servers {
			if s.Files > 0 {
				n++
			}
		}
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo servers did not register: %+v", servers)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range []string{"/", "/README.txt", "/images/gradient.png", "/docs/report.pdf", "/videos/sample%20video.mp4", "/data/empty.txt", "/nested/a/b/c/deep%20file.txt"} {
		resp, err := http.Get("http://" + web + p)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s, %d bytes, %v", p, resp.Status, n, err)
		}
	}
	for _, p := range []string{"/metrics", "/status", "/api/files"} {
		resp, err := http.Get("http://" + adm + p)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("admin %s: %v %v", p, err, resp)
		}
		resp.Body.Close()
	}
	screenshot(t, "http://"+adm+"/status")
}

// screenshot opens the status page in headless Chromium, checks that the
// page rendered the three servers as up, and saves a PNG artefact
// (to $ARTIFACTS_DIR, or the test's temp dir).
func screenshot(t *testing.T, url string) {
	bin := ""
	for _, b := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(b); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		t.Log("SKIP screenshot: no Chromium installed (apt-get install chromium); .ci/run installs it")
		return
	}
	dir := os.Getenv("ARTIFACTS_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	out := filepath.Join(dir, "status.png")
	common := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=4000", "--window-size=1280,720"}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dom, err := exec.CommandContext(ctx, bin, append(common, "--dump-dom", url)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	if n := strings.Count(string(dom), `class="up"`); n != 3 {
		t.Fatalf("status page shows %d servers up, want 3:\n%s", n, dom)
	}
	if b, err := exec.CommandContext(ctx, bin, append(common, "--screenshot="+out, url)...).CombinedOutput(); err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, b)
	}
	st, err := os.Stat(out)
	if err != nil || st.Size() == 0 {
		t.Fatalf("no screenshot: %v", err)
	}
	fmt.Printf("status page screenshot: %s (%d bytes)\n", out, st.Size())
}
