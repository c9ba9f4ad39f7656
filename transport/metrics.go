package transport

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/reconf/reconf/cluster"
	"github.com/reconf/reconf/fsm"
)

// metrics is one node's Prometheus registry: reconf's own counters and
// timings, Raft's indexes and state, and the Go runtime. Each server has its
// own registry, so tests can run several nodes in one process.
type metrics struct {
	reg      *prometheus.Registry
	gather   prometheus.Gatherer // reg, plus the extra metrics the server was given
	commands *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	requests *prometheus.CounterVec
	denied   *prometheus.CounterVec
}

func newMetrics(node *cluster.Node, extra prometheus.Gatherer) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "reconf_commands_total",
			Help: "Commands proposed by this node as leader, by type and result (ok, or the error code).",
		}, []string{"type", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "reconf_command_seconds",
			Help:    "Time from proposal to applied result on the leader (replication, fsync and apply), by command type.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"type"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "reconf_http_requests_total",
			Help: "HTTP requests served, by method and status code.",
		}, []string{"method", "code"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "reconf_auth_denied_total",
			Help: "Requests refused by authentication (unauthorized) or authorization (forbidden).",
		}, []string{"code"}),
	}
	m.reg.MustRegister(m.commands, m.latency, m.requests, m.denied,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&nodeCollector{node: node}, &groupCommitCollector{node: node}, // perfmetrics.go
		&boundedCollector{node: node}) // bounded_metrics.go
	m.gather = m.reg
	if extra != nil {
		m.gather = prometheus.Gatherers{m.reg, extra}
	}
	return m
}

func (m *metrics) authDenied(code string) { m.denied.WithLabelValues(code).Inc() }

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.gather, promhttp.HandlerOpts{})
}

func (m *metrics) observeCommand(t fsm.Type, res fsm.Result, err error, d time.Duration) {
	result := "ok"
	switch {
	case errors.Is(err, cluster.ErrUnknownOutcome):
		result = CodeUnknownOutcome
	case err != nil:
		result = CodeUnavailable
	case res.Err != nil:
		result = string(res.Err.Code)
	}
	m.commands.WithLabelValues(t.String(), result).Inc()
	if err == nil {
		m.latency.WithLabelValues(t.String()).Observe(d.Seconds())
	}
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection: streaming
// routes lift the server's deadlines through it (limits.go).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (m *metrics) instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(rec, r)
		m.requests.WithLabelValues(r.Method, strconv.Itoa(rec.code)).Inc()
	})
}

// nodeCollector reads Raft's indexes and the state's sizes at scrape time.
type nodeCollector struct{ node *cluster.Node }

var (
	descTerm       = prometheus.NewDesc("reconf_raft_term", "Current Raft term.", nil, nil)
	descCommit     = prometheus.NewDesc("reconf_raft_commit_index", "Raft commit index known to this node.", nil, nil)
	descApplied    = prometheus.NewDesc("reconf_raft_applied_index", "Index of the last entry applied to the state machine.", nil, nil)
	descLastIndex  = prometheus.NewDesc("reconf_raft_last_index", "Index of the last entry in this node's log.", nil, nil)
	descLeader     = prometheus.NewDesc("reconf_raft_leader", "1 if this node is the leader.", nil, nil)
	descContact    = prometheus.NewDesc("reconf_raft_last_contact_seconds", "Seconds since a follower last heard from the leader (0 on the leader).", nil, nil)
	descViolations = prometheus.NewDesc("reconf_coherence_violating_sessions", "Sessions whose footprints currently break a coherence rule.", nil, nil)
	descFacts      = prometheus.NewDesc("reconf_facts", "Audit facts in the journal.", nil, nil)
	descLive       = prometheus.NewDesc("reconf_live_sessions", "Live sessions with an owner.", nil, nil)
	descEntries    = prometheus.NewDesc("reconf_footprint_entries", "Session entries across all authority footprints.", nil, nil)
	descBundles    = prometheus.NewDesc("reconf_bundles", "Registered bundles.", nil, nil)
	descStorage    = prometheus.NewDesc("reconf_storage_failing", "1 while this node cannot write its Raft log (full or failing disk), else 0.", nil, nil)
	descReadRounds = prometheus.NewDesc("reconf_read_index_rounds_total", "Leadership confirmation rounds run for linearizable reads (concurrent reads share one).", nil, nil)
	descReadFall   = prometheus.NewDesc("reconf_read_index_fallbacks_total", "Confirmation rounds that got too few answers on the Raft port and confirmed through the log instead.", nil, nil)
	descHalted     = prometheus.NewDesc("reconf_replica_halted", "1 once this replica stopped applying the Raft log (a damaged, missing or undecodable entry; /readyz says which), else 0. Replace the node.", nil, nil)
)

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTerm, descCommit, descApplied, descLastIndex, descLeader, descContact,
		descViolations, descFacts, descLive, descEntries, descBundles, descStorage, descReadRounds, descReadFall, descHalted} {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	st, _ := c.node.Status()
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	gauge(descTerm, float64(st.Term))
	gauge(descCommit, float64(st.CommitIndex))
	gauge(descApplied, float64(st.AppliedIndex))
	gauge(descLastIndex, float64(st.LastIndex))
	leader, contact := 0.0, 0.0
	if st.State == "leader" {
		leader = 1
	} else if !st.LastContact.IsZero() {
		contact = time.Since(st.LastContact).Seconds()
	}
	gauge(descLeader, leader)
	gauge(descContact, contact)
	var stats fsm.Stats
	c.node.FSM().Read(func(s *fsm.State) { stats = s.Stats() })
	gauge(descViolations, float64(stats.ViolatingSessions))
	gauge(descFacts, float64(stats.Facts))
	gauge(descLive, float64(stats.LiveSessions))
	gauge(descEntries, float64(stats.FootprintEntries))
	gauge(descBundles, float64(stats.Bundles))
	failing := 0.0
	if c.node.StorageError() != nil {
		failing = 1
	}
	gauge(descStorage, failing)
	rs := c.node.ReadStats()
	ch <- prometheus.MustNewConstMetric(descReadRounds, prometheus.CounterValue, float64(rs.Rounds))
	ch <- prometheus.MustNewConstMetric(descReadFall, prometheus.CounterValue, float64(rs.Fallbacks))
	halted := 0.0
	if c.node.Halted() != nil {
		halted = 1
	}
	gauge(descHalted, halted)
}
