//go:build !linux

package transport

func setSingle(Conn, bool) {}
