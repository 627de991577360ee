// Package testio has what the tests share for collecting output.
package testio

import (
	"bytes"
	"sync"
)

// Buffer collects what several goroutines write (a process's output, a server's log lines)
// and can be read while they still write.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String is everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
