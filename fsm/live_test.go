package fsm

// Live-session tests: the two upstream manager tests of domain.md 7.1 about
// active-session handoff, and the replicated owner record of domain 9.6 (a
// handoff is one command: on failure nothing changes, generation included).

import (
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const rcEpochBundle = "epoch_rotation_transfer" // the epoch manifest's first link-spec bundle

// rcLive opens s for owner through the epoch bundle and records native
// ownership at from.
func rcLive(t *testing.T, from AuthorityID, s SessionID, owner string) *rcHarness {
	t.Helper()
	h := rcNew(t)
	h.native(from, s)
	r := h.ok(&OpenSession{Session: s, OwnerLabel: owner, BundleID: rcEpochBundle})
	if r.Session == nil || r.Session.Generation != 1 {
		t.Fatalf("open %+v", r.Session)
	}
	return h
}

func rcHandoff(s SessionID, owner string, gen uint64, next string, from, to AuthorityID) *Handoff {
	d := rcDel(s, from, to)
	d.BundleID = rcEpochBundle
	return &Handoff{Session: s, OwnerLabel: owner, Generation: gen, NextOwnerLabel: next, Transfer: d}
}

func (h *rcHarness) live(s SessionID) *LiveSession {
	h.t.Helper()
	l, ok := h.s.LiveSession(s)
	if !ok {
		h.t.Fatalf("live session %s missing", s)
	}
	return l
}

func TestUpstreamActiveSessionHandoffMovesOwnerFragmentAndFootprintTogether(t *testing.T) {
	from, to, s := rcAuth(1), rcAuth(2), rcSess(77)
	h := rcLive(t, from, s, "owner-a")
	stale := *h.live(s)

	r := h.ok(rcHandoff(s, "owner-a", 1, "delegated-owner", from, to))
	l := h.live(s)
	if !reflect.DeepEqual(r.Session, l) {
		t.Fatalf("result session %+v, stored %+v", r.Session, l)
	}
	key := "bundle:" + rcEpochBundle
	if l.OwnerLabel != "delegated-owner" || !l.Scope.Equal(FragmentScope(key)) || l.Generation != 2 {
		t.Fatalf("owner after handoff %+v", l)
	}
	w := r.Outcome.Witness
	if w.LinkBoundary.BundleID != rcEpochBundle || !l.RoutingBoundary.equal(w.LinkBoundary) {
		t.Fatalf("witness boundary %+v, routing boundary %+v", w.LinkBoundary, l.RoutingBoundary)
	}
	rec := w.OwnershipReceipt
	want := &OwnershipReceipt{Session: s, ClaimID: 2, FromOwner: stale.OwnerLabel, FromGeneration: stale.Generation,
		ToOwner: "delegated-owner", ToGeneration: stale.Generation + 1, Scope: FragmentScope(key)}
	if !reflect.DeepEqual(rec, want) {
		t.Fatalf("ownership receipt\n got %+v\nwant %+v", rec, want)
	}
	h.wantCoherent()
	h.wantClass(from, s, DelegatedOut)
	h.wantClass(to, s, DelegatedIn)
	if len(l.Fragments) == 0 {
		t.Fatal("no fragments recorded for a bundle-scoped session")
	}
	for _, f := range l.Fragments {
		if f.Owner != "delegated-owner" {
			t.Fatalf("fragment %+v did not move with the owner", f)
		}
	}
	// The delegated owner no longer has full-session authority but keeps its
	// delegated boundary.
	if l.Scope.Kind == ScopeSession {
		t.Fatal("fragment-scoped owner still holds a full-session capability")
	}
	if !l.RoutingBoundary.IsAllowedBy(l.Scope) {
		t.Fatal("delegated owner should retain its delegated boundary")
	}
	if BoundaryForScope(SessionScope()).IsAllowedBy(l.Scope) {
		t.Fatal("a fragment scope must not cover the whole session")
	}
	// The stale owner is rejected.
	h.reject(rcHandoff(s, stale.OwnerLabel, stale.Generation, "thief", to, from), CodeStaleOwner)
	h.reject(rcHandoff(s, "delegated-owner", stale.Generation, "thief", to, from), CodeStaleOwner)
	h.reject(rcHandoff(s, stale.OwnerLabel, 2, "thief", to, from), CodeStaleOwner)
	// The audit fact landed with the handoff.
	facts := h.s.Facts(0, 0)
	if len(facts) != 1 || facts[0].BundleID != rcEpochBundle || facts[0].From != from || facts[0].To != to ||
		r.Outcome.FactSeq != 1 || facts[0].Index != h.idx-3 {
		t.Fatalf("facts %+v", facts)
	}
}

func TestUpstreamActiveSessionHandoffRollsBackOwnerAndFragmentsOnFailure(t *testing.T) {
	// Upstream moves the owner, fails at the gate, then rolls back with a
	// second transfer (generation +2, scope = routing boundary scope). In
	// reconf the handoff is one command: nothing changes at all.
	from, to, s := rcAuth(1), rcAuth(3), rcSess(78)
	h := rcLive(t, from, s, "owner-a")
	h.ok(&SetCapabilities{Reconfiguration: false})
	original := *h.live(s)

	err := h.reject(rcHandoff(s, "owner-a", 1, "delegated-owner", from, to), CodeMissingCapability)
	if want := "live delegation failed for session " + s.String() + ": " + gatePrefixDelegation; !strings.HasPrefix(err.Message, want) {
		t.Fatalf("message %q, want prefix %q", err.Message, want)
	}
	l := h.live(s)
	if !reflect.DeepEqual(*l, original) {
		t.Fatalf("live session changed:\n got %+v\nwant %+v", *l, original)
	}
	if l.OwnerLabel != "owner-a" || l.Generation != 1 || !l.Scope.Equal(SessionScope()) {
		t.Fatalf("owner %+v", l)
	}
	for _, f := range l.Fragments {
		if f.Owner != "owner-a" {
			t.Fatalf("fragment %+v moved", f)
		}
	}
	if !l.RoutingBoundary.IsAllowedBy(l.Scope) {
		t.Fatal("original owner must still cover its routing boundary")
	}
	if _, ok := h.s.Footprint(to); ok {
		t.Fatal("failed handoff created delegated-in ownership")
	}
	h.wantClass(from, s, Native)
	// The generation did not move, so the original capability still works.
	h.ok(&SetCapabilities{Reconfiguration: true})
	r := h.ok(rcHandoff(s, "owner-a", 1, "delegated-owner", from, to))
	if r.Session.Generation != 2 || r.Outcome.Witness.OwnershipReceipt.FromGeneration != 1 {
		t.Fatalf("handoff after the failure: %+v", r.Session)
	}
}

func TestLiveOpenSession(t *testing.T) {
	h := rcNew(t)
	s1, s2 := rcSess(1), rcSess(2)
	r := h.ok(&OpenSession{Session: s1, OwnerLabel: "owner-a"})
	want := &LiveSession{Session: s1, OwnerLabel: "owner-a", Generation: 1, Scope: SessionScope(),
		RoutingBoundary: BoundaryForScope(SessionScope())}
	if !reflect.DeepEqual(r.Session, want) {
		t.Fatalf("open without bundle\n got %+v\nwant %+v", r.Session, want)
	}
	r = h.ok(&OpenSession{Session: s2, OwnerLabel: "owner-b", BundleID: "guardian_handoff"})
	b, _ := h.s.Bundle("guardian_handoff")
	want = &LiveSession{Session: s2, OwnerLabel: "owner-b", Generation: 1, Scope: SessionScope(),
		RoutingBoundary: BoundaryForBundle(b), Fragments: []FragmentOwner{{Key: "bundle:guardian_handoff", Owner: "owner-b"}}}
	if !reflect.DeepEqual(r.Session, want) {
		t.Fatalf("open with bundle\n got %+v\nwant %+v", r.Session, want)
	}
	if got, _ := h.s.LiveSession(s2); !reflect.DeepEqual(got, want) {
		t.Fatalf("stored %+v", got)
	}
	if h.s.Stats().LiveSessions != 2 {
		t.Fatal("live session count")
	}
	// Opening claims no footprint and writes no fact.
	if len(h.s.Authorities()) != 0 || h.s.LastFactSeq() != 0 {
		t.Fatal("open touched footprints or facts")
	}
	// Not gated.
	h.ok(&SetCapabilities{Reconfiguration: false})
	h.ok(&OpenSession{Session: rcSess(3), OwnerLabel: "owner-c"})
	if _, ok := h.s.LiveSession(rcSess(4)); ok {
		t.Fatal("unknown live session found")
	}
}

func TestLiveReopenSameLabelReturnsExisting(t *testing.T) {
	from, to, s := rcAuth(1), rcAuth(2), rcSess(1)
	h := rcLive(t, from, s, "owner-a")
	first := h.live(s)
	before := h.s.Clone()
	// A different bundle on reopen is ignored: the existing record comes back.
	r := h.ok(&OpenSession{Session: s, OwnerLabel: "owner-a"})
	if !reflect.DeepEqual(r.Session, first) {
		t.Fatalf("reopen %+v, want %+v", r.Session, first)
	}
	rcAssertUnchanged(t, before, h.s)
	// After a handoff, the new label reopens at the current generation.
	h.ok(rcHandoff(s, "owner-a", 1, "owner-b", from, to))
	r = h.ok(&OpenSession{Session: s, OwnerLabel: "owner-b", BundleID: rcEpochBundle})
	if r.Session.Generation != 2 || r.Session.OwnerLabel != "owner-b" || !r.Session.Scope.Equal(FragmentScope("bundle:"+rcEpochBundle)) {
		t.Fatalf("reopen after handoff %+v", r.Session)
	}
	// The previous label can no longer claim it.
	h.rejectMsg(&OpenSession{Session: s, OwnerLabel: "owner-a"}, CodeOwnerConflict,
		"session "+s.String()+" is already owned by `owner-b`; `owner-a` cannot claim it")
}

func TestLiveOpenDifferentLabelOwnerConflict(t *testing.T) {
	h := rcLive(t, rcAuth(1), rcSess(1), "owner-a")
	h.rejectMsg(&OpenSession{Session: rcSess(1), OwnerLabel: "owner-b", BundleID: rcEpochBundle}, CodeOwnerConflict,
		"session "+rcSess(1).String()+" is already owned by `owner-a`; `owner-b` cannot claim it")
	// Unknown bundle on a fresh open is bundle_not_found and opens nothing.
	h.rejectMsg(&OpenSession{Session: rcSess(2), OwnerLabel: "owner-b", BundleID: "ghost"}, CodeBundleNotFound, "bundle not found: ghost")
	if _, ok := h.s.LiveSession(rcSess(2)); ok {
		t.Fatal("rejected open created a session")
	}
}

func TestLiveHandoffStaleOwner(t *testing.T) {
	from, to, s := rcAuth(1), rcAuth(2), rcSess(1)
	h := rcLive(t, from, s, "owner-a")
	msg := func(label string, gen uint64, curLabel string, curGen uint64) string {
		return "failed to transfer live session owner for session " + s.String() + ": stale owner `" + label + "` at generation " +
			strconv.FormatUint(gen, 10) + " (current owner `" + curLabel + "` at generation " + strconv.FormatUint(curGen, 10) + ")"
	}
	h.rejectMsg(rcHandoff(s, "owner-x", 1, "n", from, to), CodeStaleOwner, msg("owner-x", 1, "owner-a", 1))
	h.rejectMsg(rcHandoff(s, "owner-a", 0, "n", from, to), CodeStaleOwner, msg("owner-a", 0, "owner-a", 1))
	h.rejectMsg(rcHandoff(s, "owner-a", 2, "n", from, to), CodeStaleOwner, msg("owner-a", 2, "owner-a", 1))
	h.ok(rcHandoff(s, "owner-a", 1, "owner-b", from, to))
	h.rejectMsg(rcHandoff(s, "owner-a", 1, "n", to, from), CodeStaleOwner, msg("owner-a", 1, "owner-b", 2))
	h.rejectMsg(rcHandoff(s, "owner-b", 1, "n", to, from), CodeStaleOwner, msg("owner-b", 1, "owner-b", 2))
	// The current owner hands back: generation 3; chain clearing at work.
	r := h.ok(rcHandoff(s, "owner-b", 2, "owner-c", to, from))
	if r.Session.Generation != 3 || r.Outcome.Witness.OwnershipReceipt.FromOwner != "owner-b" {
		t.Fatalf("second handoff %+v", r.Session)
	}
	h.wantClass(from, s, DelegatedIn)
	h.wantClass(to, s, DelegatedOut)
	h.wantCoherent()
	if h.s.LastFactSeq() != 2 {
		t.Fatal("facts")
	}
}

func TestLiveHandoffSessionMismatchAndNotFound(t *testing.T) {
	from, to, s := rcAuth(1), rcAuth(2), rcSess(1)
	h := rcLive(t, from, s, "owner-a")
	op := rcHandoff(s, "owner-a", 1, "n", from, to)
	op.Transfer.Session = rcSess(2)
	h.rejectMsg(op, CodeSessionMismatch,
		"active session handoff target "+s.String()+" does not match delegation session "+rcSess(2).String())
	// Mismatch is checked before the live session lookup.
	op = rcHandoff(rcSess(9), "owner-a", 1, "n", from, to)
	op.Transfer.Session = s
	h.reject(op, CodeSessionMismatch)
	h.rejectMsg(rcHandoff(rcSess(9), "owner-a", 1, "n", from, to), CodeSessionNotFound,
		"live session "+rcSess(9).String()+" is not open")
}

func TestLiveHandoffGateOffChangesNothing(t *testing.T) {
	from, to, s := rcAuth(1), rcAuth(2), rcSess(1)
	h := rcLive(t, from, s, "owner-a")
	h.ok(&SetCapabilities{Reconfiguration: false})
	before := *h.live(s)
	h.rejectMsg(rcHandoff(s, "owner-a", 1, "n", from, to), CodeMissingCapability,
		"live delegation failed for session "+s.String()+": "+rcGateMsg("session delegation"))
	if l := h.live(s); !reflect.DeepEqual(*l, before) || l.Generation != 1 {
		t.Fatalf("live session changed: %+v", l)
	}
	// A stale owner is reported before the gate, as upstream's transfer
	// comes before delegate_session.
	h.reject(rcHandoff(s, "owner-x", 1, "n", from, to), CodeStaleOwner)
}

func TestLiveHandoffBoundaryErrors(t *testing.T) {
	from, to, s := rcAuth(1), rcAuth(2), rcSess(1)
	h := rcLive(t, from, s, "owner-a")
	op := rcHandoff(s, "owner-a", 1, "n", from, to)
	op.Transfer.BundleID = "ghost"
	h.rejectMsg(op, CodeBundleNotRegistered, "live delegation failed for session "+s.String()+": delegation requires pre-registered bundle `ghost`")
	// Boundary errors come before the owner check.
	op.OwnerLabel = "owner-x"
	h.reject(op, CodeBundleNotRegistered)

	op = rcHandoff(s, "owner-a", 1, "n", from, to)
	wrong := FragmentScope("bundle:wrong-bundle")
	op.Transfer.Scope = &wrong
	err := h.reject(op, CodeInvalidLinkBoundary)
	if !strings.HasPrefix(err.Message, "live delegation failed for session "+s.String()+": delegation for session "+s.String()+
		" rejected link boundary for bundle `"+rcEpochBundle+"`: link boundary scope") {
		t.Fatalf("message %q", err.Message)
	}
	// A custom boundary becomes the routing boundary and its scope the
	// owner's scope.
	custom := LinkBoundary{BundleID: rcEpochBundle, FragmentKeys: []string{"bundle:" + rcEpochBundle, "protocol:aura.sync.epoch_rotation"},
		Scope: FragmentScope("bundle:"+rcEpochBundle, "protocol:aura.sync.epoch_rotation")}
	op = rcHandoff(s, "owner-a", 1, "n", from, to)
	op.Transfer.LinkBoundary = &custom
	r := h.ok(op)
	if !r.Session.RoutingBoundary.equal(custom) || !r.Session.Scope.Equal(custom.Scope) || !r.Outcome.Witness.OwnershipReceipt.Scope.Equal(custom.Scope) {
		t.Fatalf("custom boundary handoff %+v", r.Session)
	}
	// Fragment records keep their keys and move to the new owner.
	if !reflect.DeepEqual(r.Session.Fragments, []FragmentOwner{{Key: "bundle:" + rcEpochBundle, Owner: "n"}}) {
		t.Fatalf("fragments %+v", r.Session.Fragments)
	}
}

func TestLiveHandoffDelegationFailureChangesNothing(t *testing.T) {
	from, to, s := rcAuth(1), rcAuth(2), rcSess(1)
	h := rcLive(t, from, s, "owner-a")
	// Source does not own the session.
	h.rejectMsg(rcHandoff(s, "owner-a", 1, "n", to, from), CodeSessionNotOwned,
		"live delegation failed for session "+s.String()+": "+notOwnedMsg(s, to))
	// Coherence.
	h.native(rcAuth(3), s)
	h.rejectMsg(rcHandoff(s, "owner-a", 1, "n", from, to), CodeCoherenceViolation,
		"live delegation failed for session "+s.String()+": "+coherenceMsg(s, vActive(s, 2)))
	// Upgrade.
	h.ok(&RemoveFootprint{Authority: rcAuth(3), Session: s})
	op := rcHandoff(s, "owner-a", 1, "n", from, to)
	req := rcUpgradeRequest("u")
	op.Transfer.UpgradeRequest = &req
	h.rejectMsg(op, CodeInvalidRuntimeUpgrade, "live delegation failed for session "+s.String()+": "+
		rcUpgradeMsg(rcEpochBundle, "active membership must be seeded before executing a runtime upgrade"))
	if l := h.live(s); l.Generation != 1 || l.OwnerLabel != "owner-a" {
		t.Fatalf("live session %+v", l)
	}
	// With the bundle seeded the same handoff carries the upgrade.
	h.ok(&SeedMembership{BundleID: rcEpochBundle, Members: []string{"member-a", "member-b"}})
	r := h.ok(op)
	w := r.Outcome.Witness
	if w.OwnershipReceipt == nil || w.UpgradeExecution == nil || w.UpgradeSnapshot.Epoch != 1 ||
		!slices.Equal(w.UpgradeSnapshot.ActiveMembers, []string{"member-b", "member-c"}) {
		t.Fatalf("witness %+v", w)
	}
}

func TestLiveHandoffWithoutFragments(t *testing.T) {
	from, to, s := rcAuth(1), rcAuth(2), rcSess(1)
	h := rcNew(t)
	h.native(from, s)
	h.ok(&OpenSession{Session: s, OwnerLabel: "owner-a"})
	r := h.ok(rcHandoff(s, "owner-a", 1, "owner-b", from, to))
	if len(r.Session.Fragments) != 0 || r.Session.RoutingBoundary.BundleID != rcEpochBundle {
		t.Fatalf("session %+v", r.Session)
	}
}

func TestLiveHandoffGenerationSaturates(t *testing.T) {
	from, to, s := rcAuth(1), rcAuth(2), rcSess(1)
	h := rcLive(t, from, s, "owner-a")
	top := *h.live(s)
	top.Generation = ^uint64(0)
	h.s.live.ReplaceOrInsert(&top)
	r := h.ok(rcHandoff(s, "owner-a", ^uint64(0), "owner-b", from, to))
	if r.Session.Generation != ^uint64(0) || r.Outcome.Witness.OwnershipReceipt.ToGeneration != ^uint64(0) {
		t.Fatalf("saturated handoff %+v", r.Session)
	}
}
