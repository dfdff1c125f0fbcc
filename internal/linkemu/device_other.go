//go:build !linux

package linkemu

import (
	"errors"
	"os"
)

// DefaultTxQueueLen is the transmit queue given to each device on Linux.
const DefaultTxQueueLen = 10000

// ErrUnsupported: TUN devices are opened on Linux only.
var ErrUnsupported = errors.New("linkemu: TUN/TAP devices are supported on Linux only")

// OpenDevice is Linux-only.
func OpenDevice(nsPath, name string, kind Kind, txQueueLen int) (*os.File, error) {
	return nil, ErrUnsupported
}

// OpenPair is Linux-only.
func OpenPair(nsPath, name, devA, devB string, kind Kind, up, down Config) (*Pair, error) {
	return nil, ErrUnsupported
}
