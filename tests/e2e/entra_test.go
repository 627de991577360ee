package e2e

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/aoai-failover/gateway/tests/aoaisim"
	"github.com/aoai-failover/gateway/tests/fakeazure"
)

const gatewayAudience = "api://aoai-gateway"

func entraGateway(t *testing.T) (*gatewayProc, *fakeazure.OpenID, *region) {
	op := fakeazure.NewOpenID(t)
	swc := startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "m"}})
	regions := map[string]*region{"swc": swc}
	doc := newRouting().account("swc", swc).target("chat", "swc", "micro", 1)
	doc.Clients = map[string]any{"entra": map[string]any{"tenantId": op.Tenant, "audience": gatewayAudience, "authority": op.Authority}}
	gw := startGateway(t, doc.env(regions), doc.secrets(regions)...)
	waitFor(t, "signing keys loaded", 10*time.Second, func() bool {
		r, err := http.Get(gw.URL + "/healthz")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 200
	})
	return gw, op, swc
}

func bearer(t *testing.T, url, token string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/openai/deployments/chat/chat/completions?api-version=2024-10-21", strings.NewReader(smallChat))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestEntraCallerTokens(t *testing.T) {
	gw, op, swc := entraGateway(t)
	key1 := op.Key("key-1")
	valid := op.Token(t, "key-1", key1, jwt.MapClaims{"aud": gatewayAudience})
	t.Cleanup(func() { checkOutput(t, gw, []string{valid}) })

	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT","kid":"key-1"}`)) + "." +
		strings.Split(valid, ".")[1] + "."
	parts := strings.Split(valid, ".")
	sig := []byte(parts[2])
	sig[10] ^= 1
	tampered := parts[0] + "." + parts[1] + "." + string(sig)
	otherClaims := strings.Split(op.Token(t, "key-1", key1, jwt.MapClaims{"aud": gatewayAudience, "azp": "someone-else"}), ".")[1]
	swapped := parts[0] + "." + otherClaims + "." + parts[2]

	for _, tc := range []struct {
		name  string
		token string
		want  int
	}{
		{"valid", valid, 200},
		{"v1 issuer", op.Token(t, "key-1", key1, jwt.MapClaims{"aud": gatewayAudience, "iss": "https://sts.windows.net/" + op.Tenant + "/"}), 200},
		{"expired", op.Token(t, "key-1", key1, jwt.MapClaims{"aud": gatewayAudience, "exp": time.Now().Add(-5 * time.Minute).Unix()}), 401},
		{"expired within the clock skew", op.Token(t, "key-1", key1, jwt.MapClaims{"aud": gatewayAudience, "exp": time.Now().Add(-20 * time.Second).Unix()}), 200},
		{"not yet valid", op.Token(t, "key-1", key1, jwt.MapClaims{"aud": gatewayAudience, "nbf": time.Now().Add(10 * time.Minute).Unix()}), 401},
		{"wrong audience", op.Token(t, "key-1", key1, jwt.MapClaims{"aud": "api://someone-else"}), 401},
		{"wrong issuer", op.Token(t, "key-1", key1, jwt.MapClaims{"aud": gatewayAudience, "iss": "https://sts.windows.net/another-tenant/"}), 401},
		{"alg none", none, 401},
		{"tampered signature", tampered, 401},
		{"claims swapped under a valid signature", swapped, 401},
		{"not a JWT", "hello", 401},
	} {
		if got := bearer(t, gw.URL, tc.token); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
	if st := swc.Sim.Stats()["micro"]; st.Served != 3 {
		t.Errorf("backend served %d, want only the 3 valid callers", st.Served)
	}

	// Key rollover: a token signed by a newly published key triggers one refresh of the key set;
	// tokens under a key nobody publishes do not trigger one refresh per request.
	reads := op.JWKSReads()
	key2 := fakeazure.NewKey(t)
	op.Publish("key-2", key2)
	if got := bearer(t, gw.URL, op.Token(t, "key-2", key2, jwt.MapClaims{"aud": gatewayAudience})); got != 200 {
		t.Errorf("token under the new key: %d", got)
	}
	rogue := fakeazure.NewKey(t)
	for i := 0; i < 10; i++ {
		if got := bearer(t, gw.URL, op.Token(t, "key-rogue", rogue, jwt.MapClaims{"aud": gatewayAudience})); got != 401 {
			t.Errorf("token under an unpublished key: %d", got)
		}
	}
	if n := op.JWKSReads() - reads; n != 1 {
		t.Errorf("%d key set reads for one rollover and 10 unknown-key tokens, want 1", n)
	}
}

func TestNodeSDKWithEntraToken(t *testing.T) {
	dir := filepath.Join(repoRoot(), "tests", "node")
	node, err := exec.LookPath("node")
	if _, statErr := os.Stat(filepath.Join(dir, "node_modules", "openai")); err != nil || statErr != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node or the OpenAI Node SDK is missing: %v %v", err, statErr)
		}
		t.Skip("needs node and `npm ci` in tests/node")
	}
	gw, op, _ := entraGateway(t)
	token := op.Token(t, "key-1", op.Key("key-1"), jwt.MapClaims{"aud": gatewayAudience})
	t.Cleanup(func() { checkOutput(t, gw, []string{token}) })
	cmd := exec.Command(node, "client.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GATEWAY_URL="+gw.URL, "GATEWAY_TOKEN="+token, "DEPLOYMENT=chat")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node client with azureADTokenProvider: %v %s", err, out)
	}
	var got struct {
		Plain, Stream sdkAnswer
	}
	if json.Unmarshal(out, &got) != nil || got.Plain.Content == "" || got.Stream.Content == "" || got.Plain.ServedBy != "swc/micro" {
		t.Errorf("output %s", out)
	}
}
