package fsm

import (
	"fmt"
	"unicode/utf8"
)

// Input limits. The API checks them first with the same functions; the FSM
// checks them again because a command read from the log must be judged the
// same way on every replica whatever wrote it.
const (
	MaxNameBytes      = 256  // ids, labels, member names
	MaxListItems      = 4096 // any list in a command
	MaxRequestIDBytes = 128
	MaxBundleSessions = 100000 // sessions in a registered bundle's footprint
)

func invalidf(field, format string, args ...any) *Error {
	return errorf(CodeInvalidArgument, "%s: %s", field, fmt.Sprintf(format, args...))
}

// checkName rejects empty, oversized, non-UTF-8 or control-character names.
func checkName(field, v string) *Error {
	switch {
	case v == "":
		return invalidf(field, "must not be empty")
	case len(v) > MaxNameBytes:
		return invalidf(field, "is %d bytes; the limit is %d", len(v), MaxNameBytes)
	case !utf8.ValidString(v):
		return invalidf(field, "is not valid UTF-8")
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return invalidf(field, "contains a control character")
		}
	}
	return nil
}

// checkNameAt is checkName(prefix+name, v) that joins the field name only
// for a rejection.
func checkNameAt(prefix, name, v string) *Error {
	if checkName(name, v) == nil {
		return nil
	}
	return checkName(prefix+name, v)
}

func checkNames(field string, vs []string, allowEmptyList bool) *Error {
	if len(vs) > MaxListItems {
		return invalidf(field, "has %d items; the limit is %d", len(vs), MaxListItems)
	}
	if !allowEmptyList && len(vs) == 0 {
		return invalidf(field, "must not be empty")
	}
	for i, v := range vs {
		if err := checkName(fmt.Sprintf("%s[%d]", field, i), v); err != nil {
			return err
		}
	}
	return nil
}

// CheckRequestID validates a client request id.
func CheckRequestID(id string) *Error {
	if len(id) > MaxRequestIDBytes {
		return invalidf("request_id", "is %d bytes; the limit is %d", len(id), MaxRequestIDBytes)
	}
	if id != "" {
		return checkName("request_id", id)
	}
	return nil
}

func checkScope(field string, s Scope) *Error {
	switch s.Kind {
	case ScopeSession:
		if len(s.Fragments) != 0 {
			return invalidf(field, "a session scope has no fragments")
		}
	case ScopeFragments:
		if err := checkNames(field+".fragments", s.Fragments, true); err != nil {
			return err
		}
	default:
		return invalidf(field, "must be \"session\" or {\"fragments\": [...]}")
	}
	return nil
}

func checkBoundary(field string, b *LinkBoundary) *Error {
	if b.BundleID != "" {
		if err := checkName(field+".bundle_id", b.BundleID); err != nil {
			return err
		}
	}
	if err := checkNames(field+".protocol_ids", b.ProtocolIDs, true); err != nil {
		return err
	}
	if err := checkNames(field+".fragment_keys", b.FragmentKeys, true); err != nil {
		return err
	}
	return checkScope(field+".capability_scope", b.Scope)
}

func checkFootprint(field string, f *Footprint) *Error {
	n := len(f.Native) + len(f.DelegatedIn) + len(f.DelegatedOut)
	if n > MaxBundleSessions {
		return invalidf(field, "holds %d sessions; the limit is %d", n, MaxBundleSessions)
	}
	seen := make(map[SessionID]string, n)
	for _, l := range []struct {
		name string
		ids  []SessionID
	}{{"native_sessions", f.Native}, {"delegated_in_sessions", f.DelegatedIn}, {"delegated_out_sessions", f.DelegatedOut}} {
		for _, s := range l.ids {
			if prev, dup := seen[s]; dup {
				return invalidf(field+"."+l.name, "session %s is also in %s; a session has one class per footprint", s, prev)
			}
			seen[s] = l.name
		}
	}
	return nil
}

func checkUpgradeRequest(field string, r *UpgradeRequest) *Error {
	if err := checkName(field+".upgrade_id", r.UpgradeID); err != nil {
		return err
	}
	if r.Plan.PlanID != "" {
		if err := checkName(field+".plan.plan_id", r.Plan.PlanID); err != nil {
			return err
		}
	}
	if len(r.Plan.Steps) > MaxListItems {
		return invalidf(field+".plan.steps", "has %d items; the limit is %d", len(r.Plan.Steps), MaxListItems)
	}
	for i, st := range r.Plan.Steps {
		f := fmt.Sprintf("%s.plan.steps[%d]", field, i)
		if err := checkName(f+".step_id", st.StepID); err != nil {
			return err
		}
		// An empty next_members list is a domain rejection with upstream's
		// message, not an input error.
		if err := checkNames(f+".next_members", st.NextMembers, true); err != nil {
			return err
		}
	}
	c := r.Compatibility
	if c.PendingEffectTreatment.String() == "invalid" {
		return invalidf(field+".compatibility.pending_effect_treatment", "must be preserve_pending or invalidate_blocked")
	}
	if c.CanonicalPublicationContinuity.String() == "invalid" {
		return invalidf(field+".compatibility.canonical_publication_continuity", "must be preserve_canonical_truth or reissue_canonical_truth")
	}
	if c.ExecutionConstraint.String() == "invalid" {
		return invalidf(field+".compatibility.execution_constraint", "must be preserve_bundle_profile or mixed_determinism_allowed")
	}
	for _, l := range []struct {
		name string
		ids  []string
	}{
		{"carried_publication_ids", r.CarriedPublicationIDs},
		{"invalidated_publication_ids", r.InvalidatedPublicationIDs},
		{"carried_obligation_ids", r.CarriedObligationIDs},
		{"invalidated_obligation_ids", r.InvalidatedObligationIDs},
	} {
		if err := checkNames(field+"."+l.name, l.ids, true); err != nil {
			return err
		}
	}
	return nil
}

func checkDelegation(field string, d *Delegation) *Error {
	if err := checkNameAt(field, "bundle_id", d.BundleID); err != nil {
		return err
	}
	if d.LinkBoundary != nil {
		if err := checkBoundary(field+"link_boundary", d.LinkBoundary); err != nil {
			return err
		}
	}
	if d.Scope != nil {
		if err := checkScope(field+"capability_scope", *d.Scope); err != nil {
			return err
		}
	}
	if d.UpgradeRequest != nil {
		if err := checkUpgradeRequest(field+"runtime_upgrade_request", d.UpgradeRequest); err != nil {
			return err
		}
	}
	return nil
}

// Check validates an operation's input shape (no state is consulted). The
// API calls it before proposing, so bad input is refused without a log
// entry; Apply calls it again.
func Check(op Op) *Error {
	switch op := op.(type) {
	case *RegisterBundle:
		b := &op.Bundle
		if err := checkName("bundle_id", b.ID); err != nil {
			return err
		}
		if err := checkNames("protocol_ids", b.ProtocolIDs, true); err != nil {
			return err
		}
		if err := checkNames("exports", b.Exports, true); err != nil {
			return err
		}
		if err := checkNames("imports", b.Imports, true); err != nil {
			return err
		}
		return checkFootprint("session_footprint", &b.Footprint)
	case *LinkBundles:
		if err := checkName("left", op.Left); err != nil {
			return err
		}
		if err := checkName("right", op.Right); err != nil {
			return err
		}
		return checkName("linked_id", op.LinkedID)
	case *ExtendFootprint:
		if op.Class.String() == "invalid" {
			return invalidf("class", "must be native, delegated_in or delegated_out")
		}
	case *RemoveFootprint, *SetCapabilities, *ConsistencyCheck:
	case *Delegate:
		return checkDelegation("", &op.Delegation)
	case *OpenSession:
		if err := checkName("owner_label", op.OwnerLabel); err != nil {
			return err
		}
		if op.BundleID != "" {
			return checkName("bundle_id", op.BundleID)
		}
	case *Handoff:
		if err := checkName("owner_label", op.OwnerLabel); err != nil {
			return err
		}
		if err := checkName("next_owner_label", op.NextOwnerLabel); err != nil {
			return err
		}
		return checkDelegation("transfer.", &op.Transfer)
	case *SeedMembership:
		if err := checkName("bundle_id", op.BundleID); err != nil {
			return err
		}
		// An empty member list is the domain's invalid_runtime_upgrade.
		return checkNames("members", op.Members, true)
	case *ExecuteUpgrade:
		if err := checkName("bundle_id", op.BundleID); err != nil {
			return err
		}
		return checkUpgradeRequest("runtime_upgrade_request", &op.Request)
	case *SetRetention:
		return checkRetention(op)
	case *AckConsumer:
		return CheckConsumerName(op.Name)
	case *DropConsumer:
		return CheckConsumerName(op.Name)
	case nil:
		return errorf(CodeUnknownCommand, "command has no operation")
	default:
		return errorf(CodeUnknownCommand, "unknown operation %T", op)
	}
	return nil
}
