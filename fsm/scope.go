package fsm

import (
	"slices"
	"strings"
)

// ScopeKind distinguishes a capability over a whole session from one over a
// set of fragments.
type ScopeKind uint8

const (
	// ScopeSession is authority over the whole runtime session.
	ScopeSession ScopeKind = 1
	// ScopeFragments is authority over the named fragment keys only.
	ScopeFragments ScopeKind = 2
)

// Scope is a session owner's capability scope (upstream's
// SessionOwnerCapabilityScope). Fragments is a sorted set and is empty for
// ScopeSession. Two scopes are equal when kind and key set are equal.
type Scope struct {
	Kind      ScopeKind
	Fragments []string
}

// SessionScope is the full-session scope.
func SessionScope() Scope { return Scope{Kind: ScopeSession} }

// FragmentScope is a fragment scope over keys (sorted and deduplicated here).
func FragmentScope(keys ...string) Scope {
	return Scope{Kind: ScopeFragments, Fragments: sortedSet(keys)}
}

// Equal reports whether two scopes grant the same authority. A scope read
// from a command may list its fragments in any order, with repeats, so they
// are compared as sets.
func (s Scope) Equal(o Scope) bool {
	if s.Kind != o.Kind {
		return false
	}
	if isSortedSet(s.Fragments) && isSortedSet(o.Fragments) {
		return slices.Equal(s.Fragments, o.Fragments) // the usual case: no copies
	}
	return slices.Equal(sortedSet(s.Fragments), sortedSet(o.Fragments))
}

// isSortedSet reports whether keys is strictly increasing: what sortedSet
// would return, up to nil for empty.
func isSortedSet(keys []string) bool {
	for i := 1; i < len(keys); i++ {
		if keys[i-1] >= keys[i] {
			return false
		}
	}
	return true
}

// String renders the scope the way upstream's Debug output reads, for error
// messages: Session or Fragments({"bundle:x"}).
func (s Scope) String() string {
	if s.Kind == ScopeSession {
		return "Session"
	}
	keys := sortedSet(s.Fragments) // a set: sorted, no repeats
	quoted := make([]string, len(keys))
	for i, k := range keys {
		quoted[i] = debugQuote(k)
	}
	return "Fragments({" + strings.Join(quoted, ", ") + "})"
}

// debugQuote quotes s the way Rust's {:?} does for the characters a valid
// reconf name can hold that need it: backslash and double quote.
func debugQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// BundleFragmentKey is the fragment key of a bundle: "bundle:<id>".
func BundleFragmentKey(bundleID string) string { return "bundle:" + bundleID }

// ProtocolFragmentKey is the fragment key of a protocol: "protocol:<id>".
func ProtocolFragmentKey(protocolID string) string { return "protocol:" + protocolID }

// LinkBoundary is the routing and capability boundary of one bundle or
// fragment set (upstream's AuraLinkBoundary). BundleID is empty when the
// boundary names no bundle; reconf never accepts an empty bundle id, so the
// empty string is unambiguous.
type LinkBoundary struct {
	BundleID     string
	ProtocolIDs  []string // sorted set
	FragmentKeys []string // sorted set
	Scope        Scope
}

// BoundaryForScope is upstream's for_scope.
func BoundaryForScope(s Scope) LinkBoundary {
	b := LinkBoundary{Scope: s}
	if s.Kind == ScopeFragments {
		b.FragmentKeys = slices.Clone(s.Fragments)
	}
	return b
}

// BoundaryForBundle is upstream's for_bundle: the registered bundle's
// protocols, its fragment key and a fragment scope over that key.
func BoundaryForBundle(b *Bundle) LinkBoundary {
	key := BundleFragmentKey(b.ID)
	return LinkBoundary{
		BundleID:     b.ID,
		ProtocolIDs:  sortedSet(b.ProtocolIDs),
		FragmentKeys: []string{key},
		Scope:        FragmentScope(key),
	}
}

// BoundaryForBundleID is upstream's for_bundle_id: like BoundaryForBundle
// but with no protocol ids, because only the id is known.
func BoundaryForBundleID(id string) LinkBoundary {
	key := BundleFragmentKey(id)
	return LinkBoundary{BundleID: id, FragmentKeys: []string{key}, Scope: FragmentScope(key)}
}

// IsAllowedBy reports whether a capability of scope s covers this boundary.
func (b LinkBoundary) IsAllowedBy(s Scope) bool {
	if s.Kind == ScopeSession {
		return true
	}
	if len(b.FragmentKeys) == 0 {
		return false
	}
	for _, k := range b.FragmentKeys {
		if _, ok := slices.BinarySearch(s.Fragments, k); !ok {
			return false
		}
	}
	return true
}

func (b LinkBoundary) equal(o LinkBoundary) bool {
	return b.BundleID == o.BundleID && slices.Equal(b.ProtocolIDs, o.ProtocolIDs) &&
		slices.Equal(b.FragmentKeys, o.FragmentKeys) && b.Scope.Equal(o.Scope)
}

// sortedSet returns a sorted, deduplicated copy of in (nil for empty input).
func sortedSet(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out)
}

// union returns the sorted set union of two sorted sets.
func union(a, b []string) []string {
	out := make([]string, 0, len(a)+len(b))
	out = append(out, a...)
	out = append(out, b...)
	return sortedSet(out)
}
