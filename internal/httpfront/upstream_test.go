package httpfront

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
)

// stubSource opens whatever Content it holds.
type stubSource struct{ c Content }

func (s stubSource) Lookup(string) (File, bool)                  { return File{}, false }
func (s stubSource) List(string) ([]DirEntry, bool)              { return nil, false }
func (s stubSource) Open(context.Context, File) (Content, error) { return s.c, nil }

// zeroReader returns (0, nil) forever.
type zeroReader struct{ nopCloser }

func (zeroReader) Read([]byte) (int, error)       { return 0, nil }
func (zeroReader) Seek(int64, int) (int64, error) { return 0, nil }

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

type readSeekNopCloser struct {
	io.ReadSeeker
	nopCloser
}

func TestUpstream(t *testing.T) {
	t.Run("no progress", func(t *testing.T) {
		u := newUpstream(context.Background(), stubSource{zeroReader{}}, File{Size: 10})
		defer u.close()
		_, err := io.Copy(io.Discard, u)
		if !errors.Is(err, io.ErrNoProgress) || !errors.Is(u.failure(), io.ErrNoProgress) {
			t.Fatalf("err %v, failure %v", err, u.failure())
		}
	})
	t.Run("short", func(t *testing.T) {
		c := readSeekNopCloser{ReadSeeker: bytes.NewReader([]byte("abc"))}
		u := newUpstream(context.Background(), stubSource{c}, File{Size: 10})
		defer u.close()
		b, err := io.ReadAll(u)
		if string(b) != "abc" || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("got %q, %v", b, err)
		}
	})
	t.Run("never reads past Size", func(t *testing.T) {
		c := readSeekNopCloser{ReadSeeker: bytes.NewReader([]byte("0123456789extra"))}
		u := newUpstream(context.Background(), stubSource{c}, File{Size: 10})
		defer u.close()
		if _, err := u.Seek(4, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(u)
		if string(b) != "456789" || err != nil {
			t.Fatalf("got %q, %v", b, err)
		}
		if end, _ := u.Seek(0, io.SeekEnd); end != 10 {
			t.Fatalf("SeekEnd = %d", end)
		}
	})
	t.Run("closed", func(t *testing.T) {
		c := readSeekNopCloser{ReadSeeker: bytes.NewReader([]byte("0123456789"))}
		u := newUpstream(context.Background(), stubSource{c}, File{Size: 10})
		if err := u.close(); err != nil {
			t.Fatal(err)
		}
		if _, err := u.Read(make([]byte, 1)); !errors.Is(err, errClosed) {
			t.Fatalf("Read after close: %v", err)
		}
		if u.ctx.Err() == nil {
			t.Fatal("close did not cancel the context")
		}
		if err := u.close(); err != nil {
			t.Fatal("second close:", err)
		}
	})
}
