package transport_test

import (
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"
)

// TestLatency measures (never asserts) single-client latency on a local
// three-node cluster in this process: sequential delegations that
// ping-pong one session between two authorities, sent to the leader and
// through a follower, and linearizable reads on the leader and through a
// follower. It runs only with RECONF_LATENCY=1:
//
//	RECONF_LATENCY=1 go test ./transport/ -run TestLatency -v
//
// RECONF_LATENCY_N sets the operations per series (default 2000).
func TestLatency(t *testing.T) {
	if os.Getenv("RECONF_LATENCY") == "" {
		t.Skip("set RECONF_LATENCY=1 to measure latency")
	}
	n := 2000
	if v, err := strconv.Atoi(os.Getenv("RECONF_LATENCY_N")); err == nil && v > 0 {
		n = v
	}
	c := newCluster(t, 3, clusterOpts{})
	l := c.waitLeader()
	f := c.follower(l)
	a, b, s := newAuthority(), newAuthority(), newSession()
	l.addNative(a, s)
	from, to := a, b

	series := func(name string, op func() error) {
		t.Helper()
		for i := 0; i < 50; i++ { // warm up connections and caches
			if err := op(); err != nil {
				t.Fatal(err)
			}
		}
		d := make([]time.Duration, n)
		start := time.Now()
		for i := range d {
			t0 := time.Now()
			if err := op(); err != nil {
				t.Fatalf("%s op %d: %v", name, i, err)
			}
			d[i] = time.Since(t0)
		}
		total := time.Since(start)
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		pct := func(q float64) time.Duration {
			return d[min(len(d)-1, int(q*float64(len(d))))].Round(10 * time.Microsecond)
		}
		t.Logf("%-34s n=%d p50=%v p90=%v p99=%v max=%v (%.0f ops/s)", name, n, pct(0.50), pct(0.90), pct(0.99), d[len(d)-1].Round(10*time.Microsecond), float64(n)/total.Seconds())
	}
	delegateVia := func(target *tnode) func() error {
		return func() error {
			_, err := target.tryDelegate(delegation(s, from, to, ""))
			from, to = to, from
			return err
		}
	}
	readVia := func(target *tnode) func() error {
		return func() error {
			r, err := target.do(http.MethodGet, "/v1/footprints/"+a, nil)
			if err == nil && r.Status != http.StatusOK {
				err = fmt.Errorf("%s", r)
			}
			return err
		}
	}
	if out, err := os.ReadFile("/proc/loadavg"); err == nil {
		t.Logf("load average before: %s", out)
	}
	series("delegate, to the leader", delegateVia(l))
	series("delegate, through a follower", delegateVia(f))
	series("linearizable read, on the leader", readVia(l))
	series("linearizable read, through a follower", readVia(f))
	series("stale read, on a follower", func() error {
		r, err := f.do(http.MethodGet, "/v1/footprints/"+a+"?consistency=stale", nil)
		if err == nil && r.Status != http.StatusOK {
			err = fmt.Errorf("%s", r)
		}
		return err
	})
	if out, err := os.ReadFile("/proc/loadavg"); err == nil {
		t.Logf("load average after: %s", out)
	}
}
