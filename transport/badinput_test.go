package transport_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/reconf/reconf/transport"
)

// Bad input to every write route is refused at the edge, on the leader and
// on a follower alike: 400, code invalid_argument, a message that names the
// offending field, and no log entry (the leader's applied index and state
// digest are unchanged). Each route's well-formed base request gets past
// input checking, so every case fails for the one thing it changes.

// badCase is one bad request and the field its error must name.
type badCase struct {
	name   string
	method string
	path   string
	body   []byte
	field  string
}

// del marks a key to delete in a mutation.
type delMarker struct{}

var del = delMarker{}

// mutate returns base (a JSON object) with the value at a dotted path
// replaced ("a.b.0.c" walks objects and arrays), or deleted for del.
func mutate(t testing.TB, base map[string]any, path string, v any) []byte {
	t.Helper()
	var m map[string]any
	b, _ := json.Marshal(base)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	keys := strings.Split(path, ".")
	var cur any = m
	for i, k := range keys {
		last := i == len(keys)-1
		switch c := cur.(type) {
		case map[string]any:
			if last {
				if _, ok := v.(delMarker); ok {
					delete(c, k)
				} else {
					c[k] = v
				}
			} else {
				cur = c[k]
			}
		case []any:
			var j int
			fmt.Sscan(k, &j)
			if last {
				c[j] = v
			} else {
				cur = c[j]
			}
		default:
			t.Fatalf("mutate %s: %s is not a container", path, strings.Join(keys[:i], "."))
		}
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

type fieldCase struct {
	name  string
	path  string // dotted path in the body
	value any
	field string // what the message must name
}

type badRoute struct {
	method, path string
	base         map[string]any // nil: the route takes no body
	requestID    bool           // the body carries request_id
	badPaths     []badCase      // the route with bad path parameters (method and base body filled in)
	bodies       []badCase      // whole bad bodies (method and path filled in)
	fields       []fieldCase
}

func TestBadInputRejected(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	l := c.waitLeader()
	f := c.follower(l)

	auth, auth2, sess, native := newAuthority(), newAuthority(), newSession(), newSession()
	long := strings.Repeat("x", 300)                 // over the 256-byte name limit
	longID := strings.Repeat("r", 129)               // over the 128-byte request id limit
	badUUID := "session-not-a-uuid"                  // wrong shape
	badHex := "123e4567-e89b-12d3-a456-42661417400g" // right shape, not hex
	delegationBase := map[string]any{
		"session_id": sess, "from_authority": auth, "to_authority": auth2, "bundle_id": "device_migration",
	}
	upgradeBase := map[string]any{
		"upgrade_id": "upgrade-1",
		"plan":       map[string]any{"plan_id": "plan-1", "steps": []any{map[string]any{"step_id": "step-1", "next_members": []any{"member-b"}}}},
		"compatibility": map[string]any{
			"ownership_continuity_required": true, "pending_effect_treatment": "preserve_pending",
			"canonical_publication_continuity": "preserve_canonical_truth", "execution_constraint": "preserve_bundle_profile",
		},
		"carried_publication_ids": []any{}, "invalidated_publication_ids": []any{},
		"carried_obligation_ids": []any{}, "invalidated_obligation_ids": []any{},
	}

	routes := []badRoute{
		{
			method: http.MethodPost, path: "/v1/bundles", requestID: true,
			base: map[string]any{
				"bundle_id": "bad-input-bundle", "protocol_ids": []any{"p.bad"}, "exports": []any{"x.out"}, "imports": []any{"x.in"},
				"session_footprint": map[string]any{"native_sessions": []any{native}, "delegated_in_sessions": []any{}, "delegated_out_sessions": []any{}},
			},
			fields: []fieldCase{
				{"empty bundle_id", "bundle_id", "", "bundle_id"},
				{"missing bundle_id", "bundle_id", del, "bundle_id"},
				{"oversized bundle_id", "bundle_id", long, "bundle_id"},
				{"control character in bundle_id", "bundle_id", "a\x01b", "bundle_id"},
				{"bundle_id number", "bundle_id", 12, "bundle_id"},
				{"protocol_ids string", "protocol_ids", "p", "protocol_ids"},
				{"empty protocol id", "protocol_ids", []any{""}, "protocol_ids[0]"},
				{"oversized export", "exports", []any{long}, "exports[0]"},
				{"import number", "imports", []any{5}, "imports"},
				{"bad native session", "session_footprint.native_sessions", []any{badUUID}, "session_footprint.native_sessions[0]"},
				{"non-hex delegated_in session", "session_footprint.delegated_in_sessions", []any{badHex}, "session_footprint.delegated_in_sessions[0]"},
				{"session in two classes", "session_footprint.delegated_out_sessions", []any{native}, "session_footprint"},
				{"footprint string", "session_footprint", "x", "session_footprint"},
				{"unknown footprint field", "session_footprint.owner", "me", "owner"},
			},
		},
		{
			method: http.MethodPost, path: "/v1/bundles/link", requestID: true,
			base: map[string]any{"left": "device_migration", "right": "epoch_rotation_transfer", "linked_id": "bad-input-link"},
			fields: []fieldCase{
				{"empty left", "left", "", "left"},
				{"oversized right", "right", long, "right"},
				{"linked_id number", "linked_id", 1, "linked_id"},
				{"missing linked_id", "linked_id", del, "linked_id"},
			},
		},
		{
			method: http.MethodPost, path: "/v1/footprints/" + auth + "/sessions", requestID: true,
			base: map[string]any{"session_id": sess, "class": "native"},
			badPaths: []badCase{
				{name: "authority not a UUID", path: "/v1/footprints/not-a-uuid/sessions", field: "authority"},
				{name: "authority with a session prefix", path: "/v1/footprints/" + strings.Replace(auth, "authority-", "session-", 1) + "/sessions", field: "authority"},
				{name: "authority not hex", path: "/v1/footprints/" + badHex + "/sessions", field: "authority"},
				{name: "oversized authority", path: "/v1/footprints/" + long + "/sessions", field: "authority"},
			},
			fields: []fieldCase{
				{"empty session_id", "session_id", "", "session_id"},
				{"bad session_id", "session_id", badUUID, "session_id"},
				{"oversized session_id", "session_id", "session-" + long, "session_id"},
				{"session_id number", "session_id", 7, "session_id"},
				{"unknown class", "class", "owned", "class"},
				{"class number", "class", 1, "class"},
			},
		},
		{
			method: http.MethodDelete, path: "/v1/footprints/" + auth + "/sessions/" + sess,
			badPaths: []badCase{
				{name: "authority not a UUID", path: "/v1/footprints/authority-1234/sessions/" + sess, field: "authority"},
				{name: "session not a UUID", path: "/v1/footprints/" + auth + "/sessions/" + badUUID, field: "session"},
				{name: "oversized session", path: "/v1/footprints/" + auth + "/sessions/" + long, field: "session"},
				{name: "oversized request_id", path: "/v1/footprints/" + auth + "/sessions/" + sess + "?request_id=" + longID, field: "request_id"},
				{name: "control character in request_id", path: "/v1/footprints/" + auth + "/sessions/" + sess + "?request_id=" + url.QueryEscape("a\nb"), field: "request_id"},
			},
		},
		{
			method: http.MethodPost, path: "/v1/delegations", requestID: true, base: delegationBase,
			fields: []fieldCase{
				{"empty session_id", "session_id", "", "session_id"},
				{"bad session_id", "session_id", badUUID, "session_id"},
				{"session_id number", "session_id", 1, "session_id"},
				{"missing from_authority", "from_authority", del, "from_authority"},
				{"bad from_authority", "from_authority", "authority-xyz", "from_authority"},
				{"non-hex to_authority", "to_authority", badHex, "to_authority"},
				{"empty bundle_id", "bundle_id", "", "bundle_id"},
				{"oversized bundle_id", "bundle_id", long, "bundle_id"},
				{"bad context_id", "context_id", "context-nope", "context_id"},
				{"capability_scope number", "capability_scope", 5, "capability_scope"},
				{"capability_scope unknown word", "capability_scope", "everything", "capability_scope"},
				{"capability_scope fragments string", "capability_scope", map[string]any{"fragments": "x"}, "capability_scope"},
				{"empty capability fragment", "capability_scope", map[string]any{"fragments": []any{""}}, "capability_scope.fragments[0]"},
				{"link_boundary protocol_ids string", "link_boundary", map[string]any{"bundle_id": "device_migration", "protocol_ids": "x", "fragment_keys": []any{}, "capability_scope": "session"}, "link_boundary.protocol_ids"},
				{"link_boundary bad scope", "link_boundary", map[string]any{"bundle_id": "device_migration", "protocol_ids": []any{}, "fragment_keys": []any{}, "capability_scope": "all"}, "link_boundary.capability_scope"},
				{"link_boundary empty fragment key", "link_boundary", map[string]any{"bundle_id": "device_migration", "protocol_ids": []any{}, "fragment_keys": []any{""}, "capability_scope": "session"}, "link_boundary.fragment_keys"},
				{"link_boundary oversized bundle_id", "link_boundary", map[string]any{"bundle_id": long, "protocol_ids": []any{}, "fragment_keys": []any{}, "capability_scope": "session"}, "link_boundary.bundle_id"},
				{"upgrade bad treatment", "runtime_upgrade_request", mutateMap(upgradeBase, "compatibility", "pending_effect_treatment", "keep"), "runtime_upgrade_request.compatibility.pending_effect_treatment"},
				{"upgrade empty upgrade_id", "runtime_upgrade_request", mutateMap(upgradeBase, "", "upgrade_id", ""), "runtime_upgrade_request.upgrade_id"},
				{"upgrade steps string", "runtime_upgrade_request", mutateMap(upgradeBase, "plan", "steps", "x"), "runtime_upgrade_request.plan.steps"},
			},
		},
		{
			method: http.MethodPost, path: "/v1/sessions", requestID: true,
			base: map[string]any{"session_id": sess, "owner_label": "owner-a", "bundle_id": "device_migration"},
			fields: []fieldCase{
				{"bad session_id", "session_id", badUUID, "session_id"},
				{"empty owner_label", "owner_label", "", "owner_label"},
				{"oversized owner_label", "owner_label", long, "owner_label"},
				{"owner_label number", "owner_label", 5, "owner_label"},
				{"oversized bundle_id", "bundle_id", long, "bundle_id"},
			},
		},
		{
			method: http.MethodPost, path: "/v1/sessions/" + sess + "/handoff", requestID: true,
			base: map[string]any{"owner_label": "owner-a", "generation": 1, "next_owner_label": "owner-b", "transfer": delegationBase},
			badPaths: []badCase{
				{name: "session not a UUID", path: "/v1/sessions/" + badUUID + "/handoff", field: "id"},
				{name: "oversized session", path: "/v1/sessions/" + long + "/handoff", field: "id"},
			},
			fields: []fieldCase{
				{"empty owner_label", "owner_label", "", "owner_label"},
				{"oversized next_owner_label", "next_owner_label", long, "next_owner_label"},
				{"generation string", "generation", "1", "generation"},
				{"negative generation", "generation", -1, "generation"},
				{"transfer string", "transfer", "x", "transfer"},
				{"bad transfer session", "transfer.session_id", badUUID, "transfer.session_id"},
				{"empty transfer from", "transfer.from_authority", "", "transfer.from_authority"},
				{"empty transfer bundle", "transfer.bundle_id", "", "transfer.bundle_id"},
				{"transfer scope number", "transfer.capability_scope", 5, "transfer.capability_scope"},
				{"request_id inside transfer", "transfer.request_id", "r-1", "transfer.request_id"},
				{"unknown transfer field", "transfer.owner", "x", "owner"},
			},
		},
		{
			method: http.MethodPut, path: "/v1/upgrades/guardian_handoff/membership", requestID: true,
			base: map[string]any{"members": []any{"member-a"}},
			badPaths: []badCase{
				{name: "oversized bundle", path: "/v1/upgrades/" + long + "/membership", field: "bundle_id"},
				{name: "control character in bundle", path: "/v1/upgrades/a%01b/membership", field: "bundle_id"},
			},
			fields: []fieldCase{
				{"members string", "members", "member-a", "members"},
				{"empty member", "members", []any{""}, "members[0]"},
				{"oversized member", "members", []any{"ok", long}, "members[1]"},
				{"member number", "members", []any{1}, "members"},
			},
		},
		{
			method: http.MethodPost, path: "/v1/upgrades/guardian_handoff/execute", requestID: true, base: upgradeBase,
			badPaths: []badCase{
				{name: "oversized bundle", path: "/v1/upgrades/" + long + "/execute", field: "bundle_id"},
			},
			fields: []fieldCase{
				{"empty upgrade_id", "upgrade_id", "", "upgrade_id"},
				{"oversized plan_id", "plan.plan_id", long, "plan.plan_id"},
				{"steps string", "plan.steps", "x", "plan.steps"},
				{"empty step_id", "plan.steps.0.step_id", "", "step_id"},
				{"unknown treatment", "compatibility.pending_effect_treatment", "keep", "compatibility.pending_effect_treatment"},
				{"unknown continuity", "compatibility.canonical_publication_continuity", "", "compatibility.canonical_publication_continuity"},
				{"constraint number", "compatibility.execution_constraint", 5, "compatibility.execution_constraint"},
				{"empty carried publication", "carried_publication_ids", []any{""}, "carried_publication_ids[0]"},
			},
		},
		{
			method: http.MethodPut, path: "/v1/capabilities", requestID: true,
			base: map[string]any{"reconfiguration": true},
			fields: []fieldCase{
				{"missing reconfiguration", "reconfiguration", del, "reconfiguration"},
				{"null reconfiguration", "reconfiguration", nil, "reconfiguration"},
				{"reconfiguration string", "reconfiguration", "yes", "reconfiguration"},
				{"output field index", "index", 5, "index"},
			},
		},
		{
			// The base re-joins the leader under its own id and address: a no-op.
			method: http.MethodPost, path: "/v1/cluster/join",
			base: map[string]any{"id": l.id, "raft_addr": l.raftAddr},
			fields: []fieldCase{
				{"empty id", "id", "", "id"},
				{"oversized id", "id", long, "id"},
				{"id number", "id", 3, "id"},
				{"empty raft_addr", "raft_addr", "", "raft_addr"},
				{"voter string", "voter", "yes", "voter"},
			},
			// Under a new id, so that a bad address that got through would
			// add a member rather than replace the leader's entry.
			bodies: []badCase{
				{name: "raft_addr not host:port", body: mustJSON(map[string]any{"id": "ghost", "raft_addr": "not an address"}), field: "raft_addr"},
				{name: "raft_addr without port", body: mustJSON(map[string]any{"id": "ghost", "raft_addr": "127.0.0.1"}), field: "raft_addr"},
				{name: "raft_addr port 0", body: mustJSON(map[string]any{"id": "ghost", "raft_addr": "127.0.0.1:0"}), field: "raft_addr"},
				{name: "raft_addr port not a number", body: mustJSON(map[string]any{"id": "ghost", "raft_addr": "127.0.0.1:raft"}), field: "raft_addr"},
				{name: "oversized raft_addr", body: mustJSON(map[string]any{"id": "ghost", "raft_addr": long + ":8201"}), field: "raft_addr"},
			},
		},
		{
			// The base names no member: 404, past input checking.
			method: http.MethodPost, path: "/v1/cluster/remove",
			base: map[string]any{"id": "no-such-node"},
			fields: []fieldCase{
				{"empty id", "id", "", "id"},
				{"oversized id", "id", long, "id"},
				{"id number", "id", 3, "id"},
			},
		},
	}

	var cases []badCase
	for _, r := range routes {
		prefix := r.method + " " + strings.Split(r.path, "?")[0] + ": "
		add := func(name string, path string, body []byte, field string) {
			cases = append(cases, badCase{name: prefix + name, method: r.method, path: path, body: body, field: field})
		}
		var base []byte
		if r.base != nil {
			base = mustJSON(r.base)
		}
		for _, bp := range r.badPaths {
			add(bp.name, bp.path, base, bp.field)
		}
		for _, bb := range r.bodies {
			add(bb.name, r.path, bb.body, bb.field)
		}
		huge := append(append([]byte{}, base...), bytes.Repeat([]byte(" "), 1<<20+1)...) // valid JSON, over 1 MiB
		add("oversized body", r.path, huge, "body")
		if r.base == nil {
			add("unexpected JSON body", r.path, []byte(`{"request_id": "r-1"}`), "body")
			add("malformed body", r.path, []byte(`{"request_id": `), "body")
			continue
		}
		add("malformed JSON", r.path, base[:len(base)/2], "body")
		add("not JSON", r.path, []byte(`{bundle_id: x}`), "body")
		add("empty body", r.path, nil, "body")
		add("JSON array", r.path, []byte(`[]`), "body")
		add("JSON string", r.path, []byte(`"x"`), "body")
		add("trailing object", r.path, append(append([]byte{}, base...), []byte(` {}`)...), "body")
		add("trailing garbage", r.path, append(append([]byte{}, base...), []byte(`x`)...), "body")
		add("trailing bracket", r.path, append(append([]byte{}, base...), []byte(`]`)...), "body")
		add("unknown field", r.path, mutate(t, r.base, "bogus_field", 1), "bogus_field")
		if r.requestID {
			add("oversized request_id", r.path, mutate(t, r.base, "request_id", longID), "request_id")
			add("request_id number", r.path, mutate(t, r.base, "request_id", 5), "request_id")
			add("control character in request_id", r.path, mutate(t, r.base, "request_id", "a\tb"), "request_id")
		}
		for _, fc := range r.fields {
			add(fc.name, r.path, mutate(t, r.base, fc.path, fc.value), fc.field)
		}
	}

	before := l.mustDigest()
	for _, target := range []*tnode{l, f} {
		for _, bc := range cases {
			resp, err := target.do(bc.method, bc.path, bc.body)
			if err != nil {
				t.Errorf("%s via %s: %v", bc.name, target.id, err)
				continue
			}
			var eb transport.ErrorBody
			_ = json.Unmarshal(resp.Body, &eb)
			if resp.Status != http.StatusBadRequest || eb.Error.Code != "invalid_argument" || !strings.Contains(eb.Error.Message, bc.field) {
				t.Errorf("%s via %s: got %s; want 400 invalid_argument naming %q", bc.name, target.id, truncate(resp.String(), 300), bc.field)
			}
		}
	}
	after := l.mustDigest()
	if after != before {
		t.Errorf("bad input changed the leader's state: %+v → %+v", before, after)
	}
	t.Logf("%d bad requests to each of leader %s and follower %s; state unchanged at index %d", len(cases), l.id, f.id, after.Index)

	// Each route's base request gets past input checking (a domain answer
	// or success, never invalid_argument), so each case above was refused
	// for the change it made.
	for _, r := range routes {
		var body []byte
		if r.base != nil {
			body = mustJSON(r.base)
		}
		resp, err := l.do(r.method, r.path, body)
		if err != nil {
			t.Fatal(err)
		}
		var eb transport.ErrorBody
		_ = json.Unmarshal(resp.Body, &eb)
		if resp.Status == http.StatusBadRequest || eb.Error.Code == "invalid_argument" || resp.Status >= 500 {
			t.Errorf("base request %s %s is refused: %s", r.method, r.path, resp)
		}
	}
}

// mutateMap copies a JSON object and sets key in the object at sub ("" for
// the top level).
func mutateMap(base map[string]any, sub, key string, v any) map[string]any {
	var m map[string]any
	_ = json.Unmarshal(mustJSON(base), &m)
	target := m
	if sub != "" {
		target = m[sub].(map[string]any)
	}
	target[key] = v
	return m
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
