package jepsen

import (
	"fmt"
	"hash/fnv"
	"sort"
	"strings"

	"github.com/anishathalye/porcupine"
)

// The porcupine model: the domain's delegation and live-handoff rules
// (domain.md 3.6, 3.7, 9.1, 9.6) restricted to one session. The state of a
// session is the class each authority holds it in, plus its live owner
// label and generation. Histories are partitioned by session: that is
// sound because the workload never makes any session incoherent (only
// validated delegations and handoffs change footprints after setup), so the
// global coherence rule "an unrelated violation blocks every delegation"
// never couples two sessions.

// Footprint classes of one session at one authority.
const (
	ClassNone uint8 = iota
	ClassNative
	ClassIn
	ClassOut
)

var classNames = [...]string{"-", "native", "in", "out"}

func className(c uint8) string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return fmt.Sprintf("class(%d)", c)
}

// MaxAuthorities bounds the authorities of a run (the model keeps a fixed
// array so states compare with ==).
const MaxAuthorities = 8

// mState is one session's state.
type mState struct {
	C     [MaxAuthorities]uint8
	Open  bool
	Owner string
	Gen   uint64
}

// Operation kinds of the model.
const (
	mExtend       = "extend"         // record native at A (setup)
	mOpen         = "open"           // open the live session (setup)
	mDelegate     = "delegate"       // delegate A → B
	mHandoff      = "handoff"        // live handoff (Owner, Gen) → Next, with A → B
	mReadSession  = "read_session"   // owner and generation
	mReadFootprnt = "read_footprint" // the class at A (one session's part of a footprint read)
)

// mInput is an operation's input.
type mInput struct {
	Sess  int
	Kind  string
	A, B  int    // from/to, or the authority read or extended
	Owner string // handoff: presented owner; open: claimed owner
	Gen   uint64 // handoff: presented generation
	Next  string // handoff: next owner
}

// mOutput is an operation's outcome.
type mOutput struct {
	Unknown bool   `json:"unknown,omitempty"` // outcome unknown: the op may or may not have happened
	OK      bool   `json:"ok,omitempty"`      // definite success
	Code    string `json:"code,omitempty"`    // definite failure's error code

	// Delegation receipts: this session's class at from and to, before and
	// after (delegate and handoff successes).
	HasReceipt bool  `json:"has_receipt,omitempty"`
	FromBefore uint8 `json:"from_before,omitempty"`
	ToBefore   uint8 `json:"to_before,omitempty"`
	FromAfter  uint8 `json:"from_after,omitempty"`
	ToAfter    uint8 `json:"to_after,omitempty"`
	// Handoff success: the ownership receipt. Stale-owner failure: the
	// current owner and generation the error names (when parsed).
	FromGen  uint64 `json:"from_gen,omitempty"`
	ToGen    uint64 `json:"to_gen,omitempty"`
	ToOwner  string `json:"to_owner,omitempty"`
	CurKnown bool   `json:"cur_known,omitempty"`
	CurOwner string `json:"cur_owner,omitempty"`
	CurGen   uint64 `json:"cur_gen,omitempty"`
	// Reads.
	Found bool   `json:"found,omitempty"` // read_session: the live session exists
	Owner string `json:"owner,omitempty"`
	Gen   uint64 `json:"gen,omitempty"`
	Class uint8  `json:"class,omitempty"` // read_footprint
}

// coherentClasses is domain 3.7 for one session.
func coherentClasses(c *[MaxAuthorities]uint8) bool {
	var active, in, out int
	for _, x := range c {
		switch x {
		case ClassNative:
			active++
		case ClassIn:
			active++
			in++
		case ClassOut:
			out++
		}
	}
	return active <= 1 && (out == 0 || (in == 1 && out == 1))
}

// delegateStep is the controller's delegate (domain 3.6) on one session:
// the classes after, or the error code.
func delegateStep(c [MaxAuthorities]uint8, from, to int) ([MaxAuthorities]uint8, string) {
	fromClass := c[from]
	if fromClass == ClassNone {
		return c, "session_not_owned"
	}
	next := c
	if fromClass == ClassIn {
		// Chain clearing: every other delegator loses its out-record.
		for a := range next {
			if a != from && next[a] == ClassOut {
				next[a] = ClassNone
			}
		}
	}
	next[from] = ClassOut
	next[to] = ClassIn
	if !coherentClasses(&next) {
		return c, "coherence_violation"
	}
	return next, ""
}

// stepModel is the sequential specification.
func stepModel(s mState, in mInput, out mOutput) (bool, mState) {
	switch in.Kind {
	case mExtend:
		next := s
		next.C[in.A] = ClassNative
		if out.OK || out.Unknown {
			return true, next
		}
		return true, s // a definite failure changed nothing (extend has none)
	case mOpen:
		next, code := s, ""
		if s.Open {
			if s.Owner != in.Owner {
				code = "owner_conflict"
			}
		} else {
			next.Open, next.Owner, next.Gen = true, in.Owner, 1
		}
		switch {
		case out.Unknown:
			return true, next
		case out.OK:
			return code == "" && out.Owner == next.Owner && out.Gen == next.Gen, next
		default:
			return out.Code == code, s
		}
	case mDelegate:
		classes, code := delegateStep(s.C, in.A, in.B)
		next := s
		next.C = classes
		switch {
		case out.Unknown:
			return true, next // unchanged when code != ""
		case out.OK:
			return code == "" && receiptMatches(s, next, in, out), next
		default:
			return out.Code == code, s
		}
	case mHandoff:
		next, code := s, ""
		switch {
		case !s.Open:
			code = "session_not_found"
		case in.Owner != s.Owner || in.Gen != s.Gen:
			code = "stale_owner"
		default:
			next.C, code = delegateStep(s.C, in.A, in.B)
			if code == "" {
				next.Owner, next.Gen = in.Next, s.Gen+1
			}
		}
		switch {
		case out.Unknown:
			return true, next
		case out.OK:
			return code == "" && receiptMatches(s, next, in, out) &&
				out.FromGen == s.Gen && out.ToGen == next.Gen && out.ToOwner == next.Owner, next
		default:
			if out.Code != code {
				return false, s
			}
			if code == "stale_owner" && out.CurKnown && (out.CurOwner != s.Owner || out.CurGen != s.Gen) {
				return false, s
			}
			return true, s
		}
	case mReadSession:
		if !out.Found {
			return !s.Open, s
		}
		return s.Open && out.Owner == s.Owner && out.Gen == s.Gen, s
	case mReadFootprnt:
		return out.Class == s.C[in.A], s
	}
	return false, s
}

func receiptMatches(before, after mState, in mInput, out mOutput) bool {
	if !out.HasReceipt {
		return true
	}
	return out.FromBefore == before.C[in.A] && out.ToBefore == before.C[in.B] &&
		out.FromAfter == after.C[in.A] && out.ToAfter == after.C[in.B]
}

// Model is the porcupine model, partitioned by session. names gives the
// authority labels used in descriptions.
func Model(authNames []string) porcupine.Model {
	an := func(i int) string {
		if i >= 0 && i < len(authNames) {
			return authNames[i]
		}
		return fmt.Sprintf("a%d", i)
	}
	return porcupine.Model{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			by := map[int][]porcupine.Operation{}
			for _, op := range history {
				s := op.Input.(mInput).Sess
				by[s] = append(by[s], op)
			}
			keys := make([]int, 0, len(by))
			for k := range by {
				keys = append(keys, k)
			}
			sort.Ints(keys)
			out := make([][]porcupine.Operation, 0, len(keys))
			for _, k := range keys {
				out = append(out, by[k])
			}
			return out
		},
		Init: func() interface{} { return mState{} },
		Step: func(state, input, output interface{}) (bool, interface{}) {
			return stepModel(state.(mState), input.(mInput), output.(mOutput))
		},
		Equal: func(a, b interface{}) bool { return a.(mState) == b.(mState) },
		Hash: func(state interface{}) uint64 {
			s := state.(mState)
			h := fnv.New64a()
			h.Write(s.C[:])
			fmt.Fprintf(h, "%t|%s|%d", s.Open, s.Owner, s.Gen)
			return h.Sum64()
		},
		DescribeOperation: func(input, output interface{}) string {
			return describeOp(input.(mInput), output.(mOutput), an)
		},
		DescribeState: func(state interface{}) string {
			s := state.(mState)
			var parts []string
			for a, c := range s.C {
				if c != ClassNone {
					parts = append(parts, an(a)+":"+className(c))
				}
			}
			owner := "closed"
			if s.Open {
				owner = fmt.Sprintf("%s@%d", s.Owner, s.Gen)
			}
			return fmt.Sprintf("{%s} %s", strings.Join(parts, " "), owner)
		},
	}
}

func describeOp(in mInput, out mOutput, an func(int) string) string {
	var call string
	switch in.Kind {
	case mExtend:
		call = fmt.Sprintf("native at %s", an(in.A))
	case mOpen:
		call = fmt.Sprintf("open(%s)", in.Owner)
	case mDelegate:
		call = fmt.Sprintf("delegate %s→%s", an(in.A), an(in.B))
	case mHandoff:
		call = fmt.Sprintf("handoff %s@%d→%s, %s→%s", in.Owner, in.Gen, in.Next, an(in.A), an(in.B))
	case mReadSession:
		call = "read owner"
	case mReadFootprnt:
		call = fmt.Sprintf("read class at %s", an(in.A))
	}
	var res string
	switch {
	case out.Unknown:
		res = "unknown"
	case in.Kind == mReadSession && !out.Found:
		res = "not found"
	case in.Kind == mReadSession:
		res = fmt.Sprintf("%s@%d", out.Owner, out.Gen)
	case in.Kind == mReadFootprnt:
		res = className(out.Class)
	case out.OK && in.Kind == mHandoff:
		res = fmt.Sprintf("ok gen %d→%d", out.FromGen, out.ToGen)
	case out.OK:
		res = "ok"
	default:
		res = out.Code
		if out.CurKnown {
			res += fmt.Sprintf(" (current %s@%d)", out.CurOwner, out.CurGen)
		}
	}
	return call + " → " + res
}
