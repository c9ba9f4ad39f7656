package cluster

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/reconf/reconf/snapshot"
)

// checkedSnapshots is Raft's file snapshot store with one more check on
// Open: the index and term in a snapshot's meta.json (what Raft believes the
// snapshot covers, and where it resumes the log) must be the ones in the
// snapshot container's own header (what the state really covers). Raft reads
// only meta.json; an index edited there, or a meta.json that belongs to
// another snapshot, would make it skip committed entries silently. A
// mismatch fails Open with a reason, so Raft moves on to the next older
// snapshot (and the start-up check, checkLogReachesSnapshot, says so if the
// log cannot bridge the gap from there).
//
// A container whose header index is 0 was written by Node.Restore from a
// backup (fsm.UnpositionSnapshot): Raft chooses its index, so it matches any
// meta.json; the FSM places the state at the index of the snapshot it was
// last opened from (lastOpened), which is exact at start-up and for
// installs on a follower.
type checkedSnapshots struct {
	*raft.FileSnapshotStore
	dir string

	mu         sync.Mutex
	lastOpened raft.SnapshotMeta
}

// ErrSnapshotMismatch: a snapshot's meta.json disagrees with its container.
var ErrSnapshotMismatch = errors.New("snapshot meta.json does not match the snapshot")

func (s *checkedSnapshots) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.FileSnapshotStore.Open(id)
	if err != nil {
		return nil, nil, err
	}
	if err := s.checkHeader(meta); err != nil {
		rc.Close()
		return nil, nil, err
	}
	s.mu.Lock()
	s.lastOpened = *meta
	s.mu.Unlock()
	return meta, rc, nil
}

// checkHeader compares meta with the container header of its state.bin.
func (s *checkedSnapshots) checkHeader(meta *raft.SnapshotMeta) error {
	path := filepath.Join(s.dir, "snapshots", meta.ID, "state.bin")
	hdr, err := readSnapshotHeader(path)
	if err != nil {
		return err
	}
	if hdr.Index == 0 || (hdr.Index == meta.Index && hdr.Term == meta.Term) {
		return nil
	}
	return fmt.Errorf("%w: %s says index %d term %d, but the snapshot's header says index %d term %d; "+
		"the snapshot is not used", ErrSnapshotMismatch, filepath.Join(s.dir, "snapshots", meta.ID, "meta.json"), meta.Index, meta.Term, hdr.Index, hdr.Term)
}

func readSnapshotHeader(path string) (snapshot.Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return snapshot.Header{}, err
	}
	defer f.Close()
	r, err := snapshot.NewReader(f)
	if err != nil {
		return snapshot.Header{}, fmt.Errorf("%s: %w", path, err)
	}
	return r.Header(), nil
}

// position is where the FSM places a restored backup (fsm.SetRestorePosition).
func (s *checkedSnapshots) position() (index, term uint64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastOpened.Index, s.lastOpened.Term, s.lastOpened.ID != ""
}
