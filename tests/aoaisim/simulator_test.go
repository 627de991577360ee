package aoaisim

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const key = "test-key"

func start(t *testing.T, deps map[string]Deployment) (*Simulator, *httptest.Server) {
	t.Helper()
	s, srv, err := Start(Config{APIKey: key, AcceptBearer: true, Region: "Test Region", Deployments: deps})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return s, srv
}

func call(t *testing.T, ctx context.Context, srv *httptest.Server, path, body string, hdr ...string) (*http.Response, string, error) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+path, strings.NewReader(body))
	req.Header.Set("api-key", key)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

const chatPath = "/openai/deployments/d/chat/completions?api-version=2024-10-21"

func TestRoutesAndShapes(t *testing.T) {
	s, srv := start(t, map[string]Deployment{
		"d":    {Model: "gpt-4o-mini", CompletionTokens: 5},
		"emb":  {Model: "text-embedding-3-small"},
		"inst": {Model: "gpt-35-turbo-instruct", CompletionTokens: 5},
	})
	for _, tc := range []struct {
		path, body, want string
	}{
		{chatPath, `{"messages":[{"role":"user","content":"hi"}]}`, `"object":"chat.completion"`},
		{"/openai/deployments/inst/completions?api-version=1", `{"prompt":"hi"}`, `"object":"text_completion"`},
		{"/openai/deployments/emb/embeddings?api-version=1", `{"input":["a","b"]}`, `"object":"list"`},
		{"/openai/v1/chat/completions", `{"model":"d","messages":[]}`, `"object":"chat.completion"`},
		{"/openai/v1/embeddings", `{"model":"emb","input":"x"}`, `"embedding"`},
		{"/openai/v1/responses", `{"model":"d","input":"x"}`, `"object":"response"`},
		{"/openai/responses?api-version=1", `{"model":"d","input":"x"}`, `"output_text"`},
	} {
		resp, body, err := call(t, context.Background(), srv, tc.path, tc.body)
		if err != nil || resp.StatusCode != 200 || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %v %v %s", tc.path, err, resp, body)
			continue
		}
		if resp.Header.Get("apim-request-id") == "" || resp.Header.Get("x-ms-region") != "Test Region" {
			t.Errorf("%s: headers %v", tc.path, resp.Header)
		}
	}
	_, body, _ := call(t, context.Background(), srv, "/openai/deployments/emb/embeddings?api-version=1", `{"input":["a","b","c"]}`)
	var emb struct{ Data []any }
	if json.Unmarshal([]byte(body), &emb); len(emb.Data) != 3 {
		t.Errorf("embeddings for 3 inputs: %s", body)
	}
	if st := s.Stats(); st["d"].Served != 4 || st["emb"].Served != 3 || st["inst"].Served != 1 || st["emb"].LastPath != "/openai/deployments/emb/embeddings" {
		t.Errorf("stats %+v", st)
	}
	for _, tc := range []struct{ path, body, code string }{
		{"/openai/deployments/d/chat/completions", `{"messages":[]}`, `"code":"404"`}, // no api-version
		{"/openai/deployments/d/unknown?api-version=1", `{}`, `"code":"404"`},         // no such operation
		{"/openai/deployments/nope/chat/completions?api-version=1", `{}`, "DeploymentNotFound"},
		{"/openai/v1/chat/completions", `{"model":"nope"}`, "DeploymentNotFound"},
	} {
		resp, body, _ := call(t, context.Background(), srv, tc.path, tc.body)
		if resp.StatusCode != 404 || !strings.Contains(body, tc.code) {
			t.Errorf("%s: %d %s", tc.path, resp.StatusCode, body)
		}
	}
}

// TestOperationNotSupported: a deployment answers only the operations its model serves, with
// the service's 400 otherwise (embeddings on a chat model, chat on an embeddings model, ...); a
// model the simulator does not know answers everything.
func TestOperationNotSupported(t *testing.T) {
	s, srv := start(t, map[string]Deployment{
		"chat":  {Model: "gpt-4o-mini"},
		"o":     {Model: "o4-mini"},
		"emb":   {Model: "text-embedding-3-large"},
		"inst":  {Model: "gpt-35-turbo-instruct"},
		"other": {Model: "m"},
	})
	const chatBody = `{"messages":[{"role":"user","content":"hi"}]}`
	for _, tc := range []struct {
		path, body string
		want       int
		message    string
	}{
		{"/openai/deployments/chat/embeddings?api-version=2024-10-21", `{"input":"x"}`, 400, "The embeddings operation does not work with the specified model, gpt-4o-mini. Please choose different model and try again."},
		{"/openai/v1/embeddings", `{"model":"chat","input":"x"}`, 400, "The embeddings operation does not work with the specified model, gpt-4o-mini."},
		{"/openai/deployments/chat/completions?api-version=2024-10-21", `{"prompt":"hi"}`, 400, "The completion operation does not work with the specified model, gpt-4o-mini."},
		{"/openai/deployments/o/embeddings?api-version=2024-10-21", `{"input":"x"}`, 400, "The embeddings operation does not work with the specified model, o4-mini."},
		{"/openai/deployments/emb/chat/completions?api-version=2024-10-21", chatBody, 400, "The chatCompletion operation does not work with the specified model, text-embedding-3-large."},
		{"/openai/v1/responses", `{"model":"emb","input":"x"}`, 400, "The responses operation does not work with the specified model, text-embedding-3-large."},
		{"/openai/deployments/inst/chat/completions?api-version=2024-10-21", chatBody, 400, "The chatCompletion operation does not work with the specified model, gpt-35-turbo-instruct."},
		{"/openai/deployments/o/chat/completions?api-version=2024-10-21", chatBody, 200, ""},
		{"/openai/deployments/other/embeddings?api-version=2024-10-21", `{"input":"x"}`, 200, ""},
		{"/openai/deployments/other/completions?api-version=2024-10-21", `{"prompt":"hi"}`, 200, ""},
	} {
		resp, body, err := call(t, context.Background(), srv, tc.path, tc.body)
		if err != nil || resp.StatusCode != tc.want {
			t.Errorf("%s %s: %v %v %s", tc.path, tc.body, err, resp, body)
			continue
		}
		if tc.want != 400 {
			continue
		}
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal([]byte(body), &e) != nil || e.Error.Code != "OperationNotSupported" || !strings.HasPrefix(e.Error.Message, tc.message) ||
			!strings.HasSuffix(e.Error.Message, "https://go.microsoft.com/fwlink/?linkid=2197993.") || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %s", tc.path, body)
		}
	}
	if st := s.Stats()["chat"]; st.BadRequest != 3 || st.Served != 0 || st.Requests != 3 {
		t.Errorf("refusals are counted as bad requests: %+v", st)
	}
}

func TestChatAnswer(t *testing.T) {
	_, srv := start(t, map[string]Deployment{"d": {Model: "m", CompletionTokens: 10}})
	_, body, _ := call(t, context.Background(), srv, chatPath, `{"messages":[{"role":"user","content":"12345678"}],"max_tokens":4}`)
	var c struct {
		Choices []struct {
			FinishReason string `json:"finish_reason"`
			Message      struct{ Content string }
		}
		Usage        struct{ PromptTokens, CompletionTokens, TotalTokens int } `json:"usage"`
		PromptFilter []any                                                     `json:"prompt_filter_results"`
	}
	if err := json.Unmarshal([]byte(body), &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Choices) != 1 || c.Choices[0].FinishReason != "length" || len(strings.Fields(c.Choices[0].Message.Content)) != 4 || len(c.PromptFilter) != 1 {
		t.Errorf("answer %s", body)
	}
	// json tags are snake_case in the service; decode usage by hand.
	var u struct {
		Usage map[string]int `json:"usage"`
	}
	json.Unmarshal([]byte(body), &u)
	if u.Usage["prompt_tokens"] != 2 || u.Usage["completion_tokens"] != 4 || u.Usage["total_tokens"] != 6 {
		t.Errorf("usage %v", u.Usage)
	}
}

func events(body string) []string {
	var out []string
	for _, ev := range strings.Split(strings.TrimSuffix(body, "\n\n"), "\n\n") {
		out = append(out, ev)
	}
	return out
}

func TestStreamSequence(t *testing.T) {
	_, srv := start(t, map[string]Deployment{"d": {Model: "m", CompletionTokens: 3}})
	for _, usage := range []bool{false, true} {
		body := `{"messages":[{"role":"user","content":"hi"}],"stream":true}`
		if usage {
			body = `{"messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`
		}
		resp, text, err := call(t, context.Background(), srv, chatPath, body)
		if err != nil || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("%v %v", err, resp)
		}
		evs := events(text)
		want := 1 + 1 + 3 + 1 + 1 // filter, role, 3 content, finish, done
		if usage {
			want++
		}
		if len(evs) != want {
			t.Fatalf("usage=%v: %d events: %q", usage, len(evs), evs)
		}
		parse := func(ev string) map[string]any {
			var m map[string]any
			if err := json.Unmarshal([]byte(strings.TrimPrefix(ev, "data: ")), &m); err != nil {
				t.Fatalf("event %q: %v", ev, err)
			}
			return m
		}
		first := parse(evs[0])
		if first["id"] != "" || first["model"] != "" || first["prompt_filter_results"] == nil || len(first["choices"].([]any)) != 0 {
			t.Errorf("first event %v", first)
		}
		role := parse(evs[1])["choices"].([]any)[0].(map[string]any)["delta"].(map[string]any)
		if role["role"] != "assistant" {
			t.Errorf("role event %v", role)
		}
		content := ""
		for _, ev := range evs[2:5] {
			content += parse(ev)["choices"].([]any)[0].(map[string]any)["delta"].(map[string]any)["content"].(string)
		}
		if len(strings.Fields(content)) != 3 {
			t.Errorf("content %q", content)
		}
		fin := parse(evs[5])["choices"].([]any)[0].(map[string]any)
		if fin["finish_reason"] != "stop" {
			t.Errorf("finish %v", fin)
		}
		if usage {
			u := parse(evs[6])
			if u["usage"] == nil || len(u["choices"].([]any)) != 0 {
				t.Errorf("usage chunk %v", u)
			}
		}
		if evs[len(evs)-1] != "data: [DONE]" {
			t.Errorf("last event %q", evs[len(evs)-1])
		}
	}

	_, text, _ := call(t, context.Background(), srv, "/openai/v1/responses", `{"model":"d","input":"hi","stream":true}`)
	if !strings.HasPrefix(text, "event: response.created\n") || !strings.Contains(text, "event: response.completed\n") || strings.Contains(text, "[DONE]") {
		t.Errorf("responses stream %q", text)
	}
}

func TestTokenLimit(t *testing.T) {
	s, srv := start(t, map[string]Deployment{"d": {Model: "m", TPM: 1000, RPM: 1000}})
	body := `{"messages":[{"role":"user","content":"` + strings.Repeat("x", 400) + `"}],"max_tokens":200}` // cost 300
	var last int
	for i := 0; i < 3; i++ {
		resp, _, _ := call(t, context.Background(), srv, chatPath, body)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
		left, _ := strconv.Atoi(resp.Header.Get("x-ratelimit-remaining-tokens"))
		if i > 0 && left != last-300 {
			t.Errorf("remaining tokens %d after %d", left, last)
		}
		last = left
	}
	resp, text, _ := call(t, context.Background(), srv, chatPath, body)
	if resp.StatusCode != 429 {
		t.Fatalf("fourth: %d", resp.StatusCode)
	}
	ra, _ := strconv.Atoi(resp.Header.Get("retry-after"))
	ms, _ := strconv.Atoi(resp.Header.Get("retry-after-ms"))
	if ra < 59 || ra > 60 || ms < 58000 || ms > 60000 || resp.Header.Get("x-ratelimit-reset-tokens") == "" {
		t.Errorf("429 headers %v", resp.Header)
	}
	var e struct {
		Error struct{ Code, Message string }
	}
	json.Unmarshal([]byte(text), &e)
	if e.Error.Code != "429" || !strings.Contains(e.Error.Message, "ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit") {
		t.Errorf("429 body %s", text)
	}
	// A smaller request still fits the remaining 100 tokens.
	resp, _, _ = call(t, context.Background(), srv, chatPath, `{"messages":[{"role":"user","content":"hi"}],"max_tokens":50}`)
	if resp.StatusCode != 200 {
		t.Errorf("small request refused: %d", resp.StatusCode)
	}
	if st := s.Stats()["d"]; st.Throttled != 1 || st.Served != 4 {
		t.Errorf("stats %+v", st)
	}
}

func TestRequestBucket(t *testing.T) {
	_, srv := start(t, map[string]Deployment{"d": {Model: "m", TPM: 1000}}) // 6 RPM: 1 per 10 s
	resp, _, _ := call(t, context.Background(), srv, chatPath, `{"messages":[],"max_tokens":1}`)
	if resp.StatusCode != 200 || resp.Header.Get("x-ratelimit-remaining-requests") != "0" {
		t.Fatalf("first: %d %v", resp.StatusCode, resp.Header)
	}
	resp, text, _ := call(t, context.Background(), srv, chatPath, `{"messages":[],"max_tokens":1}`)
	if resp.StatusCode != 429 || resp.Header.Get("x-ratelimit-reset-requests") == "" || !strings.Contains(text, "call rate limit") {
		t.Errorf("second: %d %v %s", resp.StatusCode, resp.Header, text)
	}
	if ra, _ := strconv.Atoi(resp.Header.Get("retry-after")); ra < 1 || ra > 10 {
		t.Errorf("retry-after %d", ra)
	}
}

func TestAuthAndBadRequests(t *testing.T) {
	s, srv := start(t, map[string]Deployment{"d": {Model: "m", ContextWindow: 100}})
	for _, tc := range []struct {
		name   string
		hdr    []string
		body   string
		status int
		want   string
	}{
		{"wrong key", []string{"api-key", "nope"}, `{"messages":[]}`, 401, "invalid subscription key"},
		{"no credential", []string{"api-key", ""}, `{"messages":[]}`, 401, "invalid subscription key"},
		{"empty bearer", []string{"api-key", "", "Authorization", "Bearer  "}, `{"messages":[]}`, 401, "PermissionDenied"},
		{"not JSON", nil, `hello`, 400, "BadRequest"},
		{"no messages", nil, `{}`, 400, "'messages' is a required property"},
		{"content filter", nil, `{"messages":[{"role":"user","content":"[[content_filter]]"}]}`, 400, `"code":"content_filter"`},
		{"context length", nil, `{"messages":[{"role":"user","content":"hi"}],"max_tokens":500}`, 400, "context_length_exceeded"},
		{"bearer", []string{"api-key", "", "Authorization", "Bearer tok"}, `{"messages":[]}`, 200, "chat.completion"},
	} {
		resp, body, _ := call(t, context.Background(), srv, chatPath, tc.body, tc.hdr...)
		if resp.StatusCode != tc.status || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s", tc.name, resp.StatusCode, body)
		}
	}
	if st := s.Stats()["d"]; st.Unauthorized != 3 || st.BadRequest != 4 || st.LastAuth != "bearer" {
		t.Errorf("stats %+v", st)
	}
	s2, srv2, _ := Start(Config{Deployments: map[string]Deployment{"d": {}}})
	defer srv2.Close()
	resp, _, _ := call(t, context.Background(), srv2, chatPath, `{"messages":[]}`, "api-key", "", "Authorization", "Bearer x")
	if resp.StatusCode != 401 || s2.Stats()["d"].Unauthorized != 1 {
		t.Errorf("bearer accepted without AcceptBearer")
	}
}

func TestFaults(t *testing.T) {
	s, srv := start(t, map[string]Deployment{"d": {Model: "m", CompletionTokens: 5}})
	chat := `{"messages":[{"role":"user","content":"hi"}]}`
	stream := `{"messages":[{"role":"user","content":"hi"}],"stream":true}`
	for _, code := range []string{"408", "500", "503"} {
		resp, body, _ := call(t, context.Background(), srv, chatPath, chat, "x-sim-fault", code)
		if strconv.Itoa(resp.StatusCode) != code || !strings.Contains(body, `"error"`) {
			t.Errorf("%s: %d %s", code, resp.StatusCode, body)
		}
	}
	if _, _, err := call(t, context.Background(), srv, chatPath, chat, "x-sim-fault", "reset"); err == nil {
		t.Errorf("reset: no client error")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, _, err := call(t, ctx, srv, chatPath, chat, "x-sim-fault", "hang"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hang: %v", err)
	}
	_, text, err := call(t, context.Background(), srv, chatPath, stream, "x-sim-fault", "cut")
	if err == nil || strings.Contains(text, "[DONE]") || len(events(text)) != 2 {
		t.Errorf("cut: %v %q", err, text)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	_, text, err = call(t, ctx2, srv, chatPath, stream, "x-sim-fault", "stall")
	if err == nil || len(events(text)) != 2 {
		t.Errorf("stall: %v %q", err, text)
	}
	_, text, _ = call(t, context.Background(), srv, chatPath, stream, "x-sim-fault", "malformed")
	if !strings.Contains(text, "data: {not json\n\n") || !strings.HasSuffix(text, "data: [DONE]\n\n") {
		t.Errorf("malformed: %q", text)
	}
	// slow-first-token: the headers come at once, the first event only after the delay.
	req, _ := http.NewRequest("POST", srv.URL+chatPath, strings.NewReader(stream))
	req.Header.Set("api-key", key)
	req.Header.Set("x-sim-fault", "slow-first-token:300ms")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	headersAt := time.Since(start)
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if headersAt > 200*time.Millisecond || time.Since(start) < 300*time.Millisecond {
		t.Errorf("slow-first-token: headers after %s, body after %s", headersAt, time.Since(start))
	}
	resp, body, _ := call(t, context.Background(), srv, chatPath, chat, "x-sim-fault", "bogus")
	if resp.StatusCode != 400 || !strings.Contains(body, "unknown fault") {
		t.Errorf("bogus fault: %d %s", resp.StatusCode, body)
	}
	if st := s.Stats()["d"]; st.Faulted != 9 {
		t.Errorf("faulted %d, want 9", st.Faulted)
	}

	// Per deployment, and changed at run time concurrently.
	s.SetFault("d", "503")
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _, _ := call(t, context.Background(), srv, chatPath, chat)
			if resp != nil && resp.StatusCode != 503 && resp.StatusCode != 200 {
				t.Errorf("status %d", resp.StatusCode)
			}
		}()
		if i == 4 {
			s.SetFault("d", "")
		}
	}
	wg.Wait()
	resp, _, _ = call(t, context.Background(), srv, chatPath, chat)
	if resp.StatusCode != 200 {
		t.Errorf("after clearing the fault: %d", resp.StatusCode)
	}
	if _, err := New(Config{Deployments: map[string]Deployment{"d": {Fault: "explode"}}}); err == nil {
		t.Errorf("unknown configured fault accepted")
	}
}

func TestLatency(t *testing.T) {
	_, srv := start(t, map[string]Deployment{"d": {Model: "m", TimeToFirstToken: Duration(100 * time.Millisecond), PerToken: Duration(20 * time.Millisecond), CompletionTokens: 5}})
	start := time.Now()
	call(t, context.Background(), srv, chatPath, `{"messages":[]}`)
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("non-streaming answer after %s, want >= 100ms + 5*20ms", d)
	}
	var cfg Deployment
	if err := json.Unmarshal([]byte(`{"timeToFirstToken":"150ms","perToken":25}`), &cfg); err != nil || cfg.TimeToFirstToken.d() != 150*time.Millisecond || cfg.PerToken.d() != 25*time.Millisecond {
		t.Errorf("duration JSON: %v %+v", err, cfg)
	}
}
