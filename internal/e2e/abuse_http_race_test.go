//go:build race

package e2e

// httpAbuseRace says whether the race detector is on: it multiplies the
// resident memory of goroutines and heap (shadow memory), which the idle
// connection test's RSS bound allows for.
const httpAbuseRace = true
