package e2e

import (
	"encoding/json"
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

func getStatus(t *testing.T, url string) statusDoc {
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

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
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
	swc := startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "m", TPM: 1000}}) // 1 request per 10 s
	frc := startRegion(t, "frc", map[string]aoaisim.Deployment{"big": {Model: "m", TPM: 40000}})
	regions := map[string]*region{"swc": swc, "frc": frc}
	doc := newRouting().account("swc", swc).account("frc", frc).target("chat", "swc", "micro", 1).target("chat", "frc", "big", 2)
	env := doc.env(regions)
	env["GATEWAY_STATE_STORAGE"] = az.ConnectionString
	env["GATEWAY_STATE_TABLE"] = "sharedtest"
	a := startGateway(t, env, doc.secrets(regions)...)
	b := startGateway(t, env, doc.secrets(regions)...)

	if s := getStatus(t, b.URL); s.Store.Kind != "table" || !s.Store.Shared {
		t.Fatalf("store %+v", s.Store)
	}
	body := `{"messages":[{"role":"user","content":"hi"}],"max_tokens":10}`
	if resp, _ := chat(t, a.URL, "chat", body); resp.Header.Get("x-served-by") != "swc/micro" {
		t.Fatalf("first request served by %s", resp.Header.Get("x-served-by"))
	}
	resp, _ := chat(t, a.URL, "chat", body) // the bucket is empty: 429, then the secondary
	if resp.Header.Get("x-served-by") != "frc/big" || resp.Header.Get("x-gateway-attempts") != "2" {
		t.Fatalf("second request: %s after %s attempts", resp.Header.Get("x-served-by"), resp.Header.Get("x-gateway-attempts"))
	}
	waitFor(t, "instance B learns the throttle", 5*time.Second, func() bool {
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

// TestStoreOutage: with the table unreachable the gateway keeps serving on local state and says
// so in /status, then recovers by itself.
func TestStoreOutage(t *testing.T) {
	az := azurite.Start(t)
	frc := startRegion(t, "frc", map[string]aoaisim.Deployment{"big": {Model: "m"}})
	regions := map[string]*region{"frc": frc}
	doc := newRouting().account("frc", frc).target("chat", "frc", "big", 1)
	env := doc.env(regions)
	env["GATEWAY_STATE_STORAGE"] = az.ConnectionString
	gw := startGateway(t, env, doc.secrets(regions)...)
	waitFor(t, "store healthy", 5*time.Second, func() bool { return getStatus(t, gw.URL).Store.Healthy })

	az.Pause()
	waitFor(t, "store reported degraded", 20*time.Second, func() bool { return !getStatus(t, gw.URL).Store.Healthy })
	for i := 0; i < 3; i++ {
		if resp, text := chat(t, gw.URL, "chat", smallChat); resp.StatusCode != 200 {
			t.Fatalf("request during the outage: %d %s", resp.StatusCode, text)
		}
	}
	if resp, err := http.Get(gw.URL + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz during the outage: %v %v", err, resp)
	}
	az.Resume()
	waitFor(t, "store recovered", 40*time.Second, func() bool { return getStatus(t, gw.URL).Store.Healthy })
}
