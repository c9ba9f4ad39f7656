// Package jepsen is reconf's partition test: a cluster of real reconfd
// processes, each in its own network namespace, concurrent clients that
// record every operation, nemeses that partition the network, kill, pause
// and re-add nodes, and checkers (porcupine linearizability per session,
// nothing acknowledged lost, one audit fact per delegation, coherence,
// equal digests, one leader per term). See README.md, "Partition testing".
package jepsen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/reconf/reconf/transport"
)

// Config is one run.
type Config struct {
	Binary     string        // reconfd
	Nodes      int           // default 5
	Duration   time.Duration // time under faults; default 60s
	Unsafe     bool          // start nodes with --unsafe-local-reads
	Clients    int           // default 2 per node
	Sessions   int           // default 6
	Authors    int           // authorities; default 4
	ResultsDir string        // where to write; created
	Faults     []string      // default AllFaults
	Logf       func(format string, args ...any)
	// CheckTimeout bounds the porcupine check; default 120s.
	CheckTimeout time.Duration
	// Calm and Hold are the nemesis schedule: healthy time between faults
	// and how long a fault lasts, each [min, max); defaults 2-4s and 3-6s.
	Calm, Hold [2]time.Duration
}

// Summary is summary.json.
type Summary struct {
	Valid      bool               `json:"valid"`
	Unsafe     bool               `json:"unsafe"`
	Nodes      int                `json:"nodes"`
	Duration   float64            `json:"duration_seconds"`
	WallTime   float64            `json:"wall_seconds"`
	StartedAt  string             `json:"started_at"`
	Ops        map[string]int     `json:"ops"`
	OpsByKind  map[string]any     `json:"ops_by_kind"`
	Faults     []*Fault           `json:"faults"`
	FaultCount map[string]int     `json:"fault_counts"`
	Checkers   map[string]Verdict `json:"checkers"`
	Leaders    LeaderVerdict      `json:"leaders"`
	Load       map[string]string  `json:"load"`
	Network    map[string]any     `json:"network"`
	Error      string             `json:"error,omitempty"`
	ResultsDir string             `json:"results_dir"`
}

func (c *Config) defaults() {
	if c.Nodes == 0 {
		c.Nodes = 5
	}
	if c.Duration == 0 {
		c.Duration = 60 * time.Second
	}
	if c.Clients == 0 {
		c.Clients = 2 * c.Nodes
	}
	if c.Sessions == 0 {
		c.Sessions = 6
	}
	if c.Authors == 0 {
		c.Authors = 4
	}
	if len(c.Faults) == 0 {
		c.Faults = AllFaults
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	if c.CheckTimeout == 0 {
		c.CheckTimeout = 120 * time.Second
	}
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Run runs the whole test: network, cluster, setup, workload under faults,
// healing, final reads, checks, results. It always tears everything down
// and writes what it has, also when ctx is cancelled (Ctrl-C). The summary
// is returned even with an error.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	cfg.defaults()
	began := time.Now()
	sum := &Summary{
		Unsafe: cfg.Unsafe, Nodes: cfg.Nodes, Duration: cfg.Duration.Seconds(), StartedAt: began.Format(time.RFC3339),
		Checkers: map[string]Verdict{}, Load: map[string]string{"before": loadavg()}, ResultsDir: cfg.ResultsDir,
	}
	if cfg.Authors > MaxAuthorities || cfg.Authors < 2 {
		return sum, fmt.Errorf("jepsen: authorities must be 2..%d", MaxAuthorities)
	}
	if cfg.Nodes < 3 {
		return sum, errors.New("jepsen: need at least 3 nodes")
	}
	logDir := filepath.Join(cfg.ResultsDir, "nodes")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return sum, err
	}
	if err := Preflight(ctx); err != nil {
		return sum, err
	}
	CleanStale(ctx, cfg.Logf)
	dataRoot, err := os.MkdirTemp("", "reconf-jepsen-data-")
	if err != nil {
		return sum, err
	}
	defer os.RemoveAll(dataRoot)

	nw, err := NewNetwork(ctx, cfg.Nodes)
	if err != nil {
		return sum, err
	}
	defer nw.Teardown()
	sum.Network = map[string]any{"hub": nw.Hub, "namespaces": nw.NS, "addresses": nw.IPs, "harness": nw.HostIP, "host_link": nw.HostIf}
	cfg.Logf("network: %d namespaces on %s.0/24 (bridge in %s)", cfg.Nodes, nw.Subnet, nw.Hub)

	cl := NewCluster(nw, cfg.Binary, dataRoot, logDir, cfg.Unsafe, cfg.Logf)
	defer cl.StopAll()
	h := NewHistory()
	err = runPhases(ctx, cfg, cl, h, sum)
	if err != nil {
		sum.Error = err.Error()
	}
	cl.StopAll()
	nw.Teardown()
	finish(cfg, h, sum, began)
	return sum, err
}

// runPhases is everything between the network coming up and teardown.
func runPhases(ctx context.Context, cfg Config, cl *Cluster, h *History, sum *Summary) error {
	// Bring the cluster up: n1 forms it, the others join.
	if err := cl.Start(cl.Nodes[0], true); err != nil {
		return err
	}
	if err := cl.waitReadyz(ctx, cl.Nodes[0], 30*time.Second); err != nil {
		return fmt.Errorf("cluster start: %w", err)
	}
	for _, n := range cl.Nodes[1:] {
		if err := cl.Start(n, false); err != nil {
			return err
		}
	}
	if err := cl.WaitReady(ctx, 60*time.Second); err != nil {
		return fmt.Errorf("cluster start: %w", err)
	}
	cfg.Logf("cluster: %d nodes ready", cfg.Nodes)

	lw := NewLeaderWatch()
	watchCtx, stopWatch := context.WithCancel(ctx)
	var watchWG sync.WaitGroup
	watchWG.Add(1)
	go func() { defer watchWG.Done(); lw.Run(watchCtx, cl, h, 100*time.Millisecond) }()
	defer func() { stopWatch(); watchWG.Wait() }()

	w := NewWorkload(cl, h, cfg.Sessions, cfg.Authors)
	if err := w.Setup(ctx); err != nil {
		return err
	}
	cfg.Logf("setup: %d sessions native at %d authorities, live sessions open", cfg.Sessions, cfg.Authors)

	// Workload and nemesis together for the duration; then heal, let the
	// clients run a little on a healthy cluster, stop them.
	stopClients := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.Run(ctx, stopClients, cfg.Clients) }()
	nem := NewNemesis(cl, h, cfg.Faults, cfg.Logf)
	nem.Probe = func(n *Node, when string) { w.Probe(ctx, n.Index, when) }
	if cfg.Calm[0] > 0 {
		nem.Calm = cfg.Calm
	}
	if cfg.Hold[0] > 0 {
		nem.Hold = cfg.Hold
	}
	nemCtx, stopNem := context.WithTimeout(ctx, cfg.Duration)
	nem.Run(nemCtx) // heals on return
	stopNem()
	cfg.Logf("nemesis: stopped and healed after %d faults", len(h.Faults()))
	sleepCtx(ctx, 5*time.Second)
	close(stopClients)
	wg.Wait()
	w.WaitProbes()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	cfg.Logf("workload: %d ops", len(h.Ops()))

	// After healing: wait for every node to be up, a member and caught up.
	for _, n := range cl.Nodes {
		if !n.Running() {
			cfg.Logf("final: %s is not running; restarting it", n.ID)
			_ = cl.Start(n, false)
		}
	}
	recovered := cl.WaitReady(ctx, 60*time.Second)
	if recovered != nil {
		sum.Checkers["cluster_recovered"] = Verdict{Problems: []string{recovered.Error()}}
	} else {
		sum.Checkers["cluster_recovered"] = Verdict{Valid: true, Checked: cfg.Nodes}
	}
	// Everything after healing is bounded as a whole: a cluster that did
	// not recover fails its checkers promptly instead of timing out each.
	fctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if recovered != nil {
		fctx, cancel = context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
	}
	sum.Checkers["digests"] = checkDigests(fctx, cl)

	// Final linearizable reads of every session and footprint, into the
	// history, then everything the other checkers need.
	for s := range w.Sessions {
		for try := 0; try < 10 && fctx.Err() == nil; try++ {
			if op := w.readSession(fctx, int(w.proc.Add(1)), -1, s, readTag{final: true}); op.Type == TypeOK {
				break
			}
			sleepCtx(fctx, 300*time.Millisecond)
		}
	}
	for a := range w.Auths {
		for try := 0; try < 10 && fctx.Err() == nil; try++ {
			if op := w.readFootprint(fctx, int(w.proc.Add(1)), -1, a, readTag{final: true}); op.Type == TypeOK {
				break
			}
			sleepCtx(fctx, 300*time.Millisecond)
		}
	}
	var facts []transport.FactJSON
	var after uint64
	var factErr error
	for {
		r, err := cl.all.Facts(fctx, after, 10000)
		if err != nil {
			factErr = err
			break
		}
		facts = append(facts, r.Facts...)
		if len(r.Facts) == 0 {
			break
		}
		after = r.Facts[len(r.Facts)-1].Seq
	}
	bundles, bundleErr := cl.all.ListBundles(fctx)
	sum.Checkers["coherence"] = checkCoherence(fctx, cl)

	stopWatch()
	watchWG.Wait()
	cl.StopAll()
	if err := lw.ScanLogs(cl); err != nil {
		cfg.Logf("scan logs: %v", err)
	}
	sum.Checkers["no_crashes"] = checkCrashes(cl)
	sum.Leaders = lw.Check()
	sum.Checkers["leaders"] = Verdict{Valid: sum.Leaders.Valid, Checked: sum.Leaders.Terms, Stats: map[string]any{"polls": sum.Leaders.Polls}}
	if !sum.Leaders.Valid {
		v := sum.Checkers["leaders"]
		for t, cs := range sum.Leaders.Conflicts {
			v.Problems = append(v.Problems, fmt.Sprintf("term %s claimed by %d nodes: %+v", t, len(cs), cs))
		}
		sum.Checkers["leaders"] = v
	}

	ops := h.Ops()
	cfg.Logf("checking %d ops with porcupine...", len(ops))
	sum.Checkers["linearizable"] = CheckLinearizable(ops, h.Faults(), len(w.Sessions), shortNames(w.Auths), cfg.CheckTimeout, filepath.Join(cfg.ResultsDir, "linearizability.html"))
	if bundleErr != nil {
		sum.Checkers["bundles"] = Verdict{Problems: []string{"final bundle listing failed: " + bundleErr.Error()}}
	} else {
		sum.Checkers["bundles"] = CheckBundles(ops, bundles)
	}
	if factErr != nil {
		sum.Checkers["facts"] = Verdict{Problems: []string{"final fact listing failed: " + factErr.Error()}}
	} else {
		sum.Checkers["facts"] = CheckFacts(ops, facts, w)
	}
	sum.Checkers["exactly_once"] = CheckResends(ops)
	sum.Checkers["read_index"] = CheckReadIndexes(ops, h.Faults())
	sum.Checkers["damaged"] = CheckDamaged(ops, h.Faults()) // flip.go
	ids := map[string]any{"sessions": w.Sessions, "authorities": w.Auths}
	writeJSON(filepath.Join(cfg.ResultsDir, "ids.json"), ids)
	return nil
}

func shortNames(ids []string) []string {
	out := make([]string, len(ids))
	for i := range ids {
		out[i] = fmt.Sprintf("a%d", i)
	}
	return out
}

// checkDigests waits until every node has applied the same index, then
// compares their digests.
func checkDigests(ctx context.Context, cl *Cluster) Verdict {
	v := Verdict{Valid: true, Stats: map[string]any{}}
	deadline := time.Now().Add(60 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	var last []string
	for time.Now().Before(deadline) && ctx.Err() == nil {
		ds := make([]*transport.DigestJSON, len(cl.Nodes))
		ok := true
		last = last[:0]
		var halted []string
		for i, n := range cl.Nodes {
			dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			d, err := cl.Client(i).Digest(dctx)
			cancel()
			if err != nil {
				ok = false
				last = append(last, n.ID+": "+err.Error())
				continue
			}
			if dmg, damaged := cl.damaged.get(n.ID); damaged {
				// flip.go: halted before its damaged entry, it has no
				// digest at the others' index; it must not have one at
				// or past the damaged entry either.
				if d.Index >= dmg.Index {
					v.fail("%s, damaged at entry %d, reports a digest at index %d", n.ID, dmg.Index, d.Index)
				}
				halted = append(halted, fmt.Sprintf("%s: halted at index %d", n.ID, d.Index))
				continue
			}
			ds[i] = d
			last = append(last, fmt.Sprintf("%s: index %d digest %.16s", n.ID, d.Index, d.Digest))
		}
		if ok {
			var first *transport.DigestJSON
			firstID := ""
			same := true
			for i, d := range ds {
				if d == nil {
					continue // damaged on purpose, judged above
				}
				if first == nil {
					first, firstID = d, cl.Nodes[i].ID
				}
				same = same && d.Index == first.Index
			}
			if same && first != nil {
				v.Checked = len(ds) - len(halted)
				v.Stats["index"] = first.Index
				v.Stats["digests"] = append([]string(nil), last...)
				if len(halted) > 0 {
					v.Stats["halted"] = halted
				}
				for i, d := range ds {
					if d != nil && d.Digest != first.Digest {
						v.fail("%s digest %s != %s digest %s at index %d", cl.Nodes[i].ID, d.Digest, firstID, first.Digest, d.Index)
					}
				}
				return v
			}
		}
		sleepCtx(ctx, 250*time.Millisecond)
	}
	v.fail("replicas never reached the same applied index within 60s: %s", strings.Join(last, "; "))
	return v
}

// checkCoherence asks every node about its own replica (a stale read, so
// each answers from its state, not the leader's).
func checkCoherence(ctx context.Context, cl *Cluster) Verdict {
	v := Verdict{Valid: true}
	for _, n := range cl.Nodes {
		if _, damaged := cl.damaged.get(n.ID); damaged {
			// flip.go: it answers no read; it must still be halted.
			if err := cl.expectHalted(ctx, n); err != nil {
				v.fail("%v", err)
			} else {
				v.Checked++
			}
			continue
		}
		c := transport.NewClient([]string{n.HTTP}, transport.WithHTTPClient(cl.http))
		c.Stale, c.FollowLeader, c.RetryFor = true, false, 0
		var res *transport.CoherenceJSON
		var err error
		for try := 0; try < 5; try++ {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			res, err = c.Coherence(cctx)
			cancel()
			if err == nil {
				break
			}
			sleepCtx(ctx, 300*time.Millisecond)
		}
		switch {
		case err != nil:
			v.fail("%s: coherence: %v", n.ID, err)
		case res.Status != "coherent":
			v.fail("%s: %s: %v", n.ID, res.Status, res.Violations)
		default:
			v.Checked++
		}
	}
	return v
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// finish fills in the summary's counts and verdict and writes the files.
func finish(cfg Config, h *History, sum *Summary, began time.Time) {
	ops := h.Ops()
	sum.Ops = map[string]int{"total": len(ops)}
	kinds := map[string]map[string]int{}
	for _, op := range ops {
		sum.Ops[op.Type]++
		if kinds[op.F] == nil {
			kinds[op.F] = map[string]int{}
		}
		kinds[op.F][op.Type]++
	}
	sum.OpsByKind = map[string]any{}
	for k, m := range kinds {
		sum.OpsByKind[k] = m
	}
	sum.Faults = h.Faults()
	sum.FaultCount = map[string]int{}
	for _, f := range sum.Faults {
		sum.FaultCount[f.Kind]++
	}
	sum.Valid = sum.Error == "" && len(sum.Checkers) > 0
	for _, name := range []string{"linearizable", "bundles", "facts", "exactly_once", "coherence", "digests", "leaders", "cluster_recovered", "no_crashes", "damaged"} {
		v, ok := sum.Checkers[name]
		if !ok {
			sum.Valid = false
			continue
		}
		sum.Valid = sum.Valid && v.Valid
	}
	sum.Load["after"] = loadavg()
	if out, err := exec.Command("uptime").Output(); err == nil {
		sum.Load["uptime"] = strings.TrimSpace(string(out))
	}
	sum.WallTime = time.Since(began).Seconds()
	if err := h.WriteJSONL(filepath.Join(cfg.ResultsDir, "history.jsonl")); err != nil {
		cfg.Logf("write history: %v", err)
	}
	if err := writeJSON(filepath.Join(cfg.ResultsDir, "summary.json"), sum); err != nil {
		cfg.Logf("write summary: %v", err)
	}
}

// Report is a human summary of a run.
func (s *Summary) Report() string {
	var b strings.Builder
	verdict := "VALID"
	if !s.Valid {
		verdict = "INVALID"
	}
	fmt.Fprintf(&b, "reconf jepsen: %s  (%d nodes, %.0fs under faults, %.0fs wall, unsafe=%t)\n", verdict, s.Nodes, s.Duration, s.WallTime, s.Unsafe)
	fmt.Fprintf(&b, "ops: %d total, %d ok, %d fail, %d info\n", s.Ops["total"], s.Ops[TypeOK], s.Ops[TypeFail], s.Ops[TypeInfo])
	kinds := make([]string, 0, len(s.OpsByKind))
	for k := range s.OpsByKind {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		m := s.OpsByKind[k].(map[string]int)
		fmt.Fprintf(&b, "  %-15s ok %6d  fail %6d  info %4d\n", k, m[TypeOK], m[TypeFail], m[TypeInfo])
	}
	fk := make([]string, 0, len(s.FaultCount))
	for k := range s.FaultCount {
		fk = append(fk, k)
	}
	sort.Strings(fk)
	var fs []string
	for _, k := range fk {
		fs = append(fs, fmt.Sprintf("%s×%d", k, s.FaultCount[k]))
	}
	fmt.Fprintf(&b, "faults: %d (%s)\n", len(s.Faults), strings.Join(fs, ", "))
	names := make([]string, 0, len(s.Checkers))
	for k := range s.Checkers {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := s.Checkers[k]
		mark := "ok  "
		if !v.Valid {
			mark = "FAIL"
		}
		extra := ""
		if v.Result != "" {
			extra = " (" + v.Result + ")"
		}
		fmt.Fprintf(&b, "  %s %-18s checked %d%s\n", mark, k, v.Checked, extra)
		for _, p := range v.Problems {
			fmt.Fprintf(&b, "       - %s\n", p)
		}
	}
	if s.Error != "" {
		fmt.Fprintf(&b, "error: %s\n", s.Error)
	}
	fmt.Fprintf(&b, "load: before %s; after %s\n", s.Load["before"], s.Load["after"])
	fmt.Fprintf(&b, "results: %s\n", s.ResultsDir)
	return b.String()
}

// checkCrashes: no node process ever exited unless the nemesis killed it.
func checkCrashes(cl *Cluster) Verdict {
	v := Verdict{Valid: true}
	for _, n := range cl.Nodes {
		n.mu.Lock()
		exits := append([]string(nil), n.crashes...)
		starts := n.starts
		n.mu.Unlock()
		v.Checked += starts
		for _, e := range exits {
			v.fail("%s exited on its own: %s (see nodes/%s.log)", n.ID, e, n.ID)
		}
	}
	return v
}
