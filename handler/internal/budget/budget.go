// Package budget keeps the apps' token budgets: tokens per minute for an app, overall and per
// logical deployment, enforced across every instance of the fleet.
//
// Each instance counts what it admits for each app (a request's estimate, as Azure OpenAI
// counts at admission: a quarter of the body's bytes plus the output tokens asked for, replaced
// by the answer's real usage when it ends) in a sliding window, publishes its figures with its
// report through the shared state (state.Report.Apps: the refresh loop writes them, never the
// request path), and admits a request when the fleet's sum fits the budget: the other
// instances' last published figures plus its own live ones.
//
// The error is bounded by what the others admit before their figures reach this instance: at
// most one publication interval plus one refresh interval (two GATEWAY_STATE_REFRESH, 2 s by
// default) plus the write's round trip. A burst that reaches N instances at once can therefore
// be admitted up to N times what one instance admits in that time, and never more than N
// budgets in one window (each instance alone never exceeds the budget); handler/README.md says
// so with figures.
package budget

import (
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/state"
)

// App is one app's budget: TokensPerMinute across every logical deployment (0: none) and
// Deployments per logical deployment.
type App struct {
	TokensPerMinute int64
	Deployments     map[string]int64
}

// Options configure Budgets.
type Options struct {
	// Window is the "minute" the budgets count over. Zero: a minute.
	Window time.Duration
	Apps   map[string]App
	// MaxTracked bounds the apps without a budget whose consumption this instance counts, for
	// /status (apps come from keys and tokens). Zero: 1000.
	MaxTracked int
}

// slots is how many pieces the window is counted in: the window slides a slot at a time.
const slots = 60

// Budgets counts and enforces the apps' budgets. Its methods never wait on the store.
type Budgets struct {
	window, slot time.Duration
	maxTracked   int

	mu   sync.RWMutex
	apps map[string]*app

	others atomic.Pointer[fleetFigures]
}

// fleetFigures are the other instances' published figures, per app and logical deployment;
// the logical "" holds the app's total.
type fleetFigures map[string]map[string]int64

type app struct {
	name    string
	overall int64
	per     map[string]int64
	limited bool

	mu   sync.Mutex
	deps map[string]*counter
}

// counter is one app's consumption on one logical deployment, on this instance.
type counter struct {
	tokens   [slots]int64 // settled tokens, by the slot of their admission
	at       [slots]int64 // the slot number each entry is for
	inflight int64        // estimates of admitted requests not yet settled
	total    int64        // settled since start
	refused  int64        // requests refused since start
}

// New returns Budgets for opt.
func New(opt Options) *Budgets {
	if opt.Window <= 0 {
		opt.Window = time.Minute
	}
	if opt.MaxTracked <= 0 {
		opt.MaxTracked = 1000
	}
	b := &Budgets{window: opt.Window, slot: opt.Window / slots, maxTracked: opt.MaxTracked, apps: map[string]*app{}}
	for name, a := range opt.Apps {
		b.apps[name] = &app{name: name, overall: a.TokensPerMinute, per: a.Deployments, limited: true, deps: map[string]*counter{}}
	}
	empty := fleetFigures{}
	b.others.Store(&empty)
	return b
}

// Grant is a budget's answer to one request: admitted (OK) or not, and what is left.
type Grant struct {
	App, Logical string
	Cost         int64 // the estimate reserved
	// Limited: a budget applies to the request; Limit, Remaining (after this request's
	// estimate) and Scope ("" for the app's overall budget, else the logical deployment) are
	// those of the tightest one, or of the one that refused it.
	Limited          bool
	OK               bool
	Limit, Remaining int64
	Scope            string
	// RetryAfter, when refused: how long until the budget can admit the request.
	RetryAfter time.Duration
	// TooLarge, when refused: the request's estimate alone exceeds the budget.
	TooLarge bool
	slot     int64
	tracked  bool
}

func (b *Budgets) slotOf(now time.Time) int64 { return now.UnixNano() / int64(b.slot) }

// app returns the app's accounting, made on first use for an app without a budget (up to
// MaxTracked of them).
func (b *Budgets) app(name string) *app {
	b.mu.RLock()
	a := b.apps[name]
	b.mu.RUnlock()
	if a != nil || name == "" {
		return a
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if a = b.apps[name]; a == nil && len(b.apps) < b.maxTracked+b.limitedCount() {
		a = &app{name: name, deps: map[string]*counter{}}
		b.apps[name] = a
	}
	return a
}

func (b *Budgets) limitedCount() int {
	n := 0
	for _, a := range b.apps {
		if a.limited {
			n++
		}
	}
	return n
}

// Reserve admits a request of app on a logical deployment estimated at cost tokens, or refuses
// it when the fleet's consumption in the window plus cost would exceed a budget that applies.
// An admitted request's estimate counts until Settle replaces it with its real usage.
func (b *Budgets) Reserve(appName, logical string, cost int64, now time.Time) Grant {
	g := Grant{App: appName, Logical: logical, Cost: max(cost, 0), OK: true}
	a := b.app(appName)
	if a == nil {
		return g
	}
	cur := b.slotOf(now)
	others := *b.others.Load()
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.counter(logical)
	type check struct {
		scope               string
		limit, used, others int64
	}
	var checks [2]check
	n := 0
	if l := a.per[logical]; l > 0 {
		o := others[appName][logical]
		checks[n] = check{logical, l, c.used(cur) + o, o}
		n++
	}
	if a.overall > 0 {
		var own int64
		for _, dc := range a.deps {
			own += dc.used(cur)
		}
		o := others[appName][""]
		checks[n] = check{"", a.overall, own + o, o}
		n++
	}
	if n > 0 {
		g.Limited, g.Remaining = true, math.MaxInt64
	}
	for _, ch := range checks[:n] {
		left := ch.limit - ch.used - g.Cost
		if left < 0 {
			g.OK, g.Scope, g.Limit, g.Remaining = false, ch.scope, ch.limit, max(0, ch.limit-ch.used)
			g.TooLarge = g.Cost > ch.limit
			g.RetryAfter = b.retryAfter(a, ch.scope, -left, ch.others, g.TooLarge, now, cur)
			c.refused++
			return g
		}
		if left < g.Remaining {
			g.Remaining, g.Limit, g.Scope = left, ch.limit, ch.scope
		}
	}
	c.inflight += g.Cost
	g.slot, g.tracked = cur, true
	return g
}

// retryAfter estimates when a budget can take deficit more tokens: this instance's own
// consumption leaves the window at known times (to the slot), the other instances' (others, as
// last published) is taken to leave evenly over the window. Answers under way leave last. At
// least one slot, at most the window.
func (b *Budgets) retryAfter(a *app, scope string, deficit, others int64, tooLarge bool, now time.Time, cur int64) time.Duration {
	if tooLarge {
		return b.window
	}
	type piece struct{ slot, tokens int64 }
	var pieces []piece
	for name, c := range a.deps {
		if scope != "" && name != scope {
			continue
		}
		for i := range c.at {
			if c.at[i] > cur-slots && c.tokens[i] > 0 {
				pieces = append(pieces, piece{c.at[i], c.tokens[i]})
			}
		}
	}
	sort.Slice(pieces, func(i, j int) bool { return pieces[i].slot < pieces[j].slot })
	rate := float64(others) / b.window.Seconds() // tokens per second the others' part frees
	wait := b.window
	var freed float64
	for _, p := range pieces {
		at := time.Unix(0, (p.slot+slots)*int64(b.slot)).Sub(now).Seconds()
		if rate > 0 && freed+rate*at >= float64(deficit) {
			break
		}
		freed += float64(p.tokens)
		if freed+rate*max(at, 0) >= float64(deficit) {
			wait = time.Duration(at * float64(time.Second))
			rate = 0
			break
		}
	}
	if rate > 0 {
		wait = min(wait, time.Duration((float64(deficit)-freed)/rate*float64(time.Second)))
	}
	return min(max(wait, b.slot), b.window)
}

// Settle replaces a granted request's estimate with what it used (its answer's usage; the
// estimate when the answer said none; 0 when nothing was served).
func (b *Budgets) Settle(g Grant, used int64, now time.Time) {
	if !g.tracked {
		return
	}
	a := b.app(g.App)
	if a == nil {
		return
	}
	cur := b.slotOf(now)
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.counter(g.Logical)
	c.inflight -= g.Cost
	if used <= 0 {
		return
	}
	c.total += used
	if g.slot <= cur-slots {
		return // admitted more than a window ago: it no longer counts
	}
	i := g.slot % slots
	if c.at[i] != g.slot {
		c.at[i], c.tokens[i] = g.slot, 0
	}
	c.tokens[i] += used
}

// counter returns the app's counter for a logical deployment. a.mu is held.
func (a *app) counter(logical string) *counter {
	c := a.deps[logical]
	if c == nil {
		c = &counter{}
		a.deps[logical] = c
	}
	return c
}

// used is the counter's consumption within the window ending in slot cur, answers under way
// included.
func (c *counter) used(cur int64) int64 {
	sum := c.inflight
	for i := range c.at {
		if c.at[i] > cur-slots {
			sum += c.tokens[i]
		}
	}
	return sum
}

// Own is what this instance publishes: per budgeted app and logical deployment, its
// consumption in the window (state.AppsExchange).
func (b *Budgets) Own(now time.Time) map[string]map[string]int64 {
	cur := b.slotOf(now)
	b.mu.RLock()
	defer b.mu.RUnlock()
	var out map[string]map[string]int64
	for name, a := range b.apps {
		if !a.limited {
			continue
		}
		a.mu.Lock()
		for logical, c := range a.deps {
			if u := c.used(cur); u > 0 {
				if out == nil {
					out = map[string]map[string]int64{}
				}
				if out[name] == nil {
					out[name] = map[string]int64{}
				}
				out[name][logical] = u
			}
		}
		a.mu.Unlock()
	}
	return out
}

// Others takes the other instances' reports after each read of the store
// (state.AppsExchange). A report counts for a window after it was made: by then everything it
// counted has left the window (a live instance renews it every refresh while it changes).
func (b *Budgets) Others(reports []state.Report, now time.Time) {
	fig := fleetFigures{}
	for _, r := range reports {
		if now.Sub(r.At) >= b.window {
			continue
		}
		for name, deps := range r.Apps {
			m := fig[name]
			if m == nil {
				m = map[string]int64{}
				fig[name] = m
			}
			for logical, v := range deps {
				m[logical] += v
				m[""] += v
			}
		}
	}
	b.others.Store(&fig)
}

// AppStatus is one app's consumption, for /status and the metrics.
type AppStatus struct {
	App string `json:"app"`
	// TokensPerMinute is the app's overall budget (absent: none).
	TokensPerMinute int64 `json:"tokensPerMinute,omitempty"`
	// UsedTokens is this instance's consumption in the window; FleetUsedTokens adds what the
	// other instances last published (budgeted apps only).
	UsedTokens      int64 `json:"usedTokens"`
	FleetUsedTokens int64 `json:"fleetUsedTokens"`
	// RemainingTokens is what the overall budget has left, fleet-wide.
	RemainingTokens *int64 `json:"remainingTokens,omitempty"`
	// TotalTokens and Refused count since this instance started.
	TotalTokens int64                       `json:"totalTokens"`
	Refused     int64                       `json:"refused"`
	Deployments map[string]DeploymentStatus `json:"deployments,omitempty"`
}

// DeploymentStatus is an app's consumption on one logical deployment.
type DeploymentStatus struct {
	TokensPerMinute int64  `json:"tokensPerMinute,omitempty"`
	UsedTokens      int64  `json:"usedTokens"`
	FleetUsedTokens int64  `json:"fleetUsedTokens"`
	RemainingTokens *int64 `json:"remainingTokens,omitempty"`
	TotalTokens     int64  `json:"totalTokens"`
	Refused         int64  `json:"refused"`
}

// Window is the budgets' window.
func (b *Budgets) Window() time.Duration { return b.window }

// Status returns every app's consumption, sorted by name.
func (b *Budgets) Status(now time.Time) []AppStatus {
	cur := b.slotOf(now)
	others := *b.others.Load()
	b.mu.RLock()
	apps := make([]*app, 0, len(b.apps))
	for _, a := range b.apps {
		apps = append(apps, a)
	}
	b.mu.RUnlock()
	out := make([]AppStatus, 0, len(apps))
	for _, a := range apps {
		s := AppStatus{App: a.name, TokensPerMinute: a.overall, Deployments: map[string]DeploymentStatus{}}
		a.mu.Lock()
		names := map[string]bool{}
		for n := range a.deps {
			names[n] = true
		}
		for n := range a.per {
			names[n] = true
		}
		for n := range names {
			var d DeploymentStatus
			if c := a.deps[n]; c != nil {
				d.UsedTokens, d.TotalTokens, d.Refused = c.used(cur), c.total, c.refused
			}
			d.FleetUsedTokens = d.UsedTokens + others[a.name][n]
			if l := a.per[n]; l > 0 {
				d.TokensPerMinute = l
				left := max(0, l-d.FleetUsedTokens)
				d.RemainingTokens = &left
			}
			s.UsedTokens += d.UsedTokens
			s.TotalTokens += d.TotalTokens
			s.Refused += d.Refused
			s.Deployments[n] = d
		}
		a.mu.Unlock()
		s.FleetUsedTokens = s.UsedTokens + others[a.name][""]
		if a.overall > 0 {
			left := max(0, a.overall-s.FleetUsedTokens)
			s.RemainingTokens = &left
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].App < out[j].App })
	return out
}
