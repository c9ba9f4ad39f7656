// Command plot-bench draws `reconfctl bench --json` results as an SVG:
// throughput against concurrency, and latency percentiles against
// concurrency, one line per label (e.g. the log store).
//
//	go run ./scripts/plot-bench -o docs/bench.svg docs/bench/*.json
//
// Each file is one run; runs are grouped by their "label" and ordered by
// concurrency; of repeated runs at one concurrency the median (by
// throughput) is drawn. Throughput is delegations per second (batched ones
// included); latencies are those of all the run's operations.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

type run struct {
	name        string  // file name without the repeat suffix (-rN.json)
	Label       string  `json:"label"`
	Concurrency int     `json:"concurrency"`
	Delegations float64 `json:"delegations_per_sec"`
	Total       struct {
		OpsPerSec float64 `json:"ops_per_sec"`
		Errors    uint64  `json:"errors"`
		P50       float64 `json:"p50_ms"`
		P90       float64 `json:"p90_ms"`
		P99       float64 `json:"p99_ms"`
		P999      float64 `json:"p999_ms"`
	} `json:"total"`
	Machine struct {
		LoadAfter string `json:"load_after"`
	} `json:"machine"`
}

func main() {
	out := flag.String("o", "bench.svg", "output SVG `file`")
	title := flag.String("title", "reconf: delegations on a local 3-node cluster", "chart title")
	table := flag.Bool("table", false, "print a markdown table of the runs (median and range of repeats) instead of drawing")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: plot-bench [-o out.svg | -table] run.json...")
		os.Exit(2)
	}
	series := map[string][]run{}
	var all []run
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
		r.name = strings.TrimSuffix(filepath.Base(path), ".json")
		if i := strings.LastIndex(r.name, "-r"); i > 0 {
			if _, err := strconv.Atoi(r.name[i+2:]); err == nil {
				r.name = r.name[:i]
			}
		}
		series[r.Label] = append(series[r.Label], r)
		all = append(all, r)
	}
	if *table {
		printTable(all)
		return
	}
	var labels []string
	for l, rs := range series {
		series[l] = medians(rs)
		labels = append(labels, l)
	}
	sort.Strings(labels)
	svg := render(*title, labels, series)
	if err := os.WriteFile(*out, []byte(svg), 0o644); err != nil {
		fatal(err)
	}
}

// medians keeps, of the runs at each concurrency (repeats), the one with
// the median throughput, and orders them by concurrency.
func medians(rs []run) []run {
	by := map[int][]run{}
	for _, r := range rs {
		by[r.Concurrency] = append(by[r.Concurrency], r)
	}
	var out []run
	for _, group := range by {
		sort.Slice(group, func(i, j int) bool { return group[i].Delegations < group[j].Delegations })
		out = append(out, group[len(group)/2])
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Concurrency < out[j].Concurrency })
	return out
}

// printTable prints one row per run name: the median run's figures (by
// throughput) and the range over the repeats.
func printTable(all []run) {
	by := map[string][]run{}
	var names []string
	for _, r := range all {
		if _, ok := by[r.name]; !ok {
			names = append(names, r.name)
		}
		by[r.name] = append(by[r.name], r)
	}
	// By scenario, then by concurrency: bolt-c1, bolt-c4, ... bolt-c256.
	base := func(n string) string {
		if i := strings.LastIndex(n, "-c"); i > 0 {
			if _, err := strconv.Atoi(n[i+2:]); err == nil {
				return n[:i]
			}
		}
		return n
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := names[i], names[j]
		if base(a) != base(b) {
			return base(a) < base(b)
		}
		return by[a][0].Concurrency < by[b][0].Concurrency
	})
	fmt.Println("| run | clients | delegations/s median (min–max) | ops/s | p50 ms | p99 ms | errors | load after |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, n := range names {
		rs := by[n]
		sort.Slice(rs, func(i, j int) bool {
			if rs[i].Delegations != rs[j].Delegations {
				return rs[i].Delegations < rs[j].Delegations
			}
			return rs[i].Total.OpsPerSec < rs[j].Total.OpsPerSec
		})
		m := rs[len(rs)/2]
		var loads []string
		var errs uint64
		for _, r := range rs {
			loads = append(loads, strings.Fields(r.Machine.LoadAfter + " ?")[0])
			errs += r.Total.Errors
		}
		fmt.Printf("| %s | %d | %.0f (%.0f–%.0f) | %.0f | %.2f | %.1f | %d | %s |\n", n, m.Concurrency, m.Delegations,
			rs[0].Delegations, rs[len(rs)-1].Delegations, m.Total.OpsPerSec, m.Total.P50, m.Total.P99, errs, strings.Join(loads, ", "))
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
