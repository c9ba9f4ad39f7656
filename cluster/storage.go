package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// What a data dir holds, and how this package fails when it is unusable:
// every problem is an error that names the file and says what to do, before
// Raft runs, and nothing in the dir is changed on the way out.
//
//	node-id      the node id the dir belongs to (checkIdentity)
//	cluster-id   the cluster the node belongs to (identity.go)
//	raft.db      Raft's log and stable store (bbolt)
//	snapshots/   Raft snapshots (the snapshot container format)

// checkWritable makes sure the node can create, write and sync a file in
// dir: a read-only mount, missing permissions or a full disk show up here
// with the reason, instead of later inside Raft.
func checkWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".write-check-*")
	if err != nil {
		return diskError(dir, err)
	}
	name := f.Name()
	defer os.Remove(name)
	_, err = f.Write(make([]byte, 4096))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return diskError(dir, err)
	}
	return nil
}

// diskError explains a file system error about the data dir.
func diskError(dir string, err error) error {
	switch {
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("cluster: data dir %s is on a read-only file system: %w (reconfd must write its Raft log there; mount it read-write or pick another --data-dir)", dir, err)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("cluster: data dir %s is not writable by this user (uid %d): %w (fix its owner or mode, e.g. chown -R to the reconfd user)", dir, os.Getuid(), err)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("cluster: data dir %s has no space left: %w (free some space; nothing was written)", dir, err)
	}
	return fmt.Errorf("cluster: data dir %s: %w", dir, err)
}

// boltCheckTimeout bounds the read-only check of raft.db at start.
const boltCheckTimeout = 15 * time.Second

// openBolt opens raft.db. A file bbolt cannot read (corrupt, truncated, not
// a bolt file) or one another process holds is refused with an explanation;
// a panic inside bbolt on a damaged file becomes an error too.
func openBolt(dir string) (store *raftboltdb.BoltStore, err error) {
	path := filepath.Join(dir, "raft.db")
	// bbolt would quietly make a new database out of an empty file; an
	// empty raft.db is a lost log, not a new node.
	if fi, err := os.Stat(path); err == nil && fi.Size() == 0 {
		return nil, corruptStore(path, errors.New("the file is empty"))
	}
	if err := checkBoltFile(path, boltCheckTimeout); err != nil { // boltcheck.go
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			store, err = nil, corruptStore(path, fmt.Errorf("bbolt panicked reading it: %v", r))
		}
	}()
	store, err = raftboltdb.New(raftboltdb.Options{
		Path: path,
		// The freelist is rebuilt on open instead of rewritten on every
		// commit (consul#12141).
		BoltOptions: &bbolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true},
	})
	switch {
	case err == nil:
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("cluster: %s is locked by another process: is another reconfd running on this data dir? (%w)", path, err)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrVersionMismatch), errors.Is(err, bolterrors.ErrChecksum),
		strings.Contains(err.Error(), "invalid"), strings.Contains(err.Error(), "file size too small"):
		return nil, corruptStore(path, err)
	default:
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return nil, diskError(dir, fmt.Errorf("open %s: %w", path, err))
		}
		return nil, fmt.Errorf("cluster: open %s: %w", path, err)
	}
	// Read what Raft reads first, so that damage shows here.
	if _, err := store.FirstIndex(); err != nil {
		store.Close()
		return nil, corruptStore(path, err)
	}
	if _, err := store.LastIndex(); err != nil {
		store.Close()
		return nil, corruptStore(path, err)
	}
	return store, nil
}

func corruptStore(path string, err error) error {
	return fmt.Errorf("cluster: %s is not a readable Raft log store (%v). The file is damaged or not a bbolt file; "+
		"it was left as it is. Recover this node: move its data dir away and start it with --join to copy the state from the cluster, "+
		"or restore a backup (docs/operations.md, \"Corrupt data\")", path, err)
}

// explainStartError adds what to do to Raft's start-up errors.
func explainStartError(dir string, err error) error {
	if strings.Contains(err.Error(), "failed to load any existing snapshots") {
		return fmt.Errorf("cluster: start raft: no snapshot in %s could be restored (each was refused; the log above says why): %w. "+
			"The snapshots are damaged; move the data dir away and re-join the node, or restore a backup (docs/operations.md, \"Corrupt data\")",
			filepath.Join(dir, "snapshots"), err)
	}
	return fmt.Errorf("cluster: start raft: %w", err)
}

// openSnapshots opens the snapshot store (two retained).
func openSnapshots(dir string, logger hclog.Logger) (*raft.FileSnapshotStore, error) {
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, logger.Named("snapshot"))
	if err != nil {
		return nil, diskError(dir, fmt.Errorf("snapshot store: %w", err))
	}
	return snaps, nil
}

// watchedLogs records the outcome of the log store's writes, so that a node
// that cannot write its data dir (full disk, I/O error) can say so in its
// answers and readiness instead of only "no leader".
type watchedLogs struct {
	raft.LogStore
	n *Node
}

func (w *watchedLogs) StoreLog(l *raft.Log) error {
	return w.n.noteStorage(w.LogStore.StoreLog(l))
}

func (w *watchedLogs) StoreLogs(logs []*raft.Log) error {
	return w.n.noteStorage(w.LogStore.StoreLogs(logs))
}

type storageFailure struct {
	err error
	at  time.Time
}

func (n *Node) noteStorage(err error) error {
	if err == nil {
		if n.storageErr.Load() != nil {
			n.storageErr.Store(nil)
			n.logger.Info("the data dir is writable again")
		}
		return nil
	}
	n.storageErr.Store(&storageFailure{err: err, at: time.Now()})
	return err
}

// StorageError is the last error writing the Raft log, if the last write
// failed (a full or failing disk); nil once a write succeeds again.
func (n *Node) StorageError() error {
	f := n.storageErr.Load()
	if f == nil {
		return nil
	}
	return fmt.Errorf("cannot write the Raft log in %s since %s: %w", n.cfg.DataDir, f.at.UTC().Format(time.RFC3339), f.err)
}

// IsMonotonic passes through what the wrapped store says (raft-wal is a
// raft.MonotonicLogStore; LogCache asks its store).
func (w *watchedLogs) IsMonotonic() bool {
	m, ok := w.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

var _ raft.MonotonicLogStore = (*watchedLogs)(nil)
