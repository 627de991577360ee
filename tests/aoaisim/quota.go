package aoaisim

import (
	"math"
	"time"
)

// Quota switches a deployment's limits to Azure's admission rules as the fleet benchmark
// (tests/fleetbench) models them, instead of the default sliding minute of content estimates and
// fixed 10 s request buckets:
//   - each request is charged at admission len(body)/4 + its max_tokens (max_completion_tokens,
//     max_output_tokens; 256 when it names none), the estimate the gateway makes too;
//   - tokens are a bucket of TPM that refills continuously at TPM per Window, so capacity frees
//     as the window rolls instead of at a boundary;
//   - requests are a bucket of RPM/6 (Azure evaluates RPM over 10 s, a sixth of its minute) that
//     refills continuously at RPM per Window (RPM defaults to 6 per 1,000 TPM);
//   - a refusal's retry-after-ms is exact: the wait, rounded up to the millisecond, after which
//     the same request fits if nothing else is admitted meanwhile; x-ratelimit-remaining-tokens
//     and -requests are what is left after the charge (on a 429: what is left now).
//
// Window scales time: 60 s is Azure's minute; the benchmark's 1/6 scale uses 10 s, keeping TPM
// and RPM per window, so the same traffic runs six times faster.
type Quota struct {
	// Window is the period TPM and RPM are counted over; default one minute.
	Window Duration `json:"window,omitempty"`
	// Empty starts the budget spent, as a deployment that has been busy, instead of full as one
	// that has been idle: a benchmark then needs less warm-up to reach its steady state.
	Empty bool `json:"empty,omitempty"`
}

func (q *Quota) window() time.Duration {
	if q == nil || q.Window <= 0 {
		return time.Minute
	}
	return time.Duration(q.Window)
}

// Limiter is the admission of one deployment under Quota: a token bucket and a request bucket
// refilling continuously. The simulator uses it under its lock; the fleet benchmark's oracle uses
// it on its own virtual clock. It is not safe for concurrent use; times must not go backwards.
type Limiter struct {
	tokenCap, reqCap   float64 // bucket sizes
	tokenRate, reqRate float64 // refill per nanosecond
	tokens, reqs       float64 // available now (may go below 0 after Charge)
	at                 time.Time
}

// NewLimiter returns a limiter for tpm tokens and rpm requests per window (rpm 0: 6 per 1,000
// tpm; tpm 0: tokens unlimited), full (or spent if empty) at start.
func NewLimiter(tpm, rpm int, window time.Duration, empty bool, start time.Time) *Limiter {
	if window <= 0 {
		window = time.Minute
	}
	if rpm <= 0 && tpm > 0 {
		rpm = max(1, tpm*6/1000)
	}
	l := &Limiter{at: start}
	if tpm > 0 {
		l.tokenCap = float64(tpm)
		l.tokenRate = float64(tpm) / float64(window)
	}
	if rpm > 0 {
		l.reqCap = math.Max(1, float64(rpm)/6)
		l.reqRate = float64(rpm) / float64(window)
	}
	if !empty {
		l.tokens, l.reqs = l.tokenCap, l.reqCap
	}
	return l
}

func (l *Limiter) advance(now time.Time) {
	dt := float64(now.Sub(l.at))
	if dt <= 0 {
		return
	}
	l.at = now
	if l.tokenRate > 0 {
		l.tokens = math.Min(l.tokenCap, l.tokens+dt*l.tokenRate)
	}
	if l.reqRate > 0 {
		l.reqs = math.Min(l.reqCap, l.reqs+dt*l.reqRate)
	}
}

// Available returns the tokens and requests that could be admitted at now (-1: unlimited).
func (l *Limiter) Available(now time.Time) (tokens, requests float64) {
	l.advance(now)
	tokens, requests = -1, -1
	if l.tokenRate > 0 {
		tokens = l.tokens
	}
	if l.reqRate > 0 {
		requests = l.reqs
	}
	return tokens, requests
}

// Wait returns how long from now until a request of cost tokens fits (0: it fits now), whether
// tokens (rather than requests) are what it waits for, and false if it can never fit (cost over
// the whole bucket).
func (l *Limiter) Wait(now time.Time, cost int) (wait time.Duration, byTokens, possible bool) {
	l.advance(now)
	var tw, rw float64
	if l.tokenRate > 0 {
		if float64(cost) > l.tokenCap {
			return 0, true, false
		}
		if d := float64(cost) - l.tokens; d > 0 {
			tw = d / l.tokenRate
		}
	}
	if l.reqRate > 0 {
		if d := 1 - l.reqs; d > 0 {
			rw = d / l.reqRate
		}
	}
	w := math.Max(tw, rw)
	if w <= 0 {
		return 0, false, true
	}
	// Whole milliseconds, rounded up, so that a retry after retry-after-ms fits.
	ms := time.Duration(math.Ceil(w / float64(time.Millisecond)))
	return ms * time.Millisecond, tw >= rw, true
}

// Admit charges cost at now if it fits, returning what is left; otherwise it charges nothing and
// returns the wait (see Wait). Left values are -1 for an unlimited dimension.
func (l *Limiter) Admit(now time.Time, cost int) (leftTokens, leftRequests int, wait time.Duration, byTokens, ok bool) {
	w, byTok, possible := l.Wait(now, cost)
	if !possible {
		w = time.Duration(float64(cost)/l.tokenRate) + time.Millisecond
	}
	if w > 0 || !possible {
		t, r := l.left()
		return t, r, w, byTok, false
	}
	l.Charge(now, cost)
	t, r := l.left()
	return t, r, 0, false, true
}

// Charge takes cost tokens and one request at now whether or not they fit (the buckets may go
// below zero): for replaying a log of admissions.
func (l *Limiter) Charge(now time.Time, cost int) {
	l.advance(now)
	if l.tokenRate > 0 {
		l.tokens -= float64(cost)
	}
	if l.reqRate > 0 {
		l.reqs--
	}
}

func (l *Limiter) left() (tokens, requests int) {
	tokens, requests = -1, -1
	if l.tokenRate > 0 {
		tokens = max(0, int(math.Floor(l.tokens)))
	}
	if l.reqRate > 0 {
		requests = max(0, int(math.Floor(l.reqs)))
	}
	return tokens, requests
}

// ChargeOf is what Quota charges a request at admission: len(body)/4 plus the output tokens it
// may use.
func ChargeOf(bodyLen, maxTokens int) int { return bodyLen/4 + maxTokens }

// admitQuota is admit's path for a deployment with a Quota; the simulator's lock is held.
func (d *deployment) admitQuota(now time.Time, cost int) (remaining, *refusal) {
	t, r, wait, byTokens, ok := d.limiter.Admit(now, cost)
	if ok {
		return remaining{t, r}, nil
	}
	return remaining{-1, -1}, &refusal{tokens: byTokens, wait: wait, left: remaining{t, r}}
}

// cost is what the deployment charges a request at admission.
func (d *deployment) cost(prompt, requested, bodyLen int) int {
	if d.limiter != nil {
		return ChargeOf(bodyLen, requested)
	}
	return prompt + requested
}
