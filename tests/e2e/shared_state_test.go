package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/tests/aoaisim"
	"github.com/aoai-failover/gateway/tests/azurite"
)

type statusDoc struct {
	Store struct {
		Kind    string `json:"kind"`
		Shared  bool   `json:"shared"`
		Healthy bool   `json:"healthy"`
	} `json:"store"`
	Deployments map[string][]struct {
		State struct {
			Target string `json:"target"`
			State  string `json:"state"`
		} `json:"state"`
	} `json:"deployments"`
}

func getStatus(t testing.TB, url string) statusDoc {
	t.Helper()
	resp, err := http.Get(url + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s statusDoc
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func waitFor(t testing.TB, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestThrottleSharedAcrossInstances: two gateway processes share state through Table Storage
// (Azurite); a 429 that one instance sees keeps the other away from the target too.
func TestThrottleSharedAcrossInstances(t *testing.T) {
	az := azurite.Start(t)
	// The quota holds one request of ~600 tokens a minute: the second is throttled for most of a
	// minute (a request-rate limit would free it within its 10 s bucket, maybe before B looks).
	swc := startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "m", TPM: 1000, RPM: 600}})
	frc := startRegion(t, "frc", map[string]aoaisim.Deployment{"big": {Model: "m", TPM: 40000}})
	regions := map[string]*region{"swc": swc, "frc": frc}
	doc := newRouting().account("swc", swc).account("frc", frc).target("chat", "swc", "micro", 1).target("chat", "frc", "big", 2)
	doc.Throttle = map[string]any{"routeByRemaining": false} // about what a 429 does
	env := doc.env(regions)
	env["GATEWAY_STATE_STORAGE"] = az.ConnectionString
	env["GATEWAY_STATE_TABLE"] = "sharedtest"
	a := startGateway(t, env, doc.secrets(regions)...)
	b := startGateway(t, env, doc.secrets(regions)...)

	if s := getStatus(t, b.URL); s.Store.Kind != "table" || !s.Store.Shared {
		t.Fatalf("store %+v", s.Store)
	}
	body := `{"messages":[{"role":"user","content":"hi"}],"max_tokens":600}`
	if resp, _ := chat(t, a.URL, "chat", body); resp.Header.Get("x-served-by") != "swc/micro" {
		t.Fatalf("first request served by %s", resp.Header.Get("x-served-by"))
	}
	resp, _ := chat(t, a.URL, "chat", body) // the bucket is empty: 429, then the secondary
	if resp.Header.Get("x-served-by") != "frc/big" || resp.Header.Get("x-gateway-attempts") != "2" {
		t.Fatalf("second request: %s after %s attempts", resp.Header.Get("x-served-by"), resp.Header.Get("x-gateway-attempts"))
	}
	// Within one refresh interval (1 s) plus the write's round trip.
	waitFor(t, "instance B learns the throttle", 2500*time.Millisecond, func() bool {
		return getStatus(t, b.URL).Deployments["chat"][0].State.State == "throttled"
	})
	for i := 0; i < 5; i++ {
		resp, text := chat(t, b.URL, "chat", body)
		if resp.StatusCode != 200 || resp.Header.Get("x-served-by") != "frc/big" || resp.Header.Get("x-gateway-attempts") != "1" {
			t.Fatalf("instance B request %d: %d %s after %s attempts: %s", i, resp.StatusCode, resp.Header.Get("x-served-by"), resp.Header.Get("x-gateway-attempts"), text)
		}
	}
	if st := swc.Sim.Stats()["micro"]; st.Throttled != 1 {
		t.Errorf("the primary answered %d 429s across both instances, want 1", st.Throttled)
	}
}

// TestStoreOutage: with the table unreachable and traffic flowing the gateway keeps serving on
// local state (no failed request) and says so in /status; when the table is back, sharing
// resumes and a mark made during the outage is written, so a new instance learns it.
func TestStoreOutage(t *testing.T) {
	az := azurite.Start(t)
	_, _, regions, doc := smallPrimary(t)
	env := doc.env(regions)
	env["GATEWAY_STATE_STORAGE"] = az.ConnectionString
	env["GATEWAY_STATE_TABLE"] = "outage"
	a := startGateway(t, env, doc.secrets(regions)...)
	waitFor(t, "store healthy", 5*time.Second, func() bool { return getStatus(t, a.URL).Store.Healthy })

	az.Pause()
	// Steady traffic, well inside the simulator's limits.
	load := startTraffic(a.URL, `{"messages":[{"role":"user","content":"Count the regions, please."}],"max_tokens":100}`, 1, 20*time.Millisecond)
	waitFor(t, "store reported degraded", 20*time.Second, func() bool { return !getStatus(t, a.URL).Store.Healthy })
	waitFor(t, "the primary throttled during the outage", 10*time.Second, func() bool {
		return getStatus(t, a.URL).Deployments["chat"][0].State.State == "throttled"
	})
	if resp, err := http.Get(a.URL + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz during the outage: %v %v", err, resp)
	}

	az.Resume()
	waitFor(t, "store recovered", 40*time.Second, func() bool { return getStatus(t, a.URL).Store.Healthy })
	b := startGateway(t, env, doc.secrets(regions)...)
	waitFor(t, "a new instance learns the mark made during the outage", 5*time.Second, func() bool {
		return getStatus(t, b.URL).Deployments["chat"][0].State.State == "throttled"
	})
	if sent, failed := load.stop(); failed != 0 || sent < 3 {
		t.Errorf("%d of %d requests failed during the outage", failed, sent)
	}
}

// TestSharedStateSaves429s runs the same traffic through three gateway instances four times in
// one run: per-instance or shared state (Azurite), each with and without routing by the
// remaining budget, and compares the primary's 429s. The primary's token window is the limit
// (rolling 60 s), so no window boundary moves the result.
func TestSharedStateSaves429s(t *testing.T) {
	az := azurite.Start(t)
	const perRequest = `{"messages":[{"role":"user","content":"Count the regions, please."}],"max_tokens":100}` // ~107 tokens
	table := 0
	run := func(shared, byRemaining bool) (throttled int) {
		swc := startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "m", TPM: 300, RPM: 600}})
		frc := startRegion(t, "frc", map[string]aoaisim.Deployment{"big": {Model: "m"}})
		regions := map[string]*region{"swc": swc, "frc": frc}
		doc := newRouting().account("swc", swc).account("frc", frc).target("chat", "swc", "micro", 1).target("chat", "frc", "big", 2)
		doc.Throttle = map[string]any{"routeByRemaining": byRemaining}
		env := doc.env(regions)
		if shared {
			table++
			env["GATEWAY_STATE_STORAGE"] = az.ConnectionString
			env["GATEWAY_STATE_TABLE"] = fmt.Sprintf("savings%d", table)
		}
		var gws []*gatewayProc
		for i := 0; i < 3; i++ {
			gws = append(gws, startGateway(t, env, doc.secrets(regions)...))
		}
		for i, n := range []int{4, 5, 5} {
			before := swc.Sim.Stats()["micro"].Throttled
			for j := 0; j < n; j++ {
				if resp, text := chat(t, gws[i].URL, "chat", perRequest); resp.StatusCode != 200 {
					t.Fatalf("request failed: %d %s", resp.StatusCode, text)
				}
			}
			if swc.Sim.Stats()["micro"].Throttled == before {
				continue
			}
			// A 429 happened: with shared state the others learn it within a refresh, which
			// their /status shows; without, there is nothing to wait for.
			if !shared {
				continue
			}
			for _, g := range gws[i+1:] {
				waitFor(t, "the other instances learn the throttle within a refresh", 2500*time.Millisecond, func() bool {
					return getStatus(t, g.URL).Deployments["chat"][0].State.State == "throttled"
				})
			}
		}
		st := swc.Sim.Stats()["micro"]
		if st.Served < 1 {
			t.Errorf("the primary served nothing: %+v", st)
		}
		return st.Throttled
	}
	perInstance, perInstanceByRemaining := run(false, false), run(false, true)
	shared, sharedByRemaining := run(true, false), run(true, true)
	t.Logf("primary's 429s for the same 14 requests over 3 instances: per-instance state %d (%d routing by remaining budget), shared state %d (%d routing by remaining budget)",
		perInstance, perInstanceByRemaining, shared, sharedByRemaining)
	if shared >= perInstance || shared > 1 || sharedByRemaining > 1 {
		t.Errorf("shared state took %d 429s, per-instance %d: sharing must take fewer, and at most one", shared, perInstance)
	}
	if perInstanceByRemaining >= perInstance {
		t.Errorf("routing by remaining budget saved no 429 (%d vs %d)", perInstanceByRemaining, perInstance)
	}
}

// TestStoreRestart: Table Storage goes away (connections refused) and comes back empty; a mark
// made meanwhile is written to the new table and other instances learn it.
func TestStoreRestart(t *testing.T) {
	az := azurite.Start(t)
	swc, _, regions, doc := smallPrimary(t)
	env := doc.env(regions)
	env["GATEWAY_STATE_STORAGE"] = az.ConnectionString
	env["GATEWAY_STATE_TABLE"] = "restart"
	a := startGateway(t, env, doc.secrets(regions)...)
	waitFor(t, "store healthy", 5*time.Second, func() bool { return getStatus(t, a.URL).Store.Healthy })

	az.Stop()
	body := `{"messages":[{"role":"user","content":"Count the regions, please."}],"max_tokens":100}`
	for i := 0; i < 3; i++ { // the third is a 429 from the primary: a mark that cannot be written now
		if resp, text := chat(t, a.URL, "chat", body); resp.StatusCode != 200 {
			t.Fatalf("request while the store is down: %d %s", resp.StatusCode, text)
		}
	}
	if swc.Sim.Stats()["micro"].Throttled != 1 {
		t.Fatalf("no 429 while the store was down: %+v", swc.Sim.Stats()["micro"])
	}
	waitFor(t, "store reported degraded", 10*time.Second, func() bool { return !getStatus(t, a.URL).Store.Healthy })

	az.Restart(t)
	waitFor(t, "store recovered", 40*time.Second, func() bool { return getStatus(t, a.URL).Store.Healthy })
	b := startGateway(t, env, doc.secrets(regions)...)
	waitFor(t, "a new instance learns the mark made while the store was down", 5*time.Second, func() bool {
		return getStatus(t, b.URL).Deployments["chat"][0].State.State == "throttled"
	})
}

// smallPrimary is the setup of the shared-state tests: a primary whose token minute holds two
// ~107-token requests (so the third is a 429), an unlimited secondary, and a routing document
// that tries the primary first whatever its reported budget (these tests are about the 429).
func smallPrimary(t *testing.T) (swc, frc *region, regions map[string]*region, doc *routingDoc) {
	t.Helper()
	swc = startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "m", TPM: 300, RPM: 600}})
	frc = startRegion(t, "frc", map[string]aoaisim.Deployment{"big": {Model: "m"}})
	regions = map[string]*region{"swc": swc, "frc": frc}
	doc = newRouting().account("swc", swc).account("frc", frc).target("chat", "swc", "micro", 1).target("chat", "frc", "big", 2)
	doc.Throttle = map[string]any{"routeByRemaining": false}
	return swc, frc, regions, doc
}
