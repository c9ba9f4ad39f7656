package transport_test

// Multi-node integration tests: real Raft, real bbolt files, real TCP on
// 127.0.0.1 (see harness_test.go).

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reconf/reconf/transport"
)

// A write sent to a follower is forwarded, applied once, and answered with
// the FSM's result, the same answer the leader gives for it; the follower's
// own stale reads catch up with it. Reads: linearizable on a follower is
// forwarded to the leader, stale is served locally; health, readiness and
// metrics endpoints answer on every node.
func TestFollowerWritesAndReads(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	l := c.waitLeader()
	f := c.follower(l)
	a, b, s := newAuthority(), newAuthority(), newSession()

	// Footprint add through the follower.
	r := f.must(http.StatusOK, http.MethodPost, "/v1/footprints/"+a+"/sessions", transport.FootprintAddRequest{SessionID: s})
	if got := r.Header.Get(transport.HeaderLeader); got != l.httpAddr {
		t.Errorf("forwarded write: %s = %q, want the leader %q", transport.HeaderLeader, got, l.httpAddr)
	}
	add := decodeAs[transport.IndexResponse](t, r)
	if add.Index == 0 || r.index() != add.Index {
		t.Errorf("footprint add: index %d, header %d", add.Index, r.index())
	}

	// Delegation through the follower, with a request id.
	req := delegation(s, a, b, "follower-write-"+newUUID())
	r = f.must(http.StatusOK, http.MethodPost, "/v1/delegations", req)
	viaFollower := decodeAs[transport.DelegationResponse](t, r)
	if got := r.Header.Get(transport.HeaderLeader); got != l.httpAddr {
		t.Errorf("forwarded delegation: %s = %q, want %q", transport.HeaderLeader, got, l.httpAddr)
	}
	if viaFollower.Index <= add.Index || r.index() != viaFollower.Index || viaFollower.Deduped {
		t.Errorf("delegation answer: index %d (header %d) after %d, deduped %v", viaFollower.Index, r.index(), add.Index, viaFollower.Deduped)
	}
	rc := viaFollower.Receipt
	if rc.SessionID != s || rc.FromAuthority != a || rc.ToAuthority != b || rc.BundleID != testBundle ||
		!contains(rc.FromBefore.NativeSessions, s) || !contains(rc.FromAfter.DelegatedOutSessions, s) ||
		contains(rc.FromAfter.NativeSessions, s) || !contains(rc.ToAfter.DelegatedInSessions, s) ||
		rc.DelegatedAt.TsMs == 0 || viaFollower.Witness.Coherence != "preserved" || viaFollower.FactSeq == 0 {
		t.Errorf("delegation receipt through the follower is not the FSM's result: %+v", viaFollower)
	}

	// The leader's answer to the same request (its request-id table) is the
	// same result.
	r = l.must(http.StatusOK, http.MethodPost, "/v1/delegations", req)
	viaLeader := decodeAs[transport.DelegationResponse](t, r)
	if !viaLeader.Deduped {
		t.Errorf("the same request id sent to the leader was applied again: %+v", viaLeader)
	}
	viaLeader.Deduped = false
	if !reflect.DeepEqual(viaFollower, viaLeader) {
		t.Errorf("follower answer differs from the leader's:\nfollower %+v\nleader   %+v", viaFollower, viaLeader)
	}
	if n := lastFactSeq(t, l); n != viaFollower.FactSeq {
		t.Errorf("fact journal has %d facts, want %d (one delegation)", n, viaFollower.FactSeq)
	}

	// The follower's stale read catches up and then equals the leader's
	// linearizable read.
	var stale transport.AuthorityFootprint
	waitFor(t, waitTimeout, "the follower's stale read to reach the delegation", func() (bool, string) {
		r, err := f.do(http.MethodGet, "/v1/footprints/"+b+"?consistency=stale", nil)
		if err != nil || r.Status != http.StatusOK || r.index() < viaFollower.Index {
			return false, fmt.Sprintf("%v %v", r, err)
		}
		stale = decodeAs[transport.AuthorityFootprint](t, r)
		return true, ""
	})
	lin, _ := l.footprint(b, "")
	if !reflect.DeepEqual(stale, lin) || !contains(lin.DelegatedInSessions, s) {
		t.Errorf("stale read on the follower %+v, leader reads %+v", stale, lin)
	}
	staleFacts := f.allFacts("&consistency=stale")
	if len(staleFacts) != 1 || staleFacts[0].SessionID != s || staleFacts[0].Seq != viaFollower.FactSeq || staleFacts[0].Index != viaFollower.Index {
		t.Errorf("follower's facts %+v", staleFacts)
	}

	t.Run("linearizable read on a follower is forwarded", func(t *testing.T) {
		// Read-your-writes across nodes: each write goes to the leader, the
		// read right after it to a follower, which must not answer from its
		// possibly lagging replica.
		from, to := a, b
		for i := 0; i < 20; i++ {
			from, to = to, from
			d := l.delegate(delegation(s, from, to, ""))
			r := f.must(http.StatusOK, http.MethodGet, "/v1/footprints/"+to, nil)
			if got := r.Header.Get(transport.HeaderConsistency); got != "linearizable" {
				t.Fatalf("%s = %q", transport.HeaderConsistency, got)
			}
			if got := r.Header.Get(transport.HeaderLeader); got != l.httpAddr {
				t.Fatalf("linearizable read on a follower: %s = %q, want the leader %q", transport.HeaderLeader, got, l.httpAddr)
			}
			fp := decodeAs[transport.AuthorityFootprint](t, r)
			if r.index() < d.Index || !contains(fp.DelegatedInSessions, s) || !reflect.DeepEqual(fp.FootprintJSON, d.Receipt.ToAfter) {
				t.Fatalf("read %d after write at index %d: index %d, footprint %+v, want %+v", i, d.Index, r.index(), fp, d.Receipt.ToAfter)
			}
		}
	})

	t.Run("stale read is served locally", func(t *testing.T) {
		r := f.must(http.StatusOK, http.MethodGet, "/v1/footprints/"+b+"?consistency=stale", nil)
		if got := r.Header.Get(transport.HeaderConsistency); got != "stale" {
			t.Errorf("%s = %q", transport.HeaderConsistency, got)
		}
		// Only a follower answering from its own replica says when it last
		// heard from the leader; the leader never sets it.
		if r.Header.Get(transport.HeaderLastContact) == "" {
			t.Errorf("stale read on a follower has no %s header: not served locally? headers %v", transport.HeaderLastContact, r.Header)
		}
		if got := r.Header.Get(transport.HeaderLeader); got != "" {
			t.Errorf("stale read on a follower came through the leader (%s = %q)", transport.HeaderLeader, got)
		}
		r = f.must(http.StatusBadRequest, http.MethodGet, "/v1/footprints/"+b+"?consistency=eventual", nil)
		if e := errorOf(t, r); e.Code != "invalid_argument" || !strings.Contains(e.Message, "consistency") {
			t.Errorf("bad consistency: %+v", e)
		}
	})

	t.Run("health, readiness, metrics", func(t *testing.T) {
		for _, n := range c.running() {
			n.must(http.StatusOK, http.MethodGet, "/healthz", nil)
			waitFor(t, waitTimeout, n.id+" ready", func() (bool, string) {
				r, err := n.do(http.MethodGet, "/readyz", nil)
				return err == nil && r.Status == http.StatusOK, fmt.Sprintf("%v %v", r, err)
			})
			r := n.must(http.StatusOK, http.MethodGet, "/metrics", nil)
			if !bytes.Contains(r.Body, []byte("\nreconf_raft_term ")) {
				t.Errorf("%s /metrics has no reconf_raft_term", n.id)
			}
		}
		r := l.must(http.StatusOK, http.MethodGet, "/metrics", nil)
		for _, want := range []string{`reconf_commands_total{result="ok",type="delegate"}`, `reconf_commands_total{result="ok",type="extend_footprint"}`, "reconf_raft_term", "reconf_raft_leader 1"} {
			if !bytes.Contains(r.Body, []byte(want)) {
				t.Errorf("leader /metrics lacks %s", want)
			}
		}
	})
}

// ack is one acknowledged write.
type ack struct {
	kind    string // "native" or "delegate"
	session string
	resp    transport.DelegationResponse
}

// Killing the leader elects a new one, and every write acknowledged before
// or during the failover is there: on the new leader (linearizable reads)
// and on the old leader once it restarts from its data dir.
func TestLeaderKillKeepsAcknowledgedWrites(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	old := c.waitLeader()
	cl := c.client()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, b := newAuthority(), newAuthority()

	var mu sync.Mutex
	var acks []ack
	record := func(k ack) {
		mu.Lock()
		acks = append(acks, k)
		mu.Unlock()
	}
	// 50 footprint adds and 50 delegations, 8 clients at a time.
	err := parallel(100, 8, func(i int) error {
		s := newSession()
		if _, err := cl.AddFootprint(ctx, a, transport.FootprintAddRequest{SessionID: s}); err != nil {
			return err
		}
		if i%2 == 0 {
			record(ack{kind: "native", session: s})
			return nil
		}
		d, err := cl.Delegate(ctx, delegation(s, a, b, ""))
		if err != nil {
			return err
		}
		record(ack{kind: "delegate", session: s, resp: *d})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A request whose id the client retries after the failover.
	rs := newSession()
	old.addNative(a, rs)
	retried := delegation(rs, a, b, "kill-retry-"+newUUID())
	first := old.delegate(retried)
	record(ack{kind: "delegate", session: rs, resp: first})

	// Writers that keep going through the crash; the client retries with
	// the same request id, so what it acknowledges was applied exactly once.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var during sync.Map
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := newSession()
				if _, err := cl.AddFootprint(ctx, a, transport.FootprintAddRequest{SessionID: s}); err != nil {
					t.Errorf("write during failover not acknowledged within the client's retry budget: %v", err)
					return
				}
				record(ack{kind: "native", session: s})
				during.Store(s, true)
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	old.stop(true)
	l := c.waitNewLeader(old)
	t.Logf("killed %s; %s leads", old.id, l.id)
	time.Sleep(300 * time.Millisecond) // some writes under the new leader
	close(stop)
	wg.Wait()
	n := 0
	during.Range(func(any, any) bool { n++; return true })
	t.Logf("%d writes acknowledged before the kill, %d during and after it", 101, n)

	check := func(n *tnode, query string) {
		t.Helper()
		fa, _ := n.footprint(a, query)
		fb, _ := n.footprint(b, query)
		facts := n.factsBySeq(query)
		lost := 0
		for _, k := range acks {
			ok := true
			switch k.kind {
			case "native":
				ok = contains(fa.NativeSessions, k.session)
			case "delegate":
				f := facts[k.resp.FactSeq]
				ok = contains(fa.DelegatedOutSessions, k.session) && contains(fb.DelegatedInSessions, k.session) &&
					f.SessionID == k.session && f.Index == k.resp.Index && f.FromAuthority == a && f.ToAuthority == b
			}
			if !ok {
				lost++
				if lost <= 5 {
					t.Errorf("%s: acknowledged %s of %s is missing", n.id, k.kind, k.session)
				}
			}
		}
		if lost > 0 {
			t.Errorf("%s: %d of %d acknowledged writes missing", n.id, lost, len(acks))
		}
		if len(facts) != 51 {
			t.Errorf("%s: %d facts, want 51 (one per acknowledged delegation, none twice)", n.id, len(facts))
		}
	}
	check(l, "")

	// The retried request id answers with the first result.
	again := decodeAs[transport.DelegationResponse](t, l.must(http.StatusOK, http.MethodPost, "/v1/delegations", retried))
	if !again.Deduped {
		t.Errorf("retry of %s after the failover was applied again", retried.RequestID)
	}
	again.Deduped = false
	if !reflect.DeepEqual(again, first) {
		t.Errorf("retry answer %+v differs from the first %+v", again, first)
	}

	old.restart()
	d := c.waitConverged(l.mustDigest().Index)
	t.Logf("all replicas at index %d, digest %.16s", d.Index, d.Digest)
	check(old, "?consistency=stale")
}

// A follower that was down while the cluster moved on restarts from its
// data dir (a snapshot of its own plus its log) and converges to the
// leader's state: same digest at the same index, same stale reads.
func TestRestartedFollowerCatchesUp(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	l := c.waitLeader()
	f := c.follower(l)
	a, b := newAuthority(), newAuthority()
	write := func(n int) {
		t.Helper()
		if err := parallel(n, 4, func(int) error {
			s := newSession()
			if err := l.tryNative(a, s); err != nil {
				return err
			}
			_, err := l.tryDelegate(delegation(s, a, b, newUUID()))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	write(20)
	d := c.waitConverged(0)
	// Compact the follower's log so that its restart reads a snapshot too.
	f.must(http.StatusOK, http.MethodPost, "/v1/cluster/snapshot", nil)
	write(5)
	before := c.waitConverged(d.Index + 1)
	f.stop(false)

	write(60)
	leaderNow := l.mustDigest()
	if got := len(snapshotIndexes(t, f.dir)); got == 0 {
		t.Fatalf("no snapshot in the stopped follower's data dir")
	}
	f.restart()
	after := c.waitConverged(leaderNow.Index)
	if after.Digest == before.Digest {
		t.Fatalf("digest did not change across 60 writes")
	}
	t.Logf("restarted %s converged at index %d (was %d when stopped)", f.id, after.Index, before.Index)

	for _, auth := range []string{a, b} {
		stale, _ := f.footprint(auth, "?consistency=stale")
		lin, _ := l.footprint(auth, "")
		if !reflect.DeepEqual(stale, lin) {
			t.Errorf("%s: restarted follower reads %+v, leader %+v", auth, stale, lin)
		}
	}
	if got, want := f.allFacts("&consistency=stale"), l.allFacts(""); !reflect.DeepEqual(got, want) || len(want) != 85 {
		t.Errorf("restarted follower has %d facts, leader %d (want 85)", len(got), len(want))
	}
}

// A node that joins after the log was compacted is brought up by a snapshot
// install and reaches the same digest at the same index as everyone else.
func TestSnapshotInstallOnJoin(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{SnapshotThreshold: 64, TrailingLogs: 16})
	l := c.waitLeader()
	a, b := newAuthority(), newAuthority()
	var firstRetry transport.DelegationRequest
	var firstAnswer transport.DelegationResponse
	for i := 0; i < 100; i++ { // sequential: at least 200 log entries
		s := newSession()
		l.addNative(a, s)
		req := delegation(s, a, b, fmt.Sprintf("install-%d-%s", i, newUUID()))
		d := l.delegate(req)
		if i == 0 {
			firstRetry, firstAnswer = req, d
		}
	}
	r := l.must(http.StatusOK, http.MethodPost, "/v1/cluster/snapshot", nil)
	snap := decodeAs[struct {
		Node  string `json:"node"`
		Index uint64 `json:"index"`
	}](t, r)
	if snap.Node != l.id || snap.Index < 200 {
		t.Fatalf("snapshot answer %+v", snap)
	}
	for i := 0; i < 5; i++ { // entries after the snapshot
		l.addNative(a, newSession())
	}

	n4 := c.addNode()
	c.waitMembers(4)
	marker := l.addNative(a, newSession()).Index
	waitApplied(t, marker, c.running()...)
	d := c.waitConverged(marker)
	t.Logf("4 replicas at index %d, digest %.16s", d.Index, d.Digest)

	installed := snapshotIndexes(t, n4.dir)
	if len(installed) == 0 || installed[len(installed)-1] < snap.Index {
		t.Errorf("%s holds snapshots %v: it was not brought up by installing the leader's snapshot at %d", n4.id, installed, snap.Index)
	}
	for _, auth := range []string{a, b} {
		stale, _ := n4.footprint(auth, "?consistency=stale")
		lin, _ := l.footprint(auth, "")
		if !reflect.DeepEqual(stale, lin) {
			t.Errorf("%s: new node reads %+v, leader %+v", auth, stale, lin)
		}
	}
	// The request-id table came with the snapshot: a retry through the new
	// node still answers with the first result, and nothing changes.
	again := decodeAs[transport.DelegationResponse](t, n4.must(http.StatusOK, http.MethodPost, "/v1/delegations", firstRetry))
	again.Deduped = false
	if !reflect.DeepEqual(again, firstAnswer) {
		t.Errorf("retry through the new node: %+v, first answer %+v", again, firstAnswer)
	}
	if got := lastFactSeq(t, n4); got != 100 {
		t.Errorf("%d facts after the retry, want 100", got)
	}
}

// A backup taken on one cluster and restored on a fresh one gives the same
// state: the same digest (which leaves out the applied index, since log
// positions differ between clusters), the same reads, and the same
// request-id answers.
func TestBackupRestoreAcrossClusters(t *testing.T) {
	src := newCluster(t, 3, clusterOpts{Prefix: "a"})
	l := src.waitLeader()
	a, b := newAuthority(), newAuthority()
	var retries []transport.DelegationRequest
	var answers []transport.DelegationResponse
	for i := 0; i < 30; i++ {
		s := newSession()
		l.addNative(a, s)
		req := delegation(s, a, b, "backup-"+newUUID())
		retries, answers = append(retries, req), append(answers, l.delegate(req))
	}
	// Some of every kind of state: a bundle, a live session after a handoff,
	// an upgrade membership, a removed footprint entry, the gate.
	l.must(http.StatusOK, http.MethodPost, "/v1/bundles", transport.RegisterBundleRequest{
		BundleID: "backup-bundle", ProtocolIDs: []string{"p.backup"}, Exports: []string{"x.out"}, Imports: []string{"x.in"},
	})
	ls := newSession()
	l.addNative(a, ls)
	l.must(http.StatusOK, http.MethodPost, "/v1/sessions", transport.OpenSessionRequest{SessionID: ls, OwnerLabel: "owner-a"})
	l.must(http.StatusOK, http.MethodPost, "/v1/sessions/"+ls+"/handoff", transport.HandoffRequest{
		OwnerLabel: "owner-a", Generation: 1, NextOwnerLabel: "owner-b",
		Transfer: transport.DelegationRequest{SessionID: ls, FromAuthority: a, ToAuthority: b, BundleID: "epoch_rotation_transfer"},
	})
	l.must(http.StatusOK, http.MethodPut, "/v1/upgrades/guardian_handoff/membership", transport.MembershipRequest{Members: []string{"member-a", "member-b"}})
	gone := newSession()
	l.addNative(b, gone)
	l.must(http.StatusOK, http.MethodDelete, "/v1/footprints/"+b+"/sessions/"+gone, nil)
	l.must(http.StatusOK, http.MethodPut, "/v1/capabilities", map[string]any{"reconfiguration": false})

	want := src.waitConverged(0)
	var backup bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := transport.NewClient([]string{l.httpAddr}).Backup(ctx, &backup); err != nil {
		t.Fatal(err)
	}
	if got := l.mustDigest(); got != want {
		t.Fatalf("source changed while backing up: %+v then %+v", want, got)
	}
	// A follower's backup is the same state.
	var fromFollower bytes.Buffer
	if _, err := transport.NewClient([]string{src.follower(l).httpAddr}).Backup(ctx, &fromFollower); err != nil {
		t.Fatal(err)
	}

	dst := newCluster(t, 3, clusterOpts{Prefix: "b"})
	dl := dst.waitLeader()
	fresh := dl.mustDigest()
	if fresh.Digest == want.Digest {
		t.Fatal("a fresh cluster already has the source's digest: the comparison proves nothing")
	}
	// Upload through a follower: the body streams on to the leader.
	restored, err := transport.NewClient([]string{dst.follower(dl).httpAddr}).Restore(ctx, bytes.NewReader(backup.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if restored.Digest != want.Digest {
		t.Errorf("restore answered digest %s, the source had %s (index %d there, %d here)", restored.Digest, want.Digest, want.Index, restored.Index)
	}
	got := dst.waitConverged(restored.Index)
	if got.Digest != want.Digest {
		t.Errorf("restored replicas have digest %s, the source %s", got.Digest, want.Digest)
	}
	t.Logf("source index %d, restored cluster index %d, digest %.16s", want.Index, got.Index, got.Digest)

	// Same reads on both clusters.
	for _, path := range []string{
		"/v1/bundles", "/v1/footprints/" + a, "/v1/footprints/" + b, "/v1/facts?limit=10000", "/v1/capabilities",
		"/v1/sessions/" + ls, "/v1/upgrades/guardian_handoff", "/v1/coherence",
	} {
		x := l.must(http.StatusOK, http.MethodGet, path, nil)
		y := dl.must(http.StatusOK, http.MethodGet, path, nil)
		if !sameJSON(x.Body, y.Body) {
			t.Errorf("GET %s:\nsource   %s\nrestored %s", path, x.Body, y.Body)
		}
	}
	// The request-id table came along: retries answer with the first result.
	for i, req := range retries[:3] {
		r := dl.must(http.StatusOK, http.MethodPost, "/v1/delegations", req)
		again := decodeAs[transport.DelegationResponse](t, r)
		if !again.Deduped {
			t.Errorf("retry %d on the restored cluster was applied again", i)
		}
		again.Deduped = false
		if !reflect.DeepEqual(again, answers[i]) {
			t.Errorf("retry %d on the restored cluster: %+v, first answer %+v", i, again, answers[i])
		}
	}
	if got := dst.waitConverged(0); got.Digest != want.Digest {
		t.Errorf("retries changed the restored state")
	}

	// The restored cluster takes new writes, and a restarted replica comes
	// back from the restored snapshot in its data dir.
	dl.must(http.StatusOK, http.MethodPut, "/v1/capabilities", map[string]any{"reconfiguration": true})
	s := newSession()
	dl.addNative(a, s)
	dl.delegate(delegation(s, a, b, ""))
	rf := dst.follower(dl)
	rf.stop(false)
	dl.addNative(a, newSession())
	rf.restart()
	dst.waitConverged(dl.mustDigest().Index)

	// Restoring the follower's backup of the source gives the same digest.
	again, err := transport.NewClient([]string{dl.httpAddr}).Restore(ctx, bytes.NewReader(fromFollower.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if again.Digest != want.Digest {
		t.Errorf("a follower's backup restores to digest %s, want %s", again.Digest, want.Digest)
	}
}

// A client retry of a request id after a leader change applies once: the
// retry, sent to another node, answers deduped with the first result, and
// the fact journal grew by exactly one.
func TestRequestIDRetryAfterLeaderChange(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	l := c.waitLeader()
	a, b, s := newAuthority(), newAuthority(), newSession()
	l.addNative(a, s)
	before := lastFactSeq(t, l)

	req := delegation(s, a, b, "retry-"+newUUID())
	first := l.delegate(req)
	if first.Deduped {
		t.Fatal("first send answered deduped")
	}

	r := l.must(http.StatusOK, http.MethodPost, "/v1/cluster/transfer-leadership", transport.NodeIDRequest{})
	named := decodeAs[struct {
		Leader string `json:"leader"`
	}](t, r).Leader
	l2 := c.waitNewLeader(l)
	t.Logf("leadership moved from %s to %s (transfer answered %q)", l.id, l2.id, named)

	// Resend to a node that is neither the old leader nor, if possible, the
	// new one (so it is forwarded again), then to the old leader.
	other := c.follower(l, l2)
	for _, n := range []*tnode{other, l2, l} {
		r := n.must(http.StatusOK, http.MethodPost, "/v1/delegations", req)
		again := decodeAs[transport.DelegationResponse](t, r)
		if !again.Deduped {
			t.Errorf("retry through %s was applied again: %+v", n.id, again)
		}
		again.Deduped = false
		if !reflect.DeepEqual(again, first) {
			t.Errorf("retry through %s: %+v, first answer %+v", n.id, again, first)
		}
	}
	if after := lastFactSeq(t, l2); after != before+1 {
		t.Errorf("fact journal went from %d to %d; want exactly one more", before, after)
	}
	fa, _ := l2.footprint(a, "")
	fb, _ := l2.footprint(b, "")
	if !contains(fa.DelegatedOutSessions, s) || !contains(fb.DelegatedInSessions, s) {
		t.Errorf("footprints after the retries: %+v %+v", fa, fb)
	}
}

// A leader that crashed and restarted on the same addresses can lead again,
// and the followers' forwarded requests reach the restarted process, not
// connections left over from the one that died.
func TestRestartedNodeLeadsAgain(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	l := c.waitLeader()
	f := c.follower(l)
	a, b := newAuthority(), newAuthority()
	// Forwarded writes and reads: f now has pooled forwarding connections
	// to l's Raft port.
	s := newSession()
	f.addNative(a, s)
	f.must(http.StatusOK, http.MethodGet, "/v1/footprints/"+a, nil)

	l.stop(true)
	t.Logf("killed %s; %s leads", l.id, c.waitNewLeader(l).id)
	l.restart()
	c.waitConverged(0)

	// Hand leadership back to the restarted node.
	waitFor(t, waitTimeout, l.id+" to lead again", func() (bool, string) {
		cur := c.waitLeader()
		if cur == l {
			return true, ""
		}
		r, err := cur.do(http.MethodPost, "/v1/cluster/transfer-leadership", transport.NodeIDRequest{ID: l.id})
		return false, fmt.Sprintf("transfer from %s: %v %v", cur.id, r, err)
	})
	f = c.follower(l)
	for i := 0; i < 3; i++ {
		s := newSession()
		r, err := f.do(http.MethodPost, "/v1/footprints/"+a+"/sessions", transport.FootprintAddRequest{SessionID: s})
		if err != nil || r.Status != http.StatusOK || r.Header.Get(transport.HeaderLeader) != l.httpAddr {
			t.Fatalf("write %d through %s to the restarted leader %s: %v %v", i, f.id, l.id, r, err)
		}
		d := f.delegate(delegation(s, a, b, ""))
		if d.Receipt.SessionID != s {
			t.Fatalf("delegation answer %+v", d)
		}
		r = f.must(http.StatusOK, http.MethodGet, "/v1/footprints/"+b, nil)
		if fp := decodeAs[transport.AuthorityFootprint](t, r); !contains(fp.DelegatedInSessions, s) {
			t.Fatalf("linearizable read through %s misses the write: %+v", f.id, fp)
		}
	}
	c.waitConverged(0)
}
