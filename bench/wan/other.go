//go:build !linux

// Command wan is the WAN benchmark; it needs Linux (network namespaces,
// TUN devices).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "wan: needs Linux (network namespaces and TUN devices)")
	os.Exit(1)
}
