package main

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// A gateway setting the benchmark sets: a path in the routing document ("throttle.maxRetryAfter";
// "{key}" stands for the logical deployment, "[]" for each of its targets) or an app setting
// ("env:GATEWAY_STATE_REFRESH"). A duration given in real time is divided by the time scale.
type setting struct {
	path   string
	real   time.Duration // a duration in real time, scaled; or
	raw    any           // a value set as it is
	why    string
	status string // after probing: "" (usable) or why not
}

func (s setting) value(scale float64) any {
	if s.raw != nil {
		return s.raw
	}
	return scaled(s.real, scale).String()
}

func scaled(d time.Duration, scale float64) time.Duration {
	return time.Duration(float64(d) / scale).Round(time.Microsecond)
}

// timeSettings are the gateway's settings that carry a time the scaling touches, with their
// real-time defaults (handler/README.md, Configuration reference). The gateway's timeouts are
// left alone: they bound answers that the simulated regions give well within them, at any scale.
var timeSettings = []setting{
	{path: "env:GATEWAY_STATE_REFRESH", real: time.Second, why: "how often each instance reads the shared table"},
	{path: "throttle.defaultRetryAfter", real: 10 * time.Second, why: "wait for a 429 without a usable one"},
	{path: "throttle.maxRetryAfter", real: 5 * time.Minute, why: "cap on a 429's wait"},
	{path: "throttle.tokenWindow", real: time.Minute, why: "the window a target's token limit frees over"},
	{path: "throttle.requestWindow", real: 10 * time.Second, why: "the window of a target's remaining requests"},
	{path: "circuit.cooldown", real: 10 * time.Second, why: "open circuit's cool-down (no failures here)"},
	{path: "circuit.misconfigured", real: 30 * time.Second, why: "a 401/403/404 target's time out (none here)"},
}

// unscaledDurations are duration settings that do not act in this experiment: timeouts the
// answers stay well within, secrets, CORS, stored-resource owners, apps' budgets (none here).
var unscaledDurations = regexp.MustCompile(`^(timeouts\.|secrets\.refresh$|cors\.maxAge$|state\.ownerTtl$|budgets\.)`)

// parseSet reads -set path=value: a duration is real time (scaled), anything else JSON or a string.
func parseSet(s string) (setting, error) {
	path, v, ok := strings.Cut(s, "=")
	if !ok || path == "" {
		return setting{}, fmt.Errorf("-set %q: want path=value", s)
	}
	if d, err := time.ParseDuration(v); err == nil {
		return setting{path: path, real: d, why: "-set"}, nil
	}
	var raw any
	if err := json.Unmarshal([]byte(v), &raw); err != nil {
		raw = v
	}
	return setting{path: path, raw: raw, why: "-set"}, nil
}

// routingDoc is the routing document for the three regions as one logical deployment.
func routingDoc(regions []*region) map[string]any {
	accounts := map[string]any{}
	var targets []any
	for i, r := range regions {
		accounts[r.spec.name] = map[string]any{"endpoint": r.url, "region": r.spec.name, "auth": map[string]any{"keyEnv": keyEnv(r)}}
		targets = append(targets, map[string]any{"account": r.spec.name, "deployment": deploymentName, "priority": i + 1})
	}
	return map[string]any{
		"accounts":    accounts,
		"deployments": map[string]any{logicalName: targets},
		"clients":     map[string]any{"anonymous": true},
	}
}

func keyEnv(r *region) string { return "KEY_" + strings.ToUpper(r.spec.name) }

// gatewayEnv is the app settings of a gateway for these regions with these settings.
func gatewayEnv(regions []*region, sets []setting, scale float64) (map[string]string, error) {
	doc := routingDoc(regions)
	env := map[string]string{}
	for _, r := range regions {
		env[keyEnv(r)] = r.key
	}
	for _, s := range sets {
		if name, ok := strings.CutPrefix(s.path, "env:"); ok {
			env[name] = fmt.Sprint(s.value(scale))
			continue
		}
		if err := setPath(doc, strings.Split(s.path, "."), s.value(scale)); err != nil {
			return nil, fmt.Errorf("%s: %w", s.path, err)
		}
	}
	b, _ := json.Marshal(doc)
	env["GATEWAY_CONFIG"] = string(b)
	return env, nil
}

// setPath sets a value in a JSON-like document; "{key}" is the logical deployment, a segment
// ending in "[]" sets the rest on each element of that list.
func setPath(node any, path []string, v any) error {
	m, ok := node.(map[string]any)
	if !ok {
		return fmt.Errorf("not an object at %q", strings.Join(path, "."))
	}
	seg := strings.ReplaceAll(path[0], "{key}", logicalName)
	list := strings.HasSuffix(seg, "[]")
	seg = strings.TrimSuffix(seg, "[]")
	if len(path) == 1 && !list {
		m[seg] = v
		return nil
	}
	if list {
		l, ok := m[seg].([]any)
		if !ok {
			return fmt.Errorf("%q is not a list", seg)
		}
		if len(path) == 1 {
			return fmt.Errorf("nothing to set in each element of %q", seg)
		}
		for _, e := range l {
			if err := setPath(e, path[1:], v); err != nil {
				return err
			}
		}
		return nil
	}
	child, ok := m[seg]
	if !ok {
		child = map[string]any{}
		m[seg] = child
	}
	return setPath(child, path[1:], v)
}

// configField is a setting found in the gateway's routing document types.
type configField struct {
	path     string // as setPath takes it
	duration bool
}

// discoverSettings reads handler/internal/config's types (source, not a package import: the
// benchmark imports nothing of the handler) and lists every field reachable from Routing by its
// JSON path, so that settings added to the gateway (an admission wait, a budget window) are seen.
func discoverSettings(repo string) ([]configField, error) {
	dir := filepath.Join(repo, "handler", "internal", "config")
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	structs := map[string]*ast.StructType{}
	named := map[string]ast.Expr{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		af, err := parser.ParseFile(fset, f, src, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		for _, d := range af.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.TYPE {
				continue
			}
			for _, sp := range gd.Specs {
				ts := sp.(*ast.TypeSpec)
				if st, ok := ts.Type.(*ast.StructType); ok {
					structs[ts.Name.Name] = st
				} else {
					named[ts.Name.Name] = ts.Type
				}
			}
		}
	}
	if structs["Routing"] == nil {
		return nil, fmt.Errorf("no Routing type in %s", dir)
	}
	var out []configField
	var walk func(prefix string, t ast.Expr, depth int)
	walk = func(prefix string, t ast.Expr, depth int) {
		if depth > 12 {
			return
		}
		switch x := t.(type) {
		case *ast.StarExpr:
			walk(prefix, x.X, depth+1)
		case *ast.MapType:
			walk(prefix+".{key}", x.Value, depth+1)
		case *ast.ArrayType:
			walk(prefix+"[]", x.Elt, depth+1)
		case *ast.SelectorExpr:
			out = append(out, configField{path: prefix, duration: x.Sel.Name == "Duration"})
		case *ast.Ident:
			if x.Name == "Duration" {
				out = append(out, configField{path: prefix, duration: true})
				return
			}
			if st := structs[x.Name]; st != nil {
				for _, f := range st.Fields.List {
					name := ""
					if f.Tag != nil {
						tag, _ := strconv.Unquote(f.Tag.Value)
						name, _, _ = strings.Cut(reflect.StructTag(tag).Get("json"), ",")
					}
					if name == "-" {
						continue
					}
					if len(f.Names) == 0 { // embedded
						walk(prefix, f.Type, depth+1)
						continue
					}
					for _, n := range f.Names {
						if !n.IsExported() {
							continue
						}
						fn := name
						if fn == "" {
							fn = n.Name
						}
						p := fn
						if prefix != "" {
							p = prefix + "." + fn
						}
						walk(p, f.Type, depth+1)
					}
				}
				return
			}
			if u, ok := named[x.Name]; ok {
				walk(prefix, u, depth+1)
				return
			}
			out = append(out, configField{path: prefix})
		default:
			out = append(out, configField{path: prefix})
		}
	}
	walk("", &ast.Ident{Name: "Routing"}, 0)
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out, nil
}

// admissionWaitPath picks, among the discovered fields, the per-deployment admission wait: a
// duration whose name says wait (not a retry-after).
func admissionWaitPath(fields []configField) []string {
	var c []string
	for _, f := range fields {
		last := f.path[strings.LastIndex(f.path, ".")+1:]
		if f.duration && strings.Contains(strings.ToLower(last), "wait") && !strings.Contains(strings.ToLower(last), "retry") {
			c = append(c, f.path)
		}
	}
	return c
}

// unknownDurations are duration settings the benchmark neither scales nor knows to be inert.
func unknownDurations(fields []configField, known []setting, waitPath string) []string {
	k := map[string]bool{waitPath: true}
	for _, s := range known {
		k[s.path] = true
	}
	var out []string
	for _, f := range fields {
		if f.duration && !k[f.path] && !unscaledDurations.MatchString(f.path) {
			out = append(out, f.path)
		}
	}
	return out
}

var timeLiteral = regexp.MustCompile(`\btime\.(Nanosecond|Microsecond|Millisecond|Second|Minute|Hour)\b`)

// listConstants prints every line of the routing path's code (handler/internal/state, route and
// proxy, the Realtime relay aside) that writes a time literal: the times a scaled run cannot
// reach unless they are a setting's default. Reading them says which the experiment touches.
func listConstants(repo string, w io.Writer) error {
	for _, pkg := range []string{"state", "route", "proxy"} {
		files, err := filepath.Glob(filepath.Join(repo, "handler", "internal", pkg, "*.go"))
		if err != nil {
			return err
		}
		sort.Strings(files)
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") || strings.Contains(filepath.Base(f), "realtime") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(repo, f)
			for i, line := range strings.Split(string(b), "\n") {
				t := strings.TrimSpace(line)
				if strings.HasPrefix(t, "//") || !timeLiteral.MatchString(t) {
					continue
				}
				fmt.Fprintf(w, "%s:%d: %s\n", rel, i+1, t)
			}
		}
	}
	return nil
}
