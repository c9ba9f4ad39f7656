package cluster_test

import (
	"context"
	"encoding/binary"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/reconf/reconf/cluster"
	"github.com/reconf/reconf/fsm"
)

// TestScaleRestart measures (never asserts) a node with a million sessions
// and a million facts on each log store: loading them through the log in
// batches, a snapshot, and a restart from the log alone and from the
// snapshot. It runs only with RECONF_SCALE=1:
//
//	RECONF_SCALE=1 go test ./cluster/ -run TestScaleRestart -v -timeout 60m
//
// RECONF_SCALE_N sets the number of sessions (default 1,000,000).
func TestScaleRestart(t *testing.T) {
	if os.Getenv("RECONF_SCALE") == "" {
		t.Skip("set RECONF_SCALE=1 to measure restarts with a large state")
	}
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("RECONF_SCALE_N")); err == nil && v > 0 {
		n = v
	}
	for _, store := range []string{cluster.LogStoreBolt, cluster.LogStoreWAL} {
		t.Run(store, func(t *testing.T) { scaleRestart(t, store, n) })
	}
}

func scaleID(kind byte, i int) fsm.UUID {
	var u fsm.UUID
	binary.BigEndian.PutUint64(u[0:8], uint64(i)*0x9e3779b97f4a7c15)
	binary.BigEndian.PutUint64(u[8:16], uint64(i))
	u[8] = kind
	return u
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func scaleRestart(t *testing.T, store string, n int) {
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		t.Logf("load average before: %s", b)
	}
	tn := &tnode{id: "scale", dir: t.TempDir(), bootstrap: true, tune: func(c *cluster.Config) {
		c.LogStore = store
		c.SnapshotThreshold = 1 << 40 // snapshots only when asked
		c.TrailingLogs = 1 << 40
	}}
	base := liveHeap()
	tn.open(t)
	waitReady(t, tn.n)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
	defer cancel()
	auths := max(n/10, 2)
	auth := func(i int) fsm.AuthorityID { return fsm.AuthorityID(scaleID(0xa1, i%auths)) }
	sess := func(i int) fsm.SessionID { return fsm.SessionID(scaleID(0x5e, i)) }
	load := func(what string, cmd func(i int) fsm.Command) {
		t.Helper()
		start := time.Now()
		const batch = 1024
		for lo := 0; lo < n; lo += batch {
			cmds := make([]fsm.Command, 0, batch)
			for i := lo; i < min(n, lo+batch); i++ {
				cmds = append(cmds, cmd(i))
			}
			for i, a := range tn.n.ProposeAll(ctx, cmds) {
				if a.Err != nil || a.Result.Err != nil {
					t.Fatalf("%s %d: %v %v", what, lo+i, a.Err, a.Result.Err)
				}
			}
		}
		d := time.Since(start)
		t.Logf("%s: %d commands through the log in batches of 1024 in %v (%.0f/s)", what, n, d.Round(time.Millisecond), float64(n)/d.Seconds())
	}
	load("sessions", func(i int) fsm.Command { return native(auth(i), sess(i)) })
	load("delegations", func(i int) fsm.Command {
		return fsm.Command{Op: &fsm.Delegate{Delegation: fsm.Delegation{Session: sess(i), From: auth(i), To: auth(i + 1), BundleID: "device_migration", AtMillis: 1}}}
	})
	var stats fsm.Stats
	tn.n.FSM().Read(func(s *fsm.State) { stats = s.Stats() })
	last, digest := tn.n.Digest()
	t.Logf("state: %d footprint records, %d facts, applied index %d; live heap of the node %.0f MiB", stats.FootprintEntries, stats.Facts, last, mib(liveHeap()-base))
	if path := os.Getenv("RECONF_SCALE_HEAPPROFILE"); path != "" {
		if f, err := os.Create(path + "." + store); err == nil {
			_ = pprof.WriteHeapProfile(f)
			f.Close()
		}
	}

	restart := func(what string) {
		t.Helper()
		tn.close()
		runtime.GC()
		start := time.Now()
		tn.open(t) // a snapshot, if any, is restored inside Open
		opened := time.Since(start)
		for deadline := time.Now().Add(20 * time.Minute); tn.n.FSM().AppliedIndex() < last; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the restarted node did not apply its log within 20 minutes", what)
			}
		}
		applied := time.Since(start)
		waitReady(t, tn.n)
		ready := time.Since(start)
		if _, d := tn.n.Digest(); d != digest {
			t.Fatalf("%s: the restarted node has another state", what)
		}
		t.Logf("restart %s: Open %v, log applied after %v, leading and serving reads after %v; live heap %.0f MiB",
			what, opened.Round(time.Millisecond), applied.Round(time.Millisecond), ready.Round(time.Millisecond), mib(liveHeap()-base))
	}
	restart("from the log alone (no snapshot)")

	start := time.Now()
	if err := tn.n.SnapshotNow(); err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot of the state taken (and the log compacted) in %v", time.Since(start).Round(time.Millisecond))
	// A few entries after the snapshot, replayed from the log on restart.
	for i := 0; i < 100; i++ {
		if _, err := tn.n.Propose(ctx, native(auth(i), fsm.SessionID(scaleID(0x77, i)))); err != nil {
			t.Fatal(err)
		}
	}
	last, digest = tn.n.Digest()
	restart("from the snapshot plus 100 entries")
	dirSize := func() int64 {
		var total int64
		_ = walkSize(tn.dir, &total)
		return total
	}
	t.Logf("data dir: %.0f MiB", mib(uint64(dirSize())))
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		t.Logf("load average after: %s", b)
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func walkSize(dir string, total *int64) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := dir + "/" + e.Name()
		if e.IsDir() {
			_ = walkSize(p, total)
			continue
		}
		if fi, err := e.Info(); err == nil {
			*total += fi.Size()
		}
	}
	return nil
}
