package cluster

import (
	"bytes"
	"errors"
	"testing"

	"github.com/hashicorp/raft"
)

// These tests put the cache in front of raft's in-memory store: they test
// the cache, not a store.

func entries(from, n int, size int) []*raft.Log {
	var out []*raft.Log
	for i := 0; i < n; i++ {
		idx := uint64(from + i)
		out = append(out, &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: bytes.Repeat([]byte{byte(idx)}, size)})
	}
	return out
}

// cached reports which indexes the cache itself holds.
func cached(c *logCache) (first uint64, count, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first, c.count, c.bytes
}

func TestLogCacheBoundedByBytes(t *testing.T) {
	store := raft.NewInmemStore()
	c := newLogCache(store, 512, 1<<20)
	for i := 1; i <= 200; i += 10 {
		if err := c.StoreLogs(entries(i, 10, 100_000)); err != nil {
			t.Fatal(err)
		}
	}
	first, count, b := cached(c)
	if b > 1<<20 || count == 0 || count > 11 {
		t.Fatalf("cache holds %d entries, %d bytes; want at most 1 MiB", count, b)
	}
	if first+uint64(count)-1 != 200 {
		t.Fatalf("cache holds %d..%d, want the newest ending at 200", first, first+uint64(count)-1)
	}
	// Every index is still readable: old ones from the store.
	for _, idx := range []uint64{1, 100, first, 200} {
		var l raft.Log
		if err := c.GetLog(idx, &l); err != nil || l.Index != idx || l.Data[0] != byte(idx) {
			t.Fatalf("GetLog(%d) = %d, %v", idx, l.Index, err)
		}
	}
}

func TestLogCacheBoundedByCount(t *testing.T) {
	c := newLogCache(raft.NewInmemStore(), 8, 1<<30)
	if err := c.StoreLogs(entries(1, 20, 10)); err != nil {
		t.Fatal(err)
	}
	if first, count, _ := cached(c); first != 13 || count != 8 {
		t.Fatalf("cache holds %d from %d, want 8 from 13", count, first)
	}
}

func TestLogCacheFollowsOverwrites(t *testing.T) {
	store := raft.NewInmemStore()
	c := newLogCache(store, 64, 1<<20)
	if err := c.StoreLogs(entries(1, 10, 10)); err != nil {
		t.Fatal(err)
	}
	// A follower drops a conflicting suffix and writes another entry 8.
	if err := c.DeleteRange(8, 10); err != nil {
		t.Fatal(err)
	}
	repl := &raft.Log{Index: 8, Term: 2, Type: raft.LogCommand, Data: []byte("new")}
	if err := c.StoreLog(repl); err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	if err := c.GetLog(8, &l); err != nil || string(l.Data) != "new" || l.Term != 2 {
		t.Fatalf("entry 8 after overwrite: %+v %v", l, err)
	}
	if err := c.GetLog(9, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("entry 9 after the suffix was deleted: %+v %v", l, err)
	}
	// Storing a non-consecutive index without a delete also restarts.
	if err := c.StoreLog(&raft.Log{Index: 20, Term: 2, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if first, count, _ := cached(c); first != 20 || count != 1 {
		t.Fatalf("cache holds %d from %d after a jump, want 1 from 20", count, first)
	}
}

// The cache keeps copies of the Log structs: Raft's apply futures hold
// pointers to theirs, and with them the FSM's results.
func TestLogCacheKeepsCopies(t *testing.T) {
	c := newLogCache(raft.NewInmemStore(), 64, 1<<20)
	l := &raft.Log{Index: 1, Term: 1, Data: []byte("a")}
	if err := c.StoreLog(l); err != nil {
		t.Fatal(err)
	}
	l.Term = 99
	var got raft.Log
	if err := c.GetLog(1, &got); err != nil || got.Term != 1 {
		t.Fatalf("cached entry changed with the caller's struct: %+v %v", got, err)
	}
}

type failingStore struct{ raft.LogStore }

func (failingStore) StoreLogs([]*raft.Log) error { return errors.New("disk full") }

func TestLogCacheCachesNothingTheStoreRefused(t *testing.T) {
	c := newLogCache(failingStore{raft.NewInmemStore()}, 64, 1<<20)
	if err := c.StoreLogs(entries(1, 3, 10)); err == nil {
		t.Fatal("store error not returned")
	}
	var l raft.Log
	if err := c.GetLog(1, &l); err == nil {
		t.Fatal("an entry the store refused was served from the cache")
	}
}
