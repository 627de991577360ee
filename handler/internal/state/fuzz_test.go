package state

import (
	"net/http"
	"testing"
	"time"
)

func FuzzRetryAfter(f *testing.F) {
	for _, s := range [][4]string{
		{"1500", "", "", ""}, {"", "7", "", ""}, {"", "Wed, 21 Oct 2026 07:28:00 GMT", "", ""}, {"", "", "55", "6m0s"},
		{"-1", "NaN", "1e400", "-5s"}, {"", "", "20ms", "0.5"},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, ms, ra, rr, rt string) {
		h := http.Header{}
		h.Set("retry-after-ms", ms)
		h.Set("retry-after", ra)
		h.Set("x-ratelimit-reset-requests", rr)
		h.Set("x-ratelimit-reset-tokens", rt)
		wait, source := RetryAfter(h, now, 10*time.Second, 5*time.Minute)
		if wait < 0 || wait > 5*time.Minute || source == "" {
			t.Fatalf("wait %s from %q for %q %q %q %q", wait, source, ms, ra, rr, rt)
		}
	})
}
