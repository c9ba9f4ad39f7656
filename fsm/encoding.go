package fsm

// Binary forms of the domain types, shared by commands, results and
// snapshots. Each decode function is the exact mirror of its encode
// function; the round-trip and fuzz tests hold them to that.

func (e *encoder) footprint(f *Footprint) {
	e.str(f.SchemaVersion)
	e.sessions(f.Native)
	e.sessions(f.DelegatedIn)
	e.sessions(f.DelegatedOut)
}

func (d *decoder) footprint() Footprint {
	return Footprint{SchemaVersion: d.str(), Native: d.sessions(), DelegatedIn: d.sessions(), DelegatedOut: d.sessions()}
}

func (e *encoder) bundle(b *Bundle) {
	e.str(b.ID)
	e.strs(b.ProtocolIDs)
	e.strs(b.Exports)
	e.strs(b.Imports)
	e.footprint(&b.Footprint)
}

func (d *decoder) bundle() *Bundle {
	return &Bundle{ID: d.str(), ProtocolIDs: d.strs(), Exports: d.strs(), Imports: d.strs(), Footprint: d.footprint()}
}

func (e *encoder) scope(s *Scope) {
	e.u8(uint8(s.Kind))
	e.strs(s.Fragments)
}

func (d *decoder) scope() Scope {
	s := Scope{Kind: ScopeKind(d.u8()), Fragments: d.strs()}
	if d.err == nil && s.Kind != ScopeSession && s.Kind != ScopeFragments {
		d.fail("invalid scope kind %d", s.Kind)
	}
	return s
}

func (e *encoder) boundary(b *LinkBoundary) {
	e.str(b.BundleID)
	e.strs(b.ProtocolIDs)
	e.strs(b.FragmentKeys)
	e.scope(&b.Scope)
}

func (d *decoder) boundary() LinkBoundary {
	return LinkBoundary{BundleID: d.str(), ProtocolIDs: d.strs(), FragmentKeys: d.strs(), Scope: d.scope()}
}

func (e *encoder) compatibility(c *Compatibility) {
	e.boolean(c.OwnershipContinuityRequired)
	e.u8(uint8(c.PendingEffectTreatment))
	e.u8(uint8(c.CanonicalPublicationContinuity))
	e.u8(uint8(c.ExecutionConstraint))
}

func (d *decoder) compatibility() Compatibility {
	return Compatibility{
		OwnershipContinuityRequired:    d.boolean(),
		PendingEffectTreatment:         PendingEffectTreatment(d.u8()),
		CanonicalPublicationContinuity: CanonicalPublicationContinuity(d.u8()),
		ExecutionConstraint:            ExecutionConstraint(d.u8()),
	}
}

func (e *encoder) upgradeRequest(r *UpgradeRequest) {
	e.str(r.UpgradeID)
	e.str(r.Plan.PlanID)
	e.uvarint(uint64(len(r.Plan.Steps)))
	for i := range r.Plan.Steps {
		e.str(r.Plan.Steps[i].StepID)
		e.strs(r.Plan.Steps[i].NextMembers)
	}
	e.compatibility(&r.Compatibility)
	e.strs(r.CarriedPublicationIDs)
	e.strs(r.InvalidatedPublicationIDs)
	e.strs(r.CarriedObligationIDs)
	e.strs(r.InvalidatedObligationIDs)
}

func (d *decoder) upgradeRequest() *UpgradeRequest {
	r := &UpgradeRequest{UpgradeID: d.str()}
	r.Plan.PlanID = d.str()
	if n := d.length(2); n > 0 {
		r.Plan.Steps = make([]PlanStep, n)
		for i := range r.Plan.Steps {
			r.Plan.Steps[i] = PlanStep{StepID: d.str(), NextMembers: d.strs()}
		}
	}
	r.Compatibility = d.compatibility()
	r.CarriedPublicationIDs = d.strs()
	r.InvalidatedPublicationIDs = d.strs()
	r.CarriedObligationIDs = d.strs()
	r.InvalidatedObligationIDs = d.strs()
	return r
}

func (e *encoder) execution(x *Execution) {
	e.str(x.ArtifactID)
	e.str(x.UpgradeID)
	e.uvarint(uint64(len(x.Artifacts)))
	for i := range x.Artifacts {
		a := &x.Artifacts[i]
		e.str(a.UpgradeID)
		e.u8(uint8(a.Phase))
		e.strs(a.PreviousMembers)
		e.strs(a.NextMembers)
		e.compatibility(&a.Compatibility)
		e.strs(a.CarriedPublicationIDs)
		e.strs(a.InvalidatedPublicationIDs)
		e.strs(a.CarriedObligationIDs)
		e.strs(a.InvalidatedObligationIDs)
		e.str(a.Reason)
	}
	e.strs(x.FinalMembers)
}

func (d *decoder) execution() *Execution {
	x := &Execution{ArtifactID: d.str(), UpgradeID: d.str()}
	if n := d.length(13); n > 0 {
		x.Artifacts = make([]Artifact, n)
		for i := range x.Artifacts {
			x.Artifacts[i] = Artifact{
				UpgradeID:                 d.str(),
				Phase:                     Phase(d.u8()),
				PreviousMembers:           d.strs(),
				NextMembers:               d.strs(),
				Compatibility:             d.compatibility(),
				CarriedPublicationIDs:     d.strs(),
				InvalidatedPublicationIDs: d.strs(),
				CarriedObligationIDs:      d.strs(),
				InvalidatedObligationIDs:  d.strs(),
				Reason:                    d.str(),
			}
		}
	}
	x.FinalMembers = d.strs()
	return x
}

func (e *encoder) upgradeSnapshot(u *UpgradeSnapshot) {
	e.uvarint(u.Epoch)
	e.strs(u.ActiveMembers)
	e.uvarint(uint64(len(u.Executions)))
	for i := range u.Executions {
		e.execution(&u.Executions[i])
	}
}

func (d *decoder) upgradeSnapshot() *UpgradeSnapshot {
	u := &UpgradeSnapshot{Epoch: d.uvarint(), ActiveMembers: d.strs()}
	if n := d.length(4); n > 0 {
		u.Executions = make([]Execution, n)
		for i := range u.Executions {
			u.Executions[i] = *d.execution()
		}
	}
	return u
}

func (e *encoder) delegation(x *Delegation) {
	e.boolean(x.Context != nil)
	if x.Context != nil {
		e.id(*x.Context)
	}
	e.id(x.Session)
	e.id(x.From)
	e.id(x.To)
	e.str(x.BundleID)
	e.boolean(x.LinkBoundary != nil)
	if x.LinkBoundary != nil {
		e.boundary(x.LinkBoundary)
	}
	e.boolean(x.Scope != nil)
	if x.Scope != nil {
		e.scope(x.Scope)
	}
	e.boolean(x.UpgradeRequest != nil)
	if x.UpgradeRequest != nil {
		e.upgradeRequest(x.UpgradeRequest)
	}
	e.uvarint(x.AtMillis)
}

func (d *decoder) delegation() Delegation {
	var x Delegation
	if d.present() {
		c := ContextID(d.id())
		x.Context = &c
	}
	x.Session, x.From, x.To = d.id(), d.id(), d.id()
	x.BundleID = d.str()
	if d.present() {
		b := d.boundary()
		x.LinkBoundary = &b
	}
	if d.present() {
		s := d.scope()
		x.Scope = &s
	}
	if d.present() {
		x.UpgradeRequest = d.upgradeRequest()
	}
	x.AtMillis = d.uvarint()
	return x
}

func (e *encoder) liveSession(l *LiveSession) {
	e.id(l.Session)
	e.str(l.OwnerLabel)
	e.uvarint(l.Generation)
	e.scope(&l.Scope)
	e.boundary(&l.RoutingBoundary)
	e.uvarint(uint64(len(l.Fragments)))
	for _, f := range l.Fragments {
		e.str(f.Key)
		e.str(f.Owner)
	}
}

func (d *decoder) liveSession() *LiveSession {
	l := &LiveSession{Session: d.id(), OwnerLabel: d.str(), Generation: d.uvarint(), Scope: d.scope(), RoutingBoundary: d.boundary()}
	if n := d.length(2); n > 0 {
		l.Fragments = make([]FragmentOwner, n)
		for i := range l.Fragments {
			l.Fragments[i] = FragmentOwner{Key: d.str(), Owner: d.str()}
		}
	}
	return l
}

func (e *encoder) fact(f *Fact) {
	e.uvarint(f.Seq)
	e.uvarint(f.Index)
	e.id(f.Context)
	e.id(f.Session)
	e.id(f.From)
	e.id(f.To)
	e.str(f.BundleID)
	e.uvarint(f.TimestampMillis)
}

func (d *decoder) fact() Fact {
	return Fact{Seq: d.uvarint(), Index: d.uvarint(), Context: d.id(), Session: d.id(), From: d.id(), To: d.id(),
		BundleID: d.str(), TimestampMillis: d.uvarint()}
}

func (e *encoder) outcome(o *Outcome) {
	r := &o.Receipt
	e.id(r.Session)
	e.id(r.From)
	e.id(r.To)
	e.str(r.BundleID)
	e.footprint(&r.FromBefore)
	e.footprint(&r.FromAfter)
	e.footprint(&r.ToBefore)
	e.footprint(&r.ToAfter)
	e.uvarint(r.DelegatedAtMillis)
	w := &o.Witness
	e.id(w.Context)
	e.id(w.Session)
	e.id(w.From)
	e.id(w.To)
	e.str(w.BundleID)
	e.boundary(&w.LinkBoundary)
	e.scope(&w.Scope)
	e.strs(w.MovedFragments)
	e.boolean(w.OwnershipReceipt != nil)
	if o := w.OwnershipReceipt; o != nil {
		e.id(o.Session)
		e.uvarint(o.ClaimID)
		e.str(o.FromOwner)
		e.uvarint(o.FromGeneration)
		e.str(o.ToOwner)
		e.uvarint(o.ToGeneration)
		e.scope(&o.Scope)
	}
	e.boolean(w.UpgradeRequest != nil)
	if w.UpgradeRequest != nil {
		e.upgradeRequest(w.UpgradeRequest)
	}
	e.boolean(w.UpgradeSnapshot != nil)
	if w.UpgradeSnapshot != nil {
		e.upgradeSnapshot(w.UpgradeSnapshot)
	}
	e.boolean(w.UpgradeExecution != nil)
	if w.UpgradeExecution != nil {
		e.execution(w.UpgradeExecution)
	}
	e.uvarint(o.FactSeq)
}

func (d *decoder) outcome() *Outcome {
	o := &Outcome{}
	r := &o.Receipt
	r.Session, r.From, r.To = d.id(), d.id(), d.id()
	r.BundleID = d.str()
	r.FromBefore, r.FromAfter, r.ToBefore, r.ToAfter = d.footprint(), d.footprint(), d.footprint(), d.footprint()
	r.DelegatedAtMillis = d.uvarint()
	w := &o.Witness
	w.Context, w.Session, w.From, w.To = d.id(), d.id(), d.id(), d.id()
	w.BundleID = d.str()
	w.LinkBoundary = d.boundary()
	w.Scope = d.scope()
	w.MovedFragments = d.strs()
	if d.present() {
		w.OwnershipReceipt = &OwnershipReceipt{Session: d.id(), ClaimID: d.uvarint(), FromOwner: d.str(),
			FromGeneration: d.uvarint(), ToOwner: d.str(), ToGeneration: d.uvarint(), Scope: d.scope()}
	}
	if d.present() {
		w.UpgradeRequest = d.upgradeRequest()
	}
	if d.present() {
		w.UpgradeSnapshot = d.upgradeSnapshot()
	}
	if d.present() {
		w.UpgradeExecution = d.execution()
	}
	o.FactSeq = d.uvarint()
	return o
}

// result fields are written behind a presence bitmap.
const (
	resErr = 1 << iota
	resBundle
	resOutcome
	resSession
	resExecution
	resUpgrade
	resRetention
	resConsumer
)

func (e *encoder) result(r *Result) {
	e.uvarint(r.Index)
	var mask uint8
	if r.Err != nil {
		mask |= resErr
	}
	if r.Bundle != nil {
		mask |= resBundle
	}
	if r.Outcome != nil {
		mask |= resOutcome
	}
	if r.Session != nil {
		mask |= resSession
	}
	if r.Execution != nil {
		mask |= resExecution
	}
	if r.Upgrade != nil {
		mask |= resUpgrade
	}
	if r.Retention != nil {
		mask |= resRetention
	}
	if r.Consumer != nil {
		mask |= resConsumer
	}
	e.u8(mask)
	if r.Err != nil {
		e.str(string(r.Err.Code))
		e.str(r.Err.Message)
	}
	if r.Bundle != nil {
		e.bundle(r.Bundle)
	}
	if r.Outcome != nil {
		e.outcome(r.Outcome)
	}
	if r.Session != nil {
		e.liveSession(r.Session)
	}
	if r.Execution != nil {
		e.execution(r.Execution)
	}
	if r.Upgrade != nil {
		e.upgradeSnapshot(r.Upgrade)
	}
	if r.Retention != nil {
		e.retention(r.Retention)
	}
	if r.Consumer != nil {
		e.str(r.Consumer.Name)
		e.uvarint(r.Consumer.Cursor)
	}
}

func (d *decoder) result() *Result {
	r := &Result{Index: d.uvarint()}
	// Every bit of the mask names a field now: a further field needs a
	// second mask byte behind a new format.
	mask := d.u8()
	if mask&resErr != 0 {
		r.Err = &Error{Code: Code(d.str()), Message: d.str()}
	}
	if mask&resBundle != 0 {
		r.Bundle = d.bundle()
	}
	if mask&resOutcome != 0 {
		r.Outcome = d.outcome()
	}
	if mask&resSession != 0 {
		r.Session = d.liveSession()
	}
	if mask&resExecution != 0 {
		r.Execution = d.execution()
	}
	if mask&resUpgrade != 0 {
		r.Upgrade = d.upgradeSnapshot()
	}
	if mask&resRetention != 0 {
		p := d.retention()
		r.Retention = &p
	}
	if mask&resConsumer != 0 {
		r.Consumer = &Consumer{Name: d.str(), Cursor: d.uvarint()}
	}
	return r
}
