package main

import (
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Report is the outcome of the pre-flight: what holds, what to watch, and every missing
// prerequisite, each said with what to change.
type Report struct {
	OK       []string
	Warnings []string
	Problems []string
	Actions  []Action // what --purge-deleted or --recover-deleted makes deploy.sh do
}

func (r *Report) ok(format string, a ...any) {
	r.OK = append(r.OK, fmt.Sprintf(format, a...))
}

func (r *Report) warn(format string, a ...any) {
	r.Warnings = append(r.Warnings, fmt.Sprintf(format, a...))
}

func (r *Report) problem(format string, a ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, a...))
}

// Action is one step deploy.sh runs after the pre-flight passed and the group exists.
type Action struct {
	Verb     string // purge-vault, recover-vault, purge-account, recover-account
	Name     string
	Location string
	Group    string
}

// ModelInfo is one entry of `az cognitiveservices model list`.
type ModelInfo struct {
	Kind  string `json:"kind"`
	Model struct {
		Format          string         `json:"format"`
		Name            string         `json:"name"`
		Version         string         `json:"version"`
		LifecycleStatus string         `json:"lifecycleStatus"`
		Capabilities    map[string]any `json:"capabilities"`
		Deprecation     struct {
			Inference string `json:"inference"`
		} `json:"deprecation"`
		SKUs []ModelSKU `json:"skus"`
	} `json:"model"`
}

// ModelSKU is one deployment type a model is offered with in a region.
type ModelSKU struct {
	Name            string `json:"name"`
	UsageName       string `json:"usageName"`
	DeprecationDate string `json:"deprecationDate"`
	Capacity        struct {
		Minimum float64 `json:"minimum"`
		Maximum float64 `json:"maximum"`
	} `json:"capacity"`
}

// Usage is one entry of `az cognitiveservices usage list`: a quota and how much of it is used.
type Usage struct {
	Name struct {
		Value string `json:"value"`
	} `json:"name"`
	CurrentValue float64 `json:"currentValue"`
	Limit        float64 `json:"limit"`
}

// quotaKey is one quota: per subscription, region and usage name (deployment type and model).
type quotaKey struct{ region, usage string }

const quotaURL = "https://aka.ms/oai/quotaincrease"

// lifecycle says what a model version's state means for a new deployment at now. The Models
// API names states differently from the docs: "Deprecating" is the docs' Deprecated (existing
// customers only), "Deprecated" is retired; a past deprecation.inference date is retired too.
func lifecycle(m ModelInfo, now time.Time) (state, retires string) {
	retires = day(m.Model.Deprecation.Inference)
	if t, ok := parseTime(m.Model.Deprecation.Inference); ok && !t.After(now) {
		return "retired", retires
	}
	switch strings.ToLower(m.Model.LifecycleStatus) {
	case "deprecated":
		return "retired", retires
	case "deprecating":
		return "closed", retires
	case "preview":
		return "preview", retires
	}
	return "ga", retires
}

func parseTime(s string) (time.Time, bool) {
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

func day(s string) string {
	if t, ok := parseTime(s); ok {
		return t.Format("2006-01-02")
	}
	return s
}

// capability is the use a model is for, so that suggestions keep to models of the same use.
func capability(m ModelInfo) string {
	for _, c := range []string{"embeddings", "chatCompletion", "completion", "imageGenerations", "audio"} {
		if v, ok := m.Model.Capabilities[c]; ok && fmt.Sprint(v) == "true" {
			return c
		}
	}
	return ""
}

func openAIModels(list []ModelInfo) []ModelInfo {
	var out []ModelInfo
	for _, m := range list {
		if strings.EqualFold(m.Kind, "OpenAI") && (m.Model.Format == "" || strings.EqualFold(m.Model.Format, "OpenAI")) {
			out = append(out, m)
		}
	}
	return out
}

func findSKU(m ModelInfo, name string) (ModelSKU, bool) {
	for _, s := range m.Model.SKUs {
		if strings.EqualFold(s.Name, name) {
			return s, true
		}
	}
	return ModelSKU{}, false
}

// alternatives lists up to three model versions the region offers with sku that a new
// subscription can deploy, for the same use as like: other versions of the same model first,
// then other models, newest first.
func alternatives(models []ModelInfo, like ModelInfo, model, sku string, now time.Time) string {
	type cand struct {
		name, version, retires string
		same                   bool
	}
	var cs []cand
	want := capability(like)
	for _, m := range models {
		if st, _ := lifecycle(m, now); st != "ga" {
			continue
		}
		s, ok := findSKU(m, sku)
		if !ok || expired(s, now) {
			continue
		}
		same := m.Model.Name == model
		if !same && want != "" && capability(m) != want {
			continue
		}
		_, retires := lifecycle(m, now)
		cs = append(cs, cand{m.Model.Name, m.Model.Version, retires, same})
	}
	sort.SliceStable(cs, func(i, j int) bool {
		if cs[i].same != cs[j].same {
			return cs[i].same
		}
		if cs[i].version != cs[j].version {
			return cs[i].version > cs[j].version
		}
		return cs[i].name < cs[j].name
	})
	var out []string
	for i, c := range cs {
		if i == 3 {
			break
		}
		s := fmt.Sprintf("model %q version %q", c.name, c.version)
		if c.retires != "" {
			s += " (retires " + c.retires + ")"
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return "none is offered there as " + sku + " to new customers; choose another region or sku"
	}
	return "for example " + strings.Join(out, ", or ")
}

func expired(s ModelSKU, now time.Time) bool {
	t, ok := parseTime(s.DeprecationDate)
	return ok && !t.After(now)
}

// CheckModels checks every model deployment against what its region offers today and the
// quota left, crediting capacity that deployments the plan replaces already hold.
func CheckModels(r *Report, p *Plan, models map[string][]ModelInfo, usages map[string][]Usage, credit map[quotaKey]float64, now time.Time) {
	file := filepath.Base(p.ParamFile)
	need := map[quotaKey]float64{}
	users := map[quotaKey][]string{}
	var keys []quotaKey
	for _, d := range p.Deployments {
		region, ok := models[d.Location]
		if !ok {
			continue // could not be read; said already
		}
		offered := openAIModels(region)
		var match *ModelInfo
		var sameName []ModelInfo
		for i, m := range offered {
			if m.Model.Name == d.Model {
				sameName = append(sameName, m)
				if m.Model.Version == d.Version {
					match = &offered[i]
				}
			}
		}
		if match == nil {
			like := ModelInfo{}
			if len(sameName) > 0 {
				like = sameName[0]
			}
			r.problem("%s in %s: %s does not offer model %q version %q. Set its model and version to one it offers as %s: %s.",
				d.Where(), file, d.Location, d.Model, d.Version, d.SKU, alternatives(offered, like, d.Model, d.SKU, now))
			continue
		}
		state, retires := lifecycle(*match, now)
		switch state {
		case "retired":
			r.problem("%s in %s: %s %s is retired in %s (inference ended %s). Set its model and version to a current one: %s.",
				d.Where(), file, d.Model, d.Version, d.Location, retires, alternatives(offered, *match, d.Model, d.SKU, now))
			continue
		case "closed":
			r.warn("%s: %s %s takes no new customers (retires %s): a subscription that never deployed it cannot create it. To move on, set its model and version in %s: %s.",
				d.Where(), d.Model, d.Version, retires, file, alternatives(offered, *match, d.Model, d.SKU, now))
		}
		sku, ok := findSKU(*match, d.SKU)
		if !ok {
			var names []string
			for _, s := range match.Model.SKUs {
				if !expired(s, now) {
					names = append(names, s.Name)
				}
			}
			fix := "choose another model or region"
			if len(names) > 0 {
				fix = fmt.Sprintf("set its sku to %s", strings.Join(names, " or "))
			}
			r.problem("%s in %s: %s %s is not offered as %s in %s (it is offered there as: %s); %s.",
				d.Where(), file, d.Model, d.Version, d.SKU, d.Location, orNone(names), fix)
			continue
		}
		if expired(sku, now) {
			r.problem("%s in %s: %s %s is no longer offered as %s in %s (since %s); choose another sku, model or region.",
				d.Where(), file, d.Model, d.Version, d.SKU, d.Location, day(sku.DeprecationDate))
			continue
		}
		if sku.Capacity.Maximum > 0 && float64(d.Capacity) > sku.Capacity.Maximum {
			r.problem("%s in %s: capacity %d is above the most %s allows for %s (%v); lower its capacity.",
				d.Where(), file, d.Capacity, d.SKU, d.Model, sku.Capacity.Maximum)
			continue
		}
		life := "GA"
		if state == "preview" {
			life = "preview"
		}
		if retires != "" {
			life += ", retires " + retires
		}
		r.ok("%s/%s: %s %s as %s in %s (%s)", d.Account, d.Name, d.Model, d.Version, d.SKU, d.Location, life)
		usage := sku.UsageName
		if usage == "" {
			usage = "OpenAI." + sku.Name + "." + d.Model
		}
		k := quotaKey{d.Location, usage}
		if _, seen := need[k]; !seen {
			keys = append(keys, k)
		}
		need[k] += float64(d.Capacity)
		users[k] = append(users[k], fmt.Sprintf("openAiDeployments[%d] %d", d.Index, d.Capacity))
	}
	for _, k := range keys {
		var u *Usage
		for i := range usages[k.region] {
			if strings.EqualFold(usages[k.region][i].Name.Value, k.usage) {
				u = &usages[k.region][i]
			}
		}
		if u == nil {
			r.problem("%s: the subscription has no Azure OpenAI quota %s (needed by %s); request it at %s or choose another sku or region.",
				k.region, k.usage, strings.Join(users[k], ", "), quotaURL)
			continue
		}
		free := u.Limit - u.CurrentValue + credit[k]
		if need[k] > free {
			r.problem("%s: quota %s: the deployments need %v (thousand tokens per minute: %s) but %v of %v are free. Lower their capacity in %s to %v in all, or request more quota at %s.",
				k.region, k.usage, need[k], strings.Join(users[k], ", "), free, u.Limit, file, free, quotaURL)
			continue
		}
		r.ok("quota %s in %s: %v needed, %v of %v free", k.usage, k.region, need[k], free, u.Limit)
	}
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "nothing today"
	}
	return strings.Join(names, ", ")
}

// CheckFlex checks that every region of the plan offers Flex Consumption.
func CheckFlex(r *Report, p *Plan, flexRegions []string) {
	have := map[string]bool{}
	for _, f := range flexRegions {
		have[normalizeRegion(f)] = true
	}
	var missing []string
	for _, region := range p.Regions {
		if !have[region] {
			missing = append(missing, region)
		}
	}
	if len(missing) > 0 {
		r.problem("regions in %s: Flex Consumption is not offered in %s; in regions, use only regions that `az functionapp list-flexconsumption-locations` lists.",
			filepath.Base(p.ParamFile), strings.Join(missing, ", "))
		return
	}
	r.ok("Flex Consumption in %s", strings.Join(p.Regions, ", "))
}

// Permission is one entry of the Authorization permissions API: what the caller's role
// assignments at a scope allow.
type Permission struct {
	Actions    []string `json:"actions"`
	NotActions []string `json:"notActions"`
}

// allowed says whether op is granted: some entry's actions match it and none of that entry's
// notActions do (wildcards as Azure RBAC has them).
func allowed(perms []Permission, op string) bool {
	for _, p := range perms {
		if matchAny(p.Actions, op) && !matchAny(p.NotActions, op) {
			return true
		}
	}
	return false
}

func matchAny(patterns []string, op string) bool {
	for _, p := range patterns {
		re := "(?i)^" + strings.ReplaceAll(regexp.QuoteMeta(p), `\*`, ".*") + "$"
		if ok, _ := regexp.MatchString(re, op); ok {
			return true
		}
	}
	return false
}

const (
	opRoleAssignmentsWrite = "Microsoft.Authorization/roleAssignments/write"
	opDeploymentsWrite     = "Microsoft.Resources/deployments/write"
	roleAdmins             = "Owner, User Access Administrator or Role Based Access Control Administrator"
)

// CheckPermissions checks the signed-in identity's rights on an existing resource group.
func CheckPermissions(r *Report, group string, perms []Permission) {
	okAssign := allowed(perms, opRoleAssignmentsWrite)
	okDeploy := allowed(perms, opDeploymentsWrite)
	if !okAssign {
		r.problem("permissions: you cannot create role assignments in resource group %s, and the template gives each app's identity its roles. Ask for %s on the group or the subscription (Role Based Access Control Administrator may be limited by a condition to the roles the template assigns).", group, roleAdmins)
	}
	if !okDeploy {
		r.problem("permissions: you cannot deploy templates into resource group %s; ask for Contributor (or Owner) on it.", group)
	}
	if okAssign && okDeploy {
		r.ok("you can deploy and create role assignments in %s", group)
	}
}

// RoleAssignment is one entry of `az role assignment list`.
type RoleAssignment struct {
	RoleDefinitionName string `json:"roleDefinitionName"`
	Scope              string `json:"scope"`
}

// CheckRoles checks, for a resource group that does not exist yet, that the signed-in identity
// holds roles at the subscription (or above) that let it create the group's resources and
// role assignments. Custom roles are not recognised by name: a warning says so.
func CheckRoles(r *Report, subscription string, roles []RoleAssignment) {
	has := map[string]bool{}
	for _, ra := range roles {
		has[strings.ToLower(ra.RoleDefinitionName)] = true
	}
	assign := has["owner"] || has["user access administrator"] || has["role based access control administrator"]
	deploy := has["owner"] || has["contributor"]
	if assign && deploy {
		r.ok("your roles on subscription %s let you create resources and role assignments", subscription)
		return
	}
	if len(roles) > 0 && (!assign || !deploy) {
		names := make([]string, 0, len(roles))
		for _, ra := range roles {
			names = append(names, ra.RoleDefinitionName)
		}
		sort.Strings(names)
		r.warn("your roles (%s) were read by name; a custom role with the same rights is not recognised here", strings.Join(names, ", "))
	}
	if !assign {
		r.problem("permissions: you hold none of %s on subscription %s, and the template gives each app's identity its roles. Ask for one of them (on the subscription, or on the resource group once it exists).", roleAdmins, subscription)
	}
	if !deploy {
		r.problem("permissions: you hold neither Owner nor Contributor on subscription %s, so the resources cannot be created; ask for Contributor.", subscription)
	}
}

// DeletedVault is one entry of `az keyvault list-deleted`.
type DeletedVault struct {
	Name       string `json:"name"`
	Properties struct {
		VaultID                string `json:"vaultId"`
		Location               string `json:"location"`
		ScheduledPurgeDate     string `json:"scheduledPurgeDate"`
		PurgeProtectionEnabled bool   `json:"purgeProtectionEnabled"`
	} `json:"properties"`
}

// DeletedAccount is one entry of `az cognitiveservices account list-deleted`.
type DeletedAccount struct {
	Name       string `json:"name"`
	Location   string `json:"location"`
	ID         string `json:"id"`
	Properties struct {
		ScheduledPurgeDate string `json:"scheduledPurgeDate"`
	} `json:"properties"`
}

var suffixChars = regexp.MustCompile(`^[a-z0-9]+$`)

// inGroup says whether a resource id names the resource group (case does not matter).
func inGroup(id, group string) bool {
	return strings.Contains(strings.ToLower(id), "/resourcegroups/"+strings.ToLower(group)+"/")
}

// CheckSoftDeleted finds soft-deleted Key Vaults and Azure OpenAI accounts left by an earlier
// deployment into a resource group of the same name: the template would give the new ones the
// same names (they come from the group's id), which Azure refuses while the old ones are kept.
// resolve is "", "purge" or "recover", the user's choice of what to do about them.
func CheckSoftDeleted(r *Report, p *Plan, group string, vaults []DeletedVault, accounts []DeletedAccount, resolve string) {
	type hit struct {
		what, name, location, purgeDate string
		protected, vault                bool
	}
	var hits []hit
	vp := p.VaultNamePrefix()
	for _, v := range vaults {
		rest, ok := strings.CutPrefix(v.Name, vp)
		if !ok || !suffixChars.MatchString(rest) || !inGroup(v.Properties.VaultID, group) {
			continue
		}
		hits = append(hits, hit{"Key Vault", v.Name, v.Properties.Location, day(v.Properties.ScheduledPurgeDate), v.Properties.PurgeProtectionEnabled, true})
	}
	for _, a := range accounts {
		for _, want := range p.Accounts {
			rest, ok := strings.CutPrefix(a.Name, p.AccountNamePrefix(want.Name))
			if ok && len(rest) == 13 && suffixChars.MatchString(rest) && inGroup(a.ID, group) {
				hits = append(hits, hit{"Azure OpenAI account", a.Name, normalizeRegion(a.Location), day(a.Properties.ScheduledPurgeDate), false, false})
			}
		}
	}
	if len(hits) == 0 {
		r.ok("no soft-deleted Key Vault or Azure OpenAI account holds this deployment's names")
		return
	}
	var names []string
	for _, h := range hits {
		names = append(names, fmt.Sprintf("%s %s (kept until %s)", h.what, h.name, h.purgeDate))
	}
	if p.Salt != "" {
		r.ok("soft-deleted resources from an earlier deployment into %s (%s) keep their names; nameSalt %q gives this deployment new ones", group, strings.Join(names, ", "), p.Salt)
		return
	}
	switch resolve {
	case "recover":
		for _, h := range hits {
			verb := "recover-account"
			if h.vault {
				verb = "recover-vault"
			}
			r.Actions = append(r.Actions, Action{verb, h.name, h.location, group})
		}
		r.ok("will recover %s into %s", strings.Join(names, ", "), group)
		return
	case "purge":
		var blocked []string
		for _, h := range hits {
			if h.protected {
				blocked = append(blocked, h.name)
				continue
			}
			verb := "purge-account"
			if h.vault {
				verb = "purge-vault"
			}
			r.Actions = append(r.Actions, Action{verb, h.name, h.location, group})
		}
		if len(blocked) == 0 {
			r.ok("will purge %s for good", strings.Join(names, ", "))
			return
		}
		r.problem("soft-deleted resources: %s has purge protection and cannot be purged before its date. Run again with --recover-deleted (brings it back with its secrets), or set a nameSalt (see below).", strings.Join(blocked, ", "))
		return
	}
	r.problem("soft-deleted resources from an earlier deployment into a resource group named %s hold the names this deployment needs: %s. Choose one: run again with --recover-deleted (brings them back, with their keys, secrets and model deployments); or with --purge-deleted (deletes them for good; a vault with purge protection cannot be purged); or add \"nameSalt\": { \"value\": \"2\" } (any short text, kept for later runs) to the parameters in %s so that every resource gets a new name.",
		group, strings.Join(names, "; "), filepath.Base(p.ParamFile))
}
