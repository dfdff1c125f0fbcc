package httpfront

import (
	"errors"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxPathLen is the longest decoded path, in bytes, that CleanPath accepts.
// It matches PATH_MAX on Linux so that any accepted name can also be stored
// by a POSIX backend, and it bounds the work done per request.
const MaxPathLen = 4096

// Errors returned by CleanPath. They are distinct so that the access log says
// why a request was refused; clients only ever see "400 Bad Request".
var (
	ErrPathNotAbsolute  = errors.New("path does not start with /")
	ErrPathTooLong      = errors.New("path too long")
	ErrPathEmptyElement = errors.New("path has an empty element (//)")
	ErrPathDotElement   = errors.New("path has a . or .. element")
	ErrPathBadEscape    = errors.New("path has a malformed %-escape")
	ErrPathEncodedSlash = errors.New("path has an encoded slash")
	ErrPathBackslash    = errors.New("path has a backslash")
	ErrPathControl      = errors.New("path has a control character")
	ErrPathInvalidUTF8  = errors.New("path is not valid UTF-8")
)

// CleanPath validates an escaped request path, as sent on the wire and as
// returned by (*url.URL).EscapedPath, and returns the decoded path in the
// form the Source expects: no leading slash, elements separated by single
// slashes, "" for the root. One trailing slash is allowed (it marks a
// directory) and dropped; the caller looks at raw itself if it cares.
//
// The function takes the escaped form rather than r.URL.Path because
// net/http has already turned "%2f" into "/" there, so an encoded slash
// would be indistinguishable from a separator. Splitting on "/" before
// decoding lets us see and reject it.
//
// CleanPath rejects rather than normalises: a legitimate client (a browser,
// curl, our own index links) never sends "..", ".", "//", backslashes or
// control characters, so anything containing them is either a bug or an
// attack and a 400 is more useful than a guess. Rejected are:
//   - paths not starting with "/", longer than MaxPathLen once decoded,
//     or containing empty elements ("//");
//   - "." and ".." elements, whether literal or %-encoded;
//   - malformed %-escapes, encoded slashes ("%2f"), backslashes (literal or
//     "%5c"), and control characters (C0, DEL and C1, literal or encoded);
//   - invalid UTF-8 after decoding, which includes overlong forms such as
//     "%c0%ae" for ".".
//
// A path is decoded exactly once. "%252e" is the file named "%2e", not
// "." : nothing behind CleanPath decodes a name again (the pool matches
// names exactly and servers are asked for content hashes, never paths),
// so a file such as "50%25off.txt" is served like any other name.
//
// Every accepted result r satisfies: r == "" or path.Clean(r) == r, no
// element is "." or "..", and r has no leading slash, "//", backslash,
// control character or invalid UTF-8. FuzzCleanPath checks this.
func CleanPath(raw string) (string, error) {
	// Each decoded byte takes at most three escaped bytes; add the leading
	// and trailing slash. This bounds the work before any decoding.
	if len(raw) > 3*MaxPathLen+2 {
		return "", ErrPathTooLong
	}
	if raw == "" || raw[0] != '/' {
		return "", ErrPathNotAbsolute
	}
	rest := raw[1:]
	if rest == "" {
		return "", nil
	}
	if strings.HasSuffix(rest, "/") {
		rest = rest[:len(rest)-1]
		if rest == "" {
			return "", ErrPathEmptyElement // raw was "//"
		}
	}
	var b strings.Builder
	b.Grow(len(rest))
	for elem := range strings.SplitSeq(rest, "/") {
		if elem == "" {
			return "", ErrPathEmptyElement
		}
		dec, err := url.PathUnescape(elem)
		if err != nil {
			return "", ErrPathBadEscape
		}
		if err := checkElement(dec); err != nil {
			return "", err
		}
		if b.Len() > 0 {
			b.WriteByte('/')
		}
		b.WriteString(dec)
		if b.Len() > MaxPathLen {
			return "", ErrPathTooLong
		}
	}
	return b.String(), nil
}

// checkElement validates one decoded path element.
func checkElement(e string) error {
	if e == "." || e == ".." {
		return ErrPathDotElement
	}
	if !utf8.ValidString(e) {
		return ErrPathInvalidUTF8
	}
	for _, r := range e {
		switch {
		case r == '/':
			return ErrPathEncodedSlash
		case r == '\\':
			return ErrPathBackslash
		case unicode.IsControl(r):
			return ErrPathControl
		}
	}
	return nil
}

// escapePath percent-encodes a clean path element by element, the inverse
// of CleanPath for accepted inputs. It is used for redirects.
func escapePath(p string) string {
	if p == "" {
		return ""
	}
	elems := strings.Split(p, "/")
	for i, e := range elems {
		elems[i] = url.PathEscape(e)
	}
	return strings.Join(elems, "/")
}
