package cli

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionString(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	cases := []struct {
		name, stamped, stampedRev string
		bi                        *debug.BuildInfo
		want                      []string // substrings, in order
		not                       []string
	}{
		{"go build in a git tree", "", "",
			&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261203160000-e4bb886ab1cd"}, Settings: vcs("e4bb886ab1cd0000000000000000000000000000", "false")},
			[]string{"httpgw v0.0.0-20261203160000-e4bb886ab1cd (", "revision e4bb886ab1cd0000000000000000000000000000", "go1.26.8 ", "FS Chunk Protocol v"},
			[]string{"module ", "local changes"}},
		{"go build with local changes", "", "",
			&debug.BuildInfo{Main: debug.Module{Version: "v1.2.3+dirty"}, Settings: vcs("abc", "true")},
			[]string{"httpgw v1.2.3+dirty (", "revision abc with local changes"}, nil},
		{"release build: stamped, -buildvcs=false", "1.2.3", "0123456789abcdef",
			&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}},
			[]string{"httpgw 1.2.3 (", "revision 0123456789abcdef,"}, []string{"module", "devel", "unknown"}},
		{"stamped and a module version", "1.2.3", "",
			&debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: vcs("fff", "false")},
			[]string{"httpgw 1.2.3 (module v1.2.3, revision fff,"}, nil},
		{"build info revision wins over the stamp", "1.2.3", "stale",
			&debug.BuildInfo{Settings: vcs("fresh", "false")},
			[]string{"revision fresh,"}, []string{"stale"}},
		{"nothing known", "", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}},
			[]string{"httpgw devel (revision unknown, "}, nil},
		{"no build info", "", "", nil, []string{"httpgw devel (revision unknown, go"}, nil},
	}
	for _, c := range cases {
		got := versionString("httpgw", c.stamped, c.stampedRev, c.bi)
		rest := got
		for _, w := range c.want {
			i := strings.Index(rest, w)
			if i < 0 {
				t.Errorf("%s: %q lacks %q (in order)", c.name, got, w)
				break
			}
			rest = rest[i+len(w):]
		}
		for _, n := range c.not {
			if strings.Contains(got, n) {
				t.Errorf("%s: %q mentions %q", c.name, got, n)
			}
		}
		if strings.Contains(got, "\n") {
			t.Errorf("%s: %q is more than one line", c.name, got)
		}
	}
}

// The real build info of this test binary: whatever it holds, the string
// names the program and the protocol.
func TestVersionStringReal(t *testing.T) {
	got := VersionString("fastfilesrv")
	if !strings.HasPrefix(got, "fastfilesrv ") || !strings.Contains(got, "FS Chunk Protocol v") {
		t.Fatalf("%q", got)
	}
}
