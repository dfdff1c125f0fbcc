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
)

// The state file caches hashes across restarts so that a restart over a
// large tree does not re-read it. It is a cache: anything wrong with it only
// costs re-hashing, so errors are logged and the file ignored.
//
// Format (version 1), all integers varint-encoded:
//
//	magic "FSCKCAT" version byte 1
//	count
//	count × { len(path) path size mtime-ns ino sha256[32] }
//	CRC-32C (Castagnoli) of everything above, 4 bytes big endian
//
// A binary format rather than gob keeps it compact (~70 bytes per file),
// fast to load and independent of Go type names.
const (
	stateMagic   = "FSCKCAT"
	stateVersion = 1
	maxStateSize = 1 << 30
	maxPathLen   = 64 << 10
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

type stateRec struct {
	path        string
	size, mtime int64
	ino         uint64
	hash        [32]byte
}

var errStateCorrupt = errors.New("corrupt state file")

func encodeState(w io.Writer, recs []stateRec) error {
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
		bw.Write(tmp[:binary.PutUvarint(tmp[:], r.ino)])
		bw.Write(r.hash[:])
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err := w.Write(binary.BigEndian.AppendUint32(nil, crc.Sum32()))
	return err
}

func decodeState(b []byte) (map[string]stateRec, error) {
	if len(b) < len(stateMagic)+1+1+4 || string(b[:len(stateMagic)]) != stateMagic {
		return nil, fmt.Errorf("%w: bad magic", errStateCorrupt)
	}
	if v := b[len(stateMagic)]; v != stateVersion {
		return nil, fmt.Errorf("unsupported state file version %d", v)
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, crcTable) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", errStateCorrupt)
	}
	d := decoder{b: body[len(stateMagic)+1:]}
	n := d.uvarint()
	// Each record takes at least 1+0+1+1+1+32 bytes: refuse absurd counts
	// before allocating for them.
	if d.err != nil || n > uint64(len(d.b))/36 {
		return nil, fmt.Errorf("%w: bad count", errStateCorrupt)
	}
	m := make(map[string]stateRec, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		var r stateRec
		l := d.uvarint()
		if l > maxPathLen {
			return nil, fmt.Errorf("%w: bad path length", errStateCorrupt)
		}
		r.path = string(d.bytes(int(l)))
		r.size = d.varint()
		r.mtime = d.varint()
		r.ino = d.uvarint()
		copy(r.hash[:], d.bytes(32))
		if d.err == nil && (!fs.ValidPath(r.path) || r.path == "." || r.size < 0) {
			return nil, fmt.Errorf("%w: bad record", errStateCorrupt)
		}
		m[r.path] = r
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, fmt.Errorf("%w: bad record", errStateCorrupt)
	}
	return m, nil
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
		if m, err = decodeState(b); err == nil {
			c.log.Debug("catalog: state file loaded", "path", c.stateFile, "files", len(m))
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
	for _, r := range c.files {
		if r.hashed {
			recs = append(recs, stateRec{path: r.path, size: r.size, mtime: r.mtime, ino: r.ino, hash: r.hash})
		}
	}
	c.stateDirty = false
	c.mu.Unlock()
	if err := c.writeState(recs); err != nil {
		c.log.Warn("catalog: cannot save state file", "path", c.stateFile, "err", err)
		c.mu.Lock()
		c.stateDirty = true
		c.mu.Unlock()
		return
	}
	c.log.Debug("catalog: state file saved", "path", c.stateFile, "files", len(recs))
}

func (c *Catalog) writeState(recs []stateRec) (err error) {
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
	if err = encodeState(f, recs); err != nil {
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
