package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain lets a test run this test binary as the program itself, to see
// what main prints and how it exits.
func TestMain(m *testing.M) {
	if os.Getenv("FSCHUNK_TEST_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestVersionFlag(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-version")
	cmd.Env = append(os.Environ(), "FSCHUNK_TEST_RUN_MAIN=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("-version: %v, stderr %q", err, stderr.String())
	}
	// One line on stdout, naming the program, the revision (or that it is
	// unknown: go test stamps none) and the protocol; nothing on stderr.
	line := string(out)
	if !strings.HasPrefix(line, "fastfilesrv ") || strings.Count(line, "\n") != 1 ||
		!strings.Contains(line, "revision ") || !strings.Contains(line, "FS Chunk Protocol v") {
		t.Errorf("-version printed %q", line)
	}
	if stderr.Len() != 0 {
		t.Errorf("-version wrote to stderr: %q", stderr.String())
	}
}
