package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/tests/aoaisim"
	"github.com/aoai-failover/gateway/tests/azurite"
)

// tableCounter is a reverse proxy in front of Azurite that counts the table transactions the
// gateways make, as Table Storage bills them (one per REST call).
type tableCounter struct {
	reads, writes atomic.Int64
	proxy         *httputil.ReverseProxy
}

func (c *tableCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		c.reads.Add(1)
	} else {
		c.writes.Add(1)
	}
	c.proxy.ServeHTTP(w, r)
}

// BenchmarkFleet runs 1, 2, 4 and 8 gateway processes against one Azurite, all sharing one
// table, under the same total traffic (8 requests a second, round robin), in three scenarios: the
// primary's tokens-per-minute quota runs out early in the run ("quota"); the same, but for the
// first 3 s all traffic goes to one instance, as when the others have just started or been idle
// ("scaleout"); or the primary fails
// every request with 503 ("outage", with a 4 s circuit cool-down, so that open circuits are
// probed again during the run: with shared state one instance's failed probe keeps the circuit
// open for all). It reports, per fleet size, with shared and with
// per-instance state: the table transactions per instance per minute (reads: the partition
// refresh; writes: marks), how many requests the primary answered 429 or 503 (with shared state,
// an instance that learned from the table pays none), and how long after the primary's first
// 429 or 503 every instance's /status showed it unavailable. A last run ("outage10", 8 instances,
// 40 s) keeps the default 10 s cool-down, whose jitter spreads the instances' probes.
//
//	go test -run '^$' -bench Fleet -benchtime 1x ./tests/e2e
func BenchmarkFleet(b *testing.B) {
	az := azurite.Start(b)
	target, _ := url.Parse("http://127.0.0.1:" + az.Port)
	const perRequest = `{"messages":[{"role":"user","content":"Count the regions, please."}],"max_tokens":100}` // ~107 tokens
	const runFor = 12 * time.Second
	const totalRate = 8 // requests a second across the fleet
	fmt.Printf("%-8s %-9s %-10s %14s %15s %14s %22s\n", "scenario", "instances", "state", "reads/inst/min", "writes/inst/min", "primary 429/5xx", "all instances know in")
	throttled := func(s aoaisim.Stats) int { return s.Throttled }
	faulted := func(s aoaisim.Stats) int { return s.Faulted }
	scenarios := []struct {
		name     string
		primary  aoaisim.Deployment
		cooldown string
		hotFor   time.Duration // all traffic to the first instance for this long, then spread
		hits     func(aoaisim.Stats) int
		sizes    []int
		runFor   time.Duration
	}{
		{"quota", aoaisim.Deployment{Model: "m", TPM: 1000, RPM: 6000}, "60s", 0, throttled, []int{1, 2, 4, 8}, runFor},
		{"scaleout", aoaisim.Deployment{Model: "m", TPM: 1000, RPM: 6000}, "60s", 3 * time.Second, throttled, []int{1, 2, 4, 8}, runFor},
		{"outage", aoaisim.Deployment{Model: "m", Fault: "503"}, "4s", 0, faulted, []int{1, 2, 4, 8}, runFor},
		// The default 10 s cool-down over 40 s: every instance probes again three times or so;
		// with shared state one instance's failed probe keeps the others from probing.
		{"outage10", aoaisim.Deployment{Model: "m", Fault: "503"}, "10s", 0, faulted, []int{8}, 40 * time.Second},
	}
	for _, sc := range scenarios {
		for _, n := range sc.sizes {
			for _, shared := range []bool{true, false} {
				fleetRun(b, az, target, sc.name, sc.primary, sc.cooldown, sc.hotFor, sc.hits, n, shared, sc.runFor, totalRate, perRequest)
			}
		}
	}
}

func fleetRun(b *testing.B, az *azurite.Table, target *url.URL, scenario string, primary aoaisim.Deployment, cooldown string, hotFor time.Duration, hits func(aoaisim.Stats) int, n int, shared bool, runFor time.Duration, totalRate int, perRequest string) {
	{
		{
			counter := &tableCounter{proxy: httputil.NewSingleHostReverseProxy(target)}
			front := httptest.NewServer(counter)
			swc := startRegion(b, "swc", map[string]aoaisim.Deployment{"micro": primary})
			frc := startRegion(b, "frc", map[string]aoaisim.Deployment{"big": {Model: "m"}})
			regions := map[string]*region{"swc": swc, "frc": frc}
			doc := newRouting().account("swc", swc).account("frc", frc).target("chat", "swc", "micro", 1).target("chat", "frc", "big", 2)
			doc.Throttle = map[string]any{"routeByRemaining": false} // measure the 429s themselves
			doc.Circuit = map[string]any{"cooldown": cooldown}
			env := doc.env(regions)
			if shared {
				env["GATEWAY_STATE_STORAGE"] = strings.Replace(az.ConnectionString, "127.0.0.1:"+az.Port, strings.TrimPrefix(front.URL, "http://"), 1)
				env["GATEWAY_STATE_TABLE"] = fmt.Sprintf("fleet%s%d", scenario, n)
			}
			var gws []*gatewayProc
			for i := 0; i < n; i++ {
				gws = append(gws, startGateway(b, env, doc.secrets(regions)...))
			}
			time.Sleep(time.Second) // tables created, first refreshes done
			counter.reads.Store(0)
			counter.writes.Store(0)

			var failed atomic.Int64
			var wg sync.WaitGroup
			stop := make(chan struct{})
			tick := time.NewTicker(time.Second / time.Duration(totalRate))
			begin := time.Now()
			go func() {
				defer tick.Stop()
				i := 0
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
						gw := gws[i%n]
						if time.Since(begin) < hotFor {
							gw = gws[0] // the others are idle, as new instances are
						}
						i++
						wg.Add(1)
						go func() {
							defer wg.Done()
							resp, _ := chat(b, gw.URL, "chat", perRequest)
							if resp.StatusCode != 200 {
								failed.Add(1)
							}
						}()
					}
				}
			}()
			// Time from the primary's first 429 until every instance reports it throttled.
			start := time.Now()
			var first time.Time
			known := time.Duration(-1)
			for time.Since(start) < runFor {
				if first.IsZero() && hits(swc.Sim.Stats()["micro"]) > 0 {
					first = time.Now()
				}
				if !first.IsZero() && known < 0 {
					all := true
					for _, g := range gws {
						all = all && getStatus(b, g.URL).Deployments["chat"][0].State.State != "available"
					}
					if all {
						known = time.Since(first)
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
			close(stop)
			wg.Wait()
			minutes := time.Since(start).Minutes()
			st := swc.Sim.Stats()["micro"]
			mode := "per-inst."
			if shared {
				mode = "shared"
			}
			knownIn := "-"
			if known >= 0 {
				knownIn = known.Round(10 * time.Millisecond).String()
			}
			fmt.Printf("%-8s %-9d %-10s %14.0f %15.1f %14d %22s\n", scenario, n, mode,
				float64(counter.reads.Load())/float64(n)/minutes, float64(counter.writes.Load())/float64(n)/minutes, hits(st), knownIn)
			if failed.Load() > 0 {
				b.Errorf("%d requests failed", failed.Load())
			}
			for _, g := range gws {
				g.stop(b)
			}
			front.Close()
		}
	}
}
