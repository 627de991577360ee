package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/tests/aoaisim"
)

const callerKey = "caller-key-not-for-backends"

func TestFunctionsFiles(t *testing.T) {
	var host struct {
		CustomHandler struct {
			Description struct {
				DefaultExecutablePath string `json:"defaultExecutablePath"`
			} `json:"description"`
			EnableProxyingHttpRequest   bool  `json:"enableProxyingHttpRequest"`
			EnableForwardingHttpRequest *bool `json:"enableForwardingHttpRequest"`
		} `json:"customHandler"`
		Extensions struct {
			HTTP struct {
				RoutePrefix *string `json:"routePrefix"`
			} `json:"http"`
		} `json:"extensions"`
	}
	readJSON(t, "host.json", &host)
	if host.CustomHandler.Description.DefaultExecutablePath != "bin/handler" {
		t.Errorf("defaultExecutablePath %q", host.CustomHandler.Description.DefaultExecutablePath)
	}
	if !host.CustomHandler.EnableProxyingHttpRequest || host.CustomHandler.EnableForwardingHttpRequest != nil {
		t.Errorf("host.json must proxy (enableProxyingHttpRequest) and not use the buffering forwarder")
	}
	if p := host.Extensions.HTTP.RoutePrefix; p == nil || *p != "" {
		t.Errorf("routePrefix must be \"\"")
	}
	var fn struct {
		Bindings []map[string]any `json:"bindings"`
	}
	readJSON(t, "function/function.json", &fn)
	if len(fn.Bindings) != 2 {
		t.Fatalf("bindings: %v", fn.Bindings)
	}
	in, out := fn.Bindings[0], fn.Bindings[1]
	if in["type"] != "httpTrigger" || in["route"] != "{*path}" || in["methods"] != nil || out["type"] != "http" {
		t.Errorf("function.json bindings: %v", fn.Bindings)
	}
	var ls struct {
		Values map[string]string `json:"Values"`
	}
	readJSON(t, "local.settings.sample.json", &ls)
	if ls.Values["FUNCTIONS_WORKER_RUNTIME"] != "custom" || ls.Values["GATEWAY_CONFIG"] == "" {
		t.Errorf("local.settings.sample.json values: %v", ls.Values)
	}
}

func readJSON(t *testing.T, rel string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(), rel))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
}

func TestBadConfigurationStopsWithOneMessage(t *testing.T) {
	secret := "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
	cmd := exec.Command(handlerBin)
	cmd.Env = []string{
		"FUNCTIONS_CUSTOMHANDLER_PORT=" + freePort(t),
		`GATEWAY_CONFIG={"accounts":{"a":{"endpoint":"http://10.0.0.1","auth":{"keyEnv":"NOPE"}}},"deployments":{"chat":[{"account":"b","deployment":"d","priority":0}],"empty":[]},"clients":{},"extra":1}`,
		"AzureWebJobsStorage=DefaultEndpointsProtocol=https;AccountKey=" + secret,
		"GATEWAY_STATE_TABLE=1bad",
	}
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 {
		t.Fatalf("want exit 1, got %v: %s", err, out)
	}
	s := string(out)
	for _, want := range []string{"plain http", "unknown account \"b\"", "priority: 0", "deployments.empty: the target list is empty", "extra: unknown field", "clients: no caller authentication", "AzureWebJobsStorage", "GATEWAY_STATE_TABLE", "NOPE is not set"} {
		if !strings.Contains(s, want) {
			t.Errorf("message lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, secret) || strings.Contains(s, "panic") || strings.Contains(s, "goroutine") {
		t.Errorf("message leaks a secret or a panic:\n%s", s)
	}
}

// twoRegions: a primary "micro" with 1,000 TPM and a 40,000 TPM secondary. The primary's token
// quota (a rolling minute: about nine smallChat requests) is what runs out, not its request
// rate, whose fixed 10 s buckets could free it again in the middle of a test.
func twoRegions(t *testing.T) (*gatewayProc, *region, *region) {
	t.Helper()
	swc := startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "gpt-4o-mini", TPM: 1000, RPM: 6000}})
	frc := startRegion(t, "frc", map[string]aoaisim.Deployment{"big": {Model: "gpt-4o-mini", TPM: 40000}})
	regions := map[string]*region{"swc": swc, "frc": frc}
	doc := newRouting().account("swc", swc).account("frc", frc).
		target("chat", "swc", "micro", 1).target("chat", "frc", "big", 2)
	// These tests are about what a 429 does: the primary is not passed over before it.
	doc.Throttle = map[string]any{"routeByRemaining": false}
	gw := startGateway(t, doc.env(regions), append(doc.secrets(regions), callerKey)...)
	return gw, swc, frc
}

const smallChat = `{"messages":[{"role":"user","content":"Say hello in a few words, please."}],"max_tokens":100}`

func TestThrottledPrimaryFailsOverAndIsSkipped(t *testing.T) {
	gw, swc, frc := twoRegions(t)
	var servedBy []string
	for i := 0; i < 20; i++ {
		resp, body := chat(t, gw.URL, "chat", smallChat)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
		var c struct {
			Choices []struct {
				Message struct{ Content string } `json:"message"`
			} `json:"choices"`
		}
		if json.Unmarshal([]byte(body), &c) != nil || len(c.Choices) != 1 || c.Choices[0].Message.Content == "" {
			t.Fatalf("request %d: incomplete answer %s", i, body)
		}
		servedBy = append(servedBy, resp.Header.Get("x-served-by"))
	}
	if servedBy[0] != "swc/micro" || servedBy[19] != "frc/big" {
		t.Fatalf("served by %v", servedBy)
	}
	st := swc.Sim.Stats()["micro"]
	if st.Throttled != 1 {
		t.Errorf("primary answered %d 429s; after the first the gateway must skip it", st.Throttled)
	}
	if frc.Sim.Stats()["big"].Served == 0 {
		t.Errorf("secondary served nothing")
	}
	if got := frc.Sim.Stats()["big"].LastAuth; got != "api-key" {
		t.Errorf("secondary auth %q", got)
	}

	// One JSON line per request names who served it and every attempt; the failover's line
	// says the primary was throttled. Request lines are flushed within 100 ms.
	time.Sleep(300 * time.Millisecond)
	var sawFailover, sawSkip bool
	for _, line := range strings.Split(gw.stdout.String(), "\n") {
		var rec struct {
			Msg      string `json:"msg"`
			ServedBy string `json:"servedBy"`
			Attempts int    `json:"attempts"`
			Tried    []struct {
				Target, Outcome string
				Status          int
			} `json:"tried"`
			Skipped []struct {
				Target, Why string
				ForMs       float64
			} `json:"skipped"`
			Usage struct{ Total int } `json:"usage"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != "request" {
			continue
		}
		if rec.ServedBy == "" || rec.Usage.Total == 0 {
			t.Errorf("request line without servedBy or usage: %s", line)
		}
		if rec.Attempts == 2 && len(rec.Tried) == 2 && rec.Tried[0].Outcome == "throttled" && rec.Tried[0].Status == 429 && rec.Tried[1].Outcome == "served" {
			sawFailover = true
		}
		if rec.Attempts == 1 && len(rec.Skipped) == 1 && rec.Skipped[0].Target == "swc/micro" && rec.Skipped[0].Why == "throttled" && rec.Skipped[0].ForMs > 0 {
			sawSkip = true
		}
	}
	if !sawFailover || !sawSkip {
		t.Errorf("no request line records the failover (%v), or the primary skipped afterwards (%v):\n%s", sawFailover, sawSkip, gw.stdout.String())
	}

	// /status shows the primary throttled with its deadline.
	resp, err := http.Get(gw.URL + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var status struct {
		Deployments map[string][]struct {
			State struct {
				Target         string     `json:"target"`
				State          string     `json:"state"`
				ThrottledUntil *time.Time `json:"throttledUntil"`
			} `json:"state"`
		} `json:"deployments"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&status); err != nil {
		t.Fatal(err)
	}
	primary := status.Deployments["chat"][0].State
	if primary.Target != "swc/micro" || primary.State != "throttled" || primary.ThrottledUntil == nil || !primary.ThrottledUntil.After(time.Now()) {
		t.Errorf("status of primary: %+v", primary)
	}
}

func TestStreamingThroughGateway(t *testing.T) {
	gw, _, frc := twoRegions(t)
	body := `{"messages":[{"role":"user","content":"hi"}],"max_tokens":10,"stream":true,"stream_options":{"include_usage":true}}`
	resp, text := chat(t, gw.URL, "chat", body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	// The same request straight to the simulator: the gateway must pass the same events.
	req, _ := http.NewRequest("POST", frc.Srv.URL+"/openai/deployments/big/chat/completions?api-version=2024-10-21", strings.NewReader(body))
	req.Header.Set("api-key", frc.Key)
	dresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	direct, _ := io.ReadAll(dresp.Body)
	dresp.Body.Close()
	if dresp.StatusCode != 200 {
		t.Fatalf("direct: %d %s", dresp.StatusCode, direct)
	}
	if a, b := shape(text), shape(string(direct)); a != b {
		t.Errorf("stream through the gateway differs from direct:\n%s\n%s", a, b)
	}
	if !strings.HasSuffix(text, "data: [DONE]\n\n") || !strings.Contains(text, `"usage"`) {
		t.Errorf("stream: %q", text)
	}
}

// shape reduces a stream to its event kinds, ignoring ids and timestamps.
func shape(stream string) string {
	var kinds []string
	for _, ev := range strings.Split(strings.TrimSpace(stream), "\n\n") {
		data := strings.TrimPrefix(ev, "data: ")
		switch {
		case data == "[DONE]":
			kinds = append(kinds, "done")
		case strings.Contains(data, `"prompt_filter_results"`):
			kinds = append(kinds, "filter")
		case strings.Contains(data, `"role":"assistant"`):
			kinds = append(kinds, "role")
		case strings.Contains(data, `"finish_reason":"`):
			kinds = append(kinds, "finish")
		case strings.Contains(data, `"usage":{`):
			kinds = append(kinds, "usage")
		case strings.Contains(data, `"content":`):
			kinds = append(kinds, "content")
		default:
			kinds = append(kinds, "other")
		}
	}
	return strings.Join(kinds, ",")
}

func TestFaultsFailOver(t *testing.T) {
	swc := startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "m"}})
	frc := startRegion(t, "frc", map[string]aoaisim.Deployment{"big": {Model: "m"}})
	regions := map[string]*region{"swc": swc, "frc": frc}
	doc := newRouting().account("swc", swc).account("frc", frc).
		target("chat", "swc", "micro", 1).target("chat", "frc", "big", 2)
	doc.Timeouts = map[string]any{"firstByte": "700ms", "perOutputToken": "1ms", "streamIdle": "700ms"}
	doc.Circuit = map[string]any{"failures": 100} // keep the primary in play for every case
	gw := startGateway(t, doc.env(regions), doc.secrets(regions)...)

	for _, tc := range []struct {
		fault  string
		stream bool
	}{
		{"408", false}, {"500", false}, {"503", true}, {"reset", false}, {"reset", true},
		{"hang", false}, {"hang", true}, {"slow-first-token:3s", true},
	} {
		t.Run(tc.fault, func(t *testing.T) {
			swc.Sim.SetFault("micro", tc.fault)
			defer swc.Sim.SetFault("micro", "")
			body := `{"messages":[{"role":"user","content":"hi"}],"max_tokens":5}`
			if tc.stream {
				body = `{"messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stream":true}`
			}
			start := time.Now()
			resp, text := chat(t, gw.URL, "chat", body)
			if resp.StatusCode != 200 || resp.Header.Get("x-served-by") != "frc/big" || resp.Header.Get("x-gateway-attempts") != "2" {
				t.Fatalf("%d %s %s: %s", resp.StatusCode, resp.Header.Get("x-served-by"), resp.Header.Get("x-gateway-attempts"), text)
			}
			if tc.stream && !strings.HasSuffix(text, "data: [DONE]\n\n") {
				t.Errorf("incomplete stream %q", text)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %s", d)
			}
		})
	}

	t.Run("cut mid-stream", func(t *testing.T) {
		swc.Sim.SetFault("micro", "cut")
		defer swc.Sim.SetFault("micro", "")
		resp, text := chat(t, gw.URL, "chat", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stream":true}`)
		if resp.StatusCode != 200 || resp.Header.Get("x-served-by") != "swc/micro" {
			t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("x-served-by"))
		}
		if !strings.Contains(text, `"StreamInterrupted"`) || strings.Contains(text, "[DONE]") {
			t.Errorf("a cut stream must end with an in-band error: %q", text)
		}
	})
	t.Run("stall mid-stream", func(t *testing.T) {
		swc.Sim.SetFault("micro", "stall")
		defer swc.Sim.SetFault("micro", "")
		_, text := chat(t, gw.URL, "chat", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stream":true}`)
		if !strings.Contains(text, `"StreamInterrupted"`) || strings.Contains(text, "[DONE]") {
			t.Errorf("a stalled stream must end with an in-band error: %q", text)
		}
	})
	t.Run("malformed chunk ends the stream in-band", func(t *testing.T) {
		// Dropping it would lose its text while the answer still looked complete.
		swc.Sim.SetFault("micro", "malformed")
		defer swc.Sim.SetFault("micro", "")
		_, text := chat(t, gw.URL, "chat", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stream":true}`)
		if strings.Contains(text, "{not json") || strings.Contains(text, "[DONE]") || !strings.Contains(text, `"StreamInterrupted"`) {
			t.Errorf("stream %q", text)
		}
	})
}

func TestGracefulShutdownFinishesStreams(t *testing.T) {
	swc := startRegion(t, "swc", map[string]aoaisim.Deployment{"slow": {Model: "m", PerToken: aoaisim.Duration(40 * time.Millisecond), CompletionTokens: 25}})
	regions := map[string]*region{"swc": swc}
	doc := newRouting().account("swc", swc).target("chat", "swc", "slow", 1)
	gw := startGateway(t, doc.env(regions), doc.secrets(regions)...)

	req, _ := http.NewRequestWithContext(context.Background(), "POST", gw.URL+"/openai/deployments/chat/chat/completions?api-version=2024-10-21",
		strings.NewReader(`{"messages":[{"role":"user","content":"hi"}],"stream":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if err := gw.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(r)
	if !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Errorf("in-flight stream cut by shutdown: %q", rest)
	}
	select {
	case <-gw.done:
	case <-time.After(10 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	if gw.err != nil {
		t.Errorf("exit: %v", gw.err)
	}
	if _, err := http.Get(gw.URL + "/"); err == nil {
		t.Errorf("still accepting after shutdown")
	}
}

func TestHealthAndFrontDoor(t *testing.T) {
	swc := startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "m"}})
	regions := map[string]*region{"swc": swc}
	doc := newRouting().account("swc", swc).target("chat", "swc", "micro", 1)
	env := doc.env(regions)
	env["GATEWAY_FRONTDOOR_ID"] = "5c2bb0e0-6d48-4d4c-9b55-6f0b1b6a1c11"
	gw := startGateway(t, env, doc.secrets(regions)...)

	for _, method := range []string{"GET", "HEAD"} {
		req, _ := http.NewRequest(method, gw.URL+"/healthz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s /healthz: %v %v", method, err, resp)
		}
		resp.Body.Close()
	}
	resp, body := chat(t, gw.URL, "chat", smallChat)
	if resp.StatusCode != 403 || !strings.Contains(body, `"error"`) {
		t.Errorf("without x-azure-fdid: %d %s", resp.StatusCode, body)
	}
	resp, body = chat(t, gw.URL, "chat", smallChat, "X-Azure-FDID", "00000000-0000-0000-0000-000000000000")
	if resp.StatusCode != 403 {
		t.Errorf("wrong x-azure-fdid: %d %s", resp.StatusCode, body)
	}
	resp, body = chat(t, gw.URL, "chat", smallChat, "X-Azure-FDID", env["GATEWAY_FRONTDOOR_ID"])
	if resp.StatusCode != 200 {
		t.Errorf("right x-azure-fdid: %d %s", resp.StatusCode, body)
	}
	if swc.Sim.Stats()["micro"].Requests != 1 {
		t.Errorf("refused requests reached the backend")
	}
}
