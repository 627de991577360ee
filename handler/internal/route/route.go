// Package route turns a logical deployment name into the ordered list of real deployments to
// try: lower priority first, weighted random order among equal priorities, minus the targets
// that are known to be throttled or failing, and those the quota model says cannot admit the
// request now (passed over, the preference order kept among the rest).
package route

import (
	"math/rand/v2"
	"net/url"
	"sort"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/config"
)

// Target is one real deployment.
type Target struct {
	ID         string // "account/deployment"
	Account    string
	Deployment string
	Scheme     string // the account endpoint's scheme (an endpoint is only scheme and host)
	Authority  string // the endpoint's host, with its port if it names one
	Host       string // the endpoint's host name, for telemetry's server.address
	Region     string
	Priority   int
	Weight     int
}

// Availability is what the planner needs to know of each target's state.
type Availability interface {
	// Unavailable reports whether the target should be skipped at now, until when, and
	// whether it is throttled (else failing).
	Unavailable(id string, now time.Time) (until time.Time, throttled, skip bool)
	// Room reports whether the quota model says the target can admit a request estimated at
	// cost tokens now, and if not, when it will.
	Room(id string, now time.Time, cost int64) (until time.Time, ok bool)
}

// Skipped is a target left out of a plan.
type Skipped struct {
	Target Target
	Until  time.Time
	// Throttled: it is throttled (a 429's wait), or passed over (Short), so it frees by itself
	// at Until; else it is failing.
	Throttled bool
	// Short: the quota model says it cannot admit the request before Until.
	Short bool
}

// Plan is the order in which to try targets for one request.
type Plan struct {
	Candidates []Target
	Skipped    []Skipped
}

// Planner holds each logical deployment's targets grouped by priority.
type Planner struct {
	groups   map[string][][]Target
	names    []string
	all      []Target
	accounts map[string]Target // per account, its endpoint (Deployment empty, ID the account)
	order    []string          // account names, sorted
}

// New builds a planner from a validated routing document.
func New(r config.Routing) *Planner {
	p := &Planner{groups: map[string][][]Target{}, accounts: map[string]Target{}}
	for name, a := range r.Accounts {
		t := Target{ID: name, Account: name, Region: a.Region, Priority: 1, Weight: 1}
		if u, err := url.Parse(a.Endpoint); err == nil { // validated already
			t.Scheme, t.Authority, t.Host = u.Scheme, u.Host, u.Hostname()
		}
		p.accounts[name] = t
		p.order = append(p.order, name)
	}
	sort.Strings(p.order)
	seen := map[string]bool{}
	for name, list := range r.Deployments {
		p.names = append(p.names, name)
		targets := make([]Target, 0, len(list))
		for _, t := range list {
			a := r.Accounts[t.Account]
			rt := Target{
				ID: t.ID(), Account: t.Account, Deployment: t.Deployment, Region: a.Region,
				Priority: t.PriorityOrDefault(), Weight: t.WeightOrDefault(),
			}
			if u, err := url.Parse(a.Endpoint); err == nil { // validated already
				rt.Scheme, rt.Authority, rt.Host = u.Scheme, u.Host, u.Hostname()
			}
			targets = append(targets, rt)
			if !seen[rt.ID] {
				seen[rt.ID] = true
				p.all = append(p.all, rt)
			}
		}
		// Grouped by priority; the order within a group is drawn per request by weight.
		sort.SliceStable(targets, func(i, j int) bool { return targets[i].Priority < targets[j].Priority })
		var groups [][]Target
		for i := 0; i < len(targets); {
			j := i
			for j < len(targets) && targets[j].Priority == targets[i].Priority {
				j++
			}
			groups = append(groups, targets[i:j])
			i = j
		}
		p.groups[name] = groups
	}
	sort.Strings(p.names)
	sort.Slice(p.all, func(i, j int) bool { return p.all[i].ID < p.all[j].ID })
	return p
}

// Names returns the logical deployment names, sorted.
func (p *Planner) Names() []string { return p.names }

// Targets returns every distinct target, sorted by id.
func (p *Planner) Targets() []Target { return p.all }

// Account returns an account's endpoint as a target without a deployment, for calls on the
// account's own resources (a stored response, a file).
func (p *Planner) Account(name string) (Target, bool) {
	t, ok := p.accounts[name]
	return t, ok
}

// Accounts returns every account name, those serving the logical deployment first (in its
// order of priority), then the rest, sorted.
func (p *Planner) Accounts(first string) []string {
	out := make([]string, 0, len(p.order))
	seen := map[string]bool{}
	for _, g := range p.groups[first] {
		for _, t := range g {
			if !seen[t.Account] {
				seen[t.Account] = true
				out = append(out, t.Account)
			}
		}
	}
	for _, a := range p.order {
		if !seen[a] {
			out = append(out, a)
		}
	}
	return out
}

// Groups returns a logical name's targets grouped by priority, in configured order.
func (p *Planner) Groups(name string) [][]Target { return p.groups[name] }

// Plan orders the targets of a logical name for one request. ok is false for an unknown name.
// With cost > 0, targets the quota model says cannot admit cost tokens now are passed over
// (Skipped, Short, until they can), as throttled ones are: the request goes to the first
// target in preference order that can admit it, and a full target costs no 429 round trip.
func (p *Planner) Plan(name string, avail Availability, now time.Time, cost int64) (plan Plan, ok bool) {
	groups, ok := p.groups[name]
	if !ok {
		return Plan{}, false
	}
	n := 0
	for _, g := range groups {
		n += len(g)
	}
	plan.Candidates = make([]Target, 0, n)
	for _, g := range groups {
		start := len(plan.Candidates)
		for _, t := range g {
			if until, throttled, skip := avail.Unavailable(t.ID, now); skip {
				plan.Skipped = append(plan.Skipped, Skipped{Target: t, Until: until, Throttled: throttled})
				continue
			}
			if cost > 0 {
				if until, room := avail.Room(t.ID, now, cost); !room {
					plan.Skipped = append(plan.Skipped, Skipped{Target: t, Until: until, Throttled: true, Short: true})
					continue
				}
			}
			plan.Candidates = append(plan.Candidates, t)
		}
		weightedShuffle(plan.Candidates[start:])
	}
	return plan, true
}

// weightedShuffle orders ts so that each position is drawn at random in proportion to weight
// among the targets not yet placed.
func weightedShuffle(ts []Target) {
	for i := 0; i < len(ts)-1; i++ {
		total := 0
		for _, t := range ts[i:] {
			total += t.Weight
		}
		r := rand.IntN(total)
		for j := i; j < len(ts); j++ {
			r -= ts[j].Weight
			if r < 0 {
				ts[i], ts[j] = ts[j], ts[i]
				break
			}
		}
	}
}
