package fsm

import (
	"fmt"
	"slices"
)

// Enumerations of a runtime-upgrade request's compatibility (telltale's
// RuntimeUpgradeCompatibility). Zero is never valid, so a missing field in a
// decoded command is caught by validation.
type (
	PendingEffectTreatment         uint8
	CanonicalPublicationContinuity uint8
	ExecutionConstraint            uint8
	Phase                          uint8
)

const (
	PreservePending   PendingEffectTreatment = 1
	InvalidateBlocked PendingEffectTreatment = 2

	PreserveCanonicalTruth CanonicalPublicationContinuity = 1
	ReissueCanonicalTruth  CanonicalPublicationContinuity = 2

	PreserveBundleProfile   ExecutionConstraint = 1
	MixedDeterminismAllowed ExecutionConstraint = 2

	PhaseStaged           Phase = 1
	PhaseAdmitted         Phase = 2
	PhaseCommittedCutover Phase = 3
	PhaseRolledBack       Phase = 4
	PhaseFailed           Phase = 5
)

func (p PendingEffectTreatment) String() string {
	return enumName(uint8(p), "preserve_pending", "invalidate_blocked")
}

func (c CanonicalPublicationContinuity) String() string {
	return enumName(uint8(c), "preserve_canonical_truth", "reissue_canonical_truth")
}

func (c ExecutionConstraint) String() string {
	return enumName(uint8(c), "preserve_bundle_profile", "mixed_determinism_allowed")
}

func (p Phase) String() string {
	return enumName(uint8(p), "staged", "admitted", "committed_cutover", "rolled_back", "failed")
}

func enumName(v uint8, names ...string) string {
	if v == 0 || int(v) > len(names) {
		return "invalid"
	}
	return names[v-1]
}

// ParsePendingEffectTreatment, ParseCanonicalPublicationContinuity and
// ParseExecutionConstraint read the API's snake_case spellings.
func ParsePendingEffectTreatment(s string) (PendingEffectTreatment, bool) {
	v := enumValue(s, "preserve_pending", "invalidate_blocked")
	return PendingEffectTreatment(v), v != 0
}

func ParseCanonicalPublicationContinuity(s string) (CanonicalPublicationContinuity, bool) {
	v := enumValue(s, "preserve_canonical_truth", "reissue_canonical_truth")
	return CanonicalPublicationContinuity(v), v != 0
}

func ParseExecutionConstraint(s string) (ExecutionConstraint, bool) {
	v := enumValue(s, "preserve_bundle_profile", "mixed_determinism_allowed")
	return ExecutionConstraint(v), v != 0
}

func enumValue(s string, names ...string) uint8 {
	for i, n := range names {
		if s == n {
			return uint8(i + 1)
		}
	}
	return 0
}

// Compatibility is what an upgrade promises to keep across the cutover.
type Compatibility struct {
	OwnershipContinuityRequired    bool
	PendingEffectTreatment         PendingEffectTreatment
	CanonicalPublicationContinuity CanonicalPublicationContinuity
	ExecutionConstraint            ExecutionConstraint // recorded, never checked (as upstream)
}

// PlanStep is one membership step of a reconfiguration plan. Upstream's
// placements are ignored by Aura and not carried.
type PlanStep struct {
	StepID      string
	NextMembers []string
}

// Plan is an ordered list of membership steps.
type Plan struct {
	PlanID string
	Steps  []PlanStep
}

// UpgradeRequest is a runtime-upgrade request (telltale's
// RuntimeUpgradeRequest).
type UpgradeRequest struct {
	UpgradeID                 string
	Plan                      Plan
	Compatibility             Compatibility
	CarriedPublicationIDs     []string
	InvalidatedPublicationIDs []string
	CarriedObligationIDs      []string
	InvalidatedObligationIDs  []string
}

// Artifact is one phase record of an upgrade execution.
type Artifact struct {
	UpgradeID                 string
	Phase                     Phase
	PreviousMembers           []string
	NextMembers               []string
	Compatibility             Compatibility
	CarriedPublicationIDs     []string
	InvalidatedPublicationIDs []string
	CarriedObligationIDs      []string
	InvalidatedObligationIDs  []string
	Reason                    string // empty when there is none
}

// Execution is the record of one executed upgrade.
type Execution struct {
	ArtifactID   string // the bundle id
	UpgradeID    string
	Artifacts    []Artifact
	FinalMembers []string
}

// MaxUpgradeHistory bounds the executions a bundle's snapshot keeps: the
// oldest is dropped when a new one would exceed it. Upstream keeps them all;
// a replicated state cannot grow without bound from one bundle, and every
// replica drops the same one. Epoch still counts every execution since the
// last seed (domain invariant I13 reads "executions since the last seed").
const MaxUpgradeHistory = 256

// UpgradeSnapshot is a bundle's runtime-upgrade membership state (telltale's
// ReconfigurationRuntimeSnapshot). Upstream's history and plan_executions are
// only ever cleared by Aura, so they are always empty and not stored.
// A stored snapshot is immutable; changes store a new value.
type UpgradeSnapshot struct {
	Epoch         uint64
	ActiveMembers []string // sorted set
	Executions    []Execution
}

// canonicalMembers deduplicates and sorts by bytes, as a BTreeSet does.
func canonicalMembers(in []string) []string { return sortedSet(in) }

func membersOverlap(a, b []string) bool {
	for _, m := range a {
		if _, ok := slices.BinarySearch(b, m); ok {
			return true
		}
	}
	return false
}

func hasCommon(a, b []string) bool {
	set := make(map[string]struct{}, len(a))
	for _, x := range a {
		set[x] = struct{}{}
	}
	for _, x := range b {
		if _, ok := set[x]; ok {
			return true
		}
	}
	return false
}

// checkUpgrade validates req against the bundle's seeded membership and
// returns the first reason it fails, or "" (domain 3.8 step 4, in order).
func checkUpgrade(active []string, req *UpgradeRequest) string {
	id := req.UpgradeID
	switch {
	case len(req.Plan.Steps) == 0:
		return fmt.Sprintf("runtime upgrade `%s` must contain at least one plan step", id)
	case hasCommon(req.CarriedPublicationIDs, req.InvalidatedPublicationIDs):
		return fmt.Sprintf("runtime upgrade `%s` may not both carry and invalidate the same canonical publication", id)
	case hasCommon(req.CarriedObligationIDs, req.InvalidatedObligationIDs):
		return fmt.Sprintf("runtime upgrade `%s` may not both carry and invalidate the same obligation", id)
	case req.Compatibility.OwnershipContinuityRequired &&
		!membersOverlap(active, canonicalMembers(req.Plan.Steps[0].NextMembers)):
		return fmt.Sprintf("runtime upgrade `%s` requires ownership continuity across the first cutover", id)
	case req.Compatibility.PendingEffectTreatment == InvalidateBlocked &&
		len(req.CarriedObligationIDs)+len(req.InvalidatedObligationIDs) == 0:
		return fmt.Sprintf("runtime upgrade `%s` must make pending-effect treatment explicit", id)
	case req.Compatibility.CanonicalPublicationContinuity == PreserveCanonicalTruth &&
		len(req.InvalidatedPublicationIDs) > 0:
		return fmt.Sprintf("runtime upgrade `%s` may not invalidate canonical publications when continuity is required", id)
	}
	for _, step := range req.Plan.Steps {
		if len(step.NextMembers) == 0 {
			return fmt.Sprintf("runtime upgrade `%s` step `%s` must preserve a non-empty membership set", id, step.StepID)
		}
	}
	return ""
}

// planUpgrade computes, without changing anything, the snapshot that a
// successful execution of req on bundleID leaves behind, or the rejection.
// Upstream records a failed attempt in the snapshot; in reconf a rejected
// command changes nothing (domain 9.1), so a failure is only reported.
func planUpgrade(bundleID string, snap *UpgradeSnapshot, req *UpgradeRequest) (*UpgradeSnapshot, *Execution, *Error) {
	if len(snap.ActiveMembers) == 0 {
		return nil, nil, invalidUpgrade(bundleID, "active membership must be seeded before executing a runtime upgrade")
	}
	if reason := checkUpgrade(snap.ActiveMembers, req); reason != "" {
		return nil, nil, invalidUpgrade(bundleID, reason)
	}
	initial := snap.ActiveMembers
	target := canonicalMembers(req.Plan.Steps[len(req.Plan.Steps)-1].NextMembers)
	artifact := func(p Phase) Artifact {
		return Artifact{
			UpgradeID:                 req.UpgradeID,
			Phase:                     p,
			PreviousMembers:           initial,
			NextMembers:               target,
			Compatibility:             req.Compatibility,
			CarriedPublicationIDs:     req.CarriedPublicationIDs,
			InvalidatedPublicationIDs: req.InvalidatedPublicationIDs,
			CarriedObligationIDs:      req.CarriedObligationIDs,
			InvalidatedObligationIDs:  req.InvalidatedObligationIDs,
		}
	}
	exec := Execution{
		ArtifactID:   bundleID,
		UpgradeID:    req.UpgradeID,
		Artifacts:    []Artifact{artifact(PhaseStaged), artifact(PhaseAdmitted), artifact(PhaseCommittedCutover)},
		FinalMembers: target,
	}
	// Copy the executions: the old snapshot may be shared with an FSM
	// snapshot being persisted.
	kept := snap.Executions
	if len(kept) >= MaxUpgradeHistory {
		kept = kept[len(kept)-MaxUpgradeHistory+1:]
	}
	execs := make([]Execution, len(kept), len(kept)+1)
	copy(execs, kept)
	execs = append(execs, exec)
	next := &UpgradeSnapshot{Epoch: snap.Epoch + 1, ActiveMembers: target, Executions: execs}
	return next, &exec, nil
}

func invalidUpgrade(bundleID, reason string) *Error {
	return errorf(CodeInvalidRuntimeUpgrade, "runtime upgrade for bundle `%s` failed: runtime upgrade rejected for bundle `%s`: %s",
		bundleID, bundleID, reason)
}
