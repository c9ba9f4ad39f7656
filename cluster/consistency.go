package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/reconf/reconf/fsm"
)

// Replica consistency checks, this replica's part: when the FSM applies a
// consistency check entry (fsm/consistency.go) it hands this node an O(1)
// clone of the state at that entry; one worker goroutine digests the clones,
// off the apply path, and keeps the digests of the last maxCheckDigests
// checks for the leader to collect (CheckDigest). Comparing them is the
// transport package's job: it knows the other members.

// maxCheckDigests bounds the digests kept; checks come every few minutes.
const maxCheckDigests = 64

// checkQueue bounds the clones waiting for the digest worker. Each holds
// copy-on-write references into the state, which keep the pages the live
// state rewrites since; a node replaying a log full of checks at start drops
// the ones beyond this instead of holding many versions of its state.
const checkQueue = 4

// ErrNoCheckDigest: this replica has no digest for that index: the entry
// there is not a consistency check, or this replica did not apply it itself
// (it installed a snapshot past it), or the digest was dropped (too old, or
// the worker was busy).
var ErrNoCheckDigest = errors.New("no consistency check digest at that index")

type checkDigest struct {
	done    bool // digest is set; until then the worker has the clone
	dropped bool // the queue was full: never digested
	digest  [32]byte
}

type checkJob struct {
	index uint64
	st    *fsm.State
}

type checkDigests struct {
	mu      sync.Mutex
	byIndex map[uint64]*checkDigest
	order   []uint64      // indexes in byIndex, oldest first
	changed chan struct{} // closed and replaced when a digest is stored
	jobs    chan checkJob
}

func newCheckDigests() *checkDigests {
	return &checkDigests{byIndex: map[uint64]*checkDigest{}, changed: make(chan struct{}), jobs: make(chan checkJob, checkQueue)}
}

// enqueue is the FSM's check hook: it runs on the apply path under the
// FSM's lock, so it records the index and hands the clone off without
// blocking.
func (c *checkDigests) enqueue(index uint64, st *fsm.State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := &checkDigest{}
	if _, seen := c.byIndex[index]; !seen {
		c.order = append(c.order, index)
	}
	c.byIndex[index] = rec
	for len(c.order) > maxCheckDigests {
		delete(c.byIndex, c.order[0])
		c.order = c.order[1:]
	}
	select {
	case c.jobs <- checkJob{index, st}:
	default:
		rec.dropped = true
		c.notifyLocked()
	}
}

func (c *checkDigests) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// digestChecks is the worker: it digests each clone and stores the result.
func (n *Node) digestChecks() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case j := <-n.checks.jobs:
			d := j.st.Digest()
			n.checks.mu.Lock()
			if rec, ok := n.checks.byIndex[j.index]; ok {
				rec.digest, rec.done = d, true
			}
			n.checks.notifyLocked()
			n.checks.mu.Unlock()
		}
	}
}

// CheckDigest returns this replica's state digest at the consistency check
// entry index, waiting (until ctx ends) for the entry to be applied and
// digested. ErrHalted: this replica stopped applying before index.
// ErrNoCheckDigest: it will never have one.
func (n *Node) CheckDigest(ctx context.Context, index uint64) ([32]byte, error) {
	for {
		// The applied index first: the FSM records a check (enqueue)
		// before its applied index moves past it, so a record missing
		// after the index is seen applied is missing for good.
		applied, halted := n.fsm.AppliedIndex(), n.fsm.Halted()
		n.checks.mu.Lock()
		rec, changed := n.checks.byIndex[index], n.checks.changed
		var (
			done, dropped bool
			d             [32]byte
		)
		if rec != nil {
			done, dropped, d = rec.done, rec.dropped, rec.digest
		}
		n.checks.mu.Unlock()
		switch {
		case done:
			return d, nil
		case dropped:
			return [32]byte{}, fmt.Errorf("%w %d: this replica was digesting other checks and dropped it", ErrNoCheckDigest, index)
		case rec != nil:
			// Applied; the worker has it.
			select {
			case <-changed:
			case <-ctx.Done():
			}
		case halted != nil && halted.Index <= index:
			return [32]byte{}, n.Halted()
		case applied >= index:
			return [32]byte{}, fmt.Errorf("%w %d: this replica did not apply a check there (not a check entry, installed from a snapshot, or older than the last %d checks)",
				ErrNoCheckDigest, index, maxCheckDigests)
		default:
			// Not applied yet. A halted FSM never moves: look again
			// after a while.
			wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			_ = n.fsm.WaitApplied(wctx, index)
			cancel()
		}
		if err := ctx.Err(); err != nil {
			return [32]byte{}, err
		}
	}
}

// Done is closed when the node starts shutting down, for the loops that
// run beside it (the periodic consistency check).
func (n *Node) Done() <-chan struct{} { return n.stop }
