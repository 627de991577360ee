package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Plan is what a deployment of infra/main.json with one parameters file asks Azure for: the
// parameter values in effect (the file's, else the template's defaults), reduced to what the
// pre-flight checks need.
type Plan struct {
	ParamFile       string // as given, for messages
	Prefix          string // namePrefix, lower-cased
	Salt            string // nameSalt
	Regions         []string
	Accounts        []Account
	Deployments     []ModelDeployment
	PurgeProtection bool // keyVaultPurgeProtection
}

// Account is one Azure OpenAI account the template creates.
type Account struct {
	Name     string // the account's key in the routing document
	Location string
}

// ModelDeployment is one entry of openAiDeployments.
type ModelDeployment struct {
	Index    int // position in openAiDeployments, for messages
	Account  string
	Location string // the account's
	Name     string
	Model    string
	Version  string
	SKU      string
	Capacity int
}

// Where names the entry the way a user finds it in the parameters file.
func (d ModelDeployment) Where() string {
	return fmt.Sprintf("openAiDeployments[%d] (account %q, deployment %q)", d.Index, d.Account, d.Name)
}

// LoadPlan reads the template's parameter declarations and the parameters file.
func LoadPlan(templatePath, paramPath string) (*Plan, error) {
	var tmpl struct {
		Parameters map[string]struct {
			DefaultValue json.RawMessage `json:"defaultValue"`
		} `json:"parameters"`
	}
	if err := readJSONFile(templatePath, &tmpl); err != nil {
		return nil, err
	}
	var params struct {
		Parameters map[string]struct {
			Value json.RawMessage `json:"value"`
		} `json:"parameters"`
	}
	if err := readJSONFile(paramPath, &params); err != nil {
		return nil, err
	}
	// value returns the parameter's value in effect: the file's, else a literal default.
	// Defaults that are template expressions are not evaluated; none of the parameters read
	// here has one.
	value := func(name string, into any) error {
		raw := json.RawMessage(nil)
		if p, ok := params.Parameters[name]; ok {
			raw = p.Value
		} else if d, ok := tmpl.Parameters[name]; ok {
			raw = d.DefaultValue
		}
		if len(raw) == 0 {
			return nil
		}
		if s := strings.TrimSpace(string(raw)); strings.HasPrefix(s, `"[`) && !strings.HasPrefix(s, `"[[`) {
			return fmt.Errorf("parameter %s: %s is a template expression; give a literal value", name, s)
		}
		if err := json.Unmarshal(raw, into); err != nil {
			return fmt.Errorf("parameter %s: %w", name, err)
		}
		return nil
	}
	p := &Plan{ParamFile: paramPath, PurgeProtection: true}
	var accounts []struct {
		Name     string `json:"name"`
		Location string `json:"location"`
	}
	var deployments []struct {
		Account  string `json:"account"`
		Name     string `json:"name"`
		Model    string `json:"model"`
		Version  string `json:"version"`
		SKU      string `json:"sku"`
		Capacity int    `json:"capacity"`
	}
	for _, v := range []struct {
		name string
		into any
	}{
		{"namePrefix", &p.Prefix},
		{"nameSalt", &p.Salt},
		{"regions", &p.Regions},
		{"keyVaultPurgeProtection", &p.PurgeProtection},
		{"openAiAccounts", &accounts},
		{"openAiDeployments", &deployments},
	} {
		if err := value(v.name, v.into); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Base(paramPath), err)
		}
	}
	p.Prefix = strings.ToLower(p.Prefix)
	locations := map[string]string{}
	for _, a := range accounts {
		p.Accounts = append(p.Accounts, Account{Name: a.Name, Location: normalizeRegion(a.Location)})
		locations[a.Name] = normalizeRegion(a.Location)
	}
	for i := range p.Regions {
		p.Regions[i] = normalizeRegion(p.Regions[i])
	}
	var problems []string
	for i, d := range deployments {
		md := ModelDeployment{Index: i, Account: d.Account, Location: locations[d.Account], Name: d.Name,
			Model: d.Model, Version: d.Version, SKU: d.SKU, Capacity: d.Capacity}
		if md.Location == "" {
			problems = append(problems, fmt.Sprintf("%s: no account %q in openAiAccounts", md.Where(), d.Account))
		}
		if md.Model == "" || md.Version == "" || md.SKU == "" || md.Capacity < 1 {
			problems = append(problems, fmt.Sprintf("%s: model, version, sku and capacity (at least 1) are all required", md.Where()))
		}
		p.Deployments = append(p.Deployments, md)
	}
	if len(p.Regions) == 0 {
		problems = append(problems, "regions: no region is given")
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s:\n  %s", filepath.Base(paramPath), strings.Join(problems, "\n  "))
	}
	return p, nil
}

// Locations lists the Azure OpenAI accounts' regions, each once, in order of appearance.
func (p *Plan) Locations() []string {
	var out []string
	seen := map[string]bool{}
	for _, a := range p.Accounts {
		if !seen[a.Location] {
			seen[a.Location] = true
			out = append(out, a.Location)
		}
	}
	return out
}

// VaultNamePrefix is how the template's Key Vault name starts (take(prefix-kv-suffix, 24)).
func (p *Plan) VaultNamePrefix() string {
	s := p.Prefix + "-kv-"
	if len(s) > 24 {
		s = s[:24]
	}
	return s
}

// AccountNamePrefix is how the template's name for an Azure OpenAI account starts.
func (p *Plan) AccountNamePrefix(account string) string {
	return p.Prefix + "-" + account + "-"
}

// normalizeRegion turns "East US 2" or "eastus2" into "eastus2".
func normalizeRegion(s string) string {
	return strings.ToLower(strings.ReplaceAll(s, " ", ""))
}

func readJSONFile(path string, into any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, into); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
