package transport

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// flatCases are bodies for the fast decoders: the plain forms clients send,
// which the fast path must take, and near misses it must leave to
// decodeStrict (or decode to the very same value).
var flatCases = []struct {
	body  string
	plain bool // the fast path must accept it
}{
	{`{"session_id":"session-1","from_authority":"authority-a","to_authority":"authority-b","bundle_id":"device_migration","request_id":"r1"}`, true},
	{` { "session_id" : "s" , "class" : "native" } ` + "\n", true},
	{`{}`, true},
	{`{"operations":[{"op":"delegate","request":{"session_id":"s","from_authority":"a","to_authority":"b","bundle_id":"x"},"request_id":"r"}]}`, true},
	{`{"operations":[{"op":"footprint_add","authority":"authority-a","request":{"session_id":"s"}},{"op":"footprint_remove","authority":"a","session":"s","request_id":"r"}]}`, true},
	{`{"operations":[]}`, true},
	{`{"session_id":"s\u0041"}`, false},
	{`{"session_id":"s\"q"}`, false},
	{`{"Session_ID":"s"}`, false},
	{`{"session_id":"a","session_id":"b"}`, false},
	{`{"session_id":null}`, false},
	{`{"session_id":1}`, false},
	{`{"session_id":"s"} x`, false},
	{`{"session_id":"s"}{}`, false},
	{`{"session_id":"s",}`, false},
	{`{"session_id":"é"}`, false},
	{"{\"session_id\":\"a\x01\"}", false},
	{`{"unknown":"s"}`, false},
	{`{"link_boundary":{"bundle_id":"b"}}`, false},
	{`{"capability_scope":"session","session_id":"s"}`, false},
	{`{"operations":null}`, false},
	{`{"operations":[{"op":"delegate","request":{"link_boundary":{}}}]}`, false},
	{`{"operations":[{"op":"delegate","request":null}]}`, false},
	{`{"operations":[{"op":"delegate","request":"x"}]}`, false},
	{`{"operations":[{"op":"delegate","op":"delegate"}]}`, false},
	{`{"operations":[{"op":"delegate","request":{"a":"1","a":"2"}}]}`, true},
	{`{"operations":[{"op":"delegate"}],"operations":[]}`, false},
	{`{"operations":[{"op":"delegate"},]}`, false},
	{`[]`, false},
	{``, false},
	{`{`, false},
	{`{"session_id"`, false},
	{`{"session_id":"s"`, false},
}

// checkFlat decodes body with the fast path and decodeStrict into fresh
// values made by newV; whenever the fast path accepts, decodeStrict must
// accept too and agree. It reports whether the fast path accepted.
func checkFlat(t *testing.T, body []byte, newV func() any, fast func([]byte, any) bool) bool {
	t.Helper()
	got, want := newV(), newV()
	if !fast(body, got) {
		return false
	}
	if err := decodeStrict(bytes.NewReader(body), want); err != nil {
		t.Fatalf("fast path accepted %q, decodeStrict refused it: %v", body, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("fast path decoded %q to\n%+v\ndecodeStrict to\n%+v", body, got, want)
	}
	return true
}

var flatTargets = []struct {
	name string
	newV func() any
	fast func([]byte, any) bool
}{
	{"delegation", func() any { return new(DelegationRequest) }, decodeFast},
	{"footprint_add", func() any { return new(FootprintAddRequest) }, decodeFast},
	{"batch", func() any { return new(BatchRequest) }, func(b []byte, v any) bool { return decodeBatchFast(b, v.(*BatchRequest)) }},
}

func TestFlatDecodeAgreesWithDecodeStrict(t *testing.T) {
	for _, c := range flatCases {
		accepted := false
		for _, tg := range flatTargets {
			if checkFlat(t, []byte(c.body), tg.newV, tg.fast) {
				accepted = true
			}
		}
		if accepted != c.plain {
			t.Errorf("%q: fast path accepted=%v, want %v", c.body, accepted, c.plain)
		}
	}
}

// What the clients send (encoding/json's output of the request types, as
// Client and reconfctl send them) must take the fast path, or it is dead
// weight.
func TestFlatDecodeTakesClientBodies(t *testing.T) {
	del := DelegationRequest{SessionID: "session-1", FromAuthority: "authority-a", ToAuthority: "authority-b",
		BundleID: "device_migration", RequestID: "r-1"}
	fp := FootprintAddRequest{SessionID: "session-2", RequestID: "r-2"}
	batch := BatchRequest{Operations: []BatchOperation{NewBatchOperation("delegate", del), NewBatchOperation("footprint_add", fp)}}
	batch.Operations[1].Authority = "authority-c"
	for _, v := range []any{&del, &fp, &batch} {
		body, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		got := reflect.New(reflect.TypeOf(v).Elem()).Interface()
		ok := false
		if b, isBatch := got.(*BatchRequest); isBatch {
			ok = decodeBatchFast(body, b)
		} else {
			ok = decodeFast(body, got)
		}
		if !ok {
			t.Errorf("fast path refused a client's body %s", body)
		} else if !reflect.DeepEqual(got, v) {
			t.Errorf("fast path decoded %s to %+v, want %+v", body, got, v)
		}
	}
}

// FuzzFlatDecode: on any input the fast decoders either give up or agree
// with decodeStrict; they never panic.
func FuzzFlatDecode(f *testing.F) {
	for _, c := range flatCases {
		f.Add([]byte(c.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, tg := range flatTargets {
			checkFlat(t, body, tg.newV, tg.fast)
		}
	})
}
