package cli

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseEnv(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	a := fs.String("key-file", "", "")
	b := fs.Int("port", 1, "")
	c := fs.String("root", "def", "")
	t.Setenv("T_KEY_FILE", "/env/key")
	t.Setenv("T_PORT", "9")
	t.Setenv("T_ROOT", "ignored")
	if err := Parse(fs, "T", []string{"-root", "cli"}); err != nil {
		t.Fatal(err)
	}
	if *a != "/env/key" || *b != 9 || *c != "cli" {
		t.Fatalf("got %q %d %q", *a, *b, *c)
	}
	t.Setenv("T_PORT", "nine")
	fs2 := flag.NewFlagSet("x", flag.ContinueOnError)
	fs2.Int("port", 1, "")
	if err := Parse(fs2, "T", nil); err == nil || !strings.Contains(err.Error(), "T_PORT") {
		t.Fatalf("bad env value: %v", err)
	}
}

func TestLogger(t *testing.T) {
	if _, err := Logger(io.Discard, "json", "debug"); err != nil {
		t.Fatal(err)
	}
	if _, err := Logger(io.Discard, "xml", "info"); err == nil {
		t.Fatal("xml accepted")
	}
	if _, err := Logger(io.Discard, "text", "loud"); err == nil {
		t.Fatal("bad level accepted")
	}
}

// TestJSONDurations: JSON logs give durations as text ("1.5s"), not as
// integer nanoseconds.
func TestJSONDurations(t *testing.T) {
	var b strings.Builder
	log, err := Logger(&b, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("x", "timeout", 1500*time.Millisecond)
	if !strings.Contains(b.String(), `"timeout":"1.5s"`) {
		t.Fatalf("got %s", b.String())
	}
}
