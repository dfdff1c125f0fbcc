//go:build !race

package transport

// raceEnabled: built with -race (see udpConn.single).
const raceEnabled = false
