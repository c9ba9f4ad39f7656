package cluster_test

// Tests of the Raft node without HTTP: real hashicorp/raft, real
// raft-boltdb files in temp dirs, real TCP on 127.0.0.1 through a plain
// stream layer defined here (the transport package's multiplexed one is
// covered by transport's integration tests).

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/reconf/reconf/cluster"
	"github.com/reconf/reconf/fsm"
)

// tcpLayer is a raft.StreamLayer over a plain TCP listener.
type tcpLayer struct{ ln net.Listener }

func (l *tcpLayer) Accept() (net.Conn, error) { return l.ln.Accept() }
func (l *tcpLayer) Close() error              { return l.ln.Close() }
func (l *tcpLayer) Addr() net.Addr            { return l.ln.Addr() }
func (l *tcpLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}

type tnode struct {
	id, dir, addr string
	bootstrap     bool
	n             *cluster.Node
	tune          func(*cluster.Config) // optional: adjusts the config on every open
}

func logger(id string) hclog.Logger {
	if os.Getenv("RECONF_TEST_LOG") == "" {
		return hclog.NewNullLogger()
	}
	return hclog.New(&hclog.LoggerOptions{Name: id, Level: hclog.Debug, Output: os.Stderr})
}

// open starts (or restarts, on the same dir and address) a node.
func (tn *tnode) open(t *testing.T) {
	t.Helper()
	listen := tn.addr
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", listen); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	tn.addr = ln.Addr().String()
	cfg := cluster.Config{
		ID: tn.id, DataDir: tn.dir, AdvertiseRaft: tn.addr, StreamLayer: &tcpLayer{ln},
		Bootstrap: tn.bootstrap, Logger: logger(tn.id),
		HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond, LeaderLease: 250 * time.Millisecond,
	}
	if tn.tune != nil {
		tn.tune(&cfg)
	}
	n, err := cluster.Open(cfg)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	tn.n = n
	t.Cleanup(func() { tn.close() })
}

func (tn *tnode) close() {
	if tn.n != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tn.n.Shutdown(ctx)
		tn.n = nil
	}
}

func newNode(t *testing.T, id string, bootstrap bool) *tnode {
	t.Helper()
	tn := &tnode{id: id, dir: t.TempDir(), bootstrap: bootstrap}
	tn.open(t)
	return tn
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitReady waits until n leads and serves linearizable reads.
func waitReady(t *testing.T, n *cluster.Node) {
	t.Helper()
	waitFor(t, n.ID()+" to lead and serve reads", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return n.IsLeader() && n.LinearizableRead(ctx) == nil
	})
}

func uuid() fsm.UUID {
	var u fsm.UUID
	_, _ = rand.Read(u[:])
	return u
}

func native(a fsm.AuthorityID, s fsm.SessionID) fsm.Command {
	return fsm.Command{Op: &fsm.ExtendFootprint{Authority: a, Session: s, Class: fsm.Native}}
}

func delegate(s fsm.SessionID, from, to fsm.AuthorityID, requestID string) fsm.Command {
	return fsm.Command{RequestID: requestID, Op: &fsm.Delegate{Delegation: fsm.Delegation{
		Session: s, From: from, To: to, BundleID: "device_migration", AtMillis: 1,
	}}}
}

func propose(t *testing.T, n *cluster.Node, cmd fsm.Command) fsm.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := n.Propose(ctx, cmd)
	if err != nil {
		t.Fatalf("propose %s: %v", cmd.Op.Type(), err)
	}
	return res
}

func footprint(n *cluster.Node, a fsm.AuthorityID) fsm.Footprint {
	var fp fsm.Footprint
	n.FSM().Read(func(s *fsm.State) { fp, _ = s.Footprint(a) })
	return fp
}

func TestOpenRefusesBadConfigAndForeignDataDir(t *testing.T) {
	if _, err := cluster.Open(cluster.Config{ID: "x", DataDir: t.TempDir()}); err == nil {
		t.Error("Open without a stream layer and address succeeded")
	}
	tn := newNode(t, "first", true)
	waitReady(t, tn.n)
	tn.close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = cluster.Open(cluster.Config{ID: "second", DataDir: tn.dir, AdvertiseRaft: ln.Addr().String(), StreamLayer: &tcpLayer{ln}})
	if err == nil {
		t.Fatal("a data dir written by node \"first\" opened as node \"second\"")
	}
	t.Logf("refused: %v", err)
}

// One node: proposals return the FSM's typed results, request ids dedupe,
// concurrent proposals are each answered with their own result (and
// packed into fewer log entries), and a restart with --bootstrap again is
// a no-op that comes back with the same state.
func TestSingleNodeProposeDedupeRestart(t *testing.T) {
	tn := newNode(t, "solo", true)
	n := tn.n
	waitReady(t, n)
	a, b := fsm.AuthorityID(uuid()), fsm.AuthorityID(uuid())
	s := fsm.SessionID(uuid())

	if r := propose(t, n, delegate(s, a, b, "")); r.Err == nil || r.Err.Code != fsm.CodeSessionNotOwned || r.Index == 0 {
		t.Fatalf("delegating an unowned session: %+v", r)
	}
	propose(t, n, native(a, s))
	first := propose(t, n, delegate(s, a, b, "req-1"))
	if first.Err != nil || first.Outcome == nil || first.Outcome.FactSeq != 1 || first.Deduped {
		t.Fatalf("delegation: %+v", first)
	}
	again := propose(t, n, delegate(s, a, b, "req-1"))
	if !again.Deduped || again.Index != first.Index || !sameOutcome(again.Outcome, first.Outcome) {
		t.Fatalf("retry of req-1: %+v, first %+v", again, first)
	}

	// 200 concurrent proposals.
	const k = 200
	results := make([]fsm.Result, k)
	sessions := make([]fsm.SessionID, k)
	var wg sync.WaitGroup
	errs := make(chan error, k)
	for i := 0; i < k; i++ {
		sessions[i] = fsm.SessionID(uuid())
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r, err := n.Propose(ctx, native(b, sessions[i]))
			if err != nil {
				errs <- err
			}
			results[i] = r
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	entries := map[uint64]int{}
	for i, r := range results {
		if r.Err != nil || r.Index <= first.Index {
			t.Fatalf("proposal %d: %+v", i, r)
		}
		entries[r.Index]++
	}
	t.Logf("%d concurrent proposals committed in %d log entries", k, len(entries))
	fp := footprint(n, b)
	for _, s := range sessions {
		if !containsSession(fp.Native, s) {
			t.Fatalf("session %s missing after its proposal was answered", s)
		}
	}

	idx, digest := n.Digest()
	tn.close()
	tn.open(t) // bootstrap flag set again: must be a no-op
	n = tn.n
	waitReady(t, n)
	idx2, digest2 := n.Digest()
	if idx2 < idx || digest2 != digest {
		t.Fatalf("after restart: index %d digest %x; before: index %d digest %x", idx2, digest2, idx, digest)
	}
	if got := footprint(n, b); !reflect.DeepEqual(got, fp) {
		t.Fatalf("footprint after restart %+v, before %+v", got, fp)
	}
	if r := propose(t, n, delegate(s, a, b, "req-1")); !r.Deduped || !sameOutcome(r.Outcome, first.Outcome) {
		t.Fatalf("request-id table lost across the restart: %+v", r)
	}
	servers, _ := n.Servers()
	if len(servers) != 1 {
		t.Fatalf("restart re-bootstrapped or lost the configuration: %+v", servers)
	}
}

func containsSession(list []fsm.SessionID, s fsm.SessionID) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Three nodes: followers refuse leader-only operations with ErrNotLeader;
// membership changes, leadership transfer and status work on the leader.
func TestMembershipAndLeaderOnlyOperations(t *testing.T) {
	n1 := newNode(t, "m1", true)
	waitReady(t, n1.n)
	n2 := newNode(t, "m2", false)
	n3 := newNode(t, "m3", false)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tn := range []*tnode{n2, n3} {
		if err := n1.n.Join(ctx, tn.id, tn.addr, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := n1.n.Join(ctx, n2.id, n2.addr, true); err != nil {
		t.Fatalf("joining again with the same id and address: %v", err)
	}
	if s, _ := n1.n.Servers(); len(s) != 3 {
		t.Fatalf("servers %+v", s)
	}
	a, s := fsm.AuthorityID(uuid()), fsm.SessionID(uuid())
	w := propose(t, n1.n, native(a, s))
	waitFor(t, "followers to apply", func() bool {
		return n2.n.FSM().AppliedIndex() >= w.Index && n3.n.FSM().AppliedIndex() >= w.Index
	})

	f := n2.n
	if _, err := f.Propose(ctx, native(a, fsm.SessionID(uuid()))); !errors.Is(err, cluster.ErrNotLeader) {
		t.Errorf("follower Propose: %v", err)
	}
	if err := f.LinearizableRead(ctx); !errors.Is(err, cluster.ErrNotLeader) {
		t.Errorf("follower LinearizableRead: %v", err)
	}
	if err := f.Join(ctx, "x", "127.0.0.1:1", true); !errors.Is(err, cluster.ErrNotLeader) {
		t.Errorf("follower Join: %v", err)
	}
	if err := f.Restore(ctx, bytes.NewReader(nil)); !errors.Is(err, cluster.ErrNotLeader) {
		t.Errorf("follower Restore: %v", err)
	}
	if err := n1.n.Remove(ctx, "nobody"); !errors.Is(err, cluster.ErrUnknownMember) {
		t.Errorf("Remove of an unknown id: %v", err)
	}
	if err := n1.n.TransferLeadership(ctx, "nobody"); !errors.Is(err, cluster.ErrUnknownMember) {
		t.Errorf("transfer to an unknown id: %v", err)
	}

	st, err := f.Status()
	if err != nil || st.LeaderID != "m1" || st.State != "follower" || len(st.Servers) != 3 || st.AppliedIndex < w.Index || st.LastContact.IsZero() {
		t.Errorf("follower status %+v %v", st, err)
	}

	if err := n1.n.TransferLeadership(ctx, "m3"); err != nil {
		t.Fatal(err)
	}
	waitReady(t, n3.n)
	if id, _ := n1.n.Leader(); id != "m3" && id != "" {
		t.Errorf("old leader names %q as leader", id)
	}
	// The new leader serves a read that sees the write made under the old.
	if got := footprint(n3.n, a); !containsSession(got.Native, s) {
		t.Errorf("new leader's state misses the old leader's write")
	}
	if err := n3.n.Remove(ctx, "m2"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "m1 to see m2 removed", func() bool {
		s, _ := n1.n.Servers()
		return len(s) == 2
	})
	w2 := propose(t, n3.n, native(a, fsm.SessionID(uuid())))
	waitFor(t, "m1 to apply with two voters", func() bool { return n1.n.FSM().AppliedIndex() >= w2.Index })
}

// Restore refuses a damaged backup and keeps the state; a good backup is
// adopted with the digest of the state it was taken from.
func TestBackupRestoreOnNode(t *testing.T) {
	tn := newNode(t, "br", true)
	n := tn.n
	waitReady(t, n)
	a, b := fsm.AuthorityID(uuid()), fsm.AuthorityID(uuid())
	for i := 0; i < 20; i++ {
		s := fsm.SessionID(uuid())
		propose(t, n, native(a, s))
		propose(t, n, delegate(s, a, b, fmt.Sprintf("r-%d", i)))
	}
	_, want := n.Digest()
	var backup bytes.Buffer
	if _, err := n.Backup(&backup); err != nil {
		t.Fatal(err)
	}
	// Nothing new since: the newest snapshot is sent again.
	var again bytes.Buffer
	if _, err := n.Backup(&again); err != nil {
		t.Fatalf("second backup with nothing new: %v", err)
	}
	if st, _, err := fsm.Restore(bytes.NewReader(again.Bytes())); err != nil || st.Digest() != want {
		t.Fatalf("second backup does not hold the state: %v", err)
	}

	// Move on, then try damaged uploads.
	for i := 0; i < 5; i++ {
		propose(t, n, native(b, fsm.SessionID(uuid())))
	}
	_, moved := n.Digest()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	corrupt := bytes.Clone(backup.Bytes())
	corrupt[len(corrupt)/2] ^= 0xff
	for name, body := range map[string][]byte{
		"corrupt":   corrupt,
		"truncated": backup.Bytes()[:backup.Len()-10],
		"empty":     nil,
		"garbage":   []byte("not a snapshot at all"),
	} {
		err := n.Restore(ctx, bytes.NewReader(body))
		if !errors.Is(err, cluster.ErrInvalidBackup) {
			t.Errorf("%s backup: %v, want ErrInvalidBackup", name, err)
		}
		if _, d := n.Digest(); d != moved {
			t.Fatalf("%s backup changed the state", name)
		}
	}

	if err := n.Restore(ctx, bytes.NewReader(backup.Bytes())); err != nil {
		t.Fatal(err)
	}
	if _, d := n.Digest(); d != want {
		t.Fatalf("restored digest %x, backup's state %x", d, want)
	}
	waitReady(t, n)
	if r := propose(t, n, delegate(fsm.SessionID(uuid()), a, b, "r-0")); !r.Deduped {
		t.Fatalf("request id from the backup not remembered: %+v", r)
	}
	propose(t, n, native(a, fsm.SessionID(uuid())))

	// A restart comes back from the restored snapshot plus the log after it.
	idx, d := n.Digest()
	tn.close()
	tn.open(t)
	waitReady(t, tn.n)
	if idx2, d2 := tn.n.Digest(); idx2 < idx || d2 != d {
		t.Fatalf("after restart: %d %x, before %d %x", idx2, d2, idx, d)
	}
}

// TestLinearizableReadsConfirmOnTheRaftPort: on a three-node cluster over
// real TCP, linearizable reads are confirmed by rounds on the Raft stream
// (no fallback to the log), at most one per read, a read sees
// every write acknowledged before it, and followers refuse.
func TestLinearizableReadsConfirmOnTheRaftPort(t *testing.T) {
	// Timeouts long enough that a loaded machine does not move the lead
	// away from r1 in the middle of the test.
	slow := func(c *cluster.Config) {
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLease = 3*time.Second, 3*time.Second, 2*time.Second
	}
	start := func(id string, bootstrap bool) *tnode {
		tn := &tnode{id: id, dir: t.TempDir(), bootstrap: bootstrap, tune: slow}
		tn.open(t)
		return tn
	}
	n1 := start("r1", true)
	defer n1.close()
	waitReady(t, n1.n)
	n2 := start("r2", false)
	defer n2.close()
	n3 := start("r3", false)
	defer n3.close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tn := range []*tnode{n2, n3} {
		if err := n1.n.Join(ctx, tn.id, tn.addr, true); err != nil {
			t.Fatal(err)
		}
	}
	before := n1.n.ReadStats()
	a := fsm.AuthorityID(uuid())
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for c := 0; c < 16; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				s := fsm.SessionID(uuid())
				res, err := n1.n.Propose(ctx, native(a, s))
				if err != nil {
					errs <- err
					return
				}
				if err := n1.n.LinearizableRead(ctx); err != nil {
					errs <- err
					return
				}
				if got := n1.n.FSM().AppliedIndex(); got < res.Index {
					errs <- fmt.Errorf("read after write %d served at %d", res.Index, got)
					return
				}
				if !containsSession(footprint(n1.n, a).Native, s) {
					errs <- fmt.Errorf("read after write misses session %s", s)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	after := n1.n.ReadStats()
	rounds := after.Rounds - before.Rounds
	if rounds == 0 || rounds > 320 {
		t.Fatalf("320 reads took %d confirmation rounds", rounds)
	}
	if f := after.Fallbacks - before.Fallbacks; f != 0 {
		t.Fatalf("%d rounds fell back to the log: the followers did not answer on the Raft port", f)
	}
	t.Logf("320 reads in %d rounds", rounds)
	if err := n2.n.LinearizableRead(ctx); !errors.Is(err, cluster.ErrNotLeader) {
		t.Fatalf("follower read: %v", err)
	}
}

// sameOutcome compares outcomes as printed: the request-id table keeps
// results in their binary form, which (like a snapshot) does not tell an
// empty list from none, and %+v prints both as [].
func sameOutcome(a, b *fsm.Outcome) bool {
	return a != nil && b != nil && fmt.Sprintf("%+v", *a) == fmt.Sprintf("%+v", *b)
}

// TestLinearizableReadsFallBackToTheLog: when no voter answers the
// confirmation (an older release), reads confirm through a log entry, and
// the next read does not wait for an index the state never reports.
func TestLinearizableReadsFallBackToTheLog(t *testing.T) {
	n1 := newNode(t, "f1", true)
	defer n1.close()
	waitReady(t, n1.n)
	n2 := newNode(t, "f2", false)
	defer n2.close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n1.n.Join(ctx, n2.id, n2.addr, true); err != nil {
		t.Fatal(err)
	}
	n1.n.BreakConfirmationsForTest()
	before := n1.n.ReadStats()
	for i := 0; i < 3; i++ {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		err := n1.n.LinearizableRead(rctx)
		rcancel()
		if err != nil {
			t.Fatalf("read %d with confirmations broken: %v", i, err)
		}
	}
	if f := n1.n.ReadStats().Fallbacks - before.Fallbacks; f != 3 {
		t.Fatalf("%d fallbacks for 3 reads", f)
	}
}
