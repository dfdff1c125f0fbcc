//go:build unix

package catalog

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestConfinement(t *testing.T) {
	outside := t.TempDir()
	writeTree(t, outside, map[string]string{"secret.txt": "top secret", "dir/inner.txt": "outside inner"})
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"real.txt":      "real content",
		"sub2/file.txt": "in sub2",
	})
	link := func(target, name string) {
		t.Helper()
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	link(filepath.Join(outside, "secret.txt"), "link-out")        // file outside, absolute
	link("../"+filepath.Base(outside)+"/secret.txt", "rel-out")   // relative, escapes
	link(filepath.Join(outside, "dir"), "dirlink-out")            // directory outside
	link("real.txt", "link-in")                                   // file inside: listed
	link("sub2", "dirlink-in")                                    // directory inside: not followed
	link("nowhere", "dangling")                                   // dangling
	link(filepath.Join(outside, "secret.txt"), "sub2/nested-out") // deeper escape
	if err := syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"real.txt":      "real content",
		"link-in":       "real content",
		"sub2/file.txt": "in sub2",
	}

	r := start(t, root, testOptions(t))
	_, es := r.Snapshot()
	if !matchesTree(es, want) {
		t.Fatalf("entries %q, want %q", paths(es), sortedKeys(want))
	}
	for _, secret := range []string{"top secret", "outside inner"} {
		if _, ok := r.Lookup(sum(secret)); ok {
			t.Errorf("outside content %q is listed", secret)
		}
		if _, err := r.Open(sum(secret)); !errors.Is(err, ErrNotFound) {
			t.Errorf("Open of outside content: %v", err)
		}
	}

	// Paths are never taken from callers, and paths from events or the
	// state file cannot leave the root.
	for _, name := range []string{"/etc/passwd", filepath.Join(root, "..", "x"), outside, filepath.Join(outside, "secret.txt")} {
		if p, ok := r.relPath(name); ok {
			t.Errorf("relPath(%q) = %q, accepted", name, p)
		}
	}
	for _, p := range []string{"../" + filepath.Base(outside) + "/secret.txt", "/etc/passwd", "link-out", "rel-out", "dirlink-out/inner.txt", "sub2/nested-out", "fifo", "dangling"} {
		if k, _ := r.classify(p); k != kindGone {
			t.Errorf("classify(%q) = %v, want gone", p, k)
		}
	}

	// New escaping links are not picked up either.
	link(filepath.Join(outside, "secret.txt"), "late-out")
	writeFile(t, root, "marker", "marker")
	want["marker"] = "marker"
	waitSnapshot(t, r.Catalog, "marker", func(_ uint64, es []Entry) bool { return matchesTree(es, want) })
}

// TestReplacedBySymlinkOut replaces an announced file with a symlink that
// leaves the root: reads and opens must fail and the entry must go.
func TestReplacedBySymlinkOut(t *testing.T) {
	outside := t.TempDir()
	writeFile(t, outside, "secret", "victim content")
	for _, running := range []bool{true, false} {
		name := "running"
		if !running {
			name = "stopped"
		}
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, map[string]string{"victim.txt": "victim content", "other": "other"})
			r := start(t, root, testOptions(t))
			h := sum("victim content")
			f, err := r.Open(h)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 64)
			if n, err := f.ReadAt(buf, 0); err != io.EOF || string(buf[:n]) != "victim content" {
				t.Fatalf("ReadAt = %q, %v", buf[:n], err)
			}
			if !running {
				// Without the Run loop nothing updates the catalog: only
				// os.Root stands between the caller and the secret.
				r.stop(t)
			}
			tmp := filepath.Join(root, "tmp-link")
			if err := os.Symlink(filepath.Join(outside, "secret"), tmp); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(root, "victim.txt")); err != nil {
				t.Fatal(err)
			}
			if n, err := f.ReadAt(buf, 0); err == nil {
				t.Errorf("ReadAt after replacement returned %q", buf[:n])
			}
			f2, err := r.Open(h)
			if err == nil {
				n, _ := f2.ReadAt(buf, 0)
				f2.Close()
				t.Fatalf("Open after replacement succeeded, read %q", buf[:n])
			}
			if !running {
				if errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "escapes") {
					t.Errorf("Open after replacement: %v, want the root's refusal", err)
				}
				return
			}
			waitSnapshot(t, r.Catalog, "victim removed", func(_ uint64, es []Entry) bool {
				return matchesTree(es, map[string]string{"other": "other"})
			})
			if _, ok := r.Lookup(h); ok {
				t.Error("victim still found by Lookup")
			}
		})
	}
}

// TestStateFileHardLinkedIntoRoot covers the defensive skip: the state file
// must not be served even if it shows up under the root by a hard link.
func TestStateFileHardLinkedIntoRoot(t *testing.T) {
	base := t.TempDir() // one file system for the hard link
	root := filepath.Join(base, "root")
	writeTree(t, root, map[string]string{"a": "a"})
	opt := testOptions(t)
	opt.StateFile = filepath.Join(base, "state")
	r := start(t, root, opt)
	poll(t, "state file saved", func() bool { _, err := os.Stat(opt.StateFile); return err == nil })
	if err := os.Link(opt.StateFile, filepath.Join(root, "state-link")); err != nil {
		t.Skip("cannot hard link:", err)
	}
	writeFile(t, root, "marker", "marker")
	waitSnapshot(t, r.Catalog, "marker", func(_ uint64, es []Entry) bool {
		return matchesTree(es, map[string]string{"a": "a", "marker": "marker"})
	})
}

// TestDirReplacedBySymlink: events name paths below the old directory; they
// must not be resolved through the symlink that replaced it.
func TestDirReplacedBySymlink(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{"a/x": "x in a", "b/x": "x in b"})
	r := start(t, root, testOptions(t))
	if err := os.RemoveAll(filepath.Join(root, "a")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("b", filepath.Join(root, "a")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, root, "marker", "m")
	want := map[string]string{"b/x": "x in b", "marker": "m"}
	waitSnapshot(t, r.Catalog, "a/x gone, a not followed", func(_ uint64, es []Entry) bool { return matchesTree(es, want) })
	// A full rescan agrees.
	r.stop(t)
	r2 := start(t, root, testOptions(t))
	if _, es := r2.Snapshot(); !matchesTree(es, want) {
		t.Errorf("after rescan: %q", paths(es))
	}
}
