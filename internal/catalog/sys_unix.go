//go:build unix

package catalog

import (
	"io/fs"
	"syscall"
)

// sysStat extracts what the version check needs beyond size and mtime.
func sysStat(fi fs.FileInfo) (dev, ino, nlink uint64, ctime int64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino), uint64(st.Nlink), ctimeOf(st)
	}
	return 0, 0, 1, 0
}

func fileIDOf(fi fs.FileInfo) fileID {
	dev, ino, _, _ := sysStat(fi)
	return fileID{dev: dev, ino: ino}
}
