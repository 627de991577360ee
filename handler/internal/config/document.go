package config

import (
	"encoding/json"
	"time"
)

// Routing is the routing document from GATEWAY_CONFIG.
type Routing struct {
	KeyVault    string              `json:"keyVault"`
	Accounts    map[string]Account  `json:"accounts"`
	Deployments map[string][]Target `json:"deployments"`
	Clients     *Clients            `json:"clients"`
	Timeouts    Timeouts            `json:"timeouts"`
	Throttle    Throttle            `json:"throttle"`
	Circuit     Circuit             `json:"circuit"`
	Limits      Limits              `json:"limits"`
	Secrets     Secrets             `json:"secrets"`
	// DefaultDeployment is the logical deployment whose first available account creates and
	// lists account-bound resources (files, batches, vector stores, conversations) when the
	// request names none. Empty: the only logical deployment, if there is one.
	DefaultDeployment string `json:"defaultDeployment"`
	// CORS, when set, answers browsers' preflight requests from the named origins.
	CORS *CORS `json:"cors"`
	// State configures what the gateway remembers of stateful resources.
	State StateSettings `json:"state"`
	// Admission lets requests of the named logical deployments wait briefly, in a bounded FIFO
	// queue, for a target to free up instead of getting 429 at once. Opt-in per logical name.
	Admission map[string]Admission `json:"admission"`
	// Budgets gives apps (as authentication names them) tokens-per-minute budgets, enforced
	// across the fleet through the shared state.
	Budgets *Budgets `json:"budgets"`
}

// Admission is one logical deployment's admission wait: when every target is throttled (or its
// quota is known to be spent) and the soonest frees within MaxWait, a request waits for it.
type Admission struct {
	// MaxWait is the longest a request waits for a target, counted from its first wait; a
	// target that frees later means 429 at once. Required, at most timeouts.request.
	MaxWait Duration `json:"maxWait"`
	// MaxQueued bounds the requests waiting at once on this instance. Default 1000.
	MaxQueued int `json:"maxQueued"`
	// MaxQueuedBytes bounds the request bodies those waiting requests hold. Default 64 MiB.
	MaxQueuedBytes int64 `json:"maxQueuedBytes"`
}

// Budgets are the apps' token budgets.
type Budgets struct {
	// Window is the "minute" of tokensPerMinute: consumption is counted over a sliding window of
	// this length. Default 1m; a setting so that a time-scaled benchmark measures the same design.
	Window Duration `json:"window"`
	// Apps maps an app's name (a client key's app name, or an Entra identity's) to its budget.
	Apps map[string]AppBudget `json:"apps"`
}

// AppBudget is one app's budget: overall, per logical deployment, or both.
type AppBudget struct {
	// TokensPerMinute bounds the app's tokens across every logical deployment; 0: no overall bound.
	TokensPerMinute int64 `json:"tokensPerMinute"`
	// Deployments bounds the app's tokens per minute on each named logical deployment.
	Deployments map[string]int64 `json:"deployments"`
}

// CORS lets browser apps on the named origins call the gateway.
type CORS struct {
	// AllowedOrigins are exact origins ("https://app.contoso.com"); "*" allows any.
	AllowedOrigins []string `json:"allowedOrigins"`
	// MaxAge is how long a browser may keep a preflight's answer. Default 10m.
	MaxAge Duration `json:"maxAge"`
}

// StateSettings bound the records of which account owns a stateful resource.
type StateSettings struct {
	// OwnerTTL is how long a record is kept: Azure OpenAI keeps stored responses 30 days.
	OwnerTTL Duration `json:"ownerTtl"`
	// MaxCachedOwners bounds the records one instance keeps in memory. Default 100000.
	MaxCachedOwners int `json:"maxCachedOwners"`
}

// DefaultLogical is the logical deployment that serves requests naming none: the configured
// default, or the only one.
func (r *Routing) DefaultLogical() string {
	if r.DefaultDeployment != "" || len(r.Deployments) != 1 {
		return r.DefaultDeployment
	}
	for name := range r.Deployments {
		return name
	}
	return ""
}

// Secrets configures how Key Vault secrets are kept.
type Secrets struct {
	// Refresh is how often every secret is read again (with jitter).
	Refresh Duration `json:"refresh"`
}

// Account is one Azure OpenAI resource.
type Account struct {
	Endpoint string `json:"endpoint"`
	Region   string `json:"region"`
	Auth     Auth   `json:"auth"`
}

// Auth says how the gateway authenticates to an account: exactly one field is set.
type Auth struct {
	KeyVaultSecret  string `json:"keyVaultSecret"`
	ManagedIdentity bool   `json:"managedIdentity"`
	KeyEnv          string `json:"keyEnv"`
}

// Target is one real deployment behind a logical name.
type Target struct {
	Account    string `json:"account"`
	Deployment string `json:"deployment"`
	// Priority and Weight are pointers so that "absent" (default 1) differs from 0 (invalid).
	Priority *int `json:"priority"`
	Weight   *int `json:"weight"`
}

// ID is the target's identity, "account/deployment".
func (t Target) ID() string { return t.Account + "/" + t.Deployment }

// PriorityOrDefault is the target's priority, 1 when absent.
func (t Target) PriorityOrDefault() int { return intOr(t.Priority, 1) }

// WeightOrDefault is the target's weight, 1 when absent.
func (t Target) WeightOrDefault() int { return intOr(t.Weight, 1) }

func intOr(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}

// Clients says how callers authenticate.
type Clients struct {
	KeyVaultSecret string `json:"keyVaultSecret"`
	Entra          *Entra `json:"entra"`
	Anonymous      bool   `json:"anonymous"`
}

// Entra configures Entra ID bearer tokens for callers.
type Entra struct {
	TenantID string   `json:"tenantId"`
	Audience string   `json:"audience"`
	Roles    []string `json:"roles"`
	// Authority is where the tenant's OpenID configuration lives; default
	// https://login.microsoftonline.com (sovereign clouds and tests set their own).
	Authority string `json:"authority"`
}

// Timeouts bound every stage of a request so that no caller ever hangs.
type Timeouts struct {
	// Connect bounds dialling and the TLS handshake to a target.
	Connect Duration `json:"connect"`
	// FirstByte bounds the wait for a streaming target's first event, and is the base of a
	// non-streaming target's wait for its response headers.
	FirstByte Duration `json:"firstByte"`
	// PerOutputToken is added to a non-streaming request's header wait for each output token it
	// asks for, because Azure OpenAI sends the headers only once the whole completion is done.
	PerOutputToken Duration `json:"perOutputToken"`
	// DefaultOutputTokens is assumed when a non-streaming request does not say how many it wants.
	DefaultOutputTokens int `json:"defaultOutputTokens"`
	// StreamIdle bounds silence once a response has started.
	StreamIdle Duration `json:"streamIdle"`
	// Request bounds the whole request, all attempts included.
	Request Duration `json:"request"`
	// Shutdown bounds how long in-flight requests may finish after SIGTERM.
	Shutdown Duration `json:"shutdown"`
	// RequestBody bounds how long a caller may take to send its body.
	RequestBody Duration `json:"requestBody"`
	// RealtimeIdle ends a Realtime WebSocket session through which nothing has passed, either
	// way, for this long. Voice sessions go quiet between turns, hence minutes rather than the
	// seconds of StreamIdle.
	RealtimeIdle Duration `json:"realtimeIdle"`
	// RealtimeSession bounds a Realtime WebSocket session's whole life, handshake included.
	RealtimeSession Duration `json:"realtimeSession"`
}

// Throttle configures what a 429 does.
type Throttle struct {
	// DefaultRetryAfter applies when a 429 carries no usable wait.
	DefaultRetryAfter Duration `json:"defaultRetryAfter"`
	// MaxRetryAfter caps any wait a target asks for (Azure can say "retry after 86400 seconds").
	MaxRetryAfter Duration `json:"maxRetryAfter"`
	// RouteByRemaining: a target the quota model (its last x-ratelimit-remaining-tokens and
	// -requests, less what was sent it since, plus its refill) says cannot admit the request's
	// estimated cost now is passed over until it can, as a throttled one is. Default true.
	RouteByRemaining *bool `json:"routeByRemaining"`
	// TokenWindow is the window over which a target's token limit frees up (Azure OpenAI's
	// limits are per minute): the quota model refills a target's tokens at limit/TokenWindow per
	// second. Default 1m; a setting so that a time-scaled benchmark measures the same design.
	TokenWindow Duration `json:"tokenWindow"`
	// RequestWindow is the window a target's x-ratelimit-remaining-requests counts in (Azure
	// evaluates requests per minute in 10-second buckets of RPM/6). Default 10s.
	RequestWindow Duration `json:"requestWindow"`
}

// RouteByRemainingOrDefault is RouteByRemaining, true when absent.
func (t Throttle) RouteByRemainingOrDefault() bool {
	return t.RouteByRemaining == nil || *t.RouteByRemaining
}

// Circuit configures when a failing target is taken out of rotation.
type Circuit struct {
	// Failures is how many consecutive failures (5xx, connection errors, timeouts) open the circuit.
	Failures int `json:"failures"`
	// Cooldown is how long an open circuit keeps the target out before one probe request.
	Cooldown Duration `json:"cooldown"`
	// Misconfigured is how long a target answering 401/403/404 is reported failing and skipped.
	Misconfigured Duration `json:"misconfigured"`
}

// Limits bound what a caller may send.
type Limits struct {
	MaxRequestBodyBytes int64 `json:"maxRequestBodyBytes"`
	// MaxConcurrentRequests bounds the requests one instance forwards at once; past it,
	// callers get 503 with retry-after at once (load shed) instead of everyone slowing down.
	MaxConcurrentRequests int `json:"maxConcurrentRequests"`
	// MaxPendingBodies bounds the requests whose bodies are still arriving. They hold no
	// forwarding slot, each is bounded by timeouts.requestBody and holds only what it has
	// sent; past this bound, callers get 503 with retry-after at once.
	MaxPendingBodies int `json:"maxPendingBodies"`
	// MaxStreamEventBytes bounds one server-sent event of a backend's stream, and so what one
	// stream holds in memory; a larger event ends the stream with the in-band error event.
	// Image generation streams carry whole images (base64) in one event.
	MaxStreamEventBytes int `json:"maxStreamEventBytes"`
}

// Defaults for every tunable; README.md documents them.
const (
	DefaultConnect             = 5 * time.Second
	DefaultFirstByte           = 20 * time.Second
	DefaultPerOutputToken      = 50 * time.Millisecond
	DefaultOutputTokens        = 1000
	DefaultStreamIdle          = 30 * time.Second
	DefaultRequest             = 220 * time.Second
	DefaultShutdown            = 20 * time.Second
	DefaultRequestBody         = 60 * time.Second
	DefaultRealtimeIdle        = 10 * time.Minute
	DefaultRealtimeSession     = 30 * time.Minute
	DefaultRetryAfter          = 10 * time.Second
	DefaultMaxRetryAfter       = 5 * time.Minute
	DefaultCircuitFailures     = 3
	DefaultCircuitCooldown     = 10 * time.Second
	DefaultMisconfigured       = 30 * time.Second
	DefaultMaxRequestBodyBytes = 64 << 20
	DefaultSecretsRefresh      = 5 * time.Minute
	DefaultMaxConcurrent       = 4096
	DefaultMaxPendingBodies    = 16384
	DefaultMaxStreamEventBytes = 64 << 20
	DefaultCORSMaxAge          = 10 * time.Minute
	DefaultOwnerTTL            = 30 * 24 * time.Hour
	DefaultMaxCachedOwners     = 100_000
	DefaultTokenWindow         = time.Minute
	DefaultRequestWindow       = 10 * time.Second
	DefaultMaxQueued           = 1000
	DefaultMaxQueuedBytes      = 64 << 20
	DefaultBudgetWindow        = time.Minute
	// FunctionsRequestLimit is the Functions host's hard limit on an HTTP-triggered request.
	FunctionsRequestLimit = 230 * time.Second
	// MaxRealtimeSession is the longest a WebSocket connection lasts through Azure Front Door.
	MaxRealtimeSession = 4 * time.Hour
)

func (r *Routing) applyDefaults() {
	t := &r.Timeouts
	setDur(&t.Connect, DefaultConnect)
	setDur(&t.FirstByte, DefaultFirstByte)
	setDur(&t.PerOutputToken, DefaultPerOutputToken)
	if t.DefaultOutputTokens == 0 {
		t.DefaultOutputTokens = DefaultOutputTokens
	}
	setDur(&t.StreamIdle, DefaultStreamIdle)
	setDur(&t.Request, DefaultRequest)
	setDur(&t.Shutdown, DefaultShutdown)
	setDur(&t.RequestBody, DefaultRequestBody)
	setDur(&t.RealtimeIdle, DefaultRealtimeIdle)
	setDur(&t.RealtimeSession, DefaultRealtimeSession)
	setDur(&r.Throttle.DefaultRetryAfter, DefaultRetryAfter)
	setDur(&r.Throttle.MaxRetryAfter, DefaultMaxRetryAfter)
	setDur(&r.Throttle.TokenWindow, DefaultTokenWindow)
	setDur(&r.Throttle.RequestWindow, DefaultRequestWindow)
	for name, a := range r.Admission {
		if a.MaxQueued == 0 {
			a.MaxQueued = DefaultMaxQueued
		}
		if a.MaxQueuedBytes == 0 {
			a.MaxQueuedBytes = DefaultMaxQueuedBytes
		}
		r.Admission[name] = a
	}
	if r.Budgets != nil {
		setDur(&r.Budgets.Window, DefaultBudgetWindow)
	}
	if r.Circuit.Failures == 0 {
		r.Circuit.Failures = DefaultCircuitFailures
	}
	setDur(&r.Circuit.Cooldown, DefaultCircuitCooldown)
	setDur(&r.Circuit.Misconfigured, DefaultMisconfigured)
	setDur(&r.Secrets.Refresh, DefaultSecretsRefresh)
	if r.Limits.MaxConcurrentRequests == 0 {
		r.Limits.MaxConcurrentRequests = DefaultMaxConcurrent
	}
	if r.Limits.MaxPendingBodies == 0 {
		r.Limits.MaxPendingBodies = DefaultMaxPendingBodies
	}
	if r.CORS != nil && r.CORS.MaxAge == 0 {
		r.CORS.MaxAge = Duration(DefaultCORSMaxAge)
	}
	setDur(&r.State.OwnerTTL, DefaultOwnerTTL)
	if r.State.MaxCachedOwners == 0 {
		r.State.MaxCachedOwners = DefaultMaxCachedOwners
	}
	if r.Limits.MaxStreamEventBytes == 0 {
		r.Limits.MaxStreamEventBytes = DefaultMaxStreamEventBytes
	}
	if r.Limits.MaxRequestBodyBytes == 0 {
		r.Limits.MaxRequestBodyBytes = DefaultMaxRequestBodyBytes
	}
}

func setDur(d *Duration, def time.Duration) {
	if *d == 0 {
		*d = Duration(def)
	}
}

// Duration is a time.Duration written in JSON as a Go duration string ("250ms", "30s").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON never fails: an unreadable value becomes invalidDuration, which validation
// reports with the field's path, so one bad value does not hide the document's other problems.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		*d = invalidDuration
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		*d = invalidDuration
		return nil
	}
	*d = Duration(v)
	return nil
}

const invalidDuration = Duration(-1)
