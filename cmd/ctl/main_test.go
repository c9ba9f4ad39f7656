package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/reconf/reconf/cluster"
	"github.com/reconf/reconf/transport"
)

// Test ids: authorities, sessions.
const (
	authA = "authority-11111111-1111-1111-1111-111111111111"
	authB = "authority-22222222-2222-2222-2222-222222222222"
	authC = "authority-33333333-3333-3333-3333-333333333333"
	sess1 = "session-aaaaaaaa-0000-0000-0000-000000000001"
	sess2 = "session-aaaaaaaa-0000-0000-0000-000000000002"
	sess3 = "session-aaaaaaaa-0000-0000-0000-000000000003"
)

type testNode struct {
	addr  string // API address
	node  *cluster.Node
	caPEM string // with TLS: the file of the server's CA
}

// startNode starts a real one-node cluster in the process: Raft over TCP on
// 127.0.0.1, bbolt in a temporary dir, the HTTP API (HTTPS when tlsOn).
func startNode(t *testing.T, tlsOn bool) *testNode {
	t.Helper()
	mux, err := transport.ListenMux(transport.MuxConfig{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	node, err := cluster.Open(cluster.Config{
		ID: "t1", DataDir: t.TempDir(), AdvertiseRaft: mux.Addr().String(), StreamLayer: mux.RaftLayer(),
		Bootstrap: true, HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		LeaderLease: 150 * time.Millisecond,
	})
	if err != nil {
		mux.Close()
		t.Fatal(err)
	}
	tn := &testNode{node: node}
	var api *transport.Server
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.Handler().ServeHTTP(w, r)
	}))
	hs.Config.ErrorLog = log.New(io.Discard, "", 0) // TLS handshake noise of TestTLS
	tn.addr = hs.Listener.Addr().String()
	api = transport.NewServer(transport.ServerConfig{Node: node, Mux: mux, AdvertiseHTTP: tn.addr})
	if tlsOn {
		hs.StartTLS()
		tn.caPEM = filepath.Join(t.TempDir(), "ca.pem")
		b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hs.Certificate().Raw})
		if err := os.WriteFile(tn.caPEM, b, 0o600); err != nil {
			t.Fatal(err)
		}
	} else {
		hs.Start()
	}
	go func() { _ = api.ServeForwarded() }()
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = node.Shutdown(ctx)
		mux.Close()
	})
	deadline := time.Now().Add(15 * time.Second)
	for !node.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("the node did not become leader")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return tn
}

type result struct {
	stdout, stderr string
	code           int
}

// ctlIn runs reconfctl in-process against addr with stdin.
func ctlIn(t *testing.T, addr, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	full := append([]string{"reconfctl", "--addr", addr, "--timeout", "15s"}, args...)
	code := run(context.Background(), full, strings.NewReader(stdin), &out, &errb)
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

func (n *testNode) ctl(t *testing.T, args ...string) result {
	t.Helper()
	return ctlIn(t, n.addr, "", args...)
}

// ok runs a command that must succeed.
func (n *testNode) ok(t *testing.T, args ...string) string {
	t.Helper()
	r := n.ctl(t, args...)
	if r.code != 0 {
		t.Fatalf("reconfctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// fails runs a command that must be rejected with code on stderr.
func (n *testNode) fails(t *testing.T, code string, args ...string) result {
	t.Helper()
	r := n.ctl(t, args...)
	if r.code != 1 || !strings.Contains(r.stderr, "reconfctl: "+code+": ") {
		t.Fatalf("reconfctl %s: want exit 1 with %q, got exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, r.code, r.stdout, r.stderr)
	}
	return r
}

// jsonOf runs a command with --json and decodes its output.
func (n *testNode) jsonOf(t *testing.T, v any, args ...string) {
	t.Helper()
	out := n.ok(t, append([]string{"--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("reconfctl --json %s: not JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func wantContains(t *testing.T, what, got string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(got, p) {
			t.Fatalf("%s: want %q in\n%s", what, p, got)
		}
	}
}

// rows returns the table rows (after the header) whose first cell is key.
func rowsStarting(out, key string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == key {
			rows = append(rows, f)
		}
	}
	return rows
}

func TestBundles(t *testing.T) {
	n := startNode(t, false)

	out := n.ok(t, "bundle", "register", "--id", "left", "--protocol", "p.left", "--export", "sync.delta", "--import", "chat.send", "--native", sess1)
	wantContains(t, "register", out, "registered bundle left")
	n.ok(t, "bundle", "register", "--id", "right", "--protocol", "p.right", "--export", "chat.send", "--import", "sync.delta", "--native", sess2)
	n.fails(t, "duplicate_bundle", "bundle", "register", "--id", "left")

	// Repeatable flags.
	n.ok(t, "bundle", "register", "--id", "multi", "--protocol", "p1", "--protocol", "p2", "--export", "a", "--export", "b", "--import", "a")
	var multi transport.BundleJSON
	n.jsonOf(t, &multi, "bundle", "show", "multi")
	if !reflect.DeepEqual(multi.ProtocolIDs, []string{"p1", "p2"}) || !reflect.DeepEqual(multi.Exports, []string{"a", "b"}) || !reflect.DeepEqual(multi.Imports, []string{"a"}) {
		t.Fatalf("multi %+v", multi)
	}

	// Exactly-once: the same request id twice registers once.
	n.ok(t, "bundle", "register", "--id", "once", "--request-id", "rid-once")
	n.ok(t, "bundle", "register", "--id", "once", "--request-id", "rid-once")
	n.fails(t, "duplicate_bundle", "bundle", "register", "--id", "once")

	out = n.ok(t, "bundle", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if f := strings.Fields(lines[0]); !reflect.DeepEqual(f, []string{"ID", "PROTOCOLS", "EXPORTS", "IMPORTS", "SESSIONS"}) {
		t.Fatalf("list header %q", lines[0])
	}
	left := rowsStarting(out, "left")
	if len(left) != 1 || !reflect.DeepEqual(left[0], []string{"left", "p.left", "sync.delta", "chat.send", "1"}) {
		t.Fatalf("left row %v in\n%s", left, out)
	}
	if len(rowsStarting(out, "device_migration")) != 1 {
		t.Fatalf("default bundle missing:\n%s", out)
	}

	out = n.ok(t, "bundle", "show", "left")
	wantContains(t, "show", out, "p.left", "sync.delta", "chat.send", sess1)
	n.fails(t, "bundle_not_found", "bundle", "show", "nope")

	// Flags after the positional arguments, as in the docs.
	out = n.ok(t, "bundle", "link", "left", "right", "--as", "left+right")
	wantContains(t, "link", out, "left+right")
	var linked transport.BundleJSON
	n.jsonOf(t, &linked, "bundle", "show", "left+right")
	if !reflect.DeepEqual(linked.ProtocolIDs, []string{"p.left", "p.right"}) || linked.SessionFootprint == nil ||
		!reflect.DeepEqual(linked.SessionFootprint.NativeSessions, []string{sess1, sess2}) {
		t.Fatalf("linked %+v", linked)
	}
	n.fails(t, "bundle_not_found", "bundle", "link", "left", "nope", "--as", "z")
	n.fails(t, "overlapping_sessions", "bundle", "link", "left", "left+right", "--as", "z")
	n.fails(t, "duplicate_bundle", "bundle", "link", "left", "right", "--as", "left")

	var list struct {
		Bundles []transport.BundleJSON `json:"bundles"`
	}
	n.jsonOf(t, &list, "bundle", "list")
	if len(list.Bundles) != 8 { // 3 defaults + left, right, multi, once, left+right
		t.Fatalf("%d bundles: %+v", len(list.Bundles), list.Bundles)
	}
}

func TestFootprintDelegateFactsCoherence(t *testing.T) {
	n := startNode(t, false)

	out := n.ok(t, "footprint", "add", authA, "--session", sess1)
	wantContains(t, "footprint add", out, "native")
	out = n.ok(t, "footprint", "show", authA)
	if r := rowsStarting(out, "native"); len(r) != 1 || r[0][1] != sess1 {
		t.Fatalf("footprint show:\n%s", out)
	}
	wantContains(t, "footprint show", out, "CLASS", "SESSION")
	n.fails(t, "authority_not_found", "footprint", "show", authC)
	n.fails(t, "invalid_argument", "footprint", "show", "not-a-uuid")

	out = n.ok(t, "delegate", "--session", sess1, "--from", authA, "--to", authB, "--bundle", "device_migration")
	wantContains(t, "delegate", out, "delegated "+sess1, "seq 1", "delegated_out=["+sess1+"]", "delegated_in=["+sess1+"]")
	if r := rowsStarting(out, "from"); len(r) != 1 || r[0][1] != authA {
		t.Fatalf("delegate summary:\n%s", out)
	}
	if r := rowsStarting(out, "to"); len(r) != 1 || r[0][1] != authB {
		t.Fatalf("delegate summary:\n%s", out)
	}

	out = n.ok(t, "footprint", "show", authA)
	if r := rowsStarting(out, "delegated_out"); len(r) != 1 || r[0][1] != sess1 || len(rowsStarting(out, "native")) != 0 {
		t.Fatalf("from after delegation:\n%s", out)
	}
	out = n.ok(t, "footprint", "show", authB)
	if r := rowsStarting(out, "delegated_in"); len(r) != 1 || r[0][1] != sess1 {
		t.Fatalf("to after delegation:\n%s", out)
	}
	var fp transport.AuthorityFootprint
	n.jsonOf(t, &fp, "footprint", "show", authB)
	if fp.AuthorityID != authB || !reflect.DeepEqual(fp.DelegatedInSessions, []string{sess1}) {
		t.Fatalf("footprint json %+v", fp)
	}

	// A delegation the FSM rejects.
	n.fails(t, "session_not_owned", "delegate", "--session", sess2, "--from", authA, "--to", authB, "--bundle", "device_migration")
	n.fails(t, "bundle_not_registered", "delegate", "--session", sess1, "--from", authB, "--to", authA, "--bundle", "nope")
	n.fails(t, "invalid_link_boundary", "delegate", "--session", sess1, "--from", authB, "--to", authA, "--bundle", "device_migration", "--scope", "bundle:wrong-bundle")

	out = n.ok(t, "coherence")
	if strings.TrimSpace(out) != "coherent" {
		t.Fatalf("coherence: %q", out)
	}

	// Make the state incoherent, watch every delegation fail, then heal it.
	n.ok(t, "footprint", "add", authB, "--session", sess2, "--class", "native")
	n.ok(t, "footprint", "add", authC, "--session", sess2, "--class", "native")
	out = n.ok(t, "coherence")
	wantContains(t, "coherence", out, "session "+sess2+" has multiple active owners (2)")
	var coh transport.CoherenceJSON
	n.jsonOf(t, &coh, "coherence")
	if coh.Status != "violations" || len(coh.Violations) != 1 {
		t.Fatalf("coherence json %+v", coh)
	}
	n.fails(t, "coherence_violation", "delegate", "--session", sess1, "--from", authB, "--to", authC, "--bundle", "device_migration")
	out = n.ok(t, "footprint", "remove", authC, "--session", sess2, "--request-id", "rm-1")
	wantContains(t, "footprint remove", out, "removed "+sess2)
	var idx transport.IndexResponse
	n.jsonOf(t, &idx, "footprint", "remove", authC, "--session", sess2, "--request-id", "rm-1")
	if !idx.Deduped {
		t.Fatalf("a retried removal with the same request id should be deduplicated: %+v", idx)
	}
	if out = n.ok(t, "coherence"); strings.TrimSpace(out) != "coherent" {
		t.Fatalf("coherence after remove: %q", out)
	}

	// A second delegation with an explicit boundary read from stdin, and
	// a request id: its retry returns the first answer, not a second fact.
	boundary := `{"bundle_id": "guardian_handoff", "protocol_ids": ["aura.recovery.guardian_membership_change"],
		"fragment_keys": ["bundle:guardian_handoff"], "capability_scope": {"fragments": ["bundle:guardian_handoff"]}}`
	args := []string{"--json", "delegate", "--session", sess1, "--from", authB, "--to", authC, "--bundle", "guardian_handoff",
		"--boundary-file", "-", "--request-id", "del-2", "--context", "context-cccccccc-0000-0000-0000-000000000001"}
	var d1, d2 transport.DelegationResponse
	for _, d := range []*transport.DelegationResponse{&d1, &d2} {
		r := ctlIn(t, n.addr, boundary, args...)
		if r.code != 0 {
			t.Fatalf("delegate with boundary: %d %s", r.code, r.stderr)
		}
		if err := json.Unmarshal([]byte(r.stdout), d); err != nil {
			t.Fatal(err)
		}
	}
	if d1.FactSeq != 2 || d2.FactSeq != 2 || !d2.Deduped || d1.Witness.ContextID != "context-cccccccc-0000-0000-0000-000000000001" {
		t.Fatalf("delegations %+v / %+v", d1, d2)
	}

	out = n.ok(t, "facts")
	if r := rowsStarting(out, "1"); len(r) != 1 || r[0][3] != sess1 || r[0][4] != authA || r[0][5] != authB || r[0][6] != "device_migration" {
		t.Fatalf("facts:\n%s", out)
	}
	if r := rowsStarting(out, "2"); len(r) != 1 || r[0][6] != "guardian_handoff" {
		t.Fatalf("facts:\n%s", out)
	}
	var facts transport.FactsResponse
	n.jsonOf(t, &facts, "facts", "--after", "1")
	if len(facts.Facts) != 1 || facts.Facts[0].Seq != 2 || facts.LastSeq != 2 {
		t.Fatalf("facts --after 1: %+v", facts)
	}
	n.jsonOf(t, &facts, "facts", "--limit", "1")
	if len(facts.Facts) != 1 || facts.Facts[0].Seq != 1 {
		t.Fatalf("facts --limit 1: %+v", facts)
	}

	// Follow: the existing facts, then stop after --limit.
	out = n.ok(t, "facts", "--follow", "--limit", "2")
	if len(rowsStarting(out, "1")) != 1 || len(rowsStarting(out, "2")) != 1 {
		t.Fatalf("facts --follow:\n%s", out)
	}
	out = n.ok(t, "--json", "facts", "--follow", "--after", "1", "--limit", "1")
	var f transport.FactJSON
	if err := json.Unmarshal([]byte(out), &f); err != nil || f.Seq != 2 {
		t.Fatalf("facts --follow --json: %v %q", err, out)
	}
	// A follow bounded by an explicit --timeout ends cleanly with no new facts.
	r := ctlIn(t, n.addr, "", "facts", "--follow", "--after", "2", "--timeout", "500ms")
	if r.code != 0 {
		t.Fatalf("bounded follow: %d %s", r.code, r.stderr)
	}
}

func TestFactsFollowSeesNewFacts(t *testing.T) {
	n := startNode(t, false)
	n.ok(t, "footprint", "add", authA, "--session", sess3)
	done := make(chan result, 1)
	go func() {
		var out, errb bytes.Buffer
		code := run(context.Background(), []string{"reconfctl", "--addr", n.addr, "facts", "--follow", "--limit", "1"}, strings.NewReader(""), &out, &errb)
		done <- result{out.String(), errb.String(), code}
	}()
	time.Sleep(300 * time.Millisecond)
	// Delegate through the Go client, not a second in-process reconfctl:
	// urfave/cli keeps global state (the help flag), so two apps must not
	// run at once in one process.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := transport.NewClient([]string{n.addr}).Delegate(ctx, transport.DelegationRequest{
		SessionID: sess3, FromAuthority: authA, ToAuthority: authB, BundleID: "device_migration",
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.code != 0 || len(rowsStarting(r.stdout, "1")) != 1 {
			t.Fatalf("follow: %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("follow did not see the new fact")
	}
}

func TestSessions(t *testing.T) {
	n := startNode(t, false)
	n.ok(t, "footprint", "add", authA, "--session", sess1)

	out := n.ok(t, "session", "open", sess1, "--owner", "owner-a", "--bundle", "epoch_rotation_transfer")
	wantContains(t, "open", out, "owner-a", "generation 1")
	n.fails(t, "owner_conflict", "session", "open", sess1, "--owner", "owner-b")
	n.fails(t, "session_not_found", "session", "show", sess2)

	out = n.ok(t, "session", "show", sess1)
	wantContains(t, "show", out, "owner-a", "bundle:epoch_rotation_transfer")
	if r := rowsStarting(out, "generation"); len(r) != 1 || r[0][1] != "1" {
		t.Fatalf("show:\n%s", out)
	}

	handoff := []string{"session", "handoff", sess1, "--owner", "owner-a", "--generation", "1", "--next-owner", "delegated-owner",
		"--from", authA, "--to", authB, "--bundle", "epoch_rotation_transfer"}
	out = n.ok(t, handoff...)
	wantContains(t, "handoff", out, "from owner-a (generation 1) to delegated-owner (generation 2)", "seq 1")

	// The old owner and generation are stale now.
	r := n.fails(t, "stale_owner", handoff...)
	wantContains(t, "stale handoff", r.stderr, "stale owner")

	var l transport.LiveSessionJSON
	n.jsonOf(t, &l, "session", "show", sess1)
	if l.OwnerLabel != "delegated-owner" || l.Generation != 2 || l.Scope.Session ||
		!reflect.DeepEqual(l.Scope.Fragments, []string{"bundle:epoch_rotation_transfer"}) {
		t.Fatalf("after handoff %+v", l)
	}

	// A handoff rejected for the delegation leaves the owner as it was.
	var h transport.HandoffResponse
	n.ok(t, "footprint", "add", authC, "--session", sess2)
	n.ok(t, "session", "open", sess2, "--owner", "o2")
	n.fails(t, "session_not_owned", "session", "handoff", sess2, "--owner", "o2", "--generation", "1", "--next-owner", "o3",
		"--from", authA, "--to", authB, "--bundle", "epoch_rotation_transfer")
	n.jsonOf(t, &l, "session", "show", sess2)
	if l.OwnerLabel != "o2" || l.Generation != 1 {
		t.Fatalf("after failed handoff %+v", l)
	}
	n.jsonOf(t, &h, "session", "handoff", sess2, "--owner", "o2", "--generation", "1", "--next-owner", "o3",
		"--from", authC, "--to", authB, "--bundle", "epoch_rotation_transfer")
	if h.OwnershipReceipt.FromOwnerID != "o2" || h.OwnershipReceipt.ToGeneration != 2 || h.Receipt.ToAuthority != authB {
		t.Fatalf("handoff json %+v", h)
	}
}

const upgradeRequest = `{
  "upgrade_id": "u1",
  "plan": {"plan_id": "p1", "steps": [{"step_id": "s1", "next_members": ["member-b", "member-c"]}]},
  "compatibility": {"ownership_continuity_required": true, "pending_effect_treatment": "preserve_pending",
                    "canonical_publication_continuity": "preserve_canonical_truth", "execution_constraint": "preserve_bundle_profile"},
  "carried_publication_ids": ["pub:device"], "invalidated_publication_ids": [],
  "carried_obligation_ids": ["obl:pending-send"], "invalidated_obligation_ids": []
}`

func TestUpgrades(t *testing.T) {
	n := startNode(t, false)
	dir := t.TempDir()
	file := filepath.Join(dir, "request.json")
	if err := os.WriteFile(file, []byte(upgradeRequest), 0o600); err != nil {
		t.Fatal(err)
	}

	n.fails(t, "invalid_runtime_upgrade", "upgrade", "show", "guardian_handoff") // not seeded yet
	out := n.ok(t, "upgrade", "seed", "guardian_handoff", "--member", "member-a", "--member", "member-b")
	wantContains(t, "seed", out, "member-a,member-b", "epoch 0")
	n.fails(t, "bundle_not_found", "upgrade", "seed", "nope", "--member", "m")

	out = n.ok(t, "upgrade", "execute", "guardian_handoff", "--file", file)
	wantContains(t, "execute", out, "u1", "staged,admitted,committed_cutover", "member-b,member-c")

	out = n.ok(t, "upgrade", "show", "guardian_handoff")
	wantContains(t, "show", out, "epoch:   1", "members: member-b,member-c", "committed_cutover")
	var snap transport.UpgradeSnapshotJSON
	n.jsonOf(t, &snap, "upgrade", "show", "guardian_handoff")
	if snap.Epoch != 1 || !reflect.DeepEqual(snap.ActiveMembers, []string{"member-b", "member-c"}) || len(snap.RuntimeUpgrades) != 1 {
		t.Fatalf("snapshot %+v", snap)
	}

	// The request from stdin: it executes again, from the new members.
	r := ctlIn(t, n.addr, upgradeRequest, "upgrade", "execute", "guardian_handoff", "--file", "-")
	if r.code != 0 || !strings.Contains(r.stdout, "epoch 2") {
		t.Fatalf("execute from stdin: %d %s %s", r.code, r.stdout, r.stderr)
	}
	// Continuity fails once member-a and member-b are gone: rejected, and
	// the snapshot is unchanged (domain 9.1).
	n.ok(t, "upgrade", "seed", "guardian_handoff", "--member", "member-x")
	n.fails(t, "invalid_runtime_upgrade", "upgrade", "execute", "guardian_handoff", "--file", file)
	n.jsonOf(t, &snap, "upgrade", "show", "guardian_handoff")
	if snap.Epoch != 0 || !reflect.DeepEqual(snap.ActiveMembers, []string{"member-x"}) {
		t.Fatalf("after a rejected upgrade %+v", snap)
	}

	// A delegation that carries the upgrade.
	n.ok(t, "upgrade", "seed", "device_migration", "--member", "member-a", "--member", "member-b")
	n.ok(t, "footprint", "add", authA, "--session", sess1)
	var d transport.DelegationResponse
	n.jsonOf(t, &d, "delegate", "--session", sess1, "--from", authA, "--to", authB, "--bundle", "device_migration", "--upgrade-file", file)
	if d.Witness.RuntimeUpgradeExecution == nil || !reflect.DeepEqual(d.Witness.RuntimeUpgradeExecution.FinalMembers, []string{"member-b", "member-c"}) ||
		d.Witness.RuntimeUpgradeSnapshot == nil || d.Witness.RuntimeUpgradeSnapshot.Epoch != 1 {
		t.Fatalf("delegation with upgrade %+v", d.Witness)
	}

	// A request file with a typo is a usage error, caught before sending.
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"upgrade_idd": "u"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := n.ctl(t, "upgrade", "execute", "guardian_handoff", "--file", bad); r.code != 2 || !strings.Contains(r.stderr, "upgrade_idd") {
		t.Fatalf("bad file: %d %s", r.code, r.stderr)
	}
	if r := n.ctl(t, "upgrade", "execute", "guardian_handoff", "--file", filepath.Join(dir, "missing.json")); r.code != 2 {
		t.Fatalf("missing file: %d %s", r.code, r.stderr)
	}
}

func TestCapabilities(t *testing.T) {
	n := startNode(t, false)
	n.ok(t, "footprint", "add", authA, "--session", sess1)
	out := n.ok(t, "capabilities", "show")
	wantContains(t, "show", out, "reconfiguration: on")

	n.ok(t, "capabilities", "set", "reconfiguration=off")
	out = n.ok(t, "capabilities", "show")
	wantContains(t, "show", out, "reconfiguration: off")
	var caps transport.CapabilitiesJSON
	n.jsonOf(t, &caps, "capabilities", "show")
	if caps.Reconfiguration == nil || *caps.Reconfiguration {
		t.Fatalf("caps %+v", caps)
	}

	delegate := []string{"delegate", "--session", sess1, "--from", authA, "--to", authB, "--bundle", "device_migration"}
	n.fails(t, "missing_capability", delegate...)
	n.fails(t, "missing_capability", "bundle", "link", "device_migration", "guardian_handoff", "--as", "x")

	n.jsonOf(t, &caps, "capabilities", "set", "reconfiguration=true", "--request-id", "caps-on")
	if caps.Reconfiguration == nil || !*caps.Reconfiguration || caps.Index == 0 {
		t.Fatalf("caps set %+v", caps)
	}
	n.ok(t, delegate...)
	for _, bad := range [][]string{{"reconfiguration"}, {"reconfiguration=maybe"}, {"other=on"}, {}} {
		if r := n.ctl(t, append([]string{"capabilities", "set"}, bad...)...); r.code != 2 {
			t.Fatalf("capabilities set %v: exit %d %s", bad, r.code, r.stderr)
		}
	}
}

func TestCluster(t *testing.T) {
	n := startNode(t, false)
	out := n.ok(t, "cluster", "status")
	wantContains(t, "status", out, "leader:  t1", "term:", "commit:", "applied:", "ID", "RAFT", "HTTP", "SUFFRAGE", "STATE")
	if r := rowsStarting(out, "t1"); len(r) != 1 || r[0][2] != n.addr || r[0][3] != "voter" || r[0][4] != "leader" {
		t.Fatalf("status:\n%s", out)
	}
	var st transport.StatusJSON
	n.jsonOf(t, &st, "cluster", "status")
	if st.Leader == nil || st.Leader.ID != "t1" || len(st.Nodes) != 1 {
		t.Fatalf("status json %+v", st)
	}

	n.ok(t, "bundle", "register", "--id", "before-backup")
	var d1 transport.DigestJSON
	n.jsonOf(t, &d1, "cluster", "digest")
	if d1.Index == 0 || len(d1.Digest) != 64 {
		t.Fatalf("digest %+v", d1)
	}
	out = n.ok(t, "cluster", "digest")
	wantContains(t, "digest", out, d1.Digest)
	out = n.ok(t, "cluster", "digest", "--all")
	wantContains(t, "digest --all", out, n.addr, d1.Digest)

	// A check of the one replica: its digest at the check is the state's
	// (a check entry changes nothing), and status shows the check.
	out = n.ok(t, "cluster", "check")
	wantContains(t, "check", out, "status: consistent", "t1", "ok", d1.Digest)
	var cv transport.CheckJSON
	n.jsonOf(t, &cv, "cluster", "check")
	if cv.Status != transport.CheckConsistent || len(cv.Members) != 1 || cv.Members[0].Digest != d1.Digest {
		t.Fatalf("check json %+v", cv)
	}
	wantContains(t, "status after a check", n.ok(t, "cluster", "status"), "consistency: consistent at index "+strconv.FormatUint(cv.Index, 10))

	file := filepath.Join(t.TempDir(), "backup.snap")
	out = n.ok(t, "cluster", "backup", file)
	wantContains(t, "backup", out, file)
	st1, err := os.Stat(file)
	if err != nil || st1.Size() == 0 {
		t.Fatalf("backup file: %v %v", st1, err)
	}
	raw := n.ok(t, "cluster", "backup", "-")
	if int64(len(raw)) != st1.Size() {
		t.Fatalf("backup to stdout: %d bytes, file %d", len(raw), st1.Size())
	}

	// Change the state, restore the backup: the digest is back.
	n.ok(t, "bundle", "register", "--id", "after-backup")
	var d2 transport.DigestJSON
	n.jsonOf(t, &d2, "cluster", "digest")
	if d2.Digest == d1.Digest {
		t.Fatal("digest did not change")
	}
	var restored transport.DigestJSON
	n.jsonOf(t, &restored, "cluster", "restore", file)
	if restored.Digest != d1.Digest {
		t.Fatalf("restored digest %s, backup was %s", restored.Digest, d1.Digest)
	}
	n.fails(t, "bundle_not_found", "bundle", "show", "after-backup")
	n.ok(t, "bundle", "show", "before-backup")

	// A corrupt backup is refused.
	corrupt := filepath.Join(t.TempDir(), "corrupt.snap")
	if err := os.WriteFile(corrupt, []byte("not a snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.fails(t, "invalid_argument", "cluster", "restore", corrupt)

	out = n.ok(t, "cluster", "snapshot")
	wantContains(t, "snapshot", out, "snapshot taken on t1")
	n.fails(t, "not_found", "cluster", "remove", "nosuch")
	n.fails(t, "unavailable", "--timeout", "2s", "cluster", "transfer-leadership") // no other voter
}

func TestTLS(t *testing.T) {
	n := startNode(t, true)
	out := n.ok(t, "--ca-file", n.caPEM, "bundle", "list")
	wantContains(t, "list over TLS", out, "device_migration")
	// Without the CA the server's certificate is not trusted.
	if r := n.ctl(t, "--timeout", "2s", "bundle", "list"); r.code != 1 {
		t.Fatalf("plain HTTP to a TLS server: %d %s", r.code, r.stderr)
	}
	if r := n.ctl(t, "--ca-file", filepath.Join(t.TempDir(), "none.pem"), "bundle", "list"); r.code != 2 {
		t.Fatalf("missing CA file: %d %s", r.code, r.stderr)
	}
	if r := n.ctl(t, "--cert-file", n.caPEM, "bundle", "list"); r.code != 2 {
		t.Fatalf("cert without key: %d %s", r.code, r.stderr)
	}
}

func TestJSONOutputParses(t *testing.T) {
	n := startNode(t, false)
	n.ok(t, "footprint", "add", authA, "--session", sess1)
	for _, args := range [][]string{
		{"--json", "bundle", "list"},
		{"bundle", "list", "--json"}, // a global flag after the command
		{"--json", "bundle", "show", "device_migration"},
		{"--json", "bundle", "register", "--id", "j"},
		{"--json", "footprint", "show", authA},
		{"--json", "footprint", "add", authA, "--session", sess2},
		{"--json", "delegate", "--session", sess1, "--from", authA, "--to", authB, "--bundle", "device_migration"},
		{"--json", "coherence"},
		{"--json", "facts"},
		{"--json", "capabilities", "show"},
		{"--json", "cluster", "status"},
		{"--json", "cluster", "digest"},
		{"--json", "cluster", "snapshot"},
		{"--json", "session", "open", sess3, "--owner", "o"},
		{"--json", "session", "show", sess3},
		{"--json", "--stale", "bundle", "list"},
	} {
		out := n.ok(t, args...)
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("reconfctl %s: not JSON: %v\n%s", strings.Join(args, " "), err, out)
		}
		if _, ok := v.(map[string]any); !ok {
			t.Fatalf("reconfctl %s: not a JSON object: %s", strings.Join(args, " "), out)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	const addr = "127.0.0.1:1" // never dialled: usage errors come first
	for _, args := range [][]string{
		{},
		{"nosuch"},
		{"--nope", "bundle", "list"},
		{"bundle"},
		{"bundle", "nosuch"},
		{"bundle", "show"},
		{"bundle", "show", "a", "b"},
		{"bundle", "list", "extra"},
		{"bundle", "list", "--bogus"},
		{"bundle", "register"},
		{"bundle", "register", "--id", ""},
		{"bundle", "link", "a"},
		{"bundle", "link", "a", "b"},
		{"footprint", "add", authA},
		{"footprint", "add", authA, "--session", sess1, "--class", "weird"},
		{"footprint", "remove", authA},
		{"footprint", "show"},
		{"delegate", "--session", sess1},
		{"delegate", "--session", sess1, "--from", authA, "--to", authB, "--bundle", "b", "--scope", ","},
		{"delegate", "--session", sess1, "--from", authA, "--to", authB, "--bundle", "b", "--boundary-file", "/nonexistent.json"},
		{"session", "open", sess1},
		{"session", "handoff", sess1, "--owner", "o", "--generation", "x"},
		{"session", "handoff", sess1, "--owner", "o", "--generation", "1", "--next-owner", "p"},
		{"upgrade", "seed", "b"},
		{"upgrade", "execute", "b"},
		{"upgrade", "show"},
		{"facts", "--limit", "-1"},
		{"facts", "--after", "x"},
		{"capabilities", "set"},
		{"cluster", "join", "n"},
		{"cluster", "join", "n", "no-port"},
		{"cluster", "transfer-leadership", "a", "b"},
		{"cluster", "backup"},
		{"cluster", "restore", "/nonexistent.snap"},
		{"completion"},
		{"completion", "fish"},
		{"help", "nosuch"},
		{"--timeout", "0s", "bundle", "list"},
		{"--timeout", "soon", "bundle", "list"},
	} {
		var out, errb bytes.Buffer
		full := append([]string{"reconfctl", "--addr", addr}, args...)
		code := run(context.Background(), full, strings.NewReader(""), &out, &errb)
		if code != 2 {
			t.Errorf("reconfctl %s: exit %d, want 2\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out.String(), errb.String())
			continue
		}
		if !strings.Contains(errb.String(), "reconfctl: usage: ") {
			t.Errorf("reconfctl %s: stderr %q", strings.Join(args, " "), errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"reconfctl", "--addr", "", "bundle", "list"}, nil, &out, &errb); code != 2 {
		t.Errorf("empty --addr: exit %d %s", code, errb.String())
	}
}

// TestHelp checks that every command has help with an example, and that
// --help exits 0 wherever it appears.
func TestHelp(t *testing.T) {
	app := newApp(&streams{})
	var walk func(path []string, cmds []*cli.Command)
	walk = func(path []string, cmds []*cli.Command) {
		for _, c := range cmds {
			p := append(append([]string{}, path...), c.Name)
			var out, errb bytes.Buffer
			code := run(context.Background(), append(append([]string{"reconfctl"}, p...), "--help"), nil, &out, &errb)
			if code != 0 || !strings.Contains(out.String(), "Example") || !strings.Contains(out.String(), "reconfctl "+strings.Join(p, " ")) {
				t.Errorf("reconfctl %s --help: exit %d\n%s%s", strings.Join(p, " "), code, out.String(), errb.String())
			}
			walk(p, c.Subcommands)
		}
	}
	walk(nil, app.Commands)

	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"reconfctl", "bundle", "link", "a", "b", "--help"}, nil, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), "link two bundles") {
		t.Errorf("help after arguments: %d %s %s", code, out.String(), errb.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"reconfctl", "--help"}, nil, &out, &errb); code != 0 || !strings.Contains(out.String(), "GLOBAL OPTIONS") {
		t.Errorf("top-level help: %d %s", code, out.String())
	}
}

func TestCompletion(t *testing.T) {
	for shell, want := range map[string]string{"bash": "complete -o bashdefault", "zsh": "#compdef reconfctl"} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), []string{"reconfctl", "completion", shell}, nil, &out, &errb); code != 0 || !strings.Contains(out.String(), want) {
			t.Errorf("completion %s: %d %q", shell, code, out.String())
		}
	}
	for _, tc := range []struct {
		args       []string
		want, lack []string
	}{
		{[]string{"cluster"}, []string{"status", "join", "transfer-leadership", "backup"}, []string{"--all"}},
		{[]string{}, []string{"bundle", "delegate", "facts"}, []string{"--json"}},
		{[]string{"--"}, []string{"--addr", "--json"}, []string{"bundle"}},
		{[]string{"bundle", "register", "--ex"}, []string{"--export"}, []string{"--import", "register"}},
		{[]string{"delegate", "-"}, []string{"--session", "--upgrade-file", "--json"}, nil},
	} {
		var out, errb bytes.Buffer
		args := append(append([]string{"reconfctl"}, tc.args...), "--generate-bash-completion")
		if code := run(context.Background(), args, nil, &out, &errb); code != 0 {
			t.Fatalf("completion request %v: %d %s", tc.args, code, errb.String())
		}
		words := strings.Fields(out.String())
		for _, w := range tc.want {
			if !slices.Contains(words, w) {
				t.Errorf("completions of %v: %q lack %s", tc.args, words, w)
			}
		}
		for _, w := range tc.lack {
			if slices.Contains(words, w) {
				t.Errorf("completions of %v: %q should not have %s", tc.args, words, w)
			}
		}
	}
}

func TestReorderArgs(t *testing.T) {
	app := newApp(&streams{})
	for _, tc := range []struct{ in, want string }{
		{"bundle link left right --as left+right", "bundle link --as left+right left right"},
		{"bundle list --json", "--json bundle list"},
		{"--addr a:1 bundle show x --stale", "--addr a:1 --stale bundle show x"},
		{"cluster join n1 h:1 --nonvoter", "cluster join --nonvoter n1 h:1"},
		{"session open S --owner=o", "session open --owner=o S"},
		{"upgrade execute b --file -", "upgrade execute --file - b"},
		{"cluster backup -", "cluster backup -"},
		{"bundle show -- -odd", "bundle show -- -odd"},
		{"bundle show x --bogus", "bundle show --bogus x"},
		{"bundle show x --help", "bundle show --help"},
		{"help bundle", "help bundle"},
		{"bundle --generate-bash-completion", "bundle --generate-bash-completion"},
	} {
		got := strings.Join(reorderArgs(app, append([]string{"reconfctl"}, strings.Fields(tc.in)...))[1:], " ")
		if got != tc.want {
			t.Errorf("reorder %q = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestReportUnavailable(t *testing.T) {
	// Nothing listens: exit 1 with the connection error, well before the
	// deadline.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"reconfctl", "--addr", addr, "--timeout", "1s", "bundle", "list"}, nil, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "reconfctl: unavailable: ") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}
