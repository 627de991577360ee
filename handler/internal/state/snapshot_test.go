package state

import (
	"testing"
	"time"
)

// TestSnapshotDeprioritised: a target whose last reported budget cannot absorb a typical
// request shows "deprioritised" until that report stops counting, exactly when Room says no
// for such a request, and throttled, failing and probing win over it.
func TestSnapshotDeprioritised(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct {
		name    string
		quota   Quota
		after   time.Duration
		want    string
		untilIn time.Duration // after the report, when deprioritised
	}{
		{"plenty left", Quota{Tokens: 5000, Requests: 10}, 0, StateAvailable, 0},
		{"unknown", UnknownQuota, 0, StateAvailable, 0},
		{"no requests left", Quota{Tokens: 5000, Requests: 0}, time.Second, StateDeprioritised, requestWindow},
		{"no requests left, window over", Quota{Tokens: 5000, Requests: 0}, requestWindow, StateAvailable, 0},
		{"tokens short of a typical request", Quota{Tokens: TypicalRequestTokens - 1, Requests: 3}, 30 * time.Second, StateDeprioritised, tokenWindow},
		{"tokens short, minute over", Quota{Tokens: TypicalRequestTokens - 1, Requests: 3}, tokenWindow, StateAvailable, 0},
		{"tokens for exactly one", Quota{Tokens: TypicalRequestTokens, Requests: 3}, 0, StateAvailable, 0},
		{"both short: the later end", Quota{Tokens: 0, Requests: 0}, 0, StateDeprioritised, tokenWindow},
		{"tokens unknown, requests left", Quota{Tokens: -1, Requests: 2}, 0, StateAvailable, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t: start}
			v := newTestView(c, nil)
			v.Record("a/x", Outcome{Kind: Succeeded, Status: 200, Quota: tc.quota})
			c.Add(tc.after)
			s := v.Snapshot(c.Now())[0]
			if s.State != tc.want {
				t.Fatalf("state %q, want %q", s.State, tc.want)
			}
			// The same verdict as the planner's for a request of that size.
			if room := v.Room("a/x", c.Now(), TypicalRequestTokens); room != (s.State == StateAvailable) {
				t.Errorf("Room says %v for a typical request, the snapshot %q", room, s.State)
			}
			switch {
			case tc.untilIn == 0 && s.DeprioritisedUntil != nil:
				t.Errorf("deprioritisedUntil %v on an available target", s.DeprioritisedUntil)
			case tc.untilIn != 0 && (s.DeprioritisedUntil == nil || !s.DeprioritisedUntil.Equal(start.Add(tc.untilIn))):
				t.Errorf("deprioritisedUntil %v, want %v", s.DeprioritisedUntil, start.Add(tc.untilIn).UTC())
			}
		})
	}

	// A throttle, an open circuit and a probe say more than a low budget does.
	c := &clock{t: start}
	v := newTestView(c, nil)
	v.Record("a/x", Outcome{Kind: Throttled, Status: 429, Wait: 5 * time.Second, Quota: Quota{Tokens: 0, Requests: 0}})
	if s := v.Snapshot(c.Now())[0]; s.State != StateThrottled || s.DeprioritisedUntil != nil {
		t.Errorf("throttled with no budget left: %+v", s)
	}
	c.Add(6 * time.Second)
	if s := v.Snapshot(c.Now())[0]; s.State != StateDeprioritised {
		t.Errorf("throttle over, budget still reported short: %+v", s)
	}
	for i := 0; i < 3; i++ {
		v.Record("b/y", Outcome{Kind: Failed, Status: 503, Quota: Quota{Tokens: 0, Requests: 0}})
	}
	if s := v.Snapshot(c.Now())[1]; s.State != StateFailing {
		t.Errorf("circuit open with no budget left: %+v", s)
	}
	c.Add(10 * time.Second)
	if s := v.Snapshot(c.Now())[1]; s.State != StateProbing {
		t.Errorf("cool-down over with no budget left: %+v", s)
	}
}
