// Command fleetbench measures how much of several regions' quota a failover gateway turns into
// served traffic, against an oracle on the same arrival trace (issue 16, point 4).
//
// Three simulated regions (tests/aoaisim with a Quota: Azure's admission rules, tokens and
// requests per window refilling continuously, charged at len(body)/4 + max_tokens, exact
// retry-after-ms, x-ratelimit-remaining-* on every answer) sit behind one logical deployment in
// priority order. Open-loop Poisson arrivals at each load (a multiple of the regions' combined
// capacity; one seeded trace per load) are replayed identically against:
//   - oracle: in process, on a virtual clock with the regions' own rules: each request goes to
//     the first region in priority order that can admit it at that instant, never to a full one;
//   - oracle-wait: the same, but a request no region can admit waits up to -oracle-wait for the
//     first region that frees;
//   - naive: a stateless proxy trying the regions in order on every request;
//   - gateway: the built handler binary, started as the Functions host starts it, 1 or more
//     instances (more than one share state through Azurite), arrivals round robin;
//   - gateway-wait: the same with the gateway's admission wait, if it has such a setting.
//
// Time may be scaled (-scale 6: a 10 s window); every gateway setting that carries a time the
// scaling touches is scaled with it. See tests/README.md, "Fleet capacity".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aoai-failover/gateway/tests/azurite"
)

type options struct {
	scale      float64
	loads      []float64
	instances  []int
	systems    []string
	quotas     []int
	warmup     time.Duration // 0: default
	duration   time.Duration // measured span per run; 0: default
	seed       uint64
	oracleWait time.Duration // real time
	gwWait     time.Duration // real time
	firstToken time.Duration // real time
	perToken   time.Duration // real time
	completion int
	quick      bool
	localState bool
	handler    string
	repo       string
	csv        string
	publish    bool
	constants  bool
	waitPath   string
	sets       []setting
}

var allSystems = []string{"oracle", "oracle-wait", "naive", "gateway", "gateway-wait"}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("fleetbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := options{}
	scale := fs.Float64("scale", 6, "time scale: 1 is real time (Azure's 60 s window), 6 divides every time by 6 (a 10 s window)")
	loads := fs.String("loads", "0.5,0.9,1.5", "offered loads, as multiples of the regions' combined capacity")
	instances := fs.String("instances", "1,4", "gateway instance counts; more than one share state through Azurite")
	systems := fs.String("systems", strings.Join(allSystems, ","), "systems to measure: "+strings.Join(allSystems, ", "))
	quotas := fs.String("quotas", "600000,300000,150000", "each region's tokens per minute (per window), in priority order")
	fs.DurationVar(&o.warmup, "warmup", 0, "traffic before measuring, on the run's clock (default one window; -quick 0.3 window)")
	fs.DurationVar(&o.duration, "duration", 0, "measured span of each run, on the run's clock (default 2.5 windows; -quick half a window)")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the arrival traces")
	fs.DurationVar(&o.oracleWait, "oracle-wait", time.Second, "oracle-wait's longest wait, in real time (scaled)")
	fs.DurationVar(&o.gwWait, "gateway-wait", time.Second, "gateway-wait's admission wait setting, in real time (scaled)")
	fs.DurationVar(&o.firstToken, "first-token", 500*time.Millisecond, "regions' time to first token, in real time (scaled)")
	fs.DurationVar(&o.perToken, "per-token", 15*time.Millisecond, "regions' time per output token, in real time (scaled)")
	fs.IntVar(&o.completion, "completion", 150, "output tokens an answer has (at most its max_tokens)")
	fs.BoolVar(&o.quick, "quick", false, "a smoke run: short runs, gateway-wait only above 1x; under 2 minutes")
	fs.BoolVar(&o.localState, "local-state", false, "several instances keep state each on their own instead of sharing it")
	fs.StringVar(&o.handler, "handler", "", "the gateway binary (default: built from the repository's ./handler)")
	fs.StringVar(&o.repo, "repo", "", "the repository's root (default: found from this source file)")
	fs.StringVar(&o.csv, "csv", "", "CSV output (default tests/fleetbench/results/fleet-<time>.csv)")
	fs.BoolVar(&o.constants, "constants", false, "list the time literals in the gateway's routing code (not settings, so not scaled) and exit")
	fs.BoolVar(&o.publish, "publish", false, "also replace the figures in tests/README.md (Fleet capacity)")
	fs.StringVar(&o.waitPath, "wait-path", "", "the admission wait's path in the routing document (default: found in handler/internal/config)")
	fs.Func("set", "path=value: one more gateway setting (a document path, or env:NAME); a duration is real time and scaled; repeatable", func(s string) error {
		st, err := parseSet(s)
		if err == nil {
			o.sets = append(o.sets, st)
		}
		return err
	})
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: go run ./tests/fleetbench [flags]\n\nThe fleet capacity benchmark (tests/README.md). Flags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o.scale = *scale
	if o.scale < 1 || o.scale > 10 {
		// GATEWAY_STATE_REFRESH is 100ms at least: 1 s / 10.
		return o, fmt.Errorf("-scale %v: want 1 to 10", o.scale)
	}
	var err error
	if o.loads, err = floats(*loads); err != nil {
		return o, fmt.Errorf("-loads: %w", err)
	}
	if o.instances, err = ints(*instances); err != nil {
		return o, fmt.Errorf("-instances: %w", err)
	}
	if o.quotas, err = ints(*quotas); err != nil {
		return o, fmt.Errorf("-quotas: %w", err)
	}
	for _, s := range strings.Split(*systems, ",") {
		s = strings.TrimSpace(s)
		if !contains(allSystems, s) {
			return o, fmt.Errorf("-systems: unknown %q (want some of %s)", s, strings.Join(allSystems, ", "))
		}
		o.systems = append(o.systems, s)
	}
	return o, nil
}

func floats(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, v)
	}
	return out, nil
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, v)
	}
	return out, nil
}

func contains[T comparable](l []T, v T) bool {
	for _, e := range l {
		if e == v {
			return true
		}
	}
	return false
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetbench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := runBench(ctx, o, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "fleetbench:", err)
		os.Exit(1)
	}
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// result is a whole benchmark's output.
type result struct {
	rows     []figures
	verdicts []verdict
}

func runBench(ctx context.Context, o options, stdout, stderr io.Writer) (*result, error) {
	if o.repo == "" {
		o.repo = repoRoot()
	}
	if o.constants {
		return nil, listConstants(o.repo, stdout)
	}
	window := scaled(time.Minute, o.scale)
	if o.warmup == 0 {
		o.warmup = window
		if o.quick {
			o.warmup = window * 3 / 10
		}
	}
	if o.duration == 0 {
		o.duration = window * 5 / 2
		if o.quick {
			o.duration = window / 2
		}
	}
	var specs []regionSpec
	capacity := 0
	for i, q := range o.quotas {
		specs = append(specs, regionSpec{name: fmt.Sprintf("r%d", i+1), tpm: q})
		capacity += q
	}
	lat := simLatency{firstToken: scaled(o.firstToken, o.scale), perToken: scaled(o.perToken, o.scale), completion: o.completion}
	drain := 5*time.Second + 2*lat.of(maxOut) + scaled(o.gwWait, o.scale)
	log := func(format string, a ...any) { fprintf(stderr, format+"\n", a...) }

	gateways := contains(o.systems, "gateway") || contains(o.systems, "gateway-wait")
	var bin, label string
	var sets []setting // usable gateway settings, the admission wait's included
	var settingsText string
	waitOK := false
	if gateways {
		if bin = o.handler; bin == "" {
			dir, err := os.MkdirTemp("", "fleetbench-")
			if err != nil {
				return nil, err
			}
			defer os.RemoveAll(dir)
			bin = filepath.Join(dir, "handler")
			log("building the gateway (./handler)")
			build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./handler")
			build.Dir = o.repo
			build.Stdout, build.Stderr = stderr, stderr
			if err := build.Run(); err != nil {
				return nil, fmt.Errorf("build handler: %w", err)
			}
		}
		label = gatewayLabel(o) // now: the code may change during the run
		all, text, err := gatewaySettings(o, bin, specs)
		if err != nil {
			return nil, err
		}
		settingsText = text
		for _, s := range all {
			if s.status == "" {
				sets = append(sets, s)
				waitOK = waitOK || s.why == whyWait
			}
		}
	}

	needAzurite := false
	for _, n := range o.instances {
		needAzurite = needAzurite || (n > 1 && !o.localState && gateways)
	}
	var az *azurite.Table
	if needAzurite {
		tbl, stop, err := startAzurite()
		if err != nil {
			return nil, err
		}
		defer stop()
		az = tbl
	}

	// The plan, and how long it takes.
	realRuns := 0
	for _, load := range o.loads {
		for _, s := range o.systems {
			switch {
			case s == "naive":
				realRuns++
			case s == "gateway-wait" && (!waitOK || (o.quick && load <= 1)):
			case strings.HasPrefix(s, "gateway"):
				realRuns += len(o.instances)
			}
		}
	}
	perRun := o.warmup + o.duration + 2*time.Second
	log("fleetbench: scale 1/%g (window %s), loads %v, regions %v; %d real runs, each %s of warm-up and %s measured: about %s%s",
		o.scale, window, o.loads, o.quotas, realRuns, o.warmup, o.duration,
		(time.Duration(realRuns) * perRun).Round(time.Second), loadAverage())

	var rows []figures
	run := 0
	for _, load := range o.loads {
		trace := makeTrace(o.seed, load, capacity, window, o.warmup+o.duration)
		typical := medianCost(trace)
		from, to := o.warmup, o.warmup+o.duration
		add := func(f figures) {
			f.load = load
			rows = append(rows, f)
			log("  %-12s %-9s %.1fx: utilization %.3f, shares %s, upstream 429/success %.3f, callers' 429s %d/%d, errors %d, sent late by %s (p99)",
				f.system, inst(f), load, f.util, sharesText(f.share), f.per429, f.caller429, f.arrivals, f.errors, f.lag.Round(time.Millisecond))
			if f.errors > 0 {
				log("    first error: %s", f.errSample)
			}
		}
		for _, sys := range o.systems {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			switch sys {
			case "oracle", "oracle-wait":
				wait := time.Duration(0)
				if sys == "oracle-wait" {
					wait = scaled(o.oracleWait, o.scale)
				}
				f := measure(runOracle(trace, specs, window, wait, lat), trace, specs, window, from, to, typical)
				f.system = sys
				add(f)
			case "naive":
				res, err := realRun(ctx, trace, specs, window, lat, drain, func(regions []*region, client *http.Client) (sender, func(), error) {
					return naiveSend(client, regions), func() {}, nil
				})
				if err != nil {
					return nil, err
				}
				f := measure(res, trace, specs, window, from, to, typical)
				f.system = sys
				add(f)
			case "gateway", "gateway-wait":
				if sys == "gateway-wait" && (!waitOK || (o.quick && load <= 1)) {
					continue
				}
				for _, n := range o.instances {
					run++
					shared := n > 1 && !o.localState
					use := sets
					if sys == "gateway" {
						use = withoutWait(sets)
					}
					table := fmt.Sprintf("fleet%d%d", time.Now().Unix()%100000, run)
					res, err := realRun(ctx, trace, specs, window, lat, drain, func(regions []*region, client *http.Client) (sender, func(), error) {
						return startFleet(ctx, bin, client, regions, use, o.scale, n, shared, az, table, log)
					})
					if err != nil {
						return nil, err
					}
					f := measure(res, trace, specs, window, from, to, typical)
					f.system, f.instances = sys, n
					if n > 1 {
						f.state = map[bool]string{true: "shared", false: "local"}[shared]
					}
					add(f)
				}
			}
		}
	}

	var lag time.Duration
	for _, f := range rows {
		lag = max(lag, f.lag)
	}
	var b strings.Builder
	fprintf(&b, "Scale 1/%g (window %s), regions %v tokens per window in priority order, %s measured after %s of warm-up, seed %d",
		o.scale, window, o.quotas, o.duration, o.warmup, o.seed)
	if gateways {
		fprintf(&b, "; the gateway %s", label)
	}
	fprintf(&b, "; requests sent at most %s late (p99 of each run).\n\n", lag.Round(time.Millisecond))
	b.WriteString(table(rows, specs))
	if settingsText != "" {
		b.WriteString("\n" + settingsText)
	}
	verdicts := targets(rows, specs)
	if len(verdicts) > 0 {
		b.WriteString("\nTargets (issue 16):\n\n")
		for _, v := range verdicts {
			fprintf(&b, "- %s\n", v)
		}
	}
	if !waitOK && contains(o.systems, "gateway-wait") {
		b.WriteString("- n/a gateway-wait: this gateway takes no admission-wait setting (see the settings above; -wait-path names one)\n")
	}
	fprintf(stdout, "\n%s", b.String())

	path := o.csv
	if path == "" {
		path = filepath.Join(o.repo, "tests", "fleetbench", "results", "fleet-"+time.Now().UTC().Format("20060102-150405")+".csv")
	}
	if err := writeCSV(path, rows, specs, o.scale, window); err != nil {
		return nil, err
	}
	fprintf(stderr, "wrote %s\n", path)
	if o.publish {
		if err := publish(filepath.Join(o.repo, "tests", "README.md"), b.String()); err != nil {
			return nil, err
		}
		fprintf(stderr, "updated tests/README.md\n")
	}
	return &result{rows: rows, verdicts: verdicts}, nil
}

func sharesText(s []float64) string {
	var p []string
	for _, v := range s {
		p = append(p, fmt.Sprintf("%.2f", v))
	}
	return strings.Join(p, "/")
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return fmt.Sprintf(" (load average %s on %d cores)", f[0], runtime.NumCPU())
}

// gatewayLabel says which gateway was measured.
func gatewayLabel(o options) string {
	if o.handler != "" {
		return "binary " + o.handler
	}
	git := func(args ...string) string {
		cmd := exec.Command("git", args...)
		cmd.Dir = o.repo
		cmd.Env = append(os.Environ(), "GIT_OPTIONAL_LOCKS=0") // read only: no index refresh
		out, err := cmd.Output()
		if err != nil {
			return "?"
		}
		return strings.TrimSpace(string(out))
	}
	label := "built from ./handler at " + git("rev-parse", "--short", "HEAD")
	if git("status", "--porcelain", "--", "handler") != "" {
		label += " with uncommitted changes"
	}
	return label
}
