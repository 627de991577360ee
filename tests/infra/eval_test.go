package infra

import (
	"encoding/json"
	"testing"
)

// The evaluator is what the template checks stand on, so it is checked too.
func TestEvaluatorFunctions(t *testing.T) {
	tmpl := map[string]any{
		"parameters": map[string]any{
			"names": map[string]any{"type": "array", "defaultValue": []any{"a", "b"}},
			"n":     map[string]any{"type": "int", "defaultValue": 3.0},
		},
		"variables": map[string]any{"greeting": "[format('it''s {0}-{1}', parameters('n'), 'x')]"},
	}
	for _, tc := range []struct{ expr, want string }{
		{"[variables('greeting')]", `"it's 3-x"`},
		{"[[literal]", `"[literal]"`},
		{"[if(equals(parameters('n'), 3), 'yes', variables('missing'))]", `"yes"`},
		{"[toObject(parameters('names'), lambda('k', lambdaVariables('k')), lambda('k', toLower(concat('V', lambdaVariables('k')))))]", `{"a":"va","b":"vb"}`},
		{"[map(parameters('names'), lambda('k', length(lambdaVariables('k'))))]", `[1,1]`},
		{"[union(createObject('a', 1, 'b', 2), createObject('b', 3))]", `{"a":1,"b":3}`},
		{"[string(createObject('k', createArray(true(), null())))]", `"{\"k\":[true,null]}"`},
		{"[div(7, max(1, 0))]", `7`},
		{"[coalesce(tryGet(createObject('a', 1), 'b'), 'default')]", `"default"`},
		{"[take('abcdef', 3)]", `"abc"`},
		{"[resourceId('Microsoft.Web/sites/config', 'app', 'web')]", `"/subscriptions/00000000-0000-0000-0000-0000000000aa/resourceGroups/rg-gateway-test/providers/Microsoft.Web/sites/app/config/web"`},
	} {
		tmpl["outputs"] = map[string]any{"v": map[string]any{"value": tc.expr}}
		d, err := Evaluate(tmpl, nil, nil)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		got, _ := json.Marshal(d.Outputs["v"])
		if string(got) != tc.want {
			t.Errorf("%s = %s, want %s", tc.expr, got, tc.want)
		}
	}
	for _, bad := range []string{"[variables('missing')]", "[parameters('missing')]", "[unknownFunction()]", "[createArray(1)[5]]", "[format('x']"} {
		tmpl["outputs"] = map[string]any{"v": map[string]any{"value": bad}}
		if _, err := Evaluate(tmpl, nil, nil); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
	if _, err := Evaluate(tmpl, map[string]any{"n": "three"}, nil); err == nil {
		t.Error("a string for an int parameter was accepted")
	}
}
