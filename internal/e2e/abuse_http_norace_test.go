//go:build !race

package e2e

// httpAbuseRace says whether the race detector is on; see
// abuse_http_race_test.go.
const httpAbuseRace = false
