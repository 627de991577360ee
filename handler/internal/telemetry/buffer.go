package telemetry

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// BufferedWriter batches log lines into few writes: one write syscall per request line costs
// the gateway about a tenth of its CPU under load. Lines reach the output within the flush
// delay, when the buffer fills, or on Flush/Close. Each Write is kept whole. An idle process
// is never woken: the flush timer is armed only while something is buffered.
type BufferedWriter struct {
	mu     sync.Mutex
	w      *bufio.Writer
	delay  time.Duration
	timer  *time.Timer
	armed  bool
	closed bool
}

// NewBufferedWriter buffers up to size bytes for at most delay.
func NewBufferedWriter(w io.Writer, size int, delay time.Duration) *BufferedWriter {
	b := &BufferedWriter{w: bufio.NewWriterSize(w, size), delay: delay}
	b.timer = time.AfterFunc(time.Hour, func() { _ = b.Flush() })
	b.timer.Stop()
	return b
}

func (b *BufferedWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed { // after Close: straight through
		n, err := b.w.Write(p)
		if err == nil {
			err = b.w.Flush()
		}
		return n, err
	}
	if b.w.Available() < len(p) {
		if err := b.w.Flush(); err != nil {
			return 0, err
		}
	}
	n, err := b.w.Write(p)
	if !b.armed && b.w.Buffered() > 0 {
		b.armed = true
		b.timer.Reset(b.delay)
	}
	return n, err
}

// Flush writes out what is buffered.
func (b *BufferedWriter) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.armed = false
	return b.w.Flush()
}

// Close flushes what is left; later writes go straight out.
func (b *BufferedWriter) Close() error {
	b.mu.Lock()
	b.closed = true
	b.timer.Stop()
	b.mu.Unlock()
	return b.Flush()
}
