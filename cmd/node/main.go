// Command reconfd runs one node of a reconf cluster.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"

	"github.com/reconf/reconf/cluster"
	"github.com/reconf/reconf/transport"
)

func main() {
	app := &cli.App{
		Name:  "reconfd",
		Usage: "run a node of a reconf cluster (replicated reconfiguration controller)",
		Description: `A reconf node keeps a replica of the controller state in --data-dir and serves
the HTTP API on --http-addr. Raft traffic, and requests that followers forward
to the leader, use --raft-addr.

Start a new cluster with --bootstrap on one node, then start the others with
--join pointing at any member's HTTP address. A restarted node rejoins with the
state in its data dir; --bootstrap and --join are no-ops then. --dev runs a
throw-away one-node cluster.

Every flag can also be set with an environment variable RECONF_<FLAG>, e.g.
RECONF_HTTP_ADDR=127.0.0.1:8102.

Security (docs/operations.md): --tls-cert, --tls-key and --tls-ca turn on
mutual TLS for the API and the Raft port; --token-file adds bearer tokens
with roles (read, write, admin), reloaded on SIGHUP; --cluster-token lets
nodes prove themselves to each other without TLS.`,
		Flags:           append(append(flags(), securityFlags()...), perfFlags()...), // perf.go
		Commands:        subcommands(),
		Action:          run,
		HideHelpCommand: true,
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "reconfd:", err)
		os.Exit(1)
	}
}

func env(name string) []string { return []string{"RECONF_" + name} }

func flags() []cli.Flag {
	host, _ := os.Hostname()
	return []cli.Flag{
		&cli.StringFlag{Name: "id", Value: host, EnvVars: env("ID"), Usage: "node id, unique in the cluster"},
		&cli.StringFlag{Name: "data-dir", EnvVars: env("DATA_DIR"), Usage: "Raft log and stable store, snapshots, node metadata (default ./data/<id>)"},
		&cli.StringFlag{Name: "http-addr", Value: "127.0.0.1:8101", EnvVars: env("HTTP_ADDR"), Usage: "API listen address"},
		&cli.StringFlag{Name: "raft-addr", Value: "127.0.0.1:8201", EnvVars: env("RAFT_ADDR"), Usage: "Raft and forwarding listen address"},
		&cli.StringFlag{Name: "advertise-http", EnvVars: env("ADVERTISE_HTTP"), Usage: "API address clients use, when different from --http-addr"},
		&cli.StringFlag{Name: "advertise-raft", EnvVars: env("ADVERTISE_RAFT"), Usage: "Raft address peers use, when different from --raft-addr"},
		&cli.BoolFlag{Name: "bootstrap", EnvVars: env("BOOTSTRAP"), Usage: "form a new cluster with this node as its only voter (no-op if the data dir has state)"},
		&cli.StringFlag{Name: "join", EnvVars: env("JOIN"), Usage: "comma-separated HTTP addresses of members to ask for membership"},
		&cli.BoolFlag{Name: "nonvoter", EnvVars: env("NONVOTER"), Usage: "join as a non-voting member"},
		&cli.BoolFlag{Name: "dev", EnvVars: env("DEV"), Usage: "one-node cluster in a temporary dir: zero-config try-out"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: env("LOG_LEVEL"), Usage: "trace, debug, info, warn or error"},
		&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: env("LOG_FORMAT"), Usage: "text or json"},
		&cli.Uint64Flag{Name: "snapshot-threshold", Value: 8192, EnvVars: env("SNAPSHOT_THRESHOLD"), Usage: "log entries between snapshots"},
		&cli.DurationFlag{Name: "snapshot-interval", Value: 30 * time.Second, EnvVars: env("SNAPSHOT_INTERVAL"), Usage: "how often to check whether to snapshot"},
		&cli.Uint64Flag{Name: "trailing-logs", Value: 10240, EnvVars: env("TRAILING_LOGS"), Usage: "log entries kept after a snapshot, for slow followers"},
		&cli.DurationFlag{Name: "heartbeat-timeout", Value: time.Second, EnvVars: env("HEARTBEAT_TIMEOUT"), Usage: "Raft heartbeat timeout"},
		&cli.DurationFlag{Name: "election-timeout", Value: time.Second, EnvVars: env("ELECTION_TIMEOUT"), Usage: "Raft election timeout"},
		&cli.DurationFlag{Name: "shutdown-timeout", Value: 10 * time.Second, EnvVars: env("SHUTDOWN_TIMEOUT"), Usage: "bound on a graceful shutdown"},
		&cli.IntFlag{Name: "max-conns", Value: transport.DefaultMaxConns, EnvVars: env("MAX_CONNS"), Usage: "connections the API and the Raft port each accept at once; more are closed at once"},
		&cli.DurationFlag{Name: "consistency-check-interval", Value: 10 * time.Minute, EnvVars: env("CONSISTENCY_CHECK_INTERVAL"),
			Usage: "while leading, run a replica consistency check this often (digests compared at one log index; 0: only on demand, reconfctl cluster check)"},
		&cli.IntFlag{Name: "max-watches", Value: transport.DefaultMaxWatches, EnvVars: env("MAX_WATCHES"), Usage: "open GET /v1/facts/watch streams this node serves at once (503 beyond)"},
		&cli.BoolFlag{Name: "unsafe-local-reads", EnvVars: env("UNSAFE_LOCAL_READS"), Hidden: true, Usage: "TEST ONLY: serve linearizable reads from local state without a leader check"},
	}
}

func run(c *cli.Context) error {
	logger := hclog.New(&hclog.LoggerOptions{
		Name:       "reconfd",
		Level:      hclog.LevelFromString(c.String("log-level")),
		JSONFormat: c.String("log-format") == "json",
		Output:     os.Stderr,
	})
	if hclog.LevelFromString(c.String("log-level")) == hclog.NoLevel {
		return fmt.Errorf("--log-level %q: want trace, debug, info, warn or error", c.String("log-level"))
	}
	if c.Args().Present() {
		return fmt.Errorf("unexpected argument %q (commands: healthcheck, recover; see reconfd --help)", c.Args().First())
	}
	sec, err := loadSecurity(c, logger) // security.go
	if err != nil {
		return err
	}
	hupStop := make(chan struct{})
	defer close(hupStop)
	reloadOnHUP(sec, logger, hupStop)
	id, dataDir, bootstrap := c.String("id"), c.String("data-dir"), c.Bool("bootstrap")
	if c.Bool("dev") {
		dir, err := os.MkdirTemp("", "reconf-dev-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if !c.IsSet("id") {
			id = "dev"
		}
		dataDir, bootstrap = dir, true
	}
	if id == "" {
		return errors.New("--id is required (no hostname to default to)")
	}
	if dataDir == "" {
		dataDir = filepath.Join("data", id)
	}
	advHTTP := c.String("advertise-http")
	if advHTTP == "" {
		advHTTP = c.String("http-addr")
	}

	mux, err := transport.ListenMux(sec.muxConfig(transport.MuxConfig{
		Listen: c.String("raft-addr"), Advertise: c.String("advertise-raft"), Logger: logger.Named("mux"), MaxConns: c.Int("max-conns"),
	}))
	if err != nil {
		return err
	}
	defer mux.Close()
	// The Raft port proves this node's cluster from the first connection
	// on (transport/identity.go); the node takes over once it runs.
	if cid, err := cluster.DataDirClusterID(dataDir); err == nil && cid != "" {
		mux.SetClusterID(func() string { return cid })
	}
	cfg := cluster.Config{
		ID: id, DataDir: dataDir, AdvertiseRaft: mux.Addr().String(), StreamLayer: mux.RaftLayer(),
		Bootstrap: bootstrap, Logger: logger,
		SnapshotThreshold: c.Uint64("snapshot-threshold"), SnapshotInterval: c.Duration("snapshot-interval"),
		TrailingLogs: c.Uint64("trailing-logs"), HeartbeatTimeout: c.Duration("heartbeat-timeout"),
		ElectionTimeout: c.Duration("election-timeout"),
	}
	ballast := applyPerfFlags(c, &cfg) // perf.go
	defer runtime.KeepAlive(ballast)
	if err := startPprof(c, logger); err != nil {
		return fmt.Errorf("--pprof: %w", err)
	}
	raftMetrics, err := installRaftMetrics() // raftmetrics.go
	if err != nil {
		return err
	}
	node, err := cluster.Open(cfg)
	if err != nil {
		return err
	}
	if c.Bool("unsafe-local-reads") {
		logger.Warn("UNSAFE: linearizable reads are served from local state without a leader check (test only)")
	}
	api := transport.NewServer(transport.ServerConfig{
		Node: node, Mux: mux, AdvertiseHTTP: advHTTP, Logger: logger.Named("api"),
		UnsafeLocalReads: c.Bool("unsafe-local-reads"), Auth: sec.auth, MaxWatches: c.Int("max-watches"),
		ExtraMetrics:             raftMetrics,
		ConsistencyCheckInterval: c.Duration("consistency-check-interval"),
	})
	ln, err := net.Listen("tcp", c.String("http-addr"))
	if err != nil {
		node.Shutdown(context.Background())
		return fmt.Errorf("listen on http address: %w", err)
	}
	ln = transport.LimitListener(ln, c.Int("max-conns"), logger.Named("http")) // limits.go
	if sec.tls != nil {
		ln = tls.NewListener(ln, sec.tls.APIServerConfig())
	}
	httpSrv := transport.HardenHTTPServer(&http.Server{Handler: api.Handler(),
		ErrorLog: logger.Named("http").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug})})
	go func() {
		if err := httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("http server", "error", err)
		}
	}()
	go func() {
		if err := api.ServeForwarded(); err != nil {
			logger.Error("forwarding server", "error", err)
		}
	}()
	logger.Info("node started", "id", id, "data_dir", dataDir, "http", advHTTP, "raft", mux.Addr().String(), "cluster_id", node.ClusterID())
	sec.describe(logger, c.String("http-addr"))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fatal := make(chan error, 1)
	if join := c.String("join"); join != "" {
		fail := func(err error) {
			select {
			case fatal <- err:
			default:
			}
		}
		go joinCluster(ctx, logger, node, sec, splitAddrs(join), mux.Addr().String(), !c.Bool("nonvoter"), fail) // join.go
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-fatal:
		logger.Error("cannot run this node", "error", runErr)
	}
	stop()
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), c.Duration("shutdown-timeout"))
	defer cancel()
	_ = httpSrv.Shutdown(sctx)
	if err := node.Shutdown(sctx); err != nil {
		logger.Error("raft shutdown", "error", err)
	}
	logger.Info("stopped")
	return runErr
}

func splitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}
