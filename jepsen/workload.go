package jepsen

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/reconf/reconf/fsm"
	"github.com/reconf/reconf/transport"
)

// Bundles the workload delegates through (default bundles, domain 9.9).
const (
	delegateBundle = "device_migration"
	handoffBundle  = "epoch_rotation_transfer"
	setupOwner     = "owner-0"
)

// Workload is the set of concurrent clients. Each op goes to a random node,
// minority sides included; a write keeps one request id for all its
// attempts (domain 9.7), so retrying it is exactly-once and an op that
// finally gets an answer is definite.
type Workload struct {
	c        *Cluster
	h        *History
	Sessions []string // session ids
	Auths    []string // authority ids
	sessIdx  map[string]int

	attemptTimeout time.Duration // one try
	opBudget       time.Duration // all tries of one write

	hintMu sync.Mutex
	hints  []hint

	proc      atomic.Int64
	probes    sync.WaitGroup
	bundleSeq atomic.Int64
	regMu     sync.Mutex
	regOK     []string // acknowledged bundle ids, for duplicate attempts
}

// hint is what the clients last learned about a session, so that most
// delegations and handoffs they try can succeed. Hints only steer the
// choice of ops; the checker never trusts them.
type hint struct {
	active int // authority holding it native or delegated-in; -1 unknown
	owner  string
	gen    uint64
}

func randomUUID() fsm.UUID {
	var u fsm.UUID
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// NewWorkload makes ids for sessions and authorities.
func NewWorkload(c *Cluster, h *History, sessions, auths int) *Workload {
	w := &Workload{c: c, h: h, sessIdx: map[string]int{}, attemptTimeout: 2500 * time.Millisecond, opBudget: 12 * time.Second}
	for i := 0; i < sessions; i++ {
		id := fsm.SessionID(randomUUID()).String()
		w.Sessions = append(w.Sessions, id)
		w.sessIdx[id] = i
		w.hints = append(w.hints, hint{active: i % auths, owner: setupOwner, gen: 1})
	}
	for i := 0; i < auths; i++ {
		w.Auths = append(w.Auths, fsm.AuthorityID(randomUUID()).String())
	}
	return w
}

// definite reports whether err is a typed rejection: the op did not happen.
func definite(err error) (string, bool) {
	var ae *transport.APIError
	if errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 && ae.Code != transport.CodeNotFound {
		return ae.Code, true
	}
	return "", false
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// write runs one write op: attempts on random nodes, all with the op's
// request id, until a definite answer or the budget is spent (then the op
// is info). hard is cancelled only when the run is aborted.
func (w *Workload) write(hard context.Context, op *Op, budget time.Duration, do func(ctx context.Context, cl *transport.Client) (answer, error)) {
	op.Invoke = w.h.Now()
	deadline := time.Now().Add(budget)
	for {
		i := mrand.IntN(len(w.c.Nodes))
		actx, cancel := context.WithTimeout(hard, w.attemptTimeout)
		a := Attempt{Node: w.c.Nodes[i].ID, Start: w.h.Now()}
		ans, err := do(actx, w.c.Client(i))
		cancel()
		a.End = w.h.Now()
		if err != nil {
			a.Err = err.Error()
		}
		op.Attempts = append(op.Attempts, a)
		if err == nil {
			op.Type, op.Complete, op.Index = TypeOK, a.End, ans.index
			w.resend(hard, op, ans, do)
			return
		}
		if code, ok := definite(err); ok {
			op.Type, op.Complete, op.Code, op.Error = TypeFail, a.End, code, err.Error()
			w.resend(hard, op, ans, do)
			return
		}
		if hard.Err() != nil || time.Now().After(deadline) {
			op.Type, op.Complete, op.Error = TypeInfo, Never, err.Error()
			op.Out.Unknown = true
			return
		}
		sleepCtx(hard, time.Duration(50+mrand.IntN(200))*time.Millisecond)
	}
}

// budget is how long a write may keep retrying: usually opBudget, but one
// write in ten gets a single attempt, so that some outcomes stay unknown
// (info, returning at infinity) the way they would for a client that gives
// up.
func (w *Workload) budget() time.Duration {
	if mrand.IntN(10) == 0 {
		return 0
	}
	return w.opBudget
}

// answer is what identifies a write's result: where it was applied and,
// for delegations, its audit fact.
type answer struct {
	index, fact uint64
	deduped     bool
}

// resend sends a finished write once more, with the same request id, to a
// random node (one op in ten). The cluster must answer with the first
// result, marked deduped, and apply nothing (domain 9.7).
func (w *Workload) resend(hard context.Context, op *Op, first answer, do func(ctx context.Context, cl *transport.Client) (answer, error)) {
	if op.RequestID == "" || mrand.IntN(10) != 0 {
		return
	}
	i := mrand.IntN(len(w.c.Nodes))
	actx, cancel := context.WithTimeout(hard, w.attemptTimeout)
	ans, err := do(actx, w.c.Client(i))
	cancel()
	r := &Resend{Node: w.c.Nodes[i].ID, Index: ans.index, FactSeq: ans.fact, Deduped: ans.deduped}
	if err != nil {
		r.Err = err.Error()
		r.Code, r.Definite = definite(err)
	}
	op.Resend = r
}

// read runs one read: a single attempt on node i (random if i < 0). A read
// that fails is recorded as fail: it had no effect.
func (w *Workload) read(hard context.Context, op *Op, i int, do func(ctx context.Context, cl *transport.Client) error) error {
	if i < 0 {
		i = mrand.IntN(len(w.c.Nodes))
	}
	op.Invoke = w.h.Now()
	actx, cancel := context.WithTimeout(hard, w.attemptTimeout)
	actx, answer := transport.WithAnswerInfo(actx)
	err := do(actx, w.c.Client(i))
	cancel()
	end := w.h.Now()
	op.Attempts = []Attempt{{Node: w.c.Nodes[i].ID, Start: op.Invoke, End: end}}
	op.Index = answer.Index
	op.Served = w.c.servedBy(i, answer) // flip.go
	if err != nil {
		op.Attempts[0].Err = err.Error()
		op.Type, op.Complete, op.Error = TypeFail, end, err.Error()
		op.Code, _ = definite(err)
		return err
	}
	op.Type, op.Complete = TypeOK, end
	return nil
}

// classOf is a session's class in a footprint.
func classOf(f transport.FootprintJSON, sess string) uint8 {
	for _, s := range f.NativeSessions {
		if s == sess {
			return ClassNative
		}
	}
	for _, s := range f.DelegatedInSessions {
		if s == sess {
			return ClassIn
		}
	}
	for _, s := range f.DelegatedOutSessions {
		if s == sess {
			return ClassOut
		}
	}
	return ClassNone
}

// probeRounds is how many reads of each footprint and live session one
// Probe sends. More reads in a paused leader's sockets give more chances
// that one registers its leadership check before stale replies are
// processed, but reads that all overlap each other multiply porcupine's
// search: with 3, a 30-second run took over 2 minutes to check (with 1,
// 0.1 s).
const probeRounds = 1

// Probe aims linearizable reads at node i, all at once and without
// waiting for them: every authority's footprint and every live session,
// probeRounds times, the reads a leader that does not know it was deposed
// would answer from old state. Each read is an op of its own process.
func (w *Workload) Probe(hard context.Context, i int, when string) {
	for range probeRounds {
		w.probeOnce(hard, i, when)
	}
}

func (w *Workload) probeOnce(hard context.Context, i int, when string) {
	for a := range w.Auths {
		w.probes.Add(1)
		go func() {
			defer w.probes.Done()
			w.readFootprint(hard, int(w.proc.Add(1)), i, a, readTag{probe: when})
		}()
	}
	for s := range w.Sessions {
		w.probes.Add(1)
		go func() {
			defer w.probes.Done()
			w.readSession(hard, int(w.proc.Add(1)), i, s, readTag{probe: when})
		}()
	}
}

// WaitProbes waits for the reads Probe started.
func (w *Workload) WaitProbes() { w.probes.Wait() }

func newOp(proc int, f string) *Op { return &Op{Process: proc, F: f, Sess: -1, A: -1, B: -1} }

// Setup records every session native at one authority (spreading sessions
// over all authorities, so each is known) and opens its live session, before
// any fault. It fails unless every setup op is acknowledged.
func (w *Workload) Setup(ctx context.Context) error {
	for s, sess := range w.Sessions {
		a := s % len(w.Auths)
		op := newOp(0, mExtend)
		op.Sess, op.A, op.RequestID = s, a, transport.NewRequestID()
		w.write(ctx, op, 30*time.Second, func(ctx context.Context, cl *transport.Client) (answer, error) {
			r, err := cl.AddFootprint(ctx, w.Auths[a], transport.FootprintAddRequest{SessionID: sess, Class: "native", RequestID: op.RequestID})
			if err != nil {
				return answer{}, err
			}
			return answer{index: r.Index, deduped: r.Deduped}, nil
		})
		op.Out.OK = op.Type == TypeOK
		w.h.Add(op)
		if op.Type != TypeOK {
			return fmt.Errorf("setup: record %s native at %s: %s %s", sess, w.Auths[a], op.Type, op.Error)
		}
		op = newOp(0, mOpen)
		op.Sess, op.Owner, op.RequestID = s, setupOwner, transport.NewRequestID()
		var resp *transport.LiveSessionJSON
		w.write(ctx, op, 30*time.Second, func(ctx context.Context, cl *transport.Client) (answer, error) {
			r, err := cl.OpenSession(ctx, transport.OpenSessionRequest{SessionID: sess, OwnerLabel: setupOwner, RequestID: op.RequestID})
			if err != nil {
				return answer{}, err
			}
			if resp == nil {
				resp = r
			}
			return answer{index: r.Index}, nil
		})
		if op.Type == TypeOK {
			op.Out.OK, op.Out.Owner, op.Out.Gen = true, resp.OwnerLabel, resp.Generation
		} else {
			op.Out.Code = op.Code
		}
		w.h.Add(op)
		if op.Type != TypeOK {
			return fmt.Errorf("setup: open %s: %s %s", sess, op.Type, op.Error)
		}
	}
	return nil
}

// Run starts n clients; they start new ops until stop is closed, and finish
// the op in hand (hard aborts that too). Run returns when all are done.
func (w *Workload) Run(hard context.Context, stop <-chan struct{}, n int) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			proc := int(w.proc.Add(1))
			for {
				select {
				case <-stop:
					return
				case <-hard.Done():
					return
				default:
				}
				if w.step(hard, proc) {
					// After an info op the process is considered crashed
					// (Jepsen's convention): carry on as a new one.
					proc = int(w.proc.Add(1))
				}
				sleepCtx(hard, time.Duration(5+mrand.IntN(30))*time.Millisecond)
			}
		}()
	}
	wg.Wait()
}

// step runs one random op and reports whether its outcome stayed unknown.
func (w *Workload) step(hard context.Context, proc int) bool {
	var op *Op
	switch r := mrand.Float64(); {
	case r < 0.22:
		op = w.delegate(hard, proc)
	case r < 0.44:
		op = w.handoff(hard, proc)
	case r < 0.64:
		op = w.readSession(hard, proc, -1, mrand.IntN(len(w.Sessions)), readTag{})
	case r < 0.88:
		op = w.readFootprint(hard, proc, -1, mrand.IntN(len(w.Auths)), readTag{})
	default:
		op = w.register(hard, proc)
	}
	return op.Type == TypeInfo
}

func (w *Workload) hint(s int) hint {
	w.hintMu.Lock()
	defer w.hintMu.Unlock()
	return w.hints[s]
}

func (w *Workload) setActive(s, a int) {
	w.hintMu.Lock()
	w.hints[s].active = a
	w.hintMu.Unlock()
}

func (w *Workload) setOwner(s int, owner string, gen uint64) {
	w.hintMu.Lock()
	if gen >= w.hints[s].gen || mrand.IntN(4) == 0 {
		w.hints[s].owner, w.hints[s].gen = owner, gen
	}
	w.hintMu.Unlock()
}

// pickFromTo chooses a delegation: mostly from the authority believed to
// hold the session, sometimes from anyone (which the cluster must refuse),
// rarely to itself.
func (w *Workload) pickFromTo(s int) (int, int) {
	h := w.hint(s)
	from := h.active
	if from < 0 || mrand.IntN(10) < 2 {
		from = mrand.IntN(len(w.Auths))
	}
	to := from
	if mrand.IntN(20) != 0 {
		to = (from + 1 + mrand.IntN(len(w.Auths)-1)) % len(w.Auths)
	}
	return from, to
}

func (w *Workload) receipt(op *Op, r *transport.ReceiptJSON) {
	sess := w.Sessions[op.Sess]
	op.Out.HasReceipt = true
	op.Out.FromBefore, op.Out.ToBefore = classOf(r.FromBefore, sess), classOf(r.ToBefore, sess)
	op.Out.FromAfter, op.Out.ToAfter = classOf(r.FromAfter, sess), classOf(r.ToAfter, sess)
}

func (w *Workload) delegate(hard context.Context, proc int) *Op {
	s := mrand.IntN(len(w.Sessions))
	from, to := w.pickFromTo(s)
	op := newOp(proc, mDelegate)
	op.Sess, op.A, op.B, op.RequestID = s, from, to, transport.NewRequestID()
	req := transport.DelegationRequest{
		SessionID: w.Sessions[s], FromAuthority: w.Auths[from], ToAuthority: w.Auths[to],
		BundleID: delegateBundle, RequestID: op.RequestID,
	}
	var resp *transport.DelegationResponse
	w.write(hard, op, w.budget(), func(ctx context.Context, cl *transport.Client) (answer, error) {
		r, err := cl.Delegate(ctx, req)
		if err != nil {
			return answer{}, err
		}
		if resp == nil {
			resp = r
		}
		return answer{index: r.Index, fact: r.FactSeq, deduped: r.Deduped}, nil
	})
	switch op.Type {
	case TypeOK:
		op.Out.OK, op.FactSeq = true, resp.FactSeq
		w.receipt(op, &resp.Receipt)
		w.setActive(s, to)
	case TypeFail:
		op.Out.Code = op.Code
		if mrand.IntN(2) == 0 {
			w.setActive(s, -1)
		}
	}
	w.h.Add(op)
	return op
}

var staleRe = regexp.MustCompile("current owner `([^`]*)` at generation ([0-9]+)")

func (w *Workload) handoff(hard context.Context, proc int) *Op {
	s := mrand.IntN(len(w.Sessions))
	h := w.hint(s)
	from, to := w.pickFromTo(s)
	owner, gen := h.owner, h.gen
	if mrand.IntN(10) == 0 && gen > 1 {
		gen-- // a stale owner: must be refused
	}
	op := newOp(proc, mHandoff)
	op.Sess, op.A, op.B, op.RequestID = s, from, to, transport.NewRequestID()
	op.Owner, op.Gen, op.Next = owner, gen, fmt.Sprintf("o%d-%d", proc, w.h.Now()%1_000_000_007)
	req := transport.HandoffRequest{
		OwnerLabel: owner, Generation: gen, NextOwnerLabel: op.Next, RequestID: op.RequestID,
		Transfer: transport.DelegationRequest{
			SessionID: w.Sessions[s], FromAuthority: w.Auths[from], ToAuthority: w.Auths[to], BundleID: handoffBundle,
		},
	}
	var resp *transport.HandoffResponse
	w.write(hard, op, w.budget(), func(ctx context.Context, cl *transport.Client) (answer, error) {
		r, err := cl.Handoff(ctx, w.Sessions[s], req)
		if err != nil {
			return answer{}, err
		}
		if resp == nil {
			resp = r
		}
		return answer{index: r.Index, fact: r.FactSeq, deduped: r.Deduped}, nil
	})
	switch op.Type {
	case TypeOK:
		o := resp.OwnershipReceipt
		op.Out.OK, op.FactSeq = true, resp.FactSeq
		op.Out.FromGen, op.Out.ToGen, op.Out.ToOwner = o.FromGeneration, o.ToGeneration, o.ToOwnerID
		w.receipt(op, &resp.Receipt)
		w.setActive(s, to)
		w.setOwner(s, o.ToOwnerID, o.ToGeneration)
	case TypeFail:
		op.Out.Code = op.Code
		if m := staleRe.FindStringSubmatch(op.Error); op.Code == "stale_owner" && m != nil {
			g, _ := strconv.ParseUint(m[2], 10, 64)
			op.Out.CurKnown, op.Out.CurOwner, op.Out.CurGen = true, m[1], g
			w.setOwner(s, m[1], g)
		} else if mrand.IntN(2) == 0 {
			w.setActive(s, -1)
		}
	}
	w.h.Add(op)
	return op
}

// readTag says why a read was made, for the history: in the run (zero),
// after healing, or aimed by the nemesis.
type readTag struct {
	final bool
	probe string
}

func (w *Workload) readSession(hard context.Context, proc, node, s int, tag readTag) *Op {
	op := newOp(proc, mReadSession)
	op.Sess, op.Final, op.Probe = s, tag.final, tag.probe
	var resp *transport.LiveSessionJSON
	err := w.read(hard, op, node, func(ctx context.Context, cl *transport.Client) error {
		r, err := cl.ShowSession(ctx, w.Sessions[s])
		resp = r
		return err
	})
	switch {
	case err == nil:
		op.Out.OK, op.Out.Found, op.Out.Owner, op.Out.Gen = true, true, resp.OwnerLabel, resp.Generation
		w.setOwner(s, resp.OwnerLabel, resp.Generation)
	case op.Code == string(fsm.CodeSessionNotFound):
		op.Type, op.Out.OK, op.Out.Found = TypeOK, true, false
	}
	w.h.Add(op)
	return op
}

func (w *Workload) readFootprint(hard context.Context, proc, node, a int, tag readTag) *Op {
	op := newOp(proc, mReadFootprnt)
	op.A, op.Final, op.Probe = a, tag.final, tag.probe
	var resp *transport.AuthorityFootprint
	err := w.read(hard, op, node, func(ctx context.Context, cl *transport.Client) error {
		r, err := cl.ShowFootprint(ctx, w.Auths[a])
		resp = r
		return err
	})
	switch {
	case err == nil:
		op.Out.OK = true
		op.Classes = make([]uint8, len(w.Sessions))
		for s, sess := range w.Sessions {
			op.Classes[s] = classOf(resp.FootprintJSON, sess)
			if c := op.Classes[s]; c == ClassNative || c == ClassIn {
				w.setActive(s, a)
			}
		}
	case op.Code == string(fsm.CodeAuthorityNotFound):
		// No change has touched it (yet): the checker knows when one did.
		op.Type, op.Out.OK, op.Missing = TypeOK, true, true
	}
	w.h.Add(op)
	return op
}

func (w *Workload) register(hard context.Context, proc int) *Op {
	op := newOp(proc, "register")
	seq := w.bundleSeq.Add(1)
	op.Bundle = fmt.Sprintf("jepsen-%d", seq)
	op.Tag = fmt.Sprintf("t%d-%d", proc, seq)
	w.regMu.Lock()
	if len(w.regOK) > 0 && mrand.IntN(10) == 0 {
		op.Bundle = w.regOK[mrand.IntN(len(w.regOK))] // a duplicate: must be refused
	}
	w.regMu.Unlock()
	op.RequestID = transport.NewRequestID()
	req := transport.RegisterBundleRequest{
		BundleID: op.Bundle, ProtocolIDs: []string{"jepsen." + op.Tag},
		Exports: []string{"jepsen." + op.Tag + ".x"}, Imports: []string{"jepsen." + op.Tag + ".x"},
		RequestID: op.RequestID,
	}
	w.write(hard, op, w.budget(), func(ctx context.Context, cl *transport.Client) (answer, error) {
		r, err := cl.RegisterBundle(ctx, req)
		if err != nil {
			return answer{}, err
		}
		return answer{index: r.Index}, nil
	})
	if op.Type == TypeOK {
		op.Out.OK = true
		w.regMu.Lock()
		w.regOK = append(w.regOK, op.Bundle)
		w.regMu.Unlock()
	} else {
		op.Out.Code = op.Code
	}
	w.h.Add(op)
	return op
}
