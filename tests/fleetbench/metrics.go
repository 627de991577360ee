package main

import (
	"net/http"
	"sort"
	"time"

	"github.com/aoai-failover/gateway/tests/aoaisim"
)

// figures are one row of the table: a system at a load.
type figures struct {
	system    string
	instances int    // gateways only
	state     string // several instances: "shared" (through Azurite) or "local"
	load      float64
	arrivals  int
	served    int
	caller429 int
	errors    int
	util      float64   // tokens admitted / the regions' combined quota over the measured span
	share     []float64 // each region's admitted tokens / its own quota over the span
	up429     int       // 429s the regions answered
	per429    float64   // up429 per served request
	recovery  time.Duration
	recoveryN int // freed-region episodes measured; 0: none
	p50, p99  time.Duration
	lag       time.Duration
	errSample string
}

// measure computes a run's figures over [from, to) of the run's clock: callers by their
// arrival, regions by the time requests reached them.
func measure(res runResult, trace []call, specs []regionSpec, window, from, to time.Duration, typical int) figures {
	f := figures{share: make([]float64, len(specs))}
	var lat []time.Duration
	for i, c := range trace {
		if c.at < from || c.at >= to {
			continue
		}
		f.arrivals++
		o := res.outcomes[i]
		switch o.status {
		case http.StatusOK:
			f.served++
			lat = append(lat, o.latency)
		case http.StatusTooManyRequests:
			f.caller429++
		default:
			f.errors++
			if f.errSample == "" {
				f.errSample = o.err
				if f.errSample == "" {
					f.errSample = http.StatusText(o.status)
				}
			}
		}
	}
	windows := float64(to-from) / float64(window)
	total, capacity := 0, 0
	for r, hits := range res.hits {
		admitted := 0
		for _, h := range hits {
			if h.at < from || h.at >= to {
				continue
			}
			if h.admitted {
				admitted += h.cost
			} else {
				f.up429++
			}
		}
		total += admitted
		capacity += specs[r].tpm
		f.share[r] = float64(admitted) / (float64(specs[r].tpm) * windows)
	}
	f.util = float64(total) / (float64(capacity) * windows)
	if f.served > 0 {
		f.per429 = float64(f.up429) / float64(f.served)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	f.p50, f.p99 = pct(lat, 0.50), pct(lat, 0.99)
	if len(res.hits) > 0 {
		f.recovery, f.recoveryN = recovery(res.hits[0], specs[0].tpm, window, typical, from, to)
	}
	f.lag = res.lag
	return f
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(p*float64(len(sorted)-1))]
}

// recovery measures how soon a system uses the first region again once its budget frees: the
// region's budget is replayed from the requests it admitted (the simulator's own rules); each
// time an admission leaves it unable to take a typical request, it frees at the instant the
// refill makes room again, and the delay until the next request reaches it is one episode. It
// returns the median over episodes that free within [from, to).
func recovery(hits []hit, tpm int, window time.Duration, typical int, from, to time.Duration) (time.Duration, int) {
	sort.SliceStable(hits, func(i, j int) bool { return hits[i].at < hits[j].at })
	t0 := time.Unix(1_700_000_000, 0)
	l := aoaisim.NewLimiter(tpm, 0, window, true, t0)
	w, _, _ := l.Wait(t0, typical)
	frees, pending := t0.Add(w), w > 0
	var delays []time.Duration
	for _, h := range hits {
		t := t0.Add(h.at)
		if pending && !t.Before(frees) {
			if at := frees.Sub(t0); at >= from && at < to {
				delays = append(delays, t.Sub(frees))
			}
			pending = false
		}
		if h.admitted {
			l.Charge(t, h.cost)
			if w, _, _ := l.Wait(t, typical); w > 0 {
				frees, pending = t.Add(w), true
			}
		}
	}
	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	return pct(delays, 0.5), len(delays)
}
