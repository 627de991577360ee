// Command demo shows the gateway at work on embedded defaults: three simulated Azure OpenAI
// regions (a small 1,000-TPM primary, a 40,000-TPM secondary and a region that is down),
// in-memory state, and a burst of traffic whose routing it draws live in the terminal. It then
// leaves the gateway running for curl until Ctrl-C, which prints the summary and exits 0.
//
// It is a program, not a test (demo_test.go runs it). The gateway listens on 127.0.0.1 only,
// with anonymous callers, unless -listen says otherwise; its log goes to a new file per run.
//
//	go run ./tests/demo [-listen 127.0.0.1:8080] [-requests 80] [-concurrency 4] [-exit]
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
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
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
	listen := flag.String("listen", "127.0.0.1:8080", "where the gateway listens: 127.0.0.1:PORT (this machine only), or :PORT for every interface (anyone who reaches the machine can call it: callers are anonymous); a free port is chosen if PORT is taken, or 0")
	port := flag.Int("port", 8080, "the port of -listen, when given (0: any free port)")
	requests := flag.Int("requests", 80, "requests in the burst")
	concurrency := flag.Int("concurrency", 4, "requests in flight at once")
	exit := flag.Bool("exit", false, "stop after the burst instead of leaving the gateway running")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: go run ./tests/demo [flags]\n\nThe gateway in front of three simulated Azure OpenAI regions, a burst of traffic drawn live, then the gateway left running for curl until Ctrl-C.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "demo: unexpected argument %q\n", flag.Arg(0))
		flag.Usage()
		os.Exit(2)
	}
	portSet := false
	flag.Visit(func(f *flag.Flag) { portSet = portSet || f.Name == "port" })
	if !portSet {
		*port = -1 // -listen's own
	}
	l, err := parseListen(*listen, *port)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}
	if err := run(l, *requests, *concurrency, !*exit); errors.Is(err, errInterrupted) {
		fmt.Println("\nCtrl-C: stopped before the gateway was up.")
	} else if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// listenSpec is where the gateway is to listen. The handler listens on 127.0.0.1 when started as
// the Functions host starts it (FUNCTIONS_CUSTOMHANDLER_PORT) and on every interface with PORT;
// nothing else, so those are the two choices.
type listenSpec struct {
	all  bool // every interface, else 127.0.0.1
	port int  // 0: any free port
}

func parseListen(addr string, port int) (listenSpec, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return listenSpec{}, fmt.Errorf("-listen %q: want 127.0.0.1:PORT or :PORT", addr)
	}
	var l listenSpec
	switch host {
	case "127.0.0.1", "localhost":
	case "", "0.0.0.0", "::":
		l.all = true
	default:
		if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() && ip.Is4() {
			break
		}
		return listenSpec{}, fmt.Errorf("-listen %q: the gateway listens either on 127.0.0.1 (127.0.0.1:PORT) or on every interface (:PORT), not on %s alone", addr, host)
	}
	if l.port, err = strconv.Atoi(p); err != nil || l.port < 0 || l.port > 65535 {
		return listenSpec{}, fmt.Errorf("-listen %q: %q is not a port", addr, p)
	}
	if port >= 0 {
		if port > 65535 {
			return listenSpec{}, fmt.Errorf("-port %d is not a port", port)
		}
		l.port = port
	}
	return l, nil
}

// errInterrupted: Ctrl-C (or SIGTERM) came before there was anything to show.
var errInterrupted = errors.New("interrupted")

func run(l listenSpec, requests, concurrency int, keepRunning bool) error {
	// Ctrl-C interrupts the terminal's foreground process group: this program takes it for
	// itself (see ownForeground), and starts the gateway in a group of its own, so that Ctrl-C
	// reaches only this program, which prints the summary, stops the gateway and exits 0.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer ownForeground()()

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
	port := fmt.Sprint(freePortOr(l))
	if l.all {
		env["PORT"] = port
	} else {
		env["FUNCTIONS_CUSTOMHANDLER_PORT"] = port // the handler then listens on 127.0.0.1 only
	}

	// The gateway itself: the real binary, started as a container or the Functions host would
	// start it, logging to a file of this run's own so that the terminal stays readable.
	logFile, err := os.CreateTemp("", "aoai-gateway-demo-*.log")
	if err != nil {
		return err
	}
	g, err := startGateway(ctx, env, logFile)
	if err != nil {
		if fi, e := os.Stat(logFile.Name()); e == nil && fi.Size() == 0 {
			os.Remove(logFile.Name()) // nothing was logged: not worth keeping
		}
		return err
	}
	defer g.stop()

	// Said from the address the gateway itself reported.
	where := fmt.Sprintf("listening on %s, every interface: anyone who can reach this machine can call it", g.addr)
	if ap, err := netip.ParseAddrPort(g.addr); err == nil && ap.Addr().IsLoopback() {
		where = fmt.Sprintf("listening on %s, this machine only", g.addr)
	}
	fmt.Printf("Azure OpenAI failover gateway demo: the gateway is %s (anonymous callers).\n", where)
	fmt.Printf("Its log: %s\n", logFile.Name())
	fmt.Printf("Logical deployment \"chat\" = swc/micro (priority 1, 1,000 TPM, so 6 requests a minute), then, at priority 2\n")
	fmt.Printf("with equal weights, frc/gpt-4o-mini (40,000 TPM) and uks/gpt-4o-mini (region down). %d requests, %d at a time.\n\n", requests, concurrency)

	d := newDashboard(g.base, sims, isTerminal())
	burstCtx, endBurst := context.WithCancel(ctx)
	drawDone := make(chan struct{})
	go func() { d.loop(burstCtx); close(drawDone) }()
	d.burst(burstCtx, requests, concurrency)
	endBurst()
	<-drawDone
	d.mu.Lock()
	d.end = time.Now()
	d.mu.Unlock()
	interrupted := ctx.Err() != nil
	if interrupted {
		fmt.Printf("\nCtrl-C: the burst stopped after %d of %d requests.\n", d.sentCount(), requests)
	}
	d.summary()

	if keepRunning && !interrupted && d.errs == 0 {
		fmt.Printf("\nThe gateway keeps running on %s. Try it:\n\n", g.base)
		fmt.Printf("  curl -si '%s/openai/deployments/chat/chat/completions?api-version=2024-10-21' \\\n"+
			"    -H 'content-type: application/json' \\\n"+
			"    -d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hello!\"}],\"max_tokens\":30}'\n\n", g.base)
		fmt.Printf("  curl -s %s/status        # every target's state (a browser gets a page)\n\nCtrl-C to stop.\n", g.base)
		select {
		case <-ctx.Done():
			fmt.Printf("\nCtrl-C: stopping the gateway.\n")
			d.summary()
		case err := <-g.exited:
			return fmt.Errorf("the gateway exited (%v); its log: %s", err, logFile.Name())
		}
	}
	g.stop()
	fmt.Printf("The gateway's log: %s\n", logFile.Name())
	if d.errs > 0 {
		return fmt.Errorf("%d requests did not get a complete answer", d.errs)
	}
	return nil
}

// gatewayProc is the running handler.
type gatewayProc struct {
	base, addr string // base URL to call it on; the address it reported listening on
	exited     chan error
	stop       func()
}

// startGateway builds ./handler and runs it with env, logging to logFile, until it says where it
// listens and answers GET /.
func startGateway(ctx context.Context, env map[string]string, logFile *os.File) (*gatewayProc, error) {
	dir, err := os.MkdirTemp("", "aoai-gateway-demo-")
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(dir, "handler")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./handler")
	build.Dir = repoRoot()
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	ownGroup(build) // Ctrl-C is this program's to handle
	fmt.Println("Building the gateway (go build ./handler)...")
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		if ctx.Err() != nil {
			return nil, errInterrupted
		}
		return nil, fmt.Errorf("build the gateway: %w", err)
	}
	cmd := exec.Command(bin)
	for _, kv := range os.Environ() {
		// The listen address is the demo's to set, whatever this shell has.
		if !strings.HasPrefix(kv, "PORT=") && !strings.HasPrefix(kv, "FUNCTIONS_CUSTOMHANDLER_PORT=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	ownGroup(cmd)
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start the gateway: %w", err)
	}
	g := &gatewayProc{exited: make(chan error, 1)}
	go func() { g.exited <- cmd.Wait() }()
	var once sync.Once
	g.stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-g.exited:
			case <-time.After(25 * time.Second):
				_ = cmd.Process.Kill()
			}
			logFile.Close()
			os.RemoveAll(dir)
		})
	}
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-g.exited:
			logFile.Close()
			os.RemoveAll(dir)
			b, _ := os.ReadFile(logFile.Name())
			return nil, fmt.Errorf("the gateway exited (%v):\n%s", err, b)
		case <-ctx.Done():
			g.stop()
			return nil, errInterrupted
		default:
		}
		if g.addr == "" {
			if g.addr = listeningOn(logFile.Name()); g.addr == "" {
				continue
			}
			_, port, _ := net.SplitHostPort(g.addr)
			g.base = "http://127.0.0.1:" + port
		}
		if resp, err := http.Get(g.base + "/"); err == nil {
			resp.Body.Close()
			return g, nil
		}
	}
	g.stop()
	return nil, errors.New("the gateway did not become ready within 15s")
}

// listeningOn is the address the gateway's log says it listens on, "" until it has said so.
// The demo calls it on 127.0.0.1 in either case.
func listeningOn(logPath string) string {
	b, _ := os.ReadFile(logPath)
	for _, line := range strings.Split(string(b), "\n") {
		var e struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "gateway listening" && e.Addr != "" {
			return e.Addr
		}
	}
	return ""
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

// freePortOr returns l's port if it is free (on the interfaces l names), else a free one.
func freePortOr(l listenSpec) int {
	host := "127.0.0.1"
	if l.all {
		host = ""
	}
	if l.port > 0 {
		if ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(l.port))); err == nil {
			ln.Close()
			return l.port
		}
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return l.port
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
	cancelled int // in flight when Ctrl-C stopped the burst
	failovers int // complete answers that took more than one attempt
	end       time.Time
	served    map[string]int
	latencies []time.Duration
	events    []string // recent requests
	changes   []string // recent target state changes
	lastState map[string]string
	seen429   map[string]int
	status    map[string]targetStatus
	lastPoll  time.Time
	lines     int
}

// targetStatus is what the demo reads of a target in the gateway's GET /status.
type targetStatus struct {
	Target             string     `json:"target"`
	State              string     `json:"state"` // available, deprioritised, throttled, failing, probing
	ThrottledUntil     *time.Time `json:"throttledUntil"`
	FailingUntil       *time.Time `json:"failingUntil"`
	DeprioritisedUntil *time.Time `json:"deprioritisedUntil"`
	LastStatus         int        `json:"lastStatus"`
	Remaining          *int64     `json:"remainingTokens"`
	RemainingRequests  *int64     `json:"remainingRequests"`
}

func (d *dashboard) sentCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sent
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
	var text []byte
	if err == nil {
		text, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if ctx.Err() != nil { // Ctrl-C: this request was cut short by the demo, not the gateway
		d.mu.Lock()
		d.cancelled++
		d.mu.Unlock()
		return
	}
	if resp == nil {
		d.mu.Lock()
		d.errs++
		d.mu.Unlock()
		d.event(false, "#%-3d error: %v", i, err)
		return
	}
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
		if attempts != "1" {
			d.failovers++
		}
	} else {
		d.errs++
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
	// 429s are counted at the simulated regions themselves, so that a throttle shorter than the
	// poll's interval is shown too. They are read before /status, so that a 429 counted here has
	// reached the gateway's state by the time /status is read.
	throttled := map[string]int{}
	for _, r := range regions {
		throttled[r.account+"/"+r.deployment] = d.sims[r.account].Stats()[r.deployment].Throttled
	}
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
	d.mu.Lock()
	since := now.Sub(d.lastPoll)
	d.lastPoll = now
	d.mu.Unlock()
	for _, e := range st.Deployments["chat"] {
		s := e.State
		d.mu.Lock()
		prev := d.lastState[s.Target]
		new429 := throttled[s.Target] > d.seen429[s.Target]
		d.seen429[s.Target] = throttled[s.Target]
		d.lastState[s.Target] = s.State
		d.status[s.Target] = s
		d.mu.Unlock()
		if new429 && s.State != "throttled" {
			// The 429's wait ended between two looks at /status.
			d.event(true, "%s throttled (429) briefly: skipped for less than %s, until its quota window turned", s.Target,
				(since + 50*time.Millisecond).Round(100*time.Millisecond))
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
		case "deprioritised":
			d.event(true, "%s deprioritised: %s, so requests try it after the others for %s", s.Target, budget(s), until(s.DeprioritisedUntil, now))
		case "available":
			if prev == "deprioritised" {
				d.event(true, "%s available again: its budget's window has passed", s.Target)
			} else {
				d.event(true, "%s available again", s.Target)
			}
		}
	}
}

// budget says what a deprioritised target's last answer reported.
func budget(s targetStatus) string {
	if s.RemainingRequests != nil && *s.RemainingRequests == 0 {
		return "its last answer said no requests are left in this 10 s window"
	}
	if s.Remaining != nil {
		return fmt.Sprintf("its last answer said only %d tokens are left this minute", *s.Remaining)
	}
	return "its last answer reported a low remaining budget"
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
	fmt.Fprintf(&b, "  %-17s %-15s %-4s %-19s %8s %5s %5s %11s %9s\n", "target", "region", "prio", "state", "served", "429s", "5xx", "tokens left", "reqs left")
	for _, r := range regions {
		id := r.account + "/" + r.deployment
		s := d.status[id]
		state := s.State
		switch state {
		case "throttled":
			state = "throttled " + until(s.ThrottledUntil, now)
		case "failing":
			state = "failing " + until(s.FailingUntil, now)
		case "deprioritised":
			state = "deprioritised " + until(s.DeprioritisedUntil, now)
		case "":
			state = "available"
		}
		stats := d.sims[r.account].Stats()[r.deployment]
		tokens, reqs := "-", "-"
		if s.Remaining != nil {
			tokens = fmt.Sprint(*s.Remaining)
		}
		if s.RemainingRequests != nil {
			reqs = fmt.Sprint(*s.RemainingRequests)
		}
		share := ""
		if d.ok > 0 {
			share = fmt.Sprintf(" %3.0f%%", 100*float64(d.served[id])/float64(d.ok))
		}
		fmt.Fprintf(&b, "  %-17s %-15s %-4d %-19s %8s %5d %5d %11s %9s\n", id, r.name, r.priority, state,
			fmt.Sprint(d.served[id])+share, stats.Throttled, stats.Faulted, tokens, reqs)
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
	if d.end.IsZero() {
		d.end = time.Now()
	}
	cut := ""
	if d.cancelled > 0 {
		cut = fmt.Sprintf(" (%d more were cut short by Ctrl-C)", d.cancelled)
	}
	fmt.Printf("\nSummary: %d requests, %d complete answers, %d errors%s, in %.1fs (p50 %d ms).\n",
		d.sent-d.cancelled, d.ok, d.errs, cut, d.end.Sub(d.start).Seconds(), p50.Milliseconds())
	fmt.Printf("%d requests needed more than one attempt; their callers still got a complete answer.\n", d.failovers)
	for _, r := range regions {
		id := r.account + "/" + r.deployment
		st := d.sims[r.account].Stats()[r.deployment]
		fmt.Printf("  %-17s served %3d   answered 429 %2d times, failed %2d times (of %d requests that reached it)\n",
			id, d.served[id], st.Throttled, st.Faulted, st.Requests)
	}
	fmt.Println("A throttled or failing target is marked once and then skipped by every request until it frees up,")
	fmt.Println("so the primary's 429s and the failing region's 503s stay few however much traffic flows; a target")
	fmt.Println("whose last answer said its budget is spent (the primary: 1 request per 10 s) is deprioritised, tried")
	fmt.Println("after the others, until that budget's window has passed.")
}
