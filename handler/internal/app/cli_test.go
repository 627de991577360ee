package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/aoai-failover/gateway/handler/internal/config"
)

func mainWith(t *testing.T, args []string, getenv func(string) string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errs bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code = Main(ctx, args, Env{Getenv: getenv, Stdout: &out, Stderr: &errs})
	return code, out.String(), errs.String()
}

// noSettings fails the test if a setting is read: the command line was refused before.
func noSettings(t *testing.T) func(string) string {
	return func(name string) string {
		t.Errorf("read %s: the command line should have been refused first", name)
		return ""
	}
}

func TestMainHelp(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help"} {
		code, out, errs := mainWith(t, []string{arg}, noSettings(t))
		if code != ExitOK || errs != "" {
			t.Errorf("%s: exit %d, stderr %q", arg, code, errs)
		}
		for _, want := range []string{"Usage: handler", "-check", "-version", "GATEWAY_CONFIG", "GATEWAY_STATE_STORAGE", "AZURE_CLIENT_ID", "Exit status", "2  a wrong command line"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: usage lacks %q:\n%s", arg, want, out)
			}
		}
	}
}

func TestMainRefusesAWrongCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-x"}, "flag provided but not defined: -x"},
		{[]string{"--chek"}, "flag provided but not defined: -chek"},
		{[]string{"serve"}, `unexpected argument "serve"`},
		{[]string{"-check", "now"}, `unexpected argument "now"`},
		{[]string{"-check", "-version"}, "cannot be given together"},
		{[]string{"-check=maybe"}, "invalid boolean value"},
	} {
		code, out, errs := mainWith(t, tc.args, noSettings(t))
		if code != ExitUsage || out != "" || !strings.Contains(errs, tc.want) || !strings.Contains(errs, "Usage: handler") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", tc.args, code, out, errs)
		}
	}
}

func TestVersionText(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/aoai-failover/gateway", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{{Key: "-trimpath", Value: "true"}, {Key: "vcs.modified", Value: "true"}, {Key: "vcs.revision", Value: "7db2fefdbd41"}, {Key: "vcs.time", Value: "2026-12-03T08:50:48Z"}}}
	want := "handler v1.2.3\nmodule: github.com/aoai-failover/gateway\nrevision: 7db2fefdbd41\ntime: 2026-12-03T08:50:48Z\nmodified: true\ngo: go1.26.8\n"
	if got := versionText(bi, true); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if got := versionText(&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "m", Version: "(devel)"}}, true); got != "handler (devel)\nmodule: m\ngo: go1.26.8\n" {
		t.Errorf("without VCS: %q", got)
	}
	if got := versionText(nil, false); !strings.Contains(got, "no build information") {
		t.Errorf("without build info: %q", got)
	}
	code, out, _ := mainWith(t, []string{"-version"}, noSettings(t))
	if code != ExitOK || !strings.HasPrefix(out, "handler ") || !strings.Contains(out, "go: go1.") {
		t.Errorf("-version: exit %d %q", code, out)
	}
}

const goodDoc = `{"accounts":{"a":{"endpoint":"http://127.0.0.1:9","auth":{"keyEnv":"A_KEY"}},"m":{"endpoint":"https://m.openai.azure.com","auth":{"managedIdentity":true}}},` +
	`"deployments":{"chat":[{"account":"a","deployment":"d"},{"account":"m","deployment":"d"}]},"clients":{"anonymous":true}}`

func envOf(kv ...string) func(string) string {
	m := map[string]string{"GATEWAY_CONFIG": goodDoc, "A_KEY": "key-a-0123456789"}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func checkReport(t *testing.T, getenv func(string) string) (CheckReport, int, string) {
	t.Helper()
	code, out, errs := mainWith(t, []string{"-check"}, getenv)
	var r CheckReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("-check printed %q: %v", out, err)
	}
	return r, code, errs
}

func TestCheckPasses(t *testing.T) {
	r, code, errs := checkReport(t, envOf("GATEWAY_STATE_STORAGE", "UseDevelopmentStorage=true", "AZURE_CLIENT_ID", "7d2c1a9e-0000-4000-8000-00000000c1d0"))
	if code != ExitOK || !r.OK || len(r.Problems) > 0 || strings.Join(r.Deployments, ",") != "chat" || r.HealthPath != HealthPath || errs != "" {
		t.Errorf("exit %d %+v %q", code, r, errs)
	}
}

// TestCheckAndStartAgree: for each bad setting, `-check` and the real start fail with the same
// list of problems, because both run prepare; the start returns it before anything listens.
func TestCheckAndStartAgree(t *testing.T) {
	const key = "c2VjcmV0LWFjY291bnQta2V5LXZhbHVl"
	for _, tc := range []struct {
		name   string
		getenv func(string) string
		osenv  []string // settings the Azure SDK reads from the process itself
		want   []string
	}{
		{"account key not base64", envOf("GATEWAY_STATE_STORAGE", "AccountName=acct;AccountKey=!"+key), nil, []string{"AccountKey is not valid base64"}},
		{"malformed client id", envOf("AZURE_CLIENT_ID", "gateway-identity"), nil, []string{"AZURE_CLIENT_ID: not a client id"}},
		{"malformed state client id", envOf("GATEWAY_STATE_STORAGE__tableServiceUri", "https://acct.table.core.windows.net", "GATEWAY_STATE_STORAGE__clientId", "x"), nil, []string{"GATEWAY_STATE_STORAGE__clientId: not a client id"}},
		{"routing document", envOf("GATEWAY_CONFIG", `{"accounts":{}}`), nil, []string{"accounts: at least one account", "clients: required", "deployments: at least one"}},
		{"identity chain refused by the SDK", envOf(), []string{"AZURE_TOKEN_CREDENTIALS", "bogus"}, []string{"the gateway's identity: invalid AZURE_TOKEN_CREDENTIALS value"}},
		{"several", envOf("GATEWAY_STATE_STORAGE", "AccountName=acct;AccountKey=!"+key, "AZURE_CLIENT_ID", "x", "PORT", "http"), nil, []string{"AccountKey", "AZURE_CLIENT_ID", "PORT"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i+1 < len(tc.osenv); i += 2 {
				t.Setenv(tc.osenv[i], tc.osenv[i+1])
			}
			r, code, _ := checkReport(t, tc.getenv)
			if code != ExitError || r.OK {
				t.Fatalf("-check passed: %+v", r)
			}
			var out, errs bytes.Buffer
			err := Run(context.Background(), Env{Getenv: tc.getenv, Stdout: &out, Stderr: &errs})
			var probs config.Problems
			if !errors.As(err, &probs) {
				t.Fatalf("start: %v, want the list of problems", err)
			}
			if strings.Join(probs, "\n") != strings.Join(r.Problems, "\n") {
				t.Errorf("-check and the start disagree:\n-check: %q\nstart:  %q", r.Problems, probs)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("start's message lacks %q: %v", w, err)
				}
			}
			if len(probs) != len(tc.want) {
				t.Errorf("%d problems, want %d: %v", len(probs), len(tc.want), err)
			}
			if strings.Contains(err.Error(), key[:16]) {
				t.Errorf("the message quotes the key: %v", err)
			}
		})
	}
}
