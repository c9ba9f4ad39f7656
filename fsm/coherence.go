package fsm

import (
	"fmt"
	"slices"
)

// violations is upstream's coherence check restricted to one session, given
// every authority that holds it (domain 3.7). Rule order: single active
// owner, then out-edge pairing.
func violations(sess SessionID, holders []holderItem) []string {
	active, in, out := countHolders(holders)
	var msgs []string
	if active > 1 {
		msgs = append(msgs, fmt.Sprintf("session %s has multiple active owners (%d)", sess, active))
	}
	if out > 0 {
		switch {
		case in == 0:
			msgs = append(msgs, fmt.Sprintf("session %s delegated out without delegated-in receiver", sess))
		case in > 1:
			msgs = append(msgs, fmt.Sprintf("session %s delegated in to %d authorities", sess, in))
		case out != 1:
			msgs = append(msgs, fmt.Sprintf("session %s delegated out by %d authorities", sess, out))
		}
	}
	return msgs
}

// coherent reports whether a session's holders satisfy every rule, without
// building messages: the hot path of every footprint change.
func coherent(holders []holderItem) bool {
	active, in, out := countHolders(holders)
	return active <= 1 && (out == 0 || (in == 1 && out == 1))
}

// countHolders counts a session's active holders (native or delegated-in),
// delegated-in holders and delegated-out holders. Within one footprint a
// session has one class, so each authority counts once.
func countHolders(holders []holderItem) (active, in, out int) {
	for i := range holders {
		switch holders[i].class {
		case Native:
			active++
		case DelegatedIn:
			active++
			in++
		case DelegatedOut:
			out++
		}
	}
	return active, in, out
}

// coherenceWith is the global check as it would read if sess's holders were
// candidate and everything else stayed: upstream's verify_coherence over a
// candidate that changed one session. It costs O(violating sessions), which
// is zero whenever a delegation can succeed (domain 9.5).
func (s *State) coherenceWith(sess SessionID, candidate []holderItem) []string {
	if s.violating.Len() == 0 || (s.violating.Len() == 1 && s.violating.Has(sess)) {
		if coherent(candidate) {
			return nil
		}
		return violations(sess, candidate)
	}
	var msgs []string
	placed := false
	s.violating.Ascend(func(other SessionID) bool {
		if !placed && compareSession(sess, other) <= 0 {
			msgs = append(msgs, violations(sess, candidate)...)
			placed = true
		}
		if other != sess {
			msgs = append(msgs, violations(other, s.holdersOf(other))...)
		}
		return true
	})
	if !placed {
		msgs = append(msgs, violations(sess, candidate)...)
	}
	return msgs
}

// setHolders replaces sess's holders with next, keeping the footprint tree,
// the per-session index and the violation set in step.
func (s *State) setHolders(sess SessionID, prev, next []holderItem) {
	s.setHoldersListed(sess, prev, next, nil)
}

// setHoldersListed is setHolders for a caller that knows listed (if not nil)
// is in the authorities tree already, which saves looking it up.
func (s *State) setHoldersListed(sess SessionID, prev, next []holderItem, listed *AuthorityID) {
	for _, h := range prev {
		if classIn(next, h.auth) == 0 {
			s.holders.Delete(h)
			s.footprints.Delete(footprintItem{auth: h.auth, sess: sess})
		}
	}
	for _, h := range next {
		switch classIn(prev, h.auth) {
		case h.class:
			continue
		case 0:
			if (listed == nil || h.auth != *listed) && !s.authorities.Has(h.auth) {
				s.authorities.ReplaceOrInsert(h.auth) // a footprint outlives its sessions
			}
		}
		s.holders.ReplaceOrInsert(h)
		s.footprints.ReplaceOrInsert(footprintItem{auth: h.auth, sess: sess, class: h.class})
	}
	if coherent(next) {
		if s.violating.Has(sess) {
			s.violating.Delete(sess)
		}
	} else {
		s.violating.ReplaceOrInsert(sess)
	}
}

// classIn returns the class auth holds in a holder list, 0 if none.
func classIn(holders []holderItem, auth AuthorityID) Class {
	for i := range holders {
		if holders[i].auth == auth { // by index: no copy of each item
			return holders[i].class
		}
	}
	return 0
}

// setClass sets auth to class (0 removes it) in holders, a list in
// authority order that the caller owns, and returns the list.
func setClass(holders []holderItem, sess SessionID, auth AuthorityID, class Class) []holderItem {
	i, found := slices.BinarySearchFunc(holders, auth, func(h holderItem, a AuthorityID) int { return compareAuthority(h.auth, a) })
	switch {
	case found && class != 0:
		holders[i].class = class
	case found:
		holders = slices.Delete(holders, i, i+1)
	case class != 0:
		holders = slices.Insert(holders, i, holderItem{sess: sess, auth: auth, class: class})
	}
	return holders
}
