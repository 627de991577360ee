package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// outcome is what one caller got.
type outcome struct {
	status  int // 0: no answer (connection error, or cut off at the end of the run)
	latency time.Duration
	region  int // the oracle's choice; -1 otherwise
	err     string
}

// runResult is one system's run over one trace.
type runResult struct {
	outcomes []outcome
	hits     [][]hit       // per region, every request that reached it
	lag      time.Duration // the dispatcher's lateness, 99th percentile (open loop: arrivals never wait for answers)
}

// drive replays the trace open loop from start: each request is sent at its time whatever the
// answers of the others, and the run waits at most drain after the last for those in flight.
// It returns the outcomes and the 99th percentile of how late requests were sent.
func drive(ctx context.Context, trace []call, start time.Time, drain time.Duration, send func(context.Context, int, call) outcome) ([]outcome, time.Duration) {
	out := make([]outcome, len(trace))
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	lags := make([]time.Duration, 0, len(trace))
	for i, c := range trace {
		if ctx.Err() != nil {
			break
		}
		due := start.Add(c.at)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		lags = append(lags, time.Since(due))
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := send(rctx, i, c)
			o.latency = time.Since(due)
			out[i] = o
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drain):
		cancel()
		<-done
	case <-ctx.Done():
		<-done
	}
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	return out, pct(lags, 0.99)
}

func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy: nil, MaxIdleConns: 4096, MaxIdleConnsPerHost: 1024, IdleConnTimeout: 30 * time.Second,
		DisableCompression: true, DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}}
}

// post sends one chat completion and reads the whole answer.
func post(ctx context.Context, client *http.Client, url string, body []byte, header map[string]string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

// naiveSend is a proxy with no state: it tries the regions in priority order on every request
// and returns the first answer that is not a 429.
func naiveSend(client *http.Client, regions []*region) func(context.Context, int, call) outcome {
	return func(ctx context.Context, _ int, c call) outcome {
		for r, reg := range regions {
			status, err := post(ctx, client, reg.chatURL(), c.body, map[string]string{"api-key": reg.key})
			if err != nil {
				return outcome{region: -1, err: err.Error()}
			}
			if status != http.StatusTooManyRequests {
				return outcome{status: status, region: r}
			}
		}
		return outcome{status: http.StatusTooManyRequests, region: -1}
	}
}

// gatewaySend sends each request to the gateway instances in turn (round robin).
func gatewaySend(client *http.Client, gws []*gatewayProc) func(context.Context, int, call) outcome {
	return func(ctx context.Context, i int, c call) outcome {
		g := gws[i%len(gws)]
		status, err := post(ctx, client, g.url+"/openai/deployments/"+logicalName+"/chat/completions?api-version=2024-10-21", c.body, nil)
		if err != nil {
			return outcome{region: -1, err: err.Error()}
		}
		return outcome{status: status, region: -1}
	}
}

const logicalName = "chat"

// gatewayProc is one running handler process, started as the Functions host starts it
// (tests/e2e/harness_test.go): FUNCTIONS_CUSTOMHANDLER_PORT, ready when GET / answers 200.
type gatewayProc struct {
	url    string
	cmd    *exec.Cmd
	stderr *tailBuffer
	dir    string
	done   chan struct{}
	err    error
}

func startGateway(ctx context.Context, bin string, env map[string]string) (*gatewayProc, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	dir, err := os.MkdirTemp("", "fleetbench-gw-")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "FUNCTIONS_CUSTOMHANDLER_PORT=" + port}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	g := &gatewayProc{url: "http://127.0.0.1:" + port, cmd: cmd, stderr: &tailBuffer{max: 64 << 10}, dir: dir, done: make(chan struct{})}
	cmd.Stdout = nil // the request log: one line per request, not needed here
	cmd.Stderr = g.stderr
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	go func() { g.err = cmd.Wait(); close(g.done) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(g.url + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return g, nil
			}
		}
		select {
		case <-g.done:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("handler exited before it was ready: %v\n%s", g.err, g.stderr)
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			g.stop()
			return nil, fmt.Errorf("handler not ready within 15s\n%s", g.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM, as the platform does, and kills the process if it has not exited within
// 10 s; it reports a non-zero exit.
func (g *gatewayProc) stop() error {
	defer os.RemoveAll(g.dir)
	select {
	case <-g.done:
	default:
		_ = g.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.done:
		case <-time.After(10 * time.Second):
			_ = g.cmd.Process.Kill()
			<-g.done
			return fmt.Errorf("handler did not exit within 10s of SIGTERM")
		}
	}
	var ee *exec.ExitError
	if errors.As(g.err, &ee) {
		return fmt.Errorf("handler exited with %v\n%s", g.err, g.stderr)
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append([]byte(nil), t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// checkReport is what `handler -check` prints.
type checkReport struct {
	OK       bool     `json:"ok"`
	Problems []string `json:"problems"`
	Read     []string `json:"read"`
}

// check runs `handler -check` on the settings: the start's own validation, contacting nothing.
func check(bin string, env map[string]string) (checkReport, error) {
	cmd := exec.Command(bin, "-check")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = io.Discard
	_ = cmd.Run()
	var rep checkReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		return rep, fmt.Errorf("handler -check printed no report: %q", strings.TrimSpace(out.String()))
	}
	return rep, nil
}
