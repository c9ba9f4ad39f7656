package cluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/hashicorp/raft"

	"github.com/reconf/reconf/fsm"
	"github.com/reconf/reconf/snapshot"
)

// Integrity checks of this replica: the gaps the FSM sees between entries,
// what the node does once its FSM halts (fsm/halt.go), whether the log on
// disk reaches a usable snapshot at start, and the version gate every
// proposal passes.

// ErrHalted: this replica stopped applying the log (fsm.HaltError says why);
// it serves no reads and takes no writes until it is replaced.
var ErrHalted = errors.New("replica halted")

// ErrUpgradeInProgress: a command was not proposed because some member of
// the configuration cannot decode it (Gate).
var ErrUpgradeInProgress = errors.New("upgrade in progress")

// maxGapCheck bounds the indexes one gap check reads. Raft hands the FSM
// every entry but a new leader's no-op and barriers, so a real gap is a few
// entries; a longer one is refused without reading it all.
const maxGapCheck = 1 << 16

// checkGap is the FSM's gap check (fsm.FSM.SetGapCheck): every index in
// [first, last] must be an entry Raft does not hand to the FSM, or one
// compacted away under a snapshot that covers it.
func (n *Node) checkGap(first, last uint64) error {
	if last-first >= maxGapCheck {
		return fmt.Errorf("%d entries (%d to %d) were skipped", last-first+1, first, last)
	}
	var l raft.Log
	for i := first; i <= last; i++ {
		err := n.store.GetLog(i, &l)
		switch {
		case err == nil:
			if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
				return fmt.Errorf("entry %d (%s, term %d) is in the log but was never applied", i, l.Type, l.Term)
			}
		case errors.Is(err, raft.ErrLogNotFound):
			if !n.snapshotCovers(i) {
				return fmt.Errorf("entry %d is missing from the log and no snapshot covers it", i)
			}
		default:
			return fmt.Errorf("read entry %d: %w", i, err)
		}
	}
	return nil
}

// snapshotCovers reports whether the newest snapshot covers index.
func (n *Node) snapshotCovers(index uint64) bool {
	metas, err := n.snaps.List()
	return err == nil && len(metas) > 0 && metas[0].Index >= index
}

// Halted is why this replica stopped applying the log, or nil.
func (n *Node) Halted() error {
	if h := n.fsm.Halted(); h != nil {
		return fmt.Errorf("%w: %w", ErrHalted, h)
	}
	return nil
}

// onHalt runs once the FSM halts: a halted leader hands leadership to
// another voter, since it can neither confirm writes nor serve reads.
func (n *Node) onHalt(*fsm.HaltError) {
	select {
	case <-n.opened:
	case <-n.stop:
		return
	}
	n.stepDownIfHalted()
}

func (n *Node) stepDownIfHalted() {
	if n.fsm.Halted() == nil || n.raft.State() != raft.Leader || n.voters() < 2 {
		return
	}
	if err := n.raft.LeadershipTransfer().Error(); err != nil {
		n.logger.Warn("halted leader: leadership transfer failed", "error", err)
	}
}

// checkLogReachesSnapshot refuses to start a node whose log does not reach
// back to a snapshot Raft can restore: Raft would restore that snapshot,
// then panic ("log not found") on the first missing entry, on every start.
// It opens the snapshots the way Raft does (newest first, meta.json checked
// against the container, every checksum read) but only when the log does
// not start at its beginning.
func checkLogReachesSnapshot(dir string, store logStore, snaps *checkedSnapshots) error {
	first, err := store.FirstIndex()
	if err != nil {
		return err
	}
	last, err := store.LastIndex()
	if err != nil {
		return err
	}
	if last == 0 || first <= 1 {
		return nil // no log, or one that starts at the beginning
	}
	metas, err := snaps.List()
	if err != nil {
		return fmt.Errorf("cluster: list snapshots in %s: %w", filepath.Join(dir, "snapshots"), err)
	}
	var refused []string
	for _, m := range metas {
		if err := usableSnapshot(snaps, m.ID); err != nil {
			refused = append(refused, fmt.Sprintf("%s: %v", m.ID, err))
			continue
		}
		if m.Index+1 >= first {
			return nil // Raft restores this one and replays the log after it
		}
		return logGapError(dir, first, last, m.Index, refused)
	}
	return logGapError(dir, first, last, 0, refused)
}

func usableSnapshot(snaps *checkedSnapshots, id string) error {
	_, rc, err := snaps.Open(id)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, _, err = snapshot.Verify(rc)
	return err
}

func logGapError(dir string, first, last, snap uint64, refused []string) error {
	why := "there is no snapshot"
	if snap > 0 {
		why = fmt.Sprintf("the newest usable snapshot ends at entry %d", snap)
	}
	if len(refused) > 0 {
		why += " (refused: " + strings.Join(refused, "; ") + ")"
	}
	return fmt.Errorf("cluster: the Raft log in %s holds entries %d to %d, but %s: entries %d to %d are gone on this node and it cannot rebuild its state. "+
		"It was left as it is. Recover this node: move its data dir away and start it with --join to copy the state from the cluster, "+
		"or restore a backup (docs/operations.md, \"Corrupt data\")", dir, first, last, why, snap+1, first-1)
}

// Gate decides which commands a leader may propose and in which entry
// format, from what every member of the configuration decodes (the
// transport package's version gate implements it). Every proposal passes
// it, whoever proposes.
type Gate interface {
	// Check returns "" when every member decodes commands of type t, else
	// why not.
	Check(ctx context.Context, t fsm.Type) string
	// EntryFormat is the newest log entry format every member reads.
	EntryFormat() int
}

// SetGate installs the version gate. Without one, a node proposes every
// command in the newest entry format (a single-release cluster).
func (n *Node) SetGate(g Gate) {
	n.gate.Store(&g)
}

// gateCheck returns ErrUpgradeInProgress with the reason when the gate
// refuses cmd, or ErrHalted when this replica halted.
func (n *Node) gateCheck(ctx context.Context, t fsm.Type) error {
	if err := n.Halted(); err != nil {
		return err
	}
	g := n.gate.Load()
	if g == nil {
		return nil
	}
	if why := (*g).Check(ctx, t); why != "" {
		return fmt.Errorf("%w: %s", ErrUpgradeInProgress, why)
	}
	return nil
}

// entryFormat is the format of the next entry this leader proposes.
func (n *Node) entryFormat() int {
	g := n.gate.Load()
	if g == nil {
		return fsm.EntryFormat
	}
	switch f := (*g).EntryFormat(); {
	case f >= fsm.EntryFormatChecked:
		return fsm.EntryFormatChecked
	default:
		return fsm.EntryFormatUnchecked
	}
}
