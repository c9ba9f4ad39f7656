package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/reconf/reconf/internal/loadavg"
	"github.com/reconf/reconf/transport"
)

// reconfctl bench: a closed-loop load generator. Each of --concurrency
// clients sends one request, waits for the answer, and sends the next,
// choosing each operation at random by the weights of --mix:
//
//	delegate   delegate the client's own session between its two authorities
//	           and back (ping-pong), POST /v1/delegations
//	footprint  record a new session native at an authority of the client's,
//	           POST /v1/footprints/{authority}/sessions
//	read       a linearizable read of the client's authority's footprint,
//	           GET /v1/footprints/{authority}
//	batch      --batch-size delegations in one POST /v1/batch, each of its
//	           own session between its own two authorities
//
// Every authority holds one or two sessions, so each answer (a receipt
// carries the footprints of both authorities, before and after) stays the
// same size however long the run; --preload fills the state with many more
// sessions elsewhere. Every write carries its own request id.

var benchKinds = []string{"delegate", "footprint", "read", "batch"}

func benchCommand(s *streams) *cli.Command {
	return &cli.Command{
		Name:      "bench",
		Usage:     "load a live cluster and report throughput and latency",
		UsageText: "reconfctl bench [--mix delegate=80,footprint=10,read=10,batch=0] [--concurrency N] [--duration D | --count N] [--leader-only] [--json]",
		Description: `A closed-loop load generator: --concurrency clients each send a request,
wait for the answer and send the next, for --duration (after --warmup) or
until --count operations are done. Operations are drawn at random by the
weights of --mix:

   delegate   ping-pong the client's own session between two authorities
   footprint  record a new session native at one of the client's authorities
   read       linearizable read of the client's authority's footprint
   batch      --batch-size delegations in one POST /v1/batch

Before the run each client records its sessions native (not measured).
Client i sends to address i mod len(--addr) (followers forward writes and
linearizable reads to the leader); --leader-only sends everything to the
leader. --preload N first adds N sessions (ten per authority, in batches)
so that the run meets a large state.

A progress line (ops/s, errors, p99 so far) goes to stderr once a second
unless --quiet. At the end: operations per second and latency percentiles
(p50, p90, p99, p99.9, max) per operation, and errors by code; --json
prints the same as one JSON object (what scripts/plot-bench reads).
Nothing here is cleaned up: each run adds its sessions to the state.

Examples:
   reconfctl bench --concurrency 64 --duration 30s
   reconfctl bench --mix delegate=100 --concurrency 1 --count 5000 --leader-only
   reconfctl bench --mix batch=1 --batch-size 1000 --concurrency 8 --json
   reconfctl bench --preload 1000000 --concurrency 64 --duration 30s`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "mix", Value: "delegate=80,footprint=10,read=10,batch=0", Usage: "operation `weights`: delegate, footprint, read, batch"},
			&cli.IntFlag{Name: "concurrency", Aliases: []string{"c"}, Value: 16, Usage: "concurrent clients, each with one request in flight"},
			&cli.DurationFlag{Name: "duration", Aliases: []string{"d"}, Value: 10 * time.Second, Usage: "measured run time (after --warmup)"},
			&cli.IntFlag{Name: "count", Aliases: []string{"n"}, Usage: "stop after `N` measured operations instead of --duration"},
			&cli.DurationFlag{Name: "warmup", Value: 2 * time.Second, Usage: "run this long before measuring"},
			&cli.IntFlag{Name: "batch-size", Value: 100, Usage: "delegations per batch operation (1 to 1024)"},
			&cli.BoolFlag{Name: "leader-only", Usage: "send every request to the leader"},
			&cli.IntFlag{Name: "preload", Usage: "first add `N` sessions to the state (in batches; not measured)"},
			&cli.StringFlag{Name: "label", Usage: "a `label` for this run in the JSON output (e.g. the log store)"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress line"},
			&cli.StringFlag{Name: "cpuprofile", Usage: "write the load generator's own CPU profile (warm-up included) to `file`, for go tool pprof"},
		},
		Action: action(s, 0, 0, "", bench),
	}
}

type benchConfig struct {
	mix         []int // weights, by benchKinds index
	concurrency int
	duration    time.Duration
	count       int64
	warmup      time.Duration
	batchSize   int
	leaderOnly  bool
	preload     int
	label       string
	quiet       bool
}

func parseMix(s string) ([]int, error) {
	w := make([]int, len(benchKinds))
	total := 0
	for _, part := range splitList(s) {
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want name=weight", part)
		}
		k := -1
		for i, n := range benchKinds {
			if n == strings.TrimSpace(name) {
				k = i
			}
		}
		if k < 0 {
			return nil, fmt.Errorf("unknown operation %q (want %s)", name, strings.Join(benchKinds, ", "))
		}
		v, err := strconv.Atoi(strings.TrimSpace(val))
		if err != nil || v < 0 {
			return nil, fmt.Errorf("%q: the weight must be a whole number, 0 or more", part)
		}
		w[k] = v
		total += v
	}
	if total == 0 {
		return nil, errors.New("all weights are 0")
	}
	return w, nil
}

func bench(_ context.Context, c *cli.Context, x *conn) error {
	cfg := benchConfig{
		concurrency: c.Int("concurrency"), duration: c.Duration("duration"), count: int64(c.Int("count")),
		warmup: c.Duration("warmup"), batchSize: c.Int("batch-size"), leaderOnly: c.Bool("leader-only"),
		preload: c.Int("preload"), label: c.String("label"), quiet: c.Bool("quiet"),
	}
	var err error
	if cfg.mix, err = parseMix(c.String("mix")); err != nil {
		return usageErr(c, "--mix: %v", err)
	}
	switch {
	case cfg.concurrency < 1:
		return usageErr(c, "--concurrency must be 1 or more")
	case cfg.count < 0 || cfg.preload < 0:
		return usageErr(c, "--count and --preload must be 0 or more")
	case cfg.count == 0 && cfg.duration <= 0:
		return usageErr(c, "--duration must be positive (or give --count)")
	case cfg.warmup < 0:
		return usageErr(c, "--warmup must be 0 or more")
	case cfg.mix[3] > 0 && (cfg.batchSize < 1 || cfg.batchSize > transport.MaxBatchOperations):
		return usageErr(c, "--batch-size must be 1 to %d", transport.MaxBatchOperations)
	}
	// The run is bounded by its own flags, not by --timeout (which bounds
	// each request here, retries included).
	ctx := x.base
	if ctx == nil {
		ctx = context.Background()
	}
	// The load generator usually shares the machine with the nodes: its
	// heap is small and all garbage, so collecting it less often leaves
	// more CPU to the cluster being measured.
	debug.SetGCPercent(800)
	b, err := newBencher(c, x, cfg)
	if err != nil {
		return err
	}
	if path := c.String("cpuprofile"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	return b.run(ctx)
}

// ---- latency histograms ----

// A histogram of latencies in buckets 1% wide from 1µs to ~100s: cheap to
// record from many goroutines at once (atomic counters) and to read while
// the run goes on.
const (
	histMin     = 1e3 // ns
	histGrowth  = 1.01
	histBuckets = 1860
)

var histLogGrowth = math.Log(histGrowth)

type hist struct {
	buckets [histBuckets]atomic.Uint64
	count   atomic.Uint64
	sum     atomic.Int64
	max     atomic.Int64
}

func (h *hist) record(d time.Duration) {
	ns := float64(d.Nanoseconds())
	i := 0
	if ns > histMin {
		i = min(int(math.Log(ns/histMin)/histLogGrowth), histBuckets-1)
	}
	h.buckets[i].Add(1)
	h.count.Add(1)
	h.sum.Add(d.Nanoseconds())
	for {
		m := h.max.Load()
		if d.Nanoseconds() <= m || h.max.CompareAndSwap(m, d.Nanoseconds()) {
			break
		}
	}
}

// quantiles merges histograms and returns the latency at each quantile
// (the middle of its bucket).
func quantiles(hs []*hist, qs ...float64) []time.Duration {
	var counts [histBuckets]uint64
	var total uint64
	for _, h := range hs {
		for i := range counts {
			v := h.buckets[i].Load()
			counts[i] += v
			total += v
		}
	}
	out := make([]time.Duration, len(qs))
	if total == 0 {
		return out
	}
	for k, q := range qs {
		rank := uint64(math.Ceil(q * float64(total)))
		if rank < 1 {
			rank = 1
		}
		var seen uint64
		for i, c := range counts {
			seen += c
			if seen >= rank {
				lo := histMin * math.Pow(histGrowth, float64(i))
				if i == 0 {
					lo = 0
				}
				out[k] = time.Duration(lo * (1 + histGrowth) / 2)
				if i == 0 {
					out[k] = histMin / 2
				}
				break
			}
		}
	}
	return out
}

// ---- the run ----

type bencher struct {
	cfg   benchConfig
	x     *conn
	hc    *http.Client
	addrs []string
	token string
	tlsOn bool
	run0  string // random prefix of this run's ids

	hists     [4]hist
	errs      [4]atomic.Uint64
	items     atomic.Uint64 // delegations that succeeded, batched ones included
	recording atomic.Bool
	done      atomic.Int64 // measured operations, for --count

	mu         sync.Mutex
	errCodes   map[string]uint64
	firstError map[string]string
}

func newBencher(c *cli.Context, x *conn, cfg benchConfig) (*bencher, error) {
	tlsCfg, err := tlsConfig(c)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        4 * cfg.concurrency,
		MaxIdleConnsPerHost: 2 * cfg.concurrency,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		TLSClientConfig:     tlsCfg,
	}
	var r [6]byte
	_, _ = rand.Read(r[:])
	return &bencher{
		cfg: cfg, x: x, hc: &http.Client{Transport: tr}, addrs: splitList(c.String("addr")),
		token: c.String("token"), tlsOn: tlsCfg != nil, run0: hex.EncodeToString(r[:]),
		errCodes: map[string]uint64{}, firstError: map[string]string{},
	}, nil
}

// client returns a Go API client that tries first first.
func (b *bencher) client(first string, followLeader bool) *transport.Client {
	addrs := []string{first}
	for _, a := range b.addrs {
		if a != first {
			addrs = append(addrs, a)
		}
	}
	opts := []transport.ClientOption{transport.WithHTTPClient(b.hc)}
	if b.tlsOn {
		opts = append(opts, transport.WithTLS(b.hc.Transport.(*http.Transport).TLSClientConfig))
	}
	cl := transport.NewClient(addrs, opts...)
	cl.Token = b.token
	cl.FollowLeader = followLeader
	cl.RetryFor = b.x.client.RetryFor
	return cl
}

func (b *bencher) id(kind string, worker int, n uint64) string {
	return fmt.Sprintf("bench-%s-%s-%d-%d", b.run0, kind, worker, n)
}

// uuidOf makes a deterministic UUID-shaped id for this run.
func (b *bencher) uuidOf(kind byte, worker, n int) string {
	return fmt.Sprintf("%s-%04x-%04x-%04x-%012x", b.run0[:8], worker&0xffff, kind, (n>>48)&0xffff, n&0xffffffffffff)
}

func (b *bencher) progress(format string, args ...any) {
	if !b.cfg.quiet {
		fmt.Fprintf(b.x.stderr, format, args...)
	}
}

type benchWorker struct {
	b    *bencher
	idx  int
	cl   *transport.Client // set-up and resynchronisation: retries, leader following
	conn *benchConn        // the measured requests (benchconn.go)
	seq  uint64
	rng  *mrand.Rand

	sess, authA, authB string // the delegate op's session and authorities
	atA                bool   // the session is held by authA (next delegation: authA → authB)

	fpAuth  string // footprint adds go here, a new authority every 100
	fpCount int

	batch []benchPair // the batch op's sessions
	ops   []byte      // the batch's operations, being written
	body  []byte      // the batch request's body
}

type benchPair struct {
	sess, a, b string
	atA        bool
}

func (b *bencher) run(ctx context.Context) error {
	load0 := loadavg.Read()
	leader := ""
	if b.cfg.leaderOnly {
		var err error
		if leader, err = b.findLeader(ctx); err != nil {
			return err
		}
	}
	if b.cfg.preload > 0 {
		if err := b.preload(ctx); err != nil {
			return fmt.Errorf("preload: %w", err)
		}
	}
	workers := make([]*benchWorker, b.cfg.concurrency)
	b.progress("bench: setting up %d clients...\n", len(workers))
	err := parallelDo(ctx, len(workers), min(len(workers), 16), func(i int) error {
		target := b.addrs[i%len(b.addrs)]
		if leader != "" {
			target = leader
		}
		w := &benchWorker{b: b, idx: i, cl: b.client(target, leader != ""), rng: mrand.New(mrand.NewPCG(uint64(i), uint64(time.Now().UnixNano()))),
			conn: newBenchConn(target, b.hc.Transport.(*http.Transport).TLSClientConfig, b.token, b.x.timeout)}
		workers[i] = w
		return w.setup(ctx)
	})
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.loop(runCtx)
		}()
	}
	if b.cfg.warmup > 0 {
		b.progress("bench: warming up for %v...\n", b.cfg.warmup)
		select {
		case <-time.After(b.cfg.warmup):
		case <-ctx.Done():
		}
	}
	b.recording.Store(true)
	start := time.Now()
	var deadline <-chan time.Time
	if b.cfg.count == 0 {
		deadline = time.After(b.cfg.duration)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	tty := isTerminal(b.x.stderr)
	lastOps, lastT := uint64(0), start
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-deadline:
			break wait
		case now := <-tick.C:
			ops, errs := b.totals()
			p99 := quantiles(b.allHists(), 0.99)[0]
			line := fmt.Sprintf("bench: %5.0fs  %8.0f ops/s  %7d ops  %5d errors  p99 %v",
				now.Sub(start).Seconds(), float64(ops-lastOps)/now.Sub(lastT).Seconds(), ops, errs, roundDur(p99))
			if tty {
				b.progress("\r%s\033[K", line)
			} else {
				b.progress("%s\n", line)
			}
			lastOps, lastT = ops, now
			if b.cfg.count > 0 && b.done.Load() >= b.cfg.count {
				break wait
			}
		}
		if b.cfg.count > 0 && b.done.Load() >= b.cfg.count {
			break
		}
	}
	elapsed := time.Since(start)
	b.recording.Store(false)
	cancel()
	wg.Wait()
	for _, w := range workers {
		w.conn.close()
	}
	if tty {
		b.progress("\n")
	}
	rep := b.report(elapsed, load0, loadavg.Read())
	if b.x.json {
		return printJSON(b.x.stdout, rep)
	}
	return printBenchReport(b.x.stdout, rep)
}

// findLeader asks for the leader's API address, waiting up to 10s for an
// election.
func (b *bencher) findLeader(ctx context.Context) (string, error) {
	cl := b.client(b.addrs[0], true)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := cl.Status(ctx)
		if err == nil && st.Leader != nil && st.Leader.HTTPAddr != "" {
			return st.Leader.HTTPAddr, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("no leader is known")
			}
			return "", fmt.Errorf("--leader-only: %w", err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// setup records the worker's sessions native (not measured).
func (w *benchWorker) setup(ctx context.Context) error {
	b := w.b
	w.sess = "session-" + b.uuidOf(1, w.idx, 0)
	w.authA, w.authB = "authority-"+b.uuidOf(2, w.idx, 0), "authority-"+b.uuidOf(3, w.idx, 0)
	w.atA = true
	w.fpAuth = "authority-" + b.uuidOf(4, w.idx, 0)
	need := b.cfg.mix[0] > 0 || b.cfg.mix[2] > 0
	if need {
		if _, err := w.cl.AddFootprint(ctx, w.authA, transport.FootprintAddRequest{SessionID: w.sess, RequestID: b.id("setup", w.idx, 0)}); err != nil {
			return err
		}
	}
	if b.cfg.mix[3] == 0 {
		return nil
	}
	var ops []transport.BatchOperation
	for j := 0; j < b.cfg.batchSize; j++ {
		p := benchPair{
			sess: "session-" + b.uuidOf(5, w.idx, j),
			a:    "authority-" + b.uuidOf(6, w.idx, j), b: "authority-" + b.uuidOf(7, w.idx, j), atA: true,
		}
		w.batch = append(w.batch, p)
		op := transport.NewBatchOperation("footprint_add", transport.FootprintAddRequest{SessionID: p.sess})
		op.Authority, op.RequestID = p.a, b.id("setupb", w.idx, uint64(j))
		ops = append(ops, op)
	}
	resp, err := w.cl.Batch(ctx, transport.BatchRequest{Operations: ops})
	if err != nil {
		return err
	}
	for _, r := range resp.Results {
		if r.Status != http.StatusOK {
			return fmt.Errorf("batch footprint add: %d %s: %s", r.Status, r.Error.Code, r.Error.Message)
		}
	}
	return nil
}

func (w *benchWorker) pick() int {
	total := 0
	for _, v := range w.b.cfg.mix {
		total += v
	}
	n := w.rng.IntN(total)
	for k, v := range w.b.cfg.mix {
		if n < v {
			return k
		}
		n -= v
	}
	return 0
}

func (w *benchWorker) loop(ctx context.Context) {
	b := w.b
	for ctx.Err() == nil {
		if b.cfg.count > 0 && b.recording.Load() && b.done.Load() >= b.cfg.count {
			return
		}
		kind := w.pick()
		rec := b.recording.Load()
		start := time.Now()
		items, err := w.do(ctx, kind)
		took := time.Since(start)
		if ctx.Err() != nil && err != nil {
			return // the run ended under this request
		}
		if !rec || !b.recording.Load() {
			continue
		}
		b.done.Add(1)
		b.hists[kind].record(took)
		b.items.Add(uint64(items))
		if err != nil {
			b.noteError(kind, err)
		}
	}
}

func (w *benchWorker) do(ctx context.Context, kind int) (items int, err error) {
	b := w.b
	w.seq++
	switch kind {
	case 0: // delegate
		from, to := w.authA, w.authB
		if !w.atA {
			from, to = to, from
		}
		req := transport.DelegationRequest{SessionID: w.sess, FromAuthority: from, ToAuthority: to, BundleID: "device_migration",
			RequestID: b.id("d", w.idx, w.seq)}
		if err := w.conn.do(ctx, http.MethodPost, "/v1/delegations", req, nil); err != nil {
			w.resync(ctx)
			return 0, err
		}
		w.atA = !w.atA
		return 1, nil
	case 1: // footprint add
		if w.fpCount%100 == 99 {
			w.fpAuth = "authority-" + b.uuidOf(4, w.idx, w.fpCount)
		}
		w.fpCount++
		req := transport.FootprintAddRequest{SessionID: "session-" + b.uuidOf(8, w.idx, w.fpCount), RequestID: b.id("f", w.idx, w.seq)}
		return 0, w.conn.do(ctx, http.MethodPost, "/v1/footprints/"+url.PathEscape(w.fpAuth)+"/sessions", req, nil)
	case 2: // linearizable read
		return 0, w.conn.do(ctx, http.MethodGet, "/v1/footprints/"+url.PathEscape(w.authA), nil, nil)
	}
	// batch
	w.ops = w.ops[:0]
	for j, p := range w.batch {
		from, to := p.a, p.b
		if !p.atA {
			from, to = to, from
		}
		if j > 0 {
			w.ops = append(w.ops, ',')
		}
		w.ops, err = appendBatchOp(w.ops, "delegate", transport.DelegationRequest{SessionID: p.sess, FromAuthority: from, ToAuthority: to,
			BundleID: "device_migration", RequestID: b.id("b", w.idx, w.seq*uint64(transport.MaxBatchOperations)+uint64(j))})
		if err != nil {
			return 0, err
		}
	}
	w.body = batchBody(w.body, w.ops)
	answer, err := w.conn.doRaw(ctx, http.MethodPost, "/v1/batch", w.body)
	if err != nil {
		w.resyncBatch(ctx)
		return 0, err
	}
	var failed error
	n := 0
	err = scanBatchResults(answer, func(j, status int, result []byte) {
		n++
		switch {
		case j >= len(w.batch):
		case status == http.StatusOK:
			w.batch[j].atA = !w.batch[j].atA
			items++
		case failed == nil:
			failed = batchError(status, result)
		}
	})
	if err == nil && n != len(w.batch) {
		err = fmt.Errorf("batch answer: %d results for %d operations", n, len(w.batch))
	}
	if err == nil {
		err = failed
	}
	if err != nil {
		w.resyncBatch(ctx)
	}
	return items, err
}

// holdsAt reports whether auth holds sess (native or delegated in).
func (w *benchWorker) holdsAt(ctx context.Context, auth, sess string) (bool, error) {
	fp, err := w.cl.ShowFootprint(ctx, auth)
	if err != nil {
		return false, err
	}
	for _, l := range [][]string{fp.NativeSessions, fp.DelegatedInSessions} {
		for _, s := range l {
			if s == sess {
				return true, nil
			}
		}
	}
	return false, nil
}

// resync learns where the worker's session is after a failed delegation
// (whose outcome may be unknown).
func (w *benchWorker) resync(ctx context.Context) {
	if at, err := w.holdsAt(ctx, w.authA, w.sess); err == nil {
		w.atA = at
	}
}

func (w *benchWorker) resyncBatch(ctx context.Context) {
	for j := range w.batch {
		if at, err := w.holdsAt(ctx, w.batch[j].a, w.batch[j].sess); err == nil {
			w.batch[j].atA = at
		}
	}
}

func (b *bencher) noteError(kind int, err error) {
	b.errs[kind].Add(1)
	code := "transport"
	var ae *transport.APIError
	switch {
	case errors.As(err, &ae):
		code = ae.Code
	case errors.Is(err, context.DeadlineExceeded):
		code = "timeout"
	}
	key := benchKinds[kind] + ":" + code
	b.mu.Lock()
	b.errCodes[key]++
	if _, ok := b.firstError[key]; !ok {
		b.firstError[key] = err.Error()
	}
	b.mu.Unlock()
}

func (b *bencher) allHists() []*hist {
	out := make([]*hist, len(b.hists))
	for i := range b.hists {
		out[i] = &b.hists[i]
	}
	return out
}

func (b *bencher) totals() (ops, errs uint64) {
	for i := range b.hists {
		ops += b.hists[i].count.Load()
		errs += b.errs[i].Load()
	}
	return ops, errs
}

// preload adds n sessions, ten per authority, in batches of 1024 from 8
// concurrent requests.
func (b *bencher) preload(ctx context.Context) error {
	n := b.cfg.preload
	const per = transport.MaxBatchOperations
	batches := (n + per - 1) / per
	var done atomic.Int64
	start := time.Now()
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				d := done.Load()
				b.progress("bench: preloaded %d of %d sessions (%.0f/s)\n", d, n, float64(d)/time.Since(start).Seconds())
			}
		}
	}()
	defer close(stop)
	cl := b.client(b.addrs[0], true)
	err := parallelDo(ctx, batches, 8, func(k int) error {
		var ops []transport.BatchOperation
		for i := k * per; i < min(n, (k+1)*per); i++ {
			op := transport.NewBatchOperation("footprint_add", transport.FootprintAddRequest{SessionID: "session-" + b.uuidOf(9, 0, i)})
			op.Authority = "authority-" + b.uuidOf(10, 0, i/10)
			op.RequestID = b.id("p", 0, uint64(i))
			ops = append(ops, op)
		}
		resp, err := cl.Batch(ctx, transport.BatchRequest{Operations: ops})
		if err != nil {
			return err
		}
		for _, r := range resp.Results {
			if r.Status != http.StatusOK {
				return fmt.Errorf("%d %s: %s", r.Status, r.Error.Code, r.Error.Message)
			}
		}
		done.Add(int64(len(ops)))
		return nil
	})
	if err == nil {
		b.progress("bench: preloaded %d sessions in %v\n", n, time.Since(start).Round(time.Millisecond))
	}
	return err
}

// parallelDo runs f(0..n-1) on up to workers goroutines; the first error
// stops the rest.
func parallelDo(ctx context.Context, n, workers int, f func(i int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return first
}

// ---- the report ----

// BenchReport is reconfctl bench --json.
type BenchReport struct {
	Label       string              `json:"label,omitempty"`
	Started     time.Time           `json:"started"`
	Addrs       []string            `json:"addrs"`
	LeaderOnly  bool                `json:"leader_only"`
	Concurrency int                 `json:"concurrency"`
	Mix         map[string]int      `json:"mix"`
	BatchSize   int                 `json:"batch_size,omitempty"`
	Preload     int                 `json:"preload,omitempty"`
	Seconds     float64             `json:"seconds"`
	Ops         map[string]BenchOps `json:"ops"`
	Total       BenchOps            `json:"total"`
	Delegations float64             `json:"delegations_per_sec"` // delegate ops plus delegations inside batches
	Errors      map[string]uint64   `json:"errors,omitempty"`    // "op:code" → count
	ErrorSample map[string]string   `json:"error_sample,omitempty"`
	Machine     BenchMachine        `json:"machine"`
}

// BenchOps is one operation's figures; latencies in milliseconds.
type BenchOps struct {
	Count     uint64  `json:"count"`
	Errors    uint64  `json:"errors"`
	OpsPerSec float64 `json:"ops_per_sec"`
	MeanMs    float64 `json:"mean_ms"`
	P50Ms     float64 `json:"p50_ms"`
	P90Ms     float64 `json:"p90_ms"`
	P99Ms     float64 `json:"p99_ms"`
	P999Ms    float64 `json:"p999_ms"`
	MaxMs     float64 `json:"max_ms"`
}

// BenchMachine is where the load generator ran.
type BenchMachine struct {
	CPUs       int    `json:"cpus"`
	GoVersion  string `json:"go_version"`
	LoadBefore string `json:"load_before,omitempty"`
	LoadAfter  string `json:"load_after,omitempty"`
}

func ms(d time.Duration) float64 { return math.Round(float64(d.Nanoseconds())/1e3) / 1e3 }

func opsOf(hs []*hist, errs uint64, secs float64) BenchOps {
	var count uint64
	var sum, maxNs int64
	for _, h := range hs {
		count += h.count.Load()
		sum += h.sum.Load()
		maxNs = max(maxNs, h.max.Load())
	}
	q := quantiles(hs, 0.50, 0.90, 0.99, 0.999)
	o := BenchOps{Count: count, Errors: errs, OpsPerSec: math.Round(float64(count) / secs), MaxMs: ms(time.Duration(maxNs)),
		P50Ms: ms(q[0]), P90Ms: ms(q[1]), P99Ms: ms(q[2]), P999Ms: ms(q[3])}
	if count > 0 {
		o.MeanMs = ms(time.Duration(sum / int64(count)))
	}
	return o
}

func (b *bencher) report(elapsed time.Duration, load0, load1 string) BenchReport {
	secs := elapsed.Seconds()
	rep := BenchReport{
		Label: b.cfg.label, Started: time.Now().Add(-elapsed).UTC().Truncate(time.Second), Addrs: b.addrs, LeaderOnly: b.cfg.leaderOnly,
		Concurrency: b.cfg.concurrency, Mix: map[string]int{}, Preload: b.cfg.preload, Seconds: math.Round(secs*1000) / 1000,
		Ops: map[string]BenchOps{}, Delegations: math.Round(float64(b.items.Load()) / secs),
		Machine: BenchMachine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadBefore: load0, LoadAfter: load1},
	}
	var errs uint64
	for k, name := range benchKinds {
		rep.Mix[name] = b.cfg.mix[k]
		if b.cfg.mix[k] == 0 {
			continue
		}
		rep.Ops[name] = opsOf([]*hist{&b.hists[k]}, b.errs[k].Load(), secs)
		errs += b.errs[k].Load()
	}
	if b.cfg.mix[3] > 0 {
		rep.BatchSize = b.cfg.batchSize
	}
	rep.Total = opsOf(b.allHists(), errs, secs)
	b.mu.Lock()
	if len(b.errCodes) > 0 {
		rep.Errors, rep.ErrorSample = b.errCodes, b.firstError
	}
	b.mu.Unlock()
	return rep
}

func printBenchReport(w io.Writer, r BenchReport) error {
	fmt.Fprintf(w, "%d clients, %.1fs measured, addresses %s%s\n", r.Concurrency, r.Seconds, strings.Join(r.Addrs, ","),
		map[bool]string{true: " (leader only)", false: ""}[r.LeaderOnly])
	t := newTable(w, "OP", "COUNT", "OPS/S", "ERRORS", "P50", "P90", "P99", "P99.9", "MAX")
	names := make([]string, 0, len(r.Ops))
	for n := range r.Ops {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return kindIndex(names[i]) < kindIndex(names[j]) })
	row := func(name string, o BenchOps) {
		t.row(name, o.Count, fmt.Sprintf("%.0f", o.OpsPerSec), o.Errors, fmtMs(o.P50Ms), fmtMs(o.P90Ms), fmtMs(o.P99Ms), fmtMs(o.P999Ms), fmtMs(o.MaxMs))
	}
	for _, n := range names {
		row(n, r.Ops[n])
	}
	if len(names) > 1 {
		row("total", r.Total)
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "delegations/s (batched ones included): %.0f\n", r.Delegations)
	if r.BatchSize > 0 {
		fmt.Fprintf(w, "batch size: %d\n", r.BatchSize)
	}
	if len(r.Errors) > 0 {
		keys := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintln(w, "errors:")
		for _, k := range keys {
			fmt.Fprintf(w, "  %-32s %6d  e.g. %s\n", k, r.Errors[k], r.ErrorSample[k])
		}
	}
	fmt.Fprintf(w, "load average: before %s, after %s (%d CPUs)\n", r.Machine.LoadBefore, r.Machine.LoadAfter, r.Machine.CPUs)
	return nil
}

func kindIndex(name string) int {
	for i, n := range benchKinds {
		if n == name {
			return i
		}
	}
	return len(benchKinds)
}

func fmtMs(v float64) string {
	if v < 10 {
		return fmt.Sprintf("%.2fms", v)
	}
	return fmt.Sprintf("%.1fms", v)
}

func roundDur(d time.Duration) time.Duration {
	switch {
	case d > 100*time.Millisecond:
		return d.Round(time.Millisecond)
	case d > time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
