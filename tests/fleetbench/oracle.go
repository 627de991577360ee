package main

import (
	"net/http"
	"time"

	"github.com/aoai-failover/gateway/tests/aoaisim"
)

// runOracle replays the trace on a virtual clock against the same admission rules as the
// simulated regions (aoaisim.Limiter, started spent as they are): each request goes to the first
// region in priority order that can admit it at that instant, and a full region is never called.
// With wait > 0 a request that no region can admit waits up to wait for the first region that
// frees (the earliest instant at which any region can admit it; requests are admitted as soon
// as they fit, so a smaller one that fits is not held behind a larger one that does not).
func runOracle(trace []call, specs []regionSpec, window time.Duration, wait time.Duration, lat simLatency) runResult {
	t0 := time.Unix(1_700_000_000, 0)
	lims := make([]*aoaisim.Limiter, len(specs))
	for i, sp := range specs {
		lims[i] = aoaisim.NewLimiter(sp.tpm, 0, window, true, t0)
	}
	res := runResult{outcomes: make([]outcome, len(trace)), hits: make([][]hit, len(specs))}
	admit := func(i int, now time.Time) bool {
		for r, l := range lims {
			if _, _, _, _, ok := l.Admit(now, trace[i].cost); ok {
				at := now.Sub(t0)
				res.hits[r] = append(res.hits[r], hit{at: at, cost: trace[i].cost, admitted: true})
				res.outcomes[i] = outcome{status: http.StatusOK, latency: at - trace[i].at + lat.of(trace[i].maxTokens), region: r}
				return true
			}
		}
		return false
	}
	refuse := func(i int) { res.outcomes[i] = outcome{status: http.StatusTooManyRequests, region: -1} }

	type waiting struct {
		i        int
		deadline time.Time
	}
	var queue []waiting
	next := 0
	cur := t0 // the last instant processed
	for next < len(trace) || len(queue) > 0 {
		// The earliest instant a waiting request fits some region; hopeless ones are refused
		// now, since admissions only ever push the instants later.
		best, bestAt := -1, time.Time{}
		now := t0
		if next < len(trace) {
			now = t0.Add(trace[next].at)
		}
		kept := queue[:0]
		for _, q := range queue {
			at, ok := time.Time{}, false
			for _, l := range lims {
				w, _, possible := l.Wait(cur, trace[q.i].cost)
				if possible && (!ok || cur.Add(w).Before(at)) {
					at, ok = cur.Add(w), true
				}
			}
			if !ok || at.After(q.deadline) {
				refuse(q.i)
				continue
			}
			kept = append(kept, q)
			if best < 0 || at.Before(bestAt) {
				best, bestAt = len(kept)-1, at
			}
		}
		queue = kept
		if best >= 0 && (next >= len(trace) || !now.Before(bestAt)) {
			q := queue[best]
			queue = append(queue[:best], queue[best+1:]...)
			cur = bestAt
			if !admit(q.i, bestAt) {
				refuse(q.i) // cannot happen: it fits at bestAt
			}
			continue
		}
		i := next
		next++
		cur = now
		if admit(i, now) {
			continue
		}
		if wait > 0 {
			queue = append(queue, waiting{i, now.Add(wait)})
		} else {
			refuse(i)
		}
	}
	return res
}
