package gateway

import (
	"context"
	"errors"
	"fmt"

	"github.com/fastfile/fschunk/internal/fetch"
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

// Open implements httpfront.Source.
func (s Source) Open(ctx context.Context, f httpfront.File) (httpfront.Content, error) {
	return content{s.g.eng.Open(ctx, f.Hash, f.Size, f.Path)}, nil
}

// content translates the engine's errors into the front end's.
type content struct{ *fetch.Reader }

func (c content) Read(p []byte) (int, error) {
	n, err := c.Reader.Read(p)
	switch {
	case err == nil:
	case errors.Is(err, fetch.ErrUnavailable):
		err = fmt.Errorf("%w: %w", httpfront.ErrUnavailable, err)
	case errors.Is(err, fetch.ErrTimeout):
		err = fmt.Errorf("%w: %w", httpfront.ErrUpstreamTimeout, err)
	}
	return n, err
}
