package main

import (
	"encoding/json"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/aoai-failover/gateway/tests/aoaisim"
)

// call is one request of an arrival trace.
type call struct {
	at        time.Duration // after the run's start, on the wall clock of the (scaled) run
	body      []byte
	maxTokens int
	cost      int // what the regions charge at admission: len(body)/4 + max_tokens
}

// Request sizes: a prompt of 200-2,000 characters and max_tokens of 50-500, uniform.
const (
	minPrompt, maxPrompt = 200, 2000
	minOut, maxOut       = 50, 500
)

var vocabulary = strings.Fields(`the a of to and in that is for it as with was on be by this are or from at an
which have not but can has were their more one all would there been also its other when into these
than some time could only such may then them first over most made after where through region quota
model request tokens answer gateway deployment minute capacity latency traffic priority budget`)

// newCall builds one chat completion of seeded random size.
func newCall(rng *rand.Rand) call {
	n := minPrompt + rng.IntN(maxPrompt-minPrompt+1)
	var b strings.Builder
	for b.Len() < n {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(vocabulary[rng.IntN(len(vocabulary))])
	}
	prompt := b.String()[:n]
	out := minOut + rng.IntN(maxOut-minOut+1)
	body, _ := json.Marshal(map[string]any{
		"messages": []any{
			map[string]string{"role": "system", "content": "You are a helpful assistant."},
			map[string]string{"role": "user", "content": prompt},
		},
		"max_tokens": out,
	})
	return call{body: body, maxTokens: out, cost: aoaisim.ChargeOf(len(body), out)}
}

// meanCost is the expected admission charge of newCall, from a fixed sample.
func meanCost() float64 {
	rng := rand.New(rand.NewPCG(7, 7))
	const n = 20000
	sum := 0
	for range n {
		sum += newCall(rng).cost
	}
	return float64(sum) / n
}

// makeTrace returns open-loop Poisson arrivals over span at load times the regions' combined
// capacity (capacity tokens per window), seeded by seed and the load so that each load has one
// trace, replayed identically against every system.
func makeTrace(seed uint64, load float64, capacity int, window, span time.Duration) []call {
	rate := load * float64(capacity) / window.Seconds() / meanCost() // arrivals a second
	rng := rand.New(rand.NewPCG(seed, uint64(load*1000)))
	var trace []call
	t := 0.0
	for {
		t += rng.ExpFloat64() / rate
		at := time.Duration(t * float64(time.Second))
		if at >= span {
			return trace
		}
		c := newCall(rng)
		c.at = at
		trace = append(trace, c)
	}
}

// medianCost is the trace's median charge: the "typical request" a freed region must fit.
func medianCost(trace []call) int {
	if len(trace) == 0 {
		return 0
	}
	c := make([]int, len(trace))
	for i, r := range trace {
		c[i] = r.cost
	}
	sort.Ints(c)
	return c[len(c)/2]
}
