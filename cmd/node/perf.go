package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"

	"github.com/reconf/reconf/cluster"
)

// Flags of the write path and its storage (docs/performance.md).
func perfFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "log-store", EnvVars: env("LOG_STORE"),
			Usage: "Raft log store of a new data dir: bolt (raft-boltdb) or wal (raft-wal, one fsync per append); default: what the data dir holds, bolt for a new one"},
		&cli.IntFlag{Name: "max-inflight", Value: 1, EnvVars: env("MAX_INFLIGHT"),
			Usage: "group commit: log entries handed to Raft and not yet applied; commands arriving meanwhile share the next entry"},
		&cli.DurationFlag{Name: "batch-wait", EnvVars: env("BATCH_WAIT"),
			Usage: "group commit: how long an entry waits for more commands before it goes out (0: never waits)"},
		&cli.IntFlag{Name: "log-cache-mb", Value: 16, EnvVars: env("LOG_CACHE_MB"),
			Usage: "newest Raft log entries kept in memory for replication and apply, in MiB (at most 512 entries)"},
		&cli.IntFlag{Name: "gc-min-heap-mb", Value: 64, EnvVars: env("GC_MIN_HEAP_MB"),
			Usage: "let the heap grow to this many MiB before the Go GC runs (a ballast that is never touched: no resident memory); 0: off"},
		&cli.StringFlag{Name: "pprof", EnvVars: env("PPROF"),
			Usage: "serve Go's /debug/pprof on this loopback `host:port` (off by default; other addresses are refused: profiles show the process's memory)"},
	}
}

// applyPerfFlags copies the flags into the node's configuration. It
// returns the GC ballast, which the caller keeps alive while the node runs.
func applyPerfFlags(c *cli.Context, cfg *cluster.Config) []byte {
	cfg.LogStore = c.String("log-store")
	cfg.MaxInflight = c.Int("max-inflight")
	cfg.BatchWait = c.Duration("batch-wait")
	cfg.LogCacheBytes = max(c.Int("log-cache-mb"), 1) << 20
	return gcBallast(c.Int("gc-min-heap-mb"))
}

// gcBallast returns a ballast that raises the GC's heap goal. A node with a small state allocates
// mostly short-lived garbage per request; with the default GOGC=100 the GC
// then runs every few MiB and costs a quarter of the CPU at high request
// rates. The ballast counts as live heap, so the goal becomes twice (live +
// ballast); it holds no pointers (never scanned) and is never written, so
// its pages are never made resident. With a large state it changes little.
func gcBallast(mb int) []byte {
	if mb <= 0 {
		return nil
	}
	return make([]byte, mb<<20)
}

// startPprof serves /debug/pprof when --pprof is set.
func startPprof(c *cli.Context, logger hclog.Logger) error {
	addr := c.String("pprof")
	if addr == "" {
		return nil
	}
	// pprof has no authentication, and heap profiles and goroutine dumps
	// show secrets in memory: loopback only (reach it over ssh).
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("%s is not a loopback address: pprof has no authentication; use 127.0.0.1:PORT and reach it over ssh", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	// No /debug/pprof/cmdline: it would show --cluster-token when given as
	// a flag.
	mux.HandleFunc("/debug/pprof/cmdline", http.NotFound)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("pprof server", "error", err)
		}
	}()
	logger.Warn("serving /debug/pprof", "addr", ln.Addr().String())
	return nil
}
