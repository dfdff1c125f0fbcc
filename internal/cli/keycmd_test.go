package cli

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fastfile/fschunk/internal/keys"
)

// call runs dispatch as Main would, with a run function that only parses
// (with -version), and returns stdout, stderr and the error.
func call(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	run := func(_ context.Context, args []string, stderr io.Writer) error {
		fs := flag.NewFlagSet("prog", flag.ContinueOnError)
		fs.SetOutput(stderr)
		fs.String("must", "", "")
		AddVersionFlag(fs)
		if err := Parse(fs, "PROG", args); err != nil {
			return err
		}
		return errors.New("ran")
	}
	var out, errOut strings.Builder
	err := dispatch(t.Context(), "prog", args, strings.NewReader(stdin), &out, &errOut, run)
	return out.String(), errOut.String(), err
}

func TestVersionFlag(t *testing.T) {
	out, errOut, err := call(t, "", "-version")
	if err != nil || !strings.HasPrefix(out, "prog ") || strings.Count(out, "\n") != 1 ||
		!strings.Contains(out, "revision ") || !strings.Contains(out, "FS Chunk Protocol v") || errOut != "" {
		t.Fatalf("-version: %q %q %v", out, errOut, err)
	}
	if out, _, err := call(t, "", "-must", "x"); out != "" || err == nil || err.Error() != "ran" {
		t.Fatalf("without -version: %q %v", out, err)
	}
	t.Setenv("PROG_VERSION", "true")
	if out, _, err := call(t, ""); err != nil || !strings.HasPrefix(out, "prog ") {
		t.Fatalf("PROG_VERSION: %q %v", out, err)
	}
}

func TestGenkeyPubkey(t *testing.T) {
	priv, errOut, err := call(t, "", "genkey")
	if err != nil || errOut != "" || len(priv) != 45 {
		t.Fatalf("genkey: %q %q %v", priv, errOut, err)
	}
	k, err := keys.ParsePrivate(priv)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, err := call(t, priv, "pubkey")
	if err != nil || pub != k.Public().String()+"\n" {
		t.Fatalf("pubkey: %q %v", pub, err)
	}
	// The RFC 7748 vector, as `wg pubkey` reads it.
	pub, _, err = call(t, "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=\n", "pubkey")
	if err != nil || pub != "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n" {
		t.Fatalf("pubkey of the RFC 7748 key: %q %v", pub, err)
	}

	file := filepath.Join(t.TempDir(), "srv.key")
	pub, _, err = call(t, "", "genkey", "-out", file)
	if err != nil {
		t.Fatal(err)
	}
	k2, warn, err := keys.LoadPrivate(file)
	if err != nil || warn != nil || pub != k2.Public().String()+"\n" {
		t.Fatalf("genkey -out: printed %q, file %v %v", pub, err, warn)
	}
	if _, _, err := call(t, "", "genkey", "-out", file); err == nil || !strings.Contains(err.Error(), "not overwriting") {
		t.Fatalf("second genkey -out: %v", err)
	}
	if k3, _, _ := keys.LoadPrivate(file); k3.Public() != k2.Public() {
		t.Fatal("key file replaced")
	}

	for _, c := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"", []string{"pubkey"}, "pubkey: stdin: bad key"},
		{"not a key", []string{"pubkey"}, "44 characters"},
		{strings.Repeat("A", 5000), []string{"pubkey"}, "larger than a key file"},
		{priv, []string{"pubkey", "file"}, "comes on stdin"},
		{"", []string{"genkey", "extra"}, `unexpected argument "extra"`},
		{"", []string{"genkey", "-bits", "4096"}, "not defined"},
	} {
		_, _, err := call(t, c.stdin, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
	if _, errOut, err := call(t, "", "genkey", "-h"); !errors.Is(err, flag.ErrHelp) || !strings.Contains(errOut, "prog genkey [-out FILE]") {
		t.Errorf("genkey -h: %v %q", err, errOut)
	}
}

// genkey > FILE, with FILE readable by others, warns as wg does.
func TestGenkeyRedirectWarns(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	os.Chmod(p, 0o644)
	var errOut strings.Builder
	if err := genkey("prog", nil, nil, f, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut.String(), "warning") || !strings.Contains(errOut.String(), "0644") {
		t.Fatalf("no warning: %q", errOut.String())
	}
	if _, warn, err := keys.LoadPrivate(p); err != nil || warn == nil {
		t.Fatalf("the key: %v %v", err, warn)
	}
}

func TestUsageNamesKeyCommands(t *testing.T) {
	fs := flag.NewFlagSet("prog", flag.ContinueOnError)
	var b strings.Builder
	fs.SetOutput(&b)
	Usage(fs, "PROG", "prog [flags]")()
	if !strings.Contains(b.String(), "prog genkey [-out FILE]") || !strings.Contains(b.String(), "prog pubkey < FILE") {
		t.Fatalf("%s", b.String())
	}
}
