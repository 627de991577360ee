package e2e

import (
	"testing"
	"time"

	"github.com/aoai-failover/gateway/tests/azurite"
	"github.com/aoai-failover/gateway/tests/fakeazure"
)

// TestIdentityBasedStateStorage: the identity-based connection (tableServiceUri, no key in any
// setting) with the real azidentity code getting its token from the Functions managed identity
// endpoint, and the real aztables client calling Table Storage (Azurite, over TLS, checking the
// bearer token's issuer, audience and lifetime).
func TestIdentityBasedStateStorage(t *testing.T) {
	ca := fakeazure.NewCA(t)
	certFile, keyFile := ca.Issue(t, "azurite")
	az := azurite.StartOAuth(t, certFile, keyFile)
	id := fakeazure.NewIdentity(t)

	_, _, regions, doc := smallPrimary(t)
	env := doc.env(regions)
	for k, v := range id.Env() {
		env[k] = v
	}
	env["AzureWebJobsStorage__tableServiceUri"] = az.ServiceURI
	env["SSL_CERT_FILE"] = ca.File // trust the test CA, as a real host trusts public CAs
	secrets := append(doc.secrets(regions), id.Header)
	a := startGateway(t, env, secrets...)
	b := startGateway(t, env, secrets...)
	t.Cleanup(func() {
		for _, tok := range id.Issued() { // no token in any output: checked after the processes stop
			for _, g := range []*gatewayProc{a, b} {
				checkOutput(t, g, []string{tok})
			}
		}
	})

	waitFor(t, "store healthy through the identity-based connection", 10*time.Second, func() bool {
		s := getStatus(t, a.URL)
		return s.Store.Kind == "table" && s.Store.Healthy
	})
	body := `{"messages":[{"role":"user","content":"Count the regions, please."}],"max_tokens":100}`
	for i := 0; i < 3; i++ { // the third finds the primary's minute used up
		if resp, text := chat(t, a.URL, "chat", body); resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, text)
		}
	}
	waitFor(t, "the other instance learns the throttle through the table", 5*time.Second, func() bool {
		return getStatus(t, b.URL).Deployments["chat"][0].State.State == "throttled"
	})
	if n := id.Requests("https://storage.azure.com"); n < 1 || n > 4 {
		t.Errorf("%d token requests for storage; want one per process, reused until it expires", n)
	}

	// Without a valid identity the table refuses: the store shows unhealthy, requests still work.
	bad := map[string]string{}
	for k, v := range env {
		bad[k] = v
	}
	bad["IDENTITY_HEADER"] = "wrong-header"
	c := startGateway(t, bad, secrets...)
	waitFor(t, "store unhealthy without a token", 15*time.Second, func() bool {
		s := getStatus(t, c.URL)
		return s.Store.Kind == "table" && !s.Store.Healthy
	})
	if resp, text := chat(t, c.URL, "chat", body); resp.StatusCode != 200 {
		t.Fatalf("request without a working store: %d %s", resp.StatusCode, text)
	}
}
