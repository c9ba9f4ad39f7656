package jepsen

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// ---- the model, on hand-made histories (no root needed) ----

func op(call, ret int64, in mInput, out mOutput) porcupine.Operation {
	if ret < 0 {
		ret = math.MaxInt64
		out.Unknown = true
	}
	return porcupine.Operation{Input: in, Output: out, Call: call, Return: ret}
}

func setupOps(sess int) []porcupine.Operation {
	return []porcupine.Operation{
		op(0, 1, mInput{Sess: sess, Kind: mExtend, A: 0}, mOutput{OK: true}),
		op(2, 3, mInput{Sess: sess, Kind: mOpen, Owner: "o0"}, mOutput{OK: true, Owner: "o0", Gen: 1}),
	}
}

func handoffOK(call, ret int64, owner string, gen uint64, next string, from, to int, fromBefore, toBefore uint8) porcupine.Operation {
	return op(call, ret, mInput{Kind: mHandoff, Owner: owner, Gen: gen, Next: next, A: from, B: to},
		mOutput{OK: true, HasReceipt: true, FromBefore: fromBefore, ToBefore: toBefore, FromAfter: ClassOut, ToAfter: ClassIn,
			FromGen: gen, ToGen: gen + 1, ToOwner: next})
}

func readOwner(call, ret int64, owner string, gen uint64) porcupine.Operation {
	return op(call, ret, mInput{Kind: mReadSession}, mOutput{OK: true, Found: true, Owner: owner, Gen: gen})
}

func check(t *testing.T, ops []porcupine.Operation) porcupine.CheckResult {
	t.Helper()
	return porcupine.CheckOperationsTimeout(Model([]string{"a0", "a1", "a2", "a3"}), ops, 10*time.Second)
}

func TestModelAcceptsLinearizableHistory(t *testing.T) {
	h := setupOps(0)
	h = append(h,
		handoffOK(10, 20, "o0", 1, "o1", 0, 1, ClassNative, ClassNone),
		// Concurrent with the handoff: may see either side.
		readOwner(12, 14, "o0", 1),
		readOwner(15, 25, "o1", 2),
		op(30, 40, mInput{Kind: mDelegate, A: 1, B: 2}, mOutput{OK: true, HasReceipt: true, FromBefore: ClassIn, ToBefore: ClassNone, FromAfter: ClassOut, ToAfter: ClassIn}),
		// a0's out-record is cleared by the chain hop; a1 keeps the latest.
		op(41, 42, mInput{Kind: mReadFootprnt, A: 0}, mOutput{OK: true, Class: ClassNone}),
		op(41, 42, mInput{Kind: mReadFootprnt, A: 1}, mOutput{OK: true, Class: ClassOut}),
		// a stale owner is refused and names the current one.
		op(50, 60, mInput{Kind: mHandoff, Owner: "o0", Gen: 1, Next: "x", A: 2, B: 3}, mOutput{Code: "stale_owner", CurKnown: true, CurOwner: "o1", CurGen: 2}),
		// a delegation from someone who does not hold it.
		op(61, 62, mInput{Kind: mDelegate, A: 3, B: 0}, mOutput{Code: "session_not_owned"}),
		// a second delegation from the old holder would leave two active.
		op(63, 64, mInput{Kind: mDelegate, A: 1, B: 3}, mOutput{Code: "coherence_violation"}),
		// an unknown handoff that never happened: fine.
		op(70, -1, mInput{Kind: mHandoff, Owner: "o1", Gen: 2, Next: "lost", A: 2, B: 0}, mOutput{}),
		readOwner(80, 81, "o1", 2),
	)
	for i := range h {
		in := h[i].Input.(mInput)
		in.Sess = 0
		h[i].Input = in
	}
	if r := check(t, h); r != porcupine.Ok {
		t.Fatalf("linearizable history judged %s", r)
	}
}

func TestModelCatchesStaleRead(t *testing.T) {
	h := append(setupOps(0),
		handoffOK(10, 20, "o0", 1, "o1", 0, 1, ClassNative, ClassNone),
		// Starts after the handoff was acknowledged, still sees the old owner:
		// what a minority node serving local reads answers.
		readOwner(30, 31, "o0", 1),
	)
	if r := check(t, h); r != porcupine.Illegal {
		t.Fatalf("stale read judged %s, want Illegal", r)
	}
}

func TestModelCatchesLostWrite(t *testing.T) {
	h := append(setupOps(0),
		op(10, 20, mInput{Kind: mDelegate, A: 0, B: 2}, mOutput{OK: true, HasReceipt: true, FromBefore: ClassNative, ToBefore: ClassNone, FromAfter: ClassOut, ToAfter: ClassIn}),
		op(30, 31, mInput{Kind: mReadFootprnt, A: 0}, mOutput{OK: true, Class: ClassNative}),
	)
	if r := check(t, h); r != porcupine.Illegal {
		t.Fatalf("lost delegation judged %s, want Illegal", r)
	}
}

func TestModelCatchesDoubleGeneration(t *testing.T) {
	// Two handoffs presenting the same generation cannot both succeed.
	h := append(setupOps(0),
		handoffOK(10, 20, "o0", 1, "o1", 0, 1, ClassNative, ClassNone),
		handoffOK(11, 21, "o0", 1, "o2", 0, 2, ClassNative, ClassNone),
	)
	if r := check(t, h); r != porcupine.Illegal {
		t.Fatalf("double handoff judged %s, want Illegal", r)
	}
}

func TestModelUnknownWriteMayHaveHappened(t *testing.T) {
	h := append(setupOps(0),
		op(10, -1, mInput{Kind: mHandoff, Owner: "o0", Gen: 1, Next: "o1", A: 0, B: 1}, mOutput{}),
		readOwner(30, 31, "o1", 2),
		readOwner(40, 41, "o1", 2),
	)
	if r := check(t, h); r != porcupine.Ok {
		t.Fatalf("unknown handoff seen applied judged %s, want Ok", r)
	}
	// ... but once seen applied it cannot be unseen.
	h = append(h, readOwner(50, 51, "o0", 1))
	if r := check(t, h); r != porcupine.Illegal {
		t.Fatalf("flip-flopping owner judged %s, want Illegal", r)
	}
}

func TestPartitionsBySession(t *testing.T) {
	a := setupOps(0)
	b := setupOps(1)
	h := append(a, b...)
	h = append(h, op(10, 11, mInput{Sess: 1, Kind: mReadSession}, mOutput{OK: true, Found: true, Owner: "o0", Gen: 1}))
	parts := Model(nil).Partition(h)
	if len(parts) != 2 || len(parts[1]) != 3 {
		t.Fatalf("partitions: %d", len(parts))
	}
}

func TestStalePID(t *testing.T) {
	for name, want := range map[string]int{"rcj123-n1": 123, "rcj9h": 9, "rcj-x": -1, "rcjabc-n1": -1, "other": -1, "rcj12": -1} {
		got, ok := stalePID(name)
		if (want < 0) == ok || (ok && got != want) {
			t.Errorf("stalePID(%q) = %d, %t; want %d", name, got, ok, want)
		}
	}
}

// ---- the real thing: a short run on real processes and a real network ----

// TestJepsenShort runs the suite for about a minute (RECONF_JEPSEN_TIME
// seconds, default 60) on a 5-node cluster. It needs root (network
// namespaces, iptables); without root it is skipped unless RECONF_JEPSEN
// asks for it explicitly, and RECONF_JEPSEN=off always skips it.
func TestJepsenShort(t *testing.T) {
	mode := os.Getenv("RECONF_JEPSEN")
	if mode == "off" {
		t.Skip("RECONF_JEPSEN=off: partition test skipped")
	}
	if os.Geteuid() != 0 {
		if mode != "" {
			t.Fatalf("RECONF_JEPSEN=%s but not root: the partition test needs root for ip netns and iptables", mode)
		}
		t.Skip("not root: the partition test needs root for ip netns and iptables (set RECONF_JEPSEN=on to make this a failure, off to silence it)")
	}
	// Ctrl-C or SIGTERM ends the run early; Run then tears everything down.
	// So does the test deadline (go test -timeout), well before go test
	// would kill the process without running any cleanup.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if dl, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-30*time.Second))
		defer cancel()
	}
	t.Cleanup(CleanOwn)
	if err := Preflight(ctx); err != nil {
		t.Fatalf("partition test cannot run on this machine: %v", err)
	}
	seconds := 60
	if v := os.Getenv("RECONF_JEPSEN_TIME"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 5 {
			t.Fatalf("RECONF_JEPSEN_TIME=%q: want seconds ≥ 5", v)
		}
		seconds = n
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "reconfd")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/reconf/reconf/cmd/node")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build reconfd: %v\n%s", err, out)
	}
	results, err := os.MkdirTemp("", "reconf-jepsen-test-")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Binary: bin, Nodes: 5, Duration: time.Duration(seconds) * time.Second, ResultsDir: results,
		Logf: func(format string, args ...any) { t.Logf(format, args...) },
	}
	sum, err := Run(ctx, cfg)
	t.Log("\n" + sum.Report())
	if err != nil || !sum.Valid {
		t.Fatalf("partition test failed (results kept in %s): %v", results, err)
	}
	os.RemoveAll(results)
}

// ---- the checkers on recorded and hand-made histories ----

// TestCheckerFailsRecordedStaleRead replays the history of the 2026-12-03
// pause-leader run (testdata/stale-read-2026-12-03, from the project's
// evidence): a resumed, deposed leader answered op 2228 from index 1086
// after writes up to 1094 were acknowledged. The linearizability checker
// must reject it, and accept the same history without that read.
func TestCheckerFailsRecordedStaleRead(t *testing.T) {
	dir := filepath.Join("testdata", "stale-read-2026-12-03")
	ops, faults, err := ReadHistoryJSONL(filepath.Join(dir, "history.jsonl.gz"))
	if err != nil {
		t.Fatal(err)
	}
	var ids struct {
		Sessions    []string `json:"sessions"`
		Authorities []string `json:"authorities"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "ids.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &ids); err != nil {
		t.Fatal(err)
	}
	if len(ops) < 7000 || len(faults) == 0 {
		t.Fatalf("read %d ops and %d faults; the recorded run has 7083 ops and pause faults", len(ops), len(faults))
	}
	v := CheckLinearizable(ops, faults, len(ids.Sessions), shortNames(ids.Authorities), time.Minute, "")
	if v.Valid {
		t.Fatalf("the recorded stale read was judged linearizable: %+v", v)
	}
	if v.Result != "Illegal" {
		t.Fatalf("porcupine said %q, want Illegal (a definite violation, not a timeout)", v.Result)
	}
	var without []*Op
	for _, op := range ops {
		if op.ID != 2228 {
			without = append(without, op)
		}
	}
	if len(without) != len(ops)-1 {
		t.Fatal("op 2228 is not in the history")
	}
	if v := CheckLinearizable(without, faults, len(ids.Sessions), shortNames(ids.Authorities), time.Minute, ""); !v.Valid {
		t.Fatalf("without op 2228 the history should be linearizable: %v", v.Problems)
	}
}

func TestCheckReadIndexes(t *testing.T) {
	w := func(id int64, invoke, complete int64, index uint64) *Op {
		return &Op{ID: id, F: mDelegate, Invoke: invoke, Complete: complete, Type: TypeOK, Index: index, Attempts: []Attempt{{Node: "n1"}}}
	}
	r := func(id int64, invoke, complete int64, index uint64) *Op {
		return &Op{ID: id, F: mReadFootprnt, Invoke: invoke, Complete: complete, Type: TypeOK, Index: index, Attempts: []Attempt{{Node: "n5"}}}
	}
	base := []*Op{
		w(1, 0, 100, 10),
		w(2, 50, 200, 14),
		w(3, 60, 150, 12), // finished before 2: the best before 180 is 12
		{ID: 4, F: mDelegate, Invoke: 70, Complete: Never, Type: TypeInfo, Index: 99}, // unknown: proves nothing
		{ID: 5, F: mDelegate, Invoke: 70, Complete: 90, Type: TypeFail},
		r(10, 90, 300, 9),   // began before any ack: fine
		r(11, 120, 300, 10), // saw op 1: fine
		r(12, 180, 300, 12), // saw op 3: fine
		r(13, 250, 300, 14), // saw op 2: fine
		r(14, 250, 300, 0),  // no index: counted, not judged
	}
	v := CheckReadIndexes(base, nil)
	if !v.Valid || v.Checked != 4 || v.Stats["reads_without_index"] != 1 {
		t.Fatalf("valid history: %+v", v)
	}
	for _, bad := range []*Op{
		r(20, 101, 300, 9),  // after op 1 (index 10) was acknowledged
		r(21, 180, 300, 11), // after op 3 (index 12)
		r(22, 201, 300, 13), // after op 2 (index 14)
	} {
		bad.Probe = "after-resume"
		ops := append(append([]*Op(nil), base...), bad)
		v := CheckReadIndexes(ops, []*Fault{{Kind: FaultPause, Start: 0, End: 1000, Nodes: []string{"n5"}}})
		if v.Valid || len(v.Problems) != 1 {
			t.Fatalf("stale read %d (index %d at %d) not caught: %+v", bad.ID, bad.Index, bad.Invoke, v)
		}
		t.Log(v.Problems[0])
	}
}
