package transport

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"
)

func members(t testing.TB, n *secNode) string {
	t.Helper()
	servers, err := n.node.Servers()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range servers {
		out = append(out, s.ID+"@"+s.RaftAddr)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// A node whose data dir belongs to another cluster is refused.
func TestJoinRefusesADataDirOfAnotherCluster(t *testing.T) {
	a := startSecNode(t, "a1", secOpts{bootstrap: true})
	b := startSecNode(t, "b1", secOpts{bootstrap: true})
	a.waitLeading()
	b.waitLeading()
	if a.node.ClusterID() == "" || a.node.ClusterID() == b.node.ClusterID() {
		t.Fatalf("cluster ids %q and %q", a.node.ClusterID(), b.node.ClusterID())
	}
	before := members(t, a)
	_, err := b.joinVia(a.httpAddr, true)
	if !IsCode(err, CodeClusterMismatch) || !IsFatalJoinError(err) {
		t.Fatalf("join of a node of another cluster: %v", err)
	}
	mustContain(t, "error", err.Error(), b.node.ClusterID(), a.node.ClusterID(), "empty --data-dir")
	if got := members(t, a); got != before {
		t.Fatalf("membership changed: %s -> %s", before, got)
	}
	// A fresh node gets the cluster id and keeps it.
	c := startSecNode(t, "c1", secOpts{})
	resp, err := c.joinVia(a.httpAddr, true)
	if err != nil || resp.ClusterID != a.node.ClusterID() {
		t.Fatalf("fresh join: %+v %v", resp, err)
	}
	if err := c.node.AdoptClusterID(resp.ClusterID); err != nil || c.node.ClusterID() != a.node.ClusterID() {
		t.Fatalf("adopt: %v (%q)", err, c.node.ClusterID())
	}
	if err := c.node.AdoptClusterID(b.node.ClusterID()); err == nil {
		t.Fatal("a node adopted a second cluster id")
	}
}

// Two nodes with one id: a join never silently replaces a live member.
func TestJoinSameIDRefusedWhileTheMemberIsAlive(t *testing.T) {
	n1 := startSecNode(t, "n1", secOpts{bootstrap: true})
	n1.waitLeading()
	n2 := startSecNode(t, "n2", secOpts{})
	n3 := startSecNode(t, "n3", secOpts{})
	for _, n := range []*secNode{n2, n3} {
		if _, err := n.joinVia(n1.httpAddr, true); err != nil {
			t.Fatal(err)
		}
	}
	before := members(t, n1)

	impostor := startSecNode(t, "n2", secOpts{})
	_, err := impostor.joinVia(n1.httpAddr, true)
	if !IsCode(err, CodeMemberConflict) || !IsFatalJoinError(err) {
		t.Fatalf("second node with id n2: %v", err)
	}
	mustContain(t, "error", err.Error(), "node id n2 is already a member at "+n2.raftAddr, "alive")
	// Another id on a live member's address.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	yes := true
	err = NewClient([]string{n1.httpAddr}).Join(ctx, JoinRequest{ID: "ghost", RaftAddr: n3.raftAddr, Voter: &yes})
	if !IsCode(err, CodeMemberConflict) {
		t.Fatalf("another id at n3's address: %v", err)
	}
	if status, e, _ := rawDo(t, nil, "", "POST", n1.url("/v1/cluster/join"), map[string]any{"id": "ghost", "raft_addr": n3.raftAddr}); status != http.StatusConflict {
		t.Fatalf("status %d %v", status, e)
	}
	if got := members(t, n1); got != before {
		t.Fatalf("membership changed: %s -> %s", before, got)
	}

	// Once the old n2 is gone, the new one takes its place.
	n2.stop()
	resp, err := impostor.joinVia(n1.httpAddr, true)
	if err != nil {
		t.Fatalf("join after the old n2 stopped: %v", err)
	}
	if want := fmt.Sprintf("n2@%s", impostor.raftAddr); !strings.Contains(members(t, n1), want) {
		t.Fatalf("members %s, want %s", members(t, n1), want)
	}
	mustContain(t, "leader's log", n1.logs.String(), "join replaces a member that does not answer")
	_ = impostor.node.AdoptClusterID(resp.ClusterID)
	secWait(t, 20*time.Second, "the new n2 to catch up", func() (bool, string) {
		return impostor.node.FSM().AppliedIndex() >= n1.node.FSM().AppliedIndex()-1, ""
	})

	// replace takes over a live member's id on request.
	n3b := startSecNode(t, "n3", secOpts{})
	if _, err := n3b.nodeClient(n1.httpAddr).JoinCluster(ctx, JoinRequest{ID: "n3", RaftAddr: n3b.raftAddr, Voter: &yes, Replace: true}); err != nil {
		t.Fatalf("join with replace: %v", err)
	}
	n3.stop()
	if want := fmt.Sprintf("n3@%s", n3b.raftAddr); !strings.Contains(members(t, n1), want) {
		t.Fatalf("members %s, want %s", members(t, n1), want)
	}
	mustContain(t, "leader's log", n1.logs.String(), "join replaces a member on request")
}
