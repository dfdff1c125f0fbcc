// Package e2e holds end-to-end tests: a gateway and several FastFileSrv
// in one process, on real UDP sockets on loopback, with faults injected
// by faultconn, and every download compared byte for byte.
package e2e
