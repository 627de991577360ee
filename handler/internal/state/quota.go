package state

import (
	"math"
	"time"
)

// The quota model: what a target can admit now, as far as this instance can tell without
// asking it. Azure OpenAI admits a request when its estimated cost (a quarter of the body's
// bytes plus the output tokens asked for) fits the tokens left of the deployment's per-minute
// limit, and a request fits the requests left; both free up continuously. So each target keeps:
//
//   - its last reading: x-ratelimit-remaining-tokens and -requests of the newest answer, as of
//     the moment that answer's request was sent (the service counts a request when it arrives,
//     not when its answer ends);
//   - its limits: x-ratelimit-limit-tokens and -requests when the answer has them, else
//     inferred as the largest lower bound seen: "remaining + the cost of the request that left
//     it" (a charged request left exactly limit - used - cost: the limit, the first time a
//     request finds the window unused), and, from a 429 that says both what is left and how long
//     until the request fits, window * (cost - remaining - 1) / wait (a target refilling at
//     limit/window needs at least that rate to free cost - remaining in wait);
//   - what this instance sent it since the reading and that the reading cannot include, by the
//     gateway's own estimate of each request (charged until the answer shows it was not: a 429,
//     a refused credential, a connection that failed);
//   - what the other instances report sending it, per second (Report.Targets).
//
// What it can admit now is then
//
//	min(limit, remaining + limit/window*dt - others*min(dt, window)) - sent since the reading
//
// with dt the reading's age, for tokens (window throttle.tokenWindow) and requests (cost 1,
// window throttle.requestWindow). A target that cannot admit the request is passed over until
// the refill covers what it lacks; an unknown reading or limit is room. A 429's wait is kept as
// before (throttled marks), and its remaining tokens become the reading.

// Send is one attempt's charge on a target as this instance counts it.
type Send struct {
	Seq    uint64 // in the order sent, across every target
	At     time.Time
	Tokens int64
	// charged: its outcome showed the target counted it (set in the target's own list).
	charged bool
}

// maxSends bounds the sends a target keeps between readings: the in-flight requests and those
// sent within the window; more than this means answers carry no readings, so nothing is lost.
const maxSends = 1 << 14

// Sent records that this instance is sending a request estimated at tokens to the target now;
// the attempt's Outcome carries the Send back to Record. It never waits on the store.
func (v *View) Sent(id string, now time.Time, tokens int64) Send {
	s := Send{Seq: v.seq.Add(1), At: now, Tokens: tokens}
	t := v.targets[id]
	if t == nil {
		return s
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lastSeq = max(t.lastSeq, s.Seq)
	t.curTok += tokens
	t.curReq++
	if t.quotaAt.IsZero() {
		return s // no reading to subtract it from
	}
	keep := now.Add(-max(v.opt.TokenWindow, v.opt.RequestWindow))
	drop := 0
	for drop < len(t.sends) && (!t.sends[drop].At.After(keep) || len(t.sends)-drop >= maxSends) {
		drop++
	}
	if drop > 0 {
		t.sends = append(t.sends[:0], t.sends[drop:]...)
	}
	t.sends = append(t.sends, s)
	return s
}

// settle notes that the target counted a send. t.mu is held.
func (t *target) settle(s Send) {
	for i := len(t.sends) - 1; i >= 0; i-- {
		if t.sends[i].Seq == s.Seq {
			t.sends[i].charged = true
			return
		}
	}
}

// uncharge takes back a send the target did not count. t.mu is held.
func (t *target) uncharge(s Send) {
	t.curTok -= s.Tokens
	t.curReq--
	for i := len(t.sends) - 1; i >= 0; i-- {
		if t.sends[i].Seq == s.Seq {
			t.sends = append(t.sends[:i], t.sends[i+1:]...)
			return
		}
	}
}

// read takes a reading of the target's remaining budget from an attempt's answer. t.mu is held.
func (t *target) read(o Outcome, now time.Time, tokenWindow, requestWindow time.Duration) {
	at, seq := o.Send.At, o.Send.Seq
	if seq == 0 { // a reading with no send of its own: it covers everything sent so far
		at, seq = now, t.lastSeq
	}
	t.learnLimits(o, tokenWindow)
	if seq < t.quotaSeq || (seq == t.quotaSeq && !t.quotaAt.IsZero() && at.Before(t.quotaAt)) {
		return // an answer to an older request than the reading held: it is older news
	}
	t.learnRefill(o.Quota, at, seq, tokenWindow, requestWindow)
	t.quota, t.quotaAt, t.quotaSeq = o.Quota, at, seq
	n := 0
	for _, s := range t.sends {
		if s.Seq > seq {
			t.sends[n] = s
			n++
		}
	}
	t.sends = t.sends[:n]
}

// learnLimits takes the limits from the answer's headers, else raises the inferred ones to what
// the reading proves. t.mu is held.
func (t *target) learnLimits(o Outcome, tokenWindow time.Duration) {
	charged := !o.Uncharged && o.Kind != Throttled
	if o.Limit.Tokens > 0 {
		t.limit.Tokens, t.limitHeader = o.Limit.Tokens, true
	} else if r := o.Quota.Tokens; r >= 0 && !t.limitHeader {
		l := r
		if charged {
			l += o.Send.Tokens
		}
		if o.Kind == Throttled && o.WaitExact && o.Wait > 0 && o.Send.Tokens > r+1 {
			l = max(l, int64(float64(o.Send.Tokens-r-1)*tokenWindow.Seconds()/o.Wait.Seconds()))
		}
		t.limit.Tokens = max(t.limit.Tokens, l)
	}
	if o.Limit.Requests > 0 {
		t.limit.Requests, t.limitHeaderReq = o.Limit.Requests, true
	} else if r := o.Quota.Requests; r >= 0 && !t.limitHeaderReq {
		if charged && o.Send.Seq != 0 {
			r++
		}
		t.limit.Requests = max(t.limit.Requests, r)
	}
}

// learnRefill raises the inferred limits to what the refill between the reading held and a
// newer one proves: the newer reading, plus what this instance sent in between and the target
// counted, less the older reading, came back in between (other instances' sends only make it
// more). A target refilling at limit/window per second must have at least that rate. Readings
// closer than a hundredth of the window are not compared, so that a target whose budget frees
// in lumps (a window that slides by requests) is not taken for a faster one. t.mu is held.
func (t *target) learnRefill(q Quota, at time.Time, seq uint64, tokenWindow, requestWindow time.Duration) {
	if t.quotaAt.IsZero() || seq <= t.quotaSeq {
		return
	}
	dt := at.Sub(t.quotaAt)
	var tokens, requests int64
	for _, s := range t.sends {
		if s.Seq <= seq && s.charged {
			tokens += s.Tokens
			requests++
		}
	}
	if r, prev := q.Tokens, t.quota.Tokens; r >= 0 && prev >= 0 && !t.limitHeader && dt >= tokenWindow/100 {
		if back := r - prev + tokens - 1; back > 0 {
			t.limit.Tokens = max(t.limit.Tokens, int64(float64(back)*tokenWindow.Seconds()/dt.Seconds()))
		}
	}
	if r, prev := q.Requests, t.quota.Requests; r >= 0 && prev >= 0 && !t.limitHeaderReq && dt >= requestWindow/100 {
		if back := r - prev + requests - 1; back > 0 {
			t.limit.Requests = max(t.limit.Requests, int64(float64(back)*requestWindow.Seconds()/dt.Seconds()))
		}
	}
}

// shortUntil is, when the model says the target cannot admit a request of cost tokens now,
// when it will (by the refill, as far as is known now); zero when it can. t.mu is held.
func (t *target) shortUntil(now time.Time, cost int64, tokenWindow, requestWindow time.Duration) time.Time {
	if t.quotaAt.IsZero() || cost <= 0 {
		return time.Time{}
	}
	var wait time.Duration
	if r, l := t.quota.Tokens, t.limit.Tokens; r >= 0 && l > 0 && cost <= l {
		// A request larger than the limit as far as it is known is left to the target to judge:
		// an inferred limit is only a lower bound.
		level, net := t.level(now, r, l, t.otherTok, tokenWindow, true)
		wait = max(wait, refillWait(level, net, cost, tokenWindow))
	}
	if r, l := t.quota.Requests, t.limit.Requests; r >= 0 && l > 0 {
		level, net := t.level(now, r, l, t.otherReq, requestWindow, false)
		wait = max(wait, refillWait(level, net, 1, requestWindow))
	}
	if wait <= 0 {
		return time.Time{}
	}
	return now.Add(wait)
}

// level is what a budget of limit per window holds now by the model, and how fast it refills
// (per second): the reading, refilled at limit/window per second less what the other instances
// send, never above the limit, less each of this instance's sends since the reading at the time
// it was made. t.mu is held.
func (t *target) level(now time.Time, remaining, limit int64, others float64, window time.Duration, tokens bool) (level, net float64) {
	net = float64(limit)/window.Seconds() - others
	level = float64(remaining)
	last := t.quotaAt
	fill := func(to time.Time) {
		if d := to.Sub(last); d > 0 {
			level = math.Min(float64(limit), level+net*d.Seconds())
			last = to
		}
	}
	for _, s := range t.sends {
		fill(s.At)
		if tokens {
			level -= float64(s.Tokens)
		} else {
			level--
		}
	}
	fill(now)
	return level, net
}

// refillWait is how long until a budget holding level, refilling at net per second, can admit
// cost. Zero: it can now. At most window (when others take the whole refill: until their
// reports say otherwise).
func refillWait(level, net float64, cost int64, window time.Duration) time.Duration {
	if level >= float64(cost) {
		return 0
	}
	if net <= 0 {
		return window
	}
	wait := time.Duration((float64(cost) - level) / net * float64(time.Second))
	return min(max(wait, time.Millisecond), window)
}

// estimateTokens is what the model says the target can admit now, in tokens, for /status.
// t.mu is held.
func (t *target) estimateTokens(now time.Time, window time.Duration) (int64, bool) {
	r, l := t.quota.Tokens, t.limit.Tokens
	if t.quotaAt.IsZero() || r < 0 || l <= 0 {
		return 0, false
	}
	level, _ := t.level(now, r, l, t.otherTok, window, true)
	return max(int64(level), 0), true
}
