// Package cluster runs one reconf replica: hashicorp/raft over raft-boltdb
// stores on disk, the FSM, group commit of proposals, linearizable reads and
// membership changes. It knows nothing about HTTP: the network arrives as a
// raft.StreamLayer from the transport package.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/reconf/reconf/fsm"
)

// Errors callers branch on.
var (
	// ErrNotLeader: this node cannot serve the request because it does not
	// lead; forward it. The command was not applied.
	ErrNotLeader = errors.New("not the leader")
	// ErrUnknownOutcome: leadership was lost after the command was handed
	// to Raft; it may or may not be applied. Retry with the same request id.
	ErrUnknownOutcome = errors.New("leadership lost while committing: outcome unknown")
	// ErrShutdown: the node is stopping.
	ErrShutdown = errors.New("node is shutting down")
)

// Config describes one node. Zero durations and counts take the defaults
// noted on each field.
type Config struct {
	ID            string
	DataDir       string
	AdvertiseRaft string           // the address peers dial for Raft
	StreamLayer   raft.StreamLayer // carries Raft traffic (TCP, optionally TLS)
	Bootstrap     bool             // form a one-voter cluster if the data dir is empty
	Logger        hclog.Logger

	SnapshotThreshold uint64        // entries between snapshots; default 8192
	SnapshotInterval  time.Duration // how often to check; default 30s
	TrailingLogs      uint64        // entries kept after a snapshot; default 10240
	HeartbeatTimeout  time.Duration // default 1s
	ElectionTimeout   time.Duration // default 1s
	LeaderLease       time.Duration // default 500ms
	ApplyTimeout      time.Duration // bound on enqueueing a proposal; default 10s

	LogCacheBytes    int // newest log entries kept in memory, at most 512 of them; default 16 MiB
	MaxBatchCommands int // commands packed into one log entry; default 1024
	MaxBatchBytes    int // bytes packed into one log entry; default 1 MiB
	// Group commit (propose.go): at most MaxInflight entries are handed to
	// Raft and not yet applied; commands arriving meanwhile go out together
	// in the next entry. BatchWait optionally holds an entry open that long
	// for more commands. Defaults 1 and 0 (docs/performance.md: on a small
	// machine every extra entry in flight costs CPU that packing saves).
	MaxInflight int
	BatchWait   time.Duration
	// LogStore is "bolt" (raft-boltdb, the default for a new data dir) or
	// "wal" (raft-wal); empty means whichever the data dir holds
	// (logstore.go).
	LogStore string
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 10240
	}
	def(&c.SnapshotInterval, 30*time.Second)
	def(&c.HeartbeatTimeout, time.Second)
	def(&c.ElectionTimeout, time.Second)
	def(&c.LeaderLease, 500*time.Millisecond)
	def(&c.ApplyTimeout, 10*time.Second)
	if c.LogCacheBytes == 0 {
		c.LogCacheBytes = 16 << 20
	}
	if c.MaxBatchCommands == 0 {
		c.MaxBatchCommands = 1024
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = 1 << 20
	}
	if c.MaxInflight <= 0 {
		c.MaxInflight = 1
	}
}

// Node is one running replica.
type Node struct {
	cfg       Config
	logger    hclog.Logger
	raft      *raft.Raft
	fsm       *fsm.FSM
	store     logStore // logstore.go
	transport *raft.NetworkTransport
	proposer  *proposer

	// Linearizable reads (readindex.go): rounds of leadership
	// confirmation on the Raft stream, shared by concurrent reads.
	stream  *splitLayer
	confirm *confirmer
	readQ   readBatcher
	reads   readCounters
	view    atomic.Pointer[raft.Raft] // set once Raft runs; confirmations are answered from it

	// readyTerm is the term in which this node, as leader, has committed
	// its term-start marker; reads are served only when it equals the
	// current term (Raft §6.4).
	readyTerm atomic.Uint64
	readyMu   sync.Mutex
	readyCh   chan struct{} // closed when readyTerm changes

	clusterMu sync.Mutex
	clusterID string // identity.go

	storageErr atomic.Pointer[storageFailure] // storage.go

	snaps  *checkedSnapshots    // snapstore.go
	gate   atomic.Pointer[Gate] // check.go
	opened chan struct{}        // closed once raft is set
	checks *checkDigests        // consistency.go

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// Open starts a node with the state in cfg.DataDir.
func Open(cfg Config) (*Node, error) {
	cfg.setDefaults()
	if cfg.ID == "" || cfg.DataDir == "" || cfg.StreamLayer == nil || cfg.AdvertiseRaft == "" {
		return nil, errors.New("cluster: ID, DataDir, AdvertiseRaft and StreamLayer are required")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, diskError(cfg.DataDir, err)
	}
	if err := checkWritable(cfg.DataDir); err != nil {
		return nil, err
	}
	if err := checkIdentity(cfg.DataDir, cfg.ID); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	store, err := openLogStore(cfg.DataDir, cfg.LogStore, logger) // logstore.go
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, logger: logger, store: store, readyCh: make(chan struct{}), stop: make(chan struct{}), opened: make(chan struct{})}
	logs := newLogCache(&watchedLogs{LogStore: store, n: n}, 512, cfg.LogCacheBytes) // logcache.go
	fileSnaps, err := openSnapshots(cfg.DataDir, logger)
	if err != nil {
		store.Close()
		return nil, err
	}
	snaps := &checkedSnapshots{FileSnapshotStore: fileSnaps, dir: cfg.DataDir} // snapstore.go
	n.snaps = snaps
	if err := checkLogReachesSnapshot(cfg.DataDir, store, snaps); err != nil { // check.go
		store.Close()
		return nil, err
	}
	n.stream = newSplitLayer(cfg.StreamLayer, logger.Named("raft-stream"), n.serveConfirm)
	n.confirm = newConfirmer(n.stream.dialConfirm)
	n.readQ.run = n.readIndexRound
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  n.stream,
		MaxPool: 5,
		Timeout: 10 * time.Second,
		Logger:  logger.Named("raft-net"),
	})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = logger.Named("raft")
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLease
	rc.MaxAppendEntries = 256
	rc.BatchApplyCh = true

	f := fsm.NewFSM(logger.Named("fsm"))
	n.fsm = f
	f.SetGapCheck(n.checkGap) // check.go
	f.SetRestorePosition(snaps.position)
	f.OnHalt(n.onHalt)
	n.checks = newCheckDigests()
	f.OnCheck(n.checks.enqueue) // consistency.go
	r, err := raft.NewRaft(rc, f, logs, store, snaps, trans)
	if err != nil {
		trans.Close()
		store.Close()
		return nil, explainStartError(cfg.DataDir, err)
	}
	n.raft, n.transport = r, trans
	n.view.Store(r)
	close(n.opened)
	n.wg.Add(1)
	go n.digestChecks() // consistency.go
	n.proposer = newProposer(n)

	if cfg.Bootstrap {
		existing, err := raft.HasExistingState(logs, store, snaps)
		if err != nil {
			n.Shutdown(context.Background())
			return nil, fmt.Errorf("cluster: inspect state: %w", err)
		}
		if id, _ := readClusterID(cfg.DataDir); !existing && id != "" {
			// This dir belonged to a cluster and lost its Raft state:
			// bootstrapping would start a second cluster under its name.
			n.Shutdown(context.Background())
			return nil, fmt.Errorf("cluster: data dir %s belongs to cluster %s but has no Raft state (log store and snapshots are gone); "+
				"refusing to bootstrap a new cluster over it. Move the data dir away and re-join the node, or restore a backup (docs/operations.md, \"Corrupt data\")",
				cfg.DataDir, id)
		}
		if existing {
			logger.Info("data dir has state; --bootstrap is a no-op")
		} else {
			err := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
				ID: rc.LocalID, Address: raft.ServerAddress(cfg.AdvertiseRaft), Suffrage: raft.Voter,
			}}}).Error()
			if err != nil {
				n.Shutdown(context.Background())
				return nil, fmt.Errorf("cluster: bootstrap: %w", err)
			}
			logger.Info("bootstrapped a new cluster", "id", cfg.ID)
		}
	}
	if err := n.initClusterID(cfg.Bootstrap); err != nil {
		n.Shutdown(context.Background())
		return nil, err
	}
	n.wg.Add(1)
	go n.watchLeadership()
	return n, nil
}

// checkIdentity pins a data dir to one node id, so a dir copied to another
// node or an id typo fails at start instead of corrupting membership.
func checkIdentity(dir, id string) error {
	path := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return os.WriteFile(path, []byte(id+"\n"), 0o640)
	case err != nil:
		return fmt.Errorf("cluster: read %s: %w", path, err)
	}
	if got := string(trimNewline(b)); got != id {
		return fmt.Errorf("cluster: data dir %s belongs to node %q, not %q", dir, got, id)
	}
	return nil
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// watchLeadership commits a marker entry at the start of each term this
// node leads; until it is applied the node serves no linearizable read.
func (n *Node) watchLeadership() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case leader := <-n.raft.LeaderCh():
			if !leader {
				continue
			}
			if n.fsm.Halted() != nil {
				n.stepDownIfHalted() // check.go
				continue
			}
			term := n.raft.CurrentTerm()
			f := n.raft.Apply(nil, n.cfg.ApplyTimeout)
			if err := f.Error(); err != nil {
				n.logger.Warn("term-start marker not committed", "term", term, "error", err)
				continue
			}
			n.readyMu.Lock()
			n.readyTerm.Store(term)
			close(n.readyCh)
			n.readyCh = make(chan struct{})
			n.readyMu.Unlock()
			n.logger.Info("leading", "term", term, "index", f.Index())
		}
	}
}

// ID is this node's id.
func (n *Node) ID() string { return n.cfg.ID }

// FSM exposes the state machine for reads.
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// IsLeader reports whether this node currently believes it leads.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's id and Raft address, empty if none is
// known.
func (n *Node) Leader() (id, raftAddr string) {
	addr, sid := n.raft.LeaderWithID()
	return string(sid), string(addr)
}

// WaitLeader waits until some leader is known, for requests that arrive
// during an election (Consul's bounded wait), or ctx ends.
func (n *Node) WaitLeader(ctx context.Context) (id, raftAddr string, err error) {
	return n.waitLeaderOtherThan(ctx, "")
}

// WaitNewLeader waits until a leader other than old is known, or ctx ends.
func (n *Node) WaitNewLeader(ctx context.Context, old string) (string, error) {
	id, _, err := n.waitLeaderOtherThan(ctx, old)
	return id, err
}

func (n *Node) waitLeaderOtherThan(ctx context.Context, old string) (id, raftAddr string, err error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if id, addr := n.Leader(); addr != "" && id != old {
			return id, addr, nil
		}
		select {
		case <-ctx.Done():
			return "", "", ctx.Err()
		case <-n.stop:
			return "", "", ErrShutdown
		case <-t.C:
		}
	}
}

// Propose replicates cmd and returns its result once it is applied here.
// Concurrent proposals are packed into one log entry (group commit).
func (n *Node) Propose(ctx context.Context, cmd fsm.Command) (fsm.Result, error) {
	if n.raft.State() != raft.Leader {
		return fsm.Result{}, ErrNotLeader
	}
	if err := n.gateCheck(ctx, cmd.Op.Type()); err != nil { // check.go
		return fsm.Result{}, err
	}
	a := n.proposer.propose(ctx, []fsm.EncodedCommand{fsm.EncodeCommand(cmd)})[0]
	return a.Result, a.Err
}

// ProposeAll proposes commands together: they go into one log entry when
// they fit the batch bounds, else into consecutive ones. Each command gets
// its own outcome, in order.
func (n *Node) ProposeAll(ctx context.Context, cmds []fsm.Command) []Applied {
	out := make([]Applied, len(cmds))
	if n.raft.State() != raft.Leader {
		for i := range out {
			out[i].Err = ErrNotLeader
		}
		return out
	}
	// Every command passes the gate (check.go); the refused ones get their
	// own error and the others go out together.
	enc := make([]fsm.EncodedCommand, 0, len(cmds))
	at := make([]int, 0, len(cmds))
	gated := map[fsm.Type]error{}
	for i, c := range cmds {
		t := c.Op.Type()
		err, seen := gated[t]
		if !seen {
			err = n.gateCheck(ctx, t)
			gated[t] = err
		}
		if err != nil {
			out[i].Err = err
			continue
		}
		enc, at = append(enc, fsm.EncodeCommand(c)), append(at, i)
	}
	if len(enc) == 0 {
		return out
	}
	for k, a := range n.proposer.propose(ctx, enc) {
		out[at[k]] = a
	}
	return out
}

// LinearizableRead makes the next local read linearizable (Raft §6.4 read
// index, readindex.go): the node must lead, have committed an entry in its
// current term, confirm after the read arrived that it still leads, and
// have applied everything committed before the confirmation began.
func (n *Node) LinearizableRead(ctx context.Context) error {
	index, err := n.ReadIndex(ctx)
	if err != nil {
		return err
	}
	return n.fsm.WaitApplied(ctx, index)
}

// ReadIndex returns an index that a read arriving now must observe: once
// the state has applied it, a local read is linearizable. Concurrent
// callers share one leadership confirmation.
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) {
	if err := n.Halted(); err != nil { // check.go
		return 0, err
	}
	if n.raft.State() != raft.Leader {
		return 0, ErrNotLeader
	}
	term := n.raft.CurrentTerm()
	for n.readyTerm.Load() != term {
		n.readyMu.Lock()
		ch := n.readyCh
		n.readyMu.Unlock()
		if n.readyTerm.Load() == term {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-n.stop:
			return 0, ErrShutdown
		}
		if n.raft.State() != raft.Leader || n.raft.CurrentTerm() != term {
			return 0, ErrNotLeader
		}
	}
	return n.readQ.wait(ctx, n.stop)
}

// serveConfirm answers a leader's confirmation requests (readindex.go).
func (n *Node) serveConfirm(conn net.Conn) {
	r := n.view.Load()
	if r == nil {
		conn.Close()
		return
	}
	serveConfirm(r, conn)
}

// Shutdown stops the node. A leader first hands leadership to a caught-up
// voter so the cluster does not wait out an election timeout.
func (n *Node) Shutdown(ctx context.Context) error {
	var err error
	n.stopOnce.Do(func() {
		if n.raft.State() == raft.Leader && n.voters() > 1 {
			done := make(chan error, 1)
			go func() { done <- n.raft.LeadershipTransfer().Error() }()
			select {
			case e := <-done:
				if e != nil {
					n.logger.Warn("leadership transfer before shutdown failed", "error", e)
				}
			case <-ctx.Done():
			}
		}
		close(n.stop)
		n.proposer.close()
		n.confirm.close()
		err = n.raft.Shutdown().Error()
		n.wg.Wait()
		if e := n.transport.Close(); err == nil {
			err = e
		}
		if e := n.store.Close(); err == nil {
			err = e
		}
	})
	return err
}

func (n *Node) voters() int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	c := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			c++
		}
	}
	return c
}
