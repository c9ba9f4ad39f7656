package cluster

import "github.com/hashicorp/raft"

// detachedLogs sits between Raft and its raft.LogCache and hands the cache
// copies of the entries it stores. On the leader, Raft stores pointers to
// the Log inside each apply future, and the future also holds the FSM's
// response: for a packed entry, the results of up to MaxBatchCommands
// commands (every delegation's receipt and witness). The cache keeps its
// last 512 entries, and through those pointers it would keep 512 entries'
// results alive too: hundreds of MiB under load, all of it scanned by every
// GC cycle. A copy of the Log struct (its data shared, not copied) lets the
// futures go once they are answered.
type detachedLogs struct {
	*raft.LogCache
}

func (d detachedLogs) StoreLog(l *raft.Log) error {
	return d.StoreLogs([]*raft.Log{l})
}

func (d detachedLogs) StoreLogs(logs []*raft.Log) error {
	copies := make([]raft.Log, len(logs))
	ptrs := make([]*raft.Log, len(logs))
	for i, l := range logs {
		copies[i] = *l
		ptrs[i] = &copies[i]
	}
	return d.LogCache.StoreLogs(ptrs)
}

var _ raft.MonotonicLogStore = detachedLogs{}
