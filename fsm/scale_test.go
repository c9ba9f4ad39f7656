package fsm

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"
	"unsafe"
)

// TestScale measures (never asserts) a state of a million sessions and a
// million facts: memory per session and per fact, snapshot size and time,
// restore time and peak heap. It runs only with RECONF_SCALE=1:
//
//	RECONF_SCALE=1 go test ./fsm/ -run TestScale -v -timeout 30m
//
// RECONF_SCALE_N sets the number of sessions (default 1,000,000); the
// number of facts is the same.
func TestScale(t *testing.T) {
	if os.Getenv("RECONF_SCALE") == "" {
		t.Skip("set RECONF_SCALE=1 to measure a large state")
	}
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("RECONF_SCALE_N")); err == nil && v > 0 {
		n = v
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		t.Logf("load average before: %s", b)
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	base := heap()

	// 1. n sessions, each recorded native at an authority (ten per authority,
	// as in the benchmarks: footprints stay small).
	start := time.Now()
	s := New()
	auths := benchAuthorities(n)
	index := uint64(0)
	for i := 0; i < n; i++ {
		index++
		r := s.Apply(index, Command{Op: &ExtendFootprint{Authority: fzAuth(uint64(i % auths)), Session: fzSess(uint64(i)), Class: Native}})
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	tSessions := time.Since(start)
	afterSessions := heap()
	perSession := float64(afterSessions-base) / float64(n)
	t.Logf("%d sessions (%d authorities) applied in %v (%.0f/s); heap %.1f MiB: %.0f bytes per session",
		n, auths, tSessions.Round(time.Millisecond), float64(n)/tSessions.Seconds(), mib(afterSessions-base), perSession)

	// 2. n delegations, one per session, to the next authority: n facts.
	// Each also adds the target's delegated_in record of the session.
	start = time.Now()
	for i := 0; i < n; i++ {
		fwd, _ := benchPair(n, i)
		index++
		if r := s.Apply(index, Command{Op: &Delegate{Delegation: fwd}}); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	tDelegations := time.Since(start)
	afterFacts := heap()
	perDelegation := float64(afterFacts-afterSessions) / float64(n)
	t.Logf("%d delegations applied in %v (%.0f/s); heap +%.1f MiB: %.0f bytes per delegation (its fact, the target's new record and index entry)",
		n, tDelegations.Round(time.Millisecond), float64(n)/tDelegations.Seconds(), mib(afterFacts-afterSessions), perDelegation)
	st := s.Stats()
	t.Logf("state: %+v; live heap %.1f MiB", st, mib(afterFacts-base))

	// 3. Snapshot to a file (synced), the way a node persists one.
	dir := t.TempDir()
	path := filepath.Join(dir, "state.snap")
	start = time.Now()
	clone := s.Clone() // what FSM.Snapshot does under the lock: O(1)
	tClone := time.Since(start)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if err := clone.Snapshot(w, 1); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	tSnap := time.Since(start)
	fi, _ := os.Stat(path)
	t.Logf("snapshot: clone %v, written and synced in %v, %.1f MiB (%.0f bytes per session+fact)",
		tClone, tSnap.Round(time.Millisecond), mib(uint64(fi.Size())), float64(fi.Size())/float64(n))
	start = time.Now()
	d1 := s.Digest()
	t.Logf("digest of the state: %v", time.Since(start).Round(time.Millisecond))

	// 4. Restore from the file into a fresh state (validated in full first).
	keep := s
	before := heap()
	h := startHeapSampler()
	start = time.Now()
	rf, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	r, _, err := Restore(bufio.NewReaderSize(rf, 1<<20))
	rf.Close()
	tRestore := time.Since(start)
	peak := h.finish()
	if err != nil {
		t.Fatal(err)
	}
	if r.Digest() != d1 {
		t.Fatal("restored state has another digest")
	}
	retained := heap() - before
	t.Logf("restore: %v (%.1f MiB/s), peak heap +%.1f MiB, retained +%.1f MiB",
		tRestore.Round(time.Millisecond), mib(uint64(fi.Size()))/tRestore.Seconds(), mib(peak-before), mib(retained))
	runtime.KeepAlive(keep)
	runtime.KeepAlive(r)

	// 5. Facts alone: the journal is one slice of Fact values (the bundle
	// id string is shared with the bundle), so a fact costs its struct, plus
	// the slack of the slice's growth.
	t.Logf("facts alone: %d bytes per fact (Fact struct), %.0f with the journal's current slack (len %d, cap %d)",
		unsafe.Sizeof(Fact{}), float64(unsafe.Sizeof(Fact{}))*float64(cap(keep.facts))/float64(len(keep.facts)), len(keep.facts), cap(keep.facts))
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		t.Logf("load average after: %s", b)
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
