package main

import (
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"
)

// median combines a point's rounds: the median of each figure (the mean of the middle two).
func median(ps []point) point {
	pick := func(f func(point) float64) float64 {
		v := make([]float64, len(ps))
		for i, p := range ps {
			v[i] = f(p)
		}
		sort.Float64s(v)
		n := len(v)
		if n%2 == 1 {
			return v[n/2]
		}
		return (v[n/2-1] + v[n/2]) / 2
	}
	m := point{
		rps:     pick(func(p point) float64 { return p.rps }),
		p50:     time.Duration(pick(func(p point) float64 { return float64(p.p50) })),
		p99:     time.Duration(pick(func(p point) float64 { return float64(p.p99) })),
		ttfb50:  time.Duration(pick(func(p point) float64 { return float64(p.ttfb50) })),
		cpuPerK: pick(func(p point) float64 { return p.cpuPerK }),
	}
	for _, p := range ps {
		m.count += p.count
		m.errors += p.errors
	}
	return m
}

func report(o options, order []string, results map[key2][]point, rssMiB float64) error {
	med := map[key2]point{}
	for k, ps := range results {
		med[k] = median(ps)
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	csvPath := filepath.Join(o.out, "bench-"+time.Now().UTC().Format("20060102-150405")+".csv")
	f, err := os.Create(csvPath)
	if err != nil {
		return err
	}
	defer f.Close()
	cw := csv.NewWriter(f)
	cw.Write([]string{"mode", "concurrency", "target", "req_per_s", "p50_ms", "p99_ms", "added_p50_ms", "ttfb_p50_ms", "cpu_s_per_1k", "errors"})

	fmt.Println()
	fmt.Println("| mode | c | target | req/s | p50 ms | p99 ms | added p50 ms | TTFB p50 ms | CPU s / 1k req | errors |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	totalErrors := 0
	for _, stream := range []bool{false, true} {
		mode := map[bool]string{false: "plain", true: "stream"}[stream]
		for _, c := range o.concurrency {
			direct, hasDirect := med[key2{"direct", stream, c}]
			for _, name := range order {
				p, ok := med[key2{name, stream, c}]
				if !ok {
					continue
				}
				totalErrors += p.errors
				added, cpu := "", ""
				if hasDirect && name != "direct" {
					added = fmt.Sprintf("%.3f", ms(p.p50-direct.p50))
				}
				if name != "direct" {
					cpu = fmt.Sprintf("%.3f", p.cpuPerK)
				}
				fmt.Printf("| %s | %d | %s | %.0f | %.3f | %.3f | %s | %.3f | %s | %d |\n",
					mode, c, name, p.rps, ms(p.p50), ms(p.p99), added, ms(p.ttfb50), cpu, p.errors)
				cw.Write([]string{mode, strconv.Itoa(c), name, fmt.Sprintf("%.1f", p.rps), fmt.Sprintf("%.3f", ms(p.p50)),
					fmt.Sprintf("%.3f", ms(p.p99)), added, fmt.Sprintf("%.3f", ms(p.ttfb50)), cpu, strconv.Itoa(p.errors)})
			}
		}
	}
	cw.Flush()
	fmt.Printf("\ngateway peak RSS: %.1f MiB\n", rssMiB)

	ratios(med, o.concurrency)
	fmt.Printf("\nCSV: %s\n", csvPath)
	if totalErrors > 0 {
		return fmt.Errorf("%d requests failed during the run", totalErrors)
	}
	return nil
}

// ratios checks the gateway's targets against nginx measured in the same run.
func ratios(med map[key2]point, conc []int) {
	has := func(k key2) bool { _, ok := med[k]; return ok }
	fmt.Println("\ntargets (gateway vs nginx, same run):")
	check := func(label string, v, limit float64, atMost bool) {
		ok := v >= limit
		op := ">="
		if atMost {
			ok, op = v <= limit, "<="
		}
		verdict := "MISS"
		if ok {
			verdict = "PASS"
		}
		fmt.Printf("  %-58s %6.2f  (target %s %.1f)  %s\n", label, v, op, limit, verdict)
	}
	for _, c := range conc {
		g, n, d := key2{"gateway", false, c}, key2{"nginx", false, c}, key2{"direct", false, c}
		if !has(g) || !has(n) {
			continue
		}
		if c == 1 && has(d) {
			ga, na := med[g].p50-med[d].p50, med[n].p50-med[d].p50
			if na > 0 {
				check(fmt.Sprintf("added p50 at c=1: gateway %.3f ms / nginx %.3f ms", ms(ga), ms(na)), float64(ga)/float64(na), 1.5, true)
			}
		}
		if c > 1 {
			check(fmt.Sprintf("throughput at c=%d: gateway / nginx", c), med[g].rps/med[n].rps, 0.8, false)
		}
		if c == 64 {
			check("p99 at c=64: gateway / nginx", float64(med[g].p99)/float64(med[n].p99), 1.5, true)
		}
		if gp := (key2{"goproxy", false, c}); has(gp) {
			fmt.Printf("  %-58s %6.2f  (for reference: a plain net/http proxy)\n", fmt.Sprintf("throughput at c=%d: gateway / goproxy", c), med[g].rps/med[gp].rps)
		}
		gs, ns := key2{"gateway", true, c}, key2{"nginx", true, c}
		if c > 1 && has(gs) && has(ns) {
			check(fmt.Sprintf("streaming throughput at c=%d: gateway / nginx", c), med[gs].rps/med[ns].rps, 0.8, false)
		}
	}
}
