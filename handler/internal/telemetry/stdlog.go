package telemetry

import (
	"log"
	"log/slog"
	"strings"
)

// CaptureStdLog sends what the standard library logs through the log package (net/http's
// Transport reports a backend's "unsolicited response on idle HTTP channel" there) to logger as
// warnings, in JSON like every other line, and without the bytes such a message quotes: they
// are a backend's answer, which may hold a caller's text.
func CaptureStdLog(logger *slog.Logger) {
	log.SetFlags(0)
	log.SetOutput(stdLogWriter{logger})
}

type stdLogWriter struct{ logger *slog.Logger }

func (w stdLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if i := strings.Index(msg, " starting with "); i >= 0 {
		msg = msg[:i] + " (the bytes are not logged)"
	}
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	w.logger.Warn("net/http: " + msg)
	return len(p), nil
}
