package e2e

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/tests/aoaisim"
	"github.com/aoai-failover/gateway/tests/azurite"
)

// fleetDoc is the routing document of the fleet capacity tests: logical "chat" on the primary
// region first, then the secondary, with the extra sections given.
func fleetDoc(primary, secondary *region, extra map[string]any) map[string]any {
	doc := map[string]any{
		"accounts": map[string]any{
			"swc": map[string]any{"endpoint": primary.Srv.URL, "region": "swc", "auth": map[string]any{"keyEnv": "KEY_SWC"}},
			"frc": map[string]any{"endpoint": secondary.Srv.URL, "region": "frc", "auth": map[string]any{"keyEnv": "KEY_FRC"}},
		},
		"deployments": map[string]any{"chat": []any{
			map[string]any{"account": "swc", "deployment": "micro", "priority": 1},
			map[string]any{"account": "frc", "deployment": "big", "priority": 2},
		}},
		"clients": map[string]any{"anonymous": true},
	}
	for k, v := range extra {
		doc[k] = v
	}
	return doc
}

// fleetOf starts n gateway instances sharing state through Azurite (one table per test).
func fleetOf(t *testing.T, n int, doc map[string]any, primary, secondary *region, table string) []*gatewayProc {
	t.Helper()
	az := azurite.Start(t)
	b, _ := json.Marshal(doc)
	env := map[string]string{
		"GATEWAY_CONFIG":        string(b),
		"KEY_SWC":               primary.Key,
		"KEY_FRC":               secondary.Key,
		"GATEWAY_STATE_STORAGE": az.ConnectionString,
		"GATEWAY_STATE_TABLE":   table,
		"GATEWAY_STATE_REFRESH": "200ms",
	}
	var gws []*gatewayProc
	for i := 0; i < n; i++ {
		gws = append(gws, startGateway(t, env, primary.Key, secondary.Key))
	}
	for _, g := range gws {
		waitFor(t, "the state store is shared and healthy", 5*time.Second, func() bool {
			s := getStatus(t, g.URL)
			return s.Store.Kind == "table" && s.Store.Healthy
		})
	}
	return gws
}

// TestFleetCapacityOrderKept: two gateway instances sharing state through Azurite fill the
// first region before they use the second, and pass it over once it is full instead of calling
// it for 429s: the order the routing document gives is kept.
func TestFleetCapacityOrderKept(t *testing.T) {
	// The primary's minute holds about 27 of these requests (103 tokens each as the service
	// counts: the prompt's characters / 4 plus max_tokens). Its refill in the test's second or
	// so is less than one request.
	primary := startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "m", TPM: 3000, RPM: 600}})
	secondary := startRegion(t, "frc", map[string]aoaisim.Deployment{"big": {Model: "m", TPM: 1_000_000}})
	gws := fleetOf(t, 2, fleetDoc(primary, secondary, nil), primary, secondary, "fleetorder")

	const body = `{"messages":[{"role":"user","content":"Count to three."}],"max_tokens":100}`
	var servedBy []string
	for i := 0; i < 40; i++ {
		resp, text := chat(t, gws[i%2].URL, "chat", body)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, text)
		}
		servedBy = append(servedBy, resp.Header.Get("x-served-by"))
	}
	st := primary.Sim.Stats()["micro"]
	t.Logf("served by: %s", strings.Join(servedBy, " "))
	t.Logf("primary: %d served, %d refused (429)", st.Served, st.Throttled)
	// Filled: what it admitted leaves less than two requests' worth (one per instance: each
	// instance's estimate runs a little above the service's count).
	if left := 3000 - st.Served*103; left > 2*125 {
		t.Errorf("the primary was left with %d tokens (%d requests served) while the secondary served", left, st.Served)
	}
	// In order: nothing reached the secondary before the primary was (nearly) full; once an
	// instance finds the primary full, at most one more request per other instance reaches it.
	first := -1
	for i, by := range servedBy {
		if by == "frc/big" {
			first = i
			break
		}
	}
	if first < 0 || first < st.Served-2 {
		t.Errorf("the secondary first served request %d, with the primary serving %d in all", first, st.Served)
	}
	// And without 429 round trips: at most one per instance, learned from the service.
	if st.Throttled > 2 {
		t.Errorf("the primary answered %d 429s: a full region must be passed over", st.Throttled)
	}
	// /status on both instances says the primary is passed over for now.
	for _, g := range gws {
		if s := getStatus(t, g.URL).Deployments["chat"][0].State; s.State != "deprioritised" && s.State != "throttled" {
			t.Errorf("the primary shows %q on an instance", s.State)
		}
	}
}

// TestFleetCapacityAppBudget: an app's budget on a logical deployment holds across two gateway
// instances sharing state through Azurite: what one instance admitted, the other counts once it
// is published (every GATEWAY_STATE_REFRESH), counted by the answers' real usage; over budget,
// both answer 429 AppTokenBudgetExceeded with retry-after and the app's remaining budget, and
// /status on both shows the app's fleet-wide consumption.
func TestFleetCapacityAppBudget(t *testing.T) {
	primary := startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "m", TPM: 1_000_000}})
	secondary := startRegion(t, "frc", map[string]aoaisim.Deployment{"big": {Model: "m", TPM: 1_000_000}})
	const budget = 600
	doc := fleetDoc(primary, secondary, map[string]any{
		"budgets": map[string]any{"apps": map[string]any{"anonymous": map[string]any{"deployments": map[string]any{"chat": budget}}}},
	})
	gws := fleetOf(t, 2, doc, primary, secondary, "fleetbudget")

	// Each answer uses 30 tokens (10 of prompt, 20 of completion); the estimate is ~41.
	const body = `{"messages":[{"role":"user","content":"Say hello to the fleet, please."}],"max_tokens":20}`
	used, served := 0, 0
	var refusal *http.Response
	var refusalBody string
	for i := 0; i < 40 && refusal == nil; i++ {
		resp, text := chat(t, gws[i%2].URL, "chat", body)
		switch resp.StatusCode {
		case 200:
			served++
			var answer struct {
				Usage struct {
					Total int `json:"total_tokens"`
				} `json:"usage"`
			}
			_ = json.Unmarshal([]byte(text), &answer)
			used += answer.Usage.Total
			if resp.Header.Get("X-Gateway-App-Limit-Tokens") != strconv.Itoa(budget) || resp.Header.Get("X-Gateway-App-Remaining-Tokens") == "" {
				t.Errorf("request %d: budget headers %q %q", i, resp.Header.Get("X-Gateway-App-Limit-Tokens"), resp.Header.Get("X-Gateway-App-Remaining-Tokens"))
			}
		case 429:
			refusal, refusalBody = resp, text
		default:
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, text)
		}
		time.Sleep(450 * time.Millisecond) // more than a publication plus a refresh (2 x 200 ms)
	}
	t.Logf("served %d requests using %d tokens before the budget of %d refused one", served, used, budget)
	if refusal == nil {
		t.Fatalf("40 requests (%d tokens) admitted on a budget of %d", used, budget)
	}
	// Within the budget, counted by real usage (not the estimate): the last admitted request
	// found room for its estimate, so at most one estimate over.
	if used > budget || used < budget-2*41 {
		t.Errorf("the fleet admitted %d tokens on a budget of %d", used, budget)
	}
	if !strings.Contains(refusalBody, `"code":"AppTokenBudgetExceeded"`) || refusal.Header.Get("Retry-After") == "" ||
		refusal.Header.Get("X-Gateway-App-Remaining-Tokens") == "" || refusal.Header.Get("X-Served-By") != "none" {
		t.Errorf("refusal: %v %s", refusal.Header, refusalBody)
	}
	// Both instances refuse now, and neither calls a region.
	before := primary.Sim.Stats()["micro"].Requests + secondary.Sim.Stats()["big"].Requests
	for i, g := range gws {
		if resp, text := chat(t, g.URL, "chat", body); resp.StatusCode != 429 {
			t.Errorf("instance %d after the budget: %d %s", i, resp.StatusCode, text)
		}
	}
	if after := primary.Sim.Stats()["micro"].Requests + secondary.Sim.Stats()["big"].Requests; after != before {
		t.Errorf("%d requests over budget reached a region", after-before)
	}
	// /status shows the app's consumption, fleet-wide, on both.
	for i, g := range gws {
		resp, err := http.Get(g.URL + "/status")
		if err != nil {
			t.Fatal(err)
		}
		var st struct {
			Apps struct {
				Apps []struct {
					App         string `json:"app"`
					Deployments map[string]struct {
						TokensPerMinute int `json:"tokensPerMinute"`
						FleetUsedTokens int `json:"fleetUsedTokens"`
						UsedTokens      int `json:"usedTokens"`
					} `json:"deployments"`
				} `json:"apps"`
			} `json:"apps"`
		}
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil || len(st.Apps.Apps) != 1 {
			t.Fatalf("instance %d /status apps: %v %+v", i, err, st.Apps)
		}
		d := st.Apps.Apps[0].Deployments["chat"]
		if st.Apps.Apps[0].App != "anonymous" || d.TokensPerMinute != budget || d.FleetUsedTokens != used || d.UsedTokens >= used {
			t.Errorf("instance %d /status: %+v (fleet used %d)", i, st.Apps.Apps[0], used)
		}
	}
}
