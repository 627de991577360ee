package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/aoai-failover/gateway/tests/aoaisim"
	"github.com/aoai-failover/gateway/tests/funchost"
	"github.com/aoai-failover/gateway/tests/testio"
)

// The packaged app (infra/pack -stage) run under the stand-in Functions host
// (tests/funchost), reached only through the host, the way Azure runs it.

var (
	packOnce sync.Once
	packDir  string
	packErr  error
)

// packagedApp is `go run ./infra/pack -stage DIR`: host.json, function/function.json and
// bin/handler, built once per test binary.
func packagedApp(t *testing.T) string {
	t.Helper()
	packOnce.Do(func() {
		packDir = filepath.Join(filepath.Dir(handlerBin), "app")
		cmd := exec.Command("go", "run", "./infra/pack", "-stage", packDir, "-o", filepath.Join(filepath.Dir(handlerBin), "app.zip"))
		cmd.Dir = repoRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			packErr = errors.New("infra/pack: " + err.Error() + "\n" + string(out))
		}
	})
	if packErr != nil {
		t.Fatal(packErr)
	}
	return packDir
}

// copyApp copies the package, so that a test can change its host.json or add files.
func copyApp(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if fi.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// hostedGateway is the package running under the stand-in host.
type hostedGateway struct {
	*funchost.Host
	log    *testio.Buffer
	stdout *testio.Buffer
	stderr *testio.Buffer
}

// startHosted starts the host on the app folder with the app settings in env. At cleanup the
// host is closed (it kills the handler, as the real host does) and the handler's output is
// checked for panics, secrets and non-JSON lines, as startGateway does.
func startHosted(t *testing.T, dir string, env map[string]string, secrets ...string) *hostedGateway {
	t.Helper()
	g := &hostedGateway{log: &testio.Buffer{}, stdout: &testio.Buffer{}, stderr: &testio.Buffer{}}
	hostEnv := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		hostEnv = append(hostEnv, k+"="+v)
	}
	h, err := funchost.Start(funchost.Options{AppDir: dir, Env: hostEnv, Log: g.log, HandlerStdout: g.stdout, HandlerStderr: g.stderr})
	if err != nil {
		t.Fatal(err)
	}
	g.Host = h
	t.Cleanup(func() {
		h.Close()
		checkOutput(t, &gatewayProc{stdout: g.stdout, stderr: g.stderr}, secrets)
		if t.Failed() {
			t.Logf("host log:\n%s", g.log.String())
		}
	})
	return g
}

func (g *hostedGateway) waitReady(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := g.WaitReady(ctx); err != nil {
		t.Fatalf("%v\n%s", err, g.log.String())
	}
}

// recorder keeps what a simulated region was sent, and when it last wrote an answer.
type recorder struct {
	mu        sync.Mutex
	reqs      []*http.Request
	lastWrite time.Time
}

func (rc *recorder) last() *http.Request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.reqs) == 0 {
		return nil
	}
	return rc.reqs[len(rc.reqs)-1]
}

func (rc *recorder) lastWriteAt() time.Time {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.lastWrite
}

type timedWriter struct {
	http.ResponseWriter
	rc *recorder
}

func (w timedWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.rc.mu.Lock()
	w.rc.lastWrite = time.Now()
	w.rc.mu.Unlock()
	return n, err
}

func (w timedWriter) Flush() { w.ResponseWriter.(http.Flusher).Flush() }

func (w timedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// recordedRegion is startRegion with a recorder in front of the simulator.
func recordedRegion(t *testing.T, name string, deployments map[string]aoaisim.Deployment) (*region, *recorder) {
	t.Helper()
	key := "sim-key-" + name + "-5f1e2d"
	sim, err := aoaisim.New(aoaisim.Config{APIKey: key, Region: name, Deployments: deployments})
	if err != nil {
		t.Fatal(err)
	}
	rc := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, r.Clone(context.Background()))
		rc.mu.Unlock()
		sim.ServeHTTP(timedWriter{w, rc}, r)
	}))
	t.Cleanup(srv.Close)
	return &region{Sim: sim, Srv: srv, Key: key}, rc
}

func TestFunctionsHostServesThePackagedApp(t *testing.T) {
	app := packagedApp(t)
	swc := startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "gpt-4o-mini", TPM: 10}})
	frc, rec := recordedRegion(t, "frc", map[string]aoaisim.Deployment{
		"big":  {Model: "gpt-4o-mini", TPM: 400000, CompletionTokens: 12},
		"slow": {Model: "gpt-4o-mini", TPM: 400000, CompletionTokens: 10, PerToken: aoaisim.Duration(80 * time.Millisecond)},
	})
	regions := map[string]*region{"swc": swc, "frc": frc}
	doc := newRouting().account("swc", swc).account("frc", frc).
		target("chat", "swc", "micro", 1).target("chat", "frc", "big", 2).
		target("plain", "frc", "big", 1).
		target("stream", "frc", "slow", 1)
	g := startHosted(t, app, doc.env(regions), append(doc.secrets(regions), callerKey)...)
	g.waitReady(t)

	t.Run("readiness GET / reaches the handler", func(t *testing.T) {
		resp, err := http.Get(g.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		// The handler's own answer (the catch-all route takes "/"), not the host's homepage.
		if resp.StatusCode != 200 || resp.Header.Get("X-Served-By") != "none" || strings.Contains(resp.Header.Get("Content-Type"), "html") {
			t.Errorf("GET / through the host: %d %v", resp.StatusCode, resp.Header)
		}
	})

	t.Run("plain chat", func(t *testing.T) {
		resp, body := chat(t, g.URL, "plain", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":20}`)
		var c struct {
			Choices []struct {
				Message struct{ Content string }
			}
		}
		_ = json.Unmarshal([]byte(body), &c)
		if resp.StatusCode != 200 || resp.Header.Get("X-Served-By") != "frc/big" || len(c.Choices) != 1 || c.Choices[0].Message.Content == "" {
			t.Errorf("%d %v: %s", resp.StatusCode, resp.Header, body)
		}
	})

	t.Run("path, query and headers reach the backend", func(t *testing.T) {
		const query = "api-version=2024-10-21&x-extra=a%2Fb&x-extra=2&empty="
		req, _ := http.NewRequest(http.MethodPost, g.URL+"/openai/deployments/plain/chat/completions?"+query,
			strings.NewReader(`{"messages":[{"role":"user","content":"hi"}]}`))
		req.Host = "gateway.example"
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("api-key", callerKey)
		req.Header.Set("X-Fidelity", "kept")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		seen := rec.last()
		if seen == nil {
			t.Fatal("the backend saw nothing")
		}
		if got := strings.SplitN(seen.RequestURI, "?", 2)[0]; got != "/openai/deployments/big/chat/completions" {
			t.Errorf("backend path %q, want the rewritten deployment", got)
		}
		if seen.URL.RawQuery != query {
			t.Errorf("backend query %q, want %q", seen.URL.RawQuery, query)
		}
		if seen.Header.Get("api-key") != frc.Key || seen.Header.Get("Authorization") != "" {
			t.Errorf("backend credentials: api-key %d chars, Authorization %q", len(seen.Header.Get("api-key")), seen.Header.Get("Authorization"))
		}
		if seen.Header.Get("X-Fidelity") != "kept" {
			t.Errorf("X-Fidelity %q", seen.Header.Get("X-Fidelity"))
		}
		// What the host adds, as it reaches Azure OpenAI through the gateway (for the record).
		for _, k := range []string{"X-Azure-Functions-InvocationId", "X-Azure-Functions-HostVersion", "X-Ms-Invocation-Id", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
			t.Logf("backend sees %s: %q", k, seen.Header.Get(k))
		}
	})

	t.Run("streaming events arrive one by one", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, g.URL+"/openai/deployments/stream/chat/completions?api-version=2024-10-21",
			strings.NewReader(`{"stream":true,"messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("api-key", callerKey)
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var at []time.Time
		sc := bufio.NewScanner(resp.Body)
		done := false
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "data: ") {
				at = append(at, time.Now())
				done = done || line == "data: [DONE]"
			}
		}
		if resp.StatusCode != 200 || !done || len(at) < 12 {
			t.Fatalf("status %d, %d events, [DONE] %v", resp.StatusCode, len(at), done)
		}
		lastSent := rec.lastWriteAt()
		if !at[0].Before(lastSent) {
			t.Errorf("the first event arrived %v after the start, after the backend's last write (%v): the host buffered the stream", at[0].Sub(start), lastSent.Sub(start))
		}
		if spread := at[len(at)-1].Sub(at[0]); spread < 500*time.Millisecond {
			t.Errorf("events arrived within %v of each other; the backend spread them over about 720 ms", spread)
		}
	})

	t.Run("failover from a throttled primary", func(t *testing.T) {
		resp, body := chat(t, g.URL, "chat", `{"messages":[{"role":"user","content":"hi"}]}`)
		if resp.StatusCode != 200 || resp.Header.Get("X-Served-By") != "frc/big" {
			t.Errorf("%d served by %q: %s", resp.StatusCode, resp.Header.Get("X-Served-By"), body)
		}
		if st := swc.Sim.Stats()["micro"]; st.Throttled < 1 || st.Served != 0 {
			t.Errorf("primary %+v", st)
		}
	})

	t.Run("Go SDK", func(t *testing.T) {
		client := goClient(g.URL)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		params := openai.ChatCompletionNewParams{
			Model:     "chat",
			Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello to the host tests.")},
			MaxTokens: openai.Int(20),
		}
		var resp *http.Response
		c, err := client.Chat.Completions.New(ctx, params, option.WithResponseInto(&resp))
		if err != nil {
			t.Fatalf("plain: %v", err)
		}
		if len(c.Choices) != 1 || c.Choices[0].Message.Content == "" || resp.Header.Get("x-served-by") != "frc/big" {
			t.Errorf("plain: %+v served by %q", c, resp.Header.Get("x-served-by"))
		}
		params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		stream := client.Chat.Completions.NewStreaming(ctx, params)
		acc := openai.ChatCompletionAccumulator{}
		for stream.Next() {
			acc.AddChunk(stream.Current())
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("stream: %v", err)
		}
		if len(acc.Choices) != 1 || len(strings.Fields(acc.Choices[0].Message.Content)) != 12 || acc.Choices[0].FinishReason != "stop" || acc.Usage.TotalTokens == 0 {
			t.Errorf("incomplete stream: %+v", acc.ChatCompletion)
		}
	})

	t.Run("Node SDK", func(t *testing.T) {
		dir := filepath.Join(repoRoot(), "tests", "node")
		node, err := exec.LookPath("node")
		if _, statErr := os.Stat(filepath.Join(dir, "node_modules", "openai")); err != nil || statErr != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("node or the OpenAI Node SDK is missing (tests/run installs them): %v %v", err, statErr)
			}
			t.Skip("needs node and `npm ci` in tests/node (tests/run does both)")
		}
		cmd := exec.Command(node, "client.mjs")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GATEWAY_URL="+g.URL, "GATEWAY_API_KEY="+callerKey, "DEPLOYMENT=chat")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("node client: %v\n%s", err, out)
		}
		var got struct {
			Plain, Stream sdkAnswer
			NotFound      struct {
				IsNotFoundError bool
				Status          int
				Code            string
			}
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("client output %q: %v", out, err)
		}
		for name, a := range map[string]sdkAnswer{"plain": got.Plain, "stream": got.Stream} {
			if a.ServedBy != "frc/big" || a.Content == "" || a.FinishReason == "" || len(a.Usage) < 5 {
				t.Errorf("%s: %+v", name, a)
			}
		}
		if got.Stream.Chunks < 5 || !got.NotFound.IsNotFoundError || got.NotFound.Status != 404 || got.NotFound.Code != "DeploymentNotFound" {
			t.Errorf("stream chunks %d, unknown deployment %+v", got.Stream.Chunks, got.NotFound)
		}
	})
}

// slowStart makes the handler's first start take 1.5 s (more than the 1 s initializationTimeout
// it sets) and later starts 0.2 s, through a script that then execs bin/handler.
const slowStart = `#!/bin/sh
if [ ! -e "$FUNCTIONS_APP_ROOT_PATH/.started" ]; then
  : > "$FUNCTIONS_APP_ROOT_PATH/.started"
  sleep 1.5
else
  sleep 0.2
fi
exec "$FUNCTIONS_APP_ROOT_PATH/bin/handler" "$@"
`

func TestFunctionsHostHandlerLifecycle(t *testing.T) {
	app := copyApp(t, packagedApp(t))
	b, err := os.ReadFile(filepath.Join(app, "host.json"))
	if err != nil {
		t.Fatal(err)
	}
	var host map[string]any
	if err := json.Unmarshal(b, &host); err != nil {
		t.Fatal(err)
	}
	ch := host["customHandler"].(map[string]any)
	ch["description"].(map[string]any)["defaultExecutablePath"] = "slow-start.sh"
	ch["initializationTimeout"] = "00:00:01"
	b, _ = json.Marshal(host)
	if err := os.WriteFile(filepath.Join(app, "host.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(app, "slow-start.sh"), []byte(slowStart), 0o755); err != nil {
		t.Fatal(err)
	}
	frc, _ := recordedRegion(t, "frc", map[string]aoaisim.Deployment{
		"big":  {Model: "gpt-4o-mini", TPM: 400000, CompletionTokens: 12},
		"slow": {Model: "gpt-4o-mini", TPM: 400000, CompletionTokens: 20, PerToken: aoaisim.Duration(80 * time.Millisecond)},
	})
	regions := map[string]*region{"frc": frc}
	doc := newRouting().account("frc", frc).target("chat", "frc", "big", 1).target("stream", "frc", "slow", 1)
	body := `{"messages":[{"role":"user","content":"hi"}]}`

	g := startHosted(t, app, doc.env(regions), doc.secrets(regions)...)

	t.Run("slow start", func(t *testing.T) {
		// Sent at once: the invocation waits while the host kills the first start (past its
		// initialization timeout) and starts the handler again.
		start := time.Now()
		resp, out := chat(t, g.URL, "chat", body)
		if resp.StatusCode != 200 || g.Starts() != 2 || time.Since(start) < time.Second {
			t.Errorf("%d after %v with %d starts: %s", resp.StatusCode, time.Since(start), g.Starts(), out)
		}
		if !strings.Contains(g.log.String(), "Initializing HttpWorker timed out.") {
			t.Error("no initialization timeout logged")
		}
	})

	t.Run("killed mid-stream", func(t *testing.T) {
		pid := g.HandlerPID()
		req, _ := http.NewRequest(http.MethodPost, g.URL+"/openai/deployments/stream/chat/completions?api-version=2024-10-21",
			strings.NewReader(`{"stream":true,"messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		rest, err := io.ReadAll(br)
		if err == nil || strings.Contains(string(rest), "[DONE]") {
			t.Errorf("a stream whose handler was killed ended cleanly (%v)", err)
		}
		// Exit 137 is a worker error: the host starts the handler again on the same port.
		resp2, out := chat(t, g.URL, "chat", body)
		if resp2.StatusCode != 200 || g.Starts() != 3 || g.HandlerPID() == pid {
			t.Errorf("after the kill: %d with %d starts: %s", resp2.StatusCode, g.Starts(), out)
		}
	})

	t.Run("exit 0 is not restarted", func(t *testing.T) {
		// The gateway's graceful SIGTERM exit (0) is one the host takes no action on: the
		// handler stays gone and every invocation fails after the proxy's retries.
		pid := g.HandlerPID()
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for g.HandlerPID() != 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		start := time.Now()
		resp, _ := chat(t, g.URL, "chat", body)
		if resp.StatusCode != 500 || time.Since(start) < 1500*time.Millisecond || g.Starts() != 3 || g.State() != "Initialized" {
			t.Errorf("after exit 0: %d in %v, %d starts, state %s", resp.StatusCode, time.Since(start), g.Starts(), g.State())
		}
	})

	t.Run("bad settings stop the host after three starts", func(t *testing.T) {
		bad := startHosted(t, packagedApp(t), map[string]string{"GATEWAY_CONFIG": `{"accounts": {}}`})
		resp, err := http.Post(bad.URL+"/openai/deployments/chat/chat/completions?api-version=2024-10-21", "application/json", strings.NewReader(body))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 500 {
				t.Errorf("status %d while the handler cannot start, want 500", resp.StatusCode)
			}
		}
		select {
		case <-bad.Stopped():
		case <-time.After(10 * time.Second):
			t.Fatal("the host did not stop")
		}
		if bad.Starts() != 3 || !strings.Contains(bad.stderr.String(), "GATEWAY_CONFIG") || !strings.Contains(bad.log.String(), "exited with code 1") {
			t.Errorf("%d starts; stderr:\n%s", bad.Starts(), bad.stderr.String())
		}
	})
}
