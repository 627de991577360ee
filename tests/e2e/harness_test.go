// Package e2e runs the built handler binary the way the Azure Functions host runs it
// (FUNCTIONS_CUSTOMHANDLER_PORT, readiness by GET /) against simulated Azure OpenAI regions.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/tests/aoaisim"
	"github.com/aoai-failover/gateway/tests/testio"
)

var handlerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gateway-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	handlerBin = filepath.Join(dir, "handler")
	build := exec.Command("go", "build", "-o", handlerBin, "./handler")
	build.Dir = repoRoot()
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build handler:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// gatewayProc is one running handler process.
type gatewayProc struct {
	URL    string
	cmd    *exec.Cmd
	stdout *testio.Buffer
	stderr *testio.Buffer
	done   chan struct{}
	err    error
}

// startGateway starts the binary as the Functions host does and waits for GET / to answer.
// At cleanup it sends SIGTERM and fails the test if the process does not exit 0, or if its
// output holds a panic or any of the secrets.
func startGateway(t testing.TB, env map[string]string, secrets ...string) *gatewayProc {
	t.Helper()
	port := freePort(t)
	cmd := exec.Command(handlerBin)
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "FUNCTIONS_CUSTOMHANDLER_PORT=" + port, "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &gatewayProc{URL: "http://127.0.0.1:" + port, cmd: cmd, stdout: &testio.Buffer{}, stderr: &testio.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start handler: %v", err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		checkOutput(t, p, secrets)
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(p.URL + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("handler exited before it was ready: %v\nstderr: %s", p.err, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("handler not ready after 10s\nstderr: %s", p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *gatewayProc) stop(t testing.TB) {
	t.Helper()
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			t.Errorf("handler did not exit within 30s of SIGTERM")
			return
		}
	}
	if p.err != nil {
		t.Errorf("handler exited with %v\nstderr: %s", p.err, p.stderr.String())
	}
}

func checkOutput(t testing.TB, p *gatewayProc, secrets []string) {
	t.Helper()
	out := p.stdout.String() + p.stderr.String()
	if strings.Contains(out, "panic") {
		t.Errorf("handler output mentions a panic:\n%s", out)
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(out, s) {
			t.Errorf("handler output contains a secret value (%d chars)", len(s))
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(p.stdout.String()), "\n") {
		if line != "" && !json.Valid([]byte(line)) {
			t.Errorf("stdout line is not JSON: %q", line)
		}
	}
}

func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// region is one simulated Azure OpenAI account.
type region struct {
	Sim *aoaisim.Simulator
	Srv *httptest.Server
	Key string
}

func startRegion(t testing.TB, name string, deployments map[string]aoaisim.Deployment) *region {
	t.Helper()
	key := "sim-key-" + name + "-5f1e2d"
	sim, srv, err := aoaisim.Start(aoaisim.Config{APIKey: key, Region: name, Deployments: deployments})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return &region{Sim: sim, Srv: srv, Key: key}
}

// routing builds a GATEWAY_CONFIG and the env holding each region's key.
type routingDoc struct {
	Accounts    map[string]any   `json:"accounts"`
	Deployments map[string][]any `json:"deployments"`
	Clients     map[string]any   `json:"clients"`
	Timeouts    map[string]any   `json:"timeouts,omitempty"`
	Circuit     map[string]any   `json:"circuit,omitempty"`
	Throttle    map[string]any   `json:"throttle,omitempty"`
	Limits      map[string]any   `json:"limits,omitempty"`
}

func newRouting() *routingDoc {
	return &routingDoc{Accounts: map[string]any{}, Deployments: map[string][]any{}, Clients: map[string]any{"anonymous": true}}
}

func (d *routingDoc) account(name string, r *region) *routingDoc {
	d.Accounts[name] = map[string]any{"endpoint": r.Srv.URL, "region": name, "auth": map[string]any{"keyEnv": "KEY_" + strings.ToUpper(name)}}
	return d
}

func (d *routingDoc) target(logical, account, deployment string, priority int) *routingDoc {
	d.Deployments[logical] = append(d.Deployments[logical], map[string]any{"account": account, "deployment": deployment, "priority": priority})
	return d
}

func (d *routingDoc) env(regions map[string]*region) map[string]string {
	b, _ := json.Marshal(d)
	env := map[string]string{"GATEWAY_CONFIG": string(b)}
	for name, r := range regions {
		env["KEY_"+strings.ToUpper(name)] = r.Key
	}
	return env
}

func (d *routingDoc) secrets(regions map[string]*region) []string {
	var s []string
	for _, r := range regions {
		s = append(s, r.Key)
	}
	return s
}

// chat sends one chat completion through the gateway.
func chat(t testing.TB, url, logical, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/openai/deployments/"+logical+"/chat/completions?api-version=2024-10-21", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("api-key", "caller-key-not-for-backends")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// traffic is steady background load on one logical deployment: workers each send a request,
// read the answer and wait interval, until stop. It counts what was sent and what failed.
type traffic struct {
	sent, failed atomic.Int64
	quit         chan struct{}
	wg           sync.WaitGroup
}

func startTraffic(url, body string, workers int, interval time.Duration) *traffic {
	tr := &traffic{quit: make(chan struct{})}
	for w := 0; w < workers; w++ {
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			for {
				select {
				case <-tr.quit:
					return
				case <-time.After(interval):
				}
				resp, err := http.Post(url+"/openai/deployments/chat/chat/completions?api-version=2024-10-21", "application/json", strings.NewReader(body))
				tr.sent.Add(1)
				if err != nil {
					tr.failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					tr.failed.Add(1)
				}
			}
		}()
	}
	return tr
}

// stop ends the traffic and returns how many requests were sent and how many failed.
func (tr *traffic) stop() (sent, failed int64) {
	close(tr.quit)
	tr.wg.Wait()
	return tr.sent.Load(), tr.failed.Load()
}
