// Command bench puts one load generator, in one run, on the Azure OpenAI simulator directly, on
// the gateway, and on nginx as a plain reverse proxy in front of the same simulator, and reports
// throughput, latency and the gateway's memory and CPU side by side, as ratios.
//
//	tests/bench/run              # installs nginx if missing, then: go run ./tests/bench
//	go run ./tests/bench -quick  # a one-minute smoke run
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

type options struct {
	duration    time.Duration
	rounds      int
	concurrency []int
	only        map[string]bool
	out         string
}

func main() {
	duration := flag.Duration("duration", 5*time.Second, "measuring time per point")
	rounds := flag.Int("rounds", 2, "interleaved rounds; the report gives their medians")
	conc := flag.String("concurrency", "1,64,256", "concurrent requests per point")
	only := flag.String("only", "direct,gateway,nginx,goproxy", "targets to measure (goproxy: a plain net/http ReverseProxy, the floor of any Go proxy)")
	quick := flag.Bool("quick", false, "smoke run: 1s per point, 1 round")
	out := flag.String("out", filepath.Join(repoRoot(), "tests", "bench", "results"), "directory for the CSV")
	flag.Parse()
	o := options{duration: *duration, rounds: *rounds, out: *out, only: map[string]bool{}}
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
		o.only[strings.TrimSpace(t)] = true
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// proc is a process the bench started; all are stopped on exit.
type proc struct {
	name string
	cmd  *exec.Cmd
}

type procs []*proc

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
		}
	}
}

func run(ctx context.Context, o options) error {
	if _, err := exec.LookPath("nginx"); err != nil && o.only["nginx"] {
		return errors.New("nginx is not installed: run tests/bench/run, which installs it (apt-get install nginx)")
	}
	dir, err := os.MkdirTemp("", "gateway-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for _, b := range []struct{ out, pkg string }{{"handler", "./handler"}, {"aoaisim", "./tests/aoaisim/cmd/aoaisim"}, {"goproxy", "./tests/bench/goproxy"}} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b.out), b.pkg)
		cmd.Dir, cmd.Stdout, cmd.Stderr = repoRoot(), os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build %s: %w", b.pkg, err)
		}
	}
	var ps procs
	defer func() { ps.stopAll() }() // a closure: the list is filled after this line

	// The backend: a fake chat deployment answering ~600 bytes at once, or 20 SSE chunks.
	simPort := freePort()
	simCfg := filepath.Join(dir, "sim.json")
	const key = "bench-backend-key"
	os.WriteFile(simCfg, []byte(`{"apiKey":"`+key+`","deployments":{"bench":{"model":"gpt-4o-mini","completionTokens":20}}}`), 0o600)
	if _, err := ps.start("simulator", exec.Command(filepath.Join(dir, "aoaisim"), "-listen", "127.0.0.1:"+simPort, "-config", simCfg), filepath.Join(dir, "sim.log")); err != nil {
		return err
	}
	targets := map[string]string{"direct": "http://127.0.0.1:" + simPort}

	gwPort := freePort()
	routing, _ := json.Marshal(map[string]any{
		"accounts":    map[string]any{"sim": map[string]any{"endpoint": "http://127.0.0.1:" + simPort, "auth": map[string]any{"keyEnv": "BENCH_KEY"}}},
		"deployments": map[string]any{"bench": []any{map[string]any{"account": "sim", "deployment": "bench"}}},
		"clients":     map[string]any{"anonymous": true},
	})
	gwCmd := exec.Command(filepath.Join(dir, "handler"))
	gwCmd.Env = append(os.Environ(), "PORT="+gwPort, "GATEWAY_CONFIG="+string(routing), "BENCH_KEY="+key)
	gw, err := ps.start("gateway", gwCmd, filepath.Join(dir, "gateway.log"))
	if err != nil {
		return err
	}
	targets["gateway"] = "http://127.0.0.1:" + gwPort

	var goproxyPid int
	if o.only["goproxy"] {
		port := freePort()
		gp, err := ps.start("goproxy", exec.Command(filepath.Join(dir, "goproxy"), "-listen", "127.0.0.1:"+port, "-backend", "http://127.0.0.1:"+simPort), filepath.Join(dir, "goproxy.log"))
		if err != nil {
			return err
		}
		targets["goproxy"] = "http://127.0.0.1:" + port
		goproxyPid = gp.cmd.Process.Pid
	}

	var nginxPids func() []int
	if o.only["nginx"] {
		ngPort := freePort()
		conf := nginxConf(dir, simPort, ngPort)
		os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o600)
		ng, err := ps.start("nginx", exec.Command("nginx", "-p", dir, "-c", filepath.Join(dir, "nginx.conf")), filepath.Join(dir, "nginx.out"))
		if err != nil {
			return err
		}
		targets["nginx"] = "http://127.0.0.1:" + ngPort
		nginxPids = func() []int { return append([]int{ng.cmd.Process.Pid}, children(ng.cmd.Process.Pid)...) }
	}
	for name, base := range targets {
		if err := waitReady(ctx, base); err != nil {
			return fmt.Errorf("%s not ready: %w", name, err)
		}
	}

	order := []string{}
	for _, name := range []string{"direct", "gateway", "nginx", "goproxy"} {
		if o.only[name] && targets[name] != "" {
			order = append(order, name)
		}
	}
	fmt.Printf("bench: %s per point, %d round(s), concurrency %v, targets %v; GOMAXPROCS %d, %d CPUs\n",
		o.duration, o.rounds, o.concurrency, order, runtime.GOMAXPROCS(0), runtime.NumCPU())
	fmt.Println("nginx: 1 worker, keepalive 256 to the upstream, proxy_buffering and proxy_request_buffering off, access log to a file;")
	fmt.Println("gateway: its one JSON log line per request to a file; goproxy: net/http's ReverseProxy, tuned, no logging.")

	client := &http.Client{Transport: &http.Transport{
		MaxIdleConns: 4096, MaxIdleConnsPerHost: 1024, IdleConnTimeout: time.Minute, DisableCompression: true,
	}}
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
					pids := []int{}
					switch name {
					case "gateway":
						pids = []int{gw.cmd.Process.Pid}
					case "nginx":
						pids = nginxPids()
					case "goproxy":
						pids = []int{goproxyPid}
					}
					cpu0 := cpuSeconds(pids)
					// A short warm-up opens the connections at this concurrency.
					load(ctx, client, targets[name], c, stream, 300*time.Millisecond)
					cpu0 = cpuSeconds(pids)
					p := load(ctx, client, targets[name], c, stream, o.duration)
					if len(pids) > 0 && p.count > 0 {
						p.cpuPerK = (cpuSeconds(pids) - cpu0) / float64(p.count) * 1000
					}
					results[key2{name, stream, c}] = append(results[key2{name, stream, c}], p)
					fmt.Fprintf(os.Stderr, "  round %d %-7s stream=%-5v c=%-3d %8.0f req/s  p50 %6.2f ms  p99 %7.2f ms  errors %d\n",
						round+1, name, stream, c, p.rps, ms(p.p50), ms(p.p99), p.errors)
				}
			}
		}
	}
	rss := peakRSS(gw.cmd.Process.Pid)
	return report(o, order, results, rss)
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
	ttfb50        time.Duration
	cpuPerK       float64 // CPU seconds per 1,000 requests of the proxy
}

var bodies = map[bool]string{
	false: `{"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one short sentence about gateways."}],"max_tokens":20}`,
	true:  `{"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one short sentence about gateways."}],"max_tokens":20,"stream":true}`,
}

// load runs a closed loop of c workers for d and measures every request.
func load(ctx context.Context, client *http.Client, base string, c int, stream bool, d time.Duration) point {
	url := base + "/openai/deployments/bench/chat/completions?api-version=2024-10-21"
	body := bodies[stream]
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
				t0 := time.Now()
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("api-key", "bench-backend-key")
				resp, err := client.Do(req)
				if err != nil {
					myErrs++
					continue
				}
				first := time.Duration(0)
				total := 0
				ok := resp.StatusCode == 200
				var tail []byte
				for {
					n, err := resp.Body.Read(buf)
					if n > 0 && first == 0 {
						first = time.Since(t0)
					}
					total += n
					if n > 0 { // keep the stream's last bytes, however the reads split them
						tail = append(tail, buf[max(0, n-16):n]...)
						tail = tail[max(0, len(tail)-16):]
					}
					if err != nil {
						if err != io.EOF {
							ok = false
						}
						break
					}
				}
				resp.Body.Close()
				if stream && !strings.HasSuffix(string(tail), "[DONE]\n\n") {
					ok = false
				}
				if !ok {
					myErrs++
					continue
				}
				myLat = append(myLat, time.Since(t0))
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

func waitReady(ctx context.Context, base string) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("timed out")
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
  upstream sim { server 127.0.0.1:%[2]s; keepalive 256; }
  server {
    listen 127.0.0.1:%[3]s;
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

// children lists the direct children of pid (nginx's worker).
func children(pid int) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// cpuSeconds sums user and system CPU time of the processes, from /proc.
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

// peakRSS is the process's high-water resident set size in MiB.
func peakRSS(pid int) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
