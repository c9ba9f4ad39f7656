package fsm

import (
	"slices"
	"strings"
)

// Apply applies one command at Raft index index and returns its result. It
// validates the command completely against the state and only then changes
// anything: a rejected command leaves the state exactly as it was, except
// that the applied index advances and a request id remembers its answer.
//
// Apply is deterministic: it reads no clock, randomness, environment or node
// identity, and nothing it returns depends on Go map order.
func (s *State) Apply(index uint64, cmd Command) Result {
	if index > s.applied {
		s.applied = index
	}
	if err := CheckRequestID(cmd.RequestID); err != nil {
		return Result{Index: index, Err: err}
	}
	var hash uint64
	if cmd.RequestID != "" {
		hash = requestHash(cmd.RequestID)
		if e, ok := s.lookupRequest(cmd.RequestID, hash); ok {
			r := e.result()
			r.Deduped = true
			return r
		}
	}
	r := s.apply(index, cmd.Op)
	r.Index = index
	// In bounded mode (retention.go) an accepted command that carries the
	// leader's time moves the replicated clock; the new id is stamped with
	// it, or left for the next stamp to date.
	var stamp uint64
	if at, timed := stampOf(cmd.Op); timed && r.Err == nil && s.bounded {
		s.advanceClock(at)
		stamp = s.clock
	}
	if cmd.RequestID != "" {
		s.rememberHashed(cmd.RequestID, hash, r, stamp)
	}
	if s.bounded {
		s.expireRequests()
		s.trimFacts()
	}
	return r
}

// remember stores id's result in the request-id table.
func (s *State) remember(id string, r Result) { s.rememberHashed(id, requestHash(id), r, 0) }

// rememberHashed is remember for a caller that has requestHash(id) already.
// stamp is the id's time (0: none yet). Outside bounded mode the table keeps
// the newest MaxRequestIDs ids, as older releases did.
func (s *State) rememberHashed(id string, hash uint64, r Result, stamp uint64) {
	s.requestSeq++
	s.addRequest(requestEntry{id: id, seq: s.requestSeq, at: stamp, res: encodeResult(&r), hash: hash})
	if s.bounded {
		if stamp == 0 {
			s.reqUnstamped = true
		}
		return
	}
	for s.requests.Len() > MaxRequestIDs {
		s.forgetOldestRequest()
	}
}

func (s *State) apply(index uint64, op Op) Result {
	if err := Check(op); err != nil {
		return Result{Err: err}
	}
	switch op := op.(type) {
	case *RegisterBundle:
		return s.registerBundle(op)
	case *LinkBundles:
		return s.linkBundles(op)
	case *ExtendFootprint:
		s.extendFootprint(op)
		return Result{}
	case *RemoveFootprint:
		s.removeFootprint(op)
		return Result{}
	case *Delegate:
		return s.delegate(index, op)
	case *OpenSession:
		return s.openSession(op)
	case *Handoff:
		return s.handoff(index, op)
	case *SetCapabilities:
		s.reconfiguration = op.Reconfiguration
		return Result{}
	case *SeedMembership:
		return s.seedMembership(op)
	case *ExecuteUpgrade:
		return s.executeUpgrade(op)
	case *SetRetention:
		return s.setRetention(op)
	case *AckConsumer:
		return s.ackConsumer(op)
	case *DropConsumer:
		return s.dropConsumer(op)
	case *ConsistencyCheck:
		return Result{} // the state is unchanged; the FSM adapter digests it (consistency.go)
	}
	return Result{Err: errorf(CodeUnknownCommand, "unknown operation %T", op)}
}

func (s *State) registerBundle(op *RegisterBundle) Result {
	in := &op.Bundle
	if _, exists := s.Bundle(in.ID); exists {
		return Result{Err: errorf(CodeDuplicateBundle, "register bundle `%s` failed: bundle already exists: %s", in.ID, in.ID)}
	}
	b := &Bundle{
		ID:          in.ID,
		ProtocolIDs: slices.Clone(in.ProtocolIDs),
		Exports:     sortedSet(in.Exports),
		Imports:     sortedSet(in.Imports),
		Footprint: Footprint{
			SchemaVersion: SchemaVersion,
			Native:        sortedSessions(in.Footprint.Native),
			DelegatedIn:   sortedSessions(in.Footprint.DelegatedIn),
			DelegatedOut:  sortedSessions(in.Footprint.DelegatedOut),
		},
	}
	s.bundles.ReplaceOrInsert(newBundleEntry(b, &UpgradeSnapshot{}))
	return Result{Bundle: b}
}

func sortedSessions(in []SessionID) []SessionID {
	if len(in) == 0 {
		return nil
	}
	out := slices.Clone(in)
	slices.SortFunc(out, compareSession)
	return slices.Compact(out)
}

func (s *State) linkBundles(op *LinkBundles) Result {
	wrap := func(err *Error) Result {
		return Result{Err: err.wrap("link bundles `%s` + `%s` into `%s` failed: ", op.Left, op.Right, op.LinkedID)}
	}
	if !s.reconfiguration {
		return Result{Err: missingCapability("bundle linking")}
	}
	a, ok := s.Bundle(op.Left)
	if !ok {
		return wrap(errorf(CodeBundleNotFound, "bundle not found: %s", op.Left))
	}
	b, ok := s.Bundle(op.Right)
	if !ok {
		return wrap(errorf(CodeBundleNotFound, "bundle not found: %s", op.Right))
	}
	if !a.CompatibleWith(b) || !b.CompatibleWith(a) {
		return wrap(errorf(CodeIncompatibleInterface, "bundle interfaces are incompatible for link"))
	}
	if sessionsOverlap(a.Footprint.AllSessions(), b.Footprint.AllSessions()) {
		return wrap(errorf(CodeOverlappingSessions, "cannot link bundles with overlapping sessions"))
	}
	if _, exists := s.Bundle(op.LinkedID); exists {
		return wrap(errorf(CodeDuplicateBundle, "bundle already exists: %s", op.LinkedID))
	}
	linked := linkedBundle(a, b, op.LinkedID)
	// Linking registers the merged bundle (domain 3.5), so it meets
	// registration's limits: otherwise repeated links grow a bundle without
	// bound and Restore refuses the state's own snapshot.
	if err := Check(&RegisterBundle{Bundle: *linked}); err != nil {
		return wrap(err)
	}
	s.bundles.ReplaceOrInsert(newBundleEntry(linked, &UpgradeSnapshot{}))
	return Result{Bundle: linked}
}

func (s *State) extendFootprint(op *ExtendFootprint) {
	var buf holderBuf
	prev, next := s.readHolders(&buf, op.Session)
	s.setHolders(op.Session, prev, setClass(next, op.Session, op.Authority, op.Class))
}

func (s *State) removeFootprint(op *RemoveFootprint) {
	if !s.authorities.Has(op.Authority) {
		return // upstream: an unknown authority is left alone
	}
	var buf holderBuf
	prev, next := s.readHolders(&buf, op.Session)
	if classIn(prev, op.Authority) == 0 {
		return
	}
	s.setHolders(op.Session, prev, setClass(next, op.Session, op.Authority, 0))
}

// readHolders reads sess's holders into buf (or the heap, if they do not
// fit) and returns them twice: prev, and next, a copy the caller owns and
// may change with setClass. prev is clipped, so next never writes into it.
func (s *State) readHolders(buf *holderBuf, sess SessionID) (prev, next []holderItem) {
	held := s.appendHolders(buf[:0], sess)
	n := len(held)
	prev = held[:n:n]
	next = append(held[n:], prev...)
	return prev, next
}

// delegationPlan is a delegation computed in full against the current state
// and not yet applied: validate, then mutate.
type delegationPlan struct {
	d        *Delegation
	context  ContextID
	boundary LinkBoundary
	scope    Scope
	entry    bundleEntry      // the bundle's entry; set with an upgrade request
	upgrade  *UpgradeSnapshot // nil without an upgrade request
	exec     *Execution
}

// holderChange is a plan's change to the session's holders. It travels
// apart from delegationPlan so that its lists, which nothing keeps, can live
// in the caller's stack frame.
type holderChange struct {
	prev, next []holderItem
}

// holderBuf is room for a usual holderChange: a session has one to three
// holders.
type holderBuf [8]holderItem

// resolveBoundary is upstream's resolve_delegation_boundary plus
// validate_link_boundary (domain section 4, step 5). The boundary it returns
// may share its slices with the stored bundle or the command: read only.
func (s *State) resolveBoundary(d *Delegation) (LinkBoundary, Scope, *Error) {
	e, ok := s.lookupBundle(d.BundleID)
	if !ok {
		return LinkBoundary{}, Scope{}, errorf(CodeBundleNotRegistered, "delegation requires pre-registered bundle `%s`", d.BundleID)
	}
	var boundary LinkBoundary
	if d.LinkBoundary != nil {
		boundary = *d.LinkBoundary
	} else {
		boundary = e.linkBoundary()
	}
	scope := boundary.Scope // the builders' default: the boundary's own scope
	if d.Scope != nil {
		scope = *d.Scope
	}
	if boundary.BundleID != d.BundleID {
		shown := "None"
		if boundary.BundleID != "" {
			shown = "Some(" + debugQuote(boundary.BundleID) + ")"
		}
		return boundary, scope, errorf(CodeInvalidLinkBoundary, "%slink boundary bundle %s does not match transfer bundle `%s` for session %s",
			boundaryErrorPrefix(d), shown, d.BundleID, d.Session)
	}
	if !boundary.Scope.Equal(scope) {
		return boundary, scope, errorf(CodeInvalidLinkBoundary, "%slink boundary scope %s does not match capability scope %s for bundle `%s` and session %s",
			boundaryErrorPrefix(d), boundary.Scope, scope, d.BundleID, d.Session)
	}
	return boundary, scope, nil
}

// boundaryErrorPrefix starts resolveBoundary's rejections; it is built only
// when there is one.
func boundaryErrorPrefix(d *Delegation) string {
	return "delegation for session " + d.Session.String() + " rejected link boundary for bundle `" + d.BundleID + "`: "
}

// planDelegation runs the controller's delegate and the optional runtime
// upgrade against the state without changing it (domain 3.6 and section 4,
// step 6). Gate and boundary are checked by the caller.
func (s *State) planDelegation(d *Delegation, boundary LinkBoundary, scope Scope, buf *holderBuf) (delegationPlan, holderChange, *Error) {
	wrap := func(err *Error) *Error {
		return err.wrap("session delegation failed for session %s: ", d.Session)
	}
	prev, next := s.readHolders(buf, d.Session)
	fromClass := classIn(prev, d.From)
	if fromClass == 0 {
		return delegationPlan{}, holderChange{}, wrap(errorf(CodeSessionNotOwned, "session %s not owned by authority %s", d.Session, d.From))
	}
	if fromClass == DelegatedIn {
		// Chain clearing: only the latest hop keeps its out-record.
		next = slices.DeleteFunc(next, func(h holderItem) bool { return h.class == DelegatedOut && h.auth != d.From })
	}
	next = setClass(next, d.Session, d.From, DelegatedOut)
	next = setClass(next, d.Session, d.To, DelegatedIn)
	if msgs := s.coherenceWith(d.Session, next); len(msgs) > 0 {
		return delegationPlan{}, holderChange{}, wrap(errorf(CodeCoherenceViolation, "reconfiguration coherence violation: %s", strings.Join(msgs, "; ")))
	}
	p := delegationPlan{d: d, boundary: boundary, scope: scope}
	p.context = DefaultContextForAuthority(d.From)
	if d.Context != nil {
		p.context = *d.Context
	}
	if d.UpgradeRequest != nil {
		p.entry, _ = s.lookupBundle(d.BundleID)
		up, exec, err := planUpgrade(d.BundleID, p.entry.upgrade, d.UpgradeRequest)
		if err != nil {
			return delegationPlan{}, holderChange{}, err
		}
		p.upgrade, p.exec = up, exec
	}
	return p, holderChange{prev: prev, next: next}, nil
}

// commitDelegation applies a plan: footprints, upgrade snapshot and audit
// fact together.
func (s *State) commitDelegation(index uint64, p *delegationPlan, hc holderChange) *Outcome {
	d := p.d
	// The after-footprints differ from the before-footprints only in this
	// session, so derive them rather than walk the trees again.
	fromBefore, fromAfter, toBefore, toAfter := s.receiptFootprints(d.From, d.To, d.Session, classIn(hc.next, d.From), classIn(hc.next, d.To))
	// An authority with a footprint is in the authorities tree.
	var listed *AuthorityID
	if toBefore.Native != nil || toBefore.DelegatedIn != nil || toBefore.DelegatedOut != nil {
		listed = &d.To
	}
	s.setHoldersListed(d.Session, hc.prev, hc.next, listed)
	if p.upgrade != nil {
		e := p.entry
		e.upgrade = p.upgrade
		s.bundles.ReplaceOrInsert(e)
	}
	// The boundary's bundle id equals d.BundleID (resolveBoundary checked)
	// and is usually the stored bundle's own string: the fact, which is
	// kept for good, then holds no copy of the command's.
	bundleID := p.boundary.BundleID
	out := &Outcome{
		Receipt: Receipt{
			Session: d.Session, From: d.From, To: d.To, BundleID: bundleID,
			FromBefore: fromBefore, FromAfter: fromAfter, ToBefore: toBefore, ToAfter: toAfter,
			DelegatedAtMillis: d.AtMillis,
		},
		Witness: Witness{
			Context: p.context, Session: d.Session, From: d.From, To: d.To, BundleID: bundleID,
			LinkBoundary: p.boundary,
			Scope:        p.scope,
			// Shared with the boundary: results are read only.
			MovedFragments:   p.boundary.FragmentKeys,
			UpgradeRequest:   d.UpgradeRequest,
			UpgradeSnapshot:  p.upgrade,
			UpgradeExecution: p.exec,
		},
	}
	out.FactSeq = s.appendFact(Fact{
		Index:           index,
		Context:         p.context,
		Session:         d.Session,
		From:            d.From,
		To:              d.To,
		BundleID:        bundleID,
		TimestampMillis: d.AtMillis,
	})
	return out
}

// delegate is the manager's delegate_session as one command (domain 9.1):
// gate, boundary, ownership, coherence, upgrade, then all effects at once.
func (s *State) delegate(index uint64, op *Delegate) Result {
	if !s.reconfiguration {
		return Result{Err: missingCapability("session delegation")}
	}
	boundary, scope, err := s.resolveBoundary(&op.Delegation)
	if err != nil {
		return Result{Err: err}
	}
	var buf holderBuf
	plan, hc, err := s.planDelegation(&op.Delegation, boundary, scope, &buf)
	if err != nil {
		return Result{Err: err}
	}
	return Result{Outcome: s.commitDelegation(index, &plan, hc)}
}

func (s *State) openSession(op *OpenSession) Result {
	if cur, ok := s.LiveSession(op.Session); ok {
		if cur.OwnerLabel == op.OwnerLabel {
			return Result{Session: cur} // upstream: the same label gets its capability back
		}
		return Result{Err: errorf(CodeOwnerConflict, "session %s is already owned by `%s`; `%s` cannot claim it",
			op.Session, cur.OwnerLabel, op.OwnerLabel)}
	}
	boundary := BoundaryForScope(SessionScope())
	if op.BundleID != "" {
		b, ok := s.Bundle(op.BundleID)
		if !ok {
			return Result{Err: errorf(CodeBundleNotFound, "bundle not found: %s", op.BundleID)}
		}
		boundary = BoundaryForBundle(b)
	}
	ls := &LiveSession{
		Session:         op.Session,
		OwnerLabel:      op.OwnerLabel,
		Generation:      1,
		Scope:           SessionScope(),
		RoutingBoundary: boundary,
	}
	for _, k := range boundary.FragmentKeys {
		ls.Fragments = append(ls.Fragments, FragmentOwner{Key: k, Owner: op.OwnerLabel})
	}
	s.live.ReplaceOrInsert(ls)
	return Result{Session: ls}
}

// handoff is the manager's delegate_active_session as one command: owner
// transfer and delegation land together or not at all, so there is no
// rollback and a failed handoff leaves the generation unchanged (domain 9.1,
// 9.6).
func (s *State) handoff(index uint64, op *Handoff) Result {
	t := &op.Transfer
	if t.Session != op.Session {
		return Result{Err: errorf(CodeSessionMismatch, "active session handoff target %s does not match delegation session %s", op.Session, t.Session)}
	}
	cur, ok := s.LiveSession(op.Session)
	if !ok {
		return Result{Err: errorf(CodeSessionNotFound, "live session %s is not open", op.Session)}
	}
	live := func(err *Error) Result {
		return Result{Err: err.wrap("live delegation failed for session %s: ", op.Session)}
	}
	boundary, _, err := s.resolveBoundary(t)
	if err != nil {
		return live(err)
	}
	if op.OwnerLabel != cur.OwnerLabel || op.Generation != cur.Generation {
		return Result{Err: errorf(CodeStaleOwner,
			"failed to transfer live session owner for session %s: stale owner `%s` at generation %d (current owner `%s` at generation %d)",
			op.Session, op.OwnerLabel, op.Generation, cur.OwnerLabel, cur.Generation)}
	}
	if !s.reconfiguration {
		return live(missingCapability("session delegation"))
	}
	// Upstream delegates with transfer.with_link_boundary(boundary): the
	// scope becomes the boundary's, whatever the transfer said.
	var buf holderBuf
	plan, hc, err := s.planDelegation(t, boundary, boundary.Scope, &buf)
	if err != nil {
		return live(err)
	}
	next := &LiveSession{
		Session:         cur.Session,
		OwnerLabel:      op.NextOwnerLabel,
		Generation:      cur.Generation + 1,
		Scope:           boundary.Scope,
		RoutingBoundary: boundary,
		Fragments:       make([]FragmentOwner, len(cur.Fragments)),
	}
	if cur.Generation == ^uint64(0) {
		next.Generation = cur.Generation // saturating, as upstream
	}
	for i, f := range cur.Fragments {
		next.Fragments[i] = FragmentOwner{Key: f.Key, Owner: op.NextOwnerLabel}
	}
	out := s.commitDelegation(index, &plan, hc)
	s.live.ReplaceOrInsert(next)
	out.Witness.OwnershipReceipt = &OwnershipReceipt{
		Session:        cur.Session,
		ClaimID:        next.Generation,
		FromOwner:      cur.OwnerLabel,
		FromGeneration: cur.Generation,
		ToOwner:        next.OwnerLabel,
		ToGeneration:   next.Generation,
		Scope:          next.Scope,
	}
	return Result{Outcome: out, Session: next}
}

func (s *State) seedMembership(op *SeedMembership) Result {
	e, ok := s.lookupBundle(op.BundleID)
	if !ok {
		return Result{Err: errorf(CodeBundleNotFound, "runtime upgrade for bundle `%s` failed: bundle not found: %s", op.BundleID, op.BundleID)}
	}
	members := canonicalMembers(op.Members)
	if len(members) == 0 {
		return Result{Err: invalidUpgrade(op.BundleID, "active membership may not be empty")}
	}
	up := &UpgradeSnapshot{ActiveMembers: members}
	e.upgrade = up
	s.bundles.ReplaceOrInsert(e)
	return Result{Upgrade: up}
}

func (s *State) executeUpgrade(op *ExecuteUpgrade) Result {
	if !s.reconfiguration {
		return Result{Err: missingCapability("runtime upgrade")}
	}
	e, ok := s.lookupBundle(op.BundleID)
	if !ok {
		return Result{Err: errorf(CodeBundleNotFound, "runtime upgrade for bundle `%s` failed: bundle not found: %s", op.BundleID, op.BundleID)}
	}
	up, exec, err := planUpgrade(op.BundleID, e.upgrade, &op.Request)
	if err != nil {
		return Result{Err: err}
	}
	e.upgrade = up
	s.bundles.ReplaceOrInsert(e)
	// The result carries the epoch and members, not the history: results are
	// kept for request-id retries, and a history in each would make the
	// request table grow with the square of the upgrades.
	return Result{Execution: exec, Upgrade: &UpgradeSnapshot{Epoch: up.Epoch, ActiveMembers: up.ActiveMembers}}
}
