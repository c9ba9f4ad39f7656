// Package transport is everything reconf puts on the wire: the HTTP API v1
// (server and Go client), leader forwarding, and the Raft stream layer
// multiplexed with forwarding on the Raft port.
package transport

import (
	"fmt"

	"github.com/reconf/reconf/fsm"
)

// This file holds the JSON shapes of API v1 and their conversion to and from
// the FSM's types. Field names follow domain.md's snake_case names. Request
// ids and identifiers arrive as strings and are parsed here so that every
// error names the field it is about.

// ErrorBody is every error response: {"error": {"code", "message"}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the typed error: a stable code and a message for people.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Leader  string `json:"leader,omitempty"` // HTTP address of the leader, when known
	// FirstSeq, with facts_trimmed: the oldest retained fact, to resume from.
	FirstSeq uint64 `json:"first_seq,omitempty"`
}

// Codes the transport adds to the FSM's (fsm.Codes).
const (
	CodeUnavailable = "unavailable" // no leader, not ready, shutting down: retry
	// CodeReplicaHalted: this node stopped applying the Raft log (a damaged
	// or unreadable entry); it serves nothing until replaced. Ask another.
	CodeReplicaHalted  = "replica_halted"
	CodeUnknownOutcome = "unknown_outcome" // may or may not have applied: retry with the same request_id
	CodeNotFound       = "not_found"       // no such route
	CodeInternal       = "internal"
	CodeUnauthorized   = "unauthorized"
	CodeForbidden      = "forbidden"
)

// FootprintJSON is a session footprint.
type FootprintJSON struct {
	SchemaVersion        string   `json:"schema_version"`
	NativeSessions       []string `json:"native_sessions"`
	DelegatedInSessions  []string `json:"delegated_in_sessions"`
	DelegatedOutSessions []string `json:"delegated_out_sessions"`
}

// AuthorityFootprint is GET /v1/footprints/{authority}.
type AuthorityFootprint struct {
	AuthorityID string `json:"authority_id"`
	FootprintJSON
}

// BundleJSON is a registered bundle.
type BundleJSON struct {
	BundleID         string         `json:"bundle_id"`
	SchemaVersion    string         `json:"schema_version"`
	ProtocolIDs      []string       `json:"protocol_ids"`
	Exports          []string       `json:"exports"`
	Imports          []string       `json:"imports"`
	SessionFootprint *FootprintJSON `json:"session_footprint"`
}

// RegisterBundleRequest is POST /v1/bundles.
type RegisterBundleRequest struct {
	BundleID         string         `json:"bundle_id"`
	ProtocolIDs      []string       `json:"protocol_ids"`
	Exports          []string       `json:"exports"`
	Imports          []string       `json:"imports"`
	SessionFootprint *FootprintJSON `json:"session_footprint,omitempty"`
	RequestID        string         `json:"request_id,omitempty"`
}

// LinkRequest is POST /v1/bundles/link.
type LinkRequest struct {
	Left      string `json:"left"`
	Right     string `json:"right"`
	LinkedID  string `json:"linked_id"`
	RequestID string `json:"request_id,omitempty"`
}

// BundleResponse answers register and link.
type BundleResponse struct {
	Bundle BundleJSON `json:"bundle"`
	Index  uint64     `json:"index"`
}

// FootprintAddRequest is POST /v1/footprints/{authority}/sessions.
type FootprintAddRequest struct {
	SessionID string `json:"session_id"`
	Class     string `json:"class,omitempty"` // native (default), delegated_in, delegated_out
	RequestID string `json:"request_id,omitempty"`
}

// IndexResponse answers writes that return nothing but where they landed.
type IndexResponse struct {
	Index   uint64 `json:"index"`
	Deduped bool   `json:"deduped,omitempty"`
}

// Scope is "session" or {"fragments": [...]}; see ScopeJSON.
type ScopeJSON struct {
	Session   bool
	Fragments []string
}

// LinkBoundaryJSON is a link boundary.
type LinkBoundaryJSON struct {
	BundleID        *string   `json:"bundle_id"`
	ProtocolIDs     []string  `json:"protocol_ids"`
	FragmentKeys    []string  `json:"fragment_keys"`
	CapabilityScope ScopeJSON `json:"capability_scope"`
}

// CompatibilityJSON is a runtime upgrade's compatibility promise.
type CompatibilityJSON struct {
	OwnershipContinuityRequired    bool   `json:"ownership_continuity_required"`
	PendingEffectTreatment         string `json:"pending_effect_treatment"`
	CanonicalPublicationContinuity string `json:"canonical_publication_continuity"`
	ExecutionConstraint            string `json:"execution_constraint"`
}

// PlanStepJSON is one plan step.
type PlanStepJSON struct {
	StepID      string   `json:"step_id"`
	NextMembers []string `json:"next_members"`
}

// PlanJSON is a reconfiguration plan.
type PlanJSON struct {
	PlanID string         `json:"plan_id"`
	Steps  []PlanStepJSON `json:"steps"`
}

// UpgradeRequestJSON is a runtime-upgrade request.
type UpgradeRequestJSON struct {
	UpgradeID                 string            `json:"upgrade_id"`
	Plan                      PlanJSON          `json:"plan"`
	Compatibility             CompatibilityJSON `json:"compatibility"`
	CarriedPublicationIDs     []string          `json:"carried_publication_ids"`
	InvalidatedPublicationIDs []string          `json:"invalidated_publication_ids"`
	CarriedObligationIDs      []string          `json:"carried_obligation_ids"`
	InvalidatedObligationIDs  []string          `json:"invalidated_obligation_ids"`
}

// ExecuteUpgradeRequest is POST /v1/upgrades/{bundle}/execute: the upgrade
// request itself, plus an optional request id.
type ExecuteUpgradeRequest struct {
	UpgradeRequestJSON
	RequestID string `json:"request_id,omitempty"`
}

// DelegationRequest is POST /v1/delegations, and the transfer of a handoff.
type DelegationRequest struct {
	SessionID             string              `json:"session_id"`
	FromAuthority         string              `json:"from_authority"`
	ToAuthority           string              `json:"to_authority"`
	BundleID              string              `json:"bundle_id"`
	ContextID             string              `json:"context_id,omitempty"`
	LinkBoundary          *LinkBoundaryJSON   `json:"link_boundary,omitempty"`
	CapabilityScope       *ScopeJSON          `json:"capability_scope,omitempty"`
	RuntimeUpgradeRequest *UpgradeRequestJSON `json:"runtime_upgrade_request,omitempty"`
	RequestID             string              `json:"request_id,omitempty"`
}

// TimeJSON is a physical timestamp.
type TimeJSON struct {
	TsMs uint64 `json:"ts_ms"`
}

// ReceiptJSON is a delegation receipt.
type ReceiptJSON struct {
	SchemaVersion string        `json:"schema_version"`
	SessionID     string        `json:"session_id"`
	FromAuthority string        `json:"from_authority"`
	ToAuthority   string        `json:"to_authority"`
	BundleID      string        `json:"bundle_id"`
	FromBefore    FootprintJSON `json:"from_before"`
	FromAfter     FootprintJSON `json:"from_after"`
	ToBefore      FootprintJSON `json:"to_before"`
	ToAfter       FootprintJSON `json:"to_after"`
	DelegatedAt   TimeJSON      `json:"delegated_at"`
}

// OwnershipReceiptJSON records a live owner transfer.
type OwnershipReceiptJSON struct {
	SessionID      string    `json:"session_id"`
	ClaimID        uint64    `json:"claim_id"`
	FromOwnerID    string    `json:"from_owner_id"`
	FromGeneration uint64    `json:"from_generation"`
	ToOwnerID      string    `json:"to_owner_id"`
	ToGeneration   uint64    `json:"to_generation"`
	Scope          ScopeJSON `json:"scope"`
}

// ArtifactJSON is one phase record of an upgrade.
type ArtifactJSON struct {
	UpgradeID                 string            `json:"upgrade_id"`
	Phase                     string            `json:"phase"`
	PreviousMembers           []string          `json:"previous_members"`
	NextMembers               []string          `json:"next_members"`
	Compatibility             CompatibilityJSON `json:"compatibility"`
	CarriedPublicationIDs     []string          `json:"carried_publication_ids"`
	InvalidatedPublicationIDs []string          `json:"invalidated_publication_ids"`
	CarriedObligationIDs      []string          `json:"carried_obligation_ids"`
	InvalidatedObligationIDs  []string          `json:"invalidated_obligation_ids"`
	Reason                    *string           `json:"reason"`
}

// ExecutionJSON is an executed upgrade.
type ExecutionJSON struct {
	ArtifactID   string         `json:"artifact_id"`
	UpgradeID    string         `json:"upgrade_id"`
	Artifacts    []ArtifactJSON `json:"artifacts"`
	FinalMembers []string       `json:"final_members"`
}

// UpgradeSnapshotJSON is a bundle's runtime-upgrade snapshot.
type UpgradeSnapshotJSON struct {
	Epoch           uint64          `json:"epoch"`
	ActiveMembers   []string        `json:"active_members"`
	History         []string        `json:"history"`
	PlanExecutions  []string        `json:"plan_executions"`
	RuntimeUpgrades []ExecutionJSON `json:"runtime_upgrades"`
}

// WitnessJSON is a delegation witness.
type WitnessJSON struct {
	ContextID               string                `json:"context_id"`
	SessionID               string                `json:"session_id"`
	FromAuthority           string                `json:"from_authority"`
	ToAuthority             string                `json:"to_authority"`
	BundleID                string                `json:"bundle_id"`
	LinkBoundary            LinkBoundaryJSON      `json:"link_boundary"`
	CapabilityScope         ScopeJSON             `json:"capability_scope"`
	MovedFragmentKeys       []string              `json:"moved_fragment_keys"`
	Coherence               string                `json:"coherence"`
	OwnershipReceipt        *OwnershipReceiptJSON `json:"ownership_receipt,omitempty"`
	RuntimeUpgradeRequest   *UpgradeRequestJSON   `json:"runtime_upgrade_request,omitempty"`
	RuntimeUpgradeSnapshot  *UpgradeSnapshotJSON  `json:"runtime_upgrade_snapshot,omitempty"`
	RuntimeUpgradeExecution *ExecutionJSON        `json:"runtime_upgrade_execution,omitempty"`
}

// DelegationResponse answers POST /v1/delegations.
type DelegationResponse struct {
	Receipt ReceiptJSON `json:"receipt"`
	Witness WitnessJSON `json:"witness"`
	FactSeq uint64      `json:"fact_seq"`
	Index   uint64      `json:"index"`
	Deduped bool        `json:"deduped,omitempty"`
}

// OpenSessionRequest is POST /v1/sessions.
type OpenSessionRequest struct {
	SessionID  string `json:"session_id"`
	OwnerLabel string `json:"owner_label"`
	BundleID   string `json:"bundle_id,omitempty"`
	RequestID  string `json:"request_id,omitempty"`
}

// FragmentJSON is one fragment record of a live session.
type FragmentJSON struct {
	Key   string `json:"key"`
	Owner string `json:"owner"`
}

// LiveSessionJSON is a live session's owner record.
type LiveSessionJSON struct {
	SessionID       string           `json:"session_id"`
	OwnerLabel      string           `json:"owner_label"`
	Generation      uint64           `json:"generation"`
	Scope           ScopeJSON        `json:"scope"`
	RoutingBoundary LinkBoundaryJSON `json:"routing_boundary"`
	Fragments       []FragmentJSON   `json:"fragments"`
	Index           uint64           `json:"index,omitempty"`
}

// HandoffRequest is POST /v1/sessions/{id}/handoff.
type HandoffRequest struct {
	OwnerLabel     string            `json:"owner_label"`
	Generation     uint64            `json:"generation"`
	NextOwnerLabel string            `json:"next_owner_label"`
	Transfer       DelegationRequest `json:"transfer"`
	RequestID      string            `json:"request_id,omitempty"`
}

// HandoffResponse answers a live handoff.
type HandoffResponse struct {
	OwnershipReceipt OwnershipReceiptJSON `json:"ownership_receipt"`
	Receipt          ReceiptJSON          `json:"receipt"`
	Witness          WitnessJSON          `json:"witness"`
	Session          LiveSessionJSON      `json:"session"`
	FactSeq          uint64               `json:"fact_seq"`
	Index            uint64               `json:"index"`
	Deduped          bool                 `json:"deduped,omitempty"`
}

// CoherenceJSON is GET /v1/coherence.
type CoherenceJSON struct {
	Status     string   `json:"status"`
	Violations []string `json:"violations,omitempty"`
}

// MembershipRequest is PUT /v1/upgrades/{bundle}/membership.
type MembershipRequest struct {
	Members   []string `json:"members"`
	RequestID string   `json:"request_id,omitempty"`
}

// UpgradeSnapshotResponse answers a membership seed.
type UpgradeSnapshotResponse struct {
	Snapshot UpgradeSnapshotJSON `json:"snapshot"`
	Index    uint64              `json:"index"`
}

// ExecuteUpgradeResponse answers an executed upgrade: the execution and the
// bundle's epoch and members after it (the history is GET /v1/upgrades/{bundle}).
type ExecuteUpgradeResponse struct {
	Execution     ExecutionJSON `json:"execution"`
	Epoch         uint64        `json:"epoch"`
	ActiveMembers []string      `json:"active_members"`
	Index         uint64        `json:"index"`
}

// FactJSON is one audit fact.
type FactJSON struct {
	Seq           uint64   `json:"seq"`
	Index         uint64   `json:"index"`
	ContextID     string   `json:"context_id"`
	SessionID     string   `json:"session_id"`
	FromAuthority string   `json:"from_authority"`
	ToAuthority   string   `json:"to_authority"`
	BundleID      string   `json:"bundle_id"`
	Timestamp     TimeJSON `json:"timestamp"`
}

// FactsResponse is GET /v1/facts.
type FactsResponse struct {
	Facts   []FactJSON `json:"facts"`
	LastSeq uint64     `json:"last_seq"`
	// FirstSeq is the oldest retained fact; NextAfter is the after= of the
	// next page (the last seq of this one); More says whether there is one.
	FirstSeq  uint64 `json:"first_seq"`
	NextAfter uint64 `json:"next_after"`
	More      bool   `json:"more"`
}

// CapabilitiesJSON is the replicated gate.
type CapabilitiesJSON struct {
	Reconfiguration *bool  `json:"reconfiguration"`
	RequestID       string `json:"request_id,omitempty"`
	Index           uint64 `json:"index,omitempty"`
}

// NodeJSON is one cluster member.
type NodeJSON struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr"`
	Suffrage string `json:"suffrage,omitempty"`
	State    string `json:"state,omitempty"`

	// GET /v1/internal/node only: the cluster this node belongs to and
	// what it decodes (CommandSupport, for the upgrade gate).
	ClusterID      string   `json:"cluster_id,omitempty"`
	EntryFormat    int      `json:"entry_format,omitempty"`
	CommandVersion int      `json:"command_version,omitempty"`
	CommandTypes   []string `json:"command_types,omitempty"`
}

// StatusJSON is GET /v1/cluster/status.
type StatusJSON struct {
	Leader       *NodeJSON  `json:"leader"`
	Term         uint64     `json:"term"`
	CommitIndex  uint64     `json:"commit_index"`
	AppliedIndex uint64     `json:"applied_index"`
	Nodes        []NodeJSON `json:"nodes"`
	Self         string     `json:"self"`
	// Consistency is the consistency check in force on this node
	// (consistency.go); absent before the first since it started.
	Consistency *CheckJSON `json:"consistency,omitempty"`
}

// JoinRequest is POST /v1/cluster/join.
type JoinRequest struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	Voter    *bool  `json:"voter,omitempty"` // default true
	// ClusterID is the cluster the joining node's data dir belongs to, if
	// any; a join into another cluster is refused (cluster_mismatch).
	ClusterID string `json:"cluster_id,omitempty"`
	// Replace lets the join take over the id or address of a member that
	// still answers (else member_conflict).
	Replace bool `json:"replace,omitempty"`
}

// NodeIDRequest is POST /v1/cluster/remove and transfer-leadership.
type NodeIDRequest struct {
	ID string `json:"id"`
}

// DigestJSON is GET /v1/cluster/digest.
type DigestJSON struct {
	Index  uint64 `json:"index"`
	Digest string `json:"digest"`
}

// StaleInfo is sent, in headers, with a stale read: how far behind it may be.
const (
	HeaderLeader      = "X-Reconf-Leader"       // HTTP address of the leader
	HeaderIndex       = "X-Reconf-Index"        // applied index the answer reflects
	HeaderLastContact = "X-Reconf-Last-Contact" // stale reads: time since the leader was heard
	HeaderForwardedBy = "X-Reconf-Forwarded-By" // set on forwarded requests
	HeaderConsistency = "X-Reconf-Consistency"  // linearizable or stale
)

// ---- conversions: FSM → JSON ----

func sessionStrings(ids []fsm.SessionID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func toFootprintJSON(f fsm.Footprint) FootprintJSON {
	return FootprintJSON{
		SchemaVersion:        f.SchemaVersion,
		NativeSessions:       sessionStrings(f.Native),
		DelegatedInSessions:  sessionStrings(f.DelegatedIn),
		DelegatedOutSessions: sessionStrings(f.DelegatedOut),
	}
}

func toBundleJSON(b *fsm.Bundle) BundleJSON {
	fp := toFootprintJSON(b.Footprint)
	return BundleJSON{
		BundleID: b.ID, SchemaVersion: fsm.SchemaVersion,
		ProtocolIDs: nonNil(b.ProtocolIDs), Exports: nonNil(b.Exports), Imports: nonNil(b.Imports),
		SessionFootprint: &fp,
	}
}

func toScopeJSON(s fsm.Scope) ScopeJSON {
	if s.Kind == fsm.ScopeSession {
		return ScopeJSON{Session: true}
	}
	return ScopeJSON{Fragments: nonNil(s.Fragments)}
}

func toBoundaryJSON(b fsm.LinkBoundary) LinkBoundaryJSON {
	out := LinkBoundaryJSON{ProtocolIDs: nonNil(b.ProtocolIDs), FragmentKeys: nonNil(b.FragmentKeys), CapabilityScope: toScopeJSON(b.Scope)}
	if b.BundleID != "" {
		id := b.BundleID
		out.BundleID = &id
	}
	return out
}

func toCompatibilityJSON(c fsm.Compatibility) CompatibilityJSON {
	return CompatibilityJSON{
		OwnershipContinuityRequired:    c.OwnershipContinuityRequired,
		PendingEffectTreatment:         c.PendingEffectTreatment.String(),
		CanonicalPublicationContinuity: c.CanonicalPublicationContinuity.String(),
		ExecutionConstraint:            c.ExecutionConstraint.String(),
	}
}

func toUpgradeRequestJSON(r *fsm.UpgradeRequest) *UpgradeRequestJSON {
	out := &UpgradeRequestJSON{
		UpgradeID:                 r.UpgradeID,
		Plan:                      PlanJSON{PlanID: r.Plan.PlanID, Steps: []PlanStepJSON{}},
		Compatibility:             toCompatibilityJSON(r.Compatibility),
		CarriedPublicationIDs:     nonNil(r.CarriedPublicationIDs),
		InvalidatedPublicationIDs: nonNil(r.InvalidatedPublicationIDs),
		CarriedObligationIDs:      nonNil(r.CarriedObligationIDs),
		InvalidatedObligationIDs:  nonNil(r.InvalidatedObligationIDs),
	}
	for _, s := range r.Plan.Steps {
		out.Plan.Steps = append(out.Plan.Steps, PlanStepJSON{StepID: s.StepID, NextMembers: nonNil(s.NextMembers)})
	}
	return out
}

func toExecutionJSON(x *fsm.Execution) ExecutionJSON {
	out := ExecutionJSON{ArtifactID: x.ArtifactID, UpgradeID: x.UpgradeID, Artifacts: []ArtifactJSON{}, FinalMembers: nonNil(x.FinalMembers)}
	for _, a := range x.Artifacts {
		aj := ArtifactJSON{
			UpgradeID: a.UpgradeID, Phase: a.Phase.String(),
			PreviousMembers: nonNil(a.PreviousMembers), NextMembers: nonNil(a.NextMembers),
			Compatibility:             toCompatibilityJSON(a.Compatibility),
			CarriedPublicationIDs:     nonNil(a.CarriedPublicationIDs),
			InvalidatedPublicationIDs: nonNil(a.InvalidatedPublicationIDs),
			CarriedObligationIDs:      nonNil(a.CarriedObligationIDs),
			InvalidatedObligationIDs:  nonNil(a.InvalidatedObligationIDs),
		}
		if a.Reason != "" {
			r := a.Reason
			aj.Reason = &r
		}
		out.Artifacts = append(out.Artifacts, aj)
	}
	return out
}

func toUpgradeSnapshotJSON(u *fsm.UpgradeSnapshot) UpgradeSnapshotJSON {
	out := UpgradeSnapshotJSON{Epoch: u.Epoch, ActiveMembers: nonNil(u.ActiveMembers), History: []string{}, PlanExecutions: []string{}, RuntimeUpgrades: []ExecutionJSON{}}
	for i := range u.Executions {
		out.RuntimeUpgrades = append(out.RuntimeUpgrades, toExecutionJSON(&u.Executions[i]))
	}
	return out
}

func toReceiptJSON(r *fsm.Receipt) ReceiptJSON {
	return ReceiptJSON{
		SchemaVersion: fsm.SchemaVersion,
		SessionID:     r.Session.String(), FromAuthority: r.From.String(), ToAuthority: r.To.String(),
		BundleID:   r.BundleID,
		FromBefore: toFootprintJSON(r.FromBefore), FromAfter: toFootprintJSON(r.FromAfter),
		ToBefore: toFootprintJSON(r.ToBefore), ToAfter: toFootprintJSON(r.ToAfter),
		DelegatedAt: TimeJSON{TsMs: r.DelegatedAtMillis},
	}
}

func toOwnershipReceiptJSON(o *fsm.OwnershipReceipt) OwnershipReceiptJSON {
	return OwnershipReceiptJSON{
		SessionID: o.Session.String(), ClaimID: o.ClaimID,
		FromOwnerID: o.FromOwner, FromGeneration: o.FromGeneration,
		ToOwnerID: o.ToOwner, ToGeneration: o.ToGeneration, Scope: toScopeJSON(o.Scope),
	}
}

func toWitnessJSON(w *fsm.Witness) WitnessJSON {
	out := WitnessJSON{
		ContextID: w.Context.String(), SessionID: w.Session.String(),
		FromAuthority: w.From.String(), ToAuthority: w.To.String(), BundleID: w.BundleID,
		LinkBoundary: toBoundaryJSON(w.LinkBoundary), CapabilityScope: toScopeJSON(w.Scope),
		MovedFragmentKeys: nonNil(w.MovedFragments), Coherence: "preserved",
	}
	if w.OwnershipReceipt != nil {
		o := toOwnershipReceiptJSON(w.OwnershipReceipt)
		out.OwnershipReceipt = &o
	}
	if w.UpgradeRequest != nil {
		out.RuntimeUpgradeRequest = toUpgradeRequestJSON(w.UpgradeRequest)
	}
	if w.UpgradeSnapshot != nil {
		s := toUpgradeSnapshotJSON(w.UpgradeSnapshot)
		out.RuntimeUpgradeSnapshot = &s
	}
	if w.UpgradeExecution != nil {
		x := toExecutionJSON(w.UpgradeExecution)
		out.RuntimeUpgradeExecution = &x
	}
	return out
}

func toLiveSessionJSON(l *fsm.LiveSession) LiveSessionJSON {
	out := LiveSessionJSON{
		SessionID: l.Session.String(), OwnerLabel: l.OwnerLabel, Generation: l.Generation,
		Scope: toScopeJSON(l.Scope), RoutingBoundary: toBoundaryJSON(l.RoutingBoundary), Fragments: []FragmentJSON{},
	}
	for _, f := range l.Fragments {
		out.Fragments = append(out.Fragments, FragmentJSON{Key: f.Key, Owner: f.Owner})
	}
	return out
}

func toFactJSON(f *fsm.Fact) FactJSON {
	return FactJSON{
		Seq: f.Seq, Index: f.Index, ContextID: f.Context.String(), SessionID: f.Session.String(),
		FromAuthority: f.From.String(), ToAuthority: f.To.String(), BundleID: f.BundleID,
		Timestamp: TimeJSON{TsMs: f.TimestampMillis},
	}
}

// ---- conversions: JSON → FSM, each error naming its field ----

type fieldError struct {
	field, msg string
}

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

func badField(field, format string, args ...any) error {
	return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
}

func parseSession(field, v string) (fsm.SessionID, error) {
	if v == "" {
		return fsm.SessionID{}, badField(field, "is required")
	}
	id, err := fsm.ParseSessionID(v)
	if err != nil {
		return id, badField(field, "%v", err)
	}
	return id, nil
}

func parseAuthority(field, v string) (fsm.AuthorityID, error) {
	if v == "" {
		return fsm.AuthorityID{}, badField(field, "is required")
	}
	id, err := fsm.ParseAuthorityID(v)
	if err != nil {
		return id, badField(field, "%v", err)
	}
	return id, nil
}

func parseSessions(field string, vs []string) ([]fsm.SessionID, error) {
	var out []fsm.SessionID
	for i, v := range vs {
		id, err := parseSession(fmt.Sprintf("%s[%d]", field, i), v)
		if err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, nil
}

func fromFootprintJSON(field string, f *FootprintJSON) (fsm.Footprint, error) {
	out := fsm.Footprint{SchemaVersion: fsm.SchemaVersion}
	if f == nil {
		return out, nil
	}
	var err error
	if out.Native, err = parseSessions(field+".native_sessions", f.NativeSessions); err != nil {
		return out, err
	}
	if out.DelegatedIn, err = parseSessions(field+".delegated_in_sessions", f.DelegatedInSessions); err != nil {
		return out, err
	}
	out.DelegatedOut, err = parseSessions(field+".delegated_out_sessions", f.DelegatedOutSessions)
	return out, err
}

func fromScopeJSON(s ScopeJSON) fsm.Scope {
	if s.Session {
		return fsm.SessionScope()
	}
	return fsm.Scope{Kind: fsm.ScopeFragments, Fragments: sortedCopy(s.Fragments)}
}

func fromBoundaryJSON(b *LinkBoundaryJSON) fsm.LinkBoundary {
	out := fsm.LinkBoundary{ProtocolIDs: sortedCopy(b.ProtocolIDs), FragmentKeys: sortedCopy(b.FragmentKeys), Scope: fromScopeJSON(b.CapabilityScope)}
	if b.BundleID != nil {
		out.BundleID = *b.BundleID
	}
	return out
}

func fromUpgradeRequestJSON(field string, r *UpgradeRequestJSON) (*fsm.UpgradeRequest, error) {
	out := &fsm.UpgradeRequest{
		UpgradeID:                 r.UpgradeID,
		Plan:                      fsm.Plan{PlanID: r.Plan.PlanID},
		CarriedPublicationIDs:     r.CarriedPublicationIDs,
		InvalidatedPublicationIDs: r.InvalidatedPublicationIDs,
		CarriedObligationIDs:      r.CarriedObligationIDs,
		InvalidatedObligationIDs:  r.InvalidatedObligationIDs,
	}
	for _, s := range r.Plan.Steps {
		out.Plan.Steps = append(out.Plan.Steps, fsm.PlanStep{StepID: s.StepID, NextMembers: s.NextMembers})
	}
	c := r.Compatibility
	out.Compatibility.OwnershipContinuityRequired = c.OwnershipContinuityRequired
	var ok bool
	if out.Compatibility.PendingEffectTreatment, ok = fsm.ParsePendingEffectTreatment(c.PendingEffectTreatment); !ok {
		return nil, badField(field+".compatibility.pending_effect_treatment", "must be preserve_pending or invalidate_blocked, not %q", c.PendingEffectTreatment)
	}
	if out.Compatibility.CanonicalPublicationContinuity, ok = fsm.ParseCanonicalPublicationContinuity(c.CanonicalPublicationContinuity); !ok {
		return nil, badField(field+".compatibility.canonical_publication_continuity", "must be preserve_canonical_truth or reissue_canonical_truth, not %q", c.CanonicalPublicationContinuity)
	}
	if c.ExecutionConstraint == "" {
		out.Compatibility.ExecutionConstraint = fsm.PreserveBundleProfile
	} else if out.Compatibility.ExecutionConstraint, ok = fsm.ParseExecutionConstraint(c.ExecutionConstraint); !ok {
		return nil, badField(field+".compatibility.execution_constraint", "must be preserve_bundle_profile or mixed_determinism_allowed, not %q", c.ExecutionConstraint)
	}
	return out, nil
}

func fromDelegationRequest(prefix string, r *DelegationRequest, atMillis uint64) (fsm.Delegation, error) {
	var d fsm.Delegation
	var err error
	if d.Session, err = parseSession(prefix+"session_id", r.SessionID); err != nil {
		return d, err
	}
	if d.From, err = parseAuthority(prefix+"from_authority", r.FromAuthority); err != nil {
		return d, err
	}
	if d.To, err = parseAuthority(prefix+"to_authority", r.ToAuthority); err != nil {
		return d, err
	}
	d.BundleID = r.BundleID
	if r.ContextID != "" {
		c, err := fsm.ParseContextID(r.ContextID)
		if err != nil {
			return d, badField(prefix+"context_id", "%v", err)
		}
		d.Context = &c
	}
	if r.LinkBoundary != nil {
		b := fromBoundaryJSON(r.LinkBoundary)
		d.LinkBoundary = &b
	}
	if r.CapabilityScope != nil {
		s := fromScopeJSON(*r.CapabilityScope)
		d.Scope = &s
	}
	if r.RuntimeUpgradeRequest != nil {
		if d.UpgradeRequest, err = fromUpgradeRequestJSON(prefix+"runtime_upgrade_request", r.RuntimeUpgradeRequest); err != nil {
			return d, err
		}
	}
	d.AtMillis = atMillis
	return d, nil
}
