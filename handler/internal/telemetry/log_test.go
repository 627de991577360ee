package telemetry

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/tests/testio"
)

func TestLoggerSplitsAndRedacts(t *testing.T) {
	var out, errs testio.Buffer
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
	var sink testio.Buffer
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
	b.Write([]byte("late\n"))
	if !strings.HasSuffix(sink.String(), "late\n") {
		t.Errorf("a write after Close was held back")
	}
}

func TestLine(t *testing.T) {
	var out bytes.Buffer
	now := time.Date(2026, 11, 23, 4, 5, 6, 789000000, time.UTC)
	l := NewLine(now, slog.LevelWarn, "request")
	l.Str("path", "/openai/\"x\"\n\x01\xff").Int("status", 502).Bool("stream", true).Ms("durationMs", 1234567*time.Microsecond)
	l.Open("usage", '{').Int("prompt", 3).Int("total", 4).Close('}')
	l.Open("tried", '[')
	l.Elem().Str("target", "a/x").Int("status", 429).Close('}')
	l.Elem().Str("target", "b/y").Close('}')
	l.Close(']')
	l.Open("empty", '[').Close(']')
	l.WriteTo(&out)
	var rec map[string]any
	if err := json.Unmarshal(out.Bytes(), &rec); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out.String())
	}
	if !strings.HasSuffix(out.String(), "}\n") || strings.Count(out.String(), "\n") != 1 {
		t.Errorf("not one line: %q", out.String())
	}
	if rec["time"] != "2026-11-23T04:05:06.789Z" || rec["level"] != "WARN" || rec["msg"] != "request" || rec["path"] != "/openai/\"x\"\n\x01\ufffd" ||
		rec["status"] != 502.0 || rec["stream"] != true || rec["durationMs"] != 1234.567 {
		t.Errorf("record %v", rec)
	}
	tried := rec["tried"].([]any)
	if len(tried) != 2 || tried[1].(map[string]any)["target"] != "b/y" || rec["usage"].(map[string]any)["total"] != 4.0 || len(rec["empty"].([]any)) != 0 {
		t.Errorf("nested %v", rec)
	}
}

func TestLineMilliseconds(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, `"t":0`}, {12 * time.Millisecond, `"t":12`}, {1500 * time.Microsecond, `"t":1.5`},
		{34 * time.Microsecond, `"t":0.034`}, {1001 * time.Microsecond, `"t":1.001`},
		{-1200 * time.Microsecond, `"t":-1.2`}, {2*time.Second + 999*time.Nanosecond, `"t":2000`},
		{90 * time.Minute, `"t":5400000`},
	} {
		var b bytes.Buffer
		NewLine(time.Unix(0, 0), slog.LevelInfo, "m").Ms("t", tc.d).WriteTo(&b)
		if !strings.Contains(b.String(), tc.want+"}") {
			t.Errorf("%v: %s, want %s", tc.d, b.String(), tc.want)
		}
	}
}
