package infra

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
)

var root = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}()

const schemaDir = "testdata/arm-schemas"

// hostSettings are app settings the Functions host reads, not the handler.
var hostSettings = map[string]string{
	"AzureWebJobsStorage__accountName":          "the host's own storage, by identity",
	"APPLICATIONINSIGHTS_CONNECTION_STRING":     "the host ships the handler's stdout and its own telemetry to Application Insights",
	"APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "the host authenticates to Application Insights with the app's identity",
}

// Settings the Functions host reads and the handler reads too are fine; settings that no one reads
// are the mistakes this catches (a misspelt name silently does nothing).

// Role definition ids (built-in roles, the same in every tenant).
const (
	roleKeyVaultSecretsUser       = "4633458b-17de-408a-b874-0445c86b69e6"
	roleStorageTableDataContrib   = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
	roleStorageBlobDataOwner      = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
	roleStorageQueueDataContrib   = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
	roleCognitiveServicesOpenAI   = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"
	roleMonitoringMetricsPublishr = "3913510d-42f4-4e42-8a64-420c390055eb"
)

func loadJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return doc
}

func parameterFiles(t *testing.T) []string {
	files, _ := filepath.Glob(filepath.Join(root, "infra", "main.parameters*.json"))
	if len(files) < 2 {
		t.Fatalf("expected the default and the EU-only parameter files, found %v", files)
	}
	return files
}

func TestTemplateAndParametersMatchTheARMSchemas(t *testing.T) {
	s, err := NewSchemas(schemaDir)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := loadJSON(t, filepath.Join(root, "infra", "main.json"))
	if err := s.Template(tmpl); err != nil {
		t.Errorf("main.json against the template schema: %v", err)
	}
	for i, r := range tmpl["resources"].([]any) {
		res := r.(map[string]any)
		if err := s.Resource(res); err != nil {
			t.Errorf("resources[%d] %v@%v: %v", i, res["type"], res["apiVersion"], err)
		}
	}
	for _, f := range parameterFiles(t) {
		if err := s.Parameters(loadJSON(t, f)); err != nil {
			t.Errorf("%s against the parameters schema: %v", filepath.Base(f), err)
		}
	}
}

// The checks must be able to fail: a wrong value, an unknown type and an unknown API version.
func TestSchemaChecksRejectWhatIsWrong(t *testing.T) {
	s, err := NewSchemas(schemaDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		res  string
	}{
		{"bad enum", `{"type":"Microsoft.Web/sites","apiVersion":"2024-11-01","name":"x","location":"l","properties":{"functionAppConfig":{"runtime":{"name":"cobol"}}}}`},
		{"bad type of value", `{"type":"Microsoft.Web/sites","apiVersion":"2024-11-01","name":"x","location":"l","properties":{"httpsOnly":"yes"}}`},
		{"missing required", `{"type":"Microsoft.Authorization/roleAssignments","apiVersion":"2022-04-01","name":"x"}`},
		{"no schema for the version", `{"type":"Microsoft.Web/sites","apiVersion":"2015-08-01","name":"x"}`},
		{"no schema for the type", `{"type":"Microsoft.Compute/virtualMachines","apiVersion":"2024-11-01","name":"x"}`},
	} {
		var res map[string]any
		if err := json.Unmarshal([]byte(tc.res), &res); err != nil {
			t.Fatal(err)
		}
		if err := s.Resource(res); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

// The copy kept here must be the one the project was given.
func TestSchemaCopyMatchesTheSharedOne(t *testing.T) {
	shared := filepath.Join(root, "..", "shared", "arm-schemas")
	if _, err := os.Stat(shared); err != nil {
		t.Skip("no ../shared/arm-schemas beside this checkout")
	}
	readme, err := os.ReadFile(filepath.Join(schemaDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(filepath.Join(schemaDir, "schemas"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(schemaDir, path)
		a, _ := os.ReadFile(path)
		b, err := os.ReadFile(filepath.Join(shared, rel))
		if os.IsNotExist(err) {
			// A provider file the shared copy lacks is allowed when the README lists it as
			// taken from the same upstream commit.
			if !bytes.Contains(readme, []byte("`"+filepath.ToSlash(rel)+"`")) {
				t.Errorf("%s is not in ../shared/arm-schemas and %s/README.md does not list it", rel, schemaDir)
			}
			return nil
		}
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs from ../shared/arm-schemas (%v)", rel, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

var (
	paramRef = regexp.MustCompile(`parameters\('([^']+)'\)`)
	varRef   = regexp.MustCompile(`variables\('([^']+)'\)`)
)

func TestEveryParameterAndVariableIsDeclaredAndUsed(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root, "infra", "main.json"))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := loadJSON(t, filepath.Join(root, "infra", "main.json"))
	declaredParams := tmpl["parameters"].(map[string]any)
	declaredVars := map[string]bool{}
	for name := range tmpl["variables"].(map[string]any) {
		if name != "copy" {
			declaredVars[name] = true
		}
	}
	for _, l := range tmpl["variables"].(map[string]any)["copy"].([]any) {
		declaredVars[l.(map[string]any)["name"].(string)] = true
	}
	usedParams, usedVars := map[string]bool{}, map[string]bool{}
	for _, m := range paramRef.FindAllSubmatch(raw, -1) {
		usedParams[string(m[1])] = true
	}
	for _, m := range varRef.FindAllSubmatch(raw, -1) {
		usedVars[string(m[1])] = true
	}
	for name := range usedParams {
		if declaredParams[name] == nil {
			t.Errorf("parameters('%s') is used but not declared", name)
		}
	}
	for name := range declaredParams {
		if !usedParams[name] {
			t.Errorf("parameter %s is declared but never used", name)
		}
	}
	for name := range usedVars {
		if !declaredVars[name] {
			t.Errorf("variables('%s') is used but not declared", name)
		}
	}
	for name := range declaredVars {
		if !usedVars[name] {
			t.Errorf("variable %s is declared but never used", name)
		}
	}
	for _, f := range parameterFiles(t) {
		given := loadJSON(t, f)["parameters"].(map[string]any)
		for name := range given {
			if declaredParams[name] == nil {
				t.Errorf("%s sets %s, which the template does not declare", filepath.Base(f), name)
			}
		}
		for name, d := range declaredParams {
			if _, hasDefault := d.(map[string]any)["defaultValue"]; !hasDefault && given[name] == nil {
				t.Errorf("%s does not set the required parameter %s", filepath.Base(f), name)
			}
		}
	}
}

// stubs answer reference() the way Resource Manager would after deploying the resource.
var stubs = map[string]Stub{
	"Microsoft.Cdn/profiles": func(id string, path []string) (any, error) {
		if strings.Join(path, ".") == "frontDoorId" {
			return fakeGUID(id), nil
		}
		return nil, fmt.Errorf("unknown property %v", path)
	},
	"Microsoft.Cdn/profiles/afdEndpoints": func(id string, path []string) (any, error) {
		if strings.Join(path, ".") == "hostName" {
			return NameOfID(id) + "-f3b4c5d6e7.z01.azurefd.net", nil
		}
		return nil, fmt.Errorf("unknown property %v", path)
	},
	"Microsoft.Web/sites": func(id string, path []string) (any, error) {
		switch strings.Join(path, ".") {
		case "identity.principalId":
			return fakeGUID("principal " + id), nil
		case "defaultHostName":
			return NameOfID(id) + ".azurewebsites.net", nil
		}
		return nil, fmt.Errorf("unknown property %v", path)
	},
	"Microsoft.Insights/components": func(id string, path []string) (any, error) {
		if strings.EqualFold(strings.Join(path, "."), "ConnectionString") {
			return "InstrumentationKey=" + fakeGUID(id) + ";IngestionEndpoint=https://swedencentral-1.in.applicationinsights.azure.com/;ApplicationId=" + fakeGUID("app "+id), nil
		}
		return nil, fmt.Errorf("unknown property %v", path)
	},
}

func fakeGUID(seed string) string {
	v, _ := (&evaluator{}).function("guid", []any{seed}, scope{})
	return v.(string)
}

func evaluate(t *testing.T, paramFile string) *Deployment {
	t.Helper()
	return evaluateWith(t, paramFile, nil)
}

// evaluateWith evaluates the template with a parameters file and some values replaced.
func evaluateWith(t *testing.T, paramFile string, overrides map[string]any) *Deployment {
	t.Helper()
	tmpl := loadJSON(t, filepath.Join(root, "infra", "main.json"))
	values := map[string]any{}
	for name, p := range loadJSON(t, paramFile)["parameters"].(map[string]any) {
		v, err := (&evaluator{}).eval(p.(map[string]any)["value"], scope{}) // numbers to ints
		if err != nil {
			t.Fatal(err)
		}
		values[name] = v
	}
	for name, v := range overrides {
		values[name] = v
	}
	d, err := Evaluate(tmpl, values, stubs)
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(paramFile), err)
	}
	return d
}

func (d *Deployment) ofType(typ string) []Resource {
	var out []Resource
	for _, r := range d.Resources {
		if strings.EqualFold(r.Type, typ) {
			out = append(out, r)
		}
	}
	return out
}

func appSettings(t *testing.T, site Resource) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, s := range site.Props()["siteConfig"].(map[string]any)["appSettings"].([]any) {
		kv := s.(map[string]any)
		name, value := kv["name"].(string), kv["value"]
		str, ok := value.(string)
		if !ok {
			t.Errorf("%s: app setting %s is %T, not a string", site.Name, name, value)
		}
		if _, dup := out[name]; dup {
			t.Errorf("%s: app setting %s set twice", site.Name, name)
		}
		out[name] = str
	}
	return out
}

var handlerBinary = func() func(t *testing.T) string {
	var path string
	var err error
	return func(t *testing.T) string {
		if path == "" && err == nil {
			dir, _ := os.MkdirTemp("", "infra-test-")
			path = filepath.Join(dir, "handler")
			out, buildErr := exec.Command("go", "build", "-o", path, filepath.Join(root, "handler")).CombinedOutput()
			if buildErr != nil {
				err = fmt.Errorf("build handler: %v\n%s", buildErr, out)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		return path
	}
}()

// check runs `handler -check` with exactly these settings, as the app would start with them.
func check(t *testing.T, settings map[string]string) (report struct {
	OK         bool     `json:"ok"`
	Problems   []string `json:"problems"`
	Warnings   []string `json:"warnings"`
	HealthPath string   `json:"healthPath"`
	Read       []string `json:"read"`
}) {
	t.Helper()
	cmd := exec.Command(handlerBinary(t), "-check")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range settings {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, _ := cmd.Output()
	if err := json.Unmarshal(out, &report); err != nil {
		t.Fatalf("handler -check printed %q: %v", out, err)
	}
	return report
}

func TestDeploymentsAgreeWithTheHandler(t *testing.T) {
	for _, f := range parameterFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			d := evaluate(t, f)
			params := loadJSON(t, f)["parameters"].(map[string]any)
			regions := params["regions"].(map[string]any)["value"].([]any)
			sites := d.ofType("Microsoft.Web/sites")
			if len(sites) != len(regions) {
				t.Fatalf("%d Function Apps for %d regions", len(sites), len(regions))
			}
			profiles := d.ofType("Microsoft.Cdn/profiles")
			if len(profiles) != 1 {
				t.Fatalf("%d Front Door profiles", len(profiles))
			}
			frontDoorID, _ := stubs["Microsoft.Cdn/profiles"](profiles[0].ID(), []string{"frontDoorId"})
			groups := d.ofType("Microsoft.Cdn/profiles/originGroups")
			if len(groups) != 1 {
				t.Fatalf("%d origin groups", len(groups))
			}
			probe := groups[0].Props()["healthProbeSettings"].(map[string]any)
			for _, site := range sites {
				settings := appSettings(t, site)
				report := check(t, settings)
				if !report.OK {
					t.Errorf("%s: the handler would not start with the template's settings: %v", site.Name, report.Problems)
				}
				if len(report.Warnings) > 0 {
					t.Errorf("%s: the handler warns at start: %v", site.Name, report.Warnings)
				}
				if probe["probePath"] != report.HealthPath {
					t.Errorf("Front Door probes %v; the handler's health path is %s", probe["probePath"], report.HealthPath)
				}
				read := map[string]bool{}
				for _, r := range report.Read {
					read[r] = true
				}
				for name := range settings {
					if !read[name] && hostSettings[name] == "" {
						t.Errorf("%s: the template sets %s, which neither the handler nor the Functions host reads", site.Name, name)
					}
				}
				for name := range hostSettings {
					if _, ok := settings[name]; !ok {
						t.Errorf("%s: the host needs %s", site.Name, name)
					}
				}
				for _, name := range []string{"GATEWAY_CONFIG", "GATEWAY_STATE_STORAGE__tableServiceUri", "GATEWAY_FRONTDOOR_ID"} {
					if settings[name] == "" {
						t.Errorf("%s: %s is not set", site.Name, name)
					}
				}
				if settings["GATEWAY_FRONTDOOR_ID"] != frontDoorID {
					t.Errorf("%s: GATEWAY_FRONTDOOR_ID is %q, the profile's id is %q", site.Name, settings["GATEWAY_FRONTDOOR_ID"], frontDoorID)
				}
				for _, forbidden := range []string{"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE", "AzureWebJobsStorage"} {
					if _, ok := settings[forbidden]; ok {
						t.Errorf("%s: %s is not allowed on Flex Consumption (or would carry a key)", site.Name, forbidden)
					}
				}
			}
		})
	}
}

func TestDeploymentsAreLockedDown(t *testing.T) {
	for _, f := range parameterFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			d := evaluate(t, f)
			frontDoorID, _ := stubs["Microsoft.Cdn/profiles"](d.ofType("Microsoft.Cdn/profiles")[0].ID(), []string{"frontDoorId"})
			policies := map[string]bool{}
			for _, p := range d.ofType("Microsoft.Web/sites/basicPublishingCredentialsPolicies") {
				if p.Props()["allow"] != false {
					t.Errorf("%s: basic publishing credentials allowed", p.Name)
				}
				policies[p.Name] = true
			}
			for _, site := range d.ofType("Microsoft.Web/sites") {
				p := site.Props()
				cfg := p["siteConfig"].(map[string]any)
				if p["httpsOnly"] != true {
					t.Errorf("%s: not HTTPS only", site.Name)
				}
				if cfg["minTlsVersion"] != "1.2" || cfg["scmMinTlsVersion"] != "1.2" {
					t.Errorf("%s: minTlsVersion %v, scmMinTlsVersion %v", site.Name, cfg["minTlsVersion"], cfg["scmMinTlsVersion"])
				}
				if !policies[site.Name+"/ftp"] || !policies[site.Name+"/scm"] {
					t.Errorf("%s: FTP and SCM basic credentials must both be turned off", site.Name)
				}
				if cfg["ipSecurityRestrictionsDefaultAction"] != "Deny" {
					t.Errorf("%s: access restrictions do not deny by default", site.Name)
				}
				rules := cfg["ipSecurityRestrictions"].([]any)
				if len(rules) != 1 {
					t.Fatalf("%s: %d access rules, want only the Front Door one", site.Name, len(rules))
				}
				rule := rules[0].(map[string]any)
				ids, _ := rule["headers"].(map[string]any)["x-azure-fdid"].([]any)
				if rule["tag"] != "ServiceTag" || rule["ipAddress"] != "AzureFrontDoor.Backend" || rule["action"] != "Allow" || len(ids) != 1 || ids[0] != frontDoorID {
					t.Errorf("%s: the access rule is not 'AzureFrontDoor.Backend with this profile's x-azure-fdid': %v", site.Name, rule)
				}
				// Flex Consumption refuses these siteConfig properties outright (ARM error 51021),
				// as seen in microsoft/azure-pipelines-tasks#21032 and
				// Azure/terraform-azurerm-avm-res-web-site#283/#345: FTP is turned off by the
				// basic publishing credentials policy instead.
				for _, refused := range []string{"ftpsState", "use32BitWorkerProcess", "netFrameworkVersion", "functionsRuntimeScaleMonitoringEnabled", "linuxFxVersion", "windowsFxVersion", "alwaysOn", "preWarmedInstanceCount"} {
					for k := range cfg {
						if strings.EqualFold(k, refused) {
							t.Errorf("%s: siteConfig.%s is refused on Flex Consumption", site.Name, k)
						}
					}
				}
				rt := p["functionAppConfig"].(map[string]any)["runtime"].(map[string]any)
				if rt["name"] != "custom" || rt["version"] != "1.0" {
					t.Errorf("%s: runtime %v", site.Name, rt)
				}
				if site.Body["identity"].(map[string]any)["type"] != "SystemAssigned" {
					t.Errorf("%s: no managed identity", site.Name)
				}
			}
			for _, st := range d.ofType("Microsoft.Storage/storageAccounts") {
				if st.Props()["allowSharedKeyAccess"] != false || st.Props()["minimumTlsVersion"] != "TLS1_2" {
					t.Errorf("%s: storage keys enabled or old TLS allowed", st.Name)
				}
			}
			for _, kv := range d.ofType("Microsoft.KeyVault/vaults") {
				if kv.Props()["enableRbacAuthorization"] != true || kv.Props()["enableSoftDelete"] != true {
					t.Errorf("%s: Key Vault must use RBAC with soft delete", kv.Name)
				}
			}
			for _, ai := range d.ofType("Microsoft.Insights/components") {
				// With local auth off, the connection string's instrumentation key cannot ingest
				// on its own: the apps authenticate with their identity.
				if ai.Props()["DisableLocalAuth"] != true {
					t.Errorf("%s: Application Insights accepts key-only ingestion", ai.Name)
				}
			}
		})
	}
}

// secretShapes are what a key, password or token looks like inside a setting or an output.
var secretShapes = regexp.MustCompile(`(?i)(accountkey=|sharedaccesssignature|[?&]sig=|password|secret=|api-?key|bearer |-----begin|eyJ[a-zA-Z0-9_-]{10,}\.)`)

func TestNoSecretInSettingsOrOutputs(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root, "infra", "main.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range []string{"listKeys(", "listSecrets(", "listCredentials(", "listConnectionStrings("} {
		if bytes.Contains(bytes.ToLower(raw), []byte(strings.ToLower(fn))) {
			t.Errorf("the template calls %s: keys would end up in settings or the deployment history", fn)
		}
	}
	for _, f := range parameterFiles(t) {
		d := evaluate(t, f)
		for _, site := range d.ofType("Microsoft.Web/sites") {
			for name, value := range appSettings(t, site) {
				if m := secretShapes.FindString(value); m != "" {
					t.Errorf("%s: app setting %s looks like it holds a secret (%q)", site.Name, name, m)
				}
			}
		}
		for name, v := range d.Outputs {
			for _, s := range Strings(v) {
				if m := secretShapes.FindString(s); m != "" {
					t.Errorf("output %s looks like a secret (%q)", name, m)
				}
			}
		}
	}
	// The scan must catch what it is for.
	for _, s := range []string{"DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc==", "https://a.blob.core.windows.net/c?sv=1&sig=abc", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x"} {
		if !secretShapes.MatchString(s) {
			t.Errorf("the secret scan misses %q", s)
		}
	}
}

func TestRoleAssignmentsGiveEachAppWhatItNeeds(t *testing.T) {
	for _, f := range parameterFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			d := evaluate(t, f)
			granted := map[string]bool{} // principal|role|scope
			for _, ra := range d.ofType("Microsoft.Authorization/roleAssignments") {
				p := ra.Props()
				role := NameOfID(p["roleDefinitionId"].(string))
				scope, _ := ra.Body["scope"].(string)
				granted[fmt.Sprint(p["principalId"], "|", role, "|", scope)] = true
			}
			kv := d.ofType("Microsoft.KeyVault/vaults")[0]
			ai := d.ofType("Microsoft.Insights/components")[0]
			var openAI []Resource
			openAI = append(openAI, d.ofType("Microsoft.CognitiveServices/accounts")...)
			for _, site := range d.ofType("Microsoft.Web/sites") {
				principal, _ := stubs["Microsoft.Web/sites"](site.ID(), []string{"identity", "principalId"})
				settings := appSettings(t, site)
				state := strings.TrimPrefix(strings.Split(settings["GATEWAY_STATE_STORAGE__tableServiceUri"], ".")[0], "https://")
				want := []struct{ role, scope, what string }{
					{roleKeyVaultSecretsUser, "Microsoft.KeyVault/vaults/" + kv.Name, "read backend and client keys"},
					{roleStorageTableDataContrib, "Microsoft.Storage/storageAccounts/" + state, "share throttle state"},
					{roleStorageBlobDataOwner, "Microsoft.Storage/storageAccounts/" + settings["AzureWebJobsStorage__accountName"], "host storage and the deployment package"},
					// The host writes its diagnostic events to a table of its storage (AZFD0003
					// when it cannot) and uses queues of it for triggers; Microsoft's Flex
					// Consumption templates grant both with Blob Data Owner.
					{roleStorageTableDataContrib, "Microsoft.Storage/storageAccounts/" + settings["AzureWebJobsStorage__accountName"], "write the host's diagnostic events"},
					{roleStorageQueueDataContrib, "Microsoft.Storage/storageAccounts/" + settings["AzureWebJobsStorage__accountName"], "use the host's queues"},
					{roleMonitoringMetricsPublishr, "Microsoft.Insights/components/" + ai.Name, "send telemetry with its identity"},
				}
				for _, acct := range openAI {
					want = append(want, struct{ role, scope, what string }{roleCognitiveServicesOpenAI, "Microsoft.CognitiveServices/accounts/" + acct.Name, "call Azure OpenAI with Entra ID"})
				}
				for _, w := range want {
					if !granted[fmt.Sprint(principal, "|", w.role, "|", w.scope)] {
						t.Errorf("%s cannot %s: no role %s on %s", site.Name, w.what, w.role, w.scope)
					}
				}
				pkg := site.Props()["functionAppConfig"].(map[string]any)["deployment"].(map[string]any)["storage"].(map[string]any)
				if !strings.HasPrefix(pkg["value"].(string), "https://"+settings["AzureWebJobsStorage__accountName"]+".blob.") {
					t.Errorf("%s: deployment package in %v, not in its host storage account", site.Name, pkg["value"])
				}
			}
			if n, want := len(d.ofType("Microsoft.Authorization/roleAssignments")), len(d.ofType("Microsoft.Web/sites"))*(6+len(openAI)); n < want || n > want+1 {
				t.Errorf("%d role assignments, want %d for the apps (+1 for the deployer): nothing more than they need", n, want)
			}
		})
	}
}

func TestFrontDoorPassesStreamsThrough(t *testing.T) {
	for _, f := range parameterFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			d := evaluate(t, f)
			profile := d.ofType("Microsoft.Cdn/profiles")[0]
			sku := profile.Body["sku"].(map[string]any)["name"]
			if n := profile.Props()["originResponseTimeoutSeconds"]; n.(int) < 230 {
				t.Errorf("origin response timeout %v s is shorter than a long completion (the Functions limit is 230 s)", n)
			}
			sites := map[string]bool{}
			for _, s := range d.ofType("Microsoft.Web/sites") {
				sites[s.Name+".azurewebsites.net"] = true
			}
			origins := d.ofType("Microsoft.Cdn/profiles/originGroups/origins")
			if len(origins) != len(sites) {
				t.Errorf("%d origins for %d apps", len(origins), len(sites))
			}
			for _, o := range origins {
				if !sites[o.Props()["hostName"].(string)] || o.Props()["enforceCertificateNameCheck"] != true {
					t.Errorf("origin %s: host %v, certificate check %v", o.Name, o.Props()["hostName"], o.Props()["enforceCertificateNameCheck"])
				}
			}
			routes := d.ofType("Microsoft.Cdn/profiles/afdEndpoints/routes")
			if len(routes) != 1 {
				t.Fatalf("%d routes", len(routes))
			}
			rp := routes[0].Props()
			if _, cached := rp["cacheConfiguration"]; cached {
				t.Error("the route caches (and may compress) responses: streams must pass through")
			}
			if rp["forwardingProtocol"] != "HttpsOnly" || fmt.Sprint(rp["supportedProtocols"]) != "[Https]" {
				t.Errorf("route protocols: forwarding %v, accepting %v", rp["forwardingProtocol"], rp["supportedProtocols"])
			}
			waf := d.ofType("Microsoft.Network/FrontDoorWebApplicationFirewallPolicies")
			if len(waf) != 1 {
				t.Fatalf("%d WAF policies", len(waf))
			}
			if waf[0].Body["sku"].(map[string]any)["name"] != sku {
				t.Errorf("WAF sku %v differs from the profile's %v", waf[0].Body["sku"], sku)
			}
			managed := waf[0].Props()["managedRules"].(map[string]any)["managedRuleSets"].([]any)
			if (sku == "Premium_AzureFrontDoor") != (len(managed) > 0) {
				t.Errorf("%v with %d managed rule sets: they come with Premium only", sku, len(managed))
			}
			rateLimited := false
			for _, r := range waf[0].Props()["customRules"].(map[string]any)["rules"].([]any) {
				rule := r.(map[string]any)
				rateLimited = rateLimited || rule["ruleType"] == "RateLimitRule" && rule["enabledState"] == "Enabled"
			}
			if !rateLimited {
				t.Error("no enabled rate-limit rule in the WAF policy")
			}
			linked := false
			for _, sp := range d.ofType("Microsoft.Cdn/profiles/securityPolicies") {
				params := sp.Props()["parameters"].(map[string]any)
				linked = linked || params["wafPolicy"].(map[string]any)["id"] == waf[0].ID()
			}
			if !linked {
				t.Error("the WAF policy is not attached to the endpoint")
			}
		})
	}
}

func TestRoutingNamesDeploymentsTheTemplateCreates(t *testing.T) {
	for _, f := range parameterFiles(t) {
		params := loadJSON(t, f)["parameters"].(map[string]any)
		created := map[string]bool{}
		if deps, ok := params["openAiDeployments"]; ok {
			for _, dep := range deps.(map[string]any)["value"].([]any) {
				m := dep.(map[string]any)
				created[fmt.Sprint(m["account"], "/", m["name"])] = true
			}
		}
		accounts := map[string]bool{}
		if accts, ok := params["openAiAccounts"]; ok {
			for _, a := range accts.(map[string]any)["value"].([]any) {
				accounts[a.(map[string]any)["name"].(string)] = true
			}
		}
		var names []string
		for logical, targets := range params["routing"].(map[string]any)["value"].(map[string]any) {
			for _, tg := range targets.([]any) {
				m := tg.(map[string]any)
				id := fmt.Sprint(m["account"], "/", m["deployment"])
				if accounts[m["account"].(string)] && !created[id] {
					names = append(names, logical+" -> "+id)
				}
			}
		}
		sort.Strings(names)
		if len(names) > 0 {
			t.Errorf("%s: routing targets that no deployment creates: %v", filepath.Base(f), names)
		}
	}
}

// ARM ignores many unknown properties, so a misspelt one would deploy as if absent.
func TestNoPropertyTheSchemaDoesNotKnow(t *testing.T) {
	s, err := NewSchemas(schemaDir)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := loadJSON(t, filepath.Join(root, "infra", "main.json"))
	var check func(res map[string]any, parentType string)
	check = func(res map[string]any, parentType string) {
		r := res
		if parentType != "" { // a nested child: its schema is the full type's
			r = map[string]any{}
			for k, v := range res {
				r[k] = v
			}
			r["type"] = parentType + "/" + res["type"].(string)
		}
		unknown, err := s.UnknownProperties(r)
		if err != nil {
			t.Errorf("%v: %v", r["type"], err)
		}
		for _, u := range unknown {
			t.Errorf("%v: %s is not a property its schema knows", r["type"], u)
		}
		children, _ := res["resources"].([]any)
		for _, c := range children {
			check(c.(map[string]any), r["type"].(string))
		}
	}
	for _, r := range tmpl["resources"].([]any) {
		check(r.(map[string]any), "")
	}
	// And it must catch one.
	var bad map[string]any
	_ = json.Unmarshal([]byte(`{"type":"Microsoft.Web/sites","apiVersion":"2024-11-01","properties":{"httpsOnlyy":true,"siteConfig":{"minTlsVersion":"1.2","ipSecurityRestrictions":[{"tag":"ServiceTag","ipAdress":"x"}]}}}`), &bad)
	unknown, err := s.UnknownProperties(bad)
	if err != nil || len(unknown) != 2 {
		t.Errorf("typos found: %v (%v), want properties.httpsOnlyy and properties.siteConfig.ipSecurityRestrictions[0].ipAdress", unknown, err)
	}
}
