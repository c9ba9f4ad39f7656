package transport_test

import (
	"fmt"
	"path/filepath"
	"testing"
)

// A node of another cluster listening on a Raft address that cluster A
// lists as a member keeps its own data, and A keeps its leader and term:
// every connection between them is refused by the cluster hello, both ways.
func TestForeignNodeOnMemberAddressKeepsItsData(t *testing.T) {
	a := newCluster(t, 3, clusterOpts{Prefix: "a"})
	leader := a.waitLeader()
	victim := a.follower(leader)
	victim.stop(false)
	a.waitLeader()
	stA, _ := leader.node.Status()

	// Cluster B: one bootstrapped node with state of its own, on the
	// address A still lists for the stopped member.
	b := &tcluster{t: t, opts: clusterOpts{Prefix: "b"}, http: a.http}
	t.Cleanup(b.shutdown)
	foreign := &tnode{c: b, idx: 0, id: "b1", dir: filepath.Join(t.TempDir(), "data"), raftAddr: victim.raftAddr}
	b.nodes = append(b.nodes, foreign)
	foreign.start()
	b.waitLeader()
	for i := 0; i < 3; i++ {
		foreign.addNative(newAuthority(), newSession())
	}
	before := foreign.mustDigest()
	clusterB := foreign.node.ClusterID()
	if clusterB == "" || clusterB == leader.node.ClusterID() {
		t.Fatalf("cluster ids: A %q, B %q", leader.node.ClusterID(), clusterB)
	}

	// A's leader keeps trying to replicate to that address: writes make
	// sure it does, and the port refuses it each time.
	waitFor(t, waitTimeout, "the foreign node to refuse A's leader", func() (bool, string) {
		leader.addNative(newAuthority(), newSession())
		n := foreign.mux.RefusedForeign()
		return n >= 3 || foreign.mustDigest() != before, fmt.Sprintf("%d refused", n)
	})
	if leader.mux.RefusedForeign() == 0 {
		t.Error("A's leader did not see the refusal")
	}
	after := foreign.mustDigest()
	if after != before || foreign.node.ClusterID() != clusterB || !foreign.node.IsLeader() {
		t.Fatalf("the foreign node changed: %+v -> %+v, cluster %s, leader %v", before, after, foreign.node.ClusterID(), foreign.node.IsLeader())
	}
	stB, _ := foreign.node.Status()
	if stNow, _ := leader.node.Status(); stNow.Term != stA.Term || !leader.node.IsLeader() {
		t.Fatalf("cluster A: term %d -> %d, %s leads: %v (B is at term %d)", stA.Term, stNow.Term, leader.id, leader.node.IsLeader(), stB.Term)
	}
}
