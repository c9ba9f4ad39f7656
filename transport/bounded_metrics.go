package transport

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/reconf/reconf/cluster"
	"github.com/reconf/reconf/fsm"
)

// boundedCollector reports bounded state (fsm/retention.go) at scrape
// time, read from the replica: every node reports its own, and replicas at
// the same index agree. The counters are replicated state, so they survive
// restarts and match across nodes.
type boundedCollector struct{ node *cluster.Node }

var (
	descRetained   = prometheus.NewDesc("reconf_facts_retained", "Audit facts the journal keeps (retention).", nil, nil)
	descFirstSeq   = prometheus.NewDesc("reconf_facts_first_seq", "Sequence number of the oldest retained fact.", nil, nil)
	descLastSeq    = prometheus.NewDesc("reconf_facts_last_seq", "Sequence number of the newest fact.", nil, nil)
	descTrimmed    = prometheus.NewDesc("reconf_facts_trimmed_total", "Facts retention has dropped.", nil, nil)
	descLost       = prometheus.NewDesc("reconf_facts_consumer_lost_total", "Facts dropped at hard_max_facts before some consumer had acknowledged them.", nil, nil)
	descLag        = prometheus.NewDesc("reconf_facts_consumer_lag", "Facts after a consumer's cursor.", []string{"consumer"}, nil)
	descBounded    = prometheus.NewDesc("reconf_bounded_state", "1 once a retention policy is in force (0: a legacy state, nothing is trimmed).", nil, nil)
	descReqEntries = prometheus.NewDesc("reconf_request_ids", "Request ids remembered for exactly-once retries.", nil, nil)
	descReqBytes   = prometheus.NewDesc("reconf_request_ids_bytes", "Bytes the request-id table counts against its budget.", nil, nil)
	descReqWindow  = prometheus.NewDesc("reconf_request_id_window_seconds", "How far back retries are deduplicated now: request_id_ttl, or less after early evictions.", nil, nil)
	descReqEvicted = prometheus.NewDesc("reconf_request_ids_evicted_early_total", "Request ids forgotten before their ttl to stay within the budget.", nil, nil)
	boundedDescs   = []*prometheus.Desc{descRetained, descFirstSeq, descLastSeq, descTrimmed, descLost, descLag, descBounded, descReqEntries, descReqBytes, descReqWindow, descReqEvicted}
)

func (c *boundedCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range boundedDescs {
		ch <- d
	}
}

func (c *boundedCollector) Collect(ch chan<- prometheus.Metric) {
	var (
		first, last, lost uint64
		on                bool
		rq                fsm.RequestStats
		consumers         []fsm.Consumer
	)
	c.node.FSM().Read(func(s *fsm.State) {
		first, last, lost = s.FirstFactSeq(), s.LastFactSeq(), s.FactsLost()
		_, on = s.Bounded()
		rq = s.Requests()
		consumers = s.Consumers()
	})
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(descRetained, float64(last+1-first))
	gauge(descFirstSeq, float64(first))
	gauge(descLastSeq, float64(last))
	counter(descTrimmed, float64(first-1))
	counter(descLost, float64(lost))
	for _, cs := range consumers {
		gauge(descLag, float64(last-cs.Cursor), cs.Name)
	}
	b := 0.0
	if on {
		b = 1
	}
	gauge(descBounded, b)
	gauge(descReqEntries, float64(rq.Entries))
	gauge(descReqBytes, float64(rq.Bytes))
	gauge(descReqWindow, float64(rq.WindowMillis)/1000)
	counter(descReqEvicted, float64(rq.EvictedEarly))
}
