package keys

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultSettle is how long a Watcher waits after the last change in the
// allow-list's directory before reading the file.
const DefaultSettle = 100 * time.Millisecond

// WatchConfig configures a Watcher.
type WatchConfig struct {
	// Logger gets a line for each reload, and the reason a new file was
	// refused. nil: no logs.
	Logger *slog.Logger
	// Reload re-reads the file on each value received: cmd/ wires SIGHUP
	// to it with signal.Notify. nil: file changes only.
	Reload <-chan os.Signal
	// OnChange is called with the new list after a reload changed it, one
	// call at a time, in the order of the reloads. It must not call
	// Watcher.Reload.
	OnChange func(*AllowList)
	// Settle is the quiet time after a change in the file's directory
	// before it is read, so that an editor's truncate-then-write is read
	// whole rather than seen empty (an empty list revokes everyone).
	// 0: DefaultSettle.
	Settle time.Duration
}

// Watcher holds the current allow-list of a file and replaces it when the
// file changes or on a Reload signal. A new file that does not parse (or
// vanishes) is refused with a log line saying why, and the last good list
// stays in force: a typo must not revoke the fleet.
type Watcher struct {
	path string
	cfg  WatchConfig
	log  *slog.Logger
	cur  atomic.Pointer[AllowList]
	mu   sync.Mutex // serialises reloads and OnChange calls
	// badErr is the text of the last failed reload's error, "" after a
	// good one: a file that stays bad is re-read on every change in its
	// directory, and is warned about once per distinct error, not on
	// every read.
	badErr string
}

// NewWatcher loads the allow-list at path; it fails if that first load
// does (there is no last good list to fall back on). Run watches it.
func NewWatcher(path string, cfg WatchConfig) (*Watcher, error) {
	l, err := LoadAllowList(path)
	if err != nil {
		return nil, err
	}
	if cfg.Settle <= 0 {
		cfg.Settle = DefaultSettle
	}
	w := &Watcher{path: path, cfg: cfg, log: cfg.Logger}
	if w.log == nil {
		w.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	w.cur.Store(l)
	return w, nil
}

// List returns the current snapshot.
func (w *Watcher) List() *AllowList { return w.cur.Load() }

// Lookup looks k up in the current snapshot.
func (w *Watcher) Lookup(k Public) (name string, ok bool) { return w.cur.Load().Lookup(k) }

// Reload re-reads the file now. On error the current list stays (and the
// error is logged and returned); changed reports whether a new list with
// different contents replaced it.
func (w *Watcher) Reload() (changed bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	old := w.cur.Load()
	l, err := LoadAllowList(w.path)
	if err != nil {
		lvl := slog.LevelWarn
		if err.Error() == w.badErr {
			lvl = slog.LevelDebug // said already
		}
		w.badErr = err.Error()
		w.log.Log(context.Background(), lvl, "allow-list not reloaded: keeping the last good one", "file", w.path, "keys", old.Len(), "err", err)
		return false, err
	}
	if w.badErr != "" {
		w.badErr = ""
		w.log.Info("allow-list file is good again", "file", w.path, "keys", l.Len())
	}
	if l.Equal(old) {
		return false, nil
	}
	w.cur.Store(l)
	added, removed := diff(old, l)
	w.log.Info("allow-list reloaded", "file", w.path, "keys", l.Len(), "added", added, "removed", removed)
	if w.cfg.OnChange != nil {
		w.cfg.OnChange(l)
	}
	return true, nil
}

// diff counts the keys of n not in o, and of o not in n.
func diff(o, n *AllowList) (added, removed int) {
	for k := range n.All() {
		if _, ok := o.Lookup(k); !ok {
			added++
		}
	}
	for k := range o.All() {
		if _, ok := n.Lookup(k); !ok {
			removed++
		}
	}
	return added, removed
}

// Run reloads on changes and Reload signals until ctx is done. It watches
// the file's directory, not the file: editors and configuration tools
// replace a file by renaming a new one over it, which a watch on the old
// file would never see. Any change in the directory leads to a read once
// it has been quiet for Settle; an unchanged list is not a reload. If the
// directory cannot be watched (inotify limits), Run logs it and serves
// Reload signals only. Run reads the file once when it starts, for the
// changes made since NewWatcher.
func (w *Watcher) Run(ctx context.Context) error {
	var events <-chan fsnotify.Event
	var errs <-chan error
	fw, err := fsnotify.NewWatcher()
	if err == nil {
		if err = fw.Add(filepath.Dir(w.path)); err != nil {
			fw.Close()
		}
	}
	if err != nil {
		w.log.Warn("allow-list: cannot watch for changes; reload with SIGHUP", "file", w.path, "err", err)
	} else {
		defer fw.Close()
		events, errs = fw.Events, fw.Errors
	}
	// A change made between NewWatcher and the watch above is seen by no
	// event: read the file once now.
	w.Reload()
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.cfg.Reload:
			w.Reload()
		case <-events:
			settle.Reset(w.cfg.Settle)
		case <-settle.C:
			w.Reload()
		case err := <-errs:
			w.log.Warn("allow-list: watching for changes", "file", w.path, "err", err)
		}
	}
}
