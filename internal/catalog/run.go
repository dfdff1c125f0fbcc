package catalog

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// loop is the state owned by the Run goroutine. Keeping it out of Catalog
// documents that nothing else may touch it and spares it a lock.
type loop struct {
	c     *Catalog
	w     *fsnotify.Watcher // nil when fsnotify is unavailable
	epoch uint32

	watched     map[string]uint32 // watched directory -> scan epoch it was last seen in
	watchBroken bool              // stop adding watches (limit reached); the rescan covers the rest
	dirty       map[string]struct{}
	gone        goneSet
	fullPending bool // next debounce does a full rescan (event overflow)
	initialDone bool
	ready       bool // c.ready closed: the initial tree is hashed
	progress    hashProgress

	overflowLogged bool // warn once, then debug: under churn it repeats

	debounce, publish, save oneShot
}

// oneShot is a timer that is either armed or not; arming an armed timer does
// not move its deadline, which bounds the latency under a constant stream of
// events.
type oneShot struct {
	t *time.Timer
	c <-chan time.Time
}

func (o *oneShot) arm(d time.Duration) {
	if o.c != nil {
		return
	}
	if o.t == nil {
		o.t = time.NewTimer(d)
	} else {
		o.t.Reset(d)
	}
	o.c = o.t.C
}

func (o *oneShot) fired() { o.c = nil }

func (o *oneShot) stop() {
	if o.t != nil {
		o.t.Stop()
	}
	o.c = nil
}

var errRunTwice = errors.New("catalog: Run called twice")

// Run scans the tree, hashes in the background, follows changes and
// publishes generations until ctx is done; it then saves the state file and
// returns nil. It may be called only once.
func (c *Catalog) Run(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return errRunTwice
	}
	ctx, cancel := context.WithCancel(ctx)
	l := &loop{
		c:       c,
		watched: make(map[string]uint32),
		dirty:   make(map[string]struct{}),
		gone:    make(goneSet),
	}
	var wg sync.WaitGroup
	for range c.opt.HashWorkers {
		wg.Go(func() { c.hashWorker(ctx) })
	}
	l.startWatcher()
	ticker := time.NewTicker(c.opt.RescanInterval)
	progress := time.NewTicker(c.opt.ProgressEvery)
	l.progress.start = time.Now()
	defer func() {
		cancel()
		wg.Wait()
		ticker.Stop()
		progress.Stop()
		l.debounce.stop()
		l.publish.stop()
		l.save.stop()
		if l.w != nil {
			l.w.Close()
		}
		c.mu.RLock()
		dirty := c.stateDirty
		c.mu.RUnlock()
		if dirty {
			c.saveState()
		}
		c.handles.closeIdle(0)
	}()

	l.fullScan(ctx)
	if ctx.Err() != nil {
		return nil
	}
	l.initialDone = true
	l.afterChange()

	var events <-chan fsnotify.Event
	var errs <-chan error
	if l.w != nil {
		events, errs = l.w.Events, l.w.Errors
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			l.onEvent(ev)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				level := slog.LevelDebug
				if !l.overflowLogged {
					level, l.overflowLogged = slog.LevelWarn, true
				}
				c.log.Log(ctx, level, "catalog: fsnotify queue overflow, rescanning", "err", err)
				l.fullPending = true
				l.debounce.arm(c.opt.Debounce)
			} else {
				c.log.Warn("catalog: fsnotify error", "err", err)
			}
		case <-l.debounce.c:
			l.debounce.fired()
			if l.fullPending {
				l.fullScan(ctx)
			} else {
				l.processDirty(ctx)
			}
			l.afterChange()
		case <-ticker.C:
			l.fullScan(ctx)
			c.handles.closeIdle(c.opt.RescanInterval)
			l.afterChange()
		case <-c.wake:
			l.afterChange()
		case now := <-progress.C:
			l.progress.report(c, now)
		case <-l.publish.c:
			l.publish.fired()
			n := 0
			c.mu.Lock()
			if c.gen > 0 {
				n = c.publishLocked()
			}
			c.mu.Unlock()
			if n > 0 {
				l.save.arm(c.saveDelay)
			}
		case <-l.save.c:
			l.save.fired()
			c.saveState()
		}
	}
}

// afterChange collects re-stat requests and publishes when the catalog is
// consistent: immediately when no hashing is outstanding, otherwise after at
// most one debounce period, so that a long hashing queue does not hold back
// small changes.
func (l *loop) afterChange() {
	c := l.c
	c.mu.Lock()
	if len(c.restat) > 0 {
		for p := range c.restat {
			l.dirty[p] = struct{}{}
		}
		clear(c.restat)
		l.debounce.arm(c.opt.Debounce)
	}
	idle := len(c.queue) == c.qhead && c.inflight == 0
	n := 0
	switch {
	case c.gen == 0 && l.initialDone:
		// The first generation as soon as the tree is walked, with
		// whatever is hashed (the state file's hits); files hashed later
		// follow in generations at most every Debounce, so a small
		// file is served long before a large one is hashed.
		n = c.publishLocked()
	case c.gen > 0 && len(c.pending) > 0:
		if idle {
			n = c.publishLocked()
		} else {
			l.publish.arm(c.opt.Debounce)
		}
	}
	first := l.initialDone && idle && !l.ready
	l.ready = l.ready || first
	gen, dirty, files := c.gen, c.stateDirty, len(c.snap)
	c.mu.Unlock()
	switch {
	case first:
		l.progress.done(c, time.Now())
		close(c.ready)
		c.stateCache = nil // consumed by the first scan
		c.log.Info("catalog: ready: every file hashed and announced", "gen", gen, "files", files, "hashed", c.hashedFiles.Load(), "cached", c.cacheHits.Load())
		if dirty {
			// Hashing a large tree is expensive: persist it right away.
			c.saveState()
		}
	case n > 0:
		l.save.arm(c.saveDelay)
	}
}

func (l *loop) startWatcher() {
	c := l.c
	if c.noWatch {
		if c.opt.NoWatch {
			return // asked for: nothing to warn about
		}
		c.log.Warn("catalog: fsnotify disabled, relying on periodic rescan")
		return
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		c.log.Warn("catalog: fsnotify unavailable, relying on periodic rescan", "err", err)
		return
	}
	l.w = w
}

// watch adds an fsnotify watch for directory p (catalog path) unless it has
// one. Watches are added before the directory is read, so that nothing
// created during the scan is missed.
func (l *loop) watch(p string) {
	if l.w == nil || l.watchBroken {
		return
	}
	if _, ok := l.watched[p]; ok {
		l.watched[p] = l.epoch
		return
	}
	if err := l.w.Add(filepath.Join(l.c.rootPath, osPath(p))); err != nil {
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EMFILE) {
			l.watchBroken = true
			l.c.log.Warn("catalog: fsnotify watch limit reached, relying on periodic rescan for the rest", "path", p, "err", err)
		} else {
			l.c.log.Debug("catalog: watch failed", "path", p, "err", err)
		}
		return
	}
	l.watched[p] = l.epoch
	l.c.watchedDirs.Store(int64(len(l.watched)))
}

func (l *loop) unwatch(p string) {
	if _, ok := l.watched[p]; !ok {
		return
	}
	delete(l.watched, p)
	// The kernel may already have dropped it (directory deleted); errors are
	// expected and harmless.
	_ = l.w.Remove(filepath.Join(l.c.rootPath, osPath(p)))
	l.c.watchedDirs.Store(int64(len(l.watched)))
}

func (l *loop) onEvent(ev fsnotify.Event) {
	p, ok := l.c.relPath(ev.Name)
	if !ok {
		return
	}
	if p == "." {
		// Something happened to the root itself; only a full scan can tell.
		l.fullPending = true
	} else {
		l.dirty[p] = struct{}{}
	}
	l.debounce.arm(l.c.opt.Debounce)
}
