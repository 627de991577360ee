package telemetry

import (
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Line builds one JSON log record by appending to a buffer. The gateway writes one per request,
// where slog's general handler cost about a tenth of the CPU; the record has slog's shape
// (time, level, msg first) so both kinds of line read alike.
type Line struct {
	buf   []byte
	level slog.Level
}

var linePool = sync.Pool{New: func() any { return &Line{buf: make([]byte, 0, 1024)} }}

// NewLine starts a record.
func NewLine(now time.Time, level slog.Level, msg string) *Line {
	l := linePool.Get().(*Line)
	l.level = level
	l.buf = append(l.buf[:0], `{"time":"`...)
	l.buf = now.UTC().AppendFormat(l.buf, time.RFC3339Nano)
	l.buf = append(l.buf, `","level":"`...)
	l.buf = append(l.buf, level.String()...)
	l.buf = append(l.buf, `","msg":`...)
	l.buf = appendString(l.buf, msg)
	return l
}

func (l *Line) key(k string) {
	if last := l.buf[len(l.buf)-1]; last != '{' && last != '[' {
		l.buf = append(l.buf, ',')
	}
	l.buf = appendString(l.buf, k)
	l.buf = append(l.buf, ':')
}

// Str adds a string field.
func (l *Line) Str(k, v string) *Line { l.key(k); l.buf = appendString(l.buf, v); return l }

// Int adds an integer field.
func (l *Line) Int(k string, v int64) *Line {
	l.key(k)
	l.buf = strconv.AppendInt(l.buf, v, 10)
	return l
}

// Bool adds a boolean field.
func (l *Line) Bool(k string, v bool) *Line { l.key(k); l.buf = strconv.AppendBool(l.buf, v); return l }

// Ms adds a duration in milliseconds with microsecond precision.
func (l *Line) Ms(k string, d time.Duration) *Line {
	l.key(k)
	// Milliseconds to the microsecond, written from integers: "12", "12.5", "0.034", "-1.2".
	us := d.Microseconds()
	if us < 0 {
		l.buf = append(l.buf, '-')
		us = -us
	}
	l.buf = strconv.AppendInt(l.buf, us/1000, 10)
	if frac := us % 1000; frac != 0 {
		digits := [3]byte{byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
		n := 3
		for digits[n-1] == '0' {
			n--
		}
		l.buf = append(append(l.buf, '.'), digits[:n]...)
	}
	return l
}

// Open starts a nested object or array field: kind is '{' or '['.
func (l *Line) Open(k string, kind byte) *Line {
	l.key(k)
	l.buf = append(l.buf, kind)
	return l
}

// Close ends what Open started; kind is '}' or ']'.
func (l *Line) Close(kind byte) *Line {
	l.buf = append(l.buf, kind)
	return l
}

// Elem starts an object element of an array.
func (l *Line) Elem() *Line {
	if n := len(l.buf); l.buf[n-1] == '}' {
		l.buf = append(l.buf, ',')
	}
	l.buf = append(l.buf, '{')
	return l
}

// WriteTo ends the record, writes it as one line and recycles the Line.
func (l *Line) WriteTo(w io.Writer) (int64, error) {
	l.buf = append(l.buf, '}', '\n')
	n, err := w.Write(l.buf)
	if cap(l.buf) <= 64<<10 {
		linePool.Put(l)
	}
	return int64(n), err
}

const hex = "0123456789abcdef"

// plain marks the bytes a JSON string holds as they are: printable ASCII but the quote and
// the backslash.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendString appends s as a JSON string; invalid UTF-8 becomes U+FFFD, as encoding/json does.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		for i < len(s) && plain[s[i]] { // the common case: runs of plain ASCII
			i++
		}
		if i == len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Output sends finished lines where the logger sends records of their level: below Warn to
// Out, Warn and above to Err.
type Output struct {
	Out, Err io.Writer
}

// Emit writes the line and recycles it.
func (o Output) Emit(l *Line) {
	w := o.Out
	if l.level >= slog.LevelWarn {
		w = o.Err
	}
	_, _ = l.WriteTo(w)
}
