package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/tests/aoaisim"
)

func TestURLFamilies(t *testing.T) {
	swc := startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "gpt-4o-mini"}, "emb": {Model: "text-embedding-3-small"}, "inst": {Model: "gpt-35-turbo-instruct"}})
	regions := map[string]*region{"swc": swc}
	doc := newRouting().account("swc", swc).target("chat", "swc", "micro", 1).target("embed", "swc", "emb", 1).target("instruct", "swc", "inst", 1)
	gw := startGateway(t, doc.env(regions), doc.secrets(regions)...)

	for _, tc := range []struct {
		path, body, wantPath, wantModel string
		stream                          bool
	}{
		{"/openai/v1/chat/completions", `{"model":"chat","messages":[{"role":"user","content":"hi"}],"max_tokens":5}`, "/openai/v1/chat/completions", "micro", false},
		{"/openai/v1/chat/completions", `{"model":"chat","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stream":true}`, "/openai/v1/chat/completions", "micro", true},
		{"/openai/v1/completions", `{"model":"instruct","prompt":"hi","max_tokens":5}`, "/openai/v1/completions", "inst", false},
		{"/openai/v1/embeddings", `{"model":"embed","input":"hello"}`, "/openai/v1/embeddings", "emb", false},
		{"/openai/v1/responses", `{"model":"chat","input":"hi","max_output_tokens":5}`, "/openai/v1/responses", "micro", false},
		{"/openai/v1/responses", `{"model":"chat","input":"hi","max_output_tokens":5,"stream":true}`, "/openai/v1/responses", "micro", true},
		{"/openai/responses?api-version=2025-04-01-preview", `{"model":"chat","input":"hi"}`, "/openai/responses", "micro", false},
		{"/openai/deployments/embed/embeddings?api-version=2024-10-21", `{"input":["a","b"]}`, "/openai/deployments/emb/embeddings", "", false},
	} {
		t.Run(tc.path, func(t *testing.T) {
			req, _ := http.NewRequest("POST", gw.URL+tc.path, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
			dep := tc.wantModel
			if dep == "" {
				dep = "emb"
			}
			st := swc.Sim.Stats()[dep]
			if st.LastPath != tc.wantPath {
				t.Errorf("backend path %q, want %q", st.LastPath, tc.wantPath)
			}
			if tc.wantModel != "" && st.LastModel != tc.wantModel {
				t.Errorf("backend model %q, want %q", st.LastModel, tc.wantModel)
			}
			if tc.stream != strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				t.Errorf("content type %q", resp.Header.Get("Content-Type"))
			}
		})
	}
	// An operation the deployment's model does not serve is the caller's mistake: Azure's 400
	// comes back unchanged, from the one target tried.
	t.Run("embeddings on a chat deployment", func(t *testing.T) {
		resp, err := http.Post(gw.URL+"/openai/v1/embeddings", "application/json", strings.NewReader(`{"model":"chat","input":"hello"}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(b), `"code":"OperationNotSupported"`) ||
			!strings.Contains(string(b), "The embeddings operation does not work with the specified model, gpt-4o-mini.") ||
			resp.Header.Get("x-served-by") != "swc/micro" || resp.Header.Get("x-gateway-attempts") != "1" {
			t.Errorf("%d %v %s", resp.StatusCode, resp.Header, b)
		}
	})
}

// TestHostileInput sends requests that must be refused cleanly (raw, so that no client cleans
// them up first), and checks the backend never saw them and the process stays healthy.
func TestHostileInput(t *testing.T) {
	swc := startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "m"}})
	regions := map[string]*region{"swc": swc}
	doc := newRouting().account("swc", swc).target("chat", "swc", "micro", 1)
	doc.Limits = map[string]any{"maxRequestBodyBytes": 4096}
	gw := startGateway(t, doc.env(regions), doc.secrets(regions)...)
	addr := strings.TrimPrefix(gw.URL, "http://")

	big := `{"messages":[{"role":"user","content":"` + strings.Repeat("x", 5000) + `"}]}`
	for _, tc := range []struct {
		name, raw string
		want      int
		// netHTTP: refused by Go's HTTP server before the gateway sees it, with a plain body.
		netHTTP bool
	}{
		{"no body on v1", post("/openai/v1/chat/completions", "", ""), 400, false},
		{"not JSON on v1", post("/openai/v1/chat/completions", "", "hello"), 400, false},
		{"over the size limit", post("/openai/deployments/chat/chat/completions?api-version=1", "", big), 413, false},
		{"over the size limit, chunked", "POST /openai/deployments/chat/chat/completions?api-version=1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(big), big), 413, false},
		{"unknown logical name", post("/openai/deployments/gpt-5/chat/completions?api-version=1", "", "{}"), 404, false},
		{"outside /openai", post("/admin", "", "{}"), 404, false},
		{"disallowed method", "PUT /openai/deployments/chat/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", 405, false},
		{"CR in a header value", "POST /openai/deployments/chat/chat/completions HTTP/1.1\r\nHost: x\r\nX-Evil: a\rb\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", 400, true},
		{"dot-dot", post("/openai/deployments/chat/../../../deployments/other/chat/completions", "", "{}"), 400, false},
		{"encoded slash", post("/openai/deployments/chat%2F..%2Fother/chat/completions", "", "{}"), 400, false},
		{"encoded dots", post("/openai/deployments/chat/%2e%2e/%2e%2e/x", "", "{}"), 400, false},
		{"absolute URI to another host", strings.Replace(post("/openai/deployments/chat/chat/completions?api-version=1", "", `{"messages":[{"role":"user","content":"hi"}]}`), "POST /", "POST http://evil.example/", 1), 200, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := swc.Sim.Stats()["micro"].Requests
			status, body := rawRequest(t, addr, tc.raw)
			if status != tc.want {
				t.Fatalf("status %d, want %d: %s", status, tc.want, body)
			}
			if status >= 400 && !tc.netHTTP {
				var e struct {
					Error struct{ Code, Message string } `json:"error"`
				}
				if json.Unmarshal([]byte(body), &e) != nil || e.Error.Code == "" || e.Error.Message == "" {
					t.Errorf("not the Azure error shape: %s", body)
				}
			}
			after := swc.Sim.Stats()["micro"].Requests
			if status != 200 && after != before {
				t.Errorf("a refused request reached the backend")
			}
		})
	}
	// The absolute-URI request went to the configured backend, never elsewhere: the simulator
	// counted it above. The process is still healthy after all of it.
	resp, err := http.Get(gw.URL + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz after hostile input: %v %v", err, resp)
	}
	resp.Body.Close()
}

func post(path, headers, body string) string {
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\nConnection: close\r\n\r\n%s", path, headers, len(body), body)
}

func rawRequest(t *testing.T, addr, raw string) (int, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no HTTP response: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestLoadShedding: past its concurrency limit an instance answers 503 with retry-after at
// once, and serves again when the load is gone.
func TestLoadShedding(t *testing.T) {
	swc := startRegion(t, "swc", map[string]aoaisim.Deployment{"slow": {Model: "m", TimeToFirstToken: aoaisim.Duration(700 * time.Millisecond)}})
	regions := map[string]*region{"swc": swc}
	doc := newRouting().account("swc", swc).target("chat", "swc", "slow", 1)
	doc.Limits = map[string]any{"maxConcurrentRequests": 2}
	gw := startGateway(t, doc.env(regions), doc.secrets(regions)...)

	done := make(chan int, 2)
	for i := 0; i < 2; i++ {
		go func() {
			resp, err := http.Post(gw.URL+"/openai/deployments/chat/chat/completions?api-version=1", "application/json", strings.NewReader(`{"messages":[]}`))
			if err != nil {
				done <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			done <- resp.StatusCode
		}()
	}
	waitFor(t, "two requests in flight", 5*time.Second, func() bool { return swc.Sim.Stats()["slow"].Requests == 2 })
	start := time.Now()
	resp, body := chat(t, gw.URL, "chat", `{"messages":[]}`)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || !strings.Contains(body, "Overloaded") || time.Since(start) > 500*time.Millisecond {
		t.Errorf("over the limit: %d %v %s after %s", resp.StatusCode, resp.Header, body, time.Since(start))
	}
	if a, b := <-done, <-done; a != 200 || b != 200 {
		t.Errorf("the requests within the limit: %d %d", a, b)
	}
	if resp, _ := chat(t, gw.URL, "chat", `{"messages":[]}`); resp.StatusCode != 200 {
		t.Errorf("after the load: %d", resp.StatusCode)
	}
	if r, err := http.Get(gw.URL + "/healthz"); err != nil || r.StatusCode != 200 {
		t.Errorf("healthz: %v %v", err, r)
	}
}
