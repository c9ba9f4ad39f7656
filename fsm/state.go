package fsm

import (
	"slices"

	"github.com/google/btree"
)

// MaxRequestIDs bounds the request-id table (domain 9.7). When it is full the
// oldest entry, by apply order, is forgotten: every replica forgets the same
// one. Changing it changes replicated behaviour, so it is a constant.
const MaxRequestIDs = 65536

const btreeDegree = 32

// State is the whole replicated controller: the pure, deterministic state
// machine. It is not safe for concurrent use; the raft adapter serialises
// access. Every collection is a copy-on-write B-tree, so Clone is O(1) and a
// clone stays a stable point-in-time view while the original moves on.
//
// Stored values (bundles, upgrade snapshots, live sessions, results) are
// immutable once stored: a change stores a new value. That is what makes the
// shared clones safe.
type State struct {
	bundles     *btree.BTreeG[bundleEntry]
	authorities *btree.BTreeG[AuthorityID]
	footprints  *btree.BTreeG[footprintItem] // (authority, session) → class
	holders     *btree.BTreeG[holderItem]    // (session, authority) → class: the per-session index
	violating   *btree.BTreeG[SessionID]     // sessions whose holders break a coherence rule
	live        *btree.BTreeG[*LiveSession]
	requests    *btree.BTreeG[requestEntry] // by id
	requestLRU  *btree.BTreeG[requestEntry] // by seq, for deterministic expiry
	facts       []Fact                      // append-only; facts[i].Seq == i+1

	requestSeq      uint64
	reconfiguration bool
	applied         uint64
}

type bundleEntry struct {
	bundle  *Bundle
	upgrade *UpgradeSnapshot
}

type footprintItem struct {
	auth  AuthorityID
	sess  SessionID
	class Class
}

type holderItem struct {
	sess  SessionID
	auth  AuthorityID
	class Class
}

type requestEntry struct {
	id     string
	seq    uint64
	result *Result
}

func lessBundle(a, b bundleEntry) bool      { return a.bundle.ID < b.bundle.ID }
func lessAuthority(a, b AuthorityID) bool   { return compareAuthority(a, b) < 0 }
func lessSession(a, b SessionID) bool       { return compareSession(a, b) < 0 }
func lessLive(a, b *LiveSession) bool       { return compareSession(a.Session, b.Session) < 0 }
func lessRequestID(a, b requestEntry) bool  { return a.id < b.id }
func lessRequestSeq(a, b requestEntry) bool { return a.seq < b.seq }

func lessFootprint(a, b footprintItem) bool {
	if c := compareAuthority(a.auth, b.auth); c != 0 {
		return c < 0
	}
	return compareSession(a.sess, b.sess) < 0
}

func lessHolder(a, b holderItem) bool {
	if c := compareSession(a.sess, b.sess); c != 0 {
		return c < 0
	}
	return compareAuthority(a.auth, b.auth) < 0
}

// newEmptyState is a state with no bundles and the gate on; restore fills it.
func newEmptyState() *State {
	return &State{
		bundles:         btree.NewG(btreeDegree, lessBundle),
		authorities:     btree.NewG(btreeDegree, lessAuthority),
		footprints:      btree.NewG(btreeDegree, lessFootprint),
		holders:         btree.NewG(btreeDegree, lessHolder),
		violating:       btree.NewG(btreeDegree, lessSession),
		live:            btree.NewG(btreeDegree, lessLive),
		requests:        btree.NewG(btreeDegree, lessRequestID),
		requestLRU:      btree.NewG(btreeDegree, lessRequestSeq),
		reconfiguration: true,
	}
}

// New returns the initial state every replica starts from: the three default
// bundles, each with an empty upgrade snapshot, and the capability gate on.
func New() *State {
	s := newEmptyState()
	for _, b := range DefaultBundles() {
		s.bundles.ReplaceOrInsert(bundleEntry{bundle: b, upgrade: &UpgradeSnapshot{}})
	}
	return s
}

// Clone returns an independent copy in O(1). Both may be used and changed
// afterwards without affecting each other, but not concurrently with Clone.
func (s *State) Clone() *State {
	c := *s
	c.bundles = s.bundles.Clone()
	c.authorities = s.authorities.Clone()
	c.footprints = s.footprints.Clone()
	c.holders = s.holders.Clone()
	c.violating = s.violating.Clone()
	c.live = s.live.Clone()
	c.requests = s.requests.Clone()
	c.requestLRU = s.requestLRU.Clone()
	c.facts = slices.Clip(s.facts) // an append on either side reallocates
	return &c
}

// Advance records that the entry at index carried no command for the state
// (a Raft configuration change, or a leader's term-start marker), so the
// applied index tracks every entry a replica has seen.
func (s *State) Advance(index uint64) {
	if index > s.applied {
		s.applied = index
	}
}

// AppliedIndex is the Raft index of the last entry applied.
func (s *State) AppliedIndex() uint64 { return s.applied }

// Reconfiguration reports the replicated capability gate.
func (s *State) Reconfiguration() bool { return s.reconfiguration }

// Bundle returns a registered bundle. The value must not be modified.
func (s *State) Bundle(id string) (*Bundle, bool) {
	e, ok := s.bundles.Get(bundleEntry{bundle: &Bundle{ID: id}})
	return e.bundle, ok
}

// Bundles lists every registered bundle in id order.
func (s *State) Bundles() []*Bundle {
	out := make([]*Bundle, 0, s.bundles.Len())
	s.bundles.Ascend(func(e bundleEntry) bool {
		out = append(out, e.bundle)
		return true
	})
	return out
}

// Footprint returns a copy of an authority's footprint; false if no
// operation has touched the authority.
func (s *State) Footprint(a AuthorityID) (Footprint, bool) {
	if !s.authorities.Has(a) {
		return Footprint{}, false
	}
	return s.footprintOf(a), true
}

// footprintOf is the authority's footprint, empty (schema v1) if unknown:
// upstream's "or new()" for receipts.
func (s *State) footprintOf(a AuthorityID) Footprint {
	f := newFootprint()
	s.footprints.AscendGreaterOrEqual(footprintItem{auth: a}, func(it footprintItem) bool {
		if it.auth != a {
			return false
		}
		switch it.class {
		case Native:
			f.Native = append(f.Native, it.sess)
		case DelegatedIn:
			f.DelegatedIn = append(f.DelegatedIn, it.sess)
		case DelegatedOut:
			f.DelegatedOut = append(f.DelegatedOut, it.sess)
		}
		return true
	})
	return f
}

// Authorities lists every authority that has a footprint, in id order.
func (s *State) Authorities() []AuthorityID {
	out := make([]AuthorityID, 0, s.authorities.Len())
	s.authorities.Ascend(func(a AuthorityID) bool {
		out = append(out, a)
		return true
	})
	return out
}

// holdersOf returns the per-session index entry: every authority holding the
// session, in authority order.
func (s *State) holdersOf(sess SessionID) []holderItem {
	var out []holderItem
	s.holders.AscendGreaterOrEqual(holderItem{sess: sess}, func(it holderItem) bool {
		if it.sess != sess {
			return false
		}
		out = append(out, it)
		return true
	})
	return out
}

// LiveSession returns the owner record of a live session.
func (s *State) LiveSession(id SessionID) (*LiveSession, bool) {
	return s.live.Get(&LiveSession{Session: id})
}

// UpgradeSnapshot returns a bundle's runtime-upgrade snapshot (upstream's
// runtime_upgrade_snapshot, with its errors).
func (s *State) UpgradeSnapshot(bundleID string) (*UpgradeSnapshot, *Error) {
	e, ok := s.bundles.Get(bundleEntry{bundle: &Bundle{ID: bundleID}})
	if !ok {
		return nil, errorf(CodeBundleNotFound, "runtime upgrade for bundle `%s` failed: bundle not found: %s", bundleID, bundleID)
	}
	if len(e.upgrade.ActiveMembers) == 0 {
		return nil, invalidUpgrade(bundleID, "active membership must be seeded before exporting a runtime-upgrade snapshot")
	}
	return e.upgrade, nil
}

// Coherence is upstream's verify_coherence: nil when coherent, else every
// violation message, sorted by session id, then by rule.
func (s *State) Coherence() []string {
	var out []string
	s.violating.Ascend(func(sess SessionID) bool {
		out = append(out, violations(sess, s.holdersOf(sess))...)
		return true
	})
	return out
}

// Facts returns up to limit facts with a sequence number greater than after,
// in sequence order. limit <= 0 means no limit.
func (s *State) Facts(after uint64, limit int) []Fact {
	if after >= uint64(len(s.facts)) {
		return nil
	}
	rest := s.facts[after:]
	if limit > 0 && len(rest) > limit {
		rest = rest[:limit]
	}
	return slices.Clone(rest)
}

// LastFactSeq is the sequence number of the newest fact, 0 if none.
func (s *State) LastFactSeq() uint64 { return uint64(len(s.facts)) }

// Stats counts what the state holds, for metrics and logs.
type Stats struct {
	Bundles, Authorities, FootprintEntries, LiveSessions, Facts, RequestIDs, ViolatingSessions int
}

// Stats reports the sizes of the state's collections.
func (s *State) Stats() Stats {
	return Stats{
		Bundles:           s.bundles.Len(),
		Authorities:       s.authorities.Len(),
		FootprintEntries:  s.footprints.Len(),
		LiveSessions:      s.live.Len(),
		Facts:             len(s.facts),
		RequestIDs:        s.requests.Len(),
		ViolatingSessions: s.violating.Len(),
	}
}
