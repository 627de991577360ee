package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const validDoc = `{
  "accounts": {
    "swc": {"endpoint": "https://aoai-swc.openai.azure.com", "region": "swedencentral", "auth": {"keyEnv": "SWC_KEY"}},
    "dev": {"endpoint": "http://127.0.0.1:9001/", "auth": {"keyEnv": "DEV_KEY"}}
  },
  "deployments": {
    "chat": [
      {"account": "swc", "deployment": "micro", "priority": 1},
      {"account": "swc", "deployment": "35turbo", "priority": 2},
      {"account": "dev", "deployment": "gpt-35-turbo", "priority": 3, "weight": 5}
    ]
  },
  "clients": {"anonymous": true}
}`

func TestValidDocumentWithDefaults(t *testing.T) {
	r, probs := ParseRouting([]byte(validDoc))
	if len(probs) > 0 {
		t.Fatalf("problems: %v", probs)
	}
	if got := r.Deployments["chat"][2]; got.PriorityOrDefault() != 3 || got.WeightOrDefault() != 5 || got.ID() != "dev/gpt-35-turbo" {
		t.Errorf("target %+v", got)
	}
	if w := r.Deployments["chat"][0].WeightOrDefault(); w != 1 {
		t.Errorf("default weight %d", w)
	}
	for name, got := range map[string]time.Duration{
		"connect": r.Timeouts.Connect.D(), "firstByte": r.Timeouts.FirstByte.D(), "request": r.Timeouts.Request.D(),
		"streamIdle": r.Timeouts.StreamIdle.D(), "defaultRetryAfter": r.Throttle.DefaultRetryAfter.D(), "cooldown": r.Circuit.Cooldown.D(),
	} {
		if got <= 0 {
			t.Errorf("%s has no default", name)
		}
	}
	if r.Timeouts.Request.D() > FunctionsRequestLimit || r.Limits.MaxRequestBodyBytes != DefaultMaxRequestBodyBytes || r.Circuit.Failures != DefaultCircuitFailures {
		t.Errorf("defaults %+v %+v", r.Timeouts, r.Limits)
	}
	r2, probs := ParseRouting([]byte(strings.Replace(validDoc, `"clients"`, `"timeouts": {"firstByte": "3s", "perOutputToken": "10ms"}, "clients"`, 1)))
	if len(probs) > 0 || r2.Timeouts.FirstByte.D() != 3*time.Second || r2.Timeouts.PerOutputToken.D() != 10*time.Millisecond {
		t.Errorf("tunables: %v %+v", probs, r2.Timeouts)
	}
}

func TestDocumentProblems(t *testing.T) {
	replace := func(old, new string) string { return strings.Replace(validDoc, old, new, 1) }
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"not JSON", `{"accounts": `, "not valid JSON"},
		{"not an object", `[1,2]`, "must be a JSON object"},
		{"unknown account", replace(`"account": "dev"`, `"account": "nope"`), `deployments.chat[2].account: unknown account "nope"`},
		{"duplicate target", replace(`"deployment": "35turbo"`, `"deployment": "micro"`), "duplicate target swc/micro"},
		{"duplicate JSON key", replace(`"dev": {`, `"swc": {`), "accounts.swc: given more than once"},
		{"endpoint not a URL", replace(`https://aoai-swc.openai.azure.com`, `aoai-swc`), "accounts.swc.endpoint"},
		{"endpoint with a path", replace(`https://aoai-swc.openai.azure.com`, `https://aoai-swc.openai.azure.com/openai`), "must be just scheme and host"},
		{"endpoint with a query", replace(`https://aoai-swc.openai.azure.com`, `https://aoai-swc.openai.azure.com?x=1`), "must be just scheme and host"},
		{"ftp endpoint", replace(`https://aoai-swc.openai.azure.com`, `ftp://aoai-swc.openai.azure.com`), "must use https"},
		{"plain http to a public host", replace(`https://aoai-swc.openai.azure.com`, `http://aoai-swc.openai.azure.com`), "plain http is accepted only for loopback"},
		{"plain http to a private host", replace(`https://aoai-swc.openai.azure.com`, `http://10.1.2.3`), "plain http is accepted only for loopback"},
		{"empty target list", replace(`"clients"`, `"deployments2": 1, "clients"`), "deployments2: unknown field"},
		{"no deployments", replace(`"chat": [`, `"chat": [], "x": [`), "deployments.chat: the target list is empty"},
		{"priority zero", replace(`"priority": 1}`, `"priority": 0}`), "priority: 0 is out of range"},
		{"priority negative", replace(`"priority": 1}`, `"priority": -3}`), "priority: -3 is out of range"},
		{"priority too big", replace(`"priority": 1}`, `"priority": 1001}`), "priority: 1001 is out of range"},
		{"weight zero", replace(`"weight": 5`, `"weight": 0`), "weight: 0 is out of range"},
		{"weight too big", replace(`"weight": 5`, `"weight": 5000`), "weight: 5000 is out of range"},
		{"unknown top field", replace(`"clients"`, `"extra": true, "clients"`), "extra: unknown field"},
		{"unknown nested field", replace(`"region": "swedencentral"`, `"regoin": "swedencentral"`), "accounts.swc.regoin: unknown field"},
		{"unknown target field", replace(`"priority": 3,`, `"priority": 3, "prio": 1,`), "deployments.chat[2].prio: unknown field"},
		{"case slip", replace(`"clients"`, `"Timeouts": {}, "clients"`), `did you mean "timeouts"`},
		{"wrong type", replace(`"priority": 2}`, `"priority": "2"}`), "priority"},
		{"bad duration", replace(`"clients"`, `"timeouts": {"connect": "soon"}, "clients"`), "timeouts.connect: must be a positive duration"},
		{"number duration", replace(`"clients"`, `"throttle": {"maxRetryAfter": 30}, "clients"`), "throttle.maxRetryAfter: must be a positive duration"},
		{"request over the Functions limit", replace(`"clients"`, `"timeouts": {"request": "5m"}, "clients"`), "exceeds the Functions host's 3m50s limit"},
		{"no clients", replace(`,
  "clients": {"anonymous": true}`, ``), `clients: required`},
		{"empty clients", replace(`{"anonymous": true}`, `{}`), "clients: no caller authentication configured"},
		{"client keys without a vault", replace(`{"anonymous": true}`, `{"keyVaultSecret": "keys"}`), "clients.keyVaultSecret: needs the document's keyVault"},
		{"entra without audience", replace(`{"anonymous": true}`, `{"entra": {"tenantId": "t"}}`), "clients.entra.audience: required"},
		{"entra plain http authority", replace(`{"anonymous": true}`, `{"entra": {"tenantId": "t", "audience": "a", "authority": "http://login.example.com"}}`), "clients.entra.authority"},
		{"key vault secret without a vault", replace(`{"keyEnv": "SWC_KEY"}`, `{"keyVaultSecret": "k"}`), "accounts.swc.auth.keyVaultSecret: needs the document's keyVault"},
		{"bad secret name", replace(`{"keyEnv": "SWC_KEY"}`, `{"keyVaultSecret": "a_b"}`), `"a_b" is not a Key Vault secret name`},
		{"two auth kinds", replace(`{"keyEnv": "SWC_KEY"}`, `{"keyEnv": "SWC_KEY", "managedIdentity": true}`), "set exactly one of keyVaultSecret, managedIdentity, keyEnv (found 2)"},
		{"no auth", replace(`{"keyEnv": "SWC_KEY"}`, `{}`), "found 0"},
		{"bad logical name", replace(`"chat": [`, `"chat/x": [`), "deployments.chat/x: logical names may only contain"},
		{"bad deployment name", replace(`"deployment": "micro"`, `"deployment": "mi/cro"`), `deployment: "mi/cro" must be`},
		{"bad key vault", replace(`"accounts"`, `"keyVault": "http://kv", "accounts"`), "keyVault"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, probs := ParseRouting([]byte(tc.doc))
			all := strings.Join(probs, "\n")
			if !strings.Contains(all, tc.want) {
				t.Errorf("problems do not mention %q:\n%s", tc.want, all)
			}
		})
	}
	for _, ok := range []string{"http://127.0.0.1:9001", "http://[::1]:9001", "http://localhost:9001", "https://x.openai.azure.com/"} {
		if err := checkEndpoint(ok); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
}

func TestKeyVaultDocument(t *testing.T) {
	doc := strings.NewReplacer(`"accounts"`, `"keyVault": "https://kv-gateway.vault.azure.net/", "accounts"`,
		`{"keyEnv": "SWC_KEY"}`, `{"keyVaultSecret": "aoai-swc-key"}`, `{"keyEnv": "DEV_KEY"}`, `{"managedIdentity": true}`,
		`{"anonymous": true}`, `{"keyVaultSecret": "gateway-client-keys"}`).Replace(validDoc)
	r, probs := ParseRouting([]byte(doc))
	if len(probs) > 0 {
		t.Fatalf("problems: %v", probs)
	}
	if r.Accounts["swc"].Auth.KeyVaultSecret != "aoai-swc-key" || !r.Accounts["dev"].Auth.ManagedIdentity || r.Clients.KeyVaultSecret != "gateway-client-keys" || r.Secrets.Refresh.D() != DefaultSecretsRefresh {
		t.Errorf("document %+v", r)
	}
}

func TestAllProblemsAtOnce(t *testing.T) {
	doc := `{"accounts": {"a": {"endpoint": "http://8.8.8.8", "auth": {}}}, "deployments": {"chat": [{"account": "b", "deployment": "d", "weight": 0}], "e": []}, "clients": {}, "junk": 1}`
	_, probs := ParseRouting([]byte(doc))
	if len(probs) < 6 {
		t.Errorf("want every problem, got %d:\n%s", len(probs), strings.Join(probs, "\n"))
	}
	err := Problems(probs).Error()
	if !strings.HasPrefix(err, "invalid configuration (") || strings.Count(err, "\n  - ") != len(probs) {
		t.Errorf("message %q", err)
	}
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoad(t *testing.T) {
	base := map[string]string{"GATEWAY_CONFIG": validDoc, "SWC_KEY": "k1", "DEV_KEY": "k2"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	s, err := Load(env(base))
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr != ":8080" || s.State.Configured() || s.State.Table != "gatewaystate" || s.State.Refresh != time.Second || len(s.Warnings) != 2 {
		t.Errorf("settings %+v", s)
	}
	if s, _ := Load(env(with("FUNCTIONS_CUSTOMHANDLER_PORT", "7071", "PORT", "9"))); s.Addr != "127.0.0.1:7071" {
		t.Errorf("functions addr %q", s.Addr)
	}
	if s, _ := Load(env(with("PORT", "9000"))); s.Addr != ":9000" {
		t.Errorf("PORT addr %q", s.Addr)
	}

	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "routing.json"), []byte(validDoc), 0o600)
	if s, err := Load(env(with("GATEWAY_CONFIG", "routing.json", "AzureWebJobsScriptRoot", dir))); err != nil || len(s.Routing.Deployments) != 1 {
		t.Errorf("file config: %v", err)
	}

	const accountKey = "c2VjcmV0LWFjY291bnQta2V5LXZhbHVl"
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"no config", with("GATEWAY_CONFIG", ""), []string{"GATEWAY_CONFIG: not set"}},
		{"missing file", with("GATEWAY_CONFIG", "nope.json", "AzureWebJobsScriptRoot", dir), []string{"nope.json does not exist"}},
		{"bad port", with("FUNCTIONS_CUSTOMHANDLER_PORT", "70x"), []string{"FUNCTIONS_CUSTOMHANDLER_PORT"}},
		{"port too big", with("PORT", "70000"), []string{"PORT"}},
		{"unresolved key vault reference", with("GATEWAY_CONFIG", "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/x/)"), []string{"GATEWAY_CONFIG: is an unresolved Key Vault reference"}},
		{"key env missing", with("DEV_KEY", ""), []string{"accounts.dev.auth.keyEnv: environment variable DEV_KEY is not set"}},
		{"bad connection string", with("GATEWAY_STATE_STORAGE", "AccountKey="+accountKey), []string{"GATEWAY_STATE_STORAGE: the connection string has an AccountKey but no AccountName"}},
		{"bad table", with("GATEWAY_STATE_TABLE", "9x"), []string{"GATEWAY_STATE_TABLE"}},
		{"bad partition", with("GATEWAY_STATE_PARTITION", "a/b"), []string{"GATEWAY_STATE_PARTITION"}},
		{"bad refresh", with("GATEWAY_STATE_REFRESH", "1ms"), []string{"GATEWAY_STATE_REFRESH"}},
		{"http table uri", with("AzureWebJobsStorage__tableServiceUri", "http://acct.table.core.windows.net"), []string{"must be an https:// URL"}},
		{"several at once", with("PORT", "x", "GATEWAY_STATE_TABLE", "no-dash", "DEV_KEY", ""), []string{"PORT", "GATEWAY_STATE_TABLE", "DEV_KEY"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(env(tc.env))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			for _, secret := range []string{accountKey, "k1", "k2"} {
				if strings.Contains(err.Error(), "="+secret) || strings.Contains(err.Error(), " "+secret+" ") {
					t.Errorf("error leaks a secret: %v", err)
				}
			}
		})
	}

	for _, tc := range []struct {
		name                      string
		env                       map[string]string
		setting, uri, conn, table string
	}{
		{"gateway setting first", with("GATEWAY_STATE_STORAGE", "UseDevelopmentStorage=true", "AzureWebJobsStorage", "AccountName=a;AccountKey=b"), "GATEWAY_STATE_STORAGE", "", "UseDevelopmentStorage=true", "gatewaystate"},
		{"falls back to AzureWebJobsStorage", with("AzureWebJobsStorage", "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=a2V5;EndpointSuffix=core.windows.net"), "AzureWebJobsStorage", "", "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=a2V5;EndpointSuffix=core.windows.net", "gatewaystate"},
		{"identity based", with("GATEWAY_STATE_STORAGE__tableServiceUri", "https://a.table.core.windows.net", "GATEWAY_STATE_STORAGE__clientId", testClientID, "GATEWAY_STATE_TABLE", "myTable1", "GATEWAY_STATE_PARTITION", "eu-gateway", "GATEWAY_STATE_REFRESH", "500ms"), "GATEWAY_STATE_STORAGE__tableServiceUri", "https://a.table.core.windows.net", "", "myTable1"},
	} {
		s, err := Load(env(tc.env))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if s.State.Setting != tc.setting || s.State.TableServiceURI != tc.uri || s.State.ConnectionString != tc.conn || s.State.Table != tc.table || !s.State.Configured() {
			t.Errorf("%s: %+v", tc.name, s.State)
		}
		if tc.uri != "" && (s.State.ClientID != testClientID || s.State.Partition != "eu-gateway" || s.State.Refresh != 500*time.Millisecond) {
			t.Errorf("%s: client id %q", tc.name, s.State.ClientID)
		}
	}
}

// TestCapacitySettings: the quota windows, the admission wait and the app budgets, their
// defaults and every problem with them.
func TestCapacitySettings(t *testing.T) {
	with := func(extra string) string { return strings.Replace(validDoc, `"clients"`, extra+`, "clients"`, 1) }
	r, probs := ParseRouting([]byte(with(`"admission": {"chat": {"maxWait": "2s"}}, "budgets": {"apps": {"app-a": {"tokensPerMinute": 100000, "deployments": {"chat": 50000}}}}`)))
	if len(probs) > 0 {
		t.Fatalf("problems: %v", probs)
	}
	if a := r.Admission["chat"]; a.MaxWait.D() != 2*time.Second || a.MaxQueued != DefaultMaxQueued || a.MaxQueuedBytes != DefaultMaxQueuedBytes {
		t.Errorf("admission %+v", a)
	}
	if b := r.Budgets; b.Window.D() != time.Minute || b.Apps["app-a"].TokensPerMinute != 100000 || b.Apps["app-a"].Deployments["chat"] != 50000 {
		t.Errorf("budgets %+v", b)
	}
	if r.Throttle.TokenWindow.D() != time.Minute || r.Throttle.RequestWindow.D() != 10*time.Second {
		t.Errorf("windows %+v", r.Throttle)
	}
	r, probs = ParseRouting([]byte(with(`"throttle": {"tokenWindow": "10s", "requestWindow": "1666ms"}`)))
	if len(probs) > 0 || r.Throttle.TokenWindow.D() != 10*time.Second || r.Throttle.RequestWindow.D() != 1666*time.Millisecond {
		t.Errorf("scaled windows: %v %+v", probs, r.Throttle)
	}
	for _, tc := range []struct{ name, extra, want string }{
		{"admission for an unknown deployment", `"admission": {"nope": {"maxWait": "2s"}}`, `admission.nope: "nope" is not a logical deployment`},
		{"admission without maxWait", `"admission": {"chat": {"maxQueued": 5}}`, "admission.chat.maxWait: required"},
		{"admission wait too long", `"admission": {"chat": {"maxWait": "10m"}}`, "admission.chat.maxWait: 10m0s exceeds timeouts.request"},
		{"admission bad count", `"admission": {"chat": {"maxWait": "1s", "maxQueued": -1}}`, "admission.chat.maxQueued: -1 is out of range"},
		{"admission few bytes", `"admission": {"chat": {"maxWait": "1s", "maxQueuedBytes": 10}}`, "admission.chat.maxQueuedBytes: 10 is below"},
		{"admission unknown field", `"admission": {"chat": {"maxWait": "1s", "wait": "1s"}}`, "admission.chat.wait: unknown field"},
		{"budgets without apps", `"budgets": {}`, "budgets.apps: name at least one app"},
		{"budget with nothing", `"budgets": {"apps": {"a": {}}}`, "budgets.apps.a: set tokensPerMinute, deployments, or both"},
		{"budget negative", `"budgets": {"apps": {"a": {"tokensPerMinute": -5}}}`, "budgets.apps.a.tokensPerMinute: -5 must not be negative"},
		{"budget unknown deployment", `"budgets": {"apps": {"a": {"deployments": {"nope": 5}}}}`, `budgets.apps.a.deployments.nope: "nope" is not a logical deployment`},
		{"budget zero on a deployment", `"budgets": {"apps": {"a": {"deployments": {"chat": 0}}}}`, "budgets.apps.a.deployments.chat: 0 must be a positive number"},
		{"budget window", `"budgets": {"window": "100ms", "apps": {"a": {"tokensPerMinute": 5}}}`, "budgets.window: must be a duration string in 1s..1h"},
		{"budget shape slip", `"budgets": {"app-a": {"tokensPerMinute": 5}}`, "budgets.app-a: unknown field"},
		{"token window out of range", `"throttle": {"tokenWindow": "2h"}`, "throttle.tokenWindow: 2h0m0s is out of range"},
		{"request window bad", `"throttle": {"requestWindow": "soon"}`, "throttle.requestWindow: must be a positive duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, probs := ParseRouting([]byte(with(tc.extra)))
			if all := strings.Join(probs, "\n"); !strings.Contains(all, tc.want) {
				t.Errorf("problems do not mention %q:\n%s", tc.want, all)
			}
		})
	}
}
