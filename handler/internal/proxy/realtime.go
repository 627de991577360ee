package proxy

// The Realtime API over WebSocket: /openai/realtime?api-version=...&deployment=NAME (the
// preview path) and /openai/v1/realtime?model=NAME (v1, what the SDKs' GA clients open).
//
// Design. The gateway takes part in the handshake and nothing after it. The caller's upgrade
// request is authenticated like any call (app's handler, before this code runs), planned like
// any call (the same Planner.Plan with the same state view: throttled and failing targets are
// skipped), and sent to each planned target in turn as a GET with Connection: Upgrade and
// Upgrade: websocket through the one net/http Transport, with the caller's credentials replaced
// by the target's (Credentials.Authorize) and the logical name in the query replaced by the
// target's deployment. The caller's Sec-WebSocket-Key, -Version, -Protocol and -Extensions go to
// the target as they are, and the target's 101 (its Sec-WebSocket-Accept, the subprotocol and
// extensions it chose) goes back to the caller as it is: the two ends negotiate with each other
// and the gateway never has to understand a frame. Each attempt is judged by classify and
// recorded by record, the same two steps as every other attempt, so a 429 marks the target
// throttled fleet-wide and 5xx, refused handshakes and timeouts count towards its circuit; the
// next target is tried. Only a 101 that really switches to WebSocket is a success: a 101
// without the upgrade headers, or a 2xx that is not a switch, is a failure of the target; any
// other answer judged the caller's (a 400, say) is passed on as it is.
//
// Once a target has switched, the caller's connection is taken over (http.Hijacker on the
// gateway's own server), the 101 is written to it, and bytes are copied both ways: net/http's
// Transport hands a 101 to a request that asked for an upgrade as a Body that is an
// io.ReadWriteCloser (transport.go, isProtocolSwitch), and the hijacked connection comes with
// the bytes the server had already read from it. A byte relay is enough because the handshake
// is end to end; terminating WebSocket on both sides (github.com/coder/websocket) would add two
// frame parsers, two sets of buffers and a second compression context per session, and would
// have to re-negotiate permessage-deflate and subprotocols on the caller's behalf. The relay
// does follow frame boundaries (frameTracker: the frame headers only, never the payloads), for
// one purpose: when the gateway itself ends a session (shutdown, idle, the session's limit) or
// one side breaks, the other side gets a real close frame (1001 or 1014, with a reason) at a
// frame boundary rather than a connection that just drops.
//
// Bounds: the handshake waits at most timeouts.firstByte per target and timeouts.request in
// all; a session ends after timeouts.realtimeIdle with nothing passing either way and after
// timeouts.realtimeSession in all; a session holds one forwarding slot
// (limits.maxConcurrentRequests) for its life; SIGTERM (the server cancels a hijacked request's
// context) ends every session with a close frame within about a second. One request log line
// is written when the session ends: status 101, servedBy, attempts, durationMs (the whole
// session) and firstByteMs (until the 101 was sent).

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/aoai-failover/gateway/handler/internal/apierr"
	"github.com/aoai-failover/gateway/handler/internal/config"
	"github.com/aoai-failover/gateway/handler/internal/route"
	"github.com/aoai-failover/gateway/handler/internal/state"
	"go.opentelemetry.io/otel/trace"
)

const (
	realtimePreviewPath = "/openai/realtime"
	realtimeV1Path      = "/openai/v1/realtime"
	// insecureKeyProtocol prefixes the caller's key in the subprotocols the plain OpenAI
	// client offers from a browser, which cannot set headers.
	insecureKeyProtocol = "openai-insecure-api-key."
)

// IsRealtimePath reports whether path is one of the Realtime API's WebSocket paths.
func IsRealtimePath(path string) bool {
	return path == realtimePreviewPath || path == realtimeV1Path
}

// realtimeParam is the query parameter that names the deployment on a Realtime path.
func realtimeParam(path string) string {
	if path == realtimeV1Path {
		return "model"
	}
	return "deployment"
}

// TakeRealtimeCredentials prepares a Realtime upgrade request for authentication. A browser's
// WebSocket cannot set headers, so Azure OpenAI also takes the key as the api-key query
// parameter, and the plain OpenAI client offers it as an "openai-insecure-api-key.KEY"
// subprotocol; such a key is moved into the Api-Key header (unless the request has an Api-Key
// or Authorization header, which wins), where caller authentication reads it. Every credential
// is then removed from where it came: the api-key and Authorization query parameters and the
// key subprotocol, so that none is ever forwarded to a target, logged, or offered back. Only the
// Realtime paths take a key this way: elsewhere a browser can set headers, and a key in a URL
// ends up in the logs of whatever it passes through.
func TakeRealtimeCredentials(r *http.Request) {
	var key string
	if q := r.URL.RawQuery; q != "" {
		parts := strings.Split(q, "&")
		kept := parts[:0]
		for _, p := range parts {
			k, v, _ := strings.Cut(p, "=")
			if name, err := url.QueryUnescape(k); err == nil && isCredentialParam(name) {
				if key == "" && strings.EqualFold(name, "api-key") {
					key, _ = url.QueryUnescape(v)
				}
				continue
			}
			kept = append(kept, p)
		}
		r.URL.RawQuery = strings.Join(kept, "&")
	}
	if offered := r.Header["Sec-Websocket-Protocol"]; len(offered) > 0 {
		var protocols []string
		for _, v := range offered {
			for _, p := range strings.Split(v, ",") {
				p = strings.TrimSpace(p)
				if k, ok := strings.CutPrefix(p, insecureKeyProtocol); ok {
					if key == "" {
						key = k
					}
					continue
				}
				if p != "" {
					protocols = append(protocols, p)
				}
			}
		}
		if len(protocols) == 0 {
			delete(r.Header, "Sec-Websocket-Protocol")
		} else {
			r.Header["Sec-Websocket-Protocol"] = []string{strings.Join(protocols, ", ")}
		}
	}
	if key != "" && headerValue(r.Header, "Api-Key") == "" && headerValue(r.Header, "Authorization") == "" {
		r.Header["Api-Key"] = []string{key}
	}
}

func isCredentialParam(name string) bool {
	return strings.EqualFold(name, "api-key") || strings.EqualFold(name, "authorization")
}

// queryValues returns the values of the query parameter name, decoded, in order.
func queryValues(raw, name string) (vals []string, ok bool) {
	if raw == "" {
		return nil, true
	}
	for _, p := range strings.Split(raw, "&") {
		k, v, _ := strings.Cut(p, "=")
		if key, err := url.QueryUnescape(k); err != nil || key != name {
			continue
		}
		val, err := url.QueryUnescape(v)
		if err != nil {
			return nil, false
		}
		vals = append(vals, val)
	}
	return vals, true
}

// withQueryValue returns raw with the value of parameter name replaced by value; every other
// byte of the query is kept as the caller wrote it.
func withQueryValue(raw, name, value string) string {
	parts := strings.Split(raw, "&")
	for i, p := range parts {
		k, _, _ := strings.Cut(p, "=")
		if key, err := url.QueryUnescape(k); err == nil && key == name {
			parts[i] = k + "=" + url.QueryEscape(value)
		}
	}
	return strings.Join(parts, "&")
}

// ServeRealtime serves one Realtime WebSocket upgrade from the authenticated caller app: it
// plans the targets, makes the handshake with the first that switches protocols, then relays
// the session until either side closes. See the top of this file.
func (g *Gateway) ServeRealtime(w http.ResponseWriter, r *http.Request, app string) {
	c := &call{start: g.opt.Now(), path: r.URL.Path, query: r.URL.RawQuery}
	c.log = requestLog{method: r.Method, path: r.URL.Path, app: app}
	c.span = noSpan
	if g.opt.Tracer != nil {
		_, c.span = g.opt.Tracer.Start(r.Context(), "gateway", serverSpan)
	}
	defer g.logRequest(c)

	plan, e := g.realtimeIntake(r, c)
	if e == nil {
		var release func()
		if release, e = g.admit(); e == nil {
			// The slot is held for the session's life: a session is a request being forwarded.
			defer release()
			g.forwardRealtime(w, r, c, plan)
			return
		}
	}
	c.log.status = e.Status
	e.Write(w)
}

// realtimeIntake checks that the request is a WebSocket upgrade naming a known deployment.
func (g *Gateway) realtimeIntake(r *http.Request, c *call) (route.Plan, *apierr.Error) {
	if r.Method != http.MethodGet {
		return route.Plan{}, apierr.New(http.StatusMethodNotAllowed, "MethodNotAllowed",
			"the Realtime API is a WebSocket: open it with a GET upgrade request").With("Allow", http.MethodGet)
	}
	if !r.ProtoAtLeast(1, 1) || !httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") ||
		!strings.EqualFold(strings.TrimSpace(headerValue(r.Header, "Upgrade")), "websocket") {
		return route.Plan{}, apierr.New(http.StatusUpgradeRequired, "UpgradeRequired",
			"the Realtime API is served over WebSocket: send Connection: Upgrade and Upgrade: websocket").
			With("Upgrade", "websocket")
	}
	if r.ContentLength != 0 {
		return route.Plan{}, apierr.New(http.StatusBadRequest, "InvalidRequest", "a WebSocket upgrade request has no body")
	}
	param := realtimeParam(c.path)
	names, ok := queryValues(c.query, param)
	if !ok || len(names) != 1 || names[0] == "" {
		return route.Plan{}, apierr.New(http.StatusBadRequest, "InvalidRequest", fmt.Sprintf(
			"name the deployment once in the query: %s?%s=NAME", c.path, param))
	}
	c.logical = names[0]
	c.log.logical = c.logical
	plan, ok := g.opt.Planner.Plan(c.logical, g.opt.State, c.start, 0)
	if !ok {
		return route.Plan{}, apierr.New(http.StatusNotFound, "DeploymentNotFound", fmt.Sprintf(
			"the deployment %q does not exist on this gateway; known deployments: %s",
			c.logical, strings.Join(g.opt.Planner.Names(), ", ")))
	}
	c.inHeader = r.Header
	return plan, nil
}

// forwardRealtime tries the plan's targets in order until one switches protocols (then relays
// the session) or gives an answer that is the caller's; else it answers as forward does.
func (g *Gateway) forwardRealtime(w http.ResponseWriter, r *http.Request, c *call, plan route.Plan) {
	deadline := c.start.Add(g.opt.Timeouts.Request.D())
	c.log.skipped = plan.Skipped
	c.log.attempts = c.log.firstAttempts[:0]
	var tried []*attempt
	for _, t := range plan.Candidates {
		if !g.opt.State.Acquire(t.ID, g.opt.Now()) {
			c.log.skipped = append(c.log.skipped, route.Skipped{Target: t, Until: g.opt.Now().Add(time.Second)})
			continue
		}
		a := g.tryRealtime(r.Context(), deadline, c, t)
		if a.retryWithNewKey {
			c.log.attempts = append(c.log.attempts, a)
			a = g.tryRealtime(r.Context(), deadline, c, t)
		}
		tried = append(tried, a)
		c.log.attempts = append(c.log.attempts, a)
		switch {
		case a.verdict == commit && a.status == http.StatusSwitchingProtocols:
			g.relayRealtime(w, r, c, a)
			return
		case a.verdict == commit:
			g.answerRealtime(w, c, a)
			return
		case a.verdict == stop:
			c.log.status = 499
			return
		}
		if !g.opt.Now().Before(deadline) {
			break
		}
	}
	if r.Context().Err() != nil {
		c.log.status = 499
		return
	}
	g.writeAllFailed(w, c, tried, c.log.skipped)
}

// tryRealtime makes one handshake attempt on one target: perform, judge, record, as try does.
func (g *Gateway) tryRealtime(callerCtx context.Context, deadline time.Time, c *call, t route.Target) *attempt {
	a := &attempt{target: t, start: g.opt.Now()}
	span := noSpan
	if c.span.IsRecording() {
		_, span = g.opt.Tracer.Start(trace.ContextWithSpan(callerCtx, c.span), "attempt "+t.ID, clientSpan)
	}
	a.ctx, a.cancel = context.WithCancelCause(callerCtx)
	a.trace.GotConn = func(info httptrace.GotConnInfo) { a.conn = info.Conn }
	res := g.performRealtime(a, c, deadline)
	res.callerGone = callerCtx.Err() != nil
	a.outcome = judgeRealtime(res, a, g.opt.Now(), g)
	if a.verdict == commit && a.status != http.StatusSwitchingProtocols {
		// The caller's answer (a 4xx): read it up to the commit point, as a plain answer is.
		a.watch.arm(g.opt.Timeouts.StreamIdle.D(), waitIdle)
		head, complete, err := readHead(a.resp.Body, &a.watch)
		if err != nil {
			res.err, res.cause, res.callerGone = err, context.Cause(a.ctx), callerCtx.Err() != nil
			a.outcome = classify(res, g.opt.Now(), g.opt.Throttle)
		} else {
			a.head, a.complete = head, complete
		}
	}
	if a.outcome.unauthorized && g.rotate(a.ctx, t.Account, res.sent) {
		a.outcome = keyRotated
	}
	if a.verdict != commit {
		g.discard(a)
	} else {
		a.watch.stop()
	}
	a.dur = g.opt.Now().Sub(a.start)
	g.record(a, res)
	endAttemptSpan(span, a)
	return a
}

// judgeRealtime is classify for a handshake: a 101 that switches to WebSocket is the one
// success; classify's rules judge everything else, except that a success which is no switch
// means the target does not serve the Realtime API there.
func judgeRealtime(res result, a *attempt, now time.Time, g *Gateway) outcome {
	if res.err == nil && !res.callerGone && res.status == http.StatusSwitchingProtocols && switched(a.resp) && a.conn != nil {
		return outcome{verdict: commit, kind: state.Succeeded}
	}
	o := classify(res, now, g.opt.Throttle)
	if o.verdict == commit && res.status < 300 {
		return outcome{verdict: next, kind: state.Failed,
			reason: "the backend answered " + strconv.Itoa(res.status) + " instead of switching to WebSocket"}
	}
	return o
}

// switched reports whether a 101 really switched to WebSocket: net/http then gives a body that
// is the connection.
func switched(resp *http.Response) bool {
	if resp == nil || !strings.EqualFold(strings.TrimSpace(headerValue(resp.Header, "Upgrade")), "websocket") {
		return false
	}
	_, ok := resp.Body.(io.ReadWriteCloser)
	return ok
}

// performRealtime sends the upgrade request to the target and reads the response's head.
func (g *Gateway) performRealtime(a *attempt, c *call, deadline time.Time) result {
	t := a.target
	a.url = url.URL{Scheme: t.Scheme, Host: t.Authority, Path: c.path,
		RawQuery: withQueryValue(c.query, realtimeParam(c.path), t.Deployment)}
	req := (&http.Request{
		Method: http.MethodGet, URL: &a.url, Host: t.Authority,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: make(http.Header, len(c.inHeader)+2),
	}).WithContext(httptrace.WithClientTrace(a.ctx, &a.trace))
	outboundHeaders(req.Header, c.inHeader, false)
	// With these two, net/http's Transport speaks HTTP/1.1 to the target even where it offers
	// HTTP/2, and hands a 101 back with the connection as its body.
	req.Header["Connection"] = []string{"Upgrade"}
	req.Header["Upgrade"] = []string{"websocket"}
	if err := g.opt.Credentials.Authorize(a.ctx, t.Account, req.Header); err != nil {
		return result{noCredential: true}
	}
	a.watch.start(a.cancel, deadline, g.opt.Timeouts.FirstByte.D(), waitHeaders)
	return g.roundTrip(a, req)
}

// answerRealtime passes on a target's refusal of the handshake that is the caller's (a 400 for
// a bad api-version, say), as a plain answer is passed on.
func (g *Gateway) answerRealtime(w http.ResponseWriter, c *call, a *attempt) {
	defer a.close()
	h := w.Header()
	copyResponseHeaders(h, a.resp.Header)
	g.setServedHeaders(h, a.target.ID, len(c.log.attempts))
	c.log.servedBy, c.log.status, c.log.upstreamID = a.target.ID, a.status, a.reqID
	head := *a.head
	if a.complete {
		h.Set("Content-Length", strconv.Itoa(len(head)))
	} else {
		delete(h, "Content-Length")
	}
	w.WriteHeader(a.status)
	c.log.firstByte = g.opt.Now().Sub(c.start)
	if _, err := w.Write(head); err == nil && !a.complete {
		a.watch.arm(g.opt.Timeouts.StreamIdle.D(), waitIdle)
		_, _ = io.Copy(w, a.resp.Body)
	}
}

func (g *Gateway) setServedHeaders(h http.Header, target string, attempts int) {
	if v, ok := g.servedBy[target]; ok {
		h[headerServedBy] = v
	} else {
		h.Set(headerServedBy, target)
	}
	h.Set(headerAttempts, strconv.Itoa(attempts))
}

// relayRealtime takes the caller's connection over, sends it the target's 101, and relays the
// session both ways until it ends.
func (g *Gateway) relayRealtime(w http.ResponseWriter, r *http.Request, c *call, a *attempt) {
	defer a.close() // closes the target's connection
	c.log.servedBy, c.log.upstreamID = a.target.ID, a.reqID
	backend := a.resp.Body.(io.ReadWriteCloser)
	nc, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		if r.Context().Err() != nil {
			c.log.status = 499
			return
		}
		g.opt.Logger.Error("cannot take the connection over for a WebSocket", "error", err)
		e := apierr.New(http.StatusInternalServerError, "InternalServerError", "the gateway could not switch this connection to WebSocket")
		c.log.status = e.Status
		e.Write(w)
		return
	}
	defer nc.Close()

	h := make(http.Header, len(a.resp.Header)+2)
	copyResponseHeaders(h, a.resp.Header)
	delete(h, "Content-Length")
	g.setServedHeaders(h, a.target.ID, len(c.log.attempts))
	var head strings.Builder
	head.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
	for k, vv := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			if httpguts.ValidHeaderFieldValue(v) {
				head.WriteString(k + ": " + v + "\r\n")
			}
		}
	}
	head.WriteString("\r\n")
	_ = nc.SetWriteDeadline(time.Now().Add(g.opt.Timeouts.FirstByte.D()))
	if _, err := io.WriteString(nc, head.String()); err != nil {
		c.log.status = 499
		return
	}
	_ = nc.SetWriteDeadline(time.Time{})
	c.log.status = http.StatusSwitchingProtocols
	c.log.firstByte = g.opt.Now().Sub(c.start)

	idle, session := g.opt.Timeouts.RealtimeIdle.D(), g.opt.Timeouts.RealtimeSession.D()
	if idle <= 0 {
		idle = config.DefaultRealtimeIdle
	}
	if session <= 0 {
		session = config.DefaultRealtimeSession
	}
	rl := &relay{callerConn: nc, backendConn: a.conn, idle: idle, limit: c.start.Add(session)}
	rl.up = pipe{src: rw.Reader, dst: backend, dstConn: a.conn, mask: true}
	rl.down = pipe{src: backend, dst: nc, dstConn: nc}
	end := rl.run(r.Context())
	c.end = g.opt.Now()
	c.log.broken = end.broken
	if end.backendBroke {
		g.opt.State.Record(a.target.ID, state.Outcome{Kind: state.Failed, Status: a.status, Reason: end.broken, Quota: state.UnknownQuota})
	}
}

// Relay timing: how long the side that closed first waits for the other direction to finish,
// and how long a close frame the gateway sends may take to be written and answered.
const (
	closeLinger = 2 * time.Second
	closeWait   = time.Second
)

// relay copies bytes both ways between the caller and the target after the handshake.
type relay struct {
	callerConn, backendConn net.Conn // for deadlines and half-closes
	up, down                pipe     // caller to target, target to caller
	idle                    time.Duration
	limit                   time.Time
	last                    atomic.Int64 // Unix nanoseconds of the last bytes either way
	timer                   *time.Timer  // fires check

	mu      sync.Mutex
	ending  bool    // the session is ending: pumps are interrupted, nothing new starts
	closing *ending // why the gateway ended it, if it did
}

// pipe is one direction of a relay.
type pipe struct {
	src         io.Reader
	dst         io.Writer
	dstConn     net.Conn // dst's connection, for deadlines and its half-close
	mask        bool     // dst is the target: frames the gateway writes to it are masked
	frames      frameTracker
	err         error
	writeFailed bool // err came from writing to dst
}

// ending is why the gateway ends a session, as told to both sides and to the log.
type ending struct {
	code   uint16
	reason string
}

// relayEnd is what the request log and the target's state learn from a session's end.
type relayEnd struct {
	broken       string // why it ended other than by a side closing it; empty if it did
	backendBroke bool   // the target's connection broke, or ended without a close frame
}

// WebSocket close codes (RFC 6455 7.4.1; 1014 is IANA's "Bad Gateway").
const (
	closeGoingAway  = 1001
	closeBadGateway = 1014
)

func (rl *relay) run(ctx context.Context) relayEnd {
	rl.last.Store(time.Now().UnixNano())
	done := make(chan *pipe, 2)
	go rl.pump(&rl.up, done)
	go rl.pump(&rl.down, done)
	rl.timer = time.AfterFunc(time.Hour, rl.check) // set before it can fire: check uses it
	rl.timer.Reset(min(rl.idle, time.Until(rl.limit)))
	defer rl.timer.Stop()
	stopOnCancel := context.AfterFunc(ctx, func() {
		why := "the gateway is shutting down"
		if !errors.Is(context.Cause(ctx), http.ErrServerClosed) {
			why = "the gateway ended the request"
		}
		rl.stop(&ending{closeGoingAway, why})
	})
	defer stopOnCancel()

	first := <-done
	second := (*pipe)(nil)
	clean := first.err == io.EOF && first.frames.closed && !rl.stopped()
	if clean {
		// The side that sent its close frame has finished sending: pass its end on, and let
		// the other direction finish (its close frame, then its end) for a while.
		closeWrite(first.dstConn)
		select {
		case second = <-done:
		case <-time.After(closeLinger):
		}
	}
	rl.stop(nil)
	if second == nil {
		second = <-done
	}

	rl.mu.Lock()
	why := rl.closing
	rl.mu.Unlock()
	var told []*pipe // the directions a close frame was sent down
	var end relayEnd
	switch {
	case why != nil: // the gateway ended it: both sides are told
		end.broken = why.reason
		for _, p := range []*pipe{&rl.up, &rl.down} {
			if goodbye(p, why.code, why.reason) {
				told = append(told, p)
			}
		}
	case clean:
	default:
		// A side broke or left without a close frame: the other is told.
		callerGone := first == &rl.up && !first.writeFailed || first == &rl.down && first.writeFailed
		if callerGone {
			if goodbye(&rl.up, closeGoingAway, "the caller went away") {
				told = append(told, &rl.up)
			}
		} else {
			end.backendBroke = true
			end.broken = "the backend's connection ended without a close frame"
			if err := first.err; err != nil && err != io.EOF {
				end.broken = "the backend's connection broke: " + err.Error()
			}
			if goodbye(&rl.down, closeBadGateway, "the backend's connection ended") {
				told = append(told, &rl.down)
			}
		}
	}
	// Read what a told side still sends (its own close frame), for a moment, so that closing
	// with unread bytes does not reset the connection before the close frame is read.
	var drains sync.WaitGroup
	for _, p := range told {
		other := &rl.up
		if p == &rl.up {
			other = &rl.down
		}
		drains.Add(1)
		go func() {
			defer drains.Done()
			_ = p.dstConn.SetReadDeadline(time.Now().Add(closeWait))
			_, _ = io.CopyN(io.Discard, other.src, 1<<20)
		}()
	}
	drains.Wait()
	return end
}

// check ends the session when it has been idle too long or reached its limit, and otherwise
// sets the timer for the next time either could happen.
func (rl *relay) check() {
	now := time.Now()
	if !now.Before(rl.limit) {
		rl.stop(&ending{closeGoingAway, "the session reached the gateway's limit (timeouts.realtimeSession)"})
		return
	}
	idleFor := now.Sub(time.Unix(0, rl.last.Load()))
	if idleFor >= rl.idle {
		rl.stop(&ending{closeGoingAway, "the session was idle for " + rl.idle.String()})
		return
	}
	rl.timer.Reset(min(rl.idle-idleFor, rl.limit.Sub(now)))
}

// stop ends the session, for why (nil: a side ended it): both pumps are interrupted. Only the
// first call counts.
func (rl *relay) stop(why *ending) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if rl.ending {
		return
	}
	rl.ending, rl.closing = true, why
	for _, c := range []net.Conn{rl.callerConn, rl.backendConn} {
		_ = c.SetDeadline(aLongTimeAgo)
	}
}

func (rl *relay) stopped() bool {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return rl.ending
}

var aLongTimeAgo = time.Unix(1, 0)

// relayBuffers recycles the pumps' buffers; a Realtime event (JSON with base64 audio) is a few
// KiB to some tens of KiB.
var relayBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// pump copies src to dst until either fails, noting the time of every read for the idle bound
// and following the frames written.
func (rl *relay) pump(p *pipe, done chan<- *pipe) {
	bp := relayBuffers.Get().(*[]byte)
	buf := *bp
	for {
		n, err := p.src.Read(buf)
		if n > 0 {
			rl.last.Store(time.Now().UnixNano())
			w, werr := p.dst.Write(buf[:n])
			p.frames.feed(buf[:w])
			if werr != nil {
				p.err, p.writeFailed = werr, true
				break
			}
		}
		if err != nil {
			p.err = err
			break
		}
	}
	relayBuffers.Put(bp)
	done <- p
}

// goodbye sends a close frame down p, if p's stream is between two frames and has carried no
// close frame yet, then ends the sending side of the connection.
func goodbye(p *pipe, code uint16, reason string) bool {
	if p.writeFailed || !p.frames.atBoundary() || p.frames.closed {
		return false
	}
	_ = p.dstConn.SetWriteDeadline(time.Now().Add(closeWait))
	if _, err := p.dst.Write(closeFrame(code, reason, p.mask)); err != nil {
		return false
	}
	closeWrite(p.dstConn)
	return true
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// closeFrame is a WebSocket close frame with code and reason (at most 123 bytes), masked with a
// random key when it goes to a server, as RFC 6455 5.3 requires of a client.
func closeFrame(code uint16, reason string, masked bool) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	payload := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reason)), code)
	payload = append(payload, reason...)
	frame := []byte{0x88, byte(len(payload))} // FIN, opcode 8 (close)
	if masked {
		var key [4]byte
		_, _ = rand.Read(key[:])
		frame[1] |= 0x80
		frame = append(frame, key[:]...)
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return append(frame, payload...)
}

// frameTracker follows the frame boundaries of a WebSocket byte stream (RFC 6455 5.2) by
// reading only the frame headers; payloads are counted, never kept or looked into. It tells the
// relay where a frame of its own may go, and whether the stream has carried a close frame.
type frameTracker struct {
	hdr    [14]byte
	have   int    // header bytes of the frame in progress seen so far
	need   int    // header bytes the frame in progress has (known from its second byte)
	left   uint64 // payload bytes of the frame in progress still to come
	closed bool   // a close frame began
}

func (f *frameTracker) feed(p []byte) {
	for len(p) > 0 {
		if f.left > 0 {
			n := uint64(len(p))
			if n > f.left {
				n = f.left
			}
			f.left -= n
			p = p[n:]
			continue
		}
		f.hdr[f.have] = p[0]
		f.have++
		p = p[1:]
		if f.have == 2 {
			f.need = 2
			switch f.hdr[1] & 0x7f {
			case 126:
				f.need += 2
			case 127:
				f.need += 8
			}
			if f.hdr[1]&0x80 != 0 {
				f.need += 4
			}
		}
		if f.have < 2 || f.have < f.need {
			continue
		}
		n := uint64(f.hdr[1] & 0x7f)
		switch n {
		case 126:
			n = uint64(binary.BigEndian.Uint16(f.hdr[2:4]))
		case 127:
			n = min(binary.BigEndian.Uint64(f.hdr[2:10]), math.MaxInt64)
		}
		if f.hdr[0]&0x0f == 0x8 {
			f.closed = true
		}
		f.left, f.have, f.need = n, 0, 0
	}
}

// atBoundary reports whether the stream is between two frames.
func (f *frameTracker) atBoundary() bool { return f.have == 0 && f.left == 0 }
