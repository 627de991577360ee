package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"github.com/aoai-failover/gateway/handler/internal/apierr"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/config"
	"github.com/aoai-failover/gateway/handler/internal/route"
	"github.com/aoai-failover/gateway/handler/internal/state"
)

// backend is a scripted upstream: each request is answered by the handler, and the requests
// it saw are kept for assertions.
type backend struct {
	srv     *httptest.Server
	mu      sync.Mutex
	handler http.HandlerFunc
	seen    []seenRequest
}

type seenRequest struct {
	path, query string
	header      http.Header
	body        string
}

func newBackend(t testing.TB, h http.HandlerFunc) *backend {
	b := &backend{handler: h}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body))) // for the handler, too
		b.mu.Lock()
		b.seen = append(b.seen, seenRequest{r.URL.Path, r.URL.RawQuery, r.Header.Clone(), string(body)})
		h := b.handler
		b.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) requests() []seenRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]seenRequest(nil), b.seen...)
}

func (b *backend) set(h http.HandlerFunc) {
	b.mu.Lock()
	b.handler = h
	b.mu.Unlock()
}

func jsonAnswer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

const okBody = `{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`

type keyCreds struct{}

func (keyCreds) Authorize(_ context.Context, account string, h http.Header) error {
	h.Set("Api-Key", "backend-key-"+account)
	return nil
}

type testGateway struct {
	gw       *Gateway
	view     *state.View
	srv      *httptest.Server
	handling sync.WaitGroup // requests being handled: the log line and metrics come after the answer
}

// settle waits for every request to be done with, bookkeeping included.
func (tg *testGateway) settle() { tg.handling.Wait() }

// newGateway routes logical "chat" to one target per backend, in the given order of priority.
func newGateway(t testing.TB, tune func(*config.Routing), backends ...*backend) *testGateway {
	t.Helper()
	tr := NewTransport(2*time.Second, nil)
	t.Cleanup(tr.CloseIdleConnections)
	return newGatewayWith(t, tune, tr, backends...)
}

// newGatewayWith is newGateway with the transport given.
func newGatewayWith(t testing.TB, tune func(*config.Routing), tr http.RoundTripper, backends ...*backend) *testGateway {
	t.Helper()
	accounts := map[string]any{}
	var targets []any
	for i, b := range backends {
		name := fmt.Sprintf("a%d", i+1)
		accounts[name] = map[string]any{"endpoint": b.srv.URL, "auth": map[string]any{"keyEnv": "K"}}
		targets = append(targets, map[string]any{"account": name, "deployment": fmt.Sprintf("d%d", i+1), "priority": i + 1})
	}
	doc, _ := json.Marshal(map[string]any{"accounts": accounts, "deployments": map[string]any{"chat": targets}, "clients": map[string]any{"anonymous": true}})
	r, probs := config.ParseRouting(doc)
	if len(probs) > 0 {
		t.Fatalf("routing: %v", probs)
	}
	r.Timeouts.FirstByte = config.Duration(2 * time.Second)
	r.Timeouts.StreamIdle = config.Duration(2 * time.Second)
	if tune != nil {
		tune(r)
	}
	planner := route.New(*r)
	var ids []string
	for _, tg := range planner.Targets() {
		ids = append(ids, tg.ID)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	view := state.NewView(state.Options{
		Targets: ids, Store: state.NewMemoryStore(), CircuitFailures: r.Circuit.Failures,
		CircuitCooldown: r.Circuit.Cooldown.D(), Misconfigured: r.Circuit.Misconfigured.D(),
		ProbeTimeout: r.Timeouts.Request.D(), Logger: log,
	})
	gw := New(Options{
		Planner: planner, State: view, Credentials: keyCreds{}, Transport: tr,
		Timeouts: r.Timeouts, Throttle: r.Throttle, MaxBodyBytes: r.Limits.MaxRequestBodyBytes, Logger: log,
		DefaultLogical: r.DefaultLogical(),
	})
	tg := &testGateway{gw: gw, view: view}
	tg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tg.handling.Add(1)
		defer tg.handling.Done()
		gw.ServeHTTP(w, r)
	}))
	t.Cleanup(tg.srv.Close)
	return tg
}

const chatPath = "/openai/deployments/chat/chat/completions?api-version=2024-10-21"

func (tg *testGateway) post(t *testing.T, path, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, tg.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("post: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestFailoverByStatus(t *testing.T) {
	for _, tc := range []struct {
		primary       int
		wantStatus    int
		wantServedBy  string
		wantAttempts  string
		secondaryHits int
	}{
		{429, 200, "a2/d2", "2", 1},
		{408, 200, "a2/d2", "2", 1},
		{500, 200, "a2/d2", "2", 1},
		{502, 200, "a2/d2", "2", 1},
		{503, 200, "a2/d2", "2", 1},
		{401, 200, "a2/d2", "2", 1},
		{403, 200, "a2/d2", "2", 1},
		{404, 200, "a2/d2", "2", 1},
		{400, 400, "a1/d1", "1", 0}, // the caller's problem: returned at once, unchanged
		{413, 413, "a1/d1", "1", 0},
		{200, 200, "a1/d1", "1", 0},
	} {
		t.Run(fmt.Sprint(tc.primary), func(t *testing.T) {
			primaryBody := `{"error":{"code":"x","message":"primary said ` + fmt.Sprint(tc.primary) + `"}}`
			if tc.primary == 200 {
				primaryBody = okBody
			}
			b1 := newBackend(t, jsonAnswer(tc.primary, primaryBody))
			b2 := newBackend(t, jsonAnswer(200, okBody))
			tg := newGateway(t, nil, b1, b2)
			resp, body := tg.post(t, chatPath, `{"messages":[{"role":"user","content":"hi"}]}`)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, body)
			}
			if got := resp.Header.Get("x-served-by"); got != tc.wantServedBy {
				t.Errorf("x-served-by %q, want %q", got, tc.wantServedBy)
			}
			if got := resp.Header.Get("x-gateway-attempts"); got != tc.wantAttempts {
				t.Errorf("x-gateway-attempts %q, want %q", got, tc.wantAttempts)
			}
			if n := len(b2.requests()); n != tc.secondaryHits {
				t.Errorf("secondary saw %d requests, want %d", n, tc.secondaryHits)
			}
			if tc.primary == 400 && body != primaryBody {
				t.Errorf("caller error body changed: %s", body)
			}
		})
	}
}

func TestBodyReplayedAndRewritten(t *testing.T) {
	b1 := newBackend(t, jsonAnswer(503, `{}`))
	b2 := newBackend(t, jsonAnswer(200, okBody))
	tg := newGateway(t, nil, b1, b2)

	body := `{"messages":[{"role":"user","content":"a \"model\": trap"}],"max_tokens":5}`
	tg.post(t, chatPath, body)
	r1, r2 := b1.requests(), b2.requests()
	if len(r1) != 1 || len(r2) != 1 {
		t.Fatalf("requests %d %d", len(r1), len(r2))
	}
	if r1[0].body != body || r2[0].body != body {
		t.Errorf("body not replayed unchanged: %q / %q", r1[0].body, r2[0].body)
	}
	if r1[0].path != "/openai/deployments/d1/chat/completions" || r2[0].path != "/openai/deployments/d2/chat/completions" {
		t.Errorf("paths %q %q", r1[0].path, r2[0].path)
	}
	if r2[0].query != "api-version=2024-10-21" {
		t.Errorf("query %q", r2[0].query)
	}

	// v1 family: the body's model is rewritten per target, all else byte for byte.
	v1 := `{"model":"chat", "messages":[{"role":"user","content":"model"}],"stream":false}`
	tg.post(t, "/openai/v1/chat/completions", v1)
	r1, r2 = b1.requests(), b2.requests()
	if got := r1[1].body; got != `{"model":"d1", "messages":[{"role":"user","content":"model"}],"stream":false}` {
		t.Errorf("primary body %s", got)
	}
	if got := r2[1].body; got != `{"model":"d2", "messages":[{"role":"user","content":"model"}],"stream":false}` {
		t.Errorf("secondary body %s", got)
	}
	if r2[1].path != "/openai/v1/chat/completions" {
		t.Errorf("v1 path %q", r2[1].path)
	}
}

func TestHeadersFiltered(t *testing.T) {
	b1 := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "1")
		w.Header().Set("X-Ms-Region", "Sweden Central")
		io.WriteString(w, okBody)
	})
	tg := newGateway(t, nil, b1)
	resp, _ := tg.post(t, chatPath, `{}`,
		"Api-Key", "caller-secret", "Authorization", "Bearer caller-token", "Cookie", "c=1",
		"X-Custom", "kept", "Connection", "X-Drop", "X-Drop", "gone", "Te", "trailers", "Proxy-Authorization", "p",
		"X-Azure-Functions-HostVersion", "4.1", "X-Azure-Functions-InvocationId", "i", "x-ms-invocation-id", "i", "X-Gateway-Deployment", "chat")
	got := b1.requests()[0].header
	if v := got.Get("Api-Key"); v != "backend-key-a1" {
		t.Errorf("backend api-key %q", v)
	}
	for _, h := range []string{"Authorization", "Cookie", "X-Drop", "Te", "Proxy-Authorization",
		"X-Azure-Functions-HostVersion", "X-Azure-Functions-InvocationId", "X-Ms-Invocation-Id", "X-Gateway-Deployment"} {
		if got.Get(h) != "" {
			t.Errorf("%s forwarded: %q", h, got.Get(h))
		}
	}
	if got.Get("X-Custom") != "kept" {
		t.Errorf("X-Custom not passed on")
	}
	if resp.Header.Get("X-Hop") != "" || resp.Header.Get("X-Ms-Region") != "Sweden Central" {
		t.Errorf("response headers: %v", resp.Header)
	}
}

func TestAllThrottled(t *testing.T) {
	b1 := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After-Ms", "7000")
		w.WriteHeader(429)
	})
	b2 := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "3")
		w.WriteHeader(429)
	})
	tg := newGateway(t, nil, b1, b2)
	resp, body := tg.post(t, chatPath, `{}`)
	if resp.StatusCode != 429 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "3" {
		t.Errorf("retry-after %q, want 3 (the shortest)", ra)
	}
	if ms := resp.Header.Get("Retry-After-Ms"); ms < "2900" || ms > "3000" || len(ms) != 4 {
		t.Errorf("retry-after-ms %q", ms)
	}
	var e errorShape
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Code != "AllTargetsThrottled" || len(e.Error.Details) != 2 {
		t.Fatalf("body %s", body)
	}
	if !strings.Contains(e.Error.Message, "a1/d1") || !strings.Contains(e.Error.Message, "a2/d2") {
		t.Errorf("message does not name the targets: %s", e.Error.Message)
	}
	if resp.Header.Get("x-served-by") != "none" || resp.Header.Get("x-gateway-attempts") != "2" {
		t.Errorf("headers %v", resp.Header)
	}

	// Both are now known throttled: the next request is answered without any backend call.
	resp, body = tg.post(t, chatPath, `{}`)
	if resp.StatusCode != 429 || resp.Header.Get("x-gateway-attempts") != "0" {
		t.Fatalf("second: %d attempts %s: %s", resp.StatusCode, resp.Header.Get("x-gateway-attempts"), body)
	}
	if len(b1.requests()) != 1 || len(b2.requests()) != 1 {
		t.Errorf("throttled targets were called again")
	}
}

func TestThrottledTargetSkipped(t *testing.T) {
	b1 := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(429)
	})
	b2 := newBackend(t, jsonAnswer(200, okBody))
	tg := newGateway(t, nil, b1, b2)
	for i := 0; i < 3; i++ {
		resp, _ := tg.post(t, chatPath, `{}`)
		if resp.StatusCode != 200 || resp.Header.Get("x-served-by") != "a2/d2" {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, resp.Header.Get("x-served-by"))
		}
	}
	if n := len(b1.requests()); n != 1 {
		t.Errorf("throttled primary called %d times, want 1", n)
	}
}

func TestAllFailed(t *testing.T) {
	b1 := newBackend(t, jsonAnswer(500, `{}`))
	b2 := newBackend(t, jsonAnswer(404, `{}`))
	tg := newGateway(t, nil, b1, b2)
	resp, body := tg.post(t, chatPath, `{}`)
	if resp.StatusCode != 502 || !strings.Contains(body, "AllTargetsFailed") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q", ct)
	}
}

func TestTimeouts(t *testing.T) {
	hang := func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
	headersOnly := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}
	stream := `{"stream":true,"messages":[]}`
	for _, tc := range []struct {
		name     string
		primary  http.HandlerFunc
		body     string
		wantCode int
	}{
		{"no headers (non-stream)", hang, `{"max_tokens":1}`, 200},
		{"no headers (stream)", hang, stream, 200},
		{"headers then nothing", headersOnly, stream, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b1 := newBackend(t, tc.primary)
			b2 := newBackend(t, sseAnswer("data: {\"a\":1}\n\n", "data: [DONE]\n\n"))
			tg := newGateway(t, func(r *config.Routing) {
				r.Timeouts.FirstByte = config.Duration(300 * time.Millisecond)
				r.Timeouts.PerOutputToken = config.Duration(time.Millisecond)
			}, b1, b2)
			start := time.Now()
			resp, body := tg.post(t, chatPath, tc.body)
			if resp.StatusCode != tc.wantCode || resp.Header.Get("x-served-by") != "a2/d2" {
				t.Fatalf("%d %s: %s", resp.StatusCode, resp.Header.Get("x-served-by"), body)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %s", d)
			}
		})
	}

	t.Run("all time out: 504", func(t *testing.T) {
		b1 := newBackend(t, hang)
		tg := newGateway(t, func(r *config.Routing) {
			r.Timeouts.FirstByte = config.Duration(200 * time.Millisecond)
		}, b1)
		resp, body := tg.post(t, chatPath, stream)
		if resp.StatusCode != 504 || !strings.Contains(body, "AllTargetsTimedOut") {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})

	t.Run("overall deadline", func(t *testing.T) {
		b1 := newBackend(t, hang)
		b2 := newBackend(t, hang)
		tg := newGateway(t, func(r *config.Routing) {
			r.Timeouts.FirstByte = config.Duration(5 * time.Second)
			r.Timeouts.Request = config.Duration(300 * time.Millisecond)
		}, b1, b2)
		start := time.Now()
		resp, body := tg.post(t, chatPath, stream)
		if resp.StatusCode != 504 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("took %s", d)
		}
		if len(b2.requests()) != 0 {
			t.Errorf("a second target was tried after the request's deadline")
		}
	})
}

func sseAnswer(events ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		for _, e := range events {
			io.WriteString(w, e)
			w.(http.Flusher).Flush()
		}
	}
}

func TestStreaming(t *testing.T) {
	t.Run("events relayed", func(t *testing.T) {
		b := newBackend(t, sseAnswer(
			"data: {\"choices\":[],\"prompt_filter_results\":[]}\n\n",
			"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
			": keep-alive comment\n\n",
			"data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\r\n\r\n",
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":2,\"total_tokens\":4}}\n\n",
			"data: [DONE]\n\n"))
		tg := newGateway(t, nil, b)
		resp, body := tg.post(t, chatPath, `{"stream":true}`)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("%d %v", resp.StatusCode, resp.Header)
		}
		for _, want := range []string{`"Hel"`, `"lo"`, "keep-alive", `"total_tokens":4`, "data: [DONE]\n\n"} {
			if !strings.Contains(body, want) {
				t.Errorf("missing %q in %q", want, body)
			}
		}
		if strings.Index(body, "Hel") > strings.Index(body, `"lo"`) {
			t.Errorf("order changed")
		}
	})

	// An event that cannot be passed on intact (data that is not JSON, or over the size limit)
	// is never dropped: committed, the stream ends with the in-band error event; before that,
	// the next target is tried.
	for _, bad := range []struct{ name, event string }{
		{"not JSON", "data: {not json\n\n"},
		{"too large", "data: \"" + strings.Repeat("x", defaultMaxEventBytes) + "\"\n\n"},
	} {
		t.Run(bad.name+" after the first event", func(t *testing.T) {
			b := newBackend(t, sseAnswer(
				"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
				bad.event,
				"data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
				"data: [DONE]\n\n"))
			tg := newGateway(t, nil, b)
			resp, body := tg.post(t, chatPath, `{"stream":true}`)
			if resp.StatusCode != 200 || !strings.Contains(body, `"Hel"`) {
				t.Fatalf("%d %q", resp.StatusCode, body)
			}
			if !strings.HasSuffix(body, "\n\n") || !strings.Contains(body, `"code":"StreamInterrupted"`) ||
				strings.Contains(body, `"lo"`) || strings.Contains(body, "[DONE]") || strings.Contains(body, "not json") {
				t.Errorf("stream not ended with the error event: %.300q", body)
			}
		})
		t.Run(bad.name+" as the first event", func(t *testing.T) {
			b1 := newBackend(t, sseAnswer(bad.event, "data: [DONE]\n\n"))
			b2 := newBackend(t, sseAnswer("data: {\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\n", "data: [DONE]\n\n"))
			tg := newGateway(t, nil, b1, b2)
			resp, body := tg.post(t, chatPath, `{"stream":true}`)
			if resp.StatusCode != 200 || resp.Header.Get("x-served-by") != "a2/d2" || !strings.Contains(body, `"ok"`) || strings.Contains(body, "StreamInterrupted") {
				t.Fatalf("%d %s %.300q", resp.StatusCode, resp.Header.Get("x-served-by"), body)
			}
		})
	}

	t.Run("events flushed one by one", func(t *testing.T) {
		release := make(chan struct{})
		b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"n\":1}\n\n")
			w.(http.Flusher).Flush()
			<-release
			io.WriteString(w, "data: [DONE]\n\n")
		})
		tg := newGateway(t, nil, b)
		req, _ := http.NewRequest("POST", tg.srv.URL+chatPath, strings.NewReader(`{"stream":true}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		close(release)
		if err != nil || line != "data: {\"n\":1}\n" {
			t.Fatalf("first event not delivered before the second was produced: %q %v", line, err)
		}
	})

	t.Run("done ends promptly even if the backend stays open", func(t *testing.T) {
		b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"n\":1}\n\ndata: [DONE]\n\n")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		})
		tg := newGateway(t, nil, b)
		start := time.Now()
		resp, body := tg.post(t, chatPath, `{"stream":true}`)
		if resp.StatusCode != 200 || !strings.HasSuffix(body, "data: [DONE]\n\n") {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("took %s after [DONE]", d)
		}
	})

	t.Run("the backend connection is kept when the last chunk comes after [DONE]", func(t *testing.T) {
		var mu sync.Mutex
		conns := map[string]bool{}
		b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			conns[r.RemoteAddr] = true
			mu.Unlock()
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"n\":1}\n\ndata: [DONE]\n\n")
			w.(http.Flusher).Flush()
			time.Sleep(5 * time.Millisecond) // the last chunk goes out on its own, when this returns
		})
		tg := newGateway(t, nil, b)
		for i := 0; i < 3; i++ {
			if resp, body := tg.post(t, chatPath, `{"stream":true}`); resp.StatusCode != 200 || !strings.HasSuffix(body, "data: [DONE]\n\n") {
				t.Fatalf("%d %q", resp.StatusCode, body)
			}
			tg.settle()
		}
		mu.Lock()
		defer mu.Unlock()
		if len(conns) != 1 {
			t.Errorf("three streams took %d backend connections, want 1", len(conns))
		}
	})

	t.Run("stall after commit gives an in-band error", func(t *testing.T) {
		b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"n\":1}\n\n")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		})
		tg := newGateway(t, func(r *config.Routing) { r.Timeouts.StreamIdle = config.Duration(300 * time.Millisecond) }, b)
		resp, body := tg.post(t, chatPath, `{"stream":true}`)
		if resp.StatusCode != 200 {
			t.Fatalf("%d", resp.StatusCode)
		}
		if !strings.Contains(body, `"code":"StreamInterrupted"`) || strings.Contains(body, "[DONE]") {
			t.Errorf("body %q", body)
		}
	})

	t.Run("cut after commit gives an in-band error", func(t *testing.T) {
		b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"n\":1}\n\n")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		})
		tg := newGateway(t, nil, b)
		_, body := tg.post(t, chatPath, `{"stream":true}`)
		if !strings.Contains(body, `"code":"StreamInterrupted"`) {
			t.Errorf("body %q", body)
		}
	})

	t.Run("cut before the first event fails over", func(t *testing.T) {
		b1 := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		})
		b2 := newBackend(t, sseAnswer("data: {\"n\":2}\n\n", "data: [DONE]\n\n"))
		tg := newGateway(t, nil, b1, b2)
		resp, body := tg.post(t, chatPath, `{"stream":true}`)
		if resp.Header.Get("x-served-by") != "a2/d2" || !strings.Contains(body, `"n":2`) {
			t.Errorf("%v %q", resp.Header, body)
		}
	})

	t.Run("clean end without DONE", func(t *testing.T) {
		b := newBackend(t, sseAnswer("event: response.created\ndata: {\"type\":\"response.created\"}\n\n", "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}}\n\n"))
		tg := newGateway(t, nil, b)
		_, body := tg.post(t, "/openai/v1/responses", `{"model":"chat","stream":true}`)
		if !strings.Contains(body, "response.completed") || strings.Contains(body, "StreamInterrupted") {
			t.Errorf("%q", body)
		}
	})
}

func TestNonStreamBrokenBodyFailsOver(t *testing.T) {
	b1 := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "1000")
		io.WriteString(w, `{"id":"partial`)
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})
	b2 := newBackend(t, jsonAnswer(200, okBody))
	tg := newGateway(t, nil, b1, b2)
	resp, body := tg.post(t, chatPath, `{}`)
	if resp.StatusCode != 200 || body != okBody || resp.Header.Get("x-served-by") != "a2/d2" {
		t.Errorf("%d %q %q", resp.StatusCode, resp.Header.Get("x-served-by"), body)
	}
}

func TestCircuit(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	b1 := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			w.WriteHeader(503)
			return
		}
		jsonAnswer(200, okBody)(w, r)
	})
	b2 := newBackend(t, jsonAnswer(200, okBody))
	tg := newGateway(t, func(r *config.Routing) {
		r.Circuit.Failures = 2
		r.Circuit.Cooldown = config.Duration(300 * time.Millisecond)
	}, b1, b2)

	for i := 0; i < 5; i++ {
		tg.post(t, chatPath, `{}`)
	}
	if n := len(b1.requests()); n != 2 {
		t.Fatalf("primary called %d times; the circuit should open after 2 failures", n)
	}
	// Still down after the cool-down (300 ms plus up to 25%): exactly one probe, then open again.
	time.Sleep(400 * time.Millisecond)
	for i := 0; i < 3; i++ {
		tg.post(t, chatPath, `{}`)
	}
	if n := len(b1.requests()); n != 3 {
		t.Fatalf("primary called %d times; want one probe after the cool-down", n)
	}
	// Recovered: the next probe succeeds and traffic returns.
	fail.Store(false)
	time.Sleep(400 * time.Millisecond)
	for i := 0; i < 3; i++ {
		resp, _ := tg.post(t, chatPath, `{}`)
		if resp.Header.Get("x-served-by") != "a1/d1" {
			t.Fatalf("request %d after recovery served by %s", i, resp.Header.Get("x-served-by"))
		}
	}
}

func TestCallerCancelNotHeldAgainstTarget(t *testing.T) {
	started := make(chan struct{}, 1)
	b1 := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-r.Context().Done()
	})
	b2 := newBackend(t, jsonAnswer(200, okBody))
	tg := newGateway(t, func(r *config.Routing) { r.Circuit.Failures = 1 }, b1, b2)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", tg.srv.URL+chatPath, strings.NewReader(`{}`))
	go func() { <-started; cancel() }()
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("expected the cancelled call to fail")
	}
	time.Sleep(100 * time.Millisecond)
	for _, s := range tg.view.Snapshot(time.Now()) {
		if s.State != "available" || s.ConsecutiveFailures != 0 {
			t.Errorf("%s: %+v", s.Target, s)
		}
	}
	if len(b2.requests()) != 0 {
		t.Errorf("a cancelled request was failed over")
	}
}

func TestBadInput(t *testing.T) {
	b := newBackend(t, jsonAnswer(200, okBody))
	tg := newGateway(t, func(r *config.Routing) { r.Limits.MaxRequestBodyBytes = 2048 }, b)
	for _, tc := range []struct {
		name, method, path, body string
		want                     int
		code                     string
	}{
		{"v1 without body", "POST", "/openai/v1/chat/completions", "", 400, "InvalidRequest"},
		{"v1 non-JSON", "POST", "/openai/v1/chat/completions", "hello", 400, "InvalidRequest"},
		{"v1 JSON array", "POST", "/openai/v1/embeddings", `[1]`, 400, "InvalidRequest"},
		{"v1 no model", "POST", "/openai/v1/chat/completions", `{"messages":[]}`, 400, "InvalidRequest"},
		{"v1 model not a string", "POST", "/openai/v1/chat/completions", `{"model":7}`, 400, "InvalidRequest"},
		{"too large", "POST", chatPath, `{"x":"` + strings.Repeat("a", 3000) + `"}`, 413, "RequestTooLarge"},
		{"unknown deployment", "POST", "/openai/deployments/nope/chat/completions", `{}`, 404, "DeploymentNotFound"},
		{"unknown v1 model", "POST", "/openai/v1/responses", `{"model":"nope"}`, 404, "DeploymentNotFound"},
		{"outside openai", "POST", "/v1/chat/completions", `{}`, 404, "NotFound"},
		{"unknown v1 op", "POST", "/openai/v1/unknown", `{}`, 404, "NotFound"},
		{"GET", "GET", chatPath, "", 405, "MethodNotAllowed"},
		{"DELETE", "DELETE", chatPath, "", 405, "MethodNotAllowed"},
		{"dotdot", "POST", "/openai/deployments/chat/../../other/chat/completions", `{}`, 400, "InvalidPath"},
		{"encoded slash", "POST", "/openai/deployments/chat%2F..%2Fx/chat/completions", `{}`, 400, "InvalidPath"},
		{"encoded dot", "POST", "/openai/deployments/chat/%2e%2e/completions", `{}`, 400, "InvalidPath"},
		{"double slash", "POST", "/openai/deployments/chat//completions", `{}`, 400, "InvalidPath"},
		{"backslash", "POST", "/openai/deployments/chat/..\\x", `{}`, 400, "InvalidPath"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Raw request so that the client does not clean the path.
			conn, err := net.Dial("tcp", tg.srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", tc.method, tc.path, len(tc.body), tc.body)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			var e errorShape
			if resp.StatusCode != tc.want || json.Unmarshal(b, &e) != nil || e.Error.Code != tc.code || e.Error.Message == "" {
				t.Fatalf("got %d %s, want %d %s", resp.StatusCode, b, tc.want, tc.code)
			}
			if resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("x-served-by") != "none" {
				t.Errorf("headers %v", resp.Header)
			}
			if tc.code == "DeploymentNotFound" && !strings.Contains(e.Error.Message, "chat") {
				t.Errorf("404 does not list the known names: %s", e.Error.Message)
			}
		})
	}
	if n := len(b.requests()); n != 0 {
		t.Errorf("bad input reached the backend %d times", n)
	}
}

func TestGarbageFromBackend(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    http.HandlerFunc
	}{
		{"hijack and write garbage", func(w http.ResponseWriter, r *http.Request) {
			c, buf, _ := w.(http.Hijacker).Hijack()
			buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\n{}")
			buf.Flush()
			c.Close()
		}},
		{"not HTTP at all", func(w http.ResponseWriter, r *http.Request) {
			c, buf, _ := w.(http.Hijacker).Hijack()
			buf.WriteString("\x00\x01garbage\r\n\r\n")
			buf.Flush()
			c.Close()
		}},
		{"close without answer", func(w http.ResponseWriter, r *http.Request) {
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b1 := newBackend(t, tc.h)
			b2 := newBackend(t, jsonAnswer(200, okBody))
			tg := newGateway(t, nil, b1, b2)
			resp, body := tg.post(t, chatPath, `{}`)
			if resp.StatusCode != 200 || body != okBody || resp.Header.Get("x-served-by") != "a2/d2" {
				t.Errorf("%d %s %q", resp.StatusCode, resp.Header.Get("x-served-by"), body)
			}
		})
	}
}

func TestNotFoundKinds(t *testing.T) {
	t.Run("deployment missing marks the target", func(t *testing.T) {
		b1 := newBackend(t, jsonAnswer(404, `{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}`))
		b2 := newBackend(t, jsonAnswer(200, okBody))
		tg := newGateway(t, nil, b1, b2)
		tg.post(t, chatPath, `{}`)
		resp, _ := tg.post(t, chatPath, `{}`)
		if resp.Header.Get("x-gateway-attempts") != "1" || len(b1.requests()) != 1 {
			t.Errorf("a target without the deployment was tried again")
		}
		if s := tg.view.Snapshot(time.Now())[0]; s.Target != "a1/d1" || s.State != "failing" || s.LastStatus != 404 {
			t.Errorf("status %+v", s)
		}
	})
	t.Run("a path the service does not know is the caller's", func(t *testing.T) {
		b1 := newBackend(t, jsonAnswer(404, `{"error":{"code":"404","message":"Resource not found"}}`))
		b2 := newBackend(t, jsonAnswer(404, `{"error":{"code":"404","message":"Resource not found"}}`))
		tg := newGateway(t, nil, b1, b2)
		resp, body := tg.post(t, "/openai/deployments/chat/chat/completions", `{}`)
		if resp.StatusCode != 404 || !strings.Contains(body, `"code":"NotFound"`) || !strings.Contains(body, "api-version") {
			t.Errorf("%d %s", resp.StatusCode, body)
		}
		for _, s := range tg.view.Snapshot(time.Now()) {
			if s.State != "available" {
				t.Errorf("one caller's bad path took %s away: %+v", s.Target, s)
			}
		}
	})
}

// rotatingCreds is a credential whose key for a1 is "old" until Rotate is called.
type rotatingCreds struct {
	mu       sync.Mutex
	key      string
	rotates  int
	missing  map[string]bool
	newerKey string
}

func (r *rotatingCreds) Authorize(_ context.Context, account string, h http.Header) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.missing[account] {
		return fmt.Errorf("no credential yet")
	}
	h.Set("Api-Key", r.key)
	return nil
}

func (r *rotatingCreds) Rotate(_ context.Context, account string, sent http.Header) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rotates++
	if r.newerKey != "" && sent.Get("Api-Key") != r.newerKey {
		r.key = r.newerKey
		return true
	}
	return false
}

func TestRotationAndMissingCredentials(t *testing.T) {
	b1 := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Api-Key") != "new" {
			jsonAnswer(401, `{"error":{"code":"401","message":"Access denied"}}`)(w, r)
			return
		}
		jsonAnswer(200, okBody)(w, r)
	})
	b2 := newBackend(t, jsonAnswer(200, okBody))
	tg := newGateway(t, nil, b1, b2)
	creds := &rotatingCreds{key: "old", newerKey: "new"}
	tg.gw.opt.Credentials = creds

	resp, _ := tg.post(t, chatPath, `{}`)
	if resp.StatusCode != 200 || resp.Header.Get("x-served-by") != "a1/d1" || len(b2.requests()) != 0 || resp.Header.Get("x-gateway-attempts") != "2" {
		t.Fatalf("after rotation: %d %s after %s attempts; secondary saw %d", resp.StatusCode, resp.Header.Get("x-served-by"), resp.Header.Get("x-gateway-attempts"), len(b2.requests()))
	}
	if creds.rotates != 1 || len(b1.requests()) != 2 {
		t.Errorf("rotates %d, primary requests %d; want 1 and 2 (old key, then new)", creds.rotates, len(b1.requests()))
	}

	// A key that stays wrong: one rotation attempt, then the next target.
	creds.newerKey = ""
	creds.key = "still-wrong"
	resp, _ = tg.post(t, chatPath, `{}`)
	if resp.Header.Get("x-served-by") != "a2/d2" {
		t.Errorf("wrong key: served by %s", resp.Header.Get("x-served-by"))
	}

	// No credential for any target yet: 503, nothing held against the targets.
	tg2 := newGateway(t, nil, newBackend(t, jsonAnswer(200, okBody)))
	tg2.gw.opt.Credentials = &rotatingCreds{missing: map[string]bool{"a1": true}}
	resp, body := tg2.post(t, chatPath, `{}`)
	if resp.StatusCode != 503 || !strings.Contains(body, "NoCredential") || resp.Header.Get("Retry-After") == "" {
		t.Errorf("no credential: %d %s", resp.StatusCode, body)
	}
	if s := tg2.view.Snapshot(time.Now())[0]; s.State != "available" {
		t.Errorf("a missing credential was held against the target: %+v", s)
	}
}

// errorShape is the Azure error body as an SDK reads it.
type errorShape struct {
	Error struct {
		Code    string          `json:"code"`
		Message string          `json:"message"`
		Details []apierr.Detail `json:"details"`
	} `json:"error"`
}
