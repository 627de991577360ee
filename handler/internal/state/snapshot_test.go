package state

import (
	"testing"
	"time"
)

// TestSnapshotDeprioritised: a target the quota model says cannot admit a typical request now
// shows "deprioritised" until the model says it can, exactly when Room says no for such a
// request, and throttled, failing and probing win over it.
func TestSnapshotDeprioritised(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	limit := Quota{Tokens: 6000, Requests: 60} // 100 tokens/s, 6 requests/s
	for _, tc := range []struct {
		name    string
		quota   Quota
		after   time.Duration
		want    string
		untilIn time.Duration // after the reading, when deprioritised
	}{
		{"plenty left", Quota{Tokens: 5000, Requests: 10}, 0, StateAvailable, 0},
		{"unknown", UnknownQuota, 0, StateAvailable, 0},
		{"no requests left", Quota{Tokens: 5000, Requests: 0}, 0, StateDeprioritised, time.Second / 6},
		{"no requests left, refilled", Quota{Tokens: 5000, Requests: 0}, 200 * time.Millisecond, StateAvailable, 0},
		{"tokens short of a typical request", Quota{Tokens: TypicalRequestTokens - 50, Requests: 3}, 0, StateDeprioritised, 500 * time.Millisecond},
		{"tokens short, still short", Quota{Tokens: 0, Requests: 3}, 500 * time.Millisecond, StateDeprioritised, time.Second},
		{"tokens short, refilled", Quota{Tokens: TypicalRequestTokens - 50, Requests: 3}, 500 * time.Millisecond, StateAvailable, 0},
		{"tokens for exactly one", Quota{Tokens: TypicalRequestTokens, Requests: 3}, 0, StateAvailable, 0},
		{"both short: the later", Quota{Tokens: 0, Requests: 0}, 0, StateDeprioritised, time.Second},
		{"tokens unknown, requests left", Quota{Tokens: -1, Requests: 2}, 0, StateAvailable, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t: start}
			v := newTestView(c, nil)
			v.Record("a/x", Outcome{Kind: Succeeded, Status: 200, Quota: tc.quota, Limit: limit})
			c.Add(tc.after)
			s := v.Snapshot(c.Now())[0]
			if s.State != tc.want {
				t.Fatalf("state %q, want %q", s.State, tc.want)
			}
			// The same verdict as the planner's for a request of that size.
			if _, room := v.Room("a/x", c.Now(), TypicalRequestTokens); room != (s.State == StateAvailable) {
				t.Errorf("Room says %v for a typical request, the snapshot %q", room, s.State)
			}
			switch {
			case tc.untilIn == 0 && s.DeprioritisedUntil != nil:
				t.Errorf("deprioritisedUntil %v on an available target", s.DeprioritisedUntil)
			case tc.untilIn != 0 && (s.DeprioritisedUntil == nil || s.DeprioritisedUntil.Sub(start).Round(time.Millisecond) != tc.untilIn.Round(time.Millisecond)):
				t.Errorf("deprioritisedUntil %v, want %v", s.DeprioritisedUntil, start.Add(tc.untilIn).UTC())
			}
		})
	}

	// A throttle, an open circuit and a probe say more than a low budget does.
	c := &clock{t: start}
	v := newTestView(c, nil)
	v.Record("a/x", Outcome{Kind: Throttled, Status: 429, Wait: 5 * time.Second, Quota: Quota{Tokens: 0, Requests: 0}, Limit: Quota{Tokens: 60000, Requests: 60}})
	if s := v.Snapshot(c.Now())[0]; s.State != StateThrottled || s.DeprioritisedUntil != nil {
		t.Errorf("throttled with no budget left: %+v", s)
	}
	v.Record("a/x", Outcome{Kind: Succeeded, Status: 200, Quota: Quota{Tokens: 0, Requests: 0}, Limit: Quota{Tokens: 600000, Requests: 60}})
	c.Add(5*time.Second + time.Millisecond)
	v.Record("a/x", Outcome{Kind: Succeeded, Status: 200, Quota: Quota{Tokens: 0, Requests: 0}})
	if s := v.Snapshot(c.Now())[0]; s.State != StateDeprioritised {
		t.Errorf("throttle over, budget still short: %+v", s)
	}
	for i := 0; i < 3; i++ {
		v.Record("b/y", Outcome{Kind: Failed, Status: 503, Quota: Quota{Tokens: 0, Requests: 0}, Limit: limit})
	}
	if s := v.Snapshot(c.Now())[1]; s.State != StateFailing {
		t.Errorf("circuit open with no budget left: %+v", s)
	}
	c.Add(10 * time.Second)
	v.Record("b/y", Outcome{Kind: Abandoned, Quota: Quota{Tokens: 0, Requests: 0}})
	if s := v.Snapshot(c.Now())[1]; s.State != StateProbing {
		t.Errorf("cool-down over with no budget left: %+v", s)
	}
}
