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
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/cancelctx"
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
	Record(id string, o state.Outcome)
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
	// RouteByRemaining tries targets whose last reported budget cannot absorb the request after
	// those that can.
	RouteByRemaining bool
	Logger           *slog.Logger
	// RequestLog receives the one line written per request; nil writes none.
	RequestLog RequestLog
	// Tracer makes a span per request and one per attempt; nil traces nothing.
	Tracer trace.Tracer
	// Meter records the GenAI and failover metrics; nil records none.
	Meter metric.Meter
	Now   func() time.Time
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
	// Without a tracer no span is started at all (c.span stays noSpan, which never records).
	g := &Gateway{opt: opt, metrics: newInstruments(opt.Meter)}
	g.servedBy = map[string][]string{}
	for _, t := range opt.Planner.Targets() {
		g.servedBy[t.ID] = []string{t.ID}
	}
	return g
}

// call is one caller request, read and understood.
type call struct {
	fam      family
	logical  string
	rest     string // operation path after the logical name, deployments family only
	query    string
	path     string
	body     []byte
	info     bodyInfo
	inHeader http.Header // the caller's headers; filtered afresh for each attempt
	span     trace.Span
	start    time.Time
	end      time.Time // when the caller had the whole answer, if that was before the handler returned
	log      requestLog
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
	if c.fam != familyDeployments && c.info.hasModel {
		return withModel(c.body, c.info, t.Deployment)
	}
	return c.body
}

// ServeHTTP handles one request on the Azure OpenAI routes from an unnamed caller.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.Serve(w, r, "") }

// Serve handles one request on the Azure OpenAI routes from the authenticated caller app.
func (g *Gateway) Serve(w http.ResponseWriter, r *http.Request, app string) {
	c := &call{start: g.opt.Now(), path: r.URL.Path, query: r.URL.RawQuery}
	c.log = requestLog{method: r.Method, path: r.URL.Path, app: app}
	c.span = noSpan
	if g.opt.Tracer != nil {
		_, c.span = g.opt.Tracer.Start(r.Context(), "gateway", serverSpan)
	}
	defer g.logRequest(c)

	fam, logical, rest, perr := parsePath(r.URL.Path, r.URL.EscapedPath())
	if perr != nil {
		c.log.status = perr.status
		WriteError(w, perr.status, perr.code, perr.message)
		return
	}
	if r.Method != http.MethodPost {
		c.log.status = http.StatusMethodNotAllowed
		w.Header().Set("Allow", http.MethodPost)
		WriteError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "method "+r.Method+" is not allowed here; use POST")
		return
	}
	c.fam, c.logical, c.rest = fam, logical, rest

	// The body must arrive within its own deadline: the server's header timeout ends with the
	// headers, and a body that trickles forever must not hold the request (or a slot) forever.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(c.start.Add(g.opt.Timeouts.RequestBody.D()))
	body, status, msg := readBody(r, g.opt.MaxBodyBytes)
	_ = rc.SetReadDeadline(time.Time{})
	if status != 0 {
		c.log.status = status
		code := "InvalidRequest"
		switch status {
		case http.StatusRequestEntityTooLarge:
			code = "RequestTooLarge"
		case http.StatusRequestTimeout:
			code = "RequestTimeout"
		}
		WriteError(w, status, code, msg)
		return
	}
	c.body = body
	jsonBody := isJSON(headerValue(r.Header, "Content-Type"))
	if jsonBody && len(body) > 0 {
		// A deployments-family body goes to the backend as it is, so it is only read, not
		// validated: Azure OpenAI answers a malformed one itself. The other families name the
		// deployment in the body, which must therefore be valid JSON.
		var ok bool
		c.info, ok = scanBody(body, fam != familyDeployments)
		if !ok && fam != familyDeployments {
			c.log.status = http.StatusBadRequest
			WriteError(w, http.StatusBadRequest, "InvalidRequest", "the request body is not a valid JSON object")
			return
		}
	}
	if fam != familyDeployments {
		switch {
		case len(body) == 0:
			c.log.status = http.StatusBadRequest
			WriteError(w, http.StatusBadRequest, "InvalidRequest", "a request body is required: a JSON object whose \"model\" names the deployment")
			return
		case !jsonBody:
			c.log.status = http.StatusBadRequest
			WriteError(w, http.StatusBadRequest, "InvalidRequest", "the request body must be JSON (Content-Type: application/json)")
			return
		case !c.info.hasModel:
			c.log.status = http.StatusBadRequest
			WriteError(w, http.StatusBadRequest, "InvalidRequest", "the request body has no \"model\" string naming the deployment")
			return
		}
		c.logical = c.info.model
	}
	c.log.logical = c.logical
	c.log.stream = c.info.stream

	plan, ok := g.opt.Planner.Plan(c.logical, g.opt.State, c.start, g.estimate(c))
	if !ok {
		c.log.status = http.StatusNotFound
		WriteError(w, http.StatusNotFound, "DeploymentNotFound", fmt.Sprintf(
			"the deployment %q does not exist on this gateway; known deployments: %s",
			c.logical, strings.Join(g.opt.Planner.Names(), ", ")))
		return
	}
	c.inHeader = r.Header
	g.forward(w, r, c, plan)
}

// estimate is the request's cost as Azure OpenAI's rate limiter counts it: prompt tokens (a
// quarter of the body's bytes, which slightly overcounts the prompt's characters) plus the
// output tokens asked for. Zero when routing by remaining budget is off.
func (g *Gateway) estimate(c *call) int64 {
	if !g.opt.RouteByRemaining || len(c.body) == 0 {
		return 0
	}
	return int64(len(c.body)/4 + c.info.outputTokens)
}

// readBody reads the whole request body so that it can be replayed to each target. It returns
// a non-zero status with a message when the body is too large or cannot be read.
func readBody(r *http.Request, max int64) ([]byte, int, string) {
	tooLarge := func() string {
		return "the request body is larger than the gateway's limit of " + strconv.FormatInt(max, 10) + " bytes"
	}
	if r.ContentLength > max {
		return nil, http.StatusRequestEntityTooLarge, tooLarge()
	}
	if r.Body == nil || r.ContentLength == 0 {
		return nil, 0, ""
	}
	if r.ContentLength > 0 {
		// net/http ends the body at Content-Length, so the exact size is enough.
		buf := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			st, msg := bodyError(err)
			return nil, st, msg
		}
		return buf, 0, ""
	}
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(r.Body, max+1))
	if n > max {
		return nil, http.StatusRequestEntityTooLarge, tooLarge()
	}
	if err != nil {
		st, msg := bodyError(err)
		return nil, st, msg
	}
	return buf.Bytes(), 0, ""
}

func bodyError(err error) (int, string) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return http.StatusRequestTimeout, "the request body did not arrive in time"
	}
	return http.StatusBadRequest, "the request body could not be read completely"
}

// Stage timeouts are causes of an attempt's cancellation, so the failure can say which wait ran out.
var (
	errHeaderTimeout     = errors.New("no response headers in time")
	errFirstEventTimeout = errors.New("no first stream event in time")
	errIdleTimeout       = errors.New("the response went silent")
	errRequestDeadline   = errors.New("the request's deadline passed")
	errEndTimeout        = errors.New("the stream's last chunk did not follow [DONE]")
)

// attempt is one try of one target.
type attempt struct {
	target  route.Target
	kind    state.Kind
	status  int
	reason  string
	timeout bool
	// notFound: the target answered 404 for the path itself (not a missing deployment).
	notFound bool
	// noCredential: the target has no credential yet; rotated: its key was just rotated.
	noCredential, rotated bool
	wait                  time.Duration // for 429
	start                 time.Time
	dur                   time.Duration
	reqID                 string

	// Set when the attempt produced a response to commit.
	resp     *http.Response
	ctx      cancelctx.Context // the attempt's: a child of the caller's, cancelled when it ends
	watch    watchdog
	head     *[]byte // the buffered start of a plain body, in a pooled buffer
	complete bool    // head is the whole body
	events   *eventReader
	first    []byte // the first stream event
	body     replayBody
	url      url.URL // the upstream request's
}

func (a *attempt) close() {
	a.watch.stop()
	if a.resp != nil {
		a.resp.Body.Close()
	}
	a.ctx.Cancel(context.Canceled)
	if a.events != nil {
		a.events.release()
	}
	if a.head != nil {
		putHead(a.head)
		a.head = nil
	}
}

func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, c *call, plan route.Plan) {
	// The request's own deadline is a timer on each attempt rather than a context of its own:
	// one allocation and one cancellation hook fewer per request.
	deadline := c.start.Add(g.opt.Timeouts.Request.D())
	c.log.skipped = plan.Skipped
	c.log.attempts = c.log.firstAttempts[:0]
	var triedFirst [2]*attempt
	tried := triedFirst[:0]
	for _, t := range plan.Candidates {
		if !g.opt.State.Acquire(t.ID, g.opt.Now()) {
			// Another request holds the one probe of this half-open target.
			c.log.skipped = append(c.log.skipped, route.Skipped{Target: t, Until: g.opt.Now().Add(time.Second)})
			continue
		}
		a := g.try(r.Context(), deadline, c, t)
		if a.rotated && r.Context().Err() == nil {
			c.log.attempts = append(c.log.attempts, a)
			a = g.try(r.Context(), deadline, c, t) // once, with the new key
		}
		tried = append(tried, a)
		c.log.attempts = append(c.log.attempts, a)
		if a.resp != nil {
			g.commit(w, r.Context(), c, a, len(c.log.attempts))
			return
		}
		if r.Context().Err() != nil || !g.opt.Now().Before(deadline) {
			break // the caller left or the request's own deadline passed: no more targets
		}
	}
	if r.Context().Err() != nil {
		c.log.status = 499 // the caller is gone; nothing can be written
		return
	}
	g.writeAllFailed(w, c, tried, c.log.skipped)
}

// try sends the request to one target and reads up to the commit point.
func (g *Gateway) try(callerCtx context.Context, deadline time.Time, c *call, t route.Target) *attempt {
	a := &attempt{target: t, start: g.opt.Now()}
	span := noSpan // unless the request is traced
	if c.span.IsRecording() {
		_, span = g.opt.Tracer.Start(trace.ContextWithSpan(callerCtx, c.span), "attempt "+t.ID, clientSpan)
	}
	defer func() {
		if a.dur == 0 { // not measured at the commit point
			a.dur = g.opt.Now().Sub(a.start)
		}
		endAttemptSpan(span, a)
	}()
	a.ctx.Init(callerCtx)
	actx := &a.ctx

	body := c.bodyFor(t)
	a.body.Reset(body)
	req := (&http.Request{
		Method: http.MethodPost, URL: &a.url, Host: t.Authority,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: make(http.Header, len(c.inHeader)+1),
		Body:   &a.body, ContentLength: int64(len(body)),
		GetBody: func() (io.ReadCloser, error) { return newReplayBody(body), nil },
	}).WithContext(actx)
	c.setUpstreamURL(req.URL, t)
	outboundHeaders(req.Header, c.inHeader, c.info.stream)
	if err := g.opt.Credentials.Authorize(actx, t.Account, req.Header); err != nil {
		// Not the target's fault (Key Vault not read yet, no token): skip it, hold nothing against it.
		a.noCredential = true
		g.opt.State.Record(t.ID, state.Outcome{Kind: state.Abandoned, Quota: state.UnknownQuota})
		return g.done(a, state.Abandoned, 0, "no credential yet")
	}

	to := g.opt.Timeouts
	headerWait, headerStage := to.FirstByte.D(), waitFirstEvent
	if !c.info.stream {
		// Azure OpenAI sends a non-streaming answer's headers only when it is complete.
		tokens := c.info.outputTokens
		if tokens <= 0 {
			tokens = to.DefaultOutputTokens
		}
		headerWait = to.FirstByte.D() + time.Duration(min(int64(tokens), math.MaxInt32))*to.PerOutputToken.D()
		headerStage = waitHeaders
	}
	a.watch.start(actx, deadline, headerWait, headerStage)

	resp, err := g.opt.Transport.RoundTrip(req)
	if err != nil {
		return g.failErr(a, callerCtx, err)
	}
	a.reqID = firstHeader(resp.Header, "Apim-Request-Id", "X-Request-Id")
	a.status = resp.StatusCode
	quota := readQuota(resp.Header)

	switch code := resp.StatusCode; {
	case code == http.StatusTooManyRequests:
		wait, source := state.RetryAfter(resp.Header, g.opt.Now(), g.opt.Throttle.DefaultRetryAfter.D(), g.opt.Throttle.MaxRetryAfter.D())
		drain(resp.Body)
		a.wait = wait
		g.opt.State.Record(t.ID, state.Outcome{Kind: state.Throttled, Status: code, Wait: wait, Reason: "wait " + wait.Round(time.Millisecond).String() + " from " + source, Quota: quota})
		return g.done(a, state.Throttled, code, "throttled for "+wait.Round(time.Millisecond).String())
	case code == http.StatusRequestTimeout || code >= 500:
		drain(resp.Body)
		return g.fail(a, state.Failed, code, http.StatusText(code))
	case code == http.StatusNotFound && !deploymentMissing(resp.Body):
		// Azure's generic "Resource not found" means the path or api-version does not exist
		// there: the next target may know it, but it says nothing against this target, and
		// one caller's bad path must not take a target away from everyone else.
		a.notFound = true
		g.opt.State.Record(t.ID, state.Outcome{Kind: state.Succeeded, Status: code, Reason: "404 for this path", Quota: quota})
		return g.done(a, state.Succeeded, code, "404 Resource not found for this path")
	case code == http.StatusUnauthorized && g.rotate(actx, t.Account, req.Header):
		// The key was rotated in Key Vault: the new one is worth one more try on this target.
		drain(resp.Body)
		a.rotated = true
		g.opt.State.Record(t.ID, state.Outcome{Kind: state.Abandoned, Quota: state.UnknownQuota})
		return g.done(a, state.Abandoned, code, "401: the key was rotated; trying again with the new one")
	case code == http.StatusUnauthorized || code == http.StatusForbidden || code == http.StatusNotFound:
		drain(resp.Body)
		return g.fail(a, state.Misconfigured, code, http.StatusText(code)+": check this target's key and deployment name")
	}

	a.resp = resp
	if isEventStream(headerValue(resp.Header, "Content-Type")) {
		// The wait keeps running: the first event must come within FirstByte of the start.
		a.events = newEventReader(resp.Body, g.opt.Logger)
		ev, err := a.events.next()
		if err != nil {
			a.resp = nil
			resp.Body.Close()
			a.events.release()
			a.events = nil
			if errors.Is(err, io.EOF) {
				return g.fail(a, state.Failed, a.status, "the stream ended before its first event")
			}
			return g.failErr(a, callerCtx, err)
		}
		a.first = ev
	} else {
		a.watch.arm(to.StreamIdle.D(), waitIdle)
		head, complete, err := readHead(resp.Body, &a.watch)
		if err != nil {
			a.resp = nil
			resp.Body.Close()
			return g.failErr(a, callerCtx, err)
		}
		a.head, a.complete = head, complete
	}
	kind := state.Succeeded // a 4xx here is the caller's problem, not the target's
	a.dur = g.opt.Now().Sub(a.start)
	g.opt.State.Record(t.ID, state.Outcome{Kind: kind, Status: a.status, Quota: quota, Latency: a.dur})
	a.kind = kind
	return a
}

func (g *Gateway) done(a *attempt, kind state.Kind, status int, reason string) *attempt {
	a.kind, a.status, a.reason = kind, status, reason
	a.watch.stop()
	a.ctx.Cancel(context.Canceled)
	return a
}

// fail records a failed attempt with the target's state and ends it.
func (g *Gateway) fail(a *attempt, kind state.Kind, status int, reason string) *attempt {
	g.opt.State.Record(a.target.ID, state.Outcome{Kind: kind, Status: status, Reason: reason, Quota: state.UnknownQuota})
	return g.done(a, kind, status, reason)
}

// failErr classifies a transport or read error: the caller leaving is nobody's fault, the
// request's overall deadline and stage timeouts are timeouts, anything else a connection failure.
func (g *Gateway) failErr(a *attempt, callerCtx context.Context, err error) *attempt {
	switch cause := a.ctx.Cause(); {
	case callerCtx.Err() != nil:
		g.opt.State.Record(a.target.ID, state.Outcome{Kind: state.Abandoned, Quota: state.UnknownQuota})
		return g.done(a, state.Abandoned, 0, "the caller went away")
	case errors.Is(cause, errRequestDeadline):
		a.timeout = true
		return g.fail(a, state.Failed, 0, "the request's deadline passed")
	case errors.Is(cause, errHeaderTimeout), errors.Is(cause, errFirstEventTimeout), errors.Is(cause, errIdleTimeout):
		a.timeout = true
		return g.fail(a, state.Failed, a.status, cause.Error())
	default:
		return g.fail(a, state.Failed, a.status, "connection failed: "+shortError(err))
	}
}

// shortError strips the request URL that net/http puts in its errors, keeping the cause.
func shortError(err error) string {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) && strings.HasPrefix(err.Error(), "Post ") {
		if inner := ue.Unwrap(); inner != nil {
			return inner.Error()
		}
	}
	return err.Error()
}

// deploymentMissing reads the start of a 404 body: Azure says DeploymentNotFound when the
// deployment does not exist on the account, which is a configuration problem of the target.
// The body is drained either way; a 404 body that cannot be read counts as missing.
func deploymentMissing(body io.ReadCloser) bool {
	b, err := io.ReadAll(io.LimitReader(body, 8<<10))
	drain(body)
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
