//go:build !linux

package transport

import (
	"errors"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Without Linux's UDP offloads every datagram is one system call: the
// portable fallback, with the same interface.

const oobSize = 0

func probe(int, bool) (gso, gro bool) { return false, false }

// writeGSO is never called (GSO is never on); it refuses like a kernel
// without the offload would, so WriteBatch falls back for good.
func (o *Offload) writeGSO([]byte, int, netip.AddrPort) error {
	return errors.Join(errors.New("offload: no GSO on this system"), unix.EOPNOTSUPP)
}

func groSize([]byte) (int, bool) { return 0, false }
