package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"runtime/metrics"
	"testing"

	"github.com/reconf/reconf/snapshot"
)

// Identifiers for tests and benchmarks: distinct, deterministic, and spread
// over the id space (the high bytes vary), so tree order is not insertion
// order.
func fzAuth(i uint64) AuthorityID { return AuthorityID(fzUUID(0xa1, i)) }
func fzSess(i uint64) SessionID   { return SessionID(fzUUID(0x5e, i)) }

func fzUUID(kind byte, i uint64) (u UUID) {
	// A multiplicative hash in the high word spreads consecutive ids over
	// the key space; the low word keeps them unique.
	binary.BigEndian.PutUint64(u[0:8], i*0x9e3779b97f4a7c15)
	binary.BigEndian.PutUint64(u[8:16], i)
	u[8] = kind
	return u
}

// fzCommands is one command of every type, each with its optional fields
// unset and set. Most of them do not apply to a fresh state; the scenario
// entries below are the ones that succeed.
func fzCommands() []Command {
	a, b := fzAuth(1), fzAuth(2)
	s1, s2 := fzSess(1), fzSess(2)
	ctx := ContextID(fzUUID(0xc0, 1))
	bnd := BoundaryForBundleID("device_migration")
	scope := FragmentScope("bundle:device_migration")
	req := UpgradeRequest{
		UpgradeID: "u1",
		Plan: Plan{PlanID: "p1", Steps: []PlanStep{
			{StepID: "st1", NextMembers: []string{"m2", "m3"}},
			{StepID: "st2", NextMembers: []string{"m3"}},
		}},
		Compatibility: Compatibility{
			OwnershipContinuityRequired:    true,
			PendingEffectTreatment:         InvalidateBlocked,
			CanonicalPublicationContinuity: ReissueCanonicalTruth,
			ExecutionConstraint:            MixedDeterminismAllowed,
		},
		CarriedPublicationIDs:     []string{"pub1"},
		InvalidatedPublicationIDs: []string{"pub2"},
		CarriedObligationIDs:      []string{"ob1"},
		InvalidatedObligationIDs:  []string{"ob2", "ob3"},
	}
	full := Delegation{
		Context: &ctx, Session: s1, From: a, To: b, BundleID: "device_migration",
		LinkBoundary: &bnd, Scope: &scope, UpgradeRequest: &req, AtMillis: 1700000000000,
	}
	return []Command{
		{Op: &RegisterBundle{Bundle: Bundle{ID: "min"}}},
		{Op: &RegisterBundle{Bundle: Bundle{
			ID: "full", ProtocolIDs: []string{"p.b", "p.a", "p.a"}, Exports: []string{"x", "y"}, Imports: []string{"y", "z"},
			Footprint: Footprint{SchemaVersion: SchemaVersion, Native: []SessionID{s1}, DelegatedIn: []SessionID{s2},
				DelegatedOut: []SessionID{fzSess(3)}},
		}}},
		{Op: &LinkBundles{Left: "device_migration", Right: "guardian_handoff", LinkedID: "linked"}},
		{Op: &ExtendFootprint{Authority: a, Session: s1, Class: Native}},
		{Op: &ExtendFootprint{Authority: b, Session: s1, Class: DelegatedIn}},
		{Op: &ExtendFootprint{Authority: a, Session: s1, Class: DelegatedOut}},
		{Op: &RemoveFootprint{Authority: a, Session: s1}},
		{Op: &Delegate{Delegation: Delegation{Session: s1, From: a, To: b, BundleID: "device_migration"}}},
		{Op: &Delegate{Delegation: full}},
		{Op: &OpenSession{Session: s1, OwnerLabel: "alice"}},
		{Op: &OpenSession{Session: s2, OwnerLabel: "alice", BundleID: "guardian_handoff"}},
		{Op: &Handoff{Session: s1, OwnerLabel: "alice", Generation: 1, NextOwnerLabel: "bob",
			Transfer: Delegation{Session: s1, From: a, To: b, BundleID: "device_migration"}}},
		{Op: &Handoff{Session: s1, OwnerLabel: "alice", Generation: 7, NextOwnerLabel: "bob", Transfer: full}},
		{Op: &SetCapabilities{Reconfiguration: false}},
		{Op: &SetCapabilities{Reconfiguration: true}},
		{Op: &SeedMembership{BundleID: "epoch_rotation_transfer"}},
		{Op: &SeedMembership{BundleID: "epoch_rotation_transfer", Members: []string{"m2", "m1", "m1"}}},
		{Op: &ExecuteUpgrade{BundleID: "epoch_rotation_transfer", Request: UpgradeRequest{UpgradeID: "u0"}}},
		{Op: &ExecuteUpgrade{BundleID: "epoch_rotation_transfer", Request: req}},
		{RequestID: "req-1", Op: &Delegate{Delegation: full}},
		{RequestID: "req-2", Op: &SetCapabilities{Reconfiguration: true}},
		{RequestID: "req-3", Op: &SetRetention{Set: retainAll, Retention: Retention{MaxFacts: 5, HardMaxFacts: 9, MaxAgeMillis: 60000,
			RequestIDTTLMillis: 60000, RequestIDBudgetBytes: MinRequestIDBudget}, AtMillis: 1700000000000}},
		{Op: &AckConsumer{Name: "audit", Through: 1, AtMillis: 1700000000001}},
		{Op: &DropConsumer{Name: "audit", AtMillis: 1700000000002}},
		{Op: &ConsistencyCheck{}},
	}
}

// fzScenario is a sequence of entries that exercises every accepted
// path on a fresh state: footprints, delegation chains with and without
// optional fields, upgrades, live sessions and handoffs, links, request-id
// deduplication, the capability gate and an incoherent session.
func fzScenario() [][]Command {
	a, b, c := fzAuth(1), fzAuth(2), fzAuth(3)
	s1, s2, s3, s4 := fzSess(1), fzSess(2), fzSess(3), fzSess(4)
	ctx := ContextID(fzUUID(0xc0, 9))
	dm := BoundaryForBundleID("device_migration")
	dmScope := dm.Scope
	ert := "epoch_rotation_transfer"
	up := UpgradeRequest{
		UpgradeID: "u1",
		Plan:      Plan{PlanID: "plan", Steps: []PlanStep{{StepID: "cut", NextMembers: []string{"m3", "m2"}}}},
		Compatibility: Compatibility{
			OwnershipContinuityRequired: true, PendingEffectTreatment: PreservePending,
			CanonicalPublicationContinuity: ReissueCanonicalTruth, ExecutionConstraint: PreserveBundleProfile,
		},
		CarriedPublicationIDs: []string{"pub1"}, InvalidatedPublicationIDs: []string{"pub2"},
	}
	return [][]Command{
		{
			{Op: &ExtendFootprint{Authority: a, Session: s1, Class: Native}},
			{RequestID: "d1", Op: &Delegate{Delegation: Delegation{Session: s1, From: a, To: b, BundleID: "device_migration", AtMillis: 10}}},
			{RequestID: "d1", Op: &Delegate{Delegation: Delegation{Session: s1, From: a, To: b, BundleID: "device_migration", AtMillis: 10}}},
			{Op: &Delegate{Delegation: Delegation{Context: &ctx, Session: s1, From: b, To: c, BundleID: "device_migration",
				LinkBoundary: &dm, Scope: &dmScope, AtMillis: 11}}},
		},
		{
			{Op: &SeedMembership{BundleID: ert, Members: []string{"m2", "m1"}}},
			{Op: &ExtendFootprint{Authority: a, Session: s2, Class: Native}},
			{RequestID: "up", Op: &Delegate{Delegation: Delegation{Session: s2, From: a, To: b, BundleID: ert, UpgradeRequest: &up, AtMillis: 12}}},
			{Op: &ExecuteUpgrade{BundleID: ert, Request: UpgradeRequest{UpgradeID: "u2",
				Plan:          Plan{Steps: []PlanStep{{StepID: "s", NextMembers: []string{"m9"}}}},
				Compatibility: Compatibility{PendingEffectTreatment: PreservePending, CanonicalPublicationContinuity: PreserveCanonicalTruth, ExecutionConstraint: PreserveBundleProfile},
			}}},
		},
		{
			{RequestID: "open", Op: &OpenSession{Session: s3, OwnerLabel: "alice", BundleID: "guardian_handoff"}},
			{Op: &OpenSession{Session: s4, OwnerLabel: "carol"}},
			{Op: &ExtendFootprint{Authority: a, Session: s3, Class: Native}},
			{Op: &Handoff{Session: s3, OwnerLabel: "alice", Generation: 1, NextOwnerLabel: "bob",
				Transfer: Delegation{Session: s3, From: a, To: c, BundleID: "guardian_handoff", AtMillis: 13}}},
			{Op: &Handoff{Session: s3, OwnerLabel: "alice", Generation: 1, NextOwnerLabel: "eve",
				Transfer: Delegation{Session: s3, From: c, To: a, BundleID: "guardian_handoff"}}}, // stale
		},
		{
			{Op: &RegisterBundle{Bundle: Bundle{ID: "left", ProtocolIDs: []string{"p1"}, Exports: []string{"sync.delta"},
				Imports: []string{"chat.send"}, Footprint: Footprint{Native: []SessionID{s1}}}}},
			{Op: &RegisterBundle{Bundle: Bundle{ID: "right", ProtocolIDs: []string{"p2"}, Exports: []string{"chat.send"},
				Imports: []string{"sync.delta"}, Footprint: Footprint{DelegatedIn: []SessionID{s2}, DelegatedOut: []SessionID{s3}}}}},
			{RequestID: "link", Op: &LinkBundles{Left: "left", Right: "right", LinkedID: "both"}},
			{Op: &SetCapabilities{Reconfiguration: false}},
			{Op: &LinkBundles{Left: "left", Right: "right", LinkedID: "both2"}}, // gated
			{Op: &SetCapabilities{Reconfiguration: true}},
			{Op: &RemoveFootprint{Authority: c, Session: s1}},
		},
		{
			// s4 natively held twice: an incoherent session blocks every
			// delegation until it is repaired.
			{Op: &ExtendFootprint{Authority: a, Session: s4, Class: Native}},
			{Op: &ExtendFootprint{Authority: b, Session: s4, Class: Native}},
			{Op: &Delegate{Delegation: Delegation{Session: s2, From: b, To: a, BundleID: "device_migration"}}},
		},
	}
}

// fzLinkChain links a bundle with itself n times. Each link doubles the
// protocol id list; past the input limits the link must be refused, or the
// state could no longer be restored from its own snapshot.
func fzLinkChain(n int) []Command {
	var out []Command
	prev := "device_migration"
	for i := 0; i < n; i++ {
		next := fmt.Sprintf("chain%d", i)
		out = append(out, Command{Op: &LinkBundles{Left: prev, Right: prev, LinkedID: next}})
		prev = next
	}
	return out
}

func fzBumpApplied(s *State, index uint64) {
	if index > s.applied {
		s.applied = index
	}
}

// fzInvalidEntry is an entry no node can read (format 0).
var fzInvalidEntry = []byte{0}

func FuzzDecodeEntry(f *testing.F) {
	cmds := fzCommands()
	for _, c := range cmds {
		f.Add(EncodeEntry(c))
		c.RequestID = "rid"
		f.Add(EncodeEntry(c))
	}
	f.Add(EncodeEntry(cmds...))
	for _, e := range fzScenario() {
		f.Add(EncodeEntry(e...))
	}
	var all []Command
	for _, e := range fzScenario() {
		all = append(all, e...)
	}
	f.Add(EncodeEntry(all...))
	f.Add(EncodeEntry(fzLinkChain(13)...))
	// Framing damage and commands this node cannot read.
	f.Add([]byte{})
	f.Add([]byte{EntryFormat})
	f.Add([]byte{EntryFormat, 0})
	f.Add([]byte{EntryFormat + 1, 1, byte(TypeSetCapabilities), CommandVersion, 0, 1, 1})
	f.Add([]byte{EntryFormat, 1, 99, CommandVersion, 0, 0})
	f.Add([]byte{EntryFormat, 2, byte(TypeSetCapabilities), CommandVersion + 1, 0, 1, 1, byte(TypeSetCapabilities), CommandVersion, 0, 1, 0})
	f.Add([]byte{EntryFormat, 1, byte(TypeSetCapabilities), CommandVersion, 0, 1, 2})
	// Format 1 (no checksum) and format 2 with a damaged checksum.
	f.Add([]byte{EntryFormatUnchecked, 1, byte(TypeSetCapabilities), CommandVersion, 0, 1, 1})
	damaged := EncodeEntry(cmds...)
	damaged[len(damaged)/2] ^= 0x40
	f.Add(damaged)
	f.Add([]byte{EntryFormatChecked, 0, 0, 0})
	// A consistency check (type 20, no payload) and one with a payload byte.
	f.Add([]byte{EntryFormatUnchecked, 1, byte(TypeConsistencyCheck), CommandVersion, 0, 0})
	f.Add([]byte{EntryFormatUnchecked, 1, byte(TypeConsistencyCheck), CommandVersion, 0, 1, 0})

	f.Fuzz(func(t *testing.T, data []byte) {
		decoded, err := DecodeEntry(data)
		if err != nil {
			if !errors.Is(err, ErrMalformedEntry) || decoded != nil {
				t.Fatalf("DecodeEntry: %v (decoded %d)", err, len(decoded))
			}
		} else {
			fzCheckReencode(t, decoded)
		}

		const index = 7
		s := New()
		results := s.ApplyEntry(index, data)
		if len(results) == 0 {
			t.Fatal("ApplyEntry returned no results")
		}
		if s.AppliedIndex() != index {
			t.Fatalf("applied index %d, want %d", s.AppliedIndex(), index)
		}
		for i := range results {
			if results[i].Index != index && !results[i].Deduped {
				t.Fatalf("result %d has index %d", i, results[i].Index)
			}
		}
		if err != nil {
			if len(results) != 1 || results[0].Err == nil || results[0].Err.Code != CodeUnknownCommand {
				t.Fatalf("undecodable entry: results %+v", results)
			}
			ref := New()
			ref.ApplyEntry(index, fzInvalidEntry)
			if s.Digest() != ref.Digest() {
				t.Fatal("an undecodable entry changed the state")
			}
			return
		}
		if len(results) != len(decoded) {
			t.Fatalf("%d results for %d commands", len(results), len(decoded))
		}

		// ApplyEntry is Apply over the commands in order, and every
		// rejected command changes nothing but the applied index and its
		// request id's memory.
		step := New()
		for i, dc := range decoded {
			before := step.Clone()
			var r Result
			if dc.Err != nil {
				fzBumpApplied(step, index)
				r = Result{Index: index, Err: dc.Err}
			} else {
				r = step.Apply(index, dc.Command)
			}
			if !reflect.DeepEqual(r, results[i]) {
				t.Fatalf("command %d: ApplyEntry gave %+v, Apply gave %+v", i, results[i], r)
			}
			if r.Err == nil {
				continue
			}
			ref := before
			fzBumpApplied(ref, index)
			if id := dc.Command.RequestID; dc.Err == nil && !r.Deduped && id != "" && CheckRequestID(id) == nil {
				ref.remember(id, r)
			}
			if step.Digest() != ref.Digest() {
				t.Fatalf("command %d (%T) was rejected (%v) but changed the state", i, dc.Command.Op, r.Err)
			}
		}
		if step.Digest() != s.Digest() || step.AppliedIndex() != s.AppliedIndex() {
			t.Fatal("ApplyEntry and Apply reached different states")
		}

		// Determinism: a second replica reaches the same state and answers.
		again := New()
		if r2 := again.ApplyEntry(index, data); !reflect.DeepEqual(r2, results) || again.Digest() != s.Digest() {
			t.Fatal("applying the same entry twice gave different results")
		}

		// Whatever Apply can reach, a snapshot must restore.
		fzCheckIndexes(t, s)
		fzSnapshotRoundTrip(t, s, 3, false)
	})
}

// fzCheckIndexes holds the incrementally maintained per-session index and
// violation set to what a rebuild from the footprints gives.
func fzCheckIndexes(t *testing.T, s *State) {
	t.Helper()
	r := newEmptyState()
	r.footprints = s.footprints.Clone()
	r.rebuildIndexes()
	var got, want []holderItem
	s.holders.Ascend(func(h holderItem) bool { got = append(got, h); return true })
	r.holders.Ascend(func(h holderItem) bool { want = append(want, h); return true })
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("per-session index %v, rebuilt %v", got, want)
	}
	var gotV, wantV []SessionID
	s.violating.Ascend(func(v SessionID) bool { gotV = append(gotV, v); return true })
	r.violating.Ascend(func(v SessionID) bool { wantV = append(wantV, v); return true })
	if !reflect.DeepEqual(gotV, wantV) {
		t.Fatalf("violation set %v, rebuilt %v", gotV, wantV)
	}
}

// fzCheckReencode holds encode to be the inverse of decode for every command
// that decoded.
func fzCheckReencode(t *testing.T, decoded []Decoded) {
	t.Helper()
	if len(decoded) == 0 {
		t.Fatal("DecodeEntry accepted an entry with no commands")
	}
	var ok []Command
	for i, d := range decoded {
		switch {
		case d.Err != nil && d.Err.Code != CodeUnknownCommand:
			t.Fatalf("command %d: decode error with code %s", i, d.Err.Code)
		case d.Err != nil && d.Command.Op != nil:
			t.Fatalf("command %d: decode error %v with an op", i, d.Err)
		case d.Err == nil && d.Command.Op == nil:
			t.Fatalf("command %d: no op and no error", i)
		case d.Err == nil:
			ok = append(ok, d.Command)
		}
	}
	if len(ok) == 0 {
		return
	}
	enc := EncodeEntry(ok...)
	again, err := DecodeEntry(enc)
	if err != nil {
		t.Fatalf("re-encoded entry does not decode: %v", err)
	}
	if len(again) != len(ok) {
		t.Fatalf("re-encoded entry has %d commands, want %d", len(again), len(ok))
	}
	for i := range again {
		if again[i].Err != nil {
			t.Fatalf("re-encoded command %d: %v", i, again[i].Err)
		}
		if !reflect.DeepEqual(again[i].Command, ok[i]) {
			t.Fatalf("re-encoded command %d differs:\n got %#v\nwant %#v", i, again[i].Command.Op, ok[i].Op)
		}
	}
	if enc2 := EncodeEntry(fzCommandsOf(again)...); !bytes.Equal(enc2, enc) {
		t.Fatal("encoding is not canonical")
	}
}

func fzCommandsOf(ds []Decoded) []Command {
	out := make([]Command, len(ds))
	for i := range ds {
		out[i] = ds[i].Command
	}
	return out
}

// fzSnapshotRoundTrip snapshots s, restores it, and requires the same
// digest and header; with canonical, snapshotting the restored state again
// must give the same bytes (the digest already covers the sections, so the
// fuzz targets skip that second snapshot).
func fzSnapshotRoundTrip(t *testing.T, s *State, term uint64, canonical bool) {
	t.Helper()
	var buf bytes.Buffer
	if err := s.Snapshot(&buf, term); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	first := buf.Bytes()
	r, hdr, err := Restore(bytes.NewReader(first))
	if err != nil {
		t.Fatalf("a state's own snapshot does not restore: %v", err)
	}
	if hdr != (snapshot.Header{Index: s.AppliedIndex(), Term: term}) {
		t.Fatalf("header %+v", hdr)
	}
	if r.Digest() != s.Digest() {
		t.Fatal("restored state has a different digest")
	}
	if r.Stats() != s.Stats() {
		t.Fatalf("restored stats %+v, want %+v", r.Stats(), s.Stats())
	}
	if !canonical {
		return
	}
	var again bytes.Buffer
	if err := r.Snapshot(&again, term); err != nil {
		t.Fatalf("Snapshot of restored state: %v", err)
	}
	if !bytes.Equal(again.Bytes(), first) {
		t.Fatal("snapshot of the restored state differs")
	}
}

// fzSeedStates are states with something in every section.
func fzSeedStates(tb testing.TB) []*State {
	var out []*State
	out = append(out, New(), newEmptyState())
	s := New()
	index := uint64(0)
	for _, e := range fzScenario() {
		index++
		s.ApplyEntry(index, EncodeEntry(e...))
		out = append(out, s.Clone())
	}
	for _, c := range fzCommands() {
		index++
		s.ApplyEntry(index, EncodeEntry(c))
	}
	out = append(out, s)
	if st := s.Stats(); st.Facts == 0 || st.LiveSessions == 0 || st.RequestIDs == 0 || st.ViolatingSessions == 0 {
		tb.Fatalf("seed state lacks content: %+v", st)
	}
	// Enough footprint entries and facts for records to split.
	// (Small footprints: a receipt copies four of them.)
	big := New()
	const auths = recordItems / 8
	for i := uint64(0); i < recordItems+10; i++ {
		big.Apply(i+1, Command{Op: &ExtendFootprint{Authority: fzAuth(i % auths), Session: fzSess(i), Class: Native}})
	}
	for i := uint64(0); i < recordItems+10; i++ {
		big.Apply(recordItems+20+i, Command{Op: &Delegate{Delegation: Delegation{Session: fzSess(i),
			From: fzAuth(i % auths), To: fzAuth(i%auths + 1), BundleID: "device_migration"}}})
	}
	out = append(out, big)
	// Bounded mode: a trimmed journal, consumers, stamped ids and newer
	// ones no stamp dates yet.
	bs := New()
	idx := uint64(1)
	bs.Apply(idx, Command{Op: &SetRetention{Set: RetainMaxFacts, Retention: Retention{MaxFacts: 10}, AtMillis: 1000}})
	bs.Apply(idx+1, Command{Op: &ExtendFootprint{Authority: fzAuth(1), Session: fzSess(1), Class: Native}})
	idx += 2
	bs.Apply(idx, Command{Op: &AckConsumer{Name: "late", Through: 0, AtMillis: 1000}})
	for i := uint64(0); i < 2*factChunk; i++ {
		from, to := fzAuth(1+i%2), fzAuth(2-i%2)
		idx++
		bs.Apply(idx, Command{RequestID: fmt.Sprintf("d-%d", i), Op: &Delegate{Delegation: Delegation{Session: fzSess(1),
			From: from, To: to, BundleID: "device_migration", AtMillis: 2000 + i}}})
	}
	idx++
	bs.Apply(idx, Command{Op: &AckConsumer{Name: "late", Through: factChunk + 1, AtMillis: 3000}})
	idx++
	bs.Apply(idx, Command{RequestID: "untimed", Op: &SetCapabilities{Reconfiguration: true}})
	if bs.FirstFactSeq() == 1 || bs.Stats().RequestIDs == 0 {
		tb.Fatalf("bounded seed state is not trimmed: first %d", bs.FirstFactSeq())
	}
	out = append(out, bs)
	return out
}

func TestFuzzScenarioSeeds(t *testing.T) {
	s := New()
	var index uint64
	accepted := map[Type]bool{}
	for _, e := range fzScenario() {
		index++
		decoded, err := DecodeEntry(EncodeEntry(e...))
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range s.ApplyEntry(index, EncodeEntry(e...)) {
			if r.Err == nil {
				accepted[decoded[i].Command.Op.Type()] = true
			}
		}
	}
	for typ := TypeRegisterBundle; typ <= TypeExecuteUpgrade; typ++ {
		if !accepted[typ] {
			t.Errorf("no scenario command of type %s is accepted", typ)
		}
	}
	if len(s.Coherence()) == 0 {
		t.Error("the scenario leaves no incoherent session")
	}
	for _, st := range fzSeedStates(t) {
		fzSnapshotRoundTrip(t, st, 5, true)
	}
}

// TestLinkStaysRestorable: linking may not build a bundle that registration
// would refuse, or the state's own snapshot would no longer restore (and
// repeated self-links would grow a bundle without bound).
func TestFuzzLinkChainStaysRestorable(t *testing.T) {
	s := New()
	results := s.ApplyEntry(1, EncodeEntry(fzLinkChain(13)...))
	for i, r := range results[:12] {
		if r.Err != nil {
			t.Fatalf("link %d: %v", i, r.Err)
		}
	}
	if r := results[12]; r.Err == nil || r.Err.Code != CodeInvalidArgument {
		t.Fatalf("link past the protocol-id limit (8192 ids): %+v", r)
	}
	fzSnapshotRoundTrip(t, s, 1, true)
}

// fzReseal rebuilds a snapshot container around whatever section data it can
// find in data, ignoring every checksum, so that the fuzzer's changes to
// section contents reach the state decoder and can produce snapshots that
// restore. The header index and term are kept.
func fzReseal(data []byte) []byte {
	var out bytes.Buffer
	var hdr snapshot.Header
	if len(data) >= 28 {
		hdr = snapshot.Header{Index: binary.BigEndian.Uint64(data[12:20]), Term: binary.BigEndian.Uint64(data[20:28])}
	}
	w, err := snapshot.NewWriter(&out, hdr)
	if err != nil {
		return nil
	}
	p := data[min(len(data), 32):]
	seen := map[string]bool{}
	for len(p) >= 2 && p[0] == 'S' {
		n := int(p[1])
		if len(p) < 2+n {
			break
		}
		name := string(p[2 : 2+n])
		p = p[2+n:]
		sec, err := w.Section(name)
		if err != nil || seen[name] {
			break
		}
		seen[name] = true
		for len(p) >= 4 {
			size := int(binary.BigEndian.Uint32(p))
			p = p[4:]
			if size == 0 {
				p = p[min(len(p), 12):] // the trailer
				break
			}
			size = min(size, len(p))
			_, _ = sec.Write(p[:size])
			p = p[size:]
		}
		if err := sec.Close(); err != nil {
			return nil
		}
	}
	if err := w.Close(); err != nil {
		return nil
	}
	return out.Bytes()
}

// fzRestoreAllocLimit bounds what Restore may allocate for an input: a fixed
// allowance for its buffers plus a constant factor of the input size, so a
// corrupt length can never make it reserve memory the input does not back.
func fzRestoreAllocLimit(n int) uint64 { return 16<<20 + 64*uint64(n) }

func FuzzRestore(f *testing.F) {
	for i, s := range fzSeedStates(f) {
		var buf bytes.Buffer
		if err := s.Snapshot(&buf, uint64(i)); err != nil {
			f.Fatal(err)
		}
		// The state with multi-record sections (over half a megabyte)
		// makes every execution slow; TestFuzzScenarioSeeds covers it.
		if buf.Len() < 64<<10 {
			f.Add(buf.Bytes())
		}
	}
	f.Add([]byte(snapshot.Magic))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		if fzRestoreChecked(t, data) {
			return // resealing would give the same bytes
		}
		if sealed := fzReseal(data); sealed != nil {
			fzRestoreChecked(t, sealed)
		}
	})
}

// fzAllocated is the heap allocated so far. runtime/metrics reads it
// without stopping the world (runtime.ReadMemStats costs milliseconds
// after heavy allocation, which would dominate every fuzz execution).
func fzAllocated() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// fzRestoreChecked restores data and, if that succeeds, checks the result;
// it reports whether data restored.
func fzRestoreChecked(t *testing.T, data []byte) bool {
	before := fzAllocated()
	st, hdr, err := Restore(bytes.NewReader(data))
	if alloc := fzAllocated() - before; alloc > fzRestoreAllocLimit(len(data)) {
		t.Fatalf("Restore of %d bytes allocated %d bytes", len(data), alloc)
	}
	if err != nil {
		if st != nil {
			t.Fatal("Restore returned a state and an error")
		}
		return false
	}
	if hdr.Index != st.AppliedIndex() {
		t.Fatalf("header index %d, applied %d", hdr.Index, st.AppliedIndex())
	}
	fzSnapshotRoundTrip(t, st, hdr.Term, false)
	// The restored state keeps working, and its indexes stay in step.
	_ = st.Coherence()
	st.Apply(hdr.Index+1, Command{Op: &ExtendFootprint{Authority: fzAuth(1), Session: fzSess(1), Class: Native}})
	st.Apply(hdr.Index+2, Command{Op: &Delegate{Delegation: Delegation{Session: fzSess(1),
		From: fzAuth(1), To: fzAuth(2), BundleID: "device_migration"}}})
	fzCheckIndexes(t, st)
	return true
}
