package fsm

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// FSM adapts State to hashicorp/raft. It is the only file in this package
// that knows about Raft: it serialises access to the state, applies log
// entries (singly or batched), takes and restores snapshots, and lets
// readers wait until a given index has been applied (the last step of a
// read-index read).
//
// Apply returns []Result, one per command packed into the entry. An entry
// with empty data is a marker (new leaders commit one to start their term)
// and returns nil. Configuration entries reach the FSM too, because it is a
// BatchingFSM, and only advance the applied index.
type FSM struct {
	logger hclog.Logger

	mu      sync.RWMutex
	state   *State
	term    uint64        // term of the last applied entry, for snapshot headers
	applied chan struct{} // closed and replaced whenever the applied index moves

	halted   *HaltError                     // halt.go: set once an entry cannot be applied
	gapCheck func(first, last uint64) error // halt.go
	onHalt   func(*HaltError)
	onCheck  func(index uint64, st *State) // consistency.go
	// restorePos places a snapshot whose header has no index (halt.go).
	restorePos func() (index, term uint64, ok bool)
}

var (
	_ raft.FSM         = (*FSM)(nil)
	_ raft.BatchingFSM = (*FSM)(nil)
)

// NewFSM returns an adapter over the initial state. logger may be nil.
func NewFSM(logger hclog.Logger) *FSM {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &FSM{logger: logger, state: New(), applied: make(chan struct{})}
}

// Apply applies one committed log entry.
func (f *FSM) Apply(l *raft.Log) interface{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.notifyLocked()
	return f.applyLocked(l)
}

// ApplyBatch applies consecutive committed entries under one lock.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.notifyLocked()
	for i, l := range logs {
		out[i] = f.applyLocked(l)
	}
	return out
}

func (f *FSM) applyLocked(l *raft.Log) interface{} {
	if f.halted != nil {
		return f.halted // halt.go: nothing more is applied
	}
	if err := f.checkNextLocked(l.Index); err != nil {
		return f.haltLocked(l.Index, err.Error(), err)
	}
	if l.Type != raft.LogCommand || len(l.Data) == 0 {
		f.term = l.Term
		f.state.Advance(l.Index)
		return nil
	}
	lost := f.state.FactsLost()
	res := f.applyEntryLocked(l) // halt.go
	if n := f.state.FactsLost(); n > lost {
		// hard_max_facts: a consumer fell so far behind that retention
		// trimmed facts it had not read (fsm/retention.go).
		f.logger.Error("facts trimmed before a consumer acknowledged them", "index", l.Index, "lost", n-lost, "lost_total", n)
	}
	return res
}

func (f *FSM) notifyLocked() {
	close(f.applied)
	f.applied = make(chan struct{})
}

// Read runs fn with the state under a read lock. fn must not keep references
// into the state after it returns, nor modify it.
func (f *FSM) Read(fn func(s *State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.state)
}

// View returns a point-in-time copy of the state in O(1), for reads that
// walk much of it (digests, large listings) without holding the lock.
func (f *FSM) View() *State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state.Clone()
}

// AppliedIndex is the index of the last entry the state has applied.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.AppliedIndex()
}

// WaitApplied blocks until the state has applied index, or ctx ends.
func (f *FSM) WaitApplied(ctx context.Context, index uint64) error {
	for {
		f.mu.RLock()
		done, ch := f.state.AppliedIndex() >= index, f.applied
		f.mu.RUnlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Snapshot captures the state in O(1) (a copy-on-write clone); Persist then
// streams it while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.halted != nil {
		// Raft would file the snapshot under its own applied index, which
		// this state never reached.
		return nil, fmt.Errorf("%w: no snapshot: %v", ErrHalted, f.halted)
	}
	return &fsmSnapshot{state: f.state.Clone(), term: f.term}, nil
}

// Restore replaces the state with a snapshot's. The snapshot is decoded and
// validated in full first; on any error the current state stays.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, hdr, err := Restore(rc)
	if err != nil {
		f.logger.Error("refusing snapshot", "error", err)
		return err
	}
	f.mu.Lock()
	pos := f.restorePos
	f.mu.Unlock()
	if hdr.Index == 0 && pos != nil {
		// A restored backup (UnpositionSnapshot): its state belongs at the
		// index Raft filed it under.
		if index, term, ok := pos(); ok {
			st.Advance(index)
			hdr.Index, hdr.Term = index, term
		}
	}
	f.mu.Lock()
	f.state, f.term = st, hdr.Term
	if f.halted != nil {
		f.logger.Warn("a snapshot replaced the state of this halted replica; applying again", "index", hdr.Index, "halted_at", f.halted.Index)
		f.halted = nil
	}
	f.notifyLocked()
	f.mu.Unlock()
	f.logger.Info("restored snapshot", "index", hdr.Index, "term", hdr.Term)
	return nil
}

type fsmSnapshot struct {
	state *State
	term  uint64
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.state.Snapshot(sink, s.term); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
