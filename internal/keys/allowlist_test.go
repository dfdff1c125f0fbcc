package keys

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseAllowList(t *testing.T) {
	in := `# servers of rack 1
` + alicePub + ` srv1
  ` + bobPub + `	# no name, a comment

# srv1's next key, beside its current one while it rotates
` + mustGen(t).String() + ` srv1 # trailing comment
`
	l, err := ParseAllowList(strings.NewReader(in), "allow")
	if err != nil {
		t.Fatal(err)
	}
	if l.Len() != 3 {
		t.Fatalf("%d keys", l.Len())
	}
	a, _ := ParsePublic(alicePub)
	b, _ := ParsePublic(bobPub)
	if n, ok := l.Lookup(a); !ok || n != "srv1" {
		t.Errorf("alice: %q %v", n, ok)
	}
	if n, ok := l.Lookup(b); !ok || n != "" {
		t.Errorf("bob: %q %v", n, ok)
	}
	if _, ok := l.Lookup(mustGen(t)); ok {
		t.Error("a stranger is on the list")
	}
	var nilList *AllowList
	if _, ok := nilList.Lookup(a); ok || nilList.Len() != 0 {
		t.Error("nil list admits")
	}
	empty, err := ParseAllowList(strings.NewReader("\n# nothing\n"), "e")
	if err != nil || empty.Len() != 0 {
		t.Fatalf("empty list: %v", err)
	}
}

func TestParseAllowListErrors(t *testing.T) {
	cases := []struct{ in, want string }{
		{"# ok\n\nnot-a-key srv\n", "allow.txt:3: "},
		{alicePub + " srv1 extra\n", "allow.txt:1: 3 fields"},
		{alicePub + " srv1\n" + bobPub + "\n" + alicePub + " again\n", "allow.txt:3: key hSDwCYkw is already on line 1"},
		{alicePub + " " + strings.Repeat("n", 65) + "\n", "allow.txt:1: "},
		{alicePub + " a\x01b\n", "allow.txt:1: "},
		{"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", "all-zero"},
		{strings.Repeat("x", 70<<10), "allow.txt:1: line too long"},
	}
	for _, c := range cases {
		_, err := ParseAllowList(strings.NewReader(c.in), "allow.txt")
		if err == nil || !errors.Is(err, ErrAllowList) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%.40q: %v, want %q", c.in, err, c.want)
		}
	}
}

func TestLoadAllowList(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "servers")
	if _, err := LoadAllowList(p); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
	if _, err := LoadAllowList(dir); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Fatalf("directory: %v", err)
	}
	os.WriteFile(p, []byte(alicePub+" x\nbad\n"), 0o644)
	if _, err := LoadAllowList(p); err == nil || !strings.Contains(err.Error(), p+":2:") {
		t.Fatalf("bad line: %v", err)
	}
}

func mustGen(t testing.TB) Public {
	k, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

// format writes l in the file format, for the fuzz test's round trip.
func format(l *AllowList) string {
	var b strings.Builder
	for k, n := range l.All() {
		fmt.Fprintf(&b, "%s %s\n", k, n)
	}
	return b.String()
}

// FuzzParseAllowList: any input parses or fails with an ErrAllowList
// naming the file, never panics; what parses writes back to an equal list.
func FuzzParseAllowList(f *testing.F) {
	f.Add(alicePub + " srv1\n# c\n\n" + bobPub + "\n")
	f.Add(alicePub + " a b\n")
	f.Add(alicePub + "\n" + alicePub + "\n")
	f.Add("#" + alicePub + "\n \t\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		l, err := ParseAllowList(strings.NewReader(in), "fuzz")
		if err != nil {
			if !errors.Is(err, ErrAllowList) || !strings.Contains(err.Error(), "fuzz") {
				t.Fatalf("error %v", err)
			}
			return
		}
		l2, err := ParseAllowList(strings.NewReader(format(l)), "again")
		if err != nil || !l2.Equal(l) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
