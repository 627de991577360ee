package infra

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// modelTable is infra/models.json: the model versions the parameter files deploy, their
// lifecycle dates and where each is offered.
type modelTable struct {
	Checked string `json:"checked"`
	Models  []struct {
		Model             string              `json:"model"`
		Version           string              `json:"version"`
		Lifecycle         string              `json:"lifecycle"`
		NewCustomersUntil string              `json:"newCustomersUntil"`
		Retires           string              `json:"retires"`
		Replacement       string              `json:"replacement"`
		Offered           map[string][]string `json:"offered"`
	} `json:"models"`
}

func loadModelTable(t *testing.T) modelTable {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "infra", "models.json"))
	if err != nil {
		t.Fatal(err)
	}
	var mt modelTable
	if err := json.Unmarshal(b, &mt); err != nil {
		t.Fatalf("infra/models.json: %v", err)
	}
	return mt
}

const dateLayout = "2006-01-02"

// checkModelChoices says, for one parameters document, every model deployment that the table
// says cannot be created at now: missing from the table, closed to new customers, retired, or
// with a SKU its account's region does not offer.
func checkModelChoices(mt modelTable, file string, params map[string]any, now time.Time) []string {
	var out []string
	locations := map[string]string{}
	if accts, ok := params["openAiAccounts"].(map[string]any); ok {
		for _, a := range accts["value"].([]any) {
			a := a.(map[string]any)
			locations[fmt.Sprint(a["name"])] = fmt.Sprint(a["location"])
		}
	}
	deps, _ := params["openAiDeployments"].(map[string]any)
	if deps == nil {
		return nil
	}
	fix := fmt.Sprintf("choose a current model in infra/%s (infra/deploy.sh --what-if lists what each region offers) and update infra/models.json from the retirement schedule", file)
	for i, d := range deps["value"].([]any) {
		d := d.(map[string]any)
		model, version, sku := fmt.Sprint(d["model"]), fmt.Sprint(d["version"]), fmt.Sprint(d["sku"])
		region := locations[fmt.Sprint(d["account"])]
		where := fmt.Sprintf("%s: openAiDeployments[%d] (%v/%v) deploys %s %s as %s in %s", file, i, d["account"], d["name"], model, version, sku, region)
		found := false
		for _, m := range mt.Models {
			if m.Model != model || m.Version != version {
				continue
			}
			found = true
			replacement := ""
			if m.Replacement != "" {
				replacement = "; its replacement is " + m.Replacement
			}
			if r, err := time.Parse(dateLayout, m.Retires); err == nil && !now.Before(r) {
				out = append(out, fmt.Sprintf("%s, which infra/models.json says retired on %s%s: %s", where, m.Retires, replacement, fix))
				continue
			}
			if c, err := time.Parse(dateLayout, m.NewCustomersUntil); err == nil && !now.Before(c) {
				out = append(out, fmt.Sprintf("%s, which infra/models.json says takes no new customers since %s (retires %s)%s: %s", where, m.NewCustomersUntil, m.Retires, replacement, fix))
				continue
			}
			offered := false
			for _, r := range m.Offered[sku] {
				offered = offered || r == region
			}
			if !offered {
				var skus []string
				for s, regions := range m.Offered {
					for _, r := range regions {
						if r == region {
							skus = append(skus, s)
						}
					}
				}
				out = append(out, fmt.Sprintf("%s, but infra/models.json says %s does not offer it as %s (offered there as: %s): change its sku in infra/%s", where, region, sku, strings.Join(skus, ", "), file))
			}
		}
		if !found {
			out = append(out, fmt.Sprintf("%s, which infra/models.json does not list: add it with its dates and regions from the sources the table names", where))
		}
	}
	return out
}

// The defaults must be deployable by a new subscription today; the day one is retired or closed
// to new customers, this fails with what to change.
func TestDefaultModelsAreCurrent(t *testing.T) {
	mt := loadModelTable(t)
	now := time.Now().UTC()
	for _, f := range parameterFiles(t) {
		for _, p := range checkModelChoices(mt, filepath.Base(f), loadJSON(t, f)["parameters"].(map[string]any), now) {
			t.Error(p)
		}
		// Say it early: two months' notice.
		for _, p := range checkModelChoices(mt, filepath.Base(f), loadJSON(t, f)["parameters"].(map[string]any), now.AddDate(0, 2, 0)) {
			t.Logf("within two months: %s", p)
		}
	}
}

func TestModelTableIsWellFormed(t *testing.T) {
	mt := loadModelTable(t)
	checked, err := time.Parse(dateLayout, mt.Checked)
	if err != nil || checked.After(time.Now()) {
		t.Errorf("checked %q is not a past date", mt.Checked)
	}
	seen := map[string]bool{}
	for _, m := range mt.Models {
		id := m.Model + " " + m.Version
		if seen[id] {
			t.Errorf("%s is listed twice", id)
		}
		seen[id] = true
		r, err := time.Parse(dateLayout, m.Retires)
		if err != nil {
			t.Errorf("%s: retires %q is not a date", id, m.Retires)
		}
		if m.NewCustomersUntil != "" {
			c, err := time.Parse(dateLayout, m.NewCustomersUntil)
			if err != nil || c.After(r) {
				t.Errorf("%s: newCustomersUntil %q is not a date before retires %s", id, m.NewCustomersUntil, m.Retires)
			}
		}
		for sku := range m.Offered {
			switch sku {
			case "GlobalStandard", "DataZoneStandard", "Standard", "GlobalProvisionedManaged", "DataZoneProvisionedManaged", "ProvisionedManaged":
			default:
				t.Errorf("%s: unknown sku %q", id, sku)
			}
		}
	}
}

// The check must catch what it is for: the defaults of November 2026 (a retired model, and an
// embeddings SKU Sweden Central does not offer), and today's defaults once their dates pass.
func TestModelTableCatchesRetirementsAndWrongSKUs(t *testing.T) {
	mt := loadModelTable(t)
	var old map[string]any
	_ = json.Unmarshal([]byte(`{
		"openAiAccounts": { "value": [ { "name": "eus2", "location": "eastus2" }, { "name": "swc", "location": "swedencentral" } ] },
		"openAiDeployments": { "value": [
			{ "account": "eus2", "name": "gpt-4.1-mini", "model": "gpt-4.1-mini", "version": "2025-04-14", "sku": "GlobalStandard", "capacity": 100 },
			{ "account": "swc", "name": "text-embedding-3-small", "model": "text-embedding-3-small", "version": "1", "sku": "Standard", "capacity": 120 },
			{ "account": "swc", "name": "future", "model": "gpt-9", "version": "2030-01-01", "sku": "GlobalStandard", "capacity": 1 }
		] } }`), &old)
	got := strings.Join(checkModelChoices(mt, "main.parameters.json", old, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)), "\n")
	for _, want := range []string{
		"gpt-4.1-mini 2025-04-14 as GlobalStandard in eastus2, which infra/models.json says retired on 2026-10-14; its replacement is gpt-5.4-mini 2026-03-17",
		"swedencentral does not offer it as Standard (offered there as: ",
		"gpt-9 2030-01-01", "does not list",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the check does not say %q; it says:\n%s", want, got)
		}
	}
	for _, f := range parameterFiles(t) {
		params := loadJSON(t, f)["parameters"].(map[string]any)
		if p := checkModelChoices(mt, filepath.Base(f), params, time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)); len(p) > 0 {
			t.Errorf("on the day the table was checked, %s fails it: %v", filepath.Base(f), p)
		}
		later := checkModelChoices(mt, filepath.Base(f), params, time.Date(2028, 3, 1, 0, 0, 0, 0, time.UTC))
		if len(later) == 0 || !strings.Contains(later[0], "retired on") {
			t.Errorf("in 2028 %s still passes: %v", filepath.Base(f), later)
		}
	}
}
