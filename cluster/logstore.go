package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// Raft's log and stable store. Two implementations, chosen per data dir:
//
//	bolt  raft-boltdb/v2 in raft.db (storage.go): the default. A bbolt
//	      commit syncs twice (data, then the meta page), so every append
//	      costs two fsyncs.
//	wal   hashicorp/raft-wal in wal/: segment files written append-only, one
//	      fsync per append; raft-wal is also the stable store (term and
//	      vote, in its own small bbolt file wal/wal-meta.db, written only on
//	      elections), so there is no raft.db at all. Upstream still calls it
//	      experimental; it passes the same integration tests here.
//
// A data dir keeps the store it was created with: the log cannot be
// converted in place. To switch a node, remove it from the cluster, move its
// data dir away and let it join again with the other store; it gets the
// state by snapshot install.

// Log store names for Config.LogStore and reconfd --log-store.
const (
	LogStoreBolt = "bolt"
	LogStoreWAL  = "wal"
)

// logStore is what Raft needs from the store, plus closing it.
type logStore interface {
	raft.LogStore
	raft.StableStore
	Close() error
}

// dataDirStore reports which store a data dir holds: "bolt", "wal" or ""
// for none yet.
func dataDirStore(dir string) (string, error) {
	_, errBolt := os.Stat(filepath.Join(dir, "raft.db"))
	_, errWAL := os.Stat(filepath.Join(dir, "wal"))
	hasBolt, hasWAL := errBolt == nil, errWAL == nil
	switch {
	case hasBolt && hasWAL:
		return "", fmt.Errorf("cluster: data dir %s holds both a bolt log store (raft.db) and a raft-wal one (wal/); "+
			"one of them is left over from another node or a failed switch: move the data dir away and re-join the node", dir)
	case hasBolt:
		return LogStoreBolt, nil
	case hasWAL:
		return LogStoreWAL, nil
	}
	return "", nil
}

// openLogStore opens the data dir's log store. want is "bolt", "wal" or ""
// (whatever the dir holds; bolt for a new dir). A dir that holds the other
// store is refused: its log would be lost.
func openLogStore(dir, want string, logger hclog.Logger) (logStore, error) {
	switch want {
	case "", LogStoreBolt, LogStoreWAL:
	default:
		return nil, fmt.Errorf("cluster: log store %q: want %s or %s", want, LogStoreBolt, LogStoreWAL)
	}
	have, err := dataDirStore(dir)
	if err != nil {
		return nil, err
	}
	kind := want
	switch {
	case have != "" && want != "" && have != want:
		return nil, fmt.Errorf("cluster: data dir %s holds a %s log store, not %s: start the node with --log-store %s "+
			"(a data dir keeps its store; to switch, remove the node, move the dir away and join again)", dir, have, want, have)
	case have != "":
		kind = have
	case kind == "":
		kind = LogStoreBolt
	}
	if kind == LogStoreWAL {
		return openWAL(dir, logger)
	}
	store, err := openBolt(dir) // storage.go: clear errors for a damaged or locked file
	if err != nil {
		return nil, err
	}
	return store, nil
}

func openWAL(dir string, logger hclog.Logger) (logStore, error) {
	path := filepath.Join(dir, "wal")
	if err := os.MkdirAll(path, 0o750); err != nil {
		return nil, diskError(dir, err)
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	// raft-wal's meta file is a bbolt file opened without a timeout: a
	// second process on the same dir would hang. Take a lock first.
	lock, err := os.OpenFile(filepath.Join(path, "LOCK"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, diskError(dir, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("cluster: %s is locked by another process: is another reconfd running on this data dir? (%w)", path, err)
	}
	// raft-wal v0.4.0's Close leaves its meta file open (and locked), which
	// would hang a reopen in the same process: keep the meta store here and
	// close it ourselves.
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(path, wal.WithLogger(logger.Named("wal")), wal.WithMetaStore(meta))
	if err != nil {
		meta.Close()
		lock.Close()
		if errors.Is(err, os.ErrPermission) {
			return nil, diskError(dir, err)
		}
		return nil, fmt.Errorf("cluster: %s is not a readable raft-wal log store (%v); it was left as it is. "+
			"Recover this node: move its data dir away and start it with --join to copy the state from the cluster, "+
			"or restore a backup (docs/operations.md, \"Corrupt data\")", path, err)
	}
	st := &walStore{WAL: w, meta: meta, lock: lock}
	if _, err := w.LastIndex(); err != nil {
		st.Close()
		return nil, fmt.Errorf("cluster: %s: %w", path, err)
	}
	return st, nil
}

// walStore is raft-wal plus the lock on its dir. It is a
// raft.MonotonicLogStore (raft-wal can only append and truncate at the
// ends), which tells Raft to drop the whole log after installing a
// snapshot.
type walStore struct {
	*wal.WAL
	meta *metadb.BoltMetaDB
	lock *os.File
}

func (w *walStore) Close() error {
	err := w.WAL.Close()
	if e := w.meta.Close(); err == nil {
		err = e
	}
	w.lock.Close() // releases the flock
	return err
}

// GetLog refuses entries below the first index. raft-wal v0.4.0 truncates
// the head of the log by moving the first index and deletes a segment file
// only once all of it is below; until then it still returns the entries
// in front of the first index. Raft would then send a new follower the
// compacted entries instead of the snapshot that replaced them.
func (w *walStore) GetLog(index uint64, l *raft.Log) error {
	first, err := w.WAL.FirstIndex()
	if err != nil {
		return err
	}
	if index < first {
		return raft.ErrLogNotFound
	}
	return w.WAL.GetLog(index, l)
}

var _ raft.MonotonicLogStore = (*walStore)(nil)
