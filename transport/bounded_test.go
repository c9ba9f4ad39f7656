package transport_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/reconf/reconf/transport"
)

// TestBoundedStateOverHTTP: the first write switches a new cluster to the
// default policy; a consumer holds retention back; below the oldest kept
// fact, list and watch answer 410 facts_trimmed with first_seq; replicas
// agree on what they trimmed.
func TestBoundedStateOverHTTP(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	l := c.waitLeader()
	a, b, s := newAuthority(), newAuthority(), newSession()
	l.addNative(a, s)
	ret := decodeAs[transport.RetentionJSON](t, l.must(http.StatusOK, http.MethodGet, "/v1/facts/retention", nil))
	if !ret.Bounded || *ret.MaxFacts != 1_000_000 || *ret.HardMaxFacts != 10_000_000 || *ret.MaxAge != "0" || *ret.RequestIDTTL != "10m0s" {
		t.Fatalf("default policy after the first write: %+v", ret)
	}
	// A policy change needs fields, and names the bad one.
	if e := errorOf(t, l.must(http.StatusBadRequest, http.MethodPut, "/v1/facts/retention", map[string]any{"max_age": "soon"})); !strings.Contains(e.Message, "max_age") {
		t.Fatalf("bad max_age: %+v", e)
	}
	l.must(http.StatusOK, http.MethodPut, "/v1/facts/retention", map[string]any{"max_facts": 10, "hard_max_facts": 2000})
	// The consumer registers at 0 and holds every fact.
	l.must(http.StatusOK, http.MethodPost, "/v1/facts/consumers/audit/ack", map[string]any{"through": 0})
	delegateN := func(n int) {
		for i := 0; i < n; i++ {
			from, to := a, b
			if i%2 == 1 {
				from, to = b, a
			}
			l.delegate(delegation(s, from, to, ""))
		}
	}
	delegateN(1100)
	ret = decodeAs[transport.RetentionJSON](t, l.must(http.StatusOK, http.MethodGet, "/v1/facts/retention", nil))
	if ret.FirstSeq != 1 || ret.LastSeq != 1100 {
		t.Fatalf("trimmed what the consumer had not acknowledged: %+v", ret)
	}
	cons := decodeAs[transport.ConsumersResponse](t, l.must(http.StatusOK, http.MethodGet, "/v1/facts/consumers", nil))
	if len(cons.Consumers) != 1 || cons.Consumers[0].Lag != 1100 {
		t.Fatalf("consumers %+v", cons)
	}
	l.must(http.StatusOK, http.MethodPost, "/v1/facts/consumers/audit/ack", map[string]any{"through": 1050})
	ret = decodeAs[transport.RetentionJSON](t, l.must(http.StatusOK, http.MethodGet, "/v1/facts/retention", nil))
	if ret.FirstSeq != 1025 || ret.Retained != 76 {
		t.Fatalf("after the ack: %+v", ret)
	}
	// Below first_seq: 410 facts_trimmed with first_seq, on list and watch.
	e := errorOf(t, l.must(http.StatusGone, http.MethodGet, "/v1/facts?after=0", nil))
	if e.Code != "facts_trimmed" || e.FirstSeq != 1025 {
		t.Fatalf("list below first_seq: %+v", e)
	}
	l.must(http.StatusOK, http.MethodGet, "/v1/facts?after=1024", nil)
	e = errorOf(t, l.must(http.StatusGone, http.MethodGet, "/v1/facts/watch?after=3", nil))
	if e.Code != "facts_trimmed" || e.FirstSeq != 1025 {
		t.Fatalf("watch below first_seq: %+v", e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := c.client().WatchFacts(ctx, 0, func(transport.FactJSON) error { return nil })
	var ae *transport.APIError
	if !asAPIError(err, &ae) || ae.Code != "facts_trimmed" || ae.FirstSeq != 1025 {
		t.Fatalf("client watch below first_seq: %v", err)
	}
	// Dropping the consumer (admin) releases the rest at the next write.
	l.must(http.StatusOK, http.MethodDelete, "/v1/facts/consumers/audit", nil)
	l.must(http.StatusNotFound, http.MethodDelete, "/v1/facts/consumers/audit", nil)
	delegateN(1)
	ret = decodeAs[transport.RetentionJSON](t, l.must(http.StatusOK, http.MethodGet, "/v1/facts/retention", nil))
	if ret.FirstSeq != 1025 || ret.LastSeq != 1101 {
		t.Fatalf("after the drop: %+v", ret)
	}
	c.waitConverged(0)
	// The metrics name it.
	m := string(l.must(http.StatusOK, http.MethodGet, "/metrics", nil).Body)
	for _, want := range []string{"reconf_facts_retained 77", "reconf_facts_first_seq 1025", "reconf_facts_trimmed_total 1024", "reconf_request_id_window_seconds 600"} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	_ = fmt.Sprint
}

func asAPIError(err error, target **transport.APIError) bool { return errors.As(err, target) }
