package state

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// RetryAfter reads how long a throttled target asks to be left alone, in the contract's order:
// retry-after-ms, retry-after (seconds or an HTTP date), x-ratelimit-reset-requests /
// x-ratelimit-reset-tokens (the later of the two), else def. Unreadable and negative values are
// passed over; the result is capped at limit. It also says which header the wait came from.
func RetryAfter(h http.Header, now time.Time, def, limit time.Duration) (time.Duration, string) {
	wait, source := def, "default"
	if d, ok := parseMillis(h.Get("retry-after-ms")); ok {
		wait, source = d, "retry-after-ms"
	} else if d, ok := parseRetryAfter(h.Get("retry-after"), now); ok {
		wait, source = d, "retry-after"
	} else {
		dr, okr := parseReset(h.Get("x-ratelimit-reset-requests"))
		dt, okt := parseReset(h.Get("x-ratelimit-reset-tokens"))
		switch {
		case okr && okt:
			wait, source = max(dr, dt), "x-ratelimit-reset"
		case okr:
			wait, source = dr, "x-ratelimit-reset-requests"
		case okt:
			wait, source = dt, "x-ratelimit-reset-tokens"
		}
	}
	return min(wait, limit), source
}

// maxHeaderWait bounds parsing so that huge numbers cannot overflow time.Duration.
const maxHeaderWait = 400 * 24 * time.Hour

func parseMillis(v string) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || math.IsNaN(f) || f < 0 {
		return 0, false
	}
	if f > float64(maxHeaderWait/time.Millisecond) {
		return maxHeaderWait, true
	}
	return time.Duration(f * float64(time.Millisecond)), true
}

func parseSeconds(v string) (time.Duration, bool) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || f < 0 {
		return 0, false
	}
	if f > maxHeaderWait.Seconds() {
		return maxHeaderWait, true
	}
	return time.Duration(f * float64(time.Second)), true
}

func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if d, ok := parseSeconds(v); ok {
		return d, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now)
	if d < 0 {
		d = 0
	}
	return min(d, maxHeaderWait), true
}

// parseReset reads Azure's whole seconds ("55") and OpenAI's duration form ("6m0s", "20ms").
func parseReset(v string) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if d, ok := parseSeconds(v); ok {
		return d, true
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, false
	}
	return d, true
}
