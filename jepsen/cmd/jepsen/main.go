// Command jepsen runs reconf's partition test (make jepsen): a cluster of
// real reconfd processes in network namespaces, under faults, with checkers.
// It exits 0 when every checker passes, 1 when one fails, 2 on a harness
// error (the cluster could not even be set up).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/reconf/reconf/jepsen"
)

func main() {
	var (
		seconds  = flag.Int("time", 60, "seconds of workload under faults")
		nodes    = flag.Int("nodes", 5, "cluster size")
		unsafe   = flag.String("unsafe", "", "1/true: start the nodes with --unsafe-local-reads (the checker must catch it)")
		bin      = flag.String("bin", "bin/reconfd", "the reconfd binary")
		out      = flag.String("results", "jepsen/results", "results root; each run writes <root>/<timestamp>/")
		clients  = flag.Int("clients", 0, "concurrent clients (default 2 per node)")
		sessions = flag.Int("sessions", 0, "sessions (default 6)")
		faults   = flag.String("faults", "", "comma-separated subset of: "+strings.Join(jepsen.AllFaults, ","))
		quiet    = flag.Bool("quiet", false, "no progress lines")
		calm     = flag.String("calm", "2s:4s", "healthy time between faults, min:max")
		hold     = flag.String("hold", "3s:6s", "how long each fault lasts, min:max")
		table    = flag.String("table", "", "print a Markdown table of every run under this results root, by fault, and exit")
	)
	flag.Parse()
	if *table != "" {
		rows, err := jepsen.Sweep(*table)
		if err != nil {
			fmt.Fprintln(os.Stderr, "jepsen:", err)
			os.Exit(2)
		}
		fmt.Print(jepsen.SweepTable(rows))
		return
	}
	calmR, err1 := durRange(*calm)
	holdR, err2 := durRange(*hold)
	if err1 != nil || err2 != nil {
		fmt.Fprintln(os.Stderr, "jepsen: -calm/-hold:", err1, err2)
		os.Exit(2)
	}
	binary, err := filepath.Abs(*bin)
	if err == nil {
		_, err = os.Stat(binary)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "jepsen: reconfd binary: %v (run `go build -o bin/reconfd ./cmd/node`)\n", err)
		os.Exit(2)
	}
	dir := filepath.Join(*out, time.Now().Format("20060102T150405"))
	if _, err := os.Stat(dir); err == nil {
		dir += fmt.Sprintf("-%d", os.Getpid())
	}
	cfg := jepsen.Config{
		Binary: binary, Nodes: *nodes, Duration: time.Duration(*seconds) * time.Second,
		Unsafe: truthy(*unsafe), Clients: *clients, Sessions: *sessions, ResultsDir: dir,
		Calm: calmR, Hold: holdR,
	}
	if *faults != "" {
		for _, f := range strings.Split(*faults, ",") {
			cfg.Faults = append(cfg.Faults, strings.TrimSpace(f))
		}
	}
	start := time.Now()
	if !*quiet {
		cfg.Logf = func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
		}
	}
	// Ctrl-C or SIGTERM: stop the run; Run tears everything down and still
	// writes the results it has.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	sum, err := jepsen.Run(ctx, cfg)
	jepsen.CleanOwn()
	fmt.Print(sum.Report())
	switch {
	case err != nil && sum.Ops["total"] == 0:
		fmt.Fprintln(os.Stderr, "jepsen:", err)
		os.Exit(2)
	case err != nil || !sum.Valid:
		if err != nil {
			fmt.Fprintln(os.Stderr, "jepsen:", err)
		}
		os.Exit(1)
	}
}

func truthy(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

// durRange parses "min:max" (or a single duration).
func durRange(s string) ([2]time.Duration, error) {
	lo, hi, ok := strings.Cut(s, ":")
	if !ok {
		hi = lo
	}
	a, err := time.ParseDuration(lo)
	if err != nil {
		return [2]time.Duration{}, err
	}
	b, err := time.ParseDuration(hi)
	if err != nil || b < a || a <= 0 {
		return [2]time.Duration{}, fmt.Errorf("%q: want min:max with 0 < min <= max", s)
	}
	return [2]time.Duration{a, b}, nil
}
