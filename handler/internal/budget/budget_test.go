package budget

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/state"
	"github.com/aoai-failover/gateway/tests/azurite"
)

var t0 = time.Unix(1_800_000_000, 0)

// TestBudgets: per app, overall and per logical deployment, the estimate reserved at admission
// and replaced by the real usage, the window sliding, and refusals saying what is left and when
// to come back.
func TestBudgets(t *testing.T) {
	b := New(Options{Window: time.Minute, Apps: map[string]App{
		"overall": {TokensPerMinute: 1000},
		"per":     {Deployments: map[string]int64{"chat": 500}},
		"both":    {TokensPerMinute: 1000, Deployments: map[string]int64{"chat": 800}},
	}})
	type req struct {
		app, logical string
		cost, used   int64         // used < 0: not settled (under way)
		after        time.Duration // clock advance before
		ok, limited  bool
		remaining    int64
		scope        string
		retryAfter   time.Duration // when refused, within a second
	}
	now := t0
	for i, r := range []req{
		// Overall budget: 600 reserved, 400 left; 500 more does not fit.
		{app: "overall", logical: "chat", cost: 600, used: -1, ok: true, limited: true, remaining: 400},
		{app: "overall", logical: "embed", cost: 500, used: 0, ok: false, limited: true, remaining: 400, retryAfter: time.Minute}, // the 600 is under way
		// Unlimited app: always admitted, not limited.
		{app: "free", logical: "chat", cost: 1 << 40, used: 5, ok: true},
		// Per deployment: chat bounded, embed not.
		{app: "per", logical: "chat", cost: 400, used: 100, ok: true, limited: true, remaining: 100, scope: "chat"},
		{app: "per", logical: "chat", cost: 400, used: 400, ok: true, limited: true, remaining: 0, scope: "chat"}, // 100 real + 400
		{app: "per", logical: "chat", cost: 10, used: 0, ok: false, limited: true, remaining: 0, scope: "chat", retryAfter: time.Minute},
		{app: "per", logical: "embed", cost: 100000, used: 1, ok: true},
		// Both: the tighter one says what is left; the other one refuses when it is hit.
		{app: "both", logical: "chat", cost: 700, used: -1, ok: true, limited: true, remaining: 100, scope: "chat"},
		{app: "both", logical: "embed", cost: 400, used: 0, ok: false, limited: true, remaining: 300, scope: "", retryAfter: time.Minute},
		{app: "both", logical: "embed", cost: 250, used: 250, ok: true, limited: true, remaining: 50, scope: ""},
		// A request larger than the budget can never pass.
		{app: "per", logical: "chat", cost: 501, used: 0, ok: false, limited: true, remaining: 0, scope: "chat", retryAfter: time.Minute},
		// A window later everything settled has left.
		{app: "per", logical: "chat", cost: 500, after: time.Minute, used: 0, ok: true, limited: true, remaining: 0, scope: "chat"},
	} {
		now = now.Add(r.after)
		g := b.Reserve(r.app, r.logical, r.cost, now)
		if g.OK != r.ok || g.Limited != r.limited || (r.limited && (g.Remaining != r.remaining || g.Scope != r.scope)) {
			t.Fatalf("request %d (%s %s %d): %+v", i, r.app, r.logical, r.cost, g)
		}
		if !r.ok && (g.RetryAfter < r.retryAfter-time.Second || g.RetryAfter > r.retryAfter+time.Second) {
			t.Errorf("request %d: retry after %v, want about %v", i, g.RetryAfter, r.retryAfter)
		}
		if r.ok && r.used >= 0 {
			b.Settle(g, r.used, now)
		}
	}
	// The overall app's 600 is still under way; "free" used 5.
	st := map[string]AppStatus{}
	for _, s := range b.Status(now) {
		st[s.App] = s
	}
	if s := st["free"]; s.TotalTokens != 5 || s.TokensPerMinute != 0 || s.RemainingTokens != nil {
		t.Errorf("free: %+v", s)
	}
	if s := st["per"]; s.Deployments["chat"].TokensPerMinute != 500 || s.Deployments["chat"].Refused != 2 || s.TotalTokens != 501 {
		t.Errorf("per: %+v", s)
	}
}

// TestBudgetRetryAfterFollowsTheWindow: a refusal's retry-after is when this instance's own
// consumption leaves the window enough for the request.
func TestBudgetRetryAfterFollowsTheWindow(t *testing.T) {
	b := New(Options{Window: time.Minute, Apps: map[string]App{"a": {TokensPerMinute: 1000}}})
	g := b.Reserve("a", "chat", 600, t0)
	b.Settle(g, 600, t0)
	g = b.Reserve("a", "chat", 300, t0.Add(20*time.Second))
	b.Settle(g, 300, t0.Add(20*time.Second))
	// 900 used: 400 more must wait until the first 600 leaves, at t0+60 s.
	r := b.Reserve("a", "chat", 400, t0.Add(30*time.Second))
	if r.OK || r.RetryAfter < 29*time.Second || r.RetryAfter > 31*time.Second {
		t.Fatalf("%+v: want refused for about 30 s", r)
	}
	if g := b.Reserve("a", "chat", 400, t0.Add(30*time.Second+r.RetryAfter)); !g.OK {
		t.Errorf("refused again at the time it said: %+v", g)
	} else {
		b.Settle(g, 0, t0.Add(30*time.Second+r.RetryAfter)) // failed: nothing used
	}
	// Other instances' consumption is taken to leave evenly over the window.
	b.Others([]state.Report{{Instance: "x", At: t0.Add(50 * time.Second), Apps: map[string]map[string]int64{"a": {"chat": 600}}}}, t0.Add(50*time.Second))
	// At t0+61 s: own 300 (leaves at t0+80 s), others 600 (10 a second): 200 more (100 over)
	// waits 10 s.
	if r := b.Reserve("a", "chat", 200, t0.Add(61*time.Second)); r.OK || r.RetryAfter < 9*time.Second || r.RetryAfter > 11*time.Second {
		t.Errorf("%+v: want refused for about 10 s", r)
	}
}

// fleet is n instances, each a view of the shared state with its budgets.
type fleet struct {
	views   []*state.View
	budgets []*Budgets
}

func newFleet(t *testing.T, n int, store func(i int) state.Store, now func() time.Time, window time.Duration, apps map[string]App) *fleet {
	f := &fleet{}
	for i := 0; i < n; i++ {
		b := New(Options{Window: window, Apps: apps})
		v := state.NewView(state.Options{Targets: []string{"a/x"}, Store: store(i), Instance: fmt.Sprintf("i%d", i),
			CircuitFailures: 3, SyncInterval: time.Second, Apps: b, Now: now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		f.views, f.budgets = append(f.views, v), append(f.budgets, b)
	}
	return f
}

func (f *fleet) sync(t *testing.T) {
	t.Helper()
	for _, v := range f.views { // everyone publishes, then everyone reads
		if err := v.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range f.views {
		if err := v.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// TestBudgetAcrossInstances: two instances sharing the state (a MemoryStore, and Table Storage
// through Azurite) enforce one budget: what one consumed, the other counts once published.
func TestBudgetAcrossInstances(t *testing.T) {
	run := func(t *testing.T, store func(i int) state.Store) {
		c := &clock{t: time.Now()}
		f := newFleet(t, 2, store, c.Now, time.Minute, map[string]App{"app-a": {TokensPerMinute: 1000, Deployments: map[string]int64{"chat": 600}}})
		a, b := f.budgets[0], f.budgets[1]
		g := a.Reserve("app-a", "chat", 400, c.Now())
		a.Settle(g, 500, c.Now()) // the real usage was more than the estimate
		f.sync(t)
		if g := b.Reserve("app-a", "chat", 150, c.Now()); g.OK {
			t.Fatalf("B admitted 150 on chat after A used 500 of 600: %+v", g)
		} else if g.Remaining != 100 || g.Scope != "chat" {
			t.Errorf("B's refusal: %+v", g)
		}
		g = b.Reserve("app-a", "embed", 400, c.Now())
		if !g.OK || g.Remaining != 100 || g.Scope != "" {
			t.Fatalf("B on embed: %+v", g)
		}
		f.sync(t)
		if g := a.Reserve("app-a", "embed", 200, c.Now()); g.OK {
			t.Errorf("A admitted 200 with 500+400 of 1000 used fleet-wide: %+v", g)
		}
		st := a.Status(c.Now())
		if len(st) != 1 || st[0].FleetUsedTokens != 900 || st[0].UsedTokens != 500 || *st[0].RemainingTokens != 100 {
			t.Errorf("A's status: %+v", st)
		}
		// A window later the fleet's consumption has left.
		c.Add(time.Minute + time.Second)
		f.sync(t)
		if g := b.Reserve("app-a", "chat", 550, c.Now()); !g.OK {
			t.Errorf("a window later: %+v", g)
		}
	}
	t.Run("memory", func(t *testing.T) {
		s := state.NewMemoryStore()
		run(t, func(int) state.Store { return s })
	})
	t.Run("table", func(t *testing.T) {
		az := azurite.Start(t)
		svc, err := state.NewServiceClient(az.ConnectionString, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		run(t, func(int) state.Store {
			s := state.NewTableStore(svc, "budgets", "p")
			if err := s.EnsureTable(context.Background()); err != nil {
				t.Fatal(err)
			}
			return s
		})
	})
}

// TestBudgetErrorBound measures the stated bound: with N instances that publish every
// refresh, the fleet admits at most the budget plus what the instances admit between two
// publications (N x one instance's admissions in that time), and a simultaneous burst on N
// instances before any publication at most N budgets.
func TestBudgetErrorBound(t *testing.T) {
	const budget, cost, n = 10_000, 100, 4
	apps := map[string]App{"app": {TokensPerMinute: budget}}

	// A burst reaching every instance before any publication: each admits up to the budget.
	c := &clock{t: t0}
	s := state.NewMemoryStore()
	f := newFleet(t, n, func(int) state.Store { return s }, c.Now, time.Minute, apps)
	admitted := 0
	for i := 0; i < 1000; i++ {
		if g := f.budgets[i%n].Reserve("app", "chat", cost, c.Now()); g.OK {
			f.budgets[i%n].Settle(g, cost, c.Now())
			admitted += cost
		}
	}
	if admitted != n*budget {
		t.Errorf("a burst before any publication admitted %d, want exactly N budgets = %d", admitted, n*budget)
	}
	f.sync(t)
	for i := 0; i < n; i++ {
		if g := f.budgets[i].Reserve("app", "chat", cost, c.Now()); g.OK {
			t.Errorf("instance %d admitted after the fleet's figures were published", i)
		}
	}

	// Steady traffic: every instance gets perTick tokens' worth of requests between two
	// refreshes. Within any window the fleet admits at most budget + N*perTick.
	for _, perTick := range []int{100, 500, 2000} {
		c := &clock{t: t0}
		s := state.NewMemoryStore()
		f := newFleet(t, n, func(int) state.Store { return s }, c.Now, time.Minute, apps)
		var log []struct {
			at time.Time
			n  int
		}
		worst := 0
		for tick := 0; tick < 180; tick++ {
			for i := 0; i < n; i++ {
				for k := 0; k < perTick/cost; k++ {
					if g := f.budgets[i].Reserve("app", "chat", cost, c.Now()); g.OK {
						f.budgets[i].Settle(g, cost, c.Now())
						log = append(log, struct {
							at time.Time
							n  int
						}{c.Now(), cost})
					}
				}
			}
			inWindow := 0
			for _, e := range log {
				if c.Now().Sub(e.at) < time.Minute {
					inWindow += e.n
				}
			}
			worst = max(worst, inWindow)
			c.Add(time.Second)
			f.sync(t)
		}
		bound := budget + n*perTick
		t.Logf("%d instances, %d tokens each per refresh: at most %d admitted in a window (budget %d, bound %d)", n, perTick, worst, budget, bound)
		if worst > bound {
			t.Errorf("%d tokens per refresh: %d admitted in a window, over the bound %d", perTick, worst, bound)
		}
		if worst < budget*9/10 {
			t.Errorf("%d tokens per refresh: only %d of the budget %d used", perTick, worst, budget)
		}
	}
}

// TestBudgetsConcurrent runs reservations, settlements, publications and reads at once (-race).
func TestBudgetsConcurrent(t *testing.T) {
	b := New(Options{Window: time.Second, Apps: map[string]App{"a": {TokensPerMinute: 1 << 30, Deployments: map[string]int64{"chat": 1 << 20}}}})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				now := time.Now()
				app := []string{"a", "b", fmt.Sprintf("c%d", i%3)}[i%3]
				g := b.Reserve(app, "chat", int64(i%50), now)
				b.Settle(g, int64(i%40), now)
				if i%100 == 0 {
					b.Own(now)
					b.Status(now)
					b.Others([]state.Report{{Instance: "x", At: now, Apps: map[string]map[string]int64{"a": {"chat": 5}}}}, now)
				}
			}
		}(w)
	}
	wg.Wait()
}
