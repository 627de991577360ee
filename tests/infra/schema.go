package infra

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/dlclark/regexp2"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// SchemaBase is where the published ARM schemas live; the Schemas folder mirrors it.
const SchemaBase = "https://schema.management.azure.com/schemas/"

// Schemas validates templates, parameter files and resources against the ARM JSON schemas
// (draft-04) in a local folder, with no network.
type Schemas struct {
	dir      string
	compiler *jsonschema.Compiler
}

// localLoader serves schema.management.azure.com URLs from the folder and refuses the rest, so a
// schema that is not in the folder is an error, never a download.
type localLoader struct{ dir string }

func (l localLoader) Load(url string) (any, error) {
	rel, ok := strings.CutPrefix(url, SchemaBase)
	if !ok {
		return nil, fmt.Errorf("%s: only %s URLs are served offline", url, SchemaBase)
	}
	doc, err := readJSON(filepath.Join(l.dir, "schemas", filepath.FromSlash(rel)))
	if err != nil {
		return nil, err
	}
	for _, f := range SchemaDefects {
		if f.File == rel {
			if err := f.Fix(doc); err != nil {
				return nil, fmt.Errorf("%s: %s: %w", rel, f.Why, err)
			}
		}
	}
	return doc, nil
}

// SchemaDefect is a published schema that rejects every valid document of some shape; it is
// fixed in memory, and a test proves each fix is still needed.
type SchemaDefect struct {
	File string // under schemas/
	Why  string
	Fix  func(doc any) error
}

// SchemaDefects are the published schemas' known defects.
var SchemaDefects = []SchemaDefect{{
	File: "2025-06-01/Microsoft.Cdn.json",
	Why: "SecurityPolicyPropertiesParameters forbids every property but 'type' in its first allOf " +
		"branch (additionalProperties false), so no WAF security policy (which needs wafPolicy and " +
		"associations) can pass; the branch's additionalProperties is dropped",
	Fix: func(doc any) error {
		defs, _ := doc.(map[string]any)["definitions"].(map[string]any)
		params, _ := defs["SecurityPolicyPropertiesParameters"].(map[string]any)
		allOf, _ := params["allOf"].([]any)
		if len(allOf) == 0 {
			return fmt.Errorf("SecurityPolicyPropertiesParameters.allOf not found")
		}
		first, _ := allOf[0].(map[string]any)
		if first["additionalProperties"] != false {
			return fmt.Errorf("the defect is gone: remove this fix")
		}
		delete(first, "additionalProperties")
		return nil
	},
}}

// ecmaRegexp compiles patterns as JSON Schema defines them (ECMA-262), which the ARM schemas
// rely on (lookaheads in storage names); Go's regexp has no lookaround.
func ecmaRegexp(pattern string) (jsonschema.Regexp, error) {
	re, err := regexp2.Compile(pattern, regexp2.ECMAScript)
	if err != nil {
		return nil, err
	}
	return ecma{re}, nil
}

type ecma struct{ re *regexp2.Regexp }

func (r ecma) MatchString(s string) bool {
	ok, err := r.re.MatchString(s)
	return err == nil && ok
}

func (r ecma) String() string { return r.re.String() }

func readJSON(path string) (any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(b))
}

// NewSchemas loads the schemas in dir. The deployment template schema's list of every resource
// type of every API version points at files that are not kept here, so its "resource" definition
// is narrowed to the common resource fields; each resource is validated against its own type's
// schema by Resource.
func NewSchemas(dir string) (*Schemas, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft4)
	c.UseLoader(localLoader{dir})
	c.UseRegexpEngine(ecmaRegexp)
	tmplURL := SchemaBase + "2019-04-01/deploymentTemplate.json"
	doc, err := localLoader{dir}.Load(tmplURL)
	if err != nil {
		return nil, err
	}
	defs := doc.(map[string]any)["definitions"].(map[string]any)
	defs["resource"] = map[string]any{"$ref": "#/definitions/resourceBase"}
	if err := c.AddResource(tmplURL, doc); err != nil {
		return nil, err
	}
	return &Schemas{dir: dir, compiler: c}, nil
}

// Template validates a whole template document.
func (s *Schemas) Template(doc any) error {
	return s.validate(SchemaBase+"2019-04-01/deploymentTemplate.json#", doc)
}

// Parameters validates a parameter file.
func (s *Schemas) Parameters(doc any) error {
	return s.validate(SchemaBase+"2019-04-01/deploymentParameters.json#", doc)
}

// Resource validates one resource of the template, as written (expressions included), against
// the schema of its type and API version. A type or version with no schema is an error.
func (s *Schemas) Resource(res map[string]any) error {
	typ, _ := res["type"].(string)
	version, _ := res["apiVersion"].(string)
	def, err := s.find(typ, version)
	if err != nil {
		return err
	}
	return s.validate(def, res)
}

// find returns the schema URL of the resource definition for typ at version.
func (s *Schemas) find(typ, version string) (string, error) {
	files, _ := filepath.Glob(filepath.Join(s.dir, "schemas", version, "*.json"))
	for _, f := range files {
		var provider struct {
			ResourceDefinitions map[string]struct {
				Properties struct {
					Type struct {
						Enum []string `json:"enum"`
					} `json:"type"`
				} `json:"properties"`
			} `json:"resourceDefinitions"`
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		if err := json.Unmarshal(b, &provider); err != nil {
			return "", fmt.Errorf("%s: %w", f, err)
		}
		for name, d := range provider.ResourceDefinitions {
			for _, t := range d.Properties.Type.Enum {
				if strings.EqualFold(t, typ) {
					return SchemaBase + version + "/" + filepath.Base(f) + "#/resourceDefinitions/" + name, nil
				}
			}
		}
	}
	return "", fmt.Errorf("no schema for %s at API version %s in %s", typ, version, s.dir)
}

func (s *Schemas) validate(url string, doc any) error {
	sch, err := s.compiler.Compile(url)
	if err != nil {
		return fmt.Errorf("compile %s: %w", url, err)
	}
	// Round-trip through the library's decoder so numbers are json.Number as it expects.
	b, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return err
	}
	return sch.Validate(inst)
}

// UnknownProperties lists the property names inside a resource's properties, sku and identity
// that its schema does not declare: the ARM schemas allow extra properties, and Resource
// Manager often ignores them, so a misspelt property would otherwise pass silently. Objects the
// schema leaves open (additionalProperties, or no declared properties) are not checked.
func (s *Schemas) UnknownProperties(res map[string]any) ([]string, error) {
	typ, _ := res["type"].(string)
	version, _ := res["apiVersion"].(string)
	url, err := s.find(typ, version)
	if err != nil {
		return nil, err
	}
	file, def, _ := strings.Cut(strings.TrimPrefix(url, SchemaBase), "#/resourceDefinitions/")
	doc, err := localLoader{s.dir}.Load(SchemaBase + file)
	if err != nil {
		return nil, err
	}
	w := walker{defs: doc.(map[string]any)["definitions"].(map[string]any)}
	top := doc.(map[string]any)["resourceDefinitions"].(map[string]any)[def].(map[string]any)
	for _, key := range []string{"properties", "sku", "identity"} {
		if v, ok := res[key]; ok {
			w.walk(w.childSchemas([]any{top}, key), v, key)
		}
	}
	return w.unknown, nil
}

type walker struct {
	defs    map[string]any
	unknown []string
}

// resolve follows local $refs and flattens allOf/oneOf/anyOf into the object schemas a value
// may match; the common "expression" alternative and other files' schemas are dropped.
func (w *walker) resolve(schema any, depth int) []map[string]any {
	m, ok := schema.(map[string]any)
	if !ok || depth > 20 {
		return nil
	}
	if ref, ok := m["$ref"].(string); ok {
		name, local := strings.CutPrefix(ref, "#/definitions/")
		if !local {
			return nil
		}
		return w.resolve(w.defs[name], depth+1)
	}
	out := []map[string]any{m}
	for _, key := range []string{"allOf", "oneOf", "anyOf"} {
		if alts, ok := m[key].([]any); ok {
			for _, a := range alts {
				out = append(out, w.resolve(a, depth+1)...)
			}
		}
	}
	return out
}

func (w *walker) childSchemas(parents []any, key string) []any {
	var out []any
	for _, p := range parents {
		for _, s := range w.resolve(p, 0) {
			if props, ok := s["properties"].(map[string]any); ok && props[key] != nil {
				out = append(out, props[key])
			}
		}
	}
	return out
}

func (w *walker) walk(schemas []any, value any, path string) {
	if len(schemas) == 0 {
		return
	}
	switch v := value.(type) {
	case string:
		return // a literal or an expression; the validator checked its type
	case []any:
		var items []any
		for _, sc := range schemas {
			for _, s := range w.resolve(sc, 0) {
				if it, ok := s["items"]; ok {
					items = append(items, it)
				}
			}
		}
		for i, item := range v {
			w.walk(items, item, fmt.Sprintf("%s[%d]", path, i))
		}
	case map[string]any:
		declared := map[string]bool{}
		for _, sc := range schemas {
			for _, s := range w.resolve(sc, 0) {
				if ap, ok := s["additionalProperties"]; ok && ap != false {
					return // an open map (tags, headers, ...)
				}
				if props, ok := s["properties"].(map[string]any); ok {
					for k := range props {
						declared[k] = true
					}
				}
			}
		}
		if len(declared) == 0 {
			return
		}
		for k, child := range v {
			if !declared[k] {
				w.unknown = append(w.unknown, path+"."+k)
				continue
			}
			w.walk(w.childSchemas(schemas, k), child, path+"."+k)
		}
	}
}
