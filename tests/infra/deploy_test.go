package infra

import (
	"archive/zip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeAz stands in for the Azure CLI: it records every call in $FAKE_AZ_LOG and answers the
// queries deploy.sh makes the way az does (tsv values, exit status 1 for "not found").
const fakeAz = `#!/usr/bin/env bash
echo "az $*" >> "$FAKE_AZ_LOG"
args="$*"
case "$args" in
  "account show --output none") [ -z "$FAKE_AZ_LOGGED_OUT" ] || { echo "Please run 'az login' to setup account." >&2; exit 1; } ;;
  "account show --query user.type -o tsv") echo user ;;
  "ad signed-in-user show --query id -o tsv") echo 11111111-2222-3333-4444-555555555555 ;;
  "group show"*) exit 0 ;;
  "deployment group create"*|"deployment group what-if"*) exit 0 ;;
  "deployment group show"*)
    case "$args" in
      *outputs.frontDoorEndpoint.value*) echo https://gw-abc.z01.azurefd.net ;;
      *outputs.keyVaultName.value*) echo gw-kv-abc ;;
      *outputs.clientKeysSecret.value*) echo gateway-client-keys ;;
      *outputs.exampleDeployment.value*) echo chat ;;
      *outputs.functionAppNames.value*) printf 'gw-swedencentral-abc\ngw-francecentral-abc\n' ;;
      *outputs.functionAppPrincipalIds.value*) printf 'p-1\np-2\n' ;;
      *outputs.existingAccountsCalledWithIdentity.value*) echo /subscriptions/s/resourceGroups/other/providers/Microsoft.CognitiveServices/accounts/legacy ;;
    esac ;;
  "keyvault secret show"*) exit 3 ;;
  "keyvault secret set"*) echo "$args" > "$FAKE_AZ_SECRET" ;;
  "role assignment create"*) ;;
  "functionapp deployment source config-zip"*)
    src=${args##*--src }; src=${src%% *}
    cp "$src" "$FAKE_AZ_DEPLOYED.$(echo "$args" | sed 's/.* -n \([^ ]*\).*/\1/')" ;;
  *) echo "fake az: unexpected: $args" >&2; exit 2 ;;
esac
`

const fakeCurl = `#!/usr/bin/env bash
echo "curl $*" >> "$FAKE_AZ_LOG"
printf 200
`

type deployRun struct {
	out  string
	code int
	log  string
	dir  string
}

func runDeploy(t *testing.T, env []string, args ...string) deployRun {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"az": fakeAz, "curl": fakeCurl} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	path := bin + ":" + os.Getenv("PATH")
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = strings.ReplaceAll(v, "$FAKEBIN", bin)
		}
	}
	cmd := exec.Command("bash", append([]string{filepath.Join(root, "infra", "deploy.sh")}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Env = append(cmd.Env, "PATH="+path, "FAKE_AZ_LOG="+filepath.Join(dir, "log"), "FAKE_AZ_SECRET="+filepath.Join(dir, "secret"),
		"FAKE_AZ_DEPLOYED="+filepath.Join(dir, "deployed"), "DEPLOY_HEALTH_TIMEOUT=30")
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "log"))
	return deployRun{out: string(out), code: code, log: string(log), dir: dir}
}

func TestDeployScript(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the handler")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	t.Run("deploys the template, the package to every app, and waits for Front Door", func(t *testing.T) {
		r := runDeploy(t, nil, "-g", "rg-gw", "-p", filepath.Join(root, "infra", "main.parameters.json"))
		if r.code != 0 {
			t.Fatalf("exit %d:\n%s", r.code, r.out)
		}
		for _, want := range []string{
			"az deployment group create --name gateway-",
			"--template-file " + filepath.Join(root, "infra", "main.json"),
			"deployerPrincipalId=11111111-2222-3333-4444-555555555555",
			"az role assignment create --assignee-object-id p-1 --assignee-principal-type ServicePrincipal --role Cognitive Services OpenAI User --scope /subscriptions/s/resourceGroups/other/providers/Microsoft.CognitiveServices/accounts/legacy",
			"az functionapp deployment source config-zip -g rg-gw -n gw-swedencentral-abc --src",
			"az functionapp deployment source config-zip -g rg-gw -n gw-francecentral-abc --src",
			"curl -s -o /dev/null -w %{http_code} --max-time 10 https://gw-abc.z01.azurefd.net/healthz",
		} {
			if !strings.Contains(r.log, want) {
				t.Errorf("no call %q in:\n%s", want, r.log)
			}
		}
		if !strings.Contains(r.out, "ready: https://gw-abc.z01.azurefd.net") || !strings.Contains(r.out, "/openai/deployments/chat/chat/completions") {
			t.Errorf("no endpoint and example request in the output:\n%s", r.out)
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
		key := strings.TrimSuffix(strings.SplitN(string(secret), `"default":"`, 2)[1], "\"}\n")
		key = strings.SplitN(key, `"`, 2)[0]
		if len(key) < 32 {
			t.Errorf("client key %d characters long", len(key))
		}
		if strings.Contains(r.out, key) {
			t.Error("the client key was printed")
		}
	})
	t.Run("what-if changes nothing", func(t *testing.T) {
		r := runDeploy(t, nil, "-g", "rg-gw", "--what-if")
		if r.code != 0 {
			t.Fatalf("exit %d:\n%s", r.code, r.out)
		}
		if !strings.Contains(r.log, "az deployment group what-if") || strings.Contains(r.log, "deployment group create") || strings.Contains(r.log, "config-zip") || strings.Contains(r.log, "secret set") {
			t.Errorf("what-if made changes:\n%s", r.log)
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
		{"no parameters file", nil, []string{"-g", "rg", "-p", "/nonexistent.json"}, "not found"},
	} {
		t.Run(tc.name+" fails early", func(t *testing.T) {
			if tc.name == "no az" {
				if _, err := os.Stat("/usr/bin/az"); err == nil {
					t.Skip("az is installed in /usr/bin")
				}
			}
			r := runDeploy(t, tc.env, tc.args...)
			if r.code == 0 || !strings.Contains(r.out, tc.want) {
				t.Errorf("exit %d, output:\n%s\nwant a failure saying %q", r.code, r.out, tc.want)
			}
			if strings.Contains(r.log, "deployment group") {
				t.Errorf("it went on to deploy:\n%s", r.log)
			}
		})
	}
}
