package jepsen

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/reconf/reconf/transport"
)

// Verdict is one checker's answer.
type Verdict struct {
	Valid    bool           `json:"valid"`
	Result   string         `json:"result,omitempty"`
	Checked  int            `json:"checked"`
	Problems []string       `json:"problems,omitempty"`
	Stats    map[string]any `json:"stats,omitempty"`
}

func (v *Verdict) fail(format string, args ...any) {
	v.Valid = false
	if len(v.Problems) < 50 {
		v.Problems = append(v.Problems, fmt.Sprintf(format, args...))
	} else if len(v.Problems) == 50 {
		v.Problems = append(v.Problems, "... more problems not shown")
	}
}

// PorcupineOps turns the history into porcupine operations: every write
// with its outcome (info ones return at infinity), every successful read;
// a footprint read becomes one read per session (it is one atomic read of
// all of them).
func PorcupineOps(ops []*Op, sessions int) []porcupine.Operation {
	var out []porcupine.Operation
	add := func(op *Op, in mInput, o mOutput) {
		ret := op.Complete
		if op.Type == TypeInfo || ret == Never {
			ret = math.MaxInt64
			o.Unknown = true
		}
		out = append(out, porcupine.Operation{ClientId: op.Process, Input: in, Call: op.Invoke, Output: o, Return: ret, Metadata: op.ID})
	}
	for _, op := range ops {
		switch op.F {
		case mExtend, mOpen, mDelegate, mHandoff:
			add(op, mInput{Sess: op.Sess, Kind: op.F, A: op.A, B: op.B, Owner: op.Owner, Gen: op.Gen, Next: op.Next}, op.Out)
		case mReadSession:
			if op.Type == TypeOK {
				add(op, mInput{Sess: op.Sess, Kind: op.F, A: -1, B: -1}, op.Out)
			}
		case mReadFootprnt:
			if op.Type == TypeOK {
				// A missing authority holds no session.
				for s := 0; s < sessions; s++ {
					o := op.Out
					if s < len(op.Classes) {
						o.Class = op.Classes[s]
					}
					add(op, mInput{Sess: s, Kind: op.F, A: op.A, B: -1}, o)
				}
			}
		}
	}
	return out
}

// CheckLinearizable checks the per-session histories with porcupine and
// writes the HTML visualization to htmlPath (when not empty).
func CheckLinearizable(ops []*Op, faults []*Fault, sessions int, authNames []string, timeout time.Duration, htmlPath string) Verdict {
	v := Verdict{Valid: true, Stats: map[string]any{}}
	// An authority, once a footprint change touched it, exists for good: a
	// read that began after such a change was acknowledged must find it.
	touched := map[int]int64{}
	touch := func(a int, at int64) {
		if t, ok := touched[a]; a >= 0 && (!ok || at < t) {
			touched[a] = at
		}
	}
	for _, op := range ops {
		if op.Type == TypeOK && (op.F == mExtend || op.F == mDelegate || op.F == mHandoff) {
			touch(op.A, op.Complete)
			if op.F != mExtend {
				touch(op.B, op.Complete)
			}
		}
	}
	for _, op := range ops {
		if t, ok := touched[op.A]; op.F == mReadFootprnt && op.Missing && ok && t < op.Invoke {
			v.fail("op %d: footprint of %s read as missing (authority_not_found) at %.3fs, though a change to it was acknowledged at %.3fs",
				op.ID, authNames[op.A], float64(op.Invoke)/1e9, float64(t)/1e9)
		}
	}
	pops := PorcupineOps(ops, sessions)
	v.Checked = len(pops)
	model := Model(authNames)
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(model, pops, timeout)
	v.Stats["check_seconds"] = time.Since(start).Seconds()
	v.Result = string(res)
	unknown := 0
	for _, p := range pops {
		if p.Return == math.MaxInt64 {
			unknown++
		}
	}
	v.Stats["unknown_outcome_ops"] = unknown
	if res != porcupine.Ok {
		if res == porcupine.Illegal {
			v.fail("porcupine: history is not linearizable")
		} else {
			v.fail("porcupine: check did not finish within %v (result %s)", timeout, res)
		}
		// Which sessions? Check them one by one (bounded).
		parts := model.Partition(pops)
		single := model
		single.Partition = nil
		var bad []string
		for _, part := range parts {
			s := part[0].Input.(mInput).Sess
			if r := porcupine.CheckOperationsTimeout(single, part, timeout/4+time.Second); r != porcupine.Ok {
				bad = append(bad, fmt.Sprintf("session %d (%d ops): %s", s, len(part), r))
			}
		}
		v.Stats["failing_sessions"] = bad
		if len(bad) > 0 {
			v.Problems = append(v.Problems, "failing: "+strings.Join(bad, "; "))
		}
		if all, inFault := staleReads(ops, faults); len(all) > 0 {
			v.Stats["stale_reads"] = len(all)
			v.Stats["stale_reads_during_faults"] = len(inFault)
			v.Stats["stale_read_examples"] = all[:min(10, len(all))]
			v.Stats["stale_read_examples_during_faults"] = inFault[:min(10, len(inFault))]
			for _, e := range all[:min(2, len(all))] {
				v.Problems = append(v.Problems, "stale read: "+e)
			}
			for _, e := range inFault[:min(2, len(inFault))] {
				v.Problems = append(v.Problems, "stale read during a fault: "+e)
			}
		}
	}
	if htmlPath != "" {
		var ann []porcupine.Annotation
		end := int64(0)
		for _, p := range pops {
			if p.Return != math.MaxInt64 && p.Return > end {
				end = p.Return
			}
		}
		for _, f := range faults {
			e := f.End
			if e < 0 {
				e = end
			}
			ann = append(ann, porcupine.Annotation{
				Tag: "nemesis", Start: f.Start, End: e,
				Description: f.Kind, Details: strings.TrimSpace(strings.Join(f.Nodes, ",") + " " + f.Detail + " " + f.Error),
				BackgroundColor: "#fde2e2",
			})
		}
		info.AddAnnotations(ann)
		if err := porcupine.VisualizePath(model, info, htmlPath); err != nil {
			v.Stats["visualization_error"] = err.Error()
		}
	}
	return v
}

// protocolTag recovers a workload bundle's tag from its protocol id.
func protocolTag(b transport.BundleJSON) string {
	for _, p := range b.ProtocolIDs {
		if strings.HasPrefix(p, "jepsen.") {
			return strings.TrimPrefix(p, "jepsen.")
		}
	}
	return ""
}

// CheckBundles: after healing, every acknowledged registration is present
// with its content, no definitely-failed one is, nothing else appeared.
func CheckBundles(ops []*Op, final []transport.BundleJSON) Verdict {
	v := Verdict{Valid: true, Stats: map[string]any{}}
	present := map[string]string{}
	for _, b := range final {
		if strings.HasPrefix(b.BundleID, "jepsen-") {
			present[b.BundleID] = protocolTag(b)
		}
	}
	byID := map[string][]*Op{}
	counts := map[string]int{}
	for _, op := range ops {
		if op.F == "register" {
			byID[op.Bundle] = append(byID[op.Bundle], op)
			counts[op.Type]++
		}
	}
	v.Checked = counts[TypeOK] + counts[TypeFail] + counts[TypeInfo]
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		tag, ok := present[id]
		var acked []*Op
		fromInfo := false
		for _, op := range byID[id] {
			switch op.Type {
			case TypeOK:
				acked = append(acked, op)
			case TypeInfo:
				fromInfo = fromInfo || (ok && op.Tag == tag)
			case TypeFail:
				if ok && op.Tag == tag {
					v.fail("bundle %s: registration op %d failed (%s) yet its content is present", id, op.ID, op.Code)
				}
			}
		}
		switch {
		case len(acked) > 1:
			v.fail("bundle %s: %d registrations acknowledged (ops %d and %d)", id, len(acked), acked[0].ID, acked[1].ID)
		case len(acked) == 1 && !ok:
			v.fail("bundle %s: acknowledged by op %d but lost", id, acked[0].ID)
		case len(acked) == 1 && tag != acked[0].Tag:
			v.fail("bundle %s: acknowledged with tag %s (op %d) but present with tag %s", id, acked[0].Tag, acked[0].ID, tag)
		case len(acked) == 0 && ok && !fromInfo:
			v.fail("bundle %s: present (tag %s) though no registration of it was acknowledged or unknown", id, tag)
		}
		delete(present, id)
	}
	for id := range present {
		v.fail("bundle %s: present but never registered by the workload", id)
	}
	v.Stats["ok"], v.Stats["fail"], v.Stats["info"] = counts[TypeOK], counts[TypeFail], counts[TypeInfo]
	return v
}

// CheckFacts: exactly one audit fact per acknowledged delegation or handoff
// (matched by the fact seq its answer returned), none for a failed one, and
// any other fact must belong to an op whose outcome is unknown.
func CheckFacts(ops []*Op, facts []transport.FactJSON, w *Workload) Verdict {
	v := Verdict{Valid: true, Stats: map[string]any{}}
	for i, f := range facts {
		if f.Seq != uint64(i+1) {
			v.fail("fact journal not contiguous: position %d has seq %d", i+1, f.Seq)
			break
		}
	}
	bySeq := map[uint64]transport.FactJSON{}
	for _, f := range facts {
		bySeq[f.Seq] = f
	}
	type key struct{ sess, from, to, bundle string }
	keyOf := func(op *Op) key {
		b := delegateBundle
		if op.F == mHandoff {
			b = handoffBundle
		}
		return key{w.Sessions[op.Sess], w.Auths[op.A], w.Auths[op.B], b}
	}
	claimed := map[uint64]int64{}
	infoCap := map[key]int{}
	acked := 0
	for _, op := range ops {
		if op.F != mDelegate && op.F != mHandoff {
			continue
		}
		switch op.Type {
		case TypeInfo:
			infoCap[keyOf(op)]++
		case TypeOK:
			acked++
			f, ok := bySeq[op.FactSeq]
			switch {
			case op.FactSeq == 0:
				v.fail("op %d (%s) acknowledged without a fact seq", op.ID, op.F)
			case !ok:
				v.fail("op %d (%s) acknowledged fact %d, which is missing (journal has %d)", op.ID, op.F, op.FactSeq, len(facts))
			case claimed[op.FactSeq] != 0:
				v.fail("fact %d claimed by two acknowledged ops, %d and %d", op.FactSeq, claimed[op.FactSeq], op.ID)
			default:
				if k := keyOf(op); (key{f.SessionID, f.FromAuthority, f.ToAuthority, f.BundleID}) != k {
					v.fail("op %d (%s %s %s→%s) acknowledged fact %d, which records %s %s→%s %s", op.ID, op.F, k.sess, k.from, k.to, f.Seq, f.SessionID, f.FromAuthority, f.ToAuthority, f.BundleID)
				}
				claimed[op.FactSeq] = op.ID
			}
		}
	}
	unclaimed := 0
	for _, f := range facts {
		if claimed[f.Seq] != 0 {
			continue
		}
		unclaimed++
		k := key{f.SessionID, f.FromAuthority, f.ToAuthority, f.BundleID}
		if infoCap[k] > 0 {
			infoCap[k]--
			continue
		}
		v.fail("fact %d (%s %s→%s %s) matches no acknowledged op and no op of unknown outcome: a failed op applied, or an op applied twice", f.Seq, f.SessionID, f.FromAuthority, f.ToAuthority, f.BundleID)
	}
	v.Checked = len(facts)
	v.Stats["facts"], v.Stats["acknowledged"], v.Stats["from_unknown_ops"] = len(facts), acked, unclaimed
	return v
}

// CheckResends: a finished write sent again with its request id gets the
// first answer back (same index, same fact, marked deduped where the API
// says so) and applies nothing (domain 9.7).
func CheckResends(ops []*Op) Verdict {
	v := Verdict{Valid: true, Stats: map[string]any{}}
	unanswered := 0
	for _, op := range ops {
		r := op.Resend
		if r == nil {
			continue
		}
		if r.Err != "" && !r.Definite {
			unanswered++
			continue
		}
		v.Checked++
		hasDedupe := op.F == mDelegate || op.F == mHandoff || op.F == mExtend
		switch op.Type {
		case TypeOK:
			switch {
			case r.Err != "":
				v.fail("op %d (%s) was acknowledged at index %d; resent with its request id to %s it failed: %s", op.ID, op.F, op.Index, r.Node, r.Err)
			case r.Index != op.Index || r.FactSeq != op.FactSeq:
				v.fail("op %d (%s) was acknowledged at index %d fact %d; resent to %s it answered index %d fact %d", op.ID, op.F, op.Index, op.FactSeq, r.Node, r.Index, r.FactSeq)
			case hasDedupe && !r.Deduped:
				v.fail("op %d (%s) resent to %s was not marked deduped", op.ID, op.F, r.Node)
			}
		case TypeFail:
			switch {
			case r.Err == "":
				v.fail("op %d (%s) failed with %s; resent with its request id to %s it succeeded at index %d", op.ID, op.F, op.Code, r.Node, r.Index)
			case r.Code != op.Code:
				v.fail("op %d (%s) failed with %s; resent to %s it failed with %s", op.ID, op.F, op.Code, r.Node, r.Code)
			}
		}
	}
	v.Stats["resends_unanswered"] = unanswered
	return v
}

// staleReads finds the plainest kind of violation to explain: a read of a
// live session that began after a handoff to a newer generation had been
// acknowledged, and still saw an older generation. It returns them all,
// and separately those made while a fault was active.
func staleReads(ops []*Op, faults []*Fault) (all, inFault []string) {
	type ack struct {
		done int64
		gen  uint64
		id   int64
	}
	acks := map[int][]ack{}
	for _, op := range ops {
		if op.F == mHandoff && op.Type == TypeOK {
			acks[op.Sess] = append(acks[op.Sess], ack{op.Complete, op.Out.ToGen, op.ID})
		}
	}
	for _, a := range acks {
		sort.Slice(a, func(i, j int) bool { return a[i].done < a[j].done })
	}
	faultAt := func(t int64) *Fault {
		for _, f := range faults {
			if f.Start <= t && (f.End < 0 || t <= f.End) {
				return f
			}
		}
		return nil
	}
	for _, op := range ops {
		if op.F != mReadSession || op.Type != TypeOK || !op.Out.Found {
			continue
		}
		var best ack
		for _, a := range acks[op.Sess] {
			if a.done >= op.Invoke {
				break
			}
			if a.gen > best.gen {
				best = a
			}
		}
		if best.gen <= op.Out.Gen {
			continue
		}
		node := ""
		if len(op.Attempts) > 0 {
			node = op.Attempts[0].Node
		}
		msg := fmt.Sprintf("op %d: read of session %d on %s at %.3fs saw %s@%d, but op %d had acknowledged generation %d at %.3fs",
			op.ID, op.Sess, node, float64(op.Invoke)/1e9, op.Out.Owner, op.Out.Gen, best.id, best.gen, float64(best.done)/1e9)
		all = append(all, msg)
		if f := faultAt(op.Invoke); f != nil {
			inFault = append(inFault, fmt.Sprintf("%s (during %s %v %s)", msg, f.Kind, f.Nodes, f.Detail))
		}
	}
	return all, inFault
}

// CheckReadIndexes fails any successful read served at an index below the
// highest index acknowledged to any client before the read was invoked: a
// linearizable read must reflect every write that finished before it
// began. It judges each read by the index its answer reported
// (X-Reconf-Index), independently of porcupine's search, so a stale read
// is caught whatever the read happened to return. Reads with no index (an
// older server) are counted, not judged.
func CheckReadIndexes(ops []*Op, faults []*Fault) Verdict {
	v := Verdict{Valid: true, Stats: map[string]any{}}
	type ack struct {
		done  int64
		index uint64
		id    int64
	}
	var acks []ack
	for _, op := range ops {
		switch op.F {
		case mReadSession, mReadFootprnt:
			continue
		}
		if op.Type == TypeOK && op.Index > 0 && op.Complete != Never {
			acks = append(acks, ack{op.Complete, op.Index, op.ID})
		}
	}
	sort.Slice(acks, func(i, j int) bool { return acks[i].done < acks[j].done })
	// best[i]: the acknowledgement with the highest index among acks[:i+1].
	best := make([]ack, len(acks))
	for i, a := range acks {
		best[i] = a
		if i > 0 && best[i-1].index > a.index {
			best[i] = best[i-1]
		}
	}
	faultAt := func(t int64) string {
		for _, f := range faults {
			if f.Start <= t && (f.End < 0 || t <= f.End) {
				return fmt.Sprintf(" (during %s %v)", f.Kind, f.Nodes)
			}
		}
		return ""
	}
	unindexed, probes := 0, 0
	for _, op := range ops {
		if (op.F != mReadSession && op.F != mReadFootprnt) || op.Type != TypeOK {
			continue
		}
		if op.Index == 0 {
			unindexed++
			continue
		}
		v.Checked++
		if op.Probe != "" {
			probes++
		}
		// The acknowledgements that completed before the read began.
		k := sort.Search(len(acks), func(i int) bool { return acks[i].done >= op.Invoke })
		if k == 0 {
			continue
		}
		if b := best[k-1]; op.Index < b.index {
			node := ""
			if len(op.Attempts) > 0 {
				node = op.Attempts[len(op.Attempts)-1].Node
			}
			probe := ""
			if op.Probe != "" {
				probe = " (aimed " + op.Probe + ")"
			}
			v.fail("op %d: %s sent to %s at %.3fs%s was served at index %d, but op %d had been acknowledged at index %d at %.3fs%s",
				op.ID, op.F, node, float64(op.Invoke)/1e9, probe, op.Index, b.id, b.index, float64(b.done)/1e9, faultAt(op.Invoke))
		}
	}
	v.Stats["reads_without_index"] = unindexed
	v.Stats["probe_reads"] = probes
	return v
}
