package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var targetColor = map[string]color.Color{
	"direct":  color.RGBA{0xbb, 0xbb, 0xbb, 0xff},
	"gateway": color.RGBA{0x1f, 0x77, 0xb4, 0xff},
	"nginx":   color.RGBA{0x2c, 0xa0, 0x2c, 0xff},
	"goproxy": color.RGBA{0x7f, 0x7f, 0x7f, 0xff},
	"portkey": color.RGBA{0xff, 0x7f, 0x0e, 0xff},
}

// chart draws one PNG: a column per concurrency, and rows for the added p50 latency over
// direct (plain, stream) and the throughput (plain, stream), one bar per target with its value
// written on it. Each panel has its own linear scale, so that small figures stay readable.
func chart(path string, med map[key2]point, order []string, conc []int, subtitle string) error {
	type row struct {
		stream bool
		title  string
		value  func(name string, k key2) (float64, bool)
		format func(float64) string
	}
	added := func(name string, k key2) (float64, bool) {
		d, ok := med[key2{"direct", k.stream, k.conc}]
		if name == "direct" || !ok {
			return 0, false
		}
		return ms(med[k].p50 - d.p50), true
	}
	rate := func(_ string, k key2) (float64, bool) { return med[k].rps, true }
	msLabel := func(v float64) string {
		switch a := math.Abs(v); {
		case a < 10:
			return fmt.Sprintf("%.2f", v)
		case a < 100:
			return fmt.Sprintf("%.1f", v)
		}
		return fmt.Sprintf("%.0f", v)
	}
	rateLabel := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	rows := []row{
		{false, "plain: added p50 over direct, ms", added, msLabel},
		{true, "stream: added p50 over direct, ms", added, msLabel},
		{false, "plain: throughput, req/s", rate, rateLabel},
		{true, "stream: throughput, req/s", rate, rateLabel},
	}

	plots := make([][]*plot.Plot, len(rows))
	for r, rw := range rows {
		plots[r] = make([]*plot.Plot, len(conc))
		for c, n := range conc {
			p := plot.New()
			grid := plotter.NewGrid() // horizontal lines only, behind the bars
			grid.Vertical.Color = nil
			p.Add(grid)
			p.Y.Tick.Marker = plainTicks{}
			p.Title.Text = fmt.Sprintf("%s (c=%d)", rw.title, n)
			p.Title.TextStyle.Font.Size = vg.Points(11)
			var names []string
			var vals []float64
			for _, name := range order {
				k := key2{name, rw.stream, n}
				if _, ok := med[k]; !ok {
					continue
				}
				if v, ok := rw.value(name, k); ok {
					names, vals = append(names, name), append(vals, v)
				}
			}
			lo, hi := 0.0, 0.0
			for _, v := range vals {
				lo, hi = min(lo, v), max(hi, v)
			}
			if hi == lo {
				hi = lo + 1
			}
			xys := make(plotter.XYs, len(vals))
			labels := make([]string, len(vals))
			for i, v := range vals {
				bar, err := plotter.NewBarChart(plotter.Values{v}, vg.Points(24))
				if err != nil {
					return err
				}
				bar.XMin = float64(i)
				bar.Color = targetColor[names[i]]
				bar.LineStyle.Width = 0
				p.Add(bar)
				xys[i] = plotter.XY{X: float64(i), Y: max(v, 0)}
				labels[i] = rw.format(v)
			}
			if len(vals) > 0 {
				l, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: labels})
				if err != nil {
					return err
				}
				for i := range l.TextStyle {
					l.TextStyle[i].XAlign, l.TextStyle[i].YAlign = text.XCenter, text.YBottom
					l.TextStyle[i].Font.Size = vg.Points(9)
				}
				l.Offset = vg.Point{Y: vg.Points(2)}
				p.Add(l)
				p.NominalX(names...)
			}
			p.X.Min, p.X.Max = -0.6, float64(len(vals))-0.4
			p.Y.Min, p.Y.Max = lo*1.15, hi*1.18
			plots[r][c] = p
		}
	}

	const dpi = 96
	w, h := vg.Length(len(conc))*4.4*vg.Inch, vg.Length(len(rows))*2.9*vg.Inch+0.55*vg.Inch
	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(dpi), vgimg.UseBackgroundColor(color.White))
	dc := draw.New(img)
	title := draw.TextStyle{Color: color.Black, Font: font.From(plot.DefaultFont, vg.Points(14)),
		XAlign: text.XCenter, YAlign: text.YTop, Handler: plot.DefaultTextHandler}
	dc.FillText(title, vg.Point{X: w / 2, Y: h - 0.1*vg.Inch},
		"Proxies in front of the Azure OpenAI simulator, one load generator ("+subtitle+")")
	tiles := draw.Tiles{Rows: len(rows), Cols: len(conc), PadTop: 0.5 * vg.Inch, PadBottom: 0.1 * vg.Inch,
		PadLeft: 0.1 * vg.Inch, PadRight: 0.15 * vg.Inch, PadX: 0.3 * vg.Inch, PadY: 0.3 * vg.Inch}
	canvases := plot.Align(plots, tiles, dc)
	for r := range plots {
		for c := range plots[r] {
			plots[r][c].Draw(canvases[r][c])
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// plainTicks are gonum's default ticks with their labels written without trailing zeros.
type plainTicks struct{}

func (plainTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ticks {
		if ticks[i].Label != "" {
			// Shortest as a float32: 1.2, not the 1.2000000000000002 that adding steps gives.
			ticks[i].Label = strconv.FormatFloat(ticks[i].Value, 'f', -1, 32)
		}
	}
	return ticks
}
