package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// smallFiles writes n small files (a few hundred bytes each, distinct) into
// dir/sub and returns their names.
func smallFiles(t *testing.T, dir, sub string, n int) []string {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
		t.Fatal(err)
	}
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("file-%05d.txt", i)
		body := bytes.Repeat([]byte(fmt.Sprintf("%s %d\n", sub, i)), 1+i%40)
		if err := os.WriteFile(filepath.Join(dir, sub, names[i]), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return names
}

// startDefaultGateway runs the gateway with its default access limits (the
// point of these tests) and three embedded servers on root, and waits
// until all of want files are listed.
func startDefaultGateway(t *testing.T, root string, want int) string {
	t.Helper()
	web, adm := freeAddr(t), freeAddr(t)
	runGateway(t, io.Discard, "-demo", "-demo-root", root, "-http", web, "-udp", "127.0.0.1:0", "-admin", adm, "-log-level", "warn")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var n int
		if resp, err := http.Get("http://" + adm + "/api/files"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			n = strings.Count(string(b), `"path"`)
		}
		if n >= want {
			return web
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d files listed", n, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sameTree checks that every file of src/sub is in got/sub, byte for byte.
func sameTree(t *testing.T, src, got, sub string, names []string) {
	t.Helper()
	missing := 0
	for _, n := range names {
		a, _ := os.ReadFile(filepath.Join(src, sub, n))
		b, err := os.ReadFile(filepath.Join(got, sub, n))
		if err != nil || !bytes.Equal(a, b) {
			if missing++; missing <= 5 {
				t.Errorf("%s: %v (got %d bytes, want %d)", n, err, len(b), len(a))
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d files missing or different", missing, len(names))
	}
}

func lookTool(t *testing.T, name string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (apt-get install %s; .ci/run installs it)", name, map[string]string{"wget": "wget", "aria2c": "aria2"}[name])
	}
	return p
}

// TestWgetRecursiveDefaults: "wget -r -np" of a 10,000-file folder with the
// gateway's default flags saves every file. The old default (100 req/s,
// refused beyond a burst of 200) answered most of them 429, which wget
// does not retry.
func TestWgetRecursiveDefaults(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	wget := lookTool(t, "wget")
	src, out := t.TempDir(), t.TempDir()
	names := smallFiles(t, src, "many", 10000)
	web := startDefaultGateway(t, src, len(names))
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, wget, "-r", "-np", "-nH", "-nv", "-P", out, "http://"+web+"/many/")
	var log bytes.Buffer
	cmd.Stderr = &log
	err := cmd.Run()
	if err != nil {
		t.Errorf("wget: %v; last lines:\n%s", err, tail(log.String(), 10))
	}
	if n := strings.Count(log.String(), "ERROR 429"); n > 0 {
		t.Errorf("%d responses 429", n)
	}
	sameTree(t, src, out, "many", names)
}

// TestAria2Defaults: "aria2c -j16 -x16 -i" over 1,000 URLs with the
// gateway's default flags saves every file.
func TestAria2Defaults(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	aria := lookTool(t, "aria2c")
	src, out := t.TempDir(), t.TempDir()
	names := smallFiles(t, src, "list", 1000)
	web := startDefaultGateway(t, src, len(names))
	var urls strings.Builder
	for _, n := range names {
		fmt.Fprintf(&urls, "http://%s/list/%s\n  dir=%s\n", web, n, filepath.Join(out, "list"))
	}
	list := filepath.Join(t.TempDir(), "urls.txt")
	if err := os.WriteFile(list, []byte(urls.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, aria, "-j16", "-x16", "-i", list, "--console-log-level=warn", "--summary-interval=0", "--no-conf")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Errorf("aria2c: %v; last lines:\n%s", err, tail(log.String(), 15))
	}
	t.Logf("aria2c: %d files in %v", len(names), time.Since(start))
	sameTree(t, src, out, "list", names)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
