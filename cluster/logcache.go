package cluster

import (
	"sync"

	"github.com/hashicorp/raft"
)

// logCache keeps the newest log entries in memory, in front of the log
// store, so that replication and the FSM read what was just written
// without touching the disk. It is bounded by bytes as well as entries:
// raft.LogCache holds a fixed count, and with group commit one entry packs
// up to MaxBatchBytes (1 MiB), so 512 of them could pin half a GiB, and a
// node's memory grew with its load until the cache filled.
//
// It stores copies of the raft.Log structs it is handed (their data
// shared, not copied): on the leader Raft stores pointers to the Log
// inside each apply future, and the future also holds the FSM's response,
// the results of up to MaxBatchCommands commands; a cached pointer would
// keep those alive, and scanned by every GC cycle, long after the futures
// were answered.
type logCache struct {
	store    raft.LogStore
	maxBytes int

	mu    sync.Mutex
	ring  []raft.Log // ring[(head+i)%len(ring)] has index first+i
	head  int
	count int
	first uint64
	bytes int
}

// Entry overhead beyond its data, roughly what a raft.Log costs in memory.
const logEntryOverhead = 96

func newLogCache(store raft.LogStore, maxEntries, maxBytes int) *logCache {
	return &logCache{store: store, maxBytes: maxBytes, ring: make([]raft.Log, max(maxEntries, 1))}
}

func entrySize(l *raft.Log) int { return len(l.Data) + len(l.Extensions) + logEntryOverhead }

func (c *logCache) GetLog(index uint64, out *raft.Log) error {
	c.mu.Lock()
	if c.count > 0 && index >= c.first && index < c.first+uint64(c.count) {
		*out = c.ring[(c.head+int(index-c.first))%len(c.ring)]
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	return c.store.GetLog(index, out)
}

func (c *logCache) StoreLog(l *raft.Log) error { return c.StoreLogs([]*raft.Log{l}) }

// StoreLogs writes to the store first and caches only what it accepted.
func (c *logCache) StoreLogs(logs []*raft.Log) error {
	if err := c.store.StoreLogs(logs); err != nil {
		c.mu.Lock()
		c.reset()
		c.mu.Unlock()
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range logs {
		if c.count > 0 && l.Index != c.first+uint64(c.count) {
			// Not the next index (a follower overwriting a conflicting
			// suffix): start over from here.
			c.reset()
		}
		if c.count == len(c.ring) {
			c.dropOldest()
		}
		if c.count == 0 {
			c.first = l.Index
		}
		c.ring[(c.head+c.count)%len(c.ring)] = *l
		c.count++
		c.bytes += entrySize(l)
		for c.count > 1 && c.bytes > c.maxBytes {
			c.dropOldest()
		}
	}
	return nil
}

func (c *logCache) dropOldest() {
	c.bytes -= entrySize(&c.ring[c.head])
	c.ring[c.head] = raft.Log{} // let its data go
	c.head = (c.head + 1) % len(c.ring)
	c.count--
	c.first++
}

func (c *logCache) reset() {
	clear(c.ring)
	c.head, c.count, c.first, c.bytes = 0, 0, 0, 0
}

func (c *logCache) DeleteRange(min, max uint64) error {
	c.mu.Lock()
	c.reset()
	c.mu.Unlock()
	return c.store.DeleteRange(min, max)
}

func (c *logCache) FirstIndex() (uint64, error) { return c.store.FirstIndex() }
func (c *logCache) LastIndex() (uint64, error)  { return c.store.LastIndex() }

// IsMonotonic passes on the store's answer (raft-wal's logs only grow at
// the tail and are truncated at the head; Raft then restores a snapshot
// instead of deleting a suffix).
func (c *logCache) IsMonotonic() bool {
	m, ok := c.store.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

var _ raft.MonotonicLogStore = (*logCache)(nil)
