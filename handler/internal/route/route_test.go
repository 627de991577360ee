package route

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/config"
)

func routing(t *testing.T, doc string) config.Routing {
	t.Helper()
	r, probs := config.ParseRouting([]byte(doc))
	if len(probs) > 0 {
		t.Fatal(probs)
	}
	return *r
}

const doc = `{
  "accounts": {
    "a": {"endpoint": "https://a.openai.azure.com/", "region": "swedencentral", "auth": {"keyEnv": "K"}},
    "b": {"endpoint": "https://b.openai.azure.com", "auth": {"keyEnv": "K"}}
  },
  "deployments": {
    "chat": [
      {"account": "b", "deployment": "late", "priority": 3},
      {"account": "a", "deployment": "heavy", "priority": 2, "weight": 3},
      {"account": "b", "deployment": "light", "priority": 2, "weight": 1},
      {"account": "a", "deployment": "first", "priority": 1}
    ],
    "embed": [{"account": "a", "deployment": "first"}]
  },
  "clients": {"anonymous": true}
}`

type none struct{}

func (none) Unavailable(string, time.Time) (time.Time, bool, bool) { return time.Time{}, false, false }
func (none) Room(string, time.Time, int64) (time.Time, bool)       { return time.Time{}, true }

type marks map[string]time.Time

func (m marks) Room(string, time.Time, int64) (time.Time, bool) { return time.Time{}, true }

func (m marks) Unavailable(id string, now time.Time) (time.Time, bool, bool) {
	u, ok := m[id]
	return u, id == "a/first", ok && now.Before(u)
}

func ids(ts []Target) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.ID)
	}
	return out
}

func TestPriorityAndWeights(t *testing.T) {
	p := New(routing(t, doc))
	if !reflect.DeepEqual(p.Names(), []string{"chat", "embed"}) {
		t.Errorf("names %v", p.Names())
	}
	if got := ids(p.Targets()); !reflect.DeepEqual(got, []string{"a/first", "a/heavy", "b/late", "b/light"}) {
		t.Errorf("distinct targets %v", got)
	}
	heavyFirst := 0
	const n = 4000
	for i := 0; i < n; i++ {
		plan, ok := p.Plan("chat", none{}, time.Now(), 0)
		got := ids(plan.Candidates)
		if !ok || len(got) != 4 || got[0] != "a/first" || got[3] != "b/late" {
			t.Fatalf("order %v", got)
		}
		if got[1] == "a/heavy" {
			heavyFirst++
		}
	}
	if share := float64(heavyFirst) / n; share < 0.68 || share > 0.82 {
		t.Errorf("weight 3:1 put the heavy target first %.2f of the time, want about 0.75", share)
	}
	plan, _ := p.Plan("chat", none{}, time.Now(), 0)
	if c := plan.Candidates[0]; c.Scheme != "https" || c.Authority != "a.openai.azure.com" || c.Host != "a.openai.azure.com" || c.Region != "swedencentral" {
		t.Errorf("target %+v", c)
	}
}

func TestSkipsUnavailable(t *testing.T) {
	p := New(routing(t, doc))
	now := time.Now()
	m := marks{"a/first": now.Add(time.Minute), "b/light": now.Add(time.Second), "b/late": now.Add(-time.Second)}
	plan, _ := p.Plan("chat", m, now, 0)
	if got := ids(plan.Candidates); !reflect.DeepEqual(got, []string{"a/heavy", "b/late"}) {
		t.Errorf("candidates %v", got)
	}
	if len(plan.Skipped) != 2 || plan.Skipped[0].Target.ID != "a/first" || !plan.Skipped[0].Throttled || !plan.Skipped[0].Until.Equal(now.Add(time.Minute)) || plan.Skipped[1].Throttled {
		t.Errorf("skipped %+v", plan.Skipped)
	}
	if _, ok := p.Plan("nope", none{}, now, 0); ok {
		t.Error("unknown name planned")
	}
}

// short reports no room on the listed targets, for a second.
type short map[string]bool

func (s short) Unavailable(string, time.Time) (time.Time, bool, bool) {
	return time.Time{}, false, false
}
func (s short) Room(id string, now time.Time, cost int64) (time.Time, bool) {
	if cost == 0 || !s[id] {
		return time.Time{}, true
	}
	return now.Add(time.Second), false
}

// TestTargetsWithoutRoomArePassedOver: a target the quota model says cannot admit the request is
// left out like a throttled one, until it can; the others keep their order; without a cost
// estimate nothing is passed over.
func TestTargetsWithoutRoomArePassedOver(t *testing.T) {
	p := New(routing(t, doc))
	now := time.Now()
	plan, _ := p.Plan("chat", short{"a/first": true}, now, 500)
	got := ids(plan.Candidates)
	if len(got) != 3 || got[2] != "b/late" || got[0] == "a/first" || got[1] == "a/first" {
		t.Errorf("order %v: the target without room must be left out, the rest in order", got)
	}
	if len(plan.Skipped) != 1 || plan.Skipped[0].Target.ID != "a/first" || !plan.Skipped[0].Short || !plan.Skipped[0].Throttled ||
		!plan.Skipped[0].Until.Equal(now.Add(time.Second)) {
		t.Errorf("skipped %+v", plan.Skipped)
	}
	plan, _ = p.Plan("chat", short{"a/first": true, "a/heavy": true, "b/light": true, "b/late": true}, now, 500)
	if len(plan.Candidates) != 0 || len(plan.Skipped) != 4 {
		t.Errorf("every target short: %v candidates, %d skipped", ids(plan.Candidates), len(plan.Skipped))
	}
	plan, _ = p.Plan("chat", short{"a/first": true}, now, 0)
	if ids(plan.Candidates)[0] != "a/first" || len(plan.Skipped) != 0 {
		t.Errorf("without a cost estimate nothing may be passed over")
	}
}

func TestAccounts(t *testing.T) {
	r := config.Routing{
		Accounts: map[string]config.Account{
			"a": {Endpoint: "https://a.example"}, "b": {Endpoint: "https://b.example:8443"}, "c": {Endpoint: "https://c.example"},
		},
		Deployments: map[string][]config.Target{
			"chat": {{Account: "c", Deployment: "x", Priority: new(1)}, {Account: "b", Deployment: "y", Priority: new(2)}},
		},
	}
	p := New(r)
	if got := p.Accounts("chat"); strings.Join(got, ",") != "c,b,a" {
		t.Errorf("Accounts(chat) = %v, want the deployment's accounts by priority, then the rest", got)
	}
	if got := p.Accounts("unknown"); strings.Join(got, ",") != "a,b,c" {
		t.Errorf("Accounts(unknown) = %v", got)
	}
	if a, ok := p.Account("b"); !ok || a.Authority != "b.example:8443" || a.Scheme != "https" || a.Deployment != "" {
		t.Errorf("Account(b) = %+v %v", a, ok)
	}
	if _, ok := p.Account("z"); ok {
		t.Error("unknown account found")
	}
}
