package proxy

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strconv"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/route"
	"github.com/aoai-failover/gateway/handler/internal/state"
	"go.opentelemetry.io/otel/trace"
)

// Stage timeouts are causes of an attempt's cancellation, so the failure can say which wait ran out.
var (
	errHeaderTimeout     = errors.New("no response headers in time")
	errFirstEventTimeout = errors.New("no first stream event in time")
	errIdleTimeout       = errors.New("the response went silent")
	errRequestDeadline   = errors.New("the request's deadline passed")
	errEndTimeout        = errors.New("the stream's last chunk did not follow [DONE]")
	errAttemptOver       = errors.New("the attempt is over")
)

// informationalError is a backend's 1xx answer other than 100 Continue: the gateway asked for
// no protocol switch and no early hints, so the backend is not answering this request.
type informationalError struct{ status int }

func (e informationalError) Error() string {
	return "the backend sent an informational " + strconv.Itoa(e.status) + " response"
}

// refuseInformational ends an attempt at a backend's first 1xx other than 100 Continue.
func refuseInformational(code int, _ textproto.MIMEHeader) error {
	if code == http.StatusContinue {
		return nil
	}
	return informationalError{code}
}

// attempt is one try of one target.
type attempt struct {
	outcome
	target route.Target
	status int
	start  time.Time
	dur    time.Duration
	reqID  string

	send state.Send // the attempt's charge on the target, as the quota model counts it

	// Set when the attempt produced a response to commit.
	resp     *http.Response
	ctx      context.Context // the attempt's: a child of the caller's, cancelled when it ends
	cancel   context.CancelCauseFunc
	watch    watchdog
	head     *[]byte // the buffered start of a plain body, in a pooled buffer
	complete bool    // head is the whole body
	events   *eventReader
	first    []byte // the first stream event
	body     replayBody
	url      url.URL  // the upstream request's
	conn     net.Conn // the connection the request went out on
	trace    httptrace.ClientTrace
}

func (a *attempt) close() {
	a.watch.stop()
	if a.resp != nil {
		a.resp.Body.Close()
	}
	a.cancel(errAttemptOver)
	if a.events != nil {
		a.events.release()
	}
	if a.head != nil {
		putHead(a.head)
		a.head = nil
	}
}

// forward tries the plan's targets in order until one gives an answer to commit. done: an
// answer was committed, or the caller left (nothing more can be written); else no target gave
// an answer and tried holds this round's attempts, for the gateway's own answer.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, c *call, plan route.Plan) (tried []*attempt, done bool) {
	// The request's own deadline is a timer on each attempt rather than a context of its own.
	deadline := c.start.Add(g.opt.Timeouts.Request.D())
	c.log.skipped = plan.Skipped
	var triedFirst [2]*attempt
	tried = triedFirst[:0]
	for _, t := range plan.Candidates {
		if !g.opt.State.Acquire(t.ID, g.opt.Now()) {
			// Another request holds the one probe of this half-open target.
			c.log.skipped = append(c.log.skipped, route.Skipped{Target: t, Until: g.opt.Now().Add(time.Second)})
			continue
		}
		a := g.try(r.Context(), deadline, c, t)
		if a.retryWithNewKey {
			c.log.attempts = append(c.log.attempts, a)
			a = g.try(r.Context(), deadline, c, t) // once, with the new key
		}
		tried = append(tried, a)
		c.log.attempts = append(c.log.attempts, a)
		switch a.verdict {
		case commit:
			g.commit(w, r.Context(), c, a, len(c.log.attempts))
			return tried, true
		case stop:
			c.log.status = 499 // the caller is gone; nothing can be written
			return tried, true
		}
		if !g.opt.Now().Before(deadline) {
			break // the request's own deadline passed: no more targets
		}
	}
	if r.Context().Err() != nil {
		c.log.status = 499
		return tried, true
	}
	return tried, false
}

// try makes one attempt on one target: it performs the call up to the commit point, judges
// what came back (classify), and records that judgement in the target's state, once.
func (g *Gateway) try(callerCtx context.Context, deadline time.Time, c *call, t route.Target) *attempt {
	a := &attempt{target: t, start: g.opt.Now()}
	span := noSpan // unless the request is traced
	if c.span.IsRecording() {
		_, span = g.opt.Tracer.Start(trace.ContextWithSpan(callerCtx, c.span), "attempt "+t.ID, clientSpan)
	}
	a.ctx, a.cancel = context.WithCancelCause(callerCtx)
	a.send = g.opt.State.Sent(t.ID, a.start, c.cost)
	g.passTurn(c) // counted: the next request waiting may plan now
	a.trace.Got1xxResponse = refuseInformational
	a.trace.GotConn = func(info httptrace.GotConnInfo) { a.conn = info.Conn }
	res := g.perform(a, c, deadline)
	res.callerGone = callerCtx.Err() != nil
	res.pinned = c.pinnedTo != ""
	a.outcome = classify(res, g.opt.Now(), g.opt.Throttle)
	if a.verdict == commit {
		if err := g.readToCommit(a, c.info.stream); err != nil {
			res.err, res.cause, res.callerGone = err, context.Cause(a.ctx), callerCtx.Err() != nil
			a.outcome = classify(res, g.opt.Now(), g.opt.Throttle)
		}
	}
	if a.outcome.unauthorized && g.rotate(a.ctx, t.Account, res.sent) {
		a.outcome = keyRotated
	}
	if a.verdict != commit {
		g.discard(a)
	}
	a.dur = g.opt.Now().Sub(a.start)
	g.record(a, res)
	endAttemptSpan(span, a)
	return a
}

// perform sends the request to the target and reads the response's head. What it returns is
// all that classify needs; it judges nothing.
func (g *Gateway) perform(a *attempt, c *call, deadline time.Time) result {
	t := a.target
	body := c.bodyFor(t)
	a.body.Reset(body)
	req := (&http.Request{
		Method: c.method, URL: &a.url, Host: t.Authority,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: make(http.Header, len(c.inHeader)+1),
		Body:   &a.body, ContentLength: int64(len(body)),
		GetBody: func() (io.ReadCloser, error) { return newReplayBody(body), nil },
	}).WithContext(httptrace.WithClientTrace(a.ctx, &a.trace))
	if len(body) == 0 {
		req.Body, req.GetBody = http.NoBody, nil // a GET or DELETE: no body, not an empty one
	}
	c.setUpstreamURL(req.URL, t)
	outboundHeaders(req.Header, c.inHeader, c.info.stream)
	if err := g.opt.Credentials.Authorize(a.ctx, t.Account, req.Header); err != nil {
		return result{noCredential: true}
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
	a.watch.start(a.cancel, deadline, headerWait, headerStage)
	return g.roundTrip(a, req)
}

// roundTrip sends req for the attempt and reads the response's head into the result.
func (g *Gateway) roundTrip(a *attempt, req *http.Request) result {
	resp, err := g.opt.Transport.RoundTrip(req)
	if err != nil {
		return result{err: err, cause: context.Cause(a.ctx), sent: req.Header}
	}
	a.resp = resp
	a.status = resp.StatusCode
	a.reqID = firstHeader(resp.Header, "Apim-Request-Id", "X-Request-Id")
	res := result{status: resp.StatusCode, header: resp.Header, sent: req.Header}
	if resp.StatusCode == http.StatusNotFound {
		res.deploymentMissing = deploymentMissing(resp)
	}
	return res
}

// readToCommit reads an answer up to the point where it is sent to the caller: a stream's first
// event, or the start of a plain body (all of it, usually).
func (g *Gateway) readToCommit(a *attempt, stream bool) error {
	if isEventStream(headerValue(a.resp.Header, "Content-Type")) {
		// The wait keeps running: the first event must come within FirstByte of the start.
		a.events = newEventReader(a.resp.Body, g.opt.MaxEventBytes)
		ev, err := a.events.next()
		if errors.Is(err, io.EOF) {
			err = errEmptyStream
		}
		if err != nil {
			return err
		}
		a.first = ev
		return nil
	}
	a.watch.arm(g.opt.Timeouts.StreamIdle.D(), waitIdle)
	head, complete, err := readHead(a.resp.Body, &a.watch)
	if err != nil {
		return err
	}
	a.head, a.complete = head, complete
	return nil
}

var errEmptyStream = errors.New("the stream ended before its first event")

// discard ends an attempt that will not be committed: its body is drained a little so that the
// connection can be kept, unless the backend switched protocols, which ends the connection.
func (g *Gateway) discard(a *attempt) {
	a.watch.stop()
	if a.resp != nil {
		if a.status == http.StatusSwitchingProtocols {
			// Without an Upgrade header net/http reads a 101 as an answer without a body and
			// would keep the connection; what the backend sends next is no answer of ours.
			if a.resp.ProtoMajor == 1 && a.conn != nil {
				a.conn.Close()
			}
			a.resp.Body.Close()
		} else {
			drain(a.resp.Body)
		}
		a.resp = nil
	}
	if a.events != nil {
		a.events.release()
		a.events = nil
	}
	if a.head != nil {
		putHead(a.head)
		a.head = nil
	}
	a.cancel(errAttemptOver)
}

// record writes the attempt's judgement into the target's shared state: the one place that does.
func (g *Gateway) record(a *attempt, res result) {
	o := state.Outcome{Kind: a.kind, Status: a.status, Reason: a.reason, Quota: state.UnknownQuota, Send: a.send}
	// What the target did not count against its quota: a 429, a credential or path it refused
	// (401, 403, 404), no call at all, or a connection that failed before an answer. A timeout
	// or a 5xx may have been admitted, so they stay counted.
	o.Uncharged = a.kind == state.Throttled || a.kind == state.Misconfigured || a.noCredential ||
		a.notFound || a.retryWithNewKey || (a.kind == state.Failed && a.status == 0 && !a.timeout)
	switch a.kind {
	case state.Throttled:
		o.Wait, o.Reason = a.wait, "wait "+a.wait.Round(time.Millisecond).String()+" from "+a.waitSource
		o.WaitExact = a.waitSource != "default" && a.wait < g.opt.Throttle.MaxRetryAfter.D()
	case state.Succeeded:
		o.Latency = a.dur
	}
	if res.header != nil && a.kind != state.Abandoned {
		o.Quota, o.Limit = readQuota(res.header), readLimits(res.header)
	}
	g.opt.State.Record(a.target.ID, o)
}
