package transport

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/reconf/reconf/cluster"
)

// groupCommitCollector exports how well the leader packs commands into log
// entries (cluster/propose.go): commands_total / entries_total is the mean
// number of commands per entry.
type groupCommitCollector struct{ node *cluster.Node }

var (
	descGCEntries  = prometheus.NewDesc("reconf_group_commit_entries_total", "Log entries this node proposed as leader (group commit).", nil, nil)
	descGCCommands = prometheus.NewDesc("reconf_group_commit_commands_total", "Commands packed into the log entries this node proposed as leader.", nil, nil)
)

func (c *groupCommitCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descGCEntries
	ch <- descGCCommands
}

func (c *groupCommitCollector) Collect(ch chan<- prometheus.Metric) {
	e, n := c.node.GroupCommitStats()
	ch <- prometheus.MustNewConstMetric(descGCEntries, prometheus.CounterValue, float64(e))
	ch <- prometheus.MustNewConstMetric(descGCCommands, prometheus.CounterValue, float64(n))
}
