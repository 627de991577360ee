// Package infra checks the ARM templates in infra/ offline: against the ARM JSON schemas, and,
// by evaluating them the way Resource Manager would for one set of parameters, against the
// gateway's own code (its settings, health path and routing-document loader).
package infra

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"
)

// The evaluator covers the template-function subset this project's templates use; an unknown
// function is an error, so a template that grows past it fails the tests rather than passing
// unchecked. reference() answers from Stubs: the one thing only a real deployment knows.

// Deployment is a template evaluated for one parameter set.
type Deployment struct {
	Resources []Resource
	Outputs   map[string]any
}

// Resource is one resource after copy loops, conditions and expressions.
type Resource struct {
	Type, APIVersion, Name string
	Body                   map[string]any // every field, evaluated
}

// Props is the resource's evaluated properties.
func (r Resource) Props() map[string]any { m, _ := r.Body["properties"].(map[string]any); return m }

// ID is the resource's id in the test resource group.
func (r Resource) ID() string { return resourceID(r.Type, strings.Split(r.Name, "/")...) }

// Stub answers reference(id).<path> for a resource type.
type Stub func(id string, path []string) (any, error)

const (
	testSubscription = "00000000-0000-0000-0000-0000000000aa"
	testTenant       = "00000000-0000-0000-0000-0000000000bb"
	testGroup        = "rg-gateway-test"
)

func resourceID(typ string, names ...string) string {
	parts := strings.Split(typ, "/")
	var b strings.Builder
	fmt.Fprintf(&b, "/subscriptions/%s/resourceGroups/%s/providers/%s", testSubscription, testGroup, parts[0])
	for i, t := range parts[1:] {
		name := ""
		if i < len(names) {
			name = names[i]
		}
		b.WriteString("/" + t + "/" + name)
	}
	return b.String()
}

type evaluator struct {
	template   map[string]any
	params     map[string]any
	varDefs    map[string]any
	vars       map[string]any
	evaluating map[string]bool
	stubs      map[string]Stub
}

type scope struct {
	copyIndex map[string]int // "" for the resource's own loop
	lambda    map[string]any
}

// Evaluate deploys template with the given parameter values, offline.
func Evaluate(template map[string]any, paramValues map[string]any, stubs map[string]Stub) (*Deployment, error) {
	e := &evaluator{template: template, params: map[string]any{}, vars: map[string]any{}, evaluating: map[string]bool{}, stubs: stubs}
	decl, _ := template["parameters"].(map[string]any)
	for name := range paramValues {
		if _, ok := decl[name]; !ok {
			return nil, fmt.Errorf("parameter %q is not declared by the template", name)
		}
	}
	for name, d := range decl {
		def := d.(map[string]any)
		v, given := paramValues[name]
		if !given {
			dv, ok := def["defaultValue"]
			if !ok {
				return nil, fmt.Errorf("parameter %q has no value and no default", name)
			}
			var err error
			if v, err = e.eval(dv, scope{}); err != nil {
				return nil, fmt.Errorf("parameter %q default: %w", name, err)
			}
		}
		if err := checkParam(name, def, v); err != nil {
			return nil, err
		}
		e.params[name] = v
	}
	e.varDefs, _ = template["variables"].(map[string]any)
	if loops, ok := e.varDefs["copy"].([]any); ok {
		for _, l := range loops {
			loop := l.(map[string]any)
			name := loop["name"].(string)
			e.varDefs[name] = map[string]any{"$copy": loop}
		}
	}
	d := &Deployment{Outputs: map[string]any{}}
	resources, _ := template["resources"].([]any)
	for i, raw := range resources {
		res := raw.(map[string]any)
		count := 1
		loop, looped := res["copy"].(map[string]any)
		if looped {
			n, err := e.eval(loop["count"], scope{})
			if err != nil {
				return nil, fmt.Errorf("resources[%d] copy count: %w", i, err)
			}
			count = toInt(n)
		}
		for c := 0; c < count; c++ {
			sc := scope{copyIndex: map[string]int{"": c}}
			if looped {
				sc.copyIndex[loop["name"].(string)] = c
			}
			if cond, ok := res["condition"]; ok {
				v, err := e.eval(cond, sc)
				if err != nil {
					return nil, fmt.Errorf("resources[%d] condition: %w", i, err)
				}
				if v != true {
					continue
				}
			}
			parent, err := e.resource(res, sc, nil)
			if err != nil {
				return nil, fmt.Errorf("resources[%d] (%v): %w", i, res["type"], err)
			}
			d.Resources = append(d.Resources, parent)
			children, _ := res["resources"].([]any)
			for j, c := range children {
				child, err := e.resource(c.(map[string]any), sc, &parent)
				if err != nil {
					return nil, fmt.Errorf("resources[%d].resources[%d]: %w", i, j, err)
				}
				d.Resources = append(d.Resources, child)
			}
		}
	}
	outputs, _ := template["outputs"].(map[string]any)
	for name, o := range outputs {
		out := o.(map[string]any)
		if loop, ok := out["copy"].(map[string]any); ok {
			n, err := e.eval(loop["count"], scope{})
			if err != nil {
				return nil, fmt.Errorf("output %s: %w", name, err)
			}
			var vals []any
			for c := 0; c < toInt(n); c++ {
				v, err := e.eval(loop["input"], scope{copyIndex: map[string]int{"": c}})
				if err != nil {
					return nil, fmt.Errorf("output %s: %w", name, err)
				}
				vals = append(vals, v)
			}
			d.Outputs[name] = vals
			continue
		}
		v, err := e.eval(out["value"], scope{})
		if err != nil {
			return nil, fmt.Errorf("output %s: %w", name, err)
		}
		d.Outputs[name] = v
	}
	return d, nil
}

// resource evaluates one resource; a child resource nested in parent gets its full type and name.
func (e *evaluator) resource(res map[string]any, sc scope, parent *Resource) (Resource, error) {
	body := map[string]any{}
	for k, v := range res {
		if k == "copy" || k == "condition" || k == "dependsOn" || k == "resources" {
			continue
		}
		ev, err := e.eval(v, sc)
		if err != nil {
			return Resource{}, fmt.Errorf("%s: %w", k, err)
		}
		body[k] = ev
	}
	typ, _ := body["type"].(string)
	name, _ := body["name"].(string)
	version, _ := body["apiVersion"].(string)
	if parent != nil {
		if !strings.Contains(typ, "/") {
			typ = parent.Type + "/" + typ
		}
		if !strings.Contains(name, "/") {
			name = parent.Name + "/" + name
		}
		body["type"], body["name"] = typ, name
	}
	return Resource{Type: typ, APIVersion: version, Name: name, Body: body}, nil
}

func checkParam(name string, def map[string]any, v any) error {
	typ, _ := def["type"].(string)
	ok := false
	switch strings.ToLower(typ) {
	case "string", "securestring":
		_, ok = v.(string)
	case "int":
		_, ok = v.(int)
	case "bool":
		_, ok = v.(bool)
	case "array":
		_, ok = v.([]any)
	case "object", "secureobject":
		_, ok = v.(map[string]any)
	}
	if !ok {
		return fmt.Errorf("parameter %q: %T is not of type %s", name, v, typ)
	}
	if allowed, has := def["allowedValues"].([]any); has {
		found := false
		for _, a := range allowed {
			if fmt.Sprint(a) == fmt.Sprint(v) {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("parameter %q: %v is not one of %v", name, v, allowed)
		}
	}
	if n, isInt := v.(int); isInt {
		if lo, has := def["minValue"]; has && n < toInt(lo) {
			return fmt.Errorf("parameter %q: %d is below %v", name, n, lo)
		}
		if hi, has := def["maxValue"]; has && n > toInt(hi) {
			return fmt.Errorf("parameter %q: %d is above %v", name, n, hi)
		}
	}
	length := -1
	switch x := v.(type) {
	case string:
		length = len(x)
	case []any:
		length = len(x)
	}
	if lo, has := def["minLength"]; has && length >= 0 && length < toInt(lo) {
		return fmt.Errorf("parameter %q: length %d is below %v", name, length, lo)
	}
	if hi, has := def["maxLength"]; has && length > toInt(hi) {
		return fmt.Errorf("parameter %q: length %d is above %v", name, length, hi)
	}
	return nil
}

// eval evaluates every expression string inside v.
func (e *evaluator) eval(v any, sc scope) (any, error) {
	switch x := v.(type) {
	case string:
		if strings.HasPrefix(x, "[[") {
			return x[1:], nil
		}
		if strings.HasPrefix(x, "[") && strings.HasSuffix(x, "]") {
			n, err := parseExpression(x[1 : len(x)-1])
			if err != nil {
				return nil, fmt.Errorf("%s: %w", x, err)
			}
			return e.evalNode(n, sc)
		}
		return x, nil
	case float64:
		return int(x), nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			ev, err := e.eval(val, sc)
			if err != nil {
				return nil, err
			}
			out[k] = ev
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			ev, err := e.eval(val, sc)
			if err != nil {
				return nil, err
			}
			out[i] = ev
		}
		return out, nil
	}
	return v, nil
}

func (e *evaluator) variable(name string) (any, error) {
	if v, ok := e.vars[name]; ok {
		return v, nil
	}
	def, ok := e.varDefs[name]
	if !ok || name == "copy" {
		return nil, fmt.Errorf("variable %q is not declared", name)
	}
	if e.evaluating[name] {
		return nil, fmt.Errorf("variable %q refers to itself", name)
	}
	e.evaluating[name] = true
	defer delete(e.evaluating, name)
	var v any
	var err error
	if m, isLoop := def.(map[string]any); isLoop && m["$copy"] != nil {
		loop := m["$copy"].(map[string]any)
		var n any
		if n, err = e.eval(loop["count"], scope{}); err != nil {
			return nil, fmt.Errorf("variable %s: %w", name, err)
		}
		items := []any{}
		for c := 0; c < toInt(n); c++ {
			item, err := e.eval(loop["input"], scope{copyIndex: map[string]int{name: c}})
			if err != nil {
				return nil, fmt.Errorf("variable %s[%d]: %w", name, c, err)
			}
			items = append(items, item)
		}
		v = items
	} else if v, err = e.eval(def, scope{}); err != nil {
		return nil, fmt.Errorf("variable %s: %w", name, err)
	}
	e.vars[name] = v
	return v, nil
}

// The expression language: function calls, 'strings' ('' escapes a quote), integers, and
// .property / [index] access.

type node struct {
	fn     string  // call
	args   []*node // call arguments
	lit    any     // literal when fn == ""
	access []accessor
}

type accessor struct {
	prop  string
	index *node
}

type parser struct {
	s   string
	pos int
}

func parseExpression(s string) (*node, error) {
	p := &parser{s: s}
	n, err := p.expr()
	if err != nil {
		return nil, err
	}
	p.space()
	if p.pos != len(p.s) {
		return nil, fmt.Errorf("unexpected %q at %d", p.s[p.pos:], p.pos)
	}
	return n, nil
}

func (p *parser) space() {
	for p.pos < len(p.s) && p.s[p.pos] == ' ' {
		p.pos++
	}
}

func (p *parser) expr() (*node, error) {
	p.space()
	if p.pos >= len(p.s) {
		return nil, errors.New("unexpected end of expression")
	}
	var n *node
	c := p.s[p.pos]
	switch {
	case c == '\'':
		var b strings.Builder
		p.pos++
		for {
			if p.pos >= len(p.s) {
				return nil, errors.New("unterminated string")
			}
			if p.s[p.pos] == '\'' {
				if p.pos+1 < len(p.s) && p.s[p.pos+1] == '\'' {
					b.WriteByte('\'')
					p.pos += 2
					continue
				}
				p.pos++
				break
			}
			b.WriteByte(p.s[p.pos])
			p.pos++
		}
		n = &node{lit: b.String()}
	case c == '-' || (c >= '0' && c <= '9'):
		start := p.pos
		p.pos++
		for p.pos < len(p.s) && p.s[p.pos] >= '0' && p.s[p.pos] <= '9' {
			p.pos++
		}
		v, err := strconv.Atoi(p.s[start:p.pos])
		if err != nil {
			return nil, err
		}
		n = &node{lit: v}
	default:
		start := p.pos
		for p.pos < len(p.s) && (isIdent(p.s[p.pos])) {
			p.pos++
		}
		if start == p.pos {
			return nil, fmt.Errorf("unexpected %q at %d", p.s[p.pos:], p.pos)
		}
		n = &node{fn: p.s[start:p.pos]}
		p.space()
		if p.pos >= len(p.s) || p.s[p.pos] != '(' {
			return nil, fmt.Errorf("%s: expected (", n.fn)
		}
		p.pos++
		for {
			p.space()
			if p.pos < len(p.s) && p.s[p.pos] == ')' {
				p.pos++
				break
			}
			arg, err := p.expr()
			if err != nil {
				return nil, err
			}
			n.args = append(n.args, arg)
			p.space()
			if p.pos < len(p.s) && p.s[p.pos] == ',' {
				p.pos++
			}
		}
	}
	for p.pos < len(p.s) {
		switch p.s[p.pos] {
		case '.':
			p.pos++
			start := p.pos
			for p.pos < len(p.s) && isIdent(p.s[p.pos]) {
				p.pos++
			}
			n.access = append(n.access, accessor{prop: p.s[start:p.pos]})
		case '[':
			p.pos++
			idx, err := p.expr()
			if err != nil {
				return nil, err
			}
			p.space()
			if p.pos >= len(p.s) || p.s[p.pos] != ']' {
				return nil, errors.New("expected ]")
			}
			p.pos++
			n.access = append(n.access, accessor{index: idx})
		default:
			return n, nil
		}
	}
	return n, nil
}

func isIdent(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

type closure struct {
	params []string
	body   *node
	outer  scope
}

// ref is what reference() returns until a property is read from it.
type ref struct {
	typ, id string
	path    []string
}

func (e *evaluator) evalNode(n *node, sc scope) (any, error) {
	var v any
	var err error
	if n.fn == "" {
		v = n.lit
	} else if v, err = e.call(n, sc); err != nil {
		return nil, err
	}
	for _, a := range n.access {
		key := a.prop
		if a.index != nil {
			idx, err := e.evalNode(a.index, sc)
			if err != nil {
				return nil, err
			}
			if arr, ok := v.([]any); ok {
				i := toInt(idx)
				if i < 0 || i >= len(arr) {
					return nil, fmt.Errorf("index %d out of range (length %d)", i, len(arr))
				}
				v = arr[i]
				continue
			}
			key = fmt.Sprint(idx)
		}
		switch x := v.(type) {
		case map[string]any:
			val, ok := lookup(x, key)
			if !ok {
				return nil, fmt.Errorf("property %q not found", key)
			}
			v = val
		case ref:
			v = ref{typ: x.typ, id: x.id, path: append(append([]string{}, x.path...), key)}
		default:
			return nil, fmt.Errorf("property %q of %T", key, v)
		}
	}
	if r, ok := v.(ref); ok && len(r.path) > 0 {
		stub := e.stubs[r.typ]
		if stub == nil {
			return nil, fmt.Errorf("reference to %s: no stub for its type", r.id)
		}
		return stub(r.id, r.path)
	}
	return v, nil
}

// lookup reads a property case-insensitively, as Resource Manager does.
func lookup(m map[string]any, key string) (any, bool) {
	if v, ok := m[key]; ok {
		return v, true
	}
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return nil, false
}

func (e *evaluator) call(n *node, sc scope) (any, error) {
	name := strings.ToLower(n.fn)
	switch name { // the forms that must not evaluate every argument first
	case "if":
		if len(n.args) != 3 {
			return nil, errors.New("if takes 3 arguments")
		}
		c, err := e.evalNode(n.args[0], sc)
		if err != nil {
			return nil, err
		}
		if c == true {
			return e.evalNode(n.args[1], sc)
		}
		return e.evalNode(n.args[2], sc)
	case "lambda":
		if len(n.args) < 2 {
			return nil, errors.New("lambda takes names and a body")
		}
		cl := closure{body: n.args[len(n.args)-1], outer: sc}
		for _, a := range n.args[:len(n.args)-1] {
			s, ok := a.lit.(string)
			if !ok {
				return nil, errors.New("lambda parameter names are strings")
			}
			cl.params = append(cl.params, s)
		}
		return cl, nil
	}
	args := make([]any, len(n.args))
	for i, a := range n.args {
		v, err := e.evalNode(a, sc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n.fn, err)
		}
		args[i] = v
	}
	v, err := e.function(name, args, sc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.fn, err)
	}
	return v, nil
}

func (e *evaluator) apply(f any, args ...any) (any, error) {
	cl, ok := f.(closure)
	if !ok || len(cl.params) != len(args) {
		return nil, errors.New("expected a lambda of matching arity")
	}
	inner := scope{copyIndex: cl.outer.copyIndex, lambda: map[string]any{}}
	for k, v := range cl.outer.lambda {
		inner.lambda[k] = v
	}
	for i, p := range cl.params {
		inner.lambda[p] = args[i]
	}
	return e.evalNode(cl.body, inner)
}

func (e *evaluator) function(name string, args []any, sc scope) (any, error) {
	str := func(i int) string { s, _ := args[i].(string); return s }
	need := func(n int) error {
		if len(args) != n {
			return fmt.Errorf("takes %d arguments, got %d", n, len(args))
		}
		return nil
	}
	switch name {
	case "parameters":
		v, ok := e.params[str(0)]
		if !ok {
			return nil, fmt.Errorf("parameter %q is not declared", str(0))
		}
		return v, nil
	case "variables":
		return e.variable(str(0))
	case "lambdavariables":
		v, ok := sc.lambda[str(0)]
		if !ok {
			return nil, fmt.Errorf("no lambda variable %q", str(0))
		}
		return v, nil
	case "copyindex":
		loop, offset := "", 0
		for _, a := range args {
			switch x := a.(type) {
			case string:
				loop = x
			case int:
				offset = x
			}
		}
		i, ok := sc.copyIndex[loop]
		if !ok {
			return nil, fmt.Errorf("copyIndex(%q) outside its loop", loop)
		}
		return i + offset, nil
	case "true":
		return true, nil
	case "false":
		return false, nil
	case "null":
		return nil, nil
	case "string":
		if s, ok := args[0].(string); ok {
			return s, nil
		}
		b, err := json.Marshal(args[0])
		return string(b), err
	case "tolower":
		return strings.ToLower(str(0)), nil
	case "replace":
		return strings.ReplaceAll(str(0), str(1), str(2)), nil
	case "format":
		out := str(0)
		for i, a := range args[1:] {
			out = strings.ReplaceAll(out, "{"+strconv.Itoa(i)+"}", fmt.Sprint(a))
		}
		return out, nil
	case "concat":
		if _, isArr := args[0].([]any); isArr {
			var out []any
			for _, a := range args {
				out = append(out, a.([]any)...)
			}
			return out, nil
		}
		var b strings.Builder
		for _, a := range args {
			b.WriteString(fmt.Sprint(a))
		}
		return b.String(), nil
	case "take":
		n := toInt(args[1])
		switch x := args[0].(type) {
		case string:
			return x[:min(n, len(x))], nil
		case []any:
			return x[:min(n, len(x))], nil
		}
	case "first":
		switch x := args[0].(type) {
		case string:
			return x[:min(1, len(x))], nil
		case []any:
			if len(x) == 0 {
				return nil, nil
			}
			return x[0], nil
		}
	case "length":
		switch x := args[0].(type) {
		case string:
			return len(x), nil
		case []any:
			return len(x), nil
		case map[string]any:
			return len(x), nil
		}
	case "empty":
		switch x := args[0].(type) {
		case nil:
			return true, nil
		case string:
			return x == "", nil
		case []any:
			return len(x) == 0, nil
		case map[string]any:
			return len(x) == 0, nil
		}
	case "equals":
		if err := need(2); err != nil {
			return nil, err
		}
		a, _ := json.Marshal(args[0])
		b, _ := json.Marshal(args[1])
		return string(a) == string(b), nil
	case "not":
		b, ok := args[0].(bool)
		if !ok {
			return nil, errors.New("needs a bool")
		}
		return !b, nil
	case "add", "sub", "mul", "div", "mod", "max", "min":
		if err := need(2); err != nil {
			return nil, err
		}
		a, b := toInt(args[0]), toInt(args[1])
		switch name {
		case "add":
			return a + b, nil
		case "sub":
			return a - b, nil
		case "mul":
			return a * b, nil
		case "max":
			return max(a, b), nil
		case "min":
			return min(a, b), nil
		}
		if b == 0 {
			return nil, errors.New("division by zero")
		}
		if name == "div" {
			return a / b, nil
		}
		return a % b, nil
	case "createarray":
		return append([]any{}, args...), nil
	case "createobject":
		if len(args)%2 != 0 {
			return nil, errors.New("takes name, value pairs")
		}
		out := map[string]any{}
		for i := 0; i < len(args); i += 2 {
			out[str(i)] = args[i+1]
		}
		return out, nil
	case "union":
		out := map[string]any{}
		for _, a := range args {
			m, ok := a.(map[string]any)
			if !ok {
				return nil, errors.New("union of objects only")
			}
			for k, v := range m {
				out[k] = v
			}
		}
		return out, nil
	case "coalesce":
		for _, a := range args {
			if a != nil {
				return a, nil
			}
		}
		return nil, nil
	case "tryget":
		if m, ok := args[0].(map[string]any); ok {
			v, _ := lookup(m, str(1))
			return v, nil
		}
		return nil, nil
	case "map":
		arr, ok := args[0].([]any)
		if !ok {
			return nil, errors.New("maps an array")
		}
		out := []any{}
		for _, item := range arr {
			v, err := e.apply(args[1], item)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case "filter":
		arr, ok := args[0].([]any)
		if !ok {
			return nil, errors.New("filters an array")
		}
		out := []any{}
		for _, item := range arr {
			keep, err := e.apply(args[1], item)
			if err != nil {
				return nil, err
			}
			if keep == true {
				out = append(out, item)
			}
		}
		return out, nil
	case "objectkeys":
		m, ok := args[0].(map[string]any)
		if !ok {
			return nil, errors.New("takes an object")
		}
		keys := make([]any, 0, len(m))
		for _, k := range sortedKeys(m) {
			keys = append(keys, k)
		}
		return keys, nil
	case "toobject":
		arr, ok := args[0].([]any)
		if !ok {
			return nil, errors.New("takes an array")
		}
		out := map[string]any{}
		for _, item := range arr {
			k, err := e.apply(args[1], item)
			if err != nil {
				return nil, err
			}
			v := item
			if len(args) > 2 {
				if v, err = e.apply(args[2], item); err != nil {
					return nil, err
				}
			}
			out[fmt.Sprint(k)] = v
		}
		return out, nil
	case "uniquestring":
		return hashString(args, 13), nil
	case "guid":
		sum := sha256.Sum256([]byte(fmt.Sprint(args...)))
		h := fmt.Sprintf("%x", sum[:16])
		return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32], nil
	case "resourcegroup":
		return map[string]any{"id": "/subscriptions/" + testSubscription + "/resourceGroups/" + testGroup, "name": testGroup, "location": "swedencentral"}, nil
	case "subscription":
		return map[string]any{"id": "/subscriptions/" + testSubscription, "subscriptionId": testSubscription, "tenantId": testTenant}, nil
	case "environment":
		return map[string]any{"name": "AzureCloud", "suffixes": map[string]any{"storage": "core.windows.net", "keyvaultDns": ".vault.azure.net"}}, nil
	case "resourceid":
		names := make([]string, 0, len(args)-1)
		for _, a := range args[1:] {
			names = append(names, fmt.Sprint(a))
		}
		return resourceID(str(0), names...), nil
	case "subscriptionresourceid":
		return "/subscriptions/" + testSubscription + "/providers/" + str(0) + "/" + str(1), nil
	case "reference":
		id := str(0)
		typ := typeOfID(id)
		if typ == "" {
			return nil, fmt.Errorf("reference(%q): give a resource id", id)
		}
		return ref{typ: typ, id: id}, nil
	}
	return nil, fmt.Errorf("function %s is not supported by the offline evaluator (or got arguments of the wrong type)", name)
}

// typeOfID turns /subscriptions/../providers/NS/t1/n1/t2/n2 into NS/t1/t2.
func typeOfID(id string) string {
	_, rest, ok := strings.Cut(id, "/providers/")
	if !ok {
		return ""
	}
	parts := strings.Split(rest, "/")
	typ := parts[0]
	for i := 1; i < len(parts); i += 2 {
		typ += "/" + parts[i]
	}
	return typ
}

// NameOfID is the last name in a resource id.
func NameOfID(id string) string { return id[strings.LastIndex(id, "/")+1:] }

func hashString(args []any, n int) string {
	h := sha256.New()
	for _, a := range args {
		fmt.Fprint(h, a, "\x00")
	}
	s := new(big.Int).SetBytes(h.Sum(nil)).Text(36)
	for len(s) < n {
		s += "0"
	}
	return s[:n]
}

func toInt(v any) int {
	switch x := v.(type) {
	case int:
		return x
	case float64:
		return int(x)
	}
	return 0
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Strings lists every string in v, for the secret scan.
func Strings(v any) []string {
	var out []string
	switch x := v.(type) {
	case string:
		out = append(out, x)
	case map[string]any:
		for _, k := range sortedKeys(x) {
			out = append(out, Strings(x[k])...)
		}
	case []any:
		for _, item := range x {
			out = append(out, Strings(item)...)
		}
	}
	return out
}
