package fsm

// Replica consistency checks (etcd's corruption check, CockroachDB's
// consistency checker): the leader proposes a ConsistencyCheck entry, every
// replica digests its state as of that entry, and the leader compares the
// digests (the transport package collects them). The entry changes nothing
// but the applied index, so every replica that applies it is at the same
// point of the log: equal states must give equal digests there.

// TypeConsistencyCheck is in the log format like the other types
// (command.go); 11 to 13 belong to fact retention.
const TypeConsistencyCheck Type = 20

// ConsistencyCheck asks every replica to digest its state at this entry. It
// carries no payload: the entry's index names the check.
type ConsistencyCheck struct{}

func (*ConsistencyCheck) Type() Type { return TypeConsistencyCheck }

// OnCheck installs fn, called for every applied entry that holds a
// ConsistencyCheck, with the entry's index and an O(1) copy-on-write clone
// of the state after the whole entry applied. fn runs on the apply path
// under the FSM's lock: it must only hand the clone off (a non-blocking
// send) and digest it elsewhere, so a check never delays Apply by the cost
// of hashing the state. The clone is private to fn: Apply goes on
// mutating the live state without touching it.
func (f *FSM) OnCheck(fn func(index uint64, st *State)) {
	f.mu.Lock()
	f.onCheck = fn
	f.mu.Unlock()
}

// checkEntryLocked hands the state after entry index to the check hook when
// the entry holds a consistency check. It reads the state, never changes
// it: Apply's results are the same with or without a hook.
func (f *FSM) checkEntryLocked(index uint64, decoded []Decoded) {
	if f.onCheck == nil {
		return
	}
	for i := range decoded {
		if _, ok := decoded[i].Command.Op.(*ConsistencyCheck); ok {
			f.onCheck(index, f.state.Clone())
			return
		}
	}
}
