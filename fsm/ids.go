package fsm

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// A UUID is the 16 raw bytes shared by every identifier kind. Identifiers
// order by their bytes, which is also the order of their canonical text.
type UUID [16]byte

// AuthorityID names an authority: the owner of a session footprint.
type AuthorityID UUID

// SessionID names a session.
type SessionID UUID

// ContextID names the relational context a delegation fact is scoped to.
type ContextID UUID

const (
	authorityPrefix = "authority-"
	sessionPrefix   = "session-"
	contextPrefix   = "context-"
)

func (u UUID) String() string {
	var buf [36]byte
	return string(u.appendCanonical(buf[:0]))
}

// appendCanonical appends the 36-character hyphenated form to b.
func (u UUID) appendCanonical(b []byte) []byte {
	var buf [36]byte
	hex.Encode(buf[0:8], u[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], u[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], u[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], u[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:36], u[10:16])
	return append(b, buf[:]...)
}

// The text forms are built in one allocation (String) or none (Append):
// answers on the hot path render several ids each.

func (a AuthorityID) String() string {
	return string(a.Append(make([]byte, 0, len(authorityPrefix)+36)))
}
func (s SessionID) String() string { return string(s.Append(make([]byte, 0, len(sessionPrefix)+36))) }
func (c ContextID) String() string { return string(c.Append(make([]byte, 0, len(contextPrefix)+36))) }

// Append appends the id's text form, as String returns it, to b.
func (a AuthorityID) Append(b []byte) []byte {
	return UUID(a).appendCanonical(append(b, authorityPrefix...))
}

// Append appends the id's text form, as String returns it, to b.
func (s SessionID) Append(b []byte) []byte {
	return UUID(s).appendCanonical(append(b, sessionPrefix...))
}

// Append appends the id's text form, as String returns it, to b.
func (c ContextID) Append(b []byte) []byte {
	return UUID(c).appendCanonical(append(b, contextPrefix...))
}

// parseUUID accepts the canonical 36-character hyphenated form.
func parseUUID(text string) (UUID, error) {
	var u UUID
	if len(text) != 36 || text[8] != '-' || text[13] != '-' || text[18] != '-' || text[23] != '-' {
		return u, fmt.Errorf("%q is not a UUID (want xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", text)
	}
	compact := text[0:8] + text[9:13] + text[14:18] + text[19:23] + text[24:36]
	if _, err := hex.Decode(u[:], []byte(compact)); err != nil {
		return u, fmt.Errorf("%q is not a UUID: %v", text, err)
	}
	return u, nil
}

func parsePrefixed(text, prefix string) (UUID, error) {
	return parseUUID(strings.TrimPrefix(text, prefix))
}

// ParseAuthorityID accepts "authority-<uuid>" or a bare UUID.
func ParseAuthorityID(text string) (AuthorityID, error) {
	u, err := parsePrefixed(text, authorityPrefix)
	return AuthorityID(u), err
}

// ParseSessionID accepts "session-<uuid>" or a bare UUID.
func ParseSessionID(text string) (SessionID, error) {
	u, err := parsePrefixed(text, sessionPrefix)
	return SessionID(u), err
}

// ParseContextID accepts "context-<uuid>" or a bare UUID.
func ParseContextID(text string) (ContextID, error) {
	u, err := parsePrefixed(text, contextPrefix)
	return ContextID(u), err
}

func (a AuthorityID) MarshalText() ([]byte, error) { return []byte(a.String()), nil }
func (s SessionID) MarshalText() ([]byte, error)   { return []byte(s.String()), nil }
func (c ContextID) MarshalText() ([]byte, error)   { return []byte(c.String()), nil }

func (a *AuthorityID) UnmarshalText(b []byte) (err error) {
	*a, err = ParseAuthorityID(string(b))
	return err
}

func (s *SessionID) UnmarshalText(b []byte) (err error) {
	*s, err = ParseSessionID(string(b))
	return err
}

func (c *ContextID) UnmarshalText(b []byte) (err error) {
	*c, err = ParseContextID(string(b))
	return err
}

// compareUUID orders by bytes. Two big-endian words keep it cheap: it is the
// comparison on every index lookup.
func compareUUID(a, b UUID) int {
	if c := cmp.Compare(binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(b[:8])); c != 0 {
		return c
	}
	return cmp.Compare(binary.BigEndian.Uint64(a[8:]), binary.BigEndian.Uint64(b[8:]))
}

func compareAuthority(a, b AuthorityID) int { return compareUUID(UUID(a), UUID(b)) }
func compareSession(a, b SessionID) int     { return compareUUID(UUID(a), UUID(b)) }

// DefaultContextForAuthority derives the context a delegation is scoped to
// when the caller names none. Upstream hashes the authority bytes with its own
// hash; reconf only needs a deterministic, documented function, so it uses a
// name-based UUID (RFC 9562 version 8, SHA-256 over a fixed domain tag and the
// authority's 16 bytes). Every replica derives the same context.
func DefaultContextForAuthority(a AuthorityID) ContextID {
	const tag = "reconf.default-context.v1\x00"
	var msg [len(tag) + len(a)]byte
	copy(msg[:], tag)
	copy(msg[len(tag):], a[:])
	sum := sha256.Sum256(msg[:])
	var c ContextID
	copy(c[:], sum[:16])
	c[6] = (c[6] & 0x0f) | 0x80 // version 8
	c[8] = (c[8] & 0x3f) | 0x80 // RFC 9562 variant
	return c
}
