package transport_test

// The in-process cluster harness shared by the integration tests: N real
// nodes in one test process, each with its own raft-boltdb files in a temp
// dir, its own Raft port (transport.Mux) and its own HTTP API listener, all
// on 127.0.0.1 with ports the kernel picks. A node can be stopped (gracefully
// or as a crash) and restarted from its data dir on the same addresses.
//
// Set RECONF_TEST_LOG=1 to see every node's log on stderr.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/reconf/reconf/cluster"
	"github.com/reconf/reconf/transport"
)

// clusterOpts tunes every node of a test cluster.
type clusterOpts struct {
	SnapshotThreshold uint64 // 0: the cluster package's default
	TrailingLogs      uint64 // 0: the cluster package's default
	Prefix            string // node id prefix; default "n"
	// LogStore is the Raft log store of every node, "bolt" or "wal"; empty:
	// $RECONF_TEST_LOG_STORE, else the cluster package's default (bolt).
	LogStore string
}

type tcluster struct {
	t     testing.TB
	opts  clusterOpts
	nodes []*tnode
	http  *http.Client // raw requests: no retries, no leader following
}

type tnode struct {
	c        *tcluster
	idx      int
	id       string
	dir      string
	raftAddr string // fixed after the first start, reused on restart
	httpAddr string // likewise

	mux     *transport.Mux
	node    *cluster.Node
	api     *transport.Server
	httpSrv *http.Server
	fwdDone chan struct{}
	running bool
}

const waitTimeout = 20 * time.Second

// newCluster starts n nodes: the first bootstraps, the others join through
// the first one's HTTP API. It returns once every node sees all n voters
// and one leader that can serve linearizable reads.
func newCluster(t testing.TB, n int, opts clusterOpts) *tcluster {
	t.Helper()
	if opts.Prefix == "" {
		opts.Prefix = "n"
	}
	if opts.LogStore == "" {
		opts.LogStore = os.Getenv("RECONF_TEST_LOG_STORE")
	}
	c := &tcluster{
		t: t, opts: opts,
		http: &http.Client{
			Timeout: 30 * time.Second,
			Transport: &http.Transport{
				DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
				MaxIdleConnsPerHost: 16,
			},
		},
	}
	t.Cleanup(c.shutdown)
	for i := 0; i < n; i++ {
		c.addNode()
	}
	c.waitMembers(n)
	c.waitLeader()
	return c
}

// addNode creates, starts and (except for the first node) joins a new node.
func (c *tcluster) addNode() *tnode {
	c.t.Helper()
	i := len(c.nodes)
	n := &tnode{c: c, idx: i, id: fmt.Sprintf("%s%d", c.opts.Prefix, i+1), dir: filepath.Join(c.t.TempDir(), "data")}
	c.nodes = append(c.nodes, n)
	n.start()
	if i == 0 {
		c.waitLeader()
		return n
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cl := transport.NewClient(c.httpAddrs())
	if err := cl.Join(ctx, transport.JoinRequest{ID: n.id, RaftAddr: n.raftAddr}); err != nil {
		c.t.Fatalf("join %s: %v", n.id, err)
	}
	return n
}

func testLogger(name string) hclog.Logger {
	if os.Getenv("RECONF_TEST_LOG") == "" {
		return hclog.NewNullLogger()
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Debug, Output: os.Stderr})
}

// listenRetry retries a listen for a moment: a port just released by a
// stopped node can take an instant to become free again.
func listenRetry[T any](t testing.TB, what string, f func() (T, error)) T {
	t.Helper()
	var err error
	for i := 0; i < 50; i++ {
		var v T
		if v, err = f(); err == nil {
			return v
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
	panic("unreachable")
}

// start runs the node on its data dir (a restart if it ran before).
func (n *tnode) start() {
	t := n.c.t
	t.Helper()
	if n.running {
		t.Fatalf("%s is already running", n.id)
	}
	logger := testLogger(n.id)
	raftListen := n.raftAddr
	if raftListen == "" {
		raftListen = "127.0.0.1:0"
	}
	mux := listenRetry(t, n.id+": raft port", func() (*transport.Mux, error) {
		return transport.ListenMux(transport.MuxConfig{Listen: raftListen, Logger: logger.Named("mux")})
	})
	httpListen := n.httpAddr
	if httpListen == "" {
		httpListen = "127.0.0.1:0"
	}
	ln := listenRetry(t, n.id+": http port", func() (net.Listener, error) { return net.Listen("tcp", httpListen) })
	n.raftAddr, n.httpAddr = mux.Addr().String(), ln.Addr().String()

	node, err := cluster.Open(cluster.Config{
		ID: n.id, DataDir: n.dir, AdvertiseRaft: n.raftAddr, StreamLayer: mux.RaftLayer(),
		Bootstrap: n.idx == 0, Logger: logger,
		HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
		LeaderLease:       250 * time.Millisecond,
		SnapshotThreshold: n.c.opts.SnapshotThreshold, TrailingLogs: n.c.opts.TrailingLogs,
		LogStore: n.c.opts.LogStore,
	})
	if err != nil {
		ln.Close()
		mux.Close()
		t.Fatalf("open %s: %v", n.id, err)
	}
	checkLogStore(t, n.dir, n.c.opts.LogStore) // logstore_test.go
	api := transport.NewServer(transport.ServerConfig{Node: node, Mux: mux, AdvertiseHTTP: n.httpAddr, Logger: logger.Named("api")})
	srv := &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fwdDone := make(chan struct{})
	go func() {
		defer close(fwdDone)
		_ = api.ServeForwarded()
	}()
	n.mux, n.node, n.api, n.httpSrv, n.fwdDone, n.running = mux, node, api, srv, fwdDone, true
}

// stop takes the node down. crash: no graceful leadership hand-off is waited
// for (Shutdown gets an expired context; the Node API has no way to skip the
// hand-off request itself) and the API server drops its connections at once.
func (n *tnode) stop(crash bool) {
	t := n.c.t
	t.Helper()
	if !n.running {
		return
	}
	n.running = false
	_ = n.httpSrv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if crash {
		cancel()
	}
	defer cancel()
	if err := n.node.Shutdown(ctx); err != nil {
		t.Logf("%s: shutdown: %v", n.id, err)
	}
	_ = n.mux.Close()
	select {
	case <-n.fwdDone:
	case <-time.After(10 * time.Second):
		t.Errorf("%s: forwarding server did not stop", n.id)
	}
	// Idle keep-alive connections to the stopped node are dead now.
	n.c.http.CloseIdleConnections()
}

func (n *tnode) restart() {
	n.c.t.Helper()
	n.start()
}

func (c *tcluster) shutdown() {
	for _, n := range c.nodes {
		n.stop(false)
	}
}

func (c *tcluster) running() []*tnode {
	var out []*tnode
	for _, n := range c.nodes {
		if n.running {
			out = append(out, n)
		}
	}
	return out
}

func (c *tcluster) httpAddrs() []string {
	var out []string
	for _, n := range c.running() {
		out = append(out, n.httpAddr)
	}
	return out
}

// client is a Go API client over every running node.
func (c *tcluster) client() *transport.Client { return transport.NewClient(c.httpAddrs()) }

// ---- waiting ----

// waitFor polls cond until it reports true or the deadline passes; the
// last diagnosis goes into the failure.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, diag := cond()
		if ok {
			return
		}
		last = diag
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s", timeout, what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitLeader waits until exactly one running node leads, every running node
// names it, and it serves linearizable reads (its term-start entry is
// applied).
func (c *tcluster) waitLeader() *tnode {
	c.t.Helper()
	var leader *tnode
	waitFor(c.t, waitTimeout, "a leader", func() (bool, string) {
		leader = nil
		var leaders []string
		for _, n := range c.running() {
			if n.node.IsLeader() {
				leader = n
				leaders = append(leaders, n.id)
			}
		}
		if len(leaders) != 1 {
			return false, fmt.Sprintf("leaders: %v", leaders)
		}
		for _, n := range c.running() {
			if id, _ := n.node.Leader(); id != leader.id {
				return false, fmt.Sprintf("%s thinks the leader is %q, not %s", n.id, id, leader.id)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := leader.node.LinearizableRead(ctx); err != nil {
			return false, "leader not ready for reads: " + err.Error()
		}
		return true, ""
	})
	return leader
}

// waitNewLeader waits for a settled leader other than old.
func (c *tcluster) waitNewLeader(old *tnode) *tnode {
	c.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		l := c.waitLeader()
		if l != old {
			return l
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s still leads", old.id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// follower returns a running node other than the given ones.
func (c *tcluster) follower(not ...*tnode) *tnode {
	c.t.Helper()
outer:
	for _, n := range c.running() {
		for _, x := range not {
			if n == x {
				continue outer
			}
		}
		return n
	}
	c.t.Fatal("no such follower")
	return nil
}

// waitMembers waits until every running node's configuration lists want
// voters.
func (c *tcluster) waitMembers(want int) {
	c.t.Helper()
	waitFor(c.t, waitTimeout, fmt.Sprintf("%d voters everywhere", want), func() (bool, string) {
		for _, n := range c.running() {
			servers, err := n.node.Servers()
			if err != nil {
				return false, n.id + ": " + err.Error()
			}
			voters := 0
			for _, s := range servers {
				if s.Voter {
					voters++
				}
			}
			if voters != want {
				return false, fmt.Sprintf("%s has %d voters", n.id, voters)
			}
		}
		return true, ""
	})
}

// waitConverged waits until every running node reports the same applied
// index and digest over GET /v1/cluster/digest, with the index at least
// minIndex, and returns that digest. Callers make sure no write is in
// flight.
func (c *tcluster) waitConverged(minIndex uint64) transport.DigestJSON {
	c.t.Helper()
	var got transport.DigestJSON
	waitFor(c.t, waitTimeout, "all replicas at the same index and digest", func() (bool, string) {
		var ds []string
		var first *transport.DigestJSON
		same := true
		for _, n := range c.running() {
			d, err := n.digest()
			if err != nil {
				return false, err.Error()
			}
			ds = append(ds, fmt.Sprintf("%s@%d=%.12s", n.id, d.Index, d.Digest))
			if first == nil {
				first = &d
			} else if d != *first {
				same = false
			}
		}
		if first == nil || !same || first.Index < minIndex {
			return false, strings.Join(ds, " ")
		}
		got = *first
		return true, ""
	})
	return got
}

// waitApplied waits until every given node has applied index.
func waitApplied(t testing.TB, index uint64, nodes ...*tnode) {
	t.Helper()
	waitFor(t, waitTimeout, fmt.Sprintf("applied index %d", index), func() (bool, string) {
		for _, n := range nodes {
			d, err := n.digest()
			if err != nil {
				return false, err.Error()
			}
			if d.Index < index {
				return false, fmt.Sprintf("%s at %d", n.id, d.Index)
			}
		}
		return true, ""
	})
}

// ---- raw HTTP ----

type httpResp struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r httpResp) String() string {
	return fmt.Sprintf("%d %s", r.Status, bytes.TrimSpace(r.Body))
}

// index is the X-Reconf-Index header (0 when absent).
func (r httpResp) index() uint64 {
	v, _ := strconv.ParseUint(r.Header.Get(transport.HeaderIndex), 10, 64)
	return v
}

func (n *tnode) url(path string) string { return "http://" + n.httpAddr + path }

// do sends one request to this node, with no retry. body may be nil, a
// []byte sent as is, or a value sent as JSON.
func (n *tnode) do(method, path string, body any) (httpResp, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return httpResp{}, err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, n.url(path), rd)
	if err != nil {
		return httpResp{}, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := n.c.http.Do(req)
	if err != nil {
		return httpResp{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return httpResp{Status: resp.StatusCode, Header: resp.Header, Body: b}, err
}

// must sends a request and fails the test unless the answer has status want.
func (n *tnode) must(want int, method, path string, body any) httpResp {
	n.c.t.Helper()
	r, err := n.do(method, path, body)
	if err != nil {
		n.c.t.Fatalf("%s %s %s: %v", n.id, method, path, err)
	}
	if r.Status != want {
		n.c.t.Fatalf("%s %s %s: want %d, got %s", n.id, method, path, want, r)
	}
	return r
}

func (n *tnode) digest() (transport.DigestJSON, error) {
	var d transport.DigestJSON
	r, err := n.do(http.MethodGet, "/v1/cluster/digest", nil)
	if err != nil {
		return d, fmt.Errorf("%s: digest: %w", n.id, err)
	}
	if r.Status != http.StatusOK {
		return d, fmt.Errorf("%s: digest: %s", n.id, r)
	}
	err = json.Unmarshal(r.Body, &d)
	return d, err
}

func (n *tnode) mustDigest() transport.DigestJSON {
	n.c.t.Helper()
	d, err := n.digest()
	if err != nil {
		n.c.t.Fatal(err)
	}
	return d
}

func decodeAs[T any](t testing.TB, r httpResp) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.Body, &v); err != nil {
		t.Fatalf("decode %T from %s: %v", v, r, err)
	}
	return v
}

func errorOf(t testing.TB, r httpResp) transport.ErrorDetail {
	t.Helper()
	return decodeAs[transport.ErrorBody](t, r).Error
}

// ---- domain helpers ----

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func newAuthority() string { return "authority-" + newUUID() }
func newSession() string   { return "session-" + newUUID() }

const testBundle = "device_migration" // a default bundle: delegations need no setup

func delegation(sess, from, to, requestID string) transport.DelegationRequest {
	return transport.DelegationRequest{SessionID: sess, FromAuthority: from, ToAuthority: to, BundleID: testBundle, RequestID: requestID}
}

// addNative records sess as native in auth through node n.
func (n *tnode) addNative(auth, sess string) transport.IndexResponse {
	n.c.t.Helper()
	r := n.must(http.StatusOK, http.MethodPost, "/v1/footprints/"+auth+"/sessions", transport.FootprintAddRequest{SessionID: sess})
	return decodeAs[transport.IndexResponse](n.c.t, r)
}

func (n *tnode) delegate(req transport.DelegationRequest) transport.DelegationResponse {
	n.c.t.Helper()
	r := n.must(http.StatusOK, http.MethodPost, "/v1/delegations", req)
	return decodeAs[transport.DelegationResponse](n.c.t, r)
}

// footprint reads an authority's footprint (path may carry ?consistency=).
func (n *tnode) footprint(auth, query string) (transport.AuthorityFootprint, httpResp) {
	n.c.t.Helper()
	r := n.must(http.StatusOK, http.MethodGet, "/v1/footprints/"+auth+query, nil)
	return decodeAs[transport.AuthorityFootprint](n.c.t, r), r
}

// allFacts lists the whole fact journal through node n.
func (n *tnode) allFacts(query string) []transport.FactJSON {
	n.c.t.Helper()
	var out []transport.FactJSON
	after := uint64(0)
	for {
		r := n.must(http.StatusOK, http.MethodGet, fmt.Sprintf("/v1/facts?after=%d&limit=10000%s", after, query), nil)
		fr := decodeAs[transport.FactsResponse](n.c.t, r)
		out = append(out, fr.Facts...)
		if len(fr.Facts) == 0 || fr.Facts[len(fr.Facts)-1].Seq >= fr.LastSeq {
			return out
		}
		after = fr.Facts[len(fr.Facts)-1].Seq
	}
}

// factsBySeq is the whole fact journal through node n, by sequence number;
// query is a footprint read's ("" or "?consistency=stale").
func (n *tnode) factsBySeq(query string) map[uint64]transport.FactJSON {
	n.c.t.Helper()
	out := map[uint64]transport.FactJSON{}
	for _, f := range n.allFacts(strings.Replace(query, "?", "&", 1)) {
		out[f.Seq] = f
	}
	return out
}

func lastFactSeq(t testing.TB, n *tnode) uint64 {
	t.Helper()
	r := n.must(http.StatusOK, http.MethodGet, "/v1/facts?limit=1", nil)
	return decodeAs[transport.FactsResponse](t, r).LastSeq
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// sameJSON reports whether two JSON documents are equal as values.
func sameJSON(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

// parallel runs f(i) for i in [0, n) on workers goroutines and returns the
// first error.
func parallel(n, workers int, f func(i int) error) error {
	var mu sync.Mutex
	var first error
	next := 0
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if next >= n || first != nil {
					mu.Unlock()
					return
				}
				i := next
				next++
				mu.Unlock()
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// snapshotIndexes lists the indexes of the Raft snapshots in a node's
// data dir (hashicorp/raft's file snapshot store: snapshots/<id>/meta.json).
func snapshotIndexes(t testing.TB, dir string) []uint64 {
	t.Helper()
	metas, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*", "meta.json"))
	var out []uint64
	for _, m := range metas {
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		var meta struct{ Index uint64 }
		if json.Unmarshal(b, &meta) == nil {
			out = append(out, meta.Index)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// tryNative and tryDelegate are addNative and delegate for goroutines other
// than the test's: they return errors instead of failing the test.
func (n *tnode) tryNative(auth, sess string) error {
	r, err := n.do(http.MethodPost, "/v1/footprints/"+auth+"/sessions", transport.FootprintAddRequest{SessionID: sess})
	if err == nil && r.Status != http.StatusOK {
		err = fmt.Errorf("%s: footprint add: %s", n.id, r)
	}
	return err
}

func (n *tnode) tryDelegate(req transport.DelegationRequest) (transport.DelegationResponse, error) {
	var d transport.DelegationResponse
	r, err := n.do(http.MethodPost, "/v1/delegations", req)
	if err == nil && r.Status != http.StatusOK {
		err = fmt.Errorf("%s: delegate: %s", n.id, r)
	}
	if err == nil {
		err = json.Unmarshal(r.Body, &d)
	}
	return d, err
}
