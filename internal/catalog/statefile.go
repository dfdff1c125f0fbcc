package catalog

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/fastfile/fschunk/internal/hashtree"
)

// The state file caches hashes across restarts so that a restart over a
// large tree does not re-read it. It is a cache: anything wrong with it only
// costs re-hashing, so errors are logged and the file ignored.
//
// Format (version 3), all integers varint-encoded:
//
//	magic "FSCKCAT" version byte 3
//	count
//	count × { len(path) path size mtime-ns ctime-ns ino root[32] }
//	trees
//	trees × { size leaves leaf-hash[32] × leaves }
//	CRC-32C (Castagnoli) of everything above, 4 bytes big endian
//
// A binary format rather than gob keeps it compact (~70 bytes per file
// plus 32 per 64 KiB of content for the leaves), fast to load and
// independent of Go type names. Versions 1 (whole-file SHA-256, no trees)
// and 2 (SHA-256 trees) are not read: their hashes are no longer content
// hashes (the tree is BLAKE3 since version 3), so a server started over an
// older state file hashes its files again, once.
const (
	stateMagic   = "FSCKCAT"
	stateVersion = 3
	maxStateSize = 1 << 30
	maxPathLen   = 64 << 10
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

type stateRec struct {
	path               string
	size, mtime, ctime int64
	ino                uint64
	hash               [32]byte
}

var errStateCorrupt = errors.New("corrupt state file")

func encodeState(w io.Writer, recs []stateRec, trees []*hashtree.Tree) error {
	crc := crc32.New(crcTable)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 256<<10)
	var tmp [binary.MaxVarintLen64]byte
	bw.WriteString(stateMagic)
	bw.WriteByte(stateVersion)
	bw.Write(tmp[:binary.PutUvarint(tmp[:], uint64(len(recs)))])
	for _, r := range recs {
		bw.Write(tmp[:binary.PutUvarint(tmp[:], uint64(len(r.path)))])
		bw.WriteString(r.path)
		bw.Write(tmp[:binary.PutVarint(tmp[:], r.size)])
		bw.Write(tmp[:binary.PutVarint(tmp[:], r.mtime)])
		bw.Write(tmp[:binary.PutVarint(tmp[:], r.ctime)])
		bw.Write(tmp[:binary.PutUvarint(tmp[:], r.ino)])
		bw.Write(r.hash[:])
	}
	bw.Write(tmp[:binary.PutUvarint(tmp[:], uint64(len(trees)))])
	for _, t := range trees {
		bw.Write(tmp[:binary.PutVarint(tmp[:], t.Size)])
		bw.Write(tmp[:binary.PutUvarint(tmp[:], uint64(len(t.Leaves())))])
		for _, l := range t.Leaves() {
			bw.Write(l[:])
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err := w.Write(binary.BigEndian.AppendUint32(nil, crc.Sum32()))
	return err
}

func decodeState(b []byte) (map[string]stateRec, map[[32]byte]*hashtree.Tree, error) {
	if len(b) < len(stateMagic)+1+1+4 || string(b[:len(stateMagic)]) != stateMagic {
		return nil, nil, fmt.Errorf("%w: bad magic", errStateCorrupt)
	}
	if v := b[len(stateMagic)]; v != stateVersion {
		return nil, nil, fmt.Errorf("unsupported state file version %d", v)
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, crcTable) != sum {
		return nil, nil, fmt.Errorf("%w: checksum mismatch", errStateCorrupt)
	}
	d := decoder{b: body[len(stateMagic)+1:]}
	n := d.uvarint()
	// Each record takes at least 1+0+1+1+1+1+32 bytes (path length, path,
	// size, mtime, ctime, inode, root): refuse absurd counts before
	// allocating for them.
	if d.err != nil || n > uint64(len(d.b))/37 {
		return nil, nil, fmt.Errorf("%w: bad count", errStateCorrupt)
	}
	m := make(map[string]stateRec, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		var r stateRec
		l := d.uvarint()
		if l > maxPathLen {
			return nil, nil, fmt.Errorf("%w: bad path length", errStateCorrupt)
		}
		r.path = string(d.bytes(int(l)))
		r.size = d.varint()
		r.mtime = d.varint()
		r.ctime = d.varint()
		r.ino = d.uvarint()
		copy(r.hash[:], d.bytes(32))
		if d.err == nil && (!fs.ValidPath(r.path) || r.path == "." || r.size < 0) {
			return nil, nil, fmt.Errorf("%w: bad record", errStateCorrupt)
		}
		m[r.path] = r
	}
	nt := d.uvarint()
	if d.err != nil || nt > uint64(len(d.b))/34 {
		return nil, nil, fmt.Errorf("%w: bad tree count", errStateCorrupt)
	}
	trees := make(map[[32]byte]*hashtree.Tree, nt)
	for i := uint64(0); i < nt && d.err == nil; i++ {
		size := d.varint()
		nl := d.uvarint()
		if d.err != nil || size < 0 || nl != uint64(hashtree.Leaves(size)) || nl > uint64(len(d.b))/32 {
			return nil, nil, fmt.Errorf("%w: bad tree", errStateCorrupt)
		}
		leaves := make([]hashtree.Hash, nl)
		for k := range leaves {
			copy(leaves[k][:], d.bytes(32))
		}
		t := hashtree.FromLeaves(size, leaves)
		trees[t.Root] = t
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, nil, fmt.Errorf("%w: bad record", errStateCorrupt)
	}
	return m, trees, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errStateCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errStateCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil || n > len(d.b) {
		d.err = errStateCorrupt
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

// loadState reads the state file; a missing or bad one yields an empty
// cache (logged), never an error.
func (c *Catalog) loadState() map[string]stateRec {
	f, err := os.Open(c.stateFile)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			c.log.Warn("catalog: cannot read state file, starting fresh", "path", c.stateFile, "err", err)
		}
		return nil
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil {
		c.stateID = fileIDOf(fi)
		if fi.Size() > maxStateSize {
			c.log.Warn("catalog: state file too large, starting fresh", "path", c.stateFile, "size", fi.Size())
			return nil
		}
	}
	b, err := io.ReadAll(f)
	if err == nil {
		var m map[string]stateRec
		var trees map[[32]byte]*hashtree.Tree
		if m, trees, err = decodeState(b); err == nil {
			c.log.Debug("catalog: state file loaded", "path", c.stateFile, "files", len(m), "trees", len(trees))
			c.trees = trees
			return m
		}
	}
	c.log.Warn("catalog: ignoring state file, starting fresh", "path", c.stateFile, "err", err)
	return nil
}

// saveState writes the hashes of all hashed files, atomically (temp file in
// the same directory, fsync, rename) so that a crash leaves either the old
// or the new state, never a torn one.
func (c *Catalog) saveState() {
	if c.stateFile == "" {
		return
	}
	c.mu.Lock()
	recs := make([]stateRec, 0, len(c.files))
	used := make(map[[32]byte]*hashtree.Tree)
	for _, r := range c.files {
		if r.hashed {
			recs = append(recs, stateRec{path: r.path, size: r.size, mtime: r.mtime, ctime: r.ctime, ino: r.ino, hash: r.hash})
			if t := c.trees[r.hash]; t != nil {
				used[r.hash] = t
			}
		}
	}
	c.gcTreesLocked(used)
	trees := make([]*hashtree.Tree, 0, len(used))
	for _, t := range used {
		trees = append(trees, t)
	}
	c.stateDirty = false
	c.mu.Unlock()
	if err := c.writeState(recs, trees); err != nil {
		c.log.Warn("catalog: cannot save state file", "path", c.stateFile, "err", err)
		c.mu.Lock()
		c.stateDirty = true
		c.mu.Unlock()
		return
	}
	c.log.Debug("catalog: state file saved", "path", c.stateFile, "files", len(recs))
}

// gcTreesLocked forgets the trees of contents no file has any more (nor
// a file that just disappeared: a rename in two halves may still need it).
func (c *Catalog) gcTreesLocked(used map[[32]byte]*hashtree.Tree) {
	for h := range c.trees {
		if used[h] == nil && len(c.byHash[h]) == 0 {
			delete(c.trees, h)
		}
	}
}

func (c *Catalog) writeState(recs []stateRec, trees []*hashtree.Tree) (err error) {
	dir, base := filepath.Split(c.stateFile)
	f, err := os.CreateTemp(dir, base+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = encodeState(f, recs, trees); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), c.stateFile); err != nil {
		return err
	}
	c.stateID = fileIDOf(fi)
	if d, err := os.Open(dir); err == nil {
		d.Sync() // make the rename durable; best effort
		d.Close()
	}
	return nil
}
