package transport

import "encoding/json"

// A fast path for decoding the hot requests: a delegation, a footprint add,
// and a batch of them. decodeStrict (encoding/json with reflection, and for
// a batch a second pass over every operation's request) is a fifth of a
// leader's CPU on batches. The scanners here accept only the plain form
// clients send: objects whose members are known names spelled exactly,
// each given once, with string values of printable ASCII and no escapes.
// Anything else (an escape, a null, a number, an unknown or repeated name,
// different case, trailing data, invalid JSON) makes them give up, and the
// caller decodes with decodeStrict, which then accepts or refuses the body
// and names the field exactly as before. When they do accept a body they
// produce what decodeStrict produces (FuzzFlatDecode checks that).

// flatField is one string member of a flat object and where its value goes.
type flatField struct {
	name string
	dst  *string
}

// flatScanner walks a byte slice; its methods return false to give up.
type flatScanner struct {
	b []byte
	i int
}

func (s *flatScanner) skipSpace() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// consume skips whitespace and then c.
func (s *flatScanner) consume(c byte) bool {
	s.skipSpace()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// peek skips whitespace and reports whether c is next (not consuming it).
func (s *flatScanner) peek(c byte) bool {
	s.skipSpace()
	return s.i < len(s.b) && s.b[s.i] == c
}

// plainString reads a string of printable ASCII with no escapes and returns
// its contents (a slice of the input).
func (s *flatScanner) plainString() ([]byte, bool) {
	if !s.consume('"') {
		return nil, false
	}
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return s.b[start : s.i-1], true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return nil, false
		}
		s.i++
	}
	return nil, false
}

// end reports whether only whitespace is left.
func (s *flatScanner) end() bool {
	s.skipSpace()
	return s.i == len(s.b)
}

// members reads the members of an object (from its '{' to its '}'),
// handing each name to member, which reads the value and returns false to
// give up. Names must be plain strings; member numbers each name it knows
// (0 to 63) so that a repeated one is refused, or returns untracked.
func (s *flatScanner) members(member func(name []byte) (bit int, ok bool)) bool {
	if !s.consume('{') {
		return false
	}
	if s.consume('}') {
		return true
	}
	var seen uint64
	for {
		name, ok := s.plainString()
		if !ok || !s.consume(':') {
			return false
		}
		bit, ok := member(name)
		if !ok {
			return false
		}
		if bit != untracked {
			if seen&(1<<bit) != 0 {
				return false
			}
			seen |= 1 << bit
		}
		if s.consume('}') {
			return true
		}
		if !s.consume(',') {
			return false
		}
	}
}

// untracked is what a members callback returns for a name it does not
// number.
const untracked = -1

// flatObject reads an object whose members are all among fields, with
// plain string values.
func (s *flatScanner) flatObject(fields []flatField) bool {
	return s.members(func(name []byte) (int, bool) { return s.flatMember(fields, name) })
}

// flatMember reads the value of the member called name into its field and
// returns the field's number; false if name is none of fields or the
// value is not a plain string.
func (s *flatScanner) flatMember(fields []flatField, name []byte) (int, bool) {
	for k := range fields {
		if fields[k].name == string(name) {
			v, ok := s.plainString()
			if ok {
				*fields[k].dst = string(v)
			}
			return k, ok
		}
	}
	return 0, false
}

// decodeFlat decodes body, a flat object of fields, as the whole input.
// false: not in the plain form; decode it with decodeStrict instead (the
// fields may have been partly set).
func decodeFlat(body []byte, fields ...flatField) bool {
	s := flatScanner{b: body}
	return s.flatObject(fields) && s.end()
}

// flatRequest is a request type with a flat plain form.
type flatRequest interface{ flatFields() []flatField }

// decodeFast decodes body into req when req has a flat form and body is in
// it. false: decode with decodeStrict (req may have been partly set).
func decodeFast(body []byte, req any) bool {
	f, ok := req.(flatRequest)
	return ok && decodeFlat(body, f.flatFields()...)
}

func (r *DelegationRequest) flatFields() []flatField {
	return []flatField{{"session_id", &r.SessionID}, {"from_authority", &r.FromAuthority},
		{"to_authority", &r.ToAuthority}, {"bundle_id", &r.BundleID}, {"context_id", &r.ContextID},
		{"request_id", &r.RequestID}}
}

func (r *FootprintAddRequest) flatFields() []flatField {
	return []flatField{{"session_id", &r.SessionID}, {"class", &r.Class}, {"request_id", &r.RequestID}}
}

// decodeBatchFast decodes a batch whose operations are flat objects with
// plain strings and whose requests are flat objects too (any names: the
// operation's own decoder checks them). false: decode with decodeStrict.
func decodeBatchFast(body []byte, req *BatchRequest) bool {
	s := flatScanner{b: body}
	ok := s.members(func(name []byte) (int, bool) {
		if string(name) != "operations" || !s.consume('[') {
			return 0, false
		}
		req.Operations = make([]BatchOperation, 0, min(len(body)/64+1, MaxBatchOperations+1))
		if s.consume(']') {
			return 0, true
		}
		for {
			req.Operations = append(req.Operations, BatchOperation{})
			if !s.batchOperation(&req.Operations[len(req.Operations)-1]) {
				return 0, false
			}
			if s.consume(']') {
				return 0, true
			}
			if !s.consume(',') {
				return 0, false
			}
		}
	})
	// A batch with no "operations" decodes to nil Operations either way.
	return ok && s.end()
}

func (s *flatScanner) batchOperation(o *BatchOperation) bool {
	fields := [...]flatField{{"op", &o.Op}, {"authority", &o.Authority}, {"session", &o.Session},
		{"bundle", &o.Bundle}, {"request_id", &o.RequestID}}
	return s.members(func(name []byte) (int, bool) {
		if string(name) == "request" {
			return len(fields), s.rawFlatObject(&o.Request)
		}
		return s.flatMember(fields[:], name)
	})
}

// rawFlatObject reads an object of plain string members and keeps its
// bytes, as json.RawMessage would. Its names are not checked here: the
// operation's own decoder reads the object again.
func (s *flatScanner) rawFlatObject(dst *json.RawMessage) bool {
	if !s.peek('{') {
		return false
	}
	start := s.i
	ok := s.members(func([]byte) (int, bool) {
		_, ok := s.plainString()
		return untracked, ok
	})
	if ok {
		*dst = s.b[start:s.i:s.i]
	}
	return ok
}
