// Package telemetry sets up the gateway's logs: JSON lines on stdout, warnings and errors on
// stderr, with any attribute whose name suggests a secret redacted as a last line of defence.
package telemetry

import (
	"context"
	"io"
	"log/slog"
	"strings"
)

// NewLogger returns a logger writing JSON lines: below Warn to stdout, Warn and above to stderr.
func NewLogger(stdout, stderr io.Writer, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: redact}
	return slog.New(&splitHandler{
		low:  slog.NewJSONHandler(stdout, opts),
		high: slog.NewJSONHandler(stderr, opts),
	})
}

// sensitive names an attribute that must never carry its value into a log.
func sensitive(key string) bool {
	k := strings.ToLower(key)
	for _, s := range []string{"key", "token", "secret", "password", "authorization", "signature", "connectionstring"} {
		if strings.Contains(k, s) && !strings.HasSuffix(k, "tokens") && k != "keyenv" {
			return true
		}
	}
	return false
}

func redact(_ []string, a slog.Attr) slog.Attr {
	if sensitive(a.Key) && a.Value.Kind() == slog.KindString {
		return slog.String(a.Key, "[redacted]")
	}
	return a
}

type splitHandler struct {
	low, high slog.Handler
}

func (h *splitHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.low.Enabled(ctx, l)
}

func (h *splitHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		return h.high.Handle(ctx, r)
	}
	return h.low.Handle(ctx, r)
}

func (h *splitHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &splitHandler{low: h.low.WithAttrs(as), high: h.high.WithAttrs(as)}
}

func (h *splitHandler) WithGroup(name string) slog.Handler {
	return &splitHandler{low: h.low.WithGroup(name), high: h.high.WithGroup(name)}
}
