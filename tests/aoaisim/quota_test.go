package aoaisim

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The limiter refills continuously at TPM per window, and its wait is exact to the millisecond.
func TestLimiterRefillsContinuously(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	l := NewLimiter(6000, 0, 10*time.Second, false, t0) // 600 tokens/s; RPM 36 -> 6 requests, 3.6/s
	if _, _, _, _, ok := l.Admit(t0, 6000); !ok {
		t.Fatal("a full bucket refused its whole size")
	}
	_, _, wait, byTokens, ok := l.Admit(t0, 300)
	if ok || !byTokens || wait != 500*time.Millisecond {
		t.Fatalf("empty bucket: ok=%v byTokens=%v wait=%v, want a 500ms token wait", ok, byTokens, wait)
	}
	if _, _, _, _, ok := l.Admit(t0.Add(wait-time.Millisecond), 300); ok {
		t.Fatal("admitted 1 ms before the wait it gave")
	}
	left, _, _, _, ok := l.Admit(t0.Add(wait), 300)
	if !ok || left != 0 {
		t.Fatalf("at the wait it gave: ok=%v left=%d, want admitted with 0 left", ok, left)
	}
	// Half a window later half the bucket is back, never more than the bucket.
	if tok, _ := l.Available(t0.Add(wait + 5*time.Second)); tok != 3000 {
		t.Fatalf("after half a window: %v tokens, want 3000", tok)
	}
	if tok, _ := l.Available(t0.Add(time.Hour)); tok != 6000 {
		t.Fatalf("after an hour: %v tokens, want the bucket, 6000", tok)
	}
	// Requests: RPM/6 at once, then RPM per window.
	r := NewLimiter(1_000_000, 60, time.Minute, false, t0)
	for i := 0; i < 10; i++ {
		if _, _, _, _, ok := r.Admit(t0, 1); !ok {
			t.Fatalf("request %d of the 10 (RPM/6) refused", i+1)
		}
	}
	_, reqLeft, wait, byTokens, ok := r.Admit(t0, 1)
	if ok || byTokens || wait != time.Second || reqLeft != 0 {
		t.Fatalf("11th request: ok=%v byTokens=%v wait=%v left=%d, want a 1s request wait", ok, byTokens, wait, reqLeft)
	}
	// Empty starts spent; a cost over the bucket never fits.
	e := NewLimiter(6000, 0, 10*time.Second, true, t0)
	if w, _, possible := e.Wait(t0, 600); !possible || w != time.Second {
		t.Fatalf("empty start: wait %v possible %v, want 1s", w, possible)
	}
	if _, _, possible := e.Wait(t0, 6001); possible {
		t.Fatal("a cost over the bucket said possible")
	}
}

// Over HTTP: charged at len(body)/4 + max_tokens, remaining headers on 200 and 429, exact
// retry-after-ms.
func TestQuotaOverHTTP(t *testing.T) {
	_, srv := start(t, map[string]Deployment{"d": {Model: "gpt-4o", TPM: 1000, RPM: 600, Quota: &Quota{Window: Duration(10 * time.Second)}}})
	body := `{"messages":[{"role":"user","content":"` + strings.Repeat("x", 1600) + `"}],"max_tokens":200}`
	cost := len(body)/4 + 200
	resp, _, err := call(t, context.Background(), srv, chatPath, body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first call: %v %v", resp, err)
	}
	if got := resp.Header.Get("x-ratelimit-remaining-tokens"); got != fmt.Sprint(1000-cost) {
		t.Fatalf("remaining tokens %q, want %d (charged len(body)/4 + max_tokens = %d)", got, 1000-cost, cost)
	}
	if resp.Header.Get("x-ratelimit-remaining-requests") == "" {
		t.Fatal("no x-ratelimit-remaining-requests on a 200")
	}
	resp, _, _ = call(t, context.Background(), srv, chatPath, body)
	if resp.StatusCode != 429 {
		t.Fatalf("second call: %d, want 429", resp.StatusCode)
	}
	ms, err := strconv.Atoi(resp.Header.Get("retry-after-ms"))
	// 1000 tokens per 10 s = 0.1 per ms; short by cost-(1000-cost) tokens.
	want := (2*cost - 1000) * 10
	if err != nil || ms < want-50 || ms > want+1 {
		t.Fatalf("retry-after-ms %q, want about %d", resp.Header.Get("retry-after-ms"), want)
	}
	if resp.Header.Get("x-ratelimit-remaining-tokens") == "" || resp.Header.Get("x-ratelimit-remaining-requests") == "" {
		t.Fatal("a 429 without the remaining headers")
	}
	time.Sleep(time.Duration(ms) * time.Millisecond)
	if resp, _, _ = call(t, context.Background(), srv, chatPath, body); resp.StatusCode != 200 {
		t.Fatalf("after retry-after-ms: %d, want 200", resp.StatusCode)
	}
}
