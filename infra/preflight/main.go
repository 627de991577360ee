// Command preflight checks, before infra/deploy.sh creates anything, that a deployment of
// infra/main.json with a parameters file can succeed, and lists every missing prerequisite at
// once, each with what to change:
//
//   - the signed-in identity may deploy and create role assignments (Owner, User Access
//     Administrator or Role Based Access Control Administrator) in the resource group;
//   - every region in regions offers Flex Consumption;
//   - every model deployment's model, version and SKU is offered in its account's region today
//     and is not retired, and the subscription's Azure OpenAI quota there covers the capacities
//     asked for;
//   - no soft-deleted Key Vault or Azure OpenAI account from an earlier deployment into a
//     resource group of the same name holds the names the template would use.
//
// It only reads (az show, list and GET calls, each bounded by -timeout). With -resolve purge or
// recover it writes to -actions the purges or recoveries deploy.sh then runs.
//
//	go run ./infra/preflight -template infra/main.json -parameters infra/main.parameters.json -group rg [-principal OBJECT_ID] [-resolve purge|recover] [-actions FILE]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

func main() {
	template := flag.String("template", "infra/main.json", "the ARM template")
	params := flag.String("parameters", "infra/main.parameters.json", "the parameters file")
	group := flag.String("group", "", "the resource group (it need not exist yet)")
	principal := flag.String("principal", "", "object id of the signed-in identity (for the role check when the group does not exist)")
	resolve := flag.String("resolve", "", "what to do about soft-deleted resources that hold the names: purge or recover")
	actions := flag.String("actions", "", "file to write the purge or recover steps to")
	timeout := flag.Duration("timeout", envSeconds("DEPLOY_AZ_TIMEOUT", 120*time.Second), "bound on each az call")
	flag.Parse()
	if *group == "" || (*resolve != "" && *resolve != "purge" && *resolve != "recover") {
		fmt.Fprintln(os.Stderr, "preflight: -group is required; -resolve is purge or recover")
		os.Exit(2)
	}
	plan, err := LoadPlan(*template, *params)
	if err != nil {
		fmt.Fprintln(os.Stderr, "preflight:", err)
		os.Exit(1)
	}
	r := Run(context.Background(), CLI{Path: "az", Timeout: *timeout}, plan, *group, *principal, *resolve, time.Now().UTC())
	Print(os.Stdout, r)
	if *actions != "" {
		var b strings.Builder
		for _, a := range r.Actions {
			fmt.Fprintf(&b, "%s\t%s\t%s\t%s\n", a.Verb, a.Name, a.Location, a.Group)
		}
		if err := os.WriteFile(*actions, []byte(b.String()), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, "preflight:", err)
			os.Exit(1)
		}
	}
	if len(r.Problems) > 0 {
		os.Exit(1)
	}
}

func envSeconds(name string, def time.Duration) time.Duration {
	var n int
	if _, err := fmt.Sscan(os.Getenv(name), &n); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return def
}

// Print writes the report: what holds, warnings, then every missing prerequisite, numbered.
func Print(w io.Writer, r *Report) {
	for _, s := range r.OK {
		fmt.Fprintf(w, "  ok    %s\n", s)
	}
	for _, s := range r.Warnings {
		fmt.Fprintf(w, "  warn  %s\n", s)
	}
	if len(r.Problems) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%d missing prerequisite(s); nothing was created:\n", len(r.Problems))
	for i, s := range r.Problems {
		fmt.Fprintf(w, "  %d. %s\n", i+1, s)
	}
}

// Run makes every check and returns the report; a check it could not make is a problem too.
func Run(ctx context.Context, az Azure, p *Plan, group, principal, resolve string, now time.Time) *Report {
	r := &Report{}
	couldNot := func(what string, err error) {
		r.problem("could not check %s: %v (if Azure is right and this check is wrong, run deploy.sh with --skip-preflight)", what, err)
	}
	var account struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	if err := az.JSON(ctx, &account, "account", "show"); err != nil {
		couldNot("the signed-in account", err)
		return r
	}
	exists := true
	var rg struct{}
	if err := az.JSON(ctx, &rg, "group", "show", "-n", group); err != nil {
		if !notFound(err) {
			couldNot("resource group "+group, err)
		}
		exists = false
	}

	if exists {
		var perms struct {
			Value []Permission `json:"value"`
		}
		url := fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Authorization/permissions?api-version=2022-04-01", account.ID, group)
		if err := az.JSON(ctx, &perms, "rest", "--method", "get", "--url", url); err != nil {
			couldNot("your permissions on "+group, err)
		} else {
			CheckPermissions(r, group, perms.Value)
		}
	} else if principal != "" {
		var roles []RoleAssignment
		if err := az.JSON(ctx, &roles, "role", "assignment", "list", "--assignee", principal, "--include-inherited", "--include-groups", "--scope", "/subscriptions/"+account.ID); err != nil {
			couldNot("your roles on the subscription", err)
		} else {
			CheckRoles(r, account.Name, roles)
		}
	} else {
		r.warn("your object id is unknown, so your right to create role assignments was not checked (it needs %s)", roleAdmins)
	}

	var flex []struct {
		Name string `json:"name"`
	}
	if err := az.JSON(ctx, &flex, "functionapp", "list-flexconsumption-locations"); err != nil {
		couldNot("where Flex Consumption is offered", err)
	} else {
		names := make([]string, 0, len(flex))
		for _, f := range flex {
			names = append(names, f.Name)
		}
		CheckFlex(r, p, names)
	}

	models := map[string][]ModelInfo{}
	usages := map[string][]Usage{}
	for _, loc := range p.Locations() {
		var ms []ModelInfo
		if err := az.JSON(ctx, &ms, "cognitiveservices", "model", "list", "-l", loc); err != nil {
			couldNot("the Azure OpenAI models offered in "+loc, err)
			continue
		}
		var us []Usage
		if err := az.JSON(ctx, &us, "cognitiveservices", "usage", "list", "-l", loc); err != nil {
			couldNot("the Azure OpenAI quota in "+loc, err)
			continue
		}
		models[loc], usages[loc] = ms, us
	}
	credit := map[quotaKey]float64{}
	if exists {
		if err := existingCapacity(ctx, az, p, group, models, credit); err != nil {
			couldNot("the model deployments already in "+group, err)
		}
	}
	CheckModels(r, p, models, usages, credit, now)

	var vaults []DeletedVault
	var deleted []DeletedAccount
	if err := az.JSON(ctx, &vaults, "keyvault", "list-deleted", "--resource-type", "vault"); err != nil {
		couldNot("soft-deleted Key Vaults", err)
	} else if err := az.JSON(ctx, &deleted, "cognitiveservices", "account", "list-deleted"); err != nil {
		couldNot("soft-deleted Azure OpenAI accounts", err)
	} else {
		CheckSoftDeleted(r, p, group, vaults, deleted, resolve)
	}
	return r
}

// existingCapacity credits the quota that model deployments the plan will replace already
// hold: a redeploy updates them in place, so their capacity is not needed twice.
func existingCapacity(ctx context.Context, az Azure, p *Plan, group string, models map[string][]ModelInfo, credit map[quotaKey]float64) error {
	var accounts []struct {
		Name     string `json:"name"`
		Location string `json:"location"`
	}
	if err := az.JSON(ctx, &accounts, "cognitiveservices", "account", "list", "-g", group); err != nil {
		return err
	}
	for _, a := range accounts {
		var key string
		for _, want := range p.Accounts {
			if rest, ok := strings.CutPrefix(a.Name, p.AccountNamePrefix(want.Name)); ok && len(rest) == 13 && suffixChars.MatchString(rest) {
				key = want.Name
			}
		}
		if key == "" {
			continue
		}
		var deps []struct {
			Name string `json:"name"`
			SKU  struct {
				Name     string  `json:"name"`
				Capacity float64 `json:"capacity"`
			} `json:"sku"`
			Properties struct {
				Model struct {
					Name    string `json:"name"`
					Version string `json:"version"`
				} `json:"model"`
			} `json:"properties"`
		}
		if err := az.JSON(ctx, &deps, "cognitiveservices", "account", "deployment", "list", "-g", group, "-n", a.Name); err != nil {
			return err
		}
		loc := normalizeRegion(a.Location)
		for _, d := range deps {
			replaced := false
			for _, planned := range p.Deployments {
				replaced = replaced || planned.Account == key && planned.Name == d.Name
			}
			if !replaced {
				continue
			}
			usage := "OpenAI." + d.SKU.Name + "." + d.Properties.Model.Name
			for _, m := range openAIModels(models[loc]) {
				if m.Model.Name == d.Properties.Model.Name && m.Model.Version == d.Properties.Model.Version {
					if s, ok := findSKU(m, d.SKU.Name); ok && s.UsageName != "" {
						usage = s.UsageName
					}
				}
			}
			credit[quotaKey{loc, usage}] += d.SKU.Capacity
		}
	}
	return nil
}
