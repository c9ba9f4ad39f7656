package cluster_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/reconf/reconf/cluster"
	"github.com/reconf/reconf/fsm"
)

// A replica digests its state at each consistency check entry it applies,
// and has no digest at any other index. A restarted node replays the log
// and digests the check again, to the same value.
func TestCheckDigestAtTheCheckEntry(t *testing.T) {
	tn := newNode(t, "n1", true)
	defer tn.close()
	waitReady(t, tn.n)
	a := fsm.AuthorityID(uuid())
	plain := propose(t, tn.n, native(a, fsm.SessionID(uuid())))
	want := tn.n.FSM().View().Digest() // a check changes nothing: the digest it must report
	check := propose(t, tn.n, fsm.Command{Op: &fsm.ConsistencyCheck{}})
	propose(t, tn.n, native(a, fsm.SessionID(uuid()))) // moves the state past the check
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := tn.n.CheckDigest(ctx, check.Index)
	if err != nil || got != want {
		t.Fatalf("digest at the check: %x, %v; want %x", got, err, want)
	}
	if tn.n.FSM().View().Digest() == want {
		t.Fatal("the state did not move after the check: the test proves nothing")
	}
	if _, err := tn.n.CheckDigest(ctx, plain.Index); !errors.Is(err, cluster.ErrNoCheckDigest) {
		t.Fatalf("digest at a plain entry: %v, want ErrNoCheckDigest", err)
	}
	// Waits for an index not applied yet, until the context ends.
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if _, err := tn.n.CheckDigest(short, check.Index+100); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("digest at a future index: %v", err)
	}

	tn.close()
	tn.open(t)
	waitReady(t, tn.n)
	got, err = tn.n.CheckDigest(ctx, check.Index)
	if err != nil || got != want {
		t.Fatalf("after a restart: %x, %v; want %x", got, err, want)
	}
}
