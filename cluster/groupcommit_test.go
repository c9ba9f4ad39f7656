package cluster_test

// Group commit (propose.go): commands proposed at the same time share log
// entries, and each still gets exactly its own result.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/reconf/reconf/cluster"
	"github.com/reconf/reconf/fsm"
)

// Concurrent commands packed into one entry each get their own result: the
// receipt and fact of their own session, their own fact sequence number.
func TestGroupCommitConcurrentCommandsOwnResults(t *testing.T) {
	tn := &tnode{id: "gc", dir: t.TempDir(), bootstrap: true, tune: func(c *cluster.Config) {
		c.MaxInflight = 1
		c.BatchWait = 50 * time.Millisecond // make packing certain, whatever the scheduler does
	}}
	tn.open(t)
	n := tn.n
	waitReady(t, n)
	const clients = 64
	a, b := fsm.AuthorityID(uuid()), fsm.AuthorityID(uuid())
	sessions := make([]fsm.SessionID, clients)
	for i := range sessions {
		sessions[i] = fsm.SessionID(uuid())
	}
	run := func(cmd func(i int) fsm.Command) []fsm.Result {
		t.Helper()
		out := make([]fsm.Result, clients)
		errs := make([]error, clients)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				out[i], errs[i] = n.Propose(ctx, cmd(i))
			}()
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("command %d: %v", i, err)
			}
		}
		return out
	}
	e0, c0 := n.GroupCommitStats()
	natives := run(func(i int) fsm.Command { return native(a, sessions[i]) })
	dels := run(func(i int) fsm.Command { return delegate(sessions[i], a, b, fmt.Sprintf("gc-%d", i)) })
	e1, c1 := n.GroupCommitStats()

	indexes := map[uint64]int{}
	seqs := map[uint64]int{}
	for i := range clients {
		if natives[i].Err != nil || dels[i].Err != nil {
			t.Fatalf("command %d rejected: %v / %v", i, natives[i].Err, dels[i].Err)
		}
		o := dels[i].Outcome
		if o == nil || o.Receipt.Session != sessions[i] || o.Receipt.From != a || o.Receipt.To != b || o.Witness.Session != sessions[i] {
			t.Fatalf("delegation %d got another command's result: %+v", i, o)
		}
		if j, dup := seqs[o.FactSeq]; dup {
			t.Fatalf("delegations %d and %d both got fact %d", j, i, o.FactSeq)
		}
		seqs[o.FactSeq] = i
		indexes[dels[i].Index]++
	}
	if len(indexes) >= clients {
		t.Errorf("%d concurrent delegations went into %d entries: nothing was packed", clients, len(indexes))
	}
	if c1-c0 != 2*clients || e1-e0 >= 2*clients {
		t.Errorf("group commit stats: %d commands in %d entries, want %d commands in fewer entries", c1-c0, e1-e0, 2*clients)
	}
	t.Logf("%d delegations in %d entries", clients, len(indexes))
	// The journal agrees: fact i is delegation i's, at its entry's index.
	n.FSM().Read(func(s *fsm.State) {
		for _, f := range s.Facts(0, 0) {
			i, ok := seqs[f.Seq]
			if !ok || f.Session != sessions[i] || f.Index != dels[i].Index {
				t.Errorf("fact %+v does not match its delegation", f)
			}
		}
	})
}

// A rejected command in a batch leaves the others applied and itself
// without a trace: the state is exactly that of the accepted commands alone.
func TestGroupCommitRejectedCommandLeavesNoTrace(t *testing.T) {
	tn := newNode(t, "rej", true)
	n := tn.n
	waitReady(t, n)
	a, b := fsm.AuthorityID(uuid()), fsm.AuthorityID(uuid())
	s1, s2, s3 := fsm.SessionID(uuid()), fsm.SessionID(uuid()), fsm.SessionID(uuid())
	cmds := []fsm.Command{
		native(a, s1),
		delegate(s2, a, b, ""), // s2 is nowhere: session_not_owned
		native(a, s3),
		delegate(s1, a, b, ""),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := n.ProposeAll(ctx, cmds)
	if len(got) != len(cmds) {
		t.Fatalf("%d results for %d commands", len(got), len(cmds))
	}
	for i, g := range got {
		if g.Err != nil {
			t.Fatalf("command %d: %v", i, g.Err)
		}
		if g.Result.Index != got[0].Result.Index {
			t.Errorf("command %d at index %d, command 0 at %d: not one entry", i, g.Result.Index, got[0].Result.Index)
		}
	}
	if e := got[1].Result.Err; e == nil || e.Code != fsm.CodeSessionNotOwned {
		t.Fatalf("delegation of an unknown session: %+v, want session_not_owned", got[1].Result)
	}
	for _, i := range []int{0, 2, 3} {
		if got[i].Result.Err != nil {
			t.Errorf("command %d rejected: %v", i, got[i].Result.Err)
		}
	}
	if o := got[3].Result.Outcome; o == nil || o.FactSeq != 1 {
		t.Errorf("the accepted delegation's outcome: %+v, want fact 1", o)
	}
	// The same commands without the rejected one, on a fresh state, at the
	// same index: the same digest.
	ref := fsm.New()
	for _, i := range []int{0, 2, 3} {
		if r := ref.Apply(got[0].Result.Index, cmds[i]); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if _, d := n.Digest(); d != ref.Digest() {
		t.Errorf("state after the batch differs from the state of its accepted commands alone")
	}
	if fp := footprint(n, b); containsSession(fp.DelegatedIn, s2) || len(fp.DelegatedIn) != 1 {
		t.Errorf("footprint of the target: %+v", fp)
	}
}

// A batch larger than one entry's bounds is cut into consecutive entries;
// the results still come back one per command, in order.
func TestGroupCommitSplitsLargeBatches(t *testing.T) {
	tn := &tnode{id: "split", dir: t.TempDir(), bootstrap: true, tune: func(c *cluster.Config) { c.MaxBatchCommands = 4 }}
	tn.open(t)
	n := tn.n
	waitReady(t, n)
	a := fsm.AuthorityID(uuid())
	var cmds []fsm.Command
	for range 10 {
		cmds = append(cmds, native(a, fsm.SessionID(uuid())))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := n.ProposeAll(ctx, cmds)
	entries := map[uint64]int{}
	for i, g := range got {
		if g.Err != nil || g.Result.Err != nil {
			t.Fatalf("command %d: %v %v", i, g.Err, g.Result.Err)
		}
		if i > 0 && g.Result.Index < got[i-1].Result.Index {
			t.Errorf("command %d applied before command %d", i, i-1)
		}
		entries[g.Result.Index]++
	}
	for idx, c := range entries {
		if c > 4 {
			t.Errorf("entry %d carries %d commands, bound 4", idx, c)
		}
	}
	if len(entries) < 3 {
		t.Errorf("10 commands in %d entries with at most 4 per entry", len(entries))
	}
	if fp := footprint(n, a); len(fp.Native) != 10 {
		t.Errorf("%d sessions recorded, want 10", len(fp.Native))
	}
}

// Leadership moves while clients keep proposing batches: every command
// acknowledged as applied is on every replica afterwards, and every command
// refused with ErrNotLeader was never applied anywhere.
func TestGroupCommitLeaderChangeLosesNothingAcknowledged(t *testing.T) {
	tune := func(c *cluster.Config) { c.MaxInflight = 2 }
	n1 := &tnode{id: "lc1", dir: t.TempDir(), bootstrap: true, tune: tune}
	n1.open(t)
	waitReady(t, n1.n)
	n2 := &tnode{id: "lc2", dir: t.TempDir(), tune: tune}
	n2.open(t)
	n3 := &tnode{id: "lc3", dir: t.TempDir(), tune: tune}
	n3.open(t)
	nodes := []*tnode{n1, n2, n3}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, tn := range nodes[1:] {
		if err := n1.n.Join(ctx, tn.id, tn.addr, true); err != nil {
			t.Fatal(err)
		}
	}
	leader := func() *cluster.Node {
		for _, tn := range nodes {
			if tn.n.IsLeader() {
				return tn.n
			}
		}
		return nil
	}
	a := fsm.AuthorityID(uuid())
	type outcome struct {
		sess fsm.SessionID
		err  error
	}
	var mu sync.Mutex
	var outcomes []outcome
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				l := leader()
				if l == nil {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				size := 1 + w*5 // single commands and batches of up to 26
				cmds := make([]fsm.Command, size)
				sess := make([]fsm.SessionID, size)
				for i := range cmds {
					sess[i] = fsm.SessionID(uuid())
					cmds[i] = native(a, sess[i])
				}
				pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
				got := l.ProposeAll(pctx, cmds)
				pcancel()
				if errors.Is(got[0].Err, cluster.ErrNotLeader) {
					time.Sleep(2 * time.Millisecond) // a transfer is under way
				}
				mu.Lock()
				for i, g := range got {
					err := g.Err
					if err == nil && g.Result.Err != nil {
						err = g.Result.Err
					}
					outcomes = append(outcomes, outcome{sess[i], err})
				}
				mu.Unlock()
			}
		}()
	}
	for _, to := range []string{"lc2", "lc3", "lc1"} {
		time.Sleep(300 * time.Millisecond)
		if l := leader(); l != nil {
			if err := l.TransferLeadership(ctx, to); err != nil {
				t.Logf("transfer to %s: %v", to, err)
			}
		}
		waitFor(t, to+" to lead", func() bool { return leader() != nil })
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()

	l := leader()
	waitReady(t, l)
	marker, err := l.Propose(ctx, native(a, fsm.SessionID(uuid())))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every replica to apply everything", func() bool {
		for _, tn := range nodes {
			if tn.n.FSM().AppliedIndex() < marker.Index {
				return false
			}
		}
		return true
	})
	counts := map[string]int{}
	for _, tn := range nodes {
		fp := footprint(tn.n, a)
		have := map[fsm.SessionID]bool{}
		for _, s := range fp.Native {
			have[s] = true
		}
		for _, o := range outcomes {
			switch {
			case o.err == nil:
				if !have[o.sess] {
					t.Errorf("%s: acknowledged session %s is missing", tn.id, o.sess)
				}
			case errors.Is(o.err, cluster.ErrNotLeader):
				if have[o.sess] {
					t.Errorf("%s: session %s was refused with ErrNotLeader, yet applied", tn.id, o.sess)
				}
			case errors.Is(o.err, cluster.ErrUnknownOutcome):
			default:
				t.Errorf("unexpected outcome for %s: %v", o.sess, o.err)
			}
		}
	}
	for _, o := range outcomes {
		switch {
		case o.err == nil:
			counts["applied"]++
		case errors.Is(o.err, cluster.ErrNotLeader):
			counts["not_leader"]++
		default:
			counts["unknown"]++
		}
	}
	if counts["applied"] == 0 {
		t.Fatal("nothing was applied")
	}
	t.Logf("outcomes: %v", counts)
}
