package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/fastfile/fschunk/internal/fschunk"
)

// Version and Revision are stamped by the release build
// (deploy/build-deb.sh) with
//
//	-ldflags "-X github.com/fastfile/fschunk/internal/cli.Version=1.2.3 -X github.com/fastfile/fschunk/internal/cli.Revision=<commit>"
//
// because a build with -buildvcs=false (as CI runs) or from a source tree
// without .git has no VCS facts in its build info. When empty, the build
// info's module version and vcs.revision are all there is.
var (
	Version  = ""
	Revision = ""
)

// VersionString describes the build for -version and the start-up log
// line: "httpgw 1.2.3 (module v1.2.3, revision 0123abcd…, go1.26.8
// linux/amd64, FS Chunk Protocol v2)".
func VersionString(prog string) string {
	bi, _ := debug.ReadBuildInfo()
	return versionString(prog, Version, Revision, bi)
}

// versionString is VersionString with its inputs given, for tests. bi may
// be nil (a binary built without module support).
func versionString(prog, stamped, stampedRev string, bi *debug.BuildInfo) string {
	module, rev, modified := "", "", false
	goVersion := runtime.Version()
	if bi != nil {
		module = bi.Main.Version
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if module == "(devel)" {
		module = "" // what go build says when it knows nothing
	}
	// The build's own VCS facts win over the stamp: they cannot be stale.
	if rev == "" {
		rev = stampedRev
	}
	v := stamped
	if v == "" {
		v = module
	}
	if v == "" {
		v = "devel"
	}
	var details []string
	if module != "" && module != v {
		details = append(details, "module "+module)
	}
	switch {
	case rev == "":
		details = append(details, "revision unknown")
	case modified:
		details = append(details, "revision "+rev+" with local changes")
	default:
		details = append(details, "revision "+rev)
	}
	details = append(details,
		goVersion+" "+runtime.GOOS+"/"+runtime.GOARCH,
		fmt.Sprintf("FS Chunk Protocol v%d", fschunk.Version))
	return fmt.Sprintf("%s %s (%s)", prog, v, strings.Join(details, ", "))
}
