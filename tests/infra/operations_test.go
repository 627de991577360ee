package infra

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// Front Door's own logs (who called, what the WAF did, which probes failed) exist only where a
// diagnostic setting sends them.
func TestFrontDoorLogsGoToLogAnalytics(t *testing.T) {
	for _, f := range parameterFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			d := evaluate(t, f)
			profile := d.ofType("Microsoft.Cdn/profiles")[0]
			workspace := d.ofType("Microsoft.OperationalInsights/workspaces")[0]
			found := false
			for _, ds := range d.ofType("Microsoft.Insights/diagnosticSettings") {
				if ds.Body["scope"] != "Microsoft.Cdn/profiles/"+profile.Name {
					continue
				}
				found = true
				p := ds.Props()
				if p["workspaceId"] != workspace.ID() {
					t.Errorf("Front Door logs go to %v, not the workspace %s", p["workspaceId"], workspace.ID())
				}
				enabled := map[string]bool{}
				for _, l := range p["logs"].([]any) {
					l := l.(map[string]any)
					enabled[fmt.Sprint(l["category"])] = l["enabled"] == true
				}
				for _, c := range []string{"FrontDoorAccessLog", "FrontDoorWebApplicationFirewallLog", "FrontDoorHealthProbeLog"} {
					if !enabled[c] {
						t.Errorf("Front Door log %s is not sent to Log Analytics", c)
					}
				}
			}
			if !found {
				t.Error("no diagnostic setting on the Front Door profile")
			}
		})
	}
}

// Flex Consumption sends an instance at most perInstanceConcurrency requests before it starts
// another; its default (16 at 2,048 MB) would run 32 instances where one of this gateway holds
// 512 streams (the benchmark), so the template sets it from a parameter.
func TestFlexConcurrencyComesFromAParameter(t *testing.T) {
	tmpl := loadJSON(t, filepath.Join(root, "infra", "main.json"))
	param := tmpl["parameters"].(map[string]any)["httpPerInstanceConcurrency"].(map[string]any)
	def := int(param["defaultValue"].(float64))
	if def < 100 || def > 1000 || int(param["maxValue"].(float64)) != 1000 {
		t.Errorf("httpPerInstanceConcurrency default %d (max %v): want 100-1000 (Flex allows up to 1000)", def, param["maxValue"])
	}
	for _, f := range parameterFiles(t) {
		for _, want := range []int{def, 250} {
			var d *Deployment
			if want == def {
				d = evaluate(t, f)
			} else {
				d = evaluateWith(t, f, map[string]any{"httpPerInstanceConcurrency": want})
			}
			for _, site := range d.ofType("Microsoft.Web/sites") {
				sc := site.Props()["functionAppConfig"].(map[string]any)["scaleAndConcurrency"].(map[string]any)
				got := sc["triggers"].(map[string]any)["http"].(map[string]any)["perInstanceConcurrency"]
				if got != want {
					t.Errorf("%s %s: perInstanceConcurrency %v, want %d", filepath.Base(f), site.Name, got, want)
				}
			}
		}
	}
}

// A deployment pinned with NoAutoUpgrade stops answering the day its version retires; these
// move to the next version instead.
func TestModelDeploymentsMoveOnWhenTheirVersionRetires(t *testing.T) {
	for _, f := range parameterFiles(t) {
		d := evaluate(t, f)
		deps := d.ofType("Microsoft.CognitiveServices/accounts/deployments")
		if len(deps) == 0 {
			t.Errorf("%s deploys no model", filepath.Base(f))
		}
		for _, dep := range deps {
			if got := dep.Props()["versionUpgradeOption"]; got != "OnceCurrentVersionExpired" && got != "OnceNewDefaultVersionAvailable" {
				t.Errorf("%s %s: versionUpgradeOption %v: the deployment fails when its version retires", filepath.Base(f), dep.Name, got)
			}
		}
	}
	// The default yields to an explicit choice.
	f := filepath.Join(root, "infra", "main.parameters.json")
	deps := loadJSON(t, f)["parameters"].(map[string]any)["openAiDeployments"].(map[string]any)["value"].([]any)
	first := map[string]any{}
	for k, v := range deps[0].(map[string]any) {
		first[k] = v
	}
	first["versionUpgradeOption"] = "OnceNewDefaultVersionAvailable"
	d := evaluateWith(t, f, map[string]any{"openAiDeployments": append([]any{first}, deps[1:]...)})
	if got := d.ofType("Microsoft.CognitiveServices/accounts/deployments")[0].Props()["versionUpgradeOption"]; got != "OnceNewDefaultVersionAvailable" {
		t.Errorf("an explicit versionUpgradeOption is not kept: %v", got)
	}
}

// Names come from the resource group's id; a salt changes every one of them (for a group that
// was deleted while its soft-deleted vault or accounts keep the old names), and no salt keeps
// the names earlier deployments got.
func TestNameSaltRenamesEverything(t *testing.T) {
	f := filepath.Join(root, "infra", "main.parameters.json")
	plain := evaluate(t, f)
	salted := evaluateWith(t, f, map[string]any{"nameSalt": "2"})
	// Without a salt the suffix is uniqueString(resourceGroup().id), as before nameSalt existed.
	suffix := hashString([]any{"/subscriptions/" + testSubscription + "/resourceGroups/" + testGroup}, 13)
	kv := plain.ofType("Microsoft.KeyVault/vaults")[0].Name
	kv2 := salted.ofType("Microsoft.KeyVault/vaults")[0].Name
	if kv == kv2 {
		t.Fatalf("nameSalt left the Key Vault's name %s unchanged", kv)
	}
	oldSuffix := kv[strings.LastIndex(kv, "-")+1:]
	if !strings.HasPrefix(suffix, oldSuffix) {
		t.Errorf("without nameSalt the Key Vault is %s; its suffix is not uniqueString(resourceGroup().id) = %s", kv, suffix)
	}
	for _, r := range salted.Resources {
		if strings.Contains(r.Name, oldSuffix) {
			t.Errorf("with nameSalt, %s %s still carries the unsalted suffix %s", r.Type, r.Name, oldSuffix)
		}
	}
	for _, typ := range []string{"Microsoft.KeyVault/vaults", "Microsoft.CognitiveServices/accounts", "Microsoft.Web/sites", "Microsoft.Storage/storageAccounts", "Microsoft.Cdn/profiles"} {
		for _, r := range plain.ofType(typ) {
			if !strings.Contains(r.Name, oldSuffix) {
				t.Errorf("%s %s does not carry the group's suffix %s", typ, r.Name, oldSuffix)
			}
		}
	}
}

// The handler's request log lines reach Application Insights as traces through the Functions
// host, whose adaptive sampling (on by default, 20 items a second) would drop most of them
// under load, and with them the per-app token counts the README's queries add up. Requests and
// traces are kept whole; the host still samples its other telemetry.
func TestRequestLogLinesAreNeverSampled(t *testing.T) {
	host := loadJSON(t, filepath.Join(root, "host.json"))
	ai, _ := host["logging"].(map[string]any)["applicationInsights"].(map[string]any)
	sampling, _ := ai["samplingSettings"].(map[string]any)
	if sampling == nil {
		t.Fatal("host.json sets no logging.applicationInsights.samplingSettings: the host samples traces by default")
	}
	if sampling["isEnabled"] == false {
		return
	}
	excluded := map[string]bool{}
	for _, typ := range strings.Split(fmt.Sprint(sampling["excludedTypes"]), ";") {
		excluded[strings.TrimSpace(typ)] = true
	}
	for _, typ := range []string{"Request", "Trace"} {
		if !excluded[typ] {
			t.Errorf("host.json samples %s telemetry (samplingSettings.excludedTypes %q)", typ, sampling["excludedTypes"])
		}
	}
}
