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
// served from memory; others stream through the engine.
func (s Source) Open(ctx context.Context, f httpfront.File) (httpfront.Content, error) {
	c := s.g.cfg.Cache
	if c == nil || !c.Admits(f.Size) {
		return content{s.g.eng.Open(ctx, f.Hash, f.Size, f.Path)}, nil
	}
	if b, ok := c.Get(f.Hash); ok {
		return memContent{bytes.NewReader(b)}, nil
	}
	// The fetch outlives the client that started it: others may be
	// waiting for the same file. The engine's stall timeout bounds it.
	ch := s.g.fills.DoChan(string(f.Hash[:]), func() (any, error) {
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
