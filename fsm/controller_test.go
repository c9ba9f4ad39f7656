package fsm

// Controller tests: every upstream test of domain.md section 7.1 that is not
// about live sessions (those are in live_test.go), every derived edge case
// of section 7.2, the error codes and their messages, input validation,
// coherence (ordering and incremental versus global), request-id
// deduplication, the fact journal and runtime upgrades, all adapted to the
// reconf decisions of section 9.
//
// Helpers shared with live_test.go and codec_test.go carry an "rc" prefix so
// they cannot collide with other test files of the package.

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// ---------------------------------------------------------------------------
// Helpers

// rcAuth, rcSess and rcCtx build identifiers whose byte order (and so text
// order) follows n.
func rcAuth(n byte) AuthorityID {
	var a AuthorityID
	a[0], a[15] = 0xa0, n
	return a
}

func rcSess(n byte) SessionID {
	var s SessionID
	s[0], s[15] = 0x5e, n
	return s
}

func rcCtx(n byte) ContextID {
	var c ContextID
	c[0], c[15] = 0xc0, n
	return c
}

// rcHarness applies commands to a State at increasing Raft indexes.
type rcHarness struct {
	t   testing.TB
	s   *State
	idx uint64
}

func rcNew(t testing.TB) *rcHarness { return &rcHarness{t: t, s: New()} }

func (h *rcHarness) apply(op Op) Result { return h.applyID("", op) }

func (h *rcHarness) applyID(id string, op Op) Result {
	h.t.Helper()
	h.idx++
	r := h.s.Apply(h.idx, Command{RequestID: id, Op: op})
	if !r.Deduped && r.Index != h.idx {
		h.t.Fatalf("result index %d, want %d", r.Index, h.idx)
	}
	if h.s.AppliedIndex() != h.idx {
		h.t.Fatalf("applied index %d, want %d", h.s.AppliedIndex(), h.idx)
	}
	return r
}

// ok applies op and fails the test if it is rejected.
func (h *rcHarness) ok(op Op) Result {
	h.t.Helper()
	r := h.apply(op)
	if r.Err != nil {
		h.t.Fatalf("%s rejected: %v", op.Type(), r.Err)
	}
	return r
}

// reject applies op (without a request id), requires the given code, and
// requires that nothing but the applied index changed.
func (h *rcHarness) reject(op Op, code Code) *Error {
	h.t.Helper()
	before := h.s.Clone()
	r := h.apply(op)
	if r.Err == nil {
		h.t.Fatalf("%T accepted, want %s", op, code)
	}
	if r.Err.Code != code {
		h.t.Fatalf("%T rejected with %s (%s), want %s", op, r.Err.Code, r.Err.Message, code)
	}
	if r.Bundle != nil || r.Outcome != nil || r.Session != nil || r.Execution != nil || r.Upgrade != nil || r.Retention != nil || r.Consumer != nil || r.Deduped {
		h.t.Fatalf("rejected result carries a payload: %+v", r)
	}
	rcAssertUnchanged(h.t, before, h.s)
	return r.Err
}

// rejectMsg is reject plus an exact message.
func (h *rcHarness) rejectMsg(op Op, code Code, msg string) {
	h.t.Helper()
	if err := h.reject(op, code); err.Message != msg {
		h.t.Fatalf("message\n got %q\nwant %q", err.Message, msg)
	}
}

func (h *rcHarness) native(a AuthorityID, s SessionID) {
	h.t.Helper()
	h.ok(&ExtendFootprint{Authority: a, Session: s, Class: Native})
}

func (h *rcHarness) extend(a AuthorityID, s SessionID, c Class) {
	h.t.Helper()
	h.ok(&ExtendFootprint{Authority: a, Session: s, Class: c})
}

// rcDel is a delegation through the device_migration default bundle,
// stamped 1000 ms.
func rcDel(s SessionID, from, to AuthorityID) Delegation {
	return Delegation{Session: s, From: from, To: to, BundleID: "device_migration", AtMillis: 1000}
}

func (h *rcHarness) delegate(s SessionID, from, to AuthorityID) *Outcome {
	h.t.Helper()
	return h.ok(&Delegate{rcDel(s, from, to)}).Outcome
}

// classOf is the class a holds s in, 0 if none (or no footprint).
func (h *rcHarness) classOf(a AuthorityID, s SessionID) Class {
	f, ok := h.s.Footprint(a)
	if !ok {
		return 0
	}
	return f.ClassOf(s)
}

func (h *rcHarness) wantClass(a AuthorityID, s SessionID, c Class) {
	h.t.Helper()
	if got := h.classOf(a, s); got != c {
		h.t.Fatalf("%s holds %s as %v, want %v", a, s, got, c)
	}
}

func (h *rcHarness) wantCoherent() {
	h.t.Helper()
	if v := h.s.Coherence(); len(v) != 0 {
		h.t.Fatalf("state incoherent: %q", v)
	}
}

// rcBundleEntries lists every bundle with its upgrade snapshot.
func rcBundleEntries(s *State) []bundleEntry {
	var out []bundleEntry
	s.bundles.Ascend(func(e bundleEntry) bool {
		out = append(out, e)
		return true
	})
	return out
}

func rcLiveSessions(s *State) []*LiveSession {
	var out []*LiveSession
	s.live.Ascend(func(l *LiveSession) bool {
		out = append(out, l)
		return true
	})
	return out
}

func rcFootprints(s *State) map[AuthorityID]Footprint {
	out := map[AuthorityID]Footprint{}
	for _, a := range s.Authorities() {
		f, _ := s.Footprint(a)
		out[a] = f
	}
	return out
}

// rcAssertUnchanged requires that after differs from before at most in the
// applied index: same digest once the index is aligned, and the same
// bundles, upgrade snapshots, footprints, live sessions, facts, coherence,
// gate and request table.
func rcAssertUnchanged(t testing.TB, before, after *State) {
	t.Helper()
	aligned := before.Clone()
	aligned.applied = after.applied
	if aligned.Digest() != after.Digest() {
		t.Fatalf("state digest changed")
	}
	if !reflect.DeepEqual(rcBundleEntries(before), rcBundleEntries(after)) {
		t.Fatalf("bundles or upgrade snapshots changed")
	}
	if !reflect.DeepEqual(rcFootprints(before), rcFootprints(after)) {
		t.Fatalf("footprints changed:\n%+v\n%+v", rcFootprints(before), rcFootprints(after))
	}
	if !reflect.DeepEqual(rcLiveSessions(before), rcLiveSessions(after)) {
		t.Fatalf("live sessions changed")
	}
	if !reflect.DeepEqual(before.Facts(0, 0), after.Facts(0, 0)) {
		t.Fatalf("facts changed")
	}
	if !slices.Equal(before.Coherence(), after.Coherence()) {
		t.Fatalf("coherence changed")
	}
	if before.Reconfiguration() != after.Reconfiguration() || before.Stats() != after.Stats() {
		t.Fatalf("gate or stats changed: %+v vs %+v", before.Stats(), after.Stats())
	}
}

// Expected violation messages (domain 3.7).
func vActive(s SessionID, n int) string {
	return fmt.Sprintf("session %s has multiple active owners (%d)", s, n)
}
func vOrphan(s SessionID) string {
	return fmt.Sprintf("session %s delegated out without delegated-in receiver", s)
}
func vInTo(s SessionID, n int) string {
	return fmt.Sprintf("session %s delegated in to %d authorities", s, n)
}
func vOutBy(s SessionID, n int) string {
	return fmt.Sprintf("session %s delegated out by %d authorities", s, n)
}

// coherenceMsg is the message of a delegation of s rejected for msgs.
func coherenceMsg(s SessionID, msgs ...string) string {
	return "session delegation failed for session " + s.String() +
		": reconfiguration coherence violation: " + strings.Join(msgs, "; ")
}

func notOwnedMsg(s SessionID, a AuthorityID) string {
	return fmt.Sprintf("session delegation failed for session %s: session %s not owned by authority %s", s, s, a)
}

const gatePrefixDelegation = `session delegation requires protocol-critical runtime surfaces ["ownership_receipt", "semantic_handoff", "reconfiguration_transition"]: `

func rcGateMsg(operation string) string {
	return operation + ` requires protocol-critical runtime surfaces ["ownership_receipt", "semantic_handoff", "reconfiguration_transition"]: runtime surface ` +
		"`ownership_receipt` is not admitted (capability `reconfiguration` is off)"
}

// rcUpgradeRequest is the request of the upstream integration test
// delegation_carries_runtime_upgrade_artifacts_explicitly.
func rcUpgradeRequest(id string) UpgradeRequest {
	return UpgradeRequest{
		UpgradeID: id,
		Plan:      Plan{PlanID: "plan-" + id, Steps: []PlanStep{{StepID: "step-1", NextMembers: []string{"member-c", "member-b"}}}},
		Compatibility: Compatibility{
			OwnershipContinuityRequired:    true,
			PendingEffectTreatment:         PreservePending,
			CanonicalPublicationContinuity: PreserveCanonicalTruth,
			ExecutionConstraint:            PreserveBundleProfile,
		},
		CarriedPublicationIDs: []string{"pub:device"},
		CarriedObligationIDs:  []string{"obl:pending-send"},
	}
}

func rcUpgradeMsg(bundle, reason string) string {
	return fmt.Sprintf("runtime upgrade for bundle `%s` failed: runtime upgrade rejected for bundle `%s`: %s", bundle, bundle, reason)
}

// ---------------------------------------------------------------------------
// Section 7.1: upstream unit and aura-core tests

func TestUpstreamLinkRejectsOverlappingSessionFootprints(t *testing.T) {
	h := rcNew(t)
	s9 := rcSess(9)
	for _, id := range []string{"left", "right"} {
		h.ok(&RegisterBundle{Bundle: Bundle{ID: id, ProtocolIDs: []string{"p." + id}, Footprint: Footprint{Native: []SessionID{s9}}}})
	}
	h.rejectMsg(&LinkBundles{Left: "left", Right: "right", LinkedID: "x"}, CodeOverlappingSessions,
		"link bundles `left` + `right` into `x` failed: cannot link bundles with overlapping sessions")
	if _, ok := h.s.Bundle("x"); ok {
		t.Fatal("linked bundle stored after overlap")
	}
	// Overlap counts every class: a delegated-out session overlaps a native.
	h.ok(&RegisterBundle{Bundle: Bundle{ID: "out", Footprint: Footprint{DelegatedOut: []SessionID{s9}}}})
	h.reject(&LinkBundles{Left: "left", Right: "out", LinkedID: "y"}, CodeOverlappingSessions)
}

func TestUpstreamDelegateUpdatesFootprintsAndAppendsReceipt(t *testing.T) {
	// Upstream delegates without a bundle id at the controller level; in
	// reconf every delegation names a registered bundle.
	h := rcNew(t)
	from, to, s := rcAuth(1), rcAuth(2), rcSess(1)
	h.native(from, s)
	out := h.delegate(s, from, to)
	r := out.Receipt
	if r.Session != s || r.From != from || r.To != to || r.BundleID != "device_migration" || r.DelegatedAtMillis != 1000 {
		t.Fatalf("receipt header %+v", r)
	}
	if !slices.Equal(r.FromBefore.Native, []SessionID{s}) || len(r.FromBefore.DelegatedOut) != 0 {
		t.Fatalf("from_before %+v", r.FromBefore)
	}
	if !slices.Equal(r.FromAfter.DelegatedOut, []SessionID{s}) || len(r.FromAfter.Native) != 0 {
		t.Fatalf("from_after %+v", r.FromAfter)
	}
	if !r.ToBefore.Equal(newFootprint()) {
		t.Fatalf("to_before of an untouched authority should be new(): %+v", r.ToBefore)
	}
	if !slices.Equal(r.ToAfter.DelegatedIn, []SessionID{s}) {
		t.Fatalf("to_after %+v", r.ToAfter)
	}
	// The log length is 1: reconf's replicated log of delegations is the
	// fact journal.
	if n := h.s.LastFactSeq(); n != 1 || out.FactSeq != 1 {
		t.Fatalf("facts %d, fact seq %d; want 1", n, out.FactSeq)
	}
	h.wantCoherent()
	h.wantClass(from, s, DelegatedOut)
	h.wantClass(to, s, DelegatedIn)
}

func TestUpstreamFootprintExtendAndRemoveUpdatesClassification(t *testing.T) {
	h := rcNew(t)
	a, s := rcAuth(1), rcSess(1)
	if _, ok := h.s.Footprint(a); ok {
		t.Fatal("footprint exists before any operation")
	}
	h.native(a, s)
	f, ok := h.s.Footprint(a)
	if !ok || !slices.Equal(f.Native, []SessionID{s}) || f.SchemaVersion != SchemaVersion {
		t.Fatalf("after extend: %+v %v", f, ok)
	}
	h.ok(&RemoveFootprint{Authority: a, Session: s})
	f, ok = h.s.Footprint(a)
	if !ok {
		t.Fatal("remove dropped the footprint entry; upstream keeps it")
	}
	if f.Contains(s) || len(f.AllSessions()) != 0 || f.SchemaVersion != SchemaVersion {
		t.Fatalf("after remove: %+v", f)
	}
	if !slices.Equal(h.s.Authorities(), []AuthorityID{a}) {
		t.Fatalf("authorities %v", h.s.Authorities())
	}
}

func TestUpstreamCoherenceDetectsOrphanedDelegatedOutSession(t *testing.T) {
	h := rcNew(t)
	s := rcSess(1)
	h.extend(rcAuth(1), s, DelegatedOut)
	if got, want := h.s.Coherence(), []string{vOrphan(s)}; !slices.Equal(got, want) {
		t.Fatalf("coherence %q, want %q", got, want)
	}
}

func TestUpstreamRepeatedDelegationUnderChurnPreservesCoherence(t *testing.T) {
	h := rcNew(t)
	a, b, c, s := rcAuth(1), rcAuth(2), rcAuth(3), rcSess(1)
	h.native(a, s)
	for i, hop := range [][2]AuthorityID{{a, b}, {b, c}, {c, a}} {
		h.delegate(s, hop[0], hop[1])
		h.wantCoherent()
		if n := h.s.LastFactSeq(); n != uint64(i+1) {
			t.Fatalf("after hop %d: %d facts", i, n)
		}
	}
	// Chain clearing keeps only the latest hop: C out, A in, B holds nothing.
	h.wantClass(a, s, DelegatedIn)
	h.wantClass(c, s, DelegatedOut)
	h.wantClass(b, s, 0)
	if _, ok := h.s.Footprint(b); !ok {
		t.Fatal("B's footprint entry should remain (possibly empty)")
	}
}

func TestUpstreamBundleCompatibilityRequiresMissingImportsToBeExported(t *testing.T) {
	left := &Bundle{ID: "left", Exports: []string{"sync.delta"}, Imports: []string{"chat.send"}}
	right := &Bundle{ID: "right", Exports: []string{"chat.send"}, Imports: []string{"sync.delta"}}
	if !left.CompatibleWith(right) || !right.CompatibleWith(left) {
		t.Fatal("mutual import/export should be compatible")
	}
	lonely := &Bundle{ID: "lonely", Imports: []string{"nobody.exports"}}
	if lonely.CompatibleWith(right) {
		t.Fatal("an import nobody exports should be incompatible")
	}
	// Self-satisfied imports are compatible with anything.
	self := &Bundle{ID: "self", Exports: []string{"a"}, Imports: []string{"a"}}
	if !self.CompatibleWith(lonely) {
		t.Fatal("a bundle whose imports are self-exported is compatible with every bundle")
	}

	h := rcNew(t)
	h.ok(&RegisterBundle{Bundle: *left})
	h.ok(&RegisterBundle{Bundle: *right})
	h.ok(&RegisterBundle{Bundle: *lonely})
	h.ok(&LinkBundles{Left: "left", Right: "right", LinkedID: "x"})
	h.rejectMsg(&LinkBundles{Left: "lonely", Right: "right", LinkedID: "y"}, CodeIncompatibleInterface,
		"link bundles `lonely` + `right` into `y` failed: bundle interfaces are incompatible for link")
	// The check runs both ways.
	h.reject(&LinkBundles{Left: "right", Right: "lonely", LinkedID: "y"}, CodeIncompatibleInterface)
}

func TestUpstreamFootprintMovesSessionBetweenSets(t *testing.T) {
	h := rcNew(t)
	a, s := rcAuth(1), rcSess(1)
	h.native(a, s)
	h.extend(a, s, DelegatedOut)
	f, _ := h.s.Footprint(a)
	if len(f.Native) != 0 || !slices.Equal(f.DelegatedOut, []SessionID{s}) || len(f.DelegatedIn) != 0 {
		t.Fatalf("footprint %+v", f)
	}
	h.extend(a, s, DelegatedIn)
	f, _ = h.s.Footprint(a)
	if len(f.DelegatedOut) != 0 || !slices.Equal(f.DelegatedIn, []SessionID{s}) || len(f.Native) != 0 {
		t.Fatalf("footprint %+v", f)
	}
}

// ---------------------------------------------------------------------------
// Section 7.1: upstream integration and manager tests

func TestUpstreamDeviceMigrationDelegationPersistsAuditFactAndCoherence(t *testing.T) {
	h := rcNew(t)
	from, to, s := rcAuth(1), rcAuth(2), rcSess(1)
	if b, ok := h.s.Bundle("device_migration"); !ok ||
		!slices.Contains(b.Exports, "device_migration.request") || !slices.Contains(b.Imports, "device_migration.accept") {
		t.Fatalf("device_migration preloaded: %+v %v", b, ok)
	}
	h.native(from, s)
	d := rcDel(s, from, to)
	d.AtMillis = 1_700_000_000_123
	out := h.ok(&Delegate{d}).Outcome
	r, w := out.Receipt, out.Witness
	if r.Session != s || r.From != from || r.To != to || r.BundleID != "device_migration" || r.DelegatedAtMillis != d.AtMillis {
		t.Fatalf("receipt %+v", r)
	}
	if w.LinkBoundary.BundleID != "device_migration" {
		t.Fatalf("witness boundary bundle %q", w.LinkBoundary.BundleID)
	}
	if !w.LinkBoundary.Scope.Equal(w.Scope) {
		t.Fatalf("witness boundary scope %v != witness scope %v", w.LinkBoundary.Scope, w.Scope)
	}
	wantBoundary := LinkBoundary{
		BundleID:     "device_migration",
		ProtocolIDs:  []string{"aura.invitation.device_enrollment"},
		FragmentKeys: []string{"bundle:device_migration"},
		Scope:        FragmentScope("bundle:device_migration"),
	}
	if !w.LinkBoundary.equal(wantBoundary) {
		t.Fatalf("witness boundary %+v, want for_bundle %+v", w.LinkBoundary, wantBoundary)
	}
	if !slices.Equal(w.MovedFragments, []string{"bundle:device_migration"}) {
		t.Fatalf("moved fragments %v", w.MovedFragments)
	}
	if w.Context != DefaultContextForAuthority(from) || w.Session != s || w.From != from || w.To != to || w.BundleID != "device_migration" {
		t.Fatalf("witness %+v", w)
	}
	if w.OwnershipReceipt != nil || w.UpgradeRequest != nil || w.UpgradeSnapshot != nil || w.UpgradeExecution != nil {
		t.Fatalf("plain delegation witness carries optional parts: %+v", w)
	}
	h.wantCoherent()
	facts := h.s.Facts(0, 0)
	want := []Fact{{Seq: 1, Index: h.idx, Context: DefaultContextForAuthority(from), Session: s, From: from, To: to,
		BundleID: "device_migration", TimestampMillis: d.AtMillis}}
	if !reflect.DeepEqual(facts, want) {
		t.Fatalf("facts %+v, want %+v", facts, want)
	}
}

func TestUpstreamDelegationRequiresPreRegisteredBundleEvidence(t *testing.T) {
	h := rcNew(t)
	from, s := rcAuth(1), rcSess(1)
	h.native(from, s)
	d := rcDel(s, from, rcAuth(2))
	d.BundleID = "missing_bundle"
	h.rejectMsg(&Delegate{d}, CodeBundleNotRegistered, "delegation requires pre-registered bundle `missing_bundle`")
	// Bundle evidence is checked before ownership: an unowned session through
	// an unknown bundle is still bundle_not_registered.
	d.From = rcAuth(7)
	h.reject(&Delegate{d}, CodeBundleNotRegistered)
}

func TestUpstreamDelegationRequiresReconfigurationCapability(t *testing.T) {
	h := rcNew(t)
	from, s := rcAuth(1), rcSess(1)
	h.native(from, s)
	h.ok(&SetCapabilities{Reconfiguration: false})
	h.rejectMsg(&Delegate{rcDel(s, from, rcAuth(2))}, CodeMissingCapability, rcGateMsg("session delegation"))
	// The gate comes first: even an unregistered bundle reports it.
	d := rcDel(s, from, rcAuth(2))
	d.BundleID = "missing"
	h.reject(&Delegate{d}, CodeMissingCapability)
	if _, ok := h.s.Footprint(rcAuth(2)); ok {
		t.Fatal("rejected delegation created a target footprint")
	}
	h.ok(&SetCapabilities{Reconfiguration: true})
	h.delegate(s, from, rcAuth(2))
}

func TestUpstreamDelegationWithoutRecordedSourceOwnershipFailsClosed(t *testing.T) {
	h := rcNew(t)
	from, s := rcAuth(1), rcSess(1)
	h.rejectMsg(&Delegate{rcDel(s, from, rcAuth(2))}, CodeSessionNotOwned, notOwnedMsg(s, from))
	if len(h.s.Authorities()) != 0 {
		t.Fatal("failed delegation backfilled ownership")
	}
}

func TestUpstreamDelegationRejectsBoundaryScopeMismatch(t *testing.T) {
	h := rcNew(t)
	from, s := rcAuth(1), rcSess(1)
	h.native(from, s)
	d := rcDel(s, from, rcAuth(2))
	wrong := FragmentScope("bundle:wrong-bundle")
	d.Scope = &wrong
	h.rejectMsg(&Delegate{d}, CodeInvalidLinkBoundary, fmt.Sprintf(
		"delegation for session %s rejected link boundary for bundle `device_migration`: link boundary scope "+
			`Fragments({"bundle:device_migration"}) does not match capability scope Fragments({"bundle:wrong-bundle"}) `+
			"for bundle `device_migration` and session %s", s, s))

	// A boundary naming another bundle is the bundle-mismatch variant.
	other := BoundaryForBundleID("guardian_handoff")
	d = rcDel(s, from, rcAuth(2))
	d.LinkBoundary = &other
	h.rejectMsg(&Delegate{d}, CodeInvalidLinkBoundary, fmt.Sprintf(
		"delegation for session %s rejected link boundary for bundle `device_migration`: link boundary bundle "+
			`Some("guardian_handoff") does not match transfer bundle `+"`device_migration` for session %s", s, s))
	// A boundary naming no bundle shows None.
	none := BoundaryForScope(SessionScope())
	d.LinkBoundary = &none
	h.rejectMsg(&Delegate{d}, CodeInvalidLinkBoundary, fmt.Sprintf(
		"delegation for session %s rejected link boundary for bundle `device_migration`: link boundary bundle "+
			"None does not match transfer bundle `device_migration` for session %s", s, s))

	// with_link_boundary resets the scope to the boundary's: a custom
	// boundary without an explicit scope is accepted, and its protocol ids
	// and fragment keys are not checked against the bundle.
	custom := LinkBoundary{BundleID: "device_migration", ProtocolIDs: []string{"anything"},
		FragmentKeys: []string{"bundle:device_migration", "protocol:x"}, Scope: SessionScope()}
	d.LinkBoundary = &custom
	out := h.ok(&Delegate{d}).Outcome
	if !out.Witness.Scope.Equal(SessionScope()) || !slices.Equal(out.Witness.MovedFragments, custom.FragmentKeys) {
		t.Fatalf("witness %+v", out.Witness)
	}
}

func TestUpstreamBundleLifecycleLinkingTracksComposedSessions(t *testing.T) {
	h := rcNew(t)
	s1, s2 := rcSess(1), rcSess(2)
	left := h.ok(&RegisterBundle{Bundle: Bundle{ID: "left", ProtocolIDs: []string{"p.left"},
		Exports: []string{"sync.delta"}, Imports: []string{"chat.send"}, Footprint: Footprint{Native: []SessionID{s1}}}}).Bundle
	if left.Footprint.SchemaVersion != SchemaVersion {
		t.Fatalf("registered footprint schema %q", left.Footprint.SchemaVersion)
	}
	h.ok(&RegisterBundle{Bundle: Bundle{ID: "right", ProtocolIDs: []string{"p.right"},
		Exports: []string{"chat.send"}, Imports: []string{"sync.delta"}, Footprint: Footprint{Native: []SessionID{s2}}}})
	linked := h.ok(&LinkBundles{Left: "left", Right: "right", LinkedID: "composed"}).Bundle
	stored, ok := h.s.Bundle("composed")
	if !ok || !reflect.DeepEqual(stored, linked) {
		t.Fatalf("stored %+v, returned %+v", stored, linked)
	}
	if !slices.Equal(linked.Footprint.Native, []SessionID{s1, s2}) {
		t.Fatalf("linked footprint %+v", linked.Footprint)
	}
	if !slices.Equal(linked.ProtocolIDs, []string{"p.left", "p.right"}) ||
		!slices.Equal(linked.Exports, []string{"chat.send", "sync.delta"}) ||
		!slices.Equal(linked.Imports, []string{"chat.send", "sync.delta"}) {
		t.Fatalf("linked bundle %+v", linked)
	}
	// Sources stay registered; the linked bundle gets an unseeded snapshot.
	for _, id := range []string{"left", "right"} {
		if _, ok := h.s.Bundle(id); !ok {
			t.Fatalf("source %s consumed by link", id)
		}
	}
	if _, err := h.s.UpgradeSnapshot("composed"); err == nil || err.Code != CodeInvalidRuntimeUpgrade {
		t.Fatalf("linked bundle upgrade snapshot: %v", err)
	}
	// Linking never touches authority footprints.
	if len(h.s.Authorities()) != 0 {
		t.Fatal("link created authority footprints")
	}
}

func TestUpstreamBundleLinkingRequiresReconfigurationCapability(t *testing.T) {
	h := rcNew(t)
	h.ok(&SetCapabilities{Reconfiguration: false})
	h.ok(&RegisterBundle{Bundle: Bundle{ID: "solo", Exports: []string{"a"}}})
	h.rejectMsg(&LinkBundles{Left: "solo", Right: "device_migration", LinkedID: "x"}, CodeMissingCapability, rcGateMsg("bundle linking"))
	// The gate comes before every other check.
	h.reject(&LinkBundles{Left: "nope", Right: "nope", LinkedID: "solo"}, CodeMissingCapability)
}

func TestUpstreamGuardianHandoffDelegationRecordsGuardianBundle(t *testing.T) {
	h := rcNew(t)
	from, to, s := rcAuth(1), rcAuth(2), rcSess(1)
	h.native(from, s)
	d := rcDel(s, from, to)
	d.BundleID = "guardian_handoff"
	out := h.ok(&Delegate{d}).Outcome
	if out.Witness.BundleID != "guardian_handoff" || !out.Witness.Scope.Equal(FragmentScope("bundle:guardian_handoff")) {
		t.Fatalf("witness %+v", out.Witness)
	}
	facts := h.s.Facts(0, 0)
	if len(facts) != 1 || facts[0].BundleID != "guardian_handoff" {
		t.Fatalf("facts %+v", facts)
	}
	h.wantCoherent()
}

func TestUpstreamDelegationCarriesRuntimeUpgradeArtifactsExplicitly(t *testing.T) {
	h := rcNew(t)
	from, to, s := rcAuth(1), rcAuth(2), rcSess(1)
	h.ok(&SeedMembership{BundleID: "device_migration", Members: []string{"member-a", "member-b"}})
	h.native(from, s)
	req := rcUpgradeRequest("upgrade-1")
	d := rcDel(s, from, to)
	d.UpgradeRequest = &req
	out := h.ok(&Delegate{d}).Outcome
	w := out.Witness
	if w.UpgradeRequest == nil || !reflect.DeepEqual(*w.UpgradeRequest, req) {
		t.Fatalf("witness request %+v", w.UpgradeRequest)
	}
	if w.UpgradeSnapshot == nil || !slices.Equal(w.UpgradeSnapshot.ActiveMembers, []string{"member-b", "member-c"}) || w.UpgradeSnapshot.Epoch != 1 {
		t.Fatalf("witness snapshot %+v", w.UpgradeSnapshot)
	}
	x := w.UpgradeExecution
	if x == nil {
		t.Fatal("witness has no execution")
	}
	var phases []Phase
	for _, a := range x.Artifacts {
		phases = append(phases, a.Phase)
		if !slices.Equal(a.PreviousMembers, []string{"member-a", "member-b"}) || !slices.Equal(a.NextMembers, []string{"member-b", "member-c"}) {
			t.Fatalf("artifact %+v", a)
		}
		if !slices.Equal(a.CarriedPublicationIDs, []string{"pub:device"}) || !slices.Equal(a.CarriedObligationIDs, []string{"obl:pending-send"}) ||
			a.Compatibility != req.Compatibility || a.UpgradeID != "upgrade-1" || a.Reason != "" {
			t.Fatalf("artifact %+v", a)
		}
	}
	if !slices.Equal(phases, []Phase{PhaseStaged, PhaseAdmitted, PhaseCommittedCutover}) {
		t.Fatalf("phases %v", phases)
	}
	if x.ArtifactID != "device_migration" || x.UpgradeID != "upgrade-1" || !slices.Equal(x.FinalMembers, []string{"member-b", "member-c"}) {
		t.Fatalf("execution %+v", x)
	}
	// The state holds what the witness shows, and the fact landed with it.
	snap, err := h.s.UpgradeSnapshot("device_migration")
	if err != nil || !reflect.DeepEqual(snap, w.UpgradeSnapshot) || !reflect.DeepEqual(snap.Executions, []Execution{*x}) {
		t.Fatalf("stored snapshot %+v %v", snap, err)
	}
	if h.s.LastFactSeq() != 1 {
		t.Fatal("fact missing")
	}
	h.wantClass(to, s, DelegatedIn)
}

func TestUpstreamRuntimeUpgradeRecordsPublicExecutionArtifacts(t *testing.T) {
	h := rcNew(t)
	h.ok(&SeedMembership{BundleID: "epoch_rotation_transfer", Members: []string{"member-a", "member-b"}})
	r := h.ok(&ExecuteUpgrade{BundleID: "epoch_rotation_transfer", Request: rcUpgradeRequest("upgrade-2")})
	x := r.Execution
	if x == nil || !slices.Equal(x.FinalMembers, []string{"member-b", "member-c"}) {
		t.Fatalf("execution %+v", x)
	}
	snap, err := h.s.UpgradeSnapshot("epoch_rotation_transfer")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(snap.Executions, []Execution{*x}) || snap.Epoch != 1 || !slices.Equal(snap.ActiveMembers, x.FinalMembers) {
		t.Fatalf("snapshot %+v", snap)
	}
	// The result names the epoch and members; the history stays in the state.
	if r.Upgrade.Epoch != snap.Epoch || !slices.Equal(r.Upgrade.ActiveMembers, snap.ActiveMembers) || len(r.Upgrade.Executions) != 0 {
		t.Fatalf("result snapshot %+v, stored %+v", r.Upgrade, snap)
	}
	if h.s.LastFactSeq() != 0 {
		t.Fatal("a standalone upgrade writes no fact")
	}
}

func TestUpstreamRuntimeUpgradeRequiresReconfigurationCapability(t *testing.T) {
	h := rcNew(t)
	h.ok(&SetCapabilities{Reconfiguration: false})
	seeded := h.ok(&SeedMembership{BundleID: "device_migration", Members: []string{"member-a"}}).Upgrade
	if seeded == nil || !slices.Equal(seeded.ActiveMembers, []string{"member-a"}) {
		t.Fatalf("seed without capability: %+v", seeded)
	}
	if snap, err := h.s.UpgradeSnapshot("device_migration"); err != nil || snap.Epoch != 0 {
		t.Fatalf("snapshot without capability: %+v %v", snap, err)
	}
	h.rejectMsg(&ExecuteUpgrade{BundleID: "device_migration", Request: rcUpgradeRequest("u")}, CodeMissingCapability, rcGateMsg("runtime upgrade"))
}

func TestUpstreamSessionDelegationTransferKeepsContextSeparateFromBundleEvidence(t *testing.T) {
	// The transfer's context is independent of its bundle evidence, and its
	// default capability scope is the bundle's fragment scope.
	b := BoundaryForBundleID("bundle-a")
	if b.BundleID != "bundle-a" || b.Scope.Kind != ScopeFragments || !b.Scope.Equal(FragmentScope("bundle:bundle-a")) || len(b.ProtocolIDs) != 0 {
		t.Fatalf("for_bundle_id %+v", b)
	}
	h := rcNew(t)
	from, to, s, ctx := rcAuth(2), rcAuth(3), rcSess(1), rcCtx(4)
	h.ok(&RegisterBundle{Bundle: Bundle{ID: "bundle-a", ProtocolIDs: []string{"p.a"}}})
	h.native(from, s)
	d := rcDel(s, from, to)
	d.BundleID, d.Context = "bundle-a", &ctx
	w := h.ok(&Delegate{d}).Outcome.Witness
	if w.Context != ctx || w.BundleID != "bundle-a" || w.LinkBoundary.BundleID != "bundle-a" || w.Scope.Kind != ScopeFragments {
		t.Fatalf("witness %+v", w)
	}
	if f := h.s.Facts(0, 0); len(f) != 1 || f[0].Context != ctx || f[0].BundleID != "bundle-a" {
		t.Fatalf("facts %+v", f)
	}
	if ctx == DefaultContextForAuthority(from) {
		t.Fatal("test context collides with the default")
	}
}

// ---------------------------------------------------------------------------
// Section 7.2: derived edge cases. Each starts from A holding s as native.

func TestDerivedEdgeCases(t *testing.T) {
	a, b, c, d, s := rcAuth(1), rcAuth(2), rcAuth(3), rcAuth(4), rcSess(1)
	setup := func(t *testing.T) *rcHarness {
		h := rcNew(t)
		h.native(a, s)
		return h
	}

	t.Run("double_delegation_from_original_owner", func(t *testing.T) {
		h := setup(t)
		h.delegate(s, a, b)
		if !h.s.footprintOf(a).Contains(s) {
			t.Fatal("A should still contain s as delegated_out")
		}
		h.rejectMsg(&Delegate{rcDel(s, a, c)}, CodeCoherenceViolation, coherenceMsg(s, vActive(s, 2), vInTo(s, 2)))
		h.wantClass(a, s, DelegatedOut)
		h.wantClass(b, s, DelegatedIn)
		if _, ok := h.s.Footprint(c); ok {
			t.Fatal("rejected delegation created C's footprint")
		}
	})

	t.Run("repeated_identical_delegation", func(t *testing.T) {
		h := setup(t)
		first := h.delegate(s, a, b)
		fps := rcFootprints(h.s)
		second := h.delegate(s, a, b)
		if !reflect.DeepEqual(fps, rcFootprints(h.s)) {
			t.Fatal("repeating A→B changed the footprints")
		}
		if first.FactSeq != 1 || second.FactSeq != 2 || h.s.LastFactSeq() != 2 {
			t.Fatalf("fact seqs %d, %d", first.FactSeq, second.FactSeq)
		}
		if !second.Receipt.FromBefore.Equal(first.Receipt.FromAfter) || !second.Receipt.ToAfter.Equal(first.Receipt.ToAfter) {
			t.Fatal("second receipt should show the unchanged footprints")
		}
		h.wantCoherent()
	})

	t.Run("self_delegation", func(t *testing.T) {
		h := setup(t)
		out := h.delegate(s, a, a)
		h.wantClass(a, s, DelegatedIn)
		h.wantCoherent()
		if !reflect.DeepEqual(out.Receipt.FromAfter, out.Receipt.ToAfter) || !slices.Equal(out.Receipt.ToAfter.DelegatedIn, []SessionID{s}) {
			t.Fatalf("receipt %+v", out.Receipt)
		}
		if !out.Receipt.FromBefore.Equal(out.Receipt.ToBefore) {
			t.Fatal("from_before should equal to_before for a self-delegation")
		}
	})

	t.Run("delegated_out_owner_delegates_to_itself", func(t *testing.T) {
		h := setup(t)
		h.delegate(s, a, b)
		h.rejectMsg(&Delegate{rcDel(s, a, a)}, CodeCoherenceViolation, coherenceMsg(s, vActive(s, 2)))
	})

	t.Run("stale_hop_delegates_to_fourth_authority", func(t *testing.T) {
		h := setup(t)
		h.delegate(s, a, b)
		h.delegate(s, b, c)
		h.rejectMsg(&Delegate{rcDel(s, b, d)}, CodeCoherenceViolation, coherenceMsg(s, vActive(s, 2), vInTo(s, 2)))
		h.wantClass(b, s, DelegatedOut)
		h.wantClass(c, s, DelegatedIn)
	})

	t.Run("repeated_chain_hop", func(t *testing.T) {
		h := setup(t)
		h.delegate(s, a, b)
		h.delegate(s, b, c)
		fps := rcFootprints(h.s)
		h.delegate(s, b, c)
		if !reflect.DeepEqual(fps, rcFootprints(h.s)) {
			t.Fatal("repeating B→C changed the footprints")
		}
		h.wantCoherent()
		if h.s.LastFactSeq() != 3 {
			t.Fatalf("facts %d, want 3", h.s.LastFactSeq())
		}
	})

	t.Run("delegate_back_to_original_owner", func(t *testing.T) {
		h := setup(t)
		h.delegate(s, a, b)
		h.delegate(s, b, a)
		h.wantClass(a, s, DelegatedIn)
		h.wantClass(b, s, DelegatedOut)
		h.wantCoherent()
	})

	t.Run("unowned_source_without_footprint", func(t *testing.T) {
		h := setup(t)
		h.rejectMsg(&Delegate{rcDel(s, c, b)}, CodeSessionNotOwned, notOwnedMsg(s, c))
	})

	t.Run("unowned_source_with_footprint_without_session", func(t *testing.T) {
		h := setup(t)
		h.native(c, rcSess(2))
		h.rejectMsg(&Delegate{rcDel(s, c, b)}, CodeSessionNotOwned, notOwnedMsg(s, c))
		// An emptied footprint behaves the same.
		h.ok(&RemoveFootprint{Authority: a, Session: s})
		h.rejectMsg(&Delegate{rcDel(s, a, b)}, CodeSessionNotOwned, notOwnedMsg(s, a))
	})

	t.Run("unrelated_incoherence_blocks_every_delegation", func(t *testing.T) {
		h := setup(t)
		other := rcSess(2)
		h.native(b, other)
		h.native(c, other) // two natives: incoherent, accepted silently
		if got := h.s.Coherence(); !slices.Equal(got, []string{vActive(other, 2)}) {
			t.Fatalf("coherence %q", got)
		}
		// s itself is fine, but the global check fails.
		h.rejectMsg(&Delegate{rcDel(s, a, d)}, CodeCoherenceViolation, coherenceMsg(s, vActive(other, 2)))
		// Repairing the other session unblocks delegation.
		h.ok(&RemoveFootprint{Authority: c, Session: other})
		h.wantCoherent()
		h.delegate(s, a, d)
	})

	t.Run("link_unknown_left", func(t *testing.T) {
		h := setup(t)
		h.rejectMsg(&LinkBundles{Left: "nope", Right: "device_migration", LinkedID: "x"}, CodeBundleNotFound,
			"link bundles `nope` + `device_migration` into `x` failed: bundle not found: nope")
	})

	t.Run("link_unknown_right", func(t *testing.T) {
		h := setup(t)
		h.rejectMsg(&LinkBundles{Left: "device_migration", Right: "nope", LinkedID: "x"}, CodeBundleNotFound,
			"link bundles `device_migration` + `nope` into `x` failed: bundle not found: nope")
	})

	t.Run("link_both_unknown_reports_first_argument", func(t *testing.T) {
		h := setup(t)
		h.rejectMsg(&LinkBundles{Left: "first", Right: "second", LinkedID: "x"}, CodeBundleNotFound,
			"link bundles `first` + `second` into `x` failed: bundle not found: first")
	})

	t.Run("link_into_existing_id", func(t *testing.T) {
		h := setup(t)
		h.rejectMsg(&LinkBundles{Left: "device_migration", Right: "epoch_rotation_transfer", LinkedID: "guardian_handoff"}, CodeDuplicateBundle,
			"link bundles `device_migration` + `epoch_rotation_transfer` into `guardian_handoff` failed: bundle already exists: guardian_handoff")
		// linked_id equal to one of the sources is a duplicate too.
		h.reject(&LinkBundles{Left: "device_migration", Right: "epoch_rotation_transfer", LinkedID: "device_migration"}, CodeDuplicateBundle)
	})

	t.Run("interface_failure_wins_over_session_overlap", func(t *testing.T) {
		h := setup(t)
		shared := Footprint{Native: []SessionID{rcSess(9)}}
		h.ok(&RegisterBundle{Bundle: Bundle{ID: "l", Imports: []string{"missing"}, Footprint: shared}})
		h.ok(&RegisterBundle{Bundle: Bundle{ID: "r", Footprint: shared}})
		h.reject(&LinkBundles{Left: "l", Right: "r", LinkedID: "x"}, CodeIncompatibleInterface)
	})

	t.Run("upgrade_continuity_disjoint_first_step_standalone", func(t *testing.T) {
		// Upstream records a Failed artifact and bumps the epoch; reconf's
		// rejected command records nothing (domain 9.1).
		h := setup(t)
		h.ok(&SeedMembership{BundleID: "device_migration", Members: []string{"member-a"}})
		req := rcUpgradeRequest("u-disjoint")
		req.Plan.Steps = []PlanStep{{StepID: "s1", NextMembers: []string{"member-x"}}, {StepID: "s2", NextMembers: []string{"member-a"}}}
		h.rejectMsg(&ExecuteUpgrade{BundleID: "device_migration", Request: req}, CodeInvalidRuntimeUpgrade,
			rcUpgradeMsg("device_migration", "runtime upgrade `u-disjoint` requires ownership continuity across the first cutover"))
		snap, err := h.s.UpgradeSnapshot("device_migration")
		if err != nil || snap.Epoch != 0 || len(snap.Executions) != 0 || !slices.Equal(snap.ActiveMembers, []string{"member-a"}) {
			t.Fatalf("snapshot after rejected upgrade: %+v %v", snap, err)
		}
	})

	t.Run("upgrade_continuity_disjoint_first_step_during_delegation", func(t *testing.T) {
		h := setup(t)
		h.ok(&SeedMembership{BundleID: "device_migration", Members: []string{"member-a"}})
		req := rcUpgradeRequest("u-disjoint")
		req.Plan.Steps = []PlanStep{{StepID: "s1", NextMembers: []string{"member-x"}}}
		del := rcDel(s, a, b)
		del.UpgradeRequest = &req
		h.rejectMsg(&Delegate{del}, CodeInvalidRuntimeUpgrade,
			rcUpgradeMsg("device_migration", "runtime upgrade `u-disjoint` requires ownership continuity across the first cutover"))
		h.wantClass(a, s, Native)
		if _, ok := h.s.Footprint(b); ok || h.s.LastFactSeq() != 0 {
			t.Fatal("failed delegation left a trace")
		}
		snap, _ := h.s.UpgradeSnapshot("device_migration")
		if snap.Epoch != 0 || len(snap.Executions) != 0 {
			t.Fatalf("snapshot %+v", snap)
		}
	})
}

// ---------------------------------------------------------------------------
// Default bundles, registration and linking details

func TestDefaultBundles(t *testing.T) {
	s := New()
	want := map[string][3][]string{
		"device_migration":        {{"aura.invitation.device_enrollment"}, {"device_migration.accept", "device_migration.request"}},
		"epoch_rotation_transfer": {{"aura.sync.epoch_rotation"}, {"epoch_rotation.confirmation", "epoch_rotation.proposal"}},
		"guardian_handoff":        {{"aura.recovery.guardian_membership_change"}, {"guardian_handoff.proposal", "guardian_handoff.vote"}},
	}
	var ids []string
	for _, b := range s.Bundles() {
		ids = append(ids, b.ID)
		w := want[b.ID]
		if !slices.Equal(b.ProtocolIDs, w[0]) || !slices.Equal(b.Exports, w[1]) || !slices.Equal(b.Imports, w[1]) ||
			!b.Footprint.Equal(newFootprint()) {
			t.Fatalf("bundle %+v", b)
		}
		_, err := s.UpgradeSnapshot(b.ID)
		if err == nil || err.Code != CodeInvalidRuntimeUpgrade ||
			err.Message != rcUpgradeMsg(b.ID, "active membership must be seeded before exporting a runtime-upgrade snapshot") {
			t.Fatalf("unseeded snapshot of %s: %v", b.ID, err)
		}
	}
	if !slices.Equal(ids, []string{"device_migration", "epoch_rotation_transfer", "guardian_handoff"}) {
		t.Fatalf("bundles %v", ids)
	}
	if !s.Reconfiguration() || s.LastFactSeq() != 0 || len(s.Authorities()) != 0 {
		t.Fatal("initial state not empty with the gate on")
	}
	// Any two default bundles link.
	h := rcNew(t)
	h.ok(&LinkBundles{Left: "device_migration", Right: "guardian_handoff", LinkedID: "x"})
	// Two replicas start identical.
	if a, b := New(), New(); a.Digest() != b.Digest() {
		t.Fatal("initial digests differ")
	}
}

func TestRegisterBundleCanonicalisesAndIsNotGated(t *testing.T) {
	h := rcNew(t)
	h.ok(&SetCapabilities{Reconfiguration: false})
	s1, s2 := rcSess(1), rcSess(2)
	r := h.ok(&RegisterBundle{Bundle: Bundle{ID: "b", ProtocolIDs: []string{"p2", "p1", "p2"},
		Exports: []string{"z", "a", "z"}, Imports: []string{"q", "q"},
		Footprint: Footprint{SchemaVersion: "", Native: []SessionID{s2, s1}}}})
	b := r.Bundle
	if !slices.Equal(b.ProtocolIDs, []string{"p2", "p1", "p2"}) {
		t.Fatalf("protocol ids are an ordered list with duplicates: %v", b.ProtocolIDs)
	}
	if !slices.Equal(b.Exports, []string{"a", "z"}) || !slices.Equal(b.Imports, []string{"q"}) {
		t.Fatalf("interfaces %+v", b)
	}
	if b.Footprint.SchemaVersion != SchemaVersion || !slices.Equal(b.Footprint.Native, []SessionID{s1, s2}) {
		t.Fatalf("footprint %+v", b.Footprint)
	}
	// A session listed twice is an input error (a footprint is a set).
	h.reject(&RegisterBundle{Bundle: Bundle{ID: "dup", Footprint: Footprint{Native: []SessionID{s1, s1}}}}, CodeInvalidArgument)
	// Nothing else is validated: unresolved imports, bundle footprints that
	// overlap authority footprints, incoherent bundle footprints.
	h.ok(&RegisterBundle{Bundle: Bundle{ID: "c", Imports: []string{"nobody"}, Footprint: Footprint{DelegatedOut: []SessionID{s1}}}})
	h.wantCoherent() // bundle footprints are not checked
	h.rejectMsg(&RegisterBundle{Bundle: Bundle{ID: "b"}}, CodeDuplicateBundle, "register bundle `b` failed: bundle already exists: b")
	h.reject(&RegisterBundle{Bundle: Bundle{ID: "device_migration"}}, CodeDuplicateBundle)
}

func TestLinkBundleWithItself(t *testing.T) {
	h := rcNew(t)
	linked := h.ok(&LinkBundles{Left: "device_migration", Right: "device_migration", LinkedID: "twice"}).Bundle
	if !slices.Equal(linked.ProtocolIDs, []string{"aura.invitation.device_enrollment", "aura.invitation.device_enrollment"}) {
		t.Fatalf("protocol ids %v", linked.ProtocolIDs)
	}
	// A non-empty footprint overlaps itself.
	h.ok(&RegisterBundle{Bundle: Bundle{ID: "busy", Footprint: Footprint{Native: []SessionID{rcSess(1)}}}})
	h.reject(&LinkBundles{Left: "busy", Right: "busy", LinkedID: "busy2"}, CodeOverlappingSessions)
	// Unresolved imports fail against itself.
	h.ok(&RegisterBundle{Bundle: Bundle{ID: "needy", Imports: []string{"x"}}})
	h.reject(&LinkBundles{Left: "needy", Right: "needy", LinkedID: "needy2"}, CodeIncompatibleInterface)
}

func TestLinkMergesFootprintsByClass(t *testing.T) {
	h := rcNew(t)
	s1, s2, s3, s4 := rcSess(1), rcSess(2), rcSess(3), rcSess(4)
	h.ok(&RegisterBundle{Bundle: Bundle{ID: "l", Footprint: Footprint{Native: []SessionID{s3}, DelegatedOut: []SessionID{s1}}}})
	h.ok(&RegisterBundle{Bundle: Bundle{ID: "r", Footprint: Footprint{DelegatedIn: []SessionID{s2}, Native: []SessionID{s4}}}})
	f := h.ok(&LinkBundles{Left: "l", Right: "r", LinkedID: "x"}).Bundle.Footprint
	want := Footprint{SchemaVersion: SchemaVersion, Native: []SessionID{s3, s4}, DelegatedIn: []SessionID{s2}, DelegatedOut: []SessionID{s1}}
	if !f.Equal(want) {
		t.Fatalf("merged %+v, want %+v", f, want)
	}
}

// TestLinkedBundleStaysRestorable: a link whose result would exceed the
// limits a stored bundle is held to on restore is rejected, so every state
// the FSM can reach can be snapshotted and restored.
func TestLinkedBundleStaysRestorable(t *testing.T) {
	h := rcNew(t)
	h.ok(&RegisterBundle{Bundle: Bundle{ID: "p0", ProtocolIDs: []string{"proto"}}})
	k := 0
	for ; k < 20; k++ {
		r := h.apply(&LinkBundles{Left: fmt.Sprintf("p%d", k), Right: fmt.Sprintf("p%d", k), LinkedID: fmt.Sprintf("p%d", k+1)})
		if r.Err != nil {
			if r.Err.Code != CodeInvalidArgument || !strings.Contains(r.Err.Message, "protocol_ids") {
				t.Fatalf("link %d rejected with %v", k, r.Err)
			}
			break
		}
	}
	if k != 12 { // p12 holds 4096 protocol ids, the limit
		t.Fatalf("first rejected link at doubling %d, want 12", k)
	}
	rcSnapshotRoundTrip(t, h.s)
}

func TestFootprintSchemaVersionAlwaysV1(t *testing.T) {
	h := rcNew(t)
	a, b, s := rcAuth(1), rcAuth(2), rcSess(1)
	h.extend(a, s, DelegatedIn)
	h.extend(a, s, Native)
	out := h.delegate(s, a, b)
	for _, f := range []Footprint{out.Receipt.FromBefore, out.Receipt.FromAfter, out.Receipt.ToBefore, out.Receipt.ToAfter} {
		if f.SchemaVersion != SchemaVersion {
			t.Fatalf("receipt footprint schema %q", f.SchemaVersion)
		}
	}
	for a, f := range rcFootprints(h.s) {
		if f.SchemaVersion != SchemaVersion {
			t.Fatalf("%s footprint schema %q", a, f.SchemaVersion)
		}
	}
}

func TestRemoveFootprintEdgeCases(t *testing.T) {
	h := rcNew(t)
	a, s := rcAuth(1), rcSess(1)
	// Unknown authority: nothing happens, no footprint is created.
	before := h.s.Clone()
	h.ok(&RemoveFootprint{Authority: a, Session: s})
	rcAssertUnchanged(t, before, h.s)
	if _, ok := h.s.Footprint(a); ok {
		t.Fatal("remove created a footprint")
	}
	// Known authority without the session: nothing changes.
	h.native(a, rcSess(2))
	before = h.s.Clone()
	h.ok(&RemoveFootprint{Authority: a, Session: s})
	rcAssertUnchanged(t, before, h.s)
	// Removing repairs incoherence.
	h.extend(a, s, DelegatedOut)
	if len(h.s.Coherence()) != 1 {
		t.Fatal("orphan not reported")
	}
	h.ok(&RemoveFootprint{Authority: a, Session: s})
	h.wantCoherent()
}

func TestExtendFootprintAcceptsIncoherence(t *testing.T) {
	h := rcNew(t)
	s := rcSess(1)
	h.native(rcAuth(1), s)
	h.native(rcAuth(2), s)
	h.native(rcAuth(3), s)
	if got := h.s.Coherence(); !slices.Equal(got, []string{vActive(s, 3)}) {
		t.Fatalf("coherence %q", got)
	}
	// Extend moves the session only within that authority.
	h.extend(rcAuth(2), s, DelegatedOut)
	h.wantClass(rcAuth(1), s, Native)
	h.wantClass(rcAuth(3), s, Native)
	if got := h.s.Coherence(); !slices.Equal(got, []string{vActive(s, 2), vOrphan(s)}) {
		t.Fatalf("coherence %q", got)
	}
	if st := h.s.Stats(); st.ViolatingSessions != 1 || st.Authorities != 3 || st.FootprintEntries != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// ---------------------------------------------------------------------------
// Error codes and messages

type rcErrorCase struct {
	name  string
	setup func(h *rcHarness)
	op    Op
	code  Code
	msg   string // exact, unless prefix is set
	// prefix, when true, makes msg a required prefix.
	prefix bool
}

// foreignOp is an Op this package does not know.
type foreignOp struct{}

func (foreignOp) Type() Type { return 200 }

func rcErrorCases() []rcErrorCase {
	a, b, c, s := rcAuth(1), rcAuth(2), rcAuth(3), rcSess(1)
	native := func(h *rcHarness) { h.native(a, s) }
	gateOff := func(h *rcHarness) { h.native(a, s); h.ok(&SetCapabilities{Reconfiguration: false}) }
	opened := func(h *rcHarness) {
		h.native(a, s)
		h.ok(&OpenSession{Session: s, OwnerLabel: "owner-a", BundleID: "epoch_rotation_transfer"})
	}
	handoff := func() *Handoff {
		d := rcDel(s, a, b)
		d.BundleID = "epoch_rotation_transfer"
		return &Handoff{Session: s, OwnerLabel: "owner-a", Generation: 1, NextOwnerLabel: "owner-b", Transfer: d}
	}
	missingBundle := rcDel(s, a, b)
	missingBundle.BundleID = "ghost"
	badScope := rcDel(s, a, b)
	wrong := FragmentScope("bundle:wrong-bundle")
	badScope.Scope = &wrong
	seeded := func(h *rcHarness) {
		h.ok(&SeedMembership{BundleID: "device_migration", Members: []string{"member-a"}})
	}
	noSteps := rcUpgradeRequest("u")
	noSteps.Plan.Steps = nil
	staleGen := handoff()
	staleGen.Generation = 2
	staleLabel := handoff()
	staleLabel.OwnerLabel = "owner-x"
	mismatch := handoff()
	mismatch.Transfer.Session = rcSess(2)

	return []rcErrorCase{
		{name: "invalid_argument", op: &RegisterBundle{Bundle: Bundle{ID: ""}}, code: CodeInvalidArgument, msg: "bundle_id: must not be empty"},
		{name: "duplicate_bundle", op: &RegisterBundle{Bundle: Bundle{ID: "device_migration"}}, code: CodeDuplicateBundle,
			msg: "register bundle `device_migration` failed: bundle already exists: device_migration"},
		{name: "bundle_not_found/link", op: &LinkBundles{Left: "ghost", Right: "device_migration", LinkedID: "x"}, code: CodeBundleNotFound,
			msg: "link bundles `ghost` + `device_migration` into `x` failed: bundle not found: ghost"},
		{name: "bundle_not_found/seed", op: &SeedMembership{BundleID: "ghost", Members: []string{"m"}}, code: CodeBundleNotFound,
			msg: "runtime upgrade for bundle `ghost` failed: bundle not found: ghost"},
		{name: "bundle_not_found/execute", op: &ExecuteUpgrade{BundleID: "ghost", Request: rcUpgradeRequest("u")}, code: CodeBundleNotFound,
			msg: "runtime upgrade for bundle `ghost` failed: bundle not found: ghost"},
		{name: "bundle_not_found/open_session", op: &OpenSession{Session: s, OwnerLabel: "o", BundleID: "ghost"}, code: CodeBundleNotFound,
			msg: "bundle not found: ghost"},
		{name: "bundle_not_registered", setup: native, op: &Delegate{missingBundle}, code: CodeBundleNotRegistered,
			msg: "delegation requires pre-registered bundle `ghost`"},
		{name: "incompatible_interfaces", setup: func(h *rcHarness) {
			h.ok(&RegisterBundle{Bundle: Bundle{ID: "needy", Imports: []string{"x"}}})
		}, op: &LinkBundles{Left: "device_migration", Right: "needy", LinkedID: "x"}, code: CodeIncompatibleInterface,
			msg: "link bundles `device_migration` + `needy` into `x` failed: bundle interfaces are incompatible for link"},
		{name: "overlapping_sessions", setup: func(h *rcHarness) {
			h.ok(&RegisterBundle{Bundle: Bundle{ID: "l", Footprint: Footprint{Native: []SessionID{s}}}})
			h.ok(&RegisterBundle{Bundle: Bundle{ID: "r", Footprint: Footprint{DelegatedIn: []SessionID{s}}}})
		}, op: &LinkBundles{Left: "l", Right: "r", LinkedID: "x"}, code: CodeOverlappingSessions,
			msg: "link bundles `l` + `r` into `x` failed: cannot link bundles with overlapping sessions"},
		{name: "session_not_owned", op: &Delegate{rcDel(s, a, b)}, code: CodeSessionNotOwned, msg: notOwnedMsg(s, a)},
		{name: "coherence_violation", setup: func(h *rcHarness) { h.native(a, s); h.native(c, s) },
			op: &Delegate{rcDel(s, a, b)}, code: CodeCoherenceViolation, msg: coherenceMsg(s, vActive(s, 2))},
		{name: "invalid_link_boundary", setup: native, op: &Delegate{badScope}, code: CodeInvalidLinkBoundary,
			msg: "delegation for session " + s.String() + " rejected link boundary for bundle `device_migration`: ", prefix: true},
		{name: "missing_capability/delegate", setup: gateOff, op: &Delegate{rcDel(s, a, b)}, code: CodeMissingCapability, msg: rcGateMsg("session delegation")},
		{name: "missing_capability/link", setup: gateOff, op: &LinkBundles{Left: "device_migration", Right: "guardian_handoff", LinkedID: "x"},
			code: CodeMissingCapability, msg: rcGateMsg("bundle linking")},
		{name: "missing_capability/execute", setup: gateOff, op: &ExecuteUpgrade{BundleID: "device_migration", Request: rcUpgradeRequest("u")},
			code: CodeMissingCapability, msg: rcGateMsg("runtime upgrade")},
		{name: "missing_capability/handoff", setup: func(h *rcHarness) { opened(h); h.ok(&SetCapabilities{Reconfiguration: false}) },
			op: handoff(), code: CodeMissingCapability,
			msg: "live delegation failed for session " + s.String() + ": " + rcGateMsg("session delegation")},
		{name: "invalid_runtime_upgrade/seed_empty", op: &SeedMembership{BundleID: "device_migration"}, code: CodeInvalidRuntimeUpgrade,
			msg: rcUpgradeMsg("device_migration", "active membership may not be empty")},
		{name: "invalid_runtime_upgrade/unseeded", op: &ExecuteUpgrade{BundleID: "device_migration", Request: rcUpgradeRequest("u")},
			code: CodeInvalidRuntimeUpgrade, msg: rcUpgradeMsg("device_migration", "active membership must be seeded before executing a runtime upgrade")},
		{name: "invalid_runtime_upgrade/no_steps", setup: seeded, op: &ExecuteUpgrade{BundleID: "device_migration", Request: noSteps},
			code: CodeInvalidRuntimeUpgrade, msg: rcUpgradeMsg("device_migration", "runtime upgrade `u` must contain at least one plan step")},
		{name: "session_not_found", op: handoff(), code: CodeSessionNotFound, msg: "live session " + s.String() + " is not open"},
		{name: "owner_conflict", setup: opened, op: &OpenSession{Session: s, OwnerLabel: "owner-z"}, code: CodeOwnerConflict,
			msg: "session " + s.String() + " is already owned by `owner-a`; `owner-z` cannot claim it"},
		{name: "stale_owner/generation", setup: opened, op: staleGen, code: CodeStaleOwner,
			msg: "failed to transfer live session owner for session " + s.String() + ": stale owner `owner-a` at generation 2 (current owner `owner-a` at generation 1)"},
		{name: "stale_owner/label", setup: opened, op: staleLabel, code: CodeStaleOwner,
			msg: "failed to transfer live session owner for session " + s.String() + ": stale owner `owner-x` at generation 1 (current owner `owner-a` at generation 1)"},
		{name: "session_mismatch", setup: opened, op: mismatch, code: CodeSessionMismatch,
			msg: "active session handoff target " + s.String() + " does not match delegation session " + rcSess(2).String()},
		{name: "facts_trimmed/new_consumer_below_first", setup: rcTrimmed, op: &AckConsumer{Name: "late", Through: 3},
			code: CodeFactsTrimmed, msg: "facts after 3 are trimmed: the oldest retained fact is first_seq 513"},
		{name: "consumer_not_found", op: &DropConsumer{Name: "nobody"}, code: CodeConsumerNotFound, msg: `no consumer is named "nobody"`},
		{name: "unknown_command/nil", op: nil, code: CodeUnknownCommand, msg: "command has no operation"},
		{name: "unknown_command/foreign", op: foreignOp{}, code: CodeUnknownCommand, msg: "unknown operation fsm.foreignOp"},
	}
}

func TestErrorCodesAndMessages(t *testing.T) {
	seen := map[Code]bool{}
	for _, tc := range rcErrorCases() {
		t.Run(tc.name, func(t *testing.T) {
			h := rcNew(t)
			if tc.setup != nil {
				tc.setup(h)
			}
			err := h.reject(tc.op, tc.code)
			if tc.prefix && !strings.HasPrefix(err.Message, tc.msg) || !tc.prefix && err.Message != tc.msg {
				t.Fatalf("message\n got %q\nwant %q (prefix %v)", err.Message, tc.msg, tc.prefix)
			}
			if err.Error() != string(tc.code)+": "+err.Message {
				t.Fatalf("Error() = %q", err.Error())
			}
		})
		seen[tc.code] = true
	}
	// authority_not_found is produced by the API (a footprint lookup of an
	// untouched authority), not by Apply: the FSM read reports "absent".
	if _, ok := New().Footprint(rcAuth(99)); ok {
		t.Fatal("untouched authority has a footprint")
	}
	seen[CodeAuthorityNotFound] = true
	// unknown_command from the decoder is covered in codec_test.go too.
	for _, code := range Codes {
		if !seen[code] {
			t.Errorf("code %s is not exercised", code)
		}
	}
	if len(Codes) != 19 {
		t.Errorf("Codes has %d entries; domain 9.11 lists 17, bounded state adds 2", len(Codes))
	}
}

func TestMissingCapabilityMessagePrefix(t *testing.T) {
	h := rcNew(t)
	h.native(rcAuth(1), rcSess(1))
	h.ok(&SetCapabilities{Reconfiguration: false})
	err := h.reject(&Delegate{rcDel(rcSess(1), rcAuth(1), rcAuth(2))}, CodeMissingCapability)
	if !strings.HasPrefix(err.Message, gatePrefixDelegation) {
		t.Fatalf("message %q", err.Message)
	}
	if !strings.HasPrefix(err.Message, "session delegation requires protocol-critical runtime surfaces [") {
		t.Fatalf("message %q", err.Message)
	}
}

// ---------------------------------------------------------------------------
// Input validation

func TestInvalidArgument(t *testing.T) {
	long := strings.Repeat("x", MaxNameBytes+1)
	max := strings.Repeat("y", MaxNameBytes)
	s, a, b := rcSess(1), rcAuth(1), rcAuth(2)
	del := func(mut func(d *Delegation)) Delegation {
		d := rcDel(s, a, b)
		mut(&d)
		return d
	}
	req := func(mut func(r *UpgradeRequest)) UpgradeRequest {
		r := rcUpgradeRequest("u")
		mut(&r)
		return r
	}
	bad := Scope{Kind: 7}
	cases := []struct {
		name  string
		op    Op
		field string // the message starts with "<field>: "
	}{
		{"register/empty_id", &RegisterBundle{Bundle: Bundle{ID: ""}}, "bundle_id"},
		{"register/oversized_id", &RegisterBundle{Bundle: Bundle{ID: long}}, "bundle_id"},
		{"register/control_char", &RegisterBundle{Bundle: Bundle{ID: "a\nb"}}, "bundle_id"},
		{"register/invalid_utf8", &RegisterBundle{Bundle: Bundle{ID: "a\xffb"}}, "bundle_id"},
		{"register/empty_protocol", &RegisterBundle{Bundle: Bundle{ID: "x", ProtocolIDs: []string{"p", ""}}}, "protocol_ids[1]"},
		{"register/oversized_export", &RegisterBundle{Bundle: Bundle{ID: "x", Exports: []string{long}}}, "exports[0]"},
		{"register/empty_import", &RegisterBundle{Bundle: Bundle{ID: "x", Imports: []string{""}}}, "imports[0]"},
		{"register/too_many_exports", &RegisterBundle{Bundle: Bundle{ID: "x", Exports: make([]string, MaxListItems+1)}}, "exports"},
		{"register/session_in_two_classes", &RegisterBundle{Bundle: Bundle{ID: "x",
			Footprint: Footprint{Native: []SessionID{s}, DelegatedOut: []SessionID{s}}}}, "session_footprint.delegated_out_sessions"},
		{"link/empty_left", &LinkBundles{Left: "", Right: "device_migration", LinkedID: "x"}, "left"},
		{"link/oversized_right", &LinkBundles{Left: "device_migration", Right: long, LinkedID: "x"}, "right"},
		{"link/empty_linked_id", &LinkBundles{Left: "device_migration", Right: "guardian_handoff"}, "linked_id"},
		{"extend/class_zero", &ExtendFootprint{Authority: a, Session: s}, "class"},
		{"extend/class_out_of_range", &ExtendFootprint{Authority: a, Session: s, Class: 4}, "class"},
		{"delegate/empty_bundle", &Delegate{del(func(d *Delegation) { d.BundleID = "" })}, "bundle_id"},
		{"delegate/oversized_bundle", &Delegate{del(func(d *Delegation) { d.BundleID = long })}, "bundle_id"},
		{"delegate/boundary_bundle", &Delegate{del(func(d *Delegation) { d.LinkBoundary = &LinkBoundary{BundleID: long, Scope: SessionScope()} })}, "link_boundary.bundle_id"},
		{"delegate/boundary_fragment", &Delegate{del(func(d *Delegation) {
			d.LinkBoundary = &LinkBoundary{BundleID: "device_migration", FragmentKeys: []string{""}, Scope: SessionScope()}
		})}, "link_boundary.fragment_keys[0]"},
		{"delegate/boundary_scope_kind", &Delegate{del(func(d *Delegation) { d.LinkBoundary = &LinkBoundary{BundleID: "device_migration", Scope: bad} })}, "link_boundary.capability_scope"},
		{"delegate/scope_kind", &Delegate{del(func(d *Delegation) { d.Scope = &bad })}, "capability_scope"},
		{"delegate/session_scope_with_fragments", &Delegate{del(func(d *Delegation) { d.Scope = &Scope{Kind: ScopeSession, Fragments: []string{"k"}} })}, "capability_scope"},
		{"delegate/scope_fragment", &Delegate{del(func(d *Delegation) { sc := FragmentScope(long); d.Scope = &sc })}, "capability_scope.fragments[0]"},
		{"delegate/upgrade_id", &Delegate{del(func(d *Delegation) { r := req(func(r *UpgradeRequest) { r.UpgradeID = "" }); d.UpgradeRequest = &r })}, "runtime_upgrade_request.upgrade_id"},
		{"delegate/upgrade_step_member", &Delegate{del(func(d *Delegation) {
			r := req(func(r *UpgradeRequest) { r.Plan.Steps[0].NextMembers = []string{long} })
			d.UpgradeRequest = &r
		})}, "runtime_upgrade_request.plan.steps[0].next_members[0]"},
		{"open/empty_label", &OpenSession{Session: s}, "owner_label"},
		{"open/oversized_label", &OpenSession{Session: s, OwnerLabel: long}, "owner_label"},
		{"open/oversized_bundle", &OpenSession{Session: s, OwnerLabel: "o", BundleID: long}, "bundle_id"},
		{"handoff/empty_owner", &Handoff{Session: s, NextOwnerLabel: "n", Transfer: rcDel(s, a, b)}, "owner_label"},
		{"handoff/oversized_next_owner", &Handoff{Session: s, OwnerLabel: "o", NextOwnerLabel: long, Transfer: rcDel(s, a, b)}, "next_owner_label"},
		{"handoff/empty_transfer_bundle", &Handoff{Session: s, OwnerLabel: "o", NextOwnerLabel: "n",
			Transfer: del(func(d *Delegation) { d.BundleID = "" })}, "transfer.bundle_id"},
		{"seed/empty_bundle", &SeedMembership{Members: []string{"m"}}, "bundle_id"},
		{"seed/empty_member", &SeedMembership{BundleID: "device_migration", Members: []string{"m", ""}}, "members[1]"},
		{"seed/oversized_member", &SeedMembership{BundleID: "device_migration", Members: []string{long}}, "members[0]"},
		{"execute/empty_bundle", &ExecuteUpgrade{Request: rcUpgradeRequest("u")}, "bundle_id"},
		{"execute/empty_step_id", &ExecuteUpgrade{BundleID: "device_migration",
			Request: req(func(r *UpgradeRequest) { r.Plan.Steps[0].StepID = "" })}, "runtime_upgrade_request.plan.steps[0].step_id"},
		{"execute/oversized_plan_id", &ExecuteUpgrade{BundleID: "device_migration",
			Request: req(func(r *UpgradeRequest) { r.Plan.PlanID = long })}, "runtime_upgrade_request.plan.plan_id"},
		{"execute/pending_effect_treatment", &ExecuteUpgrade{BundleID: "device_migration",
			Request: req(func(r *UpgradeRequest) { r.Compatibility.PendingEffectTreatment = 0 })}, "runtime_upgrade_request.compatibility.pending_effect_treatment"},
		{"execute/canonical_publication_continuity", &ExecuteUpgrade{BundleID: "device_migration",
			Request: req(func(r *UpgradeRequest) { r.Compatibility.CanonicalPublicationContinuity = 3 })}, "runtime_upgrade_request.compatibility.canonical_publication_continuity"},
		{"execute/execution_constraint", &ExecuteUpgrade{BundleID: "device_migration",
			Request: req(func(r *UpgradeRequest) { r.Compatibility.ExecutionConstraint = 0 })}, "runtime_upgrade_request.compatibility.execution_constraint"},
		{"execute/empty_invalidated_obligation", &ExecuteUpgrade{BundleID: "device_migration",
			Request: req(func(r *UpgradeRequest) { r.InvalidatedObligationIDs = []string{""} })}, "runtime_upgrade_request.invalidated_obligation_ids[0]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := rcNew(t)
			h.native(a, s)
			h.ok(&OpenSession{Session: s, OwnerLabel: "o", BundleID: "device_migration"})
			h.ok(&SeedMembership{BundleID: "device_migration", Members: []string{"member-a", "member-b"}})
			err := h.reject(tc.op, CodeInvalidArgument)
			if !strings.HasPrefix(err.Message, tc.field+": ") {
				t.Fatalf("message %q does not name field %q", err.Message, tc.field)
			}
			if Check(tc.op) == nil {
				t.Fatal("Check accepts what Apply rejects")
			}
		})
	}

	t.Run("exactly_256_bytes_is_accepted", func(t *testing.T) {
		h := rcNew(t)
		h.ok(&RegisterBundle{Bundle: Bundle{ID: max, ProtocolIDs: []string{max}, Exports: []string{max}}})
		h.ok(&OpenSession{Session: s, OwnerLabel: max})
		h.ok(&SeedMembership{BundleID: max, Members: []string{max}})
	})

	t.Run("request_id", func(t *testing.T) {
		h := rcNew(t)
		before := h.s.Clone()
		r := h.applyID(strings.Repeat("r", MaxRequestIDBytes+1), &SetCapabilities{Reconfiguration: false})
		if r.Err == nil || r.Err.Code != CodeInvalidArgument || !strings.HasPrefix(r.Err.Message, "request_id: ") {
			t.Fatalf("oversized request id: %+v", r.Err)
		}
		r = h.applyID("bad\x00id", &SetCapabilities{Reconfiguration: false})
		if r.Err == nil || r.Err.Code != CodeInvalidArgument || !strings.HasPrefix(r.Err.Message, "request_id: ") {
			t.Fatalf("control char request id: %+v", r.Err)
		}
		rcAssertUnchanged(t, before, h.s) // the op did not run and the id was not remembered
		if h.s.Stats().RequestIDs != 0 {
			t.Fatal("invalid request id remembered")
		}
		h.applyID(strings.Repeat("r", MaxRequestIDBytes), &SetCapabilities{Reconfiguration: true})
		if h.s.Stats().RequestIDs != 1 {
			t.Fatal("a 128-byte request id should be accepted")
		}
	})
}

// ---------------------------------------------------------------------------
// Coherence: ordering and incremental versus global

func TestViolationMessageOrdering(t *testing.T) {
	h := rcNew(t)
	a, b, c, d := rcAuth(1), rcAuth(2), rcAuth(3), rcAuth(4)
	s1, s2, s3, s4, s5 := rcSess(1), rcSess(2), rcSess(3), rcSess(4), rcSess(5)
	// Build the incoherent sessions in an order unrelated to their ids.
	// s4: delegated out by two with one receiver.
	h.extend(a, s4, DelegatedOut)
	h.extend(b, s4, DelegatedOut)
	h.extend(c, s4, DelegatedIn)
	// s2: three natives plus an out: both rules, rule 1 first.
	h.native(d, s2)
	h.native(c, s2)
	h.extend(b, s2, DelegatedOut)
	h.native(a, s2)
	// s1: orphan out.
	h.extend(c, s1, DelegatedOut)
	// s5: two receivers of one out.
	h.extend(a, s5, DelegatedIn)
	h.extend(b, s5, DelegatedOut)
	h.extend(d, s5, DelegatedIn)
	want := []string{
		vOrphan(s1),
		vActive(s2, 3), vOrphan(s2),
		vOutBy(s4, 2),
		vActive(s5, 2), vInTo(s5, 2),
	}
	if got := h.s.Coherence(); !slices.Equal(got, want) {
		t.Fatalf("coherence\n got %q\nwant %q", got, want)
	}
	if got := rcGlobalViolations(rcFootprints(h.s)); !slices.Equal(got, want) {
		t.Fatalf("reference check disagrees with the hand-computed list: %q", got)
	}

	// Delegating a coherent session s3 (sorted between s2 and s4) fails with
	// every violation, in order; s3 itself contributes nothing.
	h.native(a, s3)
	h.rejectMsg(&Delegate{rcDel(s3, a, b)}, CodeCoherenceViolation, coherenceMsg(s3, want...))

	// A delegation that breaks s3 places its messages between s2's and s4's.
	h.extend(c, s3, DelegatedIn) // now s3 has two active owners itself
	want3 := []string{vOrphan(s1), vActive(s2, 3), vOrphan(s2), vActive(s3, 2), vInTo(s3, 2), vOutBy(s4, 2), vActive(s5, 2), vInTo(s5, 2)}
	// Candidate of a→b: a out, b in, c in: active 2, in 2.
	h.rejectMsg(&Delegate{rcDel(s3, a, b)}, CodeCoherenceViolation, coherenceMsg(s3, want3...))

	// Delegating a session that sorts first and last.
	s0, s9 := rcSess(0), rcSess(9)
	h.native(a, s0)
	h.native(a, s9)
	now := []string{vOrphan(s1), vActive(s2, 3), vOrphan(s2), vActive(s3, 2), vOutBy(s4, 2), vActive(s5, 2), vInTo(s5, 2)}
	if got := rcGlobalViolations(rcFootprints(h.s)); !slices.Equal(got, now) || !slices.Equal(h.s.Coherence(), now) {
		t.Fatalf("coherence %q", got)
	}
	h.rejectMsg(&Delegate{rcDel(s0, a, b)}, CodeCoherenceViolation, coherenceMsg(s0, now...))
	h.rejectMsg(&Delegate{rcDel(s9, a, b)}, CodeCoherenceViolation, coherenceMsg(s9, now...))
}

func TestDelegationRepairingTheOnlyViolationSucceeds(t *testing.T) {
	h := rcNew(t)
	a, b, s := rcAuth(1), rcAuth(2), rcSess(1)
	h.extend(a, s, DelegatedOut) // orphan: the only violation, on s itself
	if len(h.s.Coherence()) != 1 {
		t.Fatal("orphan not reported")
	}
	// The global check over the candidate is clean, so upstream accepts.
	h.delegate(s, a, b)
	h.wantCoherent()
	if h.s.Stats().ViolatingSessions != 0 {
		t.Fatal("violation set not cleared")
	}
	// But with a second violating session the same repair is refused.
	h2 := rcNew(t)
	other := rcSess(2)
	h2.extend(a, s, DelegatedOut)
	h2.extend(a, other, DelegatedOut)
	h2.rejectMsg(&Delegate{rcDel(s, a, b)}, CodeCoherenceViolation, coherenceMsg(s, vOrphan(other)))
}

// rcGlobalViolations is upstream's verify_coherence written directly from
// domain 3.7, over whole footprints: the reference the incremental index is
// held to.
func rcGlobalViolations(fps map[AuthorityID]Footprint) []string {
	type counts struct{ active, in, out int }
	per := map[SessionID]*counts{}
	get := func(s SessionID) *counts {
		if per[s] == nil {
			per[s] = &counts{}
		}
		return per[s]
	}
	for _, f := range fps {
		for _, s := range f.Native {
			get(s).active++
		}
		for _, s := range f.DelegatedIn {
			get(s).active++
			get(s).in++
		}
		for _, s := range f.DelegatedOut {
			get(s).out++
		}
	}
	ids := slices.SortedFunc(maps.Keys(per), compareSession)
	var out []string
	for _, s := range ids {
		c := per[s]
		if c.active > 1 {
			out = append(out, vActive(s, c.active))
		}
		if c.out > 0 {
			switch {
			case c.in == 0:
				out = append(out, vOrphan(s))
			case c.in > 1:
				out = append(out, vInTo(s, c.in))
			case c.out != 1:
				out = append(out, vOutBy(s, c.out))
			}
		}
	}
	return out
}

// rcModel is a direct, map-based model of upstream's controller (domain
// 3.3, 3.4, 3.6, 3.7): per-authority footprints, copied wholesale for the
// delegation candidate and checked globally.
type rcModel struct {
	fp map[AuthorityID]map[SessionID]Class
}

func (m *rcModel) touch(a AuthorityID) map[SessionID]Class {
	if m.fp[a] == nil {
		m.fp[a] = map[SessionID]Class{}
	}
	return m.fp[a]
}

func (m *rcModel) footprints() map[AuthorityID]Footprint {
	out := map[AuthorityID]Footprint{}
	for a, classes := range m.fp {
		f := newFootprint()
		for s, c := range classes {
			switch c {
			case Native:
				f.Native = append(f.Native, s)
			case DelegatedIn:
				f.DelegatedIn = append(f.DelegatedIn, s)
			case DelegatedOut:
				f.DelegatedOut = append(f.DelegatedOut, s)
			}
		}
		for _, l := range []*[]SessionID{&f.Native, &f.DelegatedIn, &f.DelegatedOut} {
			slices.SortFunc(*l, compareSession)
		}
		out[a] = f
	}
	return out
}

// delegate returns the expected error message ("" on success).
func (m *rcModel) delegate(s SessionID, from, to AuthorityID) string {
	fromClass := m.fp[from][s] // nil map reads as 0
	if fromClass == 0 {
		return notOwnedMsg(s, from)
	}
	cand := &rcModel{fp: map[AuthorityID]map[SessionID]Class{}}
	for a, classes := range m.fp {
		cand.fp[a] = maps.Clone(classes)
	}
	if fromClass == DelegatedIn {
		for a, classes := range cand.fp {
			if a != from && classes[s] == DelegatedOut {
				delete(classes, s)
			}
		}
	}
	cand.touch(from)[s] = DelegatedOut
	cand.touch(to)[s] = DelegatedIn
	if v := rcGlobalViolations(cand.footprints()); len(v) > 0 {
		return coherenceMsg(s, v...)
	}
	m.fp = cand.fp
	return ""
}

// TestIncrementalCoherenceMatchesGlobalCheck drives the FSM and the model
// with the same random footprint changes and delegations and requires the
// same accept/reject decision and the same messages, every step.
func TestIncrementalCoherenceMatchesGlobalCheck(t *testing.T) {
	var coherentAccepts, incoherentRejects, ownRejects int
	for seed := uint64(1); seed <= 10; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0x5eed))
		h := rcNew(t)
		m := &rcModel{fp: map[AuthorityID]map[SessionID]Class{}}
		auths := []AuthorityID{rcAuth(1), rcAuth(2), rcAuth(3), rcAuth(4)}
		sessions := []SessionID{rcSess(1), rcSess(2), rcSess(3), rcSess(4), rcSess(5)}
		for step := 0; step < 300; step++ {
			a := auths[rng.IntN(len(auths))]
			s := sessions[rng.IntN(len(sessions))]
			switch k := rng.IntN(20); {
			case k < 2:
				// Mostly natives, so that delegations have owners; the
				// other classes create incoherence.
				c := Native
				if rng.IntN(3) == 0 {
					c = Class(1 + rng.IntN(3))
				}
				h.extend(a, s, c)
				m.touch(a)[s] = c
			case k < 7:
				h.ok(&RemoveFootprint{Authority: a, Session: s})
				if m.fp[a] != nil {
					delete(m.fp[a], s)
				}
			default:
				// Mostly delegate from a current holder, so that most
				// delegations get past the ownership check.
				var holders []AuthorityID
				for _, x := range auths {
					if m.fp[x][s] != 0 {
						holders = append(holders, x)
					}
				}
				if len(holders) > 0 && rng.IntN(4) != 0 {
					a = holders[rng.IntN(len(holders))]
				}
				to := auths[rng.IntN(len(auths))]
				want := m.delegate(s, a, to)
				before := h.s.Clone()
				r := h.apply(&Delegate{rcDel(s, a, to)})
				switch {
				case want == "" && r.Err != nil:
					t.Fatalf("seed %d step %d: FSM rejected %s→%s of %s: %v", seed, step, a, to, s, r.Err)
				case want != "" && r.Err == nil:
					t.Fatalf("seed %d step %d: FSM accepted, model expected %q", seed, step, want)
				case want != "" && r.Err.Message != want:
					t.Fatalf("seed %d step %d: message\n got %q\nwant %q", seed, step, r.Err.Message, want)
				case want != "":
					rcAssertUnchanged(t, before, h.s)
					if r.Err.Code == CodeCoherenceViolation {
						incoherentRejects++
					} else {
						ownRejects++
					}
				default:
					coherentAccepts++
				}
			}
			if got, want := h.s.Coherence(), rcGlobalViolations(m.footprints()); !slices.Equal(got, want) {
				t.Fatalf("seed %d step %d: coherence\n got %q\nwant %q", seed, step, got, want)
			}
			if got, want := rcFootprints(h.s), m.footprints(); !reflect.DeepEqual(got, want) {
				t.Fatalf("seed %d step %d: footprints\n got %+v\nwant %+v", seed, step, got, want)
			}
		}
	}
	if coherentAccepts < 100 || incoherentRejects < 200 || ownRejects < 100 {
		t.Fatalf("walk too narrow: %d accepted, %d coherence rejections, %d ownership rejections",
			coherentAccepts, incoherentRejects, ownRejects)
	}
	t.Logf("%d accepted, %d coherence rejections, %d ownership rejections", coherentAccepts, incoherentRejects, ownRejects)
}

// ---------------------------------------------------------------------------
// Request-id deduplication (domain 9.7)

func TestRequestIDRetryReturnsFirstResultAndAppliesOnce(t *testing.T) {
	h := rcNew(t)
	a, b, s := rcAuth(1), rcAuth(2), rcSess(1)
	h.native(a, s)
	first := h.applyID("req-1", &Delegate{rcDel(s, a, b)})
	if first.Err != nil || first.Deduped {
		t.Fatalf("first %+v", first)
	}
	digest := h.s.Digest()
	retry := h.applyID("req-1", &Delegate{rcDel(s, a, b)})
	if !retry.Deduped {
		t.Fatal("retry not deduplicated")
	}
	retry.Deduped = false
	// The table keeps results in their binary form, which, like a snapshot,
	// does not tell an empty list from none: compare canonical renderings.
	if canon(retry) != canon(first) {
		t.Fatalf("retry %+v, first %+v", retry, first)
	}
	if h.s.LastFactSeq() != 1 {
		t.Fatalf("facts %d after a retry, want 1", h.s.LastFactSeq())
	}
	aligned := h.s.Clone()
	aligned.applied--
	if aligned.Digest() != digest {
		t.Fatal("a retry changed more than the applied index")
	}
	// The first answer wins even if the retried command differs.
	other := h.applyID("req-1", &SetCapabilities{Reconfiguration: false})
	if !other.Deduped || other.Outcome == nil || !h.s.Reconfiguration() {
		t.Fatalf("retry with another op: %+v", other)
	}
	// A different request id for the same delegation applies again.
	second := h.applyID("req-2", &Delegate{rcDel(s, a, b)})
	if second.Err != nil || second.Deduped || second.Outcome.FactSeq != 2 || h.s.LastFactSeq() != 2 {
		t.Fatalf("second %+v", second)
	}
	// Without a request id, every command applies.
	h.ok(&Delegate{rcDel(s, a, b)})
	if h.s.LastFactSeq() != 3 {
		t.Fatal("commands without request ids are not deduplicated")
	}
}

func TestRequestIDRemembersRejections(t *testing.T) {
	h := rcNew(t)
	a, b, s := rcAuth(1), rcAuth(2), rcSess(1)
	first := h.applyID("req-x", &Delegate{rcDel(s, a, b)})
	if first.Err == nil || first.Err.Code != CodeSessionNotOwned {
		t.Fatalf("first %+v", first)
	}
	// Ownership is recorded now, but the retry still gets the first answer.
	h.native(a, s)
	retry := h.applyID("req-x", &Delegate{rcDel(s, a, b)})
	if !retry.Deduped || retry.Err == nil || *retry.Err != *first.Err || retry.Index != first.Index {
		t.Fatalf("retry %+v", retry)
	}
	h.wantClass(a, s, Native)
}

func TestRequestIDTableEvictsOldest(t *testing.T) {
	h := rcNew(t)
	a, b, s := rcAuth(1), rcAuth(2), rcSess(1)
	h.native(a, s)
	if r := h.applyID("r-0", &Delegate{rcDel(s, a, b)}); r.Err != nil {
		t.Fatal(r.Err)
	}
	for i := 1; i <= MaxRequestIDs; i++ {
		h.applyID(fmt.Sprintf("r-%d", i), &SetCapabilities{Reconfiguration: true})
	}
	if n := h.s.Stats().RequestIDs; n != MaxRequestIDs {
		t.Fatalf("table holds %d ids, want %d", n, MaxRequestIDs)
	}
	// r-0 was the oldest and is forgotten: retrying it applies again.
	r := h.applyID("r-0", &Delegate{rcDel(s, a, b)})
	if r.Deduped || r.Err != nil || r.Outcome.FactSeq != 2 {
		t.Fatalf("evicted retry %+v", r)
	}
	// Re-remembering r-0 evicted r-1; r-2 and the newest are still known.
	if r := h.applyID("r-2", &SetCapabilities{Reconfiguration: false}); !r.Deduped || !h.s.Reconfiguration() {
		t.Fatalf("r-2 %+v", r)
	}
	if r := h.applyID(fmt.Sprintf("r-%d", MaxRequestIDs), &SetCapabilities{Reconfiguration: false}); !r.Deduped {
		t.Fatal("newest id forgotten")
	}
	if r := h.applyID("r-1", &SetCapabilities{Reconfiguration: true}); r.Deduped {
		t.Fatal("r-1 should have been evicted")
	}
	if n := h.s.Stats().RequestIDs; n != MaxRequestIDs {
		t.Fatalf("table holds %d ids, want %d", n, MaxRequestIDs)
	}
}

// ---------------------------------------------------------------------------
// Facts (domain 9.4)

func TestFactsJournal(t *testing.T) {
	h := rcNew(t)
	a, b, c := rcAuth(1), rcAuth(2), rcAuth(3)
	ctx := rcCtx(7)
	var want []Fact
	for i := byte(1); i <= 5; i++ {
		s := rcSess(i)
		h.native(a, s)
		d := rcDel(s, a, b)
		d.AtMillis = 5000 + uint64(i)
		if i%2 == 0 {
			d.Context = &ctx
		}
		if i == 3 {
			d.From, d.To = a, c
			d.BundleID = "guardian_handoff"
		}
		out := h.ok(&Delegate{d}).Outcome
		context := DefaultContextForAuthority(a)
		if d.Context != nil {
			context = ctx
		}
		f := Fact{Seq: uint64(i), Index: h.idx, Context: context, Session: s, From: d.From, To: d.To,
			BundleID: d.BundleID, TimestampMillis: d.AtMillis}
		want = append(want, f)
		if out.FactSeq != uint64(i) || out.Witness.Context != context {
			t.Fatalf("outcome %d: seq %d context %s", i, out.FactSeq, out.Witness.Context)
		}
		// A rejected delegation in between appends nothing.
		h.reject(&Delegate{rcDel(rcSess(100+i), a, b)}, CodeSessionNotOwned)
	}
	if got := h.s.Facts(0, 0); !reflect.DeepEqual(got, want) {
		t.Fatalf("facts\n got %+v\nwant %+v", got, want)
	}
	if h.s.LastFactSeq() != 5 {
		t.Fatal("last fact seq")
	}
	for _, tc := range []struct {
		after uint64
		limit int
		want  []Fact
	}{
		{0, 2, want[0:2]},
		{2, 2, want[2:4]},
		{4, 2, want[4:5]},
		{5, 2, nil},
		{99, 0, nil},
		{1, 0, want[1:]},
		{0, -1, want},
		{3, 100, want[3:]},
	} {
		got := h.s.Facts(tc.after, tc.limit)
		if len(got) == 0 && len(tc.want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Fatalf("Facts(%d, %d) = %+v, want %+v", tc.after, tc.limit, got, tc.want)
		}
	}
	// The returned slice is a copy.
	got := h.s.Facts(0, 1)
	got[0].BundleID = "mutated"
	if h.s.Facts(0, 1)[0].BundleID == "mutated" {
		t.Fatal("Facts exposes the journal")
	}
	// A default context is deterministic and distinct per authority.
	if c1, c2 := DefaultContextForAuthority(a), DefaultContextForAuthority(a); c1 != c2 || c1 == DefaultContextForAuthority(b) {
		t.Fatal("default context")
	}
	if v := UUID(DefaultContextForAuthority(a)); v[6]>>4 != 8 || v[8]>>6 != 2 {
		t.Fatalf("default context %s is not a version-8 RFC 9562 UUID", DefaultContextForAuthority(a))
	}
}

func TestFactsShareIndexWhenPacked(t *testing.T) {
	s := New()
	a, b := rcAuth(1), rcAuth(2)
	var cmds []Command
	for i := byte(1); i <= 3; i++ {
		cmds = append(cmds, Command{Op: &ExtendFootprint{Authority: a, Session: rcSess(i), Class: Native}})
		cmds = append(cmds, Command{Op: &Delegate{rcDel(rcSess(i), a, b)}})
	}
	for _, r := range s.ApplyEntry(7, EncodeEntry(cmds...)) {
		if r.Err != nil || r.Index != 7 {
			t.Fatalf("result %+v", r)
		}
	}
	facts := s.Facts(0, 0)
	if len(facts) != 3 {
		t.Fatalf("facts %d", len(facts))
	}
	for i, f := range facts {
		if f.Seq != uint64(i+1) || f.Index != 7 || f.Session != rcSess(byte(i+1)) {
			t.Fatalf("fact %d %+v", i, f)
		}
	}
}

// ---------------------------------------------------------------------------
// Runtime upgrades

func TestSeedMembership(t *testing.T) {
	h := rcNew(t)
	r := h.ok(&SeedMembership{BundleID: "device_migration", Members: []string{"member-b", "member-a", "member-b", "Member-c"}})
	want := &UpgradeSnapshot{ActiveMembers: []string{"Member-c", "member-a", "member-b"}}
	if !reflect.DeepEqual(r.Upgrade, want) {
		t.Fatalf("seeded %+v", r.Upgrade)
	}
	if snap, err := h.s.UpgradeSnapshot("device_migration"); err != nil || !reflect.DeepEqual(snap, want) {
		t.Fatalf("snapshot %+v %v", snap, err)
	}
	// Reseeding is a full reset: epoch and executions cleared.
	h.ok(&ExecuteUpgrade{BundleID: "device_migration", Request: rcUpgradeRequest("u1")})
	if snap, _ := h.s.UpgradeSnapshot("device_migration"); snap.Epoch != 1 {
		t.Fatal("epoch after execute")
	}
	r = h.ok(&SeedMembership{BundleID: "device_migration", Members: []string{"z"}})
	if !reflect.DeepEqual(r.Upgrade, &UpgradeSnapshot{ActiveMembers: []string{"z"}}) {
		t.Fatalf("reseeded %+v", r.Upgrade)
	}
	// Empty membership is rejected and changes nothing (nil and empty).
	h.rejectMsg(&SeedMembership{BundleID: "device_migration"}, CodeInvalidRuntimeUpgrade,
		rcUpgradeMsg("device_migration", "active membership may not be empty"))
	h.rejectMsg(&SeedMembership{BundleID: "device_migration", Members: []string{}}, CodeInvalidRuntimeUpgrade,
		rcUpgradeMsg("device_migration", "active membership may not be empty"))
	h.rejectMsg(&SeedMembership{BundleID: "ghost", Members: []string{"m"}}, CodeBundleNotFound,
		"runtime upgrade for bundle `ghost` failed: bundle not found: ghost")
	// Other bundles are untouched.
	if _, err := h.s.UpgradeSnapshot("guardian_handoff"); err == nil {
		t.Fatal("seeding one bundle seeded another")
	}
}

func TestUpgradeSnapshotErrors(t *testing.T) {
	s := New()
	_, err := s.UpgradeSnapshot("device_migration")
	if err == nil || err.Code != CodeInvalidRuntimeUpgrade ||
		err.Message != rcUpgradeMsg("device_migration", "active membership must be seeded before exporting a runtime-upgrade snapshot") {
		t.Fatalf("unseeded: %v", err)
	}
	_, err = s.UpgradeSnapshot("ghost")
	if err == nil || err.Code != CodeBundleNotFound || err.Message != "runtime upgrade for bundle `ghost` failed: bundle not found: ghost" {
		t.Fatalf("unknown: %v", err)
	}
}

func TestExecuteUpgradeBeforeSeedingRecordsNothing(t *testing.T) {
	h := rcNew(t)
	h.rejectMsg(&ExecuteUpgrade{BundleID: "guardian_handoff", Request: rcUpgradeRequest("u")}, CodeInvalidRuntimeUpgrade,
		rcUpgradeMsg("guardian_handoff", "active membership must be seeded before executing a runtime upgrade"))
}

func TestExecuteUpgradeSuccessArtifacts(t *testing.T) {
	h := rcNew(t)
	h.ok(&SeedMembership{BundleID: "guardian_handoff", Members: []string{"g1", "g2", "g3"}})
	req := UpgradeRequest{
		UpgradeID: "swap",
		Plan: Plan{PlanID: "plan", Steps: []PlanStep{
			{StepID: "first", NextMembers: []string{"g3", "g4"}},
			{StepID: "last", NextMembers: []string{"g5", "g4", "g5"}},
		}},
		Compatibility: Compatibility{OwnershipContinuityRequired: true, PendingEffectTreatment: InvalidateBlocked,
			CanonicalPublicationContinuity: ReissueCanonicalTruth, ExecutionConstraint: MixedDeterminismAllowed},
		CarriedPublicationIDs:     []string{"p1"},
		InvalidatedPublicationIDs: []string{"p2"},
		InvalidatedObligationIDs:  []string{"o1"},
	}
	r := h.ok(&ExecuteUpgrade{BundleID: "guardian_handoff", Request: req})
	x := r.Execution
	initial, target := []string{"g1", "g2", "g3"}, []string{"g4", "g5"}
	wantArtifact := func(p Phase) Artifact {
		return Artifact{UpgradeID: "swap", Phase: p, PreviousMembers: initial, NextMembers: target, Compatibility: req.Compatibility,
			CarriedPublicationIDs: []string{"p1"}, InvalidatedPublicationIDs: []string{"p2"}, InvalidatedObligationIDs: []string{"o1"}}
	}
	want := &Execution{ArtifactID: "guardian_handoff", UpgradeID: "swap", FinalMembers: target,
		Artifacts: []Artifact{wantArtifact(PhaseStaged), wantArtifact(PhaseAdmitted), wantArtifact(PhaseCommittedCutover)}}
	if !reflect.DeepEqual(x, want) {
		t.Fatalf("execution\n got %+v\nwant %+v", x, want)
	}
	if r.Upgrade.Epoch != 1 || !slices.Equal(r.Upgrade.ActiveMembers, target) {
		t.Fatalf("snapshot %+v", r.Upgrade)
	}
	// A second upgrade builds on the first; the epoch counts executions.
	req2 := rcUpgradeRequest("again")
	req2.Plan.Steps = []PlanStep{{StepID: "s", NextMembers: []string{"g5", "g6"}}}
	r2 := h.ok(&ExecuteUpgrade{BundleID: "guardian_handoff", Request: req2})
	stored, serr := h.s.UpgradeSnapshot("guardian_handoff")
	if serr != nil {
		t.Fatal(serr)
	}
	if r2.Upgrade.Epoch != 2 || stored.Epoch != 2 || len(stored.Executions) != 2 || !slices.Equal(r2.Execution.Artifacts[0].PreviousMembers, target) ||
		!reflect.DeepEqual(stored.Executions[0], *want) {
		t.Fatalf("second %+v, stored %+v", r2.Upgrade, stored)
	}
	// The earlier result is not changed by later upgrades.
	if r.Upgrade.Epoch != 1 {
		t.Fatal("a stored snapshot was modified in place")
	}
	// Without continuity a disjoint first step is fine.
	req3 := rcUpgradeRequest("disjoint")
	req3.Compatibility.OwnershipContinuityRequired = false
	req3.Plan.Steps = []PlanStep{{StepID: "s", NextMembers: []string{"h1"}}}
	if r3 := h.ok(&ExecuteUpgrade{BundleID: "guardian_handoff", Request: req3}); !slices.Equal(r3.Upgrade.ActiveMembers, []string{"h1"}) {
		t.Fatalf("third %+v", r3.Upgrade)
	}
}

func TestExecuteUpgradeValidationOrder(t *testing.T) {
	reasons := []string{
		"must contain at least one plan step",
		"may not both carry and invalidate the same canonical publication",
		"may not both carry and invalidate the same obligation",
		"requires ownership continuity across the first cutover",
		"must make pending-effect treatment explicit",
		"may not invalidate canonical publications when continuity is required",
		"step `s2` must preserve a non-empty membership set",
	}
	disjoint := []PlanStep{{StepID: "s1", NextMembers: []string{"member-z"}}, {StepID: "s2"}}
	overlap := []PlanStep{{StepID: "s1", NextMembers: []string{"member-b"}}, {StepID: "s2"}}
	compat := func(cont bool, p PendingEffectTreatment, c CanonicalPublicationContinuity) Compatibility {
		return Compatibility{OwnershipContinuityRequired: cont, PendingEffectTreatment: p, CanonicalPublicationContinuity: c, ExecutionConstraint: PreserveBundleProfile}
	}
	// Request k fails reason k+1 and also every later reason it can, with
	// every earlier reason satisfied, so the first failing check must win.
	requests := []UpgradeRequest{
		{Compatibility: compat(true, InvalidateBlocked, PreserveCanonicalTruth),
			CarriedPublicationIDs: []string{"p"}, InvalidatedPublicationIDs: []string{"p"},
			CarriedObligationIDs: []string{"o"}, InvalidatedObligationIDs: []string{"o"}},
		{Plan: Plan{Steps: disjoint}, Compatibility: compat(true, InvalidateBlocked, PreserveCanonicalTruth),
			CarriedPublicationIDs: []string{"p"}, InvalidatedPublicationIDs: []string{"p"},
			CarriedObligationIDs: []string{"o"}, InvalidatedObligationIDs: []string{"o"}},
		{Plan: Plan{Steps: disjoint}, Compatibility: compat(true, InvalidateBlocked, PreserveCanonicalTruth),
			CarriedPublicationIDs: []string{"p"}, InvalidatedPublicationIDs: []string{"q"},
			CarriedObligationIDs: []string{"o"}, InvalidatedObligationIDs: []string{"o"}},
		{Plan: Plan{Steps: disjoint}, Compatibility: compat(true, InvalidateBlocked, PreserveCanonicalTruth),
			InvalidatedPublicationIDs: []string{"q"}, CarriedObligationIDs: []string{"o"}},
		{Plan: Plan{Steps: overlap}, Compatibility: compat(true, InvalidateBlocked, PreserveCanonicalTruth),
			InvalidatedPublicationIDs: []string{"q"}},
		{Plan: Plan{Steps: overlap}, Compatibility: compat(true, PreservePending, PreserveCanonicalTruth),
			InvalidatedPublicationIDs: []string{"q"}},
		{Plan: Plan{Steps: overlap}, Compatibility: compat(true, PreservePending, ReissueCanonicalTruth),
			InvalidatedPublicationIDs: []string{"q"}},
	}
	{
		const bundle = "device_migration"
		h := rcNew(t)
		h.ok(&SeedMembership{BundleID: bundle, Members: []string{"member-a", "member-b"}})
		h.native(rcAuth(1), rcSess(1))
		for k, req := range requests {
			req.UpgradeID = fmt.Sprintf("u%d", k+1)
			msg := rcUpgradeMsg(bundle, fmt.Sprintf("runtime upgrade `%s` %s", req.UpgradeID, reasons[k]))
			t.Run(fmt.Sprintf("reason_%d/standalone", k+1), func(t *testing.T) {
				h.t = t
				h.rejectMsg(&ExecuteUpgrade{BundleID: bundle, Request: req}, CodeInvalidRuntimeUpgrade, msg)
			})
			t.Run(fmt.Sprintf("reason_%d/delegation", k+1), func(t *testing.T) {
				h.t = t
				d := rcDel(rcSess(1), rcAuth(1), rcAuth(2))
				d.UpgradeRequest = &req
				h.rejectMsg(&Delegate{d}, CodeInvalidRuntimeUpgrade, msg)
			})
		}
		h.t = t
		snap, _ := h.s.UpgradeSnapshot(bundle)
		if snap.Epoch != 0 || len(snap.Executions) != 0 {
			t.Fatalf("rejected upgrades were recorded: %+v", snap)
		}
	}
}

func TestDelegationUpgradeFailureLeavesEverythingUntouched(t *testing.T) {
	h := rcNew(t)
	a, b, s := rcAuth(1), rcAuth(2), rcSess(1)
	h.native(a, s)
	h.native(a, rcSess(2))
	h.delegate(rcSess(2), a, b) // one earlier fact
	// Unseeded bundle.
	req := rcUpgradeRequest("u")
	d := rcDel(s, a, b)
	d.UpgradeRequest = &req
	h.rejectMsg(&Delegate{d}, CodeInvalidRuntimeUpgrade,
		rcUpgradeMsg("device_migration", "active membership must be seeded before executing a runtime upgrade"))
	// Seeded, but the request is invalid.
	h.ok(&SeedMembership{BundleID: "device_migration", Members: []string{"member-a", "member-b"}})
	bad := rcUpgradeRequest("u-bad")
	bad.InvalidatedPublicationIDs = []string{"pub:device"}
	d.UpgradeRequest = &bad
	h.rejectMsg(&Delegate{d}, CodeInvalidRuntimeUpgrade,
		rcUpgradeMsg("device_migration", "runtime upgrade `u-bad` may not both carry and invalidate the same canonical publication"))
	h.wantClass(a, s, Native)
	h.wantClass(b, s, 0)
	if h.s.LastFactSeq() != 1 {
		t.Fatal("fact appended by a failed delegation")
	}
	snap, _ := h.s.UpgradeSnapshot("device_migration")
	if snap.Epoch != 0 || !slices.Equal(snap.ActiveMembers, []string{"member-a", "member-b"}) || len(snap.Executions) != 0 {
		t.Fatalf("snapshot %+v", snap)
	}
	// A coherence failure with a valid request does not run the upgrade.
	h.native(rcAuth(3), s)
	d.UpgradeRequest = &req
	h.reject(&Delegate{d}, CodeCoherenceViolation)
	// The upgrade only goes to the delegation's bundle.
	h.ok(&RemoveFootprint{Authority: rcAuth(3), Session: s})
	h.ok(&Delegate{d})
	if snap, _ := h.s.UpgradeSnapshot("device_migration"); snap.Epoch != 1 {
		t.Fatal("upgrade not recorded")
	}
	if _, err := h.s.UpgradeSnapshot("guardian_handoff"); err == nil {
		t.Fatal("upgrade leaked into another bundle")
	}
}

func TestSetCapabilitiesGatesOnlyGatedOperations(t *testing.T) {
	h := rcNew(t)
	a, s := rcAuth(1), rcSess(1)
	h.ok(&SetCapabilities{Reconfiguration: false})
	if h.s.Reconfiguration() {
		t.Fatal("gate still on")
	}
	// Not gated.
	h.ok(&RegisterBundle{Bundle: Bundle{ID: "free"}})
	h.native(a, s)
	h.ok(&RemoveFootprint{Authority: a, Session: s})
	h.native(a, s)
	h.ok(&SeedMembership{BundleID: "free", Members: []string{"m"}})
	h.ok(&OpenSession{Session: s, OwnerLabel: "o"})
	// Gated.
	h.reject(&LinkBundles{Left: "free", Right: "free", LinkedID: "free2"}, CodeMissingCapability)
	h.reject(&Delegate{rcDel(s, a, rcAuth(2))}, CodeMissingCapability)
	h.reject(&ExecuteUpgrade{BundleID: "free", Request: rcUpgradeRequest("u")}, CodeMissingCapability)
	// Setting the same value twice is fine; turning it back on restores.
	h.ok(&SetCapabilities{Reconfiguration: false})
	h.ok(&SetCapabilities{Reconfiguration: true})
	h.ok(&LinkBundles{Left: "free", Right: "free", LinkedID: "free2"})
}

func TestReplicasAgree(t *testing.T) {
	// Two replicas applying the same log reach the same digest at every
	// index, rejections included.
	r1, r2 := rcNew(t), rcNew(t)
	a, b, s := rcAuth(1), rcAuth(2), rcSess(1)
	ops := []Op{
		&ExtendFootprint{Authority: a, Session: s, Class: Native},
		&Delegate{rcDel(s, b, a)},
		&Delegate{rcDel(s, a, b)},
		&OpenSession{Session: s, OwnerLabel: "o", BundleID: "device_migration"},
		&SeedMembership{BundleID: "device_migration", Members: []string{"x"}},
		&ExecuteUpgrade{BundleID: "device_migration", Request: rcUpgradeRequest("u")},
		&LinkBundles{Left: "device_migration", Right: "guardian_handoff", LinkedID: "dg"},
	}
	for _, op := range ops {
		x, y := r1.apply(op), r2.apply(op)
		if !reflect.DeepEqual(x, y) || r1.s.Digest() != r2.s.Digest() {
			t.Fatalf("replicas diverge on %s", op.Type())
		}
	}
}

func TestEnumSpellingsAndIdentifierTextForms(t *testing.T) {
	// Phases serialise in snake_case (domain 2.16).
	for p, want := range map[Phase]string{PhaseStaged: "staged", PhaseAdmitted: "admitted",
		PhaseCommittedCutover: "committed_cutover", PhaseRolledBack: "rolled_back", PhaseFailed: "failed", 0: "invalid", 6: "invalid"} {
		if p.String() != want {
			t.Errorf("phase %d = %q, want %q", p, p.String(), want)
		}
	}
	for _, c := range []Class{Native, DelegatedIn, DelegatedOut} {
		if got, ok := ParseClass(c.String()); !ok || got != c {
			t.Errorf("class %v does not round-trip", c)
		}
	}
	if _, ok := ParseClass("owner"); ok {
		t.Error("unknown class parsed")
	}
	if v, ok := ParsePendingEffectTreatment("invalidate_blocked"); !ok || v != InvalidateBlocked {
		t.Error("pending effect treatment")
	}
	if v, ok := ParseCanonicalPublicationContinuity("preserve_canonical_truth"); !ok || v != PreserveCanonicalTruth {
		t.Error("canonical publication continuity")
	}
	if v, ok := ParseExecutionConstraint("mixed_determinism_allowed"); !ok || v != MixedDeterminismAllowed {
		t.Error("execution constraint")
	}
	// Identifiers answer with the prefixed form and accept it or a bare UUID
	// (domain 9.8).
	const bare = "0123abcd-4567-89ef-0123-456789abcdef"
	s, err := ParseSessionID(bare)
	if err != nil || s.String() != "session-"+bare {
		t.Fatalf("session %s %v", s, err)
	}
	if s2, err := ParseSessionID("session-" + bare); err != nil || s2 != s {
		t.Fatalf("prefixed session %v", err)
	}
	if a, err := ParseAuthorityID("authority-" + bare); err != nil || a.String() != "authority-"+bare {
		t.Fatalf("authority %s %v", a, err)
	}
	if c, err := ParseContextID(bare); err != nil || c.String() != "context-"+bare {
		t.Fatalf("context %s %v", c, err)
	}
	for _, bad := range []string{"", "session-", "authority-" + bare, bare[:35], bare + "0", "0123abcd_4567-89ef-0123-456789abcdef", "0123abcg-4567-89ef-0123-456789abcdef"} {
		if _, err := ParseSessionID(bad); err == nil {
			t.Errorf("ParseSessionID(%q) accepted", bad)
		}
	}
	// Text order is byte order, which the coherence messages rely on.
	if !(rcSess(1).String() < rcSess(2).String()) || compareSession(rcSess(1), rcSess(2)) >= 0 {
		t.Fatal("session order")
	}
}

// A bundle keeps its newest MaxUpgradeHistory executions; the epoch still
// counts all of them, and the state stays restorable.
func TestUpgradeHistoryIsBounded(t *testing.T) {
	s := New()
	idx := uint64(1)
	apply := func(op Op) Result {
		r := s.Apply(idx, Command{Op: op})
		idx++
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		return r
	}
	apply(&SeedMembership{BundleID: "guardian_handoff", Members: []string{"m0"}})
	total := MaxUpgradeHistory + 40
	for i := 1; i <= total; i++ {
		apply(&ExecuteUpgrade{BundleID: "guardian_handoff", Request: UpgradeRequest{
			UpgradeID: fmt.Sprintf("u%d", i),
			Plan:      Plan{Steps: []PlanStep{{StepID: "s", NextMembers: []string{fmt.Sprintf("m%d", i)}}}},
			Compatibility: Compatibility{PendingEffectTreatment: PreservePending,
				CanonicalPublicationContinuity: PreserveCanonicalTruth, ExecutionConstraint: PreserveBundleProfile},
		}})
	}
	snap, err := s.UpgradeSnapshot("guardian_handoff")
	if err != nil {
		t.Fatal(err)
	}
	if snap.Epoch != uint64(total) || len(snap.Executions) != MaxUpgradeHistory {
		t.Fatalf("epoch %d with %d executions, want %d with %d", snap.Epoch, len(snap.Executions), total, MaxUpgradeHistory)
	}
	if first := snap.Executions[0].UpgradeID; first != fmt.Sprintf("u%d", total-MaxUpgradeHistory+1) {
		t.Fatalf("oldest kept execution %s", first)
	}
	var buf bytes.Buffer
	if err := s.Snapshot(&buf, 1); err != nil {
		t.Fatal(err)
	}
	restored, _, rerr := Restore(&buf)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if restored.Digest() != s.Digest() {
		t.Fatal("restored digest differs")
	}
}
