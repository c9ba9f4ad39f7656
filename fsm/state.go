package fsm

import (
	"bytes"
	"slices"

	"github.com/google/btree"
)

// MaxRequestIDs bounds the request-id table (domain 9.7) of a state that has
// not switched to bounded mode (retention.go): when it is full the oldest
// entry, by apply order, is forgotten: every replica forgets the same one.
// Changing it changes replicated behaviour, so it is a constant. In bounded
// mode the table is bounded by time and bytes instead.
const MaxRequestIDs = 65536

const btreeDegree = 32

// State is the whole replicated controller: the pure, deterministic state
// machine. It is not safe for concurrent use; the raft adapter serialises
// access. Every collection is a copy-on-write B-tree or an append-only
// chunked list whose chunks a clone shares, so Clone is O(1) and a clone
// stays a stable point-in-time view while the original moves on.
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
	requests    *btree.BTreeG[requestKey] // the request-id table's lookup index
	requestQ    requestQueue              // its entries, in seq order, for deterministic expiry
	// The audit journal, append-only: factChunks then facts, in sequence
	// order (fact i, counting from 0, has Seq i+1). Every chunk holds
	// factChunk facts and is never written again, so clones share them and
	// a growing journal is never copied whole; facts is the newest, partial
	// chunk.
	factChunks [][]Fact
	facts      []Fact
	// factBase is the number of facts trimmed from the front of the journal
	// (a multiple of factChunk): factChunks[0] starts at Seq factBase+1.
	// factDead counts the chunk-list slots resliced away since the list was
	// last copied (retention.go).
	factBase uint64
	factDead int

	// Bounded state (retention.go, consumers.go): off in a state that came
	// from an older release until a retention or consumer command switches
	// it on, so that such a state replays its log exactly as before.
	bounded   bool
	policy    Retention
	clock     uint64 // the replicated clock: newest leader-stamped time applied, ms
	consumers *btree.BTreeG[Consumer]
	factsLost uint64 // facts trimmed that some consumer had not acknowledged
	// The request-id window by time: the stamps that date provisional
	// entries, the table's accounted bytes, and early evictions.
	reqMarks       []stampMark
	reqUnstamped   bool // an entry newer than the last mark has no stamp yet
	requestBytes   uint64
	evictedEarly   uint64
	lastEarlyStamp uint64 // stamp of the newest entry evicted early

	requestSeq      uint64
	reconfiguration bool
	applied         uint64
}

type bundleEntry struct {
	bundle  *Bundle
	upgrade *UpgradeSnapshot
	// boundary is BoundaryForBundle(bundle), computed once when the bundle
	// is stored (bundles never change). nil: compute it on use.
	boundary *LinkBoundary
	// key is the id of a lookup key, which has no bundle: a Get then needs
	// no allocation. Stored entries leave it empty.
	key string
}

// newBundleEntry is the stored form of a bundle and its upgrade snapshot.
func newBundleEntry(b *Bundle, up *UpgradeSnapshot) bundleEntry {
	boundary := BoundaryForBundle(b)
	return bundleEntry{bundle: b, upgrade: up, boundary: &boundary}
}

func (e bundleEntry) id() string {
	if e.bundle == nil {
		return e.key
	}
	return e.bundle.ID
}

// linkBoundary is the bundle's BoundaryForBundle. The result shares its
// slices with the stored entry: like every stored value, it is read only.
func (e bundleEntry) linkBoundary() LinkBoundary {
	if e.boundary != nil {
		return *e.boundary
	}
	return BoundaryForBundle(e.bundle)
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
	id   string
	seq  uint64
	at   uint64 // leader-stamped time of its command, ms; 0: dated by the next stamp (reqMarks)
	res  []byte // the result, in its binary form: what a retry is answered
	hash uint64 // requestHash(id)
}

// size is what the entry counts against the request-id budget: its id, its
// result and a fixed charge for the entry and its index key. It is computed
// from replicated data only, so every replica evicts the same entries.
func (e *requestEntry) size() uint64 { return uint64(len(e.id)+len(e.res)) + requestOverhead }

// requestOverhead is the fixed part of an entry's charge: the entry (64
// bytes) and its index key (16) with the trees' slack.
const requestOverhead = 96

// result decodes the remembered result.
func (e *requestEntry) result() Result {
	d := decoder{data: e.res}
	r := d.result()
	return *r
}

// encodeResult is the stored form of r.
func encodeResult(r *Result) []byte {
	var e encoder
	e.result(r)
	// Exactly its size: append's spare capacity would be memory the
	// budget does not count.
	return slices.Clip(bytes.Clone(e.buf))
}

// requestKey is a request id's entry in the lookup index: the id's hash and
// the entry's slot in requestQ. Ordering by a hash held in the index's own
// nodes, and not by the ids, spares a lookup a pointer chase to every id it
// compares, and the index holds no pointers for the garbage collector to
// scan. The hash never leaves the process: only the index's shape depends
// on it, and no output depends on that.
type requestKey struct {
	hash, slot uint64
}

// newRequestEntry is the table entry remembering result for id.
func newRequestEntry(id string, seq uint64, res []byte) requestEntry {
	return requestEntry{id: id, seq: seq, res: res, hash: requestHash(id)}
}

// requestHash is 64-bit FNV-1a: deterministic, so every replica (and every
// run) builds the same index.
func requestHash(id string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	return h
}

// lookupRequest finds id's entry in the request-id table; hash is
// requestHash(id). Ids that share a hash are told apart by their entries.
func (s *State) lookupRequest(id string, hash uint64) (found requestEntry, ok bool) {
	s.requests.AscendGreaterOrEqual(requestKey{hash: hash}, func(k requestKey) bool {
		if k.hash != hash {
			return false
		}
		if e := s.requestQ.at(k.slot); e.id == id {
			found, ok = *e, true
			return false
		}
		return true
	})
	return found, ok
}

// hasRequest reports whether id is in the request-id table.
func (s *State) hasRequest(id string, hash uint64) bool {
	_, ok := s.lookupRequest(id, hash)
	return ok
}

// addRequest stores e, newer than every entry, in the request-id table.
func (s *State) addRequest(e requestEntry) {
	s.requestBytes += e.size()
	s.requests.ReplaceOrInsert(requestKey{hash: e.hash, slot: s.requestQ.push(e)})
}

// forgetOldestRequest drops the oldest entry of the request-id table and
// returns it with its slot.
func (s *State) forgetOldestRequest() (requestEntry, uint64) {
	e, slot := s.requestQ.pop()
	s.requestBytes -= e.size()
	s.requests.Delete(requestKey{hash: e.hash, slot: slot})
	return e, slot
}

func lessBundle(a, b bundleEntry) bool    { return a.id() < b.id() }
func lessAuthority(a, b AuthorityID) bool { return compareAuthority(a, b) < 0 }
func lessSession(a, b SessionID) bool     { return compareSession(a, b) < 0 }
func lessLive(a, b *LiveSession) bool     { return compareSession(a.Session, b.Session) < 0 }
func lessRequestKey(a, b requestKey) bool {
	if a.hash != b.hash {
		return a.hash < b.hash
	}
	return a.slot < b.slot
}

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
		requests:        btree.NewG(btreeDegree, lessRequestKey),
		consumers:       btree.NewG(8, lessConsumer),
		policy:          DefaultRetention,
		reconfiguration: true,
	}
}

// New returns the initial state every replica starts from: the three default
// bundles, each with an empty upgrade snapshot, and the capability gate on.
func New() *State {
	s := newEmptyState()
	for _, b := range DefaultBundles() {
		s.bundles.ReplaceOrInsert(newBundleEntry(b, &UpgradeSnapshot{}))
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
	c.consumers = s.consumers.Clone()
	c.reqMarks = slices.Clip(s.reqMarks)
	s.requestQ.owned = false // the clone shares its chunks (see requestQueue)
	c.requestQ = s.requestQ
	// The clone's partial chunk and chunk list are clipped: its appends
	// reallocate them (copying at most factChunk facts and the list of
	// chunks, never the journal), while the original's appends write past
	// the end the clone can see. Full chunks are never written again.
	c.factChunks, c.facts = slices.Clip(s.factChunks), slices.Clip(s.facts)
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
	e, ok := s.lookupBundle(id)
	return e.bundle, ok
}

// lookupBundle looks a bundle up by id, without allocating.
func (s *State) lookupBundle(id string) (bundleEntry, bool) {
	return s.bundles.Get(bundleEntry{key: id})
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
	var stack [32]footprintItem
	items := s.appendFootprint(stack[:0], a)
	f, _ := footprintFromItems(items, make([]SessionID, len(items)))
	return f
}

// appendFootprint appends the authority's footprint entries, in session
// order, to dst.
func (s *State) appendFootprint(dst []footprintItem, a AuthorityID) []footprintItem {
	s.footprints.AscendGreaterOrEqual(footprintItem{auth: a}, func(it footprintItem) bool {
		if it.auth != a {
			return false
		}
		dst = append(dst, it)
		return true
	})
	return dst
}

// receiptFootprints returns the footprints of from and to before a
// delegation of sess and after it (sess then in fromClass and toClass), as
// footprintOf and withSessionClass would, with one allocation for all of
// their lists. Lists the delegation leaves alone are shared between before
// and after.
func (s *State) receiptFootprints(from, to AuthorityID, sess SessionID, fromClass, toClass Class) (fromBefore, fromAfter, toBefore, toAfter Footprint) {
	var stack [64]footprintItem
	items := s.appendFootprint(stack[:0], from)
	nFrom := len(items)
	size := nFrom + changedSize(items, sess, fromClass)
	if to != from {
		items = s.appendFootprint(items, to)
		size += len(items) - nFrom + changedSize(items[nFrom:], sess, toClass)
	}
	buf := make([]SessionID, size)
	fromBefore, buf = footprintFromItems(items[:nFrom], buf)
	fromAfter, buf = withSessionClass(fromBefore, sess, fromClass, buf)
	if to == from {
		return fromBefore, fromAfter, fromBefore, fromAfter
	}
	toBefore, buf = footprintFromItems(items[nFrom:], buf)
	toAfter, _ = withSessionClass(toBefore, sess, toClass, buf)
	return fromBefore, fromAfter, toBefore, toAfter
}

// changedSize is the number of sessions in the lists withSessionClass
// rebuilds when it puts sess in class c of the footprint of items: the list
// sess leaves, less sess, and the list it joins, plus sess.
func changedSize(items []footprintItem, sess SessionID, c Class) int {
	var n [DelegatedOut + 1]int
	var cur Class
	for i := range items {
		it := &items[i] // not a copy: cheaper for these 33-byte items
		if it.class >= Native && it.class <= DelegatedOut {
			n[it.class]++
			if it.sess == sess {
				cur = it.class
			}
		}
	}
	if cur == c {
		return 0
	}
	size := 0
	if cur != 0 {
		size += n[cur] - 1
	}
	if c >= Native && c <= DelegatedOut {
		size += n[c] + 1
	}
	return size
}

// footprintFromItems builds a footprint from one authority's entries (in
// session order), carving its lists out of buf; it returns the rest of buf.
// An empty class is a nil list, as appending would leave it.
func footprintFromItems(items []footprintItem, buf []SessionID) (Footprint, []SessionID) {
	var n [DelegatedOut + 1]int
	for i := range items {
		if c := items[i].class; c >= Native && c <= DelegatedOut {
			n[c]++
		}
	}
	f := newFootprint()
	if n[Native] > 0 {
		f.Native, buf = carve(buf, n[Native])
	}
	if n[DelegatedIn] > 0 {
		f.DelegatedIn, buf = carve(buf, n[DelegatedIn])
	}
	if n[DelegatedOut] > 0 {
		f.DelegatedOut, buf = carve(buf, n[DelegatedOut])
	}
	var i [DelegatedOut + 1]int
	for j := range items {
		it := &items[j]
		switch it.class {
		case Native:
			f.Native[i[Native]] = it.sess
		case DelegatedIn:
			f.DelegatedIn[i[DelegatedIn]] = it.sess
		case DelegatedOut:
			f.DelegatedOut[i[DelegatedOut]] = it.sess
		default:
			continue
		}
		i[it.class]++
	}
	return f, buf
}

// carve returns the first n elements of buf, clipped so that an append to
// them can never write into the rest, and the rest. A buf too short for n
// (never, when callers size it right) gives a fresh slice.
func carve(buf []SessionID, n int) (list, rest []SessionID) {
	if n > len(buf) {
		return make([]SessionID, n), buf
	}
	return buf[:n:n], buf[n:]
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
	return s.appendHolders(nil, sess)
}

// appendHolders appends holdersOf(sess) to dst.
func (s *State) appendHolders(dst []holderItem, sess SessionID) []holderItem {
	s.holders.AscendGreaterOrEqual(holderItem{sess: sess}, func(it holderItem) bool {
		if it.sess != sess {
			return false
		}
		dst = append(dst, it)
		return true
	})
	return dst
}

// LiveSession returns the owner record of a live session.
func (s *State) LiveSession(id SessionID) (*LiveSession, bool) {
	return s.live.Get(&LiveSession{Session: id})
}

// UpgradeSnapshot returns a bundle's runtime-upgrade snapshot (upstream's
// runtime_upgrade_snapshot, with its errors).
func (s *State) UpgradeSnapshot(bundleID string) (*UpgradeSnapshot, *Error) {
	e, ok := s.lookupBundle(bundleID)
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

// factChunk is the number of facts per full chunk of the journal.
const factChunk = 512

// factCount is the number of facts ever appended, trimmed ones included,
// which is also the newest one's Seq.
func (s *State) factCount() int {
	return int(s.factBase) + len(s.factChunks)*factChunk + len(s.facts)
}

// appendFact appends f to the journal as its next fact and returns its Seq.
func (s *State) appendFact(f Fact) uint64 {
	f.Seq = uint64(s.factCount()) + 1
	if len(s.facts) == cap(s.facts) && cap(s.facts) < factChunk {
		// Grow to at most a chunk; after a Clone (cap == len) this copies
		// the partial chunk, never the journal.
		grown := make([]Fact, len(s.facts), min(max(2*cap(s.facts), 16), factChunk))
		copy(grown, s.facts)
		s.facts = grown
	}
	s.facts = append(s.facts, f)
	if len(s.facts) >= factChunk {
		s.factChunks = append(s.factChunks, s.facts)
		s.facts = nil
	}
	return f.Seq
}

// eachFact calls fn for every retained fact in sequence order until fn
// returns false.
func (s *State) eachFact(fn func(f *Fact) bool) {
	for _, c := range s.factChunks {
		for i := range c {
			if !fn(&c[i]) {
				return
			}
		}
	}
	for i := range s.facts {
		if !fn(&s.facts[i]) {
			return
		}
	}
}

// Facts returns up to limit retained facts with a sequence number greater
// than after, in sequence order. limit <= 0 means no limit. Facts below
// FirstFactSeq are gone: a caller that must not skip any checks
// CheckFactsAfter first.
func (s *State) Facts(after uint64, limit int) []Fact {
	total := uint64(s.factCount())
	after = max(after, s.factBase)
	if after >= total {
		return nil
	}
	n := total - after
	if limit > 0 && n > uint64(limit) {
		n = uint64(limit)
	}
	out := make([]Fact, 0, n)
	for i := after - s.factBase; uint64(len(out)) < n; {
		var seg []Fact
		if c := i / factChunk; c < uint64(len(s.factChunks)) {
			seg = s.factChunks[c][i%factChunk:]
		} else {
			seg = s.facts[i-uint64(len(s.factChunks))*factChunk:]
		}
		seg = seg[:min(uint64(len(seg)), n-uint64(len(out)))]
		out = append(out, seg...)
		i += uint64(len(seg))
	}
	return out
}

// CheckFactsAfter reports facts_trimmed when a reader resuming after seq
// after would miss facts retention has dropped.
func (s *State) CheckFactsAfter(after uint64) *Error {
	if after < s.factBase {
		return factsTrimmed(after, s.factBase+1)
	}
	return nil
}

// FirstFactSeq is the sequence number of the oldest retained fact (one past
// the newest when none is retained).
func (s *State) FirstFactSeq() uint64 { return s.factBase + 1 }

// LastFactSeq is the sequence number of the newest fact, 0 if none.
func (s *State) LastFactSeq() uint64 { return uint64(s.factCount()) }

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
		Facts:             s.factCount(),
		RequestIDs:        s.requests.Len(),
		ViolatingSessions: s.violating.Len(),
	}
}
