// Package deploy holds what an operator installs besides the two
// programs: the systemd units (systemd/), their environment files (etc/)
// and the Debian package definitions (nfpm/, debian/), built by
// build-deb.sh. The Go code here only reads the units and environment
// files back, so that tests can hold them to the programs' flags: a
// renamed flag breaks a test, not an installed service.
package deploy

import (
	"bufio"
	"bytes"
	"embed"
	"fmt"
	"strings"
)

// Files are the units and environment files, as shipped.
//
//go:embed systemd/*.service etc/*.env
var Files embed.FS

// Unit is a parsed unit file: section, then key, then every value given
// for that key in order (systemd keys such as EnvironmentFile= repeat).
type Unit map[string]map[string][]string

// Value is the last value of section's key, as systemd reads a key given
// once; "" if absent.
func (u Unit) Value(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// ReadUnit reads a unit from Files, e.g. "httpgw.service".
func ReadUnit(name string) (Unit, error) {
	b, err := Files.ReadFile("systemd/" + name)
	if err != nil {
		return nil, err
	}
	u, err := ParseUnit(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return u, nil
}

// ParseUnit parses the subset of systemd.syntax(7) our units use:
// [Section] headers, Key=Value lines, comments starting with # or ;, and
// lines continued with a trailing backslash.
func ParseUnit(b []byte) (Unit, error) {
	u := Unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	line, n := "", 0
	for sc.Scan() {
		n++
		l := strings.TrimSpace(sc.Text())
		if line == "" && (l == "" || l[0] == '#' || l[0] == ';') {
			continue
		}
		if strings.HasSuffix(l, `\`) {
			line += strings.TrimSuffix(l, `\`) + " "
			continue
		}
		line += l
		l, line = line, ""
		if strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]") {
			section = l[1 : len(l)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok || section == "" {
			return nil, fmt.Errorf("line %d: want Key=Value inside a [Section]: %q", n, l)
		}
		k = strings.TrimSpace(k)
		u[section][k] = append(u[section][k], strings.TrimSpace(v))
	}
	return u, sc.Err()
}

// CommandLine splits an ExecStart= value into words as systemd does for
// our units: specifiers (%f, %i, …) and ${VAR} replaced from vars first,
// then words split at blanks, double quotes grouping. A name missing from
// vars is an error, so that a test notices a specifier it did not expect.
func CommandLine(value string, vars map[string]string) ([]string, error) {
	var b strings.Builder
	for i := 0; i < len(value); i++ {
		c := value[i]
		switch {
		case c == '%' && i+1 < len(value):
			i++
			if value[i] == '%' {
				b.WriteByte('%')
				continue
			}
			v, ok := vars["%"+value[i:i+1]]
			if !ok {
				return nil, fmt.Errorf("specifier %%%c: no value given", value[i])
			}
			b.WriteString(v)
		case c == '$' && strings.HasPrefix(value[i:], "${"):
			end := strings.IndexByte(value[i:], '}')
			if end < 0 {
				return nil, fmt.Errorf("unterminated ${ in %q", value)
			}
			name := value[i+2 : i+end]
			v, ok := vars[name]
			if !ok {
				return nil, fmt.Errorf("variable ${%s}: no value given", name)
			}
			b.WriteString(v)
			i += end
		default:
			b.WriteByte(c)
		}
	}
	var words []string
	var w strings.Builder
	inWord, quoted := false, false
	for _, r := range b.String() {
		switch {
		case r == '"':
			quoted, inWord = !quoted, true
		case (r == ' ' || r == '\t') && !quoted:
			if inWord {
				words, inWord = append(words, w.String()), false
				w.Reset()
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote in %q", value)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// EnvVar is one NAME=value line of an environment file; Example is true
// for a commented-out one ("#NAME=value"), which documents a setting.
type EnvVar struct {
	Name, Value string
	Example     bool
}

// ReadEnv reads an environment file from Files, e.g. "httpgw.env": its
// settings and its commented-out examples.
func ReadEnv(name string) ([]EnvVar, error) {
	b, err := Files.ReadFile("etc/" + name)
	if err != nil {
		return nil, err
	}
	var out []EnvVar
	for l := range strings.Lines(string(b)) {
		l = strings.TrimSpace(l)
		example := strings.HasPrefix(l, "#")
		l = strings.TrimPrefix(l, "#")
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t") || strings.ToUpper(k) != k {
			continue // prose
		}
		out = append(out, EnvVar{Name: k, Value: v, Example: example})
	}
	return out, nil
}
