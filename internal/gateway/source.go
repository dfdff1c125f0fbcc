package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/fastfile/fschunk/internal/fetch"
	"github.com/fastfile/fschunk/internal/hashtree"
	"github.com/fastfile/fschunk/internal/httpfront"
)

// Source presents the pool and the engine to the HTTP front end.
type Source struct{ g *Gateway }

// Source returns the httpfront.Source of this gateway.
func (g *Gateway) Source() Source { return Source{g} }

// Lookup implements httpfront.Source.
func (s Source) Lookup(name string) (httpfront.File, bool) {
	v, holders, ok := s.g.pool.Lookup(name, s.g.cfg.Now())
	if !ok {
		return httpfront.File{}, false
	}
	return httpfront.File{Path: name, Size: v.Size, ModTime: v.ModTime, Hash: v.Hash, Holders: holders}, true
}

// Starting implements httpfront.Starter: for the first StartGrace
// (by default EvictAfter) after New, a path missing from the pool may belong to a server that has not
// registered yet (servers re-register within a heartbeat or two of a
// gateway restart; EvictAfter is three heartbeats, the time after which a
// server that has said nothing is dropped anyway), so the front end
// answers 503 rather than a 404 that clients would treat as final.
func (s Source) Starting() bool {
	return s.g.cfg.Now().Sub(s.g.started) < s.g.cfg.StartGrace
}

// List implements httpfront.Source.
func (s Source) List(dir string) ([]httpfront.DirEntry, bool) {
	es, ok := s.g.pool.List(dir, s.g.cfg.Now())
	if !ok {
		return nil, false
	}
	out := make([]httpfront.DirEntry, len(es))
	for i, e := range es {
		out[i] = httpfront.DirEntry{Name: e.Name, IsDir: e.IsDir, Size: e.Size, ModTime: e.ModTime, Holders: e.Holders}
	}
	return out, true
}

// Open implements httpfront.Source. Files small enough for the cache are
// fetched whole (once, however many clients ask at the same time) and
// served from memory, unless the client asks for part of one that is
// not cached yet; others stream through the engine.
func (s Source) Open(ctx context.Context, f httpfront.File) (httpfront.Content, error) {
	c := s.g.cfg.Cache
	if c == nil || !c.Admits(f.Size) {
		return content{s.g.eng.Open(ctx, f.Hash, f.Size, f.Path)}, nil
	}
	if b, ok := c.Get(f.Hash); ok {
		return memContent{bytes.NewReader(b)}, nil
	}
	return &fillContent{s: s, ctx: ctx, f: f, limit: f.Size}, nil
}

// fill fetches f whole into the cache, or waits for the fetch another
// client started.
func (s Source) fill(ctx context.Context, f httpfront.File) (httpfront.Content, error) {
	// The fetch outlives the client that started it: others may be
	// waiting for the same file. The engine's stall timeout bounds it.
	ch := s.g.fills.DoChan(string(f.Hash[:]), func() (any, error) {
		// A client that missed the cache in Open may get here after the
		// fetch it could have joined ended and left the group: the file
		// is in the cache by then, and fetching it again would double
		// the servers' work.
		if b, ok := s.g.cfg.Cache.Get(f.Hash); ok {
			return b, nil
		}
		return s.fetchWhole(context.WithoutCancel(ctx), f)
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return memContent{bytes.NewReader(res.Val.([]byte))}, nil
	}
}

// fillContent is a cacheable file not in the cache yet. It decides at
// the first read: a read of the whole file fetches it into the cache; a
// range (a limit, or a start past 0) streams just that range through
// the engine, so that a 1-byte range of a cold 1 MiB file does not make
// the servers send 1 MiB.
type fillContent struct {
	s      Source
	ctx    context.Context
	f      httpfront.File
	pos    int64
	limit  int64
	opened httpfront.Content // nil until the first read
}

func (c *fillContent) open() error {
	if c.opened != nil {
		return nil
	}
	if c.pos == 0 && c.limit >= c.f.Size {
		mc, err := c.s.fill(c.ctx, c.f)
		if err != nil {
			return err
		}
		c.opened = mc
		return nil
	}
	r := c.s.g.eng.Open(c.ctx, c.f.Hash, c.f.Size, c.f.Path)
	r.SetLimit(c.limit)
	if _, err := r.Seek(c.pos, io.SeekStart); err != nil {
		r.Close()
		return err
	}
	c.opened = content{r}
	return nil
}

func (c *fillContent) Read(p []byte) (int, error) {
	if err := c.open(); err != nil {
		return 0, err
	}
	return c.opened.Read(p)
}

// WriteToN implements httpfront.DirectWriter.
func (c *fillContent) WriteToN(w io.Writer, n int64) (int64, error) {
	if err := c.open(); err != nil {
		return 0, err
	}
	if dw, ok := c.opened.(httpfront.DirectWriter); ok {
		return dw.WriteToN(w, n)
	}
	return io.CopyN(w, c.opened, n)
}

func (c *fillContent) Seek(off int64, whence int) (int64, error) {
	if c.opened != nil {
		return c.opened.Seek(off, whence)
	}
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += c.pos
	case io.SeekEnd:
		off += c.f.Size
	default:
		return 0, fmt.Errorf("gateway: seek whence %d", whence)
	}
	if off < 0 {
		return 0, errors.New("gateway: seek before start")
	}
	c.pos = off
	return off, nil
}

// SetLimit implements httpfront.Limiter.
func (c *fillContent) SetLimit(end int64) {
	c.limit = end
	if l, ok := c.opened.(httpfront.Limiter); ok {
		l.SetLimit(end)
	}
}

func (c *fillContent) Close() error {
	if c.opened == nil {
		return nil
	}
	return c.opened.Close()
}

// FetchReport implements httpfront.Reporter.
func (c *fillContent) FetchReport() (servers, retransmits int) {
	if r, ok := c.opened.(httpfront.Reporter); ok {
		return r.FetchReport()
	}
	return 0, 0
}

// fetchWhole reads the whole of f through the engine, checks it against
// its content hash and adds it to the cache.
func (s Source) fetchWhole(ctx context.Context, f httpfront.File) ([]byte, error) {
	r := s.g.eng.Open(ctx, f.Hash, f.Size, f.Path)
	defer r.Close()
	b := make([]byte, f.Size)
	if _, err := io.ReadFull(content{r}, b); err != nil {
		return nil, fmt.Errorf("fetch %s: %w", f.Path, err)
	}
	if !hashtree.Verify(f.Hash, b) {
		// The engine checked every leaf already; this whole-file check
		// only guards the cache against a bug in that path.
		return nil, fmt.Errorf("fetch %s: content does not match its content hash", f.Path)
	}
	s.g.cfg.Cache.Add(f.Hash, b)
	return b, nil
}

// memContent serves a cached file.
type memContent struct{ *bytes.Reader }

func (memContent) Close() error { return nil }

// content translates the engine's errors into the front end's.
type content struct{ *fetch.Reader }

func (c content) Read(p []byte) (int, error) {
	n, err := c.Reader.Read(p)
	return n, frontError(err)
}

// WriteToN implements httpfront.DirectWriter: chunks go to the client
// straight from the engine's buffers.
func (c content) WriteToN(w io.Writer, n int64) (int64, error) {
	k, err := c.Reader.WriteToN(w, n)
	return k, frontError(err)
}

// frontError marks the engine's errors with the front end's meaning.
func frontError(err error) error {
	switch {
	case err == nil:
	case errors.Is(err, fetch.ErrUnavailable), errors.Is(err, fetch.ErrUnverified):
		err = fmt.Errorf("%w: %w", httpfront.ErrUnavailable, err)
	case errors.Is(err, fetch.ErrTimeout):
		err = fmt.Errorf("%w: %w", httpfront.ErrUpstreamTimeout, err)
	}
	return err
}
