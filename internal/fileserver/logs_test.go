package fileserver

import (
	"bytes"
	"strings"
	"sync"
)

// logBuf collects a logger's output so that a test can check what an
// operator would read.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// count is how many lines contain every one of subs.
func (l *logBuf) count(subs ...string) int {
	n := 0
	for line := range strings.Lines(l.String()) {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			n++
		}
	}
	return n
}
