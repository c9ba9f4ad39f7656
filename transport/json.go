package transport

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"slices"
	"strings"
)

// MarshalJSON writes "session" or {"fragments": [...]}.
func (s ScopeJSON) MarshalJSON() ([]byte, error) {
	if s.Session {
		return []byte(`"session"`), nil
	}
	return json.Marshal(struct {
		Fragments []string `json:"fragments"`
	}{nonNil(s.Fragments)})
}

// UnmarshalJSON reads "session" or {"fragments": [...]}, nothing else.
func (s *ScopeJSON) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var word string
		if err := json.Unmarshal(b, &word); err != nil {
			return err
		}
		if word != "session" {
			return scopeError(b)
		}
		*s = ScopeJSON{Session: true}
		return nil
	}
	var f struct {
		Fragments *[]string `json:"fragments"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil || f.Fragments == nil {
		return scopeError(b)
	}
	*s = ScopeJSON{Fragments: *f.Fragments}
	return nil
}

var scopeType = reflect.TypeOf(ScopeJSON{})

// scopeError is a *json.UnmarshalTypeError so that encoding/json fills in
// the path of the field being decoded (e.g. link_boundary.capability_scope),
// which describeJSONError names; a plain error loses it.
func scopeError(got []byte) error {
	v := string(got)
	if len(v) > 64 {
		v = v[:64] + "..."
	}
	return &json.UnmarshalTypeError{Value: v, Type: scopeType}
}

func sortedCopy(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out)
}

// decodeStrict reads exactly one JSON value into v, refusing unknown fields
// and trailing data, and turns encoding/json's errors into messages that
// name the field.
func decodeStrict(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describeJSONError(err)
	}
	if dec.More() {
		return errors.New("body: unexpected data after the JSON value")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("body: unexpected data after the JSON value")
	}
	return nil
}

func describeJSONError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	var maxErr interface{ Error() string }
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "body"
		}
		if typeErr.Type == scopeType {
			return badField(field, `must be "session" or {"fragments": [...]}, not %s`, typeErr.Value)
		}
		return badField(field, "must be %s, not JSON %s", jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
	case errors.As(err, &syntaxErr):
		return badField("body", "malformed JSON at byte %d: %v", syntaxErr.Offset, syntaxErr)
	case errors.Is(err, io.EOF):
		return badField("body", "is empty; a JSON object is required")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badField("body", "ends in the middle of a JSON value")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.TrimPrefix(err.Error(), "json: unknown field ")
		return badField(strings.Trim(name, `"`), "unknown field")
	case strings.Contains(err.Error(), "request body too large"):
		maxErr = err
		return badField("body", "%v", maxErr)
	}
	return badField("body", "%v", err)
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "slice", "array":
		return "an array"
	case "struct", "map", "ptr":
		return "an object"
	}
	return "a number"
}
