package proxy

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/aoai-failover/gateway/handler/internal/budget"
	"github.com/aoai-failover/gateway/handler/internal/config"
	"github.com/aoai-failover/gateway/handler/internal/route"
	"github.com/aoai-failover/gateway/handler/internal/state"
)

// bucket is a backend that admits requests as Azure OpenAI does: a token bucket of limit per
// window refilling continuously, each request charged len(body)/4 + max_tokens at admission,
// 429 with the exact retry-after-ms, x-ratelimit-remaining-tokens on every answer.
type bucket struct {
	mu      sync.Mutex
	limit   float64
	window  time.Duration
	tokens  float64
	at      time.Time
	served  []string // the bodies' "n" markers, in order of admission
	refused int
	usage   int // total_tokens each answer reports
}

func newBucket(limit int, window time.Duration, full bool) *bucket {
	b := &bucket{limit: float64(limit), window: window, at: time.Now(), usage: 7}
	if full {
		b.tokens = b.limit
	}
	return b
}

func (b *bucket) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req struct {
		MaxTokens int    `json:"max_tokens"`
		N         string `json:"n"`
	}
	_ = json.Unmarshal(body, &req)
	cost := float64(len(body)/4 + req.MaxTokens)
	b.mu.Lock()
	now := time.Now()
	rate := b.limit / b.window.Seconds()
	b.tokens = math.Min(b.limit, b.tokens+rate*now.Sub(b.at).Seconds())
	b.at = now
	if b.tokens < cost {
		wait := (cost - b.tokens) / rate
		b.refused++
		left := int(b.tokens)
		b.mu.Unlock()
		w.Header().Set("Retry-After-Ms", strconv.Itoa(int(math.Ceil(wait*1000))))
		w.Header().Set("X-Ratelimit-Remaining-Tokens", strconv.Itoa(left))
		jsonAnswer(429, `{"error":{"code":"429","message":"Rate limit is exceeded."}}`)(w, r)
		return
	}
	b.tokens -= cost
	b.served = append(b.served, req.N)
	left, usage := int(b.tokens), b.usage
	b.mu.Unlock()
	w.Header().Set("X-Ratelimit-Remaining-Tokens", strconv.Itoa(left))
	jsonAnswer(200, fmt.Sprintf(`{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":0,"total_tokens":%d}}`, usage, usage))(w, r)
}

func (b *bucket) counts() (served, refused int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.served), b.refused
}

func (b *bucket) order() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.served...)
}

// capacityGateway is a gateway over the given backends (logical "chat", in priority order)
// with the quota model on, the admission settings and budgets given; the caller's app is the
// X-Test-App header.
type capacityGateway struct {
	gw      *Gateway
	view    *state.View
	budgets *budget.Budgets
	srv     *httptest.Server
}

type capacityOptions struct {
	tokenWindow, requestWindow time.Duration
	admission                  *config.Admission
	budgets                    map[string]budget.App
	maxConcurrent              int
	meter                      *sdkmetric.MeterProvider
}

func newCapacityGateway(t *testing.T, o capacityOptions, backends ...http.Handler) *capacityGateway {
	t.Helper()
	accounts := map[string]any{}
	var targets []any
	for i, h := range backends {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		name := fmt.Sprintf("a%d", i+1)
		accounts[name] = map[string]any{"endpoint": srv.URL, "auth": map[string]any{"keyEnv": "K"}}
		targets = append(targets, map[string]any{"account": name, "deployment": fmt.Sprintf("d%d", i+1), "priority": i + 1})
	}
	doc := map[string]any{"accounts": accounts, "deployments": map[string]any{"chat": targets}, "clients": map[string]any{"anonymous": true}}
	if o.admission != nil {
		doc["admission"] = map[string]any{"chat": map[string]any{"maxWait": o.admission.MaxWait.D().String(),
			"maxQueued": o.admission.MaxQueued, "maxQueuedBytes": o.admission.MaxQueuedBytes}}
	}
	raw, _ := json.Marshal(doc)
	r, probs := config.ParseRouting(raw)
	if len(probs) > 0 {
		t.Fatalf("routing: %v", probs)
	}
	planner := route.New(*r)
	var ids []string
	for _, tg := range planner.Targets() {
		ids = append(ids, tg.ID)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := budget.New(budget.Options{Window: time.Minute, Apps: o.budgets})
	view := state.NewView(state.Options{
		Targets: ids, Store: state.NewMemoryStore(), CircuitFailures: 3, CircuitCooldown: time.Second, Misconfigured: time.Second,
		ProbeTimeout: time.Minute, TokenWindow: o.tokenWindow, RequestWindow: o.requestWindow, Apps: b, Logger: log,
	})
	opt := Options{
		Planner: planner, State: view, Credentials: keyCreds{}, Transport: NewTransport(2*time.Second, nil),
		Timeouts: r.Timeouts, Throttle: r.Throttle, MaxBodyBytes: r.Limits.MaxRequestBodyBytes, Logger: log,
		RouteByRemaining: true, Admission: r.Admission, Budgets: b, MaxConcurrent: o.maxConcurrent,
	}
	if o.meter != nil {
		opt.Meter = o.meter.Meter("test")
	}
	cg := &capacityGateway{gw: New(opt), view: view, budgets: b}
	cg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cg.gw.Serve(w, r, r.Header.Get("X-Test-App"))
	}))
	t.Cleanup(cg.srv.Close)
	return cg
}

func (cg *capacityGateway) chat(ctx context.Context, body string, hdr ...string) (*http.Response, string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, cg.srv.URL+chatPath, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b), nil
}

func (cg *capacityGateway) mustChat(t *testing.T, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	resp, text, err := cg.chat(context.Background(), body, hdr...)
	if err != nil {
		t.Fatal(err)
	}
	return resp, text
}

// chatBody is a request of about 100 tokens by the estimate (len/4 + max_tokens).
func chatBody(n int) string {
	return fmt.Sprintf(`{"n":"%d","messages":[{"role":"user","content":"hello"}],"max_tokens":80}`, n)
}

// paddedBody is a request of 400 bytes.
func paddedBody(n int) string {
	b := chatBody(n)
	return b[:len(b)-1] + `,"user":"` + strings.Repeat("x", 400-len(b)-10) + `"}`
}

// TestQuotaRoutingKeepsOrder: the primary is filled before the secondary is used, it is passed
// over (no 429 round trip) while the model says it is full, and it is used again as soon as its
// refill covers a request.
func TestQuotaRoutingKeepsOrder(t *testing.T) {
	const window = 3 * time.Second
	primary := newBucket(1000, window, true) // about 10 requests, refilling 1 a 0.3 s
	secondary := newBucket(1_000_000, window, true)
	cg := newCapacityGateway(t, capacityOptions{tokenWindow: window}, primary, secondary)
	cost := int64(len(chatBody(10))/4 + 80)
	firstSecondary := -1
	for i := 0; i < 20; i++ {
		resp, body := cg.mustChat(t, chatBody(i))
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
		if resp.Header.Get("x-served-by") == "a2/d2" && firstSecondary < 0 {
			firstSecondary = i
			if served, _ := primary.counts(); int64(1000-served*int(cost)) >= cost+10 {
				t.Errorf("the secondary was used while the primary had %d tokens left for a %d-token request", 1000-served*int(cost), cost)
			}
		}
		if a := resp.Header.Get("x-gateway-attempts"); a != "1" {
			t.Errorf("request %d took %s attempts: a full primary must be passed over, not tried", i, a)
		}
	}
	served, refused := primary.counts()
	if firstSecondary < 0 || served < 9 || refused > 0 {
		t.Fatalf("primary served %d, refused %d; first secondary request %d", served, refused, firstSecondary)
	}
	s := cg.view.Snapshot(time.Now())[0]
	if s.State != state.StateDeprioritised || s.DeprioritisedUntil == nil {
		t.Fatalf("a full primary shows %+v", s)
	}
	// The primary frees at the rate of its limit: the model says when, and then it is used again.
	until, ok := cg.view.Room("a1/d1", time.Now(), cost)
	if ok {
		t.Fatal("room on a full primary")
	}
	time.Sleep(time.Until(until) + 5*time.Millisecond)
	resp, _ := cg.mustChat(t, chatBody(100))
	if got := resp.Header.Get("x-served-by"); got != "a1/d1" {
		t.Errorf("after the refill the next request went to %s, want the primary", got)
	}
	if _, refused := primary.counts(); refused > 0 {
		t.Errorf("the primary refused %d requests: the model let one through too early", refused)
	}
}

// TestAdmissionWait: with every target throttled and the soonest freeing within maxWait, a
// request waits for it and is served instead of getting 429; past maxWait, the 429 stays.
func TestAdmissionWait(t *testing.T) {
	ok := newBackend(t, jsonAnswer(200, okBody))
	cg := newCapacityGateway(t, capacityOptions{admission: &config.Admission{MaxWait: config.Duration(time.Second), MaxQueued: 10, MaxQueuedBytes: 1 << 20}}, ok.srv.Config.Handler)
	cg.view.Record("a1/d1", state.Outcome{Kind: state.Throttled, Status: 429, Wait: 300 * time.Millisecond, Quota: state.UnknownQuota})
	start := time.Now()
	resp, body := cg.mustChat(t, chatBody(1))
	if resp.StatusCode != 200 || time.Since(start) < 250*time.Millisecond || time.Since(start) > 900*time.Millisecond {
		t.Fatalf("%d after %v: %s", resp.StatusCode, time.Since(start), body)
	}
	cg.view.Record("a1/d1", state.Outcome{Kind: state.Throttled, Status: 429, Wait: 3 * time.Second, Quota: state.UnknownQuota})
	start = time.Now()
	resp, body = cg.mustChat(t, chatBody(2))
	if resp.StatusCode != 429 || time.Since(start) > 200*time.Millisecond || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a target freeing after maxWait: %d after %v: %s", resp.StatusCode, time.Since(start), body)
	}
	if !strings.Contains(body, "AllTargetsThrottled") {
		t.Errorf("body %s", body)
	}
}

// TestAdmissionWaitAfter429s: a request whose every target answered 429 waits for the soonest
// (by its retry-after-ms) and is served by it.
func TestAdmissionWaitAfter429s(t *testing.T) {
	var calls int
	var mu sync.Mutex
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			w.Header().Set("Retry-After-Ms", "200")
			jsonAnswer(429, `{"error":{"code":"429","message":"busy"}}`)(w, r)
			return
		}
		jsonAnswer(200, okBody)(w, r)
	})
	cg := newCapacityGateway(t, capacityOptions{admission: &config.Admission{MaxWait: config.Duration(2 * time.Second), MaxQueued: 10, MaxQueuedBytes: 1 << 20}}, b.srv.Config.Handler)
	resp, body := cg.mustChat(t, chatBody(1))
	if resp.StatusCode != 200 || resp.Header.Get("x-gateway-attempts") != "2" {
		t.Fatalf("%d after %s attempts: %s", resp.StatusCode, resp.Header.Get("x-gateway-attempts"), body)
	}
}

// TestAdmissionFIFO: requests waiting for one target leave the queue in the order they came,
// one at a time as the target frees, each planning knowing what the one before it sent.
func TestAdmissionFIFO(t *testing.T) {
	// One request per 200 ms: each answer says no requests are left (the limit inferred is 1 per
	// request window).
	var mu sync.Mutex
	var order []string
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req struct{ N string }
		_ = json.Unmarshal(body, &req)
		mu.Lock()
		order = append(order, req.N)
		mu.Unlock()
		w.Header().Set("X-Ratelimit-Remaining-Requests", "0")
		jsonAnswer(200, okBody)(w, r)
	})
	cg := newCapacityGateway(t, capacityOptions{requestWindow: 200 * time.Millisecond,
		admission: &config.Admission{MaxWait: config.Duration(5 * time.Second), MaxQueued: 10, MaxQueuedBytes: 1 << 20}}, b.srv.Config.Handler)
	if resp, _ := cg.mustChat(t, chatBody(0)); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	var wg sync.WaitGroup
	statuses := make([]int, 6)
	for i := 1; i <= 5; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			resp, _ := cg.mustChat(t, chatBody(i))
			statuses[i] = resp.StatusCode
		}(i)
		time.Sleep(30 * time.Millisecond) // they arrive in order
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(order, ","); got != "0,1,2,3,4,5" {
		t.Errorf("served in the order %s, want 0,1,2,3,4,5", got)
	}
	for i, s := range statuses[1:] {
		if s != 200 {
			t.Errorf("request %d: %d", i+1, s)
		}
	}
}

// TestAdmissionBound: past maxQueued (or maxQueuedBytes) a request gets the 429 at once; the
// requests waiting hold no forwarding slot.
func TestAdmissionBound(t *testing.T) {
	for _, tc := range []struct {
		name          string
		maxQueued     int
		maxBytes      int64
		wantedWaiting int
	}{
		{"count", 2, 1 << 20, 2},
		{"bytes", 100, int64(len(paddedBody(1)))*3 + 10, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok := newBackend(t, jsonAnswer(200, okBody))
			// As many forwarding slots as requests may wait: those refused at once are refused
			// by the queue's bound, not for want of a slot.
			cg := newCapacityGateway(t, capacityOptions{maxConcurrent: tc.wantedWaiting,
				admission: &config.Admission{MaxWait: config.Duration(2 * time.Second), MaxQueued: tc.maxQueued, MaxQueuedBytes: tc.maxBytes}}, ok.srv.Config.Handler)
			cg.view.Record("a1/d1", state.Outcome{Kind: state.Throttled, Status: 429, Wait: 700 * time.Millisecond, Quota: state.UnknownQuota})
			type result struct {
				status int
				took   time.Duration
			}
			results := make(chan result, 6)
			for i := 0; i < 6; i++ {
				go func(i int) {
					start := time.Now()
					resp, _, err := cg.chat(context.Background(), paddedBody(i))
					if err != nil {
						results <- result{}
						return
					}
					results <- result{resp.StatusCode, time.Since(start)}
				}(i)
			}
			time.Sleep(300 * time.Millisecond)
			if q := cg.gw.Queued()["chat"]; q != tc.wantedWaiting {
				t.Errorf("%d waiting, want %d", q, tc.wantedWaiting)
			}
			if n := cg.gw.InFlight(); n != 0 {
				t.Errorf("%d forwarding slots held by waiting requests", n)
			}
			var served, refused int
			for i := 0; i < 6; i++ {
				r := <-results
				switch {
				case r.status == 200 && r.took > 600*time.Millisecond:
					served++
				case r.status == 429 && r.took < 250*time.Millisecond:
					refused++
				default:
					t.Errorf("a request got %d after %v", r.status, r.took)
				}
			}
			if served != tc.wantedWaiting || refused != 6-tc.wantedWaiting {
				t.Errorf("%d served after waiting, %d refused at once", served, refused)
			}
		})
	}
}

// TestAdmissionCancel: a caller that leaves while waiting leaves the queue at once, and the
// requests behind it move up.
func TestAdmissionCancel(t *testing.T) {
	ok := newBackend(t, jsonAnswer(200, okBody))
	cg := newCapacityGateway(t, capacityOptions{admission: &config.Admission{MaxWait: config.Duration(3 * time.Second), MaxQueued: 10, MaxQueuedBytes: 1 << 20}}, ok.srv.Config.Handler)
	cg.view.Record("a1/d1", state.Outcome{Kind: state.Throttled, Status: 429, Wait: 600 * time.Millisecond, Quota: state.UnknownQuota})
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	leaving := make(chan error, 1)
	go func() { _, _, err := cg.chat(ctx, chatBody(1)); leaving <- err }()
	time.Sleep(50 * time.Millisecond)
	staying := make(chan int, 1)
	go func() { resp, _ := cg.mustChat(t, chatBody(2)); staying <- resp.StatusCode }()
	time.Sleep(50 * time.Millisecond)
	if q := cg.gw.Queued()["chat"]; q != 2 {
		t.Fatalf("%d waiting, want 2", q)
	}
	if err := <-leaving; err == nil {
		t.Fatal("the leaving caller got an answer")
	}
	waitUntil(t, "the caller that left leaves the queue", time.Second, func() bool { return cg.gw.Queued()["chat"] == 1 })
	if s := <-staying; s != 200 {
		t.Errorf("the request behind it got %d", s)
	}
	if q := cg.gw.Queued()["chat"]; q != 0 {
		t.Errorf("%d still waiting", q)
	}
	if got := len(ok.requests()); got != 1 {
		t.Errorf("the backend saw %d requests, want 1 (the caller that left sent none)", got)
	}
}

// TestAdmissionWakesWhenQuotaFrees: a target the quota model passes over frees by its refill;
// the waiting request is sent when the model says it fits, and the target does not refuse it.
func TestAdmissionWakesWhenQuotaFrees(t *testing.T) {
	const window = 2 * time.Second
	primary := newBucket(500, window, true) // 250 tokens a second
	cg := newCapacityGateway(t, capacityOptions{tokenWindow: window,
		admission: &config.Admission{MaxWait: config.Duration(2 * time.Second), MaxQueued: 10, MaxQueuedBytes: 1 << 20}}, primary)
	served := 0
	var took []time.Duration
	for i := 0; i < 8; i++ {
		start := time.Now()
		resp, body := cg.mustChat(t, chatBody(i))
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
		served++
		took = append(took, time.Since(start))
	}
	_, refused := primary.counts()
	// Five fit at once; each later one waits about 100 tokens / 250 per second = 0.4 s.
	if refused > 1 || took[7] < 200*time.Millisecond || took[7] > time.Second {
		t.Errorf("refused %d; waits %v", refused, took)
	}
}

// TestAppBudget: an app over its budget gets 429 AppTokenBudgetExceeded with retry-after and its
// remaining budget, without any target being called; its consumption is the answers' real
// usage (plain, compressed and streamed); other apps are not held back; the metrics count it.
func TestAppBudget(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		calls++
		mu.Unlock()
		switch {
		case bytes.Contains(body, []byte(`"stream":true`)):
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n")
			io.WriteString(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":20,\"total_tokens\":30}}\n\n")
			io.WriteString(w, "data: [DONE]\n\n")
		case bytes.Contains(body, []byte(`"gzip"`)):
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			io.WriteString(zw, `{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":15,"total_tokens":20}}`)
			zw.Close()
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(buf.Bytes())
		default:
			jsonAnswer(200, `{"choices":[],"usage":{"prompt_tokens":40,"completion_tokens":10,"total_tokens":50}}`)(w, r)
		}
	})
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	cg := newCapacityGateway(t, capacityOptions{meter: mp, budgets: map[string]budget.App{"app-a": {Deployments: map[string]int64{"chat": 300}}}}, b.srv.Config.Handler)
	const plain = `{"messages":[{"role":"user","content":"hi"}],"max_tokens":40}` // estimated 55
	used := 0
	for i, body := range []string{plain, `{"messages":[{"role":"user","content":"gzip"}],"max_tokens":40}`,
		`{"messages":[{"role":"user","content":"hi"}],"max_tokens":40,"stream":true}`, plain, plain} {
		resp, text := cg.mustChat(t, body, "X-Test-App", "app-a", "Accept-Encoding", "gzip")
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, text)
		}
		used += []int{50, 20, 30, 50, 50}[i]
		if got := resp.Header.Get("X-Gateway-App-Limit-Tokens"); got != "300" {
			t.Errorf("request %d: limit header %q", i, got)
		}
		if rem, _ := strconv.Atoi(resp.Header.Get("X-Gateway-App-Remaining-Tokens")); rem > 300-used+50 || rem < 0 {
			t.Errorf("request %d: remaining %d after %d used", i, rem, used)
		}
	}
	// The budget is settled when the request's handler ends, just after the caller has it.
	settled := func(total int64) {
		t.Helper()
		waitUntil(t, "the last answer settled", 2*time.Second, func() bool {
			st := cg.budgets.Status(time.Now())
			return len(st) == 1 && st[0].TotalTokens == total
		})
	}
	settled(200)
	st := cg.budgets.Status(time.Now())
	if len(st) != 1 || st[0].Deployments["chat"].UsedTokens != 200 || st[0].TotalTokens != 200 {
		t.Fatalf("consumption %+v, want 200: the answers' real usage", st)
	}
	// 200 used of 300: a request estimated at 55 fits, then one more does not.
	if resp, text := cg.mustChat(t, plain, "X-Test-App", "app-a"); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, text)
	}
	settled(250)
	mu.Lock()
	before := calls
	mu.Unlock()
	big := `{"messages":[{"role":"user","content":"hi"}],"max_tokens":60}` // estimated 75 > 300-250
	resp, text := cg.mustChat(t, big, "X-Test-App", "app-a")
	if resp.StatusCode != 429 || !strings.Contains(text, `"code":"AppTokenBudgetExceeded"`) || !strings.Contains(text, "app-a") {
		t.Fatalf("over budget: %d %s", resp.StatusCode, text)
	}
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 1 || ra > 60 || resp.Header.Get("Retry-After-Ms") == "" {
		t.Errorf("retry-after %q", resp.Header.Get("Retry-After"))
	}
	if resp.Header.Get("X-Gateway-App-Remaining-Tokens") != "50" || resp.Header.Get("X-Gateway-App-Limit-Tokens") != "300" || resp.Header.Get("X-Served-By") != "none" {
		t.Errorf("headers %v", resp.Header)
	}
	mu.Lock()
	if calls != before {
		t.Errorf("a target was called for a request over budget")
	}
	mu.Unlock()
	// Another app is not held back, and gets no budget headers.
	if resp, _ := cg.mustChat(t, big, "X-Test-App", "app-b"); resp.StatusCode != 200 || resp.Header.Get("X-Gateway-App-Remaining-Tokens") != "" {
		t.Errorf("app-b: %d %v", resp.StatusCode, resp.Header)
	}
	var points map[string][]dataPoint
	waitUntil(t, "the metrics of the last request", 2*time.Second, func() bool {
		points = collect(t, reader)
		return len(find(points["gateway.app.budget.refusals"], "gateway.app", "app-a")) == 1
	})
	if p := find(points["gateway.app.tokens"], "gateway.app", "app-a"); len(p) != 1 || p[0].sum != 250 {
		t.Errorf("gateway.app.tokens for app-a: %+v", p)
	}
	if p := find(points["gateway.app.budget.refusals"], "gateway.app", "app-a"); len(p) != 1 || p[0].sum != 1 {
		t.Errorf("gateway.app.budget.refusals for app-a: %+v", p)
	}
	var rm = gaugeValue(t, reader, "gateway.app.budget.used", "app-a", "chat")
	if rm != 250 {
		t.Errorf("gateway.app.budget.used for app-a on chat: %d, want 250", rm)
	}
}

func waitUntil(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// gaugeValue reads an int64 gauge's point for an app and logical deployment.
func gaugeValue(t *testing.T, r *sdkmetric.ManualReader, name, app, model string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			g, ok := m.Data.(metricdata.Gauge[int64])
			if !ok || m.Name != name {
				continue
			}
			for _, p := range g.DataPoints {
				if attrOf(p.Attributes, "gateway.app") == app && attrOf(p.Attributes, "gen_ai.request.model") == model {
					return p.Value
				}
			}
		}
	}
	t.Fatalf("no %s point for %s on %s", name, app, model)
	return 0
}
