package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/tests/aoaisim"
	"github.com/aoai-failover/gateway/tests/fakeazure"
)

// vaultSetup: a key-based account whose key lives in Key Vault and an Entra-only account called
// with the managed identity's token; the real azidentity and azsecrets code does the work
// against the fake identity endpoint and the fake vault (TLS through a test CA).
type vaultSetup struct {
	kv       *fakeazure.KeyVault
	id       *fakeazure.Identity
	swc, frc *region
	env      map[string]string
	secrets  []string
}

func newVaultSetup(t testing.TB) *vaultSetup {
	ca := fakeazure.NewCA(t)
	v := &vaultSetup{kv: fakeazure.NewKeyVault(t, ca), id: fakeazure.NewIdentity(t)}
	v.swc = startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "m"}})
	sim, srv, err := aoaisim.Start(aoaisim.Config{APIKey: "no-key-works-here-" + t.Name(), AcceptBearer: true, BearerAudience: "https://cognitiveservices.azure.com",
		Deployments: map[string]aoaisim.Deployment{"big": {Model: "m"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	v.frc = &region{Sim: sim, Srv: srv}
	v.kv.SetSecret("aoai-swc-key", v.swc.Key)

	doc := newRouting()
	doc.Accounts["swc"] = map[string]any{"endpoint": v.swc.Srv.URL, "auth": map[string]any{"keyVaultSecret": "aoai-swc-key"}}
	doc.Accounts["frc"] = map[string]any{"endpoint": v.frc.Srv.URL, "auth": map[string]any{"managedIdentity": true}}
	doc.target("chat", "swc", "micro", 1).target("mi", "frc", "big", 1)
	b, _ := json.Marshal(doc)
	var m map[string]any
	json.Unmarshal(b, &m)
	m["keyVault"] = v.kv.URL
	b, _ = json.Marshal(m)
	v.env = map[string]string{"GATEWAY_CONFIG": string(b), "SSL_CERT_FILE": ca.File}
	for k, val := range v.id.Env() {
		v.env[k] = val
	}
	v.secrets = []string{v.swc.Key, v.id.Header, callerKey}
	return v
}

// checkTokensNotLogged adds every token the identity endpoint issued to the output check.
func (v *vaultSetup) checkTokensNotLogged(t *testing.T, gws ...*gatewayProc) {
	t.Cleanup(func() {
		for _, g := range gws {
			checkOutput(t, g, v.id.Issued())
		}
	})
}

func TestKeyVaultAndManagedIdentity(t *testing.T) {
	v := newVaultSetup(t)
	const clientID = "7d2c1a9e-0000-4000-8000-00000000c1d0"
	v.env["AZURE_CLIENT_ID"] = clientID // a user-assigned identity
	var doc map[string]any
	json.Unmarshal([]byte(v.env["GATEWAY_CONFIG"]), &doc)
	doc["secrets"] = map[string]any{"refresh": "500ms"}
	b, _ := json.Marshal(doc)
	v.env["GATEWAY_CONFIG"] = string(b)
	gw := startGateway(t, v.env, v.secrets...)
	v.checkTokensNotLogged(t, gw)

	for i := 0; i < 5; i++ {
		for _, logical := range []string{"chat", "mi"} {
			if resp, text := chat(t, gw.URL, logical, smallChat); resp.StatusCode != 200 {
				t.Fatalf("%s: %d %s", logical, resp.StatusCode, text)
			}
		}
	}
	if st := v.swc.Sim.Stats()["micro"]; st.Served != 5 || st.LastAuth != "api-key" {
		t.Errorf("key-based account: %+v", st)
	}
	if st := v.frc.Sim.Stats()["big"]; st.Served != 5 || st.LastAuth != "bearer" {
		t.Errorf("managed-identity account: %+v", st)
	}
	if n := v.kv.Reads("aoai-swc-key"); n < 1 || n > 6 {
		t.Errorf("the vault was read %d times; want once at start and once per refresh, not per request", n)
	}
	if ids := v.id.ClientIDs(); len(ids) != 1 || !ids[clientID] {
		t.Errorf("tokens asked for identities %v, want only the user-assigned %s", ids, clientID)
	}

	// The vault goes away: refreshes fail, the last good key keeps serving, and the failure is
	// logged once, not once per refresh.
	v.kv.SetDown(true)
	waitFor(t, "two failed refreshes (each one read and its retries)", 30*time.Second, func() bool {
		return v.kv.Dropped() >= 8 && strings.Contains(gw.stderr.String(), "could not read a Key Vault secret")
	})
	for i := 0; i < 3; i++ {
		if resp, text := chat(t, gw.URL, "chat", smallChat); resp.StatusCode != 200 {
			t.Fatalf("with the vault down after start: %d %s", resp.StatusCode, text)
		}
	}
	if n := strings.Count(gw.stderr.String(), "could not read a Key Vault secret"); n != 1 {
		t.Errorf("the vault outage was logged %d times, want once", n)
	}
	v.kv.SetDown(false)
	if n := v.id.Requests("https://cognitiveservices.azure.com"); n != 1 {
		t.Errorf("%d token requests for Azure OpenAI over 5 requests, want 1 (azidentity caches until near expiry)", n)
	}
	if resp, err := http.Get(gw.URL + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("healthz: %v %v", err, resp)
	}
}

func TestKeyRotationUnderTraffic(t *testing.T) {
	v := newVaultSetup(t)
	gw := startGateway(t, v.env, append(v.secrets, "rotated-key-5d7a19")...)
	v.checkTokensNotLogged(t, gw)
	if resp, text := chat(t, gw.URL, "chat", smallChat); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, text)
	}
	load := startTraffic(gw.URL, smallChat, 4, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	before := v.kv.Reads("aoai-swc-key")
	// Rotate: the new key goes into the vault, then the service stops taking the old one.
	v.kv.SetSecret("aoai-swc-key", "rotated-key-5d7a19")
	v.swc.Sim.SetAPIKey("rotated-key-5d7a19")
	rejectedAt := v.swc.Sim.Stats()["micro"].Unauthorized
	time.Sleep(700 * time.Millisecond)
	if sent, failed := load.stop(); failed != 0 || sent < 20 {
		t.Errorf("%d of %d requests failed across the rotation", failed, sent)
	}
	if n := v.kv.Reads("aoai-swc-key") - before; n != 1 {
		t.Errorf("the rotation cost %d vault reads, want 1 however many requests saw the 401", n)
	}
	if st := v.swc.Sim.Stats()["micro"]; st.Unauthorized <= rejectedAt || st.Served < 20 {
		t.Errorf("primary %+v: the old key must have been refused at least once after the switch", st)
	}
}

func TestKeyVaultDownAtStart(t *testing.T) {
	v := newVaultSetup(t)
	v.kv.SetDown(true)
	gw := startGateway(t, v.env, v.secrets...)
	v.checkTokensNotLogged(t, gw)

	resp, err := http.Get(gw.URL + "/healthz")
	if err != nil || resp.StatusCode != 503 {
		t.Fatalf("healthz with the vault down: %v %v", err, resp)
	}
	resp.Body.Close()
	r, text := chat(t, gw.URL, "chat", smallChat)
	if r.StatusCode != 503 || !strings.Contains(text, "NoCredential") {
		t.Errorf("request with no key yet: %d %s", r.StatusCode, text)
	}
	if r, text := chat(t, gw.URL, "mi", smallChat); r.StatusCode != 200 {
		t.Errorf("the managed-identity deployment must not wait for the vault: %d %s", r.StatusCode, text)
	}

	v.kv.SetDown(false)
	waitFor(t, "healthz 200 once the vault answers", 40*time.Second, func() bool {
		resp, err := http.Get(gw.URL + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if r, text := chat(t, gw.URL, "chat", smallChat); r.StatusCode != 200 {
		t.Errorf("after the vault came back: %d %s", r.StatusCode, text)
	}
}

func TestClientKeys(t *testing.T) {
	v := newVaultSetup(t)
	keyA, keyB, keyA2 := "client-key-a-6c1f0e93", "client-key-b-0a77d2c4", "client-key-a-rotated-3b9e"
	v.kv.SetSecret("gateway-client-keys", `{"app-a":"`+keyA+`","app-b":"`+keyB+`"}`)
	var doc map[string]any
	json.Unmarshal([]byte(v.env["GATEWAY_CONFIG"]), &doc)
	doc["clients"] = map[string]any{"keyVaultSecret": "gateway-client-keys"}
	doc["secrets"] = map[string]any{"refresh": "1s"}
	b, _ := json.Marshal(doc)
	v.env["GATEWAY_CONFIG"] = string(b)
	gw := startGateway(t, v.env, append(v.secrets, keyA, keyB, keyA2)...)
	v.checkTokensNotLogged(t, gw)

	send := func(key string) (*http.Response, string) {
		req, _ := http.NewRequest("POST", gw.URL+"/openai/deployments/chat/chat/completions?api-version=2024-10-21", strings.NewReader(smallChat))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("api-key", key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	for _, tc := range []struct {
		key  string
		want int
	}{{keyA, 200}, {keyB, 200}, {"", 401}, {"wrong", 401}, {keyA + "x", 401}} {
		resp, body := send(tc.key)
		if resp.StatusCode != tc.want {
			t.Errorf("key %q: %d %s", tc.key, resp.StatusCode, body)
		}
		if tc.want == 401 && (resp.Header.Get("WWW-Authenticate") == "" || !strings.Contains(body, `"error"`) || strings.Contains(body, "app-a")) {
			t.Errorf("401 for %q: %v %s", tc.key, resp.Header, body)
		}
	}
	if st := v.swc.Sim.Stats()["micro"]; st.Served != 2 {
		t.Errorf("refused callers reached the backend: %+v", st)
	}
	if resp, err := http.Get(gw.URL + "/status"); err != nil || resp.StatusCode != 401 {
		t.Errorf("/status without a key: %v %v", err, resp)
	}
	// The app's name is in the request log.
	waitFor(t, "request line naming the app", 2*time.Second, func() bool { return strings.Contains(gw.stdout.String(), `"app":"app-b"`) })

	// The OpenAI Node SDK, unmodified, with its apiKey set to a client key.
	if node, err := exec.LookPath("node"); err == nil {
		cmd := exec.Command(node, "client.mjs")
		cmd.Dir = filepath.Join(repoRoot(), "tests", "node")
		cmd.Env = append(os.Environ(), "GATEWAY_URL="+gw.URL, "GATEWAY_API_KEY="+keyB, "DEPLOYMENT=chat")
		if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), `"servedBy":"swc/micro"`) {
			t.Errorf("Node SDK with a client key: %v %s", err, out)
		}
	} else if os.Getenv("CI") != "" {
		t.Fatal("node is missing")
	}

	// Rotation in the vault: the new key works and the old one stops, without a restart.
	v.kv.SetSecret("gateway-client-keys", `{"app-a":"`+keyA2+`","app-b":"`+keyB+`"}`)
	waitFor(t, "the rotated client key accepted", 10*time.Second, func() bool { r, _ := send(keyA2); return r.StatusCode == 200 })
	if r, _ := send(keyA); r.StatusCode != 401 {
		t.Errorf("the old client key still works: %d", r.StatusCode)
	}
}
