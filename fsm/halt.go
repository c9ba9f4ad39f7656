package fsm

import (
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
)

// A replica that cannot apply a committed entry stops applying.
//
// Raft hands every replica the same entries in the same order; a replica
// that skips one, or reads it differently, diverges from the others without
// anyone noticing. So the FSM applies an entry only when
//
//   - its index is the next one: greater than the last applied, and every
//     index in between is an entry Raft does not hand to the FSM (a
//     leader's no-op or a barrier), which the node checks in its log store
//     (SetGapCheck);
//   - it decodes: its framing is readable, its checksum (format 2) matches,
//     and every command in it is of a type and version this node knows.
//
// Otherwise the FSM halts: it applies nothing more, its applied index stays
// at the last entry it did apply, it refuses to take snapshots (a snapshot
// would be labelled with an index the state never reached), and every later
// entry's response is the *HaltError. The node (cluster package) turns that
// into a failing /readyz, refused reads and a metric. The halt lasts until
// the process restarts (and it halts again at the same entry: the cure is
// to replace the replica) or a snapshot is installed over the state. This is
// the rule Consul and Nomad apply to an unknown command (they panic): stop
// rather than diverge, but stay up to say why.

// HaltError says why a replica stopped applying the log. It is the response
// of every entry from the one that failed on.
type HaltError struct {
	Index  uint64 // the entry that could not be applied
	Reason string
	Err    error // the underlying error, for errors.Is (ErrChecksum, ...)
}

func (e *HaltError) Error() string {
	return fmt.Sprintf("this replica stopped applying the Raft log at index %d: %s", e.Index, e.Reason)
}

func (e *HaltError) Unwrap() error { return e.Err }

// ErrIndexGap: an entry arrived that is not the next one.
var ErrIndexGap = errors.New("log index gap")

// ErrHalted is what Snapshot and reads say on a halted replica.
var ErrHalted = errors.New("replica halted")

// SetGapCheck installs the check of the indexes an entry skips: gap is
// called with the first and last skipped index and returns nil only when
// none of them is an entry the FSM should have seen. Without one, the FSM
// checks only that indexes increase.
func (f *FSM) SetGapCheck(gap func(first, last uint64) error) {
	f.mu.Lock()
	f.gapCheck = gap
	f.mu.Unlock()
}

// OnHalt installs fn, called once (on its own goroutine) when the FSM halts.
func (f *FSM) OnHalt(fn func(*HaltError)) {
	f.mu.Lock()
	f.onHalt = fn
	f.mu.Unlock()
}

// Halted is why the replica stopped applying, or nil.
func (f *FSM) Halted() *HaltError {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.halted
}

// checkNextLocked returns why entry index must not be applied after the
// last applied one, or nil.
func (f *FSM) checkNextLocked(index uint64) error {
	last := f.state.AppliedIndex()
	switch {
	case index <= last:
		return fmt.Errorf("%w: entry %d arrived after entry %d was applied", ErrIndexGap, index, last)
	case index == last+1 || f.gapCheck == nil:
		return nil
	}
	if err := f.gapCheck(last+1, index-1); err != nil {
		return fmt.Errorf("%w: entry %d arrived after entry %d: %v", ErrIndexGap, index, last, err)
	}
	return nil
}

// haltLocked stops applying at index.
func (f *FSM) haltLocked(index uint64, reason string, err error) *HaltError {
	f.halted = &HaltError{Index: index, Reason: reason, Err: err}
	f.logger.Error("HALTED: this replica cannot apply a committed log entry and stopped applying; it serves no reads until it is replaced. "+
		"Replace it: reconfctl cluster remove ID, move its data dir away, start it empty with --join (docs/operations.md, \"A replica that stopped applying\")",
		"index", index, "applied_index", f.state.AppliedIndex(), "reason", reason)
	if fn := f.onHalt; fn != nil {
		go fn(f.halted)
	}
	return f.halted
}

// applyEntryLocked decodes an entry in full, and halts instead of applying
// it when any part of it cannot be read. A command of an unknown type or
// version halts the replica too: applying the rest of the entry would leave
// this replica different from one that knows the command.
func (f *FSM) applyEntryLocked(l *raft.Log) interface{} {
	decoded, err := DecodeEntry(l.Data)
	if err != nil {
		reason := "the entry cannot be decoded: " + err.Error()
		if errors.Is(err, ErrChecksum) {
			reason = "the entry's checksum does not match (its bytes changed on this node's disk or in memory): " + err.Error()
		}
		return f.haltLocked(l.Index, reason, err)
	}
	for i := range decoded {
		if e := decoded[i].Err; e != nil {
			return f.haltLocked(l.Index, fmt.Sprintf("command %d of the entry: %s (a newer release wrote it: upgrade this node)", i, e.Message), e)
		}
	}
	f.term = l.Term
	results := make([]Result, len(decoded))
	for i := range decoded {
		results[i] = f.state.Apply(l.Index, decoded[i].Command)
	}
	f.checkEntryLocked(l.Index, decoded) // consistency.go
	return results
}

// SetRestorePosition installs pos, which Restore asks for the Raft index
// and term of the snapshot it is restoring when the snapshot's header has
// none (index 0: a restored backup, UnpositionSnapshot). The node answers
// from its snapshot store (cluster/snapstore.go).
func (f *FSM) SetRestorePosition(pos func() (index, term uint64, ok bool)) {
	f.mu.Lock()
	f.restorePos = pos
	f.mu.Unlock()
}

// UnpositionSnapshot copies the snapshot (a backup) in r to w with its Raft
// position erased (header and state index 0), after decoding and checking it
// in full. A backup restored into a cluster is filed by Raft under an index
// of Raft's choosing, and the state then belongs at that index, not at the
// one the backup was taken at: the header of every other snapshot must
// match the index it is filed under (cluster/snapstore.go), so a restored
// one says "none" and takes Raft's.
func UnpositionSnapshot(r io.Reader, w io.Writer) error {
	st, _, err := Restore(r)
	if err != nil {
		return err
	}
	st.applied = 0
	return st.Snapshot(w, 0)
}
