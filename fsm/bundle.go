package fsm

import "slices"

// SchemaVersion is the schema tag of footprints and bundles. Every footprint
// reconf reports carries it (domain 9.10; upstream leaves some empty).
const SchemaVersion = "aura.reconfiguration.v1"

// Class is the ownership class of a session within one footprint.
type Class uint8

const (
	Native       Class = 1
	DelegatedIn  Class = 2
	DelegatedOut Class = 3
)

func (c Class) String() string {
	switch c {
	case Native:
		return "native"
	case DelegatedIn:
		return "delegated_in"
	case DelegatedOut:
		return "delegated_out"
	}
	return "invalid"
}

// ParseClass reads the API spelling of a class.
func ParseClass(s string) (Class, bool) {
	switch s {
	case "native":
		return Native, true
	case "delegated_in":
		return DelegatedIn, true
	case "delegated_out":
		return DelegatedOut, true
	}
	return 0, false
}

// Footprint is a value copy of one ownership view: the sessions an authority
// (or a bundle) holds, by class, each list sorted. A session appears in at
// most one list.
type Footprint struct {
	SchemaVersion string
	Native        []SessionID
	DelegatedIn   []SessionID
	DelegatedOut  []SessionID
}

func newFootprint() Footprint { return Footprint{SchemaVersion: SchemaVersion} }

// Contains reports whether s is in any class, delegated_out included, as
// upstream's contains does.
func (f Footprint) Contains(s SessionID) bool {
	return f.ClassOf(s) != 0
}

// ClassOf returns the class of s, or 0 if the footprint does not hold it.
func (f Footprint) ClassOf(s SessionID) Class {
	for _, c := range []Class{Native, DelegatedIn, DelegatedOut} {
		if _, ok := slices.BinarySearchFunc(f.list(c), s, compareSession); ok {
			return c
		}
	}
	return 0
}

func (f Footprint) list(c Class) []SessionID {
	switch c {
	case Native:
		return f.Native
	case DelegatedIn:
		return f.DelegatedIn
	default:
		return f.DelegatedOut
	}
}

// withSessionClass returns a copy of f with sess in class c (0: in none).
// The lists that change are carved out of buf (see carve), the others are
// shared with f; it returns the rest of buf. A list that changes is never
// nil, even when it loses its only session. buf needs room for at most
// len(f's lists)+1 sessions.
func withSessionClass(f Footprint, sess SessionID, c Class, buf []SessionID) (Footprint, []SessionID) {
	out := Footprint{SchemaVersion: f.SchemaVersion}
	for _, cl := range [...]Class{Native, DelegatedIn, DelegatedOut} {
		list := f.list(cl)
		i, found := slices.BinarySearchFunc(list, sess, compareSession)
		switch {
		case cl == c && !found:
			var nl []SessionID
			nl, buf = carve(buf, len(list)+1)
			copy(nl, list[:i])
			nl[i] = sess
			copy(nl[i+1:], list[i:])
			list = nl
		case cl != c && found:
			var nl []SessionID
			nl, buf = carve(buf, len(list)-1)
			copy(nl, list[:i])
			copy(nl[i:], list[i+1:])
			list = nl
		}
		switch cl {
		case Native:
			out.Native = list
		case DelegatedIn:
			out.DelegatedIn = list
		default:
			out.DelegatedOut = list
		}
	}
	return out, buf
}

// AllSessions is the sorted union of the three classes.
func (f Footprint) AllSessions() []SessionID {
	out := make([]SessionID, 0, len(f.Native)+len(f.DelegatedIn)+len(f.DelegatedOut))
	out = append(out, f.Native...)
	out = append(out, f.DelegatedIn...)
	out = append(out, f.DelegatedOut...)
	slices.SortFunc(out, compareSession)
	return slices.CompactFunc(out, func(a, b SessionID) bool { return a == b })
}

// Equal compares two footprints class by class.
func (f Footprint) Equal(o Footprint) bool {
	return f.SchemaVersion == o.SchemaVersion && slices.Equal(f.Native, o.Native) &&
		slices.Equal(f.DelegatedIn, o.DelegatedIn) && slices.Equal(f.DelegatedOut, o.DelegatedOut)
}

// Bundle is a registered protocol bundle (upstream's ComposedBundle). A
// registered Bundle is never modified; operations that change bundles
// store new values.
type Bundle struct {
	ID          string
	ProtocolIDs []string // ordered list; duplicates allowed
	Exports     []string // sorted set of interface labels
	Imports     []string // sorted set
	Footprint   Footprint
}

// CompatibleWith holds when every import of b that b does not export itself
// is exported by o.
func (b *Bundle) CompatibleWith(o *Bundle) bool {
	for _, imp := range b.Imports {
		if _, self := slices.BinarySearch(b.Exports, imp); self {
			continue
		}
		if _, ok := slices.BinarySearch(o.Exports, imp); !ok {
			return false
		}
	}
	return true
}

// linkedBundle builds the composition of a and b under id, the way
// upstream's link does: protocol lists concatenated, interface sets unioned,
// footprints merged class by class (natives, then delegated-ins, then
// delegated-outs, a before b, the last class written winning).
func linkedBundle(a, b *Bundle, id string) *Bundle {
	classOf := map[SessionID]Class{}
	for _, c := range []Class{Native, DelegatedIn, DelegatedOut} {
		for _, src := range []*Bundle{a, b} {
			for _, s := range src.Footprint.list(c) {
				classOf[s] = c
			}
		}
	}
	return &Bundle{
		ID:          id,
		ProtocolIDs: append(slices.Clone(a.ProtocolIDs), b.ProtocolIDs...),
		Exports:     union(a.Exports, b.Exports),
		Imports:     union(a.Imports, b.Imports),
		Footprint:   footprintFromClasses(classOf),
	}
}

// footprintFromClasses turns a session→class map into a sorted Footprint.
func footprintFromClasses(classOf map[SessionID]Class) Footprint {
	f := newFootprint()
	for s, c := range classOf {
		switch c {
		case Native:
			f.Native = append(f.Native, s)
		case DelegatedIn:
			f.DelegatedIn = append(f.DelegatedIn, s)
		case DelegatedOut:
			f.DelegatedOut = append(f.DelegatedOut, s)
		}
	}
	slices.SortFunc(f.Native, compareSession)
	slices.SortFunc(f.DelegatedIn, compareSession)
	slices.SortFunc(f.DelegatedOut, compareSession)
	return f
}

// sessionsOverlap reports whether two sorted session lists share an element.
func sessionsOverlap(a, b []SessionID) bool {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch compareSession(a[i], b[j]) {
		case 0:
			return true
		case -1:
			i++
		default:
			j++
		}
	}
	return false
}

// DefaultBundles are the three bundles every replica starts with (domain
// section 6 and 9.9), generated upstream from the device enrollment, epoch
// rotation and guardian membership choreographies. Sorted by id.
func DefaultBundles() []*Bundle {
	return []*Bundle{
		{
			ID:          "device_migration",
			ProtocolIDs: []string{"aura.invitation.device_enrollment"},
			Exports:     []string{"device_migration.accept", "device_migration.request"},
			Imports:     []string{"device_migration.accept", "device_migration.request"},
			Footprint:   newFootprint(),
		},
		{
			ID:          "epoch_rotation_transfer",
			ProtocolIDs: []string{"aura.sync.epoch_rotation"},
			Exports:     []string{"epoch_rotation.confirmation", "epoch_rotation.proposal"},
			Imports:     []string{"epoch_rotation.confirmation", "epoch_rotation.proposal"},
			Footprint:   newFootprint(),
		},
		{
			ID:          "guardian_handoff",
			ProtocolIDs: []string{"aura.recovery.guardian_membership_change"},
			Exports:     []string{"guardian_handoff.proposal", "guardian_handoff.vote"},
			Imports:     []string{"guardian_handoff.proposal", "guardian_handoff.vote"},
			Footprint:   newFootprint(),
		},
	}
}
