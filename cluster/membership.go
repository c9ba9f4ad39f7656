package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/hashicorp/raft"

	"github.com/reconf/reconf/fsm"
	"github.com/reconf/reconf/snapshot"
)

// Server is one member of the Raft configuration.
type Server struct {
	ID       string
	RaftAddr string
	Voter    bool
}

// Status is what this node knows of the cluster.
type Status struct {
	ID           string
	State        string // leader, follower, candidate, shutdown
	LeaderID     string
	LeaderAddr   string
	Term         uint64
	CommitIndex  uint64
	AppliedIndex uint64 // applied to the FSM
	LastIndex    uint64
	LastContact  time.Time // with the leader; zero on the leader
	Servers      []Server
}

// Status reports this node's view.
func (n *Node) Status() (Status, error) {
	lid, laddr := n.Leader()
	st := Status{
		ID:           n.cfg.ID,
		State:        stateName(n.raft.State()),
		LeaderID:     lid,
		LeaderAddr:   laddr,
		Term:         n.raft.CurrentTerm(),
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.fsm.AppliedIndex(),
		LastIndex:    n.raft.LastIndex(),
	}
	if st.State != "leader" {
		st.LastContact = n.raft.LastContact()
	}
	servers, err := n.Servers()
	st.Servers = servers
	return st, err
}

func stateName(s raft.RaftState) string {
	switch s {
	case raft.Leader:
		return "leader"
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	}
	return "shutdown"
}

// Servers lists the current Raft configuration.
func (n *Node) Servers() ([]Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	var out []Server
	for _, s := range f.Configuration().Servers {
		out = append(out, Server{ID: string(s.ID), RaftAddr: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out, nil
}

// Join adds a server (leader only). Joining again with the same id and
// address is a no-op; a server that comes back under the same id with a new
// address, or a new id on an old address, replaces the stale entry.
func (n *Node) Join(ctx context.Context, id, raftAddr string, voter bool) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	for _, s := range f.Configuration().Servers {
		sameID, sameAddr := string(s.ID) == id, string(s.Address) == raftAddr
		if sameID && sameAddr && (s.Suffrage == raft.Voter) == voter {
			return nil
		}
		if sameID || sameAddr {
			if err := n.raft.RemoveServer(s.ID, 0, timeoutOf(ctx)).Error(); err != nil {
				return fmt.Errorf("remove stale member %s: %w", s.ID, classify(err))
			}
		}
	}
	var fut raft.IndexFuture
	if voter {
		fut = n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, timeoutOf(ctx))
	} else {
		fut = n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, timeoutOf(ctx))
	}
	if err := fut.Error(); err != nil {
		return classify(err)
	}
	n.logger.Info("member joined", "id", id, "addr", raftAddr, "voter", voter)
	return nil
}

// ErrUnknownMember is returned for a server id not in the configuration.
var ErrUnknownMember = errors.New("no such member")

// Remove takes a server out of the configuration (leader only).
func (n *Node) Remove(ctx context.Context, id string) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	servers, err := n.Servers()
	if err != nil {
		return err
	}
	found := false
	for _, s := range servers {
		found = found || s.ID == id
	}
	if !found {
		return fmt.Errorf("%w: %s", ErrUnknownMember, id)
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, timeoutOf(ctx)).Error(); err != nil {
		return classify(err)
	}
	n.logger.Info("member removed", "id", id)
	return nil
}

// TransferLeadership hands leadership to id, or to the most caught-up voter
// when id is empty (leader only).
func (n *Node) TransferLeadership(ctx context.Context, id string) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	var fut raft.Future
	if id == "" {
		fut = n.raft.LeadershipTransfer()
	} else {
		servers, err := n.Servers()
		if err != nil {
			return err
		}
		addr := ""
		for _, s := range servers {
			if s.ID == id {
				addr = s.RaftAddr
			}
		}
		if addr == "" {
			return fmt.Errorf("%w: %s", ErrUnknownMember, id)
		}
		fut = n.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr))
	}
	return fut.Error()
}

// SnapshotNow takes a snapshot and compacts the log.
func (n *Node) SnapshotNow() error {
	return n.raft.Snapshot().Error()
}

// Backup takes a snapshot and streams its file (the snapshot container
// format) to w.
func (n *Node) Backup(w io.Writer) (int64, error) {
	f := n.raft.Snapshot()
	if err := f.Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return 0, fmt.Errorf("take snapshot: %w", err)
	}
	var rc io.ReadCloser
	if f.Error() == nil {
		_, r, err := f.Open()
		if err != nil {
			return 0, err
		}
		rc = r
	} else {
		// Nothing applied since the last snapshot: send the newest one.
		_, r, err := n.latestSnapshot()
		if err != nil {
			return 0, err
		}
		rc = r
	}
	defer rc.Close()
	return io.Copy(w, rc)
}

func (n *Node) latestSnapshot() (*raft.SnapshotMeta, io.ReadCloser, error) {
	store, err := raft.NewFileSnapshotStoreWithLogger(n.cfg.DataDir, 2, n.logger.Named("snapshot"))
	if err != nil {
		return nil, nil, err
	}
	metas, err := store.List()
	if err != nil {
		return nil, nil, err
	}
	if len(metas) == 0 {
		return nil, nil, errors.New("no snapshot exists yet")
	}
	return store.Open(metas[0].ID)
}

// ErrInvalidBackup wraps why an uploaded backup was refused.
var ErrInvalidBackup = errors.New("invalid backup")

// Restore makes the cluster adopt the state in a backup file (leader only).
// The upload is spooled to the data dir and validated in full (container
// checksums and a complete decode of the state) before Raft sees it, so a bad
// file is refused and the current state stays.
func (n *Node) Restore(ctx context.Context, r io.Reader) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	tmp, err := os.CreateTemp(n.cfg.DataDir, "restore-*.snap")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	size, err := io.Copy(tmp, r)
	if err != nil {
		return fmt.Errorf("receive backup: %w", err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	hdr, _, err := snapshot.Verify(tmp)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidBackup, err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	// Decode it in full, and write it without its old Raft position: Raft
	// files it under an index of its own choosing, where the state then
	// belongs (fsm.UnpositionSnapshot, snapstore.go).
	placed, err := os.CreateTemp(n.cfg.DataDir, "restore-*.snap")
	if err != nil {
		return err
	}
	defer os.Remove(placed.Name())
	defer placed.Close()
	if err := fsm.UnpositionSnapshot(tmp, placed); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return err
		}
		return fmt.Errorf("%w: %v", ErrInvalidBackup, err)
	}
	placedSize, err := placed.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if _, err := placed.Seek(0, io.SeekStart); err != nil {
		return err
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: placedSize}
	if err := n.raft.Restore(meta, placed, timeoutOf(ctx)); err != nil {
		return classify(err)
	}
	// Commit a marker so every replica's applied index moves past the
	// restore point and reads wait for nothing that will never come.
	if err := n.raft.Apply(nil, timeoutOf(ctx)).Error(); err != nil {
		return classify(err)
	}
	n.logger.Info("restored backup", "bytes", size, "backup_index", hdr.Index, "backup_term", hdr.Term)
	return nil
}

func timeoutOf(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d > 0 {
			return d
		}
		return time.Millisecond
	}
	return 30 * time.Second
}

// Digest returns the applied index and the state digest, read together.
func (n *Node) Digest() (uint64, [32]byte) {
	v := n.fsm.View()
	return v.AppliedIndex(), v.Digest()
}
