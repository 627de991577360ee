package config

import (
	"testing"
)

func FuzzParseRouting(f *testing.F) {
	f.Add([]byte(validDoc))
	f.Add([]byte(`{"accounts":{"a":{"endpoint":"http://[::1]:1","auth":{"keyEnv":"K"}}},"deployments":{"x":[{"account":"a","deployment":"d","priority":1000,"weight":1000}]},"clients":{"anonymous":true},"timeouts":{"request":"1s"}}`))
	f.Add([]byte(`{"accounts":{"a":{}},"accounts":{"b":{}},"x":[[[[[]]]]]}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		r, probs := ParseRouting(doc)
		if len(probs) > 0 || r == nil {
			return
		}
		// Accepted: every target names a known account and has sane limits.
		for name, targets := range r.Deployments {
			if len(targets) == 0 {
				t.Fatalf("%s accepted with no targets", name)
			}
			for _, tg := range targets {
				if _, ok := r.Accounts[tg.Account]; !ok {
					t.Fatalf("target %s accepted with an unknown account", tg.ID())
				}
				if p, w := tg.PriorityOrDefault(), tg.WeightOrDefault(); p < 1 || w < 1 {
					t.Fatalf("target %s accepted with priority %d weight %d", tg.ID(), p, w)
				}
			}
		}
		if r.Timeouts.Request <= 0 || r.Clients == nil {
			t.Fatal("accepted without a request timeout or clients")
		}
	})
}
