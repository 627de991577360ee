package state

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	def, limit := 10*time.Second, 5*time.Minute
	for _, tc := range []struct {
		name   string
		hdr    map[string]string
		want   time.Duration
		source string
	}{
		{"nothing", nil, def, "default"},
		{"ms first", map[string]string{"retry-after-ms": "1500", "retry-after": "9", "x-ratelimit-reset-tokens": "30"}, 1500 * time.Millisecond, "retry-after-ms"},
		{"fractional ms", map[string]string{"retry-after-ms": "12.5"}, 12500 * time.Microsecond, "retry-after-ms"},
		{"seconds", map[string]string{"retry-after": "7", "x-ratelimit-reset-requests": "30"}, 7 * time.Second, "retry-after"},
		{"http date", map[string]string{"retry-after": now.Add(42 * time.Second).Format(http.TimeFormat)}, 42 * time.Second, "retry-after"},
		{"http date in the past", map[string]string{"retry-after": now.Add(-time.Hour).Format(http.TimeFormat)}, 0, "retry-after"},
		{"reset tokens, Azure seconds", map[string]string{"x-ratelimit-reset-tokens": "55"}, 55 * time.Second, "x-ratelimit-reset-tokens"},
		{"reset requests, OpenAI form", map[string]string{"x-ratelimit-reset-requests": "6m0s"}, limit, "x-ratelimit-reset-requests"},
		{"reset in ms form", map[string]string{"x-ratelimit-reset-requests": "20ms"}, 20 * time.Millisecond, "x-ratelimit-reset-requests"},
		{"both resets: the later", map[string]string{"x-ratelimit-reset-requests": "3", "x-ratelimit-reset-tokens": "1s"}, 3 * time.Second, "x-ratelimit-reset"},
		{"garbage ms falls through", map[string]string{"retry-after-ms": "soon", "retry-after": "4"}, 4 * time.Second, "retry-after"},
		{"negative ms falls through", map[string]string{"retry-after-ms": "-5", "retry-after": "4"}, 4 * time.Second, "retry-after"},
		{"NaN falls through", map[string]string{"retry-after-ms": "NaN", "retry-after": "NaN", "x-ratelimit-reset-tokens": "2"}, 2 * time.Second, "x-ratelimit-reset-tokens"},
		{"garbage everywhere", map[string]string{"retry-after": "tomorrow", "x-ratelimit-reset-tokens": "-1s"}, def, "default"},
		{"a day is capped", map[string]string{"retry-after": "86400"}, limit, "retry-after"},
		{"absurd is capped", map[string]string{"retry-after-ms": "1e300"}, limit, "retry-after-ms"},
		{"overflowing seconds are capped", map[string]string{"retry-after": "99999999999999999999"}, limit, "retry-after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tc.hdr {
				h.Set(k, v)
			}
			got, source := RetryAfter(h, now, def, limit)
			if got != tc.want || source != tc.source {
				t.Errorf("got %s from %s, want %s from %s", got, source, tc.want, tc.source)
			}
		})
	}
}

// clock is a settable time source for the view.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestView(c *clock, store Store) *View {
	if store == nil {
		store = NewMemoryStore()
	}
	return NewView(Options{
		Targets: []string{"a/x", "b/y"}, Store: store, Instance: "test",
		CircuitFailures: 3, CircuitCooldown: 10 * time.Second, Misconfigured: 30 * time.Second,
		CooldownJitter: func(d time.Duration) time.Duration { return d }, // exact times below
		ProbeTimeout:   time.Minute, Now: c.Now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
}

func TestCooldownJitter(t *testing.T) {
	v := NewView(Options{Targets: []string{"a/x"}, Store: NewMemoryStore(), CircuitFailures: 1, CircuitCooldown: 10 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	seen := map[time.Duration]bool{}
	for i := 0; i < 200; i++ {
		d := v.opt.CooldownJitter(10 * time.Second)
		if d < 10*time.Second || d > 12500*time.Millisecond {
			t.Fatalf("cool-down %v outside [10s, 12.5s]", d)
		}
		seen[d.Round(100*time.Millisecond)] = true
	}
	if len(seen) < 10 {
		t.Errorf("cool-downs barely vary: %v", seen)
	}
}

func TestThrottle(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	v := newTestView(c, nil)
	v.Record("a/x", Outcome{Kind: Throttled, Status: 429, Wait: 20 * time.Second, Quota: UnknownQuota})
	until, throttled, skip := v.Unavailable("a/x", c.Now())
	if !skip || !throttled || !until.Equal(c.Now().Add(20*time.Second)) {
		t.Fatalf("after 429: %v %v %v", until, throttled, skip)
	}
	v.Record("a/x", Outcome{Kind: Throttled, Status: 429, Wait: 5 * time.Second, Quota: UnknownQuota})
	if until2, _, _ := v.Unavailable("a/x", c.Now()); !until2.Equal(until) {
		t.Errorf("a shorter wait moved the deadline earlier: %v", until2)
	}
	if _, _, skip := v.Unavailable("b/y", c.Now()); skip {
		t.Errorf("another target affected")
	}
	c.Add(20 * time.Second)
	if _, _, skip := v.Unavailable("a/x", c.Now()); skip {
		t.Errorf("still skipped after the wait")
	}
}

func TestCircuit(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	v := newTestView(c, nil)
	fail := func() { v.Record("a/x", Outcome{Kind: Failed, Status: 503, Quota: UnknownQuota}) }
	fail()
	fail()
	v.Record("a/x", Outcome{Kind: Succeeded, Status: 200, Quota: UnknownQuota}) // resets the count
	fail()
	fail()
	if _, _, skip := v.Unavailable("a/x", c.Now()); skip {
		t.Fatal("opened before 3 consecutive failures")
	}
	fail()
	until, throttled, skip := v.Unavailable("a/x", c.Now())
	if !skip || throttled || !until.Equal(c.Now().Add(10*time.Second)) {
		t.Fatalf("circuit not open: %v %v %v", until, throttled, skip)
	}
	if s := v.Snapshot(c.Now())[0]; s.State != "failing" || s.FailingUntil == nil {
		t.Errorf("snapshot %+v", s)
	}

	// Cool-down over: one probe at a time.
	c.Add(10 * time.Second)
	if _, _, skip := v.Unavailable("a/x", c.Now()); skip {
		t.Fatal("not offered for a probe after the cool-down")
	}
	if !v.Acquire("a/x", c.Now()) {
		t.Fatal("first probe refused")
	}
	if v.Acquire("a/x", c.Now()) {
		t.Fatal("second concurrent probe allowed")
	}
	if _, _, skip := v.Unavailable("a/x", c.Now()); !skip {
		t.Error("others not told to skip while the probe runs")
	}
	if s := v.Snapshot(c.Now())[0]; s.State != "probing" {
		t.Errorf("state %q", s.State)
	}
	// The probe fails: open again at once, without waiting for 3 failures.
	fail()
	if _, _, skip := v.Unavailable("a/x", c.Now()); !skip {
		t.Fatal("a failed probe did not reopen the circuit")
	}
	// Next probe succeeds: closed, everyone may use it, Acquire is free.
	c.Add(10 * time.Second)
	if !v.Acquire("a/x", c.Now()) {
		t.Fatal("probe refused")
	}
	v.Record("a/x", Outcome{Kind: Succeeded, Status: 200, Quota: UnknownQuota})
	if _, _, skip := v.Unavailable("a/x", c.Now()); skip || !v.Acquire("a/x", c.Now()) || !v.Acquire("a/x", c.Now()) {
		t.Error("circuit not closed after a successful probe")
	}
	if s := v.Snapshot(c.Now())[0]; s.State != "available" {
		t.Errorf("state %q", s.State)
	}
}

func TestAbandonedAndMisconfigured(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	v := newTestView(c, nil)
	for i := 0; i < 5; i++ {
		v.Record("a/x", Outcome{Kind: Abandoned, Quota: UnknownQuota})
	}
	if s := v.Snapshot(c.Now())[0]; s.State != "available" || s.ConsecutiveFailures != 0 || s.LastStatus != 0 {
		t.Errorf("abandoned attempts counted: %+v", s)
	}
	// An abandoned probe releases the probe slot.
	for i := 0; i < 3; i++ {
		v.Record("a/x", Outcome{Kind: Failed, Quota: UnknownQuota})
	}
	c.Add(10 * time.Second)
	v.Acquire("a/x", c.Now())
	v.Record("a/x", Outcome{Kind: Abandoned, Quota: UnknownQuota})
	if !v.Acquire("a/x", c.Now()) {
		t.Error("an abandoned probe kept the slot")
	}

	v.Record("b/y", Outcome{Kind: Misconfigured, Status: 401, Reason: "401", Quota: UnknownQuota})
	until, throttled, skip := v.Unavailable("b/y", c.Now())
	if !skip || throttled || !until.Equal(c.Now().Add(30*time.Second)) {
		t.Errorf("misconfigured: %v %v %v", until, throttled, skip)
	}
	if s := v.Snapshot(c.Now())[1]; s.State != "failing" || s.LastStatus != 401 {
		t.Errorf("snapshot %+v", s)
	}
}

func TestQuota(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	v := newTestView(c, nil)
	v.Record("a/x", Outcome{Kind: Succeeded, Status: 200, Quota: Quota{Tokens: 900, Requests: 5}})
	v.Record("a/x", Outcome{Kind: Succeeded, Status: 200, Quota: UnknownQuota}) // keeps what was known
	s := v.Snapshot(c.Now())[0]
	if s.RemainingTokens == nil || *s.RemainingTokens != 900 || s.RemainingRequests == nil || *s.RemainingRequests != 5 || s.RemainingSeenAt == nil {
		t.Errorf("quota %+v", s)
	}
	if s := v.Snapshot(c.Now())[1]; s.RemainingTokens != nil {
		t.Errorf("quota invented: %+v", s)
	}
}

func TestSharingThroughStore(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	store := NewMemoryStore()
	v1, v2 := newTestView(c, store), newTestView(c, store)
	v1.Record("a/x", Outcome{Kind: Throttled, Status: 429, Wait: 30 * time.Second, Quota: UnknownQuota})
	ctx := context.Background()
	v1.Sync(ctx)
	v2.Sync(ctx)
	until, throttled, skip := v2.Unavailable("a/x", c.Now())
	if !skip || !throttled || !until.Equal(c.Now().Add(30*time.Second)) {
		t.Fatalf("the other instance did not learn the mark: %v %v %v", until, throttled, skip)
	}
	if s := v2.Snapshot(c.Now())[0]; s.LastStatus != 429 {
		t.Errorf("status not shared: %+v", s)
	}
	// Merge keeps the later deadline whatever the order of writes.
	store.Merge(ctx, Mark{Target: "a/x", ThrottledUntil: c.Now().Add(time.Second)})
	marks, _, _ := store.List(ctx)
	if len(marks) != 1 || !marks[0].ThrottledUntil.Equal(c.Now().Add(30*time.Second)) {
		t.Errorf("store moved a deadline earlier: %+v", marks)
	}
	// A mark already in the past is not written.
	v1.Record("b/y", Outcome{Kind: Throttled, Status: 429, Wait: time.Second, Quota: UnknownQuota})
	c.Add(2 * time.Second)
	v1.Sync(ctx)
	if marks, _, _ := store.List(ctx); len(marks) != 1 {
		t.Errorf("a stale mark was written: %+v", marks)
	}
	// Unknown targets in the store are ignored.
	store.Merge(ctx, Mark{Target: "zzz/other", ThrottledUntil: c.Now().Add(time.Hour)})
	v2.Sync(ctx)
	if len(v2.Snapshot(c.Now())) != 2 {
		t.Errorf("unknown target added to the view")
	}
}

type flakyStore struct {
	*MemoryStore
	mu   sync.Mutex
	down bool
}

func (f *flakyStore) setDown(d bool) { f.mu.Lock(); f.down = d; f.mu.Unlock() }
func (f *flakyStore) isDown() bool   { f.mu.Lock(); defer f.mu.Unlock(); return f.down }

func (f *flakyStore) Merge(ctx context.Context, m Mark) error {
	if f.isDown() {
		return errors.New("store unreachable")
	}
	return f.MemoryStore.Merge(ctx, m)
}

func (f *flakyStore) List(ctx context.Context) ([]Mark, []Report, error) {
	if f.isDown() {
		return nil, nil, errors.New("store unreachable")
	}
	return f.MemoryStore.List(ctx)
}

func (f *flakyStore) Publish(ctx context.Context, r Report) error {
	if f.isDown() {
		return errors.New("store unreachable")
	}
	return f.MemoryStore.Publish(ctx, r)
}

func TestStoreDown(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	store := &flakyStore{MemoryStore: NewMemoryStore(), down: true}
	v := newTestView(c, store)
	v.Record("a/x", Outcome{Kind: Throttled, Status: 429, Wait: time.Minute, Quota: UnknownQuota})
	v.Sync(context.Background())
	if h := v.Health(); h.Healthy || h.LastError == "" {
		t.Errorf("health %+v", h)
	}
	if _, _, skip := v.Unavailable("a/x", c.Now()); !skip {
		t.Error("local state lost while the store is down")
	}
	store.setDown(false)
	v.Sync(context.Background())
	if h := v.Health(); !h.Healthy || h.LastSync.IsZero() {
		t.Errorf("health after recovery %+v", h)
	}
	marks, _, _ := store.List(context.Background())
	if len(marks) != 1 || marks[0].Target != "a/x" || marks[0].Instance != "test" {
		t.Errorf("the mark made while the store was down was not written: %+v", marks)
	}
}

func TestConcurrentUse(t *testing.T) {
	v := NewView(Options{Targets: []string{"a/x", "b/y"}, Store: NewMemoryStore(), CircuitFailures: 2, CircuitCooldown: time.Millisecond, Misconfigured: time.Millisecond, ProbeTimeout: time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	go v.Run(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				id := []string{"a/x", "b/y"}[i%2]
				now := time.Now()
				v.Unavailable(id, now)
				if v.Acquire(id, now) {
					v.Record(id, Outcome{Kind: Kind(i % 5), Status: 500, Wait: time.Millisecond, Quota: Quota{Tokens: int64(i), Requests: -1}})
				}
				if i%50 == 0 {
					v.Snapshot(now)
					v.Health()
				}
			}
		}(g)
	}
	wg.Wait()
}

// countingStore counts the store calls the view makes.
type countingStore struct {
	*MemoryStore
	mu                       sync.Mutex
	merges, lists, publishes int
}

func (c *countingStore) Publish(ctx context.Context, r Report) error {
	c.mu.Lock()
	c.publishes++
	c.mu.Unlock()
	return c.MemoryStore.Publish(ctx, r)
}

func (c *countingStore) published() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.publishes
}

func (c *countingStore) Merge(ctx context.Context, m Mark) error {
	c.mu.Lock()
	c.merges++
	c.mu.Unlock()
	return c.MemoryStore.Merge(ctx, m)
}

func (c *countingStore) List(ctx context.Context) ([]Mark, []Report, error) {
	c.mu.Lock()
	c.lists++
	c.mu.Unlock()
	return c.MemoryStore.List(ctx)
}

func (c *countingStore) counts() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.merges, c.lists
}

// TestStoreTransactions pins the cost in store calls: the request path makes none, a steady
// state makes one List per refresh, marks for the same target coalesce into one Merge, and an
// instance publishes its report at most once per refresh, only while its figures change (one
// more when it goes idle), and not at all while idle.
func TestStoreTransactions(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	store := &countingStore{MemoryStore: NewMemoryStore()}
	v := newTestView(c, store)
	for i := 0; i < 1000; i++ {
		now := c.Now()
		v.Unavailable("a/x", now)
		v.Room("a/x", now, 300)
		v.Acquire("a/x", now)
		s := v.Sent("a/x", now, 300)
		v.Record("a/x", Outcome{Kind: Succeeded, Status: 200, Quota: Quota{Tokens: 5, Requests: 1}, Send: s})
	}
	if m, l := store.counts(); m != 0 || l != 0 || store.published() != 0 {
		t.Fatalf("the request path called the store: %d merges, %d lists, %d publishes", m, l, store.published())
	}
	v.Sync(context.Background()) // the traffic above is reported
	for i := 0; i < 60; i++ {    // then a minute of idle refreshes at the default 1 s
		c.Add(time.Second)
		v.Sync(context.Background())
	}
	if m, l := store.counts(); m != 0 || l != 61 {
		t.Errorf("steady state: %d merges, %d lists per minute; want 0 and 61", m, l)
	}
	// One report with the traffic, one saying the instance sends nothing now, then silence
	// (rates span two intervals, so the second interval still reports half the first's rate).
	if p := store.published(); p < 2 || p > 3 {
		t.Errorf("an idle minute after traffic made %d publishes, want 2 or 3", p)
	}
	// Busy: at most one publish per refresh, whatever the number of requests.
	before := store.published()
	for i := 0; i < 60; i++ {
		for j := 0; j < 100; j++ {
			v.Sent("a/x", c.Now(), int64(100+i))
		}
		c.Add(time.Second)
		v.Sync(context.Background())
	}
	if p := store.published() - before; p > 60 {
		t.Errorf("a busy minute made %d publishes, want at most 60", p)
	}
	for i := 0; i < 50; i++ {
		v.Record("b/y", Outcome{Kind: Throttled, Status: 429, Wait: time.Duration(i+5) * time.Second, Quota: UnknownQuota})
	}
	v.Sync(context.Background())
	if m, _ := store.counts(); m != 1 {
		t.Errorf("50 marks of one target made %d merges, want 1", m)
	}
}

// TestFarMarksAreIgnored: one instance with a wrong clock (or a bug) writing a deadline far
// ahead cannot keep a target out, while marks within MaxAhead are honoured.
func TestFarMarksAreIgnored(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	store := NewMemoryStore()
	store.Merge(context.Background(), Mark{Target: "a/x", ThrottledUntil: c.Now().Add(24 * time.Hour), Updated: c.Now()})
	store.Merge(context.Background(), Mark{Target: "b/y", ThrottledUntil: c.Now().Add(4 * time.Minute), Updated: c.Now()})
	v := NewView(Options{Targets: []string{"a/x", "b/y"}, Store: store, CircuitFailures: 3, MaxAhead: 5 * time.Minute, Now: c.Now,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	for i := 0; i < 3; i++ {
		v.Sync(context.Background())
		if _, _, skip := v.Unavailable("a/x", c.Now()); skip {
			t.Fatalf("a mark a day ahead kept the target out")
		}
		c.Add(time.Second)
	}
	if _, _, skip := v.Unavailable("b/y", c.Now()); !skip {
		t.Error("a mark within MaxAhead was not honoured")
	}
}

func TestExpandConnectionString(t *testing.T) {
	for _, in := range []string{"UseDevelopmentStorage=true", "usedevelopmentstorage=true;", " UseDevelopmentStorage=true "} {
		if got := ExpandConnectionString(in); !strings.Contains(got, "AccountName=devstoreaccount1") || !strings.Contains(got, "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1") {
			t.Errorf("%q expanded to %q", in, got)
		}
	}
	if cs := "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=b"; ExpandConnectionString(cs) != cs {
		t.Error("a real connection string was changed")
	}
	if _, err := NewServiceClient("AccountName=a;AccountKey=not base64!", "", nil); err == nil || strings.Contains(err.Error(), "not base64") {
		t.Errorf("a broken connection string: %v (the error must not quote it)", err)
	}
}
