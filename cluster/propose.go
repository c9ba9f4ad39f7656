package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/reconf/reconf/fsm"
)

// proposer is the leader's group commit: one goroutine takes every waiting
// proposal off a queue, packs them into one log entry (bounded by count and
// bytes), and hands the entry to Raft, so one fsync on a quorum commits many
// operations. It never waits for more proposals to arrive: under load the
// queue fills while the previous entry is being stored, which is exactly when
// packing pays.
type proposer struct {
	n     *Node
	queue chan *proposal
	stop  chan struct{}
	wg    sync.WaitGroup
}

type proposal struct {
	cmd  fsm.Command
	done chan proposalResult // buffered: the committer never blocks
}

type proposalResult struct {
	res fsm.Result
	err error
}

func newProposer(n *Node) *proposer {
	p := &proposer{n: n, queue: make(chan *proposal, 4096), stop: make(chan struct{})}
	p.wg.Add(1)
	go p.run()
	return p
}

func (p *proposer) close() {
	close(p.stop)
	p.wg.Wait()
}

func (p *proposer) propose(ctx context.Context, cmd fsm.Command) (fsm.Result, error) {
	pr := &proposal{cmd: cmd, done: make(chan proposalResult, 1)}
	select {
	case p.queue <- pr:
	case <-ctx.Done():
		return fsm.Result{}, ctx.Err()
	case <-p.stop:
		return fsm.Result{}, ErrShutdown
	}
	select {
	case r := <-pr.done:
		return r.res, r.err
	case <-ctx.Done():
		// The command may still commit; a retry with the same request id
		// gets its answer.
		return fsm.Result{}, fmt.Errorf("%w: %v", ErrUnknownOutcome, ctx.Err())
	}
}

func (p *proposer) run() {
	defer p.wg.Done()
	maxCmds, maxBytes := p.n.cfg.MaxBatchCommands, p.n.cfg.MaxBatchBytes
	var batch []*proposal
	for {
		select {
		case <-p.stop:
			p.failQueued(ErrShutdown)
			return
		case first := <-p.queue:
			batch = append(batch[:0], first)
		}
		cmds := []fsm.Command{batch[0].cmd}
		data := fsm.EncodeEntry(cmds...)
	drain:
		for len(batch) < maxCmds && len(data) < maxBytes {
			select {
			case next := <-p.queue:
				batch = append(batch, next)
				cmds = append(cmds, next.cmd)
			default:
				break drain
			}
		}
		if len(cmds) > 1 {
			data = fsm.EncodeEntry(cmds...)
		}
		future := p.n.raft.Apply(data, p.n.cfg.ApplyTimeout)
		waiters := append([]*proposal(nil), batch...)
		go deliver(future, waiters)
	}
}

// deliver hands each proposal of an entry its own result.
func deliver(f raft.ApplyFuture, waiters []*proposal) {
	err := f.Error()
	if err != nil {
		err = classify(err)
		for _, w := range waiters {
			w.done <- proposalResult{err: err}
		}
		return
	}
	results, ok := f.Response().([]fsm.Result)
	for i, w := range waiters {
		if !ok || i >= len(results) {
			w.done <- proposalResult{err: fmt.Errorf("entry %d applied without a result for command %d", f.Index(), i)}
			continue
		}
		w.done <- proposalResult{res: results[i]}
	}
}

// classify maps Raft's errors to what a caller can act on.
func classify(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return ErrNotLeader // never appended: safe to forward or retry
	case errors.Is(err, raft.ErrLeadershipLost):
		return ErrUnknownOutcome
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrShutdown
	}
	return fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
}

func (p *proposer) failQueued(err error) {
	for {
		select {
		case pr := <-p.queue:
			pr.done <- proposalResult{err: err}
		default:
			return
		}
	}
}
