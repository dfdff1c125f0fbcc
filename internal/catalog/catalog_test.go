package catalog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fastfile/fschunk/internal/hashtree"
)

func TestScanHashesTree(t *testing.T) {
	root := t.TempDir()
	rnd := rand.New(rand.NewPCG(1, 2))
	big := make([]byte, 9<<20+123) // crosses the in-hash change check
	for i := range big {
		big[i] = byte(rnd.Uint32())
	}
	files := map[string]string{
		"a.txt":                         "alpha\n",
		"empty":                         "",
		"dir/b.txt":                     "bravo bravo\n",
		"dir/sub/deeper/c.txt":          "charlie",
		"with space/file name with.txt": "spaces are fine",
		"dup1":                          "same content",
		"dir/dup2":                      "same content",
		"big.bin":                       string(big),
	}
	writeTree(t, root, files)

	c, err := Open(root, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if gen, es := c.Snapshot(); gen != 0 || len(es) != 0 {
		t.Fatalf("before Run: gen %d, %d entries; want empty gen 0", gen, len(es))
	}
	c.Close()

	r := start(t, root, testOptions(t))
	gen, es := r.Snapshot()
	// Generation 1 comes right after the walk (files are announced as
	// they are hashed), so Ready finds gen 1 or later.
	if gen < 1 {
		t.Errorf("gen after first scan = %d, want ≥ 1", gen)
	}
	if got, want := paths(es), sortedKeys(files); !equalStrings(got, want) {
		t.Fatalf("paths = %q, want %q", got, want)
	}
	for _, e := range es {
		content := files[e.Path]
		if e.Hash != sum(content) {
			t.Errorf("%s: hash mismatch", e.Path)
		}
		fi, err := os.Stat(filepath.Join(root, filepath.FromSlash(e.Path)))
		if err != nil {
			t.Fatal(err)
		}
		if e.Size != fi.Size() || !e.ModTime.Equal(fi.ModTime()) {
			t.Errorf("%s: size %d mtime %v, want %d %v", e.Path, e.Size, e.ModTime, fi.Size(), fi.ModTime())
		}
		if _, ok := r.Lookup(e.Hash); !ok {
			t.Errorf("%s: Lookup failed", e.Path)
		}
		f, err := r.Open(e.Hash)
		if err != nil {
			t.Fatalf("%s: Open: %v", e.Path, err)
		}
		got := make([]byte, e.Size+10)
		n, err := f.ReadAt(got, 0)
		if err != io.EOF || n != int(e.Size) || string(got[:n]) != content {
			t.Errorf("%s: ReadAt whole = %d, %v", e.Path, n, err)
		}
		if e.Size > 4 {
			n, err = f.ReadAt(got[:4], 1)
			if err != nil || n != 4 || string(got[:4]) != content[1:5] {
				t.Errorf("%s: ReadAt middle = %d, %v", e.Path, n, err)
			}
		}
		if n, err = f.ReadAt(got[:1], e.Size); n != 0 || err != io.EOF {
			t.Errorf("%s: ReadAt at EOF = %d, %v", e.Path, n, err)
		}
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	}
	if st := r.Stats(); st.HashedFiles != uint64(len(files)) || st.Entries != len(files) || st.Files != len(files) {
		t.Errorf("stats %+v", st)
	}
	if _, ok := r.Lookup(sum("not there")); ok {
		t.Error("Lookup of unknown hash succeeded")
	}
	if _, err := r.Open(sum("not there")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open of unknown hash: %v, want ErrNotFound", err)
	}
}

func equalStrings(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00")
}

// TestDeltas applies file system operations one after the other and checks
// that each ends up in the snapshot and in Since.
func TestDeltas(t *testing.T) {
	root := t.TempDir()
	state := map[string]string{
		"keep.txt":        "keep",
		"mod.txt":         "version one",
		"gone.txt":        "to be removed",
		"old name.txt":    "renamed content",
		"sub/inner.txt":   "inner",
		"sub/deep/x.data": "x",
	}
	writeTree(t, root, state)
	r := start(t, root, testOptions(t))
	at := func(p string) string { return filepath.Join(root, filepath.FromSlash(p)) }

	parking := filepath.Join(filepath.Dir(root), "parking-"+filepath.Base(root)) // same file system
	t.Cleanup(func() { os.Remove(parking) })
	steps := []struct {
		name string
		do   func(t *testing.T)
		want func(m map[string]string)
	}{
		{"add", func(t *testing.T) { writeFile(t, root, "new.txt", "brand new") },
			func(m map[string]string) { m["new.txt"] = "brand new" }},
		{"modify", func(t *testing.T) { writeFile(t, root, "mod.txt", "version two, longer") },
			func(m map[string]string) { m["mod.txt"] = "version two, longer" }},
		{"modify same size", func(t *testing.T) {
			writeFile(t, root, "mod.txt", "VERSION TWO, LONGER")
			// Same size; make sure the mtime differs even on coarse clocks.
			if err := os.Chtimes(at("mod.txt"), time.Now(), time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
		}, func(m map[string]string) { m["mod.txt"] = "VERSION TWO, LONGER" }},
		{"remove", func(t *testing.T) {
			if err := os.Remove(at("gone.txt")); err != nil {
				t.Fatal(err)
			}
		}, func(m map[string]string) { delete(m, "gone.txt") }},
		{"rename", func(t *testing.T) {
			if err := os.Rename(at("old name.txt"), at("sub/new name.txt")); err != nil {
				t.Fatal(err)
			}
		}, func(m map[string]string) { delete(m, "old name.txt"); m["sub/new name.txt"] = "renamed content" }},
		{"move out of the root", func(t *testing.T) {
			if err := os.Rename(at("keep.txt"), parking); err != nil {
				t.Fatal(err)
			}
		}, func(m map[string]string) { delete(m, "keep.txt") }},
		{"move back under another name", func(t *testing.T) {
			if err := os.Rename(parking, at("kept.txt")); err != nil {
				t.Fatal(err)
			}
		}, func(m map[string]string) { m["kept.txt"] = "keep" }},
		{"new dir", func(t *testing.T) {
			writeFile(t, root, "nd/a/1.txt", "one")
			writeFile(t, root, "nd/a/b/2.txt", "two")
		}, func(m map[string]string) { m["nd/a/1.txt"] = "one"; m["nd/a/b/2.txt"] = "two" }},
		{"file in new dir after creation", func(t *testing.T) { writeFile(t, root, "nd/a/b/3.txt", "three") },
			func(m map[string]string) { m["nd/a/b/3.txt"] = "three" }},
		{"rename dir", func(t *testing.T) {
			if err := os.Rename(at("nd"), at("moved")); err != nil {
				t.Fatal(err)
			}
		}, func(m map[string]string) {
			for _, p := range []string{"a/1.txt", "a/b/2.txt", "a/b/3.txt"} {
				m["moved/"+p] = m["nd/"+p]
				delete(m, "nd/"+p)
			}
		}},
		{"write in renamed dir", func(t *testing.T) { writeFile(t, root, "moved/a/b/4.txt", "four") },
			func(m map[string]string) { m["moved/a/b/4.txt"] = "four" }},
		{"remove dir", func(t *testing.T) {
			if err := os.RemoveAll(at("moved")); err != nil {
				t.Fatal(err)
			}
		}, func(m map[string]string) {
			for p := range m {
				if strings.HasPrefix(p, "moved/") {
					delete(m, p)
				}
			}
		}},
		{"dir replaced by file", func(t *testing.T) {
			if err := os.RemoveAll(at("sub/deep")); err != nil {
				t.Fatal(err)
			}
			writeFile(t, root, "sub/deep", "now a file")
		}, func(m map[string]string) { delete(m, "sub/deep/x.data"); m["sub/deep"] = "now a file" }},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			before := make(map[string]string)
			for k, v := range state {
				before[k] = v
			}
			gen0, _ := r.Snapshot()
			hashed0 := r.Stats().HashedFiles
			st.do(t)
			st.want(state)
			gen := waitSnapshot(t, r.Catalog, st.name, func(_ uint64, es []Entry) bool { return matchesTree(es, state) })
			if gen <= gen0 {
				t.Fatalf("gen %d did not advance from %d", gen, gen0)
			}
			ch, ok := r.Since(gen0)
			if !ok {
				t.Fatalf("Since(%d) not ok at gen %d", gen0, gen)
			}
			if err := checkDelta(ch, before, state); err != nil {
				t.Error(err)
			}
			if st.name == "rename" || st.name == "move back under another name" {
				if h := r.Stats().HashedFiles; h != hashed0 {
					t.Errorf("rename re-hashed %d files, want 0", h-hashed0)
				}
			}
		})
	}
}

// checkDelta verifies that changes turn before into after.
func checkDelta(ch []Change, before, after map[string]string) error {
	got := make(map[string]string)
	for k, v := range before {
		got[k] = v
	}
	for i, c := range ch {
		if i > 0 && ch[i-1].Entry.Path >= c.Entry.Path {
			return errors.New("changes not sorted by path or duplicated")
		}
		if c.Removed {
			if c.Entry.Hash != ([32]byte{}) || c.Entry.Size != 0 {
				return errors.New("removal with non-zero fields")
			}
			delete(got, c.Entry.Path)
			continue
		}
		if _, ok := after[c.Entry.Path]; !ok {
			return errors.New("change adds " + c.Entry.Path + " which should not exist")
		}
		got[c.Entry.Path] = after[c.Entry.Path]
		if c.Entry.Hash != sum(after[c.Entry.Path]) {
			return errors.New("wrong hash for " + c.Entry.Path)
		}
	}
	if len(got) != len(after) {
		return errors.New("delta does not reproduce the new state")
	}
	for k, v := range after {
		if got[k] != v {
			return errors.New("delta misses " + k)
		}
	}
	return nil
}

// TestSinceHistory drives publish directly to produce many generations.
func TestSinceHistory(t *testing.T) {
	c, err := Open(t.TempDir(), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ch, ok := c.Since(0); !ok || ch != nil {
		t.Fatalf("Since(0) at gen 0 = %v, %v", ch, ok)
	}
	set := func(p, content string) {
		rec := &fileRec{path: p, size: int64(len(content)), mtime: 1, hash: sum(content), hashed: true}
		c.files[p] = rec
		c.pending[p] = struct{}{}
	}
	c.mu.Lock()
	set("base", "base")
	c.publishLocked()
	for i := range 80 {
		set("f"+string(rune('A'+i%26))+strings.Repeat("x", i/26), "content")
		if i%10 == 3 {
			set("base", "base v"+string(rune('0'+i/10)))
		}
		if n := c.publishLocked(); n == 0 {
			t.Fatal("nothing published")
		}
	}
	delete(c.files, "base")
	c.pending["base"] = struct{}{}
	c.publishLocked()
	c.mu.Unlock()

	gen, es := c.Snapshot()
	if gen != 82 || len(es) != 80 {
		t.Fatalf("gen %d, %d entries; want 82, 80", gen, len(es))
	}
	if ch, ok := c.Since(gen); !ok || len(ch) != 0 {
		t.Errorf("Since(current) = %v, %v", ch, ok)
	}
	if ch, ok := c.Since(gen - 1); !ok || len(ch) != 1 || !ch[0].Removed || ch[0].Entry.Path != "base" {
		t.Errorf("Since(gen-1) = %+v, %v", ch, ok)
	}
	oldest := gen - maxHistory
	ch, ok := c.Since(oldest)
	if !ok {
		t.Fatalf("Since(%d) not ok; history should keep %d generations", oldest, maxHistory)
	}
	// 63 additions plus the removal of "base", collapsed to one change per path.
	if len(ch) != maxHistory {
		t.Errorf("Since(%d) = %d changes, want %d", oldest, len(ch), maxHistory)
	}
	for i := 1; i < len(ch); i++ {
		if ch[i-1].Entry.Path >= ch[i].Entry.Path {
			t.Fatal("Since result not sorted/unique")
		}
	}
	for _, g := range []uint64{oldest - 1, 1, 0, gen + 1} {
		if _, ok := c.Since(g); ok {
			t.Errorf("Since(%d) ok at gen %d, want evicted/unknown", g, gen)
		}
	}
	// Publishing nothing does not advance the generation.
	c.mu.Lock()
	c.pending["fA"] = struct{}{}
	if n := c.publishLocked(); n != 0 {
		t.Errorf("republishing unchanged entry published %d changes", n)
	}
	c.mu.Unlock()
	if g, _ := c.Snapshot(); g != gen {
		t.Errorf("gen advanced to %d without changes", g)
	}
}

func TestStateFileReuse(t *testing.T) {
	root, stateDir := t.TempDir(), t.TempDir()
	buildTree(t, root, 300)
	opt := testOptions(t)
	opt.StateFile = filepath.Join(stateDir, "catalog.state")

	r1 := start(t, root, opt)
	_, es1 := r1.Snapshot()
	if st := r1.Stats(); st.HashedFiles != 300 || st.CacheHits != 0 {
		t.Fatalf("first run stats %+v", st)
	}
	r1.stop(t)
	if _, err := os.Stat(opt.StateFile); err != nil {
		t.Fatalf("state file not written: %v", err)
	}

	r2 := start(t, root, opt)
	gen, es2 := r2.Snapshot()
	if st := r2.Stats(); st.HashedFiles != 0 || st.CacheHits != 300 {
		t.Errorf("second run stats %+v, want no hashing and 300 cache hits", st)
	}
	if gen != 1 || len(es2) != len(es1) {
		t.Fatalf("second run: gen %d, %d entries", gen, len(es2))
	}
	for i := range es1 {
		if !sameEntry(es1[i], es2[i]) {
			t.Fatalf("entry %d differs: %+v vs %+v", i, es1[i], es2[i])
		}
	}
	r2.stop(t)

	// A modified and an added file are hashed, the rest is not.
	writeFile(t, root, "d000/e000/f000000.dat", "modified, with another size")
	writeFile(t, root, "added.txt", "added")
	r3 := start(t, root, opt)
	if st := r3.Stats(); st.HashedFiles != 2 || st.CacheHits != 299 || st.Entries != 301 {
		t.Errorf("third run stats %+v, want 2 hashed, 299 hits, 301 entries", st)
	}
}

func TestCorruptStateFile(t *testing.T) {
	var valid bytes.Buffer
	if err := encodeState(&valid, []stateRec{{path: "a", size: 1, mtime: 2, ino: 3, hash: sum("x")}}, nil); err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(valid.Bytes())
	flipped[10] ^= 0x40
	badVersion := bytes.Clone(valid.Bytes())
	badVersion[len(stateMagic)] = 99
	// A well-formed file of version 2, whose roots were SHA-256 trees:
	// not a content hash any more, so ignored and everything re-hashed.
	v2 := bytes.Clone(valid.Bytes()[:valid.Len()-4])
	v2[len(stateMagic)] = 2
	v2 = binary.BigEndian.AppendUint32(v2, crc32.Checksum(v2, crcTable))
	for _, tc := range []struct {
		name    string
		content []byte
	}{
		{"empty", nil},
		{"garbage", []byte("this is not a state file at all, not even close")},
		{"truncated", valid.Bytes()[:valid.Len()-3]},
		{"flipped bit", flipped},
		{"unknown version", badVersion},
		{"version 2", v2},
		{"gob of something", []byte{0x0e, 0xff, 0x81, 0x03, 0x01, 0x01, 0x05}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, map[string]string{"a": "x", "b/c": "yy"})
			opt := testOptions(t)
			opt.StateFile = filepath.Join(t.TempDir(), "state")
			if err := os.WriteFile(opt.StateFile, tc.content, 0o600); err != nil {
				t.Fatal(err)
			}
			r := start(t, root, opt)
			_, es := r.Snapshot()
			if !matchesTree(es, map[string]string{"a": "x", "b/c": "yy"}) {
				t.Errorf("entries %v", paths(es))
			}
			if st := r.Stats(); st.HashedFiles != 2 || st.CacheHits != 0 {
				t.Errorf("stats %+v", st)
			}
			r.stop(t)
			b, err := os.ReadFile(opt.StateFile)
			if err != nil {
				t.Fatal(err)
			}
			if m, _, err := decodeState(b); err != nil || len(m) != 2 {
				t.Errorf("rewritten state: %d records, %v", len(m), err)
			}
		})
	}
}

func TestStateCodec(t *testing.T) {
	recs := []stateRec{
		{path: "a", size: 0, mtime: -5, ctime: 7, ino: 0, hash: sum("")},
		{path: "dir/with space/ü.txt", size: 1 << 40, mtime: time.Now().UnixNano(), ctime: -1, ino: 1<<63 + 7, hash: sum("z")},
	}
	big := hashtree.NewBuilder()
	big.Write(bytes.Repeat([]byte("tree"), 50000))
	trees := []*hashtree.Tree{treeOf(""), big.Tree()}
	var buf bytes.Buffer
	if err := encodeState(&buf, recs, trees); err != nil {
		t.Fatal(err)
	}
	m, mt, err := decodeState(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if m[r.path] != r {
			t.Errorf("%q: got %+v, want %+v", r.path, m[r.path], r)
		}
	}
	for _, tr := range trees {
		if got := mt[tr.Root]; got == nil || got.Size != tr.Size || len(got.Leaves()) != len(tr.Leaves()) {
			t.Errorf("tree of %d bytes not restored", tr.Size)
		}
	}
	// No prefix of a valid file decodes, and none panics.
	for n := 0; n < buf.Len(); n++ {
		if _, _, err := decodeState(buf.Bytes()[:n]); err == nil {
			t.Fatalf("prefix of %d bytes decoded", n)
		}
	}
	// Records with paths that would escape are refused even with a good CRC.
	for _, p := range []string{"../x", "/abs", "a/../b", "."} {
		buf.Reset()
		if err := encodeState(&buf, []stateRec{{path: p}}, nil); err != nil {
			t.Fatal(err)
		}
		if _, _, err := decodeState(buf.Bytes()); err == nil {
			t.Errorf("path %q accepted", p)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	writeFile(t, dir, "file", "x")
	for _, tc := range []struct {
		name  string
		root  string
		state string
	}{
		{"missing root", filepath.Join(dir, "nope"), ""},
		{"root is a file", file, ""},
		{"state file in root", dir, filepath.Join(dir, "state")},
		{"state file below root", dir, filepath.Join(dir, "sub", "state")},
		{"state file is root", dir, dir},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Open(tc.root, Options{StateFile: tc.state})
			if err == nil {
				c.Close()
				t.Fatal("Open succeeded")
			}
		})
	}
	t.Run("state file in root through a symlinked dir", func(t *testing.T) {
		link := filepath.Join(t.TempDir(), "link")
		if err := os.Symlink(dir, link); err != nil {
			t.Fatal(err)
		}
		if c, err := Open(dir, Options{StateFile: filepath.Join(link, "state")}); err == nil {
			c.Close()
			t.Fatal("Open succeeded")
		}
	})
	t.Run("unreadable root", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root can read anything")
		}
		d := t.TempDir()
		if err := os.Chmod(d, 0); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(d, 0o755)
		if c, err := Open(d, Options{}); err == nil {
			c.Close()
			t.Fatal("Open succeeded")
		}
	})
}

func TestReadAtStale(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{"f": "version one", "g": "same size 1", "h": "to be deleted"})
	r := start(t, root, testOptions(t))
	at := func(p string) string { return filepath.Join(root, p) }
	buf := make([]byte, 64)

	for _, tc := range []struct {
		name, path, content string
		change              func(t *testing.T)
	}{
		{"modified", "f", "version one", func(t *testing.T) { writeFile(t, root, "f", "version two!") }},
		{"same size new mtime", "g", "same size 1", func(t *testing.T) {
			writeFile(t, root, "g", "same size 2")
			if err := os.Chtimes(at("g"), time.Now(), time.Now().Add(-time.Hour)); err != nil {
				t.Fatal(err)
			}
		}},
		{"removed", "h", "to be deleted", func(t *testing.T) {
			if err := os.Remove(at("h")); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := r.Open(sum(tc.content))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if n, err := f.ReadAt(buf, 0); string(buf[:n]) != tc.content || err != io.EOF {
				t.Fatalf("ReadAt before change = %q, %v", buf[:n], err)
			}
			tc.change(t)
			if _, err := f.ReadAt(buf, 0); !errors.Is(err, ErrStale) {
				t.Errorf("ReadAt after change: %v, want ErrStale", err)
			}
			waitSnapshot(t, r.Catalog, "old version gone", func(_ uint64, _ []Entry) bool {
				_, ok := r.Lookup(sum(tc.content))
				return !ok
			})
			if _, err := r.Open(sum(tc.content)); !errors.Is(err, ErrNotFound) {
				t.Errorf("Open of old version: %v, want ErrNotFound", err)
			}
		})
	}
}

func TestHandleCache(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{}
	for i := range 6 {
		files[string(rune('a'+i))] = strings.Repeat("x", i+1)
	}
	writeTree(t, root, files)
	r := start(t, root, testOptions(t), func(c *Catalog) { c.maxHandles = 2 })

	f1, err := r.Open(sum("x"))
	if err != nil {
		t.Fatal(err)
	}
	f2, err := r.Open(sum("x"))
	if err != nil {
		t.Fatal(err)
	}
	if f1.h != f2.h {
		t.Error("two opens of one version did not share the descriptor")
	}
	if f1.Entry().Path != "a" {
		t.Errorf("Entry = %+v", f1.Entry())
	}
	f1.Close()
	if err := f1.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	if _, err := f1.ReadAt(make([]byte, 1), 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("ReadAt after Close: %v", err)
	}
	h := f2.h
	f2.Close()
	f3, err := r.Open(sum("x"))
	if err != nil {
		t.Fatal(err)
	}
	if f3.h != h {
		t.Error("idle descriptor not reused")
	}
	f3.Close()
	for _, content := range files {
		f, err := r.Open(sum(content))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	if n := r.Stats().OpenHandles; n > 2 {
		t.Errorf("%d idle handles cached, limit 2", n)
	}
}

func TestRescanWithoutFsnotify(t *testing.T) {
	root := t.TempDir()
	buildTree(t, root, 200)
	opt := testOptions(t)
	opt.RescanInterval = 20 * time.Millisecond
	r := start(t, root, opt, func(c *Catalog) { c.noWatch = true })
	st0 := r.Stats()
	gen0, _ := r.Snapshot()
	poll(t, "a few rescans", func() bool { return r.Stats().Rescans >= st0.Rescans+4 })
	st := r.Stats()
	if st.HashedFiles != st0.HashedFiles || st.CacheHits != st0.CacheHits {
		t.Errorf("rescans of an unchanged tree hashed: before %+v after %+v", st0, st)
	}
	if gen, _ := r.Snapshot(); gen != gen0 {
		t.Errorf("rescans of an unchanged tree advanced gen %d -> %d", gen0, gen)
	}
	if st.WatchedDirs != 0 {
		t.Errorf("watches without fsnotify: %d", st.WatchedDirs)
	}
	// Changes are still found, by the rescan; a renamed directory keeps its
	// hashes.
	if err := os.Rename(filepath.Join(root, "d000", "e001"), filepath.Join(root, "moved")); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, r.Catalog, "rescan sees the rename", func(_ uint64, es []Entry) bool {
		return len(es) == 200 && strings.HasPrefix(es[len(es)-1].Path, "moved/")
	})
	if st := r.Stats(); st.HashedFiles != st0.HashedFiles {
		t.Errorf("renamed directory re-hashed %d files", st.HashedFiles-st0.HashedFiles)
	}
	writeFile(t, root, "late.txt", "late")
	if err := os.Remove(filepath.Join(root, "d000", "e000", "f000000.dat")); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, r.Catalog, "rescan picks up changes", func(_ uint64, es []Entry) bool {
		m := make(map[string]bool)
		for _, e := range es {
			m[e.Path] = true
		}
		return m["late.txt"] && !m["d000/e000/f000000.dat"]
	})
}

func TestIdleRescanWithFsnotify(t *testing.T) {
	root := t.TempDir()
	buildTree(t, root, 200)
	opt := testOptions(t)
	opt.RescanInterval = 20 * time.Millisecond
	r := start(t, root, opt)
	st0 := r.Stats()
	gen0, _ := r.Snapshot()
	if st0.WatchedDirs != 4 { // root, d000, d000/e000, d000/e001
		t.Errorf("WatchedDirs = %d, want 4", st0.WatchedDirs)
	}
	poll(t, "a few rescans", func() bool { return r.Stats().Rescans >= st0.Rescans+4 })
	if st := r.Stats(); st.HashedFiles != st0.HashedFiles || st.WatchedDirs != st0.WatchedDirs {
		t.Errorf("idle rescans changed stats: before %+v after %+v", st0, st)
	}
	if gen, _ := r.Snapshot(); gen != gen0 {
		t.Errorf("idle rescans advanced gen %d -> %d", gen0, gen)
	}
}

func TestRunCancel(t *testing.T) {
	defer goleak.VerifyNone(t)
	root := t.TempDir()
	buildTree(t, root, 2000)
	for _, delay := range []time.Duration{0, time.Millisecond, 20 * time.Millisecond} {
		c, err := Open(root, testOptions(t))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		time.AfterFunc(delay, cancel)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel", err)
			}
		case <-time.After(waitTimeout):
			t.Fatal("Run did not return after cancel")
		}
		if err := c.Run(context.Background()); !errors.Is(err, errRunTwice) {
			t.Errorf("second Run: %v", err)
		}
		c.Close()
	}
}

// TestHashRejectsOtherVersion checks the guarantee that a hash is never
// attached to a version it was not computed from.
func TestHashRejectsOtherVersion(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root, "f", "content")
	c, err := Open(root, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fi, err := os.Stat(filepath.Join(root, "f"))
	if err != nil {
		t.Fatal(err)
	}
	st := statOf(fi)
	rec := &fileRec{path: "f", size: st.size, mtime: st.mtime, ctime: st.ctime, ino: st.ino}
	buf := make([]byte, 1024)
	got, _, _, err := c.hashFile(context.Background(), rec, 0, st, buf, hashtree.NewBuilder())
	if err != nil || got.Root != sum("content") {
		t.Fatalf("hashFile = %v, %v", got, err)
	}
	for _, want := range []statInfo{
		{size: st.size, mtime: st.mtime + 1, ctime: st.ctime, ino: st.ino},
		{size: st.size + 1, mtime: st.mtime, ctime: st.ctime, ino: st.ino},
		{size: st.size, mtime: st.mtime, ctime: st.ctime, ino: st.ino + 1},
		{size: st.size, mtime: st.mtime, ctime: st.ctime + 1, ino: st.ino},
	} {
		if _, _, _, err := c.hashFile(context.Background(), rec, 0, want, buf, hashtree.NewBuilder()); !errors.Is(err, errChanged) {
			t.Errorf("hashFile against %+v: %v, want errChanged", want, err)
		}
	}
}

// TestChurn applies a burst of random operations and checks that the
// catalog converges to what is on disk.
func TestChurn(t *testing.T) {
	root := t.TempDir()
	rnd := rand.New(rand.NewPCG(7, 8))
	state := map[string]string{}
	for i := range 50 {
		p := filepath.ToSlash(filepath.Join(string(rune('a'+i%5)), "f"+string(rune('0'+i%10))+string(rune('a'+i/10))))
		state[p] = p
	}
	writeTree(t, root, state)
	r := start(t, root, testOptions(t))
	at := func(p string) string { return filepath.Join(root, filepath.FromSlash(p)) }
	pick := func() string {
		ks := sortedKeys(state)
		return ks[rnd.IntN(len(ks))]
	}
	for i := range 400 {
		switch op := rnd.IntN(10); {
		case op < 3 || len(state) < 5: // create, maybe in a new directory
			p := filepath.ToSlash(filepath.Join(string(rune('a'+rnd.IntN(8))), string(rune('a'+rnd.IntN(3))), "n"+strings.Repeat("x", rnd.IntN(5))+string(rune('0'+i%10))))
			if err := os.MkdirAll(filepath.Dir(at(p)), 0o755); err != nil {
				continue // a file is in the way
			}
			content := strings.Repeat("c", rnd.IntN(100)) + p
			if err := os.WriteFile(at(p), []byte(content), 0o644); err == nil {
				state[p] = content
			}
		case op < 6: // modify
			p := pick()
			content := state[p] + "+"
			if err := os.WriteFile(at(p), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			state[p] = content
		case op < 8: // remove
			p := pick()
			if err := os.Remove(at(p)); err != nil {
				t.Fatal(err)
			}
			delete(state, p)
		default: // rename within the tree
			p := pick()
			q := p + "r"
			if err := os.Rename(at(p), at(q)); err != nil {
				t.Fatal(err)
			}
			state[q] = state[p]
			delete(state, p)
		}
	}
	waitSnapshot(t, r.Catalog, "convergence after churn", func(_ uint64, es []Entry) bool { return matchesTree(es, state) })
	// And a fresh full scan agrees with the incremental result.
	_, es := r.Snapshot()
	r.stop(t)
	r2 := start(t, root, testOptions(t))
	_, es2 := r2.Snapshot()
	if len(es) != len(es2) {
		t.Fatalf("incremental %d entries, fresh scan %d", len(es), len(es2))
	}
	for i := range es {
		if !sameEntry(es[i], es2[i]) {
			t.Fatalf("entry %d: incremental %+v, fresh %+v", i, es[i], es2[i])
		}
	}
}

// TestRewriteKeepingMtime: a file rewritten in place with its size and
// mtime put back (cp -p, touch -r) must be hashed again. Its ctime moved,
// and that is what the version check now looks at; before, the catalog
// kept announcing the old hash for the new bytes.
func TestRewriteKeepingMtime(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root, "f", "old content 1234")
	r := start(t, root, testOptions(t))
	defer r.stop(t)
	waitSnapshot(t, r.Catalog, "first hash", func(_ uint64, es []Entry) bool {
		return len(es) == 1 && es[0].Hash == sum("old content 1234")
	})
	p := filepath.Join(root, "f")
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // let the clock tick past the first write's ctime
	if err := os.WriteFile(p, []byte("new content 5678"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, r.Catalog, "the new content's hash", func(_ uint64, es []Entry) bool {
		return len(es) == 1 && es[0].Hash == sum("new content 5678") && es[0].ModTime.Equal(fi.ModTime())
	})
}

// TestRacyFileHashedAgain: a file hashed within the timestamp granularity
// of its last write may have been written again in the same tick, which
// no stat shows (git's racy rule): it is published, then hashed once more
// after the window.
func TestRacyFileHashedAgain(t *testing.T) {
	st := statInfo{mtime: time.Now().UnixNano(), ctime: time.Now().UnixNano() + 1}
	if r, _ := racy(st, time.Now()); !r {
		t.Fatal("a file written just now is not racy")
	}
	old := time.Now().Add(-time.Minute).UnixNano() + 1
	if r, _ := racy(statInfo{mtime: old, ctime: old}, time.Now()); r {
		t.Fatal("a file written a minute ago is racy")
	}
	whole := time.Now().Truncate(time.Second).Add(-time.Second).UnixNano()
	if r, until := racy(statInfo{mtime: whole, ctime: whole}, time.Now()); !r || until.Sub(time.Unix(0, whole)) != racyWindowCoarse {
		t.Fatal("whole-second timestamps do not get the coarse window")
	}

	root := t.TempDir()
	r := start(t, root, testOptions(t))
	defer r.stop(t)
	writeFile(t, root, "racy", "written and hashed in one tick")
	waitSnapshot(t, r.Catalog, "published", func(_ uint64, es []Entry) bool { return len(es) == 1 })
	// The debounce (20 ms) is inside the 50 ms window: a second hash follows.
	poll(t, "second hash", func() bool { return r.Stats().RacyRehashes >= 1 })
	if _, es := r.Snapshot(); len(es) != 1 || es[0].Hash != sum("written and hashed in one tick") {
		t.Fatalf("after the second hash: %+v", es)
	}
}
