// Command plot-bench draws `reconfctl bench --json` results as an SVG:
// throughput against concurrency, and latency percentiles against
// concurrency, one line per label (e.g. the log store).
//
//	go run ./scripts/plot-bench -o docs/bench.svg docs/bench/*.json
//
// Each file is one run; runs are grouped by their "label" and ordered by
// concurrency. Throughput is delegations per second (batched ones
// included); latencies are those of all the run's operations.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
)

type run struct {
	Label       string  `json:"label"`
	Concurrency int     `json:"concurrency"`
	Delegations float64 `json:"delegations_per_sec"`
	Total       struct {
		OpsPerSec float64 `json:"ops_per_sec"`
		P50       float64 `json:"p50_ms"`
		P90       float64 `json:"p90_ms"`
		P99       float64 `json:"p99_ms"`
		P999      float64 `json:"p999_ms"`
	} `json:"total"`
}

func main() {
	out := flag.String("o", "bench.svg", "output SVG `file`")
	title := flag.String("title", "reconf: delegations on a local 3-node cluster", "chart title")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: plot-bench [-o out.svg] run.json...")
		os.Exit(2)
	}
	series := map[string][]run{}
	for _, path := range flag.Args() {
		b, err := os.ReadFile(path)
		if err != nil {
			fatal(err)
		}
		var r run
		if err := json.Unmarshal(b, &r); err != nil {
			fatal(fmt.Errorf("%s: %w", path, err))
		}
		if r.Label == "" {
			r.Label = "run"
		}
		series[r.Label] = append(series[r.Label], r)
	}
	var labels []string
	for l, rs := range series {
		sort.Slice(rs, func(i, j int) bool { return rs[i].Concurrency < rs[j].Concurrency })
		labels = append(labels, l)
	}
	sort.Strings(labels)
	svg := render(*title, labels, series)
	if err := os.WriteFile(*out, []byte(svg), 0o644); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "plot-bench:", err)
	os.Exit(1)
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"}

// panel is one chart: a frame, log2 x axis of concurrency, linear or log y.
type panel struct {
	x0, y0, w, h float64 // plot area
	cmin, cmax   float64 // concurrency range
	ymin, ymax   float64
	logY         bool
}

func (p panel) px(c float64) float64 {
	if p.cmax == p.cmin {
		return p.x0 + p.w/2
	}
	return p.x0 + (math.Log2(c)-math.Log2(p.cmin))/(math.Log2(p.cmax)-math.Log2(p.cmin))*p.w
}

func (p panel) py(v float64) float64 {
	if p.logY {
		v = math.Max(v, p.ymin)
		return p.y0 + p.h - (math.Log10(v)-math.Log10(p.ymin))/(math.Log10(p.ymax)-math.Log10(p.ymin))*p.h
	}
	return p.y0 + p.h - (v-p.ymin)/(p.ymax-p.ymin)*p.h
}

func render(title string, labels []string, series map[string][]run) string {
	var b strings.Builder
	const W, H = 1100.0, 480.0
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="24" text-anchor="middle" font-size="16">%s</text>`+"\n", W/2, esc(title))

	cmin, cmax, tmax := math.Inf(1), 0.0, 0.0
	lmin, lmax := math.Inf(1), 0.0
	for _, rs := range series {
		for _, r := range rs {
			c := float64(max(r.Concurrency, 1))
			cmin, cmax = math.Min(cmin, c), math.Max(cmax, c)
			tmax = math.Max(tmax, r.Delegations)
			for _, v := range []float64{r.Total.P50, r.Total.P99} {
				if v > 0 {
					lmin, lmax = math.Min(lmin, v), math.Max(lmax, v)
				}
			}
		}
	}
	if math.IsInf(lmin, 1) {
		lmin, lmax = 0.1, 1
	}
	left := panel{x0: 80, y0: 60, w: 410, h: 320, cmin: cmin, cmax: cmax, ymin: 0, ymax: niceCeil(tmax * 1.05)}
	right := panel{x0: 640, y0: 60, w: 410, h: 320, cmin: cmin, cmax: cmax,
		ymin: math.Pow(10, math.Floor(math.Log10(lmin))), ymax: math.Pow(10, math.Ceil(math.Log10(lmax))), logY: true}
	axes(&b, left, "delegations per second", "concurrent clients")
	axes(&b, right, "latency (ms, log scale): solid p50, dashed p99", "concurrent clients")

	for i, l := range labels {
		col := palette[i%len(palette)]
		rs := series[l]
		line(&b, left, rs, col, "", func(r run) float64 { return r.Delegations })
		line(&b, right, rs, col, "", func(r run) float64 { return r.Total.P50 })
		line(&b, right, rs, col, "6,4", func(r run) float64 { return r.Total.P99 })
		y := 440.0 + float64(i/4)*18
		x := 80.0 + float64(i%4)*250
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="2.5"/>`, x, y, x+24, y, col)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f">%s</text>`+"\n", x+30, y+4, esc(l))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func axes(b *strings.Builder, p panel, ylabel, xlabel string) {
	fmt.Fprintf(b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#444"/>`+"\n", p.x0, p.y0, p.w, p.h)
	for c := 1.0; c <= p.cmax*1.0001; c *= 2 {
		if c < p.cmin/1.0001 {
			continue
		}
		x := p.px(c)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#ddd"/>`, x, p.y0, x, p.y0+p.h)
		fmt.Fprintf(b, `<text x="%.1f" y="%.0f" text-anchor="middle">%.0f</text>`+"\n", x, p.y0+p.h+16, c)
	}
	var ticks []float64
	if p.logY {
		for v := p.ymin; v <= p.ymax*1.0001; v *= 10 {
			ticks = append(ticks, v)
		}
	} else {
		step := niceCeil(p.ymax / 6)
		for v := 0.0; v <= p.ymax*1.0001; v += step {
			ticks = append(ticks, v)
		}
	}
	for _, v := range ticks {
		y := p.py(v)
		fmt.Fprintf(b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/>`, p.x0, y, p.x0+p.w, y)
		fmt.Fprintf(b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", p.x0-6, y+4, num(v))
	}
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" text-anchor="middle">%s</text>`+"\n", p.x0+p.w/2, p.y0+p.h+36, esc(xlabel))
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" text-anchor="middle">%s</text>`+"\n", p.x0+p.w/2, p.y0-10, esc(ylabel))
}

func line(b *strings.Builder, p panel, rs []run, col, dash string, val func(run) float64) {
	var pts []string
	for _, r := range rs {
		v := val(r)
		if v <= 0 && p.logY {
			continue
		}
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", p.px(float64(max(r.Concurrency, 1))), p.py(v)))
	}
	if len(pts) == 0 {
		return
	}
	d := ""
	if dash != "" {
		d = fmt.Sprintf(` stroke-dasharray="%s"`, dash)
	}
	fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), col, d)
	for _, pt := range pts {
		xy := strings.Split(pt, ",")
		fmt.Fprintf(b, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`, xy[0], xy[1], col)
	}
	b.WriteString("\n")
}

func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*e >= v {
			return m * e
		}
	}
	return 10 * e
}

func num(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0fk", v/1000)
	case v >= 1 || v == 0:
		return fmt.Sprintf("%g", v)
	}
	return fmt.Sprintf("%g", v)
}

func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
