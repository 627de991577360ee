package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

func infraDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..")
}

// fakeAzure answers az calls from canned JSON, by the longest prefix of the joined arguments.
type fakeAzure struct {
	answers map[string]string
	errs    map[string]error
	calls   []string
}

func (f *fakeAzure) JSON(_ context.Context, into any, args ...string) error {
	call := strings.Join(args, " ")
	f.calls = append(f.calls, call)
	best := ""
	for k := range f.answers {
		if strings.HasPrefix(call, k) && len(k) > len(best) {
			best = k
		}
	}
	for k, err := range f.errs {
		if strings.HasPrefix(call, k) {
			return err
		}
	}
	if best == "" {
		return fmt.Errorf("unexpected az %s", call)
	}
	return json.Unmarshal([]byte(f.answers[best]), into)
}

func model(name, version, lifecycle, retires, capability string, skus ...string) string {
	var ss []string
	for _, s := range skus {
		ss = append(ss, fmt.Sprintf(`{"name":%q,"usageName":"OpenAI.%s.%s","capacity":{"maximum":1000}}`, s, s, name))
	}
	return fmt.Sprintf(`{"kind":"OpenAI","model":{"format":"OpenAI","name":%q,"version":%q,"lifecycleStatus":%q,"deprecation":{"inference":"%sT00:00:00Z"},"capabilities":{%q:"true"},"skus":[%s]}}`,
		name, version, lifecycle, retires, capability, strings.Join(ss, ","))
}

// azure is a subscription where the default parameters file deploys: an Owner, Flex in both
// regions, the models offered, ample quota.
func azure() *fakeAzure {
	models := "[" + strings.Join([]string{
		model("gpt-5.4-mini", "2026-03-17", "GenerallyAvailable", "2027-09-21", "chatCompletion", "GlobalStandard"),
		model("text-embedding-3-small", "1", "GenerallyAvailable", "2028-02-09", "embeddings", "GlobalStandard", "DataZoneStandard"),
		model("gpt-5-mini", "2025-08-07", "Deprecating", "2027-02-09", "chatCompletion", "GlobalStandard"),
	}, ",") + "]"
	usage := `[{"name":{"value":"OpenAI.GlobalStandard.gpt-5.4-mini"},"currentValue":0,"limit":1000},
		{"name":{"value":"OpenAI.GlobalStandard.text-embedding-3-small"},"currentValue":0,"limit":1000},
		{"name":{"value":"OpenAI.GlobalStandard.gpt-5-mini"},"currentValue":0,"limit":1000}]`
	return &fakeAzure{answers: map[string]string{
		"account show":      `{"id":"sub-1","name":"Sub"}`,
		"group show":        `{}`,
		"rest --method get": `{"value":[{"actions":["*"],"notActions":[]}]}`,
		"functionapp list-flexconsumption-locations": `[{"name":"eastus2"},{"name":"swedencentral"}]`,
		"cognitiveservices model list":               models,
		"cognitiveservices usage list":               usage,
		"cognitiveservices account list":             `[]`,
		"cognitiveservices account list-deleted":     `[]`,
		"keyvault list-deleted":                      `[]`,
	}}
}

func defaultPlan(t *testing.T) *Plan {
	t.Helper()
	p, err := LoadPlan(filepath.Join(infraDir(), "main.json"), filepath.Join(infraDir(), "main.parameters.json"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var now = time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)

func TestLoadPlanTakesTheFileThenTheTemplatesDefaults(t *testing.T) {
	p := defaultPlan(t)
	if p.Prefix != "aoaigw" || p.Salt != "" || !p.PurgeProtection || strings.Join(p.Regions, ",") != "eastus2,swedencentral" {
		t.Errorf("plan: %+v", p)
	}
	if len(p.Deployments) != 4 || p.Deployments[2].Location != "swedencentral" || p.Deployments[2].Model == "" {
		t.Errorf("deployments: %+v", p.Deployments)
	}
	if p.VaultNamePrefix() != "aoaigw-kv-" || p.AccountNamePrefix("swc") != "aoaigw-swc-" {
		t.Errorf("name prefixes %q %q", p.VaultNamePrefix(), p.AccountNamePrefix("swc"))
	}
	bad := filepath.Join(t.TempDir(), "p.json")
	_ = os.WriteFile(bad, []byte(`{"parameters":{"regions":{"value":["eastus2"]},
		"openAiAccounts":{"value":[{"name":"a","location":"East US 2"}]},
		"openAiDeployments":{"value":[{"account":"a","name":"x","model":"m","sku":"GlobalStandard","capacity":1},{"account":"zz","name":"y","model":"m","version":"1","sku":"GlobalStandard","capacity":1}]}}}`), 0o644)
	_, err := LoadPlan(filepath.Join(infraDir(), "main.json"), bad)
	if err == nil || !strings.Contains(err.Error(), `openAiDeployments[0] (account "a", deployment "x"): model, version, sku and capacity`) ||
		!strings.Contains(err.Error(), `no account "zz"`) {
		t.Errorf("incomplete entries: %v", err)
	}
}

func TestRunPassesForTheDefaults(t *testing.T) {
	az := azure()
	r := Run(context.Background(), az, defaultPlan(t), "rg", "", "", now)
	if len(r.Problems) > 0 || len(r.Warnings) > 0 {
		t.Fatalf("problems %v, warnings %v", r.Problems, r.Warnings)
	}
	for _, call := range az.calls {
		for _, verb := range []string{" create", " delete", " set", " purge", " recover", "--method put", "--method post"} {
			if strings.Contains(call, verb) {
				t.Errorf("the pre-flight changed something: az %s", call)
			}
		}
	}
}

// A redeploy replaces deployments in place: the quota they hold already counts as free for them.
func TestRunCreditsTheCapacityOfDeploymentsItReplaces(t *testing.T) {
	az := azure()
	az.answers["cognitiveservices usage list"] = `[{"name":{"value":"OpenAI.GlobalStandard.gpt-5.4-mini"},"currentValue":950,"limit":1000},
		{"name":{"value":"OpenAI.GlobalStandard.text-embedding-3-small"},"currentValue":0,"limit":1000}]`
	az.answers["cognitiveservices account list"] = `[{"name":"aoaigw-eus2-abcdefghijklm","location":"eastus2"},{"name":"aoaigw-swc-abcdefghijklm","location":"swedencentral"},{"name":"unrelated","location":"eastus2"}]`
	az.answers["cognitiveservices account deployment list"] = `[{"name":"chat","sku":{"name":"GlobalStandard","capacity":100},"properties":{"model":{"name":"gpt-5.4-mini","version":"2026-03-17"}}},
		{"name":"other","sku":{"name":"GlobalStandard","capacity":700},"properties":{"model":{"name":"gpt-5.4-mini","version":"2026-03-17"}}}]`
	r := Run(context.Background(), az, defaultPlan(t), "rg", "", "", now)
	if len(r.Problems) > 0 {
		t.Fatalf("the plan's own deployments were counted against it: %v", r.Problems)
	}
	// Without them in the group, 50 free is too little.
	az.answers["cognitiveservices account list"] = `[]`
	r = Run(context.Background(), az, defaultPlan(t), "rg", "", "", now)
	if len(r.Problems) != 2 || !strings.Contains(r.Problems[0], "quota OpenAI.GlobalStandard.gpt-5.4-mini: the deployments need 100") {
		t.Errorf("quota shortfall not said: %v", r.Problems)
	}
}

func TestRunWarnsOfAModelClosedToNewCustomers(t *testing.T) {
	p := defaultPlan(t)
	p.Deployments[0].Model, p.Deployments[0].Version = "gpt-5-mini", "2025-08-07"
	r := Run(context.Background(), azure(), p, "rg", "", "", now)
	if len(r.Problems) > 0 || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "gpt-5-mini 2025-08-07 takes no new customers (retires 2027-02-09)") ||
		!strings.Contains(r.Warnings[0], `model "gpt-5.4-mini" version "2026-03-17"`) {
		t.Errorf("problems %v, warnings %v", r.Problems, r.Warnings)
	}
}

func TestRunSaysWhatItCouldNotCheck(t *testing.T) {
	az := azure()
	az.errs = map[string]error{"cognitiveservices model list -l swedencentral": &AzError{Args: []string{"cognitiveservices", "model", "list"}, TimedOut: true, Limit: 2 * time.Second}}
	r := Run(context.Background(), az, defaultPlan(t), "rg", "", "", now)
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "could not check the Azure OpenAI models offered in swedencentral: az cognitiveservices model list gave no answer in 2 s") ||
		!strings.Contains(r.Problems[0], "--skip-preflight") {
		t.Errorf("problems %v", r.Problems)
	}
	var ok bool
	for _, s := range r.OK {
		ok = ok || strings.HasPrefix(s, "eus2/chat:")
	}
	if !ok {
		t.Errorf("the region it could read was not checked: %v", r.OK)
	}
}

func TestAllowedFollowsRBACWildcards(t *testing.T) {
	owner := []Permission{{Actions: []string{"*"}}}
	contributor := []Permission{{Actions: []string{"*"}, NotActions: []string{"Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write", "Microsoft.Authorization/elevateAccess/Action"}}}
	uaa := []Permission{{Actions: []string{"*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"}}}
	rbacAdmin := []Permission{{Actions: []string{"Microsoft.Authorization/roleAssignments/write", "Microsoft.Authorization/roleAssignments/delete", "*/read"}}}
	reader := []Permission{{Actions: []string{"*/read"}}}
	for _, tc := range []struct {
		name   string
		perms  []Permission
		assign bool
		deploy bool
	}{
		{"owner", owner, true, true},
		{"contributor", contributor, false, true},
		{"user access administrator", uaa, true, false},
		{"contributor + RBAC administrator", append(contributor, rbacAdmin...), true, true},
		{"reader", reader, false, false},
	} {
		if got := allowed(tc.perms, opRoleAssignmentsWrite); got != tc.assign {
			t.Errorf("%s: role assignments %v, want %v", tc.name, got, tc.assign)
		}
		if got := allowed(tc.perms, opDeploymentsWrite); got != tc.deploy {
			t.Errorf("%s: deployments %v, want %v", tc.name, got, tc.deploy)
		}
	}
}

// A stuck az call ends at its bound, with its children: az is a script around Python.
func TestCLIEndsAStuckCallAndItsChildren(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("unix process groups")
	}
	dir := t.TempDir()
	pids := filepath.Join(dir, "pids")
	script := filepath.Join(dir, "az")
	_ = os.WriteFile(script, []byte("#!/bin/sh\necho $$ > "+pids+"\nsleep 600 &\necho $! >> "+pids+"\nwait\n"), 0o755)
	start := time.Now()
	var v any
	err := CLI{Path: script, Timeout: 500 * time.Millisecond}.JSON(context.Background(), &v, "group", "show")
	var ae *AzError
	if !errors.As(err, &ae) || !ae.TimedOut || !strings.Contains(err.Error(), "az group show gave no answer in 0 s") {
		t.Errorf("err = %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
	b, _ := os.ReadFile(pids)
	for _, f := range strings.Fields(string(b)) {
		var pid int
		fmt.Sscan(f, &pid)
		deadline := time.Now().Add(5 * time.Second)
		for syscall.Kill(pid, 0) == nil && !zombie(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if syscall.Kill(pid, 0) == nil && !zombie(pid) {
			t.Errorf("process %d outlived the call", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] == "Z"
}

func TestCLIReportsAzErrors(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("shell script")
	}
	script := filepath.Join(t.TempDir(), "az")
	_ = os.WriteFile(script, []byte("#!/bin/sh\necho \"ERROR: (ResourceGroupNotFound) Resource group 'rg' could not be found.\" >&2\nexit 3\n"), 0o755)
	var v any
	err := CLI{Path: script, Timeout: 5 * time.Second}.JSON(context.Background(), &v, "group", "show", "-n", "rg")
	if !notFound(err) || !strings.Contains(err.Error(), "az group show -n rg: (ResourceGroupNotFound) Resource group 'rg' could not be found.") {
		t.Errorf("err = %v", err)
	}
}
