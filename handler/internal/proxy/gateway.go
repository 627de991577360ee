// Package proxy is the forwarder: it reads and buffers a caller's request, tries the planned
// targets in order with the body replayed to each, classifies every outcome, and streams the
// first usable answer back. Nothing is sent to the caller before a target's first event (or
// first body bytes) has arrived, so a target that fails before that point costs the caller
// only time; after it there is no failover.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/apierr"
	"github.com/aoai-failover/gateway/handler/internal/budget"
	"github.com/aoai-failover/gateway/handler/internal/config"
	"github.com/aoai-failover/gateway/handler/internal/route"
	"github.com/aoai-failover/gateway/handler/internal/state"
	"github.com/aoai-failover/gateway/handler/internal/telemetry"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Credentials sets the backend credential for an account on an outgoing request's headers.
type Credentials interface {
	Authorize(ctx context.Context, account string, h http.Header) error
}

// Rotator is implemented by credentials that can be read again when a backend rejects them:
// Rotate reports whether the credential sent in h has since changed.
type Rotator interface {
	Rotate(ctx context.Context, account string, sent http.Header) bool
}

func (g *Gateway) rotate(ctx context.Context, account string, sent http.Header) bool {
	r, ok := g.opt.Credentials.(Rotator)
	return ok && r.Rotate(ctx, account, sent)
}

// State is what the forwarder needs of the shared target state.
type State interface {
	route.Availability
	Acquire(id string, now time.Time) bool
	// Sent counts a request estimated at tokens that is being sent to the target now, for the
	// quota model; the attempt's Outcome carries it back to Record.
	Sent(id string, now time.Time, tokens int64) state.Send
	Record(id string, o state.Outcome)
}

// Budgets is what the forwarder needs of the apps' token budgets (package budget): a request
// reserves its estimate before it is forwarded, and settles with its real usage once answered.
type Budgets interface {
	Reserve(app, logical string, cost int64, now time.Time) budget.Grant
	Settle(g budget.Grant, used int64, now time.Time)
}

// Options configure a Gateway. Every field is required except Logger, RequestLog and Now.
type Options struct {
	Planner      *route.Planner
	State        State
	Credentials  Credentials
	Transport    http.RoundTripper
	Timeouts     config.Timeouts
	Throttle     config.Throttle
	MaxBodyBytes int64
	// MaxConcurrent bounds the requests forwarded at once; a request takes a slot only once its
	// body has arrived whole. Zero means no bound.
	MaxConcurrent int
	// MaxPendingBodies bounds the requests whose bodies are still arriving; they wait on their
	// callers, not on a slot, and each is bounded by Timeouts.RequestBody. Zero means no bound.
	MaxPendingBodies int
	// Owners remembers which account holds each stateful resource (a response, a conversation,
	// a file, a batch, a vector store), for the fleet. Nil: this instance's memory only.
	Owners Owners
	// DefaultLogical is the logical deployment that creates and lists account-bound resources
	// when a request names none (the X-Gateway-Deployment header names one).
	DefaultLogical string
	// MaxEventBytes bounds one server-sent event of a stream, and so a stream's memory; a larger
	// event ends the stream with an error. Zero means 4 MiB.
	MaxEventBytes int
	// RouteByRemaining passes over targets that the quota model says cannot admit the request
	// now (state.View.Room), as it does throttled ones.
	RouteByRemaining bool
	// Admission holds the logical deployments whose requests may wait for a target to free up
	// (absent: none wait).
	Admission map[string]config.Admission
	// Budgets enforces the apps' token budgets; nil: none.
	Budgets Budgets
	Logger  *slog.Logger
	// RequestLog receives the one line written per request; nil writes none.
	RequestLog RequestLog
	// Tracer makes a span per request and one per attempt; nil traces nothing.
	Tracer trace.Tracer
	// Meter records the GenAI and failover metrics; nil records none.
	Meter metric.Meter
	Now   func() time.Time
}

// Owners is what the forwarder needs of the fleet's records of stateful resources.
type Owners interface {
	Remember(id, account string, now time.Time)
	Lookup(ctx context.Context, id string, now time.Time) (account string, ok bool)
}

// RequestLog takes finished request lines.
type RequestLog interface {
	Emit(l *telemetry.Line)
}

// Gateway serves the Azure OpenAI routes.
type Gateway struct {
	opt     Options
	metrics *instruments
	// servedBy holds each target's X-Served-By value, made once.
	servedBy map[string][]string
	slots    chan struct{}         // one per request being forwarded; nil: no bound
	pending  atomic.Int64          // requests whose bodies are arriving
	queues   map[string]*waitQueue // the admission wait of each logical deployment that has one
}

var (
	serverSpan = trace.WithSpanKind(trace.SpanKindServer)
	clientSpan = trace.WithSpanKind(trace.SpanKindClient)
	noSpan     = trace.SpanFromContext(context.Background())
)

// New returns a Gateway.
func New(opt Options) *Gateway {
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Owners == nil {
		opt.Owners = state.NewOwners(state.OwnersOptions{})
	}
	// Without a tracer no span is started at all (c.span stays noSpan, which never records).
	g := &Gateway{opt: opt, metrics: newInstruments(opt.Meter, opt.Budgets), queues: map[string]*waitQueue{}}
	for name, a := range opt.Admission {
		g.queues[name] = newWaitQueue(a)
	}
	if opt.MaxConcurrent > 0 {
		g.slots = make(chan struct{}, opt.MaxConcurrent)
	}
	g.servedBy = map[string][]string{}
	for _, t := range opt.Planner.Targets() {
		g.servedBy[t.ID] = []string{t.ID}
	}
	return g
}

// call is one caller request, read and understood.
type call struct {
	request
	method   string
	query    string
	path     string
	body     []byte
	info     bodyInfo
	inHeader http.Header // the caller's headers; filtered afresh for each attempt
	// pinnedTo is the account that holds the state the request is bound to: it is served
	// there or not at all. boundID names that state.
	pinnedTo, boundID string
	// creates: a successful answer creates a resource whose id is remembered with its owner.
	creates bool
	// cost is the request's estimate as Azure OpenAI's rate limiter counts it (estimate).
	cost int64
	// grant is the app's budget reservation, when budgeted; settled when the request ends.
	grant    budget.Grant
	budgeted bool
	// The admission wait: the queue the request waits in, its place while it holds the turn,
	// and when its wait must end.
	queue     *waitQueue
	turn      *waiter
	waitUntil time.Time
	queueFull bool // the queue had no room: the request does not wait
	span      trace.Span
	start     time.Time
	end       time.Time // when the caller had the whole answer, if that was before the handler returned
	log       requestLog
}

// setUpstreamURL makes u the target's URL for the call: its endpoint, the real deployment
// name in place of the logical one, and the caller's query string.
func (c *call) setUpstreamURL(u *url.URL, t route.Target) {
	*u = url.URL{Scheme: t.Scheme, Host: t.Authority, RawQuery: c.query}
	if c.fam == familyDeployments {
		u.Path = "/openai/deployments/" + t.Deployment + c.rest
	} else {
		u.Path = c.path
	}
}

func (c *call) bodyFor(t route.Target) []byte {
	if (c.fam == familyV1 || c.fam == familyResponses) && c.info.hasModel {
		return withModel(c.body, c.info, t.Deployment)
	}
	return c.body
}

// ServeHTTP handles one request on the Azure OpenAI routes from an unnamed caller.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.Serve(w, r, "") }

// InFlight is the number of requests being forwarded now.
func (g *Gateway) InFlight() int { return len(g.slots) }

// Serve handles one request on the Azure OpenAI routes from the authenticated caller app: it
// takes in the request (path, method, body), then a forwarding slot, then forwards it.
func (g *Gateway) Serve(w http.ResponseWriter, r *http.Request, app string) {
	c := &call{start: g.opt.Now(), path: r.URL.Path, query: r.URL.RawQuery, method: r.Method}
	c.log = requestLog{method: r.Method, path: r.URL.Path, app: app}
	c.log.attempts = c.log.firstAttempts[:0]
	c.span = noSpan
	if g.opt.Tracer != nil {
		_, c.span = g.opt.Tracer.Start(r.Context(), "gateway", serverSpan)
	}
	defer g.logRequest(c)

	rq, e := parsePath(r.URL.Path, r.URL.EscapedPath())
	if e == nil && !rq.fam.allows(r.Method) {
		e = apierr.New(http.StatusMethodNotAllowed, "MethodNotAllowed", "method "+r.Method+" is not allowed here; use "+rq.fam.methods()).With("Allow", rq.fam.methods())
	}
	if e == nil && rq.fam == familyModels {
		c.log.status = g.listModels(w, rq.logical)
		return
	}
	var plan route.Plan
	if e == nil {
		c.request = rq
		plan, e = g.intake(w, r, c)
	}
	if e == nil {
		e = g.reserve(w, c, app)
	}
	if e == nil {
		defer g.settle(c)
		if e = g.route(w, r, c, plan); e == nil {
			return
		}
	}
	if r.Context().Err() != nil {
		c.log.status = 499 // the caller left while sending its request: nobody to answer
		return
	}
	c.log.status = e.Status
	e.Write(w)
}

// route forwards the request, and when every target is throttled (or passed over) and the
// logical deployment has an admission wait, waits for the soonest to free up and plans again,
// within the wait's bounds. A waiting request holds no forwarding slot (only its body): it
// takes one each time it has a target to try.
func (g *Gateway) route(w http.ResponseWriter, r *http.Request, c *call, plan route.Plan) *apierr.Error {
	ctx := r.Context()
	if c.fam == familyDeployments || c.fam == familyV1 || c.fam == familyResponses {
		c.queue = g.queues[c.logical]
	}
	defer g.passTurn(c)
	for {
		if c.queue != nil {
			plan = g.await(ctx, c, plan)
		}
		release, e := g.admit()
		if e != nil {
			return e
		}
		tried, done := g.forward(w, r, c, plan)
		release()
		g.passTurn(c)
		if c.queue != nil {
			c.queue.kickHead() // a slot is free and readings are fresh: the next may look again
		}
		if done {
			return nil
		}
		if c.queue != nil && g.mayWait(c, tried, c.log.skipped) {
			plan = g.replan(c)
			continue
		}
		g.writeAllFailed(w, c, tried, c.log.skipped)
		return nil
	}
}

// admit takes a forwarding slot; past the bound the caller is told to retry shortly.
func (g *Gateway) admit() (release func(), e *apierr.Error) {
	if g.slots == nil {
		return func() {}, nil
	}
	select {
	case g.slots <- struct{}{}:
		return func() { <-g.slots }, nil
	default:
		return nil, apierr.New(http.StatusServiceUnavailable, "Overloaded",
			"this gateway instance is at its limit of concurrent requests; retry shortly").With("Retry-After", "1")
	}
}

// intake reads and understands the caller's request: its whole body, and the targets to try.
// The body's wait is the caller's own, bounded by its deadline and by the number of bodies that
// may be arriving at once; it holds no forwarding slot.
func (g *Gateway) intake(w http.ResponseWriter, r *http.Request, c *call) (route.Plan, *apierr.Error) {
	if max := int64(g.opt.MaxPendingBodies); max > 0 {
		n := g.pending.Add(1)
		defer g.pending.Add(-1)
		if n > max {
			return route.Plan{}, apierr.New(http.StatusServiceUnavailable, "Overloaded",
				"this gateway instance is receiving as many request bodies as it takes at once; retry shortly").With("Retry-After", "1")
		}
	}
	// The body must arrive within its own deadline: the server's header timeout ends with the
	// headers, and a body that trickles forever must not hold the request forever.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(c.start.Add(g.opt.Timeouts.RequestBody.D()))
	body, e := readBody(r, g.opt.MaxBodyBytes)
	_ = rc.SetReadDeadline(time.Time{})
	if e != nil {
		return route.Plan{}, e
	}
	c.body = body
	c.inHeader = r.Header
	ct := headerValue(r.Header, "Content-Type")
	jsonBody := isJSON(ct)
	if len(body) > 0 {
		switch boundary := formBoundary(ct); {
		case boundary != "":
			c.info, _ = scanForm(body, boundary)
		case jsonBody:
			// A body the gateway passes on as it is (the deployments family, calls on stored
			// resources) is only read, not validated: Azure OpenAI answers a malformed one
			// itself. The other families name the deployment in the body, which must therefore
			// be valid JSON.
			var ok bool
			c.info, ok = scanBody(body, c.fam == familyV1 || c.fam == familyResponses)
			if !ok && (c.fam == familyV1 || c.fam == familyResponses) {
				return route.Plan{}, apierr.New(http.StatusBadRequest, "InvalidRequest", "the request body is not a valid JSON object")
			}
			if c.info.boundTo == "" && c.fam != familyBound {
				c.info.boundTo = nestedStateID(body) // a file or vector store the request uses
			}
		}
	}
	switch c.fam {
	case familyBound:
		return g.planBound(r.Context(), c)
	case familyCollection:
		return g.planCollection(r.Context(), c)
	case familyV1, familyResponses:
		switch {
		case len(body) == 0:
			return route.Plan{}, apierr.New(http.StatusBadRequest, "InvalidRequest", "a request body is required: a JSON object (or a multipart form) whose \"model\" names the deployment")
		case formBoundary(ct) != "" && !c.info.hasModel:
			return route.Plan{}, apierr.New(http.StatusBadRequest, "InvalidRequest", "the multipart form has no \"model\" field naming the deployment")
		case !jsonBody && formBoundary(ct) == "":
			return route.Plan{}, apierr.New(http.StatusBadRequest, "InvalidRequest", "the request body must be JSON (Content-Type: application/json) or a multipart form")
		case !c.info.hasModel:
			return route.Plan{}, apierr.New(http.StatusBadRequest, "InvalidRequest", "the request body has no \"model\" string naming the deployment")
		}
		c.logical = c.info.model
		// Creating a response (not calling one by id) makes state that later turns refer to.
		c.creates = strings.HasSuffix(c.path, "/responses")
	}
	c.log.logical = c.logical
	c.log.stream = c.info.stream
	c.cost = g.estimate(c)

	plan, ok := g.opt.Planner.Plan(c.logical, g.opt.State, c.start, g.planCost(c))
	if !ok {
		return route.Plan{}, g.unknownDeployment(c.logical)
	}
	if c.info.boundTo != "" {
		return g.pin(r.Context(), c, plan, c.info.boundTo)
	}
	return plan, nil
}

func (g *Gateway) unknownDeployment(name string) *apierr.Error {
	return apierr.New(http.StatusNotFound, "DeploymentNotFound", fmt.Sprintf(
		"the deployment %q does not exist on this gateway; known deployments: %s",
		name, strings.Join(g.opt.Planner.Names(), ", ")))
}

// estimate is the request's cost as Azure OpenAI's rate limiter counts it: prompt tokens (a
// quarter of the body's bytes, which slightly overcounts the prompt's characters) plus the
// output tokens asked for. Zero (unknown) for a multipart form, whose bytes are a file's, not
// tokens: such a request is judged by no token estimate (quota model, budgets) and counted by
// its answer's usage.
func (g *Gateway) estimate(c *call) int64 {
	if len(c.body) == 0 || formBoundary(headerValue(c.inHeader, "Content-Type")) != "" {
		return 0
	}
	return int64(len(c.body)/4 + c.info.outputTokens)
}

// planCost is the estimate the planner judges targets' room by: zero (no passing over) when
// routing by remaining budget is off.
func (g *Gateway) planCost(c *call) int64 {
	if !g.opt.RouteByRemaining {
		return 0
	}
	return c.cost
}

// replan plans the request again (after a wait), keeping it on the account its state is bound
// to, if any.
func (g *Gateway) replan(c *call) route.Plan {
	plan, _ := g.opt.Planner.Plan(c.logical, g.opt.State, g.opt.Now(), g.planCost(c))
	if c.pinnedTo == "" {
		return plan
	}
	var pinned route.Plan
	for _, t := range plan.Candidates {
		if t.Account == c.pinnedTo {
			pinned.Candidates = append(pinned.Candidates, t)
		}
	}
	for _, s := range plan.Skipped {
		if s.Target.Account == c.pinnedTo {
			pinned.Skipped = append(pinned.Skipped, s)
		}
	}
	return pinned
}

// readBody reads the whole request body so that it can be replayed to each target. The buffer
// grows as bytes arrive, never to what the caller merely declares: a caller that announces
// 64 MiB and sends one byte costs what it sent.
func readBody(r *http.Request, max int64) ([]byte, *apierr.Error) {
	tooLarge := apierr.New(http.StatusRequestEntityTooLarge, "RequestTooLarge",
		"the request body is larger than the gateway's limit of "+strconv.FormatInt(max, 10)+" bytes")
	if r.ContentLength > max {
		return nil, tooLarge
	}
	if r.Body == nil || r.ContentLength == 0 {
		return nil, nil
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(min(r.ContentLength, firstBodyBuffer)))
	}
	n, err := buf.ReadFrom(io.LimitReader(r.Body, max+1))
	if n > max {
		return nil, tooLarge
	}
	if err == nil && r.ContentLength > 0 && n != r.ContentLength {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, apierr.New(http.StatusRequestTimeout, "RequestTimeout", "the request body did not arrive in time")
		}
		return nil, apierr.New(http.StatusBadRequest, "InvalidRequest", "the request body could not be read completely")
	}
	return buf.Bytes(), nil
}

// firstBodyBuffer is the most a body's buffer starts with before any of it has arrived.
const firstBodyBuffer = 64 << 10

// deploymentMissing reads the start of a 404 body: Azure says DeploymentNotFound when the
// deployment does not exist on the account, which is a configuration problem of the target. What
// it read is put back, so the body can still be passed on whole; a body that cannot be read
// counts as missing.
func deploymentMissing(resp *http.Response) bool {
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<10))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(b), resp.Body), resp.Body}
	return err != nil || bytes.Contains(b, []byte("DeploymentNotFound"))
}

// drain reads a little of a body that is being discarded so that the connection can be
// reused, then closes it.
func drain(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 64<<10)
	body.Close()
}

// headLimit is how much of a plain (non-stream) body is read before committing. Chat answers fit
// whole, which lets the gateway fail over if the body breaks and set an exact Content-Length.
const headLimit = 256 << 10

// headPool recycles head buffers; most answers fit the first 8 KiB.
var headPool = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// putHead gives back a buffer readHead returned, through the pointer the pool holds (putting a
// slice itself would allocate its box each time).
func putHead(p *[]byte) {
	if cap(*p) <= 64<<10 {
		*p = (*p)[:0]
		headPool.Put(p)
	}
}

// readHead reads the start of a plain body, up to headLimit, into a pooled buffer: it returns
// the buffer (*p is what was read) and whether that is the whole body.
func readHead(body io.Reader, watch *watchdog) (*[]byte, bool, error) {
	p := headPool.Get().(*[]byte)
	buf := (*p)[:0]
	for len(buf) < headLimit {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if n > 0 {
			watch.progress()
		}
		if err == io.EOF {
			*p = buf
			return p, true, nil
		}
		if err != nil {
			*p = buf
			putHead(p)
			return nil, false, err
		}
	}
	*p = buf
	return p, false, nil
}

func readQuota(h http.Header) state.Quota {
	q := state.UnknownQuota
	if v, ok := headerInt(h, "X-Ratelimit-Remaining-Tokens"); ok {
		q.Tokens = v
	}
	if v, ok := headerInt(h, "X-Ratelimit-Remaining-Requests"); ok {
		q.Requests = v
	}
	return q
}

// readLimits reads x-ratelimit-limit-tokens and -requests, when the answer has them (zero
// when not: the quota model then infers the limits).
func readLimits(h http.Header) state.Quota {
	var q state.Quota
	if v, ok := headerInt(h, "X-Ratelimit-Limit-Tokens"); ok {
		q.Tokens = v
	}
	if v, ok := headerInt(h, "X-Ratelimit-Limit-Requests"); ok {
		q.Requests = v
	}
	return q
}

// headerInt reads a non-negative integer header; an absent one costs no error value.
func headerInt(h http.Header, name string) (int64, bool) {
	s := headerValue(h, name)
	if s == "" {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil && v >= 0
}

// replayBody is a request body that can be made again for the next target or a retry.
type replayBody struct{ bytes.Reader }

func newReplayBody(b []byte) *replayBody {
	r := &replayBody{}
	r.Reset(b)
	return r
}

func (*replayBody) Close() error { return nil }

func firstHeader(h http.Header, names ...string) string {
	for _, n := range names {
		if v := headerValue(h, n); v != "" {
			return v
		}
	}
	return ""
}

// headerValue is h.Get for a name already in canonical form, as the gateway's own names are
// and as every parsed header is: it skips canonicalizing the name on every call.
func headerValue(h http.Header, canonical string) string {
	if v := h[canonical]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func isEventStream(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/event-stream")
}
