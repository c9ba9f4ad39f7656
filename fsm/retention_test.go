package fsm

import (
	"bytes"
	"fmt"
	"testing"
)

// rcTrimmed leaves h with a journal trimmed by one chunk: max_facts 1,
// then factChunk+10 delegations.
func rcTrimmed(h *rcHarness) {
	h.t.Helper()
	h.ok(&SetRetention{Set: RetainMaxFacts | RetainHardMaxFacts, Retention: Retention{MaxFacts: 1, HardMaxFacts: 1}, AtMillis: 1})
	rcPingPong(h, factChunk+10, 1000, 0)
	if h.s.FirstFactSeq() != factChunk+1 {
		h.t.Fatalf("first seq %d, want %d", h.s.FirstFactSeq(), factChunk+1)
	}
}

// rcPingPong applies n delegations of one session back and forth, stamped
// at, at+step, ...
func rcPingPong(h *rcHarness, n int, at, step uint64) {
	h.t.Helper()
	a, b, s := rcAuth(1), rcAuth(2), rcSess(1)
	if h.classOf(a, s) == 0 && h.classOf(b, s) == 0 {
		h.native(a, s)
	}
	for i := 0; i < n; i++ {
		from, to := a, b
		if h.classOf(a, s) != Native && h.classOf(a, s) != DelegatedIn {
			from, to = b, a
		}
		d := rcDel(s, from, to)
		d.AtMillis = at
		h.ok(&Delegate{d})
		at += step
	}
}

// restoreCopy snapshots s and restores it.
func restoreCopy(t testing.TB, s *State) *State {
	t.Helper()
	var buf bytes.Buffer
	if err := s.Snapshot(&buf, 1); err != nil {
		t.Fatal(err)
	}
	r, _, err := Restore(&buf)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	return r
}

func TestRetentionTrimsWholeChunksByCount(t *testing.T) {
	h := rcNew(t)
	h.ok(&SetRetention{Set: RetainMaxFacts, Retention: Retention{MaxFacts: 1000}, AtMillis: 5})
	// The first chunk (512 facts) goes exactly when 1,000 facts follow it.
	rcPingPong(h, factChunk+999, 1000, 1)
	if h.s.FirstFactSeq() != 1 {
		t.Fatalf("trimmed with only 999 facts after the chunk: first %d", h.s.FirstFactSeq())
	}
	rcPingPong(h, 1, 1000, 1)
	if h.s.FirstFactSeq() != factChunk+1 {
		t.Fatalf("not trimmed with 1000 facts after the chunk: first %d", h.s.FirstFactSeq())
	}
	rcPingPong(h, 3000-factChunk-1000, 1000, 1)
	last := h.s.LastFactSeq()
	first := h.s.FirstFactSeq()
	retained := last - first + 1
	if last != 3000 || retained < 1000 || retained >= 1000+factChunk || (first-1)%factChunk != 0 {
		t.Fatalf("first %d last %d retained %d", first, last, retained)
	}
	if got := h.s.Facts(0, 0); uint64(len(got)) != retained || got[0].Seq != first {
		t.Fatalf("Facts(0) gave %d facts from %d", len(got), got[0].Seq)
	}
	err := h.s.CheckFactsAfter(first - 2)
	if err == nil || err.Code != CodeFactsTrimmed {
		t.Fatalf("CheckFactsAfter below first: %v", err)
	}
	if fs, ok := FactsTrimmedFirstSeq(err); !ok || fs != first {
		t.Fatalf("first_seq from the error %d %v, want %d", fs, ok, first)
	}
	if err := h.s.CheckFactsAfter(first - 1); err != nil {
		t.Fatalf("CheckFactsAfter(first-1): %v", err)
	}
	// A replica restored from a snapshot is the same state and goes on the same.
	r := restoreCopy(t, h.s)
	if r.Digest() != h.s.Digest() || r.FirstFactSeq() != first {
		t.Fatal("restored replica differs")
	}
	h2 := &rcHarness{t: t, s: r, idx: h.idx}
	rcPingPong(h, 700, 9000, 1)
	rcPingPong(h2, 700, 9000, 1)
	if h.s.Digest() != h2.s.Digest() || h.s.FirstFactSeq() != h2.s.FirstFactSeq() {
		t.Fatal("replicas differ after trimming on from a snapshot")
	}
}

func TestRetentionTrimsByAgeOnTheReplicatedClock(t *testing.T) {
	h := rcNew(t)
	h.ok(&SetRetention{Set: RetainMaxAge, Retention: Retention{MaxAgeMillis: 60_000}, AtMillis: 1})
	rcPingPong(h, 2*factChunk, 1000, 0) // two full chunks at t=1s
	if h.s.FirstFactSeq() != 1 {
		t.Fatalf("trimmed before max_age: first %d", h.s.FirstFactSeq())
	}
	rcPingPong(h, 1, 61_000, 0) // the clock reaches 61s: both chunks are 60s old
	if h.s.FirstFactSeq() != 2*factChunk+1 {
		t.Fatalf("first %d after max_age, want %d", h.s.FirstFactSeq(), 2*factChunk+1)
	}
	if h.s.Clock() != 61_000 {
		t.Fatalf("clock %d", h.s.Clock())
	}
	// An older stamp (another leader's clock) never moves the clock back.
	rcPingPong(h, 1, 50_000, 0)
	if h.s.Clock() != 61_000 {
		t.Fatalf("clock went back to %d", h.s.Clock())
	}
}

func TestConsumersHoldFactsUntilHardMax(t *testing.T) {
	h := rcNew(t)
	h.ok(&SetRetention{Set: RetainMaxFacts | RetainHardMaxFacts, Retention: Retention{MaxFacts: 10, HardMaxFacts: 3 * factChunk}, AtMillis: 1})
	if r := h.ok(&AckConsumer{Name: "audit", Through: 0, AtMillis: 1}); r.Consumer.Cursor != 0 {
		t.Fatalf("ack %+v", r.Consumer)
	}
	rcPingPong(h, 2*factChunk+5, 1000, 0)
	if h.s.FirstFactSeq() != 1 {
		t.Fatalf("trimmed facts the consumer has not acknowledged: first %d", h.s.FirstFactSeq())
	}
	// Acknowledging the first chunk lets exactly it go.
	h.ok(&AckConsumer{Name: "audit", Through: factChunk + 3, AtMillis: 2})
	if h.s.FirstFactSeq() != factChunk+1 {
		t.Fatalf("first %d after ack, want %d", h.s.FirstFactSeq(), factChunk+1)
	}
	// An older acknowledgement does not move the cursor back.
	if r := h.ok(&AckConsumer{Name: "audit", Through: 5, AtMillis: 3}); r.Consumer.Cursor != factChunk+3 {
		t.Fatalf("cursor went back: %+v", r.Consumer)
	}
	h.reject(&AckConsumer{Name: "audit", Through: h.s.LastFactSeq() + 1}, CodeInvalidArgument)
	// Past hard_max_facts retention trims anyway and counts the loss.
	rcPingPong(h, 3*factChunk, 1000, 0)
	lastFirst := h.s.FirstFactSeq()
	if retained := h.s.LastFactSeq() - lastFirst + 1; retained > 3*factChunk {
		t.Fatalf("retained %d beyond hard_max_facts", retained)
	}
	wantLost := lastFirst - 1 - (factChunk + 3)
	if h.s.FactsLost() != wantLost {
		t.Fatalf("facts lost %d, want %d", h.s.FactsLost(), wantLost)
	}
	// Snapshot and restore keep policy and cursors.
	r := restoreCopy(t, h.s)
	if c, ok := r.LookupConsumer("audit"); !ok || c.Cursor != factChunk+3 {
		t.Fatalf("restored consumer %+v %v", c, ok)
	}
	if p, on := r.Bounded(); !on || p.MaxFacts != 10 || p.HardMaxFacts != 3*factChunk || r.FactsLost() != wantLost {
		t.Fatalf("restored policy %+v %v lost %d", p, on, r.FactsLost())
	}
	// Dropping the consumer releases everything beyond max_facts at the
	// next command.
	h.ok(&DropConsumer{Name: "audit", AtMillis: 4})
	h.reject(&DropConsumer{Name: "audit"}, CodeConsumerNotFound)
	if retained := h.s.LastFactSeq() - h.s.FirstFactSeq() + 1; retained >= 10+factChunk {
		t.Fatalf("retained %d after the consumer went", retained)
	}
}

func TestRetentionPolicyChecks(t *testing.T) {
	h := rcNew(t)
	h.reject(&SetRetention{}, CodeInvalidArgument)
	h.reject(&SetRetention{Set: RetainMaxFacts}, CodeInvalidArgument)
	h.reject(&SetRetention{Set: RetainRequestIDTTL, Retention: Retention{RequestIDTTLMillis: 5}}, CodeInvalidArgument)
	h.reject(&SetRetention{Set: RetainRequestIDBudget, Retention: Retention{RequestIDBudgetBytes: 5}}, CodeInvalidArgument)
	h.reject(&SetRetention{Set: RetainMaxFacts, Retention: Retention{MaxFacts: DefaultRetention.HardMaxFacts + 1}}, CodeInvalidArgument)
	h.reject(&AckConsumer{Name: "a/b"}, CodeInvalidArgument)
	if _, on := h.s.Bounded(); on {
		t.Fatal("a rejected command switched bounded mode on")
	}
	r := h.ok(&SetRetention{Set: RetainMaxFacts, Retention: Retention{MaxFacts: 7}, AtMillis: 1})
	want := DefaultRetention
	want.MaxFacts = 7
	if *r.Retention != want {
		t.Fatalf("policy %+v, want %+v", *r.Retention, want)
	}
}

func TestRequestIDWindowIsATime(t *testing.T) {
	h := rcNew(t)
	h.ok(&SetRetention{Set: RetainRequestIDTTL, Retention: Retention{RequestIDTTLMillis: 10_000}, AtMillis: 1000})
	a, b, s := rcAuth(1), rcAuth(2), rcSess(1)
	h.native(a, s)
	del := func(id string, from, to AuthorityID, at uint64) Result {
		d := rcDel(s, from, to)
		d.AtMillis = at
		return h.applyID(id, &Delegate{d})
	}
	first := del("r-1", a, b, 2000)
	// Far more ids than the old count bound, all within the window.
	for i := 0; i < MaxRequestIDs+10; i++ {
		h.applyID(fmt.Sprintf("x-%d", i), &SetCapabilities{Reconfiguration: true})
	}
	del("", b, a, 11_999) // the clock moves, still within r-1's window
	if r := del("r-1", a, b, 11_999); !r.Deduped || r.Outcome.FactSeq != first.Outcome.FactSeq {
		t.Fatalf("retry within the window: deduped %v", r.Deduped)
	}
	// The untimed ids were dated by the next stamped command (11,999):
	// they outlive r-1.
	del("", a, b, 12_000)
	if r := del("r-1", b, a, 12_000); r.Deduped || r.Err != nil {
		t.Fatalf("retry after the window was answered from the table: %+v", r)
	}
	if r := h.applyID("x-0", &SetCapabilities{Reconfiguration: true}); !r.Deduped {
		t.Fatal("an untimed id expired before the stamp that dated it + ttl")
	}
	del("", a, b, 21_999)
	if r := h.applyID("x-0", &SetCapabilities{Reconfiguration: true}); r.Deduped {
		t.Fatal("an untimed id outlived its window")
	}
	st := h.s.Requests()
	if st.EvictedEarly != 0 || st.WindowMillis != 10_000 {
		t.Fatalf("request stats %+v", st)
	}
	// Snapshot and restore keep the stamps: both replicas forget the same.
	r := restoreCopy(t, h.s)
	if r.Digest() != h.s.Digest() {
		t.Fatal("restored digest differs")
	}
}

func TestRequestIDBudgetEvictsEarlyAndCounts(t *testing.T) {
	h := rcNew(t)
	h.ok(&SetRetention{Set: RetainRequestIDBudget, Retention: Retention{RequestIDBudgetBytes: MinRequestIDBudget}, AtMillis: 1000})
	n := 0
	for h.s.Requests().EvictedEarly == 0 {
		h.applyID(fmt.Sprintf("id-%06d", n), &SetCapabilities{Reconfiguration: true})
		n++
		if n > 1<<20 {
			t.Fatal("never evicted")
		}
	}
	st := h.s.Requests()
	if st.Bytes > MinRequestIDBudget {
		t.Fatalf("table %d bytes over the budget", st.Bytes)
	}
	// The oldest went first.
	if r := h.applyID("id-000000", &SetCapabilities{Reconfiguration: true}); r.Deduped {
		t.Fatal("the oldest id survived an early eviction")
	}
	if r := h.applyID(fmt.Sprintf("id-%06d", n-1), &SetCapabilities{Reconfiguration: true}); !r.Deduped {
		t.Fatal("the newest id was evicted")
	}
}

// TestLegacyStateKeepsTheOldRules: a state no bounded command touched
// trims nothing, bounds ids by count, and its snapshot has only the
// sections older releases write.
func TestLegacyStateKeepsTheOldRules(t *testing.T) {
	h := rcNew(t)
	rcPingPong(h, 2*factChunk, 1000, 1)
	for i := 0; i < MaxRequestIDs+5; i++ {
		h.applyID(fmt.Sprintf("x-%d", i), &SetCapabilities{Reconfiguration: true})
	}
	if h.s.FirstFactSeq() != 1 || h.s.Stats().RequestIDs != MaxRequestIDs || h.s.Clock() != 0 {
		t.Fatalf("legacy state changed its rules: first %d ids %d clock %d", h.s.FirstFactSeq(), h.s.Stats().RequestIDs, h.s.Clock())
	}
	var buf bytes.Buffer
	if err := h.s.Snapshot(&buf, 1); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(buf.Bytes(), []byte("request_times")) || bytes.Contains(buf.Bytes(), []byte("consumers")) {
		t.Fatal("a legacy snapshot carries bounded sections")
	}
	r := restoreCopy(t, h.s)
	if _, on := r.Bounded(); on || r.Digest() != h.s.Digest() {
		t.Fatal("legacy restore")
	}
}
