package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/aoai-failover/gateway/tests/azurite"
)

// The handler's command line: `-h`, `-version`, `-check`, and a real start, run as the built
// binary. A setting the start would refuse is refused by `-check` with the same message.

// cliDoc is a routing document a start accepts without contacting anything (a keyEnv account,
// no vault, no table), so only what a case changes can make it fail.
const cliDoc = `{"accounts":{"a":{"endpoint":"http://127.0.0.1:9","auth":{"keyEnv":"CLI_KEY_A"}}},` +
	`"deployments":{"chat":[{"account":"a","deployment":"d"}]},"clients":{"anonymous":true}}`

// cliKey and cliAccountKey are secrets: no output may hold them.
const (
	cliKey        = "cli-backend-key-4b1d2f9e"
	cliAccountKey = "c2VjcmV0LXN0b3JhZ2UtYWNjb3VudC1rZXktZm9yLWNsaQ=="
)

type handlerRun struct {
	code           int
	stdout, stderr string
	bound          bool // something accepted connections on its port while it ran
}

// runHandler runs the binary with args and exactly the settings in env (plus PATH, HOME and
// FUNCTIONS_CUSTOMHANDLER_PORT on a free port), waits for it to exit (at most 20 s, then it is
// killed and the test fails), and watches its port meanwhile.
func runHandler(t *testing.T, bin string, env map[string]string, args ...string) handlerRun {
	t.Helper()
	port := freePort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "FUNCTIONS_CUSTOMHANDLER_PORT=" + port}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var r handlerRun
	var err error
wait:
	for {
		select {
		case err = <-done:
			break wait
		case <-time.After(10 * time.Millisecond):
			if c, derr := net.DialTimeout("tcp", "127.0.0.1:"+port, 50*time.Millisecond); derr == nil {
				c.Close()
				r.bound = true
			}
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("handler %q did not exit within 20s (it is serving?)\nstderr: %s", args, stderr.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("handler %q: %v", args, err)
	}
	r.code = cmd.ProcessState.ExitCode()
	r.stdout, r.stderr = stdout.String(), stderr.String()
	for _, secret := range []string{cliKey, cliAccountKey[:16]} {
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Errorf("handler %q printed a secret value", args)
		}
	}
	if strings.Contains(r.stdout+r.stderr, "panic") {
		t.Errorf("handler %q panicked:\n%s%s", args, r.stdout, r.stderr)
	}
	return r
}

func TestCLIHelp(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help"} {
		r := runHandler(t, handlerBin, map[string]string{"GATEWAY_CONFIG": cliDoc, "CLI_KEY_A": cliKey}, arg)
		if r.code != 0 || r.stderr != "" || r.bound {
			t.Errorf("%s: exit %d, bound %v, stderr %q", arg, r.code, r.bound, r.stderr)
		}
		for _, want := range []string{"Usage: handler", "Azure OpenAI failover gateway", "-check", "-version", "GATEWAY_CONFIG", "GATEWAY_STATE_STORAGE", "AZURE_CLIENT_ID", "FUNCTIONS_CUSTOMHANDLER_PORT", "Exit status"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("%s: usage lacks %q:\n%s", arg, want, r.stdout)
			}
		}
	}
}

// TestCLIRefusesAWrongCommandLine: with settings that would start the gateway, an unknown
// flag or a stray argument exits 2 with the usage on stderr, and nothing listens.
func TestCLIRefusesAWrongCommandLine(t *testing.T) {
	env := map[string]string{"GATEWAY_CONFIG": cliDoc, "CLI_KEY_A": cliKey}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-x"}, "flag provided but not defined: -x"},
		{[]string{"--chek"}, "flag provided but not defined: -chek"},
		{[]string{"serve"}, `unexpected argument "serve"`},
		{[]string{"-check", "extra"}, `unexpected argument "extra"`},
		{[]string{"-check", "-version"}, "cannot be given together"},
	} {
		r := runHandler(t, handlerBin, env, tc.args...)
		if r.code != 2 || r.bound || r.stdout != "" || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "Usage: handler") {
			t.Errorf("%q: exit %d, bound %v, stdout %q, stderr %q", tc.args, r.code, r.bound, r.stdout, r.stderr)
		}
	}
	// The same settings do start it, so the refusals above were the command line's.
	p := startGateway(t, env, cliKey)
	p.stop(t)
}

func TestCLIVersion(t *testing.T) {
	r := runHandler(t, handlerBin, nil, "-version")
	if r.code != 0 || r.stderr != "" || r.bound {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{"handler ", "module: github.com/aoai-failover/gateway\n", "go: " + runtime.Version() + "\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("-version lacks %q:\n%s", want, r.stdout)
		}
	}

	// Built with its VCS information (GOFLAGS may turn it off), it names the revision.
	head, err := exec.Command("git", "-C", repoRoot(), "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("no git repository to compare with: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "handler")
	build := exec.Command("go", "build", "-buildvcs=true", "-o", bin, "./handler")
	build.Dir = repoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build with VCS information: %v\n%s", err, out)
	}
	status, err := exec.Command("git", "-C", repoRoot(), "status", "--porcelain").Output()
	if err != nil {
		t.Fatal(err)
	}
	r = runHandler(t, bin, nil, "-version")
	modified := "modified: " + map[bool]string{true: "true", false: "false"}[len(status) > 0] + "\n"
	for _, want := range []string{"revision: " + strings.TrimSpace(string(head)) + "\n", "time: ", modified, "go: " + runtime.Version()} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("-version (exit %d) lacks %q:\n%s", r.code, want, r.stdout)
		}
	}
}

// startProblems is the list a failed start printed on stderr: "handler: invalid configuration:
// X" for one problem, or "handler: invalid configuration (n problems):" and "  - X" lines.
func startProblems(stderr string) []string {
	var probs []string
	for _, line := range strings.Split(stderr, "\n") {
		if p, ok := strings.CutPrefix(line, "handler: invalid configuration: "); ok {
			probs = append(probs, p)
		} else if p, ok := strings.CutPrefix(line, "  - "); ok {
			probs = append(probs, p)
		}
	}
	sort.Strings(probs)
	return probs
}

// TestCheckAndStartAgree: each setting the start refuses, `handler -check` refuses with the
// same message; both exit 1, the start before it listens, with every problem at once.
func TestCheckAndStartAgree(t *testing.T) {
	withDoc := func(old, new string) string { return strings.Replace(cliDoc, old, new, 1) }
	keyVaultDoc := func(vault string) string {
		return withDoc(`"accounts"`, `"keyVault":"`+vault+`","accounts"`)
	}
	cases := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"setting: table name", map[string]string{"GATEWAY_STATE_TABLE": "1bad"}, []string{`GATEWAY_STATE_TABLE: "1bad" is not a valid table name`}},
		{"setting: refresh interval", map[string]string{"GATEWAY_STATE_REFRESH": "1ms"}, []string{"GATEWAY_STATE_REFRESH: \"1ms\" must be a duration from 100ms to 1m"}},
		{"setting: keyEnv variable unset", map[string]string{"CLI_KEY_A": ""}, []string{"accounts.a.auth.keyEnv: environment variable CLI_KEY_A is not set or empty"}},
		{"routing document: unknown account", map[string]string{"GATEWAY_CONFIG": withDoc(`"account":"a"`, `"account":"b"`)}, []string{`deployments.chat[0].account: unknown account "b"`}},
		{"routing document: plain http to a remote host", map[string]string{"GATEWAY_CONFIG": withDoc("http://127.0.0.1:9", "http://10.0.0.1")}, []string{"accounts.a.endpoint: \"http://10.0.0.1\": plain http is accepted only for loopback addresses"}},
		{"routing document: missing file", map[string]string{"GATEWAY_CONFIG": "routing.json"}, []string{"GATEWAY_CONFIG: file routing.json does not exist"}},
		{"storage: account key not base64", map[string]string{"GATEWAY_STATE_STORAGE": "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=" + cliAccountKey[:20] + "*"}, []string{"GATEWAY_STATE_STORAGE: the connection string's AccountKey is not valid base64"}},
		{"storage: key without an account", map[string]string{"AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountKey=" + cliAccountKey}, []string{"AzureWebJobsStorage: the connection string has an AccountKey but no AccountName"}},
		{"storage: table service over http", map[string]string{"GATEWAY_STATE_STORAGE__tableServiceUri": "http://acct.table.core.windows.net"}, []string{"GATEWAY_STATE_STORAGE__tableServiceUri: must be an https:// URL"}},
		{"Key Vault URL with a path", map[string]string{"GATEWAY_CONFIG": keyVaultDoc("https://kv.vault.azure.net/secrets/aoai")}, []string{"GATEWAY_CONFIG: keyVault: must be just the vault's https:// URL"}},
		{"Key Vault URL over http", map[string]string{"GATEWAY_CONFIG": keyVaultDoc("http://kv.vault.azure.net/")}, []string{`GATEWAY_CONFIG: keyVault: "http://kv.vault.azure.net/" must be an https:// vault URL`}},
		{"Key Vault reference not resolved", map[string]string{"CLI_KEY_A": "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/a/)"}, []string{"accounts.a.auth.keyEnv: environment variable CLI_KEY_A is an unresolved Key Vault reference"}},
		{"identity: malformed AZURE_CLIENT_ID", map[string]string{"AZURE_CLIENT_ID": "gateway-identity"}, []string{"AZURE_CLIENT_ID: not a client id"}},
		{"identity: state clientId", map[string]string{"GATEWAY_STATE_STORAGE__tableServiceUri": "https://acct.table.core.windows.net", "GATEWAY_STATE_STORAGE__clientId": "7d2c1a9e-0000-4000-8000"}, []string{"GATEWAY_STATE_STORAGE__clientId: not a client id"}},
		{"identity: the SDK refuses the credential chain", map[string]string{"GATEWAY_CONFIG": withDoc(`{"keyEnv":"CLI_KEY_A"}`, `{"managedIdentity":true}`), "AZURE_TOKEN_CREDENTIALS": "nonsense"}, []string{"the gateway's identity: invalid AZURE_TOKEN_CREDENTIALS value"}},
		{"several at once", map[string]string{
			"GATEWAY_STATE_STORAGE": "AccountName=acct;AccountKey=!" + cliAccountKey,
			"AZURE_CLIENT_ID":       "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id",
			"GATEWAY_STATE_TABLE":   "x",
			"GATEWAY_CONFIG":        keyVaultDoc("https://kv.vault.azure.net/?x=1"),
			"CLI_KEY_A":             "",
		}, []string{"GATEWAY_STATE_STORAGE: the connection string's AccountKey is not valid base64", "AZURE_CLIENT_ID: is a resource id", `GATEWAY_STATE_TABLE: "x"`, "keyVault: must be just", "CLI_KEY_A is not set"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"GATEWAY_CONFIG": cliDoc, "CLI_KEY_A": cliKey}
			for k, v := range tc.env {
				env[k] = v
			}
			check := runHandler(t, handlerBin, env, "-check")
			var report struct {
				OK       bool     `json:"ok"`
				Problems []string `json:"problems"`
			}
			if err := json.Unmarshal([]byte(check.stdout), &report); err != nil {
				t.Fatalf("-check printed %q: %v", check.stdout, err)
			}
			if check.code != 1 || report.OK || !strings.Contains(check.stderr, "would not start the gateway") {
				t.Errorf("-check: exit %d, ok %v, stderr %q", check.code, report.OK, check.stderr)
			}
			start := runHandler(t, handlerBin, env)
			if start.code != 1 || start.bound || strings.Contains(start.stdout, "listening") {
				t.Errorf("start: exit %d, bound %v\n%s%s", start.code, start.bound, start.stdout, start.stderr)
			}
			// One message: every problem in one error, nothing else on stderr.
			if n := strings.Count(start.stderr, "handler: "); n != 1 {
				t.Errorf("start printed %d messages:\n%s", n, start.stderr)
			}
			got := startProblems(start.stderr)
			sort.Strings(report.Problems)
			if strings.Join(got, "\n") != strings.Join(report.Problems, "\n") {
				t.Errorf("-check and the start disagree\n-check: %q\nstart:  %q", report.Problems, got)
			}
			for _, w := range tc.want {
				if !strings.Contains(strings.Join(report.Problems, "\n"), w) || !strings.Contains(start.stderr, w) {
					t.Errorf("%q is not in both outputs\n-check: %q\nstart:  %s", w, report.Problems, start.stderr)
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("%d problems, want %d: %q", len(got), len(tc.want), got)
			}
		})
	}
}

// TestCheckPassesWhatStarts: settings that start the gateway pass -check, exit 0.
func TestCheckPassesWhatStarts(t *testing.T) {
	env := map[string]string{"GATEWAY_CONFIG": cliDoc, "CLI_KEY_A": cliKey, "GATEWAY_STATE_STORAGE": "UseDevelopmentStorage=true",
		"AZURE_CLIENT_ID": "7d2c1a9e-0000-4000-8000-00000000c1d0"}
	r := runHandler(t, handlerBin, env, "-check")
	var report struct {
		OK          bool     `json:"ok"`
		Deployments []string `json:"deployments"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &report); err != nil || r.code != 0 || !report.OK || strings.Join(report.Deployments, ",") != "chat" || r.bound {
		t.Errorf("exit %d, bound %v: %s %s", r.code, r.bound, r.stdout, r.stderr)
	}
}

// TestCheckAndStartAcceptEachConnectionStringForm: what -check accepts, the start connects with:
// a connection string with an account key, the same with its names in lower case, and one with
// only TableEndpoint and SharedAccessSignature, each against Azurite.
func TestCheckAndStartAcceptEachConnectionStringForm(t *testing.T) {
	az := azurite.Start(t)
	endpoint := "http://127.0.0.1:" + az.Port + "/devstoreaccount1"
	cred, err := aztables.NewSharedKeyCredential("devstoreaccount1", azurite.AccountKey)
	if err != nil {
		t.Fatal(err)
	}
	perms := aztables.AccountSASPermissions{Read: true, Write: true, Add: true, Create: true, Update: true, List: true, Delete: true}
	types := aztables.AccountSASResourceTypes{Service: true, Container: true, Object: true}
	sas, err := aztables.AccountSASSignatureValues{Protocol: aztables.SASProtocolHTTPSandHTTP, StartTime: time.Now().Add(-time.Minute),
		ExpiryTime: time.Now().Add(time.Hour), Permissions: perms.String(), Services: "t", ResourceTypes: types.String()}.Sign(cred)
	if err != nil {
		t.Fatal(err)
	}
	sig := sas.Signature()
	for i, cs := range []string{
		az.ConnectionString,
		"accountname=devstoreaccount1;accountkey=" + azurite.AccountKey + ";tableendpoint=" + endpoint,
		"TableEndpoint=" + endpoint + ";SharedAccessSignature=" + sas.Encode(),
	} {
		env := map[string]string{"GATEWAY_CONFIG": cliDoc, "CLI_KEY_A": cliKey, "GATEWAY_STATE_STORAGE": cs, "GATEWAY_STATE_TABLE": fmt.Sprintf("form%d", i)}
		r := runHandler(t, handlerBin, env, "-check")
		if r.code != 0 || !strings.Contains(r.stdout, `"ok": true`) {
			t.Errorf("form %d: -check exit %d: %s", i, r.code, r.stdout)
			continue
		}
		p := startGateway(t, env, cliKey, sig)
		waitFor(t, fmt.Sprintf("form %d: the state table created", i), 5*time.Second, func() bool {
			return strings.Contains(p.stdout.String(), `"msg":"sharing target state through Table Storage"`)
		})
		if s := getStatus(t, p.URL); s.Store.Kind != "table" || !s.Store.Shared {
			t.Errorf("form %d: store %+v", i, s.Store)
		}
		p.stop(t)
	}
}
