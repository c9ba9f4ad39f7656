package fsm

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// Benchmarks of the state machine. The big states are built once per
// sub-benchmark, outside the timer, and kept while the benchmark function is
// called again with a larger b.N; they are dropped when the sub-benchmark
// ends so that one benchmark's heap does not slow the next one's GC.
//
//	go test ./fsm -run '^$' -bench . -benchmem

// benchSessionsPerAuthority keeps footprints small whatever the state size.
// A delegation's receipt copies the footprints of the two authorities
// involved (before and after), so its cost grows with those footprints, not
// with the number of sessions in the state: domain 9.5 asks for the same
// cost at 1,000 or 10,000,000 sessions, which only holds per footprint size.
const benchSessionsPerAuthority = 10

// benchState builds a state holding n sessions, session i native in
// authority i mod n/benchSessionsPerAuthority.
func benchState(tb testing.TB, n int) *State {
	tb.Helper()
	s := New()
	auths := benchAuthorities(n)
	for i := 0; i < n; i++ {
		r := s.Apply(uint64(i+1), Command{Op: &ExtendFootprint{Authority: fzAuth(uint64(i % auths)), Session: fzSess(uint64(i)), Class: Native}})
		if r.Err != nil {
			tb.Fatal(r.Err)
		}
	}
	return s
}

func benchAuthorities(n int) int { return max(n/benchSessionsPerAuthority, 2) }

// benchPair is session i's delegation to the next authority and back. From
// native, A→B leaves A delegated-out and B delegated-in; B→A then clears
// A's out-record (chain clearing) and leaves B out, A in; A→B again clears
// B's. Every hop is accepted and the state stays coherent, so ping-ponging
// measures the accepted path indefinitely.
func benchPair(n, i int) (fwd, back Delegation) {
	auths := benchAuthorities(n)
	a, b := fzAuth(uint64(i%auths)), fzAuth(uint64((i+1)%auths))
	s := fzSess(uint64(i))
	fwd = Delegation{Session: s, From: a, To: b, BundleID: "device_migration", AtMillis: 1}
	back = Delegation{Session: s, From: b, To: a, BundleID: "device_migration", AtMillis: 2}
	return fwd, back
}

// pingPong cycles through groups of sessions: every group forward, then
// every group back, and so on. Each group is one unit of work (a command or
// an entry). The cursor lives with the state, so the state and the next
// direction agree across calls of the benchmark function.
type pingPong[T any] struct {
	s         *State
	fwd, back []T
	op        int
	index     uint64
}

func (p *pingPong[T]) next() T {
	g := p.op % len(p.fwd)
	round := p.op / len(p.fwd)
	p.op++
	p.index++
	if round%2 == 0 {
		return p.fwd[g]
	}
	return p.back[g]
}

// benchSpread returns up to k sessions, one per authority, spread evenly
// over the authorities. Session i < authorities is native in authority i and
// is delegated to authority i+1, so every authority involved holds its ten
// natives plus at most two delegated sessions: footprints (and so receipts)
// are the same size whatever n is.
func benchSpread(n, k int) []int {
	auths := benchAuthorities(n)
	k = min(k, auths)
	out := make([]int, k)
	for j := range out {
		out[j] = j * (auths / k)
	}
	return out
}

// delegatePingPong is a state of n sessions and the delegations that move
// up to 1,000 of them (spread over the state) back and forth.
func delegatePingPong(b *testing.B, n int) *pingPong[Command] {
	pp := &pingPong[Command]{s: benchState(b, n), index: uint64(n)}
	for _, i := range benchSpread(n, 1000) {
		fwd, back := benchPair(n, i)
		pp.fwd = append(pp.fwd, Command{Op: &Delegate{Delegation: fwd}})
		pp.back = append(pp.back, Command{Op: &Delegate{Delegation: back}})
	}
	return pp
}

// BenchmarkDelegate measures one accepted delegation per op. It cycles
// through up to 1,000 sessions spread over the state (100 at 1,000
// sessions: one per authority), so at 1,000,000 sessions the tree paths it
// walks are mostly out of cache, as they are for real traffic; the
// footprints involved hold about ten sessions at both sizes.
func BenchmarkDelegate(b *testing.B) {
	for _, n := range []int{1000, 1_000_000} {
		var pp *pingPong[Command]
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			if pp == nil {
				start := time.Now()
				pp = delegatePingPong(b, n)
				b.Logf("built %d sessions, %d authorities in %v", n, benchAuthorities(n), time.Since(start).Round(time.Millisecond))
				runtime.GC()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				cmd := pp.next()
				if r := pp.s.Apply(pp.index, cmd); r.Err != nil {
					b.Fatal(r.Err)
				}
			}
		})
		pp = nil
		runtime.GC()
	}
}

func BenchmarkApplyEntry(b *testing.B) {
	// Every batch size cycles through the same sessions, so the working
	// set (and the cache misses it costs) is the same for all of them.
	const n, working = 200_000, 16384
	for _, batch := range []int{1, 16, 256} {
		groups := working / batch
		var pp *pingPong[[]byte]
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			if pp == nil {
				pp = &pingPong[[]byte]{s: benchState(b, n), index: n}
				sessions := benchSpread(n, groups*batch)
				for g := range groups {
					var fwd, back []Command
					for _, i := range sessions[g*batch : (g+1)*batch] {
						f, bk := benchPair(n, i)
						fwd = append(fwd, Command{Op: &Delegate{Delegation: f}})
						back = append(back, Command{Op: &Delegate{Delegation: bk}})
					}
					pp.fwd = append(pp.fwd, EncodeEntry(fwd...))
					pp.back = append(pp.back, EncodeEntry(back...))
				}
				runtime.GC()
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(pp.fwd[0])))
			b.ResetTimer()
			for range b.N {
				entry := pp.next()
				for _, r := range pp.s.ApplyEntry(pp.index, entry) {
					if r.Err != nil {
						b.Fatal(r.Err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/cmd")
		})
		pp = nil
		runtime.GC()
	}
}

func BenchmarkEncodeDecodeEntry(b *testing.B) {
	ctx := ContextID(fzUUID(0xc0, 1))
	bnd := BoundaryForBundleID("device_migration")
	scope := bnd.Scope
	minimal, _ := benchPair(1000, 1)
	full := minimal
	full.Context, full.LinkBoundary, full.Scope = &ctx, &bnd, &scope
	full.UpgradeRequest = &UpgradeRequest{
		UpgradeID:     "upgrade-1",
		Plan:          Plan{PlanID: "plan-1", Steps: []PlanStep{{StepID: "cutover", NextMembers: []string{"member-a", "member-b"}}}},
		Compatibility: Compatibility{PendingEffectTreatment: PreservePending, CanonicalPublicationContinuity: PreserveCanonicalTruth, ExecutionConstraint: PreserveBundleProfile},
	}
	var batch []Command
	for i := range 16 {
		d, _ := benchPair(1000, i)
		batch = append(batch, Command{RequestID: fmt.Sprintf("req-%d", i), Op: &Delegate{Delegation: d}})
	}
	cases := []struct {
		name string
		cmds []Command
	}{
		{"delegate", []Command{{Op: &Delegate{Delegation: minimal}}}},
		{"delegate-full", []Command{{RequestID: "req-1", Op: &Delegate{Delegation: full}}}},
		{"batch=16", batch},
	}
	for _, c := range cases {
		enc := EncodeEntry(c.cmds...)
		b.Run(c.name+"/encode", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(enc)))
			for range b.N {
				EncodeEntry(c.cmds...)
			}
		})
		b.Run(c.name+"/decode", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(enc)))
			for range b.N {
				if _, err := DecodeEntry(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// heapSampler records the largest heap (bytes in live and not yet swept
// objects) seen while it runs, polling runtime/metrics, which does not stop
// the world.
type heapSampler struct {
	peak atomic.Uint64
	stop chan struct{}
	done chan struct{}
}

const heapMetric = "/memory/classes/heap/objects:bytes"

func heapNow() uint64 {
	s := []metrics.Sample{{Name: heapMetric}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func startHeapSampler() *heapSampler {
	h := &heapSampler{stop: make(chan struct{}), done: make(chan struct{})}
	h.peak.Store(heapNow())
	go func() {
		defer close(h.done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-t.C:
				if v := heapNow(); v > h.peak.Load() {
					h.peak.Store(v)
				}
			}
		}
	}()
	return h
}

func (h *heapSampler) finish() uint64 {
	close(h.stop)
	<-h.done
	if v := heapNow(); v > h.peak.Load() {
		h.peak.Store(v)
	}
	return h.peak.Load()
}

// benchBigState is the snapshot benchmark's state: n sessions plus one
// accepted delegation (one fact) for each of the first facts sessions.
func benchBigState(b *testing.B, n, facts int) *State {
	start := time.Now()
	s := benchState(b, n)
	for i := range facts {
		fwd, _ := benchPair(n, i)
		if r := s.Apply(uint64(n+1+i), Command{Op: &Delegate{Delegation: fwd}}); r.Err != nil {
			b.Fatal(r.Err)
		}
	}
	b.Logf("built %+v in %v", s.Stats(), time.Since(start).Round(time.Millisecond))
	return s
}

func BenchmarkSnapshotRestore(b *testing.B) {
	const n, facts = 1_000_000, 100_000
	b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
		runtime.GC()
		base := heapNow()
		s := benchBigState(b, n, facts)
		runtime.GC()
		b.Logf("live heap of the state: %.1f MB", float64(heapNow()-base)/(1<<20))
		var snap bytes.Buffer
		if err := s.Snapshot(&snap, 1); err != nil {
			b.Fatal(err)
		}

		b.Run("Snapshot", func(b *testing.B) {
			var buf bytes.Buffer
			buf.Grow(snap.Len())
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				buf.Reset()
				if err := s.Snapshot(&buf, 1); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(buf.Len()), "bytes")
		})

		b.Run("Digest", func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				s.Digest()
			}
		})

		b.Run("Restore", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(snap.Len()))
			var peak, retained uint64
			for range b.N {
				b.StopTimer()
				runtime.GC()
				before := heapNow()
				h := startHeapSampler()
				b.StartTimer()
				r, _, err := Restore(bytes.NewReader(snap.Bytes()))
				b.StopTimer()
				p := h.finish()
				if err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				peak = max(peak, p-before)
				retained = max(retained, heapNow()-before)
				runtime.KeepAlive(r)
				b.StartTimer()
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
			b.ReportMetric(float64(retained)/(1<<20), "retained-MB")
		})

		// The raft adapter: Snapshot must be an O(1) clone under the lock,
		// whatever the state size; Persist then streams it.
		f := NewFSM(nil)
		if err := f.Restore(io.NopCloser(bytes.NewReader(snap.Bytes()))); err != nil {
			b.Fatal(err)
		}
		b.Run("FSMSnapshot", func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				fs, err := f.Snapshot()
				if err != nil {
					b.Fatal(err)
				}
				fs.Release()
			}
		})
		// The price of the clone is paid by the next write: each tree
		// copies the nodes on the path it changes.
		b.Run("FSMSnapshotThenApply", func(b *testing.B) {
			var cmds [2][]byte
			fwd, back := benchPair(n, n-1)
			cmds[0] = EncodeEntry(Command{Op: &Delegate{Delegation: fwd}})
			cmds[1] = EncodeEntry(Command{Op: &Delegate{Delegation: back}})
			var index uint64
			f.Read(func(s *State) { index = s.AppliedIndex() })
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				fs, err := f.Snapshot()
				if err != nil {
					b.Fatal(err)
				}
				index++
				res := f.Apply(&raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: cmds[i%2]}).([]Result)
				if res[0].Err != nil {
					b.Fatal(res[0].Err)
				}
				fs.Release()
			}
		})
		runtime.KeepAlive(s)
	})
}
