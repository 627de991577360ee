package infra

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeAz stands in for the Azure CLI: it records every call in $FAKE_AZ_LOG and answers the
// way az does (tsv values, JSON from the files in $FAKE_AZ_DATA, exit status 3 and an az-style
// error for "not found"). Calls whose arguments contain $FAKE_AZ_HANG never answer: like az, a
// script around a child process, it waits on a child that sleeps.
const fakeAz = `#!/usr/bin/env bash
echo "az $*" >> "$FAKE_AZ_LOG"
args="$*"
data="$FAKE_AZ_DATA"
if [ -n "${FAKE_AZ_HANG:-}" ] && [[ "$args" == *"$FAKE_AZ_HANG"* ]]; then
  echo "$$" >> "$FAKE_AZ_LOG.hung"
  sleep 600 &
  echo "$!" >> "$FAKE_AZ_LOG.hung"
  wait
  exit 0
fi
file() { if [ -f "$data/$1" ]; then cat "$data/$1"; else echo '[]'; fi; }
arg() { local v=${args##*"$1 "}; echo "${v%% *}"; }
case "$args" in
  "account show --output none") [ -z "${FAKE_AZ_LOGGED_OUT:-}" ] || { echo "Please run 'az login' to setup account." >&2; exit 1; } ;;
  "account show --query user.type -o tsv") echo user ;;
  "ad signed-in-user show --query id -o tsv") echo 11111111-2222-3333-4444-555555555555 ;;
  "account show -o json"*) echo '{"id":"00000000-0000-0000-0000-0000000000aa","name":"Test subscription"}' ;;
  "group show"*)
    if [ -n "${FAKE_AZ_GROUP_MISSING:-}" ] && [ ! -f "$FAKE_AZ_LOG.created" ]; then
      echo "ERROR: (ResourceGroupNotFound) Resource group '$(arg -n)' could not be found." >&2; exit 3
    fi
    echo '{}' ;;
  "group create"*) touch "$FAKE_AZ_LOG.created" ;;
  "rest --method get --url "*"/providers/Microsoft.Authorization/permissions"*) file permissions.json ;;
  "role assignment list"*) file roles.json ;;
  "functionapp list-flexconsumption-locations"*) file flex.json ;;
  "cognitiveservices model list"*) file "models.$(arg -l).json" ;;
  "cognitiveservices usage list"*) file "usage.$(arg -l).json" ;;
  "cognitiveservices account list-deleted"*) file deleted-accounts.json ;;
  "cognitiveservices account list "*) file accounts.json ;;
  "cognitiveservices account deployment list"*) file "deployments.$(arg -n).json" ;;
  "keyvault list-deleted"*) file deleted-vaults.json ;;
  "keyvault recover"*|"keyvault purge"*|"cognitiveservices account recover"*|"cognitiveservices account purge"*) ;;
  "deployment group create"*|"deployment group what-if"*) ;;
  "deployment group show"*provisioningState*) echo "${FAKE_AZ_TEMPLATE_STATE:-Succeeded}" ;;
  "deployment group show"*properties.error*) echo '{"code":"DeploymentFailed"}' ;;
  "deployment group show"*)
    case "$args" in
      *outputs.frontDoorEndpoint.value*) echo https://gw-abc.z01.azurefd.net ;;
      *outputs.keyVaultName.value*) echo gw-kv-abc ;;
      *outputs.clientKeysSecret.value*) echo gateway-client-keys ;;
      *outputs.exampleDeployment.value*) echo chat ;;
      *outputs.functionAppNames.value*) printf 'gw-swedencentral-abc\ngw-francecentral-abc\n' ;;
      *outputs.functionAppPrincipalIds.value*) printf 'p-1\np-2\n' ;;
      *outputs.existingAccountsCalledWithIdentity.value*) printf '%s' "${FAKE_AZ_EXISTING-/subscriptions/s/resourceGroups/other/providers/Microsoft.CognitiveServices/accounts/legacy}" ;;
    esac ;;
  "functionapp show"*) echo "$(arg -n).scm.azurewebsites.net" ;;
  "account get-access-token"*) echo fake-token ;;
  "keyvault secret show"*) exit 3 ;;
  "keyvault secret set"*) echo "$args" > "$FAKE_AZ_SECRET" ;;
  "role assignment create"*) [ -z "${FAKE_AZ_ROLE_EXISTS:-}" ] || { echo "ERROR: The role assignment already exists." >&2; exit 1; } ;;
  *) echo "fake az: unexpected: $args" >&2; exit 2 ;;
esac
`

// fakeCurl stands in for curl: the OneDeploy endpoint of each app's SCM site (POST /api/publish
// answers 202 with a deployment id, GET /api/deployments/ID its status) and Front Door's
// /healthz. $FAKE_PUBLISH_FAIL and $FAKE_DEPLOY_STUCK name apps whose upload fails or whose
// deployment never ends; the uploaded zip is kept as $FAKE_AZ_DEPLOYED.APP.
const fakeCurl = `#!/usr/bin/env bash
echo "curl $*" >> "$FAKE_AZ_LOG"
out="" fmt="" data="" url=""
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift ;;
    -w) fmt=$2; shift ;;
    --data-binary) data=${2#@}; shift ;;
    -H|-X|--max-time|--connect-timeout) shift ;;
    https://*) url=$1 ;;
  esac
  shift
done
host=${url#https://}; host=${host%%/*}; app=${host%%.scm.*}
code=200 body=""
case "$url" in
  */api/publish*)
    if [[ " ${FAKE_PUBLISH_FAIL:-} " == *" $app "* ]]; then code=500 body="busy"
    else cp "$data" "$FAKE_AZ_DEPLOYED.$app"; code=202 body="\"dep-$app\""; fi ;;
  */api/deployments/*)
    status=4
    [[ " ${FAKE_DEPLOY_STUCK:-} " == *" $app "* ]] && status=1
    body="{\"id\":\"dep-$app\",\"status\":$status,\"status_text\":\"\",\"complete\":false}" ;;
  */healthz) code=${FAKE_HEALTH_CODE:-200} ;;
  *) echo "fake curl: unexpected $url" >&2; exit 2 ;;
esac
if [ -n "$out" ]; then printf '%s' "$body" > "$out"; else printf '%s' "$body"; fi
[ -z "$fmt" ] || printf '%s' "$code"
`

type deployRun struct {
	out     string
	code    int
	log     string
	dir     string
	elapsed time.Duration
}

// azureState is what the fake az reports about the subscription.
type azureState struct {
	flex        []string                    // regions offering Flex Consumption
	models      map[string][]map[string]any // region -> az cognitiveservices model list
	usage       map[string][]map[string]any // region -> az cognitiveservices usage list
	permissions []map[string]any            // the permissions API's value
	roles       []map[string]any            // az role assignment list
	deleted     map[string][]map[string]any // deleted-vaults / deleted-accounts
	extra       map[string]any              // other files
}

// offer is one model version as az cognitiveservices model list shows it.
func offer(name, version, lifecycle, retires, capability string, skus ...string) map[string]any {
	var ss []any
	for _, s := range skus {
		ss = append(ss, map[string]any{"name": s, "usageName": "OpenAI." + s + "." + name, "capacity": map[string]any{"maximum": 10000}})
	}
	return map[string]any{"kind": "OpenAI", "skuName": "S0", "model": map[string]any{
		"format": "OpenAI", "name": name, "version": version, "lifecycleStatus": lifecycle,
		"deprecation": map[string]any{"inference": retires + "T00:00:00Z"}, "capabilities": map[string]any{capability: "true"}, "skus": ss}}
}

// todaysAzure is Azure as the region tables of 2026 describe it for the regions the parameter
// files use, with ample quota and an Owner signed in.
func todaysAzure() azureState {
	st := azureState{
		flex:        []string{"eastus2", "swedencentral", "francecentral", "germanywestcentral"},
		models:      map[string][]map[string]any{},
		usage:       map[string][]map[string]any{},
		permissions: []map[string]any{{"actions": []any{"*"}, "notActions": []any{}}},
		roles:       []map[string]any{{"roleDefinitionName": "Owner", "scope": "/subscriptions/00000000-0000-0000-0000-0000000000aa"}},
		deleted:     map[string][]map[string]any{},
	}
	for _, region := range st.flex {
		mini := []string{"GlobalStandard"}
		emb := []string{"GlobalStandard", "DataZoneStandard"}
		if region == "eastus2" {
			mini = append(mini, "DataZoneStandard")
			emb = append(emb, "Standard")
		}
		st.models[region] = []map[string]any{
			offer("gpt-5.4-mini", "2026-03-17", "GenerallyAvailable", "2027-09-21", "chatCompletion", mini...),
			offer("gpt-5.4", "2026-03-05", "GenerallyAvailable", "2027-09-02", "chatCompletion", "GlobalStandard", "DataZoneStandard"),
			offer("text-embedding-3-small", "1", "GenerallyAvailable", "2028-02-09", "embeddings", emb...),
			offer("gpt-4.1-mini", "2025-04-14", "Deprecated", "2026-10-14", "chatCompletion", "GlobalStandard", "DataZoneStandard", "Standard"),
		}
		for _, m := range st.models[region] {
			for _, s := range m["model"].(map[string]any)["skus"].([]any) {
				st.usage[region] = append(st.usage[region], map[string]any{
					"name": map[string]any{"value": s.(map[string]any)["usageName"]}, "currentValue": 0, "limit": 1000})
			}
		}
	}
	return st
}

func (st azureState) write(t *testing.T, dir string) {
	t.Helper()
	put := func(name string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var flex []map[string]any
	for _, f := range st.flex {
		flex = append(flex, map[string]any{"name": f})
	}
	put("flex.json", flex)
	for region, m := range st.models {
		put("models."+region+".json", m)
	}
	for region, u := range st.usage {
		put("usage."+region+".json", u)
	}
	put("permissions.json", map[string]any{"value": st.permissions})
	put("roles.json", st.roles)
	for name, v := range st.deleted {
		put(name+".json", v)
	}
	for name, v := range st.extra {
		put(name, v)
	}
}

type deployOptions struct {
	env    []string
	azure  *azureState
	script string // deploy.sh by default
	shell  string // bash by default
}

func runDeploy(t *testing.T, o deployOptions, args ...string) deployRun {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	data := filepath.Join(dir, "azure")
	for _, d := range []string{bin, data} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range map[string]string{"az": fakeAz, "curl": fakeCurl} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	st := todaysAzure()
	if o.azure != nil {
		st = *o.azure
	}
	st.write(t, data)
	path := bin + ":" + os.Getenv("PATH")
	for _, e := range o.env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = strings.ReplaceAll(v, "$FAKEBIN", bin)
		}
	}
	script, shell := o.script, o.shell
	if script == "" {
		script = filepath.Join(root, "infra", "deploy.sh")
	}
	if shell == "" {
		shell = "bash"
	}
	cmd := exec.Command(shell, append([]string{script}, args...)...)
	cmd.Env = append(os.Environ(), o.env...)
	cmd.Env = append(cmd.Env, "PATH="+path, "FAKE_AZ_LOG="+filepath.Join(dir, "log"), "FAKE_AZ_SECRET="+filepath.Join(dir, "secret"),
		"FAKE_AZ_DEPLOYED="+filepath.Join(dir, "deployed"), "FAKE_AZ_DATA="+data, "DEPLOY_POLL_SECONDS=0", "TMPDIR="+dir)
	for _, def := range []string{"DEPLOY_HEALTH_TIMEOUT=30", "DEPLOY_PUBLISH_TIMEOUT=30", "DEPLOY_TEMPLATE_TIMEOUT=30", "DEPLOY_AZ_TIMEOUT=60"} {
		if !hasEnv(o.env, def[:strings.Index(def, "=")+1]) {
			cmd.Env = append(cmd.Env, def)
		}
	}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "log"))
	return deployRun{out: string(out), code: code, log: string(log), dir: dir, elapsed: time.Since(start)}
}

func hasEnv(env []string, prefix string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, prefix) {
			return true
		}
	}
	return false
}

// bash32Copy writes a copy of deploy.sh that fails where bash 3.2 (macOS's /bin/bash) fails
// and bash 4.4 and later do not: under set -u, bash 3.2 aborts with "unbound variable" when it
// expands an array with no elements, "${a[@]}". bash 3.2 is no Debian package, so the copy
// makes bash 5 do the same: every ${name[@]} becomes ${name[@]?...}, which bash 5 also refuses
// for an empty array. The copy keeps the real infra/ directory as its home. If $BASH32 names a
// bash 3.2 binary, the tests run the script with it as well.
func bash32Copy(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(root, "infra", "deploy.sh"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(src)
	home := `here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)`
	if !strings.Contains(s, home) {
		t.Fatalf("deploy.sh no longer sets its home with %s", home)
	}
	infra, _ := filepath.Abs(filepath.Join(root, "infra"))
	s = strings.Replace(s, home, "here="+shellQuote(infra), 1)
	arrays := regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\[[@*]\]\}`)
	n := len(arrays.FindAllString(s, -1))
	s = arrays.ReplaceAllString(s, `$${$1[@]?bash 3.2: $1[@]: unbound variable}`)
	if n == 0 {
		t.Fatal("deploy.sh expands no array: the emulation checks nothing")
	}
	path := filepath.Join(t.TempDir(), "deploy-bash32.sh")
	if err := os.WriteFile(path, []byte(s), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// shells are the ways the tests run deploy.sh: bash as installed (5.x), the bash 3.2
// emulation, and a real bash 3.2 when $BASH32 names one.
func shells(t *testing.T) map[string]deployOptions {
	out := map[string]deployOptions{
		"bash":                {},
		"bash 3.2 (emulated)": {script: bash32Copy(t)},
	}
	if b := os.Getenv("BASH32"); b != "" {
		out["bash 3.2 (real, from $BASH32)"] = deployOptions{shell: b}
	}
	return out
}

func TestBash32EmulationCatchesEmptyArrays(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "s.sh")
	_ = os.WriteFile(script, []byte("set -u\nempty=()\nfull=(x)\necho \"${full[@]}\" \"${#empty[@]}\" ${empty[@]+\"${empty[@]}\"}\necho \"${empty[@]}\"\n"), 0o755)
	arrays := regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\[[@*]\]\}`)
	b, _ := os.ReadFile(script)
	_ = os.WriteFile(script, []byte(arrays.ReplaceAllString(string(b), `$${$1[@]?bash 3.2: $1[@]: unbound variable}`)), 0o755)
	out, err := exec.Command("bash", script).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "x 0") || !strings.Contains(string(out), "empty[@]: unbound variable") {
		t.Errorf("the emulation does not fail on an empty array as bash 3.2 does: %v\n%s", err, out)
	}
}

// What bash 3.2 lacks must not be in the script (the emulation above covers arrays).
func TestDeployScriptUsesOnlyBash32(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "infra", "deploy.sh"))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct{ re, what string }{
		{`\b(mapfile|readarray|coproc)\b`, "bash 4 builtins"},
		{`declare -[A-Za-z]*[Agn]|local -n|typeset -A`, "associative arrays, namerefs, declare -g (bash 4)"},
		{`\$\{[A-Za-z_][A-Za-z0-9_]*(,,|\^\^|,|\^)\}`, "case conversion (bash 4)"},
		{`wait -n|\$EPOCHSECONDS|\$EPOCHREALTIME|\$\{[A-Za-z_]+@[QEPAa]\}`, "bash 4.3+/5 features"},
		{`&>>|\|&|;;&|\{[a-z_]+\}>`, "bash 4 redirections and case fall-through"},
		{`\[\[ -v |test -v |shopt -s (lastpipe|globstar)`, "bash 4.2+ tests and options"},
		{`\$\{[A-Za-z_][A-Za-z0-9_]*:[0-9]*:-[0-9]+\}`, "negative substring lengths (bash 4.2)"},
	} {
		if m := regexp.MustCompile(bad.re).FindString(string(b)); m != "" {
			t.Errorf("deploy.sh uses %s (%q), which macOS's bash 3.2 lacks", bad.what, m)
		}
	}
}

func TestDeployScriptIsShellcheckClean(t *testing.T) {
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Skip("no shellcheck (tests/run installs it)")
	}
	out, err := exec.Command(sc, filepath.Join(root, "infra", "deploy.sh")).CombinedOutput()
	if err != nil {
		t.Errorf("shellcheck infra/deploy.sh: %v\n%s", err, out)
	}
}

func requireDeployTools(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the handler")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
}

func TestDeployScript(t *testing.T) {
	requireDeployTools(t)
	for name, sh := range shells(t) {
		t.Run(name+": checks, deploys the template, publishes to every app, waits for Front Door", func(t *testing.T) {
			r := runDeploy(t, sh, "-g", "rg-gw", "-p", filepath.Join(root, "infra", "main.parameters.json"))
			if r.code != 0 {
				t.Fatalf("exit %d:\n%s", r.code, r.out)
			}
			for _, want := range []string{
				"az cognitiveservices model list -l eastus2 -o json",
				"az cognitiveservices usage list -l swedencentral -o json",
				"az functionapp list-flexconsumption-locations -o json",
				"/providers/Microsoft.Authorization/permissions?api-version=2022-04-01",
				"az keyvault list-deleted --resource-type vault -o json",
				"az deployment group create --name gateway-",
				"--template-file " + filepath.Join(root, "infra", "main.json"),
				"deployerPrincipalId=11111111-2222-3333-4444-555555555555",
				"--no-wait",
				"az role assignment create --assignee-object-id p-1 --assignee-principal-type ServicePrincipal --role Cognitive Services OpenAI User --scope /subscriptions/s/resourceGroups/other/providers/Microsoft.CognitiveServices/accounts/legacy",
				"https://gw-swedencentral-abc.scm.azurewebsites.net/api/publish?RemoteBuild=false",
				"https://gw-francecentral-abc.scm.azurewebsites.net/api/deployments/dep-gw-francecentral-abc",
				"https://gw-abc.z01.azurefd.net/healthz",
			} {
				if !strings.Contains(r.log, want) {
					t.Errorf("no call %q in:\n%s", want, r.log)
				}
			}
			if strings.Contains(r.log, "config-zip") || strings.Contains(r.log, "admin/host/status") {
				t.Error("published through the CLI's config-zip, which polls the app through its access restriction")
			}
			if strings.Contains(r.log, "fake-token") {
				t.Error("the access token was on curl's command line; it belongs in a header file")
			}
			if strings.Index(r.log, "cognitiveservices model list") > strings.Index(r.log, "deployment group create") {
				t.Error("the pre-flight ran after the deployment started")
			}
			for _, want := range []string{"ok    eus2/chat: gpt-5.4-mini 2026-03-17 as GlobalStandard in eastus2", "ok      gw-swedencentral-abc: package deployed", "ok      gw-francecentral-abc: package deployed", "ready: https://gw-abc.z01.azurefd.net", "/openai/deployments/chat/chat/completions"} {
				if !strings.Contains(r.out, want) {
					t.Errorf("the output does not say %q:\n%s", want, r.out)
				}
			}
			for _, app := range []string{"gw-swedencentral-abc", "gw-francecentral-abc"} {
				zr, err := zip.OpenReader(filepath.Join(r.dir, "deployed."+app))
				if err != nil {
					t.Fatalf("%s: no package deployed: %v", app, err)
				}
				for _, f := range zr.File {
					if f.Name == "bin/handler" && f.Mode().Perm()&0o111 == 0 {
						t.Errorf("%s: the deployed handler is not executable", app)
					}
				}
				zr.Close()
			}
			secret, err := os.ReadFile(filepath.Join(r.dir, "secret"))
			if err != nil {
				t.Fatal("no first client key stored")
			}
			key := strings.SplitN(strings.SplitN(string(secret), `"default":"`, 2)[1], `"`, 2)[0]
			if len(key) < 32 {
				t.Errorf("client key %d characters long", len(key))
			}
			if strings.Contains(r.out, key) {
				t.Error("the client key was printed")
			}
		})
		t.Run(name+": a redeploy with no existing account and roles that exist already", func(t *testing.T) {
			r := runDeploy(t, deployOptions{script: sh.script, shell: sh.shell, env: []string{"FAKE_AZ_EXISTING=", "FAKE_AZ_ROLE_EXISTS=1"}}, "-g", "rg-gw")
			if r.code != 0 {
				t.Fatalf("exit %d:\n%s", r.code, r.out)
			}
			if strings.Contains(r.log, "role assignment create") {
				t.Error("granted a role with no existing account")
			}
		})
	}
	t.Run("what-if changes nothing", func(t *testing.T) {
		r := runDeploy(t, deployOptions{}, "-g", "rg-gw", "--what-if")
		if r.code != 0 {
			t.Fatalf("exit %d:\n%s", r.code, r.out)
		}
		if !strings.Contains(r.log, "az deployment group what-if") || !strings.Contains(r.log, "cognitiveservices model list") {
			t.Errorf("no pre-flight or no what-if:\n%s", r.log)
		}
		for _, change := range []string{"deployment group create", "/api/publish", "secret set", "group create", "purge", "recover"} {
			if strings.Contains(r.log, change) {
				t.Errorf("what-if made a change (%s):\n%s", change, r.log)
			}
		}
	})
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"not logged in", []string{"FAKE_AZ_LOGGED_OUT=1"}, []string{"-g", "rg"}, "az login"},
		{"no az", []string{"PATH=/usr/bin:/bin"}, []string{"-g", "rg"}, "(az) is not installed"},
		{"no resource group", nil, nil, "-g RESOURCE_GROUP is required"},
		{"a flag without its value", nil, []string{"-g"}, "-g needs a value"},
		{"no parameters file", nil, []string{"-g", "rg", "-p", "/nonexistent.json"}, "not found"},
		{"a missing group and no location", []string{"FAKE_AZ_GROUP_MISSING=1"}, []string{"-g", "rg"}, "give -l LOCATION"},
		{"both ways with soft-deleted resources", nil, []string{"-g", "rg", "--purge-deleted", "--recover-deleted"}, "choose one of"},
		{"a bound that is not a number", []string{"DEPLOY_AZ_TIMEOUT=soon"}, []string{"-g", "rg"}, "DEPLOY_AZ_TIMEOUT must be a whole number"},
	} {
		t.Run(tc.name+" fails early", func(t *testing.T) {
			if tc.name == "no az" {
				if _, err := os.Stat("/usr/bin/az"); err == nil {
					t.Skip("az is installed in /usr/bin")
				}
			}
			r := runDeploy(t, deployOptions{env: tc.env}, tc.args...)
			if r.code == 0 || !strings.Contains(r.out, tc.want) {
				t.Errorf("exit %d, output:\n%s\nwant a failure saying %q", r.code, r.out, tc.want)
			}
			if strings.Contains(r.log, "deployment group") || strings.Contains(r.log, "group create") {
				t.Errorf("it went on to deploy:\n%s", r.log)
			}
		})
	}
}

// Before anything is created the script lists every missing prerequisite at once, each with
// what to change, and creates nothing.
func TestDeployScriptPreflight(t *testing.T) {
	requireDeployTools(t)
	t.Run("every missing prerequisite at once, nothing created", func(t *testing.T) {
		st := todaysAzure()
		st.flex = []string{"eastus2", "francecentral"}                                                                                                         // no Flex Consumption in swedencentral
		st.permissions = []map[string]any{{"actions": []any{"*"}, "notActions": []any{"Microsoft.Authorization/*/Write", "Microsoft.Authorization/*/Delete"}}} // Contributor
		for i, u := range st.usage["eastus2"] {
			if u["name"].(map[string]any)["value"] == "OpenAI.GlobalStandard.text-embedding-3-small" {
				st.usage["eastus2"][i]["currentValue"] = 950
			}
		}
		st.deleted["deleted-vaults"] = []map[string]any{{"name": "aoaigw-kv-abcdefghijklm", "properties": map[string]any{
			"vaultId":  "/subscriptions/00000000-0000-0000-0000-0000000000aa/resourceGroups/rg-gw/providers/Microsoft.KeyVault/vaults/aoaigw-kv-abcdefghijklm",
			"location": "eastus2", "scheduledPurgeDate": "2027-02-01T00:00:00Z", "purgeProtectionEnabled": true}}}
		old := filepath.Join(t.TempDir(), "old.parameters.json")
		b, _ := os.ReadFile(filepath.Join(root, "infra", "main.parameters.json"))
		s := strings.Replace(string(b), `"model": "gpt-5.4-mini", "version": "2026-03-17"`, `"model": "gpt-4.1-mini", "version": "2025-04-14"`, 1)
		s = strings.Replace(s, `{ "account": "swc", "name": "embeddings", "model": "text-embedding-3-small", "version": "1", "sku": "GlobalStandard"`, `{ "account": "swc", "name": "embeddings", "model": "text-embedding-3-small", "version": "1", "sku": "Standard"`, 1)
		if err := os.WriteFile(old, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		r := runDeploy(t, deployOptions{azure: &st}, "-g", "rg-gw", "-p", old)
		if r.code == 0 {
			t.Fatalf("deployed with prerequisites missing:\n%s", r.out)
		}
		for _, want := range []string{
			"6 missing prerequisite(s); nothing was created",
			`openAiDeployments[0] (account "eus2", deployment "chat") in old.parameters.json: gpt-4.1-mini 2025-04-14 is retired in eastus2 (inference ended 2026-10-14). Set its model and version to a current one: for example model "gpt-5.4-mini" version "2026-03-17"`,
			`openAiDeployments[3] (account "swc", deployment "embeddings") in old.parameters.json: text-embedding-3-small 1 is not offered as Standard in swedencentral (it is offered there as: GlobalStandard, DataZoneStandard); set its sku to GlobalStandard or DataZoneStandard`,
			"eastus2: quota OpenAI.GlobalStandard.text-embedding-3-small: the deployments need 120",
			"but 50 of 1000 are free",
			"Flex Consumption is not offered in swedencentral",
			"you cannot create role assignments in resource group rg-gw",
			"Owner, User Access Administrator or Role Based Access Control Administrator",
			"Key Vault aoaigw-kv-abcdefghijklm (kept until 2027-02-01)",
			"--recover-deleted", "--purge-deleted", `"nameSalt"`,
		} {
			if !strings.Contains(r.out, want) {
				t.Errorf("the pre-flight does not say %q:\n%s", want, r.out)
			}
		}
		for _, change := range []string{"deployment group create", "group create", "/api/publish", "purge", "recover"} {
			if strings.Contains(r.log, change) {
				t.Errorf("it changed something (%s) with prerequisites missing:\n%s", change, r.log)
			}
		}
	})
	t.Run("a group that does not exist yet: roles read at the subscription, then created", func(t *testing.T) {
		st := todaysAzure()
		st.roles = []map[string]any{{"roleDefinitionName": "Contributor", "scope": "/subscriptions/00000000-0000-0000-0000-0000000000aa"}}
		r := runDeploy(t, deployOptions{azure: &st, env: []string{"FAKE_AZ_GROUP_MISSING=1"}}, "-g", "rg-new", "-l", "eastus2")
		if r.code == 0 || !strings.Contains(r.out, "you hold none of Owner, User Access Administrator or Role Based Access Control Administrator") {
			t.Errorf("exit %d, want the missing role said:\n%s", r.code, r.out)
		}
		if strings.Contains(r.log, "group create") {
			t.Error("created the group although a prerequisite is missing")
		}
		st.roles = append(st.roles, map[string]any{"roleDefinitionName": "User Access Administrator", "scope": "/"})
		r = runDeploy(t, deployOptions{azure: &st, env: []string{"FAKE_AZ_GROUP_MISSING=1"}}, "-g", "rg-new", "-l", "eastus2")
		if r.code != 0 {
			t.Fatalf("exit %d:\n%s", r.code, r.out)
		}
		if !strings.Contains(r.log, "az role assignment list --assignee 11111111-2222-3333-4444-555555555555 --include-inherited --include-groups") ||
			strings.Index(r.log, "group create") < strings.Index(r.log, "cognitiveservices model list") {
			t.Errorf("roles not read before the group was created:\n%s", r.log)
		}
	})
	t.Run("soft-deleted names: recovered when asked, purge refused for a protected vault", func(t *testing.T) {
		st := todaysAzure()
		st.deleted["deleted-vaults"] = []map[string]any{{"name": "aoaigw-kv-abcdefghijklm", "properties": map[string]any{
			"vaultId":  "/subscriptions/00000000-0000-0000-0000-0000000000aa/resourceGroups/RG-GW/providers/Microsoft.KeyVault/vaults/aoaigw-kv-abcdefghijklm",
			"location": "eastus2", "scheduledPurgeDate": "2027-02-01T00:00:00Z", "purgeProtectionEnabled": true}}}
		st.deleted["deleted-accounts"] = []map[string]any{
			{"name": "aoaigw-swc-abcdefghijklm", "location": "swedencentral", "id": "/subscriptions/00000000-0000-0000-0000-0000000000aa/providers/Microsoft.CognitiveServices/locations/swedencentral/resourceGroups/rg-gw/deletedAccounts/aoaigw-swc-abcdefghijklm"},
			{"name": "aoaigw-swc-abcdefghijklm", "location": "swedencentral", "id": "/subscriptions/00000000-0000-0000-0000-0000000000aa/providers/Microsoft.CognitiveServices/locations/swedencentral/resourceGroups/another/deletedAccounts/aoaigw-swc-abcdefghijklm"},
		}
		r := runDeploy(t, deployOptions{azure: &st}, "-g", "rg-gw", "--purge-deleted")
		if r.code == 0 || !strings.Contains(r.out, "aoaigw-kv-abcdefghijklm has purge protection and cannot be purged") {
			t.Errorf("exit %d, want purge refused for the protected vault:\n%s", r.code, r.out)
		}
		r = runDeploy(t, deployOptions{azure: &st}, "-g", "rg-gw", "--recover-deleted")
		if r.code != 0 {
			t.Fatalf("exit %d:\n%s", r.code, r.out)
		}
		recover := strings.Index(r.log, "az keyvault recover -n aoaigw-kv-abcdefghijklm")
		if recover < 0 || !strings.Contains(r.log, "az cognitiveservices account recover -n aoaigw-swc-abcdefghijklm -g rg-gw -l swedencentral") ||
			recover > strings.Index(r.log, "deployment group create") {
			t.Errorf("not recovered before the deployment:\n%s", r.log)
		}
		if strings.Count(r.log, "account recover") != 1 {
			t.Errorf("recovered an account deleted from another group:\n%s", r.log)
		}
	})
}

// The script cannot hang: every wait ends at its bound with a message, and a region whose
// publish fails does not keep the others from getting the package.
func TestDeployScriptCannotHang(t *testing.T) {
	requireDeployTools(t)
	t.Run("one region's publish fails, the other still gets its package", func(t *testing.T) {
		r := runDeploy(t, deployOptions{env: []string{"FAKE_PUBLISH_FAIL=gw-swedencentral-abc", "DEPLOY_PUBLISH_TIMEOUT=3", "DEPLOY_POLL_SECONDS=1"}}, "-g", "rg-gw")
		if r.code == 0 {
			t.Fatalf("exit 0 with a failed publish:\n%s", r.out)
		}
		if _, err := os.Stat(filepath.Join(r.dir, "deployed.gw-francecentral-abc")); err != nil {
			t.Error("francecentral got no package after swedencentral failed")
		}
		for _, want := range []string{"FAILED  gw-swedencentral-abc: package not deployed", "ok      gw-francecentral-abc: package deployed", "ok      Front Door answers", "1 step(s) failed"} {
			if !strings.Contains(r.out, want) {
				t.Errorf("the summary does not say %q:\n%s", want, r.out)
			}
		}
	})
	t.Run("a deployment that never ends is left after its bound", func(t *testing.T) {
		r := runDeploy(t, deployOptions{env: []string{"FAKE_DEPLOY_STUCK=gw-swedencentral-abc", "DEPLOY_PUBLISH_TIMEOUT=3", "DEPLOY_POLL_SECONDS=1"}}, "-g", "rg-gw")
		if r.code == 0 || !strings.Contains(r.out, "gw-swedencentral-abc: deployment dep-gw-swedencentral-abc was still at status 1 after 3 s") ||
			!strings.Contains(r.out, "ok      gw-francecentral-abc: package deployed") {
			t.Errorf("exit %d:\n%s", r.code, r.out)
		}
	})
	t.Run("a template deployment that runs too long", func(t *testing.T) {
		r := runDeploy(t, deployOptions{env: []string{"FAKE_AZ_TEMPLATE_STATE=Running", "DEPLOY_TEMPLATE_TIMEOUT=3", "DEPLOY_POLL_SECONDS=1"}}, "-g", "rg-gw")
		if r.code == 0 || !strings.Contains(r.out, "is still Running after 0 minutes. It goes on in Azure: follow it with 'az deployment group show -g rg-gw -n gateway-") {
			t.Errorf("exit %d:\n%s", r.code, r.out)
		}
		if strings.Contains(r.log, "/api/publish") {
			t.Error("published before the template finished")
		}
	})
	t.Run("a failed template deployment says so", func(t *testing.T) {
		r := runDeploy(t, deployOptions{env: []string{"FAKE_AZ_TEMPLATE_STATE=Failed"}}, "-g", "rg-gw")
		if r.code == 0 || !strings.Contains(r.out, "DeploymentFailed") || !strings.Contains(r.out, "az deployment operation group list -g rg-gw") {
			t.Errorf("exit %d:\n%s", r.code, r.out)
		}
	})
	t.Run("Front Door that never answers", func(t *testing.T) {
		r := runDeploy(t, deployOptions{env: []string{"FAKE_HEALTH_CODE=503", "DEPLOY_HEALTH_TIMEOUT=2", "DEPLOY_POLL_SECONDS=1"}}, "-g", "rg-gw")
		if r.code == 0 || !strings.Contains(r.out, "healthz did not answer 200 in 0 minutes") || !strings.Contains(r.out, "ok      gw-francecentral-abc: package deployed") {
			t.Errorf("exit %d:\n%s", r.code, r.out)
		}
	})
	for _, hang := range []string{"deployment group create", "cognitiveservices usage list"} {
		for name, sh := range shells(t) {
			if hang != "deployment group create" && name != "bash" {
				continue // the same Go code bounds the pre-flight's calls whatever the shell
			}
			t.Run(name+": az that never answers: "+hang, func(t *testing.T) {
				r := runDeploy(t, deployOptions{script: sh.script, shell: sh.shell, env: []string{"FAKE_AZ_HANG=" + hang, "DEPLOY_AZ_TIMEOUT=2"}}, "-g", "rg-gw")
				if r.code == 0 || r.elapsed > 90*time.Second {
					t.Errorf("exit %d after %v:\n%s", r.code, r.elapsed, r.out)
				}
				if !strings.Contains(r.out, "gave no answer in 2 s") {
					t.Errorf("no message about the stuck call:\n%s", r.out)
				}
				hung, _ := os.ReadFile(filepath.Join(r.dir, "log.hung"))
				for _, f := range strings.Fields(string(hung)) {
					if pid, _ := strconv.Atoi(f); pid > 0 && running(pid, 5*time.Second) {
						t.Errorf("the stuck az (or its child) %d still runs", pid)
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
				if len(hung) == 0 {
					t.Errorf("the stuck call was never made:\n%s", r.log)
				}
			})
		}
	}
}

// running says whether process pid is still alive after up to wait (a zombie, ended but not yet
// reaped by its new parent, is not).
func running(pid int, wait time.Duration) bool {
	for deadline := time.Now().Add(wait); ; time.Sleep(50 * time.Millisecond) {
		alive := syscall.Kill(pid, 0) == nil
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(f) > 0 && f[0] == "Z" {
				alive = false
			}
		}
		if !alive || time.Now().After(deadline) {
			return alive
		}
	}
}
