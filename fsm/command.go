package fsm

// Type identifies a command in the log. Values are part of the log format:
// never renumber or reuse one.
type Type uint8

const (
	TypeRegisterBundle  Type = 1
	TypeLinkBundles     Type = 2
	TypeExtendFootprint Type = 3
	TypeRemoveFootprint Type = 4
	TypeDelegate        Type = 5
	TypeOpenSession     Type = 6
	TypeHandoff         Type = 7
	TypeSetCapabilities Type = 8
	TypeSeedMembership  Type = 9
	TypeExecuteUpgrade  Type = 10
)

func (t Type) String() string {
	switch t {
	case TypeRegisterBundle:
		return "register_bundle"
	case TypeLinkBundles:
		return "link_bundles"
	case TypeExtendFootprint:
		return "extend_footprint"
	case TypeRemoveFootprint:
		return "remove_footprint"
	case TypeDelegate:
		return "delegate"
	case TypeOpenSession:
		return "open_session"
	case TypeHandoff:
		return "handoff"
	case TypeSetCapabilities:
		return "set_capabilities"
	case TypeSeedMembership:
		return "seed_membership"
	case TypeExecuteUpgrade:
		return "execute_upgrade"
	case TypeSetRetention:
		return "set_retention"
	case TypeAckConsumer:
		return "ack_consumer"
	case TypeDropConsumer:
		return "drop_consumer"
	case TypeConsistencyCheck:
		return "consistency_check"
	}
	return "unknown"
}

// Op is the payload of one command: one of the types below.
type Op interface {
	Type() Type
}

// Command is one operation as it travels in the log: an optional request id
// for exactly-once retries (domain 9.7) and the operation.
type Command struct {
	RequestID string
	Op        Op
}

// RegisterBundle stores a new bundle.
type RegisterBundle struct {
	Bundle Bundle
}

// LinkBundles composes Left and Right into a new bundle LinkedID.
type LinkBundles struct {
	Left, Right, LinkedID string
}

// ExtendFootprint records Session under Authority in Class, moving it out of
// the authority's other classes. No coherence check runs (upstream's
// footprint_extend; record_native_session when Class is Native).
type ExtendFootprint struct {
	Authority AuthorityID
	Session   SessionID
	Class     Class
}

// RemoveFootprint removes Session from every class of Authority's footprint.
type RemoveFootprint struct {
	Authority AuthorityID
	Session   SessionID
}

// Delegation is upstream's SessionDelegationTransfer plus the timestamp the
// leader stamped when it proposed the command.
type Delegation struct {
	Context        *ContextID // nil: the from authority's default context
	Session        SessionID
	From, To       AuthorityID
	BundleID       string
	LinkBoundary   *LinkBoundary // nil: the registered bundle's boundary
	Scope          *Scope        // nil: the boundary's scope
	UpgradeRequest *UpgradeRequest
	AtMillis       uint64
}

// Delegate moves a session from one authority to another, with its audit fact
// and optional runtime upgrade, as one command.
type Delegate struct {
	Delegation
}

// OpenSession claims the owner of a live session. BundleID, when set, scopes
// the session's routing boundary and fragments to that bundle.
type OpenSession struct {
	Session    SessionID
	OwnerLabel string
	BundleID   string
}

// Handoff moves a live session's owner and delegates it in one command. The
// caller proves it is the current owner with OwnerLabel and Generation.
type Handoff struct {
	Session        SessionID
	OwnerLabel     string
	Generation     uint64
	NextOwnerLabel string
	Transfer       Delegation
}

// SetCapabilities switches the replicated capability gate (domain 9.3).
type SetCapabilities struct {
	Reconfiguration bool
}

// SeedMembership resets a bundle's runtime-upgrade membership.
type SeedMembership struct {
	BundleID string
	Members  []string
}

// ExecuteUpgrade runs a standalone runtime upgrade of a bundle.
type ExecuteUpgrade struct {
	BundleID string
	Request  UpgradeRequest
}

func (*RegisterBundle) Type() Type  { return TypeRegisterBundle }
func (*LinkBundles) Type() Type     { return TypeLinkBundles }
func (*ExtendFootprint) Type() Type { return TypeExtendFootprint }
func (*RemoveFootprint) Type() Type { return TypeRemoveFootprint }
func (*Delegate) Type() Type        { return TypeDelegate }
func (*OpenSession) Type() Type     { return TypeOpenSession }
func (*Handoff) Type() Type         { return TypeHandoff }
func (*SetCapabilities) Type() Type { return TypeSetCapabilities }
func (*SeedMembership) Type() Type  { return TypeSeedMembership }
func (*ExecuteUpgrade) Type() Type  { return TypeExecuteUpgrade }

// Result is what applying one command produced: the error, or the fields the
// command type fills in. Results are replicated data (they are kept for
// request-id deduplication and snapshotted), so they hold values only.
type Result struct {
	Index     uint64 // Raft index of the entry that applied the command
	Err       *Error
	Bundle    *Bundle          // register, link
	Outcome   *Outcome         // delegate, handoff
	Session   *LiveSession     // open session
	Execution *Execution       // execute upgrade
	Upgrade   *UpgradeSnapshot // seed membership
	Retention *Retention       // set retention: the policy now in force
	Consumer  *Consumer        // ack consumer (its cursor now), drop consumer
	Deduped   bool             // answered from the request-id table, not applied again
}

// Receipt is upstream's DelegationReceipt.
type Receipt struct {
	Session           SessionID
	From, To          AuthorityID
	BundleID          string
	FromBefore        Footprint
	FromAfter         Footprint
	ToBefore          Footprint
	ToAfter           Footprint
	DelegatedAtMillis uint64
}

// OwnershipReceipt records a live owner transfer (telltale's
// OwnershipReceipt). ClaimID equals ToGeneration.
type OwnershipReceipt struct {
	Session        SessionID
	ClaimID        uint64
	FromOwner      string
	FromGeneration uint64
	ToOwner        string
	ToGeneration   uint64
	Scope          Scope
}

// Witness is upstream's AuraDelegationWitness. Coherence is always
// "preserved" for an accepted delegation and so is not stored.
type Witness struct {
	Context          ContextID
	Session          SessionID
	From, To         AuthorityID
	BundleID         string
	LinkBoundary     LinkBoundary
	Scope            Scope
	MovedFragments   []string
	OwnershipReceipt *OwnershipReceipt
	UpgradeRequest   *UpgradeRequest
	UpgradeSnapshot  *UpgradeSnapshot
	UpgradeExecution *Execution
}

// Outcome is the result of an accepted delegation or handoff.
type Outcome struct {
	Receipt Receipt
	Witness Witness
	FactSeq uint64 // sequence number of the audit fact this command appended
}

// Fact is a SessionDelegationFact in the replicated journal (domain 9.4).
type Fact struct {
	Seq             uint64
	Index           uint64
	Context         ContextID
	Session         SessionID
	From, To        AuthorityID
	BundleID        string
	TimestampMillis uint64
}

// LiveSession is the replicated owner record of a live session (domain 9.6).
// Fragments maps each fragment key of the session to its owner label; all of
// them move with the owner.
type LiveSession struct {
	Session         SessionID
	OwnerLabel      string
	Generation      uint64
	Scope           Scope
	RoutingBoundary LinkBoundary
	Fragments       []FragmentOwner // sorted by key
}

// FragmentOwner is one VM fragment record of a live session.
type FragmentOwner struct {
	Key   string
	Owner string
}
