package transport_test

import (
	"bytes"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/reconf/reconf/fsm"
	"github.com/reconf/reconf/transport"
)

// diverge replaces n's state with its own plus one footprint that no log
// entry wrote, at the same applied index: the silent divergence a
// consistency check exists to find.
func diverge(t *testing.T, n *tnode) {
	t.Helper()
	st := n.node.FSM().View()
	var a, s fsm.UUID
	a[0], s[0] = 0xd1, 0xd2
	st.Apply(st.AppliedIndex(), fsm.Command{Op: &fsm.ExtendFootprint{Authority: fsm.AuthorityID(a), Session: fsm.SessionID(s), Class: fsm.Native}})
	restoreState(t, n, st)
}

func restoreState(t *testing.T, n *tnode, st *fsm.State) {
	t.Helper()
	var buf bytes.Buffer
	if err := st.Snapshot(&buf, 1); err != nil {
		t.Fatal(err)
	}
	if err := n.node.FSM().Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
}

func metricsOf(t *testing.T, n *tnode) string {
	t.Helper()
	return string(n.must(http.StatusOK, http.MethodGet, "/metrics", nil).Body)
}

// A consistency check finds a replica whose state differs at the same
// index, names it everywhere (the check's answer, every node's status and
// metrics, the odd replica's /readyz and reads), and a later check that
// finds every replica equal clears the alarm.
func TestConsistencyCheckFindsTheOddReplica(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	leader := c.waitLeader()
	odd := c.follower(leader)
	other := c.follower(leader, odd)
	for i := 0; i < 3; i++ {
		leader.addNative(newAuthority(), newSession())
	}

	// Asked through a follower: the leader runs it.
	v := decodeAs[transport.CheckJSON](t, odd.must(http.StatusOK, http.MethodPost, "/v1/cluster/check", nil))
	if v.Status != transport.CheckConsistent || len(v.Members) != 3 || v.Index == 0 {
		t.Fatalf("check of an intact cluster: %+v", v)
	}
	for _, m := range v.Members {
		if m.Status != transport.MemberOK || m.Digest != v.Members[0].Digest {
			t.Fatalf("member %+v of an intact cluster", m)
		}
	}
	odd.must(http.StatusOK, http.MethodGet, "/readyz", nil)

	waitApplied(t, v.Index, odd)
	diverge(t, odd)
	v = decodeAs[transport.CheckJSON](t, leader.must(http.StatusOK, http.MethodPost, "/v1/cluster/check", nil))
	if v.Status != transport.CheckMismatch || !slices.Equal(v.Odd, []string{odd.id}) || !strings.Contains(v.Message, odd.id) {
		t.Fatalf("check with %s diverged: %+v", odd.id, v)
	}

	r := odd.must(http.StatusServiceUnavailable, http.MethodGet, "/readyz", nil)
	if e := errorOf(t, r); e.Code != transport.CodeReplicaInconsistent || !strings.Contains(e.Message, odd.id) {
		t.Fatalf("odd replica's /readyz: %+v", e)
	}
	leader.must(http.StatusOK, http.MethodGet, "/readyz", nil)
	other.must(http.StatusOK, http.MethodGet, "/readyz", nil)
	r = odd.must(http.StatusServiceUnavailable, http.MethodGet, "/v1/bundles?consistency=stale", nil)
	if e := errorOf(t, r); e.Code != transport.CodeReplicaInconsistent {
		t.Fatalf("stale read on the odd replica: %+v", e)
	}
	for _, n := range []*tnode{leader, odd, other} {
		m := metricsOf(t, n)
		if !strings.Contains(m, "reconf_consistency_alarm 1") || !strings.Contains(m, `reconf_consistency_odd_replica{replica="`+odd.id+`"} 1`) {
			t.Fatalf("%s's metrics show no alarm naming %s", n.id, odd.id)
		}
		st := decodeAs[transport.StatusJSON](t, n.must(http.StatusOK, http.MethodGet, "/v1/cluster/status", nil))
		if st.Consistency == nil || st.Consistency.Status != transport.CheckMismatch || !slices.Equal(st.Consistency.Odd, []string{odd.id}) {
			t.Fatalf("%s's status: %+v", n.id, st.Consistency)
		}
	}

	// Replaced (here: given the leader's state back), the next check clears
	// the alarm.
	restoreState(t, odd, leader.node.FSM().View())
	v = decodeAs[transport.CheckJSON](t, leader.must(http.StatusOK, http.MethodPost, "/v1/cluster/check", nil))
	if v.Status != transport.CheckConsistent {
		t.Fatalf("check after the repair: %+v", v)
	}
	odd.must(http.StatusOK, http.MethodGet, "/readyz", nil)
	if m := metricsOf(t, odd); !strings.Contains(m, "reconf_consistency_alarm 0") || strings.Contains(m, "reconf_consistency_odd_replica{") {
		t.Fatal("the alarm stayed after a consistent check")
	}
}

// The verdict route takes no verdict from a client: only peers over the
// Raft port may take a replica out of service.
func TestConsistencyVerdictOnlyFromPeers(t *testing.T) {
	c := newCluster(t, 1, clusterOpts{})
	n := c.waitLeader()
	body := transport.CheckJSON{Index: 5, Status: transport.CheckMismatch, Odd: []string{n.id}, Members: []transport.CheckMemberJSON{
		{ID: n.id, Status: transport.MemberOK, Digest: "a"}, {ID: "x", Status: transport.MemberOK, Digest: "b"}, {ID: "y", Status: transport.MemberOK, Digest: "b"}}}
	n.must(http.StatusNotFound, http.MethodPost, "/v1/internal/consistency", body)
	n.must(http.StatusOK, http.MethodGet, "/readyz", nil)
	r := n.must(http.StatusBadRequest, http.MethodGet, "/v1/internal/check/zero", nil)
	if e := errorOf(t, r); !strings.Contains(e.Message, "index") {
		t.Fatalf("bad index: %+v", e)
	}
}
