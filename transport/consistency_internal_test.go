package transport

import (
	"net/http"
	"slices"
	"testing"

	"github.com/reconf/reconf/fsm"
)

func TestJudgeCheck(t *testing.T) {
	ok := func(id, d string) CheckMemberJSON { return CheckMemberJSON{ID: id, Status: MemberOK, Digest: d} }
	gone := func(id string) CheckMemberJSON { return CheckMemberJSON{ID: id, Status: MemberUnreachable} }
	for _, c := range []struct {
		name    string
		members []CheckMemberJSON
		status  string
		odd     []string
	}{
		{"all agree", []CheckMemberJSON{ok("n3", "a"), ok("n1", "a"), ok("n2", "a")}, CheckConsistent, nil},
		{"one odd", []CheckMemberJSON{ok("n1", "a"), ok("n2", "b"), ok("n3", "a")}, CheckMismatch, []string{"n2"}},
		{"odd leader", []CheckMemberJSON{ok("n1", "b"), ok("n2", "a"), ok("n3", "a")}, CheckMismatch, []string{"n1"}},
		{"no majority", []CheckMemberJSON{ok("n1", "a"), ok("n2", "b"), gone("n3")}, CheckMismatch, []string{"n1", "n2"}},
		{"one silent", []CheckMemberJSON{ok("n1", "a"), gone("n2"), ok("n3", "a")}, CheckIncomplete, nil},
		{"halted", []CheckMemberJSON{ok("n1", "a"), {ID: "n2", Status: MemberHalted}, ok("n3", "a")}, CheckIncomplete, nil},
		{"even split", []CheckMemberJSON{ok("n1", "a"), ok("n2", "a"), ok("n3", "b"), ok("n4", "b")}, CheckMismatch, []string{"n1", "n2", "n3", "n4"}},
		// A majority of the configuration, not of those that answered.
		{"minority pair", []CheckMemberJSON{ok("n1", "a"), ok("n2", "a"), ok("n3", "b"), gone("n4"), gone("n5")}, CheckMismatch, []string{"n1", "n2", "n3"}},
	} {
		v := judgeCheck(9, c.members)
		if v.Status != c.status || !slices.Equal(v.Odd, c.odd) || v.Index != 9 {
			t.Errorf("%s: %s odd %v, want %s odd %v", c.name, v.Status, v.Odd, c.status, c.odd)
		}
		if !slices.IsSortedFunc(v.Members, func(a, b CheckMemberJSON) int { return cmpString(a.ID, b.ID) }) {
			t.Errorf("%s: members not sorted by id", c.name)
		}
		if err := checkVerdict(&v); err != nil {
			t.Errorf("%s: its own verdict refused: %v", c.name, err)
		}
	}
	// A pushed verdict must follow from its digests.
	forged := judgeCheck(9, []CheckMemberJSON{ok("n1", "a"), ok("n2", "a"), ok("n3", "a")})
	forged.Status, forged.Odd = CheckMismatch, []string{"n2"}
	if err := checkVerdict(&forged); err == nil {
		t.Error("a verdict naming an odd replica the digests do not show was accepted")
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// A check entry is proposed only when every member decodes it.
func TestGateHoldsBackConsistencyCheck(t *testing.T) {
	n1 := startSecNode(t, "n1", secOpts{bootstrap: true})
	n1.waitLeading()
	old := startSecNode(t, "n2", secOpts{support: olderRelease(fsm.TypeConsistencyCheck)})
	if _, err := old.joinVia(n1.httpAddr, true); err != nil {
		t.Fatal(err)
	}
	before := n1.node.FSM().AppliedIndex()
	status, e, _ := rawDo(t, nil, "", "POST", n1.url("/v1/cluster/check"), nil)
	if status != http.StatusServiceUnavailable || e.Code != CodeUpgradeInProgress {
		t.Fatalf("check with a member that cannot decode it: %d %v", status, e)
	}
	mustContain(t, "message", e.Message, "n2", "does not know command type consistency_check")
	if after := n1.node.FSM().AppliedIndex(); after != before {
		t.Fatalf("a refused check moved the log from %d to %d", before, after)
	}
}
