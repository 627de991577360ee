package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The oracle fills regions in priority order, never calls a full one, and with a wait admits a
// request at the instant a region frees.
func TestOracle(t *testing.T) {
	specs := []regionSpec{{"r1", 10000}, {"r2", 10000}}
	window := 10 * time.Second // 1,000 tokens a second each, starting spent
	lat := simLatency{completion: 1}
	at := func(ms int) time.Duration { return time.Duration(ms) * time.Millisecond }
	trace := []call{
		{at: at(2000), cost: 1500}, // r1 has 2000: r1
		{at: at(2000), cost: 1000}, // r1 has 500, r2 2000: r2
		{at: at(2000), cost: 1500}, // r1 500, r2 1000: none; r2 frees 1500 at 2500 ms, r1 at 3000 ms
		{at: at(2500), cost: 500},  // r1 1000: r1
	}
	res := runOracle(trace, specs, window, 0, lat)
	want := []int{0, 1, -1, 0}
	for i, o := range res.outcomes {
		if o.region != want[i] {
			t.Errorf("no wait: request %d went to %d, want %d", i, o.region, want[i])
		}
	}
	if n := len(res.hits[0]) + len(res.hits[1]); n != 3 {
		t.Errorf("no wait: %d region calls, want 3 (a full region is never called)", n)
	}
	res = runOracle(trace, specs, window, 2*time.Second, lat)
	if o := res.outcomes[2]; o.status != http.StatusOK || o.region != 1 || o.latency != at(500) {
		t.Errorf("wait: the waiting request got %+v, want r2 after 500 ms", o)
	}
	if o := res.outcomes[3]; o.region != 0 {
		t.Errorf("wait: the last request went to %d, want r1", o.region)
	}
}

// A region used again 30 ms after its budget frees, every time.
func TestRecovery(t *testing.T) {
	window := 10 * time.Second // 1,000 tokens a second, starting spent
	var hits []hit
	for i := 1; i <= 5; i++ {
		hits = append(hits, hit{at: time.Duration(i)*time.Second + 30*time.Millisecond, cost: 1000, admitted: true})
	}
	d, n := recovery(hits, 10000, window, 1000, 0, time.Hour)
	if n != 5 || d != 30*time.Millisecond {
		t.Fatalf("recovery %v over %d episodes, want 30ms over 5", d, n)
	}
}

// The quick mode end to end, cut to a few seconds of traffic: the oracle, the naive proxy and
// the built gateway (one instance, and two sharing state through Azurite when it is installed).
func TestQuickSmoke(t *testing.T) {
	instances := "1,2"
	if _, err := os.Stat(filepath.Join(repoRoot(), "tests", "node", "node_modules", ".bin", "azurite-table")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Azurite is not installed (tests/run installs it with npm ci in tests/node): %v", err)
		}
		t.Log("Azurite not installed (npm ci in tests/node): one gateway instance only")
		instances = "1"
	}
	csv := filepath.Join(t.TempDir(), "fleet.csv")
	args := []string{"-quick", "-loads", "1.5", "-systems", "oracle,naive,gateway", "-instances", instances,
		"-warmup", "1s", "-duration", "2s", "-quotas", "60000,30000,15000", "-csv", csv}
	if bin := os.Getenv("FLEETBENCH_HANDLER"); bin != "" {
		args = append(args, "-handler", bin) // a gateway built beforehand; else ./handler is built
	}
	o, err := parseFlags(args, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, log bytes.Buffer
	res, err := runBench(ctx, o, &out, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	want := 2 + len(strings.Split(instances, ","))
	if len(res.rows) != want {
		t.Fatalf("%d rows, want %d:\n%s", len(res.rows), want, out.String())
	}
	for _, f := range res.rows {
		if f.arrivals == 0 || f.served == 0 || f.errors != 0 {
			t.Errorf("%s x%d: %d arrivals, %d served, %d errors (%s)", f.system, f.instances, f.arrivals, f.served, f.errors, f.errSample)
		}
		if f.util < 0.5 || f.util > 1.3 {
			t.Errorf("%s x%d: utilization %.3f at 1.5x", f.system, f.instances, f.util)
		}
	}
	if o := res.rows[0]; o.system != "oracle" || o.up429 != 0 {
		t.Errorf("first row %s with %d upstream 429s, want the oracle with none", o.system, o.up429)
	}
	for _, s := range []string{"| oracle |", "| naive |", "| gateway | 1 |", "GATEWAY_STATE_REFRESH", "Targets"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("the output has no %q:\n%s", s, out.String())
		}
	}
	b, err := os.ReadFile(csv)
	if err != nil || strings.Count(string(b), "\n") != want+1 {
		t.Errorf("CSV: %v\n%s", err, b)
	}
	t.Logf("\n%s", out.String())
}
