package httpfront

import (
	"errors"
	"path"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestCleanPath(t *testing.T) {
	long := "/" + strings.Repeat("a", MaxPathLen)
	tests := []struct {
		raw     string
		want    string
		wantErr error
	}{
		{"/", "", nil},
		{"/a", "a", nil},
		{"/a/", "a", nil},
		{"/docs/a%20b.pdf", "docs/a b.pdf", nil},
		{"/caf%C3%A9/na%c3%afve.txt", "café/naïve.txt", nil},
		{"/100%25", "100%", nil},
		{"/50%25off", "50%off", nil},
		{"/a+b", "a+b", nil},
		{"/...", "...", nil},
		{"/.hidden", ".hidden", nil},
		{"/a%3Ab", "a:b", nil},
		{long, long[1:], nil},

		{"", "", ErrPathNotAbsolute},
		{"a", "", ErrPathNotAbsolute},
		{"*", "", ErrPathNotAbsolute},
		{"//", "", ErrPathEmptyElement},
		{"/a//b", "", ErrPathEmptyElement},
		{"//etc/passwd", "", ErrPathEmptyElement},
		{"/a//", "", ErrPathEmptyElement},
		{"/../etc/passwd", "", ErrPathDotElement},
		{"/a/..", "", ErrPathDotElement},
		{"/a/./b", "", ErrPathDotElement},
		{"/.", "", ErrPathDotElement},
		{"/%2e%2e/x", "", ErrPathDotElement},
		{"/%2E%2E/x", "", ErrPathDotElement},
		{"/a/%2e%2e/%2e%2e/x", "", ErrPathDotElement},
		{"/.%2e/x", "", ErrPathDotElement},
		{"/a%2fb", "", ErrPathEncodedSlash},
		{"/a%2F..%2Fb", "", ErrPathEncodedSlash},
		{"/a\\b", "", ErrPathBackslash},
		{"/a%5cb", "", ErrPathBackslash},
		{"/..%5c..%5cwin.ini", "", ErrPathBackslash},
		{"/a%00b", "", ErrPathControl},
		{"/a\x00b", "", ErrPathControl},
		{"/a%0d%0aSet-Cookie:x", "", ErrPathControl},
		{"/a%7f", "", ErrPathControl},
		{"/a%c2%85", "", ErrPathControl}, // U+0085, a C1 control
		{"/%c0%ae%c0%ae/x", "", ErrPathInvalidUTF8},
		{"/%e0%80%ae", "", ErrPathInvalidUTF8},
		{"/%ff", "", ErrPathInvalidUTF8},
		{"/%ed%a0%80", "", ErrPathInvalidUTF8}, // surrogate
		// Decoded once: literal names, as a server may announce them.
		{"/%252e%252e/x", "%2e%2e/x", nil},
		{"/a%252fb", "a%2fb", nil},
		{"/a%255cb", "a%5cb", nil},
		{"/a%2500b", "a%00b", nil},
		{"/a%25252e", "a%252e", nil},
		{"/%zz", "", ErrPathBadEscape},
		{"/a%2", "", ErrPathBadEscape},
		{long + "a", "", ErrPathTooLong},
		{"/" + strings.Repeat("%41", MaxPathLen+1), "", ErrPathTooLong},
		{"/" + strings.Repeat("a/", MaxPathLen), "", ErrPathTooLong},
	}
	for _, tt := range tests {
		name := tt.raw
		if len(name) > 40 {
			name = name[:40] + "..."
		}
		t.Run(name, func(t *testing.T) {
			got, err := CleanPath(tt.raw)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("CleanPath(%q) error = %v, want %v", tt.raw, err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("CleanPath(%q) = %q, want %q", tt.raw, got, tt.want)
			}
			if err == nil {
				checkClean(t, tt.raw, got)
			}
		})
	}
}

// checkClean asserts the CleanPath postconditions on an accepted result.
func checkClean(t *testing.T, raw, got string) {
	t.Helper()
	if got == "" {
		return
	}
	switch {
	case path.Clean(got) != got:
		t.Fatalf("CleanPath(%q) = %q, not clean (path.Clean gives %q)", raw, got, path.Clean(got))
	case strings.HasPrefix(got, "/"):
		t.Fatalf("CleanPath(%q) = %q has a leading slash", raw, got)
	case strings.Contains(got, "//"):
		t.Fatalf("CleanPath(%q) = %q contains //", raw, got)
	case strings.Contains(got, `\`):
		t.Fatalf("CleanPath(%q) = %q contains a backslash", raw, got)
	case !utf8.ValidString(got):
		t.Fatalf("CleanPath(%q) = %q is not valid UTF-8", raw, got)
	case strings.ContainsFunc(got, unicode.IsControl):
		t.Fatalf("CleanPath(%q) = %q contains a control character", raw, got)
	case len(got) > MaxPathLen:
		t.Fatalf("CleanPath(%q) = %d bytes, more than MaxPathLen", raw, len(got))
	}
	for elem := range strings.SplitSeq(got, "/") {
		if elem == "." || elem == ".." {
			t.Fatalf("CleanPath(%q) = %q has a dot element", raw, got)
		}
	}
	// Escaping the result element by element gives it back: the index's
	// links and the redirects round-trip.
	if back, err := CleanPath("/" + escapePath(got)); err != nil || back != got {
		t.Fatalf("CleanPath(escape(%q)) = %q, %v", got, back, err)
	}
}

// FuzzCleanPath checks that whatever CleanPath accepts is clean. The seed
// corpus in testdata/fuzz/FuzzCleanPath holds the classic traversal forms.
func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"/", "/a/b.txt", "/docs/a%20b.pdf", "/a/%2e%2e/b", "/%252e%252e/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := CleanPath(raw)
		if err != nil {
			if got != "" {
				t.Fatalf("CleanPath(%q) returned %q with error %v", raw, got, err)
			}
			return
		}
		checkClean(t, raw, got)
	})
}
