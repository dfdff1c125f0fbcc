package keys

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// logLines is a slog handler that sends each record, as "level msg
// key=value...", to a channel the test reads.
type logLines chan string

func (c logLines) Enabled(context.Context, slog.Level) bool { return true }
func (c logLines) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c logLines) WithGroup(string) slog.Handler            { return c }
func (c logLines) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	c <- b.String()
	return nil
}

func writeList(t *testing.T, path string, lines ...string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replaceList writes the list beside path and renames it over, as editors
// and configuration tools do.
func replaceList(t *testing.T, path string, lines ...string) {
	t.Helper()
	tmp := path + ".tmp"
	writeList(t, tmp, lines...)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestWatcherReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "servers")
	if _, err := NewWatcher(path, WatchConfig{}); err == nil {
		t.Fatal("watcher without a file")
	}
	writeList(t, path, alicePub+" a")
	logs := make(logLines, 10)
	var changes []*AllowList
	w, err := NewWatcher(path, WatchConfig{Logger: slog.New(logs), OnChange: func(l *AllowList) { changes = append(changes, l) }})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := ParsePublic(alicePub)
	b, _ := ParsePublic(bobPub)
	first := w.List()
	if n, ok := w.Lookup(a); !ok || n != "a" {
		t.Fatal("alice not admitted")
	}

	// A bad file: refused with its reason logged, the last good list kept.
	writeList(t, path, alicePub+" a", "garbage")
	if changed, err := w.Reload(); changed || err == nil || !strings.Contains(err.Error(), path+":2:") {
		t.Fatalf("bad file: changed %v, %v", changed, err)
	}
	if line := <-logs; !strings.Contains(line, "keeping the last good one") || !strings.Contains(line, path+":2:") {
		t.Fatalf("log: %s", line)
	}
	if w.List() != first {
		t.Fatal("bad file replaced the list")
	}
	os.Remove(path)
	if _, err := w.Reload(); err == nil || w.List() != first {
		t.Fatal("a removed file replaced the list")
	}
	<-logs

	// The same list again is no change; a new one is.
	writeList(t, path, "# same", alicePub+" a")
	if changed, err := w.Reload(); changed || err != nil || len(changes) != 0 {
		t.Fatalf("same list: %v %v", changed, err)
	}
	if line := <-logs; !strings.HasPrefix(line, "INFO allow-list file is good again") {
		t.Fatalf("log: %s", line)
	}
	writeList(t, path, bobPub+" b")
	if changed, err := w.Reload(); !changed || err != nil {
		t.Fatalf("new list: %v %v", changed, err)
	}
	if line := <-logs; !strings.Contains(line, "added=1 removed=1") {
		t.Fatalf("log: %s", line)
	}
	if _, ok := w.Lookup(a); ok {
		t.Fatal("alice still admitted")
	}
	if len(changes) != 1 || changes[0] != w.List() {
		t.Fatalf("OnChange calls: %d", len(changes))
	}
	if _, ok := first.Lookup(a); !ok {
		t.Fatal("the old snapshot changed")
	}
	if _, ok := w.Lookup(b); !ok {
		t.Fatal("bob not admitted")
	}
}

// runWatcher runs w until the test ends and returns its changes.
func runWatcher(t *testing.T, path string, cfg WatchConfig) (*Watcher, chan *AllowList) {
	t.Helper()
	changes := make(chan *AllowList, 10)
	cfg.OnChange = func(l *AllowList) { changes <- l }
	w, err := NewWatcher(path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := w.Run(ctx); err != nil {
			t.Error(err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return w, changes
}

// The file is watched through its directory: an in-place write, a rename
// over it (editors, configuration tools) and a removal followed by a new
// file are all seen; a bad file in between keeps the last good list.
func TestWatcherFileChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "servers")
	writeList(t, path, alicePub+" a")
	logs := make(logLines, 100)
	w, changes := runWatcher(t, path, WatchConfig{Logger: slog.New(logs), Settle: time.Millisecond})
	a, _ := ParsePublic(alicePub)
	b, _ := ParsePublic(bobPub)
	c := mustGen(t)

	// An in-place write may be seen half done (truncated, then written):
	// what counts is that its end is seen.
	writeList(t, path, alicePub+" a", bobPub+" b")
	for l := range changes {
		if l.Len() == 2 {
			break
		}
	}
	replaceList(t, path, bobPub+" b")
	if l := <-changes; l.Len() != 1 {
		t.Fatalf("rename over: %d keys", l.Len())
	} else if _, ok := l.Lookup(a); ok {
		t.Fatal("alice still on the list")
	}
	replaceList(t, path, bobPub+" b", "oops")
	for line := range logs {
		if strings.Contains(line, "keeping the last good one") {
			break
		}
	}
	if _, ok := w.Lookup(b); !ok {
		t.Fatal("the bad file revoked bob")
	}
	replaceList(t, path, bobPub+" b", c.String()+" c")
	if l := <-changes; l.Len() != 2 {
		t.Fatalf("fixed file: %d keys", l.Len())
	}
	if n, _ := w.Lookup(c); n != "c" {
		t.Fatalf("c named %q", n)
	}
}

// A Reload signal (SIGHUP, wired in cmd/) re-reads the file even when no
// change was seen: here the settle time never ends.
func TestWatcherSignal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "servers")
	writeList(t, path, alicePub+" a")
	hup := make(chan os.Signal)
	w, changes := runWatcher(t, path, WatchConfig{Reload: hup, Settle: time.Hour})
	hup <- syscall.SIGHUP // taken once Run has started: the file is unchanged
	replaceList(t, path, bobPub+" b")
	hup <- syscall.SIGHUP
	l := <-changes
	if n, ok := l.Lookup(must(ParsePublic(bobPub))); !ok || n != "b" || w.List() != l || l.Len() != 1 {
		t.Fatal("SIGHUP did not load the new list")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestWatcherBadFileWarnsOnce: a file that stays bad is re-read on every
// change in its directory; it is warned about once per distinct error
// (repeats are DEBUG), and once more when it is good again.
func TestWatcherBadFileWarnsOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "servers")
	writeList(t, path, alicePub+" a")
	logs := make(logLines, 100)
	w, err := NewWatcher(path, WatchConfig{Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	levels := func() (warn, info int) {
		for {
			select {
			case l := <-logs:
				warn += strings.Count(l[:5], "WARN")
				info += strings.Count(l[:5], "INFO")
			default:
				return warn, info
			}
		}
	}
	writeList(t, path, "garbage")
	for range 10 {
		w.Reload()
	}
	if warn, _ := levels(); warn != 1 {
		t.Fatalf("10 reads of one bad file: %d warnings, want 1", warn)
	}
	os.Remove(path)
	for range 10 {
		w.Reload()
	}
	if warn, _ := levels(); warn != 1 {
		t.Fatalf("10 reads of a missing file: %d warnings, want 1 (a new error)", warn)
	}
	writeList(t, path, alicePub+" a")
	w.Reload()
	w.Reload()
	if warn, info := levels(); warn != 0 || info != 1 {
		t.Fatalf("good again: %d warnings, %d infos, want 0 and 1", warn, info)
	}
	writeList(t, path, "garbage")
	w.Reload()
	if warn, _ := levels(); warn != 1 {
		t.Fatalf("bad after good: %d warnings, want 1", warn)
	}
}
