package state

import (
	"context"
	"testing"
	"time"
)

// step is one thing that happens to target a/x in a quota scenario.
type step struct {
	after   time.Duration // clock advance before the step
	send    int64         // >0: this instance sends a request estimated at send tokens
	answer  int           // >0: the answer to the answer-th send arrives (1-based) ...
	quota   Quota         // ... saying this is left (or UnknownQuota)
	limit   Quota         // ... and these limits (zero: no x-ratelimit-limit-* headers)
	refused bool          // ... as a 429: the send is given back
	wait    time.Duration // ... whose exact wait is this
	others  float64       // >0: the other instances report sending this many tokens/s
	othersR float64       // >0: and this many requests/s
}

// TestQuotaModel: the model passes a target over exactly when its last reading, less what this
// instance sent since, plus the refill since (limit/window per second), less what the other
// instances report sending, cannot admit the request; and says when it will.
func TestQuotaModel(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []step
		cost  int64
		room  bool
		wait  time.Duration // when not room: how long until it is, within 20 ms
	}{
		{name: "nothing known is room", cost: 100_000, room: true},
		{name: "reading without limits: cannot judge refill, but the limit inferred covers it",
			steps: []step{{send: 300}, {answer: 1, quota: Quota{Tokens: 700, Requests: -1}}},
			cost:  600, room: true},
		{name: "header limit: reading short of the cost",
			steps: []step{{send: 100}, {answer: 1, quota: Quota{Tokens: 500, Requests: -1}, limit: Quota{Tokens: 6000}}},
			cost:  600, room: false, wait: time.Second}, // 100 short at 100 tokens/s
		{name: "header limit: reading covers the cost",
			steps: []step{{send: 100}, {answer: 1, quota: Quota{Tokens: 500, Requests: -1}, limit: Quota{Tokens: 6000}}},
			cost:  400, room: true},
		{name: "refill since the reading",
			steps: []step{{send: 100}, {answer: 1, quota: Quota{Tokens: 0, Requests: -1}, limit: Quota{Tokens: 6000}}, {after: 5 * time.Second}},
			cost:  450, room: true},
		{name: "refill not yet enough",
			steps: []step{{send: 100}, {answer: 1, quota: Quota{Tokens: 0, Requests: -1}, limit: Quota{Tokens: 6000}}, {after: 5 * time.Second}},
			cost:  600, room: false, wait: time.Second},
		{name: "refill stops at the limit",
			steps: []step{{send: 100}, {answer: 1, quota: Quota{Tokens: 0, Requests: -1}, limit: Quota{Tokens: 6000}}, {after: time.Hour}, {send: 5000}},
			cost:  1500, room: false, wait: 5 * time.Second},
		{name: "own sends since the reading count",
			steps: []step{{send: 100}, {answer: 1, quota: Quota{Tokens: 1000, Requests: -1}, limit: Quota{Tokens: 6000}}, {send: 900}},
			cost:  200, room: false, wait: time.Second},
		{name: "a send the target refused is given back",
			steps: []step{{send: 100}, {answer: 1, quota: Quota{Tokens: 1000, Requests: -1}, limit: Quota{Tokens: 6000}}, {send: 900}, {answer: 2, quota: UnknownQuota, refused: true}},
			cost:  200, room: true},
		{name: "a newer reading covers the sends before it",
			steps: []step{{send: 100}, {answer: 1, quota: Quota{Tokens: 1000, Requests: -1}, limit: Quota{Tokens: 6000}}, {send: 900}, {send: 50}, {answer: 3, quota: Quota{Tokens: 50, Requests: -1}}},
			cost:  60, room: false, wait: 100 * time.Millisecond},
		{name: "an answer to an older request is older news",
			steps: []step{{send: 100}, {send: 100}, {answer: 2, quota: Quota{Tokens: 100, Requests: -1}, limit: Quota{Tokens: 6000}}, {answer: 1, quota: Quota{Tokens: 5000, Requests: -1}}},
			cost:  300, room: false, wait: 2 * time.Second},
		{name: "own sends refill like the rest",
			steps: []step{{send: 100}, {answer: 1, quota: Quota{Tokens: 6000, Requests: -1}, limit: Quota{Tokens: 6000}}, {send: 5500}, {after: 61 * time.Second}},
			cost:  5000, room: true},
		{name: "other instances' sending",
			steps: []step{{send: 100}, {answer: 1, quota: Quota{Tokens: 0, Requests: -1}, limit: Quota{Tokens: 6000}}, {others: 50}, {after: 4 * time.Second}},
			cost:  300, room: false, wait: 2 * time.Second}, // 400 refilled - 200 sent by others; 100 short at 50/s net
		{name: "other instances taking the whole refill",
			steps: []step{{send: 100}, {answer: 1, quota: Quota{Tokens: 0, Requests: -1}, limit: Quota{Tokens: 6000}}, {others: 150}, {after: 4 * time.Second}},
			cost:  10, room: false, wait: time.Minute},
		{name: "inferred limit: remaining plus the charged cost",
			steps: []step{{send: 300}, {answer: 1, quota: Quota{Tokens: 5700, Requests: -1}}, {send: 100}, {answer: 2, quota: Quota{Tokens: 0, Requests: -1}}, {after: 2 * time.Second}},
			cost:  300, room: false, wait: time.Second}, // limit 6000: 100/s
		{name: "a 429's exact wait teaches the limit",
			steps: []step{{send: 1000}, {answer: 1, quota: Quota{Tokens: 0, Requests: -1}, refused: true, wait: 600 * time.Millisecond}},
			cost:  1000, room: false, wait: 600 * time.Millisecond}, // 999 in 0.6 s: at least 99,900 a minute
		{name: "the refill between two readings teaches the limit",
			steps: []step{{send: 100}, {answer: 1, quota: Quota{Tokens: 0, Requests: -1}}, {after: time.Second}, {send: 100}, {answer: 2, quota: Quota{Tokens: 500, Requests: -1}}},
			cost:  600, room: false, wait: 167 * time.Millisecond}, // 599 came back in 1 s: at least 35,940 a minute
		{name: "readings too close teach nothing of the refill",
			steps: []step{{send: 100}, {answer: 1, quota: Quota{Tokens: 0, Requests: -1}}, {after: 100 * time.Millisecond}, {send: 100}, {answer: 2, quota: Quota{Tokens: 500, Requests: -1}}},
			cost:  550, room: false, wait: 5 * time.Second}, // limit 600 as inferred: 10 a second
		{name: "a 429 without an exact wait teaches nothing",
			steps: []step{{send: 1000}, {answer: 1, quota: Quota{Tokens: 0, Requests: -1}, refused: true}, {send: 10}, {answer: 2, quota: Quota{Tokens: 50, Requests: -1}}},
			cost:  1000, room: true}, // limit 60 as far as is known: too large to judge
		{name: "a request larger than the limit known is left to the target",
			steps: []step{{send: 100}, {answer: 1, quota: Quota{Tokens: 0, Requests: -1}, limit: Quota{Tokens: 6000}}},
			cost:  7000, room: true},
		{name: "no requests left",
			steps: []step{{send: 10}, {answer: 1, quota: Quota{Tokens: 90000, Requests: 9}}, {send: 10}, {answer: 2, quota: Quota{Tokens: 90000, Requests: 0}}, {after: 500 * time.Millisecond}},
			cost:  10, room: false, wait: 500 * time.Millisecond}, // 10 per 10 s: one a second
		{name: "requests refill",
			steps: []step{{send: 10}, {answer: 1, quota: Quota{Tokens: 90000, Requests: 9}}, {send: 10}, {answer: 2, quota: Quota{Tokens: 90000, Requests: 0}}, {after: time.Second}},
			cost:  10, room: true},
		{name: "requests: other instances' sending",
			steps: []step{{send: 10}, {answer: 1, quota: Quota{Tokens: 90000, Requests: 9}}, {send: 10}, {answer: 2, quota: Quota{Tokens: 90000, Requests: 0}}, {others: 1, othersR: 0.5}, {after: time.Second}},
			cost:  10, room: false, wait: time.Second},
		{name: "a 429's remaining becomes the reading",
			steps: []step{{send: 100}, {answer: 1, quota: Quota{Tokens: 6000, Requests: -1}, limit: Quota{Tokens: 6000}}, {send: 800}, {answer: 2, quota: Quota{Tokens: 200, Requests: -1}, refused: true}},
			cost:  500, room: false, wait: 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t: time.Unix(1_800_000_000, 0)}
			v := newTestView(c, nil)
			var sends []Send
			for _, s := range tc.steps {
				c.Add(s.after)
				switch {
				case s.send > 0:
					sends = append(sends, v.Sent("a/x", c.Now(), s.send))
				case s.answer > 0:
					o := Outcome{Kind: Succeeded, Status: 200, Quota: s.quota, Limit: s.limit, Send: sends[s.answer-1]}
					if s.refused {
						o.Kind, o.Status, o.Wait = Throttled, 429, time.Millisecond
					}
					if s.wait > 0 {
						o.Wait, o.WaitExact = s.wait, true
					}
					v.Record("a/x", o)
				case s.others > 0:
					v.takeReports([]Report{{Instance: "other", At: c.Now(), Interval: time.Second,
						Targets: map[string]Rate{"a/x": {Tokens: s.others, Requests: s.othersR}}}}, c.Now())
				}
			}
			until, room := v.Room("a/x", c.Now(), tc.cost)
			if room != tc.room {
				t.Fatalf("room %v, want %v (until %v)", room, tc.room, until.Sub(c.Now()))
			}
			if !room {
				if got := until.Sub(c.Now()); got < tc.wait-20*time.Millisecond || got > tc.wait+20*time.Millisecond {
					t.Errorf("room in %v, want %v", got, tc.wait)
				}
				// At that time, the model agrees (nothing else happening).
				c.t = until.Add(time.Millisecond)
				if tc.wait < time.Minute {
					if _, ok := v.Room("a/x", c.Now(), tc.cost); !ok {
						t.Errorf("no room at the time it said")
					}
				}
			}
		})
	}
}

// TestOtherInstancesReports: what one instance sends a target reaches the other through the
// store as a rate, counts against the target there, and stops counting when the sender goes
// quiet (it says so) or away (its report goes stale).
func TestOtherInstancesReports(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	store := NewMemoryStore()
	a := NewView(Options{Targets: []string{"a/x"}, Store: store, Instance: "a", SyncInterval: time.Second, Now: c.Now, CircuitFailures: 3})
	b := NewView(Options{Targets: []string{"a/x"}, Store: store, Instance: "b", SyncInterval: time.Second, Now: c.Now, CircuitFailures: 3})
	ctx := context.Background()
	// A knows the target is empty, with a 6,000-token limit (100 tokens/s).
	s := a.Sent("a/x", c.Now(), 100)
	a.Record("a/x", Outcome{Kind: Succeeded, Status: 200, Quota: Quota{Tokens: 0, Requests: -1}, Limit: Quota{Tokens: 6000}, Send: s})
	// B sends 60 tokens/s for two seconds.
	for i := 0; i < 2; i++ {
		for j := 0; j < 6; j++ {
			b.Sent("a/x", c.Now(), 10)
		}
		c.Add(time.Second)
		must(t, b.Sync(ctx))
	}
	must(t, a.Sync(ctx))
	if got := a.Snapshot(c.Now())[0].OthersTokensPerSec; got != 60 {
		t.Fatalf("A sees others sending %v tokens/s, want 60", got)
	}
	// 2 s after the reading: 200 refilled, 120 of it B's (as A estimates it): 80 left.
	if _, ok := a.Room("a/x", c.Now(), 70); !ok {
		t.Error("no room for 70 tokens with 80 left")
	}
	if until, ok := a.Room("a/x", c.Now(), 100); ok || until.Sub(c.Now()) < 400*time.Millisecond || until.Sub(c.Now()) > 600*time.Millisecond {
		t.Errorf("room for 100 tokens: %v in %v, want no and in 0.5 s (20 short at 40/s)", ok, until.Sub(c.Now()))
	}
	// B goes quiet: two reports later its rate is zero, and A counts the refill alone.
	for i := 0; i < 3; i++ {
		c.Add(time.Second)
		must(t, b.Sync(ctx))
	}
	must(t, a.Sync(ctx))
	if got := a.Snapshot(c.Now())[0].OthersTokensPerSec; got != 0 {
		t.Errorf("B went quiet, A still sees %v tokens/s", got)
	}
	// B sends again, then goes away without saying so: its rate stops counting after a few
	// of its intervals.
	for j := 0; j < 6; j++ {
		b.Sent("a/x", c.Now(), 10)
	}
	c.Add(time.Second)
	must(t, b.Sync(ctx))
	must(t, a.Sync(ctx))
	if got := a.Snapshot(c.Now())[0].OthersTokensPerSec; got == 0 {
		t.Fatal("B's sending not seen")
	}
	c.Add(5 * time.Second)
	must(t, a.Sync(ctx))
	if got := a.Snapshot(c.Now())[0].OthersTokensPerSec; got != 0 {
		t.Errorf("B's stale report still counts: %v tokens/s", got)
	}
}
