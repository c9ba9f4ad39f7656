package jepsen

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"time"
)

// Fault kinds.
const (
	FaultHalves  = "partition-halves" // two random halves cannot talk
	FaultIsolate = "isolate-leader"   // the leader cannot talk to anyone
	FaultRing    = "majority-ring"    // each node sees a different majority
	FaultKill    = "kill-minority"    // kill -9 a minority, restart it at heal
	FaultPause   = "pause-leader"     // SIGSTOP the leader, SIGCONT at heal
	FaultRemove  = "remove-readd"     // remove a voter; at heal, add it back with an empty data dir
	FaultNone    = "none"
)

// AllFaults is every nemesis, in the order the README lists them.
var AllFaults = []string{FaultHalves, FaultIsolate, FaultRing, FaultKill, FaultPause, FaultRemove, FaultFlip}

// Nemesis injects one fault at a time on a schedule: heal, wait, fault,
// wait, heal, ...
type Nemesis struct {
	c     *Cluster
	h     *History
	kinds []string
	logf  func(string, ...any)
	Calm  [2]time.Duration // healthy time between faults: [min, max)
	Hold  [2]time.Duration // how long a fault lasts: [min, max)
	// Probe, when set, aims reads at a node (workload.go, Probe): a
	// paused leader gets them while it is stopped, so they are waiting
	// in its sockets when it resumes, and again right after SIGCONT.
	Probe  func(n *Node, when string)
	active *activeFault
}

type activeFault struct {
	f       *Fault
	killed  []*Node
	paused  *Node
	removed *Node
	flipped *Node // flip.go: stopped, log damaged, restarted at heal
	net     bool
}

func NewNemesis(c *Cluster, h *History, kinds []string, logf func(string, ...any)) *Nemesis {
	return &Nemesis{
		c: c, h: h, kinds: kinds, logf: logf,
		Calm: [2]time.Duration{2 * time.Second, 4 * time.Second},
		Hold: [2]time.Duration{3 * time.Second, 6 * time.Second},
	}
}

func between(r [2]time.Duration) time.Duration {
	if r[1] <= r[0] {
		return r[0]
	}
	return r[0] + time.Duration(mrand.Int64N(int64(r[1]-r[0])))
}

// Run injects faults until ctx ends, then heals whatever is active.
func (nm *Nemesis) Run(ctx context.Context) {
	defer nm.Heal(context.WithoutCancel(ctx))
	for {
		if !sleepCtx(ctx, between(nm.Calm)) {
			return
		}
		kind := nm.kinds[mrand.IntN(len(nm.kinds))]
		// A fault, once begun, is applied in full even if the schedule ends
		// meanwhile (each step has its own bound).
		nm.inject(context.WithoutCancel(ctx), kind)
		if !sleepCtx(ctx, between(nm.Hold)) {
			return
		}
		nm.Heal(context.WithoutCancel(ctx))
	}
}

func (nm *Nemesis) ids(ns []*Node) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.ID)
	}
	return out
}

func shuffled(ns []*Node) []*Node {
	out := append([]*Node(nil), ns...)
	mrand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// blockBetween builds drop lists so that no node of a talks to a node of b.
func blockBetween(n int, a, b []*Node) [][]int {
	drop := make([][]int, n)
	for _, x := range a {
		for _, y := range b {
			drop[x.Index] = append(drop[x.Index], y.Index)
			drop[y.Index] = append(drop[y.Index], x.Index)
		}
	}
	return drop
}

func (nm *Nemesis) leaderOrRandom(ctx context.Context) (*Node, string) {
	if l := nm.c.Leader(ctx); l >= 0 {
		return nm.c.Nodes[l], "leader"
	}
	return nm.c.Nodes[mrand.IntN(len(nm.c.Nodes))], "no leader found; random node"
}

func (nm *Nemesis) inject(ctx context.Context, kind string) {
	f := &Fault{Kind: kind, Start: nm.h.Now(), End: -1}
	a := &activeFault{f: f}
	nodes := nm.c.Nodes
	n := len(nodes)
	var err error
	switch kind {
	case FaultHalves:
		s := shuffled(nodes)
		left, right := s[:n/2], s[n/2:]
		f.Nodes = nm.ids(s)
		f.Detail = fmt.Sprintf("%v | %v", nm.ids(left), nm.ids(right))
		a.net = true
		err = nm.c.Net.SetPartition(ctx, blockBetween(n, left, right))
	case FaultIsolate:
		l, how := nm.leaderOrRandom(ctx)
		var rest []*Node
		for _, o := range nodes {
			if o != l {
				rest = append(rest, o)
			}
		}
		f.Nodes, f.Detail = []string{l.ID}, how+" isolated from "+strings.Join(nm.ids(rest), ",")
		a.net = true
		err = nm.c.Net.SetPartition(ctx, blockBetween(n, []*Node{l}, rest))
	case FaultRing:
		// Nodes in a random ring; each talks only to its neighbours within
		// distance k, where 2k+1 is a bare majority. With 5 nodes everyone
		// sees 3 (itself and two neighbours), a different 3 for each. Fewer
		// than 5 nodes: a bridge (two halves joined by one node).
		s := shuffled(nodes)
		drop := make([][]int, n)
		if n >= 5 {
			k := (n/2 + 1) / 2 // neighbours on each side: 2k+1 ≥ a majority
			for i := range s {
				for j := range s {
					d := (j - i + n) % n
					if d > n/2 {
						d = n - d
					}
					if i != j && d > k {
						drop[s[i].Index] = append(drop[s[i].Index], s[j].Index)
					}
				}
			}
			f.Detail = fmt.Sprintf("ring %v, each node sees its %d nearest neighbours on each side", nm.ids(s), k)
		} else {
			// bridge: s[0] | s[1] (bridge) | s[2:]
			for _, y := range s[2:] {
				drop[s[0].Index] = append(drop[s[0].Index], y.Index)
				drop[y.Index] = append(drop[y.Index], s[0].Index)
			}
			f.Detail = fmt.Sprintf("bridge: %s | %s | %v", s[0].ID, s[1].ID, nm.ids(s[2:]))
		}
		f.Nodes = nm.ids(s)
		a.net = true
		err = nm.c.Net.SetPartition(ctx, drop)
	case FaultKill:
		k := 1 + mrand.IntN((n-1)/2)
		victims := shuffled(nodes)[:k]
		f.Nodes = nm.ids(victims)
		f.Detail = "kill -9"
		for _, v := range victims {
			if e := nm.c.Kill(v); e != nil && err == nil {
				err = e
			}
			a.killed = append(a.killed, v)
		}
	case FaultPause:
		l, how := nm.leaderOrRandom(ctx)
		f.Nodes, f.Detail = []string{l.ID}, how+" SIGSTOP"
		err = nm.c.Pause(l)
		if err == nil {
			a.paused = l
		}
	case FaultRemove:
		v := nodes[mrand.IntN(n)]
		if _, damaged := nm.c.damaged.get(v.ID); damaged {
			// Re-joined empty it would be healthy again, and the checks
			// that expect it halted (flip.go) would be wrong.
			f.Detail = v.ID + " is damaged on purpose (flip-byte): nothing done"
			break
		}
		f.Nodes = []string{v.ID}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = nm.c.all.Remove(rctx, v.ID)
		cancel()
		if err != nil {
			// The outcome may be unknown: look before deciding.
			sleepCtx(ctx, time.Second)
			if nm.c.IsMember(ctx, v) || nm.c.Leader(ctx) < 0 {
				f.Detail = "remove failed; node left as it was"
				break
			}
			f.Detail = "remove answered an error but the node is out; "
			err = nil
		}
		a.removed = v
		// The node is out of the configuration: stop it and forget its
		// state, so that at heal it joins as a brand-new, empty member.
		f.Detail += "removed from the configuration, killed, data dir wiped"
		if e := nm.c.Kill(v); e != nil {
			err = e
			break
		}
		err = nm.c.Wipe(v)
	case FaultFlip:
		a.flipped, err = nm.injectFlip(ctx, f) // flip.go
	}
	if err != nil {
		f.Error = err.Error()
	}
	nm.logf("nemesis: %s %v %s %s", kind, f.Nodes, f.Detail, f.Error)
	nm.h.AddFault(f)
	nm.active = a
}

// Heal undoes the active fault (and, to be safe, every partition rule and
// pause), then records when it was healed.
func (nm *Nemesis) Heal(ctx context.Context) {
	a := nm.active
	nm.active = nil
	var errs []string
	if err := nm.c.Net.Heal(ctx); err != nil {
		errs = append(errs, err.Error())
	}
	for _, n := range nm.c.Nodes {
		n.mu.Lock()
		paused := n.paused
		n.mu.Unlock()
		if paused {
			if nm.Probe != nil {
				nm.Probe(n, "during-pause")
				// Let the probes reach the stopped node's sockets.
				time.Sleep(100 * time.Millisecond)
			}
			if err := nm.c.Resume(n); err != nil {
				errs = append(errs, err.Error())
			}
			if nm.Probe != nil {
				nm.Probe(n, "after-resume")
			}
		}
	}
	if a == nil {
		return
	}
	for _, v := range a.killed {
		if err := nm.c.Start(v, false); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if v := a.flipped; v != nil {
		if err := nm.c.Start(v, false); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if a.f.Kind == FaultFlip {
		if e := nm.settleFlip(ctx, a.f); e != "" { // flip.go
			errs = append(errs, e)
		}
	}
	if v := a.removed; v != nil {
		if err := nm.c.Start(v, false); err != nil {
			errs = append(errs, err.Error())
		} else {
			// Wait (bounded) for the empty node to be a voter again.
			deadline := time.Now().Add(20 * time.Second)
			for !nm.c.IsMember(ctx, v) {
				if time.Now().After(deadline) || ctx.Err() != nil {
					errs = append(errs, v.ID+" not a member again after 20s")
					break
				}
				sleepCtx(ctx, 250*time.Millisecond)
			}
		}
	}
	nm.h.mu.Lock()
	a.f.End = nm.h.Now()
	if len(errs) > 0 {
		if a.f.Error != "" {
			a.f.Error += "; "
		}
		a.f.Error += "heal: " + strings.Join(errs, "; ")
	}
	nm.h.mu.Unlock()
	nm.logf("nemesis: healed %s %s", a.f.Kind, strings.Join(errs, "; "))
}
