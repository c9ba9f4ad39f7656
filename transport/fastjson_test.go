package transport

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http/httptest"
	"testing"
)

// The hand-written encoders write exactly what encoding/json writes.
func TestFastJSONMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	strs := []string{"", "session-1f0e", "a\"b", `back\slash`, "<html>&", "tab\there", "ünïcödé", "\u2028", "\x01ctl", string([]byte{0xff, 'x'}), "plain"}
	str := func() string { return strs[rng.IntN(len(strs))] }
	list := func() []string {
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
	fp := func() FootprintJSON {
		return FootprintJSON{SchemaVersion: str(), NativeSessions: list(), DelegatedInSessions: list(), DelegatedOutSessions: list()}
	}
	scope := func() ScopeJSON {
		if rng.IntN(2) == 0 {
			return ScopeJSON{Session: true}
		}
		return ScopeJSON{Fragments: list()}
	}
	for i := 0; i < 2000; i++ {
		var bid *string
		if rng.IntN(2) == 0 {
			s := str()
			bid = &s
		}
		d := DelegationResponse{
			Receipt: ReceiptJSON{SchemaVersion: str(), SessionID: str(), FromAuthority: str(), ToAuthority: str(), BundleID: str(),
				FromBefore: fp(), FromAfter: fp(), ToBefore: fp(), ToAfter: fp(), DelegatedAt: TimeJSON{TsMs: rng.Uint64()}},
			Witness: WitnessJSON{ContextID: str(), SessionID: str(), FromAuthority: str(), ToAuthority: str(), BundleID: str(),
				LinkBoundary:    LinkBoundaryJSON{BundleID: bid, ProtocolIDs: list(), FragmentKeys: list(), CapabilityScope: scope()},
				CapabilityScope: scope(), MovedFragmentKeys: list(), Coherence: str()},
			FactSeq: rng.Uint64(), Index: rng.Uint64(), Deduped: rng.IntN(2) == 0,
		}
		if rng.IntN(10) == 0 {
			d.Witness.OwnershipReceipt = &OwnershipReceiptJSON{SessionID: str()} // not covered: falls back
		}
		a := d.Receipt.FromBefore
		for _, v := range []any{d, IndexResponse{Index: rng.Uint64(), Deduped: rng.IntN(2) == 0},
			AuthorityFootprint{AuthorityID: str(), FootprintJSON: a}} {
			want := encodeStd(t, v)
			rec := httptest.NewRecorder()
			writeJSON(rec, 200, v)
			if got := rec.Body.Bytes(); !bytes.Equal(got, want) {
				t.Fatalf("%T:\n got %s\nwant %s", v, got, want)
			}
		}
	}
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
