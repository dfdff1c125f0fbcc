package keys

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadPrivate(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode) // past the umask
		return p
	}
	good := write("good", alicePriv+"\n", 0o600)
	k, warn, err := LoadPrivate(good)
	if err != nil || warn != nil || k.Public().String() != alicePub {
		t.Fatalf("good key: %v, warn %v", err, warn)
	}
	open := write("open", alicePriv, 0o644)
	k, warn, err = LoadPrivate(open)
	if err != nil || k.IsZero() {
		t.Fatalf("readable key refused: %v", err)
	}
	if !errors.Is(warn, ErrFileMode) || !strings.Contains(warn.Error(), "0644") || !strings.Contains(warn.Error(), "chmod 600 "+open) {
		t.Fatalf("no warning for mode 0644: %v", warn)
	}
	cases := []struct{ name, path, want string }{
		{"missing", filepath.Join(dir, "nope"), "no such file"},
		{"no path", "", "no key file given"},
		{"directory", dir, "is a directory"},
		{"short", write("short", alicePriv[:40], 0o600), "44 characters"},
		{"not base64", write("b64", strings.Repeat("*", 44), 0o600), "not standard base64"},
		{"binary psk", write("psk", strings.Repeat("\x01", 32), 0o600), "44 characters"},
		{"huge", write("huge", strings.Repeat("A", MaxSecretFile+1), 0o600), "larger than"},
	}
	for _, c := range cases {
		_, _, err := LoadPrivate(c.path)
		if err == nil || !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an ErrKey saying %q", c.name, err, c.want)
		}
	}
	if _, _, err := LoadPrivate(filepath.Join(dir, "nope")); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "genkey") {
		t.Errorf("missing file: %v, want ErrNotExist and how to make one", err)
	}
}

func TestWritePrivate(t *testing.T) {
	dir := t.TempDir()
	k, _ := Generate()
	p := filepath.Join(dir, "k")
	if err := WritePrivate(p, k); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", st.Mode(), err)
	}
	got, warn, err := LoadPrivate(p)
	if err != nil || warn != nil || got.Public() != k.Public() {
		t.Fatalf("read back: %v %v", err, warn)
	}
	k2, _ := Generate()
	if err := WritePrivate(p, k2); err == nil || !strings.Contains(err.Error(), "not overwriting") {
		t.Fatalf("overwrote: %v", err)
	}
	if got, _, _ := LoadPrivate(p); got.Public() != k.Public() {
		t.Fatal("the first key is gone")
	}
	if err := WritePrivate(filepath.Join(dir, "z"), Private{}); err == nil {
		t.Fatal("wrote the zero key")
	}
	if err := WritePrivate(filepath.Join(dir, "no", "such", "dir"), k); err == nil {
		t.Fatal("wrote into a missing directory")
	}
}
