// Command bench puts one load generator, in one run, on the Azure OpenAI simulator directly, on
// the gateway, on nginx as a plain reverse proxy, on net/http's ReverseProxy and on the Portkey
// AI gateway, all in front of the same simulator, and reports the latency each proxy adds over
// direct, throughput, added time to first token, and each proxy's peak RSS and CPU per request.
// It writes a CSV and a PNG chart.
//
//	tests/bench/run              # installs nginx and Portkey if missing, then builds and runs this
//	tests/bench/run -quick       # a smoke run: 1 s per point, 1 round
//	tests/bench/run -publish     # also copies the chart and CSV to tests/bench/chart.png, results.csv
//	tests/bench/run -redraw tests/bench/results.csv -rounds 3   # the chart again, from the CSV
//
// It is a Go module of its own (tests/bench/go.mod) so that its chart library (gonum.org/v1/plot
// and its fonts, LaTeX and PDF packages) never enters the handler's module; `go run .` in this
// directory runs it too. It imports nothing of the repository's module: it builds the handler and
// the simulator there with `go build`.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// allTargets is every target, in the order they are measured and reported.
var allTargets = []string{"direct", "gateway", "nginx", "goproxy", "portkey"}

type options struct {
	duration    time.Duration
	rounds      int
	concurrency []int
	only        map[string]bool
	out         string
	publish     bool
}

func main() {
	duration := flag.Duration("duration", 5*time.Second, "measuring time per point")
	rounds := flag.Int("rounds", 2, "interleaved rounds; the report gives their medians")
	conc := flag.String("concurrency", "1,64,256,512", "concurrent requests per point")
	only := flag.String("only", strings.Join(allTargets, ","), "targets to measure (goproxy: a plain net/http ReverseProxy, the floor of any Go proxy; portkey: the Portkey AI gateway from npm)")
	quick := flag.Bool("quick", false, "smoke run: 1s per point, 1 round")
	out := flag.String("out", filepath.Join(benchDir(), "results"), "directory for the CSV and PNG")
	publish := flag.Bool("publish", false, "also copy the chart and the CSV to tests/bench/chart.png and tests/bench/results.csv (committed, shown by the README)")
	redraw := flag.String("redraw", "", "draw the chart of a CSV this command wrote (next to it, as .png), measuring nothing; -duration and -rounds describe the run")
	flag.Parse()
	if *redraw != "" {
		if err := redrawChart(*redraw, *duration, *rounds); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	o := options{duration: *duration, rounds: *rounds, out: *out, publish: *publish, only: map[string]bool{}}
	if *quick {
		o.duration, o.rounds = time.Second, 1
	}
	for _, c := range strings.Split(*conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench: bad -concurrency %q\n", *conc)
			os.Exit(2)
		}
		o.concurrency = append(o.concurrency, n)
	}
	for _, t := range strings.Split(*only, ",") {
		t = strings.TrimSpace(t)
		if !contains(allTargets, t) {
			fmt.Fprintf(os.Stderr, "bench: unknown target %q in -only (known: %s)\n", t, strings.Join(allTargets, ","))
			os.Exit(2)
		}
		o.only[t] = true
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func benchDir() string { return filepath.Join(repoRoot(), "tests", "bench") }

// proc is a process the bench started; all are stopped on exit.
type proc struct {
	name string
	cmd  *exec.Cmd
}

type procs []*proc

// start runs cmd in its own process group, so that stopAll ends it and any children it has.
func (ps *procs) start(name string, cmd *exec.Cmd, log string) (*proc, error) {
	f, err := os.Create(log)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd}
	*ps = append(*ps, p)
	return p, nil
}

func (ps procs) stopAll() {
	for _, p := range ps {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	}
	for _, p := range ps {
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		// Anything left in the group (a child that ignored SIGTERM) goes too.
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// tree is the process and all its descendants, read from /proc.
func (p *proc) tree() []int { return descendants(p.cmd.Process.Pid) }

// target is one endpoint the load generator drives.
type target struct {
	name   string
	url    string       // the chat completions URL
	header http.Header  // sent with every request
	pids   func() []int // the proxy's processes; nil for direct
}

const (
	backendKey = "bench-backend-key"
	azurePath  = "/openai/deployments/bench/chat/completions?api-version=2024-10-21"
	apiVersion = "2024-10-21"
)

func azureTarget(name, base string, p *proc) *target {
	t := &target{name: name, url: base + azurePath, header: http.Header{"Api-Key": {backendKey}}}
	if p != nil {
		t.pids = p.tree
	}
	return t
}

// portkeyConfig is the x-portkey-config header: the same two simulator deployments the gateway
// has, as Azure OpenAI targets, with Portkey's fallback strategy (on its default status codes:
// any non-2xx).
func portkeyConfig(simPort string) string {
	type pkTarget struct {
		Provider     string `json:"provider"`
		APIKey       string `json:"api_key"`
		ResourceName string `json:"resource_name"`
		DeploymentID string `json:"deployment_id"`
		APIVersion   string `json:"api_version"`
		CustomHost   string `json:"custom_host"`
	}
	type config struct {
		Strategy struct {
			Mode string `json:"mode"`
		} `json:"strategy"`
		Targets []pkTarget `json:"targets"`
	}
	var c config
	c.Strategy.Mode = "fallback"
	for _, dep := range []string{"bench", "bench-b"} {
		// custom_host replaces https://<resource_name>.openai.azure.com/openai, the base URL
		// Portkey's azure-openai provider puts /deployments/<id>/chat/completions after.
		c.Targets = append(c.Targets, pkTarget{Provider: "azure-openai", APIKey: backendKey, ResourceName: "sim",
			DeploymentID: dep, APIVersion: apiVersion, CustomHost: "http://127.0.0.1:" + simPort + "/openai"})
	}
	b, _ := json.Marshal(c)
	return string(b)
}

func run(ctx context.Context, o options) error {
	if _, err := exec.LookPath("nginx"); err != nil && o.only["nginx"] {
		return errors.New("nginx is not installed: run tests/bench/run, which installs it (apt-get install nginx)")
	}
	pkEntry := filepath.Join(benchDir(), "node", "node_modules", "@portkey-ai", "gateway", "build", "start-server.js")
	if o.only["portkey"] {
		if _, err := exec.LookPath("node"); err != nil {
			return errors.New("node is not installed: Portkey needs Node.js (20 or later); or leave it out with -only")
		}
		if _, err := os.Stat(pkEntry); err != nil {
			return errors.New("portkey is not installed: run tests/bench/run, which runs npm ci in tests/bench/node")
		}
	}
	dir, err := os.MkdirTemp("", "gateway-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// The handler and the simulator are built in the repository's module, goproxy in this one.
	for _, b := range []struct{ out, dir, pkg string }{{"handler", repoRoot(), "./handler"}, {"aoaisim", repoRoot(), "./tests/aoaisim/cmd/aoaisim"}, {"goproxy", benchDir(), "./goproxy"}} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b.out), b.pkg)
		cmd.Dir, cmd.Stdout, cmd.Stderr = b.dir, os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build %s: %w", b.pkg, err)
		}
	}
	var ps procs
	defer func() { ps.stopAll() }() // a closure: the list is filled after this line

	// The backend: fake chat deployments answering ~900 bytes at once, or 24 SSE events. bench is
	// every proxy's first choice and bench-b its fallback.
	simPort := freePort()
	simCfg := filepath.Join(dir, "sim.json")
	dep := `{"model":"gpt-4o-mini","completionTokens":20}`
	os.WriteFile(simCfg, []byte(`{"apiKey":"`+backendKey+`","deployments":{"bench":`+dep+`,"bench-b":`+dep+`}}`), 0o600)
	if _, err := ps.start("simulator", exec.Command(filepath.Join(dir, "aoaisim"), "-listen", "127.0.0.1:"+simPort, "-config", simCfg), filepath.Join(dir, "direct.log")); err != nil {
		return err
	}
	simBase := "http://127.0.0.1:" + simPort
	targets := map[string]*target{"direct": azureTarget("direct", simBase, nil)}

	if o.only["gateway"] {
		port := freePort()
		routing, _ := json.Marshal(map[string]any{
			"accounts": map[string]any{"sim": map[string]any{"endpoint": simBase, "auth": map[string]any{"keyEnv": "BENCH_KEY"}}},
			"deployments": map[string]any{"bench": []any{
				map[string]any{"account": "sim", "deployment": "bench", "priority": 1},
				map[string]any{"account": "sim", "deployment": "bench-b", "priority": 2},
			}},
			"clients": map[string]any{"anonymous": true},
		})
		cmd := exec.Command(filepath.Join(dir, "handler"))
		cmd.Env = append(os.Environ(), "PORT="+port, "GATEWAY_CONFIG="+string(routing), "BENCH_KEY="+backendKey)
		p, err := ps.start("gateway", cmd, filepath.Join(dir, "gateway.log"))
		if err != nil {
			return err
		}
		targets["gateway"] = azureTarget("gateway", "http://127.0.0.1:"+port, p)
	}

	if o.only["goproxy"] {
		port := freePort()
		p, err := ps.start("goproxy", exec.Command(filepath.Join(dir, "goproxy"), "-listen", "127.0.0.1:"+port, "-backend", simBase), filepath.Join(dir, "goproxy.log"))
		if err != nil {
			return err
		}
		targets["goproxy"] = azureTarget("goproxy", "http://127.0.0.1:"+port, p)
	}

	if o.only["nginx"] {
		port := freePort()
		os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(nginxConf(dir, simPort, port)), 0o600)
		p, err := ps.start("nginx", exec.Command("nginx", "-p", dir, "-c", filepath.Join(dir, "nginx.conf")), filepath.Join(dir, "nginx.log"))
		if err != nil {
			return err
		}
		targets["nginx"] = azureTarget("nginx", "http://127.0.0.1:"+port, p)
	}

	pkCfg := portkeyConfig(simPort)
	if o.only["portkey"] {
		// Portkey's bin (build/start-server.js) takes only --port=N and --headless (no UI); it
		// listens on every interface, and is reached here on loopback.
		port := freePort()
		cmd := exec.Command("node", pkEntry, "--port="+port, "--headless")
		cmd.Dir = filepath.Join(benchDir(), "node")
		cmd.Env = append(os.Environ(), "NODE_ENV=production")
		p, err := ps.start("portkey", cmd, filepath.Join(dir, "portkey.log"))
		if err != nil {
			return err
		}
		targets["portkey"] = &target{name: "portkey", url: "http://127.0.0.1:" + port + "/v1/chat/completions",
			header: http.Header{"X-Portkey-Config": {pkCfg}}, pids: p.tree}
	}

	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		MaxIdleConns: 4096, MaxIdleConnsPerHost: 1024, IdleConnTimeout: time.Minute, DisableCompression: true,
	}}
	order := []string{}
	for _, name := range allTargets {
		if o.only[name] && targets[name] != nil {
			order = append(order, name)
		}
	}
	for _, name := range order {
		if err := waitReady(ctx, targets[name]); err != nil {
			return fmt.Errorf("%s not ready: %w%s", name, err, logTail(dir, name))
		}
	}
	// Every target must give the simulator's answer, and as many stream chunks as direct.
	wantChunks, err := probe(ctx, client, targets["direct"], true)
	if err != nil {
		return fmt.Errorf("direct (stream): %w%s", err, logTail(dir, "direct"))
	}
	for _, name := range order {
		for _, stream := range []bool{false, true} {
			n, err := probe(ctx, client, targets[name], stream)
			if err == nil && stream && n != wantChunks {
				err = fmt.Errorf("%d chunks, the simulator sends %d", n, wantChunks)
			}
			if err != nil {
				return fmt.Errorf("%s (stream=%v) does not pass the simulator's answer through: %w%s", name, stream, err, logTail(dir, name))
			}
		}
	}

	fmt.Printf("bench: %s per point, %d round(s), concurrency %v, targets %v; GOMAXPROCS %d, %d CPUs\n",
		o.duration, o.rounds, o.concurrency, order, runtime.GOMAXPROCS(0), runtime.NumCPU())
	fmt.Println("nginx: 1 worker, keepalive 1024 to the upstream, proxy_buffering and proxy_request_buffering off, access log to a file;")
	fmt.Println("gateway: its one JSON log line per request to a file; goproxy: net/http's ReverseProxy, tuned, no logging;")
	if o.only["portkey"] {
		fmt.Printf("portkey: @portkey-ai/gateway %s on node %s, one process, POST /v1/chat/completions with x-portkey-config:\n  %s\n",
			portkeyVersion(), nodeVersion(), pkCfg)
	}

	results := map[key2][]point{}
	for round := 0; round < o.rounds; round++ {
		for _, stream := range []bool{false, true} {
			for _, c := range o.concurrency {
				for _, name := range order {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					if name == "goproxy" && stream {
						// The reference is for the plain path: under this load net/http's
						// ReverseProxy cuts some streams short ("use of closed network connection").
						continue
					}
					t := targets[name]
					// A short warm-up opens the connections at this concurrency.
					load(ctx, client, t, c, stream, 300*time.Millisecond)
					var pids []int
					if t.pids != nil {
						pids = t.pids()
					}
					cpu0 := cpuSeconds(pids)
					stopRSS := watchRSS(t.pids)
					p := load(ctx, client, t, c, stream, o.duration)
					p.rssMiB = stopRSS()
					if len(pids) > 0 && p.count > 0 {
						p.cpuPerK = (cpuSeconds(pids) - cpu0) / float64(p.count) * 1000
					}
					results[key2{name, stream, c}] = append(results[key2{name, stream, c}], p)
					rss := "          "
					if t.pids != nil {
						rss = fmt.Sprintf("%6.1f MiB", p.rssMiB)
					}
					fmt.Fprintf(os.Stderr, "  round %d %-7s stream=%-5v c=%-3d %8.0f req/s  p50 %7.2f ms  p99 %8.2f ms  RSS %s  errors %d\n",
						round+1, name, stream, c, p.rps, ms(p.p50), ms(p.p99), rss, p.errors)
				}
			}
		}
	}
	hwm := map[string]float64{}
	for _, name := range order {
		if t := targets[name]; t.pids != nil {
			hwm[name] = statusMiB(t.pids(), "VmHWM:")
		}
	}
	return report(o, order, results, hwm)
}

type key2 struct {
	target string
	stream bool
	conc   int
}

type point struct {
	count, errors int
	rps           float64
	p50, p99      time.Duration
	ttfb50        time.Duration // time to the first body byte: for a stream, its first event
	cpuPerK       float64       // CPU seconds per 1,000 requests of the proxy
	rssMiB        float64       // the proxy's highest VmRSS while the point ran (sampled every 100 ms)
}

var bodies = map[bool]string{
	false: `{"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one short sentence about gateways."}],"max_tokens":20}`,
	true:  `{"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one short sentence about gateways."}],"max_tokens":20,"stream":true}`,
}

// streamEnd is how every complete stream ends: the terminating event after the last chunk.
const streamEnd = "\n\ndata: [DONE]\n\n"

// do sends one request and reads the whole answer. ok means status 200 and, for a stream, an
// answer that ends with streamEnd. With keep, body is the whole answer (for probe).
func do(ctx context.Context, client *http.Client, t *target, stream, keep bool, buf []byte) (first, total time.Duration, ok bool, body []byte) {
	t0 := time.Now()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, t.url, strings.NewReader(bodies[stream]))
	req.Header = t.header.Clone()
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, false, nil
	}
	defer resp.Body.Close()
	ok = resp.StatusCode == 200
	var tail []byte
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 && first == 0 {
			first = time.Since(t0)
		}
		if n > 0 { // keep the stream's last bytes, however the reads split them
			tail = append(tail, buf[max(0, n-len(streamEnd)):n]...)
			tail = tail[max(0, len(tail)-len(streamEnd)):]
			if keep {
				body = append(body, buf[:n]...)
			}
		}
		if err != nil {
			if err != io.EOF {
				ok = false
			}
			break
		}
	}
	if stream && string(tail) != streamEnd {
		ok = false
	}
	return first, time.Since(t0), ok, body
}

// load runs a closed loop of c workers for d and measures every request.
func load(ctx context.Context, client *http.Client, t *target, c int, stream bool, d time.Duration) point {
	deadline := time.Now().Add(d)
	var mu sync.Mutex
	var lat, ttfb []time.Duration
	errs := 0
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var myLat, myTTFB []time.Duration
			myErrs := 0
			buf := make([]byte, 32<<10)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				first, total, ok, _ := do(ctx, client, t, stream, false, buf)
				if !ok {
					myErrs++
					continue
				}
				myLat = append(myLat, total)
				myTTFB = append(myTTFB, first)
			}
			mu.Lock()
			lat = append(lat, myLat...)
			ttfb = append(ttfb, myTTFB...)
			errs += myErrs
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	p := point{count: len(lat), errors: errs, rps: float64(len(lat)) / elapsed.Seconds()}
	p.p50, p.p99 = percentile(lat, 0.50), percentile(lat, 0.99)
	p.ttfb50 = percentile(ttfb, 0.50)
	return p
}

// logTail is the end of a target's log (the directory goes when the bench exits), for errors.
func logTail(dir, name string) string {
	b, _ := os.ReadFile(filepath.Join(dir, name+".log"))
	if e, err := os.ReadFile(filepath.Join(dir, name+"-error.log")); err == nil {
		b = append(b, e...)
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	if len(b) == 0 {
		return ""
	}
	return "\n--- " + name + " log ---\n" + string(b)
}

func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[min(len(d)-1, int(float64(len(d))*q))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func freePort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// waitReady waits until the target accepts connections.
func waitReady(ctx context.Context, t *target) error {
	u, err := url.Parse(t.url)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if c, err := net.DialTimeout("tcp", u.Host, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("timed out")
}

// probe sends one request before the measurements and checks that the simulator's answer
// came back whole: status 200, the simulator's fingerprint and, for a stream, the terminating
// event. It returns the number of chunks (stream events with a completion chunk).
func probe(ctx context.Context, client *http.Client, t *target, stream bool) (int, error) {
	_, _, ok, body := do(ctx, client, t, stream, true, make([]byte, 32<<10))
	if !ok {
		return 0, fmt.Errorf("status not 200 or the stream did not end with [DONE]: %.300q", body)
	}
	if !strings.Contains(string(body), `"system_fingerprint":"fp_sim"`) {
		return 0, fmt.Errorf("not the simulator's answer: %.300q", body)
	}
	return strings.Count(string(body), `"object":"chat.completion.chunk"`), nil
}

func nginxConf(dir, simPort, port string) string {
	return fmt.Sprintf(`worker_processes 1;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
events { worker_connections 8192; }
http {
  access_log %[1]s/nginx-access.log;
  client_body_temp_path %[1]s/client_body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  upstream sim { server 127.0.0.1:%[2]s; keepalive 1024; }
  server {
    listen 127.0.0.1:%[3]s backlog=4096;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://sim;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }
}
`, dir, simPort, port)
}

// descendants is pid and every process below it (nginx's worker, anything node starts),
// from the children lists of all its threads in /proc.
func descendants(pid int) []int {
	out := []int{pid}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, descendants(n)...)
			}
		}
	}
	return out
}

// cpuSeconds sums user and system CPU time of the processes (all their threads), from /proc.
func cpuSeconds(pids []int) float64 {
	total := 0.0
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(fields) > 13 {
			ut, _ := strconv.ParseFloat(fields[11], 64)
			st, _ := strconv.ParseFloat(fields[12], 64)
			total += (ut + st) / 100 // USER_HZ is 100 on Linux
		}
	}
	return total
}

// statusMiB sums a kB field of /proc/PID/status (VmRSS: resident now, VmHWM: its high-water
// mark) over the processes, in MiB. Pages two processes share are counted in both.
func statusMiB(pids []int, field string) float64 {
	total := 0.0
	for _, pid := range pids {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), field); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				total += kb / 1024
				break
			}
		}
		f.Close()
	}
	return total
}

// watchRSS samples the processes' summed VmRSS every 100 ms until the returned function is
// called, which returns the highest sample. pids is read again at every sample.
func watchRSS(pids func() []int) func() float64 {
	if pids == nil {
		return func() float64 { return 0 }
	}
	done, peak := make(chan struct{}), make(chan float64, 1)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		m := 0.0
		for {
			m = max(m, statusMiB(pids(), "VmRSS:"))
			select {
			case <-done:
				peak <- m
				return
			case <-tick.C:
			}
		}
	}()
	return func() float64 { close(done); return <-peak }
}

func portkeyVersion() string {
	b, err := os.ReadFile(filepath.Join(benchDir(), "node", "node_modules", "@portkey-ai", "gateway", "package.json"))
	var v struct{ Version string }
	if err != nil || json.Unmarshal(b, &v) != nil {
		return "?"
	}
	return v.Version
}

func nodeVersion() string {
	b, err := exec.Command("node", "--version").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}
