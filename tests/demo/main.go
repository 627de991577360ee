// Command demo shows the gateway at work on embedded defaults: three simulated Azure OpenAI
// regions (a small 1,000-TPM primary, a 40,000-TPM secondary and a region that is down),
// in-memory state, and a burst of traffic whose routing it draws live in the terminal. It then
// leaves the gateway running for curl until Ctrl-C.
//
//	go run ./tests/demo
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aoai-failover/gateway/tests/aoaisim"
)

type regionSpec struct {
	account, name, deployment string
	cfg                       aoaisim.Deployment
	priority, weight          int
}

var regions = []regionSpec{
	{"swc", "Sweden Central", "micro", aoaisim.Deployment{Model: "gpt-4o-mini", TPM: 1000, TimeToFirstToken: ms(150), PerToken: ms(6)}, 1, 1},
	{"frc", "France Central", "gpt-4o-mini", aoaisim.Deployment{Model: "gpt-4o-mini", TPM: 40000, TimeToFirstToken: ms(200), PerToken: ms(6)}, 2, 1},
	{"uks", "UK South", "gpt-4o-mini", aoaisim.Deployment{Model: "gpt-4o-mini", TPM: 40000, Fault: "503"}, 2, 1},
}

func ms(n int) aoaisim.Duration { return aoaisim.Duration(time.Duration(n) * time.Millisecond) }

func main() {
	port := flag.Int("port", 8080, "port for the gateway (a free one is chosen if it is taken)")
	requests := flag.Int("requests", 80, "requests in the burst")
	concurrency := flag.Int("concurrency", 4, "requests in flight at once")
	exit := flag.Bool("exit", false, "stop after the burst instead of leaving the gateway running")
	flag.Parse()
	if err := run(*port, *requests, *concurrency, !*exit); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(port, requests, concurrency int, keepRunning bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The simulated regions, each its own Azure OpenAI account with its own key.
	env := map[string]string{}
	accounts := map[string]any{}
	var targets []any
	sims := map[string]*aoaisim.Simulator{}
	for _, r := range regions {
		key := fmt.Sprintf("demo-key-%s-%08x", r.account, rand.Uint32())
		sim, srv, err := aoaisim.Start(aoaisim.Config{APIKey: key, Region: r.name, Deployments: map[string]aoaisim.Deployment{r.deployment: r.cfg}})
		if err != nil {
			return fmt.Errorf("start simulated region %s: %w", r.name, err)
		}
		defer srv.Close()
		sims[r.account] = sim
		keyEnv := "DEMO_KEY_" + strings.ToUpper(r.account)
		env[keyEnv] = key
		accounts[r.account] = map[string]any{"endpoint": srv.URL, "region": r.name, "auth": map[string]any{"keyEnv": keyEnv}}
		targets = append(targets, map[string]any{"account": r.account, "deployment": r.deployment, "priority": r.priority, "weight": r.weight})
	}
	doc, _ := json.Marshal(map[string]any{
		"accounts":    accounts,
		"deployments": map[string]any{"chat": targets},
		"clients":     map[string]any{"anonymous": true},
	})
	env["GATEWAY_CONFIG"] = string(doc)
	env["PORT"] = fmt.Sprint(freePortOr(port))

	// The gateway itself: the real binary, started as a container or the Functions host would
	// start it, logging to a file so that the terminal stays readable.
	base, stopGateway, err := startGateway(env)
	if err != nil {
		return err
	}
	defer stopGateway()

	d := newDashboard(base, sims, isTerminal())
	fmt.Printf("Azure OpenAI failover gateway demo: gateway on %s, logs in %s\n", base, logPath())
	fmt.Printf("Logical deployment \"chat\" = swc/micro (priority 1, 1,000 TPM), then, at priority 2 with equal weights,\n")
	fmt.Printf("frc/gpt-4o-mini (40,000 TPM) and uks/gpt-4o-mini (region down). %d requests, %d at a time.\n\n", requests, concurrency)

	burstCtx, endBurst := context.WithCancel(ctx)
	drawDone := make(chan struct{})
	go func() { d.loop(burstCtx); close(drawDone) }()
	d.burst(burstCtx, requests, concurrency)
	endBurst()
	<-drawDone
	d.summary()

	if d.errs > 0 {
		return fmt.Errorf("%d requests did not get a complete answer", d.errs)
	}
	if keepRunning && ctx.Err() == nil {
		fmt.Printf("\nThe gateway keeps running on %s. Try it:\n\n", base)
		fmt.Printf("  curl -si '%s/openai/deployments/chat/chat/completions?api-version=2024-10-21' \\\n"+
			"    -H 'content-type: application/json' \\\n"+
			"    -d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hello!\"}],\"max_tokens\":30}'\n\n", base)
		fmt.Printf("  curl -s %s/status        # every target's state\n\nCtrl-C to stop.\n", base)
		<-ctx.Done()
	}
	return nil
}

func logPath() string { return filepath.Join(os.TempDir(), "aoai-gateway-demo.log") }

// startGateway builds ./handler and runs it with env, waiting for GET / to answer.
func startGateway(env map[string]string) (base string, stop func(), err error) {
	dir, err := os.MkdirTemp("", "aoai-gateway-demo-")
	if err != nil {
		return "", nil, err
	}
	bin := filepath.Join(dir, "handler")
	build := exec.Command("go", "build", "-o", bin, "./handler")
	build.Dir = repoRoot()
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	fmt.Println("Building the gateway (go build ./handler)...")
	if err := build.Run(); err != nil {
		return "", nil, fmt.Errorf("build the gateway: %w", err)
	}
	logFile, err := os.Create(logPath())
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start the gateway: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(25 * time.Second):
			_ = cmd.Process.Kill()
		}
		logFile.Close()
		os.RemoveAll(dir)
	}
	base = "http://127.0.0.1:" + env["PORT"]
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-exited:
			logFile.Close()
			b, _ := os.ReadFile(logPath())
			return "", nil, fmt.Errorf("the gateway exited (%v):\n%s", err, b)
		default:
		}
		if resp, err := http.Get(base + "/"); err == nil {
			resp.Body.Close()
			return base, stop, nil
		}
	}
	stop()
	return "", nil, errors.New("the gateway did not become ready within 15s")
}

func repoRoot() string {
	// go run is started from the repository (the README says so); find it from here upward.
	dir, _ := os.Getwd()
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "host.json")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

func freePortOr(port int) int {
	if port > 0 {
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			ln.Close()
			return port
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return port
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func isTerminal() bool {
	fi, err := os.Stdout.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb"
}

// dashboard keeps what the demo shows and draws it.
type dashboard struct {
	base   string
	sims   map[string]*aoaisim.Simulator
	tty    bool
	client *http.Client
	start  time.Time

	mu        sync.Mutex
	sent, ok  int
	errs      int
	failovers int
	served    map[string]int
	latencies []time.Duration
	events    []string // recent requests
	changes   []string // recent target state changes
	lastState map[string]string
	seen429   map[string]int
	status    map[string]targetStatus
	lines     int
}

type targetStatus struct {
	Target         string     `json:"target"`
	State          string     `json:"state"`
	ThrottledUntil *time.Time `json:"throttledUntil"`
	FailingUntil   *time.Time `json:"failingUntil"`
	LastStatus     int        `json:"lastStatus"`
	Remaining      *int64     `json:"remainingTokens"`
}

func newDashboard(base string, sims map[string]*aoaisim.Simulator, tty bool) *dashboard {
	return &dashboard{
		base: base, sims: sims, tty: tty, start: time.Now(),
		client:    &http.Client{Timeout: 60 * time.Second},
		served:    map[string]int{},
		lastState: map[string]string{},
		seen429:   map[string]int{},
		status:    map[string]targetStatus{},
	}
}

// event records a line for the "requests" list, or with stateChange for the "targets" list.
func (d *dashboard) event(stateChange bool, format string, args ...any) {
	line := time.Now().Format("15:04:05.000") + "  " + fmt.Sprintf(format, args...)
	d.mu.Lock()
	list := &d.events
	if stateChange {
		list = &d.changes
	}
	*list = append(*list, line)
	if len(*list) > 6 {
		*list = (*list)[len(*list)-6:]
	}
	d.mu.Unlock()
	if !d.tty {
		fmt.Println(line)
	}
}

// burst sends the requests, streaming and not, with think time between them: about 3.3 a
// second at 4 at a time, which the 40,000-TPM secondary's request quota (240 a minute, counted
// in 10 s buckets of 40, as Azure OpenAI does) absorbs when the primary is throttled and the
// third region down. Faster, and every region would be throttled or failing at once.
func (d *dashboard) burst(ctx context.Context, n, concurrency int) {
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				d.one(ctx, i)
				select {
				case <-ctx.Done():
				case <-time.After(time.Duration(700+rand.IntN(400)) * time.Millisecond):
				}
			}
		}()
	}
	for i := 1; i <= n && ctx.Err() == nil; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
}

var prompts = []string{
	"Summarise the benefits of running Azure OpenAI in several regions.",
	"Write a haiku about a gateway that never drops a request.",
	"Explain HTTP 429 and Retry-After to a new engineer in two sentences.",
	"List three reasons a regional deployment might be throttled.",
}

func (d *dashboard) one(ctx context.Context, i int) {
	stream := i%2 == 0
	body, _ := json.Marshal(map[string]any{
		"messages":   []any{map[string]any{"role": "user", "content": prompts[i%len(prompts)] + strings.Repeat(" Be concise.", 10)}},
		"max_tokens": 60,
		"stream":     stream,
	})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, d.base+"/openai/deployments/chat/chat/completions?api-version=2024-10-21", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	d.mu.Lock()
	d.sent++
	d.mu.Unlock()
	start := time.Now()
	resp, err := d.client.Do(req)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			d.mu.Lock()
			d.errs++
			d.mu.Unlock()
			d.event(false, "#%-3d error: %v", i, err)
		}
		return
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	elapsed := time.Since(start)
	by, attempts := resp.Header.Get("x-served-by"), resp.Header.Get("x-gateway-attempts")
	complete := resp.StatusCode == 200 && (!stream || bytes.HasSuffix(text, []byte("data: [DONE]\n\n")))
	kind := "plain "
	if stream {
		kind = "stream"
	}
	d.mu.Lock()
	if complete {
		d.ok++
		d.served[by]++
		d.latencies = append(d.latencies, elapsed)
	} else {
		d.errs++
	}
	if attempts != "1" {
		d.failovers++
	}
	d.mu.Unlock()
	switch {
	case !complete:
		d.event(false, "#%-3d %s  HTTP %d from the gateway after %s attempts", i, kind, resp.StatusCode, attempts)
	case attempts != "1":
		d.event(false, "#%-3d %s  served by %-16s after %s attempts  (%d ms)", i, kind, by, attempts, elapsed.Milliseconds())
	default:
		d.event(false, "#%-3d %s  served by %-16s  (%d ms)", i, kind, by, elapsed.Milliseconds())
	}
}

// loop polls /status for state changes and redraws until ctx ends.
func (d *dashboard) loop(ctx context.Context) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastPlain := time.Now()
	for {
		d.poll()
		if d.tty {
			d.draw()
		} else if time.Since(lastPlain) > 5*time.Second {
			lastPlain = time.Now()
			fmt.Print(d.table())
		}
		select {
		case <-ctx.Done():
			d.poll()
			if d.tty {
				d.draw()
			}
			return
		case <-tick.C:
		}
	}
}

func (d *dashboard) poll() {
	resp, err := d.client.Get(d.base + "/status")
	if err != nil {
		return
	}
	defer resp.Body.Close()
	var st struct {
		Deployments map[string][]struct {
			State targetStatus `json:"state"`
		} `json:"deployments"`
	}
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return
	}
	now := time.Now()
	for _, e := range st.Deployments["chat"] {
		s := e.State
		// 429s are counted at the simulated region itself, so even a throttle shorter than this
		// poll's interval is shown.
		account, dep, _ := strings.Cut(s.Target, "/")
		throttled := d.sims[account].Stats()[dep].Throttled
		d.mu.Lock()
		prev := d.lastState[s.Target]
		new429 := throttled > d.seen429[s.Target]
		d.seen429[s.Target] = throttled
		d.lastState[s.Target] = s.State
		d.status[s.Target] = s
		d.mu.Unlock()
		if new429 && s.State != "throttled" {
			d.event(true, "%s throttled (429): skipped until its quota window moved on (already over)", s.Target)
		}
		if prev == s.State || (prev == "" && s.State == "available") {
			continue
		}
		switch s.State {
		case "throttled":
			d.event(true, "%s throttled (429): skipped by every request for %s", s.Target, until(s.ThrottledUntil, now))
		case "failing":
			d.event(true, "%s failing (HTTP %d): circuit open, skipped for %s", s.Target, s.LastStatus, until(s.FailingUntil, now))
		case "probing":
			d.event(true, "%s cool-down over: the next request probes it", s.Target)
		case "available":
			d.event(true, "%s available again", s.Target)
		}
	}
}

func until(t *time.Time, now time.Time) string {
	if t == nil {
		return "?"
	}
	return t.Sub(now).Round(100 * time.Millisecond).String()
}

func (d *dashboard) table() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	var b strings.Builder
	fmt.Fprintf(&b, "t=%5.1fs  sent %d  answered %d  errors %d  failed over %d\n", now.Sub(d.start).Seconds(), d.sent, d.ok, d.errs, d.failovers)
	fmt.Fprintf(&b, "  %-17s %-15s %-4s %-17s %7s %6s %6s %9s\n", "target", "region", "prio", "state", "served", "429s", "5xx", "tokens")
	for _, r := range regions {
		id := r.account + "/" + r.deployment
		s := d.status[id]
		state := s.State
		switch state {
		case "throttled":
			state = "throttled " + until(s.ThrottledUntil, now)
		case "failing":
			state = "failing " + until(s.FailingUntil, now)
		case "":
			state = "available"
		}
		stats := d.sims[r.account].Stats()[r.deployment]
		tokens := "-"
		if s.Remaining != nil {
			tokens = fmt.Sprint(*s.Remaining)
		}
		share := ""
		if d.ok > 0 {
			share = fmt.Sprintf(" %3.0f%%", 100*float64(d.served[id])/float64(d.ok))
		}
		fmt.Fprintf(&b, "  %-17s %-15s %-4d %-17s %7s %6d %6d %9s\n", id, r.name, r.priority, state,
			fmt.Sprint(d.served[id])+share, stats.Throttled, stats.Faulted, tokens)
	}
	return b.String()
}

// draw repaints the table and recent events in place.
func (d *dashboard) draw() {
	var b strings.Builder
	b.WriteString(d.table())
	d.mu.Lock()
	for _, part := range []struct {
		title string
		lines []string
	}{{"target state changes", d.changes}, {"recent requests", d.events}} {
		b.WriteString("  " + part.title + ":\n")
		for _, e := range part.lines {
			b.WriteString("   " + e + "\n")
		}
		for i := len(part.lines); i < 6; i++ {
			b.WriteString("\n")
		}
	}
	up := d.lines
	d.lines = strings.Count(b.String(), "\n")
	d.mu.Unlock()
	if up > 0 {
		fmt.Printf("\x1b[%dA", up)
	}
	fmt.Print(strings.ReplaceAll(b.String(), "\n", "\x1b[K\n"))
}

func (d *dashboard) summary() {
	d.mu.Lock()
	defer d.mu.Unlock()
	lat := append([]time.Duration(nil), d.latencies...)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p50 := time.Duration(0)
	if len(lat) > 0 {
		p50 = lat[len(lat)/2]
	}
	fmt.Printf("\nSummary: %d requests, %d complete answers, %d errors, in %.1fs (p50 %d ms).\n",
		d.sent, d.ok, d.errs, time.Since(d.start).Seconds(), p50.Milliseconds())
	fmt.Printf("%d requests needed more than one attempt; their callers still got a complete answer.\n", d.failovers)
	for _, r := range regions {
		id := r.account + "/" + r.deployment
		st := d.sims[r.account].Stats()[r.deployment]
		fmt.Printf("  %-17s served %3d   answered 429 %2d times, failed %2d times (of %d requests that reached it)\n",
			id, d.served[id], st.Throttled, st.Faulted, st.Requests)
	}
	fmt.Println("A throttled or failing target is marked once and then skipped by every request until it frees up,")
	fmt.Println("so the primary's 429s and the failing region's 503s stay few however much traffic flows.")
}
