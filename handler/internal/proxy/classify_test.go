package proxy

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/config"
	"github.com/aoai-failover/gateway/handler/internal/state"
)

// TestClassify holds the failover rules (handler/README.md), one row each.
func TestClassify(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	th := config.Throttle{DefaultRetryAfter: config.Duration(10 * time.Second), MaxRetryAfter: config.Duration(5 * time.Minute)}
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	connErr := fmt.Errorf("Post \"https://x\": %w", io.ErrUnexpectedEOF)
	for _, tc := range []struct {
		rule string
		in   result
		want outcome
	}{
		{"a success is the caller's answer", result{status: 200, header: hdr()},
			outcome{verdict: commit, kind: state.Succeeded}},
		{"a 400 (content filter, context length) is the caller's problem: returned at once", result{status: 400, header: hdr()},
			outcome{verdict: commit, kind: state.Succeeded}},
		{"a 429 marks the target throttled for retry-after-ms", result{status: 429, header: hdr("Retry-After-Ms", "1500", "Retry-After", "9")},
			outcome{verdict: next, kind: state.Throttled, wait: 1500 * time.Millisecond, waitSource: "retry-after-ms", reason: "throttled for 1.5s"}},
		{"a 429 without a wait takes the configured default", result{status: 429, header: hdr()},
			outcome{verdict: next, kind: state.Throttled, wait: 10 * time.Second, waitSource: "default", reason: "throttled for 10s"}},
		{"a 429's wait is capped", result{status: 429, header: hdr("Retry-After", "86400")},
			outcome{verdict: next, kind: state.Throttled, wait: 5 * time.Minute, waitSource: "retry-after", reason: "throttled for 5m0s"}},
		{"a 408 tries the next target", result{status: 408, header: hdr()},
			outcome{verdict: next, kind: state.Failed, reason: "Request Timeout"}},
		{"a 500 tries the next target", result{status: 500, header: hdr()},
			outcome{verdict: next, kind: state.Failed, reason: "Internal Server Error"}},
		{"a 503 tries the next target", result{status: 503, header: hdr()},
			outcome{verdict: next, kind: state.Failed, reason: "Service Unavailable"}},
		{"a 101 is a failure of the target, never a success", result{status: 101, header: hdr()},
			outcome{verdict: next, kind: state.Failed, reason: "the backend answered Switching Protocols instead of a response"}},
		{"a 1xx other than 100 is a failure of the target", result{err: fmt.Errorf("Post \"https://x\": %w", informationalError{103})},
			outcome{verdict: next, kind: state.Failed, reason: "the backend sent an informational 103 response"}},
		{"a 401 means a misconfigured target (a rotated key may explain it)", result{status: 401, header: hdr()},
			outcome{verdict: next, kind: state.Misconfigured, unauthorized: true, reason: "Unauthorized: check this target's key and deployment name"}},
		{"a 403 means a misconfigured target", result{status: 403, header: hdr()},
			outcome{verdict: next, kind: state.Misconfigured, reason: "Forbidden: check this target's key and deployment name"}},
		{"a 404 DeploymentNotFound means a misconfigured target", result{status: 404, header: hdr(), deploymentMissing: true},
			outcome{verdict: next, kind: state.Misconfigured, reason: "Not Found: check this target's key and deployment name"}},
		{"a generic 404 tries the next target and holds nothing against this one", result{status: 404, header: hdr()},
			outcome{verdict: next, kind: state.Succeeded, notFound: true, reason: "404 Resource not found for this path"}},
		{"a 404 from the account that holds the state is the caller's answer", result{status: 404, header: hdr(), pinned: true},
			outcome{verdict: commit, kind: state.Succeeded}},
		{"a 429 from the account that holds the state is still a throttle", result{status: 429, header: hdr("Retry-After", "2"), pinned: true},
			outcome{verdict: next, kind: state.Throttled, wait: 2 * time.Second, waitSource: "retry-after", reason: "throttled for 2s"}},
		{"a connection error tries the next target", result{err: connErr},
			outcome{verdict: next, kind: state.Failed, reason: "connection failed: unexpected EOF"}},
		{"no headers in time is a timeout", result{err: connErr, cause: errHeaderTimeout},
			outcome{verdict: next, kind: state.Failed, timeout: true, reason: errHeaderTimeout.Error()}},
		{"no first event in time is a timeout", result{err: connErr, cause: errFirstEventTimeout},
			outcome{verdict: next, kind: state.Failed, timeout: true, reason: errFirstEventTimeout.Error()}},
		{"a silent body before the commit point is a timeout", result{status: 200, err: connErr, cause: errIdleTimeout},
			outcome{verdict: next, kind: state.Failed, timeout: true, reason: errIdleTimeout.Error()}},
		{"the request's deadline is a timeout", result{err: connErr, cause: errRequestDeadline},
			outcome{verdict: next, kind: state.Failed, timeout: true, reason: "the request's deadline passed"}},
		{"a first event that is not JSON fails over", result{status: 200, err: errBadEvent},
			outcome{verdict: next, kind: state.Failed, reason: errBadEvent.Error()}},
		{"a first event over the limit fails over", result{status: 200, err: errEventTooLarge},
			outcome{verdict: next, kind: state.Failed, reason: errEventTooLarge.Error()}},
		{"a stream that ends before its first event fails over", result{status: 200, err: errEmptyStream},
			outcome{verdict: next, kind: state.Failed, reason: errEmptyStream.Error()}},
		{"no credential yet: skip the target, hold nothing against it", result{noCredential: true},
			outcome{verdict: next, kind: state.Abandoned, noCredential: true, reason: "no credential yet"}},
		{"the caller leaving stops everything and counts against no one", result{err: connErr, callerGone: true},
			outcome{verdict: stop, kind: state.Abandoned, reason: "the caller went away"}},
		{"the caller leaving wins over any answer", result{status: 503, header: hdr(), callerGone: true},
			outcome{verdict: stop, kind: state.Abandoned, reason: "the caller went away"}},
	} {
		t.Run(tc.rule, func(t *testing.T) {
			if got := classify(tc.in, now, th); got != tc.want {
				t.Errorf("classify(%+v)\n got %+v\nwant %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestShortError(t *testing.T) {
	inner := errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
	if got := shortError(fmt.Errorf("Post \"https://secret.example/x?api-key=1\": %w", inner)); got != inner.Error() {
		t.Errorf("got %q", got)
	}
}
