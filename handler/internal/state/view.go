package state

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Kind says what an attempt on a target showed.
type Kind int

const (
	// Succeeded: the target answered (2xx, or a 4xx that is the caller's problem).
	Succeeded Kind = iota
	// Throttled: 429; the target is skipped until the wait has passed.
	Throttled
	// Failed: 5xx, 408, connection error or timeout; enough of them in a row open the circuit.
	Failed
	// Misconfigured: 401/403/404; the target is reported failing and skipped for a while.
	Misconfigured
	// Abandoned: the caller went away; nothing was learned about the target.
	Abandoned
)

// Outcome is what an attempt tells the view.
type Outcome struct {
	Kind   Kind
	Status int           // HTTP status, 0 for a connection error or timeout
	Wait   time.Duration // for Throttled
	// WaitExact: Wait is the target's own (retry-after-ms, retry-after, x-ratelimit-reset-*),
	// not a default or a capped one; the quota model then learns a limit from it.
	WaitExact bool
	Reason    string // short, for /status and logs; never secret
	// Quota is what the answer said is left (x-ratelimit-remaining-*); Limit what the limits
	// are (x-ratelimit-limit-*, when the answer says).
	Quota, Limit Quota
	// Send is the attempt's charge as View.Sent counted it (zero: none was counted).
	Send Send
	// Uncharged: the target did not count the attempt against its quota (a 429, a credential it
	// refused, a connection that failed before the request reached it).
	Uncharged bool
	// Latency is the time to the answer's first byte, for a Succeeded outcome.
	Latency time.Duration
}

// Quota is a target's remaining (or total) rate-limit budget.
type Quota struct {
	Tokens, Requests int64 // -1 (or 0 for a limit) when unknown
}

// UnknownQuota is a Quota with nothing known.
var UnknownQuota = Quota{Tokens: -1, Requests: -1}

// Options configure a View.
type Options struct {
	Targets         []string      // every target id the view tracks
	Store           Store         // where marks are shared
	Shared          bool          // whether Store reaches other instances (for /status)
	Instance        string        // this instance's name, written with its marks
	CircuitFailures int           // consecutive failures that open the circuit
	CircuitCooldown time.Duration // how long an open circuit skips the target, at least
	// CooldownJitter lengthens each cool-down a little, differently on each instance, so that a
	// fleet whose circuits opened together does not probe together: the first instance's probe
	// result reaches the others through the store before their own cool-downs end. Nil: a random
	// 0 to 25% more.
	CooldownJitter func(time.Duration) time.Duration
	Misconfigured  time.Duration // how long a 401/403/404 target is skipped
	ProbeTimeout   time.Duration // how long one probe may hold a half-open target
	SyncInterval   time.Duration // how often the store is read
	// MaxAhead: a mark read from the store that reaches further into the future is ignored, so
	// that one instance with a wrong clock (or a bug) cannot keep a target out at all.
	MaxAhead time.Duration
	// TokenWindow and RequestWindow are the windows the targets' token and request limits free
	// up over (the quota model, quota.go). Zero: a minute and 10 s, as Azure OpenAI counts.
	TokenWindow, RequestWindow time.Duration
	// Apps, if set, publishes and receives the apps' budget consumption with the reports.
	Apps   AppsExchange
	Now    func() time.Time
	Logger *slog.Logger
}

// View is the in-memory picture of every target that requests read. Its methods never wait
// for the store: marks are written through by Run in the background.
type View struct {
	opt     Options
	targets map[string]*target

	pendMu  sync.Mutex
	pending map[string]Mark
	kick    chan struct{}

	healthMu sync.Mutex
	health   StoreHealth

	seq atomic.Uint64 // numbers sends

	lastReport    time.Time // the refresh loop's alone
	reportMu      sync.Mutex
	lastPublished Report
	published     bool
	others        map[string]Report // other instances' latest reports, by instance
}

type target struct {
	mu             sync.Mutex
	throttledUntil time.Time
	failingUntil   time.Time
	probeUntil     time.Time // a probe of a half-open target is in flight until then
	lastSuccess    time.Time
	failures       int
	lastStatus     int
	lastReason     string
	lastChange     time.Time
	ignored        time.Time // Updated of the last far mark ignored, to log it once
	served         int64
	latency        time.Duration // moving average of recent first-byte latencies

	// The quota model (quota.go).
	quota          Quota     // the last reading of what is left
	quotaAt        time.Time // as of when: the send time of the request whose answer said it
	quotaSeq       uint64    // that request's send number
	limit          Quota     // the limits: from the headers or inferred; 0 unknown
	limitHeader    bool      // the token limit came from x-ratelimit-limit-tokens
	limitHeaderReq bool      // the request limit came from x-ratelimit-limit-requests
	lastSeq        uint64    // the newest send's number
	sends          []Send    // this instance's sends the reading does not cover, oldest first
	// otherTok and otherReq are what the other instances report sending, per second.
	otherTok, otherReq float64
	// This instance's own sending, for its reports: since the last report, and in the interval
	// before it (of length prevSpan).
	curTok, curReq, prevTok, prevReq int64
	prevSpan                         time.Duration
}

// NewView returns a view of opt.Targets, all available.
func NewView(opt Options) *View {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.SyncInterval <= 0 {
		opt.SyncInterval = time.Second
	}
	if opt.CooldownJitter == nil {
		opt.CooldownJitter = func(d time.Duration) time.Duration { return d + rand.N(d/4+1) }
	}
	if opt.TokenWindow <= 0 {
		opt.TokenWindow = time.Minute
	}
	if opt.RequestWindow <= 0 {
		opt.RequestWindow = 10 * time.Second
	}
	v := &View{opt: opt, targets: map[string]*target{}, pending: map[string]Mark{}, kick: make(chan struct{}, 1), others: map[string]Report{}}
	for _, id := range opt.Targets {
		v.targets[id] = &target{quota: UnknownQuota}
	}
	v.health = StoreHealth{Shared: opt.Shared, Healthy: true}
	return v
}

// Unavailable reports whether a target should be left out of a plan at now, and if so until
// when and whether because it is throttled (else failing).
func (v *View) Unavailable(id string, now time.Time) (until time.Time, throttled, skip bool) {
	t := v.targets[id]
	if t == nil {
		return time.Time{}, false, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case now.Before(t.throttledUntil):
		return t.throttledUntil, true, true
	case now.Before(t.failingUntil):
		return t.failingUntil, false, true
	case t.halfOpen(now) && now.Before(t.probeUntil):
		// Another request is probing whether the target has recovered.
		return t.probeUntil, false, true
	}
	return time.Time{}, false, false
}

// Room reports whether the quota model (quota.go) says the target can admit a request
// estimated at cost tokens now, and if not, when it will. Unknown budgets count as room: only a
// known shortfall says no.
func (v *View) Room(id string, now time.Time, cost int64) (until time.Time, ok bool) {
	t := v.targets[id]
	if t == nil || cost <= 0 {
		return time.Time{}, true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	until = t.shortUntil(now, cost, v.opt.TokenWindow, v.opt.RequestWindow)
	return until, until.IsZero()
}

// Acquire is called just before an attempt. It returns false when the target's circuit is
// half-open and another request already holds the one probe.
func (v *View) Acquire(id string, now time.Time) bool {
	t := v.targets[id]
	if t == nil {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.halfOpen(now) {
		return true
	}
	if now.Before(t.probeUntil) {
		return false
	}
	t.probeUntil = now.Add(v.opt.ProbeTimeout)
	return true
}

// halfOpen: the circuit opened, its cool-down has passed, and no success has been seen since.
func (t *target) halfOpen(now time.Time) bool {
	return !t.failingUntil.IsZero() && !now.Before(t.failingUntil) && t.lastSuccess.Before(t.failingUntil)
}

// Record takes an attempt's outcome.
func (v *View) Record(id string, o Outcome) {
	t := v.targets[id]
	if t == nil {
		return
	}
	now := v.opt.Now()
	var share *Mark
	t.mu.Lock()
	t.probeUntil = time.Time{}
	if o.Send.Seq != 0 {
		if o.Uncharged || o.Kind == Throttled {
			t.uncharge(o.Send)
		} else {
			t.settle(o.Send)
		}
	}
	if o.Quota.Tokens >= 0 || o.Quota.Requests >= 0 {
		t.read(o, now, v.opt.TokenWindow, v.opt.RequestWindow)
	}
	if o.Kind != Abandoned {
		t.lastStatus, t.lastReason, t.lastChange = o.Status, o.Reason, now
	}
	switch o.Kind {
	case Succeeded:
		t.failures = 0
		t.lastSuccess = now
		if o.Latency > 0 {
			t.served++
			if t.latency == 0 {
				t.latency = o.Latency
			} else { // recent answers weigh most: an average over roughly the last ten
				t.latency += (o.Latency - t.latency) / 10
			}
		}
	case Throttled:
		t.throttledUntil = later(t.throttledUntil, now.Add(o.Wait))
		share = &Mark{ThrottledUntil: t.throttledUntil}
	case Failed:
		t.failures++
		wasProbe := t.halfOpen(now)
		if wasProbe || t.failures >= v.opt.CircuitFailures {
			t.failures = 0
			t.failingUntil = later(t.failingUntil, now.Add(v.opt.CooldownJitter(v.opt.CircuitCooldown)))
			share = &Mark{FailingUntil: t.failingUntil}
			v.opt.Logger.Warn("circuit opened", "target", id, "until", t.failingUntil, "reason", o.Reason, "probe", wasProbe)
		}
	case Misconfigured:
		t.failingUntil = later(t.failingUntil, now.Add(v.opt.Misconfigured))
		share = &Mark{FailingUntil: t.failingUntil}
	}
	t.mu.Unlock()
	if share != nil {
		share.Target, share.Status, share.Reason, share.Instance, share.Updated = id, o.Status, o.Reason, v.opt.Instance, now
		v.enqueue(*share)
	}
}

// ignoreFar logs, once per mark, that a mark too far ahead was ignored.
func (v *View) ignoreFar(m Mark) {
	t := v.targets[m.Target]
	if t == nil {
		return
	}
	t.mu.Lock()
	seen := t.ignored.Equal(m.Updated)
	t.ignored = m.Updated
	t.mu.Unlock()
	if !seen {
		v.opt.Logger.Warn("ignored a shared mark too far in the future; the writing instance's clock is probably wrong",
			"target", m.Target, "instance", m.Instance, "throttledUntil", m.ThrottledUntil, "failingUntil", m.FailingUntil, "limit", v.opt.MaxAhead.String())
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func (v *View) enqueue(m Mark) {
	v.pendMu.Lock()
	if cur, ok := v.pending[m.Target]; ok {
		cur.merge(m)
		m = cur
	}
	v.pending[m.Target] = m
	v.pendMu.Unlock()
	select {
	case v.kick <- struct{}{}:
	default:
	}
}

// maxBackoff bounds the wait between attempts to reach a store that is failing.
const maxBackoff = 30 * time.Second

// Run writes marks through to the store and reads other instances' marks, until ctx ends.
// While the store fails it is tried again with a doubling wait, up to 30 s.
func (v *View) Run(ctx context.Context) {
	wait := v.opt.SyncInterval
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-v.kick:
			if v.Health().Healthy {
				pctx, cancel := context.WithTimeout(ctx, syncTimeout)
				if err := v.push(pctx); err != nil {
					v.setHealth(err)
				}
				cancel()
			}
		case <-timer.C:
			if v.Sync(ctx) != nil {
				wait = min(2*wait, maxBackoff)
			} else {
				wait = v.opt.SyncInterval
			}
			timer.Reset(wait)
		}
	}
}

// syncTimeout bounds one round trip to the store, so a hung store never stalls the loop.
const syncTimeout = 5 * time.Second

// Sync writes pending marks, publishes this instance's report when it says something new, and
// reads the store once.
func (v *View) Sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	err := v.push(ctx)
	if err == nil {
		err = v.publish(ctx, v.opt.Now())
	}
	if err == nil {
		err = v.pull(ctx)
	}
	v.setHealth(err)
	return err
}

// Flush writes pending marks that are still in the future; used at shutdown.
func (v *View) Flush(ctx context.Context) error { return v.push(ctx) }

func (v *View) push(ctx context.Context) error {
	v.pendMu.Lock()
	batch := v.pending
	v.pending = map[string]Mark{}
	v.pendMu.Unlock()
	now := v.opt.Now()
	var firstErr error
	for id, m := range batch {
		if !m.ThrottledUntil.After(now) && !m.FailingUntil.After(now) {
			continue // nothing left to tell anyone
		}
		if err := v.opt.Store.Merge(ctx, m); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			v.pendMu.Lock()
			if cur, ok := v.pending[id]; ok {
				m.merge(cur)
			}
			v.pending[id] = m
			v.pendMu.Unlock()
		}
	}
	return firstErr
}

func (v *View) pull(ctx context.Context) error {
	marks, reports, err := v.opt.Store.List(ctx)
	if err != nil {
		return err
	}
	v.takeReports(reports, v.opt.Now())
	limit := time.Time{}
	if v.opt.MaxAhead > 0 {
		limit = v.opt.Now().Add(v.opt.MaxAhead)
	}
	for _, m := range marks {
		if !limit.IsZero() && (m.ThrottledUntil.After(limit) || m.FailingUntil.After(limit)) {
			// No sane instance writes that far ahead: its clock is wrong (or worse). Ignoring
			// the mark, rather than cutting it, keeps it from being renewed at every read.
			v.ignoreFar(m)
			continue
		}
		t := v.targets[m.Target]
		if t == nil {
			continue
		}
		t.mu.Lock()
		t.throttledUntil = later(t.throttledUntil, m.ThrottledUntil)
		t.failingUntil = later(t.failingUntil, m.FailingUntil)
		if m.Updated.After(t.lastChange) {
			t.lastStatus, t.lastReason, t.lastChange = m.Status, m.Reason, m.Updated
		}
		t.mu.Unlock()
	}
	return nil
}

// StoreHealth is how the shared store is doing, for /status and /healthz.
type StoreHealth struct {
	Shared    bool      `json:"shared"`
	Healthy   bool      `json:"healthy"`
	LastError string    `json:"lastError,omitempty"`
	LastSync  time.Time `json:"lastSync,omitzero"`
}

func (v *View) setHealth(err error) {
	v.healthMu.Lock()
	defer v.healthMu.Unlock()
	was := v.health.Healthy
	if err != nil {
		v.health.Healthy, v.health.LastError = false, err.Error()
		if was {
			v.opt.Logger.Warn("state store degraded; serving on local state", "error", err)
		}
		return
	}
	v.health.Healthy, v.health.LastError, v.health.LastSync = true, "", v.opt.Now()
	if !was {
		v.opt.Logger.Info("state store recovered")
	}
}

// Health returns the store's health.
func (v *View) Health() StoreHealth {
	v.healthMu.Lock()
	defer v.healthMu.Unlock()
	return v.health
}

// The states /status shows, machine-readable; the first that holds wins.
const (
	// StateThrottled: a 429's wait has not passed; every request skips the target.
	StateThrottled = "throttled"
	// StateFailing: its circuit is open (or it answered 401/403/404); every request skips it.
	StateFailing = "failing"
	// StateProbing: the circuit's cool-down has passed; one request at a time tries it.
	StateProbing = "probing"
	// StateDeprioritised: the quota model (Room) says it cannot admit a typical request now
	// (see TypicalRequestTokens), so requests pass it over until the refill covers what it
	// lacks (the planner's throttle.routeByRemaining), as they would a throttled target.
	StateDeprioritised = "deprioritised"
	// StateAvailable: requests try it in its preference order.
	StateAvailable = "available"
)

// TypicalRequestTokens is the estimated cost (prompt and requested output tokens, as the planner
// counts it) of the request that /status judges a target's remaining budget by: a short chat
// call. A target the quota model says cannot admit that now is shown deprioritised until it
// can; routing judges each request by its own estimate, so a larger request may be passed over
// sooner and longer.
const TypicalRequestTokens = 100

// TargetStatus is one target as /status shows it.
type TargetStatus struct {
	Target string `json:"target"`
	// State is one of available, deprioritised, throttled, failing, probing.
	State          string     `json:"state"`
	ThrottledUntil *time.Time `json:"throttledUntil,omitempty"`
	FailingUntil   *time.Time `json:"failingUntil,omitempty"`
	// DeprioritisedUntil is when the quota model expects it to admit a typical request again.
	DeprioritisedUntil *time.Time `json:"deprioritisedUntil,omitempty"`
	LastStatus         int        `json:"lastStatus,omitempty"`
	LastReason         string     `json:"lastReason,omitempty"`
	LastChange         *time.Time `json:"lastChange,omitempty"`
	RemainingTokens    *int64     `json:"remainingTokens,omitempty"`
	RemainingRequests  *int64     `json:"remainingRequests,omitempty"`
	RemainingSeenAt    *time.Time `json:"remainingSeenAt,omitempty"`
	// LimitTokens and LimitRequests are the limits the quota model uses (from the headers, or
	// inferred: LimitsInferred); EstimatedTokens is what it estimates the target can admit now.
	LimitTokens         *int64  `json:"limitTokens,omitempty"`
	LimitRequests       *int64  `json:"limitRequests,omitempty"`
	LimitsInferred      bool    `json:"limitsInferred,omitempty"`
	EstimatedTokens     *int64  `json:"estimatedTokens,omitempty"`
	OthersTokensPerSec  float64 `json:"othersTokensPerSec,omitempty"`
	ConsecutiveFailures int     `json:"consecutiveFailures"`
	Served              int64   `json:"served"`
	LatencyMs           float64 `json:"latencyMs,omitempty"`
}

// Snapshot returns every target's status, sorted by id.
func (v *View) Snapshot(now time.Time) []TargetStatus {
	out := make([]TargetStatus, 0, len(v.targets))
	for id, t := range v.targets {
		t.mu.Lock()
		s := TargetStatus{Target: id, State: StateAvailable, LastStatus: t.lastStatus, LastReason: t.lastReason, ConsecutiveFailures: t.failures,
			Served: t.served, LatencyMs: float64(t.latency.Microseconds()) / 1000}
		short := t.shortUntil(now, TypicalRequestTokens, v.opt.TokenWindow, v.opt.RequestWindow)
		switch {
		case now.Before(t.throttledUntil):
			s.State = StateThrottled
		case now.Before(t.failingUntil):
			s.State = StateFailing
		case t.halfOpen(now):
			s.State = StateProbing
		case !short.IsZero():
			s.State = StateDeprioritised
			s.DeprioritisedUntil = timePtr(short)
		}
		if now.Before(t.throttledUntil) {
			s.ThrottledUntil = timePtr(t.throttledUntil)
		}
		if now.Before(t.failingUntil) {
			s.FailingUntil = timePtr(t.failingUntil)
		}
		if !t.lastChange.IsZero() {
			s.LastChange = timePtr(t.lastChange)
		}
		if q := t.quota; q.Tokens >= 0 {
			s.RemainingTokens = &q.Tokens
		}
		if q := t.quota; q.Requests >= 0 {
			s.RemainingRequests = &q.Requests
		}
		if !t.quotaAt.IsZero() {
			s.RemainingSeenAt = timePtr(t.quotaAt)
		}
		if l := t.limit; l.Tokens > 0 {
			s.LimitTokens = &l.Tokens
			s.LimitsInferred = !t.limitHeader
			if est, ok := t.estimateTokens(now, v.opt.TokenWindow); ok {
				s.EstimatedTokens = &est
			}
		}
		if l := t.limit; l.Requests > 0 {
			s.LimitRequests = &l.Requests
			s.LimitsInferred = s.LimitsInferred || !t.limitHeaderReq
		}
		s.OthersTokensPerSec = round3(t.otherTok)
		t.mu.Unlock()
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Target < out[j].Target })
	return out
}

func timePtr(t time.Time) *time.Time { u := t.UTC(); return &u }
