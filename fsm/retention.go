package fsm

import (
	"fmt"
	"slices"
)

// Bounded state: retention of the fact journal, named consumers, and a
// request-id window measured in time.
//
// A state that comes from an older release (its snapshot has none of the
// sections below, or it replays its log from the start) is in legacy mode:
// the journal grows, and the request-id table keeps the newest MaxRequestIDs
// ids, exactly as that release did, so that replicas of both releases stay
// equal during a rolling upgrade. The first retention or consumer command
// switches bounded mode on; those are new command types, which the leader
// proposes only once every member decodes them (transport/gate.go), and
// the API proposes the default policy on its own as soon as that holds.
//
// Time: Apply reads no clock. The replicated clock is the newest
// leader-stamped time of an accepted command that carries one (a
// delegation, a handoff, a retention or consumer command); it never goes
// back. A request id of a command that carries no time (a bundle
// registration, ...) is dated by the next stamped command, which is later
// than the id's own application, so its window only grows.

// Retention is the replicated retention policy.
type Retention struct {
	MaxFacts             uint64 // facts kept when no consumer holds more back
	HardMaxFacts         uint64 // facts kept at most, whatever consumers have not read
	MaxAgeMillis         uint64 // facts older than this on the replicated clock go; 0: no age limit
	RequestIDTTLMillis   uint64 // how long a request id is remembered
	RequestIDBudgetBytes uint64 // the request-id table's size, beyond which the oldest ids go early
}

// DefaultRetention is the policy a cluster switches to in bounded mode
// unless told otherwise.
var DefaultRetention = Retention{
	MaxFacts:             1_000_000,
	HardMaxFacts:         10_000_000,
	RequestIDTTLMillis:   10 * 60 * 1000,
	RequestIDBudgetBytes: 64 << 20,
}

// Limits on the policy's fields.
const (
	MaxHardMaxFacts       = 1 << 32
	MinRequestIDTTLMillis = 1000
	MaxRequestIDTTLMillis = 7 * 24 * 3600 * 1000
	MinRequestIDBudget    = 1 << 20
	MaxRequestIDBudget    = 64 << 30
)

// Which fields of a SetRetention are set.
const (
	RetainMaxFacts = 1 << iota
	RetainHardMaxFacts
	RetainMaxAge
	RetainRequestIDTTL
	RetainRequestIDBudget
	retainAll = RetainRequestIDBudget<<1 - 1
)

// SetRetention changes the retention policy; fields outside Set keep their
// value. It switches a legacy state to bounded mode.
type SetRetention struct {
	Set uint8
	Retention
	AtMillis uint64 // stamped by the leader
}

// AckConsumer registers the named consumer, or advances its cursor: it has
// read every fact up to Through.
type AckConsumer struct {
	Name     string
	Through  uint64
	AtMillis uint64
}

// DropConsumer forgets the named consumer: retention no longer waits for it.
type DropConsumer struct {
	Name     string
	AtMillis uint64
}

const (
	TypeSetRetention Type = 11
	TypeAckConsumer  Type = 12
	TypeDropConsumer Type = 13
)

func (*SetRetention) Type() Type { return TypeSetRetention }
func (*AckConsumer) Type() Type  { return TypeAckConsumer }
func (*DropConsumer) Type() Type { return TypeDropConsumer }

// Codes of bounded state.
const (
	// CodeFactsTrimmed: a reader asked for facts retention has dropped. The
	// message names first_seq, the oldest fact it can resume from.
	CodeFactsTrimmed     Code = "facts_trimmed"
	CodeConsumerNotFound Code = "consumer_not_found"
)

func factsTrimmed(after, first uint64) *Error {
	return errorf(CodeFactsTrimmed, "facts after %d are trimmed: the oldest retained fact is first_seq %d", after, first)
}

// FactsTrimmedFirstSeq reads first_seq back from a facts_trimmed error.
func FactsTrimmedFirstSeq(e *Error) (uint64, bool) {
	if e == nil || e.Code != CodeFactsTrimmed {
		return 0, false
	}
	var after, first uint64
	if _, err := fmt.Sscanf(e.Message, "facts after %d are trimmed: the oldest retained fact is first_seq %d", &after, &first); err != nil {
		return 0, false
	}
	return first, true
}

// stampOf is the leader time a command carries, if it carries one.
func stampOf(op Op) (uint64, bool) {
	switch op := op.(type) {
	case *Delegate:
		return op.AtMillis, true
	case *Handoff:
		return op.Transfer.AtMillis, true
	case *SetRetention:
		return op.AtMillis, true
	case *AckConsumer:
		return op.AtMillis, true
	case *DropConsumer:
		return op.AtMillis, true
	}
	return 0, false
}

// stampMark dates the provisional request-id entries older than slot: they
// were applied before a command stamped at, so at is no earlier than their
// own application.
type stampMark struct {
	slot, at uint64
}

func checkRetention(op *SetRetention) *Error {
	if op.Set == 0 || op.Set&^retainAll != 0 {
		return invalidf("retention", "must set at least one known field (mask %#x)", op.Set)
	}
	r := &op.Retention
	if op.Set&RetainMaxFacts != 0 && (r.MaxFacts == 0 || r.MaxFacts > MaxHardMaxFacts) {
		return invalidf("max_facts", "is %d; it must be from 1 to %d", r.MaxFacts, uint64(MaxHardMaxFacts))
	}
	if op.Set&RetainHardMaxFacts != 0 && (r.HardMaxFacts == 0 || r.HardMaxFacts > MaxHardMaxFacts) {
		return invalidf("hard_max_facts", "is %d; it must be from 1 to %d", r.HardMaxFacts, uint64(MaxHardMaxFacts))
	}
	if op.Set&RetainRequestIDTTL != 0 && (r.RequestIDTTLMillis < MinRequestIDTTLMillis || r.RequestIDTTLMillis > MaxRequestIDTTLMillis) {
		return invalidf("request_id_ttl", "is %dms; it must be from %dms to %dms", r.RequestIDTTLMillis, MinRequestIDTTLMillis, MaxRequestIDTTLMillis)
	}
	if op.Set&RetainRequestIDBudget != 0 && (r.RequestIDBudgetBytes < MinRequestIDBudget || r.RequestIDBudgetBytes > MaxRequestIDBudget) {
		return invalidf("request_id_budget_bytes", "is %d; it must be from %d to %d", r.RequestIDBudgetBytes, MinRequestIDBudget, uint64(MaxRequestIDBudget))
	}
	return nil
}

// setRetention merges the given fields into the policy, checks the
// result, then switches it on.
func (s *State) setRetention(op *SetRetention) Result {
	p := s.policy
	r := &op.Retention
	if op.Set&RetainMaxFacts != 0 {
		p.MaxFacts = r.MaxFacts
	}
	if op.Set&RetainHardMaxFacts != 0 {
		p.HardMaxFacts = r.HardMaxFacts
	}
	if op.Set&RetainMaxAge != 0 {
		p.MaxAgeMillis = r.MaxAgeMillis
	}
	if op.Set&RetainRequestIDTTL != 0 {
		p.RequestIDTTLMillis = r.RequestIDTTLMillis
	}
	if op.Set&RetainRequestIDBudget != 0 {
		p.RequestIDBudgetBytes = r.RequestIDBudgetBytes
	}
	if p.MaxFacts > p.HardMaxFacts {
		return Result{Err: invalidf("max_facts", "is %d, above hard_max_facts %d", p.MaxFacts, p.HardMaxFacts)}
	}
	s.enterBounded()
	s.policy = p
	out := p
	return Result{Retention: &out}
}

// enterBounded switches a legacy state to bounded mode. The ids already in
// the table have no stamp: the command doing this dates them.
func (s *State) enterBounded() {
	if s.bounded {
		return
	}
	s.bounded = true
	s.reqUnstamped = s.requests.Len() > 0
}

// Bounded reports whether the state is in bounded mode, and its policy.
func (s *State) Bounded() (Retention, bool) { return s.policy, s.bounded }

// Clock is the replicated clock, ms (0 until a stamped command is applied
// in bounded mode).
func (s *State) Clock() uint64 { return s.clock }

// advanceClock moves the replicated clock to at (never back) and dates the
// provisional request ids with it.
func (s *State) advanceClock(at uint64) {
	s.clock = max(s.clock, at)
	if s.reqUnstamped && s.clock != 0 {
		s.reqMarks = append(s.reqMarks, stampMark{slot: s.requestQ.hi, at: s.clock})
		s.reqUnstamped = false
	}
}

// stampAt is the stamp of the oldest request-id entry (in slot lo): its own,
// or the mark that dates it; 0 while nothing does. Marks older than the
// entry are dropped on the way: the queue only ever pops from the front.
func (s *State) stampAt(e *requestEntry, slot uint64) uint64 {
	for len(s.reqMarks) > 0 && s.reqMarks[0].slot <= slot {
		s.reqMarks = s.reqMarks[1:]
	}
	if e.at != 0 {
		return e.at
	}
	if len(s.reqMarks) > 0 {
		return s.reqMarks[0].at
	}
	return 0
}

// expireRequests forgets, oldest first, the ids whose window has passed on
// the replicated clock, then the oldest ids while the table is over its
// budget (early: counted). Each entry is forgotten once: O(1) amortized.
func (s *State) expireRequests() {
	for s.requests.Len() > 0 {
		slot := s.requestQ.lo
		at := s.stampAt(s.requestQ.at(slot), slot)
		switch {
		case at != 0 && at+s.policy.RequestIDTTLMillis <= s.clock:
			s.forgetOldestRequest()
		case s.requestBytes > s.policy.RequestIDBudgetBytes:
			s.forgetOldestRequest()
			s.evictedEarly++
			s.lastEarlyStamp = max(at, s.lastEarlyStamp)
		default:
			return
		}
	}
}

// RequestWindowMillis is how far back the request-id table remembers now:
// request_id_ttl, or less while ids younger than that have been evicted
// early to stay within the budget.
func (s *State) RequestWindowMillis() uint64 {
	ttl := s.policy.RequestIDTTLMillis
	if !s.bounded || s.evictedEarly == 0 || s.lastEarlyStamp+ttl <= s.clock {
		return ttl
	}
	if s.requests.Len() == 0 {
		return 0
	}
	// The oldest entry's stamp, read without dropping marks.
	slot := s.requestQ.lo
	at := s.requestQ.at(slot).at
	if at == 0 {
		for _, m := range s.reqMarks {
			if m.slot > slot {
				at = m.at
				break
			}
		}
	}
	if at == 0 || at > s.clock {
		return 0
	}
	return min(ttl, s.clock-at)
}

// trimFacts drops whole chunks from the front of the journal while the
// policy allows: a chunk goes when the facts after it still number
// max_facts, or when its newest fact is older than max_age on the
// replicated clock, and, either way, every consumer has acknowledged it;
// past hard_max_facts it goes whatever the consumers, and the facts they
// had not acknowledged are counted as lost. Each chunk is looked at once
// when it goes, so the cost per fact is O(1).
func (s *State) trimFacts() {
	p := &s.policy
	for len(s.factChunks) > 0 {
		total := uint64(s.factCount())
		retained := total - s.factBase
		chunk := s.factChunks[0]
		last := s.factBase + factChunk // Seq of the chunk's newest fact
		byCount := total-last >= p.MaxFacts
		byAge := p.MaxAgeMillis > 0 && chunk[len(chunk)-1].TimestampMillis+p.MaxAgeMillis <= s.clock
		hard := retained > p.HardMaxFacts
		if !byCount && !byAge && !hard {
			return
		}
		var lost uint64
		held := false
		s.consumers.Ascend(func(c Consumer) bool {
			if c.Cursor < last {
				held = true
				lost += last - max(c.Cursor, s.factBase)
			}
			return true
		})
		if held && !hard {
			return
		}
		s.factsLost += lost
		s.factBase += factChunk
		s.factChunks = s.factChunks[1:]
		// The dropped chunk is still referenced by the list's backing
		// array, which clones may share: copy the list once the dead
		// prefix outgrows it, so dropped chunks are collected.
		if s.factDead++; s.factDead > len(s.factChunks) {
			s.factChunks = slices.Clone(s.factChunks)
			s.factDead = 0
		}
	}
}

// FactsLost is the number of facts retention dropped before some consumer
// had acknowledged them (hard_max_facts reached).
func (s *State) FactsLost() uint64 { return s.factsLost }

// RequestStats describes the request-id table.
type RequestStats struct {
	Entries      int
	Bytes        uint64
	EvictedEarly uint64
	WindowMillis uint64
}

// Requests reports the request-id table's size and window.
func (s *State) Requests() RequestStats {
	return RequestStats{Entries: s.requests.Len(), Bytes: s.requestBytes, EvictedEarly: s.evictedEarly, WindowMillis: s.RequestWindowMillis()}
}
