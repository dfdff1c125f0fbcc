package keys

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"iter"
	"maps"
	"os"
	"strings"

	"github.com/fastfile/fschunk/internal/fschunk"
)

// MaxAllowListFile bounds an allow-list file: about 100k servers' lines,
// far beyond any fleet, and short of exhausting memory on a wrong path.
const MaxAllowListFile = 8 << 20

// ErrAllowList is wrapped by every allow-list parse error.
var ErrAllowList = errors.New("bad allow-list")

// AllowList is an immutable snapshot of the public keys a gateway admits,
// each with an optional name. Reloading makes a new AllowList; one in use
// never changes, so Lookup needs no lock.
//
// The file format, one key a line:
//
//	# comment
//	PUBKEY [NAME]   # comment
//
// PUBKEY is a key's text form (as `pubkey` prints it); NAME follows the
// -name rules of fastfilesrv (1 to 64 bytes of UTF-8, no spaces). A key
// may appear once; a name may appear on several lines, so a server's
// current and next key can both be listed while it rotates.
type AllowList struct {
	names map[Public]string
}

// Lookup reports whether k is on the list, and its name ("" if none).
func (l *AllowList) Lookup(k Public) (name string, ok bool) {
	if l == nil {
		return "", false
	}
	name, ok = l.names[k]
	return name, ok
}

// Len is the number of keys on the list.
func (l *AllowList) Len() int {
	if l == nil {
		return 0
	}
	return len(l.names)
}

// All yields every key and its name, in no order.
func (l *AllowList) All() iter.Seq2[Public, string] {
	return func(yield func(Public, string) bool) {
		if l == nil {
			return
		}
		for k, n := range l.names {
			if !yield(k, n) {
				return
			}
		}
	}
}

// Equal reports whether l and m hold the same keys with the same names.
func (l *AllowList) Equal(m *AllowList) bool {
	if l.Len() != m.Len() {
		return false
	}
	return l.Len() == 0 || maps.Equal(l.names, m.names)
}

// ParseAllowList reads an allow-list. file names the source in errors,
// which also give the line number.
func ParseAllowList(r io.Reader, file string) (*AllowList, error) {
	l := &AllowList{names: map[Public]string{}}
	first := map[Public]int{} // line of each key, for the duplicate error
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 64<<10)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i] // base64 and names have no '#'
		}
		f := strings.Fields(text)
		if len(f) == 0 {
			continue
		}
		if len(f) > 2 {
			return nil, fmt.Errorf("%w: %s:%d: %d fields, want PUBKEY [NAME]", ErrAllowList, file, line, len(f))
		}
		k, err := ParsePublic(f[0])
		if err != nil {
			return nil, fmt.Errorf("%w: %s:%d: %v", ErrAllowList, file, line, err)
		}
		name := ""
		if len(f) == 2 {
			name = f[1]
			if err := fschunk.ValidServerName(name); err != nil {
				return nil, fmt.Errorf("%w: %s:%d: %v", ErrAllowList, file, line, err)
			}
		}
		if prev, dup := first[k]; dup {
			return nil, fmt.Errorf("%w: %s:%d: key %s is already on line %d", ErrAllowList, file, line, k.Short(), prev)
		}
		first[k] = line
		l.names[k] = name
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%w: %s:%d: line too long", ErrAllowList, file, line+1)
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrAllowList, file, err)
	}
	return l, nil
}

// LoadAllowList reads an allow-list file.
func LoadAllowList(path string) (*AllowList, error) {
	b, err := readAllowListFile(path)
	if err != nil {
		return nil, err
	}
	return ParseAllowList(bytes.NewReader(b), path)
}

func readAllowListFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAllowList, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return nil, fmt.Errorf("%w: %s is a directory", ErrAllowList, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxAllowListFile+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAllowList, err)
	}
	if len(b) > MaxAllowListFile {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrAllowList, path, MaxAllowListFile)
	}
	return b, nil
}
