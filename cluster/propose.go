package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/reconf/reconf/fsm"
)

// proposer is the leader's group commit. Requests encode their commands on
// their own goroutines and queue them here; one goroutine packs whatever is
// queued into one log entry (bounded by MaxBatchCommands and MaxBatchBytes)
// and hands it to Raft, so one fsync on a quorum commits many operations.
//
// What makes packing pay is the bound on entries in flight: at most
// MaxInflight entries are submitted to Raft and not yet applied. While they
// are being stored, replicated and applied, new commands accumulate in the
// queue, and the next entry takes them all at once. Without the bound each
// command would be handed to Raft the instant it arrives, alone in its
// entry, and Raft would pay the per-entry cost (encoding, store, replication,
// apply, future) for every one of them. With it, the entry size adapts to
// the load by itself: one command per entry for a lone client (no added
// latency), hundreds under heavy load. BatchWait optionally holds an entry
// open a little longer to collect more commands.
//
// A proposal is one request's commands (one, or a whole POST /v1/batch);
// they stay together in one entry when they fit, else they are cut into
// chunks that each fit.
type proposer struct {
	n     *Node
	queue chan *proposal
	slots chan struct{} // one token per entry in flight
	stop  chan struct{}
	wg    sync.WaitGroup

	maxCmds, maxBytes int
	wait              time.Duration

	entries, commands atomic.Uint64 // what went out, for metrics
}

// GroupCommitStats counts the log entries this node proposed as leader and
// the commands packed into them; commands/entries is the mean packing.
func (n *Node) GroupCommitStats() (entries, commands uint64) {
	return n.proposer.entries.Load(), n.proposer.commands.Load()
}

type proposal struct {
	cmds []fsm.EncodedCommand
	size int
	done chan proposalResult // buffered: the committer never blocks
}

type proposalResult struct {
	res []fsm.Result // one per command, when err is nil
	err error        // the entry failed: no command of it has a result
}

func newProposer(n *Node) *proposer {
	p := &proposer{
		n:       n,
		queue:   make(chan *proposal, 8192),
		slots:   make(chan struct{}, n.cfg.MaxInflight),
		stop:    make(chan struct{}),
		maxCmds: n.cfg.MaxBatchCommands, maxBytes: n.cfg.MaxBatchBytes,
		wait: n.cfg.BatchWait,
	}
	p.wg.Add(1)
	go p.run()
	return p
}

func (p *proposer) close() {
	close(p.stop)
	p.wg.Wait()
}

// Applied is the outcome of one command of a batch: Err is set when the
// command's entry did not commit here (ErrNotLeader: never appended, safe to
// retry elsewhere; ErrUnknownOutcome: it may still commit), else Result says
// how the state machine answered, accepted or rejected.
type Applied struct {
	Result fsm.Result
	Err    error
}

// chunks cuts encoded commands into proposals that each fit one entry.
func (p *proposer) chunks(cmds []fsm.EncodedCommand) []*proposal {
	var out []*proposal
	cur := &proposal{}
	for _, c := range cmds {
		if len(cur.cmds) > 0 && (len(cur.cmds) >= p.maxCmds || cur.size+len(c) > p.maxBytes) {
			out = append(out, cur)
			cur = &proposal{}
		}
		cur.cmds = append(cur.cmds, c)
		cur.size += len(c)
	}
	if len(cur.cmds) > 0 {
		out = append(out, cur)
	}
	for _, pr := range out {
		pr.done = make(chan proposalResult, 1)
	}
	return out
}

// propose queues encoded commands and waits for their results, in order.
func (p *proposer) propose(ctx context.Context, cmds []fsm.EncodedCommand) []Applied {
	out := make([]Applied, len(cmds))
	props := p.chunks(cmds)
	queued := 0
	var qerr error
enqueue:
	for _, pr := range props {
		select {
		case p.queue <- pr:
			queued++
		case <-ctx.Done():
			qerr = ctx.Err() // never queued: never applied
			break enqueue
		case <-p.stop:
			qerr = ErrShutdown
			break enqueue
		}
	}
	i := 0
	for k, pr := range props {
		if k >= queued {
			for range pr.cmds {
				out[i].Err = qerr
				i++
			}
			continue
		}
		var r proposalResult
		select {
		case r = <-pr.done:
		case <-ctx.Done():
			// The command may still commit; a retry with the same request
			// id gets its answer.
			r.err = fmt.Errorf("%w: %v", ErrUnknownOutcome, ctx.Err())
		}
		for j := range pr.cmds {
			if r.err != nil {
				out[i].Err = r.err
			} else {
				out[i].Result = r.res[j]
			}
			i++
		}
	}
	return out
}

func (p *proposer) run() {
	defer p.wg.Done()
	var carry *proposal // did not fit the previous entry
	var batch []*proposal
	for {
		first := carry
		carry = nil
		if first == nil {
			select {
			case <-p.stop:
				p.failQueued(ErrShutdown)
				return
			case first = <-p.queue:
			}
		}
		// Wait for room in the pipeline: this is when commands pile up.
		select {
		case p.slots <- struct{}{}:
		case <-p.stop:
			first.done <- proposalResult{err: ErrShutdown}
			p.failQueued(ErrShutdown)
			return
		}
		batch = append(batch[:0], first)
		count, size := len(first.cmds), first.size
		var timeout <-chan time.Time
		var timer *time.Timer
		if p.wait > 0 && count < p.maxCmds {
			timer = time.NewTimer(p.wait)
			timeout = timer.C
		}
	fill:
		for count < p.maxCmds && size < p.maxBytes {
			var next *proposal
			select {
			case next = <-p.queue:
			default:
				if timeout == nil {
					break fill
				}
				select {
				case next = <-p.queue:
				case <-timeout:
					break fill
				}
			}
			if count+len(next.cmds) > p.maxCmds || size+next.size > p.maxBytes {
				carry = next
				break fill
			}
			batch = append(batch, next)
			count += len(next.cmds)
			size += next.size
		}
		if timer != nil {
			timer.Stop()
		}
		cmds := make([]fsm.EncodedCommand, 0, count)
		for _, pr := range batch {
			cmds = append(cmds, pr.cmds...)
		}
		p.entries.Add(1)
		p.commands.Add(uint64(len(cmds)))
		future := p.n.raft.Apply(fsm.JoinEntryFormat(p.n.entryFormat(), cmds), p.n.cfg.ApplyTimeout)
		waiters := append([]*proposal(nil), batch...)
		go func() {
			deliver(future, waiters)
			<-p.slots
		}()
	}
}

// deliver hands each proposal of an entry its own results.
func deliver(f raft.ApplyFuture, waiters []*proposal) {
	err := f.Error()
	if err != nil {
		err = classify(err)
		for _, w := range waiters {
			w.done <- proposalResult{err: err}
		}
		return
	}
	if h, ok := f.Response().(*fsm.HaltError); ok {
		// Committed, but this replica could not apply it: the others
		// may have.
		for _, w := range waiters {
			w.done <- proposalResult{err: fmt.Errorf("%w: %w: %w", ErrUnknownOutcome, ErrHalted, h)}
		}
		return
	}
	results, _ := f.Response().([]fsm.Result)
	off := 0
	for _, w := range waiters {
		n := len(w.cmds)
		if off+n > len(results) {
			w.done <- proposalResult{err: fmt.Errorf("entry %d applied with %d results for %d commands", f.Index(), len(results), off+n)}
			off += n
			continue
		}
		w.done <- proposalResult{res: results[off : off+n : off+n]}
		off += n
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
