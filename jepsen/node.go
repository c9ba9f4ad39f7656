package jepsen

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/reconf/reconf/transport"
)

const (
	httpPort = 8101
	raftPort = 8201
)

// Node is one reconfd process in its namespace.
type Node struct {
	ID      string // n1..nN
	Index   int    // 0-based
	NS      string
	IP      string
	HTTP    string // ip:8101
	Raft    string // ip:8201
	DataDir string
	LogPath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	paused  bool
	killing bool     // the harness is killing it: its exit is expected
	crashes []string // exits nobody asked for
	starts  int
	logFile *os.File
}

// Running reports whether the process is alive (paused counts as alive).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Cluster is the set of nodes of one run.
type Cluster struct {
	Net     *Network
	Nodes   []*Node
	Binary  string
	Unsafe  bool
	logf    func(string, ...any)
	http    *http.Client
	clients []*transport.Client // one per node, no retries, no leader following
	all     *transport.Client   // every node, follows the leader, retries
	damaged damagedNodes        // flip.go: nodes the nemesis damaged on purpose
}

// NewCluster describes the nodes; nothing starts yet.
func NewCluster(nw *Network, binary, dataRoot, logDir string, unsafe bool, logf func(string, ...any)) *Cluster {
	c := &Cluster{Net: nw, Binary: binary, Unsafe: unsafe, logf: logf}
	c.http = &http.Client{Transport: &http.Transport{
		DialContext:         nw.dialer().DialContext,
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     30 * time.Second,
	}}
	var addrs []string
	for i, ns := range nw.NS {
		n := &Node{
			ID: fmt.Sprintf("n%d", i+1), Index: i, NS: ns, IP: nw.IPs[i],
			HTTP: fmt.Sprintf("%s:%d", nw.IPs[i], httpPort), Raft: fmt.Sprintf("%s:%d", nw.IPs[i], raftPort),
			DataDir: filepath.Join(dataRoot, fmt.Sprintf("n%d", i+1)),
			LogPath: filepath.Join(logDir, fmt.Sprintf("n%d.log", i+1)),
		}
		c.Nodes = append(c.Nodes, n)
		addrs = append(addrs, n.HTTP)
		cl := transport.NewClient([]string{n.HTTP}, transport.WithHTTPClient(c.http))
		cl.FollowLeader = false
		cl.RetryFor = 0 // one attempt: the workload does its own retries
		c.clients = append(c.clients, cl)
	}
	c.all = transport.NewClient(addrs, transport.WithHTTPClient(c.http))
	c.all.RetryFor = 5 * time.Second
	return c
}

// Client is the single-node, single-attempt client of node i.
func (c *Cluster) Client(i int) *transport.Client { return c.clients[i] }

// nodeArgs are the flags of a node. Only the very first start of n1 forms
// the cluster; every other start joins (a no-op when the data dir already
// has state).
func (c *Cluster) nodeArgs(n *Node, bootstrap bool) []string {
	args := []string{
		"--id", n.ID,
		"--data-dir", n.DataDir,
		"--http-addr", n.HTTP,
		"--raft-addr", n.Raft,
		"--heartbeat-timeout", "500ms",
		"--election-timeout", "500ms",
		"--snapshot-threshold", "256",
		"--snapshot-interval", "1s",
		"--trailing-logs", "128",
		"--shutdown-timeout", "3s",
		"--log-level", "info",
	}
	if bootstrap {
		args = append(args, "--bootstrap")
	} else {
		var peers []string
		for _, o := range c.Nodes {
			if o != n {
				peers = append(peers, o.HTTP)
			}
		}
		args = append(args, "--join", strings.Join(peers, ","))
	}
	if c.Unsafe {
		args = append(args, "--unsafe-local-reads")
	}
	return args
}

// Start launches the node's process inside its namespace. `ip netns exec`
// execs the binary in place, so the process is reconfd itself and signals
// reach it directly.
func (c *Cluster) Start(n *Node, bootstrap bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done != nil {
		select {
		case <-n.done:
		default:
			return fmt.Errorf("%s is already running", n.ID)
		}
	}
	if n.logFile == nil {
		f, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		n.logFile = f
	}
	args := append([]string{"netns", "exec", n.NS, c.Binary}, c.nodeArgs(n, bootstrap)...)
	fmt.Fprintf(n.logFile, "=== jepsen %s: start #%d: ip %s\n", time.Now().Format(time.RFC3339Nano), n.starts+1, strings.Join(args, " "))
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = n.logFile, n.logFile
	// Own process group: a Ctrl-C at the terminal reaches the harness, which
	// then stops the nodes itself. Pdeathsig: the nodes die with the harness
	// even if it is killed with SIGKILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	n.starts++
	n.cmd, n.paused, n.killing = cmd, false, false
	done := make(chan struct{})
	n.done = done
	logFile := n.logFile
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(logFile, "=== jepsen %s: process exited: %v\n", time.Now().Format(time.RFC3339Nano), err)
		n.mu.Lock()
		if !n.killing {
			n.crashes = append(n.crashes, fmt.Sprintf("start #%d: %v", n.starts, err))
		}
		n.mu.Unlock()
		close(done)
	}()
	return nil
}

func (n *Node) signal(sig syscall.Signal) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return errors.New("not started")
	}
	return n.cmd.Process.Signal(sig)
}

// Kill sends SIGKILL and waits for the process to be gone.
func (c *Cluster) Kill(n *Node) error {
	n.mu.Lock()
	done := n.done
	n.killing = true
	n.mu.Unlock()
	if done == nil {
		return nil
	}
	_ = n.signal(syscall.SIGCONT)
	_ = n.signal(syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s did not die after SIGKILL", n.ID)
	}
	n.mu.Lock()
	n.paused = false
	n.mu.Unlock()
	return nil
}

// Pause stops the process with SIGSTOP; Resume continues it.
func (c *Cluster) Pause(n *Node) error {
	if err := n.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	n.mu.Lock()
	n.paused = true
	n.mu.Unlock()
	return nil
}

func (c *Cluster) Resume(n *Node) error {
	n.mu.Lock()
	n.paused = false
	n.mu.Unlock()
	return n.signal(syscall.SIGCONT)
}

// Wipe deletes the node's data dir (the node must not run).
func (c *Cluster) Wipe(n *Node) error {
	if n.Running() {
		return fmt.Errorf("%s still runs", n.ID)
	}
	return os.RemoveAll(n.DataDir)
}

// StopAll kills every node and closes the logs.
func (c *Cluster) StopAll() {
	for _, n := range c.Nodes {
		_ = c.Kill(n)
		n.mu.Lock()
		if n.logFile != nil {
			n.logFile.Close()
			n.logFile = nil
		}
		n.mu.Unlock()
	}
	c.http.CloseIdleConnections()
}

// status asks node i for its view, with a short timeout.
func (c *Cluster) status(ctx context.Context, i int, timeout time.Duration) (*transport.StatusJSON, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return c.clients[i].Status(cctx)
}

// selfState is what node i says about itself in a status answer.
func selfState(st *transport.StatusJSON) string {
	for _, n := range st.Nodes {
		if n.ID == st.Self {
			return n.State
		}
	}
	return ""
}

// Leader finds the node that says it leads, in the highest term seen; -1 if
// no node does.
func (c *Cluster) Leader(ctx context.Context) int {
	type claim struct {
		i    int
		term uint64
	}
	ch := make(chan claim, len(c.Nodes))
	for i, n := range c.Nodes {
		go func(i int, n *Node) {
			n.mu.Lock()
			paused := n.paused
			n.mu.Unlock()
			if paused || !n.Running() {
				ch <- claim{-1, 0}
				return
			}
			st, err := c.status(ctx, i, 1500*time.Millisecond)
			if err != nil || selfState(st) != "leader" {
				ch <- claim{-1, 0}
				return
			}
			ch <- claim{i, st.Term}
		}(i, n)
	}
	best := claim{-1, 0}
	for range c.Nodes {
		if cl := <-ch; cl.i >= 0 && cl.term >= best.term {
			best = cl
		}
	}
	return best.i
}

// WaitReady waits until every node answers /readyz (a leader is known and
// the node has caught up) and the configuration has every node as a voter.
func (c *Cluster) WaitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		last = c.readyOnce(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("cluster not ready after %v: %v", timeout, last)
}

func (c *Cluster) readyz(ctx context.Context, n *Node) error {
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(cctx, http.MethodGet, "http://"+n.HTTP+"/readyz", nil)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %v", n.ID, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: readyz %s", n.ID, resp.Status)
	}
	return nil
}

// waitReadyz waits until one node answers /readyz.
func (c *Cluster) waitReadyz(ctx context.Context, n *Node, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := c.readyz(ctx, n)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
}

func (c *Cluster) readyOnce(ctx context.Context) error {
	for i, n := range c.Nodes {
		if _, damaged := c.damaged.get(n.ID); damaged {
			// flip.go: it must stay halted, and still be a member.
			if err := c.expectHalted(ctx, n); err != nil {
				return err
			}
		} else if err := c.readyz(ctx, n); err != nil {
			return err
		}
		st, err := c.status(ctx, i, 2*time.Second)
		if err != nil {
			return fmt.Errorf("%s: status: %v", n.ID, err)
		}
		voters := 0
		for _, m := range st.Nodes {
			if m.Suffrage == "voter" {
				voters++
			}
		}
		if voters != len(c.Nodes) {
			return fmt.Errorf("%s sees %d voters, want %d", n.ID, voters, len(c.Nodes))
		}
	}
	return nil
}

// IsMember reports whether the leader's configuration lists node n as a
// voter.
func (c *Cluster) IsMember(ctx context.Context, n *Node) bool {
	l := c.Leader(ctx)
	if l < 0 {
		return false
	}
	st, err := c.status(ctx, l, 2*time.Second)
	if err != nil {
		return false
	}
	for _, m := range st.Nodes {
		if m.ID == n.ID && m.Suffrage == "voter" {
			return true
		}
	}
	return false
}
