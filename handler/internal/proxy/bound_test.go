package proxy

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/config"
)

// fakeAccount is an Azure OpenAI account that keeps stateful resources: responses (create,
// get, delete; a turn naming a previous response it does not hold fails as Azure's does),
// files and batches. throttle makes every call answer 429.
type fakeAccount struct {
	name     string
	mu       sync.Mutex
	held     map[string]bool
	n        int
	throttle bool
	waitMs   string // the 429's retry-after-ms; default 3000
	gzip     bool
	calls    []string // "METHOD path" of every call
}

func newFakeAccount(t *testing.T, name string) (*fakeAccount, *backend) {
	a := &fakeAccount{name: name, held: map[string]bool{}}
	return a, newBackend(t, a.serve)
}

func (a *fakeAccount) hold(id string) { a.mu.Lock(); a.held[id] = true; a.mu.Unlock() }

func (a *fakeAccount) seen() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.calls...)
}

func (a *fakeAccount) serve(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, r.Method+" "+r.URL.Path)
	answer := func(status int, v any) {
		b, _ := json.Marshal(v)
		w.Header().Set("Content-Type", "application/json")
		if a.gzip {
			var z bytes.Buffer
			zw := gzip.NewWriter(&z)
			zw.Write(b)
			zw.Close()
			b = z.Bytes()
			w.Header().Set("Content-Encoding", "gzip")
		}
		w.WriteHeader(status)
		w.Write(b)
	}
	if a.throttle {
		wait := a.waitMs
		if wait == "" {
			wait = "3000"
		}
		w.Header().Set("Retry-After-Ms", wait)
		answer(429, map[string]any{"error": map[string]string{"code": "429", "message": "Rate limit"}})
		return
	}
	body, _ := io.ReadAll(r.Body)
	p := strings.TrimPrefix(r.URL.Path, "/openai/v1/")
	switch {
	case r.Method == "POST" && p == "responses":
		var req struct {
			Model    string `json:"model"`
			Previous string `json:"previous_response_id"`
			Stream   bool   `json:"stream"`
		}
		json.Unmarshal(body, &req)
		if req.Previous != "" && !a.held[req.Previous] {
			answer(400, map[string]any{"error": map[string]string{"code": "previous_response_not_found", "message": "Previous response with id '" + req.Previous + "' not found."}})
			return
		}
		a.n++
		id := fmt.Sprintf("resp_%s%d", a.name, a.n)
		a.held[id] = true
		if req.Stream {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":%q,\"model\":%q}}\n\n", id, req.Model)
			fmt.Fprintf(w, "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":%q}}\n\n", id)
			return
		}
		answer(200, map[string]any{"id": id, "object": "response", "model": req.Model, "previous_response_id": req.Previous})
	case strings.HasPrefix(p, "responses/"), strings.HasPrefix(p, "files/"):
		id := strings.Split(p, "/")[1]
		if !a.held[id] {
			answer(404, map[string]any{"error": map[string]string{"code": "not_found", "message": "No such object: " + id}})
			return
		}
		if r.Method == "DELETE" {
			delete(a.held, id)
		}
		answer(200, map[string]any{"id": id, "account": a.name})
	case r.Method == "POST" && p == "files":
		a.n++
		id := fmt.Sprintf("file-%s%d", a.name, a.n)
		a.held[id] = true
		answer(200, map[string]any{"id": id, "object": "file", "bytes": len(body)})
	case r.Method == "POST" && p == "batches":
		var req struct {
			Input string `json:"input_file_id"`
		}
		json.Unmarshal(body, &req)
		if !a.held[req.Input] {
			answer(400, map[string]any{"error": map[string]string{"code": "invalid_request", "message": "no such file"}})
			return
		}
		a.n++
		answer(200, map[string]any{"id": fmt.Sprintf("batch_%s%d", a.name, a.n), "input_file_id": req.Input})
	default:
		answer(404, map[string]any{"error": map[string]string{"code": "404", "message": "Resource not found"}})
	}
}

func decodeID(t *testing.T, body string) string {
	t.Helper()
	var v struct{ ID string }
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("answer %q: %v", body, err)
	}
	return v.ID
}

func (tg *testGateway) do(t *testing.T, method, path, contentType string, body []byte) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, tg.srv.URL+path, bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestStateBoundRequests: requests that build on state held in one account go there, before
// any preference order, whether the owner was learned from the creating answer (plain, stream,
// compressed) or found by asking the accounts; when the owner is throttled the caller is told
// why the request cannot move, and the other account never sees it.
func TestStateBoundRequests(t *testing.T) {
	swc, b1 := newFakeAccount(t, "swc")
	frc, b2 := newFakeAccount(t, "frc")
	tg := newGateway(t, func(r *config.Routing) { r.DefaultDeployment = "chat" }, b1, b2)
	const v1 = "/openai/v1/responses"

	// Turn 1 goes to the first target; turn 2 must follow it there even when the first target
	// is not the first choice any more.
	resp, body := tg.post(t, v1, `{"model":"chat","input":"hi"}`)
	first := decodeID(t, body)
	if resp.StatusCode != 200 || resp.Header.Get("x-served-by") != "a1/d1" {
		t.Fatalf("turn 1: %d %s %s", resp.StatusCode, resp.Header.Get("x-served-by"), body)
	}
	resp, body = tg.post(t, v1, fmt.Sprintf(`{"model":"chat","previous_response_id":%q,"input":"again"}`, first))
	if resp.StatusCode != 200 || resp.Header.Get("x-served-by") != "a1/d1" {
		t.Fatalf("turn 2: %d %s %s", resp.StatusCode, resp.Header.Get("x-served-by"), body)
	}

	t.Run("the owner throttled: 429 that says why, nothing sent elsewhere", func(t *testing.T) {
		swc.mu.Lock()
		swc.throttle = true
		swc.mu.Unlock()
		defer func() { swc.mu.Lock(); swc.throttle = false; swc.mu.Unlock() }()
		before := len(frc.seen())
		resp, body := tg.post(t, v1, fmt.Sprintf(`{"model":"chat","previous_response_id":%q,"input":"x"}`, first))
		var e errorShape
		json.Unmarshal([]byte(body), &e)
		if resp.StatusCode != 429 || e.Error.Code != "StateOwnerThrottled" || resp.Header.Get("Retry-After") == "" ||
			!strings.Contains(e.Error.Message, first) || !strings.Contains(e.Error.Message, `"a1"`) {
			t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, body)
		}
		// Now a1/d1 is marked throttled: the next turn is refused at once, still not moved.
		resp, body = tg.post(t, v1, fmt.Sprintf(`{"model":"chat","previous_response_id":%q,"input":"x"}`, first))
		if resp.StatusCode != 429 || !strings.Contains(body, "StateOwnerThrottled") {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		if got := frc.seen()[before:]; len(got) != 0 {
			t.Fatalf("the other account was called: %v", got)
		}
		// A request bound to nothing still fails over.
		resp, _ = tg.post(t, v1, `{"model":"chat","input":"new"}`)
		if resp.StatusCode != 200 || resp.Header.Get("x-served-by") != "a2/d2" {
			t.Fatalf("unbound request: %d %s", resp.StatusCode, resp.Header.Get("x-served-by"))
		}
	})
}

func TestStateOwnerFoundByAsking(t *testing.T) {
	swc, b1 := newFakeAccount(t, "swc")
	frc, b2 := newFakeAccount(t, "frc")
	frc.hold("resp_made_elsewhere") // by another gateway instance, say, before it could share it
	tg := newGateway(t, nil, b1, b2)
	resp, body := tg.post(t, "/openai/v1/responses", `{"model":"chat","previous_response_id":"resp_made_elsewhere"}`)
	if resp.StatusCode != 200 || resp.Header.Get("x-served-by") != "a2/d2" {
		t.Fatalf("%d %s %s", resp.StatusCode, resp.Header.Get("x-served-by"), body)
	}
	if got := strings.Join(swc.seen(), ","); got != "GET /openai/v1/responses/resp_made_elsewhere" {
		t.Errorf("a1 saw %s; it should only have been asked, with a GET", got)
	}
	// Once found, it is remembered: no more asking.
	tg.post(t, "/openai/v1/responses", `{"model":"chat","previous_response_id":"resp_made_elsewhere"}`)
	if n := len(swc.seen()); n != 1 {
		t.Errorf("a1 was asked again: %v", swc.seen())
	}
	// An id nobody holds goes where it would anyway, and the answer is Azure's own.
	resp, body = tg.post(t, "/openai/v1/responses", `{"model":"chat","previous_response_id":"resp_nowhere"}`)
	if resp.StatusCode != 400 || !strings.Contains(body, "previous_response_not_found") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}

func TestCallsOnStoredResources(t *testing.T) {
	swc, b1 := newFakeAccount(t, "swc")
	frc, b2 := newFakeAccount(t, "frc")
	frc.gzip = true
	tg := newGateway(t, func(r *config.Routing) { r.DefaultDeployment = "chat" }, b1, b2)

	// A stream's response id is learned from its first events.
	resp, body := tg.post(t, "/openai/v1/responses", `{"model":"chat","stream":true}`)
	if resp.StatusCode != 200 || !strings.Contains(body, "response.created") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	streamed := strings.Split(strings.Split(body, `"id":"`)[1], `"`)[0]
	for _, m := range []string{"GET", "DELETE"} {
		resp, body = tg.do(t, m, "/openai/v1/responses/"+streamed, "", nil)
		if resp.StatusCode != 200 || resp.Header.Get("x-served-by") != "a1" || !strings.Contains(body, `"account":"swc"`) {
			t.Fatalf("%s: %d %s %s", m, resp.StatusCode, resp.Header.Get("x-served-by"), body)
		}
	}
	// Deleted: the owner's 404 is the answer (no other account could know better).
	resp, body = tg.do(t, "GET", "/openai/v1/responses/"+streamed, "", nil)
	if resp.StatusCode != 404 || !strings.Contains(body, "No such object") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	// An id no account holds.
	resp, body = tg.do(t, "GET", "/openai/v1/responses/resp_nowhere", "", nil)
	if resp.StatusCode != 404 || !strings.Contains(body, `"code":"NotFound"`) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}

	// A file is created on the default deployment's first available account (a1 throttled:
	// a2), its owner learned from a compressed answer; its batch follows it there.
	swc.mu.Lock()
	swc.throttle, swc.waitMs = true, "1"
	swc.mu.Unlock()
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", "in.jsonl")
	fw.Write([]byte(`{"custom_id":"1"}` + "\n"))
	mw.Close()
	resp, body = tg.do(t, "POST", "/openai/v1/files", mw.FormDataContentType(), form.Bytes())
	if resp.StatusCode != 200 || resp.Header.Get("x-served-by") != "a2" {
		t.Fatalf("file: %d %s %q", resp.StatusCode, resp.Header.Get("x-served-by"), body)
	}
	// (Go's client asked for gzip and decoded the answer; the gateway passed it compressed.)
	if !resp.Uncompressed {
		t.Fatal("the file's answer was not compressed: the case is not exercised")
	}
	file := decodeID(t, body)
	swc.mu.Lock()
	swc.throttle = false
	swc.mu.Unlock()
	time.Sleep(10 * time.Millisecond) // a1's 1 ms wait is over: it is the first choice again
	resp, body = tg.post(t, "/openai/v1/batches", fmt.Sprintf(`{"input_file_id":%q,"endpoint":"/v1/chat/completions","completion_window":"24h"}`, file))
	if resp.StatusCode != 200 || resp.Header.Get("x-served-by") != "a2" {
		t.Fatalf("batch: %d %s %q", resp.StatusCode, resp.Header.Get("x-served-by"), body)
	}
}

func TestModelsList(t *testing.T) {
	tg := newGateway(t, nil, newBackend(t, jsonAnswer(200, okBody)))
	resp, body := tg.do(t, "GET", "/openai/v1/models", "", nil)
	if resp.StatusCode != 200 || body != `{"object":"list","data":[{"id":"chat","object":"model","created":0,"owned_by":"aoai-gateway"}]}` {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	resp, body = tg.do(t, "GET", "/openai/models/chat", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `"id":"chat"`) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	resp, _ = tg.do(t, "GET", "/openai/v1/models/other", "", nil)
	if resp.StatusCode != 404 {
		t.Fatalf("%d", resp.StatusCode)
	}
}

// TestMultipartModelRewritten: the v1 audio and image edit calls name the deployment in a form
// field; it is rewritten like a JSON body's model, every other byte as it came.
func TestMultipartModelRewritten(t *testing.T) {
	b := newBackend(t, jsonAnswer(200, `{"text":"ok"}`))
	tg := newGateway(t, nil, b)
	audio := bytes.Repeat([]byte{0, 1, 2, 0xff, '\r', '\n', '-', '-'}, 300_000) // 2.4 MB, boundary-like bytes inside
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	fw, _ := mw.CreateFormFile("file", "a.wav")
	fw.Write(audio)
	mw.WriteField("model", "chat")
	mw.WriteField("language", "en")
	mw.Close()
	resp, body := tg.do(t, "POST", "/openai/v1/audio/transcriptions", mw.FormDataContentType(), form.Bytes())
	if resp.StatusCode != 200 || body != `{"text":"ok"}` {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	sent := []byte(b.requests()[0].body)
	want := bytes.Replace(form.Bytes(), []byte("\r\n\r\nchat\r\n"), []byte("\r\n\r\nd1\r\n"), 1)
	if !bytes.Equal(sent, want) {
		t.Fatalf("the backend got %d bytes that differ from the caller's beyond the model (%d)", len(sent), len(want))
	}
	mr := multipart.NewReader(bytes.NewReader(sent), mw.Boundary())
	f, _ := mr.ReadForm(10 << 20)
	if f == nil || f.Value["model"][0] != "d1" || f.Value["language"][0] != "en" {
		t.Fatalf("form %+v", f)
	}
	// A form without a model is refused with a clear error.
	var bare bytes.Buffer
	mw = multipart.NewWriter(&bare)
	mw.WriteField("language", "en")
	mw.Close()
	resp, body = tg.do(t, "POST", "/openai/v1/audio/transcriptions", mw.FormDataContentType(), bare.Bytes())
	if resp.StatusCode != 400 || !strings.Contains(body, `no \"model\" field`) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}
