package linkemu

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// DefaultTxQueueLen is the transmit queue given to each device. The
// kernel's default of 500 packets overflows on a burst before the emulator
// has read it, and those drops are counted nowhere the benchmark looks;
// 10,000 full-size packets is more than any emulated queue holds.
const DefaultTxQueueLen = 10000

// OpenDevice creates the TUN or TAP device name in the network namespace
// whose file is nsPath ("" for the caller's own, e.g.
// "/var/run/netns/NAME" for one made by `ip netns add NAME`), without
// packet information headers, sets its transmit queue length and brings
// it up. The device lives as long as the returned file is open. The file
// is non-blocking and polled by the runtime, so closing it ends a Read.
func OpenDevice(nsPath, name string, kind Kind, txQueueLen int) (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread enters the namespace and is never unlocked: the
		// runtime ends a locked thread when its goroutine exits, so no
		// other goroutine ever runs in that namespace.
		runtime.LockOSThread()
		f, err := openDevice(nsPath, name, kind, txQueueLen)
		ch <- result{f, err}
	}()
	r := <-ch
	if r.err != nil {
		return nil, fmt.Errorf("linkemu: %s device %s: %w", kind, name, r.err)
	}
	return r.f, nil
}

func openDevice(nsPath, name string, kind Kind, txQueueLen int) (*os.File, error) {
	if nsPath != "" {
		ns, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open namespace %s: %w", nsPath, err)
		}
		err = unix.Setns(ns, unix.CLONE_NEWNET)
		unix.Close(ns)
		if err != nil {
			return nil, fmt.Errorf("enter namespace %s: %w", nsPath, err)
		}
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, err
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if kind == TAP {
		flags = unix.IFF_TAP | unix.IFF_NO_PI
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return nil, fmt.Errorf("TUNSETIFF: %w", err)
	}
	if err := setUp(name, txQueueLen); err != nil {
		return nil, err
	}
	ok = true
	return os.NewFile(uintptr(fd), kind.String()+":"+name), nil
}

// setUp sets the transmit queue length of the device and brings it up,
// through a socket of the thread's namespace.
func setUp(name string, txQueueLen int) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(s)
	if txQueueLen > 0 {
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		ifr.SetUint32(uint32(txQueueLen))
		if err := unix.IoctlIfreq(s, unix.SIOCSIFTXQLEN, ifr); err != nil {
			return fmt.Errorf("set txqueuelen %d: %w", txQueueLen, err)
		}
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	return nil
}

// OpenPair creates devices devA and devB of kind in the namespace at
// nsPath and joins them by a link (see Pair). Routing packets into the
// devices is the caller's: typically, in a router namespace, a policy
// rule per link (`ip rule add iif <towards the client> to <server subnet>
// lookup N`, `ip route add default dev <devA> table N`, and the same for
// the way back into devB).
func OpenPair(nsPath, name, devA, devB string, kind Kind, up, down Config) (*Pair, error) {
	if err := up.Validate(); err != nil {
		return nil, err
	}
	if err := down.Validate(); err != nil {
		return nil, err
	}
	a, err := OpenDevice(nsPath, devA, kind, DefaultTxQueueLen)
	if err != nil {
		return nil, err
	}
	b, err := OpenDevice(nsPath, devB, kind, DefaultTxQueueLen)
	if err != nil {
		a.Close()
		return nil, err
	}
	p, err := NewPair(name, a, b, up, down)
	if err != nil {
		a.Close()
		b.Close()
		return nil, err
	}
	return p, nil
}
