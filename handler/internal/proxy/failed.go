package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/apierr"
	"github.com/aoai-failover/gateway/handler/internal/route"
	"github.com/aoai-failover/gateway/handler/internal/state"
	"github.com/aoai-failover/gateway/handler/internal/telemetry"
)

// writeAllFailed answers when no target produced a response: 429 when every target is
// throttled (with the shortest wait), else 504 when the failures were timeouts, else 502.
func (g *Gateway) writeAllFailed(w http.ResponseWriter, c *call, tried []*attempt, skipped []route.Skipped) {
	now := g.opt.Now()
	var details []apierr.Detail
	allThrottled, anyTimeout, anyOther := true, false, false
	allNotFound, allNoCredential := len(tried) > 0, len(tried) > 0
	var soonest time.Time
	note := func(at time.Time) {
		if !at.IsZero() && (soonest.IsZero() || at.Before(soonest)) {
			soonest = at
		}
	}
	for _, a := range tried {
		d := apierr.Detail{Target: a.target.ID, Status: a.status, Reason: a.reason}
		allNotFound = allNotFound && a.notFound
		allNoCredential = allNoCredential && a.noCredential
		switch {
		case a.noCredential:
			d.Outcome, allThrottled, anyOther = "no credential", false, true
			details = append(details, d)
			continue
		case a.notFound:
			d.Outcome, allThrottled, anyOther = "not found", false, true
			details = append(details, d)
			continue
		}
		switch a.kind {
		case state.Throttled:
			d.Outcome = "throttled"
			free := a.start.Add(a.dur).Add(a.wait)
			note(free)
			d.FreeAt, d.RetryAfter = free.UTC().Format(time.RFC3339Nano), a.wait.Round(time.Millisecond).String()
		case state.Misconfigured:
			d.Outcome, allThrottled, anyOther = "misconfigured", false, true
		default:
			d.Outcome, allThrottled = "failed", false
			if a.timeout {
				d.Outcome, anyTimeout = "timeout", true
			} else {
				anyOther = true
			}
		}
		details = append(details, d)
	}
	for _, s := range skipped {
		d := apierr.Detail{Target: s.Target.ID, Outcome: "skipped: failing", FreeAt: s.Until.UTC().Format(time.RFC3339Nano)}
		if s.Throttled {
			d.Outcome = "skipped: throttled"
			if s.Short {
				d.Outcome = "skipped: no quota left"
			}
			d.RetryAfter = s.Until.Sub(now).Round(time.Millisecond).String()
		} else {
			allThrottled = false
		}
		note(s.Until)
		details = append(details, d)
	}

	h := w.Header()
	h.Set(headerServedBy, "none")
	h.Set(headerAttempts, strconv.Itoa(len(c.log.attempts))) // every call made, a retry after a key rotation included
	if !soonest.IsZero() {
		setRetryAfter(h, soonest.Sub(now))
	}
	var status int
	var code, msg string
	switch {
	case allNoCredential && len(skipped) == 0:
		status, code = http.StatusServiceUnavailable, "NoCredential"
		msg = fmt.Sprintf("no target of deployment %q has a credential yet (Key Vault or the managed identity is not reachable); try again shortly", c.logical)
		h.Set("Retry-After", "5")
	case allNotFound && len(skipped) == 0:
		status, code = http.StatusNotFound, "NotFound"
		msg = fmt.Sprintf("every target of deployment %q answered 404 Resource not found: check the operation path and api-version", c.logical)
	case allThrottled && len(details) > 0:
		status, code = http.StatusTooManyRequests, "AllTargetsThrottled"
		msg = fmt.Sprintf("every target of deployment %q is throttled; the first frees up in %s: %s",
			c.logical, soonest.Sub(now).Round(time.Millisecond), summary(details))
	case anyTimeout && !anyOther:
		status, code = http.StatusGatewayTimeout, "AllTargetsTimedOut"
		msg = fmt.Sprintf("no target of deployment %q answered in time: %s", c.logical, summary(details))
	default:
		status, code = http.StatusBadGateway, "AllTargetsFailed"
		msg = fmt.Sprintf("no target of deployment %q could serve the request: %s", c.logical, summary(details))
	}
	if c.pinnedTo != "" {
		// The request builds on state that only one account holds: say why it cannot move.
		why := fmt.Sprintf("%s %q is held by account %q, so the request cannot be served by another account", singular(kindOf(c.boundID)), c.boundID, c.pinnedTo)
		if status == http.StatusTooManyRequests {
			code, msg = "StateOwnerThrottled", why+"; that account is throttled until "+soonest.UTC().Format(time.RFC3339)+": retry after the wait: "+summary(details)
		} else {
			status, code, msg = http.StatusServiceUnavailable, "StateOwnerUnavailable", why+"; that account cannot serve it now: "+summary(details)
			if h.Get("Retry-After") == "" {
				h.Set("Retry-After", "5")
			}
		}
	}
	c.log.status = status
	(&apierr.Error{Status: status, Code: code, Message: msg, Details: details}).Write(w)
}

// setRetryAfter sets both forms of the wait: whole seconds (rounded up, at least 1) and ms.
func setRetryAfter(h http.Header, wait time.Duration) {
	if wait < 0 {
		wait = 0
	}
	secs := int(math.Ceil(wait.Seconds()))
	h.Set("Retry-After", strconv.Itoa(max(secs, 1)))
	h.Set("Retry-After-Ms", strconv.FormatInt(wait.Milliseconds(), 10))
}

func summary(details []apierr.Detail) string {
	parts := make([]string, 0, len(details))
	for _, d := range details {
		s := d.Target + " " + d.Outcome
		if d.Status != 0 {
			s += fmt.Sprintf(" (%d)", d.Status)
		}
		if d.RetryAfter != "" {
			s += " until " + d.FreeAt
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// requestLog is the one record written per request. It holds no body, key or token.
type requestLog struct {
	method, path  string
	app           string
	logical       string
	stream        bool
	status        int
	servedBy      string
	upstreamID    string
	attempts      []*attempt
	firstAttempts [2]*attempt     // attempts' first array: most requests make one or two
	skipped       []route.Skipped // targets not tried: known throttled or failing
	firstByte     time.Duration
	firstToken    time.Duration
	usage         *Usage // nil when the answer reported none
	usageData     Usage  // what usage points to: no allocation of its own
	broken        string
	queued        time.Duration // time spent in the admission wait
	budgetRefused bool          // the app's token budget refused the request
}

func (l *requestLog) setUsage(u Usage, ok bool) {
	if ok {
		l.usageData = u
		l.usage = &l.usageData
	}
}

func (g *Gateway) logRequest(c *call) {
	endRequestSpan(c)
	now := g.opt.Now()
	end := now
	if !c.end.IsZero() {
		end = c.end
	}
	total := end.Sub(c.start)
	g.metrics.record(context.Background(), c, total.Seconds())
	if g.opt.RequestLog == nil {
		return
	}
	l := &c.log
	level := slog.LevelInfo
	if l.status >= 500 {
		level = slog.LevelWarn
	}
	line := telemetry.NewLine(now, level, "request").
		Str("method", l.method).Str("path", l.path).Int("status", int64(l.status)).Str("app", orNone(l.app)).
		Str("deployment", l.logical).Bool("stream", l.stream).
		Str("servedBy", orNone(l.servedBy)).Int("attempts", int64(len(l.attempts))).
		Ms("durationMs", total)
	if l.firstByte > 0 {
		line.Ms("firstByteMs", l.firstByte)
	}
	if l.firstToken > 0 {
		line.Ms("firstTokenMs", l.firstToken)
	}
	if l.upstreamID != "" {
		line.Str("upstreamRequestId", l.upstreamID)
	}
	if u := l.usage; u != nil {
		line.Open("usage", '{').Int("prompt", int64(u.Prompt)).Int("completion", int64(u.Completion)).Int("total", int64(u.Total)).Close('}')
	}
	if l.broken != "" {
		line.Str("broken", l.broken)
	}
	if l.queued > 0 {
		line.Ms("queuedMs", l.queued)
	}
	if len(l.attempts) > 1 || (len(l.attempts) == 1 && l.attempts[0].resp == nil) {
		line.Open("tried", '[')
		for _, a := range l.attempts {
			line.Elem().Str("target", a.target.ID).Int("status", int64(a.status)).Str("outcome", outcomeName(a)).Ms("ms", a.dur)
			if a.reason != "" {
				line.Str("reason", a.reason)
			}
			line.Close('}')
		}
		line.Close(']')
	}
	if len(l.skipped) > 0 {
		line.Open("skipped", '[')
		for _, sk := range l.skipped {
			why := "failing"
			switch {
			case sk.Short:
				why = "quota"
			case sk.Throttled:
				why = "throttled"
			}
			line.Elem().Str("target", sk.Target.ID).Str("why", why).Ms("forMs", sk.Until.Sub(now)).Close('}')
		}
		line.Close(']')
	}
	g.opt.RequestLog.Emit(line)
}

func outcomeName(a *attempt) string {
	switch {
	case a.resp != nil:
		return "served"
	case a.timeout:
		return "timeout"
	}
	switch a.kind {
	case state.Throttled:
		return "throttled"
	case state.Misconfigured:
		return "misconfigured"
	case state.Abandoned:
		return "abandoned"
	}
	return "failed"
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
