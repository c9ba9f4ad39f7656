package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/reconf/reconf/internal/loadavg"
)

const rawHelp = `Raw hashicorp/raft Apply throughput, without HTTP. Starts three Raft nodes
in this process, each with its own raft.NewTCPTransport on 127.0.0.1 (real
loopback TCP) and its own store in a temporary dir under --dir:
  bolt  raft-boltdb/v2, one bbolt file as log and stable store (as hraftd)
  wal   hashicorp/raft-wal as log and stable store
  mem   raft.NewInmemStore (no disk at all)
The FSM is a counter. Default Raft configuration except heartbeat and
election timeouts of --raft-timeout. Once a leader is elected, --concurrency
goroutines call leader.Apply(cmd).Error() with a ~100-byte command in a
closed loop: 2 s warm-up (--warmup), then --duration measured. Prints
operations per second and latency percentiles of Apply.

--pack adds a leader-side packer: each goroutine hands its command to one
packer goroutine, which puts everything queued into one log entry, applies
it and waits for it (at most one entry in flight); the FSM splits the entry
back into commands and every goroutine gets its own answer. This is group
commit: one entry, one fsync round, for many commands.
`

type rawResult struct {
	Mode     string `json:"mode"`
	Store    string `json:"store"`
	Pack     bool   `json:"pack"`
	CmdBytes int    `json:"cmd_bytes"`
	loadFigures
	// With --pack: log entries applied by the packer and the mean number
	// of commands per entry (over the whole run, warm-up included).
	Entries        uint64  `json:"entries,omitempty"`
	CmdsPerEntry   float64 `json:"cmds_per_entry,omitempty"`
	Machine        machine `json:"machine"`
	DataDir        string  `json:"data_dir"`
	RaftTimeoutSec float64 `json:"raft_timeout_s"`
}

func runRaw(ctx context.Context, args []string) error {
	fs := newFlags("raw", rawHelp)
	store := fs.String("store", "bolt", "log store: bolt, wal or mem")
	pack := fs.Bool("pack", false, "pack queued commands into one log entry (leader-side group commit)")
	conc := fs.Int("concurrency", 64, "number of goroutines calling Apply, each with one call in flight")
	duration := fs.Duration("duration", 10*time.Second, "measured time (after the warm-up)")
	warmup := fs.Duration("warmup", 2*time.Second, "warm-up time, not measured")
	cmdBytes := fs.Int("cmd-bytes", 100, "size of each command")
	dir := fs.String("dir", os.TempDir(), "parent of the temporary data dir (must be on the disk to measure)")
	timeout := fs.Duration("raft-timeout", 500*time.Millisecond, "Raft heartbeat and election timeout (leader lease: half)")
	logLevel := fs.String("log-level", "error", "Raft log level on stderr: trace, debug, info, warn, error, off")
	asJSON := fs.Bool("json", false, "print a JSON object instead of the human line")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkLoadFlags(*conc, *warmup, *duration); err != nil {
		return err
	}
	if *cmdBytes < 16 {
		return fmt.Errorf("--cmd-bytes must be at least 16")
	}
	logger, err := newLogger(*logLevel)
	if err != nil {
		return err
	}
	if *store != "mem" {
		warnIfRAM(*dir)
	}
	m := newMachine()

	tmp, err := os.MkdirTemp(*dir, "refbench-raw-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	fsm := make([]*counterFSM, 3)
	nodes := make([]*node, 0, 3)
	defer func() {
		for _, n := range nodes {
			if err := n.stop(); err != nil {
				fmt.Fprintf(os.Stderr, "refbench: stopping %s: %v\n", n.id, err)
			}
		}
	}()
	for i := range 3 {
		fsm[i] = &counterFSM{}
		id := raft.ServerID(fmt.Sprintf("n%d", i+1))
		n, err := startNode(id, *store, filepath.Join(tmp, string(id)), "127.0.0.1:0", *timeout, fsm[i], logger)
		if err != nil {
			return fmt.Errorf("starting %s: %w", id, err)
		}
		nodes = append(nodes, n)
	}
	var servers []raft.Server
	for _, n := range nodes {
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: n.id, Address: n.transport.LocalAddr()})
	}
	// The same configuration on every node: whichever times out first is
	// elected.
	for _, n := range nodes {
		if err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
			return fmt.Errorf("bootstrap %s: %w", n.id, err)
		}
	}
	cl := &rawCluster{nodes: nodes}
	leader, err := cl.waitLeader(ctx, 15*time.Second)
	if err != nil {
		return err
	}
	if err := leader.Barrier(10 * time.Second).Error(); err != nil {
		return fmt.Errorf("barrier on the new leader: %w", err)
	}

	var pk *packer
	var packWG sync.WaitGroup
	if *pack {
		pk = &packer{in: make(chan packReq, *conc), cl: cl}
		packWG.Add(1)
		go func() { defer packWG.Done(); pk.run() }()
	}
	dones := make([]chan packResp, *conc)
	for i := range dones {
		dones[i] = make(chan packResp, 1)
	}
	op := func(w int, seq uint64) error {
		// A new slice per command: raft (and the in-memory store) keep it.
		cmd := make([]byte, *cmdBytes)
		cmd[0] = 'C'
		binary.BigEndian.PutUint32(cmd[1:], uint32(w))
		binary.BigEndian.PutUint64(cmd[5:], seq)
		for i := 13; i < len(cmd); i++ {
			cmd[i] = byte(i)
		}
		var err error
		if pk != nil {
			pk.in <- packReq{cmd: cmd, done: dones[w]}
			err = (<-dones[w]).err
		} else {
			err = cl.leader().Apply(cmd, 5*time.Second).Error()
		}
		if err != nil {
			cl.lost(ctx)
		}
		return err
	}
	res := closedLoop(ctx, *conc, *warmup, *duration, op)
	if pk != nil {
		close(pk.in)
		packWG.Wait()
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted")
	}
	m.LoadAfter = loadavg.Read()

	r := rawResult{
		Mode: "raw", Store: *store, Pack: *pack, CmdBytes: *cmdBytes,
		loadFigures: res.figures(*conc, *warmup), Machine: m, DataDir: *dir, RaftTimeoutSec: timeout.Seconds(),
	}
	packNote := "off"
	if pk != nil {
		r.Entries = pk.entries
		if pk.entries > 0 {
			r.CmdsPerEntry = float64(pk.cmds) / float64(pk.entries)
		}
		packNote = fmt.Sprintf("on (%.1f cmds/entry)", r.CmdsPerEntry)
	}
	human := fmt.Sprintf("raw store=%s pack=%s concurrency=%d: %.0f ops/s, p50 %.2f ms, p90 %.2f ms, p99 %.2f ms (%d ops in %.1f s%s%s)",
		*store, packNote, *conc, r.OpsPerSec, r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Ops, r.Duration, errNote(res), loadNote(m))
	return emit(*asJSON, r, human)
}

// rawCluster tracks which of the in-process nodes leads.
type rawCluster struct {
	nodes []*node
	cur   atomic.Pointer[raft.Raft]
	mu    sync.Mutex // one goroutine looks for a new leader at a time
}

func (c *rawCluster) leader() *raft.Raft { return c.cur.Load() }

func (c *rawCluster) findLeader() *raft.Raft {
	for _, n := range c.nodes {
		if n.raft.State() == raft.Leader {
			return n.raft
		}
	}
	return nil
}

func (c *rawCluster) waitLeader(ctx context.Context, limit time.Duration) (*raft.Raft, error) {
	deadline := time.Now().Add(limit)
	for {
		if l := c.findLeader(); l != nil {
			c.cur.Store(l)
			return l, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no leader elected within %v", limit)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("interrupted")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// lost is called after a failed Apply: if the leader changed, look for the
// new one; either way back off a little.
func (c *rawCluster) lost(ctx context.Context) {
	if l := c.cur.Load(); l != nil && l.State() == raft.Leader {
		time.Sleep(5 * time.Millisecond)
		return
	}
	c.mu.Lock()
	_, err := c.waitLeader(ctx, 5*time.Second)
	c.mu.Unlock()
	if err != nil {
		time.Sleep(50 * time.Millisecond)
	}
}

// Packed entries: 'P', uvarint count, then per command uvarint length and
// the bytes. Single commands start with 'C'.
const packTag = 'P'

// maxPackBytes bounds one packed entry.
const maxPackBytes = 1 << 20

type packReq struct {
	cmd  []byte
	done chan packResp
}

type packResp struct {
	val uint64
	err error
}

// packer puts all queued commands into one log entry, with at most one
// entry in flight.
type packer struct {
	in      chan packReq
	cl      *rawCluster
	entries uint64 // written by run only; read after it returns
	cmds    uint64
}

func (p *packer) run() {
	var batch []packReq
	for first := range p.in {
		batch = append(batch[:0], first)
		size := len(first.cmd)
	drain:
		for size < maxPackBytes {
			select {
			case r, ok := <-p.in:
				if !ok {
					break drain
				}
				batch = append(batch, r)
				size += len(r.cmd)
			default:
				break drain
			}
		}
		entry := make([]byte, 0, 1+binary.MaxVarintLen64*(len(batch)+1)+size)
		entry = append(entry, packTag)
		entry = binary.AppendUvarint(entry, uint64(len(batch)))
		for _, r := range batch {
			entry = binary.AppendUvarint(entry, uint64(len(r.cmd)))
			entry = append(entry, r.cmd...)
		}
		f := p.cl.leader().Apply(entry, 5*time.Second)
		err := f.Error()
		var vals []uint64
		if err == nil {
			switch v := f.Response().(type) {
			case []uint64:
				vals = v
			case error:
				err = v
			}
			if err == nil && len(vals) != len(batch) {
				err = fmt.Errorf("packed entry of %d commands got %d answers", len(batch), len(vals))
			}
		}
		p.entries++
		p.cmds += uint64(len(batch))
		for i, r := range batch {
			if err != nil {
				r.done <- packResp{err: err}
			} else {
				r.done <- packResp{val: vals[i]}
			}
		}
	}
}

// counterFSM counts commands. A single command's answer is the counter
// after it; a packed entry's answer is one such value per command.
type counterFSM struct {
	mu    sync.Mutex
	n     uint64
	bytes uint64
}

func (f *counterFSM) apply1(cmd []byte) uint64 {
	f.n++
	f.bytes += uint64(len(cmd))
	return f.n
}

func (f *counterFSM) applyData(data []byte) any {
	if len(data) == 0 || data[0] != packTag {
		return f.apply1(data)
	}
	rest := data[1:]
	count, k := binary.Uvarint(rest)
	if k <= 0 || count > uint64(len(rest)) {
		return errors.New("bad packed entry")
	}
	rest = rest[k:]
	vals := make([]uint64, 0, count)
	for range count {
		l, k := binary.Uvarint(rest)
		if k <= 0 || l > uint64(len(rest)-k) {
			return errors.New("bad packed entry")
		}
		vals = append(vals, f.apply1(rest[k:k+int(l)]))
		rest = rest[k+int(l):]
	}
	return vals
}

func (f *counterFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applyData(l.Data)
}

// ApplyBatch makes counterFSM a raft.BatchingFSM: one lock per batch of
// committed entries.
func (f *counterFSM) ApplyBatch(logs []*raft.Log) []any {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]any, len(logs))
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			out[i] = f.applyData(l.Data)
		}
	}
	return out
}

func (f *counterFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return counterSnap{n: f.n, bytes: f.bytes}, nil
}

func (f *counterFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var b [16]byte
	if _, err := io.ReadFull(rc, b[:]); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n = binary.BigEndian.Uint64(b[:8])
	f.bytes = binary.BigEndian.Uint64(b[8:])
	return nil
}

type counterSnap struct{ n, bytes uint64 }

func (s counterSnap) Persist(sink raft.SnapshotSink) error {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], s.n)
	binary.BigEndian.PutUint64(b[8:], s.bytes)
	if _, err := sink.Write(b[:]); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (counterSnap) Release() {}
