package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fastfile/fschunk/internal/cli"
	"github.com/fastfile/fschunk/internal/demo"
	"github.com/fastfile/fschunk/internal/keys"
)

// TestMain lets a test run this test binary as the program itself, to see
// what main prints and how it exits.
func TestMain(m *testing.M) {
	if os.Getenv("FSCHUNK_TEST_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runMain runs main in a child process with args and stdin, and returns
// its stdout and stderr.
func runMain(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "FSCHUNK_TEST_RUN_MAIN=1")
	cmd.Stdin = strings.NewReader(stdin)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// The shared parts of the command line (internal/cli) are wired: -version
// and the key subcommands, through main as a user runs them.
func TestMainShared(t *testing.T) {
	out, errOut, err := runMain(t, "", "-version")
	if err != nil || !strings.HasPrefix(out, "httpgw ") || strings.Count(out, "\n") != 1 || errOut != "" {
		t.Errorf("-version: %q %q %v", out, errOut, err)
	}
	priv, errOut, err := runMain(t, "", "genkey")
	if err != nil || errOut != "" {
		t.Fatalf("genkey: %v %q", err, errOut)
	}
	pub, _, err := runMain(t, priv, "pubkey")
	k, perr := keys.ParsePrivate(priv)
	if err != nil || perr != nil || pub != k.Public().String()+"\n" {
		t.Fatalf("genkey | pubkey: %q, %v %v", pub, err, perr)
	}
	file := filepath.Join(t.TempDir(), "gw.key")
	pub2, _, err := runMain(t, "", "genkey", "-out", file)
	k2, warn, lerr := keys.LoadPrivate(file)
	if err != nil || lerr != nil || warn != nil || pub2 != k2.Public().String()+"\n" {
		t.Fatalf("genkey -out: %q %v %v %v", pub2, err, lerr, warn)
	}
	if _, errOut, err := runMain(t, "nonsense", "pubkey"); err == nil || !strings.Contains(errOut, "httpgw: pubkey: stdin: bad key") {
		t.Fatalf("pubkey of nonsense: %v %q", err, errOut)
	}
	if _, err := parse([]string{"-version", "-policy", "fastest"}, io.Discard); !errors.Is(err, cli.ErrVersion) {
		t.Fatalf("parse -version: %v", err)
	}
}

func TestFlagErrors(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "k")
	os.WriteFile(keyFile, bytes.Repeat([]byte{1}, 32), 0o600)
	pem := filepath.Join(dir, "not-a-cert.pem")
	os.WriteFile(pem, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o600)
	missing := filepath.Join(dir, "missing.pem")
	priv, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	privFile := filepath.Join(dir, "gw.key")
	if err := keys.WritePrivate(privFile, priv); err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(dir, "servers.txt")
	os.WriteFile(list, []byte("# none yet\n"), 0o600)
	badList := filepath.Join(dir, "bad.txt")
	os.WriteFile(badList, []byte("# a comment\nnot-a-key srv1\n"), 0o600)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{}, "head -c 32 /dev/urandom"},
		{[]string{"-key-file", "/nonexistent"}, "head -c 32 /dev/urandom"},
		{[]string{"-key-file", keyFile, "-policy", "fastest"}, "unknown scheduling policy"},
		{[]string{"-key-file", keyFile, "-chunk-size", "lots"}, `invalid value "lots" for flag -chunk-size`},
		{[]string{"-key-file", keyFile, "-datagram-size", "100"}, "invalid -datagram-size"},
		{[]string{"-key-file", keyFile, "-log-format", "xml"}, "invalid -log-format"},
		{[]string{"-key-file", keyFile, "-http", "nonsense:addr:1"}, "listen http"},
		{[]string{"-key-file", keyFile, "-tls-cert", pem}, "-tls-cert and -tls-key go together"},
		{[]string{"-key-file", keyFile, "-tls-key", pem}, "-tls-cert and -tls-key go together"},
		{[]string{"-key-file", keyFile, "-tls-cert", missing, "-tls-key", missing}, "no such file"},
		{[]string{"-key-file", keyFile, "-tls-cert", pem, "-tls-key", pem}, "load TLS certificate"},
		{[]string{"-key-file", keyFile, "-tls-self-signed", "-tls-cert", pem, "-tls-key", pem}, "exclude each other"},
		{[]string{"-key-file", keyFile, "-tls-self-signed", "-tls-key", pem}, "exclude each other"},
		{[]string{"-key-file", keyFile, "-allow", "10.0.0.0/8,intranet"}, `invalid -allow: invalid address "intranet"`},
		{[]string{"-key-file", keyFile, "-deny", "10.0.0.0/33"}, `invalid -deny: invalid CIDR "10.0.0.0/33"`},
		{[]string{"-key-file", keyFile, "-rate-limit", "-1"}, "invalid -rate-limit"},
		{[]string{"-key-file", keyFile, "-rate-limit", "NaN"}, "invalid -rate-limit"},
		{[]string{"-key-file", keyFile, "-rate-burst", "0"}, "invalid -rate-burst"},
		{[]string{"-key-file", keyFile, "-max-conns-per-ip", "-1"}, "invalid -max-conns-per-ip"},
		{[]string{"-key-file", keyFile, "-max-conns", "-2"}, "invalid -max-conns -2"},
		{[]string{"-bogus"}, "flag provided but not defined"},
		{[]string{"stray"}, "unexpected argument"},
		{[]string{"-key-file", keyFile, "-private-key", ""}, "no -private-key"},
		{[]string{"-key-file", keyFile, "-private-key", missing}, "genkey"},
		{[]string{"-key-file", keyFile, "-next-private-key", pem}, "-next-private-key"},
		{[]string{"-key-file", keyFile, "-allowed-servers", ""}, "no -allowed-servers"},
		{[]string{"-key-file", keyFile, "-allowed-servers", missing}, "-allowed-servers"},
		{[]string{"-key-file", keyFile, "-allowed-servers", badList}, "bad.txt:2: bad key"},
	}
	for _, c := range cases {
		var stderr bytes.Buffer
		err := run(context.Background(), append([]string{"-udp", "127.0.0.1:0", "-admin", "", "-http", "127.0.0.1:0", "-private-key", privFile, "-allowed-servers", list}, c.args...), &stderr)
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
	t.Setenv("HTTPGW_POLICY", "least-time")
	for env, want := range map[string]string{
		"HTTPGW_MAX_CONNS_PER_IP": "invalid -max-conns-per-ip -7",
		"HTTPGW_RATE_LIMIT":       "invalid -rate-limit -7",
		"HTTPGW_DENY":             `invalid -deny: invalid address "-7"`,
		"HTTPGW_TLS_CERT":         "-tls-cert and -tls-key go together",
		// Named as the variable, not as the flag the user never typed.
		"HTTPGW_WINDOW":     `invalid value "-7" for HTTPGW_WINDOW`,
		"HTTPGW_CACHE_SIZE": `invalid value "-7" for HTTPGW_CACHE_SIZE`,
	} {
		t.Run(env, func(t *testing.T) {
			t.Setenv(env, "-7")
			err := run(context.Background(), []string{"-demo", "-udp", "127.0.0.1:0", "-admin", "", "-http", "127.0.0.1:0"}, io.Discard)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("%s not read: %v, want %q", env, err, want)
			}
		})
	}
}

// TestKeyErrorAlone: a bad key is the only thing printed, with no INFO
// line before it, and a directory is named once.
func TestKeyErrorAlone(t *testing.T) {
	dir := t.TempDir()
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"-key-file", dir, "-udp", "127.0.0.1:0", "-admin", "", "-http", "127.0.0.1:0"}, &stderr)
	if want := "bad pre-shared key: " + dir + " is a directory, not a key file"; err == nil || !strings.HasPrefix(err.Error(), want) || strings.Count(err.Error(), dir) != 1 {
		t.Fatalf("err %v, want %q (the directory named once)", err, want)
	}
	if stderr.Len() != 0 {
		t.Fatalf("printed before the key error: %q", stderr.String())
	}
}

// TestUsageListsNewFlags: -h documents the HTTPS and access flags with
// their defaults and variables.
func TestUsageListsNewFlags(t *testing.T) {
	var stderr bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	for _, want := range []string{"-tls-cert file", "-tls-key file", "-tls-self-signed", "$HTTPGW_TLS_SELF_SIGNED",
		"-allow CIDRs", "-deny CIDRs", "-rate-limit requests/s", `(default "1000")`, "-rate-burst requests", `(default "2000")`,
		"-rate-max-wait", `(default "10s")`, "-max-requests-per-ip", `(default "256")`, "-max-conns-per-ip", `(default "256")`, "-max-conns int", `(default "4096")`, "$HTTPGW_MAX_CONNS]", "httpgw -demo -tls-self-signed"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("usage lacks %q", want)
		}
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
	runGateway(t, io.Discard, "-demo", "-http", web, "-udp", "127.0.0.1:0", "-admin", adm, "-log-level", "warn")
	waitDemo(t, adm, len(demo.SampleFiles))
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

// runGateway runs the gateway with args until the test ends.
func runGateway(t *testing.T, stderr io.Writer, args ...string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, stderr) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
}

// waitDemo waits for three servers with their catalogs.
// waitDemo waits for three servers that each announce at least files
// files (they announce them as they are hashed).
func waitDemo(t *testing.T, adm string, files int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var servers []struct{ Files int }
		if resp, err := http.Get("http://" + adm + "/api/servers"); err == nil {
			json.NewDecoder(resp.Body).Decode(&servers)
			resp.Body.Close()
		}
		n := 0
		for _, s := range servers {
			if s.Files >= files {
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

// bigDemoRoot is a folder with one file of n random bytes, for demo runs
// whose download must outlast something.
func bigDemoRoot(t *testing.T, n int) (dir string, data []byte) {
	dir = t.TempDir()
	data = make([]byte, n)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(dir, "big.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, data
}

// TestDemoDrainsDownloads: a download running when the demo is told to
// stop completes; the embedded servers outlive the drain instead of saying
// goodbye at its start.
func TestDemoDrainsDownloads(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	root, data := bigDemoRoot(t, 16<<20)
	web, adm := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	// A small window and no cache: most of the file is fetched after the
	// stop begins.
	go func() {
		done <- run(ctx, []string{"-demo", "-demo-root", root, "-http", web, "-udp", "127.0.0.1:0", "-admin", adm,
			"-window", "256KiB", "-window-total", "256KiB", "-cache-size", "0", "-log-level", "warn"}, io.Discard)
	}()
	waitDemo(t, adm, 1)
	resp, err := http.Get("http://" + web + "/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	head := make([]byte, 1024)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatal(err)
	}
	cancel() // SIGTERM
	rest, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(append(head, rest...), data) {
		t.Fatalf("download cut by the shutdown: %d of %d bytes, %v", len(head)+len(rest), len(data), err)
	}
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

// startMain starts httpgw with args in a child process whose temp dir is
// tmp, and waits for its "demo running" line.
func startMain(t *testing.T, tmp string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	// TestMain runs main() in the child.
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "FSCHUNK_TEST_RUN_MAIN=1", "TMPDIR="+tmp)
	out := &syncBuffer{}
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "demo running") {
		if time.Now().After(deadline) {
			t.Fatalf("no demo running:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cmd, out
}

// TestDemoSIGTERMRemovesTemp: SIGTERM stops the demo and leaves nothing
// in the temp dir (its samples and hash caches are removed before exit).
func TestDemoSIGTERMRemovesTemp(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	tmp := t.TempDir()
	cmd, out := startMain(t, tmp, "-demo", "-http", "127.0.0.1:0", "-udp", "127.0.0.1:0", "-admin", "")
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, out)
	}
	if es, _ := os.ReadDir(tmp); len(es) != 0 {
		var names []string
		for _, e := range es {
			names = append(names, e.Name())
		}
		t.Fatalf("left in the temp dir after SIGTERM: %v", names)
	}
}

// TestSecondSignalExits: while a download holds the drain, a second
// Ctrl-C exits at once, saying so.
func TestSecondSignalExits(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	root, _ := bigDemoRoot(t, 32<<20)
	web := freeAddr(t)
	cmd, out := startMain(t, t.TempDir(), "-demo", "-demo-root", root, "-http", web, "-udp", "127.0.0.1:0", "-admin", "",
		"-drain-timeout", "10m", "-cache-size", "0")
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	// A client that stops reading keeps its response, and the drain, open.
	var resp *http.Response
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		r, err := http.Get("http://" + web + "/big.bin")
		if err == nil && r.StatusCode == 200 {
			resp = r
			break
		}
		if err == nil {
			r.Body.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("big.bin not served: %v\n%s", err, out)
		}
	}
	defer resp.Body.Close()
	cmd.Process.Signal(os.Interrupt)
	for !strings.Contains(out.String(), "shutting down") {
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-waited:
		t.Fatalf("exited before the drain ended: %v\n%s", err, out)
	case <-time.After(200 * time.Millisecond):
	}
	cmd.Process.Signal(os.Interrupt)
	err := <-waited
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(out.String(), "second signal") {
		t.Fatalf("second Ctrl-C: %v\n%s", err, out)
	}
}

// TestServerNames: servers are known by their stable names (the demo's are
// demo-1…) in the log, /api/servers (with the instance ID beside) and the
// metrics labels, not by the random instance ID alone.
func TestServerNames(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	web, adm := freeAddr(t), freeAddr(t)
	var logs syncBuffer
	runGateway(t, &logs, "-demo", "-http", web, "-udp", "127.0.0.1:0", "-admin", adm)
	waitDemo(t, adm, len(demo.SampleFiles))
	resp, err := http.Get("http://" + adm + "/api/servers")
	if err != nil {
		t.Fatal(err)
	}
	var servers []struct{ Name, ID, Key string }
	json.NewDecoder(resp.Body).Decode(&servers)
	resp.Body.Close()
	names := map[string]bool{}
	keyOf := map[string]string{}
	for _, s := range servers {
		names[s.Name] = true
		keyOf[s.Name] = s.Key
		if s.ID == "" || s.ID == s.Name {
			t.Errorf("server %+v: want a name and an instance ID", s)
		}
		if len(s.Key) != keys.ShortSize {
			t.Errorf("server %+v: want its public key, shortened, as its identity", s)
		}
	}
	resp, err = http.Get("http://" + adm + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, n := range []string{"demo-1", "demo-2", "demo-3"} {
		if !names[n] {
			t.Errorf("/api/servers lacks %s: %+v", n, servers)
		}
		if !strings.Contains(string(metrics), `key="`+keyOf[n]+`",server="`+n+`",server_id="`) {
			t.Errorf("no metrics series for %s", n)
		}
		if !strings.Contains(logs.String(), `msg="server joined" name=`+n+" ") {
			t.Errorf("no join line naming %s in the log", n)
		}
	}
}

// TestDemoBannerMeansServed: once the demo prints "demo running", every
// sample answers at once. Before, the banner came as the servers started,
// while the 64 MiB video was still hashing, and a user who clicked got 404.
func TestDemoBannerMeansServed(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	web := freeAddr(t)
	out := &syncBuffer{}
	runGateway(t, out, "-demo", "-http", web, "-udp", "127.0.0.1:0", "-admin", "", "-log-level", "info")
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(out.String(), "demo running") {
		if time.Now().After(deadline) {
			t.Fatalf("no demo running:\n%s", out)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, f := range demo.SampleFiles {
		u := "http://" + web + "/" + (&url.URL{Path: f.Path}).EscapedPath()
		resp, err := http.Head(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("HEAD %s right after the banner: %s", u, resp.Status)
		}
	}
}

// TestKeysReload: the gateway re-reads its allowed servers when the file
// changes (no signal), and its private key files on SIGHUP, without a
// restart; the demo's own servers stay admitted throughout.
func TestKeysReload(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	tmp := t.TempDir()
	dir := t.TempDir()
	gwKey := filepath.Join(dir, "gw.key")
	k1, _ := keys.Generate()
	if err := keys.WritePrivate(gwKey, k1); err != nil {
		t.Fatal(err)
	}
	ext, _ := keys.Generate()
	// Set from the start but written only later: a key roll without a restart.
	nextKey := filepath.Join(dir, "gw.next.key")
	list := filepath.Join(dir, "servers.txt")
	if err := os.WriteFile(list, []byte("# external servers\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd, out := startMain(t, tmp, "-demo", "-http", "127.0.0.1:0", "-udp", "127.0.0.1:0", "-admin", "",
		"-private-key", gwKey, "-allowed-servers", list, "-next-private-key", nextKey)
	if !strings.Contains(out.String(), "-next-private-key: no such file yet") {
		t.Fatalf("a -next-private-key not written yet is not reported at start:\n%s", out)
	}
	if !strings.Contains(out.String(), `public_key="`+k1.Public().String()+`"`) {
		t.Fatalf("the gateway's public key is not logged at start:\n%s", out)
	}
	wait := func(what string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(out.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in:\n%s", what, out)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// An editor's rename-replace of the list: read without a signal.
	next := list + ".new"
	if err := os.WriteFile(next, []byte(ext.Public().String()+" ext-1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, list); err != nil {
		t.Fatal(err)
	}
	wait(`msg="allowed servers reloaded" servers=1 revoked=0`)
	// SIGHUP with nothing changed says so.
	cmd.Process.Signal(syscall.SIGHUP)
	wait("SIGHUP: re-read the allowed-servers file and the private key files; nothing changed")
	// A new gateway key pair in the same file, then SIGHUP.
	k2, _ := keys.Generate()
	os.Remove(gwKey)
	if err := keys.WritePrivate(gwKey, k2); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	wait("SIGHUP: gateway key pairs reloaded")
	if !strings.Contains(out.String(), `public_key="`+k2.Public().String()+`"`) {
		t.Fatalf("the new public key is not logged:\n%s", out)
	}
	// The next key pair written, then SIGHUP: both keys answer from now on.
	kn, _ := keys.Generate()
	if err := keys.WritePrivate(nextKey, kn); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	wait(`next_public_key="` + kn.Public().String() + `"`)
	// A bad key file on SIGHUP leaves the keys in force.
	if err := os.WriteFile(gwKey, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	wait("SIGHUP: key pairs not reloaded; the ones in force stay")
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after the reloads: %v\n%s", err, out)
	}
}
