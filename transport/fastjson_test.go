package transport

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http/httptest"
	"testing"

	"github.com/reconf/reconf/fsm"
)

// The hand-written encoders write exactly what encoding/json writes (the
// delegation answer's: TestDelegationAnswerMatchesEncodingJSON).
func TestFastJSONMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	str, list := jsonStrings(rng)
	for i := 0; i < 2000; i++ {
		fp := FootprintJSON{SchemaVersion: str(), NativeSessions: list(), DelegatedInSessions: list(), DelegatedOutSessions: list()}
		for _, v := range []any{IndexResponse{Index: rng.Uint64(), Deduped: rng.IntN(2) == 0},
			AuthorityFootprint{AuthorityID: str(), FootprintJSON: fp}} {
			want := encodeStd(t, v)
			rec := httptest.NewRecorder()
			writeJSON(rec, 200, v)
			if got := rec.Body.Bytes(); !bytes.Equal(got, want) {
				t.Fatalf("%T:\n got %s\nwant %s", v, got, want)
			}
		}
	}
}

// jsonStrings draws strings that exercise encoding/json's escaping (quotes,
// backslashes, HTML characters, control and non-UTF-8 bytes, U+2028) and
// lists of them: nil, empty or a few.
func jsonStrings(rng *rand.Rand) (str func() string, list func() []string) {
	strs := []string{"", "session-1f0e", "device_migration", "a\"b", `back\slash`, "<html>&", "tab\there", "ünïcödé", "\u2028", "\x01ctl", string([]byte{0xff, 'x'}), "plain"}
	str = func() string { return strs[rng.IntN(len(strs))] }
	list = func() []string {
		switch rng.IntN(4) {
		case 0:
			return nil
		case 1:
			return []string{}
		}
		out := make([]string, rng.IntN(4)+1)
		for i := range out {
			out[i] = str()
		}
		return out
	}
	return str, list
}

func encodeStd(t *testing.T, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// The batch answer is what encoding/json makes of the results.
func TestBatchResultsJSON(t *testing.T) {
	results := []batchResult{
		{Status: 200, Result: IndexResponse{Index: 7}},
		{Status: 200, Result: DelegationResponse{Receipt: ReceiptJSON{SessionID: "s"}, Index: 7}},
		{Status: 409, Error: &ErrorDetail{Code: "session_not_owned", Message: "session <x> not owned"}},
		{Status: 200, Result: LiveSessionJSON{SessionID: "s", Fragments: []FragmentJSON{}}},
	}
	rec := httptest.NewRecorder()
	writeBatchResults(rec, results)
	want := encodeStd(t, struct {
		Results []batchResult `json:"results"`
	}{results})
	if got := rec.Body.Bytes(); !bytes.Equal(got, want) {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// A delegation's answer rendered straight from the outcome is what
// encoding/json writes for the DelegationResponse built from it, in a single
// answer and inside a batch answer.
func TestDelegationAnswerMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	str, list := jsonStrings(rng)
	uuid := func() (u fsm.UUID) {
		for i := range u {
			u[i] = byte(rng.Uint32())
		}
		return u
	}
	sessions := func() []fsm.SessionID {
		switch rng.IntN(4) {
		case 0:
			return nil
		case 1:
			return []fsm.SessionID{}
		}
		out := make([]fsm.SessionID, rng.IntN(4)+1)
		for i := range out {
			out[i] = fsm.SessionID(uuid())
		}
		return out
	}
	fp := func() fsm.Footprint {
		return fsm.Footprint{SchemaVersion: str(), Native: sessions(), DelegatedIn: sessions(), DelegatedOut: sessions()}
	}
	scope := func() fsm.Scope {
		if rng.IntN(2) == 0 {
			return fsm.SessionScope()
		}
		return fsm.Scope{Kind: fsm.ScopeFragments, Fragments: list()}
	}
	for i := 0; i < 2000; i++ {
		o := &fsm.Outcome{
			Receipt: fsm.Receipt{Session: fsm.SessionID(uuid()), From: fsm.AuthorityID(uuid()), To: fsm.AuthorityID(uuid()), BundleID: str(),
				FromBefore: fp(), FromAfter: fp(), ToBefore: fp(), ToAfter: fp(), DelegatedAtMillis: rng.Uint64()},
			Witness: fsm.Witness{Context: fsm.ContextID(uuid()), Session: fsm.SessionID(uuid()), From: fsm.AuthorityID(uuid()), To: fsm.AuthorityID(uuid()),
				BundleID: str(), LinkBoundary: fsm.LinkBoundary{BundleID: str(), ProtocolIDs: list(), FragmentKeys: list(), Scope: scope()},
				Scope: scope(), MovedFragments: list()},
			FactSeq: rng.Uint64(),
		}
		if rng.IntN(10) == 0 {
			o.Witness.OwnershipReceipt = &fsm.OwnershipReceipt{Session: o.Witness.Session, FromOwner: str()} // not covered: falls back
		}
		a := delegationAnswer{o: o, index: rng.Uint64(), deduped: rng.IntN(2) == 0}
		want := encodeStd(t, a.response())
		rec := httptest.NewRecorder()
		writeJSON(rec, 200, a)
		if got := rec.Body.Bytes(); !bytes.Equal(got, want) {
			t.Fatalf("single answer:\n got %s\nwant %s", got, want)
		}
		got, err := appendAny(nil, a)
		if err != nil {
			t.Fatal(err)
		}
		if want := bytes.TrimSuffix(want, []byte("\n")); !bytes.Equal(got, want) {
			t.Fatalf("in a batch:\n got %s\nwant %s", got, want)
		}
	}
}

// BenchmarkDelegationAnswer renders a typical delegation answer (two
// footprints of ten sessions before and after) by building the
// DelegationResponse first ("built") and straight from the outcome
// ("direct").
func BenchmarkDelegationAnswer(b *testing.B) {
	var n byte
	id := func() (u fsm.UUID) { n++; u[15] = n; return u }
	fp := func() fsm.Footprint {
		f := fsm.Footprint{SchemaVersion: fsm.SchemaVersion}
		for range 10 {
			f.Native = append(f.Native, fsm.SessionID(id()))
		}
		return f
	}
	o := &fsm.Outcome{
		Receipt: fsm.Receipt{Session: fsm.SessionID(id()), From: fsm.AuthorityID(id()), To: fsm.AuthorityID(id()), BundleID: "device_migration",
			FromBefore: fp(), FromAfter: fp(), ToBefore: fp(), ToAfter: fp(), DelegatedAtMillis: 1764400000000},
		Witness: fsm.Witness{Context: fsm.ContextID(id()), Session: fsm.SessionID(id()), From: fsm.AuthorityID(id()), To: fsm.AuthorityID(id()),
			BundleID: "device_migration", LinkBoundary: fsm.LinkBoundary{BundleID: "device_migration", ProtocolIDs: []string{"p1"}, Scope: fsm.SessionScope()},
			Scope: fsm.SessionScope()},
		FactSeq: 42,
	}
	a := delegationAnswer{o: o, index: 1234}
	buf := make([]byte, 0, 8192)
	b.Run("built", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf, _ = appendAny(buf[:0], a.response())
		}
	})
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf, _ = appendAny(buf[:0], a)
		}
	})
}
