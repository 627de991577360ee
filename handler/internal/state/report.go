package state

import (
	"context"
	"maps"
	"time"
)

// Report is what one instance tells the others of its own consumption, published through the
// store by the refresh loop (one write per refresh at most, none when nothing changed) and read
// by the others' refreshes in the same query as the marks. Nothing on the request path reads or
// writes the store for it.
type Report struct {
	Instance string
	// At is when the report was made, by the publisher's clock.
	At time.Time
	// Interval is the publisher's refresh interval: a report that is not renewed within a few
	// of them is from an instance that stopped (its rates no longer count).
	Interval time.Duration
	// Targets holds, per target, what this instance sent it and the target charged (tokens by
	// the gateway's estimate, and requests), per second over the last two intervals. Targets it
	// sent nothing are left out.
	Targets map[string]Rate
	// Apps holds, per app and logical deployment, the tokens this instance counted against the
	// app's budget within the budget window (settled answers by their real usage, answers under
	// way by their estimate).
	Apps map[string]map[string]int64
}

// Rate is a sending rate, per second.
type Rate struct {
	Tokens   float64 `json:"t"`
	Requests float64 `json:"r"`
}

func (r Report) clone() Report {
	c := r
	c.Targets = maps.Clone(r.Targets)
	if r.Apps != nil {
		c.Apps = make(map[string]map[string]int64, len(r.Apps))
		for app, m := range r.Apps {
			c.Apps[app] = maps.Clone(m)
		}
	}
	return c
}

// sameFigures: the two reports say the same (their times aside), so the newer need not be sent.
func sameFigures(a, b Report) bool {
	if !maps.Equal(a.Targets, b.Targets) || len(a.Apps) != len(b.Apps) {
		return false
	}
	for app, m := range a.Apps {
		if o, ok := b.Apps[app]; !ok || !maps.Equal(m, o) {
			return false
		}
	}
	return true
}

// AppsExchange is the budgets' side of the reports: what this instance counted against each
// app's budget, to publish, and what the other instances published, after each read.
type AppsExchange interface {
	Own(now time.Time) map[string]map[string]int64
	Others(reports []Report, now time.Time)
}

// staleAfter is how long a report's rates count without being renewed: an instance that sends
// publishes every interval (and once more when it stops), so a report older than a few intervals
// is from an instance that is gone or cannot reach the store. (Derived from the refresh
// intervals alone, so that a time-scaled run keeps the same proportions.)
func staleAfter(r Report, own time.Duration) time.Duration {
	return 4 * max(r.Interval, own)
}

// forgetReportsAfter: reports this old are dropped from memory (the table's are deleted on a
// full read, see TableStore).
const forgetReportsAfter = time.Hour

// report makes this instance's report and rolls each target's counting interval.
func (v *View) report(now time.Time) Report {
	r := Report{Instance: v.opt.Instance, At: now, Interval: v.opt.SyncInterval}
	span := now.Sub(v.lastReport)
	if v.lastReport.IsZero() || span <= 0 {
		span = v.opt.SyncInterval
	}
	v.lastReport = now
	for id, t := range v.targets {
		t.mu.Lock()
		whole := (span + t.prevSpan).Seconds()
		tok, req := max(0, t.curTok+t.prevTok), max(0, t.curReq+t.prevReq)
		t.prevTok, t.prevReq, t.prevSpan = t.curTok, t.curReq, span
		t.curTok, t.curReq = 0, 0
		t.mu.Unlock()
		if tok > 0 || req > 0 {
			if r.Targets == nil {
				r.Targets = map[string]Rate{}
			}
			r.Targets[id] = Rate{Tokens: round3(float64(tok) / whole), Requests: round3(float64(req) / whole)}
		}
	}
	if v.opt.Apps != nil {
		r.Apps = v.opt.Apps.Own(now)
	}
	return r
}

// round3 keeps a rate to three decimals, so that reports compare equal when nothing changed.
func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

// publish writes this instance's report when it says something new: nothing while the
// instance is idle (after one report saying so).
func (v *View) publish(ctx context.Context, now time.Time) error {
	r := v.report(now)
	v.reportMu.Lock()
	same := v.published && sameFigures(r, v.lastPublished)
	v.reportMu.Unlock()
	if same {
		return nil
	}
	if err := v.opt.Store.Publish(ctx, r); err != nil {
		return err
	}
	v.reportMu.Lock()
	v.lastPublished, v.published = r, true
	v.reportMu.Unlock()
	return nil
}

// takeReports keeps the other instances' latest reports and recomputes what they send each
// target; the budgets are told too.
func (v *View) takeReports(reports []Report, now time.Time) {
	v.reportMu.Lock()
	for _, r := range reports {
		if r.Instance == v.opt.Instance {
			continue
		}
		if cur, ok := v.others[r.Instance]; !ok || !r.At.Before(cur.At) {
			v.others[r.Instance] = r
		}
	}
	tok, req := map[string]float64{}, map[string]float64{}
	fresh := make([]Report, 0, len(v.others))
	for name, r := range v.others {
		age := now.Sub(r.At)
		if age > forgetReportsAfter {
			delete(v.others, name)
			continue
		}
		fresh = append(fresh, r)
		if age > staleAfter(r, v.opt.SyncInterval) {
			continue
		}
		for id, rate := range r.Targets {
			tok[id] += rate.Tokens
			req[id] += rate.Requests
		}
	}
	v.reportMu.Unlock()
	for id, t := range v.targets {
		t.mu.Lock()
		t.otherTok, t.otherReq = tok[id], req[id]
		t.mu.Unlock()
	}
	if v.opt.Apps != nil {
		v.opt.Apps.Others(fresh, now)
	}
}

// Others returns the other instances' latest reports, for /status.
func (v *View) Others() []Report {
	v.reportMu.Lock()
	defer v.reportMu.Unlock()
	out := make([]Report, 0, len(v.others))
	for _, r := range v.others {
		out = append(out, r)
	}
	return out
}
