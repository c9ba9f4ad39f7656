// Command refbench measures reference figures on the machine at hand, so
// that a throughput target stated for "this machine class" can be checked
// here: the disk's fsync rate, raw hashicorp/raft Apply throughput over
// raft-boltdb, raft-wal or an in-memory store (with and without leader-side
// packing), and a minimal hraftd-style HTTP key-value server of three
// processes. None of it uses reconf's server code; its HTTP load is sent by
// internal/rawhttp, the client reconfctl bench uses, so that both are
// driven at the same cost.
//
//	go run ./scripts/refbench fsync --duration 5s
//	go run ./scripts/refbench raw --store bolt --concurrency 64
//	go run ./scripts/refbench raw --store wal --pack
//	go run ./scripts/refbench kv --store bolt --concurrency 64
//
// Every subcommand prints one human line, or one JSON object with --json.
// Run `refbench <subcommand> --help` for what each one measures.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/reconf/reconf/internal/loadavg"
)

const overview = `refbench: reference harnesses for calibrating throughput targets on this machine.

usage: refbench <subcommand> [flags]

subcommands:
  fsync     write+fsync 4 KiB blocks to a file for a while: fsyncs/s of the disk
  raw       three hashicorp/raft nodes in this process over loopback TCP;
            closed-loop Apply() from C goroutines on the leader (--pack: one
            leader-side packer puts all queued commands into one log entry)
  kv        three "refbench kv-node" processes, a minimal hraftd-style HTTP
            key-value server on raft-boltdb (or raft-wal), and a closed-loop
            HTTP load generator of C keep-alive clients against the leader
  kv-node   one node of the kv cluster (started by "refbench kv"; not for
            direct use)

Each prints one human line, or a JSON object with --json. Temporary data
dirs and child processes are removed on exit, also on Ctrl-C.
Run "refbench <subcommand> --help" for the flags of each.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, overview)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "fsync":
		err = runFsync(ctx, args)
	case "raw":
		err = runRaw(ctx, args)
	case "kv":
		err = runKV(ctx, args)
	case "kv-node":
		err = runKVNode(ctx, args)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(os.Stdout, overview)
	default:
		fmt.Fprintf(os.Stderr, "refbench: unknown subcommand %q\n\n%s", cmd, overview)
		stop()
		os.Exit(2)
	}
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "refbench:", err)
		os.Exit(1)
	}
}

// errUsage: the flag package has already said what is wrong.
var errUsage = errors.New("usage")

// newFlags makes a subcommand's flag set whose -help prints the given
// description above the flags.
func newFlags(name, description string) *flag.FlagSet {
	fs := flag.NewFlagSet("refbench "+name, flag.ContinueOnError)
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "usage: refbench %s [flags]\n\n%s\nflags (one or two dashes):\n", name, description)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and refuses positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" || a == "--h" {
			fs.SetOutput(os.Stdout) // asked for: not an error
		}
		if a == "--" {
			break
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		fs.Usage()
		return errUsage
	}
	return nil
}

// latency holds percentiles of a run's operations, in milliseconds.
type latency struct {
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p999_ms"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
}

func summarize(ds []time.Duration) latency {
	if len(ds) == 0 {
		return latency{}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	pct := func(p float64) float64 {
		i := int(p*float64(len(ds))+0.5) - 1 // nearest rank
		i = max(0, min(i, len(ds)-1))
		return ms(ds[i])
	}
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return latency{
		P50: pct(0.50), P90: pct(0.90), P99: pct(0.99), P999: pct(0.999),
		Max: ms(ds[len(ds)-1]), Mean: ms(sum / time.Duration(len(ds))),
	}
}

// machine describes where and under what load a run was made.
type machine struct {
	Hostname   string `json:"hostname,omitempty"`
	NumCPU     int    `json:"num_cpu"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	GoVersion  string `json:"go_version"`
	OS         string `json:"os"`
	LoadBefore string `json:"load_before,omitempty"`
	LoadAfter  string `json:"load_after,omitempty"`
	Start      string `json:"start"`
}

func newMachine() machine {
	host, _ := os.Hostname()
	return machine{
		Hostname:   host,
		NumCPU:     runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		GoVersion:  runtime.Version(),
		OS:         runtime.GOOS + "/" + runtime.GOARCH,
		LoadBefore: loadavg.Read(),
		Start:      time.Now().UTC().Format(time.RFC3339),
	}
}

func loadNote(m machine) string {
	if m.LoadBefore == "" {
		return ""
	}
	return fmt.Sprintf("; load %s -> %s", m.LoadBefore, m.LoadAfter)
}

// emit prints the result as JSON or as the human line.
func emit(asJSON bool, v any, human string) error {
	if !asJSON {
		_, err := fmt.Println(human)
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// warnIfRAM warns when dir is on tmpfs or ramfs (per /proc/mounts), where
// an fsync costs nothing and the figures say nothing about the disk.
func warnIfRAM(dir string) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return
	}
	if p, err := filepath.EvalSymlinks(abs); err == nil {
		abs = p
	}
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return
	}
	best, bestType := "", ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		mp := f[1]
		if (abs == mp || strings.HasPrefix(abs, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, bestType = mp, f[2]
		}
	}
	if bestType == "tmpfs" || bestType == "ramfs" {
		fmt.Fprintf(os.Stderr, "refbench: warning: %s is on %s (%s): fsync does not reach a disk; use --dir on a disk\n", dir, bestType, best)
	}
}

// loadResult is what a closed-loop run measured.
type loadResult struct {
	ops, errors uint64
	elapsed     time.Duration // the measured window (shorter if interrupted)
	latencies   []time.Duration
	firstErr    error
}

// closedLoop runs op from c workers, each with one call in flight, for
// warmup+duration. Only calls that complete inside the measured window (the
// last `duration`) count. A failed call is counted as an error and not
// timed; op is expected to back off itself.
func closedLoop(ctx context.Context, c int, warmup, duration time.Duration, op func(worker int, seq uint64) error) loadResult {
	start := time.Now()
	mStart := start.Add(warmup)
	mEnd := mStart.Add(duration)
	type part struct {
		ops, errs uint64
		lat       []time.Duration
		firstErr  error
	}
	parts := make([]part, c)
	var wg sync.WaitGroup
	for w := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &parts[w]
			p.lat = make([]time.Duration, 0, 1024)
			for seq := uint64(0); ctx.Err() == nil; seq++ {
				t0 := time.Now()
				if !t0.Before(mEnd) {
					return
				}
				err := op(w, seq)
				t1 := time.Now()
				if t1.Before(mStart) || t1.After(mEnd) {
					continue
				}
				if err != nil {
					p.errs++
					if p.firstErr == nil {
						p.firstErr = err
					}
					continue
				}
				p.ops++
				p.lat = append(p.lat, t1.Sub(t0))
			}
		}()
	}
	wg.Wait()
	var r loadResult
	end := time.Now()
	if end.After(mEnd) {
		end = mEnd
	}
	if end.After(mStart) {
		r.elapsed = end.Sub(mStart)
	}
	for _, p := range parts {
		r.ops += p.ops
		r.errors += p.errs
		r.latencies = append(r.latencies, p.lat...)
		if r.firstErr == nil {
			r.firstErr = p.firstErr
		}
	}
	return r
}

// loadFigures is what every closed-loop subcommand reports (its fields sit
// at the top level of the JSON).
type loadFigures struct {
	Concurrency int     `json:"concurrency"`
	Warmup      float64 `json:"warmup_s"`
	Duration    float64 `json:"duration_s"`
	Ops         uint64  `json:"ops"`
	Errors      uint64  `json:"errors"`
	FirstError  string  `json:"first_error,omitempty"`
	OpsPerSec   float64 `json:"ops_per_sec"`
	Latency     latency `json:"latency"`
}

func (r loadResult) figures(concurrency int, warmup time.Duration) loadFigures {
	f := loadFigures{Concurrency: concurrency, Warmup: warmup.Seconds(), Duration: r.elapsed.Seconds(),
		Ops: r.ops, Errors: r.errors, OpsPerSec: r.opsPerSec(), Latency: summarize(r.latencies)}
	if r.firstErr != nil {
		f.FirstError = r.firstErr.Error()
	}
	return f
}

func (r loadResult) opsPerSec() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ops) / r.elapsed.Seconds()
}

// errNote is the human line's note on errors, if any.
func errNote(r loadResult) string {
	if r.errors == 0 {
		return ""
	}
	return fmt.Sprintf(", %d errors (first: %v)", r.errors, r.firstErr)
}

func checkLoadFlags(c int, warmup, duration time.Duration) error {
	if c < 1 {
		return fmt.Errorf("--concurrency must be at least 1")
	}
	if warmup < 0 || duration <= 0 {
		return fmt.Errorf("--warmup must be >= 0 and --duration > 0")
	}
	return nil
}
