package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/reconf/reconf/transport"
)

// The batch operation's request and answer, written and read by hand. The
// load generator shares the machine with the nodes it measures; with
// encoding/json, reading the answers of 1,000-delegation batches (only to
// learn each one's status) took three quarters of its CPU, and that CPU was
// missing from the nodes.

// appendBatchOp appends one operation of a POST /v1/batch body:
// {"op":op,"request":<req as JSON>}.
func appendBatchOp(b []byte, op string, req any) ([]byte, error) {
	r, err := json.Marshal(req)
	if err != nil {
		return b, err
	}
	name, err := json.Marshal(op)
	if err != nil {
		return b, err
	}
	b = append(b, `{"op":`...)
	b = append(b, name...)
	b = append(b, `,"request":`...)
	b = append(b, r...)
	return append(b, '}'), nil
}

// batchBody wraps operations appended by appendBatchOp, separated by
// commas, into {"operations":[...]}.
func batchBody(b []byte, ops []byte) []byte {
	b = append(b[:0], `{"operations":[`...)
	b = append(b, ops...)
	return append(b, "]}"...)
}

// scanBatchResults reads {"results":[{"status":N, ...}, ...]} and calls fn
// with each result's position, status and bytes (the whole result object:
// decode it for the error when the status is not 200).
func scanBatchResults(body []byte, fn func(j, status int, result []byte)) error {
	s := jsonScan{b: body}
	if !s.consume('{') {
		return errBadBatchAnswer
	}
	sawResults := false
	for first := true; !s.consume('}'); first = false {
		if !first && !s.consume(',') {
			return errBadBatchAnswer
		}
		name, ok := s.str()
		if !ok || !s.consume(':') {
			return errBadBatchAnswer
		}
		if string(name) != `"results"` {
			if !s.skipValue() {
				return errBadBatchAnswer
			}
			continue
		}
		if sawResults {
			return errBadBatchAnswer // twice: which one would count?
		}
		sawResults = true
		if !s.consume('[') {
			return errBadBatchAnswer
		}
		for j := 0; !s.consume(']'); j++ {
			if j > 0 && !s.consume(',') {
				return errBadBatchAnswer
			}
			s.space()
			start := s.i
			status, ok := s.resultStatus()
			if !ok {
				return errBadBatchAnswer
			}
			fn(j, status, body[start:s.i])
		}
	}
	if !sawResults || !s.end() {
		return errBadBatchAnswer
	}
	return nil
}

var errBadBatchAnswer = errors.New("batch answer: not {\"results\": [{\"status\": ...}, ...]}")

// batchError is a failed result's error, for the bench's error count.
func batchError(status int, result []byte) error {
	var r struct {
		Error *transport.ErrorDetail `json:"error"`
	}
	if err := json.Unmarshal(result, &r); err != nil || r.Error == nil {
		return &transport.APIError{Status: status, Code: transport.CodeInternal, Message: "batch result without an error: " + string(result)}
	}
	return &transport.APIError{Status: status, Code: r.Error.Code, Message: r.Error.Message}
}

// jsonScan walks JSON that is known to be well formed (the server's own
// answers) just far enough to find values by name; it checks the structure
// it walks, not every byte of the values it skips.
type jsonScan struct {
	b []byte
	i int
}

func (s *jsonScan) space() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\n' || s.b[s.i] == '\t' || s.b[s.i] == '\r') {
		s.i++
	}
}

func (s *jsonScan) consume(c byte) bool {
	s.space()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *jsonScan) end() bool {
	s.space()
	return s.i == len(s.b)
}

// str reads a string and returns it with its quotes, escapes as they are.
func (s *jsonScan) str() ([]byte, bool) {
	s.space()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	start := s.i
	s.i++
	for {
		k := bytes.IndexByte(s.b[s.i:], '"')
		if k < 0 {
			return nil, false
		}
		s.i += k + 1
		// The quote ends the string unless an odd run of backslashes escapes it.
		n := 0
		for p := s.i - 2; p > start && s.b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return s.b[start:s.i], true
		}
	}
}

// skipValue skips one value of any kind.
func (s *jsonScan) skipValue() bool {
	s.space()
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '"':
		_, ok := s.str()
		return ok
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				if _, ok := s.str(); !ok {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return true
				}
			}
			s.i++
		}
		return false
	}
	start := s.i // a number, true, false or null
	for s.i < len(s.b) && bytes.IndexByte([]byte(",}] \t\r\n"), s.b[s.i]) < 0 {
		s.i++
	}
	return s.i > start
}

// resultStatus reads one result object and returns its "status".
func (s *jsonScan) resultStatus() (int, bool) {
	if !s.consume('{') {
		return 0, false
	}
	status, seen := 0, false
	for first := true; !s.consume('}'); first = false {
		if !first && !s.consume(',') {
			return 0, false
		}
		name, ok := s.str()
		if !ok || !s.consume(':') {
			return 0, false
		}
		if string(name) != `"status"` {
			if !s.skipValue() {
				return 0, false
			}
			continue
		}
		s.space()
		start := s.i
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
		}
		n, err := strconv.Atoi(string(s.b[start:s.i]))
		if err != nil || seen {
			return 0, false
		}
		status, seen = n, true
	}
	return status, seen
}
