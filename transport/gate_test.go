package transport

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reconf/reconf/fsm"
)

// olderRelease plays a release that does not know some command types (as
// the current one will look to the next release that adds a type).
func olderRelease(without ...fsm.Type) *CommandSupport {
	s := LocalSupport()
	s.CommandTypes = slices.DeleteFunc(s.CommandTypes, func(name string) bool {
		for _, t := range without {
			if t.String() == name {
				return true
			}
		}
		return false
	})
	return &s
}

func TestLocalSupportAdvertised(t *testing.T) {
	n := startSecNode(t, "g1", secOpts{bootstrap: true})
	n.waitLeading()
	status, e, body := rawDo(t, nil, "", "GET", n.url("/v1/internal/node"), nil)
	if status != 200 {
		t.Fatalf("%d %v", status, e)
	}
	mustContain(t, "internal/node", string(body), `"entry_format":2`, `"command_version":1`, `"set_capabilities"`, `"cluster_id":"`+n.node.ClusterID()+`"`)
	// Everything the baseline release encodes, this one does too. The
	// bounded-state types (fsm/retention.go) and consistency_check are the
	// only additions: a member never heard from holds them back, and only
	// them, which keeps a mixed cluster out of bounded mode until every
	// member advertises them.
	got := LocalSupport()
	added := slices.DeleteFunc(slices.Clone(got.CommandTypes), func(n string) bool { return slices.Contains(baselineSupport.CommandTypes, n) })
	if !slices.Equal(added, []string{"set_retention", "ack_consumer", "drop_consumer", fsm.TypeConsistencyCheck.String()}) ||
		len(got.CommandTypes)-len(added) != len(baselineSupport.CommandTypes) ||
		got.CommandVersion != baselineSupport.CommandVersion {
		t.Fatalf("LocalSupport %+v against the baseline %+v: a new type or version needs a new baseline rule", got, baselineSupport)
	}
	// The entry format is not a baseline matter: a leader writes format 1
	// while any member reads only that (TestGateEntryFormat).
	if (NodeJSON{}).support().CommandVersion != 1 {
		t.Fatal("a node that advertises nothing is not the baseline")
	}
}

// A member that advertises a lower command version, or lacks a command
// type, makes the leader refuse those commands (503 upgrade_in_progress)
// and propose nothing; other commands go through.
func TestGateRefusesWhatAMemberCannotDecode(t *testing.T) {
	n1 := startSecNode(t, "n1", secOpts{bootstrap: true})
	n1.waitLeading()
	// An older release: it knows neither set_capabilities nor the
	// bounded-state types, so the leader does not switch bounded mode on.
	old := startSecNode(t, "n2", secOpts{support: olderRelease(fsm.TypeSetCapabilities, fsm.TypeSetRetention, fsm.TypeAckConsumer, fsm.TypeDropConsumer)})
	if _, err := old.joinVia(n1.httpAddr, true); err != nil {
		t.Fatal(err)
	}
	before := n1.node.FSM().AppliedIndex()
	status, e, _ := rawDo(t, nil, "", "PUT", n1.url("/v1/capabilities"), map[string]any{"reconfiguration": false})
	if status != http.StatusServiceUnavailable || e.Code != CodeUpgradeInProgress {
		t.Fatalf("set_capabilities with a member that cannot decode it: %d %v", status, e)
	}
	mustContain(t, "message", e.Message, "n2", "does not know command type set_capabilities", "[advertised]")
	// Through the follower too: the leader decides.
	if status, e, _ := rawDo(t, nil, "", "PUT", old.url("/v1/capabilities"), map[string]any{"reconfiguration": false}); e.Code != CodeUpgradeInProgress {
		t.Fatalf("through the follower: %d %v", status, e)
	}
	var on bool
	n1.node.FSM().Read(func(s *fsm.State) { on = s.Reconfiguration() })
	if !on {
		t.Fatal("the refused command was applied")
	}
	// A command both decode is applied.
	auth, sess := "authority-"+secNewUUID(), "session-"+secNewUUID()
	if status, e, _ := rawDo(t, nil, "", "POST", n1.url("/v1/footprints/"+auth+"/sessions"), map[string]any{"session_id": sess}); status != 200 {
		t.Fatalf("extend_footprint: %d %v", status, e)
	}
	if after := n1.node.FSM().AppliedIndex(); after != before+1 {
		t.Fatalf("applied %d entries for one accepted write", after-before)
	}

	// A member with a lower command version holds back every command.
	older := &CommandSupport{EntryFormat: fsm.EntryFormat, CommandVersion: fsm.CommandVersion - 1, CommandTypes: LocalSupport().CommandTypes}
	n3 := startSecNode(t, "n3", secOpts{support: older})
	if _, err := n3.joinVia(n1.httpAddr, true); err != nil {
		t.Fatal(err)
	}
	status, e, _ = rawDo(t, nil, "", "POST", n1.url("/v1/footprints/"+auth+"/sessions"), map[string]any{"session_id": "session-" + secNewUUID()})
	if status != 503 || e.Code != CodeUpgradeInProgress || !strings.Contains(e.Message, "decodes command version 0") {
		t.Fatalf("any command with a member at version 0: %d %v", status, e)
	}
}

// The rolling upgrade of docs/operations.md, with a new release that adds
// a command type (played by "the old release does not know
// execute_upgrade"): upgrade one node at a time, followers first, the
// leader last after handing leadership away. Old commands keep working
// throughout; the new one is refused until every member runs the new
// release, then accepted; every replica ends with the same digest.
func TestRollingUpgradeProcedure(t *testing.T) {
	oldRel := olderRelease(fsm.TypeExecuteUpgrade)
	nodes := []*secNode{startSecNode(t, "n1", secOpts{bootstrap: true, support: oldRel})}
	nodes[0].waitLeading()
	for _, id := range []string{"n2", "n3"} {
		n := startSecNode(t, id, secOpts{support: oldRel})
		if _, err := n.joinVia(nodes[0].httpAddr, true); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	addrs := func() []string {
		var out []string
		for _, n := range nodes {
			if n.running {
				out = append(out, n.httpAddr)
			}
		}
		return out
	}
	leader := func() *secNode {
		var l *secNode
		secWait(t, 20*time.Second, "a leader", func() (bool, string) {
			for _, n := range nodes {
				if n.running && n.node.IsLeader() {
					l = n
					return true, ""
				}
			}
			return false, "none"
		})
		return l
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	oldWrite := func(step string) {
		t.Helper()
		c := NewClient(addrs())
		if _, err := c.AddFootprint(ctx, "authority-"+secNewUUID(), FootprintAddRequest{SessionID: "session-" + secNewUUID()}); err != nil {
			t.Fatalf("%s: an old command failed: %v", step, err)
		}
	}
	// The new command: execute_upgrade. Its domain outcome does not
	// matter, only whether the leader lets it through the gate.
	newWrite := func() (int, ErrorDetail) {
		l := leader()
		status, e, _ := rawDo(t, nil, "", "POST", l.url("/v1/upgrades/guardian_handoff/execute"), map[string]any{
			"upgrade_id": "u-" + secNewUUID(), "plan": map[string]any{"plan_id": "p", "steps": []any{}},
			"compatibility": map[string]any{"ownership_continuity_required": false, "pending_effect_treatment": "preserve_pending",
				"canonical_publication_continuity": "preserve_canonical_truth", "execution_constraint": "preserve_bundle_profile"},
		})
		return status, e
	}
	upgrade := func(n *secNode) {
		t.Helper()
		n.stop()
		n.opts.support = nil // the new release
		n.start()
	}
	oldWrite("all old")
	if _, e := newWrite(); e.Code != CodeUpgradeInProgress {
		t.Fatalf("new command on an all-old cluster: %v", e)
	}
	// 1. Followers, one at a time.
	l := leader()
	for _, n := range nodes {
		if n == l {
			continue
		}
		upgrade(n)
		oldWrite("after upgrading " + n.id)
		if _, e := newWrite(); e.Code != CodeUpgradeInProgress {
			t.Fatalf("new command with the leader still old: %v", e)
		}
	}
	// 2. The leader: hand leadership away, then upgrade it.
	admin := NewClient([]string{l.httpAddr})
	if _, err := admin.TransferLeadership(ctx, ""); err != nil {
		t.Fatalf("transfer leadership: %v", err)
	}
	upgrade(l)
	oldWrite("after upgrading the old leader")
	// 3. The new command goes through once the leader has heard from every
	// member (at most one refresh period later).
	var last ErrorDetail
	secWait(t, 3*gateRefresh, "the new command to pass the gate", func() (bool, string) {
		_, last = newWrite()
		return last.Code != CodeUpgradeInProgress, last.Message
	})
	t.Logf("new command after the upgrade: %s %s", last.Code, last.Message)
	// Every replica applied the same thing.
	secWait(t, 20*time.Second, "equal digests", func() (bool, string) {
		var ds []string
		for _, n := range nodes {
			idx, d := n.node.Digest()
			ds = append(ds, digestHex(d)[:12]+"@"+strconv.FormatUint(idx, 10))
		}
		for _, d := range ds[1:] {
			if d != ds[0] {
				return false, strings.Join(ds, " ")
			}
		}
		return true, ""
	})
}

// The leader writes checksummed entries (format 2) only once every member
// advertises that it reads them; a member never heard from, or one of an
// older release, keeps it at format 1, and no write is refused for it.
func TestGateEntryFormat(t *testing.T) {
	g := &versionGate{known: map[string]memberSupport{}}
	if f := g.EntryFormat(); f != fsm.EntryFormatUnchecked {
		t.Fatalf("before any refresh: format %d", f)
	}
	cur, old := LocalSupport(), baselineSupport
	g.view.Store(&gateView{members: []memberSupport{{id: "a", support: cur}, {id: "b", support: cur}}})
	if f := g.EntryFormat(); f != fsm.EntryFormatChecked {
		t.Fatalf("every member current: format %d", f)
	}
	g.view.Store(&gateView{members: []memberSupport{{id: "a", support: cur}, {id: "b", support: old}}})
	if f := g.EntryFormat(); f != fsm.EntryFormatUnchecked {
		t.Fatalf("one member of the baseline release: format %d", f)
	}
	if ok, why := old.supports(fsm.TypeDelegate); !ok {
		t.Fatalf("a format-1 member holds back a delegate: %s", why)
	}
}
