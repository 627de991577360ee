package telemetry

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestLoggerSplitsAndRedacts(t *testing.T) {
	var out, errs lockedBuffer
	log := NewLogger(&out, &errs, slog.LevelInfo)
	log.Info("hello", "apiKey", "s3cr3t-value", "remainingTokens", "12", "deployment", "chat")
	log.Warn("careful", "connectionString", "AccountKey=abc", "authorization", "Bearer xyz")
	log.Debug("not shown")
	if strings.Contains(out.String()+errs.String(), "s3cr3t-value") || strings.Contains(errs.String(), "AccountKey=abc") || strings.Contains(errs.String(), "Bearer xyz") {
		t.Errorf("secret logged:\n%s\n%s", out.String(), errs.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(out.String()), &rec); err != nil || rec["msg"] != "hello" || rec["remainingTokens"] != "12" || rec["deployment"] != "chat" {
		t.Errorf("stdout record %q: %v", out.String(), err)
	}
	if !strings.Contains(errs.String(), `"msg":"careful"`) || strings.Contains(out.String(), "careful") || strings.Contains(out.String()+errs.String(), "not shown") {
		t.Errorf("levels not split: stdout %q stderr %q", out.String(), errs.String())
	}
}

func TestBufferedWriter(t *testing.T) {
	var sink lockedBuffer
	b := NewBufferedWriter(&sink, 64, 50*time.Millisecond)
	b.Write([]byte("line one\n"))
	if sink.String() != "" {
		t.Errorf("written at once: %q", sink.String())
	}
	time.Sleep(150 * time.Millisecond)
	if sink.String() != "line one\n" {
		t.Errorf("not flushed within the interval: %q", sink.String())
	}
	long := strings.Repeat("x", 60) + "\n"
	b.Write([]byte(long))
	b.Write([]byte(long)) // does not fit: the first is flushed whole
	if sink.String() != "line one\n"+long {
		t.Errorf("buffer full: %q", sink.String())
	}
	b.Close()
	if sink.String() != "line one\n"+long+long {
		t.Errorf("not flushed on Close: %q", sink.String())
	}
}
