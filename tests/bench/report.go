package main

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// median combines a point's rounds: the median of each figure (the mean of the middle two),
// except RSS, where it is the highest of the rounds (a peak), and the counts, which add up.
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
		m.rssMiB = max(m.rssMiB, p.rssMiB)
	}
	return m
}

var modeName = map[bool]string{false: "plain", true: "stream"}

var csvHeader = []string{"target", "stream", "concurrency", "rps", "p50_ms", "p99_ms", "added_p50_ms", "added_p99_ms",
	"ttft_p50_ms", "added_ttft_ms", "cpu_s_per_1k", "rss_mib", "errors"}

// row is one line of the CSV and the printed table; empty strings are figures that do not
// apply (added figures for direct, the proxy's CPU and RSS for direct, TTFT for plain answers).
func row(med map[key2]point, k key2) []string {
	p := med[k]
	f3 := func(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }
	r := []string{k.target, strconv.FormatBool(k.stream), strconv.Itoa(k.conc), strconv.FormatFloat(p.rps, 'f', 1, 64),
		f3(ms(p.p50)), f3(ms(p.p99)), "", "", "", "", "", "", strconv.Itoa(p.errors)}
	direct, hasDirect := med[key2{"direct", k.stream, k.conc}]
	if hasDirect && k.target != "direct" {
		r[6], r[7] = f3(ms(p.p50-direct.p50)), f3(ms(p.p99-direct.p99))
	}
	if k.stream {
		r[8] = f3(ms(p.ttfb50))
		if hasDirect && k.target != "direct" {
			r[9] = f3(ms(p.ttfb50 - direct.ttfb50))
		}
	}
	if k.target != "direct" {
		r[10], r[11] = f3(p.cpuPerK), strconv.FormatFloat(p.rssMiB, 'f', 1, 64)
	}
	return r
}

func report(o options, order []string, results map[key2][]point, hwm map[string]float64) error {
	med := map[key2]point{}
	for k, ps := range results {
		med[k] = median(ps)
	}
	var keys []key2
	for _, stream := range []bool{false, true} {
		for _, c := range o.concurrency {
			for _, name := range order {
				if _, ok := med[key2{name, stream, c}]; ok {
					keys = append(keys, key2{name, stream, c})
				}
			}
		}
	}

	fmt.Println()
	fmt.Println("| mode | c | target | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | TTFT p50 ms | added TTFT ms | CPU s / 1k req | peak RSS MiB | errors |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	totalErrors := 0
	for _, k := range keys {
		r := row(med, k)
		totalErrors += med[k].errors
		fmt.Printf("| %s | %s | %s | %.0f | %s |\n", modeName[k.stream], r[2], r[0], med[k].rps, strings.Join(r[4:], " | "))
	}
	fmt.Println("\nadded: minus direct's figure at the same point; TTFT: time to the first byte of the stream;")
	fmt.Println("peak RSS: the highest VmRSS sampled every 100 ms while the point ran (process and children; the highest")
	fmt.Println("of the rounds). Resident memory includes what a process kept from the points before (Go and node give")
	fmt.Println("freed memory back to the system lazily), so read it at the highest concurrency.")
	fmt.Println("\npeak RSS over the whole run (VmHWM, process and children):")
	for _, name := range order {
		if v, ok := hwm[name]; ok {
			fmt.Printf("  %-8s %6.1f MiB\n", name, v)
		}
	}

	ratios(med, order, o.concurrency)

	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	stamp := time.Now().UTC().Format("20060102-150405")
	csvPath := filepath.Join(o.out, "bench-"+stamp+".csv")
	if err := writeCSV(csvPath, med, keys); err != nil {
		return err
	}
	pngPath := filepath.Join(o.out, "bench-"+stamp+".png")
	if err := chart(pngPath, med, order, o.concurrency, fmt.Sprintf("%s per point, %d round(s), %s", o.duration, o.rounds, time.Now().UTC().Format("2006-01-02"))); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	copies := [][2]string{{csvPath, filepath.Join(o.out, "latest.csv")}, {pngPath, filepath.Join(o.out, "latest.png")}}
	if o.publish && totalErrors == 0 {
		copies = append(copies, [2]string{csvPath, filepath.Join(benchDir(), "results.csv")}, [2]string{pngPath, filepath.Join(benchDir(), "chart.png")})
	}
	for _, c := range copies {
		if err := copyFile(c[0], c[1]); err != nil {
			return err
		}
	}
	fmt.Printf("\nCSV: %s\nPNG: %s\n", csvPath, pngPath)
	if o.publish {
		if totalErrors == 0 {
			fmt.Printf("published: %s, %s\n", filepath.Join(benchDir(), "chart.png"), filepath.Join(benchDir(), "results.csv"))
		} else {
			fmt.Println("not published: the run had errors")
		}
	}
	if totalErrors > 0 {
		return fmt.Errorf("%d requests failed during the run", totalErrors)
	}
	return nil
}

func writeCSV(path string, med map[key2]point, keys []key2) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	cw := csv.NewWriter(f)
	cw.Write(csvHeader)
	for _, k := range keys {
		cw.Write(row(med, k))
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// ratios checks the gateway against the budget, with nginx measured in the same run: added p50
// at c=1 at most 2x nginx's; throughput at c=64, c=256 and for streams at least 0.6x nginx's;
// p99 at c=64 at most 2x nginx's; peak RSS at 512 concurrent streams at most 64 MiB. Portkey and
// net/http's ReverseProxy are printed for reference.
func ratios(med map[key2]point, order []string, conc []int) {
	has := func(k key2) bool { _, ok := med[k]; return ok }
	fmt.Println("\ntargets (gateway vs nginx, same run):")
	verdict := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "MISS"
	}
	ratio := func(a, b float64) string {
		if b <= 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2f", a/b)
	}
	line := func(label, r, target string, ok bool) {
		fmt.Printf("  %-72s %7s  (target %-7s)  %s\n", label, r, target, verdict(ok))
	}
	reference := func(label, r string) { fmt.Printf("  %-72s %7s  (for reference)\n", label, r) }
	for _, stream := range []bool{false, true} {
		for _, c := range conc {
			g, d, n := key2{"gateway", stream, c}, key2{"direct", stream, c}, key2{"nginx", stream, c}
			if !has(g) {
				continue
			}
			mode := fmt.Sprintf("%-6s c=%-3d", modeName[stream], c)
			ga := ms(med[g].p50 - med[d].p50)
			if has(n) {
				na := ms(med[n].p50 - med[d].p50)
				if has(d) && c == 1 && !stream {
					line(fmt.Sprintf("%s added p50: gateway %.3f ms / nginx %.3f ms", mode, ga, na), ratio(ga, na), "<= 2.0", ga <= 2*na)
				} else if has(d) {
					reference(fmt.Sprintf("%s added p50: gateway %.3f ms / nginx %.3f ms", mode, ga, na), ratio(ga, na))
				}
				label := fmt.Sprintf("%s throughput: gateway %.0f / nginx %.0f req/s", mode, med[g].rps, med[n].rps)
				if stream || c == 64 || c == 256 {
					line(label, ratio(med[g].rps, med[n].rps), ">= 0.6", med[g].rps >= 0.6*med[n].rps)
				} else {
					reference(label, ratio(med[g].rps, med[n].rps))
				}
				if c == 64 && !stream {
					gp, np := ms(med[g].p99), ms(med[n].p99)
					line(fmt.Sprintf("%s p99: gateway %.3f ms / nginx %.3f ms", mode, gp, np), ratio(gp, np), "<= 2.0", gp <= 2*np)
				}
			}
			if k := (key2{"portkey", stream, c}); has(k) {
				reference(fmt.Sprintf("%s throughput: gateway / portkey", mode), ratio(med[g].rps, med[k].rps))
			}
			if k := (key2{"goproxy", stream, c}); has(k) {
				reference(fmt.Sprintf("%s throughput: gateway / goproxy (a plain net/http proxy)", mode), ratio(med[g].rps, med[k].rps))
			}
		}
	}
	// Memory at the most concurrent streams measured (512 by default).
	top := 0
	for _, c := range conc {
		if has(key2{"gateway", true, c}) {
			top = max(top, c)
		}
	}
	if top > 0 {
		rss := med[key2{"gateway", true, top}].rssMiB
		label := fmt.Sprintf("gateway peak RSS at %d concurrent streams, MiB", top)
		if top != 512 {
			label += " (512 not measured)"
		}
		line(label, fmt.Sprintf("%.1f", rss), "<= 64", rss <= 64)
		for _, name := range order {
			if k := (key2{name, true, top}); name != "gateway" && name != "direct" && has(k) {
				fmt.Printf("  %-72s %7.1f  (for reference)\n", fmt.Sprintf("%s peak RSS at %d concurrent streams, MiB", name, top), med[k].rssMiB)
			}
		}
	}
}

// redrawChart draws the chart of a CSV written by writeCSV again, next to it: the figures are
// the CSV's, the date its modification time.
func redrawChart(path string, duration time.Duration, rounds int) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	records, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(records) < 2 || strings.Join(records[0], ",") != strings.Join(csvHeader, ",") {
		return fmt.Errorf("%s: not a CSV of this benchmark", path)
	}
	med := map[key2]point{}
	var order []string
	var conc []int
	for _, r := range records[1:] {
		c, err1 := strconv.Atoi(r[2])
		rps, err2 := strconv.ParseFloat(r[3], 64)
		p50, err3 := strconv.ParseFloat(r[4], 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		med[key2{r[0], r[1] == "true", c}] = point{rps: rps, p50: time.Duration(p50 * float64(time.Millisecond))}
		if !slices.Contains(order, r[0]) {
			order = append(order, r[0])
		}
		if !slices.Contains(conc, c) {
			conc = append(conc, c)
		}
	}
	slices.Sort(conc)
	png := strings.TrimSuffix(path, filepath.Ext(path)) + ".png"
	if filepath.Base(path) == "results.csv" {
		png = filepath.Join(filepath.Dir(path), "chart.png") // the published pair
	}
	subtitle := fmt.Sprintf("%s per point, %d round(s), %s", duration, rounds, st.ModTime().UTC().Format("2006-01-02"))
	if err := chart(png, med, order, conc, subtitle); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	fmt.Println("chart:", png)
	return nil
}
