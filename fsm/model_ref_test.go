package fsm

// A deliberately naive reference model of the controller, written from the
// domain spec (design/domain.md sections 2-5, with section 9 overriding) and
// not from the FSM code. It keeps plain Go maps, re-checks coherence
// globally over every footprint on every delegation (upstream's
// verify_coherence over a deep copy of the footprints), and rebuilds every
// answer from scratch. It is slow on purpose: its only job is to be
// obviously right. The fsm types are used only as data containers for
// inputs and for the answers compared against the FSM's.
//
// Message texts are part of the spec: the upstream display templates of
// domain 2.6 and 2.17, plus the reconf-specific input and owner messages,
// copied here as format strings.

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

const refSchema = "aura.reconfiguration.v1"

// refBundle is a registered bundle. Never modified once stored.
type refBundle struct {
	id        string
	protocols []string // ordered list, duplicates kept
	exports   map[string]bool
	imports   map[string]bool
	footprint map[SessionID]Class
}

// refUpgrade is a bundle's runtime-upgrade snapshot. Replaced, never
// modified, once stored.
type refUpgrade struct {
	epoch      uint64
	active     []string // canonical: deduplicated, sorted by bytes
	executions []Execution
}

// refLive is the owner record of a live session. Replaced, never modified.
type refLive struct {
	owner      string
	generation uint64
	scope      Scope
	boundary   LinkBoundary
	fragments  map[string]string // fragment key -> owner label
}

type refModel struct {
	bundles    map[string]*refBundle
	upgrades   map[string]*refUpgrade
	footprints map[AuthorityID]map[SessionID]Class // authority -> session -> class
	live       map[SessionID]*refLive
	facts      []Fact
	gate       bool
	requests   map[string]Result
	fifo       []string // request ids, oldest first
	applied    uint64

	// Bounded state (retention.go), naively: facts holds the retained
	// facts, which start after factBase; every id has a stamp (0: none
	// yet) and a size.
	bounded   bool
	policy    Retention
	clock     uint64
	factBase  uint64
	lost      uint64
	consumers map[string]uint64
	reqStamp  map[string]uint64
	reqSize   map[string]uint64
	reqBytes  uint64
	evicted   uint64
}

func (m *refModel) lastSeq() uint64 { return m.factBase + uint64(len(m.facts)) }

// refMaxRequestIDs is the request-id bound (domain 9.7). It is a replicated
// constant, so the model uses the same one.
const refMaxRequestIDs = MaxRequestIDs

func newRefModel() *refModel {
	m := &refModel{
		bundles:    map[string]*refBundle{},
		upgrades:   map[string]*refUpgrade{},
		footprints: map[AuthorityID]map[SessionID]Class{},
		live:       map[SessionID]*refLive{},
		gate:       true,
		requests:   map[string]Result{},
		policy:     DefaultRetention,
		consumers:  map[string]uint64{},
		reqStamp:   map[string]uint64{},
		reqSize:    map[string]uint64{},
	}
	// Section 6 / 9.9: the three default bundles, empty footprints and
	// unseeded snapshots.
	defaults := []struct {
		id, protocol, a, b string
	}{
		{"device_migration", "aura.invitation.device_enrollment", "device_migration.request", "device_migration.accept"},
		{"epoch_rotation_transfer", "aura.sync.epoch_rotation", "epoch_rotation.proposal", "epoch_rotation.confirmation"},
		{"guardian_handoff", "aura.recovery.guardian_membership_change", "guardian_handoff.proposal", "guardian_handoff.vote"},
	}
	for _, d := range defaults {
		m.bundles[d.id] = &refBundle{
			id:        d.id,
			protocols: []string{d.protocol},
			exports:   map[string]bool{d.a: true, d.b: true},
			imports:   map[string]bool{d.a: true, d.b: true},
			footprint: map[SessionID]Class{},
		}
		m.upgrades[d.id] = &refUpgrade{}
	}
	return m
}

// clone deep-copies the model.
func (m *refModel) clone() *refModel {
	c := &refModel{
		bundles:    map[string]*refBundle{},
		upgrades:   map[string]*refUpgrade{},
		footprints: copyFootprints(m.footprints),
		live:       map[SessionID]*refLive{},
		facts:      append([]Fact(nil), m.facts...),
		gate:       m.gate,
		requests:   make(map[string]Result, len(m.requests)),
		fifo:       append([]string(nil), m.fifo...),
		applied:    m.applied,
		bounded:    m.bounded, policy: m.policy, clock: m.clock, factBase: m.factBase, lost: m.lost,
		consumers: map[string]uint64{}, reqStamp: map[string]uint64{}, reqSize: map[string]uint64{},
		reqBytes: m.reqBytes, evicted: m.evicted,
	}
	for k, v := range m.consumers {
		c.consumers[k] = v
	}
	for k, v := range m.reqStamp {
		c.reqStamp[k] = v
	}
	for k, v := range m.reqSize {
		c.reqSize[k] = v
	}
	for k, v := range m.bundles {
		c.bundles[k] = v
	}
	for k, v := range m.upgrades {
		c.upgrades[k] = v
	}
	for k, v := range m.live {
		c.live[k] = v
	}
	for k, v := range m.requests {
		c.requests[k] = v
	}
	return c
}

func copyFootprints(in map[AuthorityID]map[SessionID]Class) map[AuthorityID]map[SessionID]Class {
	out := make(map[AuthorityID]map[SessionID]Class, len(in))
	for a, fp := range in {
		c := make(map[SessionID]Class, len(fp))
		for s, cl := range fp {
			c[s] = cl
		}
		out[a] = c
	}
	return out
}

// ---- small helpers, all naive ----

func refErr(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// refSet returns the sorted, deduplicated form of a string list (a BTreeSet).
func refSet(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

func refKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func refSameSet(a, b []string) bool {
	x, y := refSet(a), refSet(b)
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

// refSessionsSorted sorts session ids by their canonical text, which is the
// byte order of the UUIDs.
func refSessionsSorted(in []SessionID) []SessionID {
	out := append([]SessionID(nil), in...)
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// refFootprint renders a session->class map as a Footprint value.
func refFootprint(fp map[SessionID]Class) Footprint {
	f := Footprint{SchemaVersion: refSchema}
	var all []SessionID
	for s := range fp {
		all = append(all, s)
	}
	for _, s := range refSessionsSorted(all) {
		switch fp[s] {
		case Native:
			f.Native = append(f.Native, s)
		case DelegatedIn:
			f.DelegatedIn = append(f.DelegatedIn, s)
		case DelegatedOut:
			f.DelegatedOut = append(f.DelegatedOut, s)
		}
	}
	return f
}

func (b *refBundle) value() *Bundle {
	return &Bundle{
		ID:          b.id,
		ProtocolIDs: append([]string(nil), b.protocols...),
		Exports:     refKeys(b.exports),
		Imports:     refKeys(b.imports),
		Footprint:   refFootprint(b.footprint),
	}
}

func (u *refUpgrade) value() *UpgradeSnapshot {
	return &UpgradeSnapshot{Epoch: u.epoch, ActiveMembers: append([]string(nil), u.active...), Executions: append([]Execution(nil), u.executions...)}
}

func (l *refLive) value(s SessionID) *LiveSession {
	out := &LiveSession{Session: s, OwnerLabel: l.owner, Generation: l.generation, Scope: l.scope, RoutingBoundary: l.boundary}
	for _, k := range refSortedMapKeys(l.fragments) {
		out.Fragments = append(out.Fragments, FragmentOwner{Key: k, Owner: l.fragments[k]})
	}
	return out
}

func refSortedMapKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// rustDebugStr renders a string as Rust's {:?} does for the characters our
// names can contain (no control characters get past validation).
func rustDebugStr(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// refScopeDebug renders a scope as upstream's Debug output:
// Session, or Fragments({"k1", "k2"}) (a BTreeSet, so sorted).
func refScopeDebug(s Scope) string {
	if s.Kind == ScopeSession {
		return "Session"
	}
	var q []string
	for _, k := range refSet(s.Fragments) {
		q = append(q, rustDebugStr(k))
	}
	return "Fragments({" + strings.Join(q, ", ") + "})"
}

// refScopeEqual: equality compares kind and key set (domain 8).
func refScopeEqual(a, b Scope) bool {
	if a.Kind != b.Kind {
		return false
	}
	return a.Kind == ScopeSession || refSameSet(a.Fragments, b.Fragments)
}

// Boundaries of domain 2.10.
func refBoundaryForBundle(b *refBundle) LinkBoundary {
	key := "bundle:" + b.id
	return LinkBoundary{
		BundleID:     b.id,
		ProtocolIDs:  refSet(b.protocols),
		FragmentKeys: []string{key},
		Scope:        Scope{Kind: ScopeFragments, Fragments: []string{key}},
	}
}

// ---- input validation (domain 9.8; reconf's wording) ----

func refCheckName(field, v string) *Error {
	if v == "" {
		return refErr(CodeInvalidArgument, "%s: must not be empty", field)
	}
	if len(v) > 256 {
		return refErr(CodeInvalidArgument, "%s: is %d bytes; the limit is %d", field, len(v), 256)
	}
	if !utf8.ValidString(v) {
		return refErr(CodeInvalidArgument, "%s: is not valid UTF-8", field)
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return refErr(CodeInvalidArgument, "%s: contains a control character", field)
		}
	}
	return nil
}

func refCheckList(field string, vs []string, mayBeEmpty bool) *Error {
	if len(vs) > 4096 {
		return refErr(CodeInvalidArgument, "%s: has %d items; the limit is %d", field, len(vs), 4096)
	}
	if len(vs) == 0 && !mayBeEmpty {
		return refErr(CodeInvalidArgument, "%s: must not be empty", field)
	}
	for i, v := range vs {
		if err := refCheckName(fmt.Sprintf("%s[%d]", field, i), v); err != nil {
			return err
		}
	}
	return nil
}

func refCheckRequestID(id string) *Error {
	if id == "" {
		return nil
	}
	if len(id) > 128 {
		return refErr(CodeInvalidArgument, "request_id: is %d bytes; the limit is %d", len(id), 128)
	}
	return refCheckName("request_id", id)
}

func refCheckScope(field string, s Scope) *Error {
	switch s.Kind {
	case ScopeSession:
		if len(s.Fragments) > 0 {
			return refErr(CodeInvalidArgument, "%s: a session scope has no fragments", field)
		}
		return nil
	case ScopeFragments:
		return refCheckList(field+".fragments", s.Fragments, true)
	}
	return refErr(CodeInvalidArgument, `%s: must be "session" or {"fragments": [...]}`, field)
}

func refCheckUpgrade(field string, r *UpgradeRequest) *Error {
	if err := refCheckName(field+".upgrade_id", r.UpgradeID); err != nil {
		return err
	}
	if r.Plan.PlanID != "" {
		if err := refCheckName(field+".plan.plan_id", r.Plan.PlanID); err != nil {
			return err
		}
	}
	if len(r.Plan.Steps) > 4096 {
		return refErr(CodeInvalidArgument, "%s.plan.steps: has %d items; the limit is %d", field, len(r.Plan.Steps), 4096)
	}
	for i, st := range r.Plan.Steps {
		if err := refCheckName(fmt.Sprintf("%s.plan.steps[%d].step_id", field, i), st.StepID); err != nil {
			return err
		}
		if err := refCheckList(fmt.Sprintf("%s.plan.steps[%d].next_members", field, i), st.NextMembers, true); err != nil {
			return err
		}
	}
	c := r.Compatibility
	if c.PendingEffectTreatment != PreservePending && c.PendingEffectTreatment != InvalidateBlocked {
		return refErr(CodeInvalidArgument, "%s.compatibility.pending_effect_treatment: must be preserve_pending or invalidate_blocked", field)
	}
	if c.CanonicalPublicationContinuity != PreserveCanonicalTruth && c.CanonicalPublicationContinuity != ReissueCanonicalTruth {
		return refErr(CodeInvalidArgument, "%s.compatibility.canonical_publication_continuity: must be preserve_canonical_truth or reissue_canonical_truth", field)
	}
	if c.ExecutionConstraint != PreserveBundleProfile && c.ExecutionConstraint != MixedDeterminismAllowed {
		return refErr(CodeInvalidArgument, "%s.compatibility.execution_constraint: must be preserve_bundle_profile or mixed_determinism_allowed", field)
	}
	if err := refCheckList(field+".carried_publication_ids", r.CarriedPublicationIDs, true); err != nil {
		return err
	}
	if err := refCheckList(field+".invalidated_publication_ids", r.InvalidatedPublicationIDs, true); err != nil {
		return err
	}
	if err := refCheckList(field+".carried_obligation_ids", r.CarriedObligationIDs, true); err != nil {
		return err
	}
	return refCheckList(field+".invalidated_obligation_ids", r.InvalidatedObligationIDs, true)
}

func refCheckDelegation(prefix string, d *Delegation) *Error {
	if err := refCheckName(prefix+"bundle_id", d.BundleID); err != nil {
		return err
	}
	if b := d.LinkBoundary; b != nil {
		if b.BundleID != "" {
			if err := refCheckName(prefix+"link_boundary.bundle_id", b.BundleID); err != nil {
				return err
			}
		}
		if err := refCheckList(prefix+"link_boundary.protocol_ids", b.ProtocolIDs, true); err != nil {
			return err
		}
		if err := refCheckList(prefix+"link_boundary.fragment_keys", b.FragmentKeys, true); err != nil {
			return err
		}
		if err := refCheckScope(prefix+"link_boundary.capability_scope", b.Scope); err != nil {
			return err
		}
	}
	if d.Scope != nil {
		if err := refCheckScope(prefix+"capability_scope", *d.Scope); err != nil {
			return err
		}
	}
	if d.UpgradeRequest != nil {
		return refCheckUpgrade(prefix+"runtime_upgrade_request", d.UpgradeRequest)
	}
	return nil
}

func refValidate(op Op) *Error {
	switch op := op.(type) {
	case nil:
		return refErr(CodeUnknownCommand, "command has no operation")
	case *SetRetention:
		// The policy's field limits are the FSM's own (retention.go); the
		// model checks what it does with a valid policy.
		return checkRetention(op)
	case *AckConsumer:
		return CheckConsumerName(op.Name)
	case *DropConsumer:
		return CheckConsumerName(op.Name)
	case *RegisterBundle:
		b := op.Bundle
		if err := refCheckName("bundle_id", b.ID); err != nil {
			return err
		}
		if err := refCheckList("protocol_ids", b.ProtocolIDs, true); err != nil {
			return err
		}
		if err := refCheckList("exports", b.Exports, true); err != nil {
			return err
		}
		if err := refCheckList("imports", b.Imports, true); err != nil {
			return err
		}
		total := len(b.Footprint.Native) + len(b.Footprint.DelegatedIn) + len(b.Footprint.DelegatedOut)
		if total > 100000 {
			return refErr(CodeInvalidArgument, "session_footprint: holds %d sessions; the limit is %d", total, 100000)
		}
		where := map[SessionID]string{}
		for _, l := range []struct {
			name string
			ids  []SessionID
		}{{"native_sessions", b.Footprint.Native}, {"delegated_in_sessions", b.Footprint.DelegatedIn}, {"delegated_out_sessions", b.Footprint.DelegatedOut}} {
			for _, s := range l.ids {
				if prev, ok := where[s]; ok {
					return refErr(CodeInvalidArgument, "session_footprint.%s: session %s is also in %s; a session has one class per footprint", l.name, s, prev)
				}
				where[s] = l.name
			}
		}
		return nil
	case *LinkBundles:
		if err := refCheckName("left", op.Left); err != nil {
			return err
		}
		if err := refCheckName("right", op.Right); err != nil {
			return err
		}
		return refCheckName("linked_id", op.LinkedID)
	case *ExtendFootprint:
		if op.Class != Native && op.Class != DelegatedIn && op.Class != DelegatedOut {
			return refErr(CodeInvalidArgument, "class: must be native, delegated_in or delegated_out")
		}
		return nil
	case *RemoveFootprint, *SetCapabilities:
		return nil
	case *Delegate:
		return refCheckDelegation("", &op.Delegation)
	case *OpenSession:
		if err := refCheckName("owner_label", op.OwnerLabel); err != nil {
			return err
		}
		if op.BundleID != "" {
			return refCheckName("bundle_id", op.BundleID)
		}
		return nil
	case *Handoff:
		if err := refCheckName("owner_label", op.OwnerLabel); err != nil {
			return err
		}
		if err := refCheckName("next_owner_label", op.NextOwnerLabel); err != nil {
			return err
		}
		return refCheckDelegation("transfer.", &op.Transfer)
	case *SeedMembership:
		if err := refCheckName("bundle_id", op.BundleID); err != nil {
			return err
		}
		return refCheckList("members", op.Members, true)
	case *ExecuteUpgrade:
		if err := refCheckName("bundle_id", op.BundleID); err != nil {
			return err
		}
		return refCheckUpgrade("runtime_upgrade_request", &op.Request)
	}
	return refErr(CodeUnknownCommand, "unknown operation %T", op)
}

// ---- coherence (domain 3.7), global, over any footprint map ----

func refCoherence(fps map[AuthorityID]map[SessionID]Class) []string {
	type tally struct {
		active  int
		in, out map[AuthorityID]bool
	}
	per := map[SessionID]*tally{}
	for a, fp := range fps {
		for s, c := range fp {
			t := per[s]
			if t == nil {
				t = &tally{in: map[AuthorityID]bool{}, out: map[AuthorityID]bool{}}
				per[s] = t
			}
			switch c {
			case Native:
				t.active++
			case DelegatedIn:
				t.active++
				t.in[a] = true
			case DelegatedOut:
				t.out[a] = true
			}
		}
	}
	var sessions []SessionID
	for s := range per {
		sessions = append(sessions, s)
	}
	var msgs []string
	for _, s := range refSessionsSorted(sessions) {
		t := per[s]
		if t.active > 1 {
			msgs = append(msgs, fmt.Sprintf("session %s has multiple active owners (%d)", s, t.active))
		}
		if len(t.out) > 0 {
			switch {
			case len(t.in) == 0:
				msgs = append(msgs, fmt.Sprintf("session %s delegated out without delegated-in receiver", s))
			case len(t.in) > 1:
				msgs = append(msgs, fmt.Sprintf("session %s delegated in to %d authorities", s, len(t.in)))
			case len(t.out) != 1:
				msgs = append(msgs, fmt.Sprintf("session %s delegated out by %d authorities", s, len(t.out)))
			}
		}
	}
	return msgs
}

// refViolatingSessions counts sessions with at least one violation.
func refViolatingSessions(fps map[AuthorityID]map[SessionID]Class) int {
	n := 0
	seen := map[SessionID]bool{}
	for _, fp := range fps {
		for s := range fp {
			if seen[s] {
				continue
			}
			seen[s] = true
			only := map[AuthorityID]map[SessionID]Class{}
			for a, fp2 := range fps {
				if c, ok := fp2[s]; ok {
					only[a] = map[SessionID]Class{s: c}
				}
			}
			if len(refCoherence(only)) > 0 {
				n++
			}
		}
	}
	return n
}

// ---- command application ----

// apply is Apply for one command (domain 9.7 request ids, then 9.1).
func (m *refModel) apply(index uint64, cmd Command) Result {
	if index > m.applied {
		m.applied = index
	}
	if err := refCheckRequestID(cmd.RequestID); err != nil {
		return Result{Index: index, Err: err}
	}
	if cmd.RequestID != "" {
		if first, ok := m.requests[cmd.RequestID]; ok {
			first.Deduped = true
			return first // the first result, not applied again
		}
	}
	r := m.applyOp(index, cmd.Op)
	r.Index = index
	var stamp uint64
	if at, timed := refStamp(cmd.Op); timed && r.Err == nil && m.bounded {
		m.clock = max(m.clock, at)
		// Every id still without a stamp is dated by this one.
		for id, s := range m.reqStamp {
			if s == 0 {
				m.reqStamp[id] = m.clock
			}
		}
		stamp = m.clock
	}
	if cmd.RequestID != "" {
		m.requests[cmd.RequestID] = r
		m.fifo = append(m.fifo, cmd.RequestID)
		m.reqStamp[cmd.RequestID] = stamp
		size := uint64(len(cmd.RequestID)+len(encodeResult(&r))) + 96
		m.reqSize[cmd.RequestID] = size
		m.reqBytes += size
		for !m.bounded && len(m.requests) > refMaxRequestIDs {
			m.forgetOldest()
		}
	}
	if m.bounded {
		for len(m.fifo) > 0 {
			id := m.fifo[0]
			if s := m.reqStamp[id]; s != 0 && s+m.policy.RequestIDTTLMillis <= m.clock {
				m.forgetOldest()
			} else if m.reqBytes > m.policy.RequestIDBudgetBytes {
				m.forgetOldest()
				m.evicted++
			} else {
				break
			}
		}
		m.trim()
	}
	return r
}

func (m *refModel) forgetOldest() {
	oldest := m.fifo[0]
	m.fifo = m.fifo[1:]
	m.reqBytes -= m.reqSize[oldest]
	delete(m.requests, oldest)
	delete(m.reqStamp, oldest)
	delete(m.reqSize, oldest)
}

func refStamp(op Op) (uint64, bool) {
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

// trim drops whole chunks of 512 facts (by seq: 1-512, 513-1024, ...)
// while the policy allows.
func (m *refModel) trim() {
	const chunk = 512
	for uint64(len(m.facts)) >= chunk {
		last := m.factBase + chunk
		byCount := m.lastSeq()-last >= m.policy.MaxFacts
		byAge := m.policy.MaxAgeMillis > 0 && m.facts[chunk-1].TimestampMillis+m.policy.MaxAgeMillis <= m.clock
		hard := uint64(len(m.facts)) > m.policy.HardMaxFacts
		if !byCount && !byAge && !hard {
			return
		}
		var lost uint64
		for _, cur := range m.consumers {
			if cur < last {
				lost += last - max(cur, m.factBase)
			}
		}
		if lost > 0 && !hard {
			return
		}
		m.lost += lost
		m.facts = append([]Fact(nil), m.facts[chunk:]...)
		m.factBase += chunk
	}
}

func (m *refModel) setRetention(op *SetRetention) Result {
	p := m.policy
	if op.Set&RetainMaxFacts != 0 {
		p.MaxFacts = op.MaxFacts
	}
	if op.Set&RetainHardMaxFacts != 0 {
		p.HardMaxFacts = op.HardMaxFacts
	}
	if op.Set&RetainMaxAge != 0 {
		p.MaxAgeMillis = op.MaxAgeMillis
	}
	if op.Set&RetainRequestIDTTL != 0 {
		p.RequestIDTTLMillis = op.RequestIDTTLMillis
	}
	if op.Set&RetainRequestIDBudget != 0 {
		p.RequestIDBudgetBytes = op.RequestIDBudgetBytes
	}
	if p.MaxFacts > p.HardMaxFacts {
		return Result{Err: refErr(CodeInvalidArgument, "max_facts: is %d, above hard_max_facts %d", p.MaxFacts, p.HardMaxFacts)}
	}
	m.bounded = true
	m.policy = p
	return Result{Retention: &p}
}

func (m *refModel) ackConsumer(op *AckConsumer) Result {
	if op.Through > m.lastSeq() {
		return Result{Err: refErr(CodeInvalidArgument, "through: is %d, beyond the newest fact %d", op.Through, m.lastSeq())}
	}
	cur, ok := m.consumers[op.Name]
	if !ok {
		if len(m.consumers) >= MaxConsumers {
			return Result{Err: refErr(CodeInvalidArgument, "name: cannot register consumer %q: %d consumers are registered, the limit", op.Name, MaxConsumers)}
		}
		if op.Through < m.factBase {
			return Result{Err: refErr(CodeFactsTrimmed, "facts after %d are trimmed: the oldest retained fact is first_seq %d", op.Through, m.factBase+1)}
		}
	}
	cur = max(cur, op.Through)
	m.consumers[op.Name] = cur
	m.bounded = true
	return Result{Consumer: &Consumer{Name: op.Name, Cursor: cur}}
}

func (m *refModel) dropConsumer(op *DropConsumer) Result {
	cur, ok := m.consumers[op.Name]
	if !ok {
		return Result{Err: refErr(CodeConsumerNotFound, "no consumer is named %q", op.Name)}
	}
	delete(m.consumers, op.Name)
	m.bounded = true
	return Result{Consumer: &Consumer{Name: op.Name, Cursor: cur}}
}

func (m *refModel) applyOp(index uint64, op Op) Result {
	if err := refValidate(op); err != nil {
		return Result{Err: err}
	}
	switch op := op.(type) {
	case *RegisterBundle:
		return m.register(op)
	case *LinkBundles:
		return m.link(op)
	case *ExtendFootprint:
		fp := m.footprints[op.Authority]
		if fp == nil {
			fp = map[SessionID]Class{}
			m.footprints[op.Authority] = fp
		}
		fp[op.Session] = op.Class // add_*: moves the session between classes
		return Result{}
	case *RemoveFootprint:
		if fp := m.footprints[op.Authority]; fp != nil {
			delete(fp, op.Session) // the footprint entry stays, maybe empty
		}
		return Result{}
	case *Delegate:
		if !m.gate {
			return Result{Err: refMissingCapability("session delegation")}
		}
		boundary, scope, err := m.resolveBoundary(&op.Delegation)
		if err != nil {
			return Result{Err: err}
		}
		out, err := m.delegate(index, &op.Delegation, boundary, scope)
		if err != nil {
			return Result{Err: err}
		}
		return Result{Outcome: out}
	case *OpenSession:
		return m.openSession(op)
	case *Handoff:
		return m.handoff(index, op)
	case *SetCapabilities:
		m.gate = op.Reconfiguration
		return Result{}
	case *SeedMembership:
		if m.bundles[op.BundleID] == nil {
			return Result{Err: refErr(CodeBundleNotFound, "runtime upgrade for bundle `%s` failed: bundle not found: %s", op.BundleID, op.BundleID)}
		}
		members := refSet(op.Members)
		if len(members) == 0 {
			return Result{Err: refInvalidUpgrade(op.BundleID, "active membership may not be empty")}
		}
		u := &refUpgrade{active: members} // a full reset: epoch 0, no executions
		m.upgrades[op.BundleID] = u
		return Result{Upgrade: u.value()}
	case *ExecuteUpgrade:
		if !m.gate {
			return Result{Err: refMissingCapability("runtime upgrade")}
		}
		if m.bundles[op.BundleID] == nil {
			return Result{Err: refErr(CodeBundleNotFound, "runtime upgrade for bundle `%s` failed: bundle not found: %s", op.BundleID, op.BundleID)}
		}
		next, exec, err := m.planUpgrade(op.BundleID, &op.Request)
		if err != nil {
			return Result{Err: err} // 9.1: the failed attempt is not recorded
		}
		m.upgrades[op.BundleID] = next
		// The result names epoch and members; the history stays in the state.
		return Result{Execution: exec, Upgrade: &UpgradeSnapshot{Epoch: next.epoch, ActiveMembers: next.active}}
	case *SetRetention:
		return m.setRetention(op)
	case *AckConsumer:
		return m.ackConsumer(op)
	case *DropConsumer:
		return m.dropConsumer(op)
	}
	panic("unreachable")
}

func refMissingCapability(operation string) *Error {
	return refErr(CodeMissingCapability,
		`%s requires protocol-critical runtime surfaces ["ownership_receipt", "semantic_handoff", "reconfiguration_transition"]: runtime surface `+"`ownership_receipt`"+` is not admitted (capability `+"`reconfiguration`"+` is off)`,
		operation)
}

func refInvalidUpgrade(bundleID, reason string) *Error {
	return refErr(CodeInvalidRuntimeUpgrade, "runtime upgrade for bundle `%s` failed: runtime upgrade rejected for bundle `%s`: %s", bundleID, bundleID, reason)
}

func (m *refModel) register(op *RegisterBundle) Result {
	in := op.Bundle
	if m.bundles[in.ID] != nil {
		return Result{Err: refErr(CodeDuplicateBundle, "register bundle `%s` failed: bundle already exists: %s", in.ID, in.ID)}
	}
	b := &refBundle{
		id:        in.ID,
		protocols: append([]string(nil), in.ProtocolIDs...),
		exports:   map[string]bool{},
		imports:   map[string]bool{},
		footprint: map[SessionID]Class{},
	}
	for _, x := range in.Exports {
		b.exports[x] = true
	}
	for _, x := range in.Imports {
		b.imports[x] = true
	}
	for _, s := range in.Footprint.Native {
		b.footprint[s] = Native
	}
	for _, s := range in.Footprint.DelegatedIn {
		b.footprint[s] = DelegatedIn
	}
	for _, s := range in.Footprint.DelegatedOut {
		b.footprint[s] = DelegatedOut
	}
	m.bundles[b.id] = b
	m.upgrades[b.id] = &refUpgrade{}
	return Result{Bundle: b.value()}
}

// compatibleWith: every import of a that a does not export is exported by b.
func refCompatible(a, b *refBundle) bool {
	for imp := range a.imports {
		if !a.exports[imp] && !b.exports[imp] {
			return false
		}
	}
	return true
}

func (m *refModel) link(op *LinkBundles) Result {
	if !m.gate {
		return Result{Err: refMissingCapability("bundle linking")}
	}
	fail := func(code Code, msg string) Result {
		return Result{Err: refErr(code, "link bundles `%s` + `%s` into `%s` failed: %s", op.Left, op.Right, op.LinkedID, msg)}
	}
	a := m.bundles[op.Left]
	if a == nil {
		return fail(CodeBundleNotFound, "bundle not found: "+op.Left)
	}
	b := m.bundles[op.Right]
	if b == nil {
		return fail(CodeBundleNotFound, "bundle not found: "+op.Right)
	}
	if !refCompatible(a, b) || !refCompatible(b, a) {
		return fail(CodeIncompatibleInterface, "bundle interfaces are incompatible for link")
	}
	for s := range a.footprint {
		if _, shared := b.footprint[s]; shared {
			return fail(CodeOverlappingSessions, "cannot link bundles with overlapping sessions")
		}
	}
	if m.bundles[op.LinkedID] != nil {
		return fail(CodeDuplicateBundle, "bundle already exists: "+op.LinkedID)
	}
	linked := &refBundle{
		id:        op.LinkedID,
		protocols: append(append([]string(nil), a.protocols...), b.protocols...),
		exports:   map[string]bool{},
		imports:   map[string]bool{},
		footprint: map[SessionID]Class{},
	}
	for _, src := range []*refBundle{a, b} {
		for x := range src.exports {
			linked.exports[x] = true
		}
		for x := range src.imports {
			linked.imports[x] = true
		}
	}
	// natives (a then b), then delegated-ins, then delegated-outs: the last
	// class written wins.
	for _, class := range []Class{Native, DelegatedIn, DelegatedOut} {
		for _, src := range []*refBundle{a, b} {
			for s, c := range src.footprint {
				if c == class {
					linked.footprint[s] = c
				}
			}
		}
	}
	// The linked bundle is registered (3.5 step 5), so it must pass what
	// registering it directly would check.
	if err := refValidate(&RegisterBundle{Bundle: *linked.value()}); err != nil {
		return fail(err.Code, err.Message)
	}
	m.bundles[linked.id] = linked
	m.upgrades[linked.id] = &refUpgrade{}
	return Result{Bundle: linked.value()}
}

// resolveBoundary is domain section 4 step 5.
func (m *refModel) resolveBoundary(d *Delegation) (LinkBoundary, Scope, *Error) {
	b := m.bundles[d.BundleID]
	if b == nil {
		return LinkBoundary{}, Scope{}, refErr(CodeBundleNotRegistered, "delegation requires pre-registered bundle `%s`", d.BundleID)
	}
	boundary := refBoundaryForBundle(b)
	if d.LinkBoundary != nil {
		boundary = *d.LinkBoundary
	}
	scope := boundary.Scope
	if d.Scope != nil {
		scope = *d.Scope
	}
	prefix := fmt.Sprintf("delegation for session %s rejected link boundary for bundle `%s`: ", d.Session, d.BundleID)
	if boundary.BundleID != d.BundleID {
		shown := "None"
		if boundary.BundleID != "" {
			shown = "Some(" + rustDebugStr(boundary.BundleID) + ")"
		}
		return LinkBoundary{}, Scope{}, refErr(CodeInvalidLinkBoundary, "%slink boundary bundle %s does not match transfer bundle `%s` for session %s",
			prefix, shown, d.BundleID, d.Session)
	}
	if !refScopeEqual(boundary.Scope, scope) {
		return LinkBoundary{}, Scope{}, refErr(CodeInvalidLinkBoundary, "%slink boundary scope %s does not match capability scope %s for bundle `%s` and session %s",
			prefix, refScopeDebug(boundary.Scope), refScopeDebug(scope), d.BundleID, d.Session)
	}
	return boundary, scope, nil
}

// delegate is controller.delegate (3.6) plus the optional upgrade and the
// audit fact, validated in full before anything changes (9.1).
func (m *refModel) delegate(index uint64, d *Delegation, boundary LinkBoundary, scope Scope) (*Outcome, *Error) {
	wrap := func(e *Error) *Error {
		return refErr(e.Code, "session delegation failed for session %s: %s", d.Session, e.Message)
	}
	fromFP := m.footprints[d.From]
	if _, owned := fromFP[d.Session]; !owned { // contains() includes delegated_out
		return nil, wrap(refErr(CodeSessionNotOwned, "session %s not owned by authority %s", d.Session, d.From))
	}
	candidate := copyFootprints(m.footprints)
	if fromFP[d.Session] == DelegatedIn {
		// chain clearing: every other authority's delegated_out record goes
		for a, fp := range candidate {
			if a != d.From && fp[d.Session] == DelegatedOut {
				delete(fp, d.Session)
			}
		}
	}
	candidate[d.From][d.Session] = DelegatedOut
	if candidate[d.To] == nil {
		candidate[d.To] = map[SessionID]Class{}
	}
	candidate[d.To][d.Session] = DelegatedIn
	if v := refCoherence(candidate); len(v) > 0 {
		return nil, wrap(refErr(CodeCoherenceViolation, "reconfiguration coherence violation: %s", strings.Join(v, "; ")))
	}
	var newUpgrade *refUpgrade
	var exec *Execution
	if d.UpgradeRequest != nil {
		var err *Error
		newUpgrade, exec, err = m.planUpgrade(d.BundleID, d.UpgradeRequest)
		if err != nil {
			return nil, err
		}
	}
	context := DefaultContextForAuthority(d.From)
	if d.Context != nil {
		context = *d.Context
	}

	// Everything is valid: commit.
	fromBefore := refFootprint(m.footprints[d.From])
	toBefore := refFootprint(m.footprints[d.To]) // new() when absent
	m.footprints = candidate
	if newUpgrade != nil {
		m.upgrades[d.BundleID] = newUpgrade
	}
	fact := Fact{
		Seq: m.lastSeq() + 1, Index: index, Context: context, Session: d.Session,
		From: d.From, To: d.To, BundleID: d.BundleID, TimestampMillis: d.AtMillis,
	}
	m.facts = append(m.facts, fact)
	out := &Outcome{
		Receipt: Receipt{
			Session: d.Session, From: d.From, To: d.To, BundleID: d.BundleID,
			FromBefore: fromBefore, FromAfter: refFootprint(candidate[d.From]),
			ToBefore: toBefore, ToAfter: refFootprint(candidate[d.To]),
			DelegatedAtMillis: d.AtMillis,
		},
		Witness: Witness{
			Context: context, Session: d.Session, From: d.From, To: d.To, BundleID: d.BundleID,
			LinkBoundary: boundary, Scope: scope, MovedFragments: append([]string(nil), boundary.FragmentKeys...),
			UpgradeRequest: d.UpgradeRequest, UpgradeExecution: exec,
		},
		FactSeq: fact.Seq,
	}
	if newUpgrade != nil {
		out.Witness.UpgradeSnapshot = newUpgrade.value()
	}
	return out, nil
}

// planUpgrade is execute_runtime_upgrade (3.8) without recording a failure.
func (m *refModel) planUpgrade(bundleID string, req *UpgradeRequest) (*refUpgrade, *Execution, *Error) {
	cur := m.upgrades[bundleID]
	if len(cur.active) == 0 {
		return nil, nil, refInvalidUpgrade(bundleID, "active membership must be seeded before executing a runtime upgrade")
	}
	id := req.UpgradeID
	reject := func(format string, args ...any) (*refUpgrade, *Execution, *Error) {
		return nil, nil, refInvalidUpgrade(bundleID, fmt.Sprintf(format, args...))
	}
	intersects := func(a, b []string) bool {
		for _, x := range a {
			for _, y := range b {
				if x == y {
					return true
				}
			}
		}
		return false
	}
	steps := req.Plan.Steps
	if len(steps) == 0 {
		return reject("runtime upgrade `%s` must contain at least one plan step", id)
	}
	if intersects(req.CarriedPublicationIDs, req.InvalidatedPublicationIDs) {
		return reject("runtime upgrade `%s` may not both carry and invalidate the same canonical publication", id)
	}
	if intersects(req.CarriedObligationIDs, req.InvalidatedObligationIDs) {
		return reject("runtime upgrade `%s` may not both carry and invalidate the same obligation", id)
	}
	if req.Compatibility.OwnershipContinuityRequired && !intersects(cur.active, steps[0].NextMembers) {
		return reject("runtime upgrade `%s` requires ownership continuity across the first cutover", id)
	}
	if req.Compatibility.PendingEffectTreatment == InvalidateBlocked && len(req.CarriedObligationIDs) == 0 && len(req.InvalidatedObligationIDs) == 0 {
		return reject("runtime upgrade `%s` must make pending-effect treatment explicit", id)
	}
	if req.Compatibility.CanonicalPublicationContinuity == PreserveCanonicalTruth && len(req.InvalidatedPublicationIDs) > 0 {
		return reject("runtime upgrade `%s` may not invalidate canonical publications when continuity is required", id)
	}
	for _, st := range steps {
		if len(refSet(st.NextMembers)) == 0 {
			return reject("runtime upgrade `%s` step `%s` must preserve a non-empty membership set", id, st.StepID)
		}
	}
	initial := cur.active
	target := refSet(steps[len(steps)-1].NextMembers)
	var arts []Artifact
	for _, p := range []Phase{PhaseStaged, PhaseAdmitted, PhaseCommittedCutover} {
		arts = append(arts, Artifact{
			UpgradeID: id, Phase: p, PreviousMembers: initial, NextMembers: target,
			Compatibility:             req.Compatibility,
			CarriedPublicationIDs:     req.CarriedPublicationIDs,
			InvalidatedPublicationIDs: req.InvalidatedPublicationIDs,
			CarriedObligationIDs:      req.CarriedObligationIDs,
			InvalidatedObligationIDs:  req.InvalidatedObligationIDs,
		})
	}
	exec := Execution{ArtifactID: bundleID, UpgradeID: id, Artifacts: arts, FinalMembers: target}
	history := append(append([]Execution(nil), cur.executions...), exec)
	if len(history) > MaxUpgradeHistory { // reconf keeps the newest MaxUpgradeHistory
		history = history[len(history)-MaxUpgradeHistory:]
	}
	next := &refUpgrade{active: target, executions: history, epoch: cur.epoch + 1}
	return next, &exec, nil
}

// openSession claims the owner of a live session (2.9 claim, 9.6).
func (m *refModel) openSession(op *OpenSession) Result {
	if cur := m.live[op.Session]; cur != nil {
		if cur.owner == op.OwnerLabel {
			return Result{Session: cur.value(op.Session)} // same label: its capability back
		}
		return Result{Err: refErr(CodeOwnerConflict, "session %s is already owned by `%s`; `%s` cannot claim it", op.Session, cur.owner, op.OwnerLabel)}
	}
	l := &refLive{owner: op.OwnerLabel, generation: 1, scope: Scope{Kind: ScopeSession}, boundary: LinkBoundary{Scope: Scope{Kind: ScopeSession}}, fragments: map[string]string{}}
	if op.BundleID != "" {
		b := m.bundles[op.BundleID]
		if b == nil {
			return Result{Err: refErr(CodeBundleNotFound, "bundle not found: %s", op.BundleID)}
		}
		l.boundary = refBoundaryForBundle(b)
		l.fragments["bundle:"+b.id] = op.OwnerLabel
	}
	m.live[op.Session] = l
	return Result{Session: l.value(op.Session)}
}

// handoff is delegate_active_session as one command (section 4, 9.1, 9.6):
// session match, boundary, owner check, gate, delegation; the generation
// moves by one and only on success.
func (m *refModel) handoff(index uint64, op *Handoff) Result {
	t := &op.Transfer
	if t.Session != op.Session {
		return Result{Err: refErr(CodeSessionMismatch, "active session handoff target %s does not match delegation session %s", op.Session, t.Session)}
	}
	cur := m.live[op.Session]
	if cur == nil {
		return Result{Err: refErr(CodeSessionNotFound, "live session %s is not open", op.Session)}
	}
	live := func(e *Error) Result {
		return Result{Err: refErr(e.Code, "live delegation failed for session %s: %s", op.Session, e.Message)}
	}
	boundary, _, err := m.resolveBoundary(t)
	if err != nil {
		return live(err)
	}
	if op.OwnerLabel != cur.owner || op.Generation != cur.generation {
		return Result{Err: refErr(CodeStaleOwner,
			"failed to transfer live session owner for session %s: stale owner `%s` at generation %d (current owner `%s` at generation %d)",
			op.Session, op.OwnerLabel, op.Generation, cur.owner, cur.generation)}
	}
	if !m.gate {
		return live(refMissingCapability("session delegation"))
	}
	// with_link_boundary(boundary): the scope becomes the boundary's.
	out, err := m.delegate(index, t, boundary, boundary.Scope)
	if err != nil {
		return live(err)
	}
	next := &refLive{owner: op.NextOwnerLabel, generation: cur.generation + 1, scope: boundary.Scope, boundary: boundary, fragments: map[string]string{}}
	for k := range cur.fragments {
		next.fragments[k] = op.NextOwnerLabel
	}
	m.live[op.Session] = next
	out.Witness.OwnershipReceipt = &OwnershipReceipt{
		Session: op.Session, ClaimID: next.generation,
		FromOwner: cur.owner, FromGeneration: cur.generation,
		ToOwner: next.owner, ToGeneration: next.generation,
		Scope: next.scope,
	}
	return Result{Outcome: out, Session: next.value(op.Session)}
}

func refSortedKeys(m map[string]uint64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
