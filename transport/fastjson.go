package transport

import (
	"encoding/json"
	"net/http"
	"strconv"
	"sync"

	"github.com/reconf/reconf/fsm"
)

// Hand-written JSON for the answers on the hot path (a delegation's answer,
// a footprint, an index). encoding/json spends most of its time in
// reflection on these; the functions here write the very same bytes (field
// order, null for nil slices, encoding/json's escaping, which
// fastjson_test.go checks against encoding/json) several times faster.
// Shapes they do not cover (a witness with an ownership receipt or a
// runtime upgrade) go through encoding/json as before.

// jsonAppender is a value that can append its own JSON encoding; ok false
// means "use encoding/json".
type jsonAppender interface {
	appendJSON(b []byte) (out []byte, ok bool)
}

// jsonBufs holds the buffers answers are rendered into (one batch answer
// can be megabytes: reusing them saves allocating, zeroing and growing).
var jsonBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// putJSONBuf returns a buffer to jsonBufs unless it grew too large to keep.
func putJSONBuf(bp *[]byte) {
	if cap(*bp) <= 8<<20 {
		jsonBufs.Put(bp)
	}
}

// writeFastJSON writes v with its appender, as writeJSON would with
// encoding/json (a trailing newline included). false: v has no appender for
// this value, nothing was written.
func writeFastJSON(w http.ResponseWriter, status int, v any) bool {
	a, ok := v.(jsonAppender)
	if !ok {
		return false
	}
	bp := jsonBufs.Get().(*[]byte)
	defer putJSONBuf(bp)
	out, ok := a.appendJSON((*bp)[:0])
	if !ok {
		return false
	}
	out = append(out, '\n')
	*bp = out
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(status)
	_, _ = w.Write(out)
	return true
}

// appendString appends s as encoding/json does (with HTML escaping).
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // the rare string that needs escaping
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

func appendUint(b []byte, v uint64) []byte { return strconv.AppendUint(b, v, 10) }

func (r IndexResponse) appendJSON(b []byte) ([]byte, bool) {
	b = append(b, `{"index":`...)
	b = appendUint(b, r.Index)
	if r.Deduped {
		b = append(b, `,"deduped":true`...)
	}
	return append(b, '}'), true
}

func (a AuthorityFootprint) appendJSON(b []byte) ([]byte, bool) {
	b = append(b, `{"authority_id":`...)
	b = appendString(b, a.AuthorityID)
	b = append(b, `,"schema_version":`...)
	b = appendString(b, a.SchemaVersion)
	b = append(b, `,"native_sessions":`...)
	b = appendStrings(b, a.NativeSessions)
	b = append(b, `,"delegated_in_sessions":`...)
	b = appendStrings(b, a.DelegatedInSessions)
	b = append(b, `,"delegated_out_sessions":`...)
	b = appendStrings(b, a.DelegatedOutSessions)
	return append(b, '}'), true
}

// appendAny appends v's JSON: with its appender when it has one that covers
// it, else with encoding/json.
func appendAny(b []byte, v any) ([]byte, error) {
	if a, ok := v.(jsonAppender); ok {
		if out, ok := a.appendJSON(b); ok {
			return out, nil
		}
	}
	j, err := json.Marshal(v)
	return append(b, j...), err
}

// delegationAnswer is a delegation's answer (DelegationResponse) rendered
// straight from the state machine's outcome: the appender writes the bytes
// encoding/json writes for DelegationResponse without building it, its
// footprints' string lists and its ids' strings first (most of a leader's
// allocations per delegation otherwise). Witnesses it does not cover go
// through MarshalJSON, which builds the DelegationResponse.
type delegationAnswer struct {
	o       *fsm.Outcome
	index   uint64
	deduped bool
}

func (d delegationAnswer) response() DelegationResponse {
	return DelegationResponse{Receipt: toReceiptJSON(&d.o.Receipt), Witness: toWitnessJSON(&d.o.Witness),
		FactSeq: d.o.FactSeq, Index: d.index, Deduped: d.deduped}
}

func (d delegationAnswer) MarshalJSON() ([]byte, error) { return json.Marshal(d.response()) }

func (d delegationAnswer) appendJSON(b []byte) ([]byte, bool) {
	w := &d.o.Witness
	if w.OwnershipReceipt != nil || w.UpgradeRequest != nil || w.UpgradeSnapshot != nil || w.UpgradeExecution != nil {
		return b, false
	}
	r := &d.o.Receipt
	b = append(b, `{"receipt":{"schema_version":`...)
	b = appendString(b, fsm.SchemaVersion)
	b = append(b, `,"session_id":"`...)
	b = append(r.Session.Append(b), `","from_authority":"`...)
	b = append(r.From.Append(b), `","to_authority":"`...)
	b = append(r.To.Append(b), `","bundle_id":`...)
	b = appendString(b, r.BundleID)
	b = append(b, `,"from_before":`...)
	b = appendFootprint(b, &r.FromBefore)
	b = append(b, `,"from_after":`...)
	b = appendFootprint(b, &r.FromAfter)
	b = append(b, `,"to_before":`...)
	b = appendFootprint(b, &r.ToBefore)
	b = append(b, `,"to_after":`...)
	b = appendFootprint(b, &r.ToAfter)
	b = append(b, `,"delegated_at":{"ts_ms":`...)
	b = appendUint(b, r.DelegatedAtMillis)
	b = append(b, `}},"witness":{"context_id":"`...)
	b = append(w.Context.Append(b), `","session_id":"`...)
	b = append(w.Session.Append(b), `","from_authority":"`...)
	b = append(w.From.Append(b), `","to_authority":"`...)
	b = append(w.To.Append(b), `","bundle_id":`...)
	b = appendString(b, w.BundleID)
	b = append(b, `,"link_boundary":{"bundle_id":`...)
	if w.LinkBoundary.BundleID == "" {
		b = append(b, "null"...)
	} else {
		b = appendString(b, w.LinkBoundary.BundleID)
	}
	b = append(b, `,"protocol_ids":`...)
	b = appendStrings(b, nonNil(w.LinkBoundary.ProtocolIDs))
	b = append(b, `,"fragment_keys":`...)
	b = appendStrings(b, nonNil(w.LinkBoundary.FragmentKeys))
	b = append(b, `,"capability_scope":`...)
	b = appendScope(b, w.LinkBoundary.Scope)
	b = append(b, `},"capability_scope":`...)
	b = appendScope(b, w.Scope)
	b = append(b, `,"moved_fragment_keys":`...)
	b = appendStrings(b, nonNil(w.MovedFragments))
	b = append(b, `,"coherence":"preserved"},"fact_seq":`...)
	b = appendUint(b, d.o.FactSeq)
	b = append(b, `,"index":`...)
	b = appendUint(b, d.index)
	if d.deduped {
		b = append(b, `,"deduped":true`...)
	}
	return append(b, '}'), true
}

// appendFootprint writes what encoding/json writes for toFootprintJSON(*f):
// every class a list, never null.
func appendFootprint(b []byte, f *fsm.Footprint) []byte {
	b = append(b, `{"schema_version":`...)
	b = appendString(b, f.SchemaVersion)
	b = append(b, `,"native_sessions":`...)
	b = appendSessions(b, f.Native)
	b = append(b, `,"delegated_in_sessions":`...)
	b = appendSessions(b, f.DelegatedIn)
	b = append(b, `,"delegated_out_sessions":`...)
	b = appendSessions(b, f.DelegatedOut)
	return append(b, '}')
}

func appendSessions(b []byte, ids []fsm.SessionID) []byte {
	b = append(b, '[')
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(id.Append(append(b, '"')), '"')
	}
	return append(b, ']')
}

// appendScope writes what encoding/json writes for toScopeJSON(s).
func appendScope(b []byte, s fsm.Scope) []byte {
	if s.Kind == fsm.ScopeSession {
		return append(b, `"session"`...)
	}
	b = append(b, `{"fragments":`...)
	return append(appendStrings(b, nonNil(s.Fragments)), '}')
}
