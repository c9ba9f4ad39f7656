package main

// hashicorp/raft reports its own measurements (commit time, FSM apply, log
// appends, replication, elections) through go-metrics' process-wide sink;
// reconfd sends them to Prometheus, once per process.

import (
	"fmt"
	"time"

	gometrics "github.com/hashicorp/go-metrics/compat"
	gmprom "github.com/hashicorp/go-metrics/compat/prometheus"
	"github.com/prometheus/client_golang/prometheus"
)

// installRaftMetrics makes go-metrics report to a new Prometheus registry
// and returns it, to be served beside the node's own metrics. Raft's keys become names
// such as reconf_raft_commitTime (a summary, in milliseconds, as the
// library measures it) and reconf_raft_fsm_apply.
func installRaftMetrics() (prometheus.Gatherer, error) {
	reg := prometheus.NewRegistry()
	sink, err := gmprom.NewPrometheusSinkFrom(gmprom.PrometheusOpts{
		Registerer: reg,
		// A series not updated for this long is dropped (a peer that left
		// stops being reported).
		Expiration: 10 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("raft metrics: %w", err)
	}
	cfg := gometrics.DefaultConfig("reconf")
	cfg.EnableHostname = false
	cfg.EnableRuntimeMetrics = false // the Go collector already reports these
	cfg.EnableServiceLabel = false
	if _, err := gometrics.NewGlobal(cfg, sink); err != nil {
		return nil, fmt.Errorf("raft metrics: %w", err)
	}
	return reg, nil
}
